// Allocation and launch of the local-scan kernels (local_launch.h, propagate_local.h).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include "cuda/dispatch.h"
#include "cuda/local_launch.h"

namespace gspn2 {
namespace cuda {

// Threads aimed at per launch (about two waves of an H100 / H200 at 2048 threads per SM):
// the channels of a gate group are split into the fewest slices that reach it.
constexpr int64_t kLocalTargetThreads = int64_t(1) << 19;

namespace {

LocalParams local_params(const PropagateShape& shape, const std::vector<int64_t>& directions,
                         int64_t chunk) {
  LocalParams p{};
  p.B = static_cast<int>(shape.B);
  p.C = static_cast<int>(shape.C);
  p.H = static_cast<int>(shape.H);
  p.W = static_cast<int>(shape.W);
  p.D = static_cast<int>(shape.D);
  p.G = static_cast<int>(shape.G);
  p.chunk = static_cast<int>(chunk);
  for (int64_t d = 0; d < shape.D; ++d) p.dirs[d] = static_cast<int>(directions[d]);
  const int64_t group = shape.C / shape.G, positions = shape.B * shape.H * shape.W * shape.G;
  int64_t slices = group;
  for (int64_t k = 1; k <= group; ++k) {
    if (group % k == 0 && positions * k >= kLocalTargetThreads) {
      slices = k;
      break;
    }
  }
  p.slices = static_cast<int>(slices);
  TORCH_CHECK(shape.G * slices <= 65535 && shape.B * shape.H * shape.W / kLocalThreads < (int64_t(1) << 31),
              "the CUDA local kernel handles at most 65535 gate groups x slices and 2^31 CTAs, got G = ",
              shape.G, " and B * H * W = ", shape.B * shape.H * shape.W);
  return p;
}

}  // namespace

void local_forward(const PropagateShape& shape, const torch::Tensor& x, const torch::Tensor& gates,
                   const torch::Tensor& lam, const c10::optional<torch::Tensor>& u,
                   const std::vector<int64_t>& directions, int64_t chunk, bool normalize,
                   bool merge, torch::Tensor& out, torch::Tensor& hidden) {
  LocalParams p = local_params(shape, directions, chunk);
  p.x = x.data_ptr();
  p.gates = gates.data_ptr();
  p.lam = lam.data_ptr();
  p.u = merge ? u->data_ptr() : nullptr;
  p.out = out.data_ptr();
  p.hidden = hidden.numel() > 0 ? hidden.data_ptr() : nullptr;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  GSPN2_DISPATCH_KERNEL_TYPES(x.scalar_type(), "gspn2_local_forward", [&] {
    launch_local_forward<scalar_t>(p, normalize, merge, stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void local_backward(const PropagateShape& shape, const torch::Tensor& grad_out,
                    const torch::Tensor& x, const torch::Tensor& gates, const torch::Tensor& lam,
                    const c10::optional<torch::Tensor>& u, const std::vector<int64_t>& directions,
                    int64_t chunk, bool normalize, bool merge, torch::Tensor& grad_x,
                    torch::Tensor& grad_gates, torch::Tensor& grad_lam, torch::Tensor& grad_u) {
  LocalParams p = local_params(shape, directions, chunk);
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
  GSPN2_DISPATCH_KERNEL_TYPES(x.scalar_type(), "gspn2_local_backward", [&] {
    launch_local_backward<scalar_t>(p, normalize, merge, stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace gspn2
