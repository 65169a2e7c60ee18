#!/usr/bin/env bash
# The shared stage script every recipe's run.sh calls (symlinked into each recipe dir).
# All options are the pipeline's: python -m espnet_mtla.pipeline --help
set -euo pipefail
. ./path.sh
exec python -m espnet_mtla.pipeline "$@"
