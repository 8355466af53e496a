// The launch plan of the CUDA op: which kernels run a call, decided from its sizes, directions,
// chunk and dtype alone, in this one place (docs/ops.md, "The launch plan", has the table and
// the measurements behind each rule). bindings.cpp and scan_launch.cpp allocate and launch
// what the plan says; no process-wide setting changes it.
//
// Kernels, in the order the plan tries them:
//   local        chunk 1 or 2: one thread per position, every direction (propagate_local.h)
//   small plane  planes whose lines fit a warp (propagate_small.h)
//   scans        the line modes (warp / CTA / long, propagate.h), the plane mode or, for lines
//                beyond the line modes, the shared-line mode (shared_line.cuh), with the
//                horizontal directions of long lines on transposed planes (transposed_split.h)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cuda/propagate.h"
#include "cuda/propagate_local.h"
#include "cuda/propagate_small.h"
#include "gspn2_common.h"

namespace gspn2 {
namespace cuda {

enum class Kernels { kLocal, kSmallPlane, kScans };

// One launch of the line or plane kernels.
struct ScanLaunch {
  bool transposed;               // on transposed planes: horizontal lines scanned as vertical
  std::vector<int64_t> entries;  // the call's direction entries it scans, in launch order
  std::vector<int64_t> dirs;     // the direction each is scanned in (transposed: TD / BU)
  int mode;                      // kWarpMode, kCtaMode, kLongMode, kPlaneMode or kSharedLineMode
  int threads_per_line;          // blockDim.x; plane mode: the longest line
  int channels_per_cta;          // divides C
  int channels_per_thread;       // line modes: 1 or 2, divides C / G; plane mode: 1
};

struct LaunchPlan {
  Kernels kernels;
  int slices;                      // local / small plane: channel slices per gate group
  std::vector<ScanLaunch> launches;  // scans: the in-place launch (if any), then the transposed
};

// The local kernels take chunks of at most kLocalMaxChunk steps, the small-plane ones planes
// whose lines fit a warp; both recompute h in the backward (no hidden state is needed).
// gspn2_dense.ops.propagate.recomputes_hidden states the same rule in Python.
inline bool is_local(int64_t chunk) { return chunk >= 1 && chunk <= kLocalMaxChunk; }

inline bool is_small(const PropagateShape& shape) {
  return shape.H <= kSmallMaxLine && shape.W <= kSmallMaxLine &&
         shape.H * shape.W <= kSmallMaxPlane;
}

inline bool is_one_pass(const PropagateShape& shape, int64_t chunk) {
  return is_local(chunk) || is_small(shape);
}

// The plan of a forward (backward = false) or backward call. `shape.D` is the number of
// directions; elem_size the bytes of the storage dtype.
LaunchPlan plan_launches(const PropagateShape& shape, const std::vector<int64_t>& directions,
                         int64_t chunk, int64_t elem_size, bool backward);

// One line per launch, e.g. "local, 2 slices" or "transposed cta kc1 x2ch, entries 2,3 as 0,1";
// the binding's plan() returns them (tests, docs/ops.md).
std::vector<std::string> describe(const LaunchPlan& plan);

}  // namespace cuda
}  // namespace gspn2
