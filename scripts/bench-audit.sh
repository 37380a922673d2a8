#!/usr/bin/env bash
# Audit log on vs off on one node, same machine, rounds interleaved: kayactl bench
# put (1 and 64 clients) and get (64 clients), 256-byte values, with --no-audit-log,
# --audit-log (fsync interval) and --audit-log --audit-fsync always. BENCH_DIR=DIR to keep the files.
set -uo pipefail
D="${BENCH_DIR:-$(mktemp -d)}"; mkdir -p "$D/bin"; cd "$(dirname "$0")/.." && go build -o $D/bin/ ./cmd/kayadb-server ./cmd/kayactl || exit 1
KPORT=17499
total() { if [ "$1" = 1 ]; then echo 5000; else echo 100000; fi; }
bench() { local op=$1 c=$2 extra; conns=$(( c < 16 ? c : 16 ))
  [ "$op" = get ] && extra="--key-space 100000" || extra="--key-space 100000000"
  $D/bin/kayactl --server 127.0.0.1:$KPORT --json bench $op --clients $c --conns $conns --key-size 8 --val-size 256 $extra --total $(total $c) 2>/dev/null |
  python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f %.3f" % (r["requests_per_second"], r["p99_ms"]))' 2>/dev/null || echo "0 0"; }
for round in 1 2 3; do
 for mode in off on always; do
  rm -rf $D/data; flags="--no-audit-log"
  [ $mode = on ] && flags="--audit-log"
  [ $mode = always ] && flags="--audit-log --audit-fsync always"
  $D/bin/kayadb-server --data $D/data --client-addr 127.0.0.1:$KPORT --raft-addr 127.0.0.1:17581 --no-metrics --log-level warn $flags > $D/srv.log 2>&1 &
  pid=$!
  for i in $(seq 50); do $D/bin/kayactl --server 127.0.0.1:$KPORT health >/dev/null 2>&1 && break; sleep 0.2; done
  for w in "put 1" "put 64" "get 64"; do
    echo "round=$round audit=$mode $w $(bench $w)"
  done
  [ $mode != off ] && echo "round=$round audit=$mode lines=$(wc -l < $D/data/audit.jsonl)"
  kill $pid; wait $pid 2>/dev/null
 done
done
