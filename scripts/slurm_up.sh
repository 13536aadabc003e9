#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the tests marked `slurm` (tests/run/test_slurm.py).
#
#   sudo scripts/slurm_up.sh       # as root: installs what is missing, then starts munged, slurmctld, slurmd
#
# Installs the Debian packages slurmctld, slurmd, slurm-client and munge (apt-get) when they are missing,
# writes /etc/slurm/slurm.conf (one node: this machine with the CPUs and memory `slurmd -C` finds; one
# partition, `debug`, the default), and starts munged, then slurmctld and slurmd, both as root (jobs run as the
# user who submits them). Idempotent: when the node already answers, it only says so (well under a second).
# Logs: /var/log/slurm/. Stop it with `scontrol shutdown` (both SLURM daemons) and `pkill -x munged`.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
say() { echo "slurm_up: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    say "needs root (it installs packages and starts daemons); run it with sudo"
    exit 2
fi

node_state() { sinfo -h -N -o '%T' 2>/dev/null | head -n1; }

# slurm.conf for this one node.
wanted_conf() {
    local hardware memory node
    hardware=$(slurmd -C | head -n1)  # NodeName=... CPUs=... Boards=... ... RealMemory=...
    memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hardware")
    node="${hardware% RealMemory=*} RealMemory=$((memory * 9 / 10))"  # some slack: the node never drains
    cat <<EOF
# Written by scripts/slurm_up.sh: a one-node cluster for gradbench's tests.
ClusterName=gradbench
SlurmctldHost=$(hostname -s)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
InactiveLimit=0
KillWait=30
# A requeued job waits cred_expire seconds (default 120) before it may start again on the node that ran it.
AuthInfo=cred_expire=10
MinJobAge=300
SlurmdTimeout=300
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}
# Already up with this configuration: nothing to do.
if [[ -f $CONF ]] && command -v sinfo >/dev/null && [[ $(node_state) =~ ^(idle|mixed|allocated|completing) ]] &&
    [[ $(cat "$CONF") == "$(wanted_conf)" ]]; then
    say "already running: node $(hostname -s) is $(node_state)"
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null ||
    ! command -v munged >/dev/null; then
    say "installing slurmctld, slurmd, slurm-client and munge"
    export DEBIAN_FRONTEND=noninteractive
    packages=(slurmctld slurmd slurm-client munge)
    apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null ||
        { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null; }
fi

# munge: a key (the package makes one; make one if it did not), then the daemon, as the munge user.
if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --force
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
fi
munge -n | unmunge >/dev/null

host=$(hostname -s)
wanted=$(wanted_conf)
install -d -m 0755 /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
if [[ ! -f $CONF ]] || [[ $(cat "$CONF") != "$wanted" ]]; then
    printf '%s\n' "$wanted" >"$CONF"
    if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
        say "slurm.conf changed: restarting the daemons"
        scontrol shutdown >/dev/null 2>&1 || true
        for _ in $(seq 50); do pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break; sleep 0.2; done
    fi
fi

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 150); do
    state=$(node_state)
    case $state in
        idle* | mixed* | allocated* | completing*)
            say "running: node $host is $state (partition debug; logs in /var/log/slurm)"
            exit 0
            ;;
        down* | drain*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
done
say "the node did not come up (state: ${state:-unknown}); see /var/log/slurm/slurmctld.log and slurmd.log"
exit 1
