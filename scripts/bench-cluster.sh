#!/usr/bin/env bash
# Measures a 3-node KayaDB cluster on loopback with the workloads of
# ../shared/tools/etcd-anchor.sh (etcd's benchmark tool, same parameters):
# put with 1, 64 and 256 clients (8-byte sequential keys, 256-byte values,
# durable: fsync on a majority) and linearizable get of one key with 1 and
# 256 clients. Prints one line per workload.
#   BENCH_DIR=DIR scripts/bench-cluster.sh   (default: a fresh temp dir)
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
D="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$D/bin"
(cd "$REPO_ROOT" && go build -o "$D/bin/" ./cmd/kayadb-server ./cmd/kayactl)
peers=()
for i in 1 2 3; do peers+=(--peer "$i=127.0.0.1:$((17480 + i)),127.0.0.1:$((17378 + i))"); done
pids=()
for i in 1 2 3; do
  "$D/bin/kayadb-server" --node-id $i --data "$D/n$i" --raft-addr 127.0.0.1:$((17480 + i)) \
    --client-addr 127.0.0.1:$((17378 + i)) --metrics-addr 127.0.0.1:$((19089 + i)) "${peers[@]}" --log-level warn >"$D/n$i.log" 2>&1 &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; [ -n "${BENCH_DIR:-}" ] || rm -rf "$D"' EXIT
S=127.0.0.1:17379,127.0.0.1:17380,127.0.0.1:17381
for _ in $(seq 100); do
  "$D/bin/kayactl" --server $S --timeout 300ms health 2>/dev/null | grep -q leader && break
  sleep 0.1
done
summary() { grep -E "Requests/sec|p50|p99:" | tr -s ' \t' ' ' | paste -sd' ' -; }
for c in 1 64 256; do
  conns=$(( c < 16 ? c : 16 ))
  printf 'kaya put      clients=%-4s key=8B val=256B: ' $c
  "$D/bin/kayactl" --server $S bench put --clients $c --conns $conns --key-size 8 --val-size 256 \
    --key-space 100000000 --total $(( c==1 ? 2000 : 40000 )) 2>/dev/null | summary
done
for c in 1 256; do
  conns=$(( c < 16 ? c : 16 ))
  printf 'kaya lin-get  clients=%-4s: ' $c
  "$D/bin/kayactl" --server $S bench get --clients $c --conns $conns --key-space 1 \
    --total $(( c==1 ? 5000 : 60000 )) 2>/dev/null | summary
done
