#!/usr/bin/env bash
# XSum -> data/{train,dev,test}/ with text (summary) and text.doc (document) (espnet_mtla.data.xsum).
set -euo pipefail
max_doc_words=0
help_message="Usage: local/data.sh [--max_doc_words N]"
. ./utils/parse_options.sh
. ./path.sh
. ./db.sh
python -m espnet_mtla.data.corpus XSUM "$XSUM" "the XSum root (bbc-summary-data/ + the split json, or {train,validation,test}.jsonl)"
python -m espnet_mtla.data.xsum --root "$XSUM" --out-dir data --max_doc_words "$max_doc_words"
