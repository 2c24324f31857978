# lib.sh: shared settings and helpers for up.sh / down.sh (sourced, not run).
# shellcheck shell=bash

HAUL_TESTBED_STATE="${HAUL_TESTBED_STATE:-/tmp/haul-testbed}"
HAUL_TESTBED_ENV="${HAUL_TESTBED_ENV:-$HAUL_TESTBED_STATE/env}"
HAUL_TESTBED_PKGS="${HAUL_TESTBED_PKGS:-/opt/haul-testbed/pkgs}"
HAUL_TESTBED_HOST="${HAUL_TESTBED_HOST:-127.0.0.1}"
HAUL_TESTBED_USER="${HAUL_TESTBED_USER:-haultest}"
HAUL_TESTBED_PASSWORD="${HAUL_TESTBED_PASSWORD:-haul-test-pw}"
HAUL_TESTBED_FULL_TMPFS_SIZE="${HAUL_TESTBED_FULL_TMPFS_SIZE:-32m}"

TB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONF_DIR="$TB_DIR/conf"
RUN="$HAUL_TESTBED_STATE/run"
LOGDIR="$HAUL_TESTBED_STATE/log"
KEYS="$HAUL_TESTBED_STATE/keys"
ROOTS="$HAUL_TESTBED_STATE/root"
CONFS="$HAUL_TESTBED_STATE/conf"

# Every daemon we start: name -> pid file in $RUN/<name>.pid.
TB_SERVERS=(vsftpd vsftpd-ftps vsftpd-limited vsftpd-nolock proftpd pure-ftpd sshd sshd-noexec
            rclone-sftp pyftpd-norest vsftpd-badpasv)
# Servers whose root has a full/ tmpfs.
TB_FULL=(vsftpd pure-ftpd sshd)

tb_log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }

# tb_starttime PID: the process's start time (clock ticks since boot), which
# together with the pid identifies a process (pids are recycled).
tb_starttime() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  # Fields after "pid (comm) ": state is 1st, starttime is the 20th.
  awk '{print $20}' <<<"$stat"
}

# tb_record NAME PID: write $RUN/NAME.pid as "PID STARTTIME".
tb_record() {
  echo "$2 $(tb_starttime "$2")" >"$RUN/$1.pid"
}

# tb_pid NAME: print the pid recorded for NAME.
tb_pid() {
  local pid _
  read -r pid _ <"$RUN/$1.pid" 2>/dev/null || return 1
  echo "$pid"
}

# tb_alive NAME: true when $RUN/NAME.pid names a live process that is the
# one we started (same pid and start time).
tb_alive() {
  local pidf="$RUN/$1.pid" pid st
  [[ -f $pidf ]] || return 1
  read -r pid st <"$pidf" 2>/dev/null || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ $(tb_starttime "$pid" 2>/dev/null) == "$st" ]] || return 1
  # A zombie (exited, not yet reaped) is not alive.
  ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

# tb_render TEMPLATE OUT KEY=VALUE...: replace @@KEY@@ in TEMPLATE.
tb_render() {
  local tmpl=$1 out=$2; shift 2
  local args=() kv k v
  for kv in "$@"; do
    k=${kv%%=*}; v=${kv#*=}
    v=${v//\\/\\\\}; v=${v//|/\\|}; v=${v//&/\\&}
    args+=(-e "s|@@${k}@@|${v}|g")
  done
  # Rendered beside OUT and renamed into place: a rerun of up.sh never
  # leaves a half-written config under a running server.
  sed "${args[@]}" "$tmpl" >"$out.tmp.$$"
  if grep -q '@@[A-Z_]*@@' "$out.tmp.$$"; then
    tb_log "unrendered placeholder in $out: $(grep -o '@@[A-Z_]*@@' "$out.tmp.$$" | sort -u | tr '\n' ' ')"
    rm -f "$out.tmp.$$"
    return 1
  fi
  mv -f "$out.tmp.$$" "$out"
}

# tb_write_atomic FILE: copy stdin to FILE through a temporary file in the
# same directory and rename it into place, so that a server or test reading
# FILE while up.sh runs again (adding servers to a running test bed) sees the
# old or the new content, never a truncated file.
tb_write_atomic() {
  local out=$1 tmp="$1.tmp.$$"
  cat >"$tmp" && chmod 644 "$tmp" && mv -f "$tmp" "$out"
}

# tb_wait_port PORT [TRIES]: wait (bounded) until HOST:PORT accepts.
tb_wait_port() {
  local port=$1 tries=${2:-100} i
  for ((i = 0; i < tries; i++)); do
    if timeout 1 bash -c "exec 3<>/dev/tcp/$HAUL_TESTBED_HOST/$port" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# tb_port_busy PORT: true when something listens on HOST:PORT.
tb_port_busy() {
  ss -Htln "sport = :$1" 2>/dev/null | grep -q .
}
