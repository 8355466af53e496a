// Layer norm over the last dimension (layer_norm.h says how the work is split).
//
// A lane holds VPT values of each of its warp's ROWS rows: channel c = lane + 32 k, k < VPT,
// with VPT the smallest power of two such that 32 VPT >= C. ROWS rows per warp at a time keep
// about 8 loads per lane in flight whatever the width.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "layer_norm.h"

namespace gspn2 {
namespace cuda {
namespace {

constexpr int kWarps = 4;  // warps per CTA
constexpr int kThreads = 32 * kWarps;
constexpr int kCtasPerSm = 8;  // CTAs per SM aimed at by both grids
constexpr int kSumThreads = 32;  // partial rows summed per column by one CTA of the second pass

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;  // the same value in every lane (butterfly), in a fixed order
}

template <typename TX, typename TY, int VPT, int ROWS>
__global__ void __launch_bounds__(kThreads)
    layer_norm_forward_kernel(const TX* __restrict__ x, const float* __restrict__ weight,
                              const float* __restrict__ bias, TY* __restrict__ y,
                              float* __restrict__ mean_out, float* __restrict__ rstd_out,
                              int64_t rows, int channels, float eps) {
  const int lane = threadIdx.x & 31;
  const float inv_channels = 1.f / static_cast<float>(channels);
  const int64_t step = static_cast<int64_t>(gridDim.x) * kWarps * ROWS;
  for (int64_t first = (static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5)) * ROWS;
       first < rows; first += step) {
    float v[ROWS][VPT];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      const bool row_ok = first + r < rows;
      const TX* xr = x + (first + r) * channels;
#pragma unroll
      for (int k = 0; k < VPT; ++k) {
        const int c = lane + 32 * k;
        v[r][k] = row_ok && c < channels ? static_cast<float>(xr[c]) : 0.f;
      }
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      if (first + r >= rows) break;
      float sum = 0.f;
#pragma unroll
      for (int k = 0; k < VPT; ++k) sum += v[r][k];
      const float mean = warp_sum(sum) * inv_channels;
      float squares = 0.f;
#pragma unroll
      for (int k = 0; k < VPT; ++k) {
        const float d = lane + 32 * k < channels ? v[r][k] - mean : 0.f;
        squares += d * d;
      }
      const float rstd = rsqrtf(warp_sum(squares) * inv_channels + eps);
      TY* yr = y + (first + r) * channels;
#pragma unroll
      for (int k = 0; k < VPT; ++k) {
        const int c = lane + 32 * k;
        if (c < channels) yr[c] = static_cast<TY>((v[r][k] - mean) * rstd * weight[c] + bias[c]);
      }
      if (lane == 0) {
        mean_out[first + r] = mean;
        rstd_out[first + r] = rstd;
      }
    }
  }
}

// dx of every row, and partial[cta] = (sum of dy xhat, sum of dy) over the CTA's rows.
template <typename TX, typename TY, int VPT, int ROWS>
__global__ void __launch_bounds__(kThreads)
    layer_norm_backward_kernel(const TY* __restrict__ grad_y, const TX* __restrict__ x,
                               const float* __restrict__ mean, const float* __restrict__ rstd,
                               const float* __restrict__ weight, TX* __restrict__ grad_x,
                               float* __restrict__ partial, int64_t rows, int channels,
                               int64_t rows_per_cta) {
  __shared__ float warp_sums[kWarps][2][32 * VPT];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const float inv_channels = 1.f / static_cast<float>(channels);
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * rows_per_cta;
  const int64_t end = std::min(rows, begin + rows_per_cta);
  float dw[VPT], db[VPT];
#pragma unroll
  for (int k = 0; k < VPT; ++k) dw[k] = db[k] = 0.f;
  for (int64_t first = begin + warp * ROWS; first < end; first += kWarps * ROWS) {
    float xh[ROWS][VPT], g[ROWS][VPT];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      const bool row_ok = first + r < end;
      const int64_t offset = (first + r) * channels;
#pragma unroll
      for (int k = 0; k < VPT; ++k) {
        const int c = lane + 32 * k;
        const bool ok = row_ok && c < channels;
        xh[r][k] = ok ? static_cast<float>(x[offset + c]) : 0.f;
        g[r][k] = ok ? static_cast<float>(grad_y[offset + c]) : 0.f;
      }
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      if (first + r >= end) break;
      const float m = mean[first + r], s = rstd[first + r];
      float sum_g = 0.f, sum_gx = 0.f;
#pragma unroll
      for (int k = 0; k < VPT; ++k) {
        const int c = lane + 32 * k;
        const float w = c < channels ? weight[c] : 0.f;
        xh[r][k] = (xh[r][k] - m) * s;
        dw[k] += g[r][k] * xh[r][k];
        db[k] += g[r][k];
        g[r][k] *= w;  // dL/dxhat
        sum_g += g[r][k];
        sum_gx += g[r][k] * xh[r][k];
      }
      sum_g = warp_sum(sum_g) * inv_channels;
      sum_gx = warp_sum(sum_gx) * inv_channels;
      TX* gxr = grad_x + (first + r) * channels;
#pragma unroll
      for (int k = 0; k < VPT; ++k) {
        const int c = lane + 32 * k;
        if (c < channels) gxr[c] = static_cast<TX>(s * (g[r][k] - sum_g - xh[r][k] * sum_gx));
      }
    }
  }
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    warp_sums[warp][0][lane + 32 * k] = dw[k];
    warp_sums[warp][1][lane + 32 * k] = db[k];
  }
  __syncthreads();
  for (int j = threadIdx.x; j < 2 * channels; j += kThreads) {
    const int part = j / channels, c = j - part * channels;
    float total = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) total += warp_sums[w][part][c];
    partial[static_cast<int64_t>(blockIdx.x) * 2 * channels + j] = total;
  }
}

// sum over p of partial[p][j], p in order within each of kSumThreads interleaved strands, the
// strands summed in order: (ctas, 2 C) -> grad_weight (j < C) and grad_bias (j - C).
__global__ void __launch_bounds__(32 * kSumThreads)
    sum_partial_rows_kernel(const float* __restrict__ partial, int ctas, int channels,
                            float* __restrict__ grad_weight, float* __restrict__ grad_bias) {
  const int width = 2 * channels;
  __shared__ float strands[kSumThreads][33];
  const int column = blockIdx.x * 32 + threadIdx.x;
  float total = 0.f;
  if (column < width) {
    for (int p = threadIdx.y; p < ctas; p += kSumThreads) total += partial[int64_t(p) * width + column];
  }
  strands[threadIdx.y][threadIdx.x] = total;
  __syncthreads();
  if (threadIdx.y == 0 && column < width) {
    float sum = 0.f;
#pragma unroll 8
    for (int t = 0; t < kSumThreads; ++t) sum += strands[t][threadIdx.x];
    if (column < channels) {
      grad_weight[column] = sum;
    } else {
      grad_bias[column - channels] = sum;
    }
  }
}

int sm_count(const at::Tensor& x) {
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, x.get_device()));
  return count;
}

// Calls f(std::integral_constant<int, VPT>, std::integral_constant<int, ROWS>).
template <typename F>
void dispatch_width(int channels, F&& f) {
  if (channels <= 32) return f(std::integral_constant<int, 1>(), std::integral_constant<int, 8>());
  if (channels <= 64) return f(std::integral_constant<int, 2>(), std::integral_constant<int, 4>());
  if (channels <= 128) return f(std::integral_constant<int, 4>(), std::integral_constant<int, 2>());
  if (channels <= 256) return f(std::integral_constant<int, 8>(), std::integral_constant<int, 1>());
  if (channels <= 512) return f(std::integral_constant<int, 16>(), std::integral_constant<int, 1>());
  return f(std::integral_constant<int, 32>(), std::integral_constant<int, 1>());
}

template <typename T>
struct Tag {
  using type = T;
};

bool is_norm_type(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
}

template <typename TX, typename F>
void dispatch_y(at::ScalarType ty, F&& f) {
  if (ty == at::kFloat) return f(Tag<TX>(), Tag<float>());
  if (ty == at::kHalf) return f(Tag<TX>(), Tag<at::Half>());
  return f(Tag<TX>(), Tag<at::BFloat16>());
}

// Calls f(Tag<TX>, Tag<TY>) for the storage types of x and y (float32, float16, bfloat16).
template <typename F>
void dispatch_types(at::ScalarType tx, at::ScalarType ty, F&& f) {
  if (tx == at::kFloat) return dispatch_y<float>(ty, f);
  if (tx == at::kHalf) return dispatch_y<at::Half>(ty, f);
  return dispatch_y<at::BFloat16>(ty, f);
}

void check_input(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.device() == x.device(), "layer_norm: ", name,
              " must be a CUDA tensor on ", x.device(), ", got ", t.device());
  TORCH_CHECK(is_norm_type(t.scalar_type()), "layer_norm: ", name,
              " must be float32, float16 or bfloat16, got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == x.sizes() && t.is_contiguous(), "layer_norm: ", name,
              " must be a contiguous tensor of x's shape ", x.sizes(), ", got ", t.sizes(),
              " with strides ", t.strides());
}

void check_vector(const at::Tensor& t, const at::Tensor& x, const char* name,
                  at::IntArrayRef shape) {
  TORCH_CHECK(t.is_cuda() && t.device() == x.device() && t.scalar_type() == at::kFloat &&
                  t.is_contiguous() && t.sizes() == shape,
              "layer_norm: ", name, " must be a contiguous float32 CUDA tensor of shape ", shape,
              " on ", x.device(), ", got ", t.scalar_type(), " ", t.sizes(), " on ", t.device());
}

int64_t check_x(const at::Tensor& x) {
  TORCH_CHECK(x.is_cuda(), "layer_norm: x must be a CUDA tensor, got ", x.device());
  TORCH_CHECK(x.dim() >= 1 && x.is_contiguous(),
              "layer_norm: x must be a contiguous tensor of at least one dimension, got shape ",
              x.sizes(), " with strides ", x.strides());
  const int64_t channels = x.size(-1);
  TORCH_CHECK(channels >= 1 && channels <= kMaxLayerNormChannels,
              "layer_norm: the normalised (last) dimension must have 1 to ", kMaxLayerNormChannels,
              " elements, got ", channels);
  TORCH_CHECK(is_norm_type(x.scalar_type()),
              "layer_norm: x must be float32, float16 or bfloat16, got ", x.scalar_type());
  return channels;
}

}  // namespace

std::vector<at::Tensor> layer_norm_forward(const at::Tensor& x, const at::Tensor& weight,
                                           const at::Tensor& bias, double eps,
                                           at::ScalarType out_dtype) {
  const int64_t channels = check_x(x);
  TORCH_CHECK(is_norm_type(out_dtype),
              "layer_norm: the output dtype must be float32, float16 or bfloat16, got ", out_dtype);
  check_vector(weight, x, "weight", {channels});
  check_vector(bias, x, "bias", {channels});
  TORCH_CHECK(eps > 0, "layer_norm: eps must be positive, got ", eps);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t rows = x.numel() / channels;
  auto stats_shape = x.sizes().vec();
  stats_shape.pop_back();
  at::Tensor y = at::empty(x.sizes(), x.options().dtype(out_dtype));
  at::Tensor mean = at::empty(stats_shape, x.options().dtype(at::kFloat));
  at::Tensor rstd = at::empty(stats_shape, x.options().dtype(at::kFloat));
  if (rows == 0) return {y, mean, rstd};
  auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch_types(x.scalar_type(), out_dtype, [&](auto tx, auto ty) {
    using TX = typename decltype(tx)::type;
    using TY = typename decltype(ty)::type;
    dispatch_width(static_cast<int>(channels), [&](auto vpt, auto row_count) {
      constexpr int VPT = decltype(vpt)::value, ROWS = decltype(row_count)::value;
      const int64_t units = (rows + kWarps * ROWS - 1) / (kWarps * ROWS);
      const int ctas = static_cast<int>(std::min<int64_t>(units, int64_t(sm_count(x)) * kCtasPerSm * 2));
      layer_norm_forward_kernel<TX, TY, VPT, ROWS><<<ctas, kThreads, 0, stream>>>(
          x.data_ptr<TX>(), weight.data_ptr<float>(), bias.data_ptr<float>(), y.data_ptr<TY>(), mean.data_ptr<float>(), rstd.data_ptr<float>(), rows,
          static_cast<int>(channels), static_cast<float>(eps));
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {y, mean, rstd};
}

std::vector<at::Tensor> layer_norm_backward(const at::Tensor& grad_y, const at::Tensor& x,
                                            const at::Tensor& mean, const at::Tensor& rstd,
                                            const at::Tensor& weight) {
  const int64_t channels = check_x(x);
  check_input(grad_y, x, "grad_y");
  auto stats_shape = x.sizes().vec();
  stats_shape.pop_back();
  check_vector(mean, x, "mean", stats_shape);
  check_vector(rstd, x, "rstd", stats_shape);
  check_vector(weight, x, "weight", {channels});
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t rows = x.numel() / channels;
  at::Tensor grad_x = at::empty_like(x, at::MemoryFormat::Contiguous);
  at::Tensor grad_weight = at::zeros({channels}, x.options().dtype(at::kFloat));
  at::Tensor grad_bias = at::zeros({channels}, x.options().dtype(at::kFloat));
  if (rows == 0) return {grad_x, grad_weight, grad_bias};
  auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch_types(x.scalar_type(), grad_y.scalar_type(), [&](auto tx, auto ty) {
    using TX = typename decltype(tx)::type;
    using TY = typename decltype(ty)::type;
    dispatch_width(static_cast<int>(channels), [&](auto vpt, auto row_count) {
      constexpr int VPT = decltype(vpt)::value, ROWS = decltype(row_count)::value;
      const int64_t units = (rows + kWarps * ROWS - 1) / (kWarps * ROWS);
      const int64_t ctas = std::min<int64_t>(units, int64_t(sm_count(x)) * kCtasPerSm);
      const int64_t rows_per_cta = (rows + ctas - 1) / ctas;
      const int64_t used = (rows + rows_per_cta - 1) / rows_per_cta;
      at::Tensor partial = at::empty({used, 2 * channels}, x.options().dtype(at::kFloat));
      layer_norm_backward_kernel<TX, TY, VPT, ROWS><<<used, kThreads, 0, stream>>>(
          grad_y.data_ptr<TY>(), x.data_ptr<TX>(), mean.data_ptr<float>(), rstd.data_ptr<float>(),
          weight.data_ptr<float>(), grad_x.data_ptr<TX>(),
          partial.data_ptr<float>(), rows, static_cast<int>(channels), rows_per_cta);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      sum_partial_rows_kernel<<<(2 * channels + 31) / 32, dim3(32, kSumThreads), 0, stream>>>(
          partial.data_ptr<float>(), static_cast<int>(used), static_cast<int>(channels),
          grad_weight.data_ptr<float>(), grad_bias.data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace cuda
}  // namespace gspn2
