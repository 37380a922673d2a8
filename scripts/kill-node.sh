#!/usr/bin/env bash
# Usage: kill-node.sh N — kills node N of the local cluster with SIGKILL (a
# crash: no shutdown, unsynced data lost as on a power cut of the process).
set -euo pipefail
source "$(dirname "$0")/cluster-common.sh"
n="${1:?usage: kill-node.sh N}"
if ! node_running "$n"; then
  echo "node $n is not running" >&2
  exit 1
fi
kill -KILL "$(node_pid "$n")"
rm -f "$CLUSTER_DIR/node-$n.pid"
echo "node $n killed"
