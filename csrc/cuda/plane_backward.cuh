// The plane-mode backward kernel and its launch.
#pragma once

#include "plane_forward.cuh"

namespace gspn2 {
namespace cuda {

// ---------------------------------------------------------------------------------------
// Plane-mode backward (propagate.h): one CTA per (batch, direction, cpc channels of one gate
// group), one warp per channel. Shared memory: the direction's 3 gate planes (shared by the
// channels), then per channel slot the planes pairs ((lam, x) per pixel), grad_out, u and h in
// the storage type, and a double-buffered line of gate-logit gradients per slot
// (accumulation type, positions < kPlaneMaxLine). All staged with coalesced loads. The warp of
// slot cs walks its direction's steps in reverse; at step s the lane owning pixel p reads its
// inputs and overwrites, at that pixel only: grad_out <- dlam = x dh, u <- du = h grad_out,
// (lam, x) <- lam dh (accumulation type), and (the first slot, after summing the slots' gate
// gradients in slot order) the gate planes <- the gate-logit gradients. One barrier, then every
// output is written out coalesced. dx of the direction goes to grad_x (D = 1) or to the
// per-direction float buffer summed by sum_directions_kernel; gate gradients go to grad_gates
// when the CTA holds the whole group, else (summed over its cpc channels) to the float buffer
// (B, D, C / cpc, 3, H, W) summed by sum_group_channels_kernel.
template <typename T>
struct alignas(2 * sizeof(T)) LamX {
  RawOf<T> lam, x;
};

template <typename T, bool NORMALIZE, bool MERGE, int NP>
__global__ void __launch_bounds__(32 * kPlaneMaxChannels, 1)
    propagate_plane_backward_kernel(const BwdParams p) {
  using A = Acc<T>;
  using Raw = RawOf<T>;
  const Geometry& geo = p.geo;
  const int cpc = geo.channels_per_cta, di = blockIdx.y, b = blockIdx.z;
  const int c0 = blockIdx.x * cpc;
  const int H = geo.H, W = geo.W, D = geo.D, P = plane_pitch(geo.W);
  const int plane = H * P;
  const int group = geo.C / geo.G;
  const int g = c0 / group;
  const bool whole_group = cpc == group;
  const int64_t hw = static_cast<int64_t>(H) * W;
  extern __shared__ __align__(16) unsigned char smem[];
  Raw* gsm = reinterpret_cast<Raw*>(smem);
  const int64_t gate_bytes = round16(static_cast<int64_t>(3) * plane * sizeof(T));
  const int64_t slot_bytes = plane_bwd_slot_bytes(H, W, sizeof(T));
  auto pairs_of = [&](int cs) { return reinterpret_cast<LamX<T>*>(smem + gate_bytes + cs * slot_bytes); };
  auto go_of = [&](int cs) { return reinterpret_cast<Raw*>(pairs_of(cs) + plane); };
  auto u_of = [&](int cs) { return go_of(cs) + plane; };
  auto h_of = [&](int cs) { return go_of(cs) + 2 * plane; };
  A* lines = reinterpret_cast<A*>(smem + gate_bytes + cpc * slot_bytes);  // [2][cpc][3][kPlaneMaxLine]
  auto line_at = [&](int buf, int cs, int k) { return lines + ((buf * cpc + cs) * 3 + k) * kPlaneMaxLine; };

  const int64_t bdg = stored_entry(geo, b, di) * geo.G + g;
  {
    const T* gp = static_cast<const T*>(p.gates) + bdg * 3 * hw;
#pragma unroll
    for (int k = 0; k < 3; ++k) stage_plane(gp + k * hw, gsm + k * plane, 1, H, W, P, geo.plane_vec);
  }
  for (int cs = 0; cs < cpc; ++cs) {
    const int c = c0 + cs;
    const int64_t x_off = (static_cast<int64_t>(b) * geo.C + c) * hw;
    const int64_t dc_off = (stored_entry(geo, b, di) * geo.C + c) * hw;
    Raw* pr = reinterpret_cast<Raw*>(pairs_of(cs));
    stage_plane(static_cast<const T*>(p.lam) + dc_off, pr, 2, H, W, P, geo.plane_vec);
    stage_plane(static_cast<const T*>(p.x) + x_off, pr + 1, 2, H, W, P, geo.plane_vec);
    stage_plane(static_cast<const T*>(p.grad_out) + (MERGE ? x_off : dc_off), go_of(cs), 1, H, W,
                P, geo.plane_vec);
    if (MERGE) stage_plane(static_cast<const T*>(p.u) + dc_off, u_of(cs), 1, H, W, P, geo.plane_vec);
    stage_plane(static_cast<const T*>(p.hidden) + dc_off, h_of(cs), 1, H, W, P, geo.plane_vec);
  }
  __syncthreads();

  const int cs = threadIdx.x / 32, lane = threadIdx.x % 32;
  const Line line(geo, direction_of(geo, di));
  const int n = line.n_line;
  LamX<T>* pr = pairs_of(cs);
  Raw* gosm = go_of(cs);
  Raw* usm = u_of(cs);
  const Raw* hsm = h_of(cs);
  A* partial_gates = whole_group ? nullptr
                                 : static_cast<A*>(p.partial_gates) +
                                       ((static_cast<int64_t>(b) * D + di) * (geo.C / cpc) + blockIdx.x) * 3 * hw;
  auto index = [&](int l, int pos) { return line.vertical ? l * P + pos : pos * P + l; };
  auto offset = [&](int l, int pos) {
    return line.vertical ? static_cast<int64_t>(l) * W + pos : static_cast<int64_t>(pos) * W + l;
  };
  A dh[NP], wn[3][NP];
#pragma unroll
  for (int q = 0; q < NP; ++q) {
    dh[q] = 0;
#pragma unroll
    for (int k = 0; k < 3; ++k) wn[k][q] = 0;
  }
  A to_left = 0, to_right = 0;  // w_{-1} dh at the lane's first and w_{+1} dh at its last position
  const int last = line.n_steps - 1;
  for (int s = last; s >= 0; --s) {
    const bool cut = s == last || (geo.chunk > 0 && (s + 1) % geo.chunk == 0);
    const bool start = geo.chunk > 0 ? s % geo.chunk == 0 : s == 0;
    const A fl = __shfl_up_sync(0xffffffffu, to_right, 1);
    const A fr = __shfl_down_sync(0xffffffffu, to_left, 1);
    const A from_left = !cut && lane > 0 ? fl : A(0);
    const A from_right = !cut && lane < 31 ? fr : A(0);
    const int l = line.reverse ? line.n_steps - 1 - s : s;  // row (vertical) or column
    const int lprev = line.reverse ? l + 1 : l - 1;          // that of step s - 1
    A a[3][NP], w[3][NP], comp[3][NP], d[NP], da[3][NP];
#pragma unroll
    for (int q = 0; q < NP; ++q) {
      const int pos = lane * NP + q;
      const int idx = pos < n ? index(l, pos) : 0;
#pragma unroll
      for (int k = 0; k < 3; ++k) a[k][q] = pos < n ? raw_to_acc<T>(gsm[k * plane + idx]) : A(0);
    }
    tap_weights<T, NORMALIZE, NP>(a, lane * NP, n, w, comp);
#pragma unroll
    for (int q = 0; q < NP; ++q) {
      const int pos = lane * NP + q;
      const bool on = pos < n;
      const int idx = on ? index(l, pos) : 0;
      A go = 0, uu = 0, lam = 0, xx = 0, hh = 0;
      if (on) {
        const LamX<T> lx = pr[idx];
        lam = raw_to_acc<T>(lx.lam);
        xx = raw_to_acc<T>(lx.x);
        go = raw_to_acc<T>(gosm[idx]);
        if (MERGE) uu = raw_to_acc<T>(usm[idx]);
        hh = raw_to_acc<T>(hsm[idx]);
      }
      A acc = MERGE ? uu * go : go;
      if (!cut) {
        acc += wn[1][q] * dh[q];
        acc += q == 0 ? from_left : wn[2][q - 1] * dh[q - 1];
        acc += q == NP - 1 ? from_right : wn[0][q + 1] * dh[q + 1];
      }
      d[q] = on ? acc : A(0);
      A hprev[3];
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        const int np = pos + k - 1;
        hprev[k] = on && s >= 1 && np >= 0 && np < n ? raw_to_acc<T>(hsm[index(lprev, np)]) : A(0);
      }
      const bool valid[3] = {on && pos >= 1, on, on && pos + 1 < n};
      A gw[3];
#pragma unroll
      for (int k = 0; k < 3; ++k) gw[k] = start ? A(0) : d[q] * hprev[k];
      if (NORMALIZE) {
        const A dot = w[0][q] * gw[0] + w[1][q] * gw[1] + w[2][q] * gw[2];
#pragma unroll
        for (int k = 0; k < 3; ++k) da[k][q] = valid[k] ? w[k][q] * comp[k][q] * (gw[k] - dot) : A(0);
      } else {
#pragma unroll
        for (int k = 0; k < 3; ++k) da[k][q] = valid[k] ? gw[k] : A(0);
      }
      if (on) {
        // This lane alone reads and writes these slots of (channel, pixel).
        gosm[idx] = acc_to_raw<T>(xx * d[q]);
        if (MERGE) usm[idx] = acc_to_raw<T>(hh * go);
        *reinterpret_cast<A*>(pr + idx) = lam * d[q];
      }
    }
    // Gate-logit gradients of this step, summed over the CTA's channels in slot order.
    if (cpc == 1) {
#pragma unroll
      for (int q = 0; q < NP; ++q) {
        const int pos = lane * NP + q;
        if (pos >= n) continue;
        if (whole_group) {
#pragma unroll
          for (int k = 0; k < 3; ++k) gsm[k * plane + index(l, pos)] = acc_to_raw<T>(da[k][q]);
        } else {
#pragma unroll
          for (int k = 0; k < 3; ++k) partial_gates[k * hw + offset(l, pos)] = da[k][q];
        }
      }
    } else {
      const int buf = s & 1;
#pragma unroll
      for (int q = 0; q < NP; ++q) {
        const int pos = lane * NP + q;
#pragma unroll
        for (int k = 0; k < 3; ++k) line_at(buf, cs, k)[pos] = da[k][q];
      }
      __syncthreads();  // every slot's line is in; every slot has read this step's gates
      if (cs == 0) {
#pragma unroll
        for (int q = 0; q < NP; ++q) {
          const int pos = lane * NP + q;
          if (pos >= n) continue;
#pragma unroll
          for (int k = 0; k < 3; ++k) {
            A sum = line_at(buf, 0, k)[pos];
            for (int o = 1; o < cpc; ++o) sum += line_at(buf, o, k)[pos];
            if (whole_group) {
              gsm[k * plane + index(l, pos)] = acc_to_raw<T>(sum);
            } else {
              partial_gates[k * hw + offset(l, pos)] = sum;
            }
          }
        }
      }
    }
#pragma unroll
    for (int q = 0; q < NP; ++q) {
      dh[q] = d[q];
#pragma unroll
      for (int k = 0; k < 3; ++k) wn[k][q] = w[k][q];
    }
    to_left = w[0][0] * d[0];
    to_right = w[2][NP - 1] * d[NP - 1];
  }
  __syncthreads();

  // Write out, coalesced: grad_lam, grad_u, the direction's dx and (whole group) the gates.
  const int tid = threadIdx.x, nth = blockDim.x;
  for (int e = tid; e < cpc * hw; e += nth) {
    const int o = static_cast<int>(e / hw), pix = static_cast<int>(e - o * hw);
    const int i = pix / W, j = pix - i * W, idx = i * P + j;
    const int c = c0 + o;
    const int64_t x_off = (static_cast<int64_t>(b) * geo.C + c) * hw;
    const int64_t dc_off = (stored_entry(geo, b, di) * geo.C + c) * hw;
    *reinterpret_cast<Raw*>(static_cast<T*>(p.grad_lam) + dc_off + pix) = go_of(o)[idx];
    if (MERGE && p.grad_u != nullptr) {
      *reinterpret_cast<Raw*>(static_cast<T*>(p.grad_u) + dc_off + pix) = u_of(o)[idx];
    }
    const A dx = *reinterpret_cast<const A*>(pairs_of(o) + idx);
    if (D == 1) {
      *reinterpret_cast<Raw*>(static_cast<T*>(p.grad_x) + x_off + pix) = acc_to_raw<T>(dx);
    } else {
      static_cast<A*>(p.partial_x)[((static_cast<int64_t>(di) * geo.B + b) * geo.C + c) * hw + pix] = dx;
    }
  }
  if (whole_group) {
    T* out = static_cast<T*>(p.grad_gates) + bdg * 3 * hw;
    for (int e = tid; e < 3 * hw; e += nth) {
      const int k = static_cast<int>(e / hw), pix = static_cast<int>(e - k * hw);
      const int i = pix / W, j = pix - i * W;
      *reinterpret_cast<Raw*>(out + e) = gsm[k * plane + i * P + j];
    }
  }
}

template <typename T>
void launch_plane_backward(const BwdParams& p, bool normalize, bool merge, cudaStream_t stream) {
  const Geometry& geo = p.geo;
  const size_t smem = static_cast<size_t>(
      plane_bwd_smem_bytes(geo.H, geo.W, sizeof(T), sizeof(Acc<T>), geo.channels_per_cta));
  const int longest = geo.threads_per_line;  // the longest line (bindings.cpp)
  const dim3 grid(geo.C / geo.channels_per_cta, geo.D, geo.B), block(32 * geo.channels_per_cta);
  GSPN2_BOOL_SWITCH(normalize, kNormalize, [&] {
    GSPN2_BOOL_SWITCH(merge, kMerge, [&] {
      GSPN2_BOOL_SWITCH(longest > 32, kTwo, [&] {
        constexpr int NP = kTwo ? 2 : 1;
        auto kernel = propagate_plane_backward_kernel<T, kNormalize, kMerge, NP>;
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
