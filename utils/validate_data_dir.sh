#!/usr/bin/env bash
# Kaldi-named wrapper: python -m espnet_mtla.data.datadir validate "$@" (see its --help).
set -euo pipefail
here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd -P)
export PYTHONPATH="$here/..${PYTHONPATH:+:$PYTHONPATH}"
py="$here/../.venv/bin/python"; [ -x "$py" ] || py=python3
exec "$py" -m espnet_mtla.data.datadir validate "$@"
