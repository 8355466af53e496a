// The shared-line mode (propagate.h, kSharedLineMode): lines longer than the line modes hold
// (kPositions * kMaxThreads positions), up to kSharedLineMaxLine. One CTA owns one (batch,
// direction, channel) plane and walks its steps; the state of the line (h in the forward, the
// carried gradient dh in the backward) lives in shared memory, double-buffered, and each thread
// takes the positions tid, tid + blockDim.x, ... of every step: any line length, one barrier per
// step, no registers per position. It is the plan's fallback for the longest lines, not a fast
// path: every position is one global load per input and step (coalesced along a row on the
// vertical directions; the horizontal ones of such lines reach it on transposed planes).
#pragma once

#include "line_scan_common.cuh"

namespace gspn2 {
namespace cuda {

template <typename T>
__device__ __forceinline__ Acc<T> load_acc(const T* ptr) {
  return raw_to_acc<T>(load_raw(ptr));
}

template <typename T>
__device__ __forceinline__ void store_acc(T* ptr, Acc<T> v) {
  *reinterpret_cast<RawOf<T>*>(ptr) = acc_to_raw<T>(v);
}

// Tap weights (and, with NORMALIZE, 1 - sigmoid of each logit) of position `pos` of a line of
// n, from the gate planes `gp` at element offset `at`.
template <typename T, bool NORMALIZE>
__device__ __forceinline__ void taps_at(const T* gp, int64_t hw, int64_t at, int pos, int n,
                                        Acc<T> (&w)[3], Acc<T> (&comp)[3]) {
  Acc<T> a[3][1], wq[3][1], cq[3][1];
#pragma unroll
  for (int k = 0; k < 3; ++k) a[k][0] = load_acc(gp + k * hw + at);
  tap_weights<T, NORMALIZE, 1>(a, pos, n, wq, cq);
#pragma unroll
  for (int k = 0; k < 3; ++k) w[k] = wq[k][0], comp[k] = cq[k][0];
}

// The pointers of one CTA's plane.
struct SharedLinePlane {
  int b, di, c, g;
  int64_t hw, x_off, dc_off, bdg;

  __device__ __forceinline__ explicit SharedLinePlane(const Geometry& geo) {
    c = blockIdx.x;
    di = blockIdx.y;
    b = blockIdx.z;
    g = c / (geo.C / geo.G);
    hw = static_cast<int64_t>(geo.H) * geo.W;
    x_off = (static_cast<int64_t>(b) * geo.C + c) * hw;
    dc_off = (stored_entry(geo, b, di) * geo.C + c) * hw;
    bdg = stored_entry(geo, b, di) * geo.G + g;
  }
  // Element offset of this plane's entry of a (D, B, C, H, W) float buffer.
  __device__ __forceinline__ int64_t partial_off(const Geometry& geo) const {
    return ((static_cast<int64_t>(di) * geo.B + b) * geo.C + c) * hw;
  }
};

template <typename T, bool NORMALIZE, bool MERGE>
__global__ void __launch_bounds__(kSharedLineThreads)
    shared_line_forward_kernel(const FwdParams p) {
  using A = Acc<T>;
  const Geometry& geo = p.geo;
  const SharedLinePlane pl(geo);
  const Line line(geo, direction_of(geo, pl.di));
  const int n = line.n_line;
  const T* xp = static_cast<const T*>(p.x) + pl.x_off;
  const T* gp = static_cast<const T*>(p.gates) + pl.bdg * 3 * pl.hw;
  const T* lp = static_cast<const T*>(p.lam) + pl.dc_off;
  extern __shared__ __align__(16) unsigned char smem[];
  A* state = reinterpret_cast<A*>(smem);  // [2][n]: h of the step (s & 1) and of the one before
  for (int s = 0; s < line.n_steps; ++s) {
    const bool start = geo.chunk > 0 ? s % geo.chunk == 0 : s == 0;
    const int64_t off = line.step_offset(s);
    A* h_now = state + (s & 1) * n;
    const A* h_before = state + ((s & 1) ^ 1) * n;
    for (int pos = threadIdx.x; pos < n; pos += blockDim.x) {
      const int64_t at = off + pos * line.pos_stride;
      A h = load_acc(lp + at) * load_acc(xp + at);
      if (!start) {
        A w[3], comp[3];
        taps_at<T, NORMALIZE>(gp, pl.hw, at, pos, n, w, comp);
        if (pos >= 1) h += w[0] * h_before[pos - 1];
        h += w[1] * h_before[pos];
        if (pos + 1 < n) h += w[2] * h_before[pos + 1];
      }
      h_now[pos] = h;
      if (p.hidden != nullptr) store_acc(static_cast<T*>(p.hidden) + pl.dc_off + at, h);
      if (!MERGE) {
        store_acc(static_cast<T*>(p.out) + pl.dc_off + at, h);
      } else {
        const A y = load_acc(static_cast<const T*>(p.u) + pl.dc_off + at) * h;
        if (geo.D == 1) {
          store_acc(static_cast<T*>(p.out) + pl.x_off + at, y);
        } else {
          static_cast<A*>(p.partial)[pl.partial_off(geo) + at] = y;  // summed after the launch
        }
      }
    }
    __syncthreads();
  }
}

// The backward: dh of step s (in scan order, s from the last step down) is the direct term plus
// what step s + 1 carried back through its taps, whose weights are recomputed from the gates
// (no shared memory for them: any line length fits).
template <typename T, bool NORMALIZE, bool MERGE>
__global__ void __launch_bounds__(kSharedLineThreads)
    shared_line_backward_kernel(const BwdParams p) {
  using A = Acc<T>;
  const Geometry& geo = p.geo;
  const SharedLinePlane pl(geo);
  const Line line(geo, direction_of(geo, pl.di));
  const int n = line.n_line;
  const int64_t ps = line.pos_stride;
  const T* gop = static_cast<const T*>(p.grad_out) + (MERGE ? pl.x_off : pl.dc_off);
  const T* xp = static_cast<const T*>(p.x) + pl.x_off;
  const T* gp = static_cast<const T*>(p.gates) + pl.bdg * 3 * pl.hw;
  const T* lp = static_cast<const T*>(p.lam) + pl.dc_off;
  const T* hp = static_cast<const T*>(p.hidden) + pl.dc_off;
  const bool direct_gates = geo.C == geo.G;
  extern __shared__ __align__(16) unsigned char smem[];
  A* state = reinterpret_cast<A*>(smem);  // [2][n]: dh of the step (s & 1) and of step s + 1
  const int last = line.n_steps - 1;
  for (int s = last; s >= 0; --s) {
    // Step s + 1 feeds step s unless it restarted the hidden state (or does not exist).
    const bool cut = s == last || (geo.chunk > 0 && (s + 1) % geo.chunk == 0);
    const bool start = geo.chunk > 0 ? s % geo.chunk == 0 : s == 0;
    const int64_t off = line.step_offset(s);
    const int64_t off_next = cut ? 0 : line.step_offset(s + 1);
    const int64_t off_prev = start ? 0 : line.step_offset(s - 1);
    A* dh_now = state + (s & 1) * n;
    const A* dh_next = state + ((s & 1) ^ 1) * n;
    for (int pos = threadIdx.x; pos < n; pos += blockDim.x) {
      const int64_t at = off + pos * ps;
      const A go = load_acc(gop + at);
      A d = MERGE ? load_acc(static_cast<const T*>(p.u) + pl.dc_off + at) * go : go;
      if (!cut) {
        // Step s + 1's taps that reach pos: tap +1 of pos - 1, tap 0 of pos, tap -1 of pos + 1.
        A w[3], comp[3];
        taps_at<T, NORMALIZE>(gp, pl.hw, off_next + pos * ps, pos, n, w, comp);
        d += w[1] * dh_next[pos];
        if (pos >= 1) {
          taps_at<T, NORMALIZE>(gp, pl.hw, off_next + (pos - 1) * ps, pos - 1, n, w, comp);
          d += w[2] * dh_next[pos - 1];
        }
        if (pos + 1 < n) {
          taps_at<T, NORMALIZE>(gp, pl.hw, off_next + (pos + 1) * ps, pos + 1, n, w, comp);
          d += w[0] * dh_next[pos + 1];
        }
      }
      dh_now[pos] = d;
      store_acc(static_cast<T*>(p.grad_lam) + pl.dc_off + at, load_acc(xp + at) * d);
      const A dx = load_acc(lp + at) * d;
      if (geo.D == 1) {
        store_acc(static_cast<T*>(p.grad_x) + pl.x_off + at, dx);
      } else {
        static_cast<A*>(p.partial_x)[pl.partial_off(geo) + at] = dx;  // summed after the launch
      }
      if (MERGE && p.grad_u != nullptr) {
        store_acc(static_cast<T*>(p.grad_u) + pl.dc_off + at, load_acc(hp + at) * go);
      }
      // dL/dw_k = dh[pos] * h_{s-1}[pos + k], then through the normalisation.
      A gsum[3] = {0, 0, 0};
      if (!start) {
#pragma unroll
        for (int k = 0; k < 3; ++k) {
          const int q = pos + k - 1;
          if (q >= 0 && q < n) gsum[k] = d * load_acc(hp + off_prev + q * ps);
        }
      }
      A w[3], comp[3];
      taps_at<T, NORMALIZE>(gp, pl.hw, at, pos, n, w, comp);
      const bool valid[3] = {pos >= 1, true, pos + 1 < n};
      const A dot = w[0] * gsum[0] + w[1] * gsum[1] + w[2] * gsum[2];
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        const A da = !valid[k] ? A(0) : NORMALIZE ? w[k] * comp[k] * (gsum[k] - dot) : gsum[k];
        if (direct_gates) {
          store_acc(static_cast<T*>(p.grad_gates) + pl.bdg * 3 * pl.hw + k * pl.hw + at, da);
        } else {
          // one channel per partial entry (gate_channels_summed: channels_per_thread = 1)
          const int64_t entry = (static_cast<int64_t>(pl.b) * geo.D + pl.di) * geo.C + pl.c;
          static_cast<A*>(p.partial_gates)[entry * 3 * pl.hw + k * pl.hw + at] = da;
        }
      }
    }
    __syncthreads();
  }
}

}  // namespace cuda
}  // namespace gspn2
