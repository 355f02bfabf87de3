#!/usr/bin/env bash
# GPU correctness tests of the flash kernel, then the attention benchmark, on a CUDA machine.
#   OUT=dir scripts/gpu_kernel_check.sh [benchmark args, default --sweep]
# Logs and the benchmark table land in $OUT (default results/gpu-check).
set -uo pipefail
OUT=${OUT:-results/gpu-check}
mkdir -p "$OUT"
export PYTHONPATH=.:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
timeout "${TEST_TIMEOUT:-240}" python3 -m pytest tests/gpu -q -n 4 -p no:cacheprovider -p no:warnings 2>&1 | tee "$OUT/gpu-tests.log"
test_rc=${PIPESTATUS[0]}
timeout "${BENCH_TIMEOUT:-280}" python3 benchmarks/attention.py "${@:---sweep}" --out "$OUT/attention-h100.md" 2>&1 | tee "$OUT/bench.log"
bench_rc=${PIPESTATUS[0]}
echo "gpu tests rc=$test_rc benchmark rc=$bench_rc"
exit $(( test_rc || bench_rc ))
