#!/usr/bin/env bash
# Paired A/B of two commits of kayadb-server on one node, for changes whose
# effect is smaller than this machine's drift. bench-ab.sh runs one
# variant, then the other, on fresh nodes: on a shared VM the throughput of
# the same binary moves by 10-20% within minutes, so a 5% change hides in
# it. Here both nodes run side by side for the whole measurement and take
# turns: PAIRS short runs of each, order alternating, and the result is
# the median of the per-pair ratios B/A, each pair measured seconds apart.
#
#   scripts/bench-paired.sh REV_A REV_B [PAIRS]     (default 10 pairs)
#   BENCH_OP=put|get   BENCH_CLIENTS=1   BENCH_TOTAL=4000   (each run)
#   BENCH_TMPFS=1      data directories on /dev/shm: fdatasync costs nothing,
#                      so a put measures the server's own path (decoding,
#                      hand-offs, raft, apply, reply) without the disk,
#                      whose latency swings more than any of those
#   BENCH_DIR=DIR      keeps the data and logs there
#
# REV_A = REV_B (an A/A run) shows the noise: on the 2-vCPU VM of
# BENCHMARKS.md, ten pairs of a one-client put on tmpfs gave a median
# ratio of 0.987 with single pairs from 0.81 to 1.23.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 REV_A REV_B [PAIRS]" >&2; exit 2; }
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
A="$1" B="$2" PAIRS="${3:-10}"
OP="${BENCH_OP:-put}" C="${BENCH_CLIENTS:-1}" TOTAL="${BENCH_TOTAL:-4000}"
case "$OP" in put | get) ;; *) echo "BENCH_OP=$OP: want put or get" >&2; exit 2 ;; esac
D="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$D/bin"
ROOT="$D"
if [ "${BENCH_TMPFS:-0}" = 1 ]; then ROOT=$(mktemp -d -p /dev/shm kaya-paired.XXXXXX); fi
source "$REPO_ROOT/scripts/bench-common.sh"
build_server "$A" a
build_server "$B" b
(cd "$REPO_ROOT" && go build -o "$D/bin/kayactl" ./cmd/kayactl)
pids=()
cleanup() {
  [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  [ "$ROOT" = "$D" ] || rm -rf "$ROOT"
  [ -n "${BENCH_DIR:-}" ] || rm -rf "$D"
}
trap cleanup EXIT
declare -A PORT=([a]=17399 [b]=17398) RAFT=([a]=17499 [b]=17498)
for n in a b; do
  "$D/bin/kayadb-server-$n" --data "$ROOT/data-$n" --client-addr 127.0.0.1:${PORT[$n]} \
    --raft-addr 127.0.0.1:${RAFT[$n]} --no-metrics --log-level warn >"$D/$n.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    "$D/bin/kayactl" --server 127.0.0.1:${PORT[$n]} --timeout 300ms health 2>/dev/null | grep -q leader && break
    sleep 0.1
  done
done
conns=$((C < 16 ? C : 16))
keys=100000000
[ "$OP" = get ] && keys=10000
rps() { # rps NAME
  "$D/bin/kayactl" --server 127.0.0.1:${PORT[$1]} --json bench "$OP" --clients "$C" --conns $conns \
    --key-size 8 --val-size 256 --key-space $keys --total "$TOTAL" 2>/dev/null |
    sed -n 's/.*"requests_per_second": *\([0-9.]*\).*/\1/p'
}
rps a >/dev/null # warm-up (and, for get, the keys loaded)
rps b >/dev/null
: >"$D/pairs"
for i in $(seq "$PAIRS"); do
  if ((i % 2)); then ra=$(rps a); rb=$(rps b); else rb=$(rps b); ra=$(rps a); fi
  printf 'pair %2d  A %8.0f  B %8.0f  B/A %.3f\n' "$i" "$ra" "$rb" "$(echo "$rb / $ra" | bc -l)"
  echo "$ra $rb" >>"$D/pairs"
done
python3 - "$D/pairs" <<'EOF'
import statistics, sys
p = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
r = [b / a for a, b in p]
print("median A %.0f req/s, median B %.0f req/s, median of B/A %.3f (pairs from %.3f to %.3f)"
      % (statistics.median(a for a, _ in p), statistics.median(b for _, b in p), statistics.median(r), min(r), max(r)))
EOF
echo "A=$(git -C "$REPO_ROOT" rev-parse --short "$A") B=$(git -C "$REPO_ROOT" rev-parse --short "$B"), $OP, $C clients, $TOTAL requests a run, $PAIRS pairs, data on $([ "$ROOT" = "$D" ] && echo disk || echo tmpfs); $(nproc) cores"
