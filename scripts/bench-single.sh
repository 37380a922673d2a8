#!/usr/bin/env bash
# Measures one KayaDB node (its own quorum: every put is one raft-log fsync)
# against one durable Redis (appendfsync always) with identical parameters:
# 256-byte values, 1 and 64 clients, put (SET) and get (GET), and prints the
# same-run ratio of each row. Redis runs through ../shared/tools/redis-anchor.sh's
# settings when redis-server is installed (apt-get install -y redis-server
# redis-tools); without it only KayaDB's lines are printed.
#   BENCH_DIR=DIR scripts/bench-single.sh     (default: a fresh temp dir)
#   BENCH_RUNS=N                              repeat the pair N times, interleaved (default 1)
#   KAYA_FLAGS="--read-mode lease"            extra server flags
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
D="${BENCH_DIR:-$(mktemp -d)}"
RUNS="${BENCH_RUNS:-1}"
mkdir -p "$D/bin"
(cd "$REPO_ROOT" && go build -o "$D/bin/" ./cmd/kayadb-server ./cmd/kayactl)
KPORT=17399 RPORT=16391
pids=()
cleanup() {
  [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  if command -v redis-cli >/dev/null; then redis-cli -p $RPORT shutdown nosave >/dev/null 2>&1 || true; fi
  [ -n "${BENCH_DIR:-}" ] || rm -rf "$D"
}
trap cleanup EXIT

# The request counts of redis-anchor.sh: 5,000 with one client, 100,000 with 64.
total() { if [ "$1" = 1 ]; then echo 5000; else echo 100000; fi; }

kaya() { # op clients -> "req/s p99_ms"
  local op=$1 c=$2 conns extra=()
  conns=$(( c < 16 ? c : 16 ))
  # get reads one of 100,000 keys loaded first (untimed), as redis-benchmark -r 100000 does.
  [ "$op" = get ] && extra=(--key-space 100000) || extra=(--key-space 100000000)
  "$D/bin/kayactl" --server 127.0.0.1:$KPORT --json bench "$op" --clients "$c" --conns "$conns" \
    --key-size 8 --val-size 256 "${extra[@]}" --total "$(total "$c")" 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f %.3f" % (r["requests_per_second"], r["p99_ms"]))' 2>/dev/null ||
    echo "0 0"
}

redis() { # op clients -> "req/s p99_ms"
  redis-benchmark -p $RPORT -t "$1" -n "$(total "$2")" -c "$2" -d 256 -r 100000 2>&1 | tr '\r' '\n' |
    awk '/throughput summary/{t=$3} /avg +min/{getline; p99=$5} END{printf "%s %s\n", t, p99}'
}

"$D/bin/kayadb-server" --node-id 1 --data "$D/n1" --raft-addr 127.0.0.1:17499 \
  --client-addr 127.0.0.1:$KPORT --metrics-addr 127.0.0.1:19199 --peer "1=127.0.0.1:17499,127.0.0.1:$KPORT" \
  --log-level warn ${KAYA_FLAGS:-} >"$D/n1.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  "$D/bin/kayactl" --server 127.0.0.1:$KPORT --timeout 300ms health 2>/dev/null | grep -q leader && break
  sleep 0.1
done
have_redis=0
if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
  redis-server --port $RPORT --bind 127.0.0.1 --dir "$D" --appendonly yes --appendfsync always --save "" \
    --daemonize yes --pidfile "$D/redis.pid" >/dev/null
  for _ in $(seq 50); do redis-cli -p $RPORT ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  have_redis=1
fi

printf '%-18s %-4s %12s %9s %12s %9s %7s\n' workload run kaya_req/s p99_ms redis_req/s p99_ms ratio
for run in $(seq "$RUNS"); do
  for op in put get; do
    for c in 1 64; do
      rop=$([ $op = put ] && echo set || echo get)
      if [ $have_redis = 1 ]; then
        # Interleaved: the anchor, then KayaDB, on the same workload.
        read -r rt rp <<<"$(redis $rop $c)"
      else
        rt=0 rp=-
      fi
      read -r kt kp <<<"$(kaya $op $c)"
      ratio=$(python3 -c "r=float('$rt' or 0); print('%.2fx' % (float('$kt')/r) if r else '-')")
      printf '%-18s %-4s %12s %9s %12s %9s %7s\n' "$op clients=$c" "$run" "$kt" "$kp" "$rt" "$rp" "$ratio"
    done
  done
done
