#!/usr/bin/env bash
# MuST-C speech translation, English -> German (--tgt_lang fr|es|it|nl|pt|ro|ru|... for the other
# pairs), the paper's ST setup: beam 50, BLEU/chrF on tst-COMMON. The corpus path is MUSTC in db.sh.
# Every stage: ./run.sh; a part: ./run.sh --stage 7 --stop_stage 10; the attention type is one
# word: --attention mha|mqa|gqa|mla|mtla (conf/train_<type>.yaml).
set -euo pipefail
tgt_lang=de
local_data_opts=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tgt_lang) tgt_lang=$2; shift 2 ;;
    --local_data_opts) local_data_opts="$local_data_opts $2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
./pipeline.sh --task st --src_lang en --tgt_lang "$tgt_lang" --local_data_opts "--tgt_lang $tgt_lang $local_data_opts" \
  --train_set train --valid_set dev --test_sets "tst-COMMON" \
  --token_type bpe --nbpe 4000 --src_token_type bpe --src_nbpe 4000 \
  --audio_format flac.ark --max_wav_duration 30 \
  --train_config "conf/train_{attention}.yaml" --inference_config conf/decode.yaml "${args[@]}"
