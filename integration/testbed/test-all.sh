#!/usr/bin/env bash
# test-all.sh: the one test command behind `make test`.
#
#   1. install.sh  (skipped with a message when not root or without apt-get,
#                   unless CI=true, where that is an error)
#   2. up.sh       (starts the real servers; stopped again by down.sh on exit,
#                   also on failure, unless they were already running before)
#   3. gofmt, go vet, go test -race over every package.
#
# Outside CI, integration tests skip with a message when no test bed runs;
# with CI=true they fail instead (testbed.Require).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
TB=integration/testbed
GO=${GO:-go}
GOTESTFLAGS=${GOTESTFLAGS:--race -count=1 -timeout 20m}
ci=${CI:-false}
# The Go tests read the env file that up.sh writes (same default rule).
export HAUL_TESTBED_ENV="${HAUL_TESTBED_ENV:-${HAUL_TESTBED_STATE:-/tmp/haul-testbed}/env}"

say() { printf '==> %s\n' "$*" >&2; }

can_start=1
if [[ $(id -u) -ne 0 ]]; then
  can_start=0; why="not running as root"
elif ! command -v apt-get >/dev/null 2>&1; then
  can_start=0; why="apt-get not found"
fi

started=0
cleanup() {
  local rc=$?
  if [[ $started -eq 1 ]]; then
    say "stopping the test bed"
    "$TB/down.sh" || true
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $can_start -eq 1 ]]; then
  say "installing servers (integration/testbed/install.sh)"
  "$TB/install.sh"
  if "$TB/status.sh" >/dev/null 2>&1; then
    say "test bed already running: using it and leaving it running"
  elif [[ -f $HAUL_TESTBED_ENV ]]; then
    # Started by an older up.sh (servers added since are missing) or with a
    # server that died: up.sh starts only what is not running. The bed was
    # there before, so it is left running.
    say "test bed running but incomplete: starting the missing servers (up.sh), leaving it running"
    "$TB/up.sh"
  else
    say "starting the test bed (integration/testbed/up.sh)"
    started=1
    "$TB/up.sh"
  fi
else
  if [[ $ci == true ]]; then
    say "CI=true but cannot start the test bed: $why"; exit 1
  fi
  say "SKIPPING test bed start ($why): integration tests will skip unless HAUL_TESTBED_ENV points at running servers"
fi

say "gofmt"
unformatted=$(gofmt -l .)
if [[ -n $unformatted ]]; then
  say "gofmt needed on:"; echo "$unformatted" >&2; exit 1
fi
say "go vet ./..."
$GO vet ./...
say "go test $GOTESTFLAGS ./..."
# shellcheck disable=SC2086
$GO test $GOTESTFLAGS ./...
say "all tests passed"
