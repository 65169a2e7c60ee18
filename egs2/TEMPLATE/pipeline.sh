#!/usr/bin/env bash
# The shared stage script every recipe's run.sh calls (symlinked into each recipe dir).
# All options are the pipeline's: python -m espnet_mtla.recipe --help
set -euo pipefail
. ./path.sh
# Job backends from the recipe's cmd.sh only (never from variables the shell happened to export).
unset cmd train_cmd decode_cmd
[ -f cmd.sh ] && . ./cmd.sh
backends=()
[ -n "${cmd:-}" ] && backends+=(--cmd "$cmd")
[ -n "${train_cmd:-}" ] && backends+=(--train_cmd "$train_cmd")
[ -n "${decode_cmd:-}" ] && backends+=(--decode_cmd "$decode_cmd")
exec python -m espnet_mtla.recipe "${backends[@]}" "$@"
