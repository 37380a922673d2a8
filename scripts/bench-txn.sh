#!/usr/bin/env bash
# Transactions on a 3-node cluster on loopback, KayaDB against etcd in the
# same run (issue 13's bar: kayactl bench txn >= 1.5x etcd's benchmark
# txn-put).
#   kaya: kayactl bench txn: each transaction reads two distinct random keys
#         and writes both (BEGIN, 2 TXN_OP get, 2 TXN_OP put, COMMIT: six
#         requests in three round trips, as the Go client pipelines the gets
#         and the puts with COMMIT; serializable), uniform over 100,000 keys, 256-byte
#         values; conflicts retried (counted in the latency).
#   kaya-stm: the same transactions as optimistic ones (kayactl bench txn
#         --txn-mode stm, client.RunSTM): the two reads pipelined (GET_AT,
#         linearizable, with mod revisions), then one KAYA_TXN that writes
#         both keys if neither changed since it was read: two requests in
#         two round trips, serializable.
#   etcd: benchmark txn-put --txn-ops 2: one Txn request of two puts over
#         100,000 keys, 256-byte values (etcd's own transaction benchmark;
#         it neither reads nor can conflict).
# Ports: KayaDB 27379-27381 and 27481-27483 (not bench-cluster.sh's, so
# that the two never measure each other's servers, and below Linux's
# ephemeral range, 32768 and up by default, where a client connection's
# local port can take a server's port just before it binds; KAYA_CLIENT_PORT
# and KAYA_RAFT_PORT move the first of each when those are taken), etcd
# 12379-32380.
# Clients 1, 64 and 256 (16 connections above 16 clients), then KayaDB's
# conflict rate with 1% and 50% of the key picks on 100 hot keys (64
# clients). ROUNDS rounds (default 2), alternating which system goes first.
# Prints one line per workload and round, then the median ratios.
# KAYA_BIN=DIR runs the kayadb-server and kayactl in DIR instead of building
# this checkout's.
#   scripts/bench-txn.sh [ROUNDS]     (etcd from ../shared/tools/etcd-anchor.sh's
#   cache, built there on first use; ANCHOR_BIN=DIR to point elsewhere)
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROUNDS="${1:-2}"
BIN=${ANCHOR_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/kaya-anchors/bin}
if [ ! -x "$BIN/etcd" ] || [ ! -x "$BIN/benchmark" ] || [ ! -x "$BIN/etcdctl" ]; then
  anchor="$REPO_ROOT/../shared/tools/etcd-anchor.sh"
  [ -x "$anchor" ] || { echo "bench-txn.sh: no etcd binaries in $BIN and no $anchor to build them" >&2; exit 2; }
  "$anchor" >/dev/null
fi
CP=${KAYA_CLIENT_PORT:-27379}
RP=${KAYA_RAFT_PORT:-27481}
D="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$D/bin"
if [ -n "${KAYA_BIN:-}" ]; then   # binaries built elsewhere (an A/B against another commit)
  cp "$KAYA_BIN/kayadb-server" "$KAYA_BIN/kayactl" "$D/bin/"
else
  (cd "$REPO_ROOT" && go build -o "$D/bin/" ./cmd/kayadb-server ./cmd/kayactl)
fi
pids=()
stop_all() { [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; pids=(); }
trap 'stop_all; [ -n "${BENCH_DIR:-}" ] || rm -rf "$D"' EXIT
: >"$D/results"
CLIENTS=(1 64 256)
total() { if [ "$1" = 1 ]; then echo 1000; else echo 20000; fi; }
# BENCH_CONNS=clients gives every client its own connection (both
# systems): KayaDB answers a connection's requests in order, so clients
# sharing one wait behind each other's commits, where etcd's gRPC streams
# do not.
conns() { if [ "${BENCH_CONNS:-16}" = clients ] || [ "$1" -lt 16 ]; then echo "$1"; else echo 16; fi; }

run_kaya() { # run_kaya ROUND
  rm -rf "$D/k"
  local peers=() i
  for i in 1 2 3; do peers+=(--peer "$i=127.0.0.1:$((RP - 1 + i)),127.0.0.1:$((CP - 1 + i))"); done
  for i in 1 2 3; do
    "$D/bin/kayadb-server" --node-id $i --data "$D/k/n$i" --raft-addr 127.0.0.1:$((RP - 1 + i)) \
      --client-addr 127.0.0.1:$((CP - 1 + i)) --no-metrics "${peers[@]}" --log-level warn >"$D/kaya-$i.log" 2>&1 &
    pids+=($!)
  done
  local S=127.0.0.1:$CP,127.0.0.1:$((CP + 1)),127.0.0.1:$((CP + 2))
  for _ in $(seq 100); do
    "$D/bin/kayactl" --server $S --timeout 300ms health 2>/dev/null | grep -q leader && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "bench-txn.sh: a kayadb-server did not start (ports $CP-$((CP + 2)), $RP-$((RP + 2)) taken?); see $D/kaya-*.log" >&2; exit 1; }
  done
  local c out mode name
  for mode in interactive stm; do
    name=kaya; [ "$mode" = stm ] && name=kaya-stm
    for c in "${CLIENTS[@]}"; do
      out=$("$D/bin/kayactl" --server $S --json bench txn --txn-mode $mode --clients "$c" --conns "$(conns "$c")" \
        --key-space 100000 --val-size 256 --total "$(total "$c")" 2>/dev/null || true)
      echo "$name c=$c $(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.1f %.2f %.4f" % (d["requests_per_second"], d["p99_ms"], d["txn"]["conflict_rate"]))')" >>"$D/results"
    done
    for hot in 0.01 0.5; do
      out=$("$D/bin/kayactl" --server $S --json bench txn --txn-mode $mode --clients 64 --conns 16 --key-space 100000 \
        --hot-keys $hot --hot-set 100 --val-size 256 --total 20000 2>/dev/null || true)
      echo "$name-hot=$hot c=64 $(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.1f %.2f %.4f" % (d["requests_per_second"], d["p99_ms"], d["txn"]["conflict_rate"]))')" >>"$D/results"
    done
  done
  stop_all
}

run_etcd() { # run_etcd ROUND
  rm -rf "$D/e"
  local cluster="e1=http://127.0.0.1:12380,e2=http://127.0.0.1:22380,e3=http://127.0.0.1:32380" i
  for i in 1 2 3; do
    "$BIN/etcd" --name e$i --data-dir "$D/e/e$i" \
      --listen-client-urls http://127.0.0.1:${i}2379 --advertise-client-urls http://127.0.0.1:${i}2379 \
      --listen-peer-urls http://127.0.0.1:${i}2380 --initial-advertise-peer-urls http://127.0.0.1:${i}2380 \
      --initial-cluster "$cluster" --initial-cluster-state new --log-level error >"$D/etcd-$i.log" 2>&1 &
    pids+=($!)
  done
  local EP=http://127.0.0.1:12379,http://127.0.0.1:22379,http://127.0.0.1:32379 LEADER=""
  for _ in $(seq 100); do
    LEADER=$("$BIN/etcdctl" --endpoints=$EP endpoint status -w json 2>/dev/null | python3 -c 'import json,sys; s=json.load(sys.stdin); print([e["Endpoint"] for e in s if e["Status"]["leader"]==e["Status"]["header"]["member_id"]][0])' 2>/dev/null) && break
    sleep 0.2
  done
  local c out
  for c in "${CLIENTS[@]}"; do
    out=$("$BIN/benchmark" --endpoints="$LEADER" --conns="$(conns "$c")" --clients="$c" txn-put --txn-ops 2 \
      --key-size 8 --key-space-size 100000 --val-size 256 --total "$(total "$c")" 2>/dev/null || true)
    echo "etcd c=$c $(echo "$out" | awk '/Requests\/sec/ {r=$2} /99% in/ {p=$3*1000} END {printf "%.1f %.2f 0\n", r, p}')" >>"$D/results"
  done
  stop_all
}

for r in $(seq "$ROUNDS"); do
  if (( r % 2 )); then run_kaya "$r"; run_etcd "$r"; else run_etcd "$r"; run_kaya "$r"; fi
  echo "round $r:"; tail -n 13 "$D/results" | sed 's/^/  /'
done
median() { sort -n | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else printf "%.4f\n", (v[NR/2]+v[NR/2+1])/2}'; }
echo
echo "system/workload        txn/s (median)   p99 ms   conflict rate"
for w in "kaya c=1" "kaya-stm c=1" "etcd c=1" "kaya c=64" "kaya-stm c=64" "etcd c=64" "kaya c=256" "kaya-stm c=256" "etcd c=256" \
  "kaya-hot=0.01 c=64" "kaya-hot=0.5 c=64" "kaya-stm-hot=0.01 c=64" "kaya-stm-hot=0.5 c=64"; do
  printf '%-22s %14s %8s %14s\n' "$w" \
    "$(grep "^$w " "$D/results" | awk '{print $3}' | median)" \
    "$(grep "^$w " "$D/results" | awk '{print $4}' | median)" \
    "$(grep "^$w " "$D/results" | awk '{print $5}' | median)"
done
for c in "${CLIENTS[@]}"; do
  e=$(grep "^etcd c=$c " "$D/results" | awk '{print $3}' | median)
  for name in kaya kaya-stm; do
    k=$(grep "^$name c=$c " "$D/results" | awk '{print $3}' | median)
    printf 'ratio %s/etcd clients=%-4s %.2fx\n' "$name" "$c" "$(echo "$k / $e" | bc -l)"
  done
done
echo "$ROUNDS rounds; $(nproc) cores; $(git -C "$REPO_ROOT" rev-parse --short HEAD)"
