#!/usr/bin/env bash
# Synthetic mini corpus, SLU: target "<scenario_action> transcript" (intents are whole BPE
# tokens). Every stage: ./run.sh; attention type: --attention mha|mqa|gqa|mla|mtla.
set -euo pipefail
. ./path.sh
intents=$(python -c 'from espnet_mtla.data.grammar import intent_names; print(*intent_names())')
./pipeline.sh --task slu --train_set train --valid_set dev --test_sets test \
  --token_type bpe --nbpe 100 --user_defined_symbols "$intents" --audio_format flac \
  --train_config "conf/train_{attention}.yaml" --inference_config conf/decode.yaml "$@"
