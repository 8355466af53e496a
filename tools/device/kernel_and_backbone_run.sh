#!/usr/bin/env bash
# One device call from the repo root: the working tree's CUDA op tests (TESTS, ";"-separated
# -k shards over tests/ops/test_cuda_propagate.py, side by side), then the op benchmark of
# CASES, then tools/device/backbone_run.sh's PARTS (default: throughput) on the same build.
set -uo pipefail
OUT=${OUT:-./device_out}; mkdir -p "$OUT"; LOGS=/tmp/logs; mkdir -p $LOGS
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 GSPN2_EXT_DIR=/tmp/gspn2_ext MAX_JOBS=16
log() { echo "== $(date +%T) $*"; }
log build
python3 -c "from gspn2_dense.ops._build import load_extension; load_extension('cuda')" > "$LOGS/build.log" 2>&1 \
  || { tail -30 "$LOGS/build.log"; exit 1; }
if [ -n "${TESTS:-}" ]; then
  log tests
  IFS=';' read -ra shards <<< "$TESTS"; i=0; pids=()
  for k in "${shards[@]}"; do
    i=$((i + 1))
    timeout ${T_TESTS:-150} python3 -m pytest -q -p no:cacheprovider tests/ops/test_cuda_propagate.py \
      -k "$k" > "$LOGS/tests_$i.log" 2>&1 & pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  for f in "$LOGS"/tests_*.log; do echo "$(basename "$f"): $(tail -1 "$f")"; done
  grep -hE '^(FAILED|ERROR)' "$LOGS"/tests_*.log | head -10
  cat "$LOGS"/tests_*.log > "$OUT/tests.log"
fi
if [ -n "${CASES:-}" ]; then
  log "op benchmark: $CASES"
  timeout ${T_OP:-90} python3 tools/benchmark_op.py --commit "${COMMIT:-unknown}" --cases "$CASES" \
    --no-reference --sdpa-sizes '' --out "$OUT/op" > "$LOGS/op.log" 2>&1
  grep '^{' "$LOGS/op.log" | python3 -c "
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(r['name'], '| fwd %.3f ms (%.0f%%) | bwd %.3f ms (%.0f%%)' % (r['fwd_ms'], 100 * r['fwd_eff'], r['bwd_ms'], 100 * r['bwd_eff']))"
fi
[ "${PARTS:-throughput}" = none ] || PARTS=${PARTS:-throughput} OUT=$OUT bash tools/device/backbone_run.sh
log done
