#!/usr/bin/env bash
# Usage: stop-node.sh N — stops node N cleanly (SIGTERM; SIGKILL after 20 s).
# Its data directory stays; restart-node.sh N starts it again.
set -euo pipefail
source "$(dirname "$0")/cluster-common.sh"
n="${1:?usage: stop-node.sh N}"
stop_node "$n"
