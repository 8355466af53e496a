// Forward launcher for c10::Half (one dtype per file so the instantiations compile in parallel).
#include "propagate_kernels.cuh"

namespace gspn2 {
namespace cuda {

template <>
void launch_forward<c10::Half>(const FwdParams& p, bool normalize, bool merge, cudaStream_t stream) {
  launch_forward_impl<c10::Half>(p, normalize, merge, stream);
}

}  // namespace cuda
}  // namespace gspn2
