#!/bin/bash
# Exit 0 and print sinfo if the local SLURM cluster is usable: the node is
# idle/mixed/allocated and accounting (sacctmgr/sacct) answers. Exit 1 otherwise.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

command -v sinfo >/dev/null 2>&1 && [ -e "$SLURM_CONF" ] || { echo "slurm: not installed/configured"; exit 1; }
if healthy; then
    timeout 10 sinfo
    exit 0
fi
if ctld_up; then
    echo "slurm: not ready (node state '$(node_state)'); start it with: bash slurm/start.sh"
else
    echo "slurm: slurmctld is not answering; start it with: bash slurm/start.sh"
fi
exit 1
