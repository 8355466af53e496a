// Launch parameters of the one-pass kernels: the local scans (propagate_local.h) and the
// small-plane scans (propagate_small.h). Shapes as in gspn2_common.h.
#pragma once

namespace gspn2 {
namespace cuda {

struct ScanParams {
  int B, C, H, W, D, G;
  int chunk;             // restart period of the scan (0: whole lines)
  int dirs[4];           // direction id of entry d
  int slices;            // channel slices per gate group: each slice is one thread's (local)
                         // or one CTA's (small-plane) channels of the group
  const void* x;         // (B, C, H, W)
  const void* gates;     // (B, D, G, 3, H, W)
  const void* lam;       // (B, D, C, H, W)
  const void* u;         // (B, D, C, H, W); merge only
  void* out;             // forward: merge (B, C, H, W), else (B, D, C, H, W)
  void* hidden;          // forward: (B, D, C, H, W) or nullptr
  const void* grad_out;  // backward: the shape of out
  void* grad_x;          // backward: (B, C, H, W)
  void* grad_gates;      // backward: (B, D, G, 3, H, W)
  void* grad_lam;        // backward: (B, D, C, H, W)
  void* grad_u;          // backward, merge: (B, D, C, H, W)
  void* partial_gates;   // backward, slices > 1: (slices, B, D, G, 3, H, W) per-slice sums in
                         // the accumulation type (float32; float64 for float64 storage)
};

}  // namespace cuda
}  // namespace gspn2
