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

namespace gspn2 {
namespace cuda {

constexpr int kLocalMaxChunk = 2;
constexpr int kLocalThreads = 256;  // threads per CTA, along the positions of a plane

struct LocalParams {
  int B, C, H, W, D, G;
  int chunk;             // 1 or 2
  int dirs[4];           // direction id of entry d
  int slices;            // channel slices per gate group (blockIdx.y = group * slices + slice)
  const void* x;         // (B, C, H, W)
  const void* gates;     // (B, D, G, 3, H, W)
  const void* lam;       // (B, D, C, H, W)
  const void* u;         // (B, D, C, H, W); merge only
  void* out;             // forward: merge (B, C, H, W), else (B, D, C, H, W)
  void* hidden;          // forward: (B, D, C, H, W) or nullptr
  const void* grad_out;  // backward: the shape of out
  void* grad_x;          // backward: (B, C, H, W)
  void* grad_gates;      // backward: (B, D, G, 3, H, W)
  void* grad_lam;        // backward: (B, D, C, H, W)
  void* grad_u;          // backward, merge: (B, D, C, H, W)
  void* partial_gates;   // backward, slices > 1: (slices, B, D, G, 3, H, W) per-slice sums in
                         // the accumulation type (float32; float64 for float64 storage)
};

template <typename T>
void launch_local_forward(const LocalParams& p, bool normalize, bool merge, cudaStream_t stream);

template <typename T>
void launch_local_backward(const LocalParams& p, bool normalize, bool merge, cudaStream_t stream);

extern template void launch_local_forward<double>(const LocalParams&, bool, bool, cudaStream_t);
extern template void launch_local_forward<float>(const LocalParams&, bool, bool, cudaStream_t);
extern template void launch_local_forward<c10::Half>(const LocalParams&, bool, bool, cudaStream_t);
extern template void launch_local_forward<c10::BFloat16>(const LocalParams&, bool, bool,
                                                         cudaStream_t);
extern template void launch_local_backward<double>(const LocalParams&, bool, bool, cudaStream_t);
extern template void launch_local_backward<float>(const LocalParams&, bool, bool, cudaStream_t);
extern template void launch_local_backward<c10::Half>(const LocalParams&, bool, bool,
                                                      cudaStream_t);
extern template void launch_local_backward<c10::BFloat16>(const LocalParams&, bool, bool,
                                                          cudaStream_t);

}  // namespace cuda
}  // namespace gspn2
