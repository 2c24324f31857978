#!/usr/bin/env bash
# docker-entrypoint.sh: container entry point for docker-compose.yml. Starts
# the test bed with up.sh (same configs as the native run), then stays up
# until the container is stopped, when down.sh stops the servers.
set -euo pipefail
TB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$TB/up.sh"
stop() { "$TB/down.sh" || true; exit 0; }
trap stop TERM INT
sleep infinity &
wait $!
