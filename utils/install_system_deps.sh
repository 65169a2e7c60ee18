#!/usr/bin/env bash
# Installs the Debian tools the recipes use (sclite from sctk, espeak-ng, sox, flac) if missing,
# and Slurm with munge (the cluster tests start a private single-node Slurm with them).
# As root it runs apt-get; otherwise it names the command to run. Safe to run again.
set -euo pipefail
missing=()
[ -x /usr/lib/sctk/bin/sclite ] || command -v sclite >/dev/null 2>&1 || missing+=(sctk)
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v sox >/dev/null 2>&1 || missing+=(sox)
command -v flac >/dev/null 2>&1 || missing+=(flac)
command -v sbatch >/dev/null 2>&1 || [ -x /usr/sbin/slurmctld ] || missing+=(slurm-wlm)
[ -x /usr/sbin/munged ] || command -v munged >/dev/null 2>&1 || missing+=(munge)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    echo "installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
    echo "error: missing system packages: ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
