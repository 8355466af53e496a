// Kernel templates of the fused GSPN-2 propagation (SPEC section 1). Included only by the
// per-dtype translation units propagate_{fwd,bwd}_{f64,f32,f16,bf16}.cu.
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

// Runs `...` with NAME = kc as a constexpr int: channels per thread 1, 2 or 4, at most
// max_channels_per_thread(MODE, BACKWARD) (make_geometry keeps to it; float64 only 1).
#define GSPN2_KC_SWITCH(T, MODE, BACKWARD, kc, NAME, ...)                                  \
  [&] {                                                                                    \
    constexpr int kMaxKC = sizeof(T) == 8 ? 1 : max_channels_per_thread(MODE, BACKWARD);  \
    if (kc == 1) {                                                                         \
      constexpr int NAME = 1;                                                              \
      return __VA_ARGS__();                                                                \
    } else if (kc == 2) {                                                                  \
      constexpr int NAME = kMaxKC < 2 ? kMaxKC : 2;                                        \
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
// is in kernel_common.cuh). (A form
// that took the shifted path by a branch per pixel ran the paper bf16 forward in 0.845 ms
// against 0.716 ms for 2 exponentials and 2 reciprocals per tap, H100, 4b64ee0 and 7c58892:
// the step's latency chain, not the SFU, bounds these kernels.)
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
// of load_block sat in its own branch region: paper bf16 forward 0.670 -> 0.569 ms, H100,
// docs/benchmarks/op.md).
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

// The two float-buffer reductions of the backward move 4 consecutive elements per thread and
// keep several independent loads in flight (one scalar load per dependent add moved about
// 0.9 and 1.4 TB/s on the H100 at 1024^2); the sums keep their order, so the bits do not change.

// Four accumulation-type values from a 16-byte-aligned address.
template <typename A>
__device__ __forceinline__ void load4(const A* ptr, A (&v)[4]) {
  load_cg4(ptr, v);
}

// The 4 values v stored at out (aligned to 4 elements).
template <typename T>
__device__ __forceinline__ void store4(T* out, const Acc<T> (&v)[4]) {
  Pack<RawOf<T>, 4> pk;
#pragma unroll
  for (int e = 0; e < 4; ++e) pk.v[e] = acc_to_raw<T>(v[e]);
  *reinterpret_cast<Pack<RawOf<T>, 4>*>(out) = pk;
}

// out[i] = sum over d of partial[d * n + i], in direction order. VEC: n % 4 == 0, 4 elements
// per thread and iteration.
template <typename T, bool VEC>
__global__ void sum_directions_kernel(const Acc<T>* __restrict__ partial, T* __restrict__ out,
                                      int D, int64_t n) {
  using A = Acc<T>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if constexpr (VEC) {
    for (int64_t i = first * 4; i < n; i += stride * 4) {
      A v[4][4];
#pragma unroll
      for (int d = 0; d < 4; ++d) {
        if (d < D) load4(partial + d * n + i, v[d]);
      }
      A acc[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        acc[e] = v[0][e];
#pragma unroll
        for (int d = 1; d < 4; ++d) {
          if (d < D) acc[e] += v[d][e];
        }
      }
      store4<T>(out + i, acc);
    }
  } else {
    for (int64_t i = first; i < n; i += stride) {
      A acc = 0;
      for (int d = 0; d < D; ++d) acc += partial[d * n + i];
      *reinterpret_cast<RawOf<T>*>(out + i) = acc_to_raw<T>(acc);
    }
  }
}

// Gate gradients of channel-shared gates: grad_gates entry (b, slot[d], g) at r = sum over the
// group's channels cc of partial[(((b * D + d) * G + g) * group + cc), r)], r indexing
// (3, H, W), in channel order. VEC: plane % 4 == 0, 4 consecutive r per thread, the loads of
// 4 channels in flight at once.
template <typename T, bool VEC>
__global__ void sum_group_channels_kernel(const Acc<T>* __restrict__ partial,
                                          T* __restrict__ out, const Geometry geo, int group,
                                          int64_t plane, int64_t n) {
  using A = Acc<T>;
  constexpr int V = VEC ? 4 : 1;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * V;
  for (int64_t i = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * V; i < n;
       i += stride) {
    const int64_t bdg = i / plane, r = i % plane;
    const int g = static_cast<int>(bdg % geo.G);
    const int64_t bd = bdg / geo.G;
    const int b = static_cast<int>(bd / geo.D), d = static_cast<int>(bd % geo.D);
    const A* src = partial + bdg * group * plane + r;
    T* dst = out + (stored_entry(geo, b, d) * geo.G + g) * plane + r;
    if constexpr (VEC) {
      A acc[4] = {0, 0, 0, 0};
      int cc = 0;
      for (; cc + 4 <= group; cc += 4) {
        A v[4][4];
#pragma unroll
        for (int k = 0; k < 4; ++k) load4(src + (cc + k) * plane, v[k]);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[e] += v[k][e];
        }
      }
      for (; cc < group; ++cc) {
        A v[4];
        load4(src + cc * plane, v);
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[e] += v[e];
      }
      store4<T>(dst, acc);
    } else {
      A acc = 0;
      for (int cc = 0; cc < group; ++cc) acc += src[cc * plane];
      *reinterpret_cast<RawOf<T>*>(dst) = acc_to_raw<T>(acc);
    }
  }
}

inline dim3 reduction_grid(int64_t n) {
  const int64_t blocks = (n + 255) / 256;
  return dim3(static_cast<unsigned>(blocks < 65535 * 8 ? blocks : 65535 * 8));
}

// ---------------------------------------------------------------------------------------
// Plane mode (propagate.h): one CTA per (channel, batch), one warp per direction.
//
// Shared memory, each plane H rows of pitch P = plane_pitch(W) elements, element (i, j) at
// i * P + j: pairs[D] ((lam, u) per pixel; after the scan the pixel's slot holds u_d h_d,
// or h_d without merge, in the accumulation type, which fits in the pair's bytes), gates[D][3],
// x. Staging reads every source plane (contiguous H * W elements) with consecutive threads
// on consecutive 16-byte words. A lane owns NP consecutive positions of every line of its
// direction; neighbours come through shuffles, so the scan needs no barrier.
template <typename T>
struct alignas(2 * sizeof(T)) LamU {
  RawOf<T> lam, u;
};
static_assert(sizeof(LamU<c10::BFloat16>) >= sizeof(float) && sizeof(LamU<double>) >= sizeof(double),
              "a (lam, u) slot must hold one accumulation-type value");

// Copies one contiguous (H, W) plane of `src` into shared memory at dst[(i * P + j) * stride].
// Each thread issues kStageLoads independent loads before it stores any (a loop that stored
// each load before issuing the next kept one load per thread in flight). H100: 8 loads took
// 128 registers and cost the 28x28 forward its occupancy (0.208 -> 0.351 ms, 56x56 1.43 ->
// 1.22 ms); 4 loads.
constexpr int kStageLoads = 4;
constexpr int kPlaneThreads = 32 * 4 * kPlaneMaxChannels;  // a warp per (channel, direction)

template <typename T>
__device__ __forceinline__ void stage_plane(const T* __restrict__ src, RawOf<T>* dst, int stride,
                                            int H, int W, int P, bool vec) {
  using Raw = RawOf<T>;
  const int hw = H * W;
  const int tid = threadIdx.x, nth = blockDim.x;
  constexpr int K = 16 / static_cast<int>(sizeof(T));
  if (vec) {
    for (int base = tid * K; base < hw; base += kStageLoads * nth * K) {
      Pack<Raw, K> pk[kStageLoads];
#pragma unroll
      for (int u = 0; u < kStageLoads; ++u) {
        const int e0 = base + u * nth * K;
        if (e0 < hw) pk[u] = *reinterpret_cast<const Pack<Raw, K>*>(src + e0);
      }
#pragma unroll
      for (int u = 0; u < kStageLoads; ++u) {
        const int e0 = base + u * nth * K;
        if (e0 >= hw) break;
        int i = e0 / W, j = e0 - i * W;
#pragma unroll
        for (int k = 0; k < K; ++k) {
          dst[(i * P + j) * stride] = pk[u].v[k];
          if (++j == W) j = 0, ++i;
        }
      }
    }
  } else {
    for (int base = tid; base < hw; base += kStageLoads * nth) {
      Raw v[kStageLoads];
#pragma unroll
      for (int u = 0; u < kStageLoads; ++u) {
        const int e = base + u * nth;
        if (e < hw) v[u] = load_raw(src + e);
      }
#pragma unroll
      for (int u = 0; u < kStageLoads; ++u) {
        const int e = base + u * nth;
        if (e >= hw) break;
        const int i = e / W, j = e - i * W;
        dst[(i * P + j) * stride] = v[u];
      }
    }
  }
}

template <typename T, bool NORMALIZE, bool MERGE, int NP>
__global__ void __launch_bounds__(kPlaneThreads, 1) propagate_plane_forward_kernel(const FwdParams p) {
  using A = Acc<T>;
  using Raw = RawOf<T>;
  const Geometry& geo = p.geo;
  const int cpc = geo.channels_per_cta, b = blockIdx.y;
  const int c0 = blockIdx.x * cpc;
  const int H = geo.H, W = geo.W, D = geo.D, P = plane_pitch(geo.W);
  const int plane = H * P;
  const int g = c0 / (geo.C / geo.G);  // the CTA's channels share this group
  const int64_t hw = static_cast<int64_t>(H) * W;
  extern __shared__ __align__(16) unsigned char smem[];
  // gates[D][3], then per channel slot cs: pairs[D], x
  Raw* gsm = reinterpret_cast<Raw*>(smem);
  const int64_t gate_bytes = plane_gate_bytes(H, W, D, sizeof(T));
  const int64_t slot_bytes = plane_slot_bytes(H, W, D, sizeof(T));
  auto pairs_of = [&](int cs) {
    return reinterpret_cast<LamU<T>*>(smem + gate_bytes + cs * slot_bytes);
  };
  auto x_of = [&](int cs) { return reinterpret_cast<Raw*>(pairs_of(cs) + D * plane); };

  // Stage the group's gates once, then x, lam and u of each channel.
  for (int di = 0; di < D; ++di) {
    const T* gp = static_cast<const T*>(p.gates) + (stored_entry(geo, b, di) * geo.G + g) * 3 * hw;
#pragma unroll
    for (int k = 0; k < 3; ++k) stage_plane(gp + k * hw, gsm + (di * 3 + k) * plane, 1, H, W, P, geo.plane_vec);
  }
  for (int cs = 0; cs < cpc; ++cs) {
    const int c = c0 + cs;
    stage_plane(static_cast<const T*>(p.x) + (static_cast<int64_t>(b) * geo.C + c) * hw, x_of(cs),
                1, H, W, P, geo.plane_vec);
    for (int di = 0; di < D; ++di) {
      const int64_t dc_off = (stored_entry(geo, b, di) * geo.C + c) * hw;
      Raw* pr = reinterpret_cast<Raw*>(pairs_of(cs) + di * plane);
      stage_plane(static_cast<const T*>(p.lam) + dc_off, pr, 2, H, W, P, geo.plane_vec);
      if (MERGE) stage_plane(static_cast<const T*>(p.u) + dc_off, pr + 1, 2, H, W, P, geo.plane_vec);
    }
  }
  __syncthreads();

  // The scan of warp (cs, di): channel slot cs, direction di.
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int cs = warp / D, di = warp % D;
  {
    const int c = c0 + cs;
    const Line line(geo, direction_of(geo, di));
    const int n = line.n_line;
    const int64_t dc_off = (stored_entry(geo, b, di) * geo.C + c) * hw;
    T* hidden = MERGE && p.hidden != nullptr ? static_cast<T*>(p.hidden) + dc_off : nullptr;
    const Raw* ga = gsm + di * 3 * plane;
    LamU<T>* pr = pairs_of(cs) + di * plane;
    const Raw* xsm = x_of(cs);
    A h[NP];
#pragma unroll
    for (int q = 0; q < NP; ++q) h[q] = 0;
    int phase = 0;
    for (int s = 0; s < line.n_steps; ++s) {
      const bool restart = phase == 0;
      const A from_left = __shfl_up_sync(0xffffffffu, h[NP - 1], 1);
      const A from_right = __shfl_down_sync(0xffffffffu, h[0], 1);
      const A left = !restart && lane > 0 ? from_left : A(0);
      const A right = !restart && lane < 31 ? from_right : A(0);
      const int l = line.reverse ? line.n_steps - 1 - s : s;  // row (vertical) or column
      A hn[NP];
#pragma unroll
      for (int q = 0; q < NP; ++q) {
        const int pos = lane * NP + q;
        const bool on = pos < n;
        const int idx = on ? (line.vertical ? l * P + pos : pos * P + l) : 0;
        A a[3], w[3], comp[3];
        const bool valid[3] = {on && pos >= 1, on, on && pos + 1 < n};
#pragma unroll
        for (int k = 0; k < 3; ++k) a[k] = raw_to_acc<T>(ga[k * plane + idx]);
        if (NORMALIZE) {
          normalized_taps<T>(a, valid, w, comp);
        } else {
#pragma unroll
          for (int k = 0; k < 3; ++k) w[k] = valid[k] ? a[k] : A(0);
        }
        // (Only lanes on the line read the slot: another lane may have overwritten slot 0.)
        LamU<T> lu{};
        if (on) lu = pr[idx];
        A acc = on ? raw_to_acc<T>(lu.lam) * raw_to_acc<T>(xsm[idx]) : A(0);
        if (!restart) {
          const A hm = q == 0 ? left : h[q - 1];
          const A hp = q == NP - 1 ? right : h[q + 1];
          acc += w[0] * hm + w[1] * h[q] + w[2] * hp;
        }
        hn[q] = acc;
        if (on) {
          // This lane alone reads and writes the slot of (direction, pixel).
          *reinterpret_cast<A*>(pr + idx) = MERGE ? raw_to_acc<T>(lu.u) * acc : acc;
          if (hidden != nullptr) {
            const int64_t o = line.vertical ? static_cast<int64_t>(l) * W + pos
                                            : static_cast<int64_t>(pos) * W + l;
            *reinterpret_cast<Raw*>(hidden + o) = acc_to_raw<T>(acc);
          }
        }
      }
#pragma unroll
      for (int q = 0; q < NP; ++q) h[q] = hn[q];
      phase = (geo.chunk > 0 && phase + 1 == geo.chunk) ? 0 : phase + 1;
    }
  }
  __syncthreads();

  // Write out: merged y (sum in direction order) or each h_d, coalesced.
  const int tid = threadIdx.x, nth = blockDim.x;
  for (int e = tid; e < cpc * hw; e += nth) {
    const int cs = e / hw, pix = e - cs * hw;
    const int i = pix / W, j = pix - i * W, idx = i * P + j;
    const int c = c0 + cs;
    const LamU<T>* pr = pairs_of(cs);
    if (MERGE) {
      A acc = *reinterpret_cast<const A*>(pr + idx);
      for (int d = 1; d < D; ++d) acc += *reinterpret_cast<const A*>(pr + d * plane + idx);
      *reinterpret_cast<Raw*>(static_cast<T*>(p.out) + (static_cast<int64_t>(b) * geo.C + c) * hw + pix) =
          acc_to_raw<T>(acc);
    } else {
      for (int d = 0; d < D; ++d) {
        const int64_t dc_off = (stored_entry(geo, b, d) * geo.C + c) * hw;
        *reinterpret_cast<Raw*>(static_cast<T*>(p.out) + dc_off + pix) =
            acc_to_raw<T>(*reinterpret_cast<const A*>(pr + d * plane + idx));
      }
    }
  }
}

template <typename T>
void launch_plane_forward(const FwdParams& p, bool normalize, bool merge, cudaStream_t stream) {
  const Geometry& geo = p.geo;
  const size_t smem = static_cast<size_t>(
      plane_smem_bytes(geo.H, geo.W, geo.D, sizeof(T), geo.channels_per_cta));
  const int longest = geo.threads_per_line;  // the longest line (bindings.cpp)
  const dim3 grid(geo.C / geo.channels_per_cta, geo.B), block(32 * geo.D * geo.channels_per_cta);
  GSPN2_BOOL_SWITCH(normalize, kNormalize, [&] {
    GSPN2_BOOL_SWITCH(merge, kMerge, [&] {
      GSPN2_BOOL_SWITCH(longest > 32, kTwo, [&] {
        constexpr int NP = kTwo ? 2 : 1;
        auto kernel = propagate_plane_forward_kernel<T, kNormalize, kMerge, NP>;
        if (smem > 48 * 1024) {
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem));
        }
        kernel<<<grid, block, smem, stream>>>(p);
      });
    });
  });
}

// ---------------------------------------------------------------------------------------
// Plane-mode backward (propagate.h): one CTA per (batch, direction, cpc channels of one gate
// group), one warp per channel. Shared memory: the direction's 3 gate planes (shared by the
// channels), then per channel slot the planes pairs ((lam, x) per pixel), grad_out, u and h in
// the storage type, and a double-buffered line of gate-logit gradients per slot
// (accumulation type, positions < kPlaneMaxLine). All staged with coalesced loads. The warp of
// slot cs walks its direction's steps in reverse; at step s the lane owning pixel p reads its
// inputs and overwrites, at that pixel only: grad_out <- dlam = x dh, u <- du = h grad_out,
// (lam, x) <- lam dh (accumulation type), and (the first slot, after summing the slots' gate
// gradients in slot order) the gate planes <- the gate-logit gradients. One barrier, then every
// output is written out coalesced. dx of the direction goes to grad_x (D = 1) or to the
// per-direction float buffer summed by sum_directions_kernel; gate gradients go to grad_gates
// when the CTA holds the whole group, else (summed over its cpc channels) to the float buffer
// (B, D, C / cpc, 3, H, W) summed by sum_group_channels_kernel.
template <typename T>
struct alignas(2 * sizeof(T)) LamX {
  RawOf<T> lam, x;
};

template <typename T, bool NORMALIZE, bool MERGE, int NP>
__global__ void __launch_bounds__(32 * kPlaneMaxChannels, 1)
    propagate_plane_backward_kernel(const BwdParams p) {
  using A = Acc<T>;
  using Raw = RawOf<T>;
  const Geometry& geo = p.geo;
  const int cpc = geo.channels_per_cta, di = blockIdx.y, b = blockIdx.z;
  const int c0 = blockIdx.x * cpc;
  const int H = geo.H, W = geo.W, D = geo.D, P = plane_pitch(geo.W);
  const int plane = H * P;
  const int group = geo.C / geo.G;
  const int g = c0 / group;
  const bool whole_group = cpc == group;
  const int64_t hw = static_cast<int64_t>(H) * W;
  extern __shared__ __align__(16) unsigned char smem[];
  Raw* gsm = reinterpret_cast<Raw*>(smem);
  const int64_t gate_bytes = round16(static_cast<int64_t>(3) * plane * sizeof(T));
  const int64_t slot_bytes = plane_bwd_slot_bytes(H, W, sizeof(T));
  auto pairs_of = [&](int cs) { return reinterpret_cast<LamX<T>*>(smem + gate_bytes + cs * slot_bytes); };
  auto go_of = [&](int cs) { return reinterpret_cast<Raw*>(pairs_of(cs) + plane); };
  auto u_of = [&](int cs) { return go_of(cs) + plane; };
  auto h_of = [&](int cs) { return go_of(cs) + 2 * plane; };
  A* lines = reinterpret_cast<A*>(smem + gate_bytes + cpc * slot_bytes);  // [2][cpc][3][kPlaneMaxLine]
  auto line_at = [&](int buf, int cs, int k) { return lines + ((buf * cpc + cs) * 3 + k) * kPlaneMaxLine; };

  const int64_t bdg = stored_entry(geo, b, di) * geo.G + g;
  {
    const T* gp = static_cast<const T*>(p.gates) + bdg * 3 * hw;
#pragma unroll
    for (int k = 0; k < 3; ++k) stage_plane(gp + k * hw, gsm + k * plane, 1, H, W, P, geo.plane_vec);
  }
  for (int cs = 0; cs < cpc; ++cs) {
    const int c = c0 + cs;
    const int64_t x_off = (static_cast<int64_t>(b) * geo.C + c) * hw;
    const int64_t dc_off = (stored_entry(geo, b, di) * geo.C + c) * hw;
    Raw* pr = reinterpret_cast<Raw*>(pairs_of(cs));
    stage_plane(static_cast<const T*>(p.lam) + dc_off, pr, 2, H, W, P, geo.plane_vec);
    stage_plane(static_cast<const T*>(p.x) + x_off, pr + 1, 2, H, W, P, geo.plane_vec);
    stage_plane(static_cast<const T*>(p.grad_out) + (MERGE ? x_off : dc_off), go_of(cs), 1, H, W,
                P, geo.plane_vec);
    if (MERGE) stage_plane(static_cast<const T*>(p.u) + dc_off, u_of(cs), 1, H, W, P, geo.plane_vec);
    stage_plane(static_cast<const T*>(p.hidden) + dc_off, h_of(cs), 1, H, W, P, geo.plane_vec);
  }
  __syncthreads();

  const int cs = threadIdx.x / 32, lane = threadIdx.x % 32;
  const Line line(geo, direction_of(geo, di));
  const int n = line.n_line;
  LamX<T>* pr = pairs_of(cs);
  Raw* gosm = go_of(cs);
  Raw* usm = u_of(cs);
  const Raw* hsm = h_of(cs);
  A* partial_gates = whole_group ? nullptr
                                 : static_cast<A*>(p.partial_gates) +
                                       ((static_cast<int64_t>(b) * D + di) * (geo.C / cpc) + blockIdx.x) * 3 * hw;
  auto index = [&](int l, int pos) { return line.vertical ? l * P + pos : pos * P + l; };
  auto offset = [&](int l, int pos) {
    return line.vertical ? static_cast<int64_t>(l) * W + pos : static_cast<int64_t>(pos) * W + l;
  };
  A dh[NP], wn[3][NP];
#pragma unroll
  for (int q = 0; q < NP; ++q) {
    dh[q] = 0;
#pragma unroll
    for (int k = 0; k < 3; ++k) wn[k][q] = 0;
  }
  A to_left = 0, to_right = 0;  // w_{-1} dh at the lane's first and w_{+1} dh at its last position
  const int last = line.n_steps - 1;
  for (int s = last; s >= 0; --s) {
    const bool cut = s == last || (geo.chunk > 0 && (s + 1) % geo.chunk == 0);
    const bool start = geo.chunk > 0 ? s % geo.chunk == 0 : s == 0;
    const A fl = __shfl_up_sync(0xffffffffu, to_right, 1);
    const A fr = __shfl_down_sync(0xffffffffu, to_left, 1);
    const A from_left = !cut && lane > 0 ? fl : A(0);
    const A from_right = !cut && lane < 31 ? fr : A(0);
    const int l = line.reverse ? line.n_steps - 1 - s : s;  // row (vertical) or column
    const int lprev = line.reverse ? l + 1 : l - 1;          // that of step s - 1
    A a[3][NP], w[3][NP], comp[3][NP], d[NP], da[3][NP];
#pragma unroll
    for (int q = 0; q < NP; ++q) {
      const int pos = lane * NP + q;
      const int idx = pos < n ? index(l, pos) : 0;
#pragma unroll
      for (int k = 0; k < 3; ++k) a[k][q] = pos < n ? raw_to_acc<T>(gsm[k * plane + idx]) : A(0);
    }
    tap_weights<T, NORMALIZE, NP>(a, lane * NP, n, w, comp);
#pragma unroll
    for (int q = 0; q < NP; ++q) {
      const int pos = lane * NP + q;
      const bool on = pos < n;
      const int idx = on ? index(l, pos) : 0;
      A go = 0, uu = 0, lam = 0, xx = 0, hh = 0;
      if (on) {
        const LamX<T> lx = pr[idx];
        lam = raw_to_acc<T>(lx.lam);
        xx = raw_to_acc<T>(lx.x);
        go = raw_to_acc<T>(gosm[idx]);
        if (MERGE) uu = raw_to_acc<T>(usm[idx]);
        hh = raw_to_acc<T>(hsm[idx]);
      }
      A acc = MERGE ? uu * go : go;
      if (!cut) {
        acc += wn[1][q] * dh[q];
        acc += q == 0 ? from_left : wn[2][q - 1] * dh[q - 1];
        acc += q == NP - 1 ? from_right : wn[0][q + 1] * dh[q + 1];
      }
      d[q] = on ? acc : A(0);
      A hprev[3];
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        const int np = pos + k - 1;
        hprev[k] = on && s >= 1 && np >= 0 && np < n ? raw_to_acc<T>(hsm[index(lprev, np)]) : A(0);
      }
      const bool valid[3] = {on && pos >= 1, on, on && pos + 1 < n};
      A gw[3];
#pragma unroll
      for (int k = 0; k < 3; ++k) gw[k] = start ? A(0) : d[q] * hprev[k];
      if (NORMALIZE) {
        const A dot = w[0][q] * gw[0] + w[1][q] * gw[1] + w[2][q] * gw[2];
#pragma unroll
        for (int k = 0; k < 3; ++k) da[k][q] = valid[k] ? w[k][q] * comp[k][q] * (gw[k] - dot) : A(0);
      } else {
#pragma unroll
        for (int k = 0; k < 3; ++k) da[k][q] = valid[k] ? gw[k] : A(0);
      }
      if (on) {
        // This lane alone reads and writes these slots of (channel, pixel).
        gosm[idx] = acc_to_raw<T>(xx * d[q]);
        if (MERGE) usm[idx] = acc_to_raw<T>(hh * go);
        *reinterpret_cast<A*>(pr + idx) = lam * d[q];
      }
    }
    // Gate-logit gradients of this step, summed over the CTA's channels in slot order.
    if (cpc == 1) {
#pragma unroll
      for (int q = 0; q < NP; ++q) {
        const int pos = lane * NP + q;
        if (pos >= n) continue;
        if (whole_group) {
#pragma unroll
          for (int k = 0; k < 3; ++k) gsm[k * plane + index(l, pos)] = acc_to_raw<T>(da[k][q]);
        } else {
#pragma unroll
          for (int k = 0; k < 3; ++k) partial_gates[k * hw + offset(l, pos)] = da[k][q];
        }
      }
    } else {
      const int buf = s & 1;
#pragma unroll
      for (int q = 0; q < NP; ++q) {
        const int pos = lane * NP + q;
#pragma unroll
        for (int k = 0; k < 3; ++k) line_at(buf, cs, k)[pos] = da[k][q];
      }
      __syncthreads();  // every slot's line is in; every slot has read this step's gates
      if (cs == 0) {
#pragma unroll
        for (int q = 0; q < NP; ++q) {
          const int pos = lane * NP + q;
          if (pos >= n) continue;
#pragma unroll
          for (int k = 0; k < 3; ++k) {
            A sum = line_at(buf, 0, k)[pos];
            for (int o = 1; o < cpc; ++o) sum += line_at(buf, o, k)[pos];
            if (whole_group) {
              gsm[k * plane + index(l, pos)] = acc_to_raw<T>(sum);
            } else {
              partial_gates[k * hw + offset(l, pos)] = sum;
            }
          }
        }
      }
    }
#pragma unroll
    for (int q = 0; q < NP; ++q) {
      dh[q] = d[q];
#pragma unroll
      for (int k = 0; k < 3; ++k) wn[k][q] = w[k][q];
    }
    to_left = w[0][0] * d[0];
    to_right = w[2][NP - 1] * d[NP - 1];
  }
  __syncthreads();

  // Write out, coalesced: grad_lam, grad_u, the direction's dx and (whole group) the gates.
  const int tid = threadIdx.x, nth = blockDim.x;
  for (int e = tid; e < cpc * hw; e += nth) {
    const int o = static_cast<int>(e / hw), pix = static_cast<int>(e - o * hw);
    const int i = pix / W, j = pix - i * W, idx = i * P + j;
    const int c = c0 + o;
    const int64_t x_off = (static_cast<int64_t>(b) * geo.C + c) * hw;
    const int64_t dc_off = (stored_entry(geo, b, di) * geo.C + c) * hw;
    *reinterpret_cast<Raw*>(static_cast<T*>(p.grad_lam) + dc_off + pix) = go_of(o)[idx];
    if (MERGE && p.grad_u != nullptr) {
      *reinterpret_cast<Raw*>(static_cast<T*>(p.grad_u) + dc_off + pix) = u_of(o)[idx];
    }
    const A dx = *reinterpret_cast<const A*>(pairs_of(o) + idx);
    if (D == 1) {
      *reinterpret_cast<Raw*>(static_cast<T*>(p.grad_x) + x_off + pix) = acc_to_raw<T>(dx);
    } else {
      static_cast<A*>(p.partial_x)[((static_cast<int64_t>(di) * geo.B + b) * geo.C + c) * hw + pix] = dx;
    }
  }
  if (whole_group) {
    T* out = static_cast<T*>(p.grad_gates) + bdg * 3 * hw;
    for (int e = tid; e < 3 * hw; e += nth) {
      const int k = static_cast<int>(e / hw), pix = static_cast<int>(e - k * hw);
      const int i = pix / W, j = pix - i * W;
      *reinterpret_cast<Raw*>(out + e) = gsm[k * plane + i * P + j];
    }
  }
}

template <typename T>
void launch_plane_backward(const BwdParams& p, bool normalize, bool merge, cudaStream_t stream) {
  const Geometry& geo = p.geo;
  const size_t smem = static_cast<size_t>(
      plane_bwd_smem_bytes(geo.H, geo.W, sizeof(T), sizeof(Acc<T>), geo.channels_per_cta));
  const int longest = geo.threads_per_line;  // the longest line (bindings.cpp)
  const dim3 grid(geo.C / geo.channels_per_cta, geo.D, geo.B), block(32 * geo.channels_per_cta);
  GSPN2_BOOL_SWITCH(normalize, kNormalize, [&] {
    GSPN2_BOOL_SWITCH(merge, kMerge, [&] {
      GSPN2_BOOL_SWITCH(longest > 32, kTwo, [&] {
        constexpr int NP = kTwo ? 2 : 1;
        auto kernel = propagate_plane_backward_kernel<T, kNormalize, kMerge, NP>;
        if (smem > 48 * 1024) {
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem));
        }
        kernel<<<grid, block, smem, stream>>>(p);
      });
    });
  });
}

template <typename T>
void launch_forward_impl(const FwdParams& p, bool normalize, bool merge, cudaStream_t stream) {
  const Geometry& geo = p.geo;
  if (geo.mode == kPlaneMode) {
    launch_plane_forward<T>(p, normalize, merge, stream);
    return;
  }
  const dim3 block(geo.threads_per_line, geo.channels_per_cta / geo.channels_per_thread);
  const dim3 grid(geo.C / geo.channels_per_cta, geo.D, geo.B);
  const size_t smem = 4 * sizeof(Acc<T>) * geo.threads_per_line * geo.channels_per_cta;
  GSPN2_BOOL_SWITCH(normalize, kNormalize, [&] {
    GSPN2_BOOL_SWITCH(merge, kMerge, [&] {
      GSPN2_MODE_SWITCH(geo.mode, kMode, [&] {
        GSPN2_KC_SWITCH(T, kMode, false, geo.channels_per_thread, kKC, [&] {
          propagate_forward_kernel<T, kNormalize, kMerge, kMode, kKC>
              <<<grid, block, kMode == kWarpMode ? 0 : smem, stream>>>(p);
        });
      });
    });
  });
}

template <typename T>
void launch_backward_impl(const BwdParams& p, bool normalize, bool merge, cudaStream_t stream) {
  const Geometry& geo = p.geo;
  // Channels whose gate-logit gradients one entry of partial_gates sums (in the CTA or thread).
  int summed = 1;
  if (geo.mode == kPlaneMode) {
    launch_plane_backward<T>(p, normalize, merge, stream);
    summed = geo.channels_per_cta;
  } else {
    summed = geo.channels_per_thread;
    const dim3 block(geo.threads_per_line, geo.channels_per_cta / geo.channels_per_thread);
    const dim3 grid(geo.C / geo.channels_per_cta, geo.D, geo.B);
    const size_t smem = 4 * sizeof(Acc<T>) * geo.threads_per_line * geo.channels_per_cta;
    GSPN2_BOOL_SWITCH(normalize, kNormalize, [&] {
      GSPN2_BOOL_SWITCH(merge, kMerge, [&] {
        GSPN2_MODE_SWITCH(geo.mode, kMode, [&] {
          GSPN2_KC_SWITCH(T, kMode, true, geo.channels_per_thread, kKC, [&] {
            propagate_backward_kernel<T, kNormalize, kMerge, kMode, kKC>
                <<<grid, block, kMode == kWarpMode ? 0 : smem, stream>>>(p);
          });
        });
      });
    });
  }
  const int64_t hw = static_cast<int64_t>(geo.H) * geo.W;
  // (the buffers and outputs come from the caching allocator: aligned for 4-element accesses
  // when the element counts are multiples of 4)
  const bool vec = hw % 4 == 0;
  if (geo.D > 1) {
    const int64_t n = static_cast<int64_t>(geo.B) * geo.C * hw;
    GSPN2_BOOL_SWITCH(vec, kVec, [&] {
      sum_directions_kernel<T, kVec><<<reduction_grid(kVec ? n / 4 : n), 256, 0, stream>>>(
          static_cast<const Acc<T>*>(p.partial_x), static_cast<T*>(p.grad_x), geo.D, n);
    });
  }
  if (geo.C / geo.G > summed) {
    const int64_t n = static_cast<int64_t>(geo.B) * geo.D * geo.G * 3 * hw;
    GSPN2_BOOL_SWITCH(vec, kVec, [&] {
      sum_group_channels_kernel<T, kVec><<<reduction_grid(kVec ? n / 4 : n), 256, 0, stream>>>(
          static_cast<const Acc<T>*>(p.partial_gates), static_cast<T*>(p.grad_gates), geo,
          geo.C / geo.G / summed, 3 * hw, n);
    });
  }
}

}  // namespace cuda
}  // namespace gspn2
