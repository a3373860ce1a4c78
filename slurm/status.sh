#!/bin/bash
# Exit 0 and print sinfo if the local SLURM cluster is usable: every node (localhost, or
# node1..nodeN) is idle/mixed/allocated and accounting (sacctmgr/sacct) answers. Exit 1 otherwise.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

command -v sinfo >/dev/null 2>&1 && [ -e "$SLURM_CONF" ] || { echo "slurm: not installed/configured"; exit 1; }
if healthy; then
    timeout 10 sinfo
    exit 0
fi
if ctld_up; then
    bad=$(bad_nodes)
    echo "slurm: not ready (${bad:-no node registered}); start it with: bash slurm/start.sh [--nodes N]"
else
    echo "slurm: slurmctld is not answering; start it with: bash slurm/start.sh [--nodes N]"
fi
exit 1
