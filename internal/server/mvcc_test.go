package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/wire"
)

// TestHistoryOnEveryNodeAcrossRestartAndSnapshot: a 3-node cluster keeps
// every key's history. Reads at past revisions answer the same on every
// node; after a follower was down while the leader compacted its log, it
// catches up by installing a snapshot (an engine checkpoint) and answers
// the same historical reads, within retention, as the others; so does
// every node after a restart of all of them.
func TestHistoryOnEveryNodeAcrossRestartAndSnapshot(t *testing.T) {
	c := newTestCluster(t, 3, snapCfg(50, 10))
	lead := c.WaitLeader()
	cl := dial(t, c.addr(lead))
	type rev struct {
		key, value string
		ts         uint64
	}
	var revs []rev
	put := func(k, v string) {
		t.Helper()
		if st, p, err := cl.put(k, v); err != nil || st != wire.StatusOK {
			t.Fatalf("put %s: %v %v %q", k, err, st, p)
		}
		ver, err := c.settled(lead).ReadAt([]byte(k), 0)
		if err != nil || string(ver.Value) != v {
			t.Fatalf("read back %s: %q %v", k, ver.Value, err)
		}
		revs = append(revs, rev{k, v, ver.TS})
	}
	del := func(k string) {
		t.Helper()
		if st, p, err := cl.do(wire.OpDelete, wire.AppendKey(nil, []byte(k))); err != nil || st != wire.StatusOK {
			t.Fatalf("delete %s: %v %v %q", k, err, st, p)
		}
		revs = append(revs, rev{k, "", c.settled(lead).AppliedTS()})
	}
	for i := 0; i < 5; i++ {
		put("h", fmt.Sprintf("before-%d", i))
		put(fmt.Sprintf("g%d", i), "x")
	}
	del("g0")
	f := c.follower(lead)
	behind := c.node(f).Store().AppliedIndex()
	c.Stop(f)
	putMany(t, c.addr(lead), "a", 300, 100)
	for i := 0; i < 5; i++ {
		put("h", fmt.Sprintf("while-down-%d", i))
	}
	del("g1")
	if first, _ := c.node(lead).rlog.FirstIndex(); first <= behind+1 {
		t.Fatalf("the leader's log starts at %d: not compacted past the stopped follower (at %d)", first, behind)
	}
	c.Start(f)
	c.waitConverged(1, 2, 3)
	if _, installed := c.node(f).Node().SnapshotCounts(); installed == 0 {
		t.Fatal("the follower caught up without installing a snapshot")
	}

	// expect says what key holds at ts: the last write of it at or before
	// ts in revs.
	expect := func(key string, ts uint64) (string, bool) {
		v, ok := "", false
		for _, r := range revs {
			if r.key == key && r.ts <= ts {
				v, ok = r.value, r.value != ""
			}
		}
		return v, ok
	}
	check := func(when string) {
		t.Helper()
		for id, s := range c.Nodes() {
			st := s.Store()
			for _, r := range revs {
				for _, key := range []string{"h", "g0", "g1", "g2"} {
					want, ok := expect(key, r.ts)
					v, err := st.ReadAt([]byte(key), r.ts)
					if ok != (err == nil) || (ok && string(v.Value) != want) {
						t.Fatalf("%s: node %d: %s at %d: %q %v, want %q (present %v)", when, id, key, r.ts, v.Value, err, want, ok)
					}
				}
			}
			// A scan at a revision before the follower went down.
			items, err := st.ReadScanAt([]byte("g"), revs[9].ts, 100, 1<<20)
			if err != nil || len(items) != 5 {
				t.Fatalf("%s: node %d: scan g at %d: %d items, %v", when, id, revs[9].ts, len(items), err)
			}
			if st.Horizon() != 0 {
				t.Fatalf("%s: node %d collected history within the retention: horizon %d", when, id, st.Horizon())
			}
			ms := s.mvccStats()
			if ms.AppliedRevision != st.AppliedTS() || ms.HistoryBytes == 0 || ms.RetentionSeconds != 3600 || ms.RetentionBytes == 0 {
				t.Fatalf("%s: node %d: mvcc stats %+v", when, id, ms)
			}
		}
	}
	check("after the snapshot")
	for _, id := range []uint64{1, 2, 3} {
		c.Stop(id)
	}
	for _, id := range []uint64{1, 2, 3} {
		c.Start(id)
	}
	lead = c.WaitLeader()
	cl = dial(t, c.addr(lead))
	put("h", "after-restart")
	c.waitConverged(1, 2, 3)
	check("after a restart of every node")

	// STATS carries the mvcc document.
	st, p, err := cl.do(wire.OpStats, nil)
	if err != nil || st != wire.StatusOK {
		t.Fatalf("stats: %v %v", st, err)
	}
	var doc struct {
		MVCC map[string]any `json:"mvcc"`
	}
	if err := json.Unmarshal(p, &doc); err != nil {
		t.Fatalf("stats: %v: %s", err, p)
	}
	for _, k := range []string{"applied_revision", "oldest_readable_revision", "history_bytes", "retention_seconds", "retention_bytes", "clock_offset_exceeded"} {
		if _, ok := doc.MVCC[k]; !ok {
			t.Errorf("STATS mvcc has no %s: %v", k, doc.MVCC)
		}
	}
	// A revision beyond the applied one.
	if _, err := c.node(lead).Store().ReadAt([]byte("h"), c.node(lead).Store().AppliedTS()+1); !errors.Is(err, kv.ErrFutureRevision) {
		t.Fatalf("future revision: %v", err)
	}
}
