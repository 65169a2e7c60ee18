#!/usr/bin/env bash
# Synthetic mini corpus, text translation English -> German (ESPnet's mt task: the decoder-only
# model reads the encoded English as its prefix). Every stage: ./run.sh; a part:
# ./run.sh --stage 7 --stop_stage 10. Attention type: --attention mha|mqa|gqa|mla|mtla. Scored with BLEU and chrF (--metrics).
# Stage 8 decodes the dev set with each --tune_penalty length bonus and the test set with the best.
set -euo pipefail
./pipeline.sh --task mt --src_lang en --train_set train --valid_set dev --test_sets test \
  --token_type bpe --nbpe 100 --src_token_type bpe --src_nbpe 100 --metrics "bleu chrf" \
  --train_config "conf/train_{attention}.yaml" --inference_config conf/decode.yaml \
  --tune_penalty "0 0.2 0.5 1" "$@"
