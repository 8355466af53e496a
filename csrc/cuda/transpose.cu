// Plane transposes of the horizontal directions (propagate.h, bindings.cpp).
#include "propagate_kernels.cuh"

namespace gspn2 {
namespace cuda {
namespace {

constexpr int kThreadsX = 32, kThreadsY = 8;  // a CTA of 32 x 8 threads per tile

// 16-bit elements move in pairs (one 32-bit word per thread and access), so that a warp reads
// and writes 128 contiguous bytes; the tile is then 64 x 64 elements, 8 rows per thread on
// each side (measured on the H100: 32 x 32 tiles of single 16-bit elements moved 1.2 TB/s).
template <typename T>
constexpr int pair_width() {
  return sizeof(T) == 2 ? 2 : 1;
}

// One tile of every plane of a grid-stride loop over planes: read along src rows, written
// along dst rows (src columns) through a padded shared tile, so both sides are coalesced.
// PAIRS: 16-bit elements, even rows and columns and plane offsets (whole-word accesses).
template <typename T, bool ACCUMULATE, bool PAIRS>
__global__ void __launch_bounds__(kThreadsX * kThreadsY)
    transpose_planes_kernel(const TransposeParams p) {
  using Raw = RawOf<T>;
  constexpr int V = PAIRS ? 2 : 1, kTile = kThreadsX * V;
  __shared__ Raw tile[kTile][kTile + 1];
  const T* src = static_cast<const T*>(p.src);
  T* dst = static_cast<T*>(p.dst);
  const int c0 = blockIdx.x * kTile, r0 = blockIdx.y * kTile;
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int64_t plane = blockIdx.z; plane < p.n0 * p.n1; plane += gridDim.z) {
    const int64_t a = plane / p.n1, b = plane % p.n1;
    const T* s = src + p.src_map.base + a * p.src_map.s0 + b * p.src_map.s1;
    T* d = dst + p.dst_map.base + a * p.dst_map.s0 + b * p.dst_map.s1;
#pragma unroll
    for (int k = 0; k < kTile; k += kThreadsY) {
      const int r = r0 + ty + k, c = c0 + tx * V;  // src row r, columns c .. c + V - 1
      if (r < p.rows && c < p.cols) {
        const T* at = s + static_cast<int64_t>(r) * p.cols + c;
        if constexpr (PAIRS) {
          const uint32_t word = *reinterpret_cast<const uint32_t*>(at);
          tile[ty + k][tx * 2] = static_cast<Raw>(word & 0xffffu);
          tile[ty + k][tx * 2 + 1] = static_cast<Raw>(word >> 16);
        } else {
          tile[ty + k][tx] = load_raw(at);
        }
      }
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kTile; k += kThreadsY) {
      const int c = c0 + ty + k, r = r0 + tx * V;  // dst row c, columns r .. r + V - 1
      if (r < p.rows && c < p.cols) {
        T* at = d + static_cast<int64_t>(c) * p.rows + r;
        if constexpr (PAIRS) {
          Raw lo = tile[tx * 2][ty + k], hi = tile[tx * 2 + 1][ty + k];
          uint32_t* word = reinterpret_cast<uint32_t*>(at);
          if (ACCUMULATE) {
            const uint32_t old = *word;
            lo = acc_to_raw<T>(raw_to_acc<T>(static_cast<Raw>(old & 0xffffu)) + raw_to_acc<T>(lo));
            hi = acc_to_raw<T>(raw_to_acc<T>(static_cast<Raw>(old >> 16)) + raw_to_acc<T>(hi));
          }
          *word = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
        } else {
          Raw* out = reinterpret_cast<Raw*>(at);
          Raw v = tile[tx][ty + k];
          if (ACCUMULATE) v = acc_to_raw<T>(raw_to_acc<T>(*out) + raw_to_acc<T>(v));
          *out = v;
        }
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
  auto even = [](int64_t v) { return v % 2 == 0; };
  const bool pairs = pair_width<T>() == 2 && even(p.rows) && even(p.cols) &&
                     even(p.src_map.base) && even(p.src_map.s0) && even(p.src_map.s1) &&
                     even(p.dst_map.base) && even(p.dst_map.s0) && even(p.dst_map.s1) &&
                     reinterpret_cast<uintptr_t>(p.src) % 4 == 0 &&
                     reinterpret_cast<uintptr_t>(p.dst) % 4 == 0;
  const int tile = kThreadsX * (pairs ? 2 : 1);
  const dim3 grid((p.cols + tile - 1) / tile, (p.rows + tile - 1) / tile,
                  static_cast<unsigned>(planes < 65535 ? planes : 65535));
  const dim3 block(kThreadsX, kThreadsY);
  GSPN2_BOOL_SWITCH(p.accumulate, kAccumulate, [&] {
    GSPN2_BOOL_SWITCH(pairs, kPairs, [&] {
      if constexpr (kPairs && pair_width<T>() != 2) return;  // not instantiated
      else transpose_planes_kernel<T, kAccumulate, kPairs><<<grid, block, 0, stream>>>(p);
    });
  });
}

template void launch_transpose<double>(const TransposeParams&, cudaStream_t);
template void launch_transpose<float>(const TransposeParams&, cudaStream_t);
template void launch_transpose<c10::Half>(const TransposeParams&, cudaStream_t);
template void launch_transpose<c10::BFloat16>(const TransposeParams&, cudaStream_t);

}  // namespace cuda
}  // namespace gspn2
