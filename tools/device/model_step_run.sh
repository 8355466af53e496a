#!/usr/bin/env bash
# One short device call for the op and the model's eager training step, from the repo root:
#   the op built for sm_90; the CUDA tests of the op (the local kernels' grid, the public op's
#   CUDA cases and the layout tests); tools/benchmark_op.py on GSPN-2-T's four stage shapes and
#   the 4-direction cases; GSPN-2-T and Swin-T throughput, eager (and compiled: COMPILED=<models>)
#   (tools/benchmark_backbone.py);
#   the kernel profile of a GSPN-2-T training step (tools/profile_op.py --backbone; also of the
#   compiled step with PROFILE_COMPILED=1); with SANITIZE=1, compute-sanitizer memcheck and
#   racecheck on tests/ops/test_sanitizer_workload.py. No OpenMMLab stack is needed. Results under $OUT
#   (at most 8 files come back: logs stay in $LOGS); pass COMMIT (the device's copy has no git).
#   STEPS picks the steps after the build (default: all of tests op throughput profile); two more
#   on request: glue (tools/device/glue_ab.py: the fused layer norm against F.layer_norm, the
#   norm alone and the model's eager throughput) and host_ops (tools/count_host_ops.py on CUDA).
set -uo pipefail
OUT=${OUT:-./device_out}; mkdir -p "$OUT"
LOGS=${LOGS:-/tmp/logs}; mkdir -p "$LOGS"
COMMIT=${COMMIT:-unknown}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 GSPN2_EXT_DIR=/tmp/gspn2_ext
STEPS=${STEPS:-tests op throughput profile}
log() { echo "== $(date +%T) $*"; }
step() { [[ " $STEPS " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
log build
MAX_JOBS=16 python3 -c "from gspn2_dense.ops._build import load_extension; load_extension('cuda')" > "$LOGS/build.log" 2>&1 \
  || { tail -30 "$LOGS/build.log"; exit 1; }
if step tests; then
log op tests
timeout ${T_TESTS:-150} python3 -m pytest -q -x -p no:cacheprovider tests/ops/test_cuda_propagate.py \
  -k "${TEST_K:-local or chunk}" > "$LOGS/tests.log" 2>&1; tail -3 "$LOGS/tests.log"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/ops/test_propagate.py tests/ops/test_propagate_layouts.py \
  tests/ops/test_layer_norm.py -k cuda >> "$LOGS/tests.log" 2>&1; tail -1 "$LOGS/tests.log"
grep -E '^(FAILED|ERROR)' "$LOGS/tests.log" | head -5
fi
if [ -n "${SANITIZE:-}" ]; then
  log compute-sanitizer
  for tool in memcheck racecheck; do
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout ${T_SANITIZE:-120} compute-sanitizer --tool $tool --error-exitcode 1 python3 tests/ops/test_sanitizer_workload.py \
      > "$LOGS/sanitize_$tool.log" 2>&1; echo "$tool rc=$? $(grep -cE 'ERROR SUMMARY: [1-9]|Error|hazard' "$LOGS/sanitize_$tool.log") flagged lines"
    grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|workload done' "$LOGS/sanitize_$tool.log" | head -3
  done
fi
if step op; then
log op benchmark
timeout ${T_OP:-120} python3 tools/benchmark_op.py --commit "$COMMIT" --cases "${CASES:-GSPN2-T,56^2,28^2}" \
  --no-reference --sdpa-sizes '' --out "$OUT/op_stages" > "$LOGS/op.log" 2>&1
grep '^{' "$LOGS/op.log" | cut -c1-420
fi
if step throughput; then
log backbone throughput
timeout ${T_AB:-120} python3 tools/benchmark_backbone.py --commit "$COMMIT" \
  --models "${MODELS:-gspn2_tiny,swin_tiny_patch4_window7_224}" --compiled-models "${COMPILED:-}" --latency-models '' \
  --dense-models '' --iters ${ITERS:-10} --out "$OUT/throughput" > "$LOGS/throughput.log" 2>&1
grep -E '^\{|Error' "$LOGS/throughput.log" | cut -c1-300
fi
if step glue; then
log glue A/B
timeout ${T_GLUE:-240} python3 tools/device/glue_ab.py --iters ${ITERS:-20} --commit "$COMMIT" \
  --out "$OUT/glue_ab" > "$LOGS/glue.log" 2>&1; tail -22 "$LOGS/glue.log"
fi
if step host_ops; then
log host operators
timeout 120 python3 tools/count_host_ops.py --device cuda --commit "$COMMIT" --out "$OUT/host_ops_cuda" \
  > "$LOGS/host_ops.log" 2>&1; sed -n '5,10p' "$OUT/host_ops_cuda.md"
fi
if step profile; then
log profile
timeout ${T_PROFILE:-60} python3 tools/profile_op.py --backbone gspn2_tiny --batch 128 --reps 3 \
  --commit "$COMMIT" --out "$OUT/profile_gspn2_tiny" > "$LOGS/profile.log" 2>&1; sed -n '/by category/,/top kernels/p' "$OUT/profile_gspn2_tiny.md" | head -16
if [ -n "${PROFILE_COMPILED:-}" ]; then
  log compiled profile
  timeout ${T_PROFILE_COMPILED:-240} python3 tools/profile_op.py --backbone gspn2_tiny --compile --batch 128 --reps 3 \
    --commit "$COMMIT" --out "$OUT/profile_gspn2_tiny_compiled" > "$LOGS/profile_compiled.log" 2>&1
  sed -n '/by category/,/top kernels/p' "$OUT/profile_gspn2_tiny_compiled.md" | head -16
fi
fi
log done
