#!/usr/bin/env bash
# AMI ihm -> data/{train,dev,eval}/ (espnet_mtla.data.ami); AMI in db.sh.
set -euo pipefail
help_message="Usage: local/data.sh"
. ./utils/parse_options.sh
. ./path.sh
. ./db.sh
python -m espnet_mtla.data.corpus AMI "$AMI" "the AMI root (holding amicorpus/ and annotations/)" \
  amicorpus annotations/corpusResources/meetings.xml annotations/segments annotations/words
python -m espnet_mtla.data.ami --root "$AMI" --out-dir data
