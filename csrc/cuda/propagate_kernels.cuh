// Kernel templates of the fused GSPN-2 propagation (SPEC section 1). Included only by the
// per-dtype translation units propagate_{fwd,bwd}_{f32,f16,bf16}.cu.
//
// Notation: a scan has n_steps steps (rows for the vertical directions, columns for the
// horizontal ones) counted from where it starts, s = 0 .. n_steps - 1; each step is a line
// of n_line positions p, and taps k = -1, 0, +1 reach the neighbours p + k of the previous
// step. All arithmetic is float32 whatever the storage dtype.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

#include "propagate.h"

namespace gspn2 {
namespace cuda {

// Runs `...` (a lambda body using NAME as a constexpr bool) with NAME = cond.
#define GSPN2_BOOL_SWITCH(cond, NAME, ...) \
  [&] {                                   \
    if (cond) {                           \
      constexpr bool NAME = true;         \
      return __VA_ARGS__();               \
    } else {                              \
      constexpr bool NAME = false;        \
      return __VA_ARGS__();               \
    }                                     \
  }()

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Vector accesses go through plain integers of the element's width (c10::Half and
// c10::BFloat16 are classes; packs of them are copied element by element).
template <typename T>
using RawOf = std::conditional_t<sizeof(T) == 4, uint32_t, uint16_t>;

template <typename T>
__device__ __forceinline__ T from_raw(RawOf<T> r) {
  if constexpr (sizeof(T) == 4) {
    return __uint_as_float(r);
  } else {
    return T(r, T::from_bits());
  }
}

template <typename T>
__device__ __forceinline__ RawOf<T> to_raw(T t) {
  if constexpr (sizeof(T) == 4) {
    return __float_as_uint(t);
  } else {
    return t.x;
  }
}

// Reads N consecutive line positions p0 .. p0 + N - 1 (element stride `stride`) as float;
// positions outside [0, n) read as 0. `vec` promises stride 1 and an aligned base.
template <typename T, int N>
__device__ __forceinline__ void load_run(const T* __restrict__ base, int p0, int n,
                                         int64_t stride, bool vec, float (&out)[N]) {
  if (vec && p0 + N <= n) {
    const Pack<RawOf<T>, N> pk = *reinterpret_cast<const Pack<RawOf<T>, N>*>(base + p0);
#pragma unroll
    for (int q = 0; q < N; ++q) out[q] = static_cast<float>(from_raw<T>(pk.v[q]));
  } else {
#pragma unroll
    for (int q = 0; q < N; ++q) {
      out[q] = p0 + q < n ? static_cast<float>(base[static_cast<int64_t>(p0 + q) * stride]) : 0.f;
    }
  }
}

template <typename T, int N>
__device__ __forceinline__ void store_run(T* __restrict__ base, int p0, int n, int64_t stride,
                                          bool vec, const float (&v)[N]) {
  if (vec && p0 + N <= n) {
    Pack<RawOf<T>, N> pk;
#pragma unroll
    for (int q = 0; q < N; ++q) pk.v[q] = to_raw<T>(static_cast<T>(v[q]));
    *reinterpret_cast<Pack<RawOf<T>, N>*>(base + p0) = pk;
  } else {
#pragma unroll
    for (int q = 0; q < N; ++q) {
      if (p0 + q < n) base[static_cast<int64_t>(p0 + q) * stride] = static_cast<T>(v[q]);
    }
  }
}

__device__ __forceinline__ float sigmoidf(float a) { return 1.f / (1.f + __expf(-a)); }

// The scan of one direction seen as steps of lines.
struct Line {
  bool vertical, reverse;
  int n_steps, n_line;
  int64_t step_stride, pos_stride;

  __device__ __forceinline__ Line(const Geometry& geo, int dir) {
    vertical = dir == kTopDownId || dir == kBottomUpId;
    reverse = dir == kBottomUpId || dir == kRightLeftId;
    n_steps = vertical ? geo.H : geo.W;
    n_line = vertical ? geo.W : geo.H;
    step_stride = vertical ? geo.W : 1;
    pos_stride = vertical ? 1 : geo.W;
  }
  // Element offset of step s inside an (H, W) plane.
  __device__ __forceinline__ int64_t step_offset(int s) const {
    return static_cast<int64_t>(reverse ? n_steps - 1 - s : s) * step_stride;
  }
};

// Tap weights at positions p0 .. p0 + N - 1 from the gates `a`; taps whose neighbour falls
// outside the line, and positions outside it, get 0. With NORMALIZE, `sig` receives the
// masked sigmoids and `inv_sum` 1 / their sum (used again by the backward).
template <bool NORMALIZE, int N>
__device__ __forceinline__ void tap_weights(const float (&a)[3][N], int p0, int n,
                                            float (&w)[3][N], float (&sig)[3][N],
                                            float (&inv_sum)[N]) {
#pragma unroll
  for (int q = 0; q < N; ++q) {
    const int pos = p0 + q;
    const bool valid[3] = {pos >= 1 && pos < n, pos < n, pos + 1 < n};
    if (NORMALIZE) {
      float total = 0.f;
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        sig[k][q] = valid[k] ? sigmoidf(a[k][q]) : 0.f;
        total += sig[k][q];
      }
      inv_sum[q] = pos < n ? 1.f / total : 0.f;
#pragma unroll
      for (int k = 0; k < 3; ++k) w[k][q] = sig[k][q] * inv_sum[q];
    } else {
#pragma unroll
      for (int k = 0; k < 3; ++k) w[k][q] = valid[k] ? a[k][q] : 0.f;
    }
  }
}

// Per-step inputs of the forward scan.
template <int N>
struct FwdStep {
  float x[N], lam[N], a[3][N], u[N];
};

template <typename T, bool MERGE, int N>
__device__ __forceinline__ void load_fwd_step(FwdStep<N>& st, int64_t off, int p0, int n,
                                              int64_t ps, bool vec, const T* xp, const T* gp,
                                              const T* lp, const T* up, int64_t hw) {
  load_run<T, N>(xp + off, p0, n, ps, vec, st.x);
  load_run<T, N>(lp + off, p0, n, ps, vec, st.lam);
#pragma unroll
  for (int k = 0; k < 3; ++k) load_run<T, N>(gp + k * hw + off, p0, n, ps, vec, st.a[k]);
  if (MERGE) load_run<T, N>(up + off, p0, n, ps, vec, st.u);
}

template <typename T, bool NORMALIZE, bool MERGE>
__global__ void __launch_bounds__(kMaxThreads) propagate_forward_kernel(const FwdParams p) {
  constexpr int N = kPositions;
  const Geometry& geo = p.geo;
  const int slice = blockIdx.x, di = blockIdx.y, b = blockIdx.z;
  const int tx = threadIdx.x, cy = threadIdx.y;
  const int tpl = geo.threads_per_line, cpc = geo.channels_per_cta;
  const int c = slice * cpc + cy;
  const int g = c / (geo.C / geo.G);
  const Line line(geo, geo.dirs[di]);
  const int64_t hw = static_cast<int64_t>(geo.H) * geo.W;
  const int64_t x_off = (static_cast<int64_t>(b) * geo.C + c) * hw;
  const int64_t dc_off = ((static_cast<int64_t>(b) * geo.D + di) * geo.C + c) * hw;
  const T* xp = static_cast<const T*>(p.x) + x_off;
  const T* gp = static_cast<const T*>(p.gates) +
                ((static_cast<int64_t>(b) * geo.D + di) * geo.G + g) * 3 * hw;
  const T* lp = static_cast<const T*>(p.lam) + dc_off;
  const T* up = MERGE ? static_cast<const T*>(p.u) + dc_off : nullptr;
  const int p0 = tx * N, n = line.n_line;
  const int64_t ps = line.pos_stride;
  const bool vec = geo.vec && line.vertical;

  // exchange[buffer][first or last position][cy][tx], double-buffered over steps.
  extern __shared__ float exchange[];
  auto slot = [&](int buf, int which, int t) { return ((buf * 2 + which) * cpc + cy) * tpl + t; };

  FwdStep<N> cur, nxt;
  float h[N];
#pragma unroll
  for (int q = 0; q < N; ++q) h[q] = 0.f;
  if (line.n_steps > 0) load_fwd_step<T, MERGE, N>(cur, line.step_offset(0), p0, n, ps, vec, xp, gp, lp, up, hw);

  for (int s = 0, phase = 0; s < line.n_steps; ++s) {
    if (s + 1 < line.n_steps) {
      load_fwd_step<T, MERGE, N>(nxt, line.step_offset(s + 1), p0, n, ps, vec, xp, gp, lp, up, hw);
    }
    const bool restart = phase == 0;
    float left = 0.f, right = 0.f;  // previous step's h at p0 - 1 and p0 + N
    if (!restart) {
      const int buf = (s + 1) & 1;
      if (tx > 0) left = exchange[slot(buf, 1, tx - 1)];
      if (tx + 1 < tpl) right = exchange[slot(buf, 0, tx + 1)];
    }
    float w[3][N], sig[3][N], inv_sum[N];
    tap_weights<NORMALIZE, N>(cur.a, p0, n, w, sig, inv_sum);
    float hn[N];
#pragma unroll
    for (int q = 0; q < N; ++q) {
      float acc = cur.lam[q] * cur.x[q];
      if (!restart) {
        const float hm = q == 0 ? left : h[q - 1];
        const float hp = q == N - 1 ? right : h[q + 1];
        acc += w[0][q] * hm + w[1][q] * h[q] + w[2][q] * hp;
      }
      hn[q] = acc;
    }
#pragma unroll
    for (int q = 0; q < N; ++q) h[q] = hn[q];
    exchange[slot(s & 1, 0, tx)] = h[0];
    exchange[slot(s & 1, 1, tx)] = h[N - 1];

    const int64_t off = line.step_offset(s);
    if (!MERGE) {
      store_run<T, N>(static_cast<T*>(p.out) + dc_off + off, p0, n, ps, vec, h);
    } else {
      if (p.hidden != nullptr) store_run<T, N>(static_cast<T*>(p.hidden) + dc_off + off, p0, n, ps, vec, h);
      float contrib[N];
#pragma unroll
      for (int q = 0; q < N; ++q) contrib[q] = cur.u[q] * h[q];
      if (geo.D == 1) {
        store_run<T, N>(static_cast<T*>(p.out) + x_off + off, p0, n, ps, vec, contrib);
      } else {
        float* part = p.partial + ((static_cast<int64_t>(di) * geo.B + b) * geo.C + c) * hw;
        store_run<float, N>(part + off, p0, n, ps, vec, contrib);
      }
    }
    __syncthreads();
    cur = nxt;
    phase = (geo.chunk > 0 && phase + 1 == geo.chunk) ? 0 : phase + 1;
  }

  if (MERGE && geo.D > 1) {
    // The CTA that finishes last among the D directions of this (batch, channel slice) sums
    // the per-direction contributions in direction order: deterministic, one launch.
    __shared__ int is_last;
    __threadfence();
    __syncthreads();
    const int tid = cy * tpl + tx, nthreads = tpl * cpc;
    if (tid == 0) {
      const int arrived = atomicAdd(p.arrivals + b * gridDim.x + slice, 1);
      is_last = arrived == geo.D - 1;
    }
    __syncthreads();
    if (is_last) {
      __threadfence();
      const int64_t c0 = static_cast<int64_t>(slice) * cpc;
      const int64_t count = cpc * hw;
      const int64_t dir_stride = static_cast<int64_t>(geo.B) * geo.C * hw;
      const float* part = p.partial + (static_cast<int64_t>(b) * geo.C + c0) * hw;
      T* out = static_cast<T*>(p.out) + (static_cast<int64_t>(b) * geo.C + c0) * hw;
      for (int64_t e = tid; e < count; e += nthreads) {
        float acc = 0.f;
        for (int d = 0; d < geo.D; ++d) acc += __ldcg(part + d * dir_stride + e);
        out[e] = static_cast<T>(acc);
      }
    }
  }
}

// Per-step inputs of the backward (reverse) scan: everything at step s plus h at step s - 1
// with one position of halo on each side.
template <int N>
struct BwdStep {
  float go[N], u[N], a[3][N], lam[N], x[N], h_prev[N], h_left, h_right;
};

template <typename T, bool MERGE, int N>
__device__ __forceinline__ void load_bwd_step(BwdStep<N>& st, const Line& line, int s, int p0,
                                              bool vec, const T* gop, const T* xp, const T* gp,
                                              const T* lp, const T* up, const T* hp, int64_t hw) {
  const int n = line.n_line;
  const int64_t ps = line.pos_stride, off = line.step_offset(s);
  load_run<T, N>(gop + off, p0, n, ps, vec, st.go);
  if (MERGE) load_run<T, N>(up + off, p0, n, ps, vec, st.u);
#pragma unroll
  for (int k = 0; k < 3; ++k) load_run<T, N>(gp + k * hw + off, p0, n, ps, vec, st.a[k]);
  load_run<T, N>(lp + off, p0, n, ps, vec, st.lam);
  load_run<T, N>(xp + off, p0, n, ps, vec, st.x);
  if (s >= 1) {
    const int64_t prev = line.step_offset(s - 1);
    load_run<T, N>(hp + prev, p0, n, ps, vec, st.h_prev);
    st.h_left = p0 >= 1 && p0 - 1 < n ? static_cast<float>(hp[prev + (p0 - 1) * ps]) : 0.f;
    st.h_right = p0 + N < n ? static_cast<float>(hp[prev + (p0 + N) * ps]) : 0.f;
  } else {
#pragma unroll
    for (int q = 0; q < N; ++q) st.h_prev[q] = 0.f;
    st.h_left = st.h_right = 0.f;
  }
}

template <typename T, bool NORMALIZE, bool MERGE>
__global__ void __launch_bounds__(kMaxThreads) propagate_backward_kernel(const BwdParams p) {
  constexpr int N = kPositions;
  const Geometry& geo = p.geo;
  const int slice = blockIdx.x, di = blockIdx.y, b = blockIdx.z;
  const int tx = threadIdx.x, cy = threadIdx.y;
  const int tpl = geo.threads_per_line, cpc = geo.channels_per_cta;
  const int c = slice * cpc + cy;
  const int g = c / (geo.C / geo.G);
  const Line line(geo, geo.dirs[di]);
  const int64_t hw = static_cast<int64_t>(geo.H) * geo.W;
  const int64_t x_off = (static_cast<int64_t>(b) * geo.C + c) * hw;
  const int64_t dc_off = ((static_cast<int64_t>(b) * geo.D + di) * geo.C + c) * hw;
  const int64_t bdg = (static_cast<int64_t>(b) * geo.D + di) * geo.G + g;
  const T* gop = static_cast<const T*>(p.grad_out) + (MERGE ? x_off : dc_off);
  const T* xp = static_cast<const T*>(p.x) + x_off;
  const T* gp = static_cast<const T*>(p.gates) + bdg * 3 * hw;
  const T* lp = static_cast<const T*>(p.lam) + dc_off;
  const T* up = MERGE ? static_cast<const T*>(p.u) + dc_off : nullptr;
  const T* hp = static_cast<const T*>(p.hidden) + dc_off;
  const int p0 = tx * N, n = line.n_line;
  const int64_t ps = line.pos_stride;
  const bool vec = geo.vec && line.vertical;
  const bool direct_gates = geo.G == geo.C;

  // exchange[buffer][0: w_{-1} dh at p0, 1: w_{+1} dh at p0 + N - 1][cy][tx]
  extern __shared__ float exchange[];
  auto slot = [&](int buf, int which, int t) { return ((buf * 2 + which) * cpc + cy) * tpl + t; };

  BwdStep<N> cur, nxt;
  float h_cur[N];           // h at step s
  float dh[N], wn[3][N];    // dh and tap weights of step s + 1
#pragma unroll
  for (int q = 0; q < N; ++q) {
    dh[q] = 0.f;
#pragma unroll
    for (int k = 0; k < 3; ++k) wn[k][q] = 0.f;
  }
  const int last = line.n_steps - 1;
  if (last >= 0) {
    load_bwd_step<T, MERGE, N>(cur, line, last, p0, vec, gop, xp, gp, lp, up, hp, hw);
    load_run<T, N>(hp + line.step_offset(last), p0, n, ps, vec, h_cur);
  }

  for (int s = last; s >= 0; --s) {
    if (s >= 1) load_bwd_step<T, MERGE, N>(nxt, line, s - 1, p0, vec, gop, xp, gp, lp, up, hp, hw);
    // Step s + 1 feeds step s unless it restarted the hidden state (or does not exist).
    const bool cut = s == last || (geo.chunk > 0 && (s + 1) % geo.chunk == 0);
    const bool start = geo.chunk > 0 ? s % geo.chunk == 0 : s == 0;
    float from_left = 0.f, from_right = 0.f;
    if (!cut) {
      const int buf = (s + 1) & 1;
      if (tx > 0) from_left = exchange[slot(buf, 1, tx - 1)];
      if (tx + 1 < tpl) from_right = exchange[slot(buf, 0, tx + 1)];
    }
    float d[N];
#pragma unroll
    for (int q = 0; q < N; ++q) {
      float acc = MERGE ? cur.u[q] * cur.go[q] : cur.go[q];
      if (!cut) {
        acc += wn[1][q] * dh[q];
        acc += q == 0 ? from_left : wn[2][q - 1] * dh[q - 1];
        acc += q == N - 1 ? from_right : wn[0][q + 1] * dh[q + 1];
      }
      d[q] = acc;
    }

    const int64_t off = line.step_offset(s);
    float v[N];
#pragma unroll
    for (int q = 0; q < N; ++q) v[q] = cur.x[q] * d[q];
    store_run<T, N>(static_cast<T*>(p.grad_lam) + dc_off + off, p0, n, ps, vec, v);
#pragma unroll
    for (int q = 0; q < N; ++q) v[q] = cur.lam[q] * d[q];
    if (geo.D == 1) {
      store_run<T, N>(static_cast<T*>(p.grad_x) + x_off + off, p0, n, ps, vec, v);
    } else {
      float* part = p.partial_x + ((static_cast<int64_t>(di) * geo.B + b) * geo.C + c) * hw;
      store_run<float, N>(part + off, p0, n, ps, vec, v);
    }
    if (MERGE && p.grad_u != nullptr) {
#pragma unroll
      for (int q = 0; q < N; ++q) v[q] = h_cur[q] * cur.go[q];
      store_run<T, N>(static_cast<T*>(p.grad_u) + dc_off + off, p0, n, ps, vec, v);
    }

    // Gate gradients: dL/dw_k = dh[p] * h_prev[p + k], then through the normalisation.
    float w[3][N], sig[3][N], inv_sum[N], da[3][N];
    tap_weights<NORMALIZE, N>(cur.a, p0, n, w, sig, inv_sum);
#pragma unroll
    for (int q = 0; q < N; ++q) {
      const int pos = p0 + q;
      const bool valid[3] = {pos >= 1 && pos < n, pos < n, pos + 1 < n};
      float gw[3];
      gw[0] = start ? 0.f : d[q] * (q == 0 ? cur.h_left : cur.h_prev[q - 1]);
      gw[1] = start ? 0.f : d[q] * cur.h_prev[q];
      gw[2] = start ? 0.f : d[q] * (q == N - 1 ? cur.h_right : cur.h_prev[q + 1]);
      if (NORMALIZE) {
        const float dot = w[0][q] * gw[0] + w[1][q] * gw[1] + w[2][q] * gw[2];
#pragma unroll
        for (int k = 0; k < 3; ++k) {
          da[k][q] = valid[k] ? sig[k][q] * (1.f - sig[k][q]) * (gw[k] - dot) * inv_sum[q] : 0.f;
        }
      } else {
#pragma unroll
        for (int k = 0; k < 3; ++k) da[k][q] = valid[k] ? gw[k] : 0.f;
      }
    }
    if (direct_gates) {
      T* out = static_cast<T*>(p.grad_gates) + bdg * 3 * hw;
#pragma unroll
      for (int k = 0; k < 3; ++k) store_run<T, N>(out + k * hw + off, p0, n, ps, vec, da[k]);
    } else {
      float* out = p.partial_gates + ((static_cast<int64_t>(b) * geo.D + di) * geo.C + c) * 3 * hw;
#pragma unroll
      for (int k = 0; k < 3; ++k) store_run<float, N>(out + k * hw + off, p0, n, ps, vec, da[k]);
    }

#pragma unroll
    for (int q = 0; q < N; ++q) {
      dh[q] = d[q];
      h_cur[q] = cur.h_prev[q];
#pragma unroll
      for (int k = 0; k < 3; ++k) wn[k][q] = w[k][q];
    }
    exchange[slot(s & 1, 0, tx)] = w[0][0] * d[0];
    exchange[slot(s & 1, 1, tx)] = w[2][N - 1] * d[N - 1];
    __syncthreads();
    cur = nxt;
  }
}

// out[i] = sum over d of partial[d * n + i], in direction order.
template <typename T>
__global__ void sum_directions_kernel(const float* __restrict__ partial, T* __restrict__ out,
                                      int D, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float acc = 0.f;
    for (int d = 0; d < D; ++d) acc += partial[d * n + i];
    out[i] = static_cast<T>(acc);
  }
}

// Gate gradients of channel-shared gates: out[(bdg, r)] = sum over the group's channels cc
// of partial[((bdg * group + cc), r)], r indexing (3, H, W), in channel order.
template <typename T>
__global__ void sum_group_channels_kernel(const float* __restrict__ partial, T* __restrict__ out,
                                          int group, int64_t plane, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t bdg = i / plane, r = i % plane;
    const float* src = partial + bdg * group * plane + r;
    float acc = 0.f;
    for (int cc = 0; cc < group; ++cc) acc += src[cc * plane];
    out[i] = static_cast<T>(acc);
  }
}

inline dim3 reduction_grid(int64_t n) {
  const int64_t blocks = (n + 255) / 256;
  return dim3(static_cast<unsigned>(blocks < 65535 * 8 ? blocks : 65535 * 8));
}

template <typename T>
void launch_forward_impl(const FwdParams& p, bool normalize, bool merge, cudaStream_t stream) {
  const Geometry& geo = p.geo;
  const dim3 block(geo.threads_per_line, geo.channels_per_cta);
  const dim3 grid(geo.C / geo.channels_per_cta, geo.D, geo.B);
  const size_t smem = 4 * sizeof(float) * geo.threads_per_line * geo.channels_per_cta;
  GSPN2_BOOL_SWITCH(normalize, kNormalize, [&] {
    GSPN2_BOOL_SWITCH(merge, kMerge, [&] {
      propagate_forward_kernel<T, kNormalize, kMerge><<<grid, block, smem, stream>>>(p);
    });
  });
}

template <typename T>
void launch_backward_impl(const BwdParams& p, bool normalize, bool merge, cudaStream_t stream) {
  const Geometry& geo = p.geo;
  const dim3 block(geo.threads_per_line, geo.channels_per_cta);
  const dim3 grid(geo.C / geo.channels_per_cta, geo.D, geo.B);
  const size_t smem = 4 * sizeof(float) * geo.threads_per_line * geo.channels_per_cta;
  GSPN2_BOOL_SWITCH(normalize, kNormalize, [&] {
    GSPN2_BOOL_SWITCH(merge, kMerge, [&] {
      propagate_backward_kernel<T, kNormalize, kMerge><<<grid, block, smem, stream>>>(p);
    });
  });
  const int64_t hw = static_cast<int64_t>(geo.H) * geo.W;
  if (geo.D > 1) {
    const int64_t n = static_cast<int64_t>(geo.B) * geo.C * hw;
    sum_directions_kernel<T><<<reduction_grid(n), 256, 0, stream>>>(
        p.partial_x, static_cast<T*>(p.grad_x), geo.D, n);
  }
  if (geo.G != geo.C) {
    const int64_t n = static_cast<int64_t>(geo.B) * geo.D * geo.G * 3 * hw;
    sum_group_channels_kernel<T><<<reduction_grid(n), 256, 0, stream>>>(
        p.partial_gates, static_cast<T*>(p.grad_gates), geo.C / geo.G, 3 * hw, n);
  }
}

}  // namespace cuda
}  // namespace gspn2
