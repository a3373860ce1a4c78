#!/bin/bash
# Start (or check, or restart) a real SLURM cluster on this machine, with slurmdbd + MariaDB
# so that sacct works. Debian/Ubuntu, run as root.
#
#   bash slurm/start.sh              one node (localhost): install if needed, start what is not running
#   bash slurm/start.sh --nodes 3    three nodes node1..node3, each slurmd in its own network and UTS
#                                    namespace on a private bridge (see slurm/README.md)
#   bash slurm/start.sh --restart    cancel jobs, restart slurmctld + slurmd(s) with the new config
#
# Knobs (environment): NODE_CPUS (16; 8 per node with --nodes), MAX_ARRAY_SIZE (100001; 1001 with
#                      --nodes), NODE_MEM_MB (95 % of MemTotal, shared out over the nodes).
# A plain start whose knobs or node count differ from the running config also restarts.
set -uo pipefail

T0=$EPOCHREALTIME
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

usage() { sed -n '2,14s/^# \{0,1\}//p' "$0"; }

RESTART=0
NODES=1
while [ $# -gt 0 ]; do
    case $1 in
        --restart) RESTART=1 ;;
        --nodes) [ $# -ge 2 ] || { usage >&2; exit 2; }; NODES=$2; shift ;;
        --nodes=*) NODES=${1#--nodes=} ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done
case $NODES in ''|*[!0-9]*|0) fail "--nodes must be a positive integer, got '$NODES'" ;; esac
[ "$NODES" -le 200 ] || fail "--nodes must be at most 200 (addresses $NET_PREFIX.1-200)"
MULTI=0
[ "$NODES" -gt 1 ] && MULTI=1

if [ $MULTI = 1 ]; then
    NODE_CPUS=${NODE_CPUS:-8}
    MAX_ARRAY_SIZE=${MAX_ARRAY_SIZE:-1001}
else
    NODE_CPUS=${NODE_CPUS:-16}
    MAX_ARRAY_SIZE=${MAX_ARRAY_SIZE:-100001}
fi
NODE_MEM_MB=${NODE_MEM_MB:-$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 95 / 102400 / NODES ))}
for knob in NODE_CPUS MAX_ARRAY_SIZE NODE_MEM_MB; do
    case ${!knob} in
        ''|*[!0-9]*|0) fail "$knob must be a positive integer, got '${!knob}'" ;;
    esac
done
[ "$MAX_ARRAY_SIZE" -le 4000001 ] || fail "MAX_ARRAY_SIZE must be <= 4000001 (SLURM limit)"
MAX_JOB_COUNT=200000
[ $(( 2 * MAX_ARRAY_SIZE )) -gt $MAX_JOB_COUNT ] && MAX_JOB_COUNT=$(( 2 * MAX_ARRAY_SIZE ))

# The slurmd daemons of this layout, and the node names.
if [ $MULTI = 1 ]; then
    NODE_NAMES=$(seq -f 'node%g' 1 "$NODES" | tr '\n' ' ')
    SLURMDS=$(seq -f 'slurmd-node%g' 1 "$NODES" | tr '\n' ' ')
    PACKAGES="$PACKAGES iproute2 util-linux"
else
    NODE_NAMES=localhost
    SLURMDS=slurmd
fi
DAEMONS="$HOST_DAEMONS $SLURMDS"

[ "$(id -u)" = 0 ] || fail "start.sh must run as root"

# One start/stop at a time. fd 9 is closed for every daemon we launch so the
# lock is not inherited by long-lived processes.
exec 9>"$LOCK_FILE"
flock -w 180 9 || fail "another slurm/start.sh or stop.sh holds $LOCK_FILE"

# ---- packages ----------------------------------------------------------------
missing=""
for pkg in $PACKAGES; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" = installed ] \
        || missing="$missing $pkg"
done
apt_install() {
    apt-get -o DPkg::Lock::Timeout=180 update -qq || return 1
    # shellcheck disable=SC2086  # the package list is meant to be split
    apt-get -o DPkg::Lock::Timeout=180 install -y -qq --no-install-recommends $PACKAGES
}
if [ -n "$missing" ]; then
    say "installing:$missing"
    apt_log=$(mktemp /tmp/pypet-hpc-slurm-apt.XXXXXX)
    if ! DEBIAN_FRONTEND=noninteractive apt_install >"$apt_log" 2>&1 9>&- </dev/null; then
        tail -n 30 "$apt_log" >&2
        fail "package installation failed (full log: $apt_log)"
    fi
    rm -f "$apt_log"
fi

# /run/munge and /run/mysqld vanish on hosts where /run is a tmpfs: recreate every time
{ install -d -o slurm -g slurm -m 0755 "$LOG_DIR" "$STATE_DIR" "$SPOOL_DIR" /etc/slurm &&
  install -d -o munge -g munge -m 0755 /run/munge &&
  install -d -o mysql -g mysql -m 0755 /run/mysqld; } || fail "could not create the daemons' directories"

# ---- configuration -------------------------------------------------------------
render_slurm_conf() {  # $1 = FirstJobId
    local i
    if [ $MULTI = 1 ]; then
        cat <<EOF
# Written by pypet-hpc slurm/start.sh -- $NODES-node cluster: slurmctld + slurmdbd on the host
# ($HOST_ADDR on bridge $BRIDGE), one slurmd per node in its own network + UTS namespace.
ClusterName=$CLUSTER_NAME
SlurmctldHost=localhost($HOST_ADDR)
EOF
    else
        cat <<EOF
# Written by pypet-hpc slurm/start.sh -- single-node cluster, all daemons on localhost.
ClusterName=$CLUSTER_NAME
SlurmctldHost=localhost
EOF
    fi
    cat <<EOF
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE_DIR
SlurmctldPidFile=$(pidfile_of slurmctld)
SlurmctldLogFile=$(logfile_of slurmctld)
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
# start queued jobs right away instead of in ~3 s waves
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
MaxArraySize=$MAX_ARRAY_SIZE
MaxJobCount=$MAX_JOB_COUNT
FirstJobId=$1
KillWait=5
# accounting through slurmdbd (sacct is what submitit polls)
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
# advertise NODE_CPUS job slots whatever the real core count
SlurmdParameters=config_overrides
EOF
    if [ $MULTI = 1 ]; then
        cat <<EOF
# one slurmd per node: its own spool, pidfile and log (%n = node name)
SlurmdSpoolDir=$SPOOL_DIR/%n
SlurmdPidFile=/run/slurmd-%n.pid
SlurmdLogFile=$LOG_DIR/slurmd-%n.log
# memory is a consumable resource and enforced: a job gets --mem (or DefMemPerCPU per CPU)
# and its cgroup (cgroup.conf: ConstrainRAMSpace) kills it beyond that: OUT_OF_MEMORY
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
SelectTypeParameters=CR_Core_Memory,CR_LLN
DefMemPerCPU=$(( NODE_MEM_MB / NODE_CPUS ))
# a node whose slurmd stops answering is DOWN after ~30 s (default 300 s); its jobs NODE_FAIL
SlurmdTimeout=10
EOF
        for i in $(seq 1 "$NODES"); do
            echo "NodeName=node$i NodeAddr=$NET_PREFIX.$i NodeHostname=node$i CPUs=$NODE_CPUS RealMemory=$NODE_MEM_MB State=UNKNOWN"
        done
        echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
        if [ "$NODES" -ge 3 ]; then
            echo "PartitionName=long Nodes=node[2-$NODES] MaxTime=7-00:00:00 State=UP"
        else
            echo "PartitionName=long Nodes=node$NODES MaxTime=7-00:00:00 State=UP"
        fi
    else
        cat <<EOF
SlurmdSpoolDir=$SPOOL_DIR
SlurmdPidFile=$(pidfile_of slurmd)
SlurmdLogFile=$(logfile_of slurmd)
# plain process tracking, no cgroups needed; share the node per core, memory not enforced
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectTypeParameters=CR_Core
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$NODE_CPUS RealMemory=$NODE_MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    fi
}

# task/cgroup + proctrack/cgroup on the cgroup v1 hierarchy (slurm_<node>/uid_/job_/step_);
# cores are not constrained because more CPUs are advertised than the machine has.
render_cgroup_conf() {
    cat <<EOF
# Written by pypet-hpc slurm/start.sh (used by the multi-node layout)
CgroupPlugin=cgroup/v1
ConstrainRAMSpace=yes
AllowedRAMSpace=100
ConstrainSwapSpace=no
ConstrainCores=no
ConstrainDevices=no
EOF
}

render_dbd_conf() {
    cat <<EOF
# Written by pypet-hpc slurm/start.sh
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
PidFile=$(pidfile_of slurmdbd)
LogFile=$(logfile_of slurmdbd)
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmdbpass
StorageLoc=$DB_NAME
EOF
}

strip_firstid() { grep -v '^FirstJobId=' "$@" 2>/dev/null; }

for d in $HOST_DAEMONS $(slurmd_names); do drop_stale "$d"; done

conf_changed=0
[ "$(render_slurm_conf 0 | strip_firstid)" = "$(strip_firstid "$SLURM_CONF")" ] || conf_changed=1
[ $MULTI = 0 ] || [ "$(render_cgroup_conf)" = "$(cat "$CGROUP_CONF" 2>/dev/null)" ] || conf_changed=1
dbd_changed=0
[ "$(render_dbd_conf)" = "$(cat "$DBD_CONF" 2>/dev/null)" ] || dbd_changed=1

all_running=1
for d in $DAEMONS; do running_pid "$d" >/dev/null || all_running=0; done
# a slurmd of another layout still running also means "not this cluster"
for d in $(slurmd_names); do
    case " $SLURMDS " in *" $d "*) ;; *) running_pid "$d" >/dev/null && all_running=0 ;; esac
done

if [ $RESTART = 0 ] && [ $conf_changed = 0 ] && [ $dbd_changed = 0 ] && [ $all_running = 1 ] && healthy; then
    say "cluster already running and healthy ($NODES node(s): $NODE_NAMES; CPUs=$NODE_CPUS per node, MaxArraySize=$MAX_ARRAY_SIZE); nothing to do"
    timeout 10 sinfo
    exit 0
fi

stop_slurmds() {
    local d
    for d in $(slurmd_names); do stop_daemon "$d"; done
}

# ---- stop what must pick up a new configuration ----------------------------------
if [ $RESTART = 1 ] || [ $conf_changed = 1 ]; then
    if running_pid slurmctld >/dev/null || [ -n "$(slurmd_names)" ]; then
        if [ $RESTART = 1 ]; then say "restarting slurmctld + slurmd(s)"
        else say "configuration changed; restarting slurmctld + slurmd(s)"; fi
        cancel_all_jobs
        stop_slurmds
        stop_daemon slurmctld
    fi
fi
if [ $dbd_changed = 1 ]; then stop_daemon slurmdbd; fi
# slurmds of another layout (e.g. left running by a killed start.sh) go too
for d in $(slurmd_names); do
    case " $SLURMDS " in *" $d "*) ;; *) stop_daemon "$d" ;; esac
done
# namespaces this layout does not have (all of them for the one-node layout)
if [ $MULTI = 0 ]; then
    [ -n "$(node_netns)" ] || [ -e "/sys/class/net/$BRIDGE" ] && teardown_network
else
    for ns in $(node_netns); do
        case " $NODE_NAMES " in *" $ns "*) continue ;; esac
        kill_node_processes "$ns" >/dev/null
        ip netns del "$ns" 2>/dev/null && say "removed network namespace $ns"
        ip link del "veth-$ns" 2>/dev/null
        sed -i "/^$ns\$/d" "$NETNS_FILE" 2>/dev/null
    done
fi

# launch NAME CMD...: start a daemon detached from our session and wait for its pidfile.
launch() {
    local name=$1 pid
    shift
    setsid -f "$@" </dev/null >>"$(outfile_of "$name")" 2>&1 9>&-
    for _ in $(seq 1 50); do
        pid=$(running_pid "$name") && { say "started $name (pid $pid)"; return 0; }
        sleep 0.1
    done
    fail "$name did not start (no live pid in $(pidfile_of "$name"))" "$name"
}

# ---- munge ------------------------------------------------------------------------
if ! running_pid munged >/dev/null; then
    [ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key \
        || fail "could not create /etc/munge/munge.key"
    launch munged runuser -u munge -- /usr/sbin/munged
fi
munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || fail "munge round trip failed" munged

# ---- MariaDB ------------------------------------------------------------------------
mariadb_started=0
if ! running_pid mariadbd >/dev/null; then
    mariadb_started=1
    if [ ! -d /var/lib/mysql/mysql ]; then
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$(outfile_of mariadb-install-db)" 2>&1 9>&- \
            || fail "mariadb-install-db failed" mariadb-install-db
    fi
    # socket only (/run/mysqld/mysqld.sock): no TCP port to clash with anything
    setsid -f /usr/sbin/mariadbd --user=mysql --skip-networking \
        --pid-file="$(pidfile_of mariadbd)" --socket=/run/mysqld/mysqld.sock \
        </dev/null >>"$(logfile_of mariadbd)" 2>&1 9>&-
fi
ok=0
for _ in $(seq 1 150); do
    mariadb-admin ping >/dev/null 2>&1 && { ok=1; break; }
    sleep 0.2
done
[ $ok = 1 ] || fail "MariaDB does not answer after 30 s" mariadbd
pid=$(running_pid mariadbd) || fail "MariaDB answers but $(pidfile_of mariadbd) has no live mariadbd" mariadbd
[ "$mariadb_started" = 1 ] && say "started mariadbd (pid $pid)"
mariadb <<SQL || fail "could not create the accounting database/user" mariadbd
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmdbpass';
GRANT ALL ON $DB_NAME.* TO 'slurm'@'localhost';
SQL

# ---- write config files ----------------------------------------------------------------
# FirstJobId only matters for a fresh controller state; then start above every
# job id ever recorded (DB or the floor kept across WIPE=1) so ids never repeat.
first_id=$(sed -n 's/^FirstJobId=//p' "$SLURM_CONF" 2>/dev/null | head -n 1)
if [ ! -e "$STATE_DIR/job_state" ] || [ -z "$first_id" ]; then
    first_id=$(( $(db_max_jobid) + 1 ))
    floor=$(tr -dc 0-9 2>/dev/null <"$JOBID_FLOOR_FILE")
    [ -n "$floor" ] && [ "$floor" -gt "$first_id" ] && first_id=$floor
fi
tmp=$(mktemp /etc/slurm/.slurm.conf.XXXXXX)
render_slurm_conf "$first_id" >"$tmp" && chmod 644 "$tmp"
if cmp -s "$tmp" "$SLURM_CONF"; then rm -f "$tmp"; else mv -f "$tmp" "$SLURM_CONF"; fi
if [ $MULTI = 1 ]; then
    tmp=$(mktemp /etc/slurm/.cgroup.conf.XXXXXX)
    render_cgroup_conf >"$tmp" && chmod 644 "$tmp"
    if cmp -s "$tmp" "$CGROUP_CONF"; then rm -f "$tmp"; else mv -f "$tmp" "$CGROUP_CONF"; fi
fi
if [ $dbd_changed = 1 ]; then
    tmp=$(mktemp /etc/slurm/.slurmdbd.conf.XXXXXX)
    render_dbd_conf >"$tmp" && mv -f "$tmp" "$DBD_CONF"
fi
# slurmdbd refuses to start unless its config is slurm:slurm 0600
chown slurm:slurm "$DBD_CONF" && chmod 600 "$DBD_CONF"

# ---- slurmdbd ------------------------------------------------------------------------------
running_pid slurmdbd >/dev/null || launch slurmdbd /usr/sbin/slurmdbd
ok=0
for _ in $(seq 1 100); do
    timeout 10 sacctmgr -n list cluster >/dev/null 2>&1 && { ok=1; break; }
    sleep 0.2
done
[ $ok = 1 ] || fail "slurmdbd does not answer sacctmgr after 20 s" slurmdbd mariadbd

# ---- network namespaces (multi-node layout) -------------------------------------------------------
# ipv6_off DEV [NS]: no IPv6 on our links (no router solicitations, DAD or MLD on the bridge).
ipv6_off() {
    if [ -n "${2:-}" ]; then
        nsenter --net="/run/netns/$2" sysctl -qw "net.ipv6.conf.$1.disable_ipv6=1" 2>/dev/null
    else
        sysctl -qw "net.ipv6.conf.$1.disable_ipv6=1" 2>/dev/null
    fi
    return 0
}

make_network() {
    local i ns hosts=""
    if [ ! -e "/sys/class/net/$BRIDGE" ]; then
        ip link add "$BRIDGE" type bridge || fail "could not create bridge $BRIDGE (ip link add ... type bridge)"
        say "created bridge $BRIDGE ($HOST_ADDR/24)"
    fi
    ipv6_off "$BRIDGE"
    # shellcheck disable=SC2015  # fail exits either way
    ip addr replace "$HOST_ADDR/24" dev "$BRIDGE" && ip link set "$BRIDGE" up \
        || fail "could not give bridge $BRIDGE the address $HOST_ADDR/24"
    for i in $(seq 1 "$NODES"); do
        ns=node$i
        if [ ! -e "/run/netns/$ns" ]; then
            ip netns add "$ns" || fail "could not create network namespace $ns"
            say "created network namespace $ns ($NET_PREFIX.$i)"
        fi
        grep -qx "$ns" "$NETNS_FILE" 2>/dev/null || echo "$ns" >>"$NETNS_FILE"
        if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
            ip link del "veth-$ns" 2>/dev/null
            ip link add "veth-$ns" type veth peer name eth0 netns "$ns" \
                || fail "could not create the veth pair veth-$ns <-> $ns:eth0"
        fi
        ipv6_off "veth-$ns"
        ipv6_off all "$ns"
        ipv6_off eth0 "$ns"
        { ip link set "veth-$ns" master "$BRIDGE" up &&
          ip -n "$ns" addr replace "$NET_PREFIX.$i/24" dev eth0 &&
          ip -n "$ns" link set eth0 up && ip -n "$ns" link set lo up; } \
            || fail "could not wire namespace $ns to bridge $BRIDGE"
        hosts="$hosts$NET_PREFIX.$i $ns"$'\n'
        install -d -o slurm -g slurm -m 0755 "$SPOOL_DIR/$ns" || fail "could not create $SPOOL_DIR/$ns"
    done
    write_hosts_block "${hosts%$'\n'}"
}
[ $MULTI = 1 ] && make_network

# launch_slurmd NAME: start the slurmd of node NAME ("localhost", or nodeN inside namespace
# nodeN with hostname nodeN in a UTS namespace of its own: the jobs it starts see that name).
launch_slurmd() {
    if [ "$1" = localhost ]; then
        launch slurmd /usr/sbin/slurmd -N localhost
    else
        # shellcheck disable=SC2016  # $1 is expanded by the inner sh
        launch "slurmd-$1" nsenter --net="/run/netns/$1" unshare --uts -- \
            sh -c 'hostname "$1" && exec /usr/sbin/slurmd -N "$1"' sh "$1"
    fi
}
slurmd_of() { if [ "$1" = localhost ]; then echo slurmd; else echo "slurmd-$1"; fi; }

# ---- slurmctld + slurmd --------------------------------------------------------------------------
if ! running_pid slurmctld >/dev/null; then
    launch slurmctld /usr/sbin/slurmctld
    # A slurmd that outlived its controller would only re-register at the next
    # node ping (several seconds); SIGHUP (reconfigure) makes it register now.
    for d in $SLURMDS; do
        if pid=$(running_pid "$d"); then kill -HUP "$pid"; fi
    done
fi
for n in $NODE_NAMES; do
    running_pid "$(slurmd_of "$n")" >/dev/null || launch_slurmd "$n"
done

resumed=" " ok=0
for _ in $(seq 1 150); do
    if [ "$(node_states | wc -l)" = "$NODES" ] && healthy; then ok=1; break; fi
    while read -r node state; do
        case $state in
            drain*|down)
                case $resumed in *" $node "*) continue ;; esac
                say "node $node is '$state' ($(timeout 10 sinfo -h -R -n "$node" -o %E)); resuming it"
                timeout 10 scontrol update nodename="$node" state=resume
                resumed="$resumed$node " ;;
        esac
    done < <(node_states)
    running_pid slurmctld >/dev/null || fail "slurmctld died" slurmctld
    for n in $NODE_NAMES; do
        d=$(slurmd_of "$n")
        running_pid "$d" >/dev/null || fail "$d died" "$d" slurmctld
    done
    sleep 0.2
done
# shellcheck disable=SC2086
[ $ok = 1 ] || fail "cluster not ready after 30 s (nodes: $(node_states | tr '\n' ' '))" slurmctld $SLURMDS slurmdbd

# shellcheck disable=SC2086
bad=$(probe_nodes $NODE_NAMES)
if [ -n "$bad" ]; then
    echo "[slurm] jobs pinned to $bad did not run within 90 s; queue and node reasons:" >&2
    timeout 10 squeue -o '%i %j %T %r %N' >&2 || true
    timeout 10 sinfo -R >&2 || true
    # shellcheck disable=SC2086
    fail "node(s) $bad registered but cannot run jobs" slurmctld $SLURMDS
fi

awk -v a="$T0" -v b="$EPOCHREALTIME" -v n="$NODES" 'BEGIN { printf "cluster ready in %.1f s (%d node%s)\n", b - a, n, (n > 1 ? "s" : "") }'
