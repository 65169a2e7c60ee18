#!/usr/bin/env bash
# AMI (ihm by default) -> data/{train,dev,eval}/ (espnet_mtla.data.ami); AMI in db.sh.
set -euo pipefail
mic=ihm
help_message="Usage: local/data.sh [--mic ihm|sdm|mdm8]"
. ./utils/parse_options.sh
. ./path.sh
. ./db.sh
# <meeting>/audio/*.wav (ami_download.sh, amicorpus/, wav_db/) and the annotations are found anywhere below $AMI.
python -m espnet_mtla.data.corpus AMI "$AMI" "the AMI root (holding the <meeting>/audio/ folders and the annotations)"
python -m espnet_mtla.data.ami --root "$AMI" --out-dir data --mic "$mic"
