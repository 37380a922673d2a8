#!/usr/bin/env bash
# Starts a local KayaDB cluster: nodes 1..CLUSTER_SIZE (default 3) on raft
# 127.0.0.1:7481-7483 and clients 127.0.0.1:7379-7381, data, pid and log files
# in CLUSTER_DIR (default ./cluster). Builds kayadb-server and kayactl first.
set -euo pipefail
source "$(dirname "$0")/cluster-common.sh"
mkdir -p "$CLUSTER_DIR"
build_binaries
for ((n = 1; n <= CLUSTER_SIZE; n++)); do
  start_node "$n"
done
wait_for_leader 20
echo "try: $BIN/kayactl --server $(all_clients) put hello world"
