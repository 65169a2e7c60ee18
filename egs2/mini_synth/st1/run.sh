#!/usr/bin/env bash
# Synthetic mini corpus, speech translation English -> German. Every stage: ./run.sh;
# a part: ./run.sh --stage 7 --stop_stage 10. Attention type: --attention mha|mqa|gqa|mla|mtla.
set -euo pipefail
./pipeline.sh --task st --src_lang en --tgt_lang de --train_set train --valid_set dev --test_sets test \
  --token_type bpe --nbpe 100 --src_token_type bpe --src_nbpe 100 --audio_format flac \
  --train_config "conf/train_{attention}.yaml" --inference_config conf/decode.yaml "$@"
