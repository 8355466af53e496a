#!/usr/bin/env bash
# One short device call for the model's eager training step, from the repo root:
#   the op built for sm_90, the CUDA op-layout tests, the norm A/B (tools/device/norm_ab.py:
#   autocast-dtype norms against float32 ones, GSPN-2-T eager, with Swin-T for scale) and the
#   kernel profile of a GSPN-2-T training step (tools/profile_op.py --backbone). No OpenMMLab
#   stack is needed. Outputs under $OUT; pass COMMIT (the device's copy has no usable git).
set -uo pipefail
OUT=${OUT:-./device_out}; mkdir -p "$OUT"
COMMIT=${COMMIT:-unknown}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 GSPN2_EXT_DIR=/tmp/gspn2_ext
log() { echo "== $(date +%T) $*"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
log build
MAX_JOBS=16 python3 -c "from gspn2_dense.ops._build import load_extension; load_extension('cuda')" > "$OUT/build.log" 2>&1 \
  || { tail -30 "$OUT/build.log"; exit 1; }
log layout tests
timeout ${T_TESTS:-60} python3 -m pytest -q -p no:cacheprovider tests/ops/test_propagate_layouts.py -k cuda 2>&1 | tail -1
log norm A/B
timeout ${T_AB:-90} python3 tools/device/norm_ab.py --commit "$COMMIT" --iters ${ITERS:-10} --out "$OUT/norm_ab" 2>&1 \
  | grep -E '^\{|Error' | cut -c1-300
log profile
timeout ${T_PROFILE:-60} python3 tools/profile_op.py --backbone gspn2_tiny --batch 128 --reps 3 \
  --commit "$COMMIT" --out "$OUT/profile_gspn2_tiny" > "$OUT/profile.log" 2>&1; tail -3 "$OUT/profile.log"
log done
