#!/usr/bin/env bash
# GPU checks on a lent device machine (its own python3 with torch + triton; no ESPnet):
# the attention library's CUDA tests, a Triton decode-kernel tuning sweep, and the backend
# benchmark on the GPU. Results go to $OUT (or /tmp/gpu_checks). Run from the repo root:
#   bash utils/gpu_checks.sh [--quick]      (NO_TUNE=1 skips the tuning sweep)
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
out=${OUT:-/tmp/gpu_checks}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$out/nvidia-smi.txt"
python3 -m pytest -q -p no:cacheprovider test/test_attention_backends.py test/test_attention.py 2>&1 \
  | tail -40 | tee "$out/pytest.txt"
tune=--tune
[ "${NO_TUNE:-0}" = 1 ] && tune=
python3 -m espnet_mtla.bin.bench_kernels --device cuda $tune --out-dir "$out/bench" "$@" 2>&1 | tee "$out/bench.txt"
