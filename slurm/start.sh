#!/bin/bash
# Start (or check, or restart) a real single-node SLURM cluster on localhost,
# with slurmdbd + MariaDB so that sacct works. Debian/Ubuntu, run as root.
#
#   bash slurm/start.sh              install if needed, start what is not running
#   bash slurm/start.sh --restart    cancel jobs, restart slurmctld+slurmd with new config
#
# Knobs (environment): NODE_CPUS (16), MAX_ARRAY_SIZE (100001),
#                      NODE_MEM_MB (95 % of MemTotal).
# A plain start whose knobs differ from the running config also restarts.
set -uo pipefail

T0=$EPOCHREALTIME
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

usage() { sed -n '2,10s/^# \{0,1\}//p' "$0"; }

RESTART=0
for arg in "$@"; do
    case $arg in
        --restart) RESTART=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

NODE_CPUS=${NODE_CPUS:-16}
MAX_ARRAY_SIZE=${MAX_ARRAY_SIZE:-100001}
NODE_MEM_MB=${NODE_MEM_MB:-$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 95 / 102400 ))}
for knob in NODE_CPUS MAX_ARRAY_SIZE NODE_MEM_MB; do
    case ${!knob} in
        ''|*[!0-9]*|0) fail "$knob must be a positive integer, got '${!knob}'" ;;
    esac
done
[ "$MAX_ARRAY_SIZE" -le 4000001 ] || fail "MAX_ARRAY_SIZE must be <= 4000001 (SLURM limit)"
MAX_JOB_COUNT=200000
[ $(( 2 * MAX_ARRAY_SIZE )) -gt $MAX_JOB_COUNT ] && MAX_JOB_COUNT=$(( 2 * MAX_ARRAY_SIZE ))

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
    cat <<EOF
# Written by pypet-hpc slurm/start.sh -- single-node cluster, all daemons on localhost.
ClusterName=$CLUSTER_NAME
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=$(pidfile_of slurmctld)
SlurmdPidFile=$(pidfile_of slurmd)
SlurmctldLogFile=$(logfile_of slurmctld)
SlurmdLogFile=$(logfile_of slurmd)
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
# plain process tracking, no cgroups needed
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
# start queued jobs right away instead of in ~3 s waves; share the node per core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
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
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$NODE_CPUS RealMemory=$NODE_MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
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

for d in $DAEMONS; do drop_stale "$d"; done

conf_changed=0
[ "$(render_slurm_conf 0 | strip_firstid)" = "$(strip_firstid "$SLURM_CONF")" ] || conf_changed=1
dbd_changed=0
[ "$(render_dbd_conf)" = "$(cat "$DBD_CONF" 2>/dev/null)" ] || dbd_changed=1

all_running=1
for d in $DAEMONS; do running_pid "$d" >/dev/null || all_running=0; done

if [ $RESTART = 0 ] && [ $conf_changed = 0 ] && [ $dbd_changed = 0 ] && [ $all_running = 1 ] && healthy; then
    say "cluster already running and healthy (CPUs=$NODE_CPUS MaxArraySize=$MAX_ARRAY_SIZE); nothing to do"
    timeout 10 sinfo
    exit 0
fi

# ---- stop what must pick up a new configuration ----------------------------------
if [ $RESTART = 1 ] || [ $conf_changed = 1 ]; then
    if running_pid slurmctld >/dev/null || running_pid slurmd >/dev/null; then
        if [ $RESTART = 1 ]; then say "restarting slurmctld + slurmd"
        else say "configuration changed; restarting slurmctld + slurmd"; fi
        cancel_all_jobs
        stop_daemon slurmd
        stop_daemon slurmctld
    fi
fi
if [ $dbd_changed = 1 ]; then stop_daemon slurmdbd; fi

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

# ---- slurmctld + slurmd --------------------------------------------------------------------------
if ! running_pid slurmctld >/dev/null; then
    launch slurmctld /usr/sbin/slurmctld
    # A slurmd that outlived its controller would only re-register at the next
    # node ping (several seconds); SIGHUP (reconfigure) makes it register now.
    if pid=$(running_pid slurmd); then kill -HUP "$pid"; fi
fi
running_pid slurmd >/dev/null || launch slurmd /usr/sbin/slurmd -N localhost

resumed=0 ok=0
for _ in $(seq 1 150); do
    state=$(node_state)
    case $state in
        idle|mixed|allocated) healthy && { ok=1; break; } ;;
        drain*|down)
            if [ $resumed = 0 ]; then
                say "node is '$state' ($(timeout 10 sinfo -h -R -o %E)); resuming it"
                timeout 10 scontrol update nodename=localhost state=resume
                resumed=1
            fi ;;
    esac
    running_pid slurmctld >/dev/null || fail "slurmctld died" slurmctld
    running_pid slurmd >/dev/null || fail "slurmd died" slurmd slurmctld
    sleep 0.2
done
[ $ok = 1 ] || fail "cluster not ready after 30 s (node state '$(node_state)')" slurmctld slurmd slurmdbd

awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "cluster ready in %.1f s\n", b - a }'
