// Kernels of the small-plane propagation (propagate_small.h says how work is split).
//
// Notation as in line_scan_common.cuh: direction d scans n_steps steps s of lines of n_line
// positions p; tap k = 0, 1, 2 of a position reaches the previous step's position p + k - 1.
// Lane p of the warp of a direction owns line position p; shared memory holds, per direction,
// arrays indexed by step and lane (s * n_line + p, conflict-free for every direction) and
// plane arrays summed over the directions with an odd row stride (the rows of a horizontal
// scan's lanes fall in different banks).
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "kernel_common.cuh"
#include "position_taps.cuh"
#include "propagate_small.h"

namespace gspn2 {
namespace cuda {
namespace {

using namespace position_taps;

constexpr unsigned kFullMask = 0xffffffffu;

// The CTA's share of the work and its direction entry's geometry.
struct SmallTile {
  int64_t b;
  int g, c0, c1;         // gate group, channels [c0, c1)
  int d, dir, lane;      // direction entry of the warp, its direction id, the lane
  int n_steps, n_line;
  int HW, row_stride;    // positions of a plane; row stride of the shared plane arrays
  bool active;           // the lane holds a line position
};

__device__ __forceinline__ SmallTile small_tile(const ScanParams& p) {
  SmallTile t;
  const int slice = blockIdx.x % p.slices;
  const int64_t bg = blockIdx.x / p.slices;
  t.g = static_cast<int>(bg % p.G);
  t.b = bg / p.G;
  const int cg = p.C / p.G, per = cg / p.slices;
  t.c0 = t.g * cg + slice * per;
  t.c1 = t.c0 + per;
  t.d = threadIdx.x / 32;
  t.lane = threadIdx.x % 32;
  t.dir = p.dirs[t.d];
  const bool vertical = t.dir == 0 || t.dir == 1;
  t.n_steps = vertical ? p.H : p.W;
  t.n_line = vertical ? p.W : p.H;
  t.HW = p.H * p.W;
  t.row_stride = p.W | 1;
  t.active = t.lane < t.n_line;
  return t;
}

// Row and column of step s, line position p of direction dir.
__device__ __forceinline__ void step_rc(int dir, int s, int p, int H, int W, int& r, int& c) {
  switch (dir) {
    case 0: r = s; c = p; break;
    case 1: r = H - 1 - s; c = p; break;
    case 2: r = p; c = s; break;
    default: r = p; c = W - 1 - s; break;
  }
}

// The direction's tap weights of every position into wts[k * HW + s * n_line + p].
template <bool NORMALIZE, typename T, typename A>
__device__ __forceinline__ void load_tap_weights(const ScanParams& p, const SmallTile& t,
                                                 const T* g3, A* wts) {
  if (!t.active) return;
  for (int s = 0; s < t.n_steps; ++s) {
    int r, c;
    step_rc(t.dir, s, t.lane, p.H, p.W, r, c);
    A w[3], comp[3];
    tap_weights<NORMALIZE>(g3, t.HW, r * p.W + c, t.lane, t.n_line, w, comp);
#pragma unroll
    for (int k = 0; k < 3; ++k) wts[k * t.HW + s * t.n_line + t.lane] = w[k];
  }
}

// One forward scan of one channel: h of step s (lane = line position) from the neighbours'
// h of step s - 1 (shuffles). Calls visit(s, pos, h) for the lane's positions in step order.
template <typename T, typename A, typename Visit>
__device__ __forceinline__ void scan_channel(const ScanParams& p, const SmallTile& t,
                                             const T* xc, const T* lam_c, const A* wts,
                                             Visit visit) {
  A h = 0;
  for (int s = 0; s < t.n_steps; ++s) {
    const A left = __shfl_up_sync(kFullMask, h, 1), right = __shfl_down_sync(kFullMask, h, 1);
    A hn = 0;
    if (t.active) {
      int r, c;
      step_rc(t.dir, s, t.lane, p.H, p.W, r, c);
      const int pos = r * p.W + c;
      hn = ld<A>(lam_c, pos) * ld<A>(xc, pos);
      if (has_prev(s, p.chunk)) {
        const int i = s * t.n_line + t.lane;
        hn += wts[i] * left + wts[t.HW + i] * h + wts[2 * t.HW + i] * right;
      }
      visit(s, r, c, pos, hn);
    }
    h = hn;
  }
}

template <typename T, bool NORMALIZE, bool MERGE>
__global__ void small_forward_kernel(const ScanParams p) {
  using A = Acc<T>;
  extern __shared__ unsigned char smem_raw[];
  const SmallTile t = small_tile(p);
  const int D = p.D, HW = t.HW, C = p.C;
  A* wts = reinterpret_cast<A*>(smem_raw) + t.d * 3 * HW;
  A* terms = reinterpret_cast<A*>(smem_raw) + D * 3 * HW;  // (D, H, row_stride): u_d h_d
  const int plane_size = p.H * t.row_stride;
  const T* x = static_cast<const T*>(p.x);
  const T* lam = static_cast<const T*>(p.lam);
  const T* u = static_cast<const T*>(p.u);
  T* out = static_cast<T*>(p.out);
  T* hidden = static_cast<T*>(p.hidden);

  load_tap_weights<NORMALIZE>(
      p, t, static_cast<const T*>(p.gates) + ((t.b * D + t.d) * p.G + t.g) * 3 * HW, wts);
  __syncwarp();
  for (int ch = t.c0; ch < t.c1; ++ch) {
    const int64_t plane = ((t.b * D + t.d) * C + ch) * HW;
    scan_channel<T>(p, t, x + (t.b * C + ch) * HW, lam + plane, wts,
                    [&](int, int r, int c, int pos, A h) {
                      if (hidden != nullptr) st(hidden, plane + pos, h);
                      if (MERGE) {
                        terms[t.d * plane_size + r * t.row_stride + c] = ld<A>(u, plane + pos) * h;
                      } else {
                        st(out, plane + pos, h);
                      }
                    });
    if (MERGE) {
      __syncthreads();
      T* y = out + (t.b * C + ch) * HW;
      for (int i = threadIdx.x; i < HW; i += blockDim.x) {
        const int r = i / p.W, c = i - r * p.W;
        A sum = 0;
        for (int d = 0; d < D; ++d) sum += terms[d * plane_size + r * t.row_stride + c];
        st(y, i, sum);
      }
      __syncthreads();
    }
  }
}

template <typename T, bool NORMALIZE, bool MERGE>
__global__ void small_backward_kernel(const ScanParams p) {
  using A = Acc<T>;
  extern __shared__ unsigned char smem_raw[];
  const SmallTile t = small_tile(p);
  const int D = p.D, HW = t.HW, C = p.C, n_line = t.n_line, lane = t.lane;
  A* base = reinterpret_cast<A*>(smem_raw);
  A* wts = base + t.d * 3 * HW;                // (3, steps, line) of this direction
  A* gacc = base + D * 3 * HW + t.d * 3 * HW;  // gate-gradient sums, same layout
  A* hbuf = base + D * 6 * HW + t.d * HW;      // recomputed h, (steps, line)
  A* dx_terms = base + D * 7 * HW;             // (D, H, row_stride): lam_d dL/dh_d
  const int plane_size = p.H * t.row_stride;
  const T* x = static_cast<const T*>(p.x);
  const T* lam = static_cast<const T*>(p.lam);
  const T* u = static_cast<const T*>(p.u);
  const T* grad_out = static_cast<const T*>(p.grad_out);
  T* grad_x = static_cast<T*>(p.grad_x);
  T* grad_lam = static_cast<T*>(p.grad_lam);
  T* grad_u = static_cast<T*>(p.grad_u);
  const T* g3 = static_cast<const T*>(p.gates) + ((t.b * D + t.d) * p.G + t.g) * 3 * HW;

  load_tap_weights<NORMALIZE>(p, t, g3, wts);
  if (t.active) {
    for (int i = lane; i < 3 * HW; i += n_line) gacc[i] = 0;
  }
  __syncwarp();
  for (int ch = t.c0; ch < t.c1; ++ch) {
    const int64_t plane = ((t.b * D + t.d) * C + ch) * HW;
    const T* xc = x + (t.b * C + ch) * HW;
    const T* gy_c = grad_out + (MERGE ? (t.b * C + ch) * HW : plane);
    scan_channel<T>(p, t, xc, lam + plane, wts, [&](int s, int, int, int, A h) {
      hbuf[s * n_line + lane] = h;
    });
    __syncwarp();
    // Reverse scan: dL/dh[s] = dh[s] + sum over the taps of step s + 1 that reach p.
    A g_next = 0;
    for (int s = t.n_steps - 1; s >= 0; --s) {
      A a0 = 0, a1 = 0, a2 = 0;
      if (t.active && s + 1 < t.n_steps && has_prev(s + 1, p.chunk)) {
        const int i = (s + 1) * n_line + lane;
        a0 = wts[i] * g_next;
        a1 = wts[HW + i] * g_next;
        a2 = wts[2 * HW + i] * g_next;
      }
      const A from_next = __shfl_down_sync(kFullMask, a0, 1);  // lane + 1's tap 0 reaches p
      const A from_prev = __shfl_up_sync(kFullMask, a2, 1);    // lane - 1's tap 2 reaches p
      A g = 0;
      if (t.active) {
        int r, c;
        step_rc(t.dir, s, lane, p.H, p.W, r, c);
        const int pos = r * p.W + c;
        const A gy = ld<A>(gy_c, pos);
        g = (MERGE ? gy * ld<A>(u, plane + pos) : gy) + a1 + (lane < 31 ? from_next : A(0)) +
            (lane > 0 ? from_prev : A(0));
        if (MERGE) st(grad_u, plane + pos, gy * hbuf[s * n_line + lane]);
        st(grad_lam, plane + pos, ld<A>(xc, pos) * g);
        dx_terms[t.d * plane_size + r * t.row_stride + c] = ld<A>(lam, plane + pos) * g;
        if (has_prev(s, p.chunk)) {
          const int i = s * n_line + lane;
#pragma unroll
          for (int k = 0; k < 3; ++k) {
            if (tap_valid(lane, k, n_line)) gacc[k * HW + i] += g * hbuf[i - n_line + k - 1];
          }
        }
      }
      g_next = g;
    }
    __syncthreads();
    T* gx = grad_x + (t.b * C + ch) * HW;
    for (int i = threadIdx.x; i < HW; i += blockDim.x) {
      const int r = i / p.W, c = i - r * p.W;
      A sum = 0;
      for (int d = 0; d < D; ++d) sum += dx_terms[d * plane_size + r * t.row_stride + c];
      st(gx, i, sum);
    }
    __syncthreads();
  }
  // Gate-logit gradients of the slice: directly with one slice per group, else its sums.
  if (!t.active) return;
  const int64_t gbase = ((t.b * D + t.d) * p.G + t.g) * 3 * HW;
  const int slice = blockIdx.x % p.slices;
  A* partial = p.slices > 1 ? static_cast<A*>(p.partial_gates) +
                                  static_cast<int64_t>(slice) * p.B * D * p.G * 3 * HW
                            : nullptr;
  for (int s = 0; s < t.n_steps; ++s) {
    int r, c;
    step_rc(t.dir, s, lane, p.H, p.W, r, c);
    const int pos = r * p.W + c, i = s * n_line + lane;
    const bool linked = has_prev(s, p.chunk);
    A gsum[3];
#pragma unroll
    for (int k = 0; k < 3; ++k) gsum[k] = gacc[k * HW + i];
    if (partial != nullptr) {
      if (linked) {
#pragma unroll
        for (int k = 0; k < 3; ++k) partial[gbase + k * HW + pos] = gsum[k];
      }
      continue;
    }
    A gl[3] = {0, 0, 0};
    if (linked) {
      A w[3], comp[3];
      tap_weights<NORMALIZE>(g3, HW, pos, lane, n_line, w, comp);
      gate_logit_grads<NORMALIZE>(gsum, w, comp, lane, n_line, gl);
    }
#pragma unroll
    for (int k = 0; k < 3; ++k) st(static_cast<T*>(p.grad_gates), gbase + k * HW + pos, gl[k]);
  }
}

template <typename Kernel>
void launch(Kernel kernel, const ScanParams& p, size_t smem, cudaStream_t stream) {
  if (smem > 48 * 1024) {
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(smem));
  }
  const unsigned ctas = static_cast<unsigned>(static_cast<int64_t>(p.B) * p.G * p.slices);
  kernel<<<ctas, 32 * p.D, smem, stream>>>(p);
}

}  // namespace

size_t small_forward_smem(const ScanParams& p, size_t acc_size) {
  const size_t HW = static_cast<size_t>(p.H) * p.W, plane = static_cast<size_t>(p.H) * (p.W | 1);
  return (3 * p.D * HW + p.D * plane) * acc_size;
}

size_t small_backward_smem(const ScanParams& p, size_t acc_size) {
  const size_t HW = static_cast<size_t>(p.H) * p.W, plane = static_cast<size_t>(p.H) * (p.W | 1);
  return (7 * p.D * HW + p.D * plane) * acc_size;
}

template <typename T>
void launch_small_forward(const ScanParams& p, bool normalize, bool merge, cudaStream_t stream) {
  const size_t smem = small_forward_smem(p, sizeof(Acc<T>));
  GSPN2_BOOL_SWITCH(normalize, kNormalize, [&] {
    GSPN2_BOOL_SWITCH(merge, kMerge, [&] {
      launch(small_forward_kernel<T, kNormalize, kMerge>, p, smem, stream);
    });
  });
}

template <typename T>
void launch_small_backward(const ScanParams& p, bool normalize, bool merge, cudaStream_t stream) {
  const size_t smem = small_backward_smem(p, sizeof(Acc<T>));
  GSPN2_BOOL_SWITCH(normalize, kNormalize, [&] {
    GSPN2_BOOL_SWITCH(merge, kMerge, [&] {
      launch(small_backward_kernel<T, kNormalize, kMerge>, p, smem, stream);
    });
  });
}

template void launch_small_forward<double>(const ScanParams&, bool, bool, cudaStream_t);
template void launch_small_forward<float>(const ScanParams&, bool, bool, cudaStream_t);
template void launch_small_forward<c10::Half>(const ScanParams&, bool, bool, cudaStream_t);
template void launch_small_forward<c10::BFloat16>(const ScanParams&, bool, bool, cudaStream_t);
template void launch_small_backward<double>(const ScanParams&, bool, bool, cudaStream_t);
template void launch_small_backward<float>(const ScanParams&, bool, bool, cudaStream_t);
template void launch_small_backward<c10::Half>(const ScanParams&, bool, bool, cudaStream_t);
template void launch_small_backward<c10::BFloat16>(const ScanParams&, bool, bool, cudaStream_t);

}  // namespace cuda
}  // namespace gspn2
