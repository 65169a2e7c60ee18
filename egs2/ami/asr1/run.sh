#!/usr/bin/env bash
# AMI individual headset microphones (ihm) ASR, the paper's ASR setup: official full-corpus-ASR
# partition, beam 20 with CTC, WER with sclite on dev and eval. The corpus path is AMI in db.sh.
# Frontend: --frontend fbank (default: conf/train_<type>.yaml) or --frontend ssl (an S3PRL
# WavLM/HuBERT upstream from db.sh's SSL_CHECKPOINT: conf/train_ssl_<type>.yaml).
# Every stage: ./run.sh; a part: ./run.sh --stage 7 --stop_stage 10; --attention mha|mqa|gqa|mla|mtla.
set -euo pipefail
frontend=fbank
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --frontend) frontend=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
case "$frontend" in
  fbank) extra=(--train_config "conf/train_{attention}.yaml") ;;
  ssl)
    . ./db.sh
    if [ ! -f "$SSL_CHECKPOINT" ]; then
      echo "error: --frontend ssl: SSL_CHECKPOINT='$SSL_CHECKPOINT' (db.sh) is not a file; set it to a local WavLM/HuBERT checkpoint" >&2
      exit 1
    fi
    extra=(--train_config "conf/train_ssl_{attention}.yaml" --ssl_checkpoint "$SSL_CHECKPOINT") ;;
  *) echo "error: --frontend $frontend: choose fbank or ssl" >&2; exit 1 ;;
esac
./pipeline.sh --task asr --train_set train --valid_set dev --test_sets "dev eval" \
  --token_type bpe --nbpe 500 --audio_format flac.ark --max_wav_duration 30 \
  --inference_config conf/decode.yaml "${extra[@]}" "${args[@]}"
