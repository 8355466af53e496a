// CPU kernels of the GSPN-2 line-scan propagation (SPEC section 1, docs/ops.md).
//
// Every scan runs in a "frame" where its lines are contiguous rows: the vertical directions
// scan an H x W plane as stored; the horizontal directions scan the transposed W x H plane
// (left_right top to bottom, right_left bottom to top). Each scan step updates one line
// through padded line buffers, so the loop over the line has no branches and vectorises.
// What a step takes in (z = lam * x forward, the direct gradient u * dL/dy backward) and what
// it gives out (h, or e = dL/dh) pass through callbacks, one line at a time:
//   - vertical directions: the frame is the image, so the callbacks read the inputs and
//     write the outputs of that line directly (storing h and merging u * h forward; dL/du,
//     dL/dlam, dL/dx backward): one pass over the plane;
//   - horizontal directions: the scan reads and writes frame planes, which an element-wise
//     pass in image layout prepares and finishes, transposed in cache-sized tiles.
//
// The normalised tap weights of every (b, d, g) are computed once, in the frame of d, into a
// scratch buffer shared by the channels of the group. Work items are (b, g, block of channels
// of g); inside one, the directions run outermost so that the weights (and, backward, the
// weight gradients) of a direction stay in cache while its channels are scanned.
//
// Backward: the weight gradients of a block are summed in a fixed order into a per-block
// buffer, and a second pass sums the blocks in a fixed order and applies the Jacobian of the
// normalisation. The blocks depend on the shapes only, so results do not depend on the
// number of threads or on scheduling.
//
// The hot functions (GSPN2_HOT) are compiled twice on x86-64 Linux with GCC >= 12, for
// x86-64-v3 (AVX2, FMA: Haswell, Zen and later) and for the baseline, and the dynamic loader
// picks one for the CPU at hand: portable builds, wide vectors where the CPU has them.
// Everything they call is inlined into them (flatten), so that it is compiled for the same
// target.
#include "cpu/propagate_cpu.h"

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

// GSPN2_NO_MULTIVERSION builds the baseline only (the tests compare the two builds). The
// x86-64-v3 level in target_clones and __builtin_cpu_supports needs GCC 12 (PR 101696);
// older GCCs build the baseline. The clones are picked through ifunc, which needs glibc.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && \
    defined(__linux__) && defined(__GLIBC__) && !defined(GSPN2_NO_MULTIVERSION)
#define GSPN2_MULTIVERSION 1
#define GSPN2_HOT __attribute__((target_clones("arch=x86-64-v3", "default"), flatten))
#elif defined(__GNUC__)  // GCC elsewhere, Clang
#define GSPN2_MULTIVERSION 0
#define GSPN2_HOT __attribute__((flatten))
#else
#define GSPN2_MULTIVERSION 0
#define GSPN2_HOT
#endif

namespace gspn2 {
namespace cpu {
namespace {

// A scan in its frame: `steps` lines of `n` contiguous positions; line s starts at
// base + s * step_stride. Line positions increase with the image coordinate, so taps
// k = -1, 0, +1 sit at p - 1, p, p + 1.
struct Geometry {
  int64_t steps, n, base, step_stride;
};

Geometry frame_geometry(int64_t direction, int64_t H, int64_t W) {
  const bool vertical = is_vertical(direction);
  const int64_t rows = vertical ? H : W, cols = vertical ? W : H;
  if (direction == kTopDown || direction == kLeftRight) return {rows, cols, 0, cols};
  return {rows, cols, (rows - 1) * cols, -cols};
}

// dst (cols x rows) = src (rows x cols) transposed, in tiles that stay in cache; 4 x 4 SSE
// blocks for float.
template <typename T>
GSPN2_HOT void transpose(const T* __restrict src, int64_t rows, int64_t cols, T* __restrict dst) {
  constexpr int64_t kTile = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    const int64_t r1 = std::min(rows, r0 + kTile);
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t c1 = std::min(cols, c0 + kTile);
      int64_t r = r0;
#if defined(__SSE2__)
      if (std::is_same<T, float>::value) {
        const float* s = reinterpret_cast<const float*>(src);
        float* d = reinterpret_cast<float*>(dst);
        for (; r + 4 <= r1; r += 4) {
          int64_t c = c0;
          for (; c + 4 <= c1; c += 4) {
            __m128 v0 = _mm_loadu_ps(s + r * cols + c);
            __m128 v1 = _mm_loadu_ps(s + (r + 1) * cols + c);
            __m128 v2 = _mm_loadu_ps(s + (r + 2) * cols + c);
            __m128 v3 = _mm_loadu_ps(s + (r + 3) * cols + c);
            _MM_TRANSPOSE4_PS(v0, v1, v2, v3);
            _mm_storeu_ps(d + c * rows + r, v0);
            _mm_storeu_ps(d + (c + 1) * rows + r, v1);
            _mm_storeu_ps(d + (c + 2) * rows + r, v2);
            _mm_storeu_ps(d + (c + 3) * rows + r, v3);
          }
          for (; c < c1; ++c) {
            for (int64_t k = 0; k < 4; ++k) d[c * rows + r + k] = s[(r + k) * cols + c];
          }
        }
      }
#endif
      for (; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) dst[c * rows + r] = src[r * cols + c];
      }
    }
  }
}

// The frame of a horizontal direction (W x H) = value(o) over the H x W image positions o,
// through `image` (H x W scratch) and a transpose.
template <typename acc_t, typename F>
inline void to_transposed_frame(int64_t H, int64_t W, acc_t* __restrict frame,
                                acc_t* __restrict image, F&& value) {
  for (int64_t o = 0; o < H * W; ++o) image[o] = value(o);
  transpose(image, H, W, frame);
}

// Grain of at::parallel_for: small problems run on the calling thread.
int64_t grain(int64_t work_per_item) {
  constexpr int64_t kMinWorkPerTask = int64_t(1) << 15;
  return std::max<int64_t>(1, kMinWorkPerTask / std::max<int64_t>(1, work_per_item));
}

bool restarts(int64_t s, int64_t chunk) { return s == 0 || (chunk > 0 && s % chunk == 0); }

// The selects of the sigmoid below compare floats; GCC only turns them into vector blends
// (and vectorises the weight loops) when it may ignore floating-point exception flags, which
// nothing here reads.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#endif

// exp of a float in a form the compiler vectorises: exp(v) = 2^n exp(r), n = round(v / ln 2),
// |r| <= ln(2) / 2 (Cody-Waite reduction) and a degree-6 Taylor polynomial for exp(r), relative
// error below 2e-7. v is clamped to [-87, 88] so that 2^n stays a normal float (the sigmoid
// below then saturates to 0 or 1 within float precision); NaN propagates. The clamps are
// written as the selects that map to minps/maxps, the NaN case as a final select.
inline float exp_vectorisable(float v) {
  float x = v < 88.f ? v : 88.f;
  x = x > -87.f ? x : -87.f;
  constexpr float kRound = 12582912.f;  // 1.5 * 2^23: adding and subtracting it rounds
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float poly = 1.f / 720;
  poly = poly * r + 1.f / 120;
  poly = poly * r + 1.f / 24;
  poly = poly * r + 1.f / 6;
  poly = poly * r + 0.5f;
  poly = poly * r + 1.f;
  poly = poly * r + 1.f;
  const int32_t exponent = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &exponent, sizeof(scale));
  const float result = poly * scale;
  return v == v ? result : v;
}

inline float exp_of(float v) { return exp_vectorisable(v); }
inline double exp_of(double v) { return std::exp(v > 700.0 ? 700.0 : v); }  // finite; NaN stays

// sigmoid(v) * exp(-shift) = exp(v - shift) / (1 + exp(v)) for shift <= 0 (shift = 0: plain
// sigmoid), given exp_shift = exp(shift); 0 for v = -inf.
template <typename acc_t>
inline acc_t scaled_sigmoid(acc_t v, acc_t shift, acc_t exp_shift) {
  const acc_t numerator = exp_of(v - shift);
  const acc_t t = numerator / (acc_t(1) + numerator * exp_shift);
  return v == -std::numeric_limits<acc_t>::infinity() ? acc_t(0) : t;
}

// Planes of the tap-weight scratch of one (b, d, g), in the frame of d: w_{-1}, w_0, w_{+1}
// and the normaliser S = sum of the valid sigmoids (which the backward needs).
constexpr int64_t kWeightPlanes = 4;

// Normalised (or given) tap weights of one (b, d, g) from its gates a (3, H, W), in image
// layout: w (kWeightPlanes, H, W), invalid taps 0. Simple loops over whole planes, so that they
// vectorise.
//
// Normalising: w_k = s_k / S with s_k = sigmoid(a_k) and S the sum over the valid taps. When
// even the largest valid logit m is negative, every s_k is computed scaled by exp(-m), as
// exp(a_k - m) / (1 + exp(a_k)), so that logits far below zero (where sigmoid underflows)
// still give the right ratios; the stored normaliser is the unscaled S (it may underflow to
// 0, which is then its correct value to working precision).
template <bool kNormalize, typename scalar_t, typename acc_t>
GSPN2_HOT void tap_weights(const scalar_t* __restrict a, int64_t H, int64_t W, bool vertical,
                 acc_t* __restrict w) {
  const int64_t HW = H * W;
  for (int64_t o = 0; o < 3 * HW; ++o) w[o] = static_cast<acc_t>(a[o]);
  // Taps whose neighbour lies outside the line (the first tap at the start of each line, the
  // last at its end; lines are rows for the vertical directions, columns otherwise) get the
  // logit -inf (normalising) or the weight 0.
  const acc_t off = kNormalize ? -std::numeric_limits<acc_t>::infinity() : acc_t(0);
  acc_t* __restrict wl = w;
  acc_t* __restrict wc = w + HW;
  acc_t* __restrict wr = w + 2 * HW;
  acc_t* __restrict total = w + 3 * HW;
  if (vertical) {
    for (int64_t i = 0; i < H; ++i) {
      wl[i * W] = off;
      wr[i * W + W - 1] = off;
    }
  } else {
    for (int64_t j = 0; j < W; ++j) {
      wl[j] = off;
      wr[(H - 1) * W + j] = off;
    }
  }
  if (!kNormalize) {
    std::fill(total, total + HW, acc_t(1));
    return;
  }
  for (int64_t o = 0; o < HW; ++o) {
    const acc_t al = wl[o], ac = wc[o], ar = wr[o];
    acc_t m = ac;
    m = al > m ? al : m;
    m = ar > m ? ar : m;
    const acc_t shift = m < acc_t(0) ? m : acc_t(0);
    const acc_t exp_shift = exp_of(shift);
    const acc_t tl = scaled_sigmoid(al, shift, exp_shift);
    const acc_t tc = scaled_sigmoid(ac, shift, exp_shift);
    const acc_t tr = scaled_sigmoid(ar, shift, exp_shift);
    const acc_t t = tl + tc + tr;
    const acc_t inv = acc_t(1) / t;
    wl[o] = tl * inv;
    wc[o] = tc * inv;
    wr[o] = tr * inv;
    total[o] = t * exp_shift;
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

template <typename scalar_t, typename acc_t>
void tap_weights(const scalar_t* a, int64_t H, int64_t W, bool vertical, bool normalize,
                 acc_t* w) {
  if (normalize) {
    tap_weights<true>(a, H, W, vertical, w);
  } else {
    tap_weights<false>(a, H, W, vertical, w);
  }
}

// Tap weights of every (b, d, g), each in the frame of its direction:
// (B, D, G, kWeightPlanes, HW) in the accumulation type.
template <typename scalar_t, typename acc_t>
std::unique_ptr<acc_t[]> all_tap_weights(const scalar_t* gates, const PropagateShape& sh,
                                   const std::vector<int64_t>& directions, bool normalize) {
  const int64_t H = sh.H, W = sh.W, HW = H * W, per_item = kWeightPlanes * HW;
  std::unique_ptr<acc_t[]> w(new acc_t[sh.B * sh.D * sh.G * per_item]);  // all written below
  at::parallel_for(0, sh.B * sh.D * sh.G, grain(per_item), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> image;  // image-layout weights of a horizontal direction
    for (int64_t item = begin; item < end; ++item) {
      const bool vertical = is_vertical(directions[item / sh.G % sh.D]);
      acc_t* frame = w.get() + item * per_item;
      if (vertical) {
        tap_weights(gates + item * 3 * HW, H, W, true, normalize, frame);
        continue;
      }
      image.resize(per_item);
      tap_weights(gates + item * 3 * HW, H, W, false, normalize, image.data());
      for (int64_t k = 0; k < kWeightPlanes; ++k) {
        transpose(image.data() + k * HW, H, W, frame + k * HW);
      }
    }
  });
  return w;
}

// Lines ahead that the fused vertical passes prefetch their streams from memory: their
// hardware prefetchers lose track of the many short streams (one line of each plane a step).
constexpr int64_t kPrefetchLines = 2;

template <typename T>
inline void prefetch_line(const T* p, int64_t count) {
  const char* bytes = reinterpret_cast<const char*>(p);
#if defined(__GNUC__)
  for (int64_t b = 0; b < count * static_cast<int64_t>(sizeof(T)); b += 64) {
    __builtin_prefetch(bytes + b);
  }
#else
  (void)bytes;
  (void)count;
#endif
}

// Line buffers of a scan: `count` lines of n_max + 2 (one padding position on each side).
template <typename acc_t>
struct LineBuffers {
  LineBuffers(int64_t count, int64_t n_max) : pad(n_max + 2), data(count * pad) {}
  acc_t* operator[](int64_t i) { return data.data() + i * pad; }
  int64_t pad;
  std::vector<acc_t> data;
};

// One step of the forward scan: hc = z + W hp over a line of n (hp, hc padded). The loops
// over a line take their operands as restrict parameters, so that they vectorise.
template <typename acc_t>
inline void forward_step(int64_t n, const acc_t* __restrict z, const acc_t* __restrict wl,
                         const acc_t* __restrict wc, const acc_t* __restrict wr,
                         const acc_t* __restrict hp, acc_t* __restrict hc) {
  for (int64_t p = 0; p < n; ++p) {
    hc[p + 1] = z[p] + wl[p] * hp[p] + wc[p] * hp[p + 1] + wr[p] * hp[p + 2];
  }
}

// One step of the reverse scan over a line of n (padded buffers): e = direct + carry (what
// step s + 1 sent back), dL/dw += e h_{s-1} at the three taps, and carry <- dL/dh_{s-1}[p] =
// w_l[p+1] e[p+1] + w_c[p] e[p] + w_r[p-1] e[p-1].
template <typename acc_t>
inline void backward_step(int64_t n, const acc_t* __restrict direct, const acc_t* __restrict wl,
                          const acc_t* __restrict wc, const acc_t* __restrict wr,
                          const acc_t* __restrict hp, acc_t* __restrict carry,
                          acc_t* __restrict e, acc_t* __restrict el, acc_t* __restrict er,
                          acc_t* __restrict dwl, acc_t* __restrict dwc, acc_t* __restrict dwr) {
  for (int64_t p = 0; p < n; ++p) {
    const acc_t ev = direct[p] + carry[p + 1];
    e[p + 1] = ev;
    dwl[p] += ev * hp[p];
    dwc[p] += ev * hp[p + 1];
    dwr[p] += ev * hp[p + 2];
    el[p + 1] = wl[p] * ev;
    er[p + 1] = wr[p] * ev;
  }
  for (int64_t p = 0; p < n; ++p) carry[p + 1] = el[p + 2] + wc[p] * e[p + 1] + er[p];
}

// Forward scan of one channel in one direction, in its frame: h_s = z_s + W_s h_{s-1}.
// z_line(row, buf) returns z of the line starting at frame offset `row` (n values; it may fill
// buf, n long, and return it); emit(row, h) takes h of that line. lines: 3 buffers.
template <typename acc_t, typename ZLine, typename Emit>
inline void scan_forward(const Geometry& g, int64_t HW, int64_t chunk, const acc_t* __restrict w,
                         LineBuffers<acc_t>& lines, ZLine&& z_line, Emit&& emit) {
  const int64_t n = g.n;
  const acc_t* __restrict wl = w;
  const acc_t* __restrict wc = w + HW;
  const acc_t* __restrict wr = w + 2 * HW;
  acc_t* prev = lines[0];
  acc_t* cur = lines[1];
  acc_t* const z_buf = lines[2];
  prev[0] = prev[n + 1] = cur[0] = cur[n + 1] = acc_t(0);
  for (int64_t s = 0; s < g.steps; ++s) {
    if (restarts(s, chunk)) std::fill(prev + 1, prev + n + 1, acc_t(0));
    const int64_t row = g.base + s * g.step_stride;
    forward_step(n, z_line(row, z_buf), wl + row, wc + row, wr + row, prev, cur);
    emit(row, static_cast<const acc_t*>(cur + 1));
    std::swap(prev, cur);
  }
}

// Reverse scan of one channel in one direction, in its frame; h is the saved hidden state in
// the frame. direct_line(row, buf) returns the gradient that reaches h of the line at `row`
// from the output (as z_line above); emit(row, e) takes e = dL/dh of the line (all paths).
// Accumulates dL/dw into dw (3 planes). lines: 6 buffers.
template <typename h_t, typename acc_t, typename DirectLine, typename Emit>
inline void scan_backward(const Geometry& g, int64_t HW, int64_t chunk, const h_t* __restrict h,
                          const acc_t* __restrict w, acc_t* __restrict dw,
                          LineBuffers<acc_t>& lines, DirectLine&& direct_line, Emit&& emit) {
  const int64_t n = g.n;
  const acc_t* __restrict wl = w;
  const acc_t* __restrict wc = w + HW;
  const acc_t* __restrict wr = w + 2 * HW;
  acc_t* __restrict carry = lines[0];
  acc_t* __restrict e_line = lines[1];
  acc_t* __restrict hp = lines[2];
  acc_t* __restrict el = lines[3];
  acc_t* __restrict er = lines[4];
  acc_t* const d_buf = lines[5];
  std::fill(carry, carry + n + 2, acc_t(0));
  e_line[0] = e_line[n + 1] = hp[0] = hp[n + 1] = acc_t(0);
  el[0] = el[n + 1] = er[0] = er[n + 1] = acc_t(0);
  for (int64_t s = g.steps - 1; s >= 0; --s) {
    const int64_t row = g.base + s * g.step_stride;
    const acc_t* __restrict direct = direct_line(row, d_buf);
    if (restarts(s, chunk)) {
      // h_{s-1} does not feed step s: nothing flows further back.
      for (int64_t p = 0; p < n; ++p) {
        e_line[p + 1] = direct[p] + carry[p + 1];
        carry[p + 1] = acc_t(0);
      }
      emit(row, static_cast<const acc_t*>(e_line + 1));
      continue;
    }
    const h_t* __restrict h_prev = h + row - g.step_stride;
    for (int64_t p = 0; p < n; ++p) hp[p + 1] = static_cast<acc_t>(h_prev[p]);
    backward_step(n, direct, wl + row, wc + row, wr + row, hp, carry, e_line, el, er, dw + row,
                  dw + HW + row, dw + 2 * HW + row);
    emit(row, static_cast<const acc_t*>(e_line + 1));
  }
}

// Channel blocks per gate group: enough work items to keep threads busy, bounded scratch
// memory. Depends on the shapes only, so results never depend on the thread count.
int64_t channel_blocks(int64_t B, int64_t G, int64_t cg, int64_t D, int64_t HW,
                       size_t acc_bytes) {
  constexpr int64_t kTargetItems = 8;
  constexpr int64_t kMaxPartialBytes = int64_t(64) << 20;
  const int64_t want = std::max<int64_t>(1, (kTargetItems + B * G - 1) / (B * G));
  const int64_t per_block = std::max<int64_t>(1, D * 3 * HW * static_cast<int64_t>(acc_bytes));
  const int64_t cap = std::max<int64_t>(1, kMaxPartialBytes / per_block);
  return std::max<int64_t>(1, std::min({cg, want, cap}));
}

// Work unit `unit` of the B * G * nblk units of a pass: batch b, gate group g, and the
// channels [c0, c1) of its channel block.
struct ChannelBlock {
  int64_t b, g, c0, c1;
};

ChannelBlock channel_block(int64_t unit, int64_t G, int64_t cg, int64_t nblk, int64_t per_blk) {
  const int64_t b = unit / (G * nblk), g = unit / nblk % G, blk = unit % nblk;
  const int64_t c0 = g * cg + blk * per_blk;
  return {b, g, c0, std::min(g * cg + cg, c0 + per_blk)};
}

void check_like(const torch::Tensor& t, const char* name, const torch::Tensor& x,
                at::IntArrayRef expected) {
  TORCH_CHECK(t.sizes() == expected, name, " must have shape ", expected, ", got ", t.sizes());
  check_same(t, name, x);
}

// The operands of one call, as raw pointers (null where absent).
template <typename scalar_t, typename acc_t>
struct ForwardOperands {
  const scalar_t *x, *lam, *u;
  scalar_t *out, *hidden;
  const acc_t* w;  // all_tap_weights
};

// Per-thread scratch of the forward: z and h planes in the frame, h in image layout, the
// merge accumulators of one channel block, line buffers.
template <typename acc_t>
struct ForwardScratch {
  ForwardScratch(int64_t HW, int64_t block_planes, int64_t n_max)
      : z(HW), h_frame(HW), h_image(HW), acc(block_planes * HW), lines(3, n_max) {}
  std::vector<acc_t> z, h_frame, h_image, acc;
  LineBuffers<acc_t> lines;
};

// The forward of the channels [c0, c1) of batch b, gate group g, in every direction.
template <typename scalar_t, typename acc_t>
GSPN2_HOT void forward_block(const ForwardOperands<scalar_t, acc_t>& op, const PropagateShape& sh,
                             const std::vector<int64_t>& directions, int64_t chunk, bool merge,
                             const ChannelBlock& blk, ForwardScratch<acc_t>& scratch) {
  const int64_t C = sh.C, H = sh.H, W = sh.W, D = sh.D, G = sh.G, HW = H * W;
  const int64_t b = blk.b, c0 = blk.c0, c1 = blk.c1;
  std::fill(scratch.acc.begin(), scratch.acc.end(), acc_t(0));
  for (int64_t di = 0; di < D; ++di) {
    const bool vertical = is_vertical(directions[di]);
    const Geometry geo = frame_geometry(directions[di], H, W);
    const int64_t n = geo.n;
    const acc_t* wd = op.w + ((b * D + di) * G + blk.g) * kWeightPlanes * HW;
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t plane = ((b * D + di) * C + c) * HW;
      const scalar_t* __restrict xc = op.x + (b * C + c) * HW;
      const scalar_t* __restrict lc = op.lam + plane;
      const scalar_t* __restrict uc = merge ? op.u + plane : nullptr;
      // h goes to out (unmerged), to hidden (merged, when saved) or nowhere.
      scalar_t* __restrict h_store =
          merge ? (op.hidden ? op.hidden + plane : nullptr) : op.out + plane;
      acc_t* __restrict a = merge ? scratch.acc.data() + (c - c0) * HW : nullptr;
      if (vertical) {
        scan_forward(
            geo, HW, chunk, wd, scratch.lines,
            [&](int64_t row, acc_t* __restrict z) {
              const int64_t next = row + kPrefetchLines * geo.step_stride;
              if (next >= 0 && next < HW) {
                prefetch_line(lc + next, n);
                prefetch_line(xc + next, n);
                if (h_store != nullptr) prefetch_line(h_store + next, n);
                if (a != nullptr) prefetch_line(uc + next, n);
              }
              for (int64_t p = 0; p < n; ++p) {
                z[p] = static_cast<acc_t>(lc[row + p]) * static_cast<acc_t>(xc[row + p]);
              }
              return static_cast<const acc_t*>(z);
            },
            [&](int64_t row, const acc_t* __restrict h) {
              if (h_store != nullptr) {
                for (int64_t p = 0; p < n; ++p) h_store[row + p] = static_cast<scalar_t>(h[p]);
              }
              if (a != nullptr) {
                for (int64_t p = 0; p < n; ++p) {
                  a[row + p] += static_cast<acc_t>(uc[row + p]) * h[p];
                }
              }
            });
        continue;
      }
      to_transposed_frame(H, W, scratch.z.data(), scratch.h_image.data(), [&](int64_t o) {
        return static_cast<acc_t>(lc[o]) * static_cast<acc_t>(xc[o]);
      });
      const acc_t* z_frame = scratch.z.data();
      acc_t* h_frame = scratch.h_frame.data();
      scan_forward(
          geo, HW, chunk, wd, scratch.lines,
          [&](int64_t row, acc_t*) { return z_frame + row; },
          [&](int64_t row, const acc_t* __restrict h) { std::copy(h, h + n, h_frame + row); });
      transpose(scratch.h_frame.data(), W, H, scratch.h_image.data());
      const acc_t* __restrict hv = scratch.h_image.data();
      if (h_store != nullptr) {
        for (int64_t o = 0; o < HW; ++o) h_store[o] = static_cast<scalar_t>(hv[o]);
      }
      if (a != nullptr) {
        for (int64_t o = 0; o < HW; ++o) a[o] += static_cast<acc_t>(uc[o]) * hv[o];
      }
    }
  }
  if (!merge) return;
  for (int64_t c = c0; c < c1; ++c) {
    const acc_t* __restrict a = scratch.acc.data() + (c - c0) * HW;
    scalar_t* __restrict y = op.out + (b * C + c) * HW;
    for (int64_t o = 0; o < HW; ++o) y[o] = static_cast<scalar_t>(a[o]);
  }
}

template <typename scalar_t, typename acc_t>
struct BackwardOperands {
  const scalar_t *grad_out, *x, *lam, *u, *hidden;
  scalar_t *grad_x, *grad_lam, *grad_u;
  const acc_t* w;  // all_tap_weights
};

// Per-thread scratch of the backward: the direct gradient, e = dL/dh and h in the frame, e in
// image layout, dL/dx of one channel block, line buffers.
template <typename acc_t>
struct BackwardScratch {
  BackwardScratch(int64_t HW, int64_t block_planes, int64_t n_max)
      : direct(HW), e_frame(HW), e_image(HW), h_frame(HW), gx(block_planes * HW),
        lines(6, n_max) {}
  std::vector<acc_t> direct, e_frame, e_image, h_frame, gx;
  LineBuffers<acc_t> lines;
};

// The backward of the channels [c0, c1) of batch b, gate group g, in every direction; the
// weight gradients of the block go to dw (D x 3 planes, in the frame of each direction).
template <typename scalar_t, typename acc_t>
GSPN2_HOT void backward_block(const BackwardOperands<scalar_t, acc_t>& op,
                              const PropagateShape& sh, const std::vector<int64_t>& directions,
                              int64_t chunk, bool merge, const ChannelBlock& blk, acc_t* dw,
                              BackwardScratch<acc_t>& scratch) {
  const int64_t C = sh.C, H = sh.H, W = sh.W, D = sh.D, G = sh.G, HW = H * W;
  const int64_t b = blk.b, c0 = blk.c0, c1 = blk.c1;
  std::fill(dw, dw + D * 3 * HW, acc_t(0));
  std::fill(scratch.gx.begin(), scratch.gx.end(), acc_t(0));
  for (int64_t di = 0; di < D; ++di) {
    const bool vertical = is_vertical(directions[di]);
    const Geometry geo = frame_geometry(directions[di], H, W);
    const int64_t n = geo.n;
    const acc_t* wd = op.w + ((b * D + di) * G + blk.g) * kWeightPlanes * HW;
    acc_t* dwd = dw + di * 3 * HW;
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t plane = ((b * D + di) * C + c) * HW;
      const scalar_t* __restrict goc = op.grad_out + (merge ? (b * C + c) * HW : plane);
      const scalar_t* __restrict uc = merge ? op.u + plane : nullptr;
      const scalar_t* __restrict hc = op.hidden + plane;
      scalar_t* __restrict guc = merge ? op.grad_u + plane : nullptr;
      const scalar_t* __restrict xc = op.x + (b * C + c) * HW;
      const scalar_t* __restrict lc = op.lam + plane;
      scalar_t* __restrict glc = op.grad_lam + plane;
      acc_t* __restrict gxc = scratch.gx.data() + (c - c0) * HW;
      if (vertical) {
        // The direct gradient u * dL/dy (and on the way dL/du = dL/dy * h) of a line, and
        // from e: dL/dlam = e * x, dL/dx += e * lam.
        scan_backward(
            geo, HW, chunk, hc, wd, dwd, scratch.lines,
            [&](int64_t row, acc_t* __restrict d) {
              const int64_t next = row - kPrefetchLines * geo.step_stride;
              if (next >= 0 && next < HW) {
                prefetch_line(goc + next, n);
                prefetch_line(hc + next, n);
                prefetch_line(xc + next, n);
                prefetch_line(lc + next, n);
                prefetch_line(glc + next, n);
                if (merge) {
                  prefetch_line(uc + next, n);
                  prefetch_line(guc + next, n);
                }
              }
              if (merge) {
                for (int64_t p = 0; p < n; ++p) {
                  const acc_t go = static_cast<acc_t>(goc[row + p]);
                  guc[row + p] = static_cast<scalar_t>(go * static_cast<acc_t>(hc[row + p]));
                  d[p] = static_cast<acc_t>(uc[row + p]) * go;
                }
              } else {
                for (int64_t p = 0; p < n; ++p) d[p] = static_cast<acc_t>(goc[row + p]);
              }
              return static_cast<const acc_t*>(d);
            },
            [&](int64_t row, const acc_t* __restrict e) {
              for (int64_t p = 0; p < n; ++p) {
                glc[row + p] = static_cast<scalar_t>(e[p] * static_cast<acc_t>(xc[row + p]));
                gxc[row + p] += e[p] * static_cast<acc_t>(lc[row + p]);
              }
            });
        continue;
      }
      // Horizontal: the direct gradient and h go to the frame, e comes back from it.
      if (merge) {
        to_transposed_frame(H, W, scratch.direct.data(), scratch.e_image.data(), [&](int64_t o) {
          const acc_t go = static_cast<acc_t>(goc[o]);
          guc[o] = static_cast<scalar_t>(go * static_cast<acc_t>(hc[o]));
          return static_cast<acc_t>(uc[o]) * go;
        });
      } else {
        to_transposed_frame(H, W, scratch.direct.data(), scratch.e_image.data(),
                 [&](int64_t o) { return static_cast<acc_t>(goc[o]); });
      }
      to_transposed_frame(H, W, scratch.h_frame.data(), scratch.e_image.data(),
               [&](int64_t o) { return static_cast<acc_t>(hc[o]); });
      const acc_t* direct = scratch.direct.data();
      acc_t* e_frame = scratch.e_frame.data();
      scan_backward(
          geo, HW, chunk, scratch.h_frame.data(), wd, dwd, scratch.lines,
          [&](int64_t row, acc_t*) { return direct + row; },
          [&](int64_t row, const acc_t* __restrict e) { std::copy(e, e + n, e_frame + row); });
      transpose(scratch.e_frame.data(), W, H, scratch.e_image.data());
      const acc_t* __restrict e = scratch.e_image.data();
      for (int64_t o = 0; o < HW; ++o) {
        glc[o] = static_cast<scalar_t>(e[o] * static_cast<acc_t>(xc[o]));
        gxc[o] += e[o] * static_cast<acc_t>(lc[o]);
      }
    }
  }
  for (int64_t c = c0; c < c1; ++c) {
    const acc_t* __restrict gxc = scratch.gx.data() + (c - c0) * HW;
    scalar_t* __restrict out_c = op.grad_x + (b * C + c) * HW;
    for (int64_t o = 0; o < HW; ++o) out_c[o] = static_cast<scalar_t>(gxc[o]);
  }
}

// Gate gradients of one (b, d, g) from the per-block weight gradients `part` (nblk blocks
// unit_dw apart, in the frame of d): sum the blocks in order, drop the taps whose neighbour is
// outside the line, go through the normalisation, and write in image layout to `ga`.
// gw: 3 planes of scratch, image: one.
template <typename scalar_t, typename acc_t>
GSPN2_HOT void gate_gradients(const acc_t* part, int64_t nblk, int64_t unit_dw,
                              const acc_t* __restrict wi, int64_t direction, int64_t H,
                              int64_t W, bool normalize, scalar_t* ga, acc_t* gw, acc_t* image) {
  const int64_t HW = H * W;
  const bool vertical = is_vertical(direction);
  const Geometry geo = frame_geometry(direction, H, W);
  std::copy(part, part + 3 * HW, gw);
  for (int64_t blk = 1; blk < nblk; ++blk) {
    const acc_t* __restrict pb = part + blk * unit_dw;
    acc_t* __restrict sum = gw;
    for (int64_t f = 0; f < 3 * HW; ++f) sum[f] += pb[f];
  }
  acc_t* __restrict gl = gw;
  acc_t* __restrict gc = gw + HW;
  acc_t* __restrict gr = gw + 2 * HW;
  for (int64_t line = 0; line < geo.steps; ++line) {
    gl[line * geo.n] = acc_t(0);
    gr[line * geo.n + geo.n - 1] = acc_t(0);
  }
  if (normalize) {
    // w_k = s_k / S: dL/da_k = s_k (1 - s_k) (g_k - sum_m w_m g_m) / S
    //                      = w_k (1 - w_k S) (g_k - sum_m w_m g_m); w_k = 0 on
    // the taps outside the line.
    const acc_t* __restrict total = wi + 3 * HW;
    for (int64_t f = 0; f < HW; ++f) {
      const acc_t dot = wi[f] * gl[f] + wi[HW + f] * gc[f] + wi[2 * HW + f] * gr[f];
      gl[f] = wi[f] * (acc_t(1) - wi[f] * total[f]) * (gl[f] - dot);
      gc[f] = wi[HW + f] * (acc_t(1) - wi[HW + f] * total[f]) * (gc[f] - dot);
      gr[f] = wi[2 * HW + f] * (acc_t(1) - wi[2 * HW + f] * total[f]) * (gr[f] - dot);
    }
  }
  for (int64_t k = 0; k < 3; ++k) {
    const acc_t* __restrict src = gw + k * HW;
    if (!vertical) {
      transpose(src, W, H, image);
      src = image;
    }
    scalar_t* __restrict dst = ga + k * HW;
    for (int64_t o = 0; o < HW; ++o) dst[o] = static_cast<scalar_t>(src[o]);
  }
}

}  // namespace

std::tuple<torch::Tensor, torch::Tensor> propagate_forward(
    const torch::Tensor& x, const torch::Tensor& gates, const torch::Tensor& lam,
    const c10::optional<torch::Tensor>& u, const std::vector<int64_t>& directions, int64_t chunk,
    bool normalize, bool merge, bool save_hidden) {
  const PropagateShape sh = check_propagate_inputs(x, gates, lam, u, directions, chunk, merge);
  TORCH_CHECK(x.device().is_cpu(), "x must be a CPU tensor for the CPU extension, got ",
              x.device());
  const int64_t B = sh.B, C = sh.C, H = sh.H, W = sh.W, D = sh.D, G = sh.G, HW = H * W;
  torch::Tensor out = merge ? at::empty({B, C, H, W}, x.options())
                            : at::empty({B, D, C, H, W}, x.options());
  torch::Tensor hidden = (merge && save_hidden) ? at::empty({B, D, C, H, W}, x.options())
                                                : at::empty({0}, x.options());
  if (out.numel() == 0) return {out, hidden};
  const int64_t cg = C / G;

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, x.scalar_type(), "gspn2_propagate_forward_cpu", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const int64_t nblk = channel_blocks(B, G, cg, D, HW, sizeof(acc_t));
        const int64_t per_blk = (cg + nblk - 1) / nblk;
        const std::unique_ptr<acc_t[]> w =
            all_tap_weights<scalar_t, acc_t>(gates.data_ptr<scalar_t>(), sh, directions, normalize);
        const ForwardOperands<scalar_t, acc_t> op{
            x.data_ptr<scalar_t>(), lam.data_ptr<scalar_t>(),
            merge ? u->data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(),
            hidden.numel() ? hidden.data_ptr<scalar_t>() : nullptr, w.get()};
        at::parallel_for(0, B * G * nblk, grain(per_blk * D * HW), [&](int64_t begin,
                                                                      int64_t end) {
          ForwardScratch<acc_t> scratch(HW, merge ? per_blk : 0, std::max(H, W));
          for (int64_t unit = begin; unit < end; ++unit) {
            forward_block(op, sh, directions, chunk, merge,
                          channel_block(unit, G, cg, nblk, per_blk), scratch);
          }
        });
      });
  return {out, hidden};
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor> propagate_backward(
    const torch::Tensor& grad_out, const torch::Tensor& x, const torch::Tensor& gates,
    const torch::Tensor& lam, const c10::optional<torch::Tensor>& u,
    const torch::Tensor& hidden, const std::vector<int64_t>& directions, int64_t chunk,
    bool normalize, bool merge) {
  const PropagateShape sh = check_propagate_inputs(x, gates, lam, u, directions, chunk, merge);
  TORCH_CHECK(x.device().is_cpu(), "x must be a CPU tensor for the CPU extension, got ",
              x.device());
  const int64_t B = sh.B, C = sh.C, H = sh.H, W = sh.W, D = sh.D, G = sh.G, HW = H * W;
  if (merge) {
    check_like(grad_out, "grad_out", x, {B, C, H, W});
  } else {
    check_like(grad_out, "grad_out", x, {B, D, C, H, W});
  }
  check_like(hidden, "hidden (the saved hidden state; run the forward with save_hidden)", x,
             {B, D, C, H, W});
  torch::Tensor grad_x = at::empty_like(x);
  torch::Tensor grad_gates = at::empty_like(gates);
  torch::Tensor grad_lam = at::empty_like(lam);
  torch::Tensor grad_u = merge ? at::empty_like(*u) : torch::Tensor();
  if (x.numel() == 0) {
    grad_gates.zero_();  // no channels or pixels: the gates receive no gradient
    return {grad_x, grad_gates, grad_lam, grad_u};
  }
  const int64_t cg = C / G;

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, x.scalar_type(), "gspn2_propagate_backward_cpu", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const int64_t nblk = channel_blocks(B, G, cg, D, HW, sizeof(acc_t));
        const int64_t per_blk = (cg + nblk - 1) / nblk;
        const int64_t unit_dw = D * 3 * HW;
        // Weight gradients per (b, g, block), in the frame of each direction. Each work item
        // zeroes its own part (in parallel, warming its cache).
        std::unique_ptr<acc_t[]> partial(new acc_t[B * G * nblk * unit_dw]);
        const std::unique_ptr<acc_t[]> w =
            all_tap_weights<scalar_t, acc_t>(gates.data_ptr<scalar_t>(), sh, directions,
                                             normalize);
        const BackwardOperands<scalar_t, acc_t> op{
            grad_out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), lam.data_ptr<scalar_t>(),
            merge ? u->data_ptr<scalar_t>() : nullptr, hidden.data_ptr<scalar_t>(),
            grad_x.data_ptr<scalar_t>(), grad_lam.data_ptr<scalar_t>(),
            merge ? grad_u.data_ptr<scalar_t>() : nullptr, w.get()};
        at::parallel_for(0, B * G * nblk, grain(per_blk * D * HW), [&](int64_t begin,
                                                                      int64_t end) {
          BackwardScratch<acc_t> scratch(HW, per_blk, std::max(H, W));
          for (int64_t unit = begin; unit < end; ++unit) {
            backward_block(op, sh, directions, chunk, merge,
                           channel_block(unit, G, cg, nblk, per_blk),
                           partial.get() + unit * unit_dw, scratch);
          }
        });
        scalar_t* ggp = grad_gates.data_ptr<scalar_t>();
        at::parallel_for(0, B * D * G, grain(3 * HW), [&](int64_t begin, int64_t end) {
          std::vector<acc_t> gw(3 * HW), image(HW);
          for (int64_t item = begin; item < end; ++item) {
            const int64_t b = item / (D * G), di = item / G % D, g = item % G;
            gate_gradients(partial.get() + (b * G + g) * nblk * unit_dw + di * 3 * HW, nblk,
                           unit_dw, w.get() + item * kWeightPlanes * HW, directions[di], H, W,
                           normalize, ggp + item * 3 * HW, gw.data(), image.data());
          }
        });
      });
  return {grad_x, grad_gates, grad_lam, grad_u};
}

std::string kernel_isa() {
#if GSPN2_MULTIVERSION
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3";
#endif
  return "baseline";
}

}  // namespace cpu
}  // namespace gspn2
