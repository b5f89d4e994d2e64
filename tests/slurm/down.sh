#!/usr/bin/env bash
# Stop the single-node SLURM cluster of tests/slurm/up.sh.
#
#   tests/slurm/down.sh                  # every daemon: slurmd slurmctld slurmdbd mariadbd munged
#   tests/slurm/down.sh slurmd slurmctld # only these (what up.sh said it started)
#   tests/slurm/down.sh --purge          # all, and forget jobs and accounting (state dirs, the database)
#
# Jobs still running are cancelled first when slurmctld is stopped. Each daemon is ended by the pid
# in its pid file, with SIGTERM, then SIGKILL after 10 s.
set -uo pipefail

RUN_DIR=/run/slurm
STATE_DIR=/var/lib/slurm
PURGE=0
DAEMONS=()
for arg in "$@"; do
  case "$arg" in
    --purge) PURGE=1 ;;
    munged | mariadbd | slurmdbd | slurmctld | slurmd) DAEMONS+=("$arg") ;;
    *) echo "down.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
[ ${#DAEMONS[@]} -gt 0 ] && [ "$PURGE" = 0 ] || DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged)
wanted() { [[ " ${DAEMONS[*]} " == *" $1 "* ]]; }

pid_file() {
  case "$1" in
    munged) echo /run/munge/munged.pid ;;
    mariadbd) echo /run/mysqld/mysqld.pid ;;
    *) echo "$RUN_DIR/$1.pid" ;;
  esac
}

stop() {  # daemon name
  local file pid
  file=$(pid_file "$1")
  [ -s "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "down.sh: $1 ($pid) did not stop within 10 s: SIGKILL"
      kill -9 "$pid"
    fi
    echo "stopped $1 ($pid)"
  fi
  rm -f "$file"
}

# Cancel jobs before their controller goes, so that no job is left running without one.
if wanted slurmctld && command -v scancel >/dev/null; then
  scancel --user=root 2>/dev/null
fi
for daemon in slurmd slurmctld slurmdbd; do
  wanted "$daemon" && stop "$daemon"
done
if [ "$PURGE" = 1 ] && mariadb-admin ping >/dev/null 2>&1; then
  mariadb -e "DROP DATABASE IF EXISTS slurm_acct_db" && echo "dropped the accounting database"
fi
for daemon in mariadbd munged; do
  wanted "$daemon" && stop "$daemon"
done
# The configuration files up.sh wrote go with the controller: a SLURM client that has a slurm.conf but no
# controller waits ~9 s in every `scontrol` call, and Snakemake's SLURM plugin calls `scontrol show config`
# each time snakemake starts (any executor), so a leftover file slows every later snakemake command.
if wanted slurmctld && ! pgrep -x slurmctld >/dev/null; then
  for f in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf; do
    if [ -f "$f" ] && grep -q "^# Written by tests/slurm/up.sh" "$f"; then
      rm -f "$f" && echo "removed $f (written by up.sh)"
    fi
  done
fi
if [ "$PURGE" = 1 ]; then
  rm -rf "${STATE_DIR:?}"/slurmctld/* "${STATE_DIR:?}"/slurmd/*
  echo "purged $STATE_DIR/slurmctld and $STATE_DIR/slurmd"
fi
exit 0
