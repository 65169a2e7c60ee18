#!/usr/bin/env bash
# MuST-C -> data/{train,dev,tst-COMMON,tst-HE}/ (espnet_mtla.data.mustc); MUSTC in db.sh.
set -euo pipefail
tgt_lang=de
help_message="Usage: local/data.sh [--tgt_lang de]"
. ./utils/parse_options.sh
. ./path.sh
. ./db.sh
pair=en-${tgt_lang}
python -m espnet_mtla.data.corpus MUSTC "$MUSTC" "the MuST-C root (holding ${pair}/data/)" \
  "${pair}/data/train/txt/train.yaml" "${pair}/data/dev/txt/dev.yaml" "${pair}/data/tst-COMMON/txt/tst-COMMON.yaml"
python -m espnet_mtla.data.mustc --root "$MUSTC" --tgt_lang "$tgt_lang" --out-dir data
