#!/usr/bin/env bash
# Measures a 3-node KayaDB cluster on loopback with the workloads of
# ../shared/tools/etcd-anchor.sh (etcd's benchmark tool, same parameters):
# put with 1, 64 and 256 clients (8-byte sequential keys, 256-byte values,
# durable: fsync on a majority) and linearizable get of one key with 1 and
# 256 clients. Prints one line per workload; when the anchor script and its
# binaries are there, it first runs etcd's side of the same run and prints
# the same-run ratio (KayaDB req/s ÷ etcd req/s) of every row.
#   BENCH_DIR=DIR scripts/bench-cluster.sh   (default: a fresh temp dir)
#   BENCH_RUNS=N          repeat the etcd, KayaDB pair N times (default 1)
#   ANCHOR_TOOLS=DIR      where etcd-anchor.sh is (default ../shared/tools
#                         beside the checkout); BENCH_ANCHOR=0 skips etcd
#   KAYA_FLAGS="--read-mode lease"   extra server flags
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
D="${BENCH_DIR:-$(mktemp -d)}"
RUNS="${BENCH_RUNS:-1}"
TOOLS="${ANCHOR_TOOLS:-$REPO_ROOT/../shared/tools}"
mkdir -p "$D/bin"
(cd "$REPO_ROOT" && go build -o "$D/bin/" ./cmd/kayadb-server ./cmd/kayactl)
pids=()
stop_nodes() {
  [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  pids=()
}
trap 'stop_nodes; [ -n "${BENCH_DIR:-}" ] || rm -rf "$D"' EXIT

kaya_run() { # one KayaDB run: a fresh cluster, every workload, one line each
  local run=$1 peers=() i c conns
  rm -rf "$D"/n[123]
  for i in 1 2 3; do peers+=(--peer "$i=127.0.0.1:$((17480 + i)),127.0.0.1:$((17378 + i))"); done
  for i in 1 2 3; do
    # shellcheck disable=SC2086
    "$D/bin/kayadb-server" --node-id $i --data "$D/n$i" --raft-addr 127.0.0.1:$((17480 + i)) \
      --client-addr 127.0.0.1:$((17378 + i)) --metrics-addr 127.0.0.1:$((19089 + i)) "${peers[@]}" \
      --log-level warn ${KAYA_FLAGS:-} >"$D/n$i.log" 2>&1 &
    pids+=($!)
  done
  local S=127.0.0.1:17379,127.0.0.1:17380,127.0.0.1:17381
  for _ in $(seq 100); do
    "$D/bin/kayactl" --server $S --timeout 300ms health 2>/dev/null | grep -q leader && break
    sleep 0.1
  done
  summary() { grep -E "Requests/sec|Average|99% in" | tr -s ' \t' ' ' | paste -sd' ' -; }
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
  stop_nodes
}

anchor=0
if [ "${BENCH_ANCHOR:-1}" != 0 ] && [ -x "$TOOLS/etcd-anchor.sh" ]; then anchor=1; fi
rps() { sed -E 's/.*Requests\/sec:? ([0-9.]+).*/\1/'; }
for run in $(seq "$RUNS"); do
  : >"$D/etcd.$run" >"$D/kaya.$run"
  if [ $anchor = 1 ]; then
    bash "$TOOLS/etcd-anchor.sh" | tee "$D/etcd.$run"
  fi
  kaya_run "$run" | tee "$D/kaya.$run"
  if [ $anchor = 1 ]; then
    echo "run $run, same-run ratios (KayaDB req/s / etcd req/s):"
    paste -d'\n' <(grep -E '^etcd' "$D/etcd.$run") <(grep -E '^kaya' "$D/kaya.$run") | paste - - |
      while IFS=$'\t' read -r e k; do
        er=$(rps <<<"$e"); kr=$(rps <<<"$k")
        w=$(sed -E 's/^kaya (put|lin-get) +clients=([0-9]+).*/\1 clients=\2/' <<<"$k")
        python3 -c "import sys; e,k=float('$er' or 0),float('$kr' or 0); print('  %-22s etcd %9.0f  kaya %9.0f  ratio %s' % ('$w', e, k, ('%.2fx' % (k/e)) if e else '-'))"
      done
  fi
done
