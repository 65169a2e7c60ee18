#!/usr/bin/env bash
# Installs the Debian tools the recipes use (sclite from sctk, espeak-ng, sox, flac) if missing,
# Slurm with munge and Grid Engine (the cluster tests start a private single-node Slurm and a
# private single-host SGE cell with them).
# As root it runs apt-get; otherwise it names the command to run (Slurm, munge and Grid Engine
# are optional: without them the cluster tests skip). Safe to run again.
set -euo pipefail
missing=()
[ -x /usr/lib/sctk/bin/sclite ] || command -v sclite >/dev/null 2>&1 || missing+=(sctk)
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v sox >/dev/null 2>&1 || missing+=(sox)
command -v flac >/dev/null 2>&1 || missing+=(flac)
optional=()
command -v sbatch >/dev/null 2>&1 && [ -x /usr/sbin/slurmctld ] || optional+=(slurm-wlm)
[ -x /usr/sbin/munged ] || command -v munged >/dev/null 2>&1 || optional+=(munge)
sge=()
command -v qsub >/dev/null 2>&1 && [ -x /usr/lib/gridengine/sge_qmaster ] && [ -x /usr/lib/gridengine/sge_execd ] \
    || sge+=(gridengine-master gridengine-exec gridengine-client)
if [ ${#missing[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ] && [ ${#sge[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    echo "installing system packages: ${missing[*]} ${optional[*]} ${sge[*]}"
    apt-get update -qq
    if [ ${#missing[@]} -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if [ ${#optional[@]} -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${optional[@]}" >/dev/null \
            || echo "note: could not install ${optional[*]}: the cluster tests will skip" >&2
    fi
    if [ ${#sge[@]} -gt 0 ]; then  # apart, so that a system without Grid Engine still gets Slurm
        # The packages ask whether to set up a system cell (and its master's name): no. The tests
        # start a cell of their own under a temp dir; a system cell would run daemons here.
        printf '%s\n' "gridengine-common shared/gridengineconfig boolean false" \
            "gridengine-common shared/gridenginecell string default" \
            "gridengine-common shared/gridenginemaster string localhost" | debconf-set-selections 2>/dev/null || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${sge[@]}" >/dev/null \
            || echo "note: could not install ${sge[*]}: the SGE tests will skip" >&2
    fi
elif [ ${#missing[@]} -gt 0 ]; then
    echo "error: missing system packages: ${missing[*]}; run: sudo apt-get install -y ${missing[*]} ${optional[*]} ${sge[*]}" >&2
    exit 1
else
    echo "note: ${optional[*]} ${sge[*]} not installed: the cluster tests will skip (sudo apt-get install -y ${optional[*]} ${sge[*]})" >&2
fi
