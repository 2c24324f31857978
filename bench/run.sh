#!/usr/bin/env bash
# bench/run.sh: throughput of `haul get/put` against curl, lftp and the OpenSSH
# sftp client, on the test bed's real servers, in alternating runs.
#
# Usage: bench/run.sh            (or `make bench`)
# Environment (all optional):
#   BENCH_SIZE     file size: bytes, or with K/M/G suffix (binary)   default 1G
#   BENCH_RUNS     rounds per comparison                              default 5
#   BENCH_DIR      work dir (cached source file, downloads, haul)      default /tmp/haul-bench
#   BENCH_ONLY     ops to run, space or comma separated, from:
#                  ftp-get ftp-put ftps-get ftps-put sftp-get sftp-put  default all
#   BENCH_PAIRING  strict: haul runs again right before every peer run
#                  (haul, curl, haul, lftp, ...); grouped: one haul run per
#                  round shared by all peers of the op (fewer transfers)  default strict
#   BENCH_VERIFY   first: SHA-256 on the first good run of each client and op,
#                  size on the others; all: SHA-256 on every run; size   default first
#   BENCH_HAUL_FLAGS  extra flags for every haul run (e.g. future --segments)
#   BENCH_SHAPED   1: through the fault proxy shaped as a long link (TODO, issue 5)
#   BENCH_CLEAN    1: also delete the cached source file at the end
#   BENCH_RESULTS  where the table goes                  default bench/results/latest.txt
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
BENCH_SIZE=${BENCH_SIZE:-1G}
BENCH_RUNS=${BENCH_RUNS:-5}
BENCH_DIR=${BENCH_DIR:-/tmp/haul-bench}
BENCH_ONLY=${BENCH_ONLY:-}
BENCH_PAIRING=${BENCH_PAIRING:-strict}
BENCH_VERIFY=${BENCH_VERIFY:-first}
BENCH_HAUL_FLAGS=${BENCH_HAUL_FLAGS:-}
BENCH_SHAPED=${BENCH_SHAPED:-0}
BENCH_CLEAN=${BENCH_CLEAN:-0}
BENCH_RESULTS=${BENCH_RESULTS:-$REPO/bench/results/latest.txt}
HAUL_TESTBED_ENV=${HAUL_TESTBED_ENV:-/tmp/haul-testbed/env}
GO=${GO:-go}
ALL_OPS="ftp-get ftp-put ftps-get ftps-put sftp-get sftp-put"

# Remote names, the same in every server root.
REMOTE_SRC=haul-bench-src.bin
REMOTE_UP=haul-bench-up.bin

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
  (( s2 > 0 )) || die "bad BENCH_SIZE $1"
  echo "$s2"
}

fsize() { stat -c %s "$1" 2>/dev/null || echo -1; }

# ---------------------------------------------------------------- test bed

testbed_ready() {
  [[ -f $HAUL_TESTBED_ENV ]] || return 1
  local port
  for port in "${VSFTPD_PORT:-2121}" "${VSFTPS_PORT:-2122}" "${SSHD_PORT:-2222}"; do
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
# cleaned without another client.
# shellcheck disable=SC2153 # VSFTPD_ROOT etc. come from the test bed env file
target_plain() {
  TARGET=loopback
  FTP_HOST=$HOST   FTP_PORT=$VSFTPD_PORT  FTP_ROOT=$VSFTPD_ROOT
  FTPS_HOST=$HOST  FTPS_PORT=$VSFTPS_PORT FTPS_ROOT=$VSFTPS_ROOT
  SFTP_HOST=$HOST  SFTP_PORT=$SSHD_PORT   SFTP_ROOT=$SSHD_HOME
}

target_shaped() {
  # TODO(issue 5): the shaped long link. Start integration/faultproxy in
  # front of vsftpd (control + passive range) and sshd on 127.0.0.2 with
  # about 20 ms round trip and a per-connection rate cap, then set
  # FTP_HOST/FTPS_HOST/SFTP_HOST to the proxy address (same ports, same
  # roots: the files are the same), add the segmented haul client (e.g.
  # "haul-seg4" with BENCH_HAUL_FLAGS-style --segments 4) to clients_for_op,
  # and stop the proxy in cleanup. Everything else (schedule, checks, table)
  # is unchanged.
  die "BENCH_SHAPED=1 is not implemented yet (issue 5: shaped link through the fault proxy)"
}

# ---------------------------------------------------------------- clients

# clients_for_op OP: the peers haul is compared with on OP (haul itself is
# always the A side). Names are also the table labels.
clients_for_op() {
  case $1 in
    ftp-get)  echo "curl lftp-get lftp-pget4" ;;
    ftp-put)  echo "curl lftp-put" ;;
    ftps-get) echo "curl" ;;
    ftps-put) echo "curl" ;;
    sftp-get) echo "openssh openssh-gcm" ;;
    sftp-put) echo "openssh openssh-gcm" ;;
    *) die "unknown op $1" ;;
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

# run_client OP CLIENT REMOTE_NAME LOCAL_PATH: one transfer; output to $RUNLOG.
run_client() {
  local op=$1 client=$2 rname=$3 lpath=$4
  local proto dir; proto=$(proto_of "$op"); dir=$(dir_of "$op")
  local ssh_opts=(-q -b - -i "$SSH_KEY_FILE" -o "UserKnownHostsFile=$KNOWN_HOSTS_FILE"
    -o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes -P "$SFTP_PORT")
  local lftp_set="set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 60; set ftp:ssl-allow no; set xfer:clobber yes"
  case $client in
    haul)
      local url args=(--json -q) ; # shellcheck disable=SC2206
      args+=($BENCH_HAUL_FLAGS)
      case $proto in
        ftp)  url="ftp://$USER@$FTP_HOST:$FTP_PORT/$rname" ;;
        ftps) url="ftps://$USER@$FTPS_HOST:$FTPS_PORT/$rname"; args+=(--ca-file "$CA_FILE") ;;
        sftp) url="sftp://$USER@$SFTP_HOST:$SFTP_PORT/$rname"
              args+=(--identity "$SSH_KEY_FILE" --known-hosts "$KNOWN_HOSTS_FILE") ;;
      esac
      if [[ $dir == get ]]; then
        HAUL_PASSWORD=$PASSWORD "$HAUL" get "${args[@]}" "$url" "$lpath"
      else
        HAUL_PASSWORD=$PASSWORD "$HAUL" put "${args[@]}" "$lpath" "$url"
      fi ;;
    curl)
      local url tls=()
      if [[ $proto == ftps ]]; then
        url="ftp://$FTPS_HOST:$FTPS_PORT/$rname"; tls=(--ssl-reqd --cacert "$CA_FILE")
      else
        url="ftp://$FTP_HOST:$FTP_PORT/$rname"
      fi
      if [[ $dir == get ]]; then
        curl -sS --fail "${tls[@]}" -u "$USER:$PASSWORD" -o "$lpath" "$url"
      else
        curl -sS --fail "${tls[@]}" -u "$USER:$PASSWORD" -T "$lpath" "$url"
      fi ;;
    lftp-get|lftp-pget4|lftp-put)
      local cmd
      case $client in
        lftp-get)   cmd="get $rname -o $lpath" ;;
        lftp-pget4) cmd="pget -n 4 $rname -o $lpath" ;;
        lftp-put)   cmd="put $lpath -o $rname" ;;
      esac
      lftp -c "$lftp_set; open -u $USER,$PASSWORD -p $FTP_PORT $FTP_HOST; $cmd" ;;
    openssh|openssh-gcm)
      local cipher=()
      if [[ $client == openssh-gcm ]]; then cipher=(-c aes128-gcm@openssh.com); fi
      if [[ $dir == get ]]; then
        echo "get $rname $lpath" | sftp "${cipher[@]}" "${ssh_opts[@]}" "$USER@$SFTP_HOST"
      else
        echo "put $lpath $rname" | sftp "${cipher[@]}" "${ssh_opts[@]}" "$USER@$SFTP_HOST"
      fi ;;
    *) die "unknown client $client" ;;
  esac
}

# ---------------------------------------------------------------- runs

declare -A VERIFIED=()

# clear_targets OP: remove what a run of OP writes, so the next run is a full
# transfer (downloads: the local file and partials; uploads: the remote file).
clear_targets() {
  rm -f "$DL" "$DL.part" "$DL.lftp-pget-status"
  rm -f "$(remote_root "$1")/$REMOTE_UP"
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

# one_run ROUND OP CLIENT TAG: time one transfer and append it to $RUNS_TSV.
# TAG names the peer a haul run is paired with ("*" = all peers of the op).
one_run() {
  local round=$1 op=$2 client=$3 tag=$4
  local rname lpath
  if [[ $(dir_of "$op") == get ]]; then rname=$REMOTE_SRC lpath=$DL; else rname=$REMOTE_UP lpath=$SRC; fi
  clear_targets "$op"
  sync
  local t0 t1 rc=0 status=ok note=-
  {
    echo "=== round $round $op $client ($tag)"
    t0=$EPOCHREALTIME
    run_client "$op" "$client" "$rname" "$lpath" >"$BENCH_DIR/last.out" 2>&1 || rc=$?
    t1=$EPOCHREALTIME
    cat "$BENCH_DIR/last.out"
  } >>"$RUNLOG"
  local secs; secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.6f", b-a}')
  if (( rc != 0 )); then
    status=fail note="exit-$rc"
  elif ! check_result "$op" "$client"; then
    status=fail note=$CHECK_MSG
  else
    if [[ $client == haul ]]; then
      # A haul run that needed a resume is not a clean single stream: flag it.
      local att; att=$(sed -n 's/.*"attempts":\([0-9]*\).*/\1/p' "$BENCH_DIR/last.out" | tail -1)
      if [[ -n $att && $att != 1 ]]; then note="attempts=$att"; fi
    fi
  fi
  clear_targets "$op"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$op" "$client" "$tag" "$secs" "$status" "$note" >>"$RUNS_TSV"
  local mbs; mbs=$(awk -v s="$secs" -v n="$SIZE" 'BEGIN{printf "%.0f", n/s/1e6}')
  [[ $note == - ]] && note=
  log "round $round  $(printf '%-9s %-12s' "$op" "$client") $(printf '%6s' "$mbs") MB/s  $status${note:+ $note}"
}

# schedule OP ROUND: the runs of one round, as "client tag" lines.
# strict:  haul p1 haul p2 ...   grouped: haul p1 p2 ...
# Every other round the sequence is reversed (p2 haul p1 haul), so neither
# side always goes first.
schedule() {
  local op=$1 round=$2 p lines=()
  for p in $(clients_for_op "$op"); do
    peer_available "$p" || continue
    if [[ $BENCH_PAIRING == strict ]]; then
      lines+=("haul $p" "$p $p")
    else
      lines+=("$p $p")
    fi
  done
  [[ $BENCH_PAIRING == strict ]] || lines=("haul *" "${lines[@]}")
  if (( round % 2 == 0 )); then
    local i; for (( i=${#lines[@]}-1; i>=0; i-- )); do echo "${lines[i]}"; done
  else
    printf '%s\n' "${lines[@]}"
  fi
}

cleanup() {
  local op
  for op in $ALL_OPS; do
    [[ -n ${FTP_ROOT:-} ]] || break
    rm -f "$(remote_root "$op")/$REMOTE_SRC" "$(remote_root "$op")/$REMOTE_UP"
  done
  rm -f "${DL:-/nonexistent}" "${DL:-/nonexistent}.part" "${DL:-/nonexistent}.lftp-pget-status" "${BENCH_DIR}/last.out"
  if [[ $BENCH_CLEAN == 1 ]]; then rm -f "$BENCH_DIR"/src-*.bin "$BENCH_DIR"/src-*.sha256; fi
}

# ---------------------------------------------------------------- main

main() {
  [[ $BENCH_RUNS =~ ^[1-9][0-9]*$ ]] || die "bad BENCH_RUNS $BENCH_RUNS"
  [[ $BENCH_PAIRING == strict || $BENCH_PAIRING == grouped ]] || die "BENCH_PAIRING must be strict or grouped"
  [[ $BENCH_VERIFY == first || $BENCH_VERIFY == all || $BENCH_VERIFY == size ]] || die "BENCH_VERIFY must be first, all or size"
  command -v python3 >/dev/null || die "python3 is needed for the statistics"
  SIZE=$(parse_size "$BENCH_SIZE")
  local ops=${BENCH_ONLY//,/ }; ops=${ops:-$ALL_OPS}
  local op; for op in $ops; do clients_for_op "$op" >/dev/null; done

  load_testbed
  if [[ $BENCH_SHAPED == 1 ]]; then target_shaped; else target_plain; fi
  mkdir -p "$BENCH_DIR" "$(dirname "$BENCH_RESULTS")"
  trap cleanup EXIT
  trap 'exit 130' INT TERM

  HAUL=$BENCH_DIR/haul
  log "building haul"
  (cd "$REPO" && "$GO" build -o "$HAUL" ./cmd/haul) || die "go build failed"

  SRC=$BENCH_DIR/src-$SIZE.bin
  DL=$BENCH_DIR/download.bin
  if [[ $(fsize "$SRC") != "$SIZE" || ! -s $SRC.sha256 ]]; then
    log "generating $SIZE random bytes in $SRC"
    rm -f "$SRC" "$SRC.sha256"
    head -c "$SIZE" /dev/urandom >"$SRC.tmp" && mv "$SRC.tmp" "$SRC"
    sha256sum "$SRC" | cut -d' ' -f1 >"$SRC.sha256"
  fi
  chmod 0644 "$SRC"
  SRC_SHA=$(cat "$SRC.sha256")
  # Downloads read the same file from every server root: a hard link where
  # possible, else a copy.
  for op in $ops; do
    local dst; dst="$(remote_root "$op")/$REMOTE_SRC"
    [[ $(dir_of "$op") == get && ! -e $dst ]] || continue
    ln "$SRC" "$dst" 2>/dev/null || cp "$SRC" "$dst"
  done

  RUNS_TSV=$BENCH_DIR/runs.tsv
  RUNLOG=$BENCH_DIR/runs.log
  : >"$RUNS_TSV"; : >"$RUNLOG"
  local started=$EPOCHSECONDS load0 round c t
  load0=$(cut -d' ' -f1 /proc/loadavg)
  for (( round=1; round<=BENCH_RUNS; round++ )); do
    for op in $ops; do
      while read -r c t; do one_run "$round" "$op" "$c" "$t"; done < <(schedule "$op" "$round")
    done
  done

  local header
  header=$(printf 'haul bench %s  rev %s  target %s  size %s bytes  runs %s  pairing %s  cores %s  load %s->%s  wall %ss' \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "$TARGET" "$SIZE" "$BENCH_RUNS" "$BENCH_PAIRING" "$(nproc)" "$load0" "$(cut -d' ' -f1 /proc/loadavg)" \
    "$(( EPOCHSECONDS - started ))")
  local peers=""
  for op in $ops; do for c in $(clients_for_op "$op"); do peer_available "$c" && peers+="$op:$c:$(label "$c")|"; done; done
  python3 "$REPO/bench/table.py" "$RUNS_TSV" "$SIZE" "$header" "$peers" | tee "$BENCH_RESULTS"
  cp "$RUNS_TSV" "${BENCH_RESULTS%.txt}.tsv"
  log "table written to $BENCH_RESULTS (raw runs ${BENCH_RESULTS%.txt}.tsv, client output $RUNLOG)"
}

main "$@"
