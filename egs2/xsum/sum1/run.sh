#!/usr/bin/env bash
# XSum abstractive summarisation (ESPnet's mt task with a text source), the paper's setup: beam 10,
# ROUGE-1/2/L (rouge-score) on test. The corpus path is XSUM in db.sh (original release or jsonl
# export). Every stage: ./run.sh; --attention mha|mqa|gqa|mla|mtla.
set -euo pipefail
./pipeline.sh --task mt --src_lang doc --train_set train --valid_set dev --test_sets test \
  --token_type bpe --nbpe 8000 --src_token_type bpe --src_nbpe 8000 \
  --train_config "conf/train_{attention}.yaml" --inference_config conf/decode.yaml "$@"
