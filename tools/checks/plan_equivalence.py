"""The launch plan against the binding it replaced: same launches for every call of a grid.

The launch plan (csrc/cuda/launch_plan.cpp) took over the decisions that ``make_geometry``,
``channels_per_thread`` and ``transposed_entries`` of the CUDA binding made at commit 347a995
under their default policies. This compiles the old functions (taken from git) beside the plan,
host code only (no GPU), and compares mode, threads per line, channels per CTA and per thread,
and the split of the directions into in-place and transposed launches over a grid of batch
sizes, channels, gate groups, plane sizes from 1 to 2100, direction sets, chunks, dtypes and
both passes. Prints the counts; exits 1 on any mismatch.

    python tools/checks/plan_equivalence.py
"""
import subprocess
import sys
import tempfile
from pathlib import Path

from torch.utils import cpp_extension

from gspn2_dense.ops._build import resolve_cuda_home

ROOT = Path(__file__).resolve().parents[2]
OLD_COMMIT = '347a995'

# The old binding's decisions under the default policies (auto plane mode, auto channels per
# thread), with the constants it used that the plan dropped.
OLD_PRELUDE = """#include <torch/extension.h>
#include <algorithm>
#include "cuda/propagate.h"
#include "cuda/launch_plan.h"
namespace gspn2 { namespace cuda { namespace old_impl {
constexpr int kPlaneOff = 0, kPlaneAuto = 1, kPlaneForce = 2;
constexpr int kMaxChannelsPerThread = 4;
constexpr int kChannelsPerThreadAuto = 0;
constexpr int max_channels_per_thread(int mode, bool backward) {
  return mode == kCtaMode ? 4 : mode == kWarpMode ? (backward ? 2 : 4) : (backward ? 1 : 2);
}
constexpr int64_t kTargetThreads = kShortThreads;
bool aligned(const void* ptr, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % static_cast<uintptr_t>(bytes) == 0;
}
int plane_policy = kPlaneAuto;
int channels_per_thread_policy = kChannelsPerThreadAuto;
"""

HARNESS = r"""#include "old_binding.h"
#include "cuda/launch_plan.cpp"

#include <sstream>
#include <tuple>

namespace gspn2 {
namespace cuda {

using OldLaunch = std::tuple<bool, std::vector<int64_t>, std::vector<int64_t>, Geometry>;

// The launches the old binding made for a call: in place, then transposed.
std::vector<OldLaunch> old_launches(const PropagateShape& shape, const std::vector<int64_t>& dirs,
                                    int64_t chunk, int64_t elem, bool bwd) {
  std::vector<int64_t> tr, in_place, in_place_dirs, tr_dirs;
  for (size_t i = 0; i < dirs.size(); ++i) {
    const int64_t e = static_cast<int64_t>(i);
    if (shape.H > kTransposeMinLine && dirs[i] >= kLeftRight) {
      tr.push_back(e);
      tr_dirs.push_back(dirs[i] == kLeftRight ? kTopDown : kBottomUp);
    } else {
      in_place.push_back(e);
      in_place_dirs.push_back(dirs[i]);
    }
  }
  std::vector<OldLaunch> out;
  const int64_t D = static_cast<int64_t>(dirs.size());
  if (!in_place.empty()) {
    PropagateShape s = shape;
    s.D = static_cast<int64_t>(in_place.size());
    out.emplace_back(false, in_place, in_place_dirs,
                     old_impl::make_geometry(s, in_place_dirs, in_place, D, chunk, elem, bwd, {}));
  }
  if (!tr.empty()) {
    const int64_t E = static_cast<int64_t>(tr.size());
    const PropagateShape s{shape.B, shape.C, shape.W, shape.H, E, shape.G};
    std::vector<int64_t> all(E);
    for (int64_t e = 0; e < E; ++e) all[e] = e;
    out.emplace_back(true, tr, tr_dirs,
                     old_impl::make_geometry(s, tr_dirs, all, E, chunk, elem, bwd, {}));
  }
  return out;
}

std::string compare_all() {
  const std::vector<int64_t> batches{1, 2, 128};
  const std::vector<int64_t> channels{1, 2, 3, 4, 6, 8, 24, 32, 96, 160};
  const std::vector<int64_t> sizes{1, 2, 7, 13, 14, 16, 17, 28, 31, 32, 33, 40, 56, 64, 65, 100,
                                   127, 128, 129, 200, 300, 1000, 1024, 1030, 2048, 2100};
  const std::vector<std::vector<int64_t>> dirsets{{0},    {1},    {2},    {3},
                                                  {0, 1}, {1, 0}, {2, 3}, {0, 2},
                                                  {3, 1}, {0, 1, 2, 3}, {2, 0, 3, 1}, {3, 2, 1}};
  int64_t calls = 0, launches = 0, refused = 0, bad = 0;
  std::ostringstream log;
  for (const int64_t B : batches) for (const int64_t C : channels) {
    std::vector<int64_t> groups{1, C};
    if (C % 2 == 0 && C > 2) groups.push_back(C / 2);
    for (const int64_t G : groups) for (const int64_t H : sizes) for (const int64_t W : sizes)
    for (const auto& dirs : dirsets) for (const int64_t chunk : {0, 3})
    for (const int64_t elem : {2, 4, 8}) for (const bool bwd : {false, true}) {
      const PropagateShape shape{B, C, H, W, static_cast<int64_t>(dirs.size()), G};
      if (is_one_pass(shape, chunk)) continue;
      ++calls;
      std::vector<OldLaunch> old;
      LaunchPlan plan;
      bool old_refused = false, new_refused = false;
      try { old = old_launches(shape, dirs, chunk, elem, bwd); }
      catch (const c10::Error&) { old_refused = true; }
      try { plan = plan_launches(shape, dirs, chunk, elem, bwd); }
      catch (const c10::Error&) { new_refused = true; }
      bool ok = old_refused == new_refused;
      if (ok && old_refused) {
        ++refused;
        continue;
      }
      ok = ok && plan.kernels == Kernels::kScans && plan.launches.size() == old.size();
      for (size_t i = 0; ok && i < old.size(); ++i) {
        const auto& [transposed, entries, scan_dirs, geo] = old[i];
        const ScanLaunch& l = plan.launches[i];
        ok = l.transposed == transposed && l.entries == entries && l.dirs == scan_dirs &&
             l.mode == geo.mode && l.threads_per_line == geo.threads_per_line &&
             l.channels_per_cta == geo.channels_per_cta &&
             l.channels_per_thread == geo.channels_per_thread;
        ++launches;
      }
      if (!ok && ++bad < 10) {
        log << "mismatch B" << B << " C" << C << " G" << G << " " << H << "x" << W
            << " elem" << elem << (bwd ? " backward" : " forward") << "\n";
      }
    }
  }
  std::ostringstream out;
  out << "calls " << calls << ", launches compared " << launches << ", refused by both "
      << refused << ", mismatches " << bad << "\n" << log.str();
  return out.str();
}

}  // namespace cuda
}  // namespace gspn2

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("compare_all", &gspn2::cuda::compare_all); }
"""


def old_functions() -> str:
    """channels_per_thread and make_geometry of the binding at OLD_COMMIT."""
    text = subprocess.run(['git', '-C', str(ROOT), 'show', f'{OLD_COMMIT}:csrc/cuda/bindings.cpp'],
                          check=True, capture_output=True, text=True).stdout
    start = text.index('int64_t channels_per_thread(const PropagateShape& shape')
    end = text.index('void check_cuda(')
    return text[start:end]


def main() -> int:
    cuda_home = resolve_cuda_home()  # (propagate.h includes cuda_runtime.h; nothing is linked)
    if cuda_home is None:
        print('needs the CUDA toolkit headers (no CUDA toolkit found)')
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / 'old_binding.h').write_text(OLD_PRELUDE + old_functions() + '}}}\n')
        (tmp / 'harness.cpp').write_text(HARNESS)
        module = cpp_extension.load(
            'gspn2_plan_equivalence', [str(tmp / 'harness.cpp')], build_directory=str(tmp),
            extra_include_paths=[str(ROOT / 'csrc'), str(tmp), str(Path(cuda_home) / 'include')],
            extra_cflags=['-O1'])
        report = module.compare_all()
    print(report, end='')
    return 0 if ' mismatches 0\n' in report else 1


if __name__ == '__main__':
    sys.exit(main())
