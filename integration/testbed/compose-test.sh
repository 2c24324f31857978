#!/usr/bin/env bash
# compose-test.sh (`make compose-test`): run the integration tests against
# the test bed of docker-compose.yml, from a clean machine state.
#
#  1. Installs what is missing (Debian: docker.io, docker-compose,
#     debootstrap) and starts dockerd if it does not answer (it is left
#     running afterwards).
#  2. Builds the Dockerfile's base image (FROM, debian:12) locally when the
#     engine lacks it: debootstrap --variant=minbase + docker import (no image
#     registry needed). The image stays, so later runs skip this; so does
#     the test bed image (haul-testbed:local, rebuilt from the layer cache).
#  3. Makes the state dir a shared bind mount, brings the test bed up with
#     Compose v2 (`docker compose`) when present, else docker-compose
#     (1.29.2 on Debian 12), on $HAUL_COMPOSE_HOST (default 127.0.0.20, so
#     that it runs beside a native test bed on 127.0.0.1), and waits for its
#     env file.
#  4. Runs `go test -race` with CI=true against it (a missing server is a
#     failure): by default a subset of ./integration/ (DEFAULT_RUN below:
#     what the container could break, in about a minute and a half);
#     HAUL_COMPOSE_RUN=<regexp> picks others, HAUL_COMPOSE_RUN=. all.
#  5. Always (trap, also on failure or ^C): brings the test bed down and
#     removes the container, unmounts whatever is left under the state dir
#     and the bind mount itself, removes the state dir, and fails if a
#     container, mount or server process of this test bed is left.
#
# Needs root. Environment: HAUL_COMPOSE_STATE (state dir, default
# /tmp/haul-compose-testbed), HAUL_COMPOSE_HOST, HAUL_COMPOSE_PROJECT
# (compose project name, default haul-compose-test), HAUL_COMPOSE_RUN,
# HAUL_COMPOSE_PKGS (extra go test packages), HAUL_DEBIAN_MIRROR, GO.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
GO="${GO:-go}"
STATE="${HAUL_COMPOSE_STATE:-/tmp/haul-compose-testbed}"
HOST="${HAUL_COMPOSE_HOST:-127.0.0.20}"
PROJECT="${HAUL_COMPOSE_PROJECT:-haul-compose-test}"
MIRROR="${HAUL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# What the container changes, cheaply: the smoke tests (vsftpd plain and
# FTPS, proftpd FTP and SFTP, pure-ftpd, OpenSSH each move a file: the
# image's packages and libraries work), the test bed's own tests of what
# crosses the container's edge (the full tmpfs seen from the host, sessions
# killed by host pid, sockets destroyed, logs), a disk that fills during an
# SFTP upload, and resumed transfers through the fault proxy over FTP and
# SFTP. The whole suite already ran natively in `make test`;
# HAUL_COMPOSE_RUN=. runs all of it here (with HAUL_COMPOSE_TESTFLAGS=
# -timeout=30m: on a busy 2-core machine it outlasts go test's default 10).
DEFAULT_RUN='^(TestSmoke.*|TestBedDiskFull|TestBedKillSessionProcess|TestBedSocketDestroyed|TestBedLoginLog|TestProtocolFTPResumeRoundTrip|TestFaultFTPResetAbortsRetr|TestFaultSFTPCloseBreaksSession|TestDiskFillsDuringSFTPUpload)$'
RUN_TESTS="${HAUL_COMPOSE_RUN:-$DEFAULT_RUN}"
DOCKERFILE=docker/testbed.Dockerfile
BASE_IMAGE=$(awk 'toupper($1) == "FROM" { print $2; exit }' "$DOCKERFILE")

log() { printf 'compose-test.sh: %s\n' "$*" >&2; }
t0=$SECONDS
elapsed() { echo "$((SECONDS - t0))s"; }

if [[ $(id -u) -ne 0 ]]; then log "must run as root"; exit 1; fi
if [[ -z $BASE_IMAGE ]]; then log "no FROM in $DOCKERFILE"; exit 1; fi
if [[ $STATE == /tmp/haul-testbed || $STATE == /tmp/haul-testbed/* ]]; then
  log "HAUL_COMPOSE_STATE must not be the native test bed's state dir"; exit 1
fi

# ---- 1. tools ------------------------------------------------------------------
need=()
command -v docker >/dev/null 2>&1 || need+=(docker.io)
[[ -x /usr/sbin/dockerd ]] || command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
COMPOSE=()
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE=(docker-compose)
else
  need+=(docker-compose)
fi
if [[ ${#need[@]} -gt 0 ]]; then
  log "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${need[@]}" >/dev/null || { apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; }
  if [[ ${#COMPOSE[@]} -eq 0 ]]; then COMPOSE=(docker-compose); fi
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/haul-dockerd.log; left running)"
  # Not the init script: its `ulimit -n 1048576` fails where the hard limit
  # is lower.
  setsid "$(command -v dockerd || echo /usr/sbin/dockerd)" </dev/null >>/var/log/haul-dockerd.log 2>&1 &
  for ((i = 0; i < 60; i++)); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /var/log/haul-dockerd.log"; exit 1; }
fi
log "docker $(docker version --format '{{.Server.Version}}' 2>/dev/null), $("${COMPOSE[@]}" version 2>/dev/null | head -n1)"

# ---- 2. base image ---------------------------------------------------------------
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  case $BASE_IMAGE in
    debian:12 | debian:bookworm) suite=bookworm ;;
    *) log "do not know how to build $BASE_IMAGE with debootstrap"; exit 1 ;;
  esac
  log "building $BASE_IMAGE: debootstrap --variant=minbase $suite ($MIRROR) + docker import"
  rootfs=$(mktemp -d /var/tmp/haul-debootstrap.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase "$suite" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 ||
    { tail -n 20 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
  rm -f "$rootfs.log"
  # What the official image leaves out: package lists, apt caches.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | docker import -c 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  log "$BASE_IMAGE imported ($(elapsed))"
fi

# ---- 3. up -----------------------------------------------------------------------
export HAUL_TESTBED_STATE="$STATE" HAUL_TESTBED_HOST="$HOST" HAUL_TESTBED_KEEP_STATE=1
# The data roots are shared with the tests, which give files to the test
# user by name: the container's user gets this machine's ids. A machine
# without that user (make test's up.sh creates it) gets it, without a shell
# or home, as up.sh would.
tuser="${HAUL_TESTBED_USER:-haultest}"
if ! id "$tuser" >/dev/null 2>&1; then
  log "creating user $tuser (no login) for the ids of the test bed's files"
  useradd -M -d /nonexistent -s /usr/sbin/nologin "$tuser"
fi
HAUL_TESTBED_UID=$(id -u "$tuser")
HAUL_TESTBED_GID=$(id -g "$tuser")
export HAUL_TESTBED_UID HAUL_TESTBED_GID
compose() { "${COMPOSE[@]}" -p "$PROJECT" -f "$REPO/docker-compose.yml" "$@"; }

# Mounts at or under $STATE, deepest first.
mounts_under() {
  awk -v s="$STATE" '$2 == s || index($2, s "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}
# Live processes whose command line names the state dir (the servers' configs).
procs_under() {
  local p
  for p in /proc/[0-9]*; do
    [[ $p == "/proc/$$" || $p == "/proc/$BASHPID" ]] && continue
    if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF "$STATE/"; then
      echo "${p#/proc/}: $(tr '\0' ' ' 2>/dev/null <"$p/cmdline" | cut -c1-120)"
    fi
  done
}

cleanup() {
  local rc=$? left=0
  trap - EXIT INT TERM
  set +e
  if [[ $rc -ne 0 && -d $STATE/log ]]; then
    log "failed (exit $rc): container log and server logs follow"
    compose logs --no-color --tail=50 >&2 2>/dev/null
    for f in "$STATE"/log/*; do
      [[ -s $f ]] || continue
      echo "--- $f (last 20 lines)" >&2; tail -n 20 "$f" >&2
    done
  fi
  log "bringing the test bed down"
  compose down --remove-orphans --volumes -t 30 >/dev/null 2>&1 || compose down -t 30
  # Whatever the container could not clean up (killed before its down.sh ran).
  local m
  for m in $(mounts_under); do umount "$m" 2>/dev/null || umount -l "$m"; done
  if [[ -n $(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT") ]]; then
    log "containers left:"; docker ps -a --filter "label=com.docker.compose.project=$PROJECT" >&2; left=1
  fi
  if [[ -n $(mounts_under) ]]; then log "mounts left: $(mounts_under | tr '\n' ' ')"; left=1; fi
  local procs
  procs=$(procs_under)
  if [[ -n $procs ]]; then log "processes left:"; echo "$procs" >&2; left=1; fi
  if [[ $left -eq 0 ]]; then rm -rf "$STATE"; fi
  if [[ $rc -eq 0 && $left -ne 0 ]]; then rc=1; fi
  log "done in $(elapsed): $([[ $rc -eq 0 ]] && echo ok || echo FAILED)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A state dir from an interrupted earlier run: clear it (nothing may be
# mounted there any more once that run's container is gone).
compose down --remove-orphans -t 30 >/dev/null 2>&1 || true
for m in $(mounts_under); do umount "$m" 2>/dev/null || umount -l "$m"; done
rm -rf "$STATE"
mkdir -p "$STATE"
mount --bind "$STATE" "$STATE"
mount --make-shared "$STATE"

log "building the test bed image and starting it on $HOST (state $STATE)"
compose build -q >/dev/null 2>&1 || compose build
log "image ready ($(elapsed))"
compose up -d
cid=$(compose ps -q testbed)
for ((i = 0; i < 240; i++)); do
  [[ -f $STATE/env ]] && break
  if [[ $(docker inspect -f '{{.State.Running}}' "$cid" 2>/dev/null) != true ]]; then
    log "the test bed container stopped"; exit 1
  fi
  sleep 0.5
done
if [[ ! -f $STATE/env ]]; then log "no env file after 120 s"; exit 1; fi
log "test bed up ($(elapsed))"

# ---- 4. tests --------------------------------------------------------------------
export HAUL_TESTBED_ENV="$STATE/env" CI=true
# shellcheck disable=SC2086
"$GO" test -race -count=1 ${HAUL_COMPOSE_TESTFLAGS:-} -run "$RUN_TESTS" ./integration/ ${HAUL_COMPOSE_PKGS:-}
log "tests passed ($(elapsed))"
