#!/usr/bin/env bash
# The ASR recipe's hard acoustic condition (tempo, reverberation, babble or coloured noise at -5
# to 10 dB SNR) with the topical text prior: each sentence is about one of 24 topics, words are
# drawn with skewed (Zipf) frequencies and predict each other (espnet_mtla/data/grammar.py).
# data/lm_text.txt holds 100,000 more sentences of that prior, 50 times the transcripts: text a
# language model learns from and the acoustic model never hears. Options: see ../data.sh.
exec bash "$(dirname "$(readlink -f "$0")")/../../data.sh" --task asr --condition hard --text_prior topical \
  --lm_text_size 100000 "$@"
