#!/usr/bin/env bash
# Stops every node of the local cluster in CLUSTER_DIR (SIGTERM, then waits;
# SIGKILL after 20 s).
set -euo pipefail
source "$(dirname "$0")/cluster-common.sh"
for ((n = 1; n <= CLUSTER_SIZE; n++)); do
  if node_running "$n"; then
    pid="$(node_pid "$n")"
    kill -TERM "$pid"
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "node $n did not stop in 20s; killing it" >&2
      kill -KILL "$pid" || true
    fi
    echo "node $n stopped"
  fi
  rm -f "$CLUSTER_DIR/node-$n.pid"
done
