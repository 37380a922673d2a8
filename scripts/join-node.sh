#!/usr/bin/env bash
# Usage: join-node.sh N — starts a new node N (raft on RAFT_PORT_BASE+N,
# clients on CLIENT_PORT_BASE+N, data in CLUSTER_DIR/node-N) in join mode:
# it contacts nobody and waits for the leader, so first add it with
#   kayactl add-node N <raft addr> <client addr> [--learner]
# Its --peer list is the cluster's first CLUSTER_SIZE members; after the
# first start the node keeps its roster in its data directory, and
# restart-node.sh N restarts it like any other node.
set -euo pipefail
source "$(dirname "$0")/cluster-common.sh"
n="${1:?usage: join-node.sh N}"
if [ -e "$CLUSTER_DIR/node-$n/cluster-roster.json" ]; then
  echo "node $n already has a data directory ($CLUSTER_DIR/node-$n); use restart-node.sh $n, or remove the directory for a fresh node (with a new id)" >&2
  exit 1
fi
mkdir -p "$CLUSTER_DIR"
[ -x "$BIN/kayadb-server" ] || build_binaries
start_node "$n" --join
wait_for_node "$n" 20
echo "node $n is up and waiting for the leader; kayactl status shows it catch up"
