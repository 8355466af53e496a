#!/usr/bin/env bash
# The scaling benchmark (docs/benchmarks/scaling.md) on a multi-GPU device kind, from the repo root:
#   the OpenMMLab / open_clip stack from wheels carried in $WHEELS (mmcv built in the background,
#   CPU ops only), the op built for sm_90, then tools/benchmark_scaling.py in two parts, each
#   written to its own files under $OUT: CLIP first (it needs no mmcv), then the linear probe,
#   the multi-task probe and the resume check. The last step merges both into $OUT/scaling.md.
#
#   run(kind='nvidia-h200-x8', carry=['.devwheels'],
#       command='PARTS=clip COMMIT=<hash> bash tools/device/scaling_run.sh')  # est. 6 min
#   run(..., command='PARTS=mm COMMIT=<hash> bash tools/device/scaling_run.sh')  # est. 7 min (warm)
#   # here: python tools/benchmark_scaling.py --report <files_at>/clip.json <files_at>/mm.json \
#   #           --out docs/benchmarks/scaling --note '...'
#
# One call runs both parts only where time allows (10 min a call): PARTS=clip,mm. A call
# without the mm part still waits for mmcv at its end, so that the next call on the warm
# machine finds it (/tmp keeps the wheels, mmcv, the op and the generated data).
# Environment: NPROCS (default: 1,2,4,8 up to the GPUs seen), PARTS, CLIP_ARGS and MM_ARGS
# (extra benchmark arguments), T_CLIP / T_MM (seconds per part), T_LAUNCH (seconds per launch).
# NVLink multicast stays off here and in every process the benchmark starts (scaling.py sets
# the same three variables again for them).
set -uo pipefail
OUT=${OUT:-./device_out}; mkdir -p "$OUT"
WHEELS=${WHEELS:-.devwheels}; COMMIT=${COMMIT:-unknown}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 GSPN2_EXT_DIR=/tmp/gspn2_ext
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
log() { echo "== $(date +%T) $*"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
GPUS=$(nvidia-smi -L | wc -l)
if [ -z "${NPROCS:-}" ]; then
  NPROCS=$(for n in 1 2 4 8; do [ "$n" -le "$GPUS" ] && printf '%s,' "$n"; done); NPROCS=${NPROCS%,}
fi
PARTS=${PARTS:-clip,mm}
log "GPUs: $GPUS, processes: $NPROCS, parts: $PARTS"

if [ -d "$WHEELS" ] && [ ! -f /tmp/site.ok ]; then
  python3 -m pip install -q --upgrade --no-index --no-deps --target /tmp/site "$WHEELS"/*.whl
  # the CLIP part runs before mmcv is built: the same stack without mmsegmentation (mmseg
  # without mmcv breaks `import gspn2_dense`)
  python3 -m pip install -q --upgrade --no-index --no-deps --target /tmp/site_clip \
    $(ls "$WHEELS"/*.whl | grep -v mmsegmentation) && touch /tmp/site.ok
fi
if [ -d "$WHEELS" ] && [ ! -f /tmp/mmcv.ok ] \
    && ! { [ -f /tmp/mmcv.pid ] && kill -0 "$(cat /tmp/mmcv.pid)" 2>/dev/null; }; then
  ( cd /tmp && CUDA_VISIBLE_DEVICES= MMCV_WITH_OPS=1 MAX_JOBS=8 PYTHONPATH=/tmp/site \
      python3 -m pip wheel -q --no-deps --no-build-isolation "$OLDPWD/$WHEELS"/mmcv-2.1.0.tar.gz -w /tmp/whl \
    && python3 -m pip install -q --no-index --no-deps --target /tmp/site /tmp/whl/mmcv-*.whl \
    && touch /tmp/mmcv.ok ) > "$OUT/mmcv_build.log" 2>&1 &
  echo $! > /tmp/mmcv.pid
fi
wait_mmcv() { for _ in $(seq "$1"); do [ -f /tmp/mmcv.ok ] && return 0; sleep 2; done; return 1; }
log build
MAX_JOBS=8 python3 -c "from gspn2_dense.ops._build import load_extension; load_extension('cuda')" > "$OUT/build.log" 2>&1 \
  || { tail -30 "$OUT/build.log"; exit 1; }
B="python3 tools/benchmark_scaling.py --device cuda --nprocs $NPROCS --commit $COMMIT --work-dir /tmp/scaling --timeout ${T_LAUNCH:-240}"
REPORTS=()
if [[ ",$PARTS," == *,clip,* ]]; then
  log clip
  PYTHONPATH=$PWD:/tmp/site_clip timeout ${T_CLIP:-300} $B --parts clip ${CLIP_ARGS:-} \
    --out "$OUT/clip" > "$OUT/clip.log" 2>&1
  grep -E '^\[scaling\]|Error' "$OUT/clip.log" | cut -c1-300
  [ -f "$OUT/clip.json" ] && REPORTS+=("$OUT/clip.json")
fi
if [[ ",$PARTS," == *,mm,* ]]; then
  wait_mmcv 150 || { log "mmcv not built"; tail -5 "$OUT/mmcv_build.log"; exit 1; }
  log "probe, multi-task, resume"
  PYTHONPATH=$PWD:/tmp/site timeout ${T_MM:-480} $B --parts probe,multitask,resume ${MM_ARGS:-} \
    --out "$OUT/mm" > "$OUT/mm.log" 2>&1
  grep -E '^\[scaling\]|Error' "$OUT/mm.log" | cut -c1-300
  [ -f "$OUT/mm.json" ] && REPORTS+=("$OUT/mm.json")
fi
if [[ ",$PARTS," != *,mm,* ]]; then
  log "waiting for mmcv (for the next call)"; wait_mmcv 100 && log "mmcv ready" || log "mmcv still building"
fi
if [ ${#REPORTS[@]} -gt 0 ]; then
  PYTHONPATH=$PWD:/tmp/site_clip python3 tools/benchmark_scaling.py --report "${REPORTS[@]}" \
    --out "$OUT/scaling" > /dev/null
  sed -n '/^| run/,/^$/p' "$OUT/scaling.md"
fi
log done
