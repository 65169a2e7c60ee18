#!/usr/bin/env bash
# Shared by the mini_synth recipes' local/data.sh: generates the synthetic corpus (espeak-ng)
# for one task as Kaldi data dirs data/{train,dev,test} of the calling recipe.
set -euo pipefail
task=asr
train_size=2000
dev_size=200
test_size=200
seed=0
lm_text_size=0  # > 0: also data/lm_text.txt, sentences for a language model (dev/test sentences left out)
text_prior=uniform  # structured (asr, st): words that depend on the ones before, skewed frequencies (espnet_mtla/data/grammar.py)
train_text_prior=  # the training split's prior, if not --text_prior's (the dev and test sets and lm_text.txt keep that)
homophones=false  # true (asr, st): 30% of the objects one of a pair espeak-ng says alike, spelt as the prior says
condition=clean  # hard: tempo, reverberation and noise at -5 to 10 dB SNR (espnet_mtla/data/conditions.py)
audio_dir=downloads/mini_synth
help_message="Usage: local/data.sh [--train_size N] [--dev_size N] [--test_size N] [--seed S] [--condition clean|hard] [--text_prior uniform|structured] [--train_text_prior uniform|structured] [--homophones false|true] [--lm_text_size N]"
. ./utils/parse_options.sh
. ./path.sh
homophones_opt=()  # parse_options.sh has checked that it is true or false
if [ "$homophones" = true ]; then homophones_opt=(--homophones); fi
python -m espnet_mtla.data.mini_synth --task "$task" --out-dir data --audio-dir "$audio_dir" \
  --train "$train_size" --dev "$dev_size" --test "$test_size" --seed "$seed" --condition "$condition" \
  --text-prior "$text_prior" ${train_text_prior:+--train-text-prior "$train_text_prior"} --lm-text "$lm_text_size" "${homophones_opt[@]}"
