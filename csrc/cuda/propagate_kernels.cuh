// Launch of the fused GSPN-2 line and plane kernels (SPEC section 1), instantiated by the
// per-dtype translation units propagate_{fwd,bwd}_{f64,f32,f16,bf16}.cu. The kernels, by concern:
//   line_scan_common.cuh      device helpers: runs, loads / stores, normalised taps, lines
//   line_scan_forward.cuh     forward kernel of the warp / CTA / long line modes
//   line_scan_backward.cuh    backward kernel of the line modes
//   direction_reductions.cuh  float-buffer sums over directions and channel blocks
//   plane_forward.cuh, plane_backward.cuh   the plane modes and their launches
//   shared_line.cuh           the shared-line mode (the longest lines)
#pragma once

#include <c10/cuda/CUDAException.h>

#include "plane_backward.cuh"
#include "shared_line.cuh"

namespace gspn2 {
namespace cuda {

// Dynamic shared memory of a shared-line CTA: two lines of the longest direction.
template <typename T>
size_t shared_line_smem(const Geometry& geo) {
  return 2 * sizeof(Acc<T>) * static_cast<size_t>(geo.H > geo.W ? geo.H : geo.W);
}

template <typename Kernel>
void allow_smem(Kernel kernel, size_t smem) {
  if (smem > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(smem)));
  }
}

template <typename T>
void launch_shared_line_forward(const FwdParams& p, bool normalize, bool merge,
                                cudaStream_t stream) {
  const Geometry& geo = p.geo;
  const dim3 grid(geo.C, geo.D, geo.B);
  const size_t smem = shared_line_smem<T>(geo);
  GSPN2_BOOL_SWITCH(normalize, kNormalize, [&] {
    GSPN2_BOOL_SWITCH(merge, kMerge, [&] {
      const auto kernel = shared_line_forward_kernel<T, kNormalize, kMerge>;
      allow_smem(kernel, smem);
      kernel<<<grid, kSharedLineThreads, smem, stream>>>(p);
    });
  });
  if (merge && geo.D > 1) {
    const int64_t n = static_cast<int64_t>(geo.B) * geo.C * geo.H * geo.W;
    const bool vec = (static_cast<int64_t>(geo.H) * geo.W) % 4 == 0;
    GSPN2_BOOL_SWITCH(vec, kVec, [&] {
      sum_directions_kernel<T, kVec><<<reduction_grid(kVec ? n / 4 : n), 256, 0, stream>>>(
          static_cast<const Acc<T>*>(p.partial), static_cast<T*>(p.out), geo.D, n);
    });
  }
}

template <typename T>
void launch_forward_impl(const FwdParams& p, bool normalize, bool merge, cudaStream_t stream) {
  const Geometry& geo = p.geo;
  if (geo.mode == kPlaneMode) {
    launch_plane_forward<T>(p, normalize, merge, stream);
    return;
  }
  if (geo.mode == kSharedLineMode) {
    launch_shared_line_forward<T>(p, normalize, merge, stream);
    return;
  }
  const dim3 block(geo.threads_per_line, geo.channels_per_cta / geo.channels_per_thread);
  const dim3 grid(geo.C / geo.channels_per_cta, geo.D, geo.B);
  const size_t smem = 4 * sizeof(Acc<T>) * geo.threads_per_line * geo.channels_per_cta;
  GSPN2_BOOL_SWITCH(normalize, kNormalize, [&] {
    GSPN2_BOOL_SWITCH(merge, kMerge, [&] {
      GSPN2_MODE_SWITCH(geo.mode, kMode, [&] {
        GSPN2_KC_SWITCH(T, kMode, false, geo.channels_per_thread, kKC, [&] {
          propagate_forward_kernel<T, kNormalize, kMerge, kMode, kKC>
              <<<grid, block, kMode == kWarpMode ? 0 : smem, stream>>>(p);
        });
      });
    });
  });
}

template <typename T>
void launch_backward_impl(const BwdParams& p, bool normalize, bool merge, cudaStream_t stream) {
  const Geometry& geo = p.geo;
  // Channels whose gate-logit gradients one entry of partial_gates sums (in the CTA or thread).
  int summed = 1;
  if (geo.mode == kPlaneMode) {
    launch_plane_backward<T>(p, normalize, merge, stream);
    summed = geo.channels_per_cta;
  } else if (geo.mode == kSharedLineMode) {
    summed = 1;
    const dim3 grid(geo.C, geo.D, geo.B);
    const size_t smem = shared_line_smem<T>(geo);
    GSPN2_BOOL_SWITCH(normalize, kNormalize, [&] {
      GSPN2_BOOL_SWITCH(merge, kMerge, [&] {
        const auto kernel = shared_line_backward_kernel<T, kNormalize, kMerge>;
        allow_smem(kernel, smem);
        kernel<<<grid, kSharedLineThreads, smem, stream>>>(p);
      });
    });
  } else {
    summed = geo.channels_per_thread;
    const dim3 block(geo.threads_per_line, geo.channels_per_cta / geo.channels_per_thread);
    const dim3 grid(geo.C / geo.channels_per_cta, geo.D, geo.B);
    const size_t smem = 4 * sizeof(Acc<T>) * geo.threads_per_line * geo.channels_per_cta;
    GSPN2_BOOL_SWITCH(normalize, kNormalize, [&] {
      GSPN2_BOOL_SWITCH(merge, kMerge, [&] {
        GSPN2_MODE_SWITCH(geo.mode, kMode, [&] {
          GSPN2_KC_SWITCH(T, kMode, true, geo.channels_per_thread, kKC, [&] {
            propagate_backward_kernel<T, kNormalize, kMerge, kMode, kKC>
                <<<grid, block, kMode == kWarpMode ? 0 : smem, stream>>>(p);
          });
        });
      });
    });
  }
  const int64_t hw = static_cast<int64_t>(geo.H) * geo.W;
  // (the buffers and outputs come from the caching allocator: aligned for 4-element accesses
  // when the element counts are multiples of 4)
  const bool vec = hw % 4 == 0;
  if (geo.D > 1) {
    const int64_t n = static_cast<int64_t>(geo.B) * geo.C * hw;
    GSPN2_BOOL_SWITCH(vec, kVec, [&] {
      sum_directions_kernel<T, kVec><<<reduction_grid(kVec ? n / 4 : n), 256, 0, stream>>>(
          static_cast<const Acc<T>*>(p.partial_x), static_cast<T*>(p.grad_x), geo.D, n);
    });
  }
  if (geo.C / geo.G > summed) {
    const int64_t n = static_cast<int64_t>(geo.B) * geo.D * geo.G * 3 * hw;
    GSPN2_BOOL_SWITCH(vec, kVec, [&] {
      sum_group_channels_kernel<T, kVec><<<reduction_grid(kVec ? n / 4 : n), 256, 0, stream>>>(
          static_cast<const Acc<T>*>(p.partial_gates), static_cast<T*>(p.grad_gates), geo,
          geo.C / geo.G / summed, 3 * hw, n);
    });
  }
}

}  // namespace cuda
}  // namespace gspn2
