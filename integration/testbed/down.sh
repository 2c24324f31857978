#!/usr/bin/env bash
# down.sh: stop everything up.sh started (by pid file), unmount the full
# tmpfs mounts and remove the env file. Safe to run when nothing is up.
# Set HAUL_TESTBED_KEEP_STATE=1 to keep the state dir (logs, data roots).
set -uo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pids=()
for name in "${TB_SERVERS[@]}"; do
  if tb_alive "$name"; then
    pid=$(tb_pid "$name")
    # Each server runs in its own session (setsid): signal the whole group so
    # per-session children go too.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
    tb_log "stopping $name (pid $pid)"
  fi
  rm -f "$RUN/$name.pid"
done
# Bounded wait, then SIGKILL what is left.
for pid in "${pids[@]}"; do
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
done
# Session children that left the server's process group (none expected), by
# their command line naming our state dir's conf/ (config files; rclone's
# --config; the copy of pyftpd_norest.py that python3 runs).
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  case $(readlink "$p/exe" 2>/dev/null) in
    */vsftpd | */sshd | */proftpd | */pure-ftpd | */rclone | */python3*) ;;
    *) continue ;;
  esac
  if tr "\0" " " 2>/dev/null <"$p/cmdline" | grep -qF "$HAUL_TESTBED_STATE/conf/"; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
done

if [[ -d $HAUL_TESTBED_STATE/root ]]; then
  for d in "$HAUL_TESTBED_STATE"/root/*/full; do
    if mountpoint -q "$d" 2>/dev/null; then
      umount "$d" 2>/dev/null || umount -l "$d" || tb_log "could not unmount $d"
    fi
  done
fi
rm -f "$HAUL_TESTBED_ENV"
if [[ ${HAUL_TESTBED_KEEP_STATE:-0} != 1 && -d $HAUL_TESTBED_STATE ]]; then
  # Never rm across a still-mounted tmpfs.
  if ! grep -qF " $HAUL_TESTBED_STATE/" /proc/mounts; then
    rm -rf "$HAUL_TESTBED_STATE"
  else
    tb_log "mounts remain under $HAUL_TESTBED_STATE; not removing it"
  fi
fi
tb_log "test bed down"
