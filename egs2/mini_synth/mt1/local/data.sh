#!/usr/bin/env bash
# The synthetic corpus for MT (text only, no audio) in its hard text condition: longer sentences
# with subordinate clauses whose German verb goes last, coordinated sentences, and misspelt
# English source words; see ../data.sh (options: --train_size --dev_size --test_size --seed
# --condition clean|hard).
exec bash "$(dirname "$(readlink -f "$0")")/../../data.sh" --task mt --condition hard "$@"
