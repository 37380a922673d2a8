#!/usr/bin/env bash
# Usage: restart-node.sh N — starts node N again with its data directory
# (stopping it first with SIGTERM if it is running).
set -euo pipefail
source "$(dirname "$0")/cluster-common.sh"
n="${1:?usage: restart-node.sh N}"
stop_node "$n" >/dev/null
[ -x "$BIN/kayadb-server" ] || build_binaries
start_node "$n"
