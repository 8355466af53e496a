// Forward launcher for double (one dtype per file so the instantiations compile in parallel).
#include "propagate_kernels.cuh"

namespace gspn2 {
namespace cuda {

template <>
void launch_forward<double>(const FwdParams& p, bool normalize, bool merge, cudaStream_t stream) {
  launch_forward_impl<double>(p, normalize, merge, stream);
}

}  // namespace cuda
}  // namespace gspn2
