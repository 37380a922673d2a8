#!/usr/bin/env bash
# Measures what encryption at rest costs a 3-node cluster: the workloads of
# bench-cluster.sh (put with 1, 64 and 256 clients, durable; linearizable
# get with 1 and 256 clients), run without and with
# --encryption-keyring-file, alternating in the same run on the same
# machine, and prints each row's ratio (encrypted req/s / plain req/s).
# The bar (issue 16) is >= 0.85x.
#   BENCH_RUNS=N   alternate plain/encrypted N times (default 2)
#   BENCH_ALTERNATE=1  let even runs start with the encrypted cluster, so
#                  that a machine that is faster for the first run of a
#                  pair favours neither side
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUNS="${BENCH_RUNS:-2}"
D="$(mktemp -d)"
trap 'rm -rf "$D"' EXIT
(cd "$REPO_ROOT" && go build -o "$D/" ./cmd/kayactl)
"$D/kayactl" encryption init --keyring "$D/keyring" >/dev/null
rps() { sed -E 's/.*Requests\/sec:? ([0-9.]+).*/\1/'; }
plain() {
  echo "run $run: plain"
  BENCH_RUNS=1 BENCH_ANCHOR=0 "$REPO_ROOT/scripts/bench-cluster.sh" | tee "$D/plain.$run"
}
encrypted() {
  echo "run $run: encrypted (--encryption-keyring-file)"
  KAYA_FLAGS="${KAYA_FLAGS:-} --encryption-keyring-file $D/keyring" BENCH_RUNS=1 BENCH_ANCHOR=0 "$REPO_ROOT/scripts/bench-cluster.sh" | tee "$D/enc.$run"
}
for run in $(seq "$RUNS"); do
  if [ "${BENCH_ALTERNATE:-0}" = 1 ] && [ $((run % 2)) = 0 ]; then
    encrypted; plain
  else
    plain; encrypted
  fi
  echo "run $run, ratios (encrypted req/s / plain req/s):"
  paste <(grep -E '^kaya' "$D/plain.$run") <(grep -E '^kaya' "$D/enc.$run") |
    while IFS=$'\t' read -r p e; do
      pr=$(rps <<<"$p"); er=$(rps <<<"$e")
      w=$(sed -E 's/^kaya (put|lin-get) +clients=([0-9]+).*/\1 clients=\2/' <<<"$p")
      python3 -c "p,e=float('$pr' or 0),float('$er' or 0); print('  %-22s plain %9.0f  encrypted %9.0f  ratio %s' % ('$w', p, e, ('%.2fx' % (e/p)) if p else '-'))"
    done
done
