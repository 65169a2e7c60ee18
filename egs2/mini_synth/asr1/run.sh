#!/usr/bin/env bash
# Synthetic mini corpus, ASR. Every stage: ./run.sh; a part: ./run.sh --stage 7 --stop_stage 10.
# Switching the attention type is one word: --attention mha|mqa|gqa|mla|mtla (conf/train_<type>.yaml).
# A language model (stages 12-14, fused by stage 8 with decode.yaml's lm_weight): --use_lm true;
# it trains on the transcripts plus 50,000 more sentences of the grammar (data/lm_text.txt).
# Long recordings: --long_form_minutes "10" makes stage 8 also decode a 10-minute recording of the
# test utterances (test_long: by voice activity; test_long_oracle: at the true segments); make demo does.
set -euo pipefail
./pipeline.sh --task asr --train_set train --valid_set dev --test_sets test \
  --token_type bpe --nbpe 100 --audio_format flac \
  --train_config "conf/train_{attention}.yaml" --inference_config conf/decode.yaml \
  --lm_config "conf/train_lm_{attention}.yaml" --lm_extra_text data/lm_text.txt "$@"
