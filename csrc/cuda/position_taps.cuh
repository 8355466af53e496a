// Device helpers of the one-pass kernels (propagate_local.cu, propagate_small.cu): loads and
// stores in the accumulation type, and the tap weights of one position with the Jacobian of
// their normalisation. Notation as in line_scan_common.cuh: tap k = 0, 1, 2 of a position at
// line position p reaches the previous step's position p + k - 1.
#pragma once

#include <cstdint>

#include "kernel_common.cuh"

namespace gspn2 {
namespace cuda {
namespace position_taps {

template <typename A, typename T>
__device__ __forceinline__ A ld(const T* p, int64_t i) {
  return static_cast<A>(p[i]);
}

template <typename T, typename A>
__device__ __forceinline__ void st(T* p, int64_t i, A v) {
  p[i] = static_cast<T>(v);
}

__device__ __forceinline__ bool tap_valid(int p, int k, int n_line) {
  const int q = p + k - 1;
  return q >= 0 && q < n_line;
}

// Whether step s takes input from step s - 1 (not the first step of a line or of a chunk;
// chunk 0 scans whole lines).
__device__ __forceinline__ bool has_prev(int s, int chunk) {
  return chunk == 0 ? s > 0 : s % chunk != 0;
}

// Tap weights of the position at plane offset `pos` whose line position is p: normalised
// sigmoids of the logits w_k = sigmoid(a_k) / sum of the valid sigmoids (or the weights as
// given), 0 where the tap leaves the line. comp[k] = 1 - sigmoid(a_k), which the Jacobian of the
// normalisation needs. Saturated positions (every valid logit far below 0, whose sigmoids would
// underflow to 0 / 0) are shifted as in normalized_taps of line_scan_common.cuh: the logits are
// taken minus min(0, m + kTapShift), m the largest valid logit; the shift cancels in w, and
// comp rounds to 1 for shifted logits.
template <bool NORMALIZE, typename T, typename A>
__device__ __forceinline__ void tap_weights(const T* gates3, int64_t HW, int64_t pos, int p,
                                            int n_line, A w[3], A comp[3]) {
  A a[3];
  bool ok[3];
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    ok[k] = tap_valid(p, k, n_line);
    a[k] = ok[k] ? ld<A>(gates3, k * HW + pos) : A(0);
  }
  if (!NORMALIZE) {
#pragma unroll
    for (int k = 0; k < 3; ++k) {
      w[k] = a[k];
      comp[k] = A(1);
    }
    return;
  }
  A m = -INFINITY;
#pragma unroll
  for (int k = 0; k < 3; ++k) m = ok[k] ? fmax(m, a[k]) : m;
  const A shift = fmin(A(0), m + A(kTapShift));
  A e[3], sig[3], sum = 0;
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    e[k] = exp(shift - a[k]);
    sig[k] = ok[k] ? A(1) / (A(1) + e[k]) : A(0);
    sum += sig[k];
  }
  const A inv_sum = sum > A(0) ? A(1) / sum : A(0);
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    w[k] = sig[k] * inv_sum;
    // 1 - sigmoid without cancellation: exp(-a) sigmoid(a) for a >= 0.
    const A c = a[k] >= A(0) ? e[k] * sig[k] : A(1) - sig[k];
    comp[k] = shift < A(0) ? A(1) : c;
  }
}

// Gate-logit gradients from g_k = sum over channels of dh * h[prev_k]: the normalisation's
// Jacobian w_k (1 - sigmoid(a_k)) (g_k - sum_m w_m g_m), or g_k for weights given as such.
template <bool NORMALIZE, typename A>
__device__ __forceinline__ void gate_logit_grads(const A gsum[3], const A w[3], const A comp[3],
                                                 int p, int n_line, A out[3]) {
  A dot = 0;
#pragma unroll
  for (int k = 0; k < 3; ++k) dot += w[k] * gsum[k];
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    const bool ok = tap_valid(p, k, n_line);
    out[k] = !ok ? A(0) : NORMALIZE ? w[k] * comp[k] * (gsum[k] - dot) : gsum[k];
  }
}

}  // namespace position_taps
}  // namespace cuda
}  // namespace gspn2
