#!/usr/bin/env bash
# GPU checks on a lent device machine (its own python3 with torch + triton; no ESPnet, no
# network): the CUDA tests (attention library; CUDA-graph decode steps and FlexAttention
# training kernels), the paper-protocol
# benchmark (every attention type; fp32 and bf16 with the decode step replayed from CUDA
# graphs, then MHA and MTLA s=2 eager for the graphs' before/after), the training rows of the
# backend benchmark (MHA vs MTLA s=2 with FlexAttention, T = 4096 and 16384), its decode rows
# and, with TUNE=1, the Triton tuning sweep. Each part has its own time limit so that the
# whole script stays within 8 minutes on an H200-class GPU; what finished is kept
# (bench_paper rewrites its table after every type). Results go to $OUT (or /tmp/gpu_checks).
# The decode step against the reference's layer (pip mtla 0.3.2) runs when its MTLA.py is here:
# run `make bench` once on a networked machine and carry .venv-bench/mtla/mtla along (160 KB).
# From the repo root:
#   bash utils/gpu_checks.sh            (PAPER_UTTS=N: utterances of the paper benchmark, default 300)
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
out=${OUT:-/tmp/gpu_checks}
mkdir -p "$out"
utts=${PAPER_UTTS:-300}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$out/nvidia-smi.txt"
timeout 55 python3 -m pytest -q -p no:cacheprovider test/test_attention_backends.py test/test_attention.py \
  test/test_absorbed_decode.py 2>&1 | tail -40 | tee "$out/pytest.txt"
timeout 90 python3 -m pytest -q -p no:cacheprovider test/test_decode_step.py test/test_stride_attention.py 2>&1 \
  | tail -40 | tee "$out/pytest_graphs_flex.txt"
paper() {  # paper <seconds> <out name> <bench_paper options...>
  local limit=$1 name=$2
  shift 2
  timeout "$limit" python3 -m espnet_mtla.bench.paper --device cuda --utts "$utts" --out-dir "$out/$name" "$@" \
    2>&1 | tail -20 | tee "$out/$name.txt"
}
paper 100 bench_paper_float32 --dtype float32
paper 65 bench_paper_bfloat16 --dtype bfloat16
paper 40 bench_paper_float32_eager --dtype float32 --no-cuda_graphs --variants MHA "MTLA s=2"
timeout 70 python3 -m espnet_mtla.bench.kernels --device cuda --part train --variants MHA "MTLA s=2" \
  --out-dir "$out/bench_train" 2>&1 | tee "$out/bench_train.txt"
# its rows are saved one by one: a run cut off by the limit still gets its table
[ -f "$out/bench_train/results.json" ] && python3 -m espnet_mtla.bench.kernels --replot \
  --out-dir "$out/bench_train" && cat "$out/bench_train/results.md"
if [ -f .venv-bench/mtla/mtla/MTLA.py ]; then
  timeout 30 python3 -m espnet_mtla.bench.attention --reference --device cuda --part decode \
    --variants MHA "MTLA s=2" --out-dir "$out/bench_reference" 2>&1 | tail -8 | tee "$out/bench_reference.txt"
fi
tune=
[ "${TUNE:-0}" = 1 ] && tune=--tune
timeout 30 python3 -m espnet_mtla.bench.kernels --device cuda --part decode $tune --out-dir "$out/bench" 2>&1 \
  | tee "$out/bench.txt"
