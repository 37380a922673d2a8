#!/usr/bin/env bash
# Usage: check-split-brain.sh [options] [ADDR[,ADDR...] ...]
#
# Asks every node for its raft view (`kayactl --server ADDR --json status`,
# all nodes at once), prints one table row per node and a verdict:
#
#   exit 0  OK        every node answered, all are in the same term, name
#                     the same leader, which is the only node that claims
#                     to lead, and agree on the voters
#   exit 1  CONFLICT  two nodes claim leadership in the same term, or nodes
#                     in the same term name different leaders: a possible
#                     split brain, which raft should make impossible;
#                     investigate at once (docs/runbooks/detecting-split-brain.md)
#   exit 2  DEGRADED  no conflict, but something needs attention: a node did
#                     not answer, no leader is known in the newest term, a
#                     node is in an older term (cut off, or a stale leader
#                     that cannot commit), the nodes disagree on the voters,
#                     or (with --max-lag) a node is behind
#   exit 4            usage error
#
# ADDR is a node's client address (host:port, as for kayactl --server);
# several may be given, separated by commas or spaces; default $KAYA_SERVER.
# The client addresses of members that the nodes report are checked too
# (unless --no-discover), so one address is enough to check a whole cluster
# whose nodes can be reached.
#
# Options:
#   --timeout DUR    how long each node may take to answer (default 2s)
#   --max-lag N      DEGRADED when a node's applied index is more than N
#                    entries behind the highest commit index seen
#   --wait SECONDS   repeat the check, once a second, until it is OK or
#                    SECONDS have passed; the last check decides
#   --no-discover    check only the addresses given
#   --kayactl PATH   the kayactl binary (default: $KAYACTL, else kayactl on
#                    PATH, else $CLUSTER_DIR/bin/kayactl of the local cluster)
#
# kayactl runs with this script's environment, so the KAYA_* settings it
# reads from there (credentials, TLS, ...) apply. Needs only bash, awk,
# sed, grep and kayactl. It only reads: it never changes the cluster.
set -uo pipefail

# usage [STATUS]: the comment above; on stdout for --help, else on stderr.
usage() {
  if [ "${1:-4}" = 0 ]; then
    sed -n '2,/^set /p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  else
    sed -n '2,/^set /p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  fi
  exit "${1:-4}"
}

timeout=2s max_lag="" wait_s=0 discover=1 kayactl="${KAYACTL:-}"
addrs=()
while (($#)); do
  case "$1" in
  --timeout) timeout="${2:?--timeout needs a duration}"; shift 2 ;;
  --timeout=*) timeout="${1#*=}"; shift ;;
  --max-lag) max_lag="${2:?--max-lag needs a number}"; shift 2 ;;
  --max-lag=*) max_lag="${1#*=}"; shift ;;
  --wait) wait_s="${2:?--wait needs seconds}"; shift 2 ;;
  --wait=*) wait_s="${1#*=}"; shift ;;
  --no-discover) discover=0; shift ;;
  --kayactl) kayactl="${2:?--kayactl needs a path}"; shift 2 ;;
  --kayactl=*) kayactl="${1#*=}"; shift ;;
  -h | --help) usage 0 ;;
  --) shift; addrs+=("$@"); break ;;
  -*) echo "check-split-brain.sh: unknown option $1" >&2; usage ;;
  *) addrs+=("$1"); shift ;;
  esac
done
if [ -n "$max_lag" ] && ! [[ "$max_lag" =~ ^[0-9]+$ ]]; then
  echo "check-split-brain.sh: --max-lag must be a number of entries, not $max_lag" >&2
  exit 4
fi
if ! [[ "$wait_s" =~ ^[0-9]+$ ]]; then
  echo "check-split-brain.sh: --wait must be a number of seconds, not $wait_s" >&2
  exit 4
fi
if ((${#addrs[@]} == 0)) && [ -n "${KAYA_SERVER:-}" ]; then
  addrs=("$KAYA_SERVER")
fi
# Split on commas and spaces, drop duplicates, keep the order.
if ((${#addrs[@]})); then
  read -r -a addrs <<<"$(printf '%s\n' "${addrs[@]}" | tr ', ' '\n\n' | awk 'NF && !seen[$0]++' | tr '\n' ' ')"
fi
if ((${#addrs[@]} == 0)); then
  echo "check-split-brain.sh: no node addresses (give ADDR arguments or set KAYA_SERVER)" >&2
  usage
fi
if [ -z "$kayactl" ]; then
  if command -v kayactl >/dev/null 2>&1; then
    kayactl=kayactl
  else
    kayactl="${CLUSTER_DIR:-./cluster}/bin/kayactl"
  fi
fi
if ! command -v "$kayactl" >/dev/null 2>&1; then
  echo "check-split-brain.sh: kayactl not found at $kayactl (use --kayactl PATH or \$KAYACTL)" >&2
  exit 4
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# json_num KEY, json_str KEY: the first value of KEY in stdin (one JSON line).
json_num() { grep -oE "\"$1\":-?[0-9]+" | head -1 | sed 's/.*://'; }
json_str() { grep -oE "\"$1\":\"[^\"]*\"" | head -1 | sed -e 's/^[^:]*:"//' -e 's/"$//'; }

# sortlist LIST: a comma-separated list of numbers, sorted; "-" when empty.
sortlist() { if [ -n "$1" ]; then printf '%s\n' "$1" | tr ',' '\n' | sort -n | paste -sd, -; else echo -; fi; }

# parse_status ADDR FILE: prints one tab-separated record
#   addr ok node role term leader commit applied voters learners members_client_addrs
# (ok is "up" or "down: <error>"; lists are comma-separated, "-" when empty).
parse_status() {
  local addr="$1" doc top members m id role ca voters="" learners="" clients=""
  doc="$(cat "$2")"
  # The engine counters are one flat object; the members are flat objects
  # in an array. Take them out to read the top-level fields.
  doc="$(printf '%s' "$doc" | sed -E 's/"engine":\{[^{}]*\},?//')"
  members="$(printf '%s' "$doc" | sed -E 's/^\{//; s/\}$//' | grep -oE '\{[^{}]*\}' || true)"
  top="$(printf '%s' "$doc" | sed -E 's/^\{//; s/\}$//; s/\{[^{}]*\}//g')"
  while IFS= read -r m; do
    [ -n "$m" ] || continue
    id="$(printf '%s' "$m" | json_num id)"
    role="$(printf '%s' "$m" | json_str role)"
    ca="$(printf '%s' "$m" | json_str client_addr)"
    case "$role" in
    voter) voters+="${voters:+,}$id" ;;
    learner) learners+="${learners:+,}$id" ;;
    esac
    [ -n "$ca" ] && clients+="${clients:+,}$ca"
  done <<<"$members"
  printf '%s\tup\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$addr" \
    "$(printf '%s' "$top" | json_num node_id || true)" \
    "$(printf '%s' "$top" | json_str role || true)" \
    "$(printf '%s' "$top" | json_num term || true)" \
    "$(printf '%s' "$top" | json_num leader_id || true)" \
    "$(printf '%s' "$top" | json_num commit_index || true)" \
    "$(printf '%s' "$top" | json_num applied_index || true)" \
    "$(sortlist "$voters")" "$(sortlist "$learners")" "${clients:--}"
}

# query ADDR...: ask the nodes in parallel; append their records to $tmp/records.
query() {
  local i=0 a
  for a in "$@"; do
    i=$((i + 1))
    ("$kayactl" --server "$a" --timeout "$timeout" --json status >"$tmp/q$i.out" 2>"$tmp/q$i.err"
      echo $? >"$tmp/q$i.rc") &
  done
  wait
  i=0
  for a in "$@"; do
    i=$((i + 1))
    if [ "$(cat "$tmp/q$i.rc")" = 0 ] && grep -q '"term"' "$tmp/q$i.out"; then
      parse_status "$a" "$tmp/q$i.out" >>"$tmp/records"
    else
      local err
      err="$(grep -m1 '^error:' "$tmp/q$i.err" | sed 's/^error: //' | tr '\t' ' ')"
      printf '%s\tdown: %s\n' "$a" "${err:-no answer (exit $(cat "$tmp/q$i.rc"))}" >>"$tmp/records"
    fi
  done
}

check_once() {
  : >"$tmp/records"
  query "${addrs[@]}"
  if ((discover)); then
    local more=() a
    # Client addresses of members that were not in the list.
    while IFS= read -r a; do
      [ -n "$a" ] && more+=("$a")
    done < <(awk -F'\t' '
      { seen[$1] = 1 }
      $2 == "up" && $11 != "-" { n = split($11, c, ","); for (i = 1; i <= n; i++) cand[c[i]] = 1 }
      END { for (a in cand) if (!(a in seen)) print a }' "$tmp/records" | sort)
    if ((${#more[@]})); then
      query "${more[@]}"
    fi
  fi
  awk -F'\t' -v maxlag="$max_lag" "$verdict_awk" "$tmp/records"
}

# The verdict, from the records (see parse_status).
verdict_awk="$(cat <<'AWK'
function dash(s) { return s == "" ? "-" : s }
{
  n++; addr[n] = $1; up[n] = ($2 == "up")
  if (!up[n]) { err[n] = substr($2, 7); next }
  node[n] = $3; role[n] = $4; term[n] = $5 + 0; leader[n] = $6; commit[n] = $7 + 0; applied[n] = $8 + 0
  voters[n] = $9; learners[n] = $10
  if (term[n] > maxterm) maxterm = term[n]
  if (commit[n] > maxcommit) maxcommit = commit[n]
}
END {
  printf "%-22s %-5s %-10s %-6s %-7s %-8s %-8s %-10s %s\n", "ADDR", "NODE", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "VOTERS", "LEARNERS"
  for (i = 1; i <= n; i++) {
    if (!up[i]) { printf "%-22s %-5s %s\n", addr[i], "-", "UNREACHABLE"; continue }
    printf "%-22s %-5s %-10s %-6s %-7s %-8s %-8s %-10s %s\n", addr[i], dash(node[i]), dash(role[i]), term[i],
      (leader[i] == "" ? "-" : (leader[i] == "0" ? "none" : leader[i])), commit[i], applied[i], voters[i], learners[i]
  }
  print ""
  conflict = 0; degraded = 0; reach = 0
  for (i = 1; i <= n; i++) {
    if (!up[i]) { degraded++; printf "DEGRADED: %s did not answer (%s)\n", addr[i], err[i]; continue }
    reach++
    id = (node[i] == "" ? addr[i] : "node " node[i])
    # Leaders claimed and named, per term.
    if (role[i] == "leader") {
      t = term[i]
      if (t in claimer) { conflict++; printf "CONFLICT: %s and %s both claim leadership in term %d\n", claimer[t], id, t }
      else claimer[t] = id
    }
    # The leader this node names; a leader names itself.
    nm = (leader[i] != "" && leader[i] != "0") ? leader[i] : ""
    if (role[i] == "leader") nm = (node[i] != "" ? node[i] : addr[i]) # older servers report no node id
    if (nm != "") {
      t = term[i]
      if ((t in named) && named[t] != nm) {
        conflict++
        printf "CONFLICT: in term %d %s names leader %s but %s names leader %s\n", t, namer[t], named[t], id, nm
      } else if (!(t in named)) { named[t] = nm; namer[t] = id }
    }
  }
  if (reach == 0) {
    print "DEGRADED: no node answered"
    print "verdict: DEGRADED"
    exit 2
  }
  newest = (maxterm in named) ? named[maxterm] : ""
  if (newest == "") { degraded++; printf "DEGRADED: no node knows a leader in the newest term %d (an election is running, or no majority can talk)\n", maxterm }
  for (i = 1; i <= n; i++) {
    if (!up[i]) continue
    id = (node[i] == "" ? addr[i] : "node " node[i])
    if (term[i] < maxterm) {
      degraded++
      if (role[i] == "leader")
        printf "DEGRADED: %s is a stale leader: it claims term %d, but term %d exists%s; it cannot commit (a partition?)\n", id, term[i], maxterm, (newest != "" ? " with leader " newest : "")
      else
        printf "DEGRADED: %s is in term %d, behind term %d, and names %s as leader (cut off from the others, or just restarted)\n", id, term[i], maxterm, (leader[i] == "0" || leader[i] == "" ? "no one" : leader[i])
    } else if (role[i] == "candidate") {
      degraded++; printf "DEGRADED: %s is campaigning in term %d\n", id, term[i]
    } else if (leader[i] == "0" && newest != "") {
      degraded++; printf "DEGRADED: %s knows no leader in term %d (others name %s)\n", id, term[i], newest
    }
    if (newest != "" && node[i] == newest && role[i] != "leader" && term[i] == maxterm) {
      degraded++; printf "DEGRADED: node %s is named leader of term %d but answers as %s\n", newest, maxterm, role[i]
    }
    if (!(voters[i] in vs)) { vs[voters[i]] = id; nvs++ }
    if (maxlag != "" && applied[i] + maxlag < maxcommit) {
      degraded++; printf "DEGRADED: %s has applied up to %d, more than %d entries behind commit index %d\n", id, applied[i], maxlag, maxcommit
    }
  }
  if (nvs > 1) {
    degraded++; printf "DEGRADED: the nodes disagree on the voters:"
    for (v in vs) printf " [%s] (%s)", v, vs[v]
    printf " (a membership change in flight, or a node that missed it)\n"
  }
  if (conflict) { print "verdict: CONFLICT (possible split brain)"; exit 1 }
  if (degraded) { print "verdict: DEGRADED"; exit 2 }
  printf "OK: %d nodes answered; term %d; leader node %s; voters %s\n", reach, maxterm, newest, voters[1]
  print "verdict: OK"
  exit 0
}
AWK
)"

# SECONDS counts whole seconds of the clock: wait until more than wait_s
# have passed, so that at least wait_s really have.
start=$SECONDS
while :; do
  out="$(check_once)"
  rc=$?
  if ((rc == 0 || wait_s == 0 || SECONDS - start > wait_s)); then
    printf '%s\n' "$out"
    exit "$rc"
  fi
  echo "check-split-brain.sh: $(printf '%s\n' "$out" | grep -m1 -E '^(CONFLICT|DEGRADED):'); checking again" >&2
  sleep 1
done
