#!/usr/bin/env bash
# ASR with a language model that helps: asr1's hard acoustic condition (tempo, reverberation,
# babble or coloured noise at -5 to 10 dB SNR) and asr1's phrases and training set (2000
# utterances drawn uniformly from the grammar), but dev and test sentences from the structured
# text prior (each word depends on the ones before it, subjects Zipf-weighted:
# grammar.structured_sentence). data/lm_text.txt holds 50,000 sentences of that prior: text of
# the test's domain that the LM learns from and the acoustic model never hears, the usual case
# for an LM (recognisers trained on general transcripts, used in a domain with text of its own).
# --homophones true: 30% of the objects are one of a pair espeak-ng says alike (a pear/a pair, the
# knight/the night, ...), spelt at random in the transcripts and by the verb in the structured
# prior: the acoustic model cannot tell them apart, and the LM, which has seen the verbs' choices,
# can (grammar.HOMOPHONES). The words no acoustics can decide are where an LM earns its cost.
# With the transcripts from the same prior (--train_text_prior structured) the decoder learns the
# structure itself and shallow fusion counts it twice (docs/ablations.md). Options: see ../data.sh.
exec bash "$(dirname "$(readlink -f "$0")")/../../data.sh" --task asr --condition hard --text_prior structured \
  --train_text_prior uniform --homophones true --lm_text_size 50000 "$@"
