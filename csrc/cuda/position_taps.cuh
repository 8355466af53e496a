// Device helpers of the one-pass kernels (propagate_local.cu, propagate_small.cu): loads and
// stores in the accumulation type, and the tap weights of one position with the Jacobian of
// their normalisation. Notation as in propagate_kernels.cuh: tap k = 0, 1, 2 of a position at
// line position p reaches the previous step's position p + k - 1.
#pragma once

#include <cstdint>

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

template <typename A>
__device__ __forceinline__ A sigmoid(A a) {
  return A(1) / (A(1) + exp(-a));
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
// sigmoids of the logits (or the weights as given), 0 where the tap leaves the line. Also
// returns the sigmoids and 1 / their sum for the normalisation's Jacobian.
template <bool NORMALIZE, typename T, typename A>
__device__ __forceinline__ void tap_weights(const T* gates3, int64_t HW, int64_t pos, int p,
                                            int n_line, A w[3], A sig[3], A& inv_sum) {
  A sum = 0;
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    const bool ok = tap_valid(p, k, n_line);
    const A a = ok ? ld<A>(gates3, k * HW + pos) : A(0);
    sig[k] = ok ? (NORMALIZE ? sigmoid(a) : a) : A(0);
    sum += sig[k];
  }
  inv_sum = NORMALIZE ? A(1) / sum : A(1);
#pragma unroll
  for (int k = 0; k < 3; ++k) w[k] = sig[k] * inv_sum;
}

// Gate-logit gradients from g_k = sum over channels of dh * h[prev_k]: the normalisation's
// Jacobian sig_k (1 - sig_k) / S (g_k - sum_m w_m g_m), or g_k for weights given as such.
template <bool NORMALIZE, typename A>
__device__ __forceinline__ void gate_logit_grads(const A gsum[3], const A w[3], const A sig[3],
                                                 A inv_sum, int p, int n_line, A out[3]) {
  A dot = 0;
#pragma unroll
  for (int k = 0; k < 3; ++k) dot += w[k] * gsum[k];
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    const bool ok = tap_valid(p, k, n_line);
    out[k] = !ok ? A(0) : NORMALIZE ? sig[k] * (A(1) - sig[k]) * inv_sum * (gsum[k] - dot) : gsum[k];
  }
}

}  // namespace position_taps
}  // namespace cuda
}  // namespace gspn2
