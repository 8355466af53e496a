// CPU kernels of the GSPN-2 line-scan propagation (SPEC section 1, docs/ops.md).
//
// Every scan runs in a "frame" where its lines are contiguous rows: the vertical directions
// scan an H x W plane as stored; the horizontal directions scan the transposed W x H plane
// (left_right top to bottom, right_left bottom to top). Per channel and direction, one pass
// prepares the scan's input plane in the frame (z = lam * x forward, the direct gradient
// u * dL/dy backward; transposed in cache-sized tiles for the horizontal directions), the
// scan runs over it, and an element-wise pass in image layout finishes the work (storing h and
// merging u * h forward; dL/dlam, dL/dx, dL/du backward). Each scan step updates one line
// through padded line buffers, so the loop over the line has no branches and vectorises.
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

namespace gspn2 {
namespace cpu {
namespace {

bool is_vertical(int64_t direction) { return direction == kTopDown || direction == kBottomUp; }

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
void transpose(const T* __restrict src, int64_t rows, int64_t cols, T* __restrict dst) {
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

// frame (the scan's layout for a direction) = value(o) over the H x W image positions o;
// the horizontal directions go through `image` (H x W scratch) and a transpose.
template <typename acc_t, typename F>
void to_frame(bool vertical, int64_t H, int64_t W, acc_t* __restrict frame,
              acc_t* __restrict image, F&& value) {
  acc_t* __restrict dst = vertical ? frame : image;
  for (int64_t o = 0; o < H * W; ++o) dst[o] = value(o);
  if (!vertical) transpose(image, H, W, frame);
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
void tap_weights(const scalar_t* __restrict a, int64_t H, int64_t W, bool vertical,
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

// Forward scan of one channel in one direction, in its frame: h_s = z_s + W_s h_{s-1}.
// prev and cur are line buffers of n + 2.
template <typename acc_t>
void scan_forward(const Geometry& g, int64_t HW, int64_t chunk, const acc_t* __restrict z,
                  const acc_t* __restrict w, acc_t* __restrict h, acc_t* prev, acc_t* cur) {
  const int64_t n = g.n;
  const acc_t* __restrict wl = w;
  const acc_t* __restrict wc = w + HW;
  const acc_t* __restrict wr = w + 2 * HW;
  prev[0] = prev[n + 1] = cur[0] = cur[n + 1] = acc_t(0);
  for (int64_t s = 0; s < g.steps; ++s) {
    if (restarts(s, chunk)) std::fill(prev + 1, prev + n + 1, acc_t(0));
    const int64_t row = g.base + s * g.step_stride;
    const acc_t* __restrict hp = prev;
    acc_t* __restrict hc = cur;
    for (int64_t p = 0; p < n; ++p) {
      const int64_t o = row + p;
      const acc_t v = z[o] + wl[o] * hp[p] + wc[o] * hp[p + 1] + wr[o] * hp[p + 2];
      hc[p + 1] = v;
      h[o] = v;
    }
    std::swap(prev, cur);
  }
}

// Reverse scan of one channel in one direction, in its frame. direct is the gradient that
// reaches h_s from the output; h the saved hidden state. Writes e = dL/dh (all paths) and
// accumulates dL/dw into dw (3 planes). Line buffers carry, e_line, hp, el, er are n + 2.
template <typename h_t, typename acc_t>
void scan_backward(const Geometry& g, int64_t HW, int64_t chunk,
                   const acc_t* __restrict direct, const h_t* __restrict h,
                   const acc_t* __restrict w, acc_t* __restrict e, acc_t* __restrict dw,
                   acc_t* __restrict carry, acc_t* __restrict e_line, acc_t* __restrict hp,
                   acc_t* __restrict el, acc_t* __restrict er) {
  const int64_t n = g.n;
  const acc_t* __restrict wl = w;
  const acc_t* __restrict wc = w + HW;
  const acc_t* __restrict wr = w + 2 * HW;
  acc_t* __restrict dwl = dw;
  acc_t* __restrict dwc = dw + HW;
  acc_t* __restrict dwr = dw + 2 * HW;
  std::fill(carry, carry + n + 2, acc_t(0));
  e_line[0] = e_line[n + 1] = hp[0] = hp[n + 1] = acc_t(0);
  el[0] = el[n + 1] = er[0] = er[n + 1] = acc_t(0);
  for (int64_t s = g.steps - 1; s >= 0; --s) {
    const int64_t row = g.base + s * g.step_stride;
    if (restarts(s, chunk)) {
      // h_{s-1} does not feed step s: nothing flows further back.
      for (int64_t p = 0; p < n; ++p) {
        e[row + p] = direct[row + p] + carry[p + 1];
        carry[p + 1] = acc_t(0);
      }
      continue;
    }
    const int64_t prev_row = row - g.step_stride;
    for (int64_t p = 0; p < n; ++p) hp[p + 1] = static_cast<acc_t>(h[prev_row + p]);
    // e_s = dL/dh_s: the direct gradient plus what step s + 1 sent back (carry).
    for (int64_t p = 0; p < n; ++p) {
      const int64_t o = row + p;
      const acc_t ev = direct[o] + carry[p + 1];
      e[o] = ev;
      e_line[p + 1] = ev;
      dwl[o] += ev * hp[p];
      dwc[o] += ev * hp[p + 1];
      dwr[o] += ev * hp[p + 2];
      el[p + 1] = wl[o] * ev;
      er[p + 1] = wr[o] * ev;
    }
    // dL/dh_{s-1}[p] = w_l[p+1] e[p+1] + w_c[p] e[p] + w_r[p-1] e[p-1].
    for (int64_t p = 0; p < n; ++p) {
      carry[p + 1] = el[p + 2] + wc[row + p] * e_line[p + 1] + er[p];
    }
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
        const scalar_t* xp = x.data_ptr<scalar_t>();
        const scalar_t* lp = lam.data_ptr<scalar_t>();
        const scalar_t* up = merge ? u->data_ptr<scalar_t>() : nullptr;
        scalar_t* op = out.data_ptr<scalar_t>();
        scalar_t* hidp = hidden.numel() ? hidden.data_ptr<scalar_t>() : nullptr;
        const int64_t nblk = channel_blocks(B, G, cg, D, HW, sizeof(acc_t));
        const int64_t per_blk = (cg + nblk - 1) / nblk;
        const std::unique_ptr<acc_t[]> w =
            all_tap_weights<scalar_t, acc_t>(gates.data_ptr<scalar_t>(), sh, directions, normalize);
        at::parallel_for(0, B * G * nblk, grain(per_blk * D * HW), [&](int64_t begin,
                                                                      int64_t end) {
          const int64_t n_max = std::max(H, W);
          // z and h in the frame, h in image layout, the merge accumulators of the block.
          std::vector<acc_t> z(HW), h_frame(HW), h_image(HW), acc(merge ? per_blk * HW : 0);
          std::vector<acc_t> lines(2 * (n_max + 2));
          for (int64_t unit = begin; unit < end; ++unit) {
            const auto [b, g, c0, c1] = channel_block(unit, G, cg, nblk, per_blk);
            std::fill(acc.begin(), acc.end(), acc_t(0));
            for (int64_t di = 0; di < D; ++di) {
              const bool vertical = is_vertical(directions[di]);
              const Geometry geo = frame_geometry(directions[di], H, W);
              const acc_t* wd = w.get() + ((b * D + di) * G + g) * kWeightPlanes * HW;
              for (int64_t c = c0; c < c1; ++c) {
                const int64_t plane = ((b * D + di) * C + c) * HW;
                const scalar_t* __restrict xc = xp + (b * C + c) * HW;
                const scalar_t* __restrict lc = lp + plane;
                to_frame(vertical, H, W, z.data(), h_image.data(), [&](int64_t o) {
                  return static_cast<acc_t>(lc[o]) * static_cast<acc_t>(xc[o]);
                });
                scan_forward(geo, HW, chunk, z.data(), wd, h_frame.data(), lines.data(),
                             lines.data() + n_max + 2);
                const acc_t* __restrict hv = h_frame.data();
                if (!vertical) {
                  transpose(hv, W, H, h_image.data());
                  hv = h_image.data();
                }
                scalar_t* __restrict h_store = merge ? (hidp ? hidp + plane : nullptr) : op + plane;
                if (h_store != nullptr) {
                  for (int64_t o = 0; o < HW; ++o) h_store[o] = static_cast<scalar_t>(hv[o]);
                }
                if (merge) {
                  const scalar_t* __restrict uc = up + plane;
                  acc_t* __restrict a = acc.data() + (c - c0) * HW;
                  for (int64_t o = 0; o < HW; ++o) a[o] += static_cast<acc_t>(uc[o]) * hv[o];
                }
              }
            }
            if (!merge) continue;
            for (int64_t c = c0; c < c1; ++c) {
              const acc_t* a = acc.data() + (c - c0) * HW;
              scalar_t* y = op + (b * C + c) * HW;
              for (int64_t o = 0; o < HW; ++o) y[o] = static_cast<scalar_t>(a[o]);
            }
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
        const scalar_t* gop = grad_out.data_ptr<scalar_t>();
        const scalar_t* xp = x.data_ptr<scalar_t>();
        const scalar_t* ap = gates.data_ptr<scalar_t>();
        const scalar_t* lp = lam.data_ptr<scalar_t>();
        const scalar_t* up = merge ? u->data_ptr<scalar_t>() : nullptr;
        const scalar_t* hp = hidden.data_ptr<scalar_t>();
        scalar_t* gxp = grad_x.data_ptr<scalar_t>();
        scalar_t* glp = grad_lam.data_ptr<scalar_t>();
        scalar_t* gup = merge ? grad_u.data_ptr<scalar_t>() : nullptr;
        const std::unique_ptr<acc_t[]> w =
            all_tap_weights<scalar_t, acc_t>(ap, sh, directions, normalize);

        at::parallel_for(0, B * G * nblk, grain(per_blk * D * HW), [&](int64_t begin,
                                                                      int64_t end) {
          const int64_t n_max = std::max(H, W), pad = n_max + 2;
          // The direct gradient and e = dL/dh in the frame, e in image layout, h in the frame,
          // dL/dx of the block.
          std::vector<acc_t> direct(HW), e_frame(HW), e_image(HW), h_frame(HW),
              gx(per_blk * HW);
          std::vector<acc_t> lines(5 * pad);
          for (int64_t unit = begin; unit < end; ++unit) {
            const auto [b, g, c0, c1] = channel_block(unit, G, cg, nblk, per_blk);
            acc_t* dw = partial.get() + unit * unit_dw;
            std::fill(dw, dw + unit_dw, acc_t(0));
            std::fill(gx.begin(), gx.end(), acc_t(0));
            for (int64_t di = 0; di < D; ++di) {
              const bool vertical = is_vertical(directions[di]);
              const Geometry geo = frame_geometry(directions[di], H, W);
              const acc_t* wd = w.get() + ((b * D + di) * G + g) * kWeightPlanes * HW;
              for (int64_t c = c0; c < c1; ++c) {
                const int64_t plane = ((b * D + di) * C + c) * HW;
                const scalar_t* __restrict goc = gop + (merge ? (b * C + c) * HW : plane);
                const scalar_t* __restrict uc = merge ? up + plane : nullptr;
                const scalar_t* __restrict hc = hp + plane;
                if (merge) {
                  // The direct gradient u * dL/dy, and on the way dL/du = dL/dy * h.
                  scalar_t* __restrict guc = gup + plane;
                  to_frame(vertical, H, W, direct.data(), e_image.data(), [&](int64_t o) {
                    const acc_t go = static_cast<acc_t>(goc[o]);
                    guc[o] = static_cast<scalar_t>(go * static_cast<acc_t>(hc[o]));
                    return static_cast<acc_t>(uc[o]) * go;
                  });
                } else {
                  to_frame(vertical, H, W, direct.data(), e_image.data(),
                           [&](int64_t o) { return static_cast<acc_t>(goc[o]); });
                }
                acc_t* l = lines.data();
                if (vertical) {
                  scan_backward(geo, HW, chunk, direct.data(), hc, wd, e_frame.data(),
                                dw + di * 3 * HW, l, l + pad, l + 2 * pad, l + 3 * pad,
                                l + 4 * pad);
                } else {
                  to_frame(false, H, W, h_frame.data(), e_image.data(),
                           [&](int64_t o) { return static_cast<acc_t>(hc[o]); });
                  scan_backward(geo, HW, chunk, direct.data(), h_frame.data(), wd,
                                e_frame.data(), dw + di * 3 * HW, l, l + pad, l + 2 * pad,
                                l + 3 * pad, l + 4 * pad);
                }
                const acc_t* __restrict e = e_frame.data();
                if (!vertical) {
                  transpose(e_frame.data(), W, H, e_image.data());
                  e = e_image.data();
                }
                // dL/dlam = e * x, dL/dx += e * lam.
                const scalar_t* __restrict xc = xp + (b * C + c) * HW;
                const scalar_t* __restrict lc = lp + plane;
                scalar_t* __restrict glc = glp + plane;
                acc_t* __restrict gxc = gx.data() + (c - c0) * HW;
                for (int64_t o = 0; o < HW; ++o) {
                  glc[o] = static_cast<scalar_t>(e[o] * static_cast<acc_t>(xc[o]));
                  gxc[o] += e[o] * static_cast<acc_t>(lc[o]);
                }
              }
            }
            for (int64_t c = c0; c < c1; ++c) {
              const acc_t* gxc = gx.data() + (c - c0) * HW;
              scalar_t* out_c = gxp + (b * C + c) * HW;
              for (int64_t o = 0; o < HW; ++o) out_c[o] = static_cast<scalar_t>(gxc[o]);
            }
          }
        });

        // Gate gradients, in the frame of each direction: sum the channel blocks in order,
        // drop the taps whose neighbour is outside the line, go through the normalisation,
        // and write in image layout.
        scalar_t* ggp = grad_gates.data_ptr<scalar_t>();
        at::parallel_for(0, B * D * G, grain(3 * HW), [&](int64_t begin, int64_t end) {
          std::vector<acc_t> gw(3 * HW), image(HW);
          for (int64_t item = begin; item < end; ++item) {
            const int64_t b = item / (D * G), di = item / G % D, g = item % G;
            const bool vertical = is_vertical(directions[di]);
            const Geometry geo = frame_geometry(directions[di], H, W);
            const acc_t* part = partial.get() + (b * G + g) * nblk * unit_dw + di * 3 * HW;
            std::copy(part, part + 3 * HW, gw.begin());
            for (int64_t blk = 1; blk < nblk; ++blk) {
              const acc_t* __restrict pb = part + blk * unit_dw;
              acc_t* __restrict sum = gw.data();
              for (int64_t f = 0; f < 3 * HW; ++f) sum[f] += pb[f];
            }
            acc_t* __restrict gl = gw.data();
            acc_t* __restrict gc = gw.data() + HW;
            acc_t* __restrict gr = gw.data() + 2 * HW;
            for (int64_t line = 0; line < geo.steps; ++line) {
              gl[line * geo.n] = acc_t(0);
              gr[line * geo.n + geo.n - 1] = acc_t(0);
            }
            if (normalize) {
              // w_k = s_k / S: dL/da_k = s_k (1 - s_k) (g_k - sum_m w_m g_m) / S
              //                      = w_k (1 - w_k S) (g_k - sum_m w_m g_m); w_k = 0 on
              // the taps outside the line.
              const acc_t* __restrict wi = w.get() + item * kWeightPlanes * HW;
              const acc_t* __restrict total = wi + 3 * HW;
              for (int64_t f = 0; f < HW; ++f) {
                const acc_t dot = wi[f] * gl[f] + wi[HW + f] * gc[f] + wi[2 * HW + f] * gr[f];
                gl[f] = wi[f] * (acc_t(1) - wi[f] * total[f]) * (gl[f] - dot);
                gc[f] = wi[HW + f] * (acc_t(1) - wi[HW + f] * total[f]) * (gc[f] - dot);
                gr[f] = wi[2 * HW + f] * (acc_t(1) - wi[2 * HW + f] * total[f]) * (gr[f] - dot);
              }
            }
            scalar_t* ga = ggp + item * 3 * HW;
            for (int64_t k = 0; k < 3; ++k) {
              const acc_t* __restrict src = gw.data() + k * HW;
              if (!vertical) {
                transpose(src, W, H, image.data());
                src = image.data();
              }
              scalar_t* __restrict dst = ga + k * HW;
              for (int64_t o = 0; o < HW; ++o) dst[o] = static_cast<scalar_t>(src[o]);
            }
          }
        });
      });
  return {grad_x, grad_gates, grad_lam, grad_u};
}

}  // namespace cpu
}  // namespace gspn2
