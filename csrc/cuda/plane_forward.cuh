// The plane-mode forward kernel and its launch.
#pragma once

#include "direction_reductions.cuh"

namespace gspn2 {
namespace cuda {

// ---------------------------------------------------------------------------------------
// Plane mode (propagate.h): one CTA per (channel, batch), one warp per direction.
//
// Shared memory, each plane H rows of pitch P = plane_pitch(W) elements, element (i, j) at
// i * P + j: pairs[D] ((lam, u) per pixel; after the scan the pixel's slot holds u_d h_d,
// or h_d without merge, in the accumulation type, which fits in the pair's bytes), gates[D][3],
// x. Staging reads every source plane (contiguous H * W elements) with consecutive threads
// on consecutive 16-byte words. A lane owns NP consecutive positions of every line of its
// direction; neighbours come through shuffles, so the scan needs no barrier.
template <typename T>
struct alignas(2 * sizeof(T)) LamU {
  RawOf<T> lam, u;
};
static_assert(sizeof(LamU<c10::BFloat16>) >= sizeof(float) && sizeof(LamU<double>) >= sizeof(double),
              "a (lam, u) slot must hold one accumulation-type value");

// Copies one contiguous (H, W) plane of `src` into shared memory at dst[(i * P + j) * stride].
// Each thread issues kStageLoads independent loads before it stores any (a loop that stored
// each load before issuing the next kept one load per thread in flight); 8 loads took 128
// registers and cost the 28x28 forward its occupancy (docs/ops.md, "Plane mode"); 4 loads.
constexpr int kStageLoads = 4;
constexpr int kPlaneThreads = 32 * 4 * kPlaneMaxChannels;  // a warp per (channel, direction)

template <typename T>
__device__ __forceinline__ void stage_plane(const T* __restrict__ src, RawOf<T>* dst, int stride,
                                            int H, int W, int P, bool vec) {
  using Raw = RawOf<T>;
  const int hw = H * W;
  const int tid = threadIdx.x, nth = blockDim.x;
  constexpr int K = 16 / static_cast<int>(sizeof(T));
  if (vec) {
    for (int base = tid * K; base < hw; base += kStageLoads * nth * K) {
      Pack<Raw, K> pk[kStageLoads];
#pragma unroll
      for (int u = 0; u < kStageLoads; ++u) {
        const int e0 = base + u * nth * K;
        if (e0 < hw) pk[u] = *reinterpret_cast<const Pack<Raw, K>*>(src + e0);
      }
#pragma unroll
      for (int u = 0; u < kStageLoads; ++u) {
        const int e0 = base + u * nth * K;
        if (e0 >= hw) break;
        int i = e0 / W, j = e0 - i * W;
#pragma unroll
        for (int k = 0; k < K; ++k) {
          dst[(i * P + j) * stride] = pk[u].v[k];
          if (++j == W) j = 0, ++i;
        }
      }
    }
  } else {
    for (int base = tid; base < hw; base += kStageLoads * nth) {
      Raw v[kStageLoads];
#pragma unroll
      for (int u = 0; u < kStageLoads; ++u) {
        const int e = base + u * nth;
        if (e < hw) v[u] = load_raw(src + e);
      }
#pragma unroll
      for (int u = 0; u < kStageLoads; ++u) {
        const int e = base + u * nth;
        if (e >= hw) break;
        const int i = e / W, j = e - i * W;
        dst[(i * P + j) * stride] = v[u];
      }
    }
  }
}

template <typename T, bool NORMALIZE, bool MERGE, int NP>
__global__ void __launch_bounds__(kPlaneThreads, 1) propagate_plane_forward_kernel(const FwdParams p) {
  using A = Acc<T>;
  using Raw = RawOf<T>;
  const Geometry& geo = p.geo;
  const int cpc = geo.channels_per_cta, b = blockIdx.y;
  const int c0 = blockIdx.x * cpc;
  const int H = geo.H, W = geo.W, D = geo.D, P = plane_pitch(geo.W);
  const int plane = H * P;
  const int g = c0 / (geo.C / geo.G);  // the CTA's channels share this group
  const int64_t hw = static_cast<int64_t>(H) * W;
  extern __shared__ __align__(16) unsigned char smem[];
  // gates[D][3], then per channel slot cs: pairs[D], x
  Raw* gsm = reinterpret_cast<Raw*>(smem);
  const int64_t gate_bytes = plane_gate_bytes(H, W, D, sizeof(T));
  const int64_t slot_bytes = plane_slot_bytes(H, W, D, sizeof(T));
  auto pairs_of = [&](int cs) {
    return reinterpret_cast<LamU<T>*>(smem + gate_bytes + cs * slot_bytes);
  };
  auto x_of = [&](int cs) { return reinterpret_cast<Raw*>(pairs_of(cs) + D * plane); };

  // Stage the group's gates once, then x, lam and u of each channel.
  for (int di = 0; di < D; ++di) {
    const T* gp = static_cast<const T*>(p.gates) + (stored_entry(geo, b, di) * geo.G + g) * 3 * hw;
#pragma unroll
    for (int k = 0; k < 3; ++k) stage_plane(gp + k * hw, gsm + (di * 3 + k) * plane, 1, H, W, P, geo.plane_vec);
  }
  for (int cs = 0; cs < cpc; ++cs) {
    const int c = c0 + cs;
    stage_plane(static_cast<const T*>(p.x) + (static_cast<int64_t>(b) * geo.C + c) * hw, x_of(cs),
                1, H, W, P, geo.plane_vec);
    for (int di = 0; di < D; ++di) {
      const int64_t dc_off = (stored_entry(geo, b, di) * geo.C + c) * hw;
      Raw* pr = reinterpret_cast<Raw*>(pairs_of(cs) + di * plane);
      stage_plane(static_cast<const T*>(p.lam) + dc_off, pr, 2, H, W, P, geo.plane_vec);
      if (MERGE) stage_plane(static_cast<const T*>(p.u) + dc_off, pr + 1, 2, H, W, P, geo.plane_vec);
    }
  }
  __syncthreads();

  // The scan of warp (cs, di): channel slot cs, direction di.
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int cs = warp / D, di = warp % D;
  {
    const int c = c0 + cs;
    const Line line(geo, direction_of(geo, di));
    const int n = line.n_line;
    const int64_t dc_off = (stored_entry(geo, b, di) * geo.C + c) * hw;
    T* hidden = MERGE && p.hidden != nullptr ? static_cast<T*>(p.hidden) + dc_off : nullptr;
    const Raw* ga = gsm + di * 3 * plane;
    LamU<T>* pr = pairs_of(cs) + di * plane;
    const Raw* xsm = x_of(cs);
    A h[NP];
#pragma unroll
    for (int q = 0; q < NP; ++q) h[q] = 0;
    int phase = 0;
    for (int s = 0; s < line.n_steps; ++s) {
      const bool restart = phase == 0;
      const A from_left = __shfl_up_sync(0xffffffffu, h[NP - 1], 1);
      const A from_right = __shfl_down_sync(0xffffffffu, h[0], 1);
      const A left = !restart && lane > 0 ? from_left : A(0);
      const A right = !restart && lane < 31 ? from_right : A(0);
      const int l = line.reverse ? line.n_steps - 1 - s : s;  // row (vertical) or column
      A hn[NP];
#pragma unroll
      for (int q = 0; q < NP; ++q) {
        const int pos = lane * NP + q;
        const bool on = pos < n;
        const int idx = on ? (line.vertical ? l * P + pos : pos * P + l) : 0;
        A a[3], w[3], comp[3];
        const bool valid[3] = {on && pos >= 1, on, on && pos + 1 < n};
#pragma unroll
        for (int k = 0; k < 3; ++k) a[k] = raw_to_acc<T>(ga[k * plane + idx]);
        if (NORMALIZE) {
          normalized_taps<T>(a, valid, w, comp);
        } else {
#pragma unroll
          for (int k = 0; k < 3; ++k) w[k] = valid[k] ? a[k] : A(0);
        }
        // (Only lanes on the line read the slot: another lane may have overwritten slot 0.)
        LamU<T> lu{};
        if (on) lu = pr[idx];
        A acc = on ? raw_to_acc<T>(lu.lam) * raw_to_acc<T>(xsm[idx]) : A(0);
        if (!restart) {
          const A hm = q == 0 ? left : h[q - 1];
          const A hp = q == NP - 1 ? right : h[q + 1];
          acc += w[0] * hm + w[1] * h[q] + w[2] * hp;
        }
        hn[q] = acc;
        if (on) {
          // This lane alone reads and writes the slot of (direction, pixel).
          *reinterpret_cast<A*>(pr + idx) = MERGE ? raw_to_acc<T>(lu.u) * acc : acc;
          if (hidden != nullptr) {
            const int64_t o = line.vertical ? static_cast<int64_t>(l) * W + pos
                                            : static_cast<int64_t>(pos) * W + l;
            *reinterpret_cast<Raw*>(hidden + o) = acc_to_raw<T>(acc);
          }
        }
      }
#pragma unroll
      for (int q = 0; q < NP; ++q) h[q] = hn[q];
      phase = (geo.chunk > 0 && phase + 1 == geo.chunk) ? 0 : phase + 1;
    }
  }
  __syncthreads();

  // Write out: merged y (sum in direction order) or each h_d, coalesced.
  const int tid = threadIdx.x, nth = blockDim.x;
  for (int e = tid; e < cpc * hw; e += nth) {
    const int cs = e / hw, pix = e - cs * hw;
    const int i = pix / W, j = pix - i * W, idx = i * P + j;
    const int c = c0 + cs;
    const LamU<T>* pr = pairs_of(cs);
    if (MERGE) {
      A acc = *reinterpret_cast<const A*>(pr + idx);
      for (int d = 1; d < D; ++d) acc += *reinterpret_cast<const A*>(pr + d * plane + idx);
      *reinterpret_cast<Raw*>(static_cast<T*>(p.out) + (static_cast<int64_t>(b) * geo.C + c) * hw + pix) =
          acc_to_raw<T>(acc);
    } else {
      for (int d = 0; d < D; ++d) {
        const int64_t dc_off = (stored_entry(geo, b, d) * geo.C + c) * hw;
        *reinterpret_cast<Raw*>(static_cast<T*>(p.out) + dc_off + pix) =
            acc_to_raw<T>(*reinterpret_cast<const A*>(pr + d * plane + idx));
      }
    }
  }
}

template <typename T>
void launch_plane_forward(const FwdParams& p, bool normalize, bool merge, cudaStream_t stream) {
  const Geometry& geo = p.geo;
  const size_t smem = static_cast<size_t>(
      plane_smem_bytes(geo.H, geo.W, geo.D, sizeof(T), geo.channels_per_cta));
  const int longest = geo.threads_per_line;  // the longest line (bindings.cpp)
  const dim3 grid(geo.C / geo.channels_per_cta, geo.B), block(32 * geo.D * geo.channels_per_cta);
  GSPN2_BOOL_SWITCH(normalize, kNormalize, [&] {
    GSPN2_BOOL_SWITCH(merge, kMerge, [&] {
      GSPN2_BOOL_SWITCH(longest > 32, kTwo, [&] {
        constexpr int NP = kTwo ? 2 : 1;
        auto kernel = propagate_plane_forward_kernel<T, kNormalize, kMerge, NP>;
        if (smem > 48 * 1024) {
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem));
        }
        kernel<<<grid, block, smem, stream>>>(p);
      });
    });
  });
}

}  // namespace cuda
}  // namespace gspn2
