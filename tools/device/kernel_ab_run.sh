#!/usr/bin/env bash
# A/B of CUDA kernel files on the device, in one call, from the repo root:
#   the working tree's extension built and its CUDA tests run (TESTS, a pytest -k expression over
#   tests/ops/test_cuda_propagate.py, and the public op's CUDA cases), then tools/benchmark_op.py
#   on CASES twice in this one process tree: once with the working tree ("new") and once with the
#   files under $BASE_DIR (default .ab/, laid out as csrc/cuda/<name>; carry it) put over a copy of
#   the tree ("base"). Both builds use the same flags and machine, so the ratios compare like
#   with like. Results under $OUT: op_new.{json,md}, op_base.{json,md}; logs in $LOGS.
#   Usage: COMMIT=<hash> BASE=<hash of the base files> CASES="stage 1,stage 2" bash tools/device/kernel_ab_run.sh
set -uo pipefail
OUT=${OUT:-./device_out}; mkdir -p "$OUT"
LOGS=${LOGS:-/tmp/logs}; mkdir -p "$LOGS"
BASE_DIR=${BASE_DIR:-.ab}
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
log() { echo "== $(date +%T) $*"; }
build() {  # build the extension of the tree in $1 into $2
  (cd "$1" && PYTHONPATH=$1 GSPN2_EXT_DIR=$2 python3 -c \
    "from gspn2_dense.ops._build import load_extension; load_extension('cuda')") > "$LOGS/build_$3.log" 2>&1 \
    || { tail -30 "$LOGS/build_$3.log"; return 1; }
}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
rm -rf /tmp/ab_base && cp -r . /tmp/ab_base && rm -rf /tmp/ab_base/.git
for f in $(cd "$BASE_DIR" && ls); do cp "$BASE_DIR/$f" "/tmp/ab_base/csrc/cuda/$f"; done
log build new and base
build "$PWD" /tmp/ext_new new & build /tmp/ab_base /tmp/ext_base base & wait
if [ -n "${TESTS:-}" ]; then
  log tests
  PYTHONPATH=$PWD GSPN2_EXT_DIR=/tmp/ext_new timeout ${T_TESTS:-200} python3 -m pytest -q -x -p no:cacheprovider \
    tests/ops/test_cuda_propagate.py -k "$TESTS" > "$LOGS/tests.log" 2>&1; tail -2 "$LOGS/tests.log"
  PYTHONPATH=$PWD GSPN2_EXT_DIR=/tmp/ext_new timeout ${T_TESTS2:-150} python3 -m pytest -q -p no:cacheprovider \
    tests/ops/test_propagate.py tests/ops/test_propagate_layouts.py -k cuda > "$LOGS/tests2.log" 2>&1
  tail -1 "$LOGS/tests2.log"; grep -hE '^(FAILED|ERROR)' "$LOGS/tests.log" "$LOGS/tests2.log" | head -5
fi
for side in base new; do
  tree=$PWD; [ $side = base ] && tree=/tmp/ab_base
  log "benchmark $side"
  (cd "$tree" && PYTHONPATH=$tree GSPN2_EXT_DIR=/tmp/ext_$side timeout ${T_OP:-150} python3 tools/benchmark_op.py \
    --commit "${COMMIT:-unknown} ($side)" --cases "${CASES:-stage 1,stage 2}" --no-reference --sdpa-sizes '' \
    --out "$OUT/op_$side") > "$LOGS/op_$side.log" 2>&1
  grep '^{' "$LOGS/op_$side.log" | python3 -c "
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print({k: r[k] for k in r if k in ('name', 'fwd_ms', 'bwd_ms', 'fwd_eff', 'bwd_eff', 'dwconv_fwd_ms', 'dwconv_bwd_ms')})"
done
log done
