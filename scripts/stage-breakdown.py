#!/usr/bin/env python3
"""Per-stage breakdown of the client requests a node served between two scrapes.

  stage-breakdown.py snap METRICS_ADDR FILE     save kayadb_request_stage_seconds now
  stage-breakdown.py diff METRICS_ADDR FILE     print count, mean and p50/p99 (bucket
                                                upper bounds) of what happened since
The histograms are kayadb_request_stage_seconds{stage=...} (docs/design/latency.md).
"""
import json, re, sys, urllib.request

ORDER = ["read", "decode", "queue", "raft_ready", "log_fsync", "replicate", "apply", "wake", "engine", "reply"]

def scrape(addr):
    text = urllib.request.urlopen("http://%s/metrics" % addr, timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'kayadb_request_stage_seconds_(bucket|sum|count)\{(.*)\} (\S+)', line)
        if not m:
            continue
        kind, labels, v = m.groups()
        st = re.search(r'stage="([^"]+)"', labels).group(1)
        d = out.setdefault(st, {"buckets": {}, "sum": 0.0, "count": 0.0})
        if kind == "bucket":
            d["buckets"][re.search(r'le="([^"]+)"', labels).group(1)] = float(v)
        else:
            d[kind] = float(v)
    return out

def quantile(buckets, q):
    items = sorted(((float("inf") if k == "+Inf" else float(k)), v) for k, v in buckets.items())
    total = items[-1][1] if items else 0
    for le, c in items:
        if total and c >= q * total:
            return le
    return float("nan")

def main():
    cmd, addr, path = sys.argv[1:4]
    now = scrape(addr)
    if cmd == "snap":
        json.dump(now, open(path, "w"))
        return
    before = json.load(open(path))
    print("%-11s %9s %10s %10s %10s" % ("stage", "count", "mean_us", "p50<=us", "p99<=us"))
    for st in ORDER:
        a, b = now.get(st), before.get(st, {"buckets": {}, "sum": 0, "count": 0})
        if not a:
            continue
        n = a["count"] - b["count"]
        if n <= 0:
            continue
        mean = (a["sum"] - b["sum"]) / n * 1e6
        bk = {k: v - b["buckets"].get(k, 0) for k, v in a["buckets"].items()}
        print("%-11s %9d %10.1f %10.0f %10.0f" % (st, n, mean, quantile(bk, .5) * 1e6, quantile(bk, .99) * 1e6))

main()
