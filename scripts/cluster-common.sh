# Shared settings of the cluster scripts; sourced, not run.
# CLUSTER_DIR holds bin/, node-N/ data directories, node-N.pid and node-N.log.
CLUSTER_DIR="${CLUSTER_DIR:-./cluster}"
CLUSTER_SIZE="${CLUSTER_SIZE:-3}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$CLUSTER_DIR/bin"

# Node N listens for raft on RAFT_PORT_BASE+N, for clients on
# CLIENT_PORT_BASE+N and serves /metrics and health checks over HTTP on
# METRICS_PORT_BASE+N (defaults: 7481.., 7379.. and 9090..; the metrics
# base follows a moved client base).
RAFT_PORT_BASE="${RAFT_PORT_BASE:-7480}"
CLIENT_PORT_BASE="${CLIENT_PORT_BASE:-7378}"
METRICS_PORT_BASE="${METRICS_PORT_BASE:-$((CLIENT_PORT_BASE + 1711))}"
raft_addr()    { echo "127.0.0.1:$((RAFT_PORT_BASE + $1))"; }
client_addr()  { echo "127.0.0.1:$((CLIENT_PORT_BASE + $1))"; }
metrics_addr() { echo "127.0.0.1:$((METRICS_PORT_BASE + $1))"; }
all_clients() {
  local i out=""
  for ((i = 1; i <= CLUSTER_SIZE; i++)); do out+="${out:+,}$(client_addr "$i")"; done
  echo "$out"
}

peer_flags() {
  local i flags=()
  for ((i = 1; i <= CLUSTER_SIZE; i++)); do
    flags+=(--peer "$i=$(raft_addr "$i"),$(client_addr "$i")")
  done
  echo "${flags[@]}"
}

build_binaries() {
  mkdir -p "$BIN"
  (cd "$REPO_ROOT" && go build -o "$BIN/" ./cmd/kayadb-server ./cmd/kayactl)
}

node_pid() { cat "$CLUSTER_DIR/node-$1.pid" 2>/dev/null; }

node_running() {
  local pid
  pid="$(node_pid "$1")" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# start_node N [extra kayadb-server flags...]
start_node() {
  local n="$1"
  shift
  if node_running "$n"; then
    echo "node $n is already running (pid $(node_pid "$n"))"
    return 0
  fi
  # shellcheck disable=SC2046
  nohup "$BIN/kayadb-server" --node-id "$n" --data "$CLUSTER_DIR/node-$n" \
    --raft-addr "$(raft_addr "$n")" --client-addr "$(client_addr "$n")" --metrics-addr "$(metrics_addr "$n")" $(peer_flags) "$@" \
    >>"$CLUSTER_DIR/node-$n.log" 2>&1 &
  echo $! >"$CLUSTER_DIR/node-$n.pid"
  echo "node $n: pid $!, clients on $(client_addr "$n"), raft on $(raft_addr "$n"), log $CLUSTER_DIR/node-$n.log"
}

wait_for_leader() {
  local deadline=$((SECONDS + ${1:-15})) i
  while ((SECONDS < deadline)); do
    for ((i = 1; i <= CLUSTER_SIZE; i++)); do
      if "$BIN/kayactl" --server "$(client_addr "$i")" --timeout 500ms health 2>/dev/null | grep -q leader; then
        echo "leader: node $i ($(client_addr "$i"))"
        return 0
      fi
    done
    sleep 0.2
  done
  echo "no leader elected within ${1:-15}s; see $CLUSTER_DIR/node-*.log" >&2
  return 1
}

# wait_for_node N [seconds]: until node N answers HEALTH.
wait_for_node() {
  local deadline=$((SECONDS + ${2:-15}))
  while ((SECONDS < deadline)); do
    if "$BIN/kayactl" --server "$(client_addr "$1")" --timeout 500ms health >/dev/null 2>&1; then
      return 0
    fi
    if ! node_running "$1"; then
      echo "node $1 exited; see $CLUSTER_DIR/node-$1.log" >&2
      tail -5 "$CLUSTER_DIR/node-$1.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
  echo "node $1 did not answer within ${2:-15}s; see $CLUSTER_DIR/node-$1.log" >&2
  return 1
}

# stop_node N: SIGTERM, wait up to 20 s, then SIGKILL.
stop_node() {
  local n="$1" pid
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
}

# node_ids: every node with a pid file or a data directory in CLUSTER_DIR.
node_ids() {
  local f ids=()
  for f in "$CLUSTER_DIR"/node-*.pid "$CLUSTER_DIR"/node-*/; do
    [ -e "$f" ] || continue
    f="${f%/}"
    f="${f##*/node-}"
    ids+=("${f%.pid}")
  done
  printf '%s\n' "${ids[@]}" | sort -nu
}
