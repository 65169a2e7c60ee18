#!/usr/bin/env bash
# Generates the synthetic mini corpus (espeak-ng) as Kaldi data dirs data/{train,dev,test}.
set -euo pipefail
train_size=2000
dev_size=200
test_size=200
seed=0
task=slu
audio_dir=downloads/mini_synth
help_message="Usage: local/data.sh [--train_size N] [--dev_size N] [--test_size N] [--seed S]"
. ./utils/parse_options.sh
. ./path.sh
python -m espnet_mtla.data.mini_synth --task "$task" --out-dir data --audio-dir "$audio_dir" \
  --train "$train_size" --dev "$dev_size" --test "$test_size" --seed "$seed"
