package jepsen

import (
	"strings"
	"testing"
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
