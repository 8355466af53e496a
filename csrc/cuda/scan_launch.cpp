// Allocation and launch of the one-pass kernels (scan_launch.h).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include "cuda/dispatch.h"
#include "cuda/scan_launch.h"

namespace gspn2 {
namespace cuda {

namespace {

ScanParams scan_params(const LaunchPlan& plan, const PropagateShape& shape,
                       const std::vector<int64_t>& directions, int64_t chunk) {
  ScanParams p{};
  p.B = static_cast<int>(shape.B);
  p.C = static_cast<int>(shape.C);
  p.H = static_cast<int>(shape.H);
  p.W = static_cast<int>(shape.W);
  p.D = static_cast<int>(shape.D);
  p.G = static_cast<int>(shape.G);
  p.chunk = static_cast<int>(chunk);
  for (int64_t d = 0; d < shape.D; ++d) p.dirs[d] = static_cast<int>(directions[d]);
  p.slices = plan.slices;
  return p;
}

}  // namespace

void one_pass_forward(const LaunchPlan& plan, const PropagateShape& shape,
                      const torch::Tensor& x, const torch::Tensor& gates, const torch::Tensor& lam,
                      const c10::optional<torch::Tensor>& u,
                      const std::vector<int64_t>& directions, int64_t chunk, bool normalize,
                      bool merge, torch::Tensor& out, torch::Tensor& hidden) {
  ScanParams p = scan_params(plan, shape, directions, chunk);
  p.x = x.data_ptr();
  p.gates = gates.data_ptr();
  p.lam = lam.data_ptr();
  p.u = merge ? u->data_ptr() : nullptr;
  p.out = out.data_ptr();
  p.hidden = hidden.numel() > 0 ? hidden.data_ptr() : nullptr;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  GSPN2_DISPATCH_KERNEL_TYPES(x.scalar_type(), "gspn2_one_pass_forward", [&] {
    if (plan.kernels == Kernels::kLocal) {
      launch_local_forward<scalar_t>(p, normalize, merge, stream);
    } else {
      launch_small_forward<scalar_t>(p, normalize, merge, stream);
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void one_pass_backward(const LaunchPlan& plan, const PropagateShape& shape,
                       const torch::Tensor& grad_out, const torch::Tensor& x,
                       const torch::Tensor& gates, const torch::Tensor& lam,
                       const c10::optional<torch::Tensor>& u,
                       const std::vector<int64_t>& directions, int64_t chunk, bool normalize,
                       bool merge, torch::Tensor& grad_x, torch::Tensor& grad_gates,
                       torch::Tensor& grad_lam, torch::Tensor& grad_u) {
  ScanParams p = scan_params(plan, shape, directions, chunk);
  p.grad_out = grad_out.data_ptr();
  p.x = x.data_ptr();
  p.gates = gates.data_ptr();
  p.lam = lam.data_ptr();
  p.u = merge ? u->data_ptr() : nullptr;
  p.grad_x = grad_x.data_ptr();
  p.grad_gates = grad_gates.data_ptr();
  p.grad_lam = grad_lam.data_ptr();
  p.grad_u = merge ? grad_u.data_ptr() : nullptr;
  torch::Tensor partial;
  if (p.slices > 1) {
    partial = torch::empty({p.slices, shape.B, shape.D, shape.G, 3, shape.H, shape.W},
                           x.options().dtype(acc_dtype(x)));
    p.partial_gates = partial.data_ptr();
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  GSPN2_DISPATCH_KERNEL_TYPES(x.scalar_type(), "gspn2_one_pass_backward", [&] {
    if (plan.kernels == Kernels::kLocal) {
      launch_local_backward<scalar_t>(p, normalize, merge, stream);
    } else {
      launch_small_backward<scalar_t>(p, normalize, merge, stream);
      if (p.slices > 1) launch_gate_grad_finish<scalar_t>(p, normalize, stream);
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace gspn2
