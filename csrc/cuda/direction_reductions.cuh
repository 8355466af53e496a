// The float-buffer reductions of the line and plane backward: over directions and over the
// channel blocks of a gate group.
#pragma once

#include "line_scan_backward.cuh"

namespace gspn2 {
namespace cuda {

// The two float-buffer reductions of the backward move 4 consecutive elements per thread and
// keep several independent loads in flight (one scalar load per dependent add measured well
// below the copy bandwidth; docs/ops.md, "Plane-mode backward"); the sums keep their order, so
// the bits do not change.

// Four accumulation-type values from a 16-byte-aligned address.
template <typename A>
__device__ __forceinline__ void load4(const A* ptr, A (&v)[4]) {
  load_cg4(ptr, v);
}

// The 4 values v stored at out (aligned to 4 elements).
template <typename T>
__device__ __forceinline__ void store4(T* out, const Acc<T> (&v)[4]) {
  Pack<RawOf<T>, 4> pk;
#pragma unroll
  for (int e = 0; e < 4; ++e) pk.v[e] = acc_to_raw<T>(v[e]);
  *reinterpret_cast<Pack<RawOf<T>, 4>*>(out) = pk;
}

// out[i] = sum over d of partial[d * n + i], in direction order. VEC: n % 4 == 0, 4 elements
// per thread and iteration.
template <typename T, bool VEC>
__global__ void sum_directions_kernel(const Acc<T>* __restrict__ partial, T* __restrict__ out,
                                      int D, int64_t n) {
  using A = Acc<T>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if constexpr (VEC) {
    for (int64_t i = first * 4; i < n; i += stride * 4) {
      A v[4][4];
#pragma unroll
      for (int d = 0; d < 4; ++d) {
        if (d < D) load4(partial + d * n + i, v[d]);
      }
      A acc[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        acc[e] = v[0][e];
#pragma unroll
        for (int d = 1; d < 4; ++d) {
          if (d < D) acc[e] += v[d][e];
        }
      }
      store4<T>(out + i, acc);
    }
  } else {
    for (int64_t i = first; i < n; i += stride) {
      A acc = 0;
      for (int d = 0; d < D; ++d) acc += partial[d * n + i];
      *reinterpret_cast<RawOf<T>*>(out + i) = acc_to_raw<T>(acc);
    }
  }
}

// Gate gradients of channel-shared gates: grad_gates entry (b, slot[d], g) at r = sum over the
// group's channels cc of partial[(((b * D + d) * G + g) * group + cc), r)], r indexing
// (3, H, W), in channel order. VEC: plane % 4 == 0, 4 consecutive r per thread, the loads of
// 4 channels in flight at once.
template <typename T, bool VEC>
__global__ void sum_group_channels_kernel(const Acc<T>* __restrict__ partial,
                                          T* __restrict__ out, const Geometry geo, int group,
                                          int64_t plane, int64_t n) {
  using A = Acc<T>;
  constexpr int V = VEC ? 4 : 1;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * V;
  for (int64_t i = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * V; i < n;
       i += stride) {
    const int64_t bdg = i / plane, r = i % plane;
    const int g = static_cast<int>(bdg % geo.G);
    const int64_t bd = bdg / geo.G;
    const int b = static_cast<int>(bd / geo.D), d = static_cast<int>(bd % geo.D);
    const A* src = partial + bdg * group * plane + r;
    T* dst = out + (stored_entry(geo, b, d) * geo.G + g) * plane + r;
    if constexpr (VEC) {
      A acc[4] = {0, 0, 0, 0};
      int cc = 0;
      for (; cc + 4 <= group; cc += 4) {
        A v[4][4];
#pragma unroll
        for (int k = 0; k < 4; ++k) load4(src + (cc + k) * plane, v[k]);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[e] += v[k][e];
        }
      }
      for (; cc < group; ++cc) {
        A v[4];
        load4(src + cc * plane, v);
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[e] += v[e];
      }
      store4<T>(dst, acc);
    } else {
      A acc = 0;
      for (int cc = 0; cc < group; ++cc) acc += src[cc * plane];
      *reinterpret_cast<RawOf<T>*>(dst) = acc_to_raw<T>(acc);
    }
  }
}

inline dim3 reduction_grid(int64_t n) {
  const int64_t blocks = (n + 255) / 256;
  return dim3(static_cast<unsigned>(blocks < 65535 * 8 ? blocks : 65535 * 8));
}

}  // namespace cuda
}  // namespace gspn2
