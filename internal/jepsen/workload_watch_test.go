package jepsen

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestCheckWatch: the watch checker accepts a history whose watchers and
// consumer got every acknowledged change once, in order, and finds each
// kind of violation: a change of a write that failed, a change delivered
// twice, an acknowledged change missing, out-of-order revisions,
// revisions against real time, and watchers that disagree.
func TestCheckWatch(t *testing.T) {
	ops := []Op{
		{Kind: KindWatchPut, Key: "watch/0/1", Value: 1, Call: 0, Return: 10, Status: StatusOK},
		{Kind: KindWatchPut, Key: "watch/0/2", Value: 2, Call: 20, Return: 30, Status: StatusOK},
		{Kind: KindWatchPut, Key: "watch/0/3", Value: 3, Call: 40, Return: 50, Status: StatusFail},
		{Kind: KindWatchDelete, Key: "watch/0/1", Call: 60, Return: 70, Status: StatusOK},
	}
	good := []watchEvent{{Rev: 5, Key: "watch/0/1", Value: "1"}, {Rev: 7, Key: "watch/0/2", Value: "2"}, {Rev: 9, Del: true, Key: "watch/0/1"}}
	run := func(mutate func(evs []watchEvent) []watchEvent) Verdict {
		wr := &watchRun{cons: &watchRecorder{name: "consumer", prefix: "watch/"}}
		for i := 0; i < 2; i++ {
			evs := append([]watchEvent(nil), good...)
			if i == 1 && mutate != nil {
				evs = mutate(evs)
			}
			wr.recs = append(wr.recs, &watchRecorder{name: "w", prefix: "watch/0/", events: evs})
		}
		wr.cons.events = append([]watchEvent(nil), good...)
		return checkWatch(ops, wr)
	}
	if v := run(nil); v.Result != "ok" {
		t.Fatalf("a correct history: %+v", v)
	}
	// Revisions against real time: write 1 returned before write 2 began
	// but has the later revision (everyone agrees on it).
	good = []watchEvent{{Rev: 7, Key: "watch/0/2", Value: "2"}, {Rev: 8, Key: "watch/0/1", Value: "1"}, {Rev: 9, Del: true, Key: "watch/0/1"}}
	if v := run(nil); v.Result != "violation" || !strings.Contains(v.Detail, "real-time order") {
		t.Errorf("real time: %+v", v)
	}
	good = []watchEvent{{Rev: 5, Key: "watch/0/1", Value: "1"}, {Rev: 7, Key: "watch/0/2", Value: "2"}, {Rev: 9, Del: true, Key: "watch/0/1"}}
	for name, c := range map[string]struct {
		mutate func([]watchEvent) []watchEvent
		want   string
	}{
		"uncommitted": {func(e []watchEvent) []watchEvent { return append(e, watchEvent{Rev: 11, Key: "watch/0/3", Value: "3"}) }, "never committed"},
		"twice":       {func(e []watchEvent) []watchEvent { return append(e, watchEvent{Rev: 12, Key: "watch/0/2", Value: "2"}) }, "delivered twice"},
		"missing":     {func(e []watchEvent) []watchEvent { return e[:2] }, "never arrived"},
		"order":       {func(e []watchEvent) []watchEvent { e[0], e[1] = e[1], e[0]; return e }, "out of order"},
	} {
		if v := run(c.mutate); v.Result != "violation" || !strings.Contains(v.Detail, c.want) {
			t.Errorf("%s: %+v, want a violation naming %q", name, v, c.want)
		}
	}
}

// TestJepsenWatch runs the watch workload on a real 3-node cluster with
// kills and partitions: every watcher and the CDC consumer must get the
// committed history exactly.
func TestJepsenWatch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped in -short mode")
	}
	bin := buildServer(t)
	sum, err := Run(context.Background(), Config{Bin: bin, Seed: 41, Nemeses: []string{NemesisKill, NemesisPartition},
		Workloads: []string{WorkloadWatch}, Duration: 10 * time.Second, ReportDir: reportDir(t), Logf: logf(t)})
	if err != nil {
		t.Fatalf("the harness failed: %v", err)
	}
	t.Log("\n" + sum.Text())
	if !sum.Valid {
		t.Fatalf("invalid: %s", sum.Problem)
	}
}

// TestJepsenCatchesEarlyWatchDelivery is the watch workload's negative
// control: a server whose hub delivers puts when they are proposed, before
// they commit, must be caught by the watch checker.
func TestJepsenCatchesEarlyWatchDelivery(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped in -short mode")
	}
	bin := buildServer(t, PlantedBugs["watch-early"])
	sum, err := Run(context.Background(), Config{Bin: bin, Seed: 42, Nemeses: []string{},
		Workloads: PlantedBugWorkloads["watch-early"], Duration: 10 * time.Second, ReportDir: reportDir(t), Logf: logf(t)})
	if err != nil {
		t.Fatalf("the harness failed: %v", err)
	}
	t.Log("\n" + sum.Text())
	for _, v := range sum.Verdicts {
		if v.Result == "violation" && v.Checker == "watch" {
			return
		}
	}
	t.Fatalf("a server delivering watch events before commit passed the watch checker: %+v", sum.Verdicts)
}
