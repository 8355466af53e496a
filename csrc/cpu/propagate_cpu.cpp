// CPU kernels of the GSPN-2 line-scan propagation (SPEC section 1, docs/ops.md).
//
// Every scan runs in a "frame" where its lines are contiguous rows: the vertical directions
// scan an H x W plane as stored; the horizontal directions scan the transposed W x H plane
// (left_right top to bottom, right_left bottom to top), their inputs being transposed into
// per-thread scratch planes in cache-sized tiles and their outputs transposed back. Each step
// updates one line through padded line buffers, so the loop over the line has no branches and
// vectorises.
//
// The normalised tap weights of every (b, d, g) are computed once, in the frame of d, into a
// scratch buffer shared by the channels of the group. The forward runs one (b, c) per work
// item, scanning every direction and merging, so it needs no reduction.
//
// Backward: a reverse scan per channel and direction; the weight gradients of a block of
// channels are summed in a fixed order into a per-block buffer, and a second pass sums the
// blocks in a fixed order and applies the Jacobian of the normalisation. The blocks depend on
// the shapes only, so results do not depend on the number of threads or on scheduling.
#include "cpu/propagate_cpu.h"

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <memory>

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

// dst (cols x rows) = src (rows x cols) transposed; with kAccumulate, dst += instead.
template <bool kAccumulate = false, typename in_t, typename out_t>
void transpose_plane(const in_t* __restrict src, int64_t rows, int64_t cols,
                     out_t* __restrict dst) {
  constexpr int64_t kTile = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    const int64_t r1 = std::min(rows, r0 + kTile);
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t c1 = std::min(cols, c0 + kTile);
      for (int64_t c = c0; c < c1; ++c) {
        for (int64_t r = r0; r < r1; ++r) {
          const out_t v = static_cast<out_t>(src[r * cols + c]);
          if (kAccumulate) {
            dst[c * rows + r] += v;
          } else {
            dst[c * rows + r] = v;
          }
        }
      }
    }
  }
}

// Grain of at::parallel_for: small problems run on the calling thread.
int64_t grain(int64_t work_per_item) {
  constexpr int64_t kMinWorkPerTask = int64_t(1) << 15;
  return std::max<int64_t>(1, kMinWorkPerTask / std::max<int64_t>(1, work_per_item));
}

bool restarts(int64_t s, int64_t chunk) { return s == 0 || (chunk > 0 && s % chunk == 0); }

template <typename acc_t>
inline acc_t sigmoid(acc_t v) {
  return acc_t(1) / (acc_t(1) + std::exp(-v));
}

// Calls f(std::true_type{}) or f(std::false_type{}): a runtime flag as a template constant.
template <typename F>
void dispatch_bool(bool flag, F&& f) {
  if (flag) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

// Planes of the tap-weight scratch of one (b, d, g), in the frame of d: w_{-1}, w_0, w_{+1}
// and the normaliser S = sum of the valid sigmoids (which the backward needs).
constexpr int64_t kWeightPlanes = 4;

// Normalised (or given) tap weights of one (b, d, g) from its gates a (3, H, W); invalid taps
// get 0.
template <typename scalar_t, typename acc_t>
void tap_weights(const scalar_t* a, int64_t H, int64_t W, bool vertical, bool normalize,
                 acc_t* w) {
  const int64_t HW = H * W;
  const int64_t n = vertical ? W : H;
  for (int64_t i = 0; i < H; ++i) {
    for (int64_t j = 0; j < W; ++j) {
      const int64_t o = i * W + j;
      const int64_t f = vertical ? o : j * H + i;
      const int64_t p = vertical ? j : i;
      const bool left = p > 0, right = p < n - 1;
      acc_t wl = left ? static_cast<acc_t>(a[o]) : acc_t(0);
      acc_t wc = static_cast<acc_t>(a[HW + o]);
      acc_t wr = right ? static_cast<acc_t>(a[2 * HW + o]) : acc_t(0);
      acc_t total = acc_t(1);
      if (normalize) {
        wl = left ? sigmoid(wl) : acc_t(0);
        wc = sigmoid(wc);
        wr = right ? sigmoid(wr) : acc_t(0);
        total = wl + wc + wr;
        const acc_t inv = acc_t(1) / total;
        wl *= inv;
        wc *= inv;
        wr *= inv;
      }
      w[f] = wl;
      w[HW + f] = wc;
      w[2 * HW + f] = wr;
      w[3 * HW + f] = total;
    }
  }
}

// Tap weights of every (b, d, g): (B, D, G, kWeightPlanes, HW) in the accumulation type.
template <typename scalar_t, typename acc_t>
std::vector<acc_t> all_tap_weights(const scalar_t* gates, const PropagateShape& sh,
                                   const std::vector<int64_t>& directions, bool normalize) {
  const int64_t HW = sh.H * sh.W, per_item = kWeightPlanes * HW;
  std::vector<acc_t> w(sh.B * sh.D * sh.G * per_item);
  at::parallel_for(0, sh.B * sh.D * sh.G, grain(per_item), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t di = item / sh.G % sh.D;
      tap_weights(gates + item * 3 * HW, sh.H, sh.W, is_vertical(directions[di]), normalize,
                  w.data() + item * per_item);
    }
  });
  return w;
}

// Forward scan of one channel in one direction, in its frame. With kStore, h_out receives h;
// with kMerge, acc += u * h. prev and cur are line buffers of n + 2.
template <bool kStore, bool kMerge, typename scalar_t, typename acc_t>
void scan_forward(const Geometry& g, int64_t HW, int64_t chunk, const scalar_t* __restrict x,
                  const scalar_t* __restrict lam, const acc_t* __restrict w,
                  scalar_t* __restrict h_out, const scalar_t* __restrict u,
                  acc_t* __restrict acc, acc_t* prev, acc_t* cur) {
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
      const acc_t v = static_cast<acc_t>(lam[o]) * static_cast<acc_t>(x[o]) + wl[o] * hp[p] +
                      wc[o] * hp[p + 1] + wr[o] * hp[p + 2];
      hc[p + 1] = v;
      if (kStore) h_out[o] = static_cast<scalar_t>(v);
      if (kMerge) acc[o] += static_cast<acc_t>(u[o]) * v;
    }
    std::swap(prev, cur);
  }
}

// Reverse scan of one channel in one direction, in its frame. grad_out is dL/dy (kMerge) or
// dL/dh_d; h is the saved hidden state of this direction. Writes grad_lam (and grad_u with
// kMerge), accumulates dL/dx into gx and dL/dw into dw (3 planes). Line buffers carry, e, hp,
// el, er are n + 2 long.
template <bool kMerge, typename scalar_t, typename acc_t>
void scan_backward(const Geometry& g, int64_t HW, int64_t chunk,
                   const scalar_t* __restrict grad_out, const scalar_t* __restrict x,
                   const scalar_t* __restrict lam, const scalar_t* __restrict u,
                   const scalar_t* __restrict h, const acc_t* __restrict w,
                   scalar_t* __restrict grad_lam, scalar_t* __restrict grad_u,
                   acc_t* __restrict gx, acc_t* __restrict dw, acc_t* __restrict carry,
                   acc_t* __restrict e, acc_t* __restrict hp, acc_t* __restrict el,
                   acc_t* __restrict er) {
  const int64_t n = g.n;
  const acc_t* __restrict wl = w;
  const acc_t* __restrict wc = w + HW;
  const acc_t* __restrict wr = w + 2 * HW;
  acc_t* __restrict dwl = dw;
  acc_t* __restrict dwc = dw + HW;
  acc_t* __restrict dwr = dw + 2 * HW;
  std::fill(carry, carry + n + 2, acc_t(0));
  e[0] = e[n + 1] = hp[0] = hp[n + 1] = el[0] = el[n + 1] = er[0] = er[n + 1] = acc_t(0);
  for (int64_t s = g.steps - 1; s >= 0; --s) {
    const int64_t row = g.base + s * g.step_stride;
    if (restarts(s, chunk)) {
      // h_{s-1} does not feed step s: only the direct terms, and nothing flows back.
      for (int64_t p = 0; p < n; ++p) {
        const int64_t o = row + p;
        const acc_t go = static_cast<acc_t>(grad_out[o]);
        const acc_t ev = (kMerge ? static_cast<acc_t>(u[o]) * go : go) + carry[p + 1];
        gx[o] += ev * static_cast<acc_t>(lam[o]);
        grad_lam[o] = static_cast<scalar_t>(ev * static_cast<acc_t>(x[o]));
        if (kMerge) grad_u[o] = static_cast<scalar_t>(go * static_cast<acc_t>(h[o]));
        carry[p + 1] = acc_t(0);
      }
      continue;
    }
    const int64_t prev_row = row - g.step_stride;
    for (int64_t p = 0; p < n; ++p) hp[p + 1] = static_cast<acc_t>(h[prev_row + p]);
    // e_s = dL/dh_s: the direct gradient plus what step s + 1 sent back (carry).
    for (int64_t p = 0; p < n; ++p) {
      const int64_t o = row + p;
      const acc_t go = static_cast<acc_t>(grad_out[o]);
      const acc_t ev = (kMerge ? static_cast<acc_t>(u[o]) * go : go) + carry[p + 1];
      e[p + 1] = ev;
      gx[o] += ev * static_cast<acc_t>(lam[o]);
      grad_lam[o] = static_cast<scalar_t>(ev * static_cast<acc_t>(x[o]));
      if (kMerge) grad_u[o] = static_cast<scalar_t>(go * static_cast<acc_t>(h[o]));
      dwl[o] += ev * hp[p];
      dwc[o] += ev * hp[p + 1];
      dwr[o] += ev * hp[p + 2];
      el[p + 1] = wl[o] * ev;
      er[p + 1] = wr[o] * ev;
    }
    // dL/dh_{s-1}[p] = w_l[p+1] e[p+1] + w_c[p] e[p] + w_r[p-1] e[p-1].
    for (int64_t p = 0; p < n; ++p) {
      carry[p + 1] = el[p + 2] + wc[row + p] * e[p + 1] + er[p];
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
  const bool any_horizontal = std::any_of(directions.begin(), directions.end(),
                                          [](int64_t d) { return !is_vertical(d); });

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, x.scalar_type(), "gspn2_propagate_forward_cpu", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const scalar_t* xp = x.data_ptr<scalar_t>();
        const scalar_t* lp = lam.data_ptr<scalar_t>();
        const scalar_t* up = merge ? u->data_ptr<scalar_t>() : nullptr;
        scalar_t* op = out.data_ptr<scalar_t>();
        scalar_t* hidp = hidden.numel() ? hidden.data_ptr<scalar_t>() : nullptr;
        const std::vector<acc_t> w =
            all_tap_weights<scalar_t, acc_t>(gates.data_ptr<scalar_t>(), sh, directions, normalize);
        at::parallel_for(0, B * C, grain(D * HW), [&](int64_t begin, int64_t end) {
          const int64_t n_max = std::max(H, W);
          // Frame scratch of the horizontal directions: x, lam, u, h (transposed) and the
          // transposed merge accumulator.
          const int64_t frame = any_horizontal ? HW : 0;
          std::vector<scalar_t> x_t(frame), lam_t(frame), u_t(merge ? frame : 0), h_t(frame);
          std::vector<acc_t> acc(merge ? HW : 0), acc_frame(merge ? frame : 0);
          std::vector<acc_t> lines(2 * (n_max + 2));
          for (int64_t bc = begin; bc < end; ++bc) {
            const int64_t b = bc / C, c = bc % C, g = c / cg;
            const scalar_t* x_plane = xp + bc * HW;
            bool have_x_t = false;
            if (merge) {
              std::fill(acc.begin(), acc.end(), acc_t(0));
              std::fill(acc_frame.begin(), acc_frame.end(), acc_t(0));
            }
            for (int64_t di = 0; di < D; ++di) {
              const bool vertical = is_vertical(directions[di]);
              const Geometry geo = frame_geometry(directions[di], H, W);
              const int64_t plane = ((b * D + di) * C + c) * HW;
              scalar_t* h_plane = merge ? (hidp ? hidp + plane : nullptr) : op + plane;
              const scalar_t* xs = x_plane;
              const scalar_t* ls = lp + plane;
              const scalar_t* us = merge ? up + plane : nullptr;
              scalar_t* hs = h_plane;
              acc_t* as = merge ? acc.data() : nullptr;
              if (!vertical) {
                if (!have_x_t) transpose_plane(x_plane, H, W, x_t.data());
                have_x_t = true;
                transpose_plane(lp + plane, H, W, lam_t.data());
                if (merge) transpose_plane(up + plane, H, W, u_t.data());
                xs = x_t.data();
                ls = lam_t.data();
                us = merge ? u_t.data() : nullptr;
                hs = h_plane ? h_t.data() : nullptr;
                as = merge ? acc_frame.data() : nullptr;
              }
              const acc_t* wd = w.data() + ((b * D + di) * G + g) * kWeightPlanes * HW;
              dispatch_bool(hs != nullptr, [&](auto store) {
                dispatch_bool(merge, [&](auto merged) {
                  scan_forward<decltype(store)::value, decltype(merged)::value>(
                      geo, HW, chunk, xs, ls, wd, hs, us, as, lines.data(),
                      lines.data() + n_max + 2);
                });
              });
              if (!vertical && h_plane) transpose_plane(h_t.data(), W, H, h_plane);
            }
            if (merge) {
              if (any_horizontal) transpose_plane<true>(acc_frame.data(), W, H, acc.data());
              scalar_t* y = op + bc * HW;
              for (int64_t o = 0; o < HW; ++o) y[o] = static_cast<scalar_t>(acc[o]);
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
  torch::Tensor grad_gates = at::zeros_like(gates);
  torch::Tensor grad_lam = at::empty_like(lam);
  torch::Tensor grad_u = merge ? at::empty_like(*u) : torch::Tensor();
  if (x.numel() == 0) return {grad_x, grad_gates, grad_lam, grad_u};
  const int64_t cg = C / G;
  const bool any_horizontal = std::any_of(directions.begin(), directions.end(),
                                          [](int64_t d) { return !is_vertical(d); });

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
        const std::vector<acc_t> w = all_tap_weights<scalar_t, acc_t>(ap, sh, directions, normalize);

        at::parallel_for(0, B * G * nblk, grain(per_blk * D * HW), [&](int64_t begin,
                                                                      int64_t end) {
          const int64_t n_max = std::max(H, W), pad = n_max + 2;
          const int64_t frame = any_horizontal ? HW : 0;
          std::vector<scalar_t> x_t(frame), go_t(frame), lam_t(frame), u_t(merge ? frame : 0),
              h_t(frame), glam_t(frame), gu_t(merge ? frame : 0);
          std::vector<acc_t> gx(HW), gx_t(frame), lines(5 * pad);
          for (int64_t unit = begin; unit < end; ++unit) {
            const int64_t b = unit / (G * nblk), g = unit / nblk % G, blk = unit % nblk;
            acc_t* dw = partial.get() + unit * unit_dw;
            std::fill(dw, dw + unit_dw, acc_t(0));
            const int64_t c0 = g * cg + blk * per_blk;
            const int64_t c1 = std::min(g * cg + cg, c0 + per_blk);
            for (int64_t c = c0; c < c1; ++c) {
              const scalar_t* x_plane = xp + (b * C + c) * HW;
              bool have_x_t = false, have_go_t = false;
              std::fill(gx.begin(), gx.end(), acc_t(0));
              std::fill(gx_t.begin(), gx_t.end(), acc_t(0));
              for (int64_t di = 0; di < D; ++di) {
                const bool vertical = is_vertical(directions[di]);
                const Geometry geo = frame_geometry(directions[di], H, W);
                const int64_t plane = ((b * D + di) * C + c) * HW;
                const scalar_t* go_plane = gop + (merge ? (b * C + c) * HW : plane);
                const scalar_t* gos = go_plane;
                const scalar_t* xs = x_plane;
                const scalar_t* ls = lp + plane;
                const scalar_t* us = merge ? up + plane : nullptr;
                const scalar_t* hs = hp + plane;
                scalar_t* gls = glp + plane;
                scalar_t* gus = merge ? gup + plane : nullptr;
                acc_t* gxs = gx.data();
                if (!vertical) {
                  if (!have_x_t) transpose_plane(x_plane, H, W, x_t.data());
                  have_x_t = true;
                  // Merged, every direction shares the gradient of y.
                  if (!(merge && have_go_t)) transpose_plane(go_plane, H, W, go_t.data());
                  have_go_t = true;
                  transpose_plane(lp + plane, H, W, lam_t.data());
                  if (merge) transpose_plane(up + plane, H, W, u_t.data());
                  transpose_plane(hp + plane, H, W, h_t.data());
                  gos = go_t.data();
                  xs = x_t.data();
                  ls = lam_t.data();
                  us = merge ? u_t.data() : nullptr;
                  hs = h_t.data();
                  gls = glam_t.data();
                  gus = merge ? gu_t.data() : nullptr;
                  gxs = gx_t.data();
                }
                const acc_t* wd = w.data() + ((b * D + di) * G + g) * kWeightPlanes * HW;
                acc_t* l = lines.data();
                dispatch_bool(merge, [&](auto merged) {
                  scan_backward<decltype(merged)::value>(
                      geo, HW, chunk, gos, xs, ls, us, hs, wd, gls, gus, gxs, dw + di * 3 * HW,
                      l, l + pad, l + 2 * pad, l + 3 * pad, l + 4 * pad);
                });
                if (!vertical) {
                  transpose_plane(glam_t.data(), W, H, glp + plane);
                  if (merge) transpose_plane(gu_t.data(), W, H, gup + plane);
                }
              }
              if (any_horizontal) transpose_plane<true>(gx_t.data(), W, H, gx.data());
              scalar_t* gxc = gxp + (b * C + c) * HW;
              for (int64_t o = 0; o < HW; ++o) gxc[o] = static_cast<scalar_t>(gx[o]);
            }
          }
        });

        // Gate gradients: sum the channel blocks in order, then go through the normalisation.
        scalar_t* ggp = grad_gates.data_ptr<scalar_t>();
        at::parallel_for(0, B * D * G, grain(3 * HW), [&](int64_t begin, int64_t end) {
          for (int64_t item = begin; item < end; ++item) {
            const int64_t b = item / (D * G), di = item / G % D, g = item % G;
            const bool vertical = is_vertical(directions[di]);
            const int64_t n = vertical ? W : H;
            scalar_t* ga = ggp + item * 3 * HW;
            const acc_t* part = partial.get() + (b * G + g) * nblk * unit_dw + di * 3 * HW;
            const acc_t* wi = w.data() + item * kWeightPlanes * HW;
            for (int64_t o = 0; o < HW; ++o) {
              const int64_t i = o / W, j = o % W;
              const int64_t f = vertical ? o : j * H + i;  // index in the frame of d
              const int64_t p = vertical ? j : i;
              const bool valid[3] = {p > 0, true, p < n - 1};
              acc_t gw[3];
              for (int k = 0; k < 3; ++k) {
                acc_t sum = acc_t(0);
                for (int64_t blk = 0; blk < nblk; ++blk) sum += part[blk * unit_dw + k * HW + f];
                gw[k] = valid[k] ? sum : acc_t(0);
              }
              if (!normalize) {
                for (int k = 0; k < 3; ++k) ga[k * HW + o] = static_cast<scalar_t>(gw[k]);
                continue;
              }
              // w_k = s_k / S: dL/da_k = s_k (1 - s_k) (g_k - sum_m w_m g_m) / S
              //                      = w_k (1 - w_k S) (g_k - sum_m w_m g_m) on valid taps.
              const acc_t total = wi[3 * HW + f];
              acc_t dot = acc_t(0);
              for (int k = 0; k < 3; ++k) dot += wi[k * HW + f] * gw[k];
              for (int k = 0; k < 3; ++k) {
                const acc_t wk = wi[k * HW + f];
                const acc_t da = valid[k] ? wk * (acc_t(1) - wk * total) * (gw[k] - dot)
                                          : acc_t(0);
                ga[k * HW + o] = static_cast<scalar_t>(da);
              }
            }
          }
        });
      });
  return {grad_x, grad_gates, grad_lam, grad_u};
}

}  // namespace cpu
}  // namespace gspn2
