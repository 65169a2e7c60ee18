#!/usr/bin/env bash
# The synthetic corpus for MT (text only, no audio): see ../data.sh (options: --train_size --dev_size --test_size --seed).
exec bash "$(dirname "$(readlink -f "$0")")/../../data.sh" --task mt "$@"
