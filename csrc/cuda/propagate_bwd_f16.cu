// Backward launcher for c10::Half (one dtype per file so the instantiations compile in parallel).
#include "propagate_kernels.cuh"

namespace gspn2 {
namespace cuda {

template <>
void launch_backward<c10::Half>(const BwdParams& p, bool normalize, bool merge, cudaStream_t stream) {
  launch_backward_impl<c10::Half>(p, normalize, merge, stream);
}

}  // namespace cuda
}  // namespace gspn2
