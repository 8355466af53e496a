// CPU implementation of the GSPN-2 propagation (contract: ../gspn2_common.h).
#pragma once

#include "gspn2_common.h"

#include <string>
#include <tuple>
#include <vector>

namespace gspn2 {
namespace cpu {

std::tuple<torch::Tensor, torch::Tensor> propagate_forward(
    const torch::Tensor& x, const torch::Tensor& gates, const torch::Tensor& lam,
    const c10::optional<torch::Tensor>& u, const std::vector<int64_t>& directions, int64_t chunk,
    bool normalize, bool merge, bool save_hidden);

// Returns (grad_x, grad_gates, grad_lam, grad_u); grad_u is undefined (None) without merge.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor> propagate_backward(
    const torch::Tensor& grad_out, const torch::Tensor& x, const torch::Tensor& gates,
    const torch::Tensor& lam, const c10::optional<torch::Tensor>& u,
    const torch::Tensor& hidden, const std::vector<int64_t>& directions, int64_t chunk,
    bool normalize, bool merge);

// The instruction set the hot loops run with on this CPU: "x86-64-v3" (AVX2 + FMA clones) or
// "baseline" (the compiler's default target).
std::string kernel_isa();

}  // namespace cpu
}  // namespace gspn2
