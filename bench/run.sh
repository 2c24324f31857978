#!/usr/bin/env bash
# bench/run.sh: throughput of `haul get/put` against curl, lftp and the OpenSSH
# sftp client, on the test bed's real servers, in alternating runs; and, in
# the modes below, haul on a shaped long link, under a cut every 128 MiB, and
# its peak memory.
#
# Usage: bench/run.sh            (or `make bench`)
#        BENCH_SHAPED=1 bench/run.sh     long link: segments vs lftp pget, vs 1 stream
#        BENCH_CUTS=1 bench/run.sh       a cut every 128 MiB vs a clean transfer
#        BENCH_RSS=1 bench/run.sh        peak RSS of haul on a 4 GiB file
# Several of the three may be set at once: they run one after the other, each
# writing its own table. Without any of them the clean comparison runs.
#
# Environment (all optional; "mode default" = clean/shaped/cuts/rss):
#   BENCH_SIZE     file size: bytes, or with K/M/G suffix (binary)   default 1G/256M/1G/4G
#   BENCH_RUNS     rounds per comparison                              default 5/5/5/1
#   BENCH_DIR      work dir (cached source file, downloads, haul)      default /tmp/haul-bench
#   BENCH_ONLY     ops to run, space or comma separated, from:
#                  ftp-get ftp-put ftps-get ftps-put sftp-get sftp-put
#                  default: all / ftp-get ftp-put sftp-get / ftp-get ftp-put / ftp-get ftp-put sftp-get sftp-put
#   BENCH_PAIRING  strict: haul runs again right before every peer run
#                  (haul, curl, haul, lftp, ...); grouped: one haul run per
#                  round shared by all peers of the op (fewer transfers)  default strict
#   BENCH_VERIFY   first: SHA-256 on the first good run of each client and op,
#                  size on the others; all: SHA-256 on every run; size   default first
#   BENCH_HAUL_FLAGS  extra flags for every haul run
#   BENCH_SHAPED   1: through bench/shaper (the fault proxy) shaped as a long link
#   BENCH_CUTS     1: haul clean vs through the proxy with a cut every BENCH_CUT_EVERY
#   BENCH_RSS      1: peak RSS of haul get/put, 1 and 4 segments
#   BENCH_SHAPE_RATE     per-connection, per-direction rate cap   default 12M (bytes/s, binary)
#   BENCH_SHAPE_LATENCY  one-way delay (round trip = twice)        default 10ms
#   BENCH_CUT_EVERY      bytes between cuts                         default 128M
#   BENCH_CUT_KIND       close, reset or alternate                  default alternate
#   BENCH_CUT_COUNT      cuts per run                  default (size-1)/BENCH_CUT_EVERY
#   BENCH_STALL_TIMEOUT  haul --stall-timeout in cuts mode          default 10s
#   BENCH_PROXY_HOSTS    loopback addresses to try for the proxy    default 127.0.0.9 .8 .7
#   BENCH_PROXY_RCVBUF   SO_RCVBUF of the proxy's sockets (shaper -rcvbuf), bytes or
#                        K/M suffix, like a middlebox with a small queue; default unset
#                        = kernel autotuning
#   BENCH_RUN_TIMEOUT    seconds per transfer before it is killed  default 60 + size/5MB
#   BENCH_CLEAN    1: also delete the cached source file at the end   default 0 (rss: 1)
#   BENCH_RESULTS  where the table goes (one mode only)  default bench/results/<latest|shaped|cuts|rss>.txt
#   HAUL_TESTBED_ENV  test bed env file                  default /tmp/haul-testbed/env
#   GO             go command                            default go
#
# MB/s is 10^6 bytes per second of wall time, from process start to exit (so
# login and, for haul, its final size check are included, for every client).
# Each round runs the clients of one op back to back, alternating haul and the
# peer, and the order is reversed every other round; a ratio is haul/peer for
# the runs of one round, and the table shows the median of those ratios.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/haul-bench}
BENCH_PAIRING=${BENCH_PAIRING:-strict}
BENCH_VERIFY=${BENCH_VERIFY:-first}
BENCH_HAUL_FLAGS=${BENCH_HAUL_FLAGS:-}
BENCH_SHAPED=${BENCH_SHAPED:-0}
BENCH_CUTS=${BENCH_CUTS:-0}
BENCH_RSS=${BENCH_RSS:-0}
BENCH_SHAPE_RATE=${BENCH_SHAPE_RATE:-12M}
BENCH_SHAPE_LATENCY=${BENCH_SHAPE_LATENCY:-10ms}
BENCH_CUT_EVERY=${BENCH_CUT_EVERY:-128M}
BENCH_CUT_KIND=${BENCH_CUT_KIND:-alternate}
BENCH_STALL_TIMEOUT=${BENCH_STALL_TIMEOUT:-10s}
BENCH_PROXY_HOSTS=${BENCH_PROXY_HOSTS:-127.0.0.9 127.0.0.8 127.0.0.7}
BENCH_PROXY_RCVBUF=${BENCH_PROXY_RCVBUF:-}
HAUL_TESTBED_ENV=${HAUL_TESTBED_ENV:-/tmp/haul-testbed/env}
BENCH_CLEAN_ALL=0 # set at exit from BENCH_CLEAN
GO=${GO:-go}
ALL_OPS="ftp-get ftp-put ftps-get ftps-put sftp-get sftp-put"

# Remote names, the same in every server root; one pair per work dir, so
# that runs with different BENCH_DIRs do not delete each other's files.
BENCH_TAG=$(printf '%s' "$BENCH_DIR" | cksum | cut -d' ' -f1)
REMOTE_SRC=haul-bench-src-$BENCH_TAG.bin
REMOTE_UP=haul-bench-up-$BENCH_TAG.bin

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

parse_size() { # 1G, 512M, 64K, 1000 -> bytes
  local s=${1%iB} s2
  s=${s%B}
  case $s in
    *[kK]) s2=$(( ${s%?} * 1024 )) ;;
    *[mM]) s2=$(( ${s%?} * 1024 * 1024 )) ;;
    *[gG]) s2=$(( ${s%?} * 1024 * 1024 * 1024 )) ;;
    *) s2=$(( s )) ;;
  esac
  (( s2 > 0 )) || die "bad size $1"
  echo "$s2"
}

fsize() { stat -c %s "$1" 2>/dev/null || echo -1; }

# json_field NAME FILE: the last value of a numeric JSON field in FILE.
json_field() { sed -n "s/.*\"$1\":\([0-9-]*\).*/\1/p" "$2" | tail -1; }

# ---------------------------------------------------------------- test bed

testbed_ready() {
  [[ -f $HAUL_TESTBED_ENV ]] || return 1
  local port
  for port in "${VSFTPD_NOLOCK_PORT:-2126}" "${VSFTPS_PORT:-2122}" "${SSHD_PORT:-2222}"; do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || return 1
  done
}

load_testbed() {
  if [[ -f $HAUL_TESTBED_ENV ]]; then
    # shellcheck disable=SC1090
    source "$HAUL_TESTBED_ENV"
  fi
  if ! testbed_ready; then
    log "test bed not running: starting it with integration/testbed/up.sh"
    "$REPO/integration/testbed/up.sh" >&2 || die "up.sh failed"
    # shellcheck disable=SC1090
    source "$HAUL_TESTBED_ENV"
    testbed_ready || die "test bed still not reachable after up.sh"
  fi
}

# A target says where each protocol's server is reached (host, port) and
# where its files lie on this machine (root), so a run can be checked and
# cleaned without another client. A run through the proxy (proxy_args)
# reaches the same ports on PROXY_HOST instead (one_run swaps the hosts).
# shellcheck disable=SC2153 # VSFTPD_ROOT etc. come from the test bed env file
target_plain() {
  TARGET=loopback
  # FTP goes to the test bed's vsftpd without upload locks
  # (lock_upload_files=NO), so that segmented uploads can run; a single
  # stream sees the same vsftpd as on any other instance.
  FTP_HOST=$HOST   FTP_PORT=$VSFTPD_NOLOCK_PORT  FTP_ROOT=$VSFTPD_NOLOCK_ROOT
  FTP_PASV="$VSFTPD_NOLOCK_PASV_MIN-$VSFTPD_NOLOCK_PASV_MAX"
  FTPS_HOST=$HOST  FTPS_PORT=$VSFTPS_PORT FTPS_ROOT=$VSFTPS_ROOT
  SFTP_HOST=$HOST  SFTP_PORT=$SSHD_PORT   SFTP_ROOT=$SSHD_HOME
  PROXY_PORTS="$FTP_PORT,$FTP_PASV,$SSHD_PORT"
}

# The long link: every run of the shaped mode goes through bench/shaper with
# BENCH_SHAPE_LATENCY each way and a BENCH_SHAPE_RATE cap per connection
# and direction (see proxy_args).
target_shaped() {
  target_plain
  TARGET="shaped(rtt=2x$BENCH_SHAPE_LATENCY,rate=$BENCH_SHAPE_RATE/conn)"
}

# ---------------------------------------------------------------- modes

# Per mode: the A side of every comparison (A_CLIENT), its default size,
# rounds and ops. The clean and shaped modes compare A with peers
# (clients_for_op); the cuts and rss modes run a fixed set of haul variants.
mode_setup() {
  MODE=$1
  case $MODE in
    clean)  A_CLIENT=haul;      def_size=1G;   def_runs=5; def_ops=$ALL_OPS; def_results=latest ;;
    shaped) A_CLIENT=haul-seg4; def_size=256M; def_runs=5; def_ops="ftp-get ftp-put sftp-get"; def_results=shaped ;;
    cuts)   A_CLIENT=haul;      def_size=1G;   def_runs=5; def_ops="ftp-get ftp-put"; def_results=cuts ;;
    rss)    A_CLIENT=haul-seg1; def_size=4G;   def_runs=1; def_ops="ftp-get ftp-put sftp-get sftp-put"; def_results=rss ;;
  esac
  SIZE=$(parse_size "${BENCH_SIZE:-$def_size}")
  RUNS=${BENCH_RUNS:-$def_runs}
  OPS=${BENCH_ONLY:-}; OPS=${OPS//,/ }; OPS=${OPS:-$def_ops}
  RESULTS=${BENCH_RESULTS:-$REPO/bench/results/$def_results.txt}
  CLEAN=${BENCH_CLEAN:-0}
  [[ $MODE == rss && -z ${BENCH_CLEAN:-} ]] && CLEAN=1
  RUN_TIMEOUT=${BENCH_RUN_TIMEOUT:-$(( 60 + SIZE / 5000000 ))}
  CUT_EVERY=$(parse_size "$BENCH_CUT_EVERY")
  CUT_COUNT=${BENCH_CUT_COUNT:-$(( (SIZE - 1) / CUT_EVERY ))}
  [[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "bad BENCH_RUNS $RUNS"
  [[ $RUN_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "bad BENCH_RUN_TIMEOUT $RUN_TIMEOUT"
  [[ $CUT_COUNT =~ ^[0-9]+$ ]] || die "bad BENCH_CUT_COUNT $CUT_COUNT"
  local op; for op in $OPS; do clients_for_op "$op" >/dev/null; done
}

# ---------------------------------------------------------------- clients

# clients_for_op OP: in the clean and shaped modes, the peers A_CLIENT is
# compared with on OP; in the cuts and rss modes, every variant that runs.
# Names are also the table labels (see label).
clients_for_op() {
  case $MODE/$1 in
    clean/ftp-get)  echo "curl lftp-get lftp-pget4" ;;
    clean/ftp-put)  echo "curl lftp-put" ;;
    clean/ftps-get) echo "curl" ;;
    clean/ftps-put) echo "curl" ;;
    clean/sftp-get) echo "openssh openssh-gcm" ;;
    clean/sftp-put) echo "openssh openssh-gcm" ;;
    # haul = auto segment count: on this link it should pick 4.
    shaped/ftp-get) echo "lftp-pget4 haul-seg1 haul" ;;
    shaped/ftp-put) echo "lftp-put haul-seg1" ;;
    shaped/sftp-get|shaped/sftp-put) echo "haul-seg1 haul" ;;
    shaped/*)       echo "curl" ;;
    cuts/ftp-*|cuts/sftp-*) echo "haul haul-cut haul-proxy" ;;
    rss/*)          echo "haul-seg1 haul-seg4" ;;
    *) die "op $1 is not supported in the $MODE mode" ;;
  esac
}

label() {
  case $1 in
    curl) echo "curl" ;;
    lftp-get) echo "lftp get" ;;
    lftp-pget4) echo "lftp pget -n 4" ;;
    lftp-put) echo "lftp put" ;;
    openssh) echo "sftp (default cipher)" ;;
    openssh-gcm) echo "sftp -c aes128-gcm" ;;
    haul) if [[ $MODE == shaped ]]; then echo "haul (auto segments)"; else echo "haul"; fi ;;
    haul-seg*) echo "haul --segments ${1#haul-seg}" ;;
    *) echo "$1" ;;
  esac
}

peer_available() {
  case $1 in
    curl) command -v curl >/dev/null ;;
    lftp-*) command -v lftp >/dev/null ;;
    openssh*) command -v sftp >/dev/null ;;
    *) return 0 ;;
  esac
}

# proto_of OP -> ftp|ftps|sftp; dir_of OP -> get|put
proto_of() { echo "${1%-*}"; }
dir_of() { echo "${1#*-}"; }

# remote_root OP: the server's directory on this machine.
remote_root() {
  case $(proto_of "$1") in
    ftp) echo "$FTP_ROOT" ;; ftps) echo "$FTPS_ROOT" ;; sftp) echo "$SFTP_ROOT" ;;
  esac
}

# proxy_args OP CLIENT: the shaper flags for a run of CLIENT on OP, printed;
# status 1 when the run goes straight to the server.
proxy_args() {
  local op=$1 client=$2
  case $MODE in
    shaped) echo "-rate $BENCH_SHAPE_RATE -latency $BENCH_SHAPE_LATENCY" ;;
    cuts)
      case $client in
        haul-proxy) echo "" ;;
        haul-cut)
          local dir=down cports=$FTP_PASV
          [[ $(dir_of "$op") == put ]] && dir=up
          [[ $(proto_of "$op") == sftp ]] && cports=$SSHD_PORT
          echo "-cut-every $CUT_EVERY -cut-dir $dir -cut-ports $cports -cut-kind $BENCH_CUT_KIND -cut-count $CUT_COUNT" ;;
        *) return 1 ;;
      esac ;;
    *) return 1 ;;
  esac
}

# run_client OP CLIENT REMOTE_NAME LOCAL_PATH: one transfer, killed after
# RUN_TIMEOUT seconds; output to stdout/stderr (one_run captures both).
run_client() {
  local op=$1 client=$2 rname=$3 lpath=$4
  local proto dir; proto=$(proto_of "$op"); dir=$(dir_of "$op")
  local tmo=(timeout -k 5 "$RUN_TIMEOUT")
  local ssh_opts=(-q -b - -i "$SSH_KEY_FILE" -o "UserKnownHostsFile=$KNOWN_HOSTS_FILE"
    -o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes -P "$SFTP_PORT")
  local lftp_set="set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 60; set ftp:ssl-allow no; set xfer:clobber yes"
  # Through the proxy, lftp must connect data to the control host, not to
  # the 127.0.0.1 the server names in its PASV reply.
  [[ $FTP_HOST != "$HOST" ]] && lftp_set+="; set ftp:ignore-pasv-address yes"
  case $client in
    haul|haul-*)
      local url args=(--json -q) ; # shellcheck disable=SC2206
      args+=($BENCH_HAUL_FLAGS)
      case $client in
        haul-seg*) args+=(--segments "${client#haul-seg}") ;;
      esac
      # Cuts: every variant logs its reconnect waits (-v) and gives up on a
      # stall after BENCH_STALL_TIMEOUT, clean runs included.
      [[ $MODE == cuts ]] && args+=(-v --stall-timeout "$BENCH_STALL_TIMEOUT")
      case $proto in
        ftp)  url="ftp://$USER@$FTP_HOST:$FTP_PORT/$rname" ;;
        ftps) url="ftps://$USER@$FTPS_HOST:$FTPS_PORT/$rname"; args+=(--ca-file "$CA_FILE") ;;
        sftp) url="sftp://$USER@$SFTP_HOST:$SFTP_PORT/$rname"
              args+=(--identity "$SSH_KEY_FILE" --known-hosts "$KNOWN_HOSTS_FILE") ;;
      esac
      # Peak RSS: /usr/bin/time measures haul itself (inside the timeout).
      local meter=()
      [[ $MODE == rss ]] && meter=(/usr/bin/time -f %M -o "$BENCH_DIR/rss.out")
      if [[ $dir == get ]]; then
        HAUL_PASSWORD=$PASSWORD "${tmo[@]}" "${meter[@]}" "$HAUL" get "${args[@]}" "$url" "$lpath"
      else
        HAUL_PASSWORD=$PASSWORD "${tmo[@]}" "${meter[@]}" "$HAUL" put "${args[@]}" "$lpath" "$url"
      fi ;;
    curl)
      local url tls=()
      if [[ $proto == ftps ]]; then
        url="ftp://$FTPS_HOST:$FTPS_PORT/$rname"; tls=(--ssl-reqd --cacert "$CA_FILE")
      else
        url="ftp://$FTP_HOST:$FTP_PORT/$rname"
      fi
      if [[ $dir == get ]]; then
        "${tmo[@]}" curl -sS --fail --ftp-skip-pasv-ip "${tls[@]}" -u "$USER:$PASSWORD" -o "$lpath" "$url"
      else
        "${tmo[@]}" curl -sS --fail --ftp-skip-pasv-ip "${tls[@]}" -u "$USER:$PASSWORD" -T "$lpath" "$url"
      fi ;;
    lftp-get|lftp-pget4|lftp-put)
      local cmd
      case $client in
        lftp-get)   cmd="get $rname -o $lpath" ;;
        lftp-pget4) cmd="pget -n 4 $rname -o $lpath" ;;
        lftp-put)   cmd="put $lpath -o $rname" ;;
      esac
      "${tmo[@]}" lftp -c "$lftp_set; open -u $USER,$PASSWORD -p $FTP_PORT $FTP_HOST; $cmd" ;;
    openssh|openssh-gcm)
      local cipher=()
      if [[ $client == openssh-gcm ]]; then cipher=(-c aes128-gcm@openssh.com); fi
      if [[ $dir == get ]]; then
        echo "get $rname $lpath" | "${tmo[@]}" sftp "${cipher[@]}" "${ssh_opts[@]}" "$USER@$SFTP_HOST"
      else
        echo "put $lpath $rname" | "${tmo[@]}" sftp "${cipher[@]}" "${ssh_opts[@]}" "$USER@$SFTP_HOST"
      fi ;;
    *) die "unknown client $client" ;;
  esac
}

# ---------------------------------------------------------------- the proxy

SHAPER_PID=

# shaper_start ARGS...: start bench/shaper on the first free address of
# BENCH_PROXY_HOSTS (it mirrors the test bed's ports, so another engineer's
# proxy may hold an address) and wait until it listens. Sets PROXY_HOST.
shaper_start() {
  local h i rcv=()
  [[ -n $BENCH_PROXY_RCVBUF ]] && rcv=(-rcvbuf "$BENCH_PROXY_RCVBUF")
  for h in ${PROXY_HOST:-} $BENCH_PROXY_HOSTS; do
    rm -f "$BENCH_DIR/shaper.out" "$BENCH_DIR/shaper.err"
    "$SHAPER" -listen "$h" -target "$HOST" -ports "$PROXY_PORTS" \
      -timeout "$(( RUN_TIMEOUT + 60 ))s" "${rcv[@]}" "$@" >"$BENCH_DIR/shaper.out" 2>"$BENCH_DIR/shaper.err" &
    SHAPER_PID=$!
    for (( i = 0; i < 100; i++ )); do
      if grep -q '^shaper: ready' "$BENCH_DIR/shaper.err" 2>/dev/null; then
        PROXY_HOST=$h
        return 0
      fi
      kill -0 "$SHAPER_PID" 2>/dev/null || break
      sleep 0.05
    done
    shaper_stop
    log "proxy on $h not available: $(tr '\n' ' ' <"$BENCH_DIR/shaper.err" 2>/dev/null)"
  done
  die "no free proxy address in: $BENCH_PROXY_HOSTS"
}

# shaper_stop: SIGTERM, wait (bounded) for its final stats line in
# $BENCH_DIR/shaper.out.
shaper_stop() {
  [[ -n $SHAPER_PID ]] || return 0
  kill -TERM "$SHAPER_PID" 2>/dev/null || true
  local i
  for (( i = 0; i < 100; i++ )); do
    kill -0 "$SHAPER_PID" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$SHAPER_PID" 2>/dev/null || true
  wait "$SHAPER_PID" 2>/dev/null || true
  SHAPER_PID=
}

# ---------------------------------------------------------------- runs

declare -A VERIFIED=()

# clear_targets OP: remove what a run of OP writes, so the next run is a full
# transfer (downloads: the local file and partials; uploads: the remote file).
clear_targets() {
  rm -f "$DL" "$DL.part" "$DL.part.segments" "$DL.lftp-pget-status"
  rm -f "$DL".*.state "$DL".part.* 2>/dev/null || true
  rm -f "$(remote_root "$1")/$REMOTE_UP" "$(remote_root "$1")/$REMOTE_UP.part"
}

# check_result OP CLIENT: 0 when the transferred file is whole; else the
# reason is in CHECK_MSG.
check_result() {
  local op=$1 client=$2 out
  CHECK_MSG=
  if [[ $(dir_of "$op") == get ]]; then out=$DL; else out="$(remote_root "$op")/$REMOTE_UP"; fi
  local n; n=$(fsize "$out")
  if (( n != SIZE )); then CHECK_MSG="size=$n"; return 1; fi
  if [[ $BENCH_VERIFY == all || ( $BENCH_VERIFY == first && -z ${VERIFIED[$op/$client]:-} ) ]]; then
    local sum; sum=$(sha256sum "$out" | cut -d' ' -f1)
    if [[ $sum != "$SRC_SHA" ]]; then CHECK_MSG="sha256-mismatch"; return 1; fi
    VERIFIED[$op/$client]=1
  fi
}

# backoff_ms FILE: the sum of haul's reconnect waits logged with -v
# ("msg=reconnecting ... wait=1.172402493s").
backoff_ms() {
  { grep -o 'msg=reconnecting.*wait=[0-9.a-zµ]*' "$1" 2>/dev/null || true; } | sed 's/.*wait=//' | awk '
    { d = $0; ms = 0
      if (match(d, /^[0-9.]+m[0-9]/)) { split(d, p, "m"); ms += p[1] * 60000; d = substr(d, index(d, "m") + 1) }
      if (d ~ /ms$/) ms += d + 0
      else if (d ~ /(µs|us)$/) ms += (d + 0) / 1000
      else if (d ~ /ns$/) ms += (d + 0) / 1e6
      else if (d ~ /s$/) ms += (d + 0) * 1000
      t += ms }
    END { printf "%.0f", t + 0 }'
}

# one_run ROUND OP CLIENT TAG: time one transfer and append it to $RUNS_TSV.
# TAG names the peer an A-side run is paired with ("*" = all peers of the op).
# Columns: round op client tag seconds status note extra, where extra is
# key=value pairs (haul's JSON counters, the proxy's, peak RSS).
one_run() {
  local round=$1 op=$2 client=$3 tag=$4
  local rname lpath pargs proxied=0 extra=()
  if [[ $(dir_of "$op") == get ]]; then rname=$REMOTE_SRC lpath=$DL; else rname=$REMOTE_UP lpath=$SRC; fi
  clear_targets "$op"
  sync
  # A proxied run reaches the same ports on the proxy's address: these
  # locals shadow the target's hosts for run_client.
  local FTP_HOST=$FTP_HOST FTPS_HOST=$FTPS_HOST SFTP_HOST=$SFTP_HOST
  if pargs=$(proxy_args "$op" "$client"); then
    # shellcheck disable=SC2086 # flags are words
    shaper_start $pargs
    proxied=1 FTP_HOST=$PROXY_HOST FTPS_HOST=$PROXY_HOST SFTP_HOST=$PROXY_HOST
  fi
  rm -f "$BENCH_DIR/rss.out"
  local t0 t1 rc=0 status=ok note=-
  {
    echo "=== round $round $op $client ($tag)${pargs:+ via $PROXY_HOST: $pargs}"
    t0=$EPOCHREALTIME
    run_client "$op" "$client" "$rname" "$lpath" >"$BENCH_DIR/last.out" 2>&1 || rc=$?
    t1=$EPOCHREALTIME
    grep -v 'msg="ftp \(reply\|command\)"' "$BENCH_DIR/last.out" || true
  } >>"$RUNLOG"
  if (( proxied )); then
    shaper_stop
    cat "$BENCH_DIR/shaper.out" >>"$RUNLOG"
    local pup pdown cuts dup ddown
    pup=$(json_field upstream_bytes "$BENCH_DIR/shaper.out")
    pdown=$(json_field downstream_bytes "$BENCH_DIR/shaper.out")
    cuts=$(json_field cuts "$BENCH_DIR/shaper.out")
    # What the cuts dropped inside the proxy (its kernel receive queue,
    # its buffers): the proxy's share of the bytes re-sent after a cut.
    dup=$(json_field dropped_upstream_bytes "$BENCH_DIR/shaper.out")
    ddown=$(json_field dropped_downstream_bytes "$BENCH_DIR/shaper.out")
    extra+=("proxy_up=${pup:-0}" "proxy_down=${pdown:-0}" "cuts=${cuts:-0}"
      "proxy_drop_up=${dup:-0}" "proxy_drop_down=${ddown:-0}")
  fi
  local secs; secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.6f", b-a}')
  if (( rc == 124 || rc == 137 )); then
    status=fail note="timeout-${RUN_TIMEOUT}s"
  elif (( rc != 0 )); then
    status=fail note="exit-$rc"
  elif ! check_result "$op" "$client"; then
    status=fail note=$CHECK_MSG
  elif (( proxied )); then
    # Every byte must have gone through the proxy, or the run measured
    # the clean link (a client that followed the PASV address).
    local via; if [[ $(dir_of "$op") == get ]]; then via=${pdown:-0}; else via=${pup:-0}; fi
    if (( via < SIZE )); then status=fail note="bypassed-proxy($via)"; fi
  fi
  if [[ $client == haul* ]]; then
    local k v
    for k in attempts resumes restarts resent_bytes duration_ms; do
      v=$(json_field "$k" "$BENCH_DIR/last.out")
      [[ -n $v ]] && extra+=("$k=$v")
    done
    [[ $MODE == cuts ]] && extra+=("backoff_ms=$(backoff_ms "$BENCH_DIR/last.out")")
    if [[ $status == ok && $MODE != cuts ]]; then
      # A run that needed a resume is not a clean transfer: flag it.
      local att res rst; att=$(json_field attempts "$BENCH_DIR/last.out")
      res=$(json_field resumes "$BENCH_DIR/last.out"); rst=$(json_field restarts "$BENCH_DIR/last.out")
      # A segmented run makes one attempt per segment.
      local seg=0
      [[ $client == haul-seg[2-9]* || ( $client == haul && $MODE == shaped ) ]] && seg=1
      if [[ ${res:-0} != 0 || ${rst:-0} != 0 ]] || (( !seg && ${att:-1} != 1 )); then
        note="attempts=${att:-?},resumes=${res:-?},restarts=${rst:-?}"
      fi
    fi
  fi
  if [[ -s $BENCH_DIR/rss.out ]]; then
    extra+=("rss_kb=$({ grep -o '^[0-9]*$' "$BENCH_DIR/rss.out" || true; } | tail -1)")
  fi
  clear_targets "$op"
  local ex="${extra[*]:-}"; ex=${ex// /,}
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$op" "$client" "$tag" "$secs" "$status" "$note" "${ex:--}" >>"$RUNS_TSV"
  local mbs; mbs=$(awk -v s="$secs" -v n="$SIZE" 'BEGIN{printf "%.0f", n/s/1e6}')
  [[ $note == - ]] && note=
  log "round $round  $(printf '%-9s %-12s' "$op" "$client") $(printf '%6s' "$mbs") MB/s  $status${note:+ $note}${ex:+  $ex}"
}

# schedule OP ROUND: the runs of one round, as "client tag" lines.
# clean/shaped, strict:  A p1 A p2 ...   grouped: A p1 p2 ...
# cuts/rss: every variant once.
# Every other round the sequence is reversed (p2 A p1 A), so neither
# side always goes first.
schedule() {
  local op=$1 round=$2 p lines=()
  if [[ $MODE == cuts || $MODE == rss ]]; then
    for p in $(clients_for_op "$op"); do lines+=("$p -"); done
  else
    for p in $(clients_for_op "$op"); do
      peer_available "$p" || continue
      if [[ $BENCH_PAIRING == strict ]]; then
        lines+=("$A_CLIENT $p" "$p $p")
      else
        lines+=("$p $p")
      fi
    done
    [[ $BENCH_PAIRING == strict ]] || lines=("$A_CLIENT *" "${lines[@]}")
  fi
  if (( round % 2 == 0 )); then
    local i; for (( i=${#lines[@]}-1; i>=0; i-- )); do echo "${lines[i]}"; done
  else
    printf '%s\n' "${lines[@]}"
  fi
}

cleanup() {
  shaper_stop
  local op
  for op in $ALL_OPS; do
    [[ -n ${FTP_ROOT:-} ]] || break
    rm -f "$(remote_root "$op")/$REMOTE_SRC" "$(remote_root "$op")/$REMOTE_UP" "$(remote_root "$op")/$REMOTE_UP.part"
  done
  if [[ -n ${DL:-} ]]; then
    rm -f "$DL" "$DL.part" "$DL.part.segments" "$DL.lftp-pget-status"
    rm -f "$DL".*.state "$DL".part.* 2>/dev/null || true
  fi
  rm -f "${BENCH_DIR}/last.out" "$BENCH_DIR/rss.out" "$BENCH_DIR/shaper.out" "$BENCH_DIR/shaper.err"
  if [[ ${CLEAN:-0} == 1 && -n ${SRC:-} ]]; then rm -f "$SRC" "$SRC.sha256"; fi
  if [[ $BENCH_CLEAN_ALL == 1 ]]; then rm -f "$BENCH_DIR"/src-*.bin "$BENCH_DIR"/src-*.sha256; fi
}

# gen_source FILE SIZE: SIZE pseudo-random bytes (incompressible, no holes),
# from AES-CTR over zeros when openssl is there (GB/s), else /dev/urandom.
gen_source() {
  local f=$1 n=$2
  if command -v openssl >/dev/null; then
    { openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:haul-bench-$RANDOM$RANDOM" -in /dev/zero 2>/dev/null || true; } |
      head -c "$n" >"$f.tmp"
  else
    head -c "$n" /dev/urandom >"$f.tmp"
  fi
  [[ $(fsize "$f.tmp") == "$n" ]] || die "could not generate $n bytes in $f"
  mv "$f.tmp" "$f"
}

# need_disk DIR BYTES: die unless DIR's file system has BYTES free.
need_disk() {
  local avail; avail=$(df -B1 --output=avail "$1" | tail -1 | tr -d ' ')
  (( avail >= $2 )) || die "not enough disk in $1: $avail bytes free, need $2"
}

# ---------------------------------------------------------------- main

run_mode() {
  mode_setup "$1"
  if [[ $MODE == shaped ]]; then target_shaped; else target_plain; fi
  mkdir -p "$(dirname "$RESULTS")"
  if [[ $MODE == rss ]]; then [[ -x /usr/bin/time ]] || die "BENCH_RSS needs /usr/bin/time (apt-get install time)"; fi

  SRC=$BENCH_DIR/src-$SIZE.bin
  DL=$BENCH_DIR/download.bin
  VERIFIED=()
  local op
  if [[ $(fsize "$SRC") != "$SIZE" || ! -s $SRC.sha256 ]]; then
    # The source, one transferred copy at a time, and 1 GiB of headroom.
    need_disk "$BENCH_DIR" $(( 2 * SIZE + (1 << 30) ))
    log "generating $SIZE pseudo-random bytes in $SRC"
    rm -f "$SRC" "$SRC.sha256"
    gen_source "$SRC" "$SIZE"
    sha256sum "$SRC" | cut -d' ' -f1 >"$SRC.sha256"
  fi
  for op in $OPS; do need_disk "$(remote_root "$op")" $(( SIZE + (1 << 30) )); done
  chmod 0644 "$SRC"
  SRC_SHA=$(cat "$SRC.sha256")
  # Downloads read the same file from every server root: a hard link where
  # possible, else a copy.
  for op in $OPS; do
    local dst; dst="$(remote_root "$op")/$REMOTE_SRC"
    [[ $(dir_of "$op") == get && ! -e $dst ]] || continue
    ln "$SRC" "$dst" 2>/dev/null || cp "$SRC" "$dst"
  done

  RUNS_TSV=$BENCH_DIR/runs-$MODE.tsv
  RUNLOG=$BENCH_DIR/runs-$MODE.log
  : >"$RUNS_TSV"; : >"$RUNLOG"
  local started=$EPOCHSECONDS load0 round c t
  load0=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)
  log "mode $MODE: size $SIZE, $RUNS round(s), ops: $OPS, timeout ${RUN_TIMEOUT}s per transfer"
  for (( round=1; round<=RUNS; round++ )); do
    for op in $OPS; do
      while read -r c t; do one_run "$round" "$op" "$c" "$t"; done < <(schedule "$op" "$round")
    done
  done

  local header hextra=""
  case $MODE in
    shaped) hextra="  shaper -rate $BENCH_SHAPE_RATE -latency $BENCH_SHAPE_LATENCY (per connection)" ;;
    cuts) hextra="  cut every $CUT_EVERY ($BENCH_CUT_KIND, at most $CUT_COUNT per run)  haul --stall-timeout $BENCH_STALL_TIMEOUT" ;;
  esac
  if [[ $MODE == shaped || $MODE == cuts ]]; then
    hextra+="  proxy SO_RCVBUF ${BENCH_PROXY_RCVBUF:-autotuned}"
  fi
  header=$(printf 'haul bench %s  mode %s  rev %s  target %s  size %s bytes  runs %s  pairing %s  cores %s  load(1/5/15 min) %s -> %s  wall %ss%s' \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$MODE" "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "$TARGET" "$SIZE" "$RUNS" "$BENCH_PAIRING" "$(nproc)" "$load0" "$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)" \
    "$(( EPOCHSECONDS - started ))" "$hextra")
  case $MODE in
    clean|shaped)
      local peers=""
      for op in $OPS; do for c in $(clients_for_op "$op"); do peer_available "$c" && peers+="$op:$c:$(label "$c")|"; done; done
      python3 "$REPO/bench/table.py" "$RUNS_TSV" "$SIZE" "$header" "$peers" "$A_CLIENT" "$(label "$A_CLIENT")" | tee "$RESULTS" ;;
    cuts|rss)
      python3 "$REPO/bench/table.py" --"$MODE" "$RUNS_TSV" "$SIZE" "$header" | tee "$RESULTS" ;;
  esac
  cp "$RUNS_TSV" "${RESULTS%.txt}.tsv"
  log "table written to $RESULTS (raw runs ${RESULTS%.txt}.tsv, client output $RUNLOG)"
  cleanup
}

main() {
  [[ $BENCH_PAIRING == strict || $BENCH_PAIRING == grouped ]] || die "BENCH_PAIRING must be strict or grouped"
  [[ $BENCH_VERIFY == first || $BENCH_VERIFY == all || $BENCH_VERIFY == size ]] || die "BENCH_VERIFY must be first, all or size"
  case $BENCH_CUT_KIND in close|reset|alternate) ;; *) die "BENCH_CUT_KIND must be close, reset or alternate" ;; esac
  [[ -z $BENCH_PROXY_RCVBUF ]] || parse_size "$BENCH_PROXY_RCVBUF" >/dev/null
  command -v python3 >/dev/null || die "python3 is needed for the statistics"
  local modes=() m
  [[ $BENCH_SHAPED == 1 ]] && modes+=(shaped)
  [[ $BENCH_CUTS == 1 ]] && modes+=(cuts)
  [[ $BENCH_RSS == 1 ]] && modes+=(rss)
  (( ${#modes[@]} )) || modes=(clean)
  if (( ${#modes[@]} > 1 )) && [[ -n ${BENCH_RESULTS:-} ]]; then
    die "BENCH_RESULTS names one file: set it for one mode at a time"
  fi
  for m in "${modes[@]}"; do mode_setup "$m"; done # validate all before the first run

  load_testbed
  mkdir -p "$BENCH_DIR"
  # One run per work dir: two would delete each other's files (and share
  # the CPU, which spoils both).
  exec 9>"$BENCH_DIR/.lock"
  flock -n 9 || die "another bench run holds $BENCH_DIR (set BENCH_DIR for a second one)"
  trap 'BENCH_CLEAN_ALL=${BENCH_CLEAN:-0}; cleanup' EXIT
  trap 'exit 130' INT TERM

  HAUL=$BENCH_DIR/haul
  SHAPER=$BENCH_DIR/shaper
  log "building haul and bench/shaper"
  (cd "$REPO" && "$GO" build -o "$HAUL" ./cmd/haul && "$GO" build -o "$SHAPER" ./bench/shaper) || die "go build failed"

  for m in "${modes[@]}"; do run_mode "$m"; done
}

main "$@"
