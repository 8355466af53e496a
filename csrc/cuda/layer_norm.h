// Layer norm over the last dimension of a row-major (N, C) tensor, C <= kMaxLayerNormChannels:
// the norms of the GSPN-2 blocks over channels_last maps (C = 40 .. 1024 channels, N = batch x
// positions, up to millions of rows). PyTorch's kernel gives each row a CTA, which at these
// widths leaves most threads idle; here a warp owns ROWS rows at a time (lane = channel mod 32),
// several CTAs per SM, float32 statistics and affine parameters, storage-type input and output.
//
// Backward: dx per row (warp reductions), and the affine gradients summed over rows in a fixed
// order: each lane keeps its channels' sums over its warp's rows, the CTA sums its warps in
// shared memory and writes one (2, C) float32 row, a second launch sums those rows in CTA order.
// Deterministic (no atomics); the results depend on the grid, which depends on the SM count.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace gspn2 {
namespace cuda {

constexpr int64_t kMaxLayerNormChannels = 1024;

// x: (..., C) contiguous float32 / float16 / bfloat16; weight, bias: (C,) float32.
// Returns y (x's shape, out_dtype: float32, float16 or bfloat16) and mean, rstd (x's shape
// without the last dim, float32).
std::vector<at::Tensor> layer_norm_forward(const at::Tensor& x, const at::Tensor& weight,
                                           const at::Tensor& bias, double eps,
                                           at::ScalarType out_dtype);

// grad_y: y's gradient (x's shape, y's dtype); x, mean, rstd: the forward's; weight: (C,) float32.
// Returns grad_x (x's dtype), grad_weight and grad_bias ((C,) float32).
std::vector<at::Tensor> layer_norm_backward(const at::Tensor& grad_y, const at::Tensor& x,
                                            const at::Tensor& mean, const at::Tensor& rstd,
                                            const at::Tensor& weight);

}  // namespace cuda
}  // namespace gspn2
