// The launch plan (launch_plan.h). Every rule cites what it measured; docs/ops.md, "The launch
// plan", has the table.
#include "cuda/launch_plan.h"

#include <torch/extension.h>

#include <algorithm>
#include <sstream>

namespace gspn2 {
namespace cuda {
namespace {

// Work aimed at per one-pass launch (about two waves of an H100 / H200): threads of the local
// kernels (2048 per SM), CTAs of the small-plane ones (up to 16 CTAs of four warps per SM).
// The channels of a gate group are split into the fewest slices that reach it.
constexpr int64_t kLocalTargetThreads = int64_t(1) << 19;
constexpr int64_t kSmallTargetCtas = 2048, kSmallTargetCtasForward = 2560;

// CTA size aimed at when packing channels into a line-mode CTA.
constexpr int64_t kTargetThreads = kShortThreads;

// The smallest divisor k of `group` with units * k >= target (else group).
int64_t fewest_slices(int64_t group, int64_t units, int64_t target) {
  for (int64_t k = 1; k <= group; ++k) {
    if (group % k == 0 && units * k >= target) return k;
  }
  return group;
}

int one_pass_slices(const PropagateShape& shape, int64_t chunk, bool backward) {
  const int64_t group = shape.C / shape.G;
  TORCH_CHECK(shape.G * shape.D <= 65535,
              "the CUDA one-pass kernels handle at most 65535 gate groups x directions, got G = ",
              shape.G, " and ", shape.D, " directions");
  if (is_local(chunk)) {
    const int64_t slices =
        fewest_slices(group, shape.B * shape.H * shape.W * shape.G, kLocalTargetThreads);
    TORCH_CHECK(shape.G * slices <= 65535 &&
                    shape.B * shape.H * shape.W / kLocalThreads < (int64_t(1) << 31),
                "the CUDA local kernel handles at most 65535 gate groups x slices and 2^31 CTAs, "
                "got G = ", shape.G, " and B * H * W = ", shape.B * shape.H * shape.W);
    return static_cast<int>(slices);
  }
  const int64_t slices = fewest_slices(group, shape.B * shape.G,
                                       backward ? kSmallTargetCtas : kSmallTargetCtasForward);
  TORCH_CHECK(shape.B * shape.G * slices < (int64_t(1) << 31),
              "the CUDA small-plane kernel handles at most 2^31 CTAs, got B * G * slices = ",
              shape.B * shape.G * slices);
  return static_cast<int>(slices);
}

// Channels per thread of a line-mode launch: 2 where it measured faster and divides the gate
// group, else 1 (docs/ops.md, "The launch plan"): the CTA mode when every line is a row, the
// warp mode on lines of at most 8 (longer warp lines: fewer threads, each waiting on KC updates
// per step); 1 in the long mode and in a CTA-mode launch that scans horizontal lines in place,
// whose runs KC shortens; 1 in float64.
int line_channels_per_thread(int64_t group, int64_t elem_size, int64_t tpl, int mode,
                             bool backward, bool all_vertical) {
  const bool two = (mode == kCtaMode && all_vertical) || (mode == kWarpMode && tpl <= 2);
  return two && elem_size != 8 && group % 2 == 0 && max_channels_per_thread(mode, backward) >= 2
             ? 2
             : 1;
}

// The most channels of one gate group (1, 2 or 4) whose staged planes fit the plane mode's
// shared-memory budget; 0 if none.
int64_t plane_channels(const PropagateShape& shape, int64_t elem_size, bool backward) {
  int64_t cpc = 0;
  for (int64_t k = 1; k <= kPlaneMaxChannels; k *= 2) {
    const long long bytes =
        backward ? plane_bwd_smem_bytes(shape.H, shape.W, elem_size, elem_size == 8 ? 8 : 4, k)
                 : plane_smem_bytes(shape.H, shape.W, shape.D, elem_size, k);
    if ((shape.C / shape.G) % k == 0 && bytes <= kPlaneSmemBudget) cpc = k;
  }
  return cpc;
}

// The launch of `dirs` over planes of `shape` (its D = dirs.size(); transposed launches pass
// the transposed sizes).
ScanLaunch scan_launch(const PropagateShape& shape, const std::vector<int64_t>& entries,
                       const std::vector<int64_t>& dirs, bool transposed, int64_t elem_size,
                       bool backward) {
  ScanLaunch l{};
  l.transposed = transposed;
  l.entries = entries;
  l.dirs = dirs;
  int64_t longest_line = 0;
  bool all_vertical = true;
  for (const int64_t dir : dirs) {
    longest_line = std::max(longest_line, is_vertical(dir) ? shape.W : shape.H);
    all_vertical = all_vertical && is_vertical(dir);
  }
  // Plane mode (propagate.h), where it measured faster than the line modes and its staged
  // planes fit: backward on lines of kPlaneBwdMinLine .. kPlaneMaxLine; forward on lines of
  // kPlaneMinLine .. kPlaneMaxLine (kPlaneMinLine32 in float32 storage).
  const int64_t min_line =
      backward ? kPlaneBwdMinLine : (elem_size == 4 ? kPlaneMinLine32 : kPlaneMinLine);
  if (longest_line >= min_line && longest_line <= kPlaneMaxLine &&
      shape.C <= (int64_t(1) << 31) - 1) {
    const int64_t cpc = plane_channels(shape, elem_size, backward);
    if (cpc > 0) {
      l.mode = kPlaneMode;
      l.threads_per_line = static_cast<int>(longest_line);
      l.channels_per_cta = static_cast<int>(cpc);
      l.channels_per_thread = 1;
      return l;
    }
  }
  // Lines beyond what the line modes hold (kPositions * kMaxThreads): the shared-line mode.
  if (longest_line > kPositions * kMaxThreads) {
    l.mode = kSharedLineMode;
    l.threads_per_line = kSharedLineThreads;
    l.channels_per_cta = 1;
    l.channels_per_thread = 1;
    return l;
  }
  // Line modes: a line that fits in one warp runs in the warp mode, its threads padded to a
  // power of two so that no line straddles two warps; up to kShortThreads threads the CTA mode,
  // beyond it the long mode.
  int64_t tpl = (longest_line + kPositions - 1) / kPositions;
  TORCH_CHECK(tpl <= kMaxThreads, "internal: a launch with lines of ", longest_line,
              " positions, more than ", kPositions * kMaxThreads);
  l.mode = tpl <= 32 ? kWarpMode : (tpl <= kShortThreads ? kCtaMode : kLongMode);
  if (l.mode == kWarpMode) {
    int64_t pow2 = 1;
    while (pow2 < tpl) pow2 *= 2;
    tpl = pow2;
  }
  const int64_t kc = line_channels_per_thread(shape.C / shape.G, elem_size, tpl, l.mode,
                                              backward, all_vertical);
  // As many channel rows per CTA as divide C / kc within the mode's target CTA size.
  int64_t rows = 1;
  const int64_t target = l.mode == kWarpMode ? kWarpThreads : kTargetThreads;
  for (int64_t k = 1; k <= shape.C / kc; ++k) {
    if ((shape.C / kc) % k == 0 && k * tpl <= std::max<int64_t>(target, tpl)) rows = k;
  }
  l.threads_per_line = static_cast<int>(tpl);
  l.channels_per_cta = static_cast<int>(rows * kc);
  l.channels_per_thread = static_cast<int>(kc);
  return l;
}

}  // namespace

LaunchPlan plan_launches(const PropagateShape& shape, const std::vector<int64_t>& directions,
                         int64_t chunk, int64_t elem_size, bool backward) {
  LaunchPlan plan{};
  if (is_one_pass(shape, chunk)) {
    plan.kernels = is_local(chunk) ? Kernels::kLocal : Kernels::kSmallPlane;
    plan.slices = one_pass_slices(shape, chunk, backward);
    return plan;
  }
  plan.kernels = Kernels::kScans;
  plan.slices = 1;
  TORCH_CHECK(shape.B <= 65535, "the CUDA kernel handles a batch of at most 65535, got ",
              shape.B);
  TORCH_CHECK(shape.B * shape.C * shape.H * shape.W < (int64_t(1) << 40),
              "tensor too large for the CUDA kernel");
  // Horizontal directions whose lines (H positions) are longer than kTransposeMinLine run on
  // transposed planes (propagate.h: a horizontal step touches one sector per row); the others
  // in place. Left-to-right scans the columns of the transposed planes from the top,
  // right-to-left from the bottom (taps stay in increasing order along the line).
  std::vector<int64_t> in_place, in_place_dirs, transposed, transposed_dirs;
  for (size_t i = 0; i < directions.size(); ++i) {
    const int64_t dir = directions[i];
    if (!is_vertical(dir) && shape.H > kTransposeMinLine) {
      transposed.push_back(static_cast<int64_t>(i));
      transposed_dirs.push_back(dir == kLeftRight ? kTopDown : kBottomUp);
    } else {
      in_place.push_back(static_cast<int64_t>(i));
      in_place_dirs.push_back(dir);
    }
  }
  if (!in_place.empty()) {
    PropagateShape s = shape;
    s.D = static_cast<int64_t>(in_place.size());
    plan.launches.push_back(
        scan_launch(s, in_place, in_place_dirs, false, elem_size, backward));
  }
  if (!transposed.empty()) {
    const PropagateShape s{shape.B, shape.C, shape.W, shape.H,
                           static_cast<int64_t>(transposed.size()), shape.G};
    plan.launches.push_back(
        scan_launch(s, transposed, transposed_dirs, true, elem_size, backward));
  }
  return plan;
}

std::vector<std::string> describe(const LaunchPlan& plan) {
  if (plan.kernels != Kernels::kScans) {
    std::ostringstream line;
    line << (plan.kernels == Kernels::kLocal ? "local" : "small plane") << ", " << plan.slices
         << (plan.slices == 1 ? " slice" : " slices");
    return {line.str()};
  }
  static const char* const kModeNames[] = {"warp", "cta", "long", "plane", "shared-line"};
  std::vector<std::string> lines;
  for (const ScanLaunch& l : plan.launches) {
    std::ostringstream line;
    if (l.transposed) line << "transposed ";
    line << kModeNames[l.mode];
    if (l.mode != kPlaneMode) line << " kc" << l.channels_per_thread;
    line << " x" << l.channels_per_cta << "ch, entries ";
    for (size_t i = 0; i < l.entries.size(); ++i) line << (i ? "," : "") << l.entries[i];
    if (l.transposed) {
      line << " as ";
      for (size_t i = 0; i < l.dirs.size(); ++i) line << (i ? "," : "") << l.dirs[i];
    }
    lines.push_back(line.str());
  }
  return lines;
}

}  // namespace cuda
}  // namespace gspn2
