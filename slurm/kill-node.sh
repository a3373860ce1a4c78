#!/bin/bash
# Kill a node of the multi-node cluster (slurm/start.sh --nodes N) as a power cut would:
# SIGKILL every process in its network namespace (its slurmd, the slurmstepds and the jobs'
# processes). slurmctld marks it DOWN after SlurmdTimeout; its jobs end NODE_FAIL (or are
# requeued). `bash slurm/start.sh --nodes N` brings the node back.
#
#   bash slurm/kill-node.sh node2
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

case ${1:-} in
    node[0-9]*) ;;
    *) sed -n '2,7s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || fail "kill-node.sh must run as root"
[ -e "/run/netns/$1" ] || fail "no network namespace $1 (is the cluster started with --nodes?)"
n=$(kill_node_processes "$1")
rm -f "$(pidfile_of "slurmd-$1")"
say "killed $n process(es) of $1"
