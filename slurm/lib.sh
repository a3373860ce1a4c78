# shellcheck shell=bash disable=SC2034
# Shared helpers for start.sh / stop.sh / status.sh (sourced, not executed).
# Single-node SLURM 22.05 cluster on localhost with slurmdbd + MariaDB accounting.

SLURM_CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
STATE_DIR=/var/lib/slurm/slurmctld
SPOOL_DIR=/var/lib/slurm/slurmd
LOG_DIR=/var/log/slurm
# Lowest job id the next fresh controller may hand out; survives WIPE=1 so that
# job ids are never reused against leftover job folders or accounting rows.
JOBID_FLOOR_FILE=/var/lib/slurm/pypet-hpc-next-jobid
LOCK_FILE=/run/pypet-hpc-slurm.lock
CLUSTER_NAME=localci
DB_NAME=slurm_acct_db
PACKAGES="munge slurmctld slurmd slurm-client slurmdbd mariadb-server"

# Every daemon, in start order.
DAEMONS="munged mariadbd slurmdbd slurmctld slurmd"

pidfile_of() {
    case $1 in
        munged)    echo /run/munge/munged.pid ;;
        mariadbd)  echo /run/mysqld/mysqld.pid ;;
        slurmdbd)  echo /run/slurmdbd.pid ;;
        slurmctld) echo /run/slurmctld.pid ;;
        slurmd)    echo /run/slurmd.pid ;;
    esac
}

logfile_of() {
    case $1 in
        munged)   echo /var/log/munge/munged.log ;;
        *)        echo "$LOG_DIR/$1.log" ;;
    esac
}

say() { echo "[slurm] $*"; }
warn() { echo "[slurm] $*" >&2; }

# Where a daemon's stdout/stderr go when start.sh launches it (early fatal
# errors land here before the daemon has opened its own log).
outfile_of() { echo "$LOG_DIR/$1.out"; }

# Print the tail of a daemon's log (and of its captured stderr) to stderr.
show_log() {
    local f shown=0
    for f in "$(logfile_of "$1")" "$(outfile_of "$1")"; do
        [ -s "$f" ] || continue
        echo "----- last lines of $f -----" >&2
        tail -n 25 "$f" >&2
        shown=1
    done
    [ $shown = 1 ] && echo "-----" >&2
    [ $shown = 1 ] || echo "(no log for $1 in $(logfile_of "$1"))" >&2
}

# fail MESSAGE [DAEMON...]: print message and the daemons' log tails, exit 1.
fail() {
    local msg=$1 d
    shift
    echo "[slurm] ERROR: $msg" >&2
    for d in "$@"; do show_log "$d"; done
    exit 1
}

# running_pid NAME: print the PID from NAME's pidfile if that process is alive
# and really runs /usr/sbin/NAME (guards against PID reuse after a crash).
running_pid() {
    local pf pid exe
    pf=$(pidfile_of "$1")
    [ -s "$pf" ] || return 1
    pid=$(tr -dc 0-9 2>/dev/null <"$pf")
    [ -n "$pid" ] || return 1
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    exe=${exe% (deleted)}
    # /usr/sbin/slurmctld and slurmd are alternatives symlinks to *-wlm binaries
    [ "$exe" = "$(readlink -f "/usr/sbin/$1")" ] || return 1
    echo "$pid"
}

# pid_alive PID: true while PID is a live process (a zombie whose parent has not
# reaped it yet counts as dead: its /proc/PID/exe no longer resolves).
pid_alive() { readlink "/proc/$1/exe" >/dev/null 2>&1; }

# drop_stale NAME: remove NAME's pidfile if it does not point at a live daemon.
drop_stale() {
    local pf
    pf=$(pidfile_of "$1")
    if [ -e "$pf" ] && ! running_pid "$1" >/dev/null; then
        say "removing stale pidfile $pf"
        rm -f "$pf"
    fi
}

# stop_daemon NAME: SIGTERM the recorded PID, wait up to 15 s, then SIGKILL.
stop_daemon() {
    local pid
    if pid=$(running_pid "$1"); then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 75); do
            pid_alive "$pid" || break
            sleep 0.2
        done
        if pid_alive "$pid"; then
            warn "$1 (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null
            sleep 0.2
        fi
        say "stopped $1 (pid $pid)"
    fi
    rm -f "$(pidfile_of "$1")"
}

# Cancel every job of every user and wait (bounded) until the queue is empty.
cancel_all_jobs() {
    local ids i
    running_pid slurmctld >/dev/null || return 0
    ids=$(timeout 10 squeue -h -o %F 2>/dev/null | sort -u | tr '\n' ' ')
    [ -n "${ids// /}" ] || return 0
    say "cancelling jobs: $ids"
    # shellcheck disable=SC2086
    timeout 10 scancel $ids 2>/dev/null || true
    for _ in $(seq 1 100); do   # KillWait=5, so 20 s is plenty
        [ -z "$(timeout 10 squeue -h -o %i 2>/dev/null)" ] && return 0
        sleep 0.2
    done
    warn "jobs still listed after 20 s: $(timeout 10 squeue -h -o '%i %T' 2>/dev/null | tr '\n' ' ')"
}

# Highest job id recorded in the accounting DB (0 if none / DB not reachable).
db_max_jobid() {
    local n
    n=$(timeout 10 mariadb -N -B -e \
        "SELECT COALESCE(MAX(id_job),0) FROM ${DB_NAME}.${CLUSTER_NAME}_job_table" 2>/dev/null)
    case $n in ''|*[!0-9]*) echo 0 ;; *) echo "$n" ;; esac
}

node_state() {
    timeout 10 sinfo -h -n localhost -o %T 2>/dev/null | head -n 1
}

# healthy: node usable and accounting answering (same check as status.sh).
ctld_up() {
    timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'
}

healthy() {
    ctld_up || return 1
    case $(node_state) in
        idle|mixed|allocated|completing) ;;
        *) return 1 ;;
    esac
    timeout 10 sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER_NAME" || return 1
    timeout 10 sacct -n -X -j 1 >/dev/null 2>&1 || return 1
}
