#!/usr/bin/env bash
# The synthetic corpus for ASR in its hard condition (tempo, reverberation, babble or coloured
# noise at -5 to 10 dB SNR), where the demo's models make errors worth comparing; see ../data.sh
# (options: --train_size --dev_size --test_size --seed --condition clean|hard --lm_text_size N);
# data/lm_text.txt holds 50,000 more sentences of the grammar for the language model.
exec bash "$(dirname "$(readlink -f "$0")")/../../data.sh" --task asr --condition hard --lm_text_size 50000 "$@"
