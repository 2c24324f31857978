#!/usr/bin/env bash
# docker-entrypoint.sh: container entry point for docker-compose.yml. Starts
# the test bed with up.sh (same configs as the native run), then stays up
# until the container is stopped (SIGTERM), when down.sh stops the servers
# and unmounts the full tmpfs mounts. When up.sh fails, down.sh runs at once
# too: the tmpfs mounts up.sh made reach the host through the shared bind
# mount of the state dir, and must not outlive the container.
set -uo pipefail
TB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
down() { "$TB/down.sh" || true; }
stop() { down; exit 0; }
trap stop TERM INT
if ! "$TB/up.sh"; then
  echo "docker-entrypoint.sh: up.sh failed; stopping what it started" >&2
  down
  exit 1
fi
sleep infinity &
wait $!
