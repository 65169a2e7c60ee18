#!/usr/bin/env bash
# GPU checks on a lent device machine (its own python3 with torch + triton; no ESPnet, no
# network): the attention library's CUDA tests, the paper-protocol benchmark (every attention
# type, fp32 then bf16), the backend benchmark and, with TUNE=1, the Triton tuning sweep.
# Each part has its own time limit so that the whole script stays within 8 minutes on an
# H200-class GPU; what finished is kept (bench_paper rewrites its table after every type). Results go to $OUT (or /tmp/gpu_checks). From the repo root:
#   bash utils/gpu_checks.sh            (PAPER_UTTS=N: utterances of the paper benchmark, default 500)
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
out=${OUT:-/tmp/gpu_checks}
mkdir -p "$out"
utts=${PAPER_UTTS:-500}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$out/nvidia-smi.txt"
timeout 120 python3 -m pytest -q -p no:cacheprovider test/test_attention_backends.py test/test_attention.py \
  test/test_absorbed_decode.py 2>&1 | tail -40 | tee "$out/pytest.txt"
for dtype in float32 bfloat16; do
  timeout 150 python3 -m espnet_mtla.bin.bench_paper --device cuda --dtype "$dtype" --utts "$utts" \
    --out-dir "$out/bench_paper_$dtype" 2>&1 | tail -20 | tee "$out/bench_paper_$dtype.txt"
done
tune=
[ "${TUNE:-0}" = 1 ] && tune=--tune
timeout 90 python3 -m espnet_mtla.bin.bench_kernels --device cuda $tune --out-dir "$out/bench" 2>&1 \
  | tee "$out/bench.txt"
