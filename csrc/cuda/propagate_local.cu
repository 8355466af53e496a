// Kernels of the local propagation (chunk <= 2; propagate_local.h says how work is split).
//
// Notation as in line_scan_common.cuh: direction d scans n_steps steps s of lines of n_line
// positions p; tap k = 0, 1, 2 of a position reaches the previous step's position p + k - 1.
// With chunk 2 a position is a chunk start (s even: h = z = lam * x) or linked (s odd:
// h = z + sum_k w_k z[prev_k]), and a chunk start with a next step feeds the three positions
// of that step whose taps reach it.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

#include "kernel_common.cuh"
#include "position_taps.cuh"
#include "propagate_local.h"

namespace gspn2 {
namespace cuda {
namespace {

using namespace position_taps;

// One direction seen from one position: where the position sits in its scan and the plane
// offsets (elements) of a step back and of one position along the line.
struct LocalDir {
  int p, n_line;       // position along the line, line length
  bool linked;         // takes one step from the previous line (chunk 2, s odd)
  bool feeds;          // a chunk start whose next step is in the same chunk
  int64_t back, along;  // offset of the previous step's same position; of position p + 1
};

__device__ __forceinline__ LocalDir local_dir(int dir, int r, int c, int H, int W, int chunk) {
  LocalDir g;
  int s, n_steps;
  if (dir == 0 || dir == 1) {  // top-down, bottom-up: steps are rows, lines are rows
    s = dir == 0 ? r : H - 1 - r;
    n_steps = H;
    g.p = c;
    g.n_line = W;
    g.back = dir == 0 ? -static_cast<int64_t>(W) : W;
    g.along = 1;
  } else {  // left-right, right-left: steps are columns, lines are columns
    s = dir == 2 ? c : W - 1 - c;
    n_steps = W;
    g.p = r;
    g.n_line = H;
    g.back = dir == 2 ? -1 : 1;
    g.along = W;
  }
  g.linked = has_prev(s, chunk);
  g.feeds = chunk == 2 && !(s & 1) && s + 1 < n_steps;
  return g;
}

struct Slice {
  int64_t b, pos;
  int r, c, g, c0, c1;  // batch item, plane offset, row, column, group, channels [c0, c1)
};

__device__ __forceinline__ bool local_slice(const ScanParams& p, Slice& t) {
  const int64_t HW = static_cast<int64_t>(p.H) * p.W;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= p.B * HW) return false;
  t.b = idx / HW;
  t.pos = idx - t.b * HW;
  t.r = static_cast<int>(t.pos / p.W);
  t.c = static_cast<int>(t.pos - static_cast<int64_t>(t.r) * p.W);
  t.g = blockIdx.y / p.slices;
  const int cg = p.C / p.G, per = cg / p.slices, slice = blockIdx.y % p.slices;
  t.c0 = t.g * cg + slice * per;
  t.c1 = t.c0 + per;
  return true;
}

// Per direction entry of a launch, seen from one position: which taps reach a previous-step
// position, and the offsets of those positions from it.
struct LocalTaps {
  bool use[4][3];
  int64_t off[4][3];
};

// The forward of one thread. Nothing of a position depends on another's result, so what bounds
// it is how many loads are in flight: every load of a channel (x; lam, u and the taps'
// previous-step lam x of each direction entry) is issued before the channel's first store, and
// the pointers are restrict (the binding allocates every output; no input overlaps one), so the
// compiler may also issue the next channel's loads before this one's stores. With a store after
// each direction entry's loads, as before, a channel was several dependent round trips to
// memory (docs/ops.md has the measurements).
template <typename T, bool NORMALIZE, bool MERGE>
__device__ __forceinline__ void local_forward_thread(
    const ScanParams& p, const Slice& t, const T* __restrict__ x, const T* __restrict__ gates,
    const T* __restrict__ lam, const T* __restrict__ u, T* __restrict__ out,
    T* __restrict__ hidden) {
  using A = Acc<T>;
  const int64_t HW = static_cast<int64_t>(p.H) * p.W;
  const int D = p.D, C = p.C;
  // Bases at this position: x and the merged output of batch item b; the (d, c) planes of
  // lam, u, hidden and the unmerged output of b.
  x += t.b * C * HW + t.pos;
  lam += t.b * D * C * HW + t.pos;
  if (MERGE) u += t.b * D * C * HW + t.pos;
  out += (MERGE ? t.b * C * HW : t.b * D * C * HW) + t.pos;
  if (hidden != nullptr) hidden += t.b * D * C * HW + t.pos;

  LocalTaps taps;
  A w[4][3];
#pragma unroll
  for (int d = 0; d < 4; ++d) {
    const LocalDir dir = local_dir(p.dirs[d < D ? d : 0], t.r, t.c, p.H, p.W, p.chunk);
#pragma unroll
    for (int k = 0; k < 3; ++k) {
      taps.use[d][k] = d < D && dir.linked && tap_valid(dir.p, k, dir.n_line);
      taps.off[d][k] = dir.back + (k - 1) * dir.along;
      w[d][k] = 0;
    }
    // (computed at every position, linked or not, and masked by `use`: with chunk 2 the
    // horizontal directions alternate linked columns, and a branch here diverged every warp)
    if (d < D) {
      A comp[3];
      const T* g3 = gates + ((t.b * D + d) * p.G + t.g) * 3 * HW;
      tap_weights<NORMALIZE>(g3, HW, t.pos, dir.p, dir.n_line, w[d], comp);
    }
  }
#pragma unroll 2
  for (int ch = t.c0; ch < t.c1; ++ch) {
    const int64_t xo = ch * HW;
    // Loads: x, and per direction entry lam, u and the previous step's z = lam x of the taps.
    const A xv = ld<A>(x, xo);
    A lv[4], uv[4], zn[4][3];
#pragma unroll
    for (int d = 0; d < 4; ++d) {
      if (d >= D) break;
      const int64_t o = (static_cast<int64_t>(d) * C + ch) * HW;
      lv[d] = ld<A>(lam, o);
      uv[d] = MERGE ? ld<A>(u, o) : A(0);
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        zn[d][k] = taps.use[d][k] ? ld<A>(lam, o + taps.off[d][k]) * ld<A>(x, xo + taps.off[d][k])
                                  : A(0);
      }
    }
    A y = 0;
#pragma unroll
    for (int d = 0; d < 4; ++d) {
      if (d >= D) break;
      const int64_t o = (static_cast<int64_t>(d) * C + ch) * HW;
      A h = lv[d] * xv;
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        if (taps.use[d][k]) h += w[d][k] * zn[d][k];
      }
      if (hidden != nullptr) st(hidden, o, h);
      if (MERGE) {
        y += uv[d] * h;
      } else {
        st(out, o, h);
      }
    }
    if (MERGE) st(out, xo, y);
  }
}

// Four CTAs per SM in the 16- and 32-bit types (64 registers, 16 bytes spilled in bf16): the
// forward waits on its global loads most of the time, and without the bound its registers (84
// in bf16) leave room for two; three measured 1.4-1.5x faster than two, four another 1.23x
// (docs/benchmarks/op.md, "device round"). float64 would spill under it.
template <typename T, bool NORMALIZE, bool MERGE>
__global__ void __launch_bounds__(kLocalThreads, sizeof(T) == 8 ? 1 : 4)
    local_forward_kernel(const ScanParams p) {
  Slice t;
  if (!local_slice(p, t)) return;
  local_forward_thread<T, NORMALIZE, MERGE>(
      p, t, static_cast<const T*>(p.x), static_cast<const T*>(p.gates),
      static_cast<const T*>(p.lam), static_cast<const T*>(p.u), static_cast<T*>(p.out),
      static_cast<T*>(p.hidden));
}

// dh of direction entry d, channel ch, at plane offset q: grad_out * u (merge) or grad_out.
template <bool MERGE, typename A, typename T>
__device__ __forceinline__ A local_dh(const T* grad_out, const T* u, int64_t merged_plane,
                                      int64_t plane, int64_t q) {
  return MERGE ? ld<A>(grad_out, merged_plane + q) * ld<A>(u, plane + q)
               : ld<A>(grad_out, plane + q);
}

// Channels a backward thread carries through all directions at once (their dL/dx sums).
constexpr int kLocalChannelBlock = 4;

template <typename T, bool NORMALIZE, bool MERGE>
__global__ void __launch_bounds__(kLocalThreads) local_backward_kernel(const ScanParams p) {
  using A = Acc<T>;
  Slice t;
  if (!local_slice(p, t)) return;
  const int64_t HW = static_cast<int64_t>(p.H) * p.W;
  const int D = p.D, C = p.C;
  const T* x = static_cast<const T*>(p.x) + t.b * C * HW;
  const T* lam = static_cast<const T*>(p.lam);
  const T* u = static_cast<const T*>(p.u);
  const T* grad_out = static_cast<const T*>(p.grad_out);
  T* grad_x = static_cast<T*>(p.grad_x);
  T* grad_lam = static_cast<T*>(p.grad_lam);
  T* grad_u = static_cast<T*>(p.grad_u);
  auto gates_of = [&](int d) {
    return static_cast<const T*>(p.gates) + ((t.b * D + d) * p.G + t.g) * 3 * HW;
  };

  A gsum[4][3];  // per direction: sum over the slice's channels of dh * z[prev_k] (linked)
#pragma unroll
  for (int d = 0; d < 4; ++d) {
#pragma unroll
    for (int k = 0; k < 3; ++k) gsum[d][k] = 0;
  }
  // Channel blocks, outside the directions: the direction's weights are recomputed per block
  // (cached gate loads) so that only the block's dL/dx sums live across directions.
  for (int cb = t.c0; cb < t.c1; cb += kLocalChannelBlock) {
    A gx[kLocalChannelBlock];
#pragma unroll
    for (int j = 0; j < kLocalChannelBlock; ++j) gx[j] = 0;
#pragma unroll
    for (int d = 0; d < 4; ++d) {
      if (d >= D) break;
      const LocalDir dir = local_dir(p.dirs[d], t.r, t.c, p.H, p.W, p.chunk);
      const T* g3 = gates_of(d);
      A w[3] = {0, 0, 0}, w_next[3] = {0, 0, 0};  // w_next[k]: tap k of the next step's p + 1 - k
      if (dir.linked) {
        A comp[3];
        tap_weights<NORMALIZE>(g3, HW, t.pos, dir.p, dir.n_line, w, comp);
      }
      if (dir.feeds) {
#pragma unroll
        for (int k = 0; k < 3; ++k) {
          const int pn = dir.p + 1 - k;
          if (pn < 0 || pn >= dir.n_line) continue;
          A wn[3], cn[3];
          tap_weights<NORMALIZE>(g3, HW, t.pos - dir.back + (1 - k) * dir.along, pn, dir.n_line,
                                 wn, cn);
          w_next[k] = wn[k];
        }
      }
#pragma unroll
      for (int j = 0; j < kLocalChannelBlock; ++j) {
        const int ch = cb + j;
        if (ch >= t.c1) break;
        const T* xc = x + ch * HW;
        const int64_t merged_plane = (t.b * C + ch) * HW;
        const int64_t plane = ((t.b * D + d) * C + ch) * HW;
        const A xv = ld<A>(xc, t.pos);
        const A gy = MERGE ? ld<A>(grad_out, merged_plane + t.pos) : A(0);
        const A lv = ld<A>(lam, plane + t.pos);
        const A dh = MERGE ? gy * ld<A>(u, plane + t.pos) : ld<A>(grad_out, plane + t.pos);
        A h = lv * xv;
        if (dir.linked) {
#pragma unroll
          for (int k = 0; k < 3; ++k) {
            if (!tap_valid(dir.p, k, dir.n_line)) continue;
            const int64_t q = t.pos + dir.back + (k - 1) * dir.along;
            const A zq = ld<A>(lam, plane + q) * ld<A>(xc, q);
            h += w[k] * zq;
            gsum[d][k] += dh * zq;
          }
        }
        if (MERGE) st(grad_u, plane + t.pos, gy * h);
        A gz = dh;
        if (dir.feeds) {
#pragma unroll
          for (int k = 0; k < 3; ++k) {
            const int pn = dir.p + 1 - k;
            if (pn < 0 || pn >= dir.n_line) continue;
            const int64_t n = t.pos - dir.back + (1 - k) * dir.along;
            gz += w_next[k] * local_dh<MERGE, A>(grad_out, u, merged_plane, plane, n);
          }
        }
        st(grad_lam, plane + t.pos, xv * gz);
        gx[j] += lv * gz;
      }
    }
#pragma unroll
    for (int j = 0; j < kLocalChannelBlock; ++j) {
      if (cb + j >= t.c1) break;
      st(grad_x, (t.b * C + cb + j) * HW + t.pos, gx[j]);
    }
  }
  // Gate-logit gradients: directly with one slice per group, else this slice's sums.
  const int slice = blockIdx.y % p.slices;
#pragma unroll
  for (int d = 0; d < 4; ++d) {
    if (d >= D) break;
    const LocalDir dir = local_dir(p.dirs[d], t.r, t.c, p.H, p.W, p.chunk);
    const int64_t gbase = ((t.b * D + d) * p.G + t.g) * 3 * HW + t.pos;
    if (p.slices == 1) {
      A gl[3] = {0, 0, 0};
      if (dir.linked) {
        A w[3], comp[3];
        tap_weights<NORMALIZE>(gates_of(d), HW, t.pos, dir.p, dir.n_line, w, comp);
        gate_logit_grads<NORMALIZE>(gsum[d], w, comp, dir.p, dir.n_line, gl);
      }
#pragma unroll
      for (int k = 0; k < 3; ++k) st(static_cast<T*>(p.grad_gates), gbase + k * HW, gl[k]);
    } else if (dir.linked) {
      A* partial = static_cast<A*>(p.partial_gates) +
                   static_cast<int64_t>(slice) * p.B * D * p.G * 3 * HW;
#pragma unroll
      for (int k = 0; k < 3; ++k) partial[gbase + k * HW] = gsum[d][k];
    }
  }
}

// Slices > 1: the gate-logit gradients from the slices' sums, added in slice order (also the
// small-plane backward's finisher: `linked` is has_prev for any chunk). One thread per
// (position, gate group, direction): the small planes' batches can be small and their slices
// many, so the reduction is spread over the directions too, and its loads are unrolled.
template <typename T, bool NORMALIZE>
__global__ void __launch_bounds__(kLocalThreads) local_gate_grad_kernel(const ScanParams p) {
  using A = Acc<T>;
  const int64_t HW = static_cast<int64_t>(p.H) * p.W;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= p.B * HW) return;
  const int64_t b = idx / HW, pos = idx - b * HW;
  const int r = static_cast<int>(pos / p.W), c = static_cast<int>(pos - int64_t(r) * p.W);
  const int D = p.D, g = blockIdx.y / D, d = blockIdx.y - g * D;
  const int64_t slice_stride = static_cast<int64_t>(p.B) * D * p.G * 3 * HW;
  const LocalDir dir = local_dir(p.dirs[d], r, c, p.H, p.W, p.chunk);
  const int64_t gbase = ((b * D + d) * p.G + g) * 3 * HW + pos;
  A gl[3] = {0, 0, 0};
  if (dir.linked) {
    A w[3], comp[3];
    tap_weights<NORMALIZE>(static_cast<const T*>(p.gates) + gbase - pos, HW, pos, dir.p,
                           dir.n_line, w, comp);
    A gsum[3] = {0, 0, 0};
    const A* partial = static_cast<const A*>(p.partial_gates) + gbase;
#pragma unroll 8
    for (int s = 0; s < p.slices; ++s) {
#pragma unroll
      for (int k = 0; k < 3; ++k) gsum[k] += __ldcs(partial + s * slice_stride + k * HW);
    }
    gate_logit_grads<NORMALIZE>(gsum, w, comp, dir.p, dir.n_line, gl);
  }
#pragma unroll
  for (int k = 0; k < 3; ++k) st(static_cast<T*>(p.grad_gates), gbase + k * HW, gl[k]);
}

dim3 local_grid(const ScanParams& p, int per_position) {
  const int64_t positions = static_cast<int64_t>(p.B) * p.H * p.W;
  return dim3(static_cast<unsigned>((positions + kLocalThreads - 1) / kLocalThreads),
              static_cast<unsigned>(per_position));
}

}  // namespace

template <typename T>
void launch_local_forward(const ScanParams& p, bool normalize, bool merge, cudaStream_t stream) {
  const dim3 grid = local_grid(p, p.G * p.slices);
  GSPN2_BOOL_SWITCH(normalize, kNormalize, [&] {
    GSPN2_BOOL_SWITCH(merge, kMerge, [&] {
      local_forward_kernel<T, kNormalize, kMerge><<<grid, kLocalThreads, 0, stream>>>(p);
    });
  });
}

template <typename T>
void launch_local_backward(const ScanParams& p, bool normalize, bool merge, cudaStream_t stream) {
  const dim3 grid = local_grid(p, p.G * p.slices);
  GSPN2_BOOL_SWITCH(normalize, kNormalize, [&] {
    GSPN2_BOOL_SWITCH(merge, kMerge, [&] {
      local_backward_kernel<T, kNormalize, kMerge><<<grid, kLocalThreads, 0, stream>>>(p);
    });
  });
  if (p.slices > 1) launch_gate_grad_finish<T>(p, normalize, stream);
}

template <typename T>
void launch_gate_grad_finish(const ScanParams& p, bool normalize, cudaStream_t stream) {
  GSPN2_BOOL_SWITCH(normalize, kNormalize, [&] {
    local_gate_grad_kernel<T, kNormalize><<<local_grid(p, p.G * p.D), kLocalThreads, 0, stream>>>(p);
  });
}

template void launch_local_forward<double>(const ScanParams&, bool, bool, cudaStream_t);
template void launch_local_forward<float>(const ScanParams&, bool, bool, cudaStream_t);
template void launch_local_forward<c10::Half>(const ScanParams&, bool, bool, cudaStream_t);
template void launch_local_forward<c10::BFloat16>(const ScanParams&, bool, bool, cudaStream_t);
template void launch_local_backward<double>(const ScanParams&, bool, bool, cudaStream_t);
template void launch_local_backward<float>(const ScanParams&, bool, bool, cudaStream_t);
template void launch_local_backward<c10::Half>(const ScanParams&, bool, bool, cudaStream_t);
template void launch_local_backward<c10::BFloat16>(const ScanParams&, bool, bool, cudaStream_t);
template void launch_gate_grad_finish<double>(const ScanParams&, bool, cudaStream_t);
template void launch_gate_grad_finish<float>(const ScanParams&, bool, cudaStream_t);
template void launch_gate_grad_finish<c10::Half>(const ScanParams&, bool, cudaStream_t);
template void launch_gate_grad_finish<c10::BFloat16>(const ScanParams&, bool, cudaStream_t);

}  // namespace cuda
}  // namespace gspn2
