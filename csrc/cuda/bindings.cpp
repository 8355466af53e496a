// Python bindings of the fused GSPN-2 CUDA kernels: the contract of gspn2_common.h.
//
// This file validates, allocates and packs; the line and plane kernels are launched from
// propagate_kernels.cuh (their pieces are listed there), the one-pass local and small-plane scans
// from scan_launch.cpp (propagate_local.cu, propagate_small.cu).
#include <c10/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "cuda/dispatch.h"
#include "cuda/layer_norm.h"
#include "cuda/propagate.h"
#include "cuda/scan_launch.h"
#include "cuda/transposed_split.h"
#include "gspn2_common.h"

namespace gspn2 {
namespace cuda {
namespace {

static_assert(kTopDownId == kTopDown && kBottomUpId == kBottomUp &&
                  kLeftRightId == kLeftRight && kRightLeftId == kRightLeft,
              "direction ids of propagate.h must match gspn2::Direction");

constexpr int64_t kTargetThreads = kShortThreads;  // CTA size aimed at when packing channels

bool aligned(const void* ptr, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % static_cast<uintptr_t>(bytes) == 0;
}

// When the plane mode is taken (propagate.h): kPlaneAuto (default), kPlaneOff (the line
// modes everywhere) or kPlaneForce (wherever the plane fits, whatever its lines; tests).
int plane_policy = kPlaneAuto;

int64_t set_plane_mode(int64_t policy) {
  TORCH_CHECK(policy == kPlaneOff || policy == kPlaneAuto || policy == kPlaneForce,
              "plane-mode policy must be 0 (off), 1 (auto) or 2 (force), got ", policy);
  const int previous = plane_policy;
  plane_policy = static_cast<int>(policy);
  return previous;
}

// Channels per thread of the line modes (propagate.h): kChannelsPerThreadAuto (default) or a
// forced 1, 2 or 4 (the largest of those dividing C / G that is not above it; tests, benchmarks).
int channels_per_thread_policy = kChannelsPerThreadAuto;

int64_t set_channels_per_thread(int64_t policy) {
  TORCH_CHECK(policy == kChannelsPerThreadAuto || policy == 1 || policy == 2 ||
                  policy == kMaxChannelsPerThread,
              "channels-per-thread policy must be 0 (auto), 1, 2 or ", kMaxChannelsPerThread,
              ", got ", policy);
  const int previous = channels_per_thread_policy;
  channels_per_thread_policy = static_cast<int>(policy);
  return previous;
}

// Channels per thread of a line-mode launch: the largest of 4, 2, 1 that divides the gate
// group, is within the mode's max_channels_per_thread and is not above the policy's cap.
// Auto caps it at what measured fastest (H100, bf16, 4 directions G = 1, docs/benchmarks/op.md;
// forward / backward ms at KC = 1, 2, 4): CTA mode 2 (1024^2 10.48 / 9.21 / 11.48 and
// 23.0 / 20.0 / 20.9); warp mode 2 on lines of at most 8 (7^2 0.139 / 0.129 / 0.163 and
// 0.500 / 0.464 / -), else 1 (28^2 forward 0.508 / 0.704 / 1.165: fewer threads, each waiting
// on KC updates per step); long mode 1 (2048^2 forward 12.5 / 15.0); and 1 in a CTA-mode
// launch that scans horizontal lines in place, whose runs KC shortens (1024^2 in one fused
// launch, forward 17.9 / 33.3 / 50.5).
int64_t channels_per_thread(const PropagateShape& shape, int64_t elem_size, int64_t tpl,
                            int mode, bool backward, bool all_vertical) {
  if (elem_size == 8) return 1;
  const int64_t group = shape.C / shape.G;
  int64_t cap = channels_per_thread_policy;
  if (cap == kChannelsPerThreadAuto) {
    cap = (mode == kCtaMode && all_vertical) || (mode == kWarpMode && tpl <= 2) ? 2 : 1;
  }
  cap = std::min<int64_t>(cap, max_channels_per_thread(mode, backward));
  for (int64_t kc = cap; kc > 1; kc /= 2) {
    if (group % kc == 0) return kc;
  }
  return 1;
}

// Fills the launch geometry shared by forward and backward: the launch scans directions
// `directions` (shape.D of them), stored as entries `entries` of per-direction tensors with
// `stored_D` entries.
Geometry make_geometry(const PropagateShape& shape, const std::vector<int64_t>& directions,
                       const std::vector<int64_t>& entries, int64_t stored_D, int64_t chunk,
                       int64_t elem_size, bool backward, const std::vector<const void*>& ptrs) {
  Geometry geo{};
  const int64_t step = shape.D > 1 ? entries[1] - entries[0] : 1;
  for (int64_t d = 0; d < shape.D; ++d) {
    TORCH_CHECK(entries[d] == entries[0] + d * step,
                "internal: a launch scans evenly spaced direction entries");
  }
  geo.packed = pack_slots(static_cast<int>(stored_D), static_cast<int>(entries[0]),
                         static_cast<int>(step));
  geo.B = static_cast<int>(shape.B);
  geo.C = static_cast<int>(shape.C);
  geo.H = static_cast<int>(shape.H);
  geo.W = static_cast<int>(shape.W);
  geo.D = static_cast<int>(shape.D);
  geo.G = static_cast<int>(shape.G);
  int64_t longest_line = 0;
  bool all_vertical = true;
  for (int64_t d = 0; d < shape.D; ++d) {
    geo.dirs[d] = static_cast<int>(directions[d]);
    const bool vertical = directions[d] == kTopDown || directions[d] == kBottomUp;
    longest_line = std::max(longest_line, vertical ? shape.W : shape.H);
    all_vertical = all_vertical && vertical;
  }
  int64_t tpl = (longest_line + kPositions - 1) / kPositions;
  // (check_line_lengths reports long lines on the caller's sizes before any launch)
  TORCH_CHECK(tpl <= kMaxThreads, "internal: a launch with lines of ", longest_line,
              " positions, more than ", kPositions * kMaxThreads);
  TORCH_CHECK(shape.B <= 65535, "the CUDA kernel handles a batch of at most 65535, got ",
              shape.B);
  TORCH_CHECK(shape.B * shape.C * shape.H * shape.W < (int64_t(1) << 40),
              "tensor too large for the CUDA kernel");
  // Lines that fit in one warp run in the warp mode, their threads padded to a power of two
  // so that no line straddles two warps.
  geo.mode = tpl <= 32 ? kWarpMode : (tpl <= kShortThreads ? kCtaMode : kLongMode);
  if (geo.mode == kWarpMode) {
    int64_t pow2 = 1;
    while (pow2 < tpl) pow2 *= 2;
    tpl = pow2;
  }
  const int64_t kc = channels_per_thread(shape, elem_size, tpl, geo.mode, backward, all_vertical);
  int64_t rows = 1;  // blockDim.y
  for (int64_t k = 1; k <= shape.C / kc; ++k) {
    const int64_t target = geo.mode == kWarpMode ? kWarpThreads : kTargetThreads;
    if ((shape.C / kc) % k == 0 && k * tpl <= std::max<int64_t>(target, tpl)) rows = k;
  }
  geo.chunk = static_cast<int>(std::min<int64_t>(chunk, std::max(shape.H, shape.W) + 1));
  geo.threads_per_line = static_cast<int>(tpl);
  geo.channels_per_cta = static_cast<int>(rows * kc);
  geo.channels_per_thread = static_cast<int>(kc);
  bool all_aligned = true;
  for (const void* ptr : ptrs) all_aligned = all_aligned && (ptr == nullptr || aligned(ptr, 16));
  geo.vec = all_aligned && shape.W % kPositions == 0 && elem_size * kPositions <= 16;
  geo.vec_h = all_aligned &&
              shape.W % steps_per_run(geo.mode, backward, static_cast<int>(elem_size),
                                      static_cast<int>(kc)) == 0;
  // The plane mode with `cpc` channels per CTA, in place of the line mode chosen above.
  auto take_plane_mode = [&](int64_t cpc) {
    geo.mode = kPlaneMode;
    geo.threads_per_line = static_cast<int>(longest_line);  // the launcher's positions per lane
    geo.channels_per_cta = static_cast<int>(cpc);
    geo.channels_per_thread = 1;
    geo.plane_vec = all_aligned && (shape.H * shape.W * elem_size) % 16 == 0;
  };
  // Plane-mode backward: lines of kPlaneBwdMinLine .. kPlaneMaxLine (any length <= kPlaneMaxLine
  // under kPlaneForce) whose staged planes fit the budget.
  if (backward && plane_policy != kPlaneOff && longest_line <= kPlaneMaxLine &&
      (plane_policy == kPlaneForce || longest_line >= kPlaneBwdMinLine) &&
      shape.C <= (int64_t(1) << 31) - 1) {
    int64_t cpc_plane = 0;
    for (int64_t k = 1; k <= kPlaneMaxChannels; k *= 2) {
      if ((shape.C / shape.G) % k == 0 &&
          plane_bwd_smem_bytes(shape.H, shape.W, elem_size, elem_size == 8 ? 8 : 4, k) <=
              kPlaneSmemBudget) {
        cpc_plane = k;
      }
    }
    if (cpc_plane > 0) take_plane_mode(cpc_plane);
  }
  // Plane mode: forward, short lines, the staged plane within the shared-memory budget.
  const int64_t min_line =
      plane_policy == kPlaneForce ? 0 : (elem_size == 4 ? kPlaneMinLine32 : kPlaneMinLine);
  if (!backward && plane_policy != kPlaneOff && longest_line >= min_line &&
      longest_line <= kPlaneMaxLine && shape.C <= (int64_t(1) << 31) - 1) {
    // The most channels of one gate group per CTA whose staged planes fit the budget (more
    // warps per SM, the group's gates staged once for them).
    int64_t cpc_plane = 0;
    for (int64_t k = 1; k <= kPlaneMaxChannels; k *= 2) {
      if ((shape.C / shape.G) % k == 0 &&
          plane_smem_bytes(shape.H, shape.W, shape.D, elem_size, k) <= kPlaneSmemBudget) {
        cpc_plane = k;
      }
    }
    if (cpc_plane > 0) take_plane_mode(cpc_plane);
  }
  return geo;
}

void check_cuda(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "the CUDA extension needs ", name, " on a CUDA device, got ",
              t.device());
  TORCH_CHECK(t.scalar_type() == torch::kDouble || t.scalar_type() == torch::kFloat ||
                  t.scalar_type() == torch::kHalf || t.scalar_type() == torch::kBFloat16,
              name, " must be float64, float32, float16 or bfloat16 on CUDA, got ",
              t.scalar_type());
}

// Lines (rows of W positions for the vertical directions, columns of H for the horizontal
// ones) within what a CTA holds; checked on the caller's sizes before any launch (a split
// call's transposed launch would otherwise report its own, swapped ones).
void check_line_lengths(const PropagateShape& shape, const std::vector<int64_t>& directions) {
  for (const int64_t dir : directions) {
    const int64_t line = is_vertical(dir) ? shape.W : shape.H;
    TORCH_CHECK(line <= kPositions * kMaxThreads, "the CUDA kernel handles lines of at most ",
                kPositions * kMaxThreads, " positions, got a line of ", line, " (H = ", shape.H,
                ", W = ", shape.W, "; direction ", dir, " scans ",
                is_vertical(dir) ? "rows of W" : "columns of H", " positions)");
  }
}

// The sizes of one launch: `shape` with D the number of directions it scans.
PropagateShape launch_shape(PropagateShape shape, const std::vector<int64_t>& entries) {
  shape.D = static_cast<int64_t>(entries.size());
  return shape;
}

// One fused launch scanning entries `entries` of the per-direction tensors (gates, lam, u, and
// out when not merged, hidden) in directions `scan_dirs` (the horizontal ones scanning columns
// in place). Writes out (merge: (B, C, H, W), the sum over the launch's directions; else the
// entries of a tensor shaped like lam) and, if defined and not empty, the entries of hidden.
void forward_launch(const PropagateShape& shape, const torch::Tensor& x,
                    const torch::Tensor& gates, const torch::Tensor& lam,
                    const c10::optional<torch::Tensor>& u, const std::vector<int64_t>& scan_dirs,
                    const std::vector<int64_t>& entries, int64_t chunk, bool normalize, bool merge,
                    torch::Tensor& out, torch::Tensor& hidden) {
  const PropagateShape ls = launch_shape(shape, entries);
  FwdParams p{};
  p.x = x.data_ptr();
  p.gates = gates.data_ptr();
  p.lam = lam.data_ptr();
  p.u = merge ? u->data_ptr() : nullptr;
  p.out = out.data_ptr();
  p.hidden = hidden.defined() && hidden.numel() > 0 ? hidden.data_ptr() : nullptr;
  torch::Tensor partial, arrivals;
  // (partial comes from the same allocator as the other tensors: it does not change `vec`.)
  p.geo = make_geometry(ls, scan_dirs, entries, gates.size(1), chunk, x.element_size(), false,
                        {p.x, p.gates, p.lam, p.u, p.out, p.hidden});
  if (merge && ls.D > 1 && p.geo.mode != kPlaneMode) {
    partial = torch::empty({ls.D, ls.B, ls.C, ls.H, ls.W}, x.options().dtype(acc_dtype(x)));
    p.partial = partial.data_ptr();
    // The paired merge (propagate.h): top-down with bottom-up in the CTA mode; its counters
    // follow the arrivals.
    const bool paired = ls.D == 2 && p.geo.mode == kCtaMode &&
                        is_vertical(scan_dirs[0]) && is_vertical(scan_dirs[1]) &&
                        scan_dirs[0] != scan_dirs[1];
    if (paired) p.geo.packed |= kPairedMerge;
    arrivals = torch::zeros({(paired ? 5 : 1) * ls.B * (ls.C / p.geo.channels_per_cta)},
                            x.options().dtype(torch::kInt));
    p.arrivals = arrivals.data_ptr<int>();
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  GSPN2_DISPATCH_KERNEL_TYPES(x.scalar_type(), "gspn2_forward", [&] {
    launch_forward<scalar_t>(p, normalize, merge, stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// All directions of a call, in one launch.
std::vector<int64_t> all_entries(int64_t D) {
  std::vector<int64_t> entries(D);
  for (int64_t d = 0; d < D; ++d) entries[d] = d;
  return entries;
}

// grad_out and hidden of a backward call, against the forward inputs.
void check_backward_inputs(const PropagateShape& shape, const torch::Tensor& grad_out,
                           const torch::Tensor& x, const torch::Tensor& lam,
                           const torch::Tensor& hidden, bool merge, bool recomputed) {
  const int64_t B = shape.B, C = shape.C, H = shape.H, W = shape.W, D = shape.D;
  const std::vector<int64_t> out_shape =
      merge ? std::vector<int64_t>{B, C, H, W} : std::vector<int64_t>{B, D, C, H, W};
  TORCH_CHECK(grad_out.sizes() == torch::IntArrayRef(out_shape), "grad_out must be ",
              torch::IntArrayRef(out_shape), " (the shape of the forward output), got ",
              grad_out.sizes());
  check_same(grad_out, "grad_out", x);
  // (The one-pass kernels recompute h: an empty hidden is fine there, a full one is not read.)
  if (recomputed && hidden.numel() == 0) return;
  TORCH_CHECK(hidden.sizes() == lam.sizes(), "hidden must be (B, D, C, H, W) = ", lam.sizes(),
              " (the forward's hidden state: call forward with save_hidden=True when merge, "
              "or pass its output when not), got ", hidden.sizes());
  check_same(hidden, "hidden", x);
}

// One fused launch of the backward over entries `entries` (see forward_launch): writes
// grad_x ((B, C, H, W), the sum over the launch's directions) and the entries of grad_gates,
// grad_lam and (merge) grad_u.
void backward_launch(const PropagateShape& shape, const torch::Tensor& grad_out,
                     const torch::Tensor& x, const torch::Tensor& gates, const torch::Tensor& lam,
                     const c10::optional<torch::Tensor>& u, const torch::Tensor& hidden,
                     const std::vector<int64_t>& scan_dirs, const std::vector<int64_t>& entries,
                     int64_t chunk, bool normalize, bool merge, torch::Tensor& grad_x,
                     torch::Tensor& grad_gates, torch::Tensor& grad_lam, torch::Tensor& grad_u) {
  const PropagateShape ls = launch_shape(shape, entries);
  BwdParams p{};
  p.grad_out = grad_out.data_ptr();
  p.x = x.data_ptr();
  p.gates = gates.data_ptr();
  p.lam = lam.data_ptr();
  p.u = merge ? u->data_ptr() : nullptr;
  p.hidden = hidden.data_ptr();
  p.grad_x = grad_x.data_ptr();
  p.grad_gates = grad_gates.data_ptr();
  p.grad_lam = grad_lam.data_ptr();
  p.grad_u = merge && grad_u.defined() ? grad_u.data_ptr() : nullptr;
  // (The float buffers come from the same allocator as the other tensors: they do not change
  // `vec`, so they are allocated once the geometry says which are needed.)
  p.geo = make_geometry(ls, scan_dirs, entries, gates.size(1), chunk, x.element_size(), true,
                        {p.grad_out, p.x, p.gates, p.lam, p.u, p.hidden, p.grad_x, p.grad_gates,
                         p.grad_lam, p.grad_u});
  torch::Tensor partial_x, partial_gates;
  if (ls.D > 1) {
    partial_x = torch::empty({ls.D, ls.B, ls.C, ls.H, ls.W}, x.options().dtype(acc_dtype(x)));
    p.partial_x = partial_x.data_ptr();
  }
  // Gate-logit gradients summed over `summed` channels each (plane mode: in the CTA).
  const int64_t summed =
      p.geo.mode == kPlaneMode ? p.geo.channels_per_cta : p.geo.channels_per_thread;
  if (ls.C / ls.G > summed) {
    partial_gates = torch::empty({ls.B, ls.D, ls.C / summed, 3, ls.H, ls.W},
                                 x.options().dtype(acc_dtype(x)));
    p.partial_gates = partial_gates.data_ptr();
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  GSPN2_DISPATCH_KERNEL_TYPES(x.scalar_type(), "gspn2_backward", [&] {
    launch_backward<scalar_t>(p, normalize, merge, stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<torch::Tensor, torch::Tensor> forward(
    const torch::Tensor& x, const torch::Tensor& gates, const torch::Tensor& lam,
    const c10::optional<torch::Tensor>& u, const std::vector<int64_t>& directions, int64_t chunk,
    bool normalize, bool merge, bool save_hidden) {
  const PropagateShape shape = check_propagate_inputs(x, gates, lam, u, directions, chunk, merge);
  check_cuda(x, "x");
  const bool one_pass = is_one_pass(shape, chunk);
  if (!one_pass) check_line_lengths(shape, directions);  // (one-pass kernels: any length)
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = shape.B, C = shape.C, H = shape.H, W = shape.W;
  torch::Tensor out = merge ? torch::empty({B, C, H, W}, x.options()) : torch::empty_like(lam);
  torch::Tensor hidden =
      merge && save_hidden ? torch::empty_like(lam) : torch::empty({0}, x.options());
  if (out.numel() == 0) return {out, hidden};
  if (one_pass) {
    one_pass_forward(shape, x, gates, lam, u, directions, chunk, normalize, merge, out, hidden);
    return {out, hidden};
  }
  const std::vector<int64_t> tr = transposed_entries(H, directions);
  if (tr.empty()) {
    forward_launch(shape, x, gates, lam, u, directions, all_entries(shape.D), chunk, normalize,
                   merge, out, hidden);
    return {out, hidden};
  }
  const DirectionSplit s = split_directions(directions, tr);
  // The vertical directions in place, straight into their entries of out and hidden, on a
  // side stream: each half fills at most half the SMs where B * C lines are few (2048^2),
  // and the transposes of the other half run beside it.
  SideStream vertical;
  if (!s.vertical.empty()) {
    vertical.run(x, [&] {
      forward_launch(shape, x, gates, lam, u, s.vertical_dirs, s.vertical, chunk, normalize,
                     merge, out, hidden);
    });
  }
  // The horizontal directions as top-down / bottom-up scans of transposed planes.
  const int64_t E = static_cast<int64_t>(tr.size());
  const PropagateShape shape_t{B, C, W, H, E, shape.G};
  const torch::Tensor lam_t = take_transposed(lam, tr);
  const c10::optional<torch::Tensor> u_t =
      merge ? c10::optional<torch::Tensor>(take_transposed(*u, tr)) : c10::nullopt;
  torch::Tensor out_t =
      merge ? torch::empty({B, C, W, H}, x.options()) : torch::empty_like(lam_t);
  torch::Tensor hidden_t =
      hidden.numel() > 0 ? torch::empty_like(lam_t) : torch::empty({0}, x.options());
  forward_launch(shape_t, transposed_image(x), take_transposed(gates, tr), lam_t, u_t,
                 s.transposed_dirs, all_entries(E), chunk, normalize, merge, out_t, hidden_t);
  // The transposed results added to the vertical ones (merge) or put into their entries.
  vertical.join();
  if (merge) {
    transposed_image(out_t, out, !s.vertical.empty());
    if (hidden.numel() > 0) put_transposed(hidden_t, hidden, tr);
  } else {
    put_transposed(out_t, out, tr);
  }
  return {out, hidden};
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor> backward(
    const torch::Tensor& grad_out, const torch::Tensor& x, const torch::Tensor& gates,
    const torch::Tensor& lam, const c10::optional<torch::Tensor>& u, const torch::Tensor& hidden,
    const std::vector<int64_t>& directions, int64_t chunk, bool normalize, bool merge) {
  const PropagateShape shape = check_propagate_inputs(x, gates, lam, u, directions, chunk, merge);
  check_cuda(x, "x");
  const bool one_pass = is_one_pass(shape, chunk);
  if (!one_pass) check_line_lengths(shape, directions);  // (one-pass kernels: any length)
  check_backward_inputs(shape, grad_out, x, lam, hidden, merge, one_pass);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = shape.B, C = shape.C, H = shape.H, W = shape.W;
  torch::Tensor grad_x = torch::empty_like(x);
  torch::Tensor grad_gates = torch::empty_like(gates);
  torch::Tensor grad_lam = torch::empty_like(lam);
  torch::Tensor grad_u;
  if (u.has_value()) grad_u = merge ? torch::empty_like(*u) : torch::zeros_like(*u);
  if (x.numel() == 0) {
    grad_x.zero_();
    grad_gates.zero_();
    grad_lam.zero_();
    if (grad_u.defined()) grad_u.zero_();
    return {grad_x, grad_gates, grad_lam, grad_u};
  }
  if (one_pass) {
    one_pass_backward(shape, grad_out, x, gates, lam, u, directions, chunk, normalize, merge,
                      grad_x, grad_gates, grad_lam, grad_u);
    return {grad_x, grad_gates, grad_lam, grad_u};
  }
  const std::vector<int64_t> tr = transposed_entries(H, directions);
  if (tr.empty()) {
    backward_launch(shape, grad_out, x, gates, lam, u, hidden, directions,
                    all_entries(shape.D), chunk, normalize, merge, grad_x, grad_gates, grad_lam,
                    grad_u);
    return {grad_x, grad_gates, grad_lam, grad_u};
  }
  const DirectionSplit s = split_directions(directions, tr);
  // The vertical directions in place on a side stream (see forward).
  SideStream vertical;
  if (!s.vertical.empty()) {
    vertical.run(x, [&] {
      backward_launch(shape, grad_out, x, gates, lam, u, hidden, s.vertical_dirs, s.vertical,
                      chunk, normalize, merge, grad_x, grad_gates, grad_lam, grad_u);
    });
  }
  const int64_t E = static_cast<int64_t>(tr.size());
  const PropagateShape shape_t{B, C, W, H, E, shape.G};
  const torch::Tensor gates_t = take_transposed(gates, tr), lam_t = take_transposed(lam, tr);
  const c10::optional<torch::Tensor> u_t =
      merge ? c10::optional<torch::Tensor>(take_transposed(*u, tr)) : c10::nullopt;
  torch::Tensor gx_t = torch::empty({B, C, W, H}, x.options());
  torch::Tensor gg_t = torch::empty_like(gates_t), gl_t = torch::empty_like(lam_t);
  torch::Tensor gu_t = merge ? torch::empty_like(*u_t) : torch::Tensor();
  backward_launch(shape_t, merge ? transposed_image(grad_out) : take_transposed(grad_out, tr),
                  transposed_image(x), gates_t, lam_t, u_t, take_transposed(hidden, tr),
                  s.transposed_dirs, all_entries(E), chunk, normalize, merge, gx_t, gg_t, gl_t,
                  gu_t);
  vertical.join();
  transposed_image(gx_t, grad_x, !s.vertical.empty());
  put_transposed(gg_t, grad_gates, tr);
  put_transposed(gl_t, grad_lam, tr);
  if (merge && grad_u.defined()) put_transposed(gu_t, grad_u, tr);
  return {grad_x, grad_gates, grad_lam, grad_u};
}

}  // namespace
}  // namespace cuda
}  // namespace gspn2

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Fused GSPN-2 line-scan propagation, CUDA kernels (see gspn2_common.h)";
  m.def("forward", &gspn2::cuda::forward, "fused forward: (out, hidden)", pybind11::arg("x"),
        pybind11::arg("gates"), pybind11::arg("lam"), pybind11::arg("u"),
        pybind11::arg("directions"), pybind11::arg("chunk"), pybind11::arg("normalize"),
        pybind11::arg("merge"), pybind11::arg("save_hidden"));
  m.def("set_plane_mode", &gspn2::cuda::set_plane_mode,
        "when the forward and backward take the plane mode: 0 never, 1 where it is faster "
        "(default), 2 wherever it fits; returns the previous policy",
        pybind11::arg("policy"));
  m.def("set_transpose_mode", &gspn2::cuda::set_transpose_mode,
        "when horizontal directions run on transposed planes: 0 never, 1 for lines longer "
        "than 128 (default), 2 always; returns the previous policy",
        pybind11::arg("policy"));
  m.def("set_channels_per_thread", &gspn2::cuda::set_channels_per_thread,
        "channels of one gate group per thread of the line modes: 0 the measured choice "
        "(default), or at most 1, 2 or 4; returns the previous policy",
        pybind11::arg("policy"));
  m.def("backward", &gspn2::cuda::backward,
        "fused backward: (grad_x, grad_gates, grad_lam, grad_u)", pybind11::arg("grad_out"),
        pybind11::arg("x"), pybind11::arg("gates"), pybind11::arg("lam"), pybind11::arg("u"),
        pybind11::arg("hidden"), pybind11::arg("directions"), pybind11::arg("chunk"),
        pybind11::arg("normalize"), pybind11::arg("merge"));
  m.def("layer_norm_forward", &gspn2::cuda::layer_norm_forward,
        "layer norm over the last dim of a contiguous tensor, C <= 1024: (y, mean, rstd)",
        pybind11::arg("x"), pybind11::arg("weight"), pybind11::arg("bias"), pybind11::arg("eps"),
        pybind11::arg("out_dtype"));
  m.def("layer_norm_backward", &gspn2::cuda::layer_norm_backward,
        "its backward: (grad_x, grad_weight, grad_bias)", pybind11::arg("grad_y"),
        pybind11::arg("x"), pybind11::arg("mean"), pybind11::arg("rstd"), pybind11::arg("weight"));
}
