#!/usr/bin/env bash
# The one GPU check (an H200 lent by the device tool): build with CUDA, run the CUDA tests, run the kernel
# benchmarks, print a short table. Budget: under 8 minutes. Everything it prints is also kept in $OUT.
#   device run: bash bench/gpu_check.sh        (OUT is set by the device tool; defaults to /tmp here)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/pyretro_gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
start=$(date +%s)
step() { echo "=== $* ($(( $(date +%s) - start ))s)"; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

step "build (CUDA, sm_90a only to save time; CI compiles sm_80 too)"
PYRETRO_CUDA=ON PYRETRO_CUDA_ARCHS=90 BUILD_DIR=build/gpu PYTHON=$PY JOBS=16 tools/dev_build.sh \
  > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
$PY -c "import pyretro, json; print(json.dumps(pyretro.build_info()))" | tee "$OUT/build_info.json"

step "CUDA tests"
timeout 240 $PY -m pytest -q -x -m cuda -p no:cacheprovider tests/ 2>&1 | tee "$OUT/cuda_tests.log" | tail -25
tests_rc=${PIPESTATUS[0]}

step "kernel benchmarks (bf16)"
timeout 180 $PY -m pyretro.cli.main bench kernels --device cuda --dtype bfloat16 --json > "$OUT/bench_kernels.json" \
  2> "$OUT/bench_kernels.err" || tail -20 "$OUT/bench_kernels.err"
$PY - "$OUT/bench_kernels.json" <<'PY'
import json, sys
from pyretro.benchmarks import format_table
try:
    rows = json.load(open(sys.argv[1]))
except Exception as e:  # benchmark failed: its stderr was printed above
    sys.exit(f"no benchmark rows: {e}")
print(format_table(rows))
PY

step "done: CUDA tests rc=$tests_rc"
exit "$tests_rc"
