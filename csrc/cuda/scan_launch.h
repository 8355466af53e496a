// Allocation and launch of the one-pass kernels for bindings.cpp, which validates the inputs
// and plans the call (launch_plan.h) before calling these: the local scans (chunk <=
// kLocalMaxChunk, propagate_local.h) and the small-plane scans (planes whose lines fit a warp,
// propagate_small.h). Both recompute h in the backward: no hidden state is needed.
#pragma once

#include <torch/extension.h>

#include <vector>

#include "cuda/launch_plan.h"
#include "gspn2_common.h"

namespace gspn2 {
namespace cuda {

// Writes out (merge: (B, C, H, W), else (B, D, C, H, W)) and, when not empty, hidden.
void one_pass_forward(const LaunchPlan& plan, const PropagateShape& shape,
                      const torch::Tensor& x, const torch::Tensor& gates, const torch::Tensor& lam,
                      const c10::optional<torch::Tensor>& u,
                      const std::vector<int64_t>& directions, int64_t chunk, bool normalize,
                      bool merge, torch::Tensor& out, torch::Tensor& hidden);

// Writes grad_x, grad_gates, grad_lam and (merge) grad_u; recomputes h (no hidden state).
void one_pass_backward(const LaunchPlan& plan, const PropagateShape& shape,
                       const torch::Tensor& grad_out, const torch::Tensor& x,
                       const torch::Tensor& gates, const torch::Tensor& lam,
                       const c10::optional<torch::Tensor>& u,
                       const std::vector<int64_t>& directions, int64_t chunk, bool normalize,
                       bool merge, torch::Tensor& grad_x, torch::Tensor& grad_gates,
                       torch::Tensor& grad_lam, torch::Tensor& grad_u);

}  // namespace cuda
}  // namespace gspn2
