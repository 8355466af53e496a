#!/usr/bin/env bash
# A/B of CUDA kernel files on the device, in one call, from the repo root.
#   "new" is the working tree; every folder $AB_DIR/<variant>/ (default .ab/; carry it) holds
#   files laid out as csrc/cuda/<name> that are put over a copy of the tree to make <variant>
#   (e.g. base/ with the last commit's files), and/or patches (*.patch, applied with -p1 to the
#   copy; tools/device/variants/ keeps the ones not yet measured). All extensions are built with
#   the same flags on the same machine: the working tree first, then the variants in parallel
#   beside the working tree's CUDA tests (TESTS,
#   ";"-separated pytest -k shards over tests/ops/test_cuda_propagate.py run side by side, and the
#   public op's CUDA cases; the logs in $OUT/tests.log); then
#   tools/benchmark_op.py runs CASES for every build, one after the other, so the ratios compare
#   like with like. With NCU_CASES, Nsight Compute profiles the kernels matching NCU_KERNEL of
#   the NCU_TREE build (default new) through tools/device_check_op.sh's ncu stage.
#   A variant folder may hold a CASES file (one line, the --cases of its benchmark) and a TESTS
#   file (pytest -k shards run on its build after the benchmarks).
#   Results under $OUT: op_<variant>.json; the tables (op_<variant>.md) and logs in $LOGS.
#   AFTER_BENCH runs a command between the benchmarks and the variants' tests. Without variants
#   (AB_DIR=/nonexistent) it is one call for the working tree: tests, op benchmark, then e.g.
#   AFTER_BENCH="PARTS=throughput bash tools/device/backbone_run.sh".
#   Usage: COMMIT=<hash> CASES="stage 1,stage 2" TESTS="local" bash tools/device/kernel_ab_run.sh
set -uo pipefail
OUT=${OUT:-./device_out}; mkdir -p "$OUT"
LOGS=${LOGS:-/tmp/logs}; mkdir -p "$LOGS"
rm -f "$LOGS"/tests_*.log "$LOGS"/vtests_*.log  # (a warm machine keeps the last call's /tmp)
AB_DIR=${AB_DIR:-.ab}
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
log() { echo "== $(date +%T) $*"; }
report() {  # report <log prefix> <file under $OUT>: each shard's summary, failures, all logs
  for f in "$LOGS"/"$1"_*.log; do echo "$(basename "$f"): $(tail -1 "$f")"; done
  grep -hE '^(FAILED|ERROR)' "$LOGS"/"$1"_*.log | head -10
  cat "$LOGS"/"$1"_*.log > "$OUT/$2"
}
tree_of() { [ "$1" = new ] && echo "$PWD" || echo "/tmp/ab_$1"; }
build() {  # the extension of variant $1's tree into /tmp/ext_$1
  local tree; tree=$(tree_of "$1")
  (cd "$tree" && PYTHONPATH=$tree GSPN2_EXT_DIR=/tmp/ext_$1 python3 -c \
    "from gspn2_dense.ops._build import load_extension; load_extension('cuda')") > "$LOGS/build_$1.log" 2>&1 \
    || { echo "build $1 failed"; tail -30 "$LOGS/build_$1.log"; }
}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
variants=(new)
for dir in "$AB_DIR"/*/; do
  [ -d "$dir" ] || continue  # (no variants)
  v=$(basename "$dir"); variants+=("$v")
  rm -rf "/tmp/ab_$v" && cp -r . "/tmp/ab_$v" && rm -rf "/tmp/ab_$v/.git"
  # (byte order: a locale that ignores punctuation sorted add-on patches before their base)
  for f in $(cd "$dir" && LC_ALL=C ls); do
    case "$f" in
      CASES|TESTS) ;;
      *.patch) patch -s -p1 --batch -d "/tmp/ab_$v" < "$dir/$f" || echo "patch $f of $v failed" ;;
      *) cp "$dir/$f" "/tmp/ab_$v/csrc/cuda/$f" ;;
    esac
  done
done
# The working tree first (the tests need it), then the variants in the background while the
# tests run.
log "build new"
build new
builds=()
if [ ${#variants[@]} -gt 1 ]; then
  log "build ${variants[*]:1} (background)"
  for v in "${variants[@]:1}"; do build "$v" & builds+=($!); done
fi
if [ -n "${TESTS:-}" ]; then
  # TESTS: ";"-separated pytest -k expressions over tests/ops/test_cuda_propagate.py (TEST_FILES
  # adds files), each shard run in its own process at the same time (the GPU is shared).
  log tests
  IFS=';' read -ra shards <<< "$TESTS"; i=0
  for k in "${shards[@]}"; do
    i=$((i + 1))
    PYTHONPATH=$PWD GSPN2_EXT_DIR=/tmp/ext_new timeout ${T_TESTS:-200} python3 -m pytest -q \
      -p no:cacheprovider tests/ops/test_cuda_propagate.py ${TEST_FILES:-} -k "$k" \
      > "$LOGS/tests_$i.log" 2>&1 &
  done
  PYTHONPATH=$PWD GSPN2_EXT_DIR=/tmp/ext_new timeout ${T_TESTS2:-150} python3 -m pytest -q -p no:cacheprovider \
    tests/ops/test_propagate.py tests/ops/test_propagate_layouts.py -k cuda > "$LOGS/tests_op.log" 2>&1 &
  shard_pids=$(jobs -p | grep -vxF -f <(printf '%s\n' "${builds[@]:-0}"))
  for pid in $shard_pids; do wait "$pid"; done
  report tests tests.log
fi
for pid in "${builds[@]}"; do wait "$pid"; done
log "builds done"
for v in "${variants[@]}"; do
  tree=$(tree_of "$v")
  cases=${CASES:-stage 1,stage 2}  # a variant's own CASES file, if any, names its cases
  [ "$v" != new ] && [ -f "$AB_DIR/$v/CASES" ] && cases=$(cat "$AB_DIR/$v/CASES")
  log "benchmark $v: $cases"
  (cd "$tree" && PYTHONPATH=$tree GSPN2_EXT_DIR=/tmp/ext_$v timeout ${T_OP:-150} python3 tools/benchmark_op.py \
    --commit "${COMMIT:-unknown} ($v)" --cases "$cases" --no-reference --sdpa-sizes '' \
    --out "$OUT/op_$v") > "$LOGS/op_$v.log" 2>&1
  mv "$OUT/op_$v.md" "$LOGS/" 2>/dev/null  # (at most 8 files come back: the JSON holds it all)
  grep '^{' "$LOGS/op_$v.log" | python3 -c "
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(r['name'], '| fwd %.3f ms (%.0f%%) | bwd %.3f ms (%.0f%%) | dw-conv %.3f / %.3f' % (
        r['fwd_ms'], 100 * r['fwd_eff'], r['bwd_ms'], 100 * r['bwd_eff'], r['dwconv_fwd_ms'], r['dwconv_bwd_ms']))"
done
# AFTER_BENCH: a command run here, after the op benchmarks and before the variants' tests (e.g.
# a model-level A/B that should have the GPU to itself).
if [ -n "${AFTER_BENCH:-}" ]; then log "after bench: $AFTER_BENCH"; bash -c "$AFTER_BENCH"; fi
# A variant folder may hold a TESTS file: ";"-separated pytest -k shards over
# tests/ops/test_cuda_propagate.py run on that variant's build after the benchmarks (all shards
# of all variants side by side, T_VTESTS seconds), so that a faster variant is also a checked one.
vtests=()
for v in "${variants[@]:1}"; do
  [ -f "$AB_DIR/$v/TESTS" ] || continue
  log "tests of $v"
  IFS=';' read -ra shards < "$AB_DIR/$v/TESTS"; i=0
  for k in "${shards[@]}"; do
    i=$((i + 1))
    (cd "/tmp/ab_$v" && PYTHONPATH=/tmp/ab_$v GSPN2_EXT_DIR=/tmp/ext_$v timeout ${T_VTESTS:-120} \
      python3 -m pytest -q -p no:cacheprovider tests/ops/test_cuda_propagate.py -k "$k" \
      > "$LOGS/vtests_${v}_$i.log" 2>&1) &
    vtests+=($!)
  done
done
if [ ${#vtests[@]} -gt 0 ]; then
  for pid in "${vtests[@]}"; do wait "$pid"; done
  report vtests variant_tests.log
fi
if [ -n "${NCU_CASES:-}" ]; then
  log ncu
  tree=$(tree_of "${NCU_TREE:-new}")
  (cd "$tree" && GSPN2_EXT_DIR=/tmp/ext_${NCU_TREE:-new} OUT=$OUT STAGES=ncu timeout ${T_NCU:-150} \
    bash tools/device_check_op.sh) 2>&1 | tail -${NCU_LINES:-60}
fi
log done
