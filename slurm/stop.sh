#!/bin/bash
# Stop the local SLURM cluster started by slurm/start.sh (either layout): cancel all jobs,
# then stop the slurmd(s), slurmctld, slurmdbd, mariadbd, munged (in that order), each by
# the PID in its own pidfile; remove the nodes' network namespaces, the bridge and the
# /etc/hosts entries of the multi-node layout. Safe to run when nothing is running.
#
#   bash slurm/stop.sh           stop, keep state, logs and accounting DB
#   WIPE=1 bash slurm/stop.sh    also delete controller/slurmd state, logs and the DB
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

case ${1:-} in
    -h|--help) sed -n '2,9s/^# \{0,1\}//p' "$0"; exit 0 ;;
    '') ;;
    *) sed -n '2,9s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || fail "stop.sh must run as root"

exec 9>"$LOCK_FILE"
flock -w 180 9 || fail "another slurm/start.sh or stop.sh holds $LOCK_FILE"

cancel_all_jobs
for d in $(slurmd_names); do stop_daemon "$d"; done
stop_daemon slurmctld
teardown_network
stop_daemon slurmdbd

if [ "${WIPE:-0}" = 1 ]; then
    # Remember the highest job id before the DB goes, so the next fresh
    # controller starts above it (see FirstJobId in start.sh).
    if running_pid mariadbd >/dev/null; then
        next=$(( $(db_max_jobid) + 1 ))
        old=$(tr -dc 0-9 2>/dev/null <"$JOBID_FLOOR_FILE")
        if [ -z "$old" ] || [ "$next" -gt "$old" ]; then
            [ -d "$(dirname "$JOBID_FLOOR_FILE")" ] && echo "$next" >"$JOBID_FLOOR_FILE"
        fi
    fi
fi

stop_daemon mariadbd
stop_daemon munged

if [ "${WIPE:-0}" = 1 ]; then
    rm -rf "${STATE_DIR:?}"/* "${SPOOL_DIR:?}"/* "${LOG_DIR:?}"/* /var/lib/mysql
    say "wiped $STATE_DIR, $SPOOL_DIR, $LOG_DIR and /var/lib/mysql"
fi
say "cluster stopped"
