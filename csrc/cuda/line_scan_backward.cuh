// The backward kernel of the warp, CTA and long line modes: BwdRun, backward_lines.
#pragma once

#include "line_scan_forward.cuh"

namespace gspn2 {
namespace cuda {

// Per-run inputs of the backward (reverse) scan for KC channels of one gate group:
// everything at the run's steps, and h at them with one position of halo on each side (hl:
// p0 - 1, hr: p0 + N; one word each, so that their scalar loads need no merge).
template <typename T, int N, int R, int KC>
struct BwdRun {
  RunBuf<T, N, R> a[3], go[KC], u[KC], lam[KC], x[KC], h[KC];
  RunBuf<T, 1, R, true> hl[KC], hr[KC];

  __device__ __forceinline__ void canonical(const Line& line) {
    const bool hrev = !line.vertical && line.reverse;
#pragma unroll
    for (int k = 0; k < 3; ++k) a[k].canonical(line.vertical, hrev);
#pragma unroll
    for (int kc = 0; kc < KC; ++kc) {
      go[kc].canonical(line.vertical, hrev);
      u[kc].canonical(line.vertical, hrev);
      lam[kc].canonical(line.vertical, hrev);
      x[kc].canonical(line.vertical, hrev);
      h[kc].canonical(line.vertical, hrev);
    }
  }
};

// The pointers are at the thread's first channel; its next ones follow at hw elements each.
template <typename T, bool MERGE, int N, int R, int KC>
__device__ __forceinline__ void load_bwd_run(BwdRun<T, N, R, KC>& run, const Line& line, int s0,
                                             int p0, bool vec_v, bool vec_h, const T* gop,
                                             const T* xp, const T* gp, const T* lp, const T* up,
                                             const T* hp, int64_t hw, bool row_loads) {
  // row_loads as in load_fwd_run (the halo positions hl, hr keep their bounds tests).
  if (row_loads && s0 + R <= line.n_steps) {
    const int64_t first = line.step_offset(s0) + p0;
    const int64_t dstep = line.reverse ? -static_cast<int64_t>(line.W) : line.W;
#pragma unroll
    for (int k = 0; k < 3; ++k) load_rows(run.a[k], gp + k * hw + first, dstep);
#pragma unroll
    for (int kc = 0; kc < KC; ++kc) {
      const int64_t o = kc * hw + first;
      load_rows(run.go[kc], gop + o, dstep);
      if (MERGE) load_rows(run.u[kc], up + o, dstep);
      load_rows(run.lam[kc], lp + o, dstep);
      load_rows(run.x[kc], xp + o, dstep);
      load_rows(run.h[kc], hp + o, dstep);
      load_block(run.hl[kc], hp + kc * hw, line, s0, p0 - 1, false, vec_h);
      load_block(run.hr[kc], hp + kc * hw, line, s0, p0 + N, false, vec_h);
    }
    return;
  }
#pragma unroll
  for (int k = 0; k < 3; ++k) load_block(run.a[k], gp + k * hw, line, s0, p0, vec_v, vec_h);
#pragma unroll
  for (int kc = 0; kc < KC; ++kc) {
    const int64_t o = kc * hw;
    load_block(run.go[kc], gop + o, line, s0, p0, vec_v, vec_h);
    if (MERGE) load_block(run.u[kc], up + o, line, s0, p0, vec_v, vec_h);
    load_block(run.lam[kc], lp + o, line, s0, p0, vec_v, vec_h);
    load_block(run.x[kc], xp + o, line, s0, p0, vec_v, vec_h);
    load_block(run.h[kc], hp + o, line, s0, p0, vec_v, vec_h);
    load_block(run.hl[kc], hp + o, line, s0, p0 - 1, false, vec_h);
    load_block(run.hr[kc], hp + o, line, s0, p0 + N, false, vec_h);
  }
}

// The backward (reverse) scan of one CTA's lines, VERT and KC as in forward_lines. The
// thread's gate-logit gradients are summed over its KC channels.
template <typename T, bool NORMALIZE, bool MERGE, int MODE, bool VERT, int KC>
__device__ __forceinline__ void backward_lines(const BwdParams& p, int dir) {
  using A = Acc<T>;
  constexpr bool WARP = MODE == kWarpMode;
  constexpr int N = kPositions, R = kRun<T, MODE, true, KC>;
  const Geometry& geo = p.geo;
  const int slice = blockIdx.x, di = blockIdx.y, b = blockIdx.z;
  const int tx = threadIdx.x, cy = threadIdx.y;
  const int tpl = geo.threads_per_line, cpc = geo.channels_per_cta, rows = cpc / KC;
  const int c = slice * cpc + cy * KC;  // the thread's first channel
  const int g = c / (geo.C / geo.G);
  const Line line(geo, dir, VERT);
  const int64_t hw = static_cast<int64_t>(geo.H) * geo.W;
  const int64_t x_off = (static_cast<int64_t>(b) * geo.C + c) * hw;
  const int64_t dc_off = (stored_entry(geo, b, di) * geo.C + c) * hw;
  const int64_t bdg = stored_entry(geo, b, di) * geo.G + g;
  const T* gop = static_cast<const T*>(p.grad_out) + (MERGE ? x_off : dc_off);
  const T* xp = static_cast<const T*>(p.x) + x_off;
  const T* gp = static_cast<const T*>(p.gates) + bdg * 3 * hw;
  const T* lp = static_cast<const T*>(p.lam) + dc_off;
  const T* up = MERGE ? static_cast<const T*>(p.u) + dc_off : nullptr;
  const T* hp = static_cast<const T*>(p.hidden) + dc_off;
  const int p0 = tx * N, n = line.n_line;
  const int64_t ps = line.pos_stride;
  const bool vec_st = geo.vec && line.vertical;
  // The thread's KC channels are its whole gate group: gate gradients straight to grad_gates.
  const bool direct_gates = geo.C / geo.G == KC;

  // exchange[buffer][0: w_{-1} dh at p0, 1: w_{+1} dh at p0 + N - 1][cy][kc][tx]
  extern __shared__ __align__(16) unsigned char smem[];
  A* exchange = reinterpret_cast<A*>(smem);
  auto slot = [&](int buf, int which, int kc, int t) {
    return (((buf * 2 + which) * rows + cy) * KC + kc) * tpl + t;
  };
  const unsigned lanes = warp_lanes(cy * tpl + tx, tpl * rows);
  const bool hrev = !line.vertical && line.reverse;
  // warp mode: w_{-1} dh at p0 and w_{+1} dh at p0 + N - 1 of step s + 1, per channel
  A to_left[KC], to_right[KC];

  const bool row_loads = VERT && geo.vec && p0 + N <= n;  // load_rows allowed
  BwdRun<T, N, R, KC> cur, nxt;
  A dh[KC][N], wn[3][N];  // dh and tap weights of step s + 1
#pragma unroll
  for (int q = 0; q < N; ++q) {
#pragma unroll
    for (int kc = 0; kc < KC; ++kc) dh[kc][q] = 0;
#pragma unroll
    for (int k = 0; k < 3; ++k) wn[k][q] = 0;
  }
#pragma unroll
  for (int kc = 0; kc < KC; ++kc) to_left[kc] = 0, to_right[kc] = 0;
  const int last = line.n_steps - 1;
  if (last >= 0) {
    load_bwd_run<T, MERGE, N, R, KC>(cur, line, (last / R) * R, p0, geo.vec, geo.vec_h, gop, xp,
                                     gp, lp, up, hp, hw, row_loads);
  }

  for (int s0 = last >= 0 ? (last / R) * R : -1; s0 >= 0; s0 -= R) {
    if (s0 >= R) {
      load_bwd_run<T, MERGE, N, R, KC>(nxt, line, s0 - R, p0, geo.vec, geo.vec_h, gop, xp, gp,
                                       lp, up, hp, hw, row_loads);
    }
    cur.canonical(line);
#pragma unroll
    for (int rr = 0; rr < R; ++rr) {
      const int r = R - 1 - rr;
      const int s = s0 + r;
      if (s > last) continue;  // uniform over the CTA
      // Step s + 1 feeds step s unless it restarted the hidden state (or does not exist).
      const bool cut = s == last || (geo.chunk > 0 && (s + 1) % geo.chunk == 0);
      const bool start = geo.chunk > 0 ? s % geo.chunk == 0 : s == 0;
      const int64_t off = line.step_offset(s);
      A a[3][N], w[3][N], comp[3][N], gsum[3][N];
#pragma unroll
      for (int q = 0; q < N; ++q) {
#pragma unroll
        for (int k = 0; k < 3; ++k) a[k][q] = cur.a[k].get(q, r), gsum[k][q] = 0;
      }
      tap_weights<T, NORMALIZE, N>(a, p0, n, w, comp);
      A d[KC][N];
#pragma unroll
      for (int kc = 0; kc < KC; ++kc) {
        A from_left = 0, from_right = 0;
        if constexpr (WARP) {
          const A fl = __shfl_up_sync(lanes, to_right[kc], 1, tpl);
          const A fr = __shfl_down_sync(lanes, to_left[kc], 1, tpl);
          if (!cut) {
            if (tx > 0) from_left = fl;
            if (tx + 1 < tpl) from_right = fr;
          }
        } else if (!cut) {
          const int buf = (s + 1) & 1;
          if (tx > 0) from_left = exchange[slot(buf, 1, kc, tx - 1)];
          if (tx + 1 < tpl) from_right = exchange[slot(buf, 0, kc, tx + 1)];
        }
        A go[N];
#pragma unroll
        for (int q = 0; q < N; ++q) {
          go[q] = cur.go[kc].get(q, r);
          A acc = MERGE ? cur.u[kc].get(q, r) * go[q] : go[q];
          if (!cut) {
            acc += wn[1][q] * dh[kc][q];
            acc += q == 0 ? from_left : wn[2][q - 1] * dh[kc][q - 1];
            acc += q == N - 1 ? from_right : wn[0][q + 1] * dh[kc][q + 1];
          }
          d[kc][q] = acc;
        }
        // h at step s - 1 (positions p0 - 1 .. p0 + N), from this run or the next one.
        A h_prev[N + 2];
#pragma unroll
        for (int q = 0; q < N + 2; ++q) {
          if (r >= 1) {
            h_prev[q] = q == 0       ? cur.hl[kc].get(0, r - 1)
                        : q == N + 1 ? cur.hr[kc].get(0, r - 1)
                                     : cur.h[kc].get(q - 1, r - 1);
          } else if (s >= 1) {
            h_prev[q] = q == 0       ? nxt.hl[kc].get(0, R - 1)
                        : q == N + 1 ? nxt.hr[kc].get(0, R - 1)
                                     : nxt.h[kc].get_stored(line.vertical, hrev, q - 1, R - 1);
          } else {
            h_prev[q] = 0;
          }
        }

        const int64_t coff = kc * hw + off;
        A v[N];
#pragma unroll
        for (int q = 0; q < N; ++q) v[q] = cur.x[kc].get(q, r) * d[kc][q];
        store_step<T>(static_cast<T*>(p.grad_lam) + dc_off + coff, p0, n, ps, vec_st, v);
#pragma unroll
        for (int q = 0; q < N; ++q) v[q] = cur.lam[kc].get(q, r) * d[kc][q];
        if (geo.D == 1) {
          store_step<T>(static_cast<T*>(p.grad_x) + x_off + coff, p0, n, ps, vec_st, v);
        } else {
          A* part = static_cast<A*>(p.partial_x) +
                    ((static_cast<int64_t>(di) * geo.B + b) * geo.C + c) * hw;
          store_step<A>(part + coff, p0, n, ps, vec_st, v);
        }
        if (MERGE && p.grad_u != nullptr) {
#pragma unroll
          for (int q = 0; q < N; ++q) v[q] = cur.h[kc].get(q, r) * go[q];
          store_step<T>(static_cast<T*>(p.grad_u) + dc_off + coff, p0, n, ps, vec_st, v);
        }
        // dL/dw_k = dh[p] * h_prev[p + k], summed over the thread's channels (in channel order).
        if (!start) {
#pragma unroll
          for (int q = 0; q < N; ++q) {
#pragma unroll
            for (int k = 0; k < 3; ++k) gsum[k][q] += d[kc][q] * h_prev[q + k];
          }
        }
      }

      // Gate-logit gradients through the normalisation.
      A da[3][N];
#pragma unroll
      for (int q = 0; q < N; ++q) {
        const int pos = p0 + q;
        const bool valid[3] = {pos >= 1 && pos < n, pos < n, pos + 1 < n};
        if (NORMALIZE) {
          const A dot = w[0][q] * gsum[0][q] + w[1][q] * gsum[1][q] + w[2][q] * gsum[2][q];
#pragma unroll
          for (int k = 0; k < 3; ++k) {
            da[k][q] = valid[k] ? w[k][q] * comp[k][q] * (gsum[k][q] - dot) : A(0);
          }
        } else {
#pragma unroll
          for (int k = 0; k < 3; ++k) da[k][q] = valid[k] ? gsum[k][q] : A(0);
        }
      }
      if (direct_gates) {
        T* out = static_cast<T*>(p.grad_gates) + bdg * 3 * hw;
#pragma unroll
        for (int k = 0; k < 3; ++k) store_step<T>(out + k * hw + off, p0, n, ps, vec_st, da[k]);
      } else {
        A* out = static_cast<A*>(p.partial_gates) +
                 ((static_cast<int64_t>(b) * geo.D + di) * (geo.C / KC) + c / KC) * 3 * hw;
#pragma unroll
        for (int k = 0; k < 3; ++k) store_step<A>(out + k * hw + off, p0, n, ps, vec_st, da[k]);
      }

#pragma unroll
      for (int q = 0; q < N; ++q) {
#pragma unroll
        for (int kc = 0; kc < KC; ++kc) dh[kc][q] = d[kc][q];
#pragma unroll
        for (int k = 0; k < 3; ++k) wn[k][q] = w[k][q];
      }
#pragma unroll
      for (int kc = 0; kc < KC; ++kc) {
        if constexpr (WARP) {
          to_left[kc] = w[0][0] * d[kc][0];
          to_right[kc] = w[2][N - 1] * d[kc][N - 1];
        } else {
          exchange[slot(s & 1, 0, kc, tx)] = w[0][0] * d[kc][0];
          exchange[slot(s & 1, 1, kc, tx)] = w[2][N - 1] * d[kc][N - 1];
        }
      }
      if constexpr (!WARP) __syncthreads();
    }
    cur = nxt;
  }
}

template <typename T, bool NORMALIZE, bool MERGE, int MODE, int KC>
__global__ void __launch_bounds__(MODE == kLongMode  ? kMaxThreads
                                  : MODE == kCtaMode ? kShortThreads
                                                     : kWarpThreads,
                                  MODE == kWarpMode ? kWarpMinBlocks : 1)
    propagate_backward_kernel(const BwdParams p) {
  const int dir = direction_of(p.geo, blockIdx.y);
  if (dir == kTopDownId || dir == kBottomUpId) {
    backward_lines<T, NORMALIZE, MERGE, MODE, true, KC>(p, dir);
  } else {
    backward_lines<T, NORMALIZE, MERGE, MODE, false, KC>(p, dir);
  }
}

}  // namespace cuda
}  // namespace gspn2
