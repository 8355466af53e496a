#!/usr/bin/env bash
# The GPU check of the fused CUDA kernels, run on the device machine from the repository root:
#   build (sm_90) -> CUDA tests -> compute-sanitizer memcheck + racecheck of the workload in
#   tests/ops/test_sanitizer_workload.py -> benchmark (tools/benchmark_op.py).
# Logs go to $OUT (default ./device_out). Stages: STAGES="build test sanitize bench" (default
# all); also "errors" (tests/ops/test_bad_input_process.py: bad input given to both
# extensions in fresh processes; a native backtrace through cuda-gdb if one crashes), "ncu"
# (NCU_CASES, ";"-separated benchmark case names, profiled by Nsight Compute: the first
# NCU_COUNT kernels matching the regex NCU_KERNEL, default "propagate"; with NCU_SOURCE=1 also
# a report of the first one with per-SASS-instruction execution counts and stall samples as
# CSV) and "sass" (resource usage and gzipped SASS of the built extension).
set -uo pipefail
OUT=${OUT:-./device_out}
STAGES=${STAGES:-"build test sanitize bench"}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
export GSPN2_EXT_DIR=${GSPN2_EXT_DIR:-/tmp/gspn2_ext}
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
has() { [[ " $STAGES " == *" $1 "* ]]; }
status=0

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$OUT/device.txt"

if has build; then
  echo "== build"
  /usr/bin/time -f "build wall %e s" python3 -c \
    "from gspn2_dense.ops._build import load_extension; load_extension('cuda', verbose=True)" \
    > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
  tail -1 "$OUT/build.log"
fi

if has errors; then
  echo "== errors"
  { c++ --version | head -1
    python3 -c 'import torch, pybind11; print("torch abi", torch._C._GLIBCXX_USE_CXX11_ABI, "pybind11", pybind11.__version__)'
    echo "g++ libstdc++.so: $(readlink -f "$(c++ -print-file-name=libstdc++.so)")"
    python3 -c 'from gspn2_dense.ops._build import runtime_libstdcxx as r; import torch; print("runtime libstdc++:", r())'
  } 2>&1 | tee "$OUT/errors.log"
  python3 -m pytest -q -p no:cacheprovider -rs tests/ops/test_bad_input_process.py \
    >> "$OUT/errors.log" 2>&1
  rc=$?; [ $rc -eq 0 ] || status=1
  for kind in cpu cuda; do
    ldd "$GSPN2_EXT_DIR"/gspn2_dense_${kind}*/*.so | grep -E "stdc" | tee -a "$OUT/errors.log"
    if [ $rc -ne 0 ]; then
      cuda-gdb -batch -ex run -ex bt --args python3 tests/ops/test_bad_input_process.py $kind \
        > "$OUT/errors_gdb_$kind.log" 2>&1
      grep -E "^#|signal|SIG" "$OUT/errors_gdb_$kind.log" | head -40
    fi
  done
  tail -30 "$OUT/errors.log"
fi

if has test; then
  echo "== tests"
  python3 -m pytest tests/ops -q -p no:cacheprovider --maxfail=50 -rfE --tb=line ${PYTEST_ARGS:-} \
    > "$OUT/pytest.log" 2>&1 || status=1
  grep -E "^FAILED|^ERROR|passed|failed|Fatal|line [0-9]+ in" "$OUT/pytest.log" | tail -60
fi

if has sanitize; then
  echo "== compute-sanitizer"
  for tool in memcheck racecheck; do
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool $tool --error-exitcode 3 \
      python3 tests/ops/test_sanitizer_workload.py > "$OUT/sanitizer_$tool.log" 2>&1
    rc=$?; [ $rc -eq 0 ] || status=1
    echo "$tool exit $rc: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|workload done' "$OUT/sanitizer_$tool.log" | tr '\n' ' ')"
  done
fi

if has sass; then
  echo "== sass"
  so=$(ls "$GSPN2_EXT_DIR"/gspn2_dense_cuda*/*.so | head -1)
  cuobjdump --dump-resource-usage "$so" > "$OUT/resources.txt" 2>&1
  cuobjdump -sass "$so" | gzip > "$OUT/sass.txt.gz"
  grep -c Function "$OUT/resources.txt"
fi

if has bench; then
  echo "== benchmark"
  python3 tools/benchmark_op.py --out "$OUT/op" ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1 || status=1
  tail -30 "$OUT/bench.log"
fi
if has ncu; then
  echo "== ncu"
  i=0
  IFS=';' read -ra ncu_cases <<< "${NCU_CASES:-paper bf16}"
  for c in "${ncu_cases[@]}"; do
    i=$((i + 1))
    ncu --kernel-name "regex:${NCU_KERNEL:-propagate}" -c ${NCU_COUNT:-2} --section SpeedOfLight \
      --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats \
      --section LaunchStats --metrics l1tex__t_sector_hit_rate.pct,lts__t_sector_hit_rate.pct,l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum,l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum,l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum,l1tex__t_requests_pipe_lsu_mem_global_op_st.sum,smsp__inst_executed_op_local_ld.sum,dram__bytes_read.sum,dram__bytes_write.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,smsp__inst_executed.sum \
      python3 tools/benchmark_op.py --out /tmp/ncu_bench --cases "$c" --no-reference \
      --sdpa-sizes "" --reps 1 --warmup 0 > "$OUT/ncu_${NCU_TAG:-}$i.log" 2>&1 || status=1
    if [ -n "${NCU_SOURCE:-}" ]; then
      # executed instructions and stall samples per SASS instruction of the first matching kernel
      ncu --kernel-name "regex:${NCU_KERNEL:-propagate}" -c 1 --section SourceCounters \
        --section WarpStateStats --import-source no -o "$OUT/ncu_${NCU_TAG:-}$i" \
        python3 tools/benchmark_op.py --out /tmp/ncu_bench --cases "$c" --no-reference \
        --sdpa-sizes "" --reps 1 --warmup 0 > /dev/null 2>&1 || status=1
      ncu -i "$OUT/ncu_${NCU_TAG:-}$i.ncu-rep" --page source --csv --print-source sass \
        > "$OUT/ncu_${NCU_TAG:-}${i}_sass.csv" 2>&1 || status=1
    fi
    echo "-- ncu case '$c' ($OUT/ncu_${NCU_TAG:-}$i.log)"
    grep -E "^  [a-z_]+propagate|Duration|DRAM Throughput|Achieved Occupancy|Registers Per|hit_rate|pipe_lsu|local_ld|dram__bytes|inst_executed|L1/TEX Hit|L2 Hit|Block Size|Grid Size|Stall" "$OUT/ncu_${NCU_TAG:-}$i.log" | head -60
  done
fi

exit $status
