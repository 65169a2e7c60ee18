#!/usr/bin/env bash
# The synthetic corpus for ST in its hard condition (tempo, reverberation, babble or coloured
# noise at -5 to 10 dB SNR), as the ASR recipe's, so that attention types can be told apart; see
# ../data.sh (options: --train_size --dev_size --test_size --seed --condition clean|hard).
exec bash "$(dirname "$(readlink -f "$0")")/../../data.sh" --task st --condition hard "$@"
