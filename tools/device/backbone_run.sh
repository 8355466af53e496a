#!/usr/bin/env bash
# One device call for the backbone benchmark (docs/benchmarks/backbones.md), from the repo root:
#   the OpenMMLab / open_clip stack from wheels carried in $WHEELS (mmcv built first when
#   no wheel of it is there, CPU ops only), the op built for sm_90, the CUDA op-layout and compile tests,
#   then tools/benchmark_backbone.py in three parts (throughput, latency, dense), each written
#   to its own file under $OUT so that a part cut short by the call's limit loses only itself.
#   PARTS picks the parts (default: all of tests throughput latency dense compile); LATENCY_MODES,
#   SIZES and LATENCY_MODELS pass --latency-modes, --sizes and --latency-models to the latency part
#   (e.g. LATENCY_MODES=compiled_cuda_graph SIZES=1024,2048 LATENCY_MODELS=gspn2_tiny,convnext_tiny);
#   DENSE_MODES, DENSE_SIZES, DENSE_MODELS and DENSE_REGIMES do the same for the dense part
#   (e.g. DENSE_MODES=compiled DENSE_SIZES=1024,2048 DENSE_REGIMES=probe
#   DENSE_MODELS=gspn2_tiny,swin_tiny_patch4_window7_224: compiled probe steps, like with like).
set -uo pipefail
OUT=${OUT:-./device_out}; mkdir -p "$OUT"
WHEELS=${WHEELS:-.devwheels}; COMMIT=${COMMIT:-unknown}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 GSPN2_EXT_DIR=/tmp/gspn2_ext
export NCCL_NVLS_ENABLE=0
PARTS=${PARTS:-tests throughput latency dense compile}
log() { echo "== $(date +%T) $*"; }
part() { [[ " $PARTS " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader

# mmcv: a ready cp312 wheel in $WHEELS is used as is; else it is built from the source release
# before anything else (in two calls of 2026-12-04 a build beside the op's own, MAX_JOBS=8, had
# not finished after 7 minutes). A built wheel under 16 MiB is copied to $OUT, so that later
# calls can carry it in $WHEELS.
if [ -d "$WHEELS" ]; then
  python3 -m pip install -q --upgrade --no-index --no-deps --target /tmp/site "$WHEELS"/*.whl
  if ! ls "$WHEELS"/mmcv-*.whl > /dev/null 2>&1 && part dense; then
    log mmcv build
    ( cd /tmp && CUDA_VISIBLE_DEVICES= MMCV_WITH_OPS=1 MAX_JOBS=16 PYTHONPATH=/tmp/site \
        timeout ${T_MMCV:-420} python3 -m pip wheel -q --no-deps --no-build-isolation \
        "$OLDPWD/$WHEELS"/mmcv-2.1.0.tar.gz -w /tmp/whl ) > "$OUT/mmcv_build.log" 2>&1 \
      && python3 -m pip install -q --no-index --no-deps --target /tmp/site /tmp/whl/mmcv-*.whl \
      && find /tmp/whl -name 'mmcv-*.whl' -size -16M -exec cp {} "$OUT/" \;
    log "mmcv build done: $(ls /tmp/whl 2>/dev/null)"
  fi
  python3 -c "import sys; sys.path.insert(0, '/tmp/site'); import mmcv" 2>/dev/null && touch /tmp/mmcv.ok
fi
log build
MAX_JOBS=16 python3 -c "from gspn2_dense.ops._build import load_extension; load_extension('cuda')" > "$OUT/build.log" 2>&1 \
  || { tail -30 "$OUT/build.log"; exit 1; }
part tests && log tests
part tests && python3 -m pytest -q -p no:cacheprovider tests/ops/test_propagate_layouts.py -k cuda 2>&1 | tail -1
part tests && python3 -m pytest -q -p no:cacheprovider tests/models/test_compile.py -k backbone 2>&1 | tail -1
B="python3 tools/benchmark_backbone.py --commit $COMMIT"
part throughput && log throughput
part throughput && timeout ${T_THROUGHPUT:-330} $B --models "${MODELS:-gspn2_tiny,gspn2_small,gspn2_base,swin_tiny_patch4_window7_224,convnext_tiny,vit_small_patch16_224}" \
  --compiled-models "${COMPILED:-gspn2_tiny,swin_tiny_patch4_window7_224,convnext_tiny}" --iters 10 \
  --latency-models '' --dense-models '' --out "$OUT/throughput" > "$OUT/throughput.log" 2>&1
part throughput && grep '^{' "$OUT/throughput.log" | cut -c1-300
part latency && log latency
part latency && timeout ${T_LATENCY:-90} $B --models '' --compiled-models '' --dense-models '' \
  --latency-modes "${LATENCY_MODES:-eager,cuda_graph}" ${SIZES:+--sizes "$SIZES"} \
  ${LATENCY_MODELS:+--latency-models "$LATENCY_MODELS"} --out "$OUT/latency" > "$OUT/latency.log" 2>&1
part latency && grep '^{' "$OUT/latency.log" | cut -c1-400
[ -f /tmp/mmcv.ok ] && export PYTHONPATH=$PWD:/tmp/site || { log "mmcv not built"; tail -5 "$OUT/mmcv_build.log"; }
part dense && log dense
part dense && timeout ${T_DENSE:-90} $B --models '' --compiled-models '' --latency-models '' \
  --dense-modes "${DENSE_MODES:-eager}" ${DENSE_SIZES:+--dense-sizes "$DENSE_SIZES"} \
  ${DENSE_MODELS:+--dense-models "$DENSE_MODELS"} ${DENSE_REGIMES:+--dense-regimes "$DENSE_REGIMES"} \
  --out "$OUT/dense" > "$OUT/dense.log" 2>&1
part dense && grep -E '^\{|Error' "$OUT/dense.log" | cut -c1-400
part compile && log compile tests with mmseg / open_clip / the mmengine runner
part compile && timeout ${T_COMPILE:-120} python3 -m pytest -q -p no:cacheprovider tests/models/test_compile.py -k "encoder or open_clip or mmengine" 2>&1 | tail -2
log done
