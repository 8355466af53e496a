// Device helpers of the line and plane scans (SPEC section 1): modes and runs, the per-step
// loads and stores, normalised taps, the geometry of a line. Included by line_scan_forward.cuh and transpose.cu.
//
// Notation: a scan has n_steps steps (rows for the vertical directions, columns for the
// horizontal ones) counted from where it starts, s = 0 .. n_steps - 1; each step is a line
// of n_line positions p, and taps k = -1, 0, +1 reach the neighbours p + k of the previous
// step. Arithmetic is in Acc<T>: float32 for float32/float16/bfloat16 storage, float64 for
// float64.
//
// Memory access: a thread owns N consecutive positions of a line and reads its inputs in
// runs of R consecutive steps, double-buffered (the next run is in flight while the current
// one is walked). On a vertical direction a step is a row: each step of a run is one vector
// load of the N positions. On a horizontal direction a step is a column: each of the N
// positions (rows) is one vector load of R consecutive columns, so a warp's request covers
// R elements of each row it touches instead of one.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

#include "kernel_common.cuh"
#include "propagate.h"

namespace gspn2 {
namespace cuda {

// Runs `...` with NAME = mode as a constexpr int (kWarpMode, kCtaMode, kLongMode).
#define GSPN2_MODE_SWITCH(mode, NAME, ...)  \
  [&] {                                     \
    if (mode == kWarpMode) {                \
      constexpr int NAME = kWarpMode;       \
      return __VA_ARGS__();                 \
    } else if (mode == kCtaMode) {          \
      constexpr int NAME = kCtaMode;        \
      return __VA_ARGS__();                 \
    } else {                                \
      constexpr int NAME = kLongMode;       \
      return __VA_ARGS__();                 \
    }                                       \
  }()

// Runs `...` with NAME = kc as a constexpr int: channels per thread 1 or 2, at most
// max_channels_per_thread(MODE, BACKWARD) (the launch plan keeps to it; float64 only 1).
#define GSPN2_KC_SWITCH(T, MODE, BACKWARD, kc, NAME, ...)                                  \
  [&] {                                                                                    \
    constexpr int kMaxKC = sizeof(T) == 8 ? 1 : max_channels_per_thread(MODE, BACKWARD);  \
    if (kc == 1) {                                                                         \
      constexpr int NAME = 1;                                                              \
      return __VA_ARGS__();                                                                \
    } else {                                                                               \
      constexpr int NAME = kMaxKC;                                                         \
      return __VA_ARGS__();                                                                \
    }                                                                                      \
  }()

// Steps per run (steps_per_run in bindings.cpp must agree): run_bytes(mode, backward) bytes
// of each input per position. CTA mode: up to 256 threads under the 255-register budget,
// which holds two buffers of 8-byte runs (forward) or 4-byte runs (backward, 7 inputs and h
// with halo). Warp mode: the 168-register cap of kWarpMinBlocks, 4-byte runs (8-byte forward
// runs spilled 430-700 bytes under a 128-register cap). Long mode: up to kMaxThreads threads and the 128-register
// cap, one step (longer runs spilled 150-300 bytes).
// With KC channels per thread (propagate.h) the runs are KC times shorter (the same registers).
template <typename T, int MODE, bool BACKWARD, int KC = 1>
constexpr int kRun = steps_per_run(MODE, BACKWARD, static_cast<int>(sizeof(T)), KC);

// Register cap of the warp mode: at most 65536 / (kWarpThreads * kWarpMinBlocks) registers
// per thread (168), so that several CTAs share an SM (no barrier ties their warps together).
constexpr int kWarpMinBlocks = 3;

// Mask of the lanes present in the calling thread's warp of a CTA of `threads` threads.
__device__ __forceinline__ unsigned warp_lanes(int tid, int threads) {
  const int live = threads - (tid & ~31);
  return live >= 32 ? 0xffffffffu : (1u << live) - 1;
}

template <typename T, int K>
struct alignas(sizeof(T) * K) Pack {
  T v[K];
};

// Elements travel as raw bits of their width (c10::Half and c10::BFloat16 are classes).
template <typename T>
using RawOf = std::conditional_t<
    sizeof(T) == 8, uint64_t, std::conditional_t<sizeof(T) == 4, uint32_t, uint16_t>>;

template <typename T>
__device__ __forceinline__ Acc<T> raw_to_acc(RawOf<T> r) {
  if constexpr (std::is_same<T, double>::value) {
    return __longlong_as_double(static_cast<long long>(r));
  } else if constexpr (std::is_same<T, float>::value) {
    return __uint_as_float(r);
  } else {
    return static_cast<float>(T(r, T::from_bits()));
  }
}

template <typename T>
__device__ __forceinline__ RawOf<T> acc_to_raw(Acc<T> v) {
  if constexpr (std::is_same<T, double>::value) {
    return static_cast<uint64_t>(__double_as_longlong(v));
  } else if constexpr (std::is_same<T, float>::value) {
    return __float_as_uint(v);
  } else {
    return T(v).x;
  }
}

template <typename T>
__device__ __forceinline__ RawOf<T> load_raw(const T* ptr) {
  return *reinterpret_cast<const RawOf<T>*>(ptr);
}

// NQ positions x R steps of T kept as raw bits in 32-bit words; element (q, r) is at
// q * R + r once canonical. Two 16-bit elements share a word (unless WIDE), so that a run of
// bfloat16 inputs costs half the registers of its float32 values. 16-bit vector loads copy
// whole words in the order of memory (vertical: element (q, r) at r * NQ + q; horizontal:
// q * R + r, steps reversed on right-to-left scans) and canonical() reorders the words once
// the run is about to be used: an instruction that merged a loaded 16-bit value into its
// word at load time made the warp wait for memory there, so the prefetch did nothing.
// Wider types are stored in canonical order at load time (renaming registers costs
// nothing). Indices are compile-time constants after unrolling.
template <typename T, int NQ, int R, bool WIDE = false>
struct RunBuf {
  static constexpr int E = NQ * R;
  static constexpr bool kPacked16 = sizeof(T) == 2 && !WIDE;
  static constexpr int kWords =
      sizeof(T) == 8 ? 2 * E : (kPacked16 ? (E + 1) / 2 : E);
  uint32_t w[kWords];

  // Index at which a load stores element (q, r).
  __device__ __forceinline__ static int stored(bool vertical, bool hrev, int q, int r) {
    if (!kPacked16) return q * R + r;
    return vertical ? r * NQ + q : q * R + (hrev ? R - 1 - r : r);
  }
  __device__ __forceinline__ void set(int e, RawOf<T> r) {
    if constexpr (sizeof(T) == 8) {
      w[2 * e] = static_cast<uint32_t>(r);
      w[2 * e + 1] = static_cast<uint32_t>(r >> 32);
    } else if constexpr (!kPacked16) {
      w[e] = r;
    } else {
      const int sh = (e & 1) * 16;
      w[e >> 1] = (w[e >> 1] & ~(0xffffu << sh)) | (static_cast<uint32_t>(r) << sh);
    }
  }
  __device__ __forceinline__ RawOf<T> raw(int e) const {
    if constexpr (sizeof(T) == 8) {
      return static_cast<uint64_t>(w[2 * e]) | (static_cast<uint64_t>(w[2 * e + 1]) << 32);
    } else if constexpr (!kPacked16) {
      return static_cast<RawOf<T>>(w[e]);
    } else {
      return static_cast<uint16_t>(w[e >> 1] >> ((e & 1) * 16));
    }
  }
  // K consecutive elements from memory, unchanged, at element e0 (word-aligned).
  template <int K>
  __device__ __forceinline__ void copy_words(int e0, const T* ptr) {
    constexpr int NW = K * static_cast<int>(sizeof(T)) / 4;
    const Pack<uint32_t, NW> pk = *reinterpret_cast<const Pack<uint32_t, NW>*>(ptr);
#pragma unroll
    for (int i = 0; i < NW; ++i) w[e0 * static_cast<int>(sizeof(T)) / 4 + i] = pk.v[i];
  }
  // Reorders the words of a 16-bit run stored in memory order to q * R + r.
  // (Both layouts are spelled out with constant arguments: a run-time index would move the
  // words to local memory.)
  __device__ __forceinline__ void canonical(bool vertical, bool hrev) {
    if constexpr (kPacked16 && R > 1) {
      if (vertical) {
        if (NQ > 1) reorder<true, false>();
      } else if (hrev) {
        reorder<false, true>();
      }
    }
  }
  template <bool V, bool HREV>
  __device__ __forceinline__ void reorder() {
    RunBuf t;
#pragma unroll
    for (int i = 0; i < kWords; ++i) t.w[i] = 0;
#pragma unroll
    for (int q = 0; q < NQ; ++q) {
#pragma unroll
      for (int r = 0; r < R; ++r) t.set(q * R + r, raw(stored(V, HREV, q, r)));
    }
    *this = t;
  }
  __device__ __forceinline__ Acc<T> get(int q, int r) const { return raw_to_acc<T>(raw(q * R + r)); }
  // Element (q, r) of a run not yet made canonical.
  __device__ __forceinline__ Acc<T> get_stored(bool vertical, bool hrev, int q, int r) const {
    if constexpr (!kPacked16) {
      return get(q, r);
    } else {
      const RawOf<T> v = raw(stored(true, false, q, r));
      const RawOf<T> hf = raw(stored(false, false, q, r));
      const RawOf<T> hr = raw(stored(false, true, q, r));
      return raw_to_acc<T>(vertical ? v : (hrev ? hr : hf));
    }
  }
};

// Four consecutive accumulation-type values through L2 (written by other CTAs of the launch).
__device__ __forceinline__ void load_cg4(const float* ptr, float (&v)[4]) {
  const float4 q = __ldcg(reinterpret_cast<const float4*>(ptr));
  v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
}
__device__ __forceinline__ void load_cg4(const double* ptr, double (&v)[4]) {
  const double2 a = __ldcg(reinterpret_cast<const double2*>(ptr));
  const double2 b = __ldcg(reinterpret_cast<const double2*>(ptr) + 1);
  v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
}

// N consecutive accumulation-type line positions p0 .. p0 + N - 1 of one step through L2
// (store_step's layout; outside [0, n) read as 0).
template <typename A, int N>
__device__ __forceinline__ void load_step_cg(const A* base, int p0, int n, int64_t stride,
                                             bool vec, A (&v)[N]) {
  if constexpr (N == 4) {
    if (vec && p0 + N <= n) {
      load_cg4(base + p0, v);
      return;
    }
  }
#pragma unroll
  for (int q = 0; q < N; ++q) {
    v[q] = p0 + q < n ? __ldcg(base + static_cast<int64_t>(p0 + q) * stride) : A(0);
  }
}

// A sum that the compiler may not contract with the product that made one of its terms: the
// paired merge must give the bits of the summing tail (a product rounded, then added).
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

// Progress counters of the paired merge (propagate.h), shared between CTAs of a launch.
__device__ __forceinline__ int load_acquire(const int* ptr) {
  int v;
  asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(ptr) : "memory");
  return v;
}
__device__ __forceinline__ void store_release(int* ptr, int v) {
  asm volatile("st.release.gpu.global.s32 [%0], %1;" ::"l"(ptr), "r"(v) : "memory");
}

// out[e] = sum over the D directions of parts[d * dir_stride + e] (in direction order) for e
// in [begin, end), by the threads of one CTA. `vec`: begin, end and the pointers at 4-element
// boundaries.
template <typename T>
__device__ __forceinline__ void sum_direction_range(const Acc<T>* parts, int64_t dir_stride,
                                                    int D, T* out, int64_t begin, int64_t end,
                                                    bool vec, int tid, int nthreads) {
  using A = Acc<T>;
  // 4 consecutive elements per thread and two of those per iteration, so that 2 * D vector
  // loads are in flight (a scalar loop of dependent iterations made this tail the longest
  // part of small-image forwards).
  const int64_t vec_end = vec ? end : begin;
  for (int64_t e0 = begin + static_cast<int64_t>(tid) * 4; e0 < vec_end; e0 += 8 * nthreads) {
    A v[2][4][4];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int64_t e = e0 + static_cast<int64_t>(half) * 4 * nthreads;
#pragma unroll
      for (int d = 0; d < 4; ++d) {
        if (d < D && e < vec_end) load_cg4(parts + d * dir_stride + e, v[half][d]);
      }
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int64_t e = e0 + static_cast<int64_t>(half) * 4 * nthreads;
      if (e >= vec_end) break;
      Pack<RawOf<T>, 4> pk;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        A acc = v[half][0][i];
#pragma unroll
        for (int d = 1; d < 4; ++d) {
          if (d < D) acc += v[half][d][i];
        }
        pk.v[i] = acc_to_raw<T>(acc);
      }
      *reinterpret_cast<Pack<RawOf<T>, 4>*>(out + e) = pk;
    }
  }
  for (int64_t e = vec_end + tid; e < end; e += nthreads) {
    A acc = 0;
    for (int d = 0; d < D; ++d) acc += __ldcg(parts + d * dir_stride + e);
    *reinterpret_cast<RawOf<T>*>(out + e) = acc_to_raw<T>(acc);
  }
}

template <typename T>
__device__ __forceinline__ Acc<T> exp_acc(Acc<T> v) {
  if constexpr (std::is_same<T, double>::value) {
    return exp(v);
  } else {
    return __expf(v);
  }
}

// Normalised tap weights of one pixel from its logits a[k] (valid[k]: the tap's neighbour
// exists, the pixel lies on the line): w_k = sigmoid(a_k) / sum of the valid sigmoids, 0 for
// invalid taps; comp[k] = 1 - sigmoid(a_k) = sigmoid(-a_k), which the backward needs
// (dL/da_k = w_k comp_k (dL/dw_k - sum_j w_j dL/dw_j)).
//
// sigmoid(a) = 1 / (1 + exp(-a)): one exponential and one reciprocal per tap (exp(-a) = inf
// gives 0, its limit). Saturated pixels, whose valid sigmoids would all underflow (logits of
// -200 on every tap gave 0 / 0), are shifted without a branch: the logits are taken minus
// shift = min(0, m + kTapShift), m the largest valid logit. With shift < 0 every valid logit
// minus shift is <= -kTapShift, where sigmoid(a) = exp(a) to a relative 1e-26, so the shift
// cancels in w as in a softmax; and 1 - sigmoid(a_k) rounds to 1 for those logits (kTapShift
// is in kernel_common.cuh). (A form that took the shifted path by a branch per pixel
// measured slower than 2 exponentials and 2 reciprocals per tap: the step's latency chain,
// not the SFU, bounds these kernels; docs/benchmarks/op.md.)
template <typename T>
__device__ __forceinline__ void normalized_taps(const Acc<T> (&a)[3], const bool (&valid)[3],
                                                Acc<T> (&w)[3], Acc<T> (&comp)[3]) {
  using A = Acc<T>;
  A m = -INFINITY;
#pragma unroll
  for (int k = 0; k < 3; ++k) m = fmax(m, valid[k] ? a[k] : A(-INFINITY));  // NaN ignored here
  const A shift = fmin(A(0), m + A(kTapShift));
  A e[3], sig[3], total = 0;
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    e[k] = exp_acc<T>(shift - a[k]);
    sig[k] = A(1) / (A(1) + e[k]);
    sig[k] = valid[k] ? sig[k] : A(0);
    total += sig[k];
  }
  const A inv_total = total > A(0) ? A(1) / total : A(0);
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    w[k] = sig[k] * inv_total;
    // 1 - sigmoid without cancellation: exp(-a) sigmoid(a) for a >= 0 (exp(-a) <= 1).
    const A c = a[k] >= A(0) ? e[k] * sig[k] : A(1) - sig[k];
    comp[k] = shift < A(0) ? A(1) : c;
  }
}

// The scan of one direction seen as steps of lines.
struct Line {
  bool vertical, reverse;
  int n_steps, n_line, W;
  int64_t step_stride, pos_stride;

  __device__ __forceinline__ Line(const Geometry& geo, int dir)
      : Line(geo, dir, dir == kTopDownId || dir == kBottomUpId) {}
  // `vert` must agree with dir; the kernels pass it as a compile-time constant, so that the
  // loads and stores of their specialised bodies carry no test of the orientation.
  __device__ __forceinline__ Line(const Geometry& geo, int dir, bool vert) {
    vertical = vert;
    reverse = dir == kBottomUpId || dir == kRightLeftId;
    n_steps = vertical ? geo.H : geo.W;
    n_line = vertical ? geo.W : geo.H;
    W = geo.W;
    step_stride = vertical ? geo.W : 1;
    pos_stride = vertical ? 1 : geo.W;
  }
  // Element offset of step s inside an (H, W) plane.
  __device__ __forceinline__ int64_t step_offset(int s) const {
    return static_cast<int64_t>(reverse ? n_steps - 1 - s : s) * step_stride;
  }
};

// The direction id of entry di of the direction dimension (constant indices only: a
// run-time index into the kernel parameter would copy it to local memory).
__device__ __forceinline__ int direction_of(const Geometry& geo, int di) {
  int dir = geo.dirs[0];
#pragma unroll
  for (int k = 1; k < 4; ++k) {
    if (k == di) dir = geo.dirs[k];
  }
  return dir;
}

// Index of batch item b's entry of direction di in the stored per-direction tensors, seen as
// (B * stored_D) entries (Geometry::packed).
__device__ __forceinline__ int64_t stored_entry(const Geometry& geo, int b, int di) {
  const int stored_D = (geo.packed & 3) + 1, first = (geo.packed >> 2) & 3,
            step = ((geo.packed >> 4) & 7) - 4;
  return static_cast<int64_t>(b) * stored_D + first + di * step;
}

// Reads the run of steps s0 .. s0 + R - 1 at positions p0 .. p0 + NQ - 1 of one (H, W) plane
// into buf (in its stored order, see RunBuf); positions outside [0, n_line) and steps
// outside [0, n_steps) read as 0. vec_v / vec_h promise aligned vector runs on vertical /
// horizontal directions.
template <typename T, int NQ, int R, bool WIDE>
__device__ __forceinline__ void load_block(RunBuf<T, NQ, R, WIDE>& buf, const T* __restrict__ plane,
                                           const Line& line, int s0, int p0, bool vec_v,
                                           bool vec_h) {
  using Buf = RunBuf<T, NQ, R, WIDE>;
  const int n = line.n_line;
  const bool hrev = !line.vertical && line.reverse;
  if (line.vertical) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int s = s0 + r;
      const bool step_ok = s < line.n_steps;
      const T* row = plane + (step_ok ? line.step_offset(s) : 0);
      if (NQ > 1 && vec_v && step_ok && p0 >= 0 && p0 + NQ <= n) {
        if constexpr (Buf::kPacked16 && NQ % 2 == 0) {
          buf.template copy_words<NQ>(r * NQ, row + p0);
        } else {
          const Pack<RawOf<T>, NQ> pk = *reinterpret_cast<const Pack<RawOf<T>, NQ>*>(row + p0);
#pragma unroll
          for (int q = 0; q < NQ; ++q) buf.set(Buf::stored(true, false, q, r), pk.v[q]);
        }
      } else {
#pragma unroll
        for (int q = 0; q < NQ; ++q) {
          const int pos = p0 + q;
          buf.set(Buf::stored(true, false, q, r),
                  step_ok && pos >= 0 && pos < n ? load_raw(row + pos) : RawOf<T>(0));
        }
      }
    }
  } else {
#pragma unroll
    for (int q = 0; q < NQ; ++q) {
      const int pos = p0 + q;
      const bool pos_ok = pos >= 0 && pos < n;
      const T* row = plane + static_cast<int64_t>(pos_ok ? pos : 0) * line.W;
      if (R > 1 && !WIDE && vec_h && pos_ok && s0 + R <= line.n_steps) {
        const int c0 = line.reverse ? line.W - s0 - R : s0;
        if constexpr (Buf::kPacked16 && R % 2 == 0) {
          buf.template copy_words<R>(q * R, row + c0);
        } else {
          const Pack<RawOf<T>, R> pk = *reinterpret_cast<const Pack<RawOf<T>, R>*>(row + c0);
          if (line.reverse) {
#pragma unroll
            for (int r = 0; r < R; ++r) buf.set(q * R + r, pk.v[R - 1 - r]);
          } else {
#pragma unroll
            for (int r = 0; r < R; ++r) buf.set(q * R + r, pk.v[r]);
          }
        }
      } else {
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const int s = s0 + r;
          const RawOf<T> v =
              pos_ok && s < line.n_steps ? load_raw(row + line.step_offset(s)) : RawOf<T>(0);
          if (hrev) {
            buf.set(Buf::stored(false, true, q, r), v);
          } else {
            buf.set(Buf::stored(false, false, q, r), v);
          }
        }
      }
    }
  }
}

// load_block's vertical case for a thread whose NQ positions all lie on the line, with vector
// access allowed, on a run whose R steps all exist: step r of the run is the row at
// first + r * dstep. No bounds tests and no scalar fallback, so no branch per load (each load
// of load_block sat in its own branch region, which measured slower; docs/ops.md, "One kernel
// body per orientation").
template <typename T, int NQ, int R, bool WIDE>
__device__ __forceinline__ void load_rows(RunBuf<T, NQ, R, WIDE>& buf, const T* first,
                                          int64_t dstep) {
  using Buf = RunBuf<T, NQ, R, WIDE>;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const T* row = first + r * dstep;
    if constexpr (Buf::kPacked16 && NQ % 2 == 0) {
      buf.template copy_words<NQ>(r * NQ, row);
    } else {
      const Pack<RawOf<T>, NQ> pk = *reinterpret_cast<const Pack<RawOf<T>, NQ>*>(row);
#pragma unroll
      for (int q = 0; q < NQ; ++q) buf.set(Buf::stored(true, false, q, r), pk.v[q]);
    }
  }
}

// Writes N consecutive line positions p0 .. p0 + N - 1 of one step (element stride
// `stride`); positions outside [0, n) are skipped. `vec` promises stride 1 and alignment.
template <typename T, typename V, int N>
__device__ __forceinline__ void store_step(T* __restrict__ base, int p0, int n, int64_t stride,
                                           bool vec, const V (&v)[N]) {
  if (N > 1 && vec && p0 + N <= n) {
    Pack<RawOf<T>, N> pk;
#pragma unroll
    for (int q = 0; q < N; ++q) pk.v[q] = acc_to_raw<T>(v[q]);
    *reinterpret_cast<Pack<RawOf<T>, N>*>(base + p0) = pk;
  } else {
#pragma unroll
    for (int q = 0; q < N; ++q) {
      if (p0 + q < n) {
        *reinterpret_cast<RawOf<T>*>(base + static_cast<int64_t>(p0 + q) * stride) =
            acc_to_raw<T>(v[q]);
      }
    }
  }
}

// Tap weights at positions p0 .. p0 + N - 1 from the gates `a`; taps whose neighbour falls
// outside the line, and positions outside it, get 0. With NORMALIZE, `comp` receives
// 1 - sigmoid of each logit (used by the backward; see normalized_taps).
template <typename T, bool NORMALIZE, int N>
__device__ __forceinline__ void tap_weights(const Acc<T> (&a)[3][N], int p0, int n,
                                            Acc<T> (&w)[3][N], Acc<T> (&comp)[3][N]) {
  using A = Acc<T>;
#pragma unroll
  for (int q = 0; q < N; ++q) {
    const int pos = p0 + q;
    const bool valid[3] = {pos >= 1 && pos < n, pos < n, pos + 1 < n};
    if (NORMALIZE) {
      const A aq[3] = {a[0][q], a[1][q], a[2][q]};
      A wq[3], cq[3];
      normalized_taps<T>(aq, valid, wq, cq);
#pragma unroll
      for (int k = 0; k < 3; ++k) w[k][q] = wq[k], comp[k][q] = cq[k];
    } else {
#pragma unroll
      for (int k = 0; k < 3; ++k) w[k][q] = valid[k] ? a[k][q] : A(0);
    }
  }
}

}  // namespace cuda
}  // namespace gspn2
