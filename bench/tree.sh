#!/usr/bin/env bash
# bench/tree.sh: many files (issue 12). haul put -r / get -r --parallel 8 of a
# 300-file tree against rclone copy --transfers 8 and lftp mirror --parallel=8,
# over FTP (vsftpd :2121) and SFTP (OpenSSH :2222) of the test bed, in
# alternating runs; logins per run counted in the servers' logs; a rerun on a
# complete tree (bytes on the wire, files rewritten); and, in the rss mode,
# the peak RSS of 8 parallel SFTP uploads of 64 MiB files.
#
# Usage: bench/tree.sh [tree|rss|all]     (make bench-tree / make bench-rss)
#
# Environment (all optional):
#   BENCH_RUNS        rounds                                          default 3
#   BENCH_ONLY        ops, space or comma separated, from
#                     ftp-put ftp-get sftp-put sftp-get               default all four
#   BENCH_PEERS       peers, from rclone lftp                         default rclone lftp
#   BENCH_PARALLEL    workers / transfers / parallel of every tool    default 8
#   BENCH_SEED        seed of the tree's layout and contents          default 91 (~924 MB)
#   BENCH_VERIFY      md5: sizes + md5sum of every file; size: names and sizes only  default md5
#   BENCH_RERUNS      timed reruns per tool on a complete tree, 0: none   default 1
#   BENCH_RUN_TIMEOUT seconds before one run is killed (counted as failed)  default 300
#   BENCH_HAUL_FLAGS  extra flags for every haul run
#   BENCH_HAUL_REF    git ref haul is built from (temporary worktree) default: the work tree
#   HAUL_BIN          a prebuilt haul binary (no build)
#   BENCH_RSS_FILES, BENCH_RSS_SIZE, BENCH_RSS_TARGET   rss mode: 8, 64M, 96 (MiB)
#   BENCH_TREE_DIR    work dir: cached trees, downloads, haul, logs   default /tmp/haul-tree
#   BENCH_RESULTS     the table                      default bench/results/tree.txt (rss: tree-rss.txt)
#   BENCH_CLEAN       1: delete the cached trees at the end           default 0
#   HAUL_TESTBED_ENV  test bed env file              default /tmp/haul-testbed/env
#   GO                go command                     default go
#
# Seconds are wall time from process start to exit. A round runs the tools of
# one op back to back, haul between the peers (rclone haul lftp haul; the next
# round lftp haul rclone haul). Each run starts from an empty destination
# directory and is checked after the clock stops: names, sizes and md5 of
# every file against the source; a run that exits 0 with a wrong tree is a
# MISMATCH and makes the script exit 1 (after the table).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODE=${1:-tree}
case $MODE in tree|rss|all) ;; *) echo "usage: bench/tree.sh [tree|rss|all]" >&2; exit 2 ;; esac
W=${BENCH_TREE_DIR:-/tmp/haul-tree}
RUNS=${BENCH_RUNS:-3}
OPS=${BENCH_ONLY:-ftp-put ftp-get sftp-put sftp-get}; OPS=${OPS//,/ }
PEERS=${BENCH_PEERS:-rclone lftp}; PEERS=${PEERS//,/ }
PAR=${BENCH_PARALLEL:-8}
SEED=${BENCH_SEED:-91}
VERIFY=${BENCH_VERIFY:-md5}
RERUNS=${BENCH_RERUNS:-1}
RUN_TIMEOUT=${BENCH_RUN_TIMEOUT:-300}
HAUL_FLAGS=${BENCH_HAUL_FLAGS:-}
HAUL_REF=${BENCH_HAUL_REF:-}
RSS_FILES=${BENCH_RSS_FILES:-8}
RSS_SIZE=${BENCH_RSS_SIZE:-64M}
RSS_TARGET=${BENCH_RSS_TARGET:-96}
CLEAN=${BENCH_CLEAN:-0}
HAUL_TESTBED_ENV=${HAUL_TESTBED_ENV:-/tmp/haul-testbed/env}
GO=${GO:-go}

die() { echo "bench-tree: $*" >&2; exit 1; }
log() { echo "bench-tree: $*" >&2; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
parse_size() { # 64M, 1G, 4K, 1000 -> bytes
  local s=${1%iB} n; s=${s%B}
  case $s in
    *[kK]) n=$(( ${s%?} << 10 )) ;; *[mM]) n=$(( ${s%?} << 20 )) ;;
    *[gG]) n=$(( ${s%?} << 30 )) ;; *) n=$(( s )) ;;
  esac
  (( n > 0 )) || die "bad size $1"; echo "$n"
}

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "bad BENCH_RUNS $RUNS"
[[ $RERUNS =~ ^[0-9]+$ ]] || die "bad BENCH_RERUNS $RERUNS"
[[ $PAR =~ ^[1-9][0-9]*$ ]] || die "bad BENCH_PARALLEL $PAR"
[[ $SEED =~ ^[0-9]+$ ]] || die "bad BENCH_SEED $SEED"
[[ $RUN_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "bad BENCH_RUN_TIMEOUT $RUN_TIMEOUT"
[[ $RSS_FILES =~ ^[1-9][0-9]*$ ]] || die "bad BENCH_RSS_FILES $RSS_FILES"
[[ $VERIFY == md5 || $VERIFY == size ]] || die "bad BENCH_VERIFY $VERIFY (md5 or size)"
for op in $OPS; do
  case $op in ftp-put|ftp-get|sftp-put|sftp-get) ;; *) die "unknown op $op" ;; esac
done
for p in $PEERS; do
  case $p in rclone|lftp) command -v "$p" >/dev/null || die "$p is not installed (set BENCH_PEERS)" ;;
    *) die "unknown peer $p (rclone, lftp)" ;; esac
done
RSS_BYTES=$(parse_size "$RSS_SIZE")
proto_of() { echo "${1%-*}"; }
dir_of() { echo "${1#*-}"; }

# ---------------------------------------------------------------- test bed
[[ -f $HAUL_TESTBED_ENV ]] || die "no test bed env $HAUL_TESTBED_ENV (make up)"
# shellcheck disable=SC1090
source "$HAUL_TESTBED_ENV"
for port in "$VSFTPD_PORT" "$SSHD_PORT"; do
  (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null || die "test bed port $port does not answer (make status)"
done
# Everything this script puts on a server lies under RBASE in the server's
# root, one name per work dir, so two work dirs never meet.
TAG=$(printf '%s' "$W" | cksum | cut -d' ' -f1)
RBASE=haul-tree-$TAG
# shellcheck disable=SC2153 # VSFTPD_ROOT etc. come from the env file
remote_root() { case $(proto_of "$1") in ftp) echo "$VSFTPD_ROOT" ;; sftp) echo "$SSHD_HOME" ;; esac; }
server_log() { case $(proto_of "$1") in ftp) echo "$VSFTPD_LOG" ;; sftp) echo "$SSHD_LOG" ;; esac; }
haul_url() {
  case $(proto_of "$1") in
    ftp) echo "ftp://$USER@$HOST:$VSFTPD_PORT/$2" ;;
    sftp) echo "sftp://$USER@$HOST:$SSHD_PORT/$2" ;;
  esac
}

# ---------------------------------------------------------------- setup
mkdir -p "$W"
exec 9>"$W/.lock"
flock -n 9 || die "another run holds $W (set BENCH_TREE_DIR for a second one)"
RUNS_TSV=$W/runs.tsv RUNLOG=$W/runs.log
MISMATCH=0

cleanup() {
  declare -F net_cleanup >/dev/null && net_cleanup
  rm -rf "${VSFTPD_ROOT:?}/$RBASE" "${SSHD_HOME:?}/$RBASE" "$W"/dl-* "$W"/cache.* "$W"/snap.* "$W/last.out" \
    "$W/counters" "$W/window.log" "$W/time.out"
  if [[ -n ${HAUL_WT:-} ]]; then
    git -C "$REPO" worktree remove --force "$HAUL_WT" 2>/dev/null || rm -rf "$HAUL_WT"
    git -C "$REPO" worktree prune 2>/dev/null || true
  fi
  [[ $CLEAN == 1 ]] && rm -rf "$W"/tree-s* "$W"/rss-s*
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# haul: HAUL_BIN, else built from BENCH_HAUL_REF (a temporary worktree) or
# from the current work tree, as bench/ab.sh does.
if [[ -n ${HAUL_BIN:-} ]]; then
  [[ -x $HAUL_BIN ]] || die "HAUL_BIN $HAUL_BIN is not executable"
  HAUL=$HAUL_BIN HAUL_DESC="HAUL_BIN=$HAUL_BIN"
else
  HAUL=$W/haul src=$REPO
  if [[ -n $HAUL_REF ]]; then
    sha=$(git -C "$REPO" rev-parse --verify --quiet "$HAUL_REF^{commit}") || die "unknown git ref $HAUL_REF"
    HAUL_WT=$W/wt
    git -C "$REPO" worktree remove --force "$HAUL_WT" 2>/dev/null || rm -rf "$HAUL_WT"
    git -C "$REPO" worktree prune
    git -C "$REPO" worktree add --quiet --detach "$HAUL_WT" "$sha" >&2 || die "git worktree add $HAUL_REF failed"
    src=$HAUL_WT HAUL_DESC="$HAUL_REF (${sha:0:9})"
  else
    HAUL_DESC="work tree (HEAD $(git -C "$REPO" rev-parse --short=9 HEAD) + $(git -C "$REPO" status --porcelain | wc -l) changed/untracked files)"
  fi
  log "building haul: $HAUL_DESC"
  (cd "$src" && nice "$GO" build -trimpath -o "$HAUL" ./cmd/haul) || die "go build of haul failed"
fi
# A haul without the batch CLI (put -r --parallel) gets n/a rows.
HAUL_BATCH=0
HAUL_HELP=$("$HAUL" put --help 2>&1 || true)
if grep -q -- '--parallel' <<<"$HAUL_HELP" && grep -Eq '(^|[[:space:]])-r([,[:space:]]|$)' <<<"$HAUL_HELP"; then
  HAUL_BATCH=1
else
  log "haul: n/a (no batch mode in this build)"
fi

# rclone: remotes from environment variables, an empty config file of its
# own, the password obscured; SFTP checks the test bed's known_hosts.
: >"$W/rclone.conf"
OBSCURED=$(rclone obscure "$PASSWORD" 2>/dev/null || true)
export RCLONE_CONFIG_HTFTP_TYPE=ftp RCLONE_CONFIG_HTFTP_HOST=$HOST RCLONE_CONFIG_HTFTP_PORT=$VSFTPD_PORT \
  RCLONE_CONFIG_HTFTP_USER=$USER RCLONE_CONFIG_HTFTP_PASS=$OBSCURED
export RCLONE_CONFIG_HTSFTP_TYPE=sftp RCLONE_CONFIG_HTSFTP_HOST=$HOST RCLONE_CONFIG_HTSFTP_PORT=$SSHD_PORT \
  RCLONE_CONFIG_HTSFTP_USER=$USER RCLONE_CONFIG_HTSFTP_PASS=$OBSCURED \
  RCLONE_CONFIG_HTSFTP_KNOWN_HOSTS_FILE=$KNOWN_HOSTS_FILE
# lftp: no TLS attempt on the plain vsftpd, one retry at most; SFTP through
# ssh with the test bed's known_hosts and strict checking.
LFTP_SET="set cmd:fail-exit yes; set net:max-retries 2; set net:timeout 60; set ftp:ssl-allow no"
LFTP_SET+="; set sftp:connect-program 'ssh -a -x -o UserKnownHostsFile=$KNOWN_HOSTS_FILE -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes'"

# ---------------------------------------------------------------- wire counters
# Each run's tool runs in a cgroup (v2) of its own, and an nftables table
# counts what its sockets send and receive on the servers' ports ("socket
# cgroupv2"): new connections (SYN) to the FTP control and SSH ports, bytes
# on the FTP data ports and the SSH port, per direction, headers included.
# Only this bench's processes are counted, whoever else uses the shared test
# bed. Without nft or a cgroup2 mount the counters are off ("-"); FTP
# figures then come from vsftpd's log alone.
NET=0 CG= CG_REL= NFT_TABLE=haul_tree_$TAG
net_rules() { # the nftables table, fresh (zeroed counters)
  local m="socket cgroupv2 level 1 \"$CG_REL\"" syn='tcp flags & (syn | ack) == syn'
  cat <<EOT
table inet $NFT_TABLE {
  counter ftp_conn {}
  counter ftp_up {}
  counter ftp_down {}
  counter ssh_conn {}
  counter ssh_up {}
  counter ssh_down {}
  chain out {
    type filter hook output priority 0; policy accept;
    ip daddr $HOST tcp dport $VSFTPD_PORT $syn $m counter name ftp_conn
    ip daddr $HOST tcp dport $VSFTPD_PASV_MIN-$VSFTPD_PASV_MAX $m counter name ftp_up
    ip daddr $HOST tcp dport $SSHD_PORT $syn $m counter name ssh_conn
    ip daddr $HOST tcp dport $SSHD_PORT $m counter name ssh_up
  }
  chain in {
    type filter hook input priority 0; policy accept;
    ip saddr $HOST tcp sport $VSFTPD_PASV_MIN-$VSFTPD_PASV_MAX $m counter name ftp_down
    ip saddr $HOST tcp sport $SSHD_PORT $m counter name ssh_down
  }
}
EOT
}
net_reset() {
  (( NET )) || return 0
  nft delete table inet "$NFT_TABLE" 2>/dev/null || true
  net_rules | nft -f - || { log "nft failed: wire counters off from here"; NET=0; }
}
# net_read: "ftp_conn ftp_up ftp_down ssh_conn ssh_up ssh_down" (connections,
# bytes), or dashes when the counters are off.
net_read() {
  if (( NET )) && nft list counters table inet "$NFT_TABLE" >"$W/counters" 2>/dev/null; then
    awk '/counter [a-z_]+ \{/ { name = $2 }
      /packets/ { for (i = 1; i < NF; i++) if ($i == (name ~ /conn/ ? "packets" : "bytes")) v[name] = $(i + 1) }
      END { printf "%s %s %s %s %s %s\n", v["ftp_conn"], v["ftp_up"], v["ftp_down"], v["ssh_conn"], v["ssh_up"], v["ssh_down"] }' "$W/counters"
  else
    echo "- - - - - -"
  fi
}
net_setup() {
  local cg2; cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
  if ! command -v nft >/dev/null || [[ -z $cg2 ]]; then log "no nft or no cgroup2 mount: wire counters off"; return 0; fi
  # nft resolves the path under /sys/fs/cgroup (the v2 tree may be mounted below it).
  case $cg2 in
    /sys/fs/cgroup) CG_REL=$RBASE ;;
    /sys/fs/cgroup/*) CG_REL=${cg2#/sys/fs/cgroup/}/$RBASE ;;
    *) log "cgroup2 at $cg2: wire counters off"; return 0 ;;
  esac
  CG=$cg2/$RBASE
  mkdir -p "$CG" 2>/dev/null || { log "cannot create $CG: wire counters off"; CG=; return 0; }
  NET=1
  net_reset
}
# cg_cpu: CPU microseconds the run's cgroup has used so far (every process
# of it, children a tool does not wait for included), or "-".
cg_cpu() {
  if (( NET )) && [[ -r $CG/cpu.stat ]]; then awk '$1 == "usage_usec" { print $2 }' "$CG/cpu.stat"; else echo -; fi
}
# cg_kill: end whatever a tool left running in the cgroup (lftp's ssh).
cg_kill() {
  if (( NET )) && [[ -w $CG/cgroup.kill ]]; then echo 1 >"$CG/cgroup.kill" 2>/dev/null || true; fi
}
net_cleanup() {
  [[ -n $CG ]] || return 0
  nft delete table inet "$NFT_TABLE" 2>/dev/null || true
  rmdir "$CG" 2>/dev/null || true
}

# ---------------------------------------------------------------- trees
# make_tree DIR KIND: the tree (KIND=tree: 250 files of 4 KiB-1 MiB, 45 of
# 1-16 MiB, 5 of 64 MiB, in 17 directories on 3 levels) or the rss set
# (KIND=rss: BENCH_RSS_FILES files of BENCH_RSS_SIZE), laid out by a seeded
# PRNG (Python's random, stable across versions) and filled with AES-CTR
# keystream keyed by seed and name: the same bytes on every run. Cached in
# DIR (DIR/tree, DIR/manifest "path<TAB>size", DIR/md5) until the manifest
# or a size differs.
make_tree() {
  local dir=$1 kind=$2
  mkdir -p "$dir"
  python3 - "$kind" "$SEED" "$RSS_FILES" "$RSS_BYTES" >"$dir/manifest.new" <<'EOF'
import random, sys
kind, seed, nrss, rsize = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
K, M = 1024, 1024 * 1024
r = random.Random(seed)
if kind == "rss":
    files = [("f%02d.bin" % i, rsize) for i in range(1, nrss + 1)]
else:
    sizes = [4 * K + int(r.random() * (M - 4 * K + 1)) for _ in range(250)]
    sizes += [M + int(r.random() * (15 * M + 1)) for _ in range(45)]
    sizes += [64 * M] * 5
    dirs = [""] + ["d%d/" % a for a in range(4)] + ["d%d/s%d/" % (a, b) for a in range(4) for b in range(3)]
    order = list(range(len(sizes)))
    for i in range(len(order) - 1, 0, -1):  # Fisher-Yates on random() only
        j = int(r.random() * (i + 1))
        order[i], order[j] = order[j], order[i]
    files = []
    for n, i in enumerate(order):
        files.append(("%sf%03d.bin" % (dirs[int(r.random() * len(dirs))], n), sizes[i]))
for name, size in files:
    print("%s\t%d" % (name, size))
EOF
  local ok=0
  if [[ -f $dir/md5 ]] && cmp -s "$dir/manifest" "$dir/manifest.new"; then
    ok=1
    while IFS=$'\t' read -r name size; do
      [[ $(stat -c %s "$dir/tree/$name" 2>/dev/null) == "$size" ]] || { ok=0; break; }
    done <"$dir/manifest"
  fi
  if (( ok )); then rm -f "$dir/manifest.new"; return 0; fi
  local total; total=$(awk -F'\t' '{ t += $2 } END { printf "%d", t }' "$dir/manifest.new")
  local avail; avail=$(df -B1 --output=avail "$W" | tail -1 | tr -d ' ')
  (( avail >= 5 * total + (1 << 30) )) || die "not enough disk in $W: $avail bytes free, need 5 x $total + 1 GiB"
  log "generating $kind (seed $SEED, $(wc -l <"$dir/manifest.new") files, $total bytes) in $dir"
  rm -rf "$dir/tree" "$dir/md5" "$dir/manifest"
  while IFS=$'\t' read -r name size; do
    mkdir -p "$dir/tree/$(dirname "$name")"
    { openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:haul-tree-$SEED-$name" -in /dev/zero 2>/dev/null || true; } |
      head -c "$size" >"$dir/tree/$name"
    [[ $(stat -c %s "$dir/tree/$name") == "$size" ]] || die "could not generate $dir/tree/$name (openssl?)"
  done <"$dir/manifest.new"
  chmod -R a+rX "$dir/tree"
  (cd "$dir/tree" && cut -f1 ../manifest.new | xargs -d '\n' md5sum) >"$dir/md5.tmp"
  mv "$dir/md5.tmp" "$dir/md5"
  mv "$dir/manifest.new" "$dir/manifest"
}

# ---------------------------------------------------------------- checks
# tree_root DEST: where the copied tree lies in DEST: DEST itself, or
# DEST/tree when a tool nested the source directory under its name.
tree_root() {
  if [[ -d $1/tree ]] && [[ $(find "$1" -mindepth 1 -maxdepth 1 | wc -l) == 1 ]]; then echo "$1/tree"; else echo "$1"; fi
}

# verify DEST: 0 when DEST holds exactly the source tree (names, sizes and,
# with BENCH_VERIFY=md5, contents); else the reason is in VERIFY_MSG.
verify() {
  local root; root=$(tree_root "$1")
  VERIFY_MSG=
  if ! diff -q <(sort "$SRCDIR/manifest") <(cd "$root" && find . -type f -printf '%P\t%s\n' | sort) >/dev/null; then
    local want got
    want=$(wc -l <"$SRCDIR/manifest"); got=$(find "$root" -type f | wc -l)
    VERIFY_MSG="names/sizes differ (files: want $want, got $got; e.g. $(diff <(sort "$SRCDIR/manifest") \
      <(cd "$root" && find . -type f -printf '%P\t%s\n' | sort) | grep '^[<>]' | head -2 | tr '\t\n' ': '))"
    return 1
  fi
  if [[ $VERIFY == md5 ]] && ! (cd "$root" && md5sum -c --quiet --strict "$SRCDIR/md5" >/dev/null 2>&1); then
    VERIFY_MSG="md5 differs: $(cd "$root" && md5sum -c --quiet "$SRCDIR/md5" 2>/dev/null | head -3 | tr '\n' ' ')"
    return 1
  fi
}

# snapshot DEST: one line per file (path, inode, size, mtime): a file whose
# line changes in a rerun was written again.
snapshot() { find "$1" -type f -printf '%P %i %s %T@\n' 2>/dev/null | sort; }

# count_log OP FILE: from the server's log lines of one run (FILE), print
# "logins other bytes". FTP (vsftpd): a session is the pid that answered
# "230 Login successful."; it is ours if one of its commands names RBASE
# (other = sessions of the window that did not: another user of the shared
# test bed, or an idle session of ours); bytes = file data of the uploads
# and downloads under RBASE. SFTP (sshd): every "Accepted password/publickey"
# line of the window, whoever logged in (one_run takes the bench's own
# connections from the wire counters instead when it has them).
count_log() {
  local op=$1 file=$2
  if [[ $(proto_of "$op") == ftp ]]; then
    awk -v tag="$RBASE" '
      match($0, /\[pid [0-9]+\]/) { pid = substr($0, RSTART + 5, RLENGTH - 6) }
      /"230 Login successful\./ { login[pid] = 1 }
      /FTP command:/ && index($0, tag) { ours[pid] = 1 }
      /(OK|FAIL) (UPLOAD|DOWNLOAD):/ && index($0, tag) && match($0, /", [0-9]+ bytes/) {
        bytes += substr($0, RSTART + 3, RLENGTH - 9) }
      END { for (p in login) if (p in ours) n++; else o++; printf "%d %d %.0f\n", n, o, bytes }' "$file"
  else
    awk -v user="$USER" '$0 ~ "Accepted (password|publickey) for " user " from" { n++ }
      END { printf "%d - -\n", n }' "$file"
  fi
}

# ---------------------------------------------------------------- runs
# dest_of OP TOOL: the directory a run of TOOL writes into: for a put the
# remote directory, seen on disk in the server's root (the tool is given its
# path under RBASE); for a get a local one.
dest_of() {
  if [[ $(dir_of "$1") == put ]]; then echo "$(remote_root "$1")/$RBASE/$SETNAME-up-$2"; else echo "$W/dl-$SETNAME-$1-$2"; fi
}

# run_tool OP TOOL DEST CACHE: one transfer of the tree, killed after
# RUN_TIMEOUT seconds; output on stdout/stderr.
run_tool() {
  local op=$1 tool=$2 dest=$3 cache=$4
  local proto dir; proto=$(proto_of "$op"); dir=$(dir_of "$op")
  local rdest=$RBASE/${dest##*/} rsrc=$RBASE/$SETNAME
  local tmo=(timeout -k 5 "$RUN_TIMEOUT")
  local meter=()
  # GNU time: peak RSS (KiB) and CPU seconds (user, sys) of the tool and the
  # children it waited for (lftp's ssh).
  [[ -n ${METER:-} ]] && meter=(/usr/bin/time -f '%M %U %S' -o "$METER")
  case $tool in
    rclone)
      local remote=htftp; [[ $proto == sftp ]] && remote=htsftp
      if [[ $dir == put ]]; then
        "${tmo[@]}" "${meter[@]}" rclone --config "$W/rclone.conf" copy --transfers "$PAR" "$SRCDIR/tree" "$remote:$rdest"
      else
        "${tmo[@]}" "${meter[@]}" rclone --config "$W/rclone.conf" copy --transfers "$PAR" "$remote:$rsrc" "$dest"
      fi ;;
    lftp)
      local open="open -u $USER,$PASSWORD -p $VSFTPD_PORT $HOST"
      [[ $proto == sftp ]] && open="open -u $USER,$PASSWORD -p $SSHD_PORT sftp://$HOST"
      if [[ $dir == put ]]; then
        "${tmo[@]}" "${meter[@]}" lftp -c "$LFTP_SET; $open; mirror -R --parallel=$PAR $SRCDIR/tree $rdest"
      else
        "${tmo[@]}" "${meter[@]}" lftp -c "$LFTP_SET; $open; mirror --parallel=$PAR $rsrc $dest"
      fi ;;
    haul)
      local args=(-r --parallel "$PAR" --json -q)
      # shellcheck disable=SC2206 # flags are words
      args+=($HAUL_FLAGS)
      [[ $proto == sftp ]] && args+=(--known-hosts "$KNOWN_HOSTS_FILE")
      if [[ $dir == put ]]; then
        HAUL_PASSWORD=$PASSWORD XDG_CACHE_HOME=$cache "${tmo[@]}" "${meter[@]}" "$HAUL" put "${args[@]}" "$SRCDIR/tree" "$(haul_url "$op" "$rdest")/"
      else
        HAUL_PASSWORD=$PASSWORD XDG_CACHE_HOME=$cache "${tmo[@]}" "${meter[@]}" "$HAUL" get "${args[@]}" "$(haul_url "$op" "$rsrc")/" "$dest/"
      fi ;;
  esac
}

# one_run KIND ROUND OP TOOL: KIND "run" starts from an empty destination,
# "rerun" runs again on the tree the tool's last run left. Appends to
# RUNS_TSV: set kind round op tool secs status note logins other bytes
# rewritten load1 rss_kib conns wire_up wire_down cpu_s (see count_log,
# net_read; rss and CPU from GNU time, "-" without it).
declare -A CACHE=()
one_run() {
  local kind=$1 round=$2 op=$3 tool=$4 rc=0 status=ok note=- rewritten=- rss=- cpu=-
  local dest; dest=$(dest_of "$op" "$tool")
  if [[ $kind == run ]]; then
    rm -rf "$dest"; mkdir -p "$dest"
    [[ $(dir_of "$op") == put ]] && chown "$USER:" "$(dirname "$dest")" "$dest"
    [[ -n ${CACHE[$op/$tool]:-} ]] && rm -rf "${CACHE[$op/$tool]}"
    CACHE[$op/$tool]=$(mktemp -d "$W/cache.XXXXXX")
  fi
  local cache=${CACHE[$op/$tool]}
  [[ $kind == rerun ]] && snapshot "$dest" >"$W/snap.before"
  local slog; slog=$(server_log "$op")
  local off; off=$(stat -c %s "$slog" 2>/dev/null || echo 0)
  METER=
  [[ -x /usr/bin/time ]] && METER=$W/time.out && rm -f "$METER"
  sync
  net_reset
  local load; load=$(cut -d' ' -f1 /proc/loadavg)
  local cpu0; cpu0=$(cg_cpu)
  local t0=$EPOCHREALTIME
  (
    if (( NET )); then echo "$BASHPID" >"$CG/cgroup.procs"; fi
    run_tool "$op" "$tool" "$dest" "$cache"
  ) >"$W/last.out" 2>&1 || rc=$?
  local t1=$EPOCHREALTIME
  local secs; secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  # sshd logs a connection's bytes when it closes, just after the client exits.
  sleep 0.5
  cg_kill
  local cpu1; cpu1=$(cg_cpu)
  tail -c "+$(( off + 1 ))" "$slog" >"$W/window.log" 2>/dev/null || : >"$W/window.log"
  local logins other bytes; read -r logins other bytes < <(count_log "$op" "$W/window.log")
  local fc fu fd sc su sd conns up down; read -r fc fu fd sc su sd < <(net_read)
  if [[ $(proto_of "$op") == ftp ]]; then
    conns=$fc up=$fu down=$fd
  else
    conns=$sc up=$su down=$sd
    if [[ $sc != - ]]; then # the bench's own SSH connections: one login each
      other=$(( logins > sc ? logins - sc : 0 )) logins=$sc
      if [[ $(dir_of "$op") == put ]]; then bytes=$su; else bytes=$sd; fi
    fi
  fi
  { echo "=== $SETNAME $kind round $round $op $tool rc=$rc ${secs}s"; cat "$W/last.out"; } >>"$RUNLOG"
  if [[ $kind == rerun ]]; then
    snapshot "$dest" >"$W/snap.after"
    rewritten=$(comm -13 "$W/snap.before" "$W/snap.after" | wc -l)
  fi
  if [[ -n $METER && -s $METER ]]; then
    local m; m=$(tail -1 "$METER")
    if [[ $m =~ ^([0-9]+)\ ([0-9.]+)\ ([0-9.]+)$ ]]; then
      rss=${BASH_REMATCH[1]} cpu=$(awk -v u="${BASH_REMATCH[2]}" -v s="${BASH_REMATCH[3]}" 'BEGIN { printf "%.2f", u + s }')
    fi
  fi
  # The cgroup's figure counts every process of the run: prefer it.
  if [[ $cpu0 != - && $cpu1 != - ]]; then cpu=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.2f", (b - a) / 1e6 }'); fi
  if (( rc == 124 || rc == 137 )); then status=fail note="timeout-${RUN_TIMEOUT}s"
  elif (( rc != 0 )); then status=fail note="exit-$rc"
  fi
  if ! verify "$dest"; then
    if [[ $status == ok ]]; then
      status=MISMATCH MISMATCH=1
      log "MISMATCH: $tool $op ($kind, round $round) exited 0 but the tree differs: $VERIFY_MSG"
    fi
    note="${note/#-/}${note:+ }${VERIFY_MSG// /_}"; note=${note# }
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$SETNAME" "$kind" "$round" "$op" "$tool" "$secs" "$status" \
    "${note:0:300}" "$logins" "$other" "$bytes" "$rewritten" "$load" "$rss" "$conns" "$up" "$down" "$cpu" >>"$RUNS_TSV"
  log "$(printf '%-4s %-5s r%-2s %-8s %-6s %7ss  %-8s logins %s%s  bytes %s%s%s' "$SETNAME" "$kind" "$round" "$op" "$tool" "$secs" "$status" \
    "$logins" "$([[ $other != - && $other != 0 ]] && echo " (+$other not ours)")" "$bytes${conns:+ conns $conns}" \
    "$([[ $rewritten != - ]] && echo "  rewritten $rewritten")" "$([[ $rss != - ]] && echo "  CPU ${cpu}s  peak RSS ${rss} KiB")")$([[ $note != - ]] && echo "  $note")"
}

# tools_for ROUND: the order of one round: haul between the peers, the
# peers' order reversed every other round.
tools_for() {
  local -a p; read -r -a p <<<"$PEERS"
  if (( $1 % 2 == 0 )); then local i j; for (( i = 0, j = ${#p[@]} - 1; i < j; i++, j-- )); do local t=${p[i]}; p[i]=${p[j]}; p[j]=$t; done; fi
  local out=() x
  for x in "${p[@]}"; do out+=("$x"); (( HAUL_BATCH )) && out+=(haul); done
  (( ${#out[@]} )) || { (( HAUL_BATCH )) && out=(haul); }
  echo "${out[*]}"
}

# stage_download_source OP: the source tree, hard-linked into the server's
# root (read-only for the test user: files 0644, dirs root's).
stage_download_source() {
  local root; root="$(remote_root "$1")/$RBASE"
  mkdir -p "$root"; chown "$USER:" "$root"
  [[ -d $root/$SETNAME ]] || cp -al "$SRCDIR/tree" "$root/$SETNAME" 2>/dev/null || cp -a "$SRCDIR/tree" "$root/$SETNAME"
}

bench_tree() {
  SETNAME=tree SRCDIR=$W/tree-s$SEED
  make_tree "$SRCDIR" tree
  local nfiles total; nfiles=$(wc -l <"$SRCDIR/manifest"); total=$(awk -F'\t' '{ t += $2 } END { printf "%d", t }' "$SRCDIR/manifest")
  local load0 started=$EPOCHSECONDS; load0=$(loadavg)
  log "tree: $nfiles files, $total bytes; $RUNS round(s); ops: $OPS; peers: $PEERS; load $load0"
  local op r tool
  for op in $OPS; do
    [[ $(dir_of "$op") == get ]] && stage_download_source "$op"
    for (( r = 1; r <= RUNS; r++ )); do
      for tool in $(tools_for "$r"); do one_run run "$r" "$op" "$tool"; done
    done
    # Reruns on the tree each tool's last run left (complete unless it failed).
    for (( r = 1; r <= RERUNS; r++ )); do
      for tool in $(tools_for "$r" | tr ' ' '\n' | awk '!seen[$0]++'); do one_run rerun "$r" "$op" "$tool"; done
    done
    for tool in $PEERS haul; do rm -rf "$(dest_of "$op" "$tool")"; done
  done
  local header
  header=$(printf 'haul tree bench %s  %s files, %s bytes, 3 levels, seed %s  parallel %s  rounds %s  verify %s  cores %s  wall %ss\nload average (1/5/15 min): %s -> %s\nhaul: %s%s\nservers: vsftpd %s:%s (FTP), OpenSSH sshd %s:%s (SFTP); peers: %s' \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$nfiles" "$total" "$SEED" "$PAR" "$RUNS" "$VERIFY" "$(nproc)" "$(( EPOCHSECONDS - started ))" \
    "$load0" "$(loadavg)" "$HAUL_DESC" "$( (( HAUL_BATCH )) || echo ' -- n/a (no batch mode in this build)')" \
    "$HOST" "$VSFTPD_PORT" "$HOST" "$SSHD_PORT" \
    "$(for p in $PEERS; do case $p in rclone) printf 'rclone %s copy --transfers %s; ' "$(rclone version 2>/dev/null | head -1 | cut -d' ' -f2)" "$PAR" ;;
      lftp) printf 'lftp %s mirror --parallel=%s; ' "$(lftp --version | head -1 | sed 's/.*Version \([^ ]*\).*/\1/')" "$PAR" ;; esac; done)")
  python3 "$REPO/bench/tree_table.py" tree "$RUNS_TSV" "$header" "$OPS" "$PEERS" "$HAUL_BATCH" "$PAR" | tee "$RESULTS_TREE"
  log "table in $RESULTS_TREE (raw runs $RUNS_TSV, tool output $RUNLOG)"
}

bench_rss() {
  SETNAME=rss SRCDIR=$W/rss-s$SEED
  make_tree "$SRCDIR" rss
  local load0 started=$EPOCHSECONDS; load0=$(loadavg)
  local tools="rclone haul"; (( HAUL_BATCH )) || tools=rclone
  command -v rclone >/dev/null || tools=${tools/rclone/}
  [[ -x /usr/bin/time ]] || die "the rss mode needs GNU time (/usr/bin/time)"
  log "rss: $RSS_FILES x $RSS_BYTES bytes, sftp-put, $RUNS round(s); load $load0"
  local r tool order
  for (( r = 1; r <= RUNS; r++ )); do
    order=$tools; (( r % 2 == 0 )) && order=$(echo "$tools" | tr ' ' '\n' | tac | tr '\n' ' ')
    for tool in $order; do one_run run "$r" sftp-put "$tool"; done
  done
  for tool in rclone haul; do rm -rf "$(dest_of sftp-put "$tool")"; done
  local header
  header=$(printf 'haul rss bench %s  %s files of %s bytes, sftp-put to OpenSSH %s:%s, parallel %s, rounds %s  cores %s  wall %ss\nload average (1/5/15 min): %s -> %s\nhaul: %s%s\npeak RSS: /usr/bin/time %%M (maximum resident set size) of the tool'"'"'s process' \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$RSS_FILES" "$RSS_BYTES" "$HOST" "$SSHD_PORT" "$PAR" "$RUNS" "$(nproc)" "$(( EPOCHSECONDS - started ))" \
    "$load0" "$(loadavg)" "$HAUL_DESC" "$( (( HAUL_BATCH )) || echo ' -- n/a (no batch mode in this build)')")
  python3 "$REPO/bench/tree_table.py" rss "$RUNS_TSV" "$header" "$RSS_TARGET" "$HAUL_BATCH" | tee "$RESULTS_RSS"
  log "table in $RESULTS_RSS (raw runs $RUNS_TSV, tool output $RUNLOG)"
}

RESULTS_TREE=${BENCH_RESULTS:-$REPO/bench/results/tree.txt}
RESULTS_RSS=${BENCH_RESULTS:-$REPO/bench/results/tree-rss.txt}
[[ $MODE == all && -n ${BENCH_RESULTS:-} ]] && die "BENCH_RESULTS names one table: set it for one mode at a time"
mkdir -p "$(dirname "$RESULTS_TREE")" "$(dirname "$RESULTS_RSS")"
: >"$RUNS_TSV"; : >"$RUNLOG"
net_setup
case $MODE in
  tree) bench_tree ;;
  rss) bench_rss ;;
  all) bench_tree; bench_rss ;;
esac
if (( MISMATCH )); then die "MISMATCH: a tool exited 0 with a tree that differs from the source (see above and $RUNLOG)"; fi
