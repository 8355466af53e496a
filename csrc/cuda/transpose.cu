// Plane transposes of the horizontal directions (propagate.h, bindings.cpp).
#include "propagate_kernels.cuh"

namespace gspn2 {
namespace cuda {
namespace {

constexpr int kTile = 32, kTileRows = 8;  // a 32 x 32 tile per CTA of 32 x 8 threads

// One tile of every plane of a grid-stride loop over planes: read along src rows, written
// along dst rows (src columns) through a padded shared tile, so both sides are coalesced.
template <typename T, bool ACCUMULATE>
__global__ void __launch_bounds__(kTile * kTileRows)
    transpose_planes_kernel(const TransposeParams p) {
  __shared__ RawOf<T> tile[kTile][kTile + 1];
  const T* src = static_cast<const T*>(p.src);
  T* dst = static_cast<T*>(p.dst);
  const int c0 = blockIdx.x * kTile, r0 = blockIdx.y * kTile;
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int64_t plane = blockIdx.z; plane < p.n0 * p.n1; plane += gridDim.z) {
    const int64_t a = plane / p.n1, b = plane % p.n1;
    const T* s = src + p.src_map.base + a * p.src_map.s0 + b * p.src_map.s1;
    T* d = dst + p.dst_map.base + a * p.dst_map.s0 + b * p.dst_map.s1;
#pragma unroll
    for (int k = 0; k < kTile; k += kTileRows) {
      const int r = r0 + ty + k, c = c0 + tx;
      if (r < p.rows && c < p.cols) tile[ty + k][tx] = load_raw(s + static_cast<int64_t>(r) * p.cols + c);
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kTile; k += kTileRows) {
      const int c = c0 + ty + k, r = r0 + tx;  // dst row c, column r
      if (r < p.rows && c < p.cols) {
        RawOf<T>* out = reinterpret_cast<RawOf<T>*>(d + static_cast<int64_t>(c) * p.rows + r);
        RawOf<T> v = tile[tx][ty + k];
        if (ACCUMULATE) v = acc_to_raw<T>(raw_to_acc<T>(*out) + raw_to_acc<T>(v));
        *out = v;
      }
    }
    __syncthreads();
  }
}

}  // namespace

template <typename T>
void launch_transpose(const TransposeParams& p, cudaStream_t stream) {
  const int64_t planes = p.n0 * p.n1;
  if (planes == 0 || p.rows == 0 || p.cols == 0) return;
  const dim3 grid((p.cols + kTile - 1) / kTile, (p.rows + kTile - 1) / kTile,
                  static_cast<unsigned>(planes < 65535 ? planes : 65535));
  const dim3 block(kTile, kTileRows);
  if (p.accumulate) {
    transpose_planes_kernel<T, true><<<grid, block, 0, stream>>>(p);
  } else {
    transpose_planes_kernel<T, false><<<grid, block, 0, stream>>>(p);
  }
}

template void launch_transpose<double>(const TransposeParams&, cudaStream_t);
template void launch_transpose<float>(const TransposeParams&, cudaStream_t);
template void launch_transpose<c10::Half>(const TransposeParams&, cudaStream_t);
template void launch_transpose<c10::BFloat16>(const TransposeParams&, cudaStream_t);

}  // namespace cuda
}  // namespace gspn2
