// Plane transposes of the horizontal directions (propagate.h, bindings.cpp).
#include <algorithm>
#include <type_traits>

#include "line_scan_common.cuh"

namespace gspn2 {
namespace cuda {
namespace {

constexpr int kThreadsX = 32, kThreadsY = 8;  // a CTA of 32 x 8 threads per tile

// 16-bit elements move in pairs (one 32-bit word per thread and access), so that a warp reads
// and writes 128 contiguous bytes; the tile is then 64 x 64 elements, 8 rows per thread on
// each side (32 x 32 tiles of single 16-bit elements moved half the bytes per second;
// docs/ops.md, "Horizontal directions of long lines").
template <typename T>
constexpr int pair_width() {
  return sizeof(T) == 2 ? 2 : 1;
}

// A grid-stride loop over the tiles of every plane: each tile read along src rows and written
// along dst rows (src columns) through a padded shared tile, so both sides are coalesced. The
// next tile's loads are sent before the current tile is written out, so that a CTA always has
// reads in flight. PAIRS: 16-bit elements, even rows, columns and plane offsets (whole-word
// accesses).
template <typename T, bool ACCUMULATE, bool PAIRS>
__global__ void __launch_bounds__(kThreadsX * kThreadsY)
    transpose_planes_kernel(const TransposeParams p) {
  using Raw = RawOf<T>;
  using Word = std::conditional_t<PAIRS, uint32_t, Raw>;  // what one access moves
  constexpr int V = PAIRS ? 2 : 1, kTile = kThreadsX * V, kLoads = kTile / kThreadsY;
  __shared__ Raw tile[kTile][kTile + 1];
  const T* src = static_cast<const T*>(p.src);
  T* dst = static_cast<T*>(p.dst);
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int tiles_c = (p.cols + kTile - 1) / kTile, tiles_r = (p.rows + kTile - 1) / kTile;
  const int64_t per_plane = static_cast<int64_t>(tiles_c) * tiles_r;
  const int64_t tiles = per_plane * p.n0 * p.n1;
  struct Tile {
    const T* s;
    T* d;
    int r0, c0;
  };
  auto tile_of = [&](int64_t t) {
    const int64_t plane = t / per_plane, within = t % per_plane;
    const int64_t a = plane / p.n1, b = plane % p.n1;
    return Tile{src + p.src_map.base + a * p.src_map.s0 + b * p.src_map.s1,
                dst + p.dst_map.base + a * p.dst_map.s0 + b * p.dst_map.s1,
                static_cast<int>(within / tiles_c) * kTile, static_cast<int>(within % tiles_c) * kTile};
  };
  Word w[kLoads];
  auto load = [&](const Tile& tl) {
#pragma unroll
    for (int k = 0; k < kLoads; ++k) {
      const int r = tl.r0 + ty + k * kThreadsY, c = tl.c0 + tx * V;  // src row r, columns c, c + 1
      w[k] = r < p.rows && c < p.cols
                 ? *reinterpret_cast<const Word*>(tl.s + static_cast<int64_t>(r) * p.cols + c)
                 : Word(0);
    }
  };
  int64_t t = blockIdx.x;
  if (t >= tiles) return;
  Tile cur = tile_of(t);
  load(cur);
  for (; t < tiles; t += gridDim.x) {
#pragma unroll
    for (int k = 0; k < kLoads; ++k) {
      if constexpr (PAIRS) {
        tile[ty + k * kThreadsY][tx * 2] = static_cast<Raw>(w[k] & 0xffffu);
        tile[ty + k * kThreadsY][tx * 2 + 1] = static_cast<Raw>(w[k] >> 16);
      } else {
        tile[ty + k * kThreadsY][tx] = w[k];
      }
    }
    __syncthreads();
    const Tile out = cur;
    if (t + gridDim.x < tiles) {
      cur = tile_of(t + gridDim.x);
      load(cur);  // in flight while this tile is written
    }
#pragma unroll
    for (int k = 0; k < kTile; k += kThreadsY) {
      const int c = out.c0 + ty + k, r = out.r0 + tx * V;  // dst row c, columns r .. r + V - 1
      if (r < p.rows && c < p.cols) {
        T* at = out.d + static_cast<int64_t>(c) * p.rows + r;
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
          Raw* o = reinterpret_cast<Raw*>(at);
          Raw v = tile[tx][ty + k];
          if (ACCUMULATE) v = acc_to_raw<T>(raw_to_acc<T>(*o) + raw_to_acc<T>(v));
          *o = v;
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
  const int64_t tile = kThreadsX * (pairs ? 2 : 1);
  const int64_t tiles = (p.cols + tile - 1) / tile * ((p.rows + tile - 1) / tile) * planes;
  // a resident grid: the SMs times the CTAs of 256 threads one SM holds
  // (the launch check in bindings.cpp reports a failed query)
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    sms = 0;
  }
  const int64_t resident = sms > 0 ? static_cast<int64_t>(sms) * 8 : tiles;
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>(tiles, std::min<int64_t>(resident, 1 << 30))));
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
