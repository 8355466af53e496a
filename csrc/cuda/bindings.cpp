// Python bindings of the fused GSPN-2 CUDA kernels: the contract of gspn2_common.h.
//
// This file validates, allocates and packs what the launch plan (launch_plan.h) says; the line
// and plane kernels are launched from propagate_kernels.cuh (their pieces are listed there),
// the one-pass local and small-plane scans from scan_launch.cpp (propagate_local.cu,
// propagate_small.cu).
#include <c10/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/dispatch.h"
#include "cuda/launch_plan.h"
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

bool aligned(const void* ptr, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % static_cast<uintptr_t>(bytes) == 0;
}

// The launch geometry of `launch` (its mode, threads and channel packing come from the plan;
// what depends on the tensors' addresses, from `ptrs`): the launch scans entries `entries` of
// per-direction tensors with `stored_D` entries, in launch.dirs; `shape` has the launch's sizes
// (transposed ones for a transposed launch) and D = entries.size().
Geometry make_geometry(const PropagateShape& shape, const ScanLaunch& launch,
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
  for (int64_t d = 0; d < shape.D; ++d) geo.dirs[d] = static_cast<int>(launch.dirs[d]);
  geo.mode = launch.mode;
  geo.threads_per_line = launch.threads_per_line;
  geo.channels_per_cta = launch.channels_per_cta;
  geo.channels_per_thread = launch.channels_per_thread;
  geo.chunk = static_cast<int>(std::min<int64_t>(chunk, std::max(shape.H, shape.W) + 1));
  bool all_aligned = true;
  for (const void* ptr : ptrs) all_aligned = all_aligned && (ptr == nullptr || aligned(ptr, 16));
  geo.vec = all_aligned && shape.W % kPositions == 0 && elem_size * kPositions <= 16;
  geo.vec_h = geo.mode != kPlaneMode && all_aligned &&
              shape.W % steps_per_run(geo.mode, backward, static_cast<int>(elem_size),
                                      launch.channels_per_thread) == 0;
  geo.plane_vec = geo.mode == kPlaneMode && all_aligned &&
                  (shape.H * shape.W * elem_size) % 16 == 0;
  return geo;
}

// The storage dtypes the kernels are instantiated for (GSPN2_DISPATCH_KERNEL_TYPES).
bool is_kernel_dtype(torch::ScalarType dtype) {
  return dtype == torch::kDouble || dtype == torch::kFloat || dtype == torch::kHalf ||
         dtype == torch::kBFloat16;
}

void check_cuda(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "the CUDA extension needs ", name, " on a CUDA device, got ",
              t.device());
  TORCH_CHECK(is_kernel_dtype(t.scalar_type()), name,
              " must be float64, float32, float16 or bfloat16 on CUDA, got ", t.scalar_type());
}

// Lines (rows of W positions for the vertical directions, columns of H for the horizontal
// ones) within what a CTA holds, unless the call goes to a one-pass kernel (any length);
// checked on the caller's sizes before any launch (a split call's transposed launch would
// otherwise report its own, swapped ones).
void check_line_lengths(const PropagateShape& shape, const std::vector<int64_t>& directions,
                        int64_t chunk) {
  if (is_one_pass(shape, chunk)) return;
  for (const int64_t dir : directions) {
    const int64_t line = is_vertical(dir) ? shape.W : shape.H;
    TORCH_CHECK(line <= kSharedLineMaxLine, "the CUDA kernel handles lines of at most ",
                kSharedLineMaxLine, " positions, got a line of ", line, " (H = ", shape.H,
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
// out when not merged, hidden) as the plan's `launch` says (the horizontal directions of an
// in-place launch scan columns in place). Writes out (merge: (B, C, H, W), the sum over the
// launch's directions; else the entries of a tensor shaped like lam) and, if defined and not
// empty, the entries of hidden.
void forward_launch(const PropagateShape& shape, const torch::Tensor& x,
                    const torch::Tensor& gates, const torch::Tensor& lam,
                    const c10::optional<torch::Tensor>& u, const ScanLaunch& launch,
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
  p.geo = make_geometry(ls, launch, entries, gates.size(1), chunk, x.element_size(), false,
                        {p.x, p.gates, p.lam, p.u, p.out, p.hidden});
  if (merge && ls.D > 1 && p.geo.mode != kPlaneMode) {
    partial = torch::empty({ls.D, ls.B, ls.C, ls.H, ls.W}, x.options().dtype(acc_dtype(x)));
    p.partial = partial.data_ptr();
    // The paired merge (propagate.h): top-down with bottom-up in the CTA mode; its counters
    // follow the arrivals.
    const bool paired = ls.D == 2 && p.geo.mode == kCtaMode &&
                        is_vertical(launch.dirs[0]) && is_vertical(launch.dirs[1]) &&
                        launch.dirs[0] != launch.dirs[1];
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
                     const ScanLaunch& launch, const std::vector<int64_t>& entries,
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
  p.geo = make_geometry(ls, launch, entries, gates.size(1), chunk, x.element_size(), true,
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

// The plan's in-place and transposed launches (launch_plan.h), either may be absent.
struct PlannedLaunches {
  const ScanLaunch* in_place = nullptr;
  const ScanLaunch* transposed = nullptr;
};

PlannedLaunches planned(const LaunchPlan& plan) {
  PlannedLaunches l;
  for (const ScanLaunch& launch : plan.launches) {
    (launch.transposed ? l.transposed : l.in_place) = &launch;
  }
  return l;
}

std::tuple<torch::Tensor, torch::Tensor> forward(
    const torch::Tensor& x, const torch::Tensor& gates, const torch::Tensor& lam,
    const c10::optional<torch::Tensor>& u, const std::vector<int64_t>& directions, int64_t chunk,
    bool normalize, bool merge, bool save_hidden) {
  const PropagateShape shape = check_propagate_inputs(x, gates, lam, u, directions, chunk, merge);
  check_cuda(x, "x");
  check_line_lengths(shape, directions, chunk);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = shape.B, C = shape.C, H = shape.H, W = shape.W;
  torch::Tensor out = merge ? torch::empty({B, C, H, W}, x.options()) : torch::empty_like(lam);
  torch::Tensor hidden =
      merge && save_hidden ? torch::empty_like(lam) : torch::empty({0}, x.options());
  if (out.numel() == 0) return {out, hidden};
  const LaunchPlan plan = plan_launches(shape, directions, chunk, x.element_size(), false);
  if (plan.kernels != Kernels::kScans) {
    one_pass_forward(plan, shape, x, gates, lam, u, directions, chunk, normalize, merge, out,
                     hidden);
    return {out, hidden};
  }
  const PlannedLaunches l = planned(plan);
  if (l.transposed == nullptr) {
    forward_launch(shape, x, gates, lam, u, *l.in_place, all_entries(shape.D), chunk, normalize,
                   merge, out, hidden);
    return {out, hidden};
  }
  // The in-place directions straight into their entries of out and hidden, on a side stream:
  // each half fills at most half the SMs where B * C lines are few (2048^2), and the
  // transposes of the other half run beside it.
  SideStream in_place;
  if (l.in_place != nullptr) {
    in_place.run(x, [&] {
      forward_launch(shape, x, gates, lam, u, *l.in_place, l.in_place->entries, chunk, normalize,
                     merge, out, hidden);
    });
  }
  // The horizontal directions as top-down / bottom-up scans of transposed planes.
  const std::vector<int64_t>& tr = l.transposed->entries;
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
                 *l.transposed, all_entries(E), chunk, normalize, merge, out_t, hidden_t);
  // The transposed results added to the in-place ones (merge) or put into their entries.
  in_place.join();
  if (merge) {
    transposed_image(out_t, out, l.in_place != nullptr);
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
  check_line_lengths(shape, directions, chunk);
  check_backward_inputs(shape, grad_out, x, lam, hidden, merge, is_one_pass(shape, chunk));
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
  const LaunchPlan plan = plan_launches(shape, directions, chunk, x.element_size(), true);
  if (plan.kernels != Kernels::kScans) {
    one_pass_backward(plan, shape, grad_out, x, gates, lam, u, directions, chunk, normalize,
                      merge, grad_x, grad_gates, grad_lam, grad_u);
    return {grad_x, grad_gates, grad_lam, grad_u};
  }
  const PlannedLaunches l = planned(plan);
  if (l.transposed == nullptr) {
    backward_launch(shape, grad_out, x, gates, lam, u, hidden, *l.in_place,
                    all_entries(shape.D), chunk, normalize, merge, grad_x, grad_gates, grad_lam,
                    grad_u);
    return {grad_x, grad_gates, grad_lam, grad_u};
  }
  // The in-place directions on a side stream (see forward).
  SideStream in_place;
  if (l.in_place != nullptr) {
    in_place.run(x, [&] {
      backward_launch(shape, grad_out, x, gates, lam, u, hidden, *l.in_place, l.in_place->entries,
                      chunk, normalize, merge, grad_x, grad_gates, grad_lam, grad_u);
    });
  }
  const std::vector<int64_t>& tr = l.transposed->entries;
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
                  *l.transposed, all_entries(E), chunk, normalize, merge, gx_t, gg_t, gl_t, gu_t);
  in_place.join();
  transposed_image(gx_t, grad_x, l.in_place != nullptr);
  put_transposed(gg_t, grad_gates, tr);
  put_transposed(gl_t, grad_lam, tr);
  if (merge && grad_u.defined()) put_transposed(gu_t, grad_u, tr);
  return {grad_x, grad_gates, grad_lam, grad_u};
}

// The launch plan of a call with these sizes (launch_plan.h), one line per launch.
std::vector<std::string> plan(const std::vector<int64_t>& sizes, int64_t groups,
                              const std::vector<int64_t>& directions, int64_t chunk,
                              torch::ScalarType dtype, bool backward) {
  TORCH_CHECK(sizes.size() == 4, "sizes must be (B, C, H, W), got ", sizes.size(), " values");
  TORCH_CHECK(groups >= 1 && sizes[1] % groups == 0, "groups must divide C = ", sizes[1],
              ", got ", groups);
  for (const int64_t size : sizes) {
    TORCH_CHECK(size >= 0, "sizes must be >= 0, got ", torch::IntArrayRef(sizes));
  }
  check_directions_and_chunk(directions, chunk);
  TORCH_CHECK(is_kernel_dtype(dtype), "dtype must be float64, float32, float16 or bfloat16, got ",
              dtype);
  const PropagateShape shape{sizes[0], sizes[1], sizes[2], sizes[3],
                             static_cast<int64_t>(directions.size()), groups};
  check_line_lengths(shape, directions, chunk);
  return describe(plan_launches(shape, directions, chunk, c10::elementSize(dtype), backward));
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
  m.def("backward", &gspn2::cuda::backward,
        "fused backward: (grad_x, grad_gates, grad_lam, grad_u)", pybind11::arg("grad_out"),
        pybind11::arg("x"), pybind11::arg("gates"), pybind11::arg("lam"), pybind11::arg("u"),
        pybind11::arg("hidden"), pybind11::arg("directions"), pybind11::arg("chunk"),
        pybind11::arg("normalize"), pybind11::arg("merge"));
  m.def("plan", &gspn2::cuda::plan,
        "the launch plan of a call (csrc/cuda/launch_plan.h): one line per launch",
        pybind11::arg("sizes"), pybind11::arg("groups"), pybind11::arg("directions"),
        pybind11::arg("chunk"), pybind11::arg("dtype"), pybind11::arg("backward"));
  m.def("layer_norm_forward", &gspn2::cuda::layer_norm_forward,
        "layer norm over the last dim of a contiguous tensor, C <= 1024: (y, mean, rstd)",
        pybind11::arg("x"), pybind11::arg("weight"), pybind11::arg("bias"), pybind11::arg("eps"),
        pybind11::arg("out_dtype"));
  m.def("layer_norm_backward", &gspn2::cuda::layer_norm_backward,
        "its backward: (grad_x, grad_weight, grad_bias)", pybind11::arg("grad_y"),
        pybind11::arg("x"), pybind11::arg("mean"), pybind11::arg("rstd"), pybind11::arg("weight"));
}
