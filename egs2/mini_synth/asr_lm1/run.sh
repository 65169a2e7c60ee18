#!/usr/bin/env bash
# Synthetic mini corpus, ASR with a language model that helps: asr1's hard acoustic condition and
# phrases plus homophone pairs the audio cannot tell apart (a pear/a pair), a training set from the
# uniform grammar, dev and test sentences from the structured text prior, where the verb decides
# each homophone's spelling (local/data.sh), and an LM trained on the transcripts plus 50,000
# sentences of that prior (stages 12-14, two passes over them), fused by stage 8 with decode.yaml's
# lm_weight. Each row's length bonus is the best of --tune_penalty's on dev (the noisiest
# utterances lose their ends without one).
# Every stage: ./run.sh; the attention type of the acoustic model: --attention mha|mqa|gqa|mla|mtla,
# of the LM: --lm_attention (default: the same). Without the LM: --use_lm false (decoded into its
# own decode dir, so both rows stand side by side in RESULTS.md).
set -euo pipefail
./pipeline.sh --task asr --train_set train --valid_set dev --test_sets test \
  --token_type bpe --nbpe 100 --audio_format flac \
  --train_config "conf/train_{attention}.yaml" --inference_config conf/decode.yaml \
  --use_lm true --lm_config "conf/train_lm_{attention}.yaml" --lm_extra_text data/lm_text.txt \
  --lm_args "--max_epoch 2" --tune_penalty "0 0.5 1 1.5" "$@"
