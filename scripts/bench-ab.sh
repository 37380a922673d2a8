#!/usr/bin/env bash
# Same-run A/B of two commits of kayadb-server on one node: builds the
# server at REV_A and REV_B (kayactl from the working tree drives both),
# then runs ROUNDS rounds, each starting a fresh node of A and then of B
# (order alternating between rounds) and measuring with kayactl bench:
#   put  1 client and 64 clients (8-byte keys, 256-byte values, durable)
#   get  1 client and 64 clients (linearizable, 10,000 loaded keys)
#   scan 1 client (100 keys per scan, 10,000 loaded keys)
# It prints each round's requests/sec and, per workload, the median of A,
# the median of B and B/A.
#   scripts/bench-ab.sh REV_A REV_B [ROUNDS]      (default 3 rounds)
#   BENCH_DIR=DIR keeps the data and logs there.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 REV_A REV_B [ROUNDS]" >&2; exit 2; }
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
A="$1" B="$2" ROUNDS="${3:-3}"
D="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$D/bin"
source "$REPO_ROOT/scripts/bench-common.sh"
build_server "$A" a
build_server "$B" b
(cd "$REPO_ROOT" && go build -o "$D/bin/kayactl" ./cmd/kayactl)
ADDR=127.0.0.1:17399
pid=
cleanup() { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; [ -n "${BENCH_DIR:-}" ] || rm -rf "$D"; }
trap cleanup EXIT
rps() { "$D/bin/kayactl" --server $ADDR --json bench "$@" 2>/dev/null | sed -n 's/.*"requests_per_second": *\([0-9.]*\).*/\1/p'; }
WORKLOADS=("put1" "put64" "get1" "get64" "scan1")
run_one() { # run_one NAME ROUND -> appends "workload name rps" lines to $D/results
  local name=$1 round=$2 data="$D/data-$1-$2"
  rm -rf "$data"
  "$D/bin/kayadb-server-$name" --data "$data" --client-addr $ADDR --raft-addr 127.0.0.1:17499 \
    --no-metrics --log-level warn >"$D/$name-$round.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    "$D/bin/kayactl" --server $ADDR --timeout 300ms health >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "put1 $name $(rps put --clients 1 --total 3000 --key-space 100000000)" >>"$D/results"
  echo "put64 $name $(rps put --clients 64 --conns 16 --total 40000 --key-space 100000000)" >>"$D/results"
  echo "get1 $name $(rps get --clients 1 --total 20000 --key-space 10000)" >>"$D/results"
  echo "get64 $name $(rps get --clients 64 --conns 16 --total 100000 --key-space 10000)" >>"$D/results"
  echo "scan1 $name $(rps scan --clients 1 --total 5000 --key-space 10000)" >>"$D/results"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  rm -rf "$data"
}
: >"$D/results"
for r in $(seq "$ROUNDS"); do
  if (( r % 2 )); then order="a b"; else order="b a"; fi
  for n in $order; do
    run_one "$n" "$r"
    echo "round $r $n: $(grep " $n " "$D/results" | tail -5 | awk '{printf "%s=%s ", $1, $3}')"
  done
done
median() { sort -n | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else printf "%.1f\n", (v[NR/2]+v[NR/2+1])/2}'; }
echo
printf '%-6s %12s %12s %7s\n' workload "A req/s" "B req/s" "B/A"
for w in "${WORKLOADS[@]}"; do
  ma=$(awk -v w="$w" '$1==w && $2=="a" {print $3}' "$D/results" | median)
  mb=$(awk -v w="$w" '$1==w && $2=="b" {print $3}' "$D/results" | median)
  printf '%-6s %12s %12s %7.3f\n' "$w" "$ma" "$mb" "$(echo "$mb / $ma" | bc -l)"
done
echo "A=$(git -C "$REPO_ROOT" rev-parse --short "$A") B=$(git -C "$REPO_ROOT" rev-parse --short "$B"), $ROUNDS rounds, medians; $(nproc) cores"
