// Local propagation: scans whose hidden state restarts every chunk <= kLocalMaxChunk steps.
//
// With chunk 1 every step restarts (h = lam * x); with chunk 2 a step either restarts or
// takes one step from the previous line: h[s] = lam x [s] + sum_k w_k[s] (lam x)[s - 1, p + k].
// Nothing is sequential, so these kernels give one thread one position of one batch item
// and a slice of the channels of one gate group, and walk every direction of the launch
// there: the position's tap weights are computed once per direction and reused for the
// slice's channels, loads along a row are coalesced whatever the direction (no transposes,
// no shared-memory exchange, no barrier), and every output element is written by exactly one
// thread (deterministic, no atomics). The backward recomputes h from the inputs (one step
// back), so the forward need not save the hidden state.
//
// Gate-logit gradients of a gate group are sums over its channels: a thread sums its slice;
// with more than one slice per group the slices' sums go to a float buffer and a second
// kernel adds them in slice order and applies the normalisation's Jacobian.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include "scan_params.h"

namespace gspn2 {
namespace cuda {

constexpr int kLocalMaxChunk = 2;
constexpr int kLocalThreads = 256;  // threads per CTA, along the positions of a plane

template <typename T>
void launch_local_forward(const ScanParams& p, bool normalize, bool merge, cudaStream_t stream);

template <typename T>
void launch_local_backward(const ScanParams& p, bool normalize, bool merge, cudaStream_t stream);

// Slices > 1: the gate-logit gradients from partial_gates (per-slice sums), added in slice
// order; the local and the small-plane backward end with it.
template <typename T>
void launch_gate_grad_finish(const ScanParams& p, bool normalize, cudaStream_t stream);

extern template void launch_local_forward<double>(const ScanParams&, bool, bool, cudaStream_t);
extern template void launch_local_forward<float>(const ScanParams&, bool, bool, cudaStream_t);
extern template void launch_local_forward<c10::Half>(const ScanParams&, bool, bool, cudaStream_t);
extern template void launch_local_forward<c10::BFloat16>(const ScanParams&, bool, bool,
                                                         cudaStream_t);
extern template void launch_local_backward<double>(const ScanParams&, bool, bool, cudaStream_t);
extern template void launch_local_backward<float>(const ScanParams&, bool, bool, cudaStream_t);
extern template void launch_local_backward<c10::Half>(const ScanParams&, bool, bool,
                                                      cudaStream_t);
extern template void launch_local_backward<c10::BFloat16>(const ScanParams&, bool, bool,
                                                          cudaStream_t);

extern template void launch_gate_grad_finish<double>(const ScanParams&, bool, cudaStream_t);
extern template void launch_gate_grad_finish<float>(const ScanParams&, bool, cudaStream_t);
extern template void launch_gate_grad_finish<c10::Half>(const ScanParams&, bool, cudaStream_t);
extern template void launch_gate_grad_finish<c10::BFloat16>(const ScanParams&, bool, cudaStream_t);

}  // namespace cuda
}  // namespace gspn2
