// Backward launcher for float (one dtype per file so the instantiations compile in parallel).
#include "propagate_kernels.cuh"

namespace gspn2 {
namespace cuda {

template <>
void launch_backward<float>(const BwdParams& p, bool normalize, bool merge, cudaStream_t stream) {
  launch_backward_impl<float>(p, normalize, merge, stream);
}

}  // namespace cuda
}  // namespace gspn2
