// The forward kernel of the warp, CTA and long line modes (propagate.h): FwdRun, forward_lines.
#pragma once

#include "line_scan_common.cuh"

namespace gspn2 {
namespace cuda {

// Per-run inputs of the forward scan for KC channels of one gate group, element (q, r) at
// q * R + r.
template <typename T, int N, int R, int KC>
struct FwdRun {
  RunBuf<T, N, R> x[KC], lam[KC], a[3], u[KC];

  __device__ __forceinline__ void canonical(const Line& line) {
    const bool hrev = !line.vertical && line.reverse;
#pragma unroll
    for (int k = 0; k < 3; ++k) a[k].canonical(line.vertical, hrev);
#pragma unroll
    for (int kc = 0; kc < KC; ++kc) {
      x[kc].canonical(line.vertical, hrev);
      lam[kc].canonical(line.vertical, hrev);
      u[kc].canonical(line.vertical, hrev);
    }
  }
};

// xp, lp, up: the thread's first channel; its next ones follow at hw elements each.
template <typename T, bool MERGE, int N, int R, int KC>
__device__ __forceinline__ void load_fwd_run(FwdRun<T, N, R, KC>& run, const Line& line, int s0,
                                             int p0, bool vec_v, bool vec_h, const T* xp,
                                             const T* gp, const T* lp, const T* up, int64_t hw,
                                             bool row_loads) {
  // row_loads: the thread may use load_rows (vertical direction, its positions on the line,
  // vector access); decided once per run.
  if (row_loads && s0 + R <= line.n_steps) {
    const int64_t first = line.step_offset(s0) + p0;
    const int64_t dstep = line.reverse ? -static_cast<int64_t>(line.W) : line.W;
#pragma unroll
    for (int k = 0; k < 3; ++k) load_rows(run.a[k], gp + k * hw + first, dstep);
#pragma unroll
    for (int kc = 0; kc < KC; ++kc) {
      load_rows(run.x[kc], xp + kc * hw + first, dstep);
      load_rows(run.lam[kc], lp + kc * hw + first, dstep);
      if (MERGE) load_rows(run.u[kc], up + kc * hw + first, dstep);
    }
    return;
  }
#pragma unroll
  for (int k = 0; k < 3; ++k) load_block(run.a[k], gp + k * hw, line, s0, p0, vec_v, vec_h);
#pragma unroll
  for (int kc = 0; kc < KC; ++kc) {
    load_block(run.x[kc], xp + kc * hw, line, s0, p0, vec_v, vec_h);
    load_block(run.lam[kc], lp + kc * hw, line, s0, p0, vec_v, vec_h);
    if (MERGE) load_block(run.u[kc], up + kc * hw, line, s0, p0, vec_v, vec_h);
  }
}

// The forward scan of one CTA's lines, VERT: its direction is vertical (rows are its lines);
// KC channels per thread.
template <typename T, bool NORMALIZE, bool MERGE, int MODE, bool VERT, int KC>
__device__ __forceinline__ void forward_lines(const FwdParams& p, int dir) {
  using A = Acc<T>;
  constexpr bool WARP = MODE == kWarpMode;
  constexpr int N = kPositions, R = kRun<T, MODE, false, KC>;
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
  const T* xp = static_cast<const T*>(p.x) + x_off;
  const T* gp = static_cast<const T*>(p.gates) +
                (stored_entry(geo, b, di) * geo.G + g) * 3 * hw;
  const T* lp = static_cast<const T*>(p.lam) + dc_off;
  const T* up = MERGE ? static_cast<const T*>(p.u) + dc_off : nullptr;
  const int p0 = tx * N, n = line.n_line;
  const int64_t ps = line.pos_stride;
  const bool vec_st = geo.vec && line.vertical;  // vector stores of one step
  A* part = MERGE && geo.D > 1
                ? static_cast<A*>(p.partial) + ((static_cast<int64_t>(di) * geo.B + b) * geo.C + c) * hw
                : nullptr;
  // The paired merge (propagate.h): the other direction's contributions, its progress and
  // this CTA's; runs from merge_from on (a multiple of R, uniform over the CTA) add them.
  // (Compiled in the CTA mode only: in the long mode's one-step runs its code made the
  // unpaired scan 20% slower at 2048^2, and pairing did not gain there.)
  const bool paired = MERGE && VERT && MODE == kCtaMode && (geo.packed & kPairedMerge) != 0;
  const bool lead = tx == 0 && cy == 0;
  const int pair = b * gridDim.x + slice, pairs = geo.B * gridDim.x;
  int* const progress = p.arrivals + pairs;  // [pair][di]; first merged steps follow
  const A* other_part =
      paired ? static_cast<const A*>(p.partial) +
                   ((static_cast<int64_t>(1 - di) * geo.B + b) * geo.C + c) * hw
             : nullptr;
  __shared__ int seen[2];  // the other's progress as read by the lead thread, per period
  int merge_from = line.n_steps;
  int other_done = 0;  // lead thread: loaded at a period's start, shared at its end
  static_assert(kMergePeriod % R == 0, "a merge period is whole runs");

  // exchange[buffer][first or last position][cy][kc][tx], double-buffered over steps (CTA
  // modes; the warp mode shuffles instead).
  extern __shared__ __align__(16) unsigned char smem[];
  A* exchange = reinterpret_cast<A*>(smem);
  auto slot = [&](int buf, int which, int kc, int t) {
    return (((buf * 2 + which) * rows + cy) * KC + kc) * tpl + t;
  };
  const unsigned lanes = warp_lanes(cy * tpl + tx, tpl * rows);

  const bool row_loads = VERT && geo.vec && p0 + N <= n;  // load_rows allowed
  FwdRun<T, N, R, KC> cur, nxt;
  A h[KC][N];
#pragma unroll
  for (int kc = 0; kc < KC; ++kc) {
#pragma unroll
    for (int q = 0; q < N; ++q) h[kc][q] = 0;
  }
  if (line.n_steps > 0) {
    load_fwd_run<T, MERGE, N, R, KC>(cur, line, 0, p0, geo.vec, geo.vec_h, xp, gp, lp, up, hw,
                                     row_loads);
  }

  int phase = 0;
  for (int s0 = 0; s0 < line.n_steps; s0 += R) {
    // Once merging, a CTA neither reads nor publishes progress: its rows are then the other's.
    if (paired && s0 < merge_from && s0 % kMergePeriod == 0) {
      if (s0 > 0) {
        // Steps s >= n_steps - done reach rows the other has written.
        const int done = seen[(s0 / kMergePeriod) & 1];
        const int from = (line.n_steps - done + R - 1) / R * R;
        merge_from = min(merge_from, max(s0, from));
      }
      if (lead) other_done = load_acquire(progress + pair * 2 + 1 - di);
    }
    const bool merged = paired && s0 >= merge_from;
    if (s0 + R < line.n_steps) {
      load_fwd_run<T, MERGE, N, R, KC>(nxt, line, s0 + R, p0, geo.vec, geo.vec_h, xp, gp, lp, up,
                                       hw, row_loads);
    }
    cur.canonical(line);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int s = s0 + r;
      if (s >= line.n_steps) break;  // uniform over the CTA
      const bool restart = phase == 0;
      A other[KC][N];  // merged: the other direction's contributions at this step
      if (merged) {
#pragma unroll
        for (int kc = 0; kc < KC; ++kc) {
          load_step_cg<A, N>(other_part + kc * hw + line.step_offset(s), p0, n, ps, vec_st,
                             other[kc]);
        }
      }
      // The tap weights of the step's positions, shared by the thread's KC channels.
      A a[3][N], w[3][N], comp[3][N];
#pragma unroll
      for (int q = 0; q < N; ++q) {
#pragma unroll
        for (int k = 0; k < 3; ++k) a[k][q] = cur.a[k].get(q, r);
      }
      tap_weights<T, NORMALIZE, N>(a, p0, n, w, comp);
      const int64_t off = line.step_offset(s);
#pragma unroll
      for (int kc = 0; kc < KC; ++kc) {
        A left = 0, right = 0;  // previous step's h at p0 - 1 and p0 + N
        if constexpr (WARP) {
          const A from_left = __shfl_up_sync(lanes, h[kc][N - 1], 1, tpl);
          const A from_right = __shfl_down_sync(lanes, h[kc][0], 1, tpl);
          if (!restart) {
            if (tx > 0) left = from_left;
            if (tx + 1 < tpl) right = from_right;
          }
        } else if (!restart) {
          const int buf = (s + 1) & 1;
          if (tx > 0) left = exchange[slot(buf, 1, kc, tx - 1)];
          if (tx + 1 < tpl) right = exchange[slot(buf, 0, kc, tx + 1)];
        }
        A hn[N];
#pragma unroll
        for (int q = 0; q < N; ++q) {
          A acc = cur.lam[kc].get(q, r) * cur.x[kc].get(q, r);
          if (!restart) {
            const A hm = q == 0 ? left : h[kc][q - 1];
            const A hp = q == N - 1 ? right : h[kc][q + 1];
            acc += w[0][q] * hm + w[1][q] * h[kc][q] + w[2][q] * hp;
          }
          hn[q] = acc;
        }
#pragma unroll
        for (int q = 0; q < N; ++q) h[kc][q] = hn[q];
        if constexpr (!WARP) {
          exchange[slot(s & 1, 0, kc, tx)] = h[kc][0];
          exchange[slot(s & 1, 1, kc, tx)] = h[kc][N - 1];
        }

        const int64_t coff = kc * hw + off;
        if (!MERGE) {
          store_step<T>(static_cast<T*>(p.out) + dc_off + coff, p0, n, ps, vec_st, h[kc]);
        } else {
          if (p.hidden != nullptr) {
            store_step<T>(static_cast<T*>(p.hidden) + dc_off + coff, p0, n, ps, vec_st, h[kc]);
          }
          A contrib[N];
#pragma unroll
          for (int q = 0; q < N; ++q) contrib[q] = cur.u[kc].get(q, r) * h[kc][q];
          if (geo.D == 1) {
            store_step<T>(static_cast<T*>(p.out) + x_off + coff, p0, n, ps, vec_st, contrib);
          } else if (merged) {
#pragma unroll
            for (int q = 0; q < N; ++q) contrib[q] = add_rn(contrib[q], other[kc][q]);
            store_step<T>(static_cast<T*>(p.out) + x_off + coff, p0, n, ps, vec_st, contrib);
          } else {
            store_step<A>(part + coff, p0, n, ps, vec_st, contrib);
          }
        }
      }
      // A period's end: its last barrier shares what the lead thread read, and the lead thread
      // then publishes the period's rows (the barrier orders the CTA's stores before it).
      const bool period_end = paired && !merged && (s + 1) % kMergePeriod == 0;
      if (period_end && lead) seen[((s + 1) / kMergePeriod) & 1] = other_done;
      if constexpr (!WARP) __syncthreads();
      if (period_end && lead) store_release(progress + pair * 2 + di, s + 1);
      phase = (geo.chunk > 0 && phase + 1 == geo.chunk) ? 0 : phase + 1;
    }
    cur = nxt;
  }

  if (MERGE && geo.D > 1) {
    // The CTA that finishes last among the D directions of this (batch, channel slice) sums
    // the per-direction contributions in direction order: deterministic, one launch.
    __shared__ int is_last;
    __threadfence();
    __syncthreads();
    const int tid = cy * tpl + tx, nthreads = tpl * rows;
    if (tid == 0) {
      if (paired) {
        progress[pairs * 2 + pair * 2 + di] = merge_from;
        __threadfence();
      }
      const int arrived = atomicAdd(p.arrivals + b * gridDim.x + slice, 1);
      is_last = arrived == geo.D - 1;
    }
    __syncthreads();
    if (is_last) {
      __threadfence();
      const int64_t c0 = static_cast<int64_t>(slice) * cpc;
      const int64_t dir_stride = static_cast<int64_t>(geo.B) * geo.C * hw;
      const A* parts = static_cast<const A*>(p.partial) + (static_cast<int64_t>(b) * geo.C + c0) * hw;
      T* out = static_cast<T*>(p.out) + (static_cast<int64_t>(b) * geo.C + c0) * hw;
      if (!paired) {
        // One CTA sums cpc whole planes.
        sum_direction_range<T>(parts, dir_stride, geo.D, out, 0, cpc * hw, hw % 4 == 0, tid,
                               nthreads);
      } else {
        // The rows both directions wrote as contributions: top-down rows [0, its first merged
        // step), bottom-up rows [H - its first merged step, H).
        const int other_from = load_acquire(progress + pairs * 2 + pair * 2 + 1 - di);
        const int td_from = line.reverse ? other_from : merge_from;
        const int bu_from = line.reverse ? merge_from : other_from;
        const int64_t lo = static_cast<int64_t>(geo.H - bu_from) * geo.W;
        const int64_t hi = static_cast<int64_t>(td_from) * geo.W;
        for (int k = 0; k < cpc && lo < hi; ++k) {
          sum_direction_range<T>(parts, dir_stride, geo.D, out, k * hw + lo, k * hw + hi,
                                 geo.W % 4 == 0, tid, nthreads);
        }
      }
    }
  }
}

// One specialised body per orientation (the orientation is uniform over a CTA); a run-time
// test of it in every load and store made up much of the integer work of the scan loop.
template <typename T, bool NORMALIZE, bool MERGE, int MODE, int KC>
__global__ void __launch_bounds__(MODE == kLongMode  ? kMaxThreads
                                  : MODE == kCtaMode ? kShortThreads
                                                     : kWarpThreads,
                                  MODE == kWarpMode ? kWarpMinBlocks : 1)
    propagate_forward_kernel(const FwdParams p) {
  const int dir = direction_of(p.geo, blockIdx.y);
  if (dir == kTopDownId || dir == kBottomUpId) {
    forward_lines<T, NORMALIZE, MERGE, MODE, true, KC>(p, dir);
  } else {
    forward_lines<T, NORMALIZE, MERGE, MODE, false, KC>(p, dir);
  }
}

}  // namespace cuda
}  // namespace gspn2
