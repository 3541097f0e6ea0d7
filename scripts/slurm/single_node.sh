#!/usr/bin/env bash
# A real single-node Slurm on this machine, for chartrl's Slurm integration test
# (tests/slurm.rs) and for trying `chartrl slurm submit` by hand. Debian 12 (Slurm 22.05).
#
#   sudo scripts/slurm/single_node.sh start    # install if needed, configure, start; prints the env
#   sudo scripts/slurm/single_node.sh stop
#
# As root: installs slurmctld, slurmd, slurm-client and munge from the Debian packages,
# writes /etc/slurm/slurm.conf (no accounting: `squeue` works, `sacct` does not), starts
# munged as the munge user and slurmctld and slurmd in the background, and waits until the
# node is idle. State and logs go under /var/lib/chartrl-slurm.
set -euo pipefail

STATE=/var/lib/chartrl-slurm
PIDS=$STATE/pids

die() { echo "single_node.sh: $*" >&2; exit 1; }

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return
    fi
    [ "$(id -u)" = 0 ] || die "installing Slurm needs root"
    command -v apt-get >/dev/null || die "no apt-get: install slurmctld slurmd slurm-client munge yourself"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null; } \
        || die "apt-get could not install slurmctld slurmd slurm-client munge"
}

configure() {
    local host node
    host=$(hostname -s)
    getent hosts "$host" >/dev/null || echo "127.0.0.1 $host" >> /etc/hosts
    # The node line slurmd sees, without RealMemory (memory is not a scheduled resource here).
    node=$(slurmd -C | head -1 | sed -e 's/ RealMemory=[0-9]*//')
    mkdir -p "$STATE"/{ctld,d,log} /etc/slurm "$PIDS"
    cat > /etc/slurm/slurm.conf <<CONF
ClusterName=chartrl
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$PIDS/slurmctld.pid
SlurmdPidFile=$PIDS/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SchedulerType=sched/backfill
MinJobAge=3600
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
}

start_munge() {
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    [ -s /etc/munge/munge.key ] || sudo_munge mungekey -c
    if ! pgrep -x munged >/dev/null; then
        sudo_munge munged
    fi
}

sudo_munge() {
    if command -v runuser >/dev/null; then runuser -u munge -- "$@"; else su -s /bin/sh munge -c "$*"; fi
}

start() {
    [ "$(id -u)" = 0 ] || die "starting Slurm needs root (SlurmUser=root)"
    install
    configure
    start_munge
    pgrep -x slurmctld >/dev/null || (slurmctld -D -c >"$STATE/log/slurmctld.out" 2>&1 & echo $! > "$PIDS/ctld")
    for _ in $(seq 60); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.5; done
    scontrol ping | grep -q UP || die "slurmctld did not come up: $(tail -5 "$STATE/log/slurmctld.log" 2>/dev/null)"
    pgrep -x slurmd >/dev/null || (slurmd -D >"$STATE/log/slurmd.out" 2>&1 & echo $! > "$PIDS/d")
    for _ in $(seq 60); do sinfo -h -o %t 2>/dev/null | grep -q idle && break; sleep 0.5; done
    sinfo -h -o %t | grep -q idle || die "the node is not idle: $(sinfo -h 2>&1) $(tail -5 "$STATE/log/slurmd.log" 2>/dev/null)"
    echo "Slurm is up: $(sinfo -h -o '%P %D %t %c')"
}

stop() {
    for f in "$PIDS/d" "$PIDS/ctld"; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
        rm -f "$f"
    done
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
    for _ in $(seq 40); do
        pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || return 0
        sleep 0.25
    done
    die "slurmd or slurmctld is still running"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) die "usage: $0 start|stop" ;;
esac
