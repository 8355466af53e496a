// Dtype dispatch shared by the CUDA bindings (bindings.cpp, scan_launch.cpp).
#pragma once

#include <torch/extension.h>

namespace gspn2 {
namespace cuda {

// The storage dtypes the kernels are instantiated for (float32 accumulation, float64 for
// float64).
#define GSPN2_DISPATCH_KERNEL_TYPES(TYPE, NAME, ...)                                   \
  AT_DISPATCH_SWITCH(TYPE, NAME, AT_DISPATCH_CASE(at::kDouble, __VA_ARGS__)             \
                                     AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__)          \
                                         AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__)       \
                                             AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

// Accumulation dtype of the float buffers the kernels keep between passes.
inline torch::ScalarType acc_dtype(const torch::Tensor& x) {
  return x.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
}

}  // namespace cuda
}  // namespace gspn2
