#!/usr/bin/env bash
# status.sh: exit 0 when every test bed server started by up.sh is running and
# the env file exists; print one line per server. Needs no root.
set -uo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ok=0
for name in "${TB_SERVERS[@]}"; do
  if tb_alive "$name"; then
    echo "$name: running (pid $(tb_pid "$name"))"
  else
    echo "$name: not running"; ok=1
  fi
done
if [[ -f $HAUL_TESTBED_ENV ]]; then echo "env: $HAUL_TESTBED_ENV"; else echo "env: $HAUL_TESTBED_ENV missing"; ok=1; fi
exit $ok
