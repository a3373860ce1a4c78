# shellcheck shell=bash disable=SC2034
# Shared helpers for start.sh / stop.sh / status.sh (sourced, not executed).
# SLURM 22.05 cluster on this machine with slurmdbd + MariaDB accounting: one slurmd on
# localhost (the default), or one slurmd per node in its own network + UTS namespace.

SLURM_CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
CGROUP_CONF=/etc/slurm/cgroup.conf
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

# The daemons on the host, in start order. The slurmds come after them: "slurmd" for the
# one-node layout, "slurmd-node1".."slurmd-nodeN" for the multi-node one.
HOST_DAEMONS="munged mariadbd slurmdbd slurmctld"

# ---- multi-node layout -------------------------------------------------------------------
# Node i is network namespace "nodei" (hostname nodei in its own UTS namespace) with eth0 =
# NET_PREFIX.i/24, its veth peer "veth-nodei" on the bridge BRIDGE; the host (slurmctld) is
# NET_PREFIX.254 on the bridge. The bridge is linked to no other interface: the nodes reach
# the host and each other, nothing else.
BRIDGE=phbr0
NET_PREFIX=10.77.0
HOST_ADDR=$NET_PREFIX.254
NETNS_FILE=/run/pypet-hpc-slurm-netns   # the namespaces start.sh made (one name a line)
HOSTS_BEGIN="# >>> pypet-hpc slurm nodes (slurm/start.sh; removed by slurm/stop.sh)"
HOSTS_END="# <<< pypet-hpc slurm nodes"

pidfile_of() {
    case $1 in
        munged)    echo /run/munge/munged.pid ;;
        mariadbd)  echo /run/mysqld/mysqld.pid ;;
        slurmdbd)  echo /run/slurmdbd.pid ;;
        slurmctld) echo /run/slurmctld.pid ;;
        slurmd)    echo /run/slurmd.pid ;;
        slurmd-*)  echo "/run/$1.pid" ;;   # SlurmdPidFile=/run/slurmd-%n.pid
    esac
}

# Every slurmd that has a pidfile, whatever layout started it.
slurmd_names() {
    local f n
    for f in /run/slurmd.pid /run/slurmd-node*.pid; do
        [ -e "$f" ] || continue
        n=${f#/run/}
        echo "${n%.pid}"
    done
}

# The network namespaces of nodes: those start.sh recorded, and any nodeN still wired to
# our bridge (e.g. after the record was lost).
node_netns() {
    local ns
    {
        [ -s "$NETNS_FILE" ] && cat "$NETNS_FILE"
        for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
            case $ns in node[0-9]*) ;; *) continue ;; esac
            [ -e "/sys/class/net/veth-$ns/master" ] && [ "$(basename "$(readlink "/sys/class/net/veth-$ns/master")")" = "$BRIDGE" ] && echo "$ns"
        done
    } | sort -u
}

# kill_node_processes NS: SIGKILL every process in network namespace NS (its slurmd, the
# slurmstepds and the jobs' processes); print how many there were.
kill_node_processes() {
    local pids
    pids=$(ip netns pids "$1" 2>/dev/null | tr '\n' ' ')
    # shellcheck disable=SC2086
    [ -n "${pids// /}" ] && kill -KILL $pids 2>/dev/null
    echo "$pids" | wc -w
}

# Remove every node namespace, the bridge and the /etc/hosts entries (jobs must be gone).
teardown_network() {
    local ns n
    for ns in $(node_netns); do
        n=$(kill_node_processes "$ns")
        [ "$n" -gt 0 ] && say "killed $n leftover process(es) in namespace $ns"
        ip netns del "$ns" 2>/dev/null && say "removed network namespace $ns"
        ip link del "veth-$ns" 2>/dev/null
    done
    rm -f "$NETNS_FILE"
    if [ -e "/sys/class/net/$BRIDGE" ]; then
        ip link del "$BRIDGE" && say "removed bridge $BRIDGE"
    fi
    write_hosts_block ""
}

# write_hosts_block TEXT: put TEXT between our markers in /etc/hosts (empty: drop the block).
# Written in place (cat >), as /etc/hosts may be a bind mount.
write_hosts_block() {
    local tmp
    grep -qF "$HOSTS_BEGIN" /etc/hosts 2>/dev/null || [ -n "$1" ] || return 0
    tmp=$(mktemp)
    awk -v b="$HOSTS_BEGIN" -v e="$HOSTS_END" '$0 == b {skip = 1} !skip {print} $0 == e {skip = 0}' /etc/hosts >"$tmp"
    [ -n "$1" ] && printf '%s\n%s\n%s\n' "$HOSTS_BEGIN" "$1" "$HOSTS_END" >>"$tmp"
    cmp -s "$tmp" /etc/hosts || cat "$tmp" >/etc/hosts
    rm -f "$tmp"
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
# and really runs /usr/sbin/NAME (slurmd for slurmd-nodeN; guards against PID reuse).
running_pid() {
    local pf pid exe
    pf=$(pidfile_of "$1")
    [ -s "$pf" ] || return 1
    pid=$(tr -dc 0-9 2>/dev/null <"$pf")
    [ -n "$pid" ] || return 1
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    exe=${exe% (deleted)}
    # /usr/sbin/slurmctld and slurmd are alternatives symlinks to *-wlm binaries
    [ "$exe" = "$(readlink -f "/usr/sbin/${1%%-*}")" ] || return 1
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

# "NODE STATE" for every node of the cluster, one a line ("localhost idle", "node2 down*").
node_states() {
    timeout 10 sinfo -h -N -o '%N %T' 2>/dev/null | sort -u
}

# The nodes that are not usable, as "node2 down*, node3 drained" (empty: all usable).
bad_nodes() {
    node_states | awk '$2 !~ /^(idle|mixed|allocated|completing)$/ {printf "%s%s %s", sep, $1, $2; sep = ", "}'
}

# healthy: every node usable and accounting answering (same check as status.sh).
ctld_up() {
    timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'
}

healthy() {
    ctld_up || return 1
    [ -n "$(node_states)" ] && [ -z "$(bad_nodes)" ] || return 1
    timeout 10 sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER_NAME" || return 1
    timeout 10 sacct -n -X -j 1 >/dev/null 2>&1 || return 1
}

# probe_nodes NODE...: one tiny batch job pinned to each node, all at once; prints the nodes whose
# job did not finish within 90 s. A node that registers but cannot start jobs (seen once in CI:
# tasks stayed PENDING on node2/node3 for minutes) is caught here instead of in the tests.
probe_nodes() {
    local n pids="" bad=""
    for n in "$@"; do
        timeout 90 sbatch --wait -Q -w "$n" -N1 -n1 -t 2 -J "probe-$n" -o /dev/null --wrap true \
            >/dev/null 2>&1 &
        pids="$pids $n:$!"
    done
    for n in $pids; do
        wait "${n#*:}" || bad="$bad ${n%%:*}"
    done
    echo "${bad# }"
}
