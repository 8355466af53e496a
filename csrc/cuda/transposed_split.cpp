// The horizontal directions of long lines through transposed planes (transposed_split.h).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <algorithm>
#include <vector>

#include "cuda/dispatch.h"
#include "cuda/transposed_split.h"

namespace gspn2 {
namespace cuda {
namespace {

// dst planes (a, b) = transpose of the src planes (a, b) (rows x cols), optionally added.
void transpose_planes(const torch::Tensor& src, PlaneMap src_map, torch::Tensor& dst,
                      PlaneMap dst_map, int64_t n0, int64_t n1, int64_t rows, int64_t cols,
                      bool accumulate) {
  const TransposeParams p{src.data_ptr(), dst.data_ptr(), src_map, dst_map, n0, n1,
                          static_cast<int>(rows), static_cast<int>(cols), accumulate};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  GSPN2_DISPATCH_KERNEL_TYPES(src.scalar_type(), "gspn2_transpose", [&] {
    launch_transpose<scalar_t>(p, stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

torch::Tensor transposed_image(const torch::Tensor& t, torch::Tensor into, bool accumulate) {
  const int64_t B = t.size(0), K = t.size(1), rows = t.size(2), cols = t.size(3);
  if (!into.defined()) into = torch::empty({B, K, cols, rows}, t.options());
  const int64_t hw = rows * cols;
  transpose_planes(t, {0, K * hw, hw}, into, {0, K * hw, hw}, B, K, rows, cols, accumulate);
  return into;
}

torch::Tensor take_transposed(const torch::Tensor& t, const std::vector<int64_t>& entries) {
  std::vector<int64_t> sizes(t.sizes().begin(), t.sizes().end());
  const int64_t B = sizes[0], D = sizes[1], rows = sizes[sizes.size() - 2],
                cols = sizes.back(), E = static_cast<int64_t>(entries.size());
  const int64_t hw = rows * cols, K = t.numel() / std::max<int64_t>(1, B * D * hw);
  sizes[1] = E;
  std::swap(sizes[sizes.size() - 2], sizes.back());
  torch::Tensor out = torch::empty(sizes, t.options());
  for (int64_t e = 0; e < E; ++e) {
    transpose_planes(t, {entries[e] * K * hw, D * K * hw, hw}, out, {e * K * hw, E * K * hw, hw},
                     B, K, rows, cols, false);
  }
  return out;
}

void put_transposed(const torch::Tensor& src, torch::Tensor& dst,
                    const std::vector<int64_t>& entries) {
  const int64_t B = dst.size(0), D = dst.size(1), rows = src.size(-2), cols = src.size(-1);
  const int64_t hw = rows * cols, E = static_cast<int64_t>(entries.size());
  const int64_t K = dst.numel() / std::max<int64_t>(1, B * D * hw);
  for (int64_t e = 0; e < E; ++e) {
    transpose_planes(src, {e * K * hw, E * K * hw, hw}, dst, {entries[e] * K * hw, D * K * hw, hw},
                     B, K, rows, cols, false);
  }
}

}  // namespace cuda
}  // namespace gspn2
