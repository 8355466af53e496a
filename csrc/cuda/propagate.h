// Parameter structs and launchers of the fused GSPN-2 CUDA kernels.
//
// bindings.cpp validates the inputs, allocates the outputs and fills one of these plain
// structs; the launchers (one explicit instantiation per dtype, in propagate_{fwd,bwd}_*.cu)
// pick the template constants and launch on the current stream.
//
// Work decomposition of the line modes (forward and backward alike): one CTA owns one (batch, direction,
// channel slice) and walks every step of the scan. Its threads form a
// (threads_per_line, channels_per_cta / KC) block: thread (t, cy) holds kPositions consecutive
// positions of the line for the KC = channels_per_thread channels
// slice * channels_per_cta + cy * KC + kc (kc < KC, one gate group) and reads its inputs in
// double-buffered runs of consecutive steps (line_scan_common.cuh). Neighbouring values
// across thread boundaries go through a double-buffered shared-memory exchange, one barrier
// per step. Arithmetic is float32 (float64 for float64 tensors).
#pragma once

#include <cstdint>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

namespace gspn2 {
namespace cuda {

constexpr int kPositions = 4;     // consecutive line positions per thread
constexpr int kMaxThreads = 512;  // per CTA, so lines may hold up to kPositions * 512 positions
constexpr int kWarpThreads = 128;  // per CTA in the warp mode
constexpr int kShortThreads = 256;  // CTAs up to this size get the longer runs (line_scan_common.cuh)

// Kernel modes (Geometry::mode). Warp: a line fits in one warp (threads_per_line a power of
// two <= 32): neighbours through shuffles, no shared memory, no barrier per step. CTA: a line
// spans up to kShortThreads threads, shared-memory exchange and one barrier per step. Long:
// up to kMaxThreads threads, one-step runs.
constexpr int kWarpMode = 0, kCtaMode = 1, kLongMode = 2;

// Plane mode, forward (propagate_plane_forward_kernel; the backward's is below): one CTA owns the planes of
// 1, 2 or 4 channels of one gate group of one batch item and all D directions, one warp per
// (channel, direction); the group's gates are staged once for its channels. x and each
// direction's gates, lam and u are staged in shared memory with coalesced loads (read once
// from DRAM), the scans run from shared memory, and y = sum_d u_d h_d is summed in
// direction order in the CTA: no per-direction float32 buffer. The launch plan takes it where
// it measured faster than the line modes (docs/ops.md, "The launch plan"): longest line of
// kPlaneMinLine .. kPlaneMaxLine positions, or from kPlaneMinLine32 in float32 storage, the
// staged planes within kPlaneSmemBudget. Other shapes use the line modes above.
constexpr int kPlaneMode = 3;

// Shared-line mode (shared_line.cuh): lines longer than kPositions * kMaxThreads, up to
// kSharedLineMaxLine. One CTA of kSharedLineThreads per (batch, direction, channel) plane, the
// line's state in shared memory (2 x the line in the accumulation type), one channel per CTA.
constexpr int kSharedLineMode = 4;
constexpr int kSharedLineThreads = 512;
constexpr int64_t kSharedLineMaxLine = 8192;
constexpr int kPlaneMinLine = 33, kPlaneMinLine32 = 17;
constexpr int kPlaneMaxLine = 64;
constexpr long long kPlaneSmemBudget = 220 * 1024;

// Row pitch (elements) of a staged plane: odd, so that a warp walking a column (one row per
// lane) touches distinct banks.
constexpr int plane_pitch(int W) { return W | 1; }

// Shared memory of one plane-mode CTA of `cpc` channels of one gate group: the D x 3 gate
// planes (shared by the channels), then per channel a slot of D (lam, u) pair planes and x,
// all in the storage type; each region starts on 16 bytes (the pair slots are later read and
// written as accumulation-type values).
constexpr long long round16(long long bytes) { return (bytes + 15) / 16 * 16; }
constexpr long long plane_gate_bytes(long long H, long long W, long long D, long long elem) {
  return round16(H * plane_pitch(static_cast<int>(W)) * 3 * D * elem);
}
constexpr long long plane_slot_bytes(long long H, long long W, long long D, long long elem) {
  return round16(H * plane_pitch(static_cast<int>(W)) * (2 * D + 1) * elem);
}
constexpr long long plane_smem_bytes(long long H, long long W, long long D, long long elem,
                                     long long cpc) {
  return plane_gate_bytes(H, W, D, elem) + cpc * plane_slot_bytes(H, W, D, elem);
}
constexpr int kPlaneMaxChannels = 4;  // channels per plane-mode CTA (1, 2 or 4)

// Plane-mode backward (propagate_plane_backward_kernel): one CTA per (batch, direction, cpc
// channels of one gate group), a warp per channel. Shared memory: the direction's 3 gate
// planes, then per channel a slot of (lam, x) pairs, grad_out, u and h planes (storage type;
// the pairs later hold lam * dh in the accumulation type), then a double-buffered line of the
// 3 gate-logit gradients per channel (accumulation type, kPlaneMaxLine positions).
// Taken by the launch plan for longest lines of kPlaneBwdMinLine .. kPlaneMaxLine, where it
// measured faster than the line modes (docs/ops.md, "The launch plan").
constexpr int kPlaneBwdMinLine = 14;
constexpr long long plane_bwd_slot_bytes(long long H, long long W, long long elem) {
  return round16(H * plane_pitch(static_cast<int>(W)) * 5 * elem);
}
constexpr long long plane_bwd_smem_bytes(long long H, long long W, long long elem,
                                         long long acc_elem, long long cpc) {
  return round16(H * plane_pitch(static_cast<int>(W)) * 3 * elem) +
         cpc * plane_bwd_slot_bytes(H, W, elem) + 2 * cpc * 3 * kPlaneMaxLine * acc_elem;
}

// Bytes of each input per position in one double-buffered run of steps (line_scan_common.cuh).
constexpr int run_bytes(int mode, bool backward) {
  return mode == kLongMode || mode == kSharedLineMode ? 0
                                                      : (backward || mode == kWarpMode ? 4 : 8);
}

// Channels per thread of the line modes (Geometry::channels_per_thread): a thread scans the
// same positions of KC channels of one gate group, so that the tap weights (and the group's
// gate loads) of a position are computed once for KC channels and, in the backward, the
// gate-logit gradients are summed over them in registers. 1 or 2 (launch_plan.cpp says where;
// 4 measured slower everywhere, docs/benchmarks/op.md).
// The most channels per thread a mode is instantiated for: the ones whose registers hold KC
// channels without spilling more than a few words (ptxas, sm_90, bfloat16: the backward's
// long mode spilled 200 bytes at KC = 2), and the long mode's forward, where KC = 2 measured
// slower, holds one.
constexpr int max_channels_per_thread(int mode, bool backward) {
  return mode == kLongMode || mode == kSharedLineMode ? 1 : 2;
}

// Steps per run of the line modes (the kernels' kRun; bindings.cpp's vec_h needs W to be a
// multiple): run_bytes of each input per position, over KC channels per thread.
constexpr int steps_per_run(int mode, bool backward, int elem_size, int kc) {
  const int steps = run_bytes(mode, backward) / elem_size / kc;  // 0 in the long mode
  return elem_size == 8 || steps < 1 ? 1 : steps;
}

// Direction ids, the values of gspn2::Direction (gspn2_common.h; bindings.cpp checks they
// agree), repeated here so that the .cu files need not include the torch headers.
constexpr int kTopDownId = 0, kBottomUpId = 1, kLeftRightId = 2, kRightLeftId = 3;

struct Geometry {
  int B, C, H, W, D, G;  // D: the directions this launch scans
  int dirs[4];           // direction id of each of them
  int chunk;             // restart period in steps, 0 = global scan
  int threads_per_line;  // blockDim.x (plane mode: the longest line)
  int channels_per_cta;  // divides C: channels per CTA (line modes: blockDim.y * channels_per_thread)
  int channels_per_thread;  // line modes: KC, divides C / G (1 in the plane mode)
  int mode;              // kWarpMode, kCtaMode, kLongMode, kPlaneMode or kSharedLineMode
  bool plane_vec;        // plane mode: aligned, H * W * elem % 16 == 0: 16-byte staging loads
  bool vec;              // aligned, W % kPositions == 0: vector accesses along rows
  bool vec_h;            // aligned, W % (steps per run) == 0: vector runs along rows
  // One byte (pack_slots): the per-direction tensors (gates, lam, u, hidden, per-direction
  // out / grad_out, and their gradients) hold stored_D entries and direction di of the launch
  // is entry first_slot + di * slot_step (a launch may scan some directions of a tensor in
  // place: bindings.cpp's split takes at most two; internal buffers have D entries). Kept in
  // the struct's last byte: as three more ints (68 bytes) they made nvcc turn every input load
  // of the forward kernels into a non-coherent (LDG.CONSTANT) load, which measured slower
  // (docs/ops.md, "Horizontal directions of long lines").
  unsigned char packed;
};

constexpr unsigned char pack_slots(int stored_D, int first_slot, int slot_step) {
  return static_cast<unsigned char>((stored_D - 1) | (first_slot << 2) | ((slot_step + 4) << 4));
}
static_assert(sizeof(Geometry) == 64, "Geometry grew: check the kernels' loads (see packed)");

// Bit 7 of Geometry::packed: the paired merge. Set by the forward of a merged launch of the two
// vertical directions (top-down and bottom-up, either order) in the CTA mode. Its two CTAs of a
// (batch, channel slice) sweep the plane from opposite ends, and each publishes every
// kMergePeriod steps how many it has done (FwdParams::arrivals) until it merges. A CTA that
// reaches rows the other has already written adds the other's float contribution to its own
// and writes y there (from then on every row, as the other's progress only grows);
// the rows both wrote before seeing each other are summed at the end by the last one. The sum
// of two terms is the same in either order, so y does not depend on who merged which row.
constexpr unsigned char kPairedMerge = 0x80;
constexpr int kMergePeriod = 16;

struct FwdParams {
  Geometry geo;
  const void* x;      // (B, C, H, W)
  const void* gates;  // (B, D, G, 3, H, W)
  const void* lam;    // (B, D, C, H, W)
  const void* u;      // (B, D, C, H, W) or nullptr
  void* out;          // merge: (B, C, H, W); else (B, D, C, H, W)
  void* hidden;       // (B, D, C, H, W) or nullptr
  void* partial;      // merge and D > 1: (D, B, C, H, W) per-direction u_d * h_d (accumulation type)
  int* arrivals;      // merge and D > 1: (B, C / channels_per_cta) zeroed counters; with the
                      // paired merge followed by (B, C / channels_per_cta, 2) steps done and
                      // (B, C / channels_per_cta, 2) first merged step, per (batch, slice, di)
};

struct BwdParams {
  Geometry geo;
  const void* grad_out;  // merge: (B, C, H, W); else (B, D, C, H, W)
  const void* x;
  const void* gates;
  const void* lam;
  const void* u;       // merge only
  const void* hidden;  // (B, D, C, H, W): h_d
  void* grad_x;        // (B, C, H, W), written directly when D == 1
  void* grad_gates;    // (B, D, G, 3, H, W), written directly when G == C
  void* grad_lam;      // (B, D, C, H, W)
  void* grad_u;        // (B, D, C, H, W) or nullptr
  void* partial_x;      // D > 1: (D, B, C, H, W) lam_d * dh_d (accumulation type)
  void* partial_gates;  // G < C: (B, D, C / k, 3, H, W) gate-logit gradients summed over k
                        // channels (k = 1; plane mode: channels_per_cta; none when that is C / G)
};

// Horizontal directions through transposed planes (launch_plan.cpp, transposed_split.h): a
// horizontal scan walks columns, so each of its steps touches one element per row, a sector
// per element, however the line is split over threads. Where its lines are longer than
// kTransposeMinLine (beyond the warp and plane modes), the op transposes the horizontal
// directions' inputs (transpose_planes_kernel: 32 x 32 tiles through shared memory, coalesced
// on both sides), scans them as top-down / bottom-up, and transposes the results back.
constexpr int64_t kTransposeMinLine = 127;

// Planes of one tensor seen as (n0, n1) planes of rows x cols contiguous elements: plane
// (a, b) starts at base + a * s0 + b * s1 (elements).
struct PlaneMap {
  int64_t base, s0, s1;
};

// dst plane (a, b) = transpose of src plane (a, b), (cols, rows); with accumulate, added to
// what dst holds (in the accumulation type, one rounding).
struct TransposeParams {
  const void* src;
  void* dst;
  PlaneMap src_map, dst_map;
  int64_t n0, n1;
  int rows, cols;
  bool accumulate;
};

template <typename T>
void launch_transpose(const TransposeParams& p, cudaStream_t stream);

template <typename T>
void launch_forward(const FwdParams& p, bool normalize, bool merge, cudaStream_t stream);

template <typename T>
void launch_backward(const BwdParams& p, bool normalize, bool merge, cudaStream_t stream);

// Defined in propagate_{fwd,bwd}_{f64,f32,f16,bf16}.cu and transpose.cu.
template <> void launch_forward<double>(const FwdParams&, bool, bool, cudaStream_t);
template <> void launch_forward<float>(const FwdParams&, bool, bool, cudaStream_t);
template <> void launch_forward<c10::Half>(const FwdParams&, bool, bool, cudaStream_t);
template <> void launch_forward<c10::BFloat16>(const FwdParams&, bool, bool, cudaStream_t);
template <> void launch_backward<double>(const BwdParams&, bool, bool, cudaStream_t);
template <> void launch_backward<float>(const BwdParams&, bool, bool, cudaStream_t);
template <> void launch_backward<c10::Half>(const BwdParams&, bool, bool, cudaStream_t);
template <> void launch_backward<c10::BFloat16>(const BwdParams&, bool, bool, cudaStream_t);
extern template void launch_transpose<double>(const TransposeParams&, cudaStream_t);
extern template void launch_transpose<float>(const TransposeParams&, cudaStream_t);
extern template void launch_transpose<c10::Half>(const TransposeParams&, cudaStream_t);
extern template void launch_transpose<c10::BFloat16>(const TransposeParams&, cudaStream_t);

}  // namespace cuda
}  // namespace gspn2
