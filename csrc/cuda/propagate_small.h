// Small-plane propagation: scans of any chunk over planes whose lines fit one warp
// (H, W <= kSmallMaxLine, H * W <= kSmallMaxPlane: the global stages of a backbone at
// classification sizes, 14 x 14 and 7 x 7 at 224 px).
//
// One CTA takes one batch item, one gate group and a slice of its channels, with one warp per
// direction entry. Lane p of a warp owns position p of every line of its direction and walks
// the steps in order, the neighbours' hidden states coming through warp shuffles: no
// transposes, no barriers inside a scan, every direction in place. The tap weights of the
// plane are computed once per CTA and direction (shared memory) and reused for the slice's
// channels; the merge y = sum_d u_d h_d adds the warps' terms in direction order through
// shared memory (deterministic). The backward recomputes h into shared memory, runs the
// reverse scan of dL/dh the same way, and sums the gate gradients of the slice's channels in
// shared memory, each (step, position, tap) owned by one lane; with more than one slice per
// group the sums go to partial_gates and launch_gate_grad_finish adds them in slice order. No
// hidden state is read: the forward need not save it.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include "scan_params.h"

namespace gspn2 {
namespace cuda {

constexpr int kSmallMaxLine = 32;    // lanes of a warp
constexpr int kSmallMaxPlane = 256;  // positions of a plane (shared memory per CTA)

// Shared memory of a launch in bytes (forward: tap weights and the merge terms; backward:
// tap weights, h, dL/dx terms and gate-gradient sums).
size_t small_forward_smem(const ScanParams& p, size_t acc_size);
size_t small_backward_smem(const ScanParams& p, size_t acc_size);

template <typename T>
void launch_small_forward(const ScanParams& p, bool normalize, bool merge, cudaStream_t stream);

template <typename T>
void launch_small_backward(const ScanParams& p, bool normalize, bool merge, cudaStream_t stream);

extern template void launch_small_forward<double>(const ScanParams&, bool, bool, cudaStream_t);
extern template void launch_small_forward<float>(const ScanParams&, bool, bool, cudaStream_t);
extern template void launch_small_forward<c10::Half>(const ScanParams&, bool, bool, cudaStream_t);
extern template void launch_small_forward<c10::BFloat16>(const ScanParams&, bool, bool,
                                                         cudaStream_t);
extern template void launch_small_backward<double>(const ScanParams&, bool, bool, cudaStream_t);
extern template void launch_small_backward<float>(const ScanParams&, bool, bool, cudaStream_t);
extern template void launch_small_backward<c10::Half>(const ScanParams&, bool, bool,
                                                      cudaStream_t);
extern template void launch_small_backward<c10::BFloat16>(const ScanParams&, bool, bool,
                                                          cudaStream_t);

}  // namespace cuda
}  // namespace gspn2
