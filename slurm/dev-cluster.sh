#!/usr/bin/env bash
# A real 2-node Slurm cluster on this one machine, for tests and for rehearsing multi-node jobs.
#
#   slurm/dev-cluster.sh install   apt-get the Debian packages (slurm-wlm munge slurmdbd mariadb-server iproute2)
#   slurm/dev-cluster.sh up        start munged, MariaDB, slurmdbd, slurmctld and one slurmd per node
#   slurm/dev-cluster.sh status    what runs, and sinfo
#   slurm/dev-cluster.sh env       the line to eval so sbatch / squeue / launch/submit.py talk to this cluster
#   slurm/dev-cluster.sh down      cancel jobs, stop every daemon by its PID file, delete namespaces and bridge
#                                  (`down --purge` also deletes the state folder)
#
# Needs root (network namespaces, bind mounts). Everything lives under one state folder:
#   SQLFT_SLURM_STATE   state folder                         [/var/tmp/sqlft-slurm-$SQLFT_SLURM_INDEX]
#   SQLFT_SLURM_INDEX   0-99: picks bridge sqlftbr<i>, subnet 10.200.<i>.0/24 and ports 17<i><0-9>,
#                       so several clusters can run side by side                                      [0]
#   SQLFT_SLURM_NODES   number of nodes (node1..nodeN)                                                 [2]
#   SQLFT_SLURM_CPUS    CPUs each node declares                                                        [2]
#   SQLFT_SLURM_GPUS    fake GPUs per node (/dev/null symlinks: exercises --gpus-per-node, not CUDA)   [2]
#
# Nodes are network namespaces (own hostname node<k>, own address 10.200.<i>.<10+k>, no route out) sharing this
# machine's filesystem, so every path is "shared storage". The controller and accounting run in the root
# namespace. cred_expire=10 lets a requeued job start again after ~10 s instead of 120 s.
# Exit codes: 0 ok, 1 failure, 3 this index is already in use (bridge exists), 4 not root / packages missing /
# no namespaces allowed here.
set -euo pipefail

IDX=${SQLFT_SLURM_INDEX:-0}
if ! [[ $IDX =~ ^[0-9]+$ ]] || ((IDX > 99)); then echo "error: SQLFT_SLURM_INDEX must be 0-99" >&2; exit 1; fi
STATE=${SQLFT_SLURM_STATE:-/var/tmp/sqlft-slurm-$IDX}
NODES=${SQLFT_SLURM_NODES:-2}
CPUS=${SQLFT_SLURM_CPUS:-2}
GPUS=${SQLFT_SLURM_GPUS:-2}
BRIDGE=sqlftbr$IDX
NET=10.200.$IDX
NS=sqlft${IDX}n               # namespaces sqlft<i>n1, sqlft<i>n2, ...
PORT_CTLD=$((17000 + IDX * 10 + 1))
PORT_DBD=$((17000 + IDX * 10 + 2))
PORT_DB=$((17000 + IDX * 10 + 3))
CTL_HOST=$(hostname -s)
PACKAGES="slurm-wlm munge slurmdbd mariadb-server iproute2"

say() { echo "[dev-cluster $IDX] $*" >&2; }
die() { echo "error: $*" >&2; exit "${2:-1}"; }

need_root() { [[ $(id -u) == 0 ]] || die "the dev cluster needs root (network namespaces, bind mounts)" 4; }

have_packages() {
    local b
    for b in slurmctld slurmd slurmdbd munged mungekey mariadbd mariadb-install-db ip nsenter unshare sbatch sacct; do
        command -v "$b" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$b" >/dev/null 2>&1 || return 1
    done
}

cmd_install() {
    need_root
    have_packages && { say "packages already installed"; return 0; }
    command -v apt-get >/dev/null || die "apt-get not found: install $PACKAGES with your package manager" 4
    say "installing $PACKAGES"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
}

pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local secs=$1 what=$2; shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || die "timed out after ${secs}s waiting for $what (logs: $STATE/log)"
        sleep 0.2
    done
}

stop_pidfiles() {  # stop_pidfiles FILE...: TERM to the PIDs in our own files, wait up to 10 s, then KILL
    local f pid pids=() i
    for f in "$@"; do
        [[ -s $f ]] || continue
        pid=$(cat "$f")
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
        rm -f "$f"
    done
    for i in $(seq 50); do
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && { sleep 0.2; continue 2; }; done
        return 0
    done
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null && { say "pid $pid did not stop; killing"; kill -KILL "$pid" 2>/dev/null || true; }
    done
    return 0
}

write_configs() {
    local k
    mkdir -p "$STATE"/{etc,log,run,ctld,spool,gpu,munge}
    chmod 755 "$STATE" "$STATE/munge"
    {
        echo "127.0.0.1 localhost"
        echo "$NET.1 $CTL_HOST"
        for k in $(seq "$NODES"); do echo "$NET.$((10 + k)) node$k"; done
    } >"$STATE/etc/hosts"
    for k in 0 1 2 3 4 5 6 7; do ((k < GPUS)) && ln -sfn /dev/null "$STATE/gpu/nvidia$k"; done
    local gres_line="" gres_conf="AutoDetect=off"
    if ((GPUS > 0)); then
        gres_line=" Gres=gpu:$GPUS"
        gres_conf+=$'\n'"NodeName=node[1-$NODES] Name=gpu File=$STATE/gpu/nvidia[0-$((GPUS - 1))]"
    fi
    echo "$gres_conf" >"$STATE/etc/gres.conf"
    cat >"$STATE/etc/slurm.conf" <<EOF
# generated by slurm/dev-cluster.sh (index $IDX)
ClusterName=sqlft$IDX
SlurmctldHost=$CTL_HOST($NET.1)
SlurmctldPort=$PORT_CTLD
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket,cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=sched_interval=2,bf_interval=2
ReturnToService=2
KillWait=5
MinJobAge=300
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$PORT_DBD
AccountingStoragePass=$STATE/munge/munge.socket
GresTypes=gpu
EOF
    for k in $(seq "$NODES"); do
        echo "NodeName=node$k NodeHostname=node$k NodeAddr=$NET.$((10 + k)) CPUs=$CPUS RealMemory=2000$gres_line State=UNKNOWN"
    done >>"$STATE/etc/slurm.conf"
    echo "PartitionName=debug Nodes=node[1-$NODES] Default=YES MaxTime=60 State=UP" >>"$STATE/etc/slurm.conf"
    cat >"$STATE/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket
DbdAddr=127.0.0.1
DbdHost=$CTL_HOST
DbdPort=$PORT_DBD
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$PORT_DB
StorageUser=slurm
StoragePass=sqlft-dev
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$STATE/etc/slurmdbd.conf"
}

start_munge() {
    pid_alive "$STATE/run/munged.pid" && return 0
    chown munge:munge "$STATE/munge"
    [[ -s $STATE/munge/munge.key ]] || mungekey -c -k "$STATE/munge/munge.key"
    chown munge:munge "$STATE/munge/munge.key" && chmod 600 "$STATE/munge/munge.key"
    touch "$STATE/log/munged.log" && chown munge:munge "$STATE/log/munged.log"
    runuser -u munge -- munged --socket="$STATE/munge/munge.socket" --key-file="$STATE/munge/munge.key" \
        --pid-file="$STATE/munge/munged.pid" --seed-file="$STATE/munge/munged.seed" \
        --log-file="$STATE/log/munged.log" --force
    wait_for 10 munged test -S "$STATE/munge/munge.socket"
    cp "$STATE/munge/munged.pid" "$STATE/run/munged.pid"
}

start_mariadb() {
    pid_alive "$STATE/run/mariadb.pid" && return 0
    if [[ ! -d $STATE/mysql/mysql ]]; then
        mariadb-install-db --no-defaults --datadir="$STATE/mysql" --user=root --auth-root-authentication-method=socket \
            --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed: $STATE/log/mariadb-install.log"
    fi
    setsid mariadbd --no-defaults --datadir="$STATE/mysql" --socket="$STATE/run/mysql.sock" --port="$PORT_DB" \
        --bind-address=127.0.0.1 --pid-file="$STATE/run/mariadb.pid" --log-error="$STATE/log/mariadb.log" \
        --user=root --skip-name-resolve </dev/null >>"$STATE/log/mariadb.log" 2>&1 &
    wait_for 30 MariaDB mariadb --no-defaults -S "$STATE/run/mysql.sock" -u root -e "select 1"
    mariadb --no-defaults -S "$STATE/run/mysql.sock" -u root <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'sqlft-dev';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'sqlft-dev';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
}

start_network() {
    local k ns
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge 2>/dev/null || die "cannot create bridge $BRIDGE" 3
        ip addr add "$NET.1/24" dev "$BRIDGE"
        ip link set "$BRIDGE" up
    fi
    for k in $(seq "$NODES"); do
        ns=$NS$k
        [[ -e /run/netns/$ns ]] && continue
        ip netns add "$ns"
        ip link add "v$IDX-$k" type veth peer name "v$IDX-${k}p"
        ip link set "v$IDX-$k" master "$BRIDGE" up
        ip link set "v$IDX-${k}p" netns "$ns"
        ip -n "$ns" link set "v$IDX-${k}p" name eth0
        ip -n "$ns" addr add "$NET.$((10 + k))/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
    done
}

start_slurm() {
    export SLURM_CONF=$STATE/etc/slurm.conf
    if ! pid_alive "$STATE/run/slurmdbd.pid"; then
        slurmdbd
        wait_for 20 slurmdbd pid_alive "$STATE/run/slurmdbd.pid"
        wait_for 20 "slurmdbd port $PORT_DBD" bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT_DBD"
    fi
    if ! pid_alive "$STATE/run/slurmctld.pid"; then
        slurmctld
        wait_for 20 slurmctld scontrol ping
    fi
    local k
    for k in $(seq "$NODES"); do
        pid_alive "$STATE/run/slurmd-node$k.pid" && continue
        mkdir -p "$STATE/spool/node$k"
        # Not `ip netns exec`: it remounts /sys and slurmd then finds no cgroup filesystem.
        nsenter --net="/run/netns/$NS$k" -- unshare --uts --mount --propagation private -- \
            sh -c "mount --bind '$STATE/etc/hosts' /etc/hosts && hostname node$k && exec slurmd -f '$SLURM_CONF' -N node$k"
    done
    wait_for 30 "$NODES idle nodes" bash -c "[[ \$(sinfo -h -N -t idle -o %N | wc -l) -ge $NODES ]]"
}

cmd_up() {
    need_root
    have_packages || cmd_install
    have_packages || die "Slurm packages missing after install" 4
    if ip link show "$BRIDGE" >/dev/null 2>&1 && ! pid_alive "$STATE/run/slurmctld.pid"; then
        die "bridge $BRIDGE exists but no cluster of this state folder runs: another dev cluster uses index $IDX (set SQLFT_SLURM_INDEX), or run 'down' first" 3
    fi
    unshare --net --uts --mount true 2>/dev/null \
        || die "cannot create namespaces here (a container without CAP_SYS_ADMIN / CAP_NET_ADMIN?)" 4
    local t0=$SECONDS
    write_configs
    start_network  # first: claims this index (bridge) before any daemon starts
    start_munge
    start_mariadb
    start_slurm
    say "up in $((SECONDS - t0)) s: $NODES nodes, state in $STATE"
    say "use it with:  eval \"\$($0 env)\""
}

cmd_down() {
    need_root
    export SLURM_CONF=$STATE/etc/slurm.conf
    local k pid
    if pid_alive "$STATE/run/slurmctld.pid"; then
        scancel --full --quiet $(squeue -h -o %A 2>/dev/null | sort -u) 2>/dev/null || true
        for k in $(seq 25); do [[ -z $(squeue -h -t R,CG -o %A 2>/dev/null) ]] && break; sleep 0.2; done
    fi
    stop_pidfiles "$STATE"/run/slurmd-*.pid "$STATE/run/slurmctld.pid"
    stop_pidfiles "$STATE/run/slurmdbd.pid"
    stop_pidfiles "$STATE/run/mariadb.pid" "$STATE/run/munged.pid"
    rm -f "$STATE/munge/munged.pid"
    # Job processes left in the node namespaces (slurmstepd, tasks): exactly the PIDs the kernel lists for our
    # namespaces, never a match on process names.
    for k in $(seq "$NODES"); do
        [[ -e /run/netns/$NS$k ]] || continue
        for pid in $(ip netns pids "$NS$k" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$NS$k" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    if [[ ${1:-} == --purge ]]; then rm -rf "$STATE"; say "down; state folder removed"; else say "down; logs kept in $STATE/log"; fi
}

cmd_status() {
    local f name rc=0
    for f in munged mariadb slurmdbd slurmctld; do
        if pid_alive "$STATE/run/$f.pid"; then echo "$f: running (pid $(cat "$STATE/run/$f.pid"))"; else echo "$f: stopped"; rc=1; fi
    done
    for f in "$STATE"/run/slurmd-*.pid; do
        [[ -e $f ]] || continue
        name=$(basename "$f" .pid)
        if pid_alive "$f"; then echo "$name: running (pid $(cat "$f"))"; else echo "$name: stopped"; rc=1; fi
    done
    if pid_alive "$STATE/run/slurmctld.pid"; then SLURM_CONF=$STATE/etc/slurm.conf sinfo -N -l || true; fi
    return $rc
}

case ${1:-} in
    install) cmd_install ;;
    up) cmd_up ;;
    down) shift; cmd_down "$@" ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$STATE/etc/slurm.conf SQLFT_ALLOW_LOCAL_OUTPUT=1" ;;
    *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
