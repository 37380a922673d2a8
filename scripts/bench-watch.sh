#!/usr/bin/env bash
# Watches on a 3-node KayaDB cluster on loopback, and etcd's `benchmark
# watch-latency` on a 3-node etcd 3.7 in the same run (when its binaries
# are in ANCHOR_BIN, default ~/.cache/kaya-anchors/bin, as
# ../shared/tools/etcd-anchor.sh builds them):
#   fan-out: WATCHERS (1000) watchers on one key, a writer at RATE (1000)
#     puts/s for TOTAL (10000) puts: event latency from the put's
#     acknowledgement to the event at each watcher (etcd's definition),
#     and the servers' CPU seconds during the run;
#   writes: 16 writers for 8 s with 1000 idle watchers open, and with none,
#     IDLE_ROUNDS (5) alternating pairs, and the ratio of the medians.
#   BENCH_DIR=DIR scripts/bench-watch.sh   (default: a fresh temp dir)
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
D="${BENCH_DIR:-$(mktemp -d)}"
WATCHERS=${WATCHERS:-1000} RATE=${RATE:-1000} TOTAL=${TOTAL:-10000} IDLE_ROUNDS=${IDLE_ROUNDS:-5}
mkdir -p "$D/bin"
(cd "$REPO_ROOT" && go build -o "$D/bin/" ./cmd/kayadb-server ./cmd/kayactl)
(cd "$REPO_ROOT/bench" && go build -o "$D/bin/" ./cmd/kaya-watch-bench)
cpu() { # total user+system seconds of the pids
  local t=0; for p in "$@"; do t=$(( t + $(awk '{print $14+$15}' /proc/$p/stat) )); done
  echo "scale=2; $t / $(getconf CLK_TCK)" | bc
}
peers=()
for i in 1 2 3; do peers+=(--peer "$i=127.0.0.1:$((17480 + i)),127.0.0.1:$((17378 + i))"); done
pids=()
for i in 1 2 3; do
  "$D/bin/kayadb-server" --node-id $i --data "$D/n$i" --raft-addr 127.0.0.1:$((17480 + i)) \
    --client-addr 127.0.0.1:$((17378 + i)) --metrics-addr 127.0.0.1:$((19089 + i)) "${peers[@]}" \
    --max-client-connections 8192 --log-level warn >"$D/n$i.log" 2>&1 &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; [ -n "${BENCH_DIR:-}" ] || rm -rf "$D"' EXIT
S=127.0.0.1:17379,127.0.0.1:17380,127.0.0.1:17381
for _ in $(seq 100); do
  "$D/bin/kayactl" --server $S --timeout 300ms health 2>/dev/null | grep -q leader && break
  sleep 0.1
done
LEAD=$("$D/bin/kayactl" --server $S --json status --cluster | python3 -c 'import json,sys; v=json.load(sys.stdin); print([n["client_addr"] for n in v["nodes"] if n.get("role")=="leader"][0])' 2>/dev/null || echo $S)
c0=$(cpu "${pids[@]}")
"$D/bin/kaya-watch-bench" --server "$LEAD" --mode latency --watchers $WATCHERS --rate $RATE --total $TOTAL
c1=$(cpu "${pids[@]}")
echo "kaya servers' CPU during the fan-out: $(echo "$c1 - $c0" | bc) s"
# Idle watchers: IDLE_ROUNDS alternating pairs, then the medians.
: > "$D/idle.txt"
for r in $(seq "$IDLE_ROUNDS"); do
  for w in 0 1000; do
    "$D/bin/kaya-watch-bench" --server "$LEAD" --mode writes --watchers $w --clients 16 --duration 8s | tee -a "$D/idle.txt"
  done
done
python3 - "$D/idle.txt" <<'PY'
import re, statistics, sys
runs = {0: [], 1000: []}
for line in open(sys.argv[1]):
    m = re.search(r"idle-watchers=(\d+) .*?: (\d+) puts/s", line)
    if m:
        runs[int(m.group(1))].append(int(m.group(2)))
z, w = statistics.median(runs[0]), statistics.median(runs[1000])
print("kaya writes, median of %d rounds: %d puts/s without watchers, %d with 1000 idle watchers: %.2fx" % (len(runs[0]), z, w, w / z))
PY
kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true

BIN=${ANCHOR_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/kaya-anchors/bin}
[ -x "$BIN/benchmark" ] || { echo "no etcd benchmark in $BIN: run ../shared/tools/etcd-anchor.sh once"; exit 0; }
cluster="e1=http://127.0.0.1:12380,e2=http://127.0.0.1:22380,e3=http://127.0.0.1:32380"
epids=()
for i in 1 2 3; do
  "$BIN/etcd" --name e$i --data-dir "$D/e$i" \
    --listen-client-urls http://127.0.0.1:${i}2379 --advertise-client-urls http://127.0.0.1:${i}2379 \
    --listen-peer-urls http://127.0.0.1:${i}2380 --initial-advertise-peer-urls http://127.0.0.1:${i}2380 \
    --initial-cluster "$cluster" --initial-cluster-state new --log-level error >"$D/e$i.log" 2>&1 &
  epids+=($!)
done
trap 'kill "${epids[@]}" 2>/dev/null; wait 2>/dev/null; [ -n "${BENCH_DIR:-}" ] || rm -rf "$D"' EXIT
EP=http://127.0.0.1:12379,http://127.0.0.1:22379,http://127.0.0.1:32379
for _ in $(seq 60); do "$BIN/etcdctl" --endpoints=$EP endpoint health >/dev/null 2>&1 && break; sleep 0.5; done
ELEAD=$("$BIN/etcdctl" --endpoints=$EP endpoint status -w json | python3 -c 'import json,sys; s=json.load(sys.stdin); print([e["Endpoint"] for e in s if e["Status"]["leader"]==e["Status"]["header"]["member_id"]][0])')
c0=$(cpu "${epids[@]}")
"$BIN/benchmark" --endpoints=$ELEAD --conns 16 --clients 16 watch-latency --streams $(( WATCHERS / 10 )) --watchers-per-stream 10 \
  --put-rate $RATE --put-total $TOTAL --key-size 15 --val-size 32 2>/dev/null | grep -E "summary|Requests/sec|Average|99%|Slowest" | tr -s ' \t' ' '
c1=$(cpu "${epids[@]}")
echo "etcd servers' CPU during the fan-out: $(echo "$c1 - $c0" | bc) s"
