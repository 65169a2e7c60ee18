#!/usr/bin/env bash
# SLURP -> data/{train,devel,test}/ and data/intents.txt (espnet_mtla.data.slurp); SLURP in db.sh.
set -euo pipefail
use_synthetic=false
help_message="Usage: local/data.sh [--use_synthetic true|false]"
. ./utils/parse_options.sh
. ./path.sh
. ./db.sh
# The jsonl files and audio/slurp_real/ (or slurp_real/) are found anywhere below $SLURP.
python -m espnet_mtla.data.corpus SLURP "$SLURP" "the SLURP root (holding dataset/slurp/*.jsonl and audio/slurp_real/)"
python -m espnet_mtla.data.slurp --root "$SLURP" --out-dir data --use_synthetic "$use_synthetic"
