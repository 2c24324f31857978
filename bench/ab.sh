#!/usr/bin/env bash
# bench/ab.sh: A/B benchmark of two builds of haul on clean transfers over the
# test bed's loopback servers: "is the new code slower than the old?"
#
# Usage: bench/ab.sh [BASE_REF] [NEW]
#   BASE_REF  git ref built from a temporary git worktree   default HEAD
#   NEW       git ref, or empty/"." for the current work tree   default: work tree
#
# Environment (all optional):
#   AB_SIZE   file size: bytes or K/M/G (binary)                   default 1G
#   AB_RUNS   rounds; a round is one base and one new run per op    default 5
#   AB_OPS    ops, space or comma separated, from:
#             ftp-get ftp-put ftps-get ftps-put sftp-get sftp-put   default ftp-get ftp-put sftp-get sftp-put
#   AB_FLAGS  extra flags for every haul run (both sides)          default --verify size
#   AB_DIR    work dir (binaries, cached source, logs, ab.txt)      default /tmp/haul-ab
#   AB_RUN_TIMEOUT  seconds before one transfer is killed          default 60 + size/5MB
#   AB_CLEAN  1: delete the cached source file at the end          default 0
#   HAUL_TESTBED_ENV  test bed env file              default /tmp/haul-testbed/env
#   GO        go command                             default go
#
# The ratio of a round is time_base/time_new (> 1: new is faster); the table
# gives its median and range over the rounds, and each side's median MB/s
# (10^6 bytes per second of wall time, process start to exit).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE_REF=${1:-HEAD}
NEW_REF=${2:-}; [[ $NEW_REF == . ]] && NEW_REF=
AB_DIR=${AB_DIR:-/tmp/haul-ab}
AB_RUNS=${AB_RUNS:-5}
AB_OPS=${AB_OPS:-ftp-get ftp-put sftp-get sftp-put}; AB_OPS=${AB_OPS//,/ }
AB_FLAGS=${AB_FLAGS---verify size}
AB_CLEAN=${AB_CLEAN:-0}
HAUL_TESTBED_ENV=${HAUL_TESTBED_ENV:-/tmp/haul-testbed/env}
GO=${GO:-go}
# Remote names are unique per work dir, so runs with different AB_DIRs (and
# bench/run.sh) never touch each other's files.
TAG=$(printf '%s' "$AB_DIR" | cksum | cut -d' ' -f1)
REMOTE_SRC=haul-ab-src-$TAG.bin REMOTE_UP=haul-ab-up-$TAG.bin

die() { echo "ab: $*" >&2; exit 1; }; log() { echo "ab: $*" >&2; }

parse_size() { # 1G, 512M, 64K, 1000 -> bytes
  local s=${1%iB} n; s=${s%B}
  case $s in
    *[kK]) n=$(( ${s%?} << 10 )) ;; *[mM]) n=$(( ${s%?} << 20 )) ;;
    *[gG]) n=$(( ${s%?} << 30 )) ;; *) n=$(( s )) ;;
  esac
  (( n > 0 )) || die "bad size $1"; echo "$n"
}
fsize() { stat -c %s "$1" 2>/dev/null || echo -1; }
json_field() { sed -n "s/.*\"$1\":\([0-9-]*\).*/\1/p" "$2" | tail -1; }
loadavg() { if command -v uptime >/dev/null; then uptime | sed 's/.*load average: *//'; else cut -d' ' -f1-3 /proc/loadavg; fi; }

SIZE=$(parse_size "${AB_SIZE:-1G}")
RUN_TIMEOUT=${AB_RUN_TIMEOUT:-$(( 60 + SIZE / 5000000 ))}
[[ $AB_RUNS =~ ^[1-9][0-9]*$ ]] || die "bad AB_RUNS $AB_RUNS"
[[ $RUN_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "bad AB_RUN_TIMEOUT $RUN_TIMEOUT"
for op in $AB_OPS; do
  case $op in ftp-get|ftp-put|ftps-get|ftps-put|sftp-get|sftp-put) ;; *) die "unknown op $op" ;; esac
done
proto_of() { echo "${1%-*}"; }; dir_of() { echo "${1#*-}"; }

# ---------------------------------------------------------------- test bed
[[ -f $HAUL_TESTBED_ENV ]] || die "no test bed env $HAUL_TESTBED_ENV (make up)"
# shellcheck disable=SC1090
source "$HAUL_TESTBED_ENV"
for port in "$VSFTPD_NOLOCK_PORT" "$VSFTPS_PORT" "$SSHD_PORT"; do
  (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null || die "test bed port $port does not answer (make status)"
done
# remote_root OP / url OP NAME / proto_args OP: where a server keeps its files
# on this machine, the URL of NAME on it, haul's flags for it.
remote_root() {
  case $(proto_of "$1") in
    ftp) echo "$VSFTPD_NOLOCK_ROOT" ;; ftps) echo "$VSFTPS_ROOT" ;; sftp) echo "$SSHD_HOME" ;;
  esac
}
url() {
  case $(proto_of "$1") in
    ftp) echo "ftp://$USER@$HOST:$VSFTPD_NOLOCK_PORT/$2" ;;
    ftps) echo "ftps://$USER@$HOST:$VSFTPS_PORT/$2" ;;
    sftp) echo "sftp://$USER@$HOST:$SSHD_PORT/$2" ;;
  esac
}
proto_args() {
  case $(proto_of "$1") in
    ftps) echo "--ca-file $CA_FILE" ;; sftp) echo "--identity $SSH_KEY_FILE --known-hosts $KNOWN_HOSTS_FILE" ;;
  esac
}

# ---------------------------------------------------------------- setup
mkdir -p "$AB_DIR"
exec 9>"$AB_DIR/.lock"
flock -n 9 || die "another ab run holds $AB_DIR (set AB_DIR for a second one)"
SRC=$AB_DIR/src-$SIZE.bin DL=$AB_DIR/download.bin
RUNS_TSV=$AB_DIR/runs.tsv RUNLOG=$AB_DIR/runs.log RESULTS=$AB_DIR/ab.txt
WORKTREES=()

clear_targets() { # OP: what a run of OP leaves behind (outside the timing)
  rm -f "$DL" "$DL".* "$(remote_root "$1")/$REMOTE_UP" "$(remote_root "$1")/$REMOTE_UP".*
}
cleanup() {
  local op wt
  for op in $AB_OPS; do clear_targets "$op"; rm -f "$(remote_root "$op")/$REMOTE_SRC"; done
  rm -rf "$AB_DIR"/cache.* "$AB_DIR/last.out"
  for wt in "${WORKTREES[@]}"; do
    git -C "$REPO" worktree remove --force "$wt" 2>/dev/null || rm -rf "$wt"
  done
  (( ${#WORKTREES[@]} )) && git -C "$REPO" worktree prune 2>/dev/null
  [[ $AB_CLEAN == 1 ]] && rm -f "$SRC" "$SRC.sha256"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# build SIDE REF: haul at REF (empty: the current work tree) into
# $AB_DIR/haul-SIDE; DESC[SIDE] says what was built.
declare -A DESC=()
build() {
  local side=$1 ref=$2 src=$REPO desc sha
  if [[ -n $ref ]]; then
    sha=$(git -C "$REPO" rev-parse --verify --quiet "$ref^{commit}") || die "unknown git ref $ref"
    src=$AB_DIR/wt-$side
    git -C "$REPO" worktree remove --force "$src" 2>/dev/null || rm -rf "$src"
    git -C "$REPO" worktree prune
    WORKTREES+=("$src")
    git -C "$REPO" worktree add --quiet --detach "$src" "$sha" >&2 || die "git worktree add $ref failed"
    desc="$ref (${sha:0:9})"
  else
    local changed; changed=$(git -C "$REPO" status --porcelain | wc -l)
    desc="work tree (HEAD $(git -C "$REPO" rev-parse --short=9 HEAD) + $changed changed/untracked files)"
  fi
  log "building $side: $desc"
  (cd "$src" && "$GO" build -trimpath -o "$AB_DIR/haul-$side" ./cmd/haul) || die "go build of $side ($desc) failed"
  desc+=", binary sha256 $(sha256sum "$AB_DIR/haul-$side" | cut -c1-12)"
  DESC[$side]=$desc
}
build base "$BASE_REF"
build new "$NEW_REF"
cmp -s "$AB_DIR/haul-base" "$AB_DIR/haul-new" && log "note: base and new binaries are identical (an A/A run)"

if [[ $(fsize "$SRC") != "$SIZE" || ! -s $SRC.sha256 ]]; then
  avail=$(df -B1 --output=avail "$AB_DIR" | tail -1 | tr -d ' ')
  (( avail >= 2 * SIZE + (1 << 30) )) || die "not enough disk in $AB_DIR: $avail bytes free"
  log "generating $SIZE pseudo-random bytes in $SRC"
  if command -v openssl >/dev/null; then
    { openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:haul-ab-$RANDOM$RANDOM" -in /dev/zero 2>/dev/null || true; } |
      head -c "$SIZE" >"$SRC.tmp"
  else
    head -c "$SIZE" /dev/urandom >"$SRC.tmp"
  fi
  [[ $(fsize "$SRC.tmp") == "$SIZE" ]] || die "could not generate $SRC"
  mv "$SRC.tmp" "$SRC"
  sha256sum "$SRC" | cut -d' ' -f1 >"$SRC.sha256"
fi
chmod 0644 "$SRC"
SRC_SHA=$(cat "$SRC.sha256")
for op in $AB_OPS; do # downloads read a hard link of the source (else a copy)
  dst="$(remote_root "$op")/$REMOTE_SRC"
  [[ $(dir_of "$op") == get && ! -e $dst ]] || continue
  ln "$SRC" "$dst" 2>/dev/null || cp "$SRC" "$dst"
done

# ---------------------------------------------------------------- runs
declare -A VERIFIED=()
# one_run ROUND OP SIDE POS: time one transfer with a fresh cache dir, check
# it, and append "round op side pos secs status note" to $RUNS_TSV.
one_run() {
  local round=$1 op=$2 side=$3 pos=$4 rc=0 status=ok note=- out
  local cache; cache=$(mktemp -d "$AB_DIR/cache.XXXXXX")
  local args=(--json -q)
  # shellcheck disable=SC2206,SC2046 # flags are words
  args+=($AB_FLAGS $(proto_args "$op"))
  # GNU time records the process's CPU seconds (user+system): on a shared,
  # loaded machine they vary far less than wall time.
  local cmd=(timeout -k 5 "$RUN_TIMEOUT" /usr/bin/time -f '%U %S' -o "$AB_DIR/last.cpu" "$AB_DIR/haul-$side")
  if [[ $(dir_of "$op") == get ]]; then
    cmd+=(get "${args[@]}" "$(url "$op" "$REMOTE_SRC")" "$DL"); out=$DL
  else
    cmd+=(put "${args[@]}" "$SRC" "$(url "$op" "$REMOTE_UP")"); out="$(remote_root "$op")/$REMOTE_UP"
  fi
  clear_targets "$op"
  sync
  local t0=$EPOCHREALTIME
  HAUL_PASSWORD=$PASSWORD XDG_CACHE_HOME=$cache "${cmd[@]}" >"$AB_DIR/last.out" 2>&1 || rc=$?
  local t1=$EPOCHREALTIME
  { echo "=== round $round $op $side (#$pos) rc=$rc: ${cmd[*]}"; cat "$AB_DIR/last.out"; } >>"$RUNLOG"
  local secs; secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.6f", b-a}')
  local cpu; cpu=$(awk 'NF == 2 && $1 ~ /^[0-9.]+$/ {printf "%.2f", $1 + $2}' "$AB_DIR/last.cpu" 2>/dev/null); cpu=${cpu:--}
  local n; n=$(fsize "$out")
  if (( rc == 124 || rc == 137 )); then status=fail note="timeout-${RUN_TIMEOUT}s"
  elif (( rc != 0 )); then status=fail note="exit-$rc"
  elif (( n != SIZE )); then status=fail note="size=$n"
  elif [[ -z ${VERIFIED[$op/$side]:-} ]]; then
    if [[ $(sha256sum "$out" | cut -d' ' -f1) == "$SRC_SHA" ]]; then VERIFIED[$op/$side]=1
    else status=fail note=sha256-mismatch; fi
  fi
  if [[ $status == ok ]]; then # a clean run is one attempt, no resume/restart
    local att res rst; att=$(json_field attempts "$AB_DIR/last.out")
    res=$(json_field resumes "$AB_DIR/last.out"); rst=$(json_field restarts "$AB_DIR/last.out")
    [[ ${att:-1} == 1 && ${res:-0} == 0 && ${rst:-0} == 0 ]] ||
      note="attempts=${att:-?},resumes=${res:-?},restarts=${rst:-?}"
  fi
  clear_targets "$op"
  rm -rf "$cache"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$op" "$side" "$pos" "$secs" "$status" "$note" "$cpu" >>"$RUNS_TSV"
  [[ $note == - ]] && note=
  log "round $round  $(printf '%-9s %-4s' "$op" "$side") $(awk -v s="$secs" -v n="$SIZE" 'BEGIN{printf "%6.0f", n/s/1e6}') MB/s  ${secs%???}s  $status${note:+ $note}"
}

: >"$RUNS_TSV"; : >"$RUNLOG"
STARTED=$EPOCHSECONDS LOAD0=$(loadavg)
log "size $SIZE, $AB_RUNS round(s), ops: $AB_OPS, flags: ${AB_FLAGS:-none}, load $LOAD0"
for (( round = 1; round <= AB_RUNS; round++ )); do
  for op in $AB_OPS; do
    if (( round % 2 )); then order="base new"; else order="new base"; fi
    pos=0
    for side in $order; do pos=$(( pos + 1 )); one_run "$round" "$op" "$side" "$pos"; done
  done
done

# ---------------------------------------------------------------- table
{
  printf 'haul A/B %s  size %s bytes  rounds %s  flags: %s  timeout %ss  cores %s  wall %ss\n' \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$SIZE" "$AB_RUNS" "${AB_FLAGS:-none}" "$RUN_TIMEOUT" "$(nproc)" "$(( EPOCHSECONDS - STARTED ))"
  printf 'load average (1/5/15 min, uptime): %s -> %s\n' "$LOAD0" "$(loadavg)"
  printf 'base: %s\nnew:  %s\n' "${DESC[base]}" "${DESC[new]}"
  echo "ratio = time_base/time_new of one round (> 1: new is faster); rounds: ratio per round, x = a failed run; MB/s = median of good runs"
  echo "cpu = CPU seconds (user+system) of haul, base/new median ratio over the rounds (> 1: new uses less): robust to the machine's load"
  echo
  awk -F'\t' -v size="$SIZE" -v runs="$AB_RUNS" -v ops="$AB_OPS" '
    function med(arr, n,   i, j, t) {
      if (n == 0) return "";
      for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
      return n % 2 ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
    }
    { if ($6 == "ok") { t[$2, $3, $1] = $5; if ($8 != "" && $8 != "-") c[$2, $3, $1] = $8 }
      if ($7 != "-") notes[++nn] = sprintf("round %s %s %s: %s%s", $1, $2, $3, $6 == "ok" ? "" : "failed, ", $7) }
    END {
      printf "%-9s %8s %-13s %9s %9s %8s  %s\n", "op", "new/base", "(min-max)", "base MB/s", "new MB/s", "cpu", "rounds"
      split(ops, o, " ")
      for (k = 1; k in o; k++) {
        op = o[k]; nr = 0; nb = 0; nw = 0; nc = 0; rounds = ""; lo = ""; hi = ""
        for (r = 1; r <= runs; r++) {
          b = ((op, "base", r) in t); w = ((op, "new", r) in t)
          if (b) mb[++nb] = size / t[op, "base", r] / 1e6
          if (w) mw[++nw] = size / t[op, "new", r] / 1e6
          if (((op, "base", r) in c) && ((op, "new", r) in c) && c[op, "new", r] > 0) cr[++nc] = c[op, "base", r] / c[op, "new", r]
          if (b && w) {
            x = t[op, "base", r] / t[op, "new", r]; rt[++nr] = x
            if (lo == "" || x < lo) lo = x; if (hi == "" || x > hi) hi = x
            rounds = rounds sprintf(" %.2f", x)
          } else rounds = rounds " x"
        }
        m = med(rt, nr); bm = med(mb, nb); wm = med(mw, nw); cm = med(cr, nc)
        printf "%-9s %8s %-13s %9s %9s %8s  %s\n", op, m == "" ? "-" : sprintf("%.3f", m),
          nr ? sprintf("(%.2f-%.2f)", lo, hi) : "", nb ? sprintf("%.0f", bm) : "-", nw ? sprintf("%.0f", wm) : "-",
          cm == "" ? "-" : sprintf("%.3f", cm), substr(rounds, 2)
      }
      if (nn) { print ""; print "notes:"; for (i = 1; i <= nn; i++) print "  " notes[i] }
    }' "$RUNS_TSV"
} | tee "$RESULTS"
log "table in $RESULTS (raw runs $RUNS_TSV, haul output $RUNLOG)"
