#!/usr/bin/env bash
# A single-node SLURM cluster on this host, for tests/test_slurm.py: munge, MariaDB + slurmdbd (accounting,
# so that sacct works as on a real cluster: the executor plugin polls job states with it), slurmctld and
# slurmd, one partition `cpu` holding this host, and the account `harness` for root.
#
#   tests/slurm/up.sh        # as root; installs Debian's packages when they are missing
#
# Idempotent: a daemon that already answers is left alone; only the missing ones are started.
# Each daemon this call starts is named on a line of its own ("started: slurmctld"), also when a later
# step fails, so that a caller stops only those (tests/slurm/down.sh NAME...). No systemd: the daemons
# are started directly.
# Files: /etc/slurm/{slurm,slurmdbd}.conf, state under /var/lib/slurm, logs under /var/log/slurm.
set -euo pipefail

ACCOUNT=harness          # tests/test_slurm.py passes it as HARNESS_SLURM_ACCOUNT (profiles/slurm)
PARTITION=cpu
CLUSTER=harness
DB_PASS=slurmdbd-local   # MariaDB listens on 127.0.0.1 only
RUN_DIR=/run/slurm
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm
T0=$(date +%s.%N)
log() { awk -v a="$T0" -v b="$(date +%s.%N)" -v m="$*" 'BEGIN { printf "[up.sh %5.1fs] %s\n", b - a, m }'; }

[ "$(id -u)" = 0 ] || { echo "up.sh: must run as root (it installs packages and starts daemons)" >&2; exit 1; }
# Never take over a real cluster: the configuration files must be absent or written by this script.
for f in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf; do
  if [ -e "$f" ] && ! grep -q "^# Written by tests/slurm/up.sh" "$f"; then
    echo "up.sh: $f exists and was not written by this script: this host looks like a real SLURM host," \
         "whose configuration, controller and accounting password this test would replace. Run the test" \
         "on a machine without SLURM (CI does), or move $f away first." >&2
    exit 1
  fi
done

# ---- packages ---------------------------------------------------------------------------------------
missing=()
for pkg in slurm-wlm slurmdbd munge mariadb-server; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"  # postinst cannot start services here: fine
fi
log "packages ok (slurm $(dpkg-query -W -f='${Version}' slurmctld))"

wait_for() {  # seconds command...: poll until the command succeeds
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# ---- munge: authenticates every SLURM message -------------------------------------------------------
munge_ok() { munge -n | unmunge; }
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key  # Debian's postinst made one
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge
chmod 700 /etc/munge && chmod 600 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge
if ! munge_ok >/dev/null 2>&1; then
  rm -f /run/munge/munge.socket.2.lock
  su -s /bin/sh munge -c /usr/sbin/munged  # daemonizes; pid in /run/munge/munged.pid
  echo "started: munged"
  wait_for 10 munge_ok || { echo "up.sh: munged did not start" >&2; exit 1; }
fi
log "munged ok"

# ---- slurm.conf: this host's name, CPU topology and memory --------------------------------------------
HOST=$(hostname -s)
MEM_MB=$(free -m | awk '/^Mem:/ { print $2 }')
REAL_MEM_MB=$(( MEM_MB > 4096 ? MEM_MB - 2048 : MEM_MB * 3 / 4 ))  # leave the OS its share
# "CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1", as slurmd detects it
TOPOLOGY=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //' -e 's/ RealMemory=.*//')
install -d -o slurm -g slurm -m 755 "$RUN_DIR" "$LOG_DIR" "$STATE_DIR" "$STATE_DIR/slurmctld"
install -d -m 755 "$STATE_DIR/slurmd"  # slurmd runs as root

NEW_CONF=$(mktemp)
trap 'rm -f "$NEW_CONF"' EXIT
cat > "$NEW_CONF" <<EOF
# Written by tests/slurm/up.sh: a single-node cluster on $HOST.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no mail server here (silences "MailProg is invalid")
MailProg=/bin/true
ReturnToService=2
MpiDefault=none
# no cgroup setup in a container; processes are tracked by parent id
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# a job without --mem would otherwise hold the whole node's memory, and jobs would run one at a time
DefMemPerCPU=1000
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
AccountingStorageEnforce=associations
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
InactiveLimit=0
KillWait=30
Waittime=0
NodeName=$HOST NodeAddr=127.0.0.1 $TOPOLOGY RealMemory=$REAL_MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
CONF_CHANGED=0
cmp -s "$NEW_CONF" /etc/slurm/slurm.conf || CONF_CHANGED=1
install -m 644 "$NEW_CONF" /etc/slurm/slurm.conf

# ---- accounting: MariaDB + slurmdbd, the cluster, the account and root's association -----------------
if ! mariadb-admin ping >/dev/null 2>&1; then
  install -d -o mysql -g root /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
  setsid nohup /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --innodb-buffer-pool-size=256M \
    --innodb-lock-wait-timeout=900 --pid-file=/run/mysqld/mysqld.pid \
    >"$LOG_DIR/mariadb.log" 2>&1 </dev/null &
  echo "started: mariadbd"
  wait_for 30 mariadb-admin ping || { echo "up.sh: mariadbd did not start (see $LOG_DIR/mariadb.log)" >&2; exit 1; }
fi
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
  ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
log "mariadb ok"

NEW_DBD_CONF=$(mktemp)
trap 'rm -f "$NEW_CONF" "$NEW_DBD_CONF"' EXIT
cat > "$NEW_DBD_CONF" <<EOF
# Written by tests/slurm/up.sh
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=slurm
DebugLevel=info
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$RUN_DIR/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
install -m 600 -o slurm -g slurm "$NEW_DBD_CONF" /etc/slurm/slurmdbd.conf  # slurmdbd refuses a readable one
dbd_ok() { sacctmgr -n list cluster; }
if ! pgrep -x slurmdbd >/dev/null; then
  slurmdbd
  echo "started: slurmdbd"
fi
wait_for 30 dbd_ok || { echo "up.sh: slurmdbd does not answer (see $LOG_DIR/slurmdbd.log)" >&2; exit 1; }
sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT" \
  || sacctmgr -i add account "$ACCOUNT" Description=tests Organization=local >/dev/null
sacctmgr -n -P -s list user root format=account | grep -qx "$ACCOUNT" \
  || sacctmgr -i add user root account="$ACCOUNT" DefaultAccount="$ACCOUNT" >/dev/null
log "slurmdbd ok (account $ACCOUNT for root)"

# ---- slurmctld + slurmd ------------------------------------------------------------------------------
ctld_ok() { scontrol ping | grep -q UP; }
if pgrep -x slurmctld >/dev/null; then
  [ "$CONF_CHANGED" = 0 ] || scontrol reconfigure
else
  slurmctld
  echo "started: slurmctld"
fi
wait_for 30 ctld_ok || { echo "up.sh: slurmctld does not answer (see $LOG_DIR/slurmctld.log)" >&2; exit 1; }
log "slurmctld ok"
if ! pgrep -x slurmd >/dev/null; then
  slurmd
  echo "started: slurmd"
fi
node_state() { sinfo -h -n "$HOST" -o %T | head -1; }
node_ready() {
  case "$(node_state)" in
    idle* | mixed* | allocated*) return 0 ;;
    down* | drain*) scontrol update nodename="$HOST" state=resume ;;  # left down by an earlier run
  esac
  return 1
}
wait_for 30 node_ready || { echo "up.sh: node $HOST is $(node_state) (see $LOG_DIR/slurmd.log)" >&2; exit 1; }
log "slurmd ok: node $HOST $(node_state), partition $PARTITION"
