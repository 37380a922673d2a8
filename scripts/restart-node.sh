#!/usr/bin/env bash
# Usage: restart-node.sh N — starts node N again with its data directory
# (stopping it first with SIGTERM if it is running).
set -euo pipefail
source "$(dirname "$0")/cluster-common.sh"
n="${1:?usage: restart-node.sh N}"
if node_running "$n"; then
  pid="$(node_pid "$n")"
  kill -TERM "$pid"
  for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
[ -x "$BIN/kayadb-server" ] || build_binaries
start_node "$n"
