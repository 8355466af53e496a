// Allocation and launch of the local-scan kernels (chunk <= kLocalMaxChunk,
// propagate_local.h) for bindings.cpp, which validates the inputs before calling these.
#pragma once

#include <torch/extension.h>

#include <vector>

#include "cuda/propagate_local.h"
#include "gspn2_common.h"

namespace gspn2 {
namespace cuda {

inline bool is_local(int64_t chunk) { return chunk >= 1 && chunk <= kLocalMaxChunk; }

// Writes out (merge: (B, C, H, W), else (B, D, C, H, W)) and, when not empty, hidden.
void local_forward(const PropagateShape& shape, const torch::Tensor& x, const torch::Tensor& gates,
                   const torch::Tensor& lam, const c10::optional<torch::Tensor>& u,
                   const std::vector<int64_t>& directions, int64_t chunk, bool normalize,
                   bool merge, torch::Tensor& out, torch::Tensor& hidden);

// Writes grad_x, grad_gates, grad_lam and (merge) grad_u; recomputes h (no hidden state).
void local_backward(const PropagateShape& shape, const torch::Tensor& grad_out,
                    const torch::Tensor& x, const torch::Tensor& gates, const torch::Tensor& lam,
                    const c10::optional<torch::Tensor>& u, const std::vector<int64_t>& directions,
                    int64_t chunk, bool normalize, bool merge, torch::Tensor& grad_x,
                    torch::Tensor& grad_gates, torch::Tensor& grad_lam, torch::Tensor& grad_u);

}  // namespace cuda
}  // namespace gspn2
