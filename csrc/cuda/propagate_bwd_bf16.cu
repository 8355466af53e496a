// Backward launcher for c10::BFloat16 (one dtype per file so the instantiations compile in parallel).
#include "propagate_kernels.cuh"

namespace gspn2 {
namespace cuda {

template <>
void launch_backward<c10::BFloat16>(const BwdParams& p, bool normalize, bool merge, cudaStream_t stream) {
  launch_backward_impl<c10::BFloat16>(p, normalize, merge, stream);
}

}  // namespace cuda
}  // namespace gspn2
