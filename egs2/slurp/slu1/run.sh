#!/usr/bin/env bash
# SLURP spoken language understanding, the paper's SLU setup: target "<scenario_action> transcript"
# (intents are whole BPE tokens), beam 10 with CTC; intent/scenario/action accuracy and transcript
# WER on test. The corpus path is SLURP in db.sh; --local_data_opts "--use_synthetic true" adds
# train_synthetic. Every stage: ./run.sh; --attention mha|mqa|gqa|mla|mtla.
set -euo pipefail
./pipeline.sh --task slu --train_set train --valid_set devel --test_sets test \
  --token_type bpe --nbpe 500 --user_defined_symbols_file data/intents.txt --audio_format flac \
  --train_config "conf/train_{attention}.yaml" --inference_config conf/decode.yaml "$@"
