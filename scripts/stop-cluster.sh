#!/usr/bin/env bash
# Stops every node of the local cluster in CLUSTER_DIR, including nodes added
# later with join-node.sh (SIGTERM, then waits; SIGKILL after 20 s).
set -euo pipefail
source "$(dirname "$0")/cluster-common.sh"
for n in $(node_ids); do
  stop_node "$n"
done
