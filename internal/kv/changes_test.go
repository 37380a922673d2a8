package kv

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/vfs"
)

// wantChanges is what ReadChanges must return for (after, lastTS] under
// prefix: the model's revision log, the last change per key and commit,
// each put with the value that started then.
func (r *versionedRun) wantChanges(after uint64, prefix string) []Change {
	var out []Change
	for i := 0; i < len(r.m.revs); i++ {
		rv := r.m.revs[i]
		if rv.ts <= after || !strings.HasPrefix(rv.key, prefix) {
			continue
		}
		last := true
		for j := i + 1; j < len(r.m.revs) && r.m.revs[j].ts == rv.ts; j++ {
			if r.m.revs[j].key == rv.key {
				last = false
			}
		}
		if !last {
			continue
		}
		c := Change{Rev: rv.ts, Op: rv.op, Key: []byte(rv.key)}
		if rv.op == revPut {
			v, ok := r.m.at(rv.key, rv.ts)
			if !ok || v.start != rv.ts {
				r.fatalf("model: no version of %q started at %d", rv.key, rv.ts)
			}
			c.Value = []byte(v.value)
		}
		out = append(out, c)
	}
	return out
}

func describeChanges(cs []Change) string {
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "%d:%d:%q=%q ", c.Rev, c.Op, c.Key, c.Value)
	}
	return b.String()
}

// checkChanges reads the changes after a random position, page by page
// with small random bounds, and compares them with the model: pages end
// at commit boundaries, and a position below the horizon is compacted.
func (r *versionedRun) checkChanges() {
	after := r.readTS()
	if after > r.m.lastTS {
		after = r.m.lastTS
	}
	prefix := []string{"", "a", "user/", "k1"}[r.rng.IntN(4)]
	b := ChangeBounds{MaxChanges: 1 + r.rng.IntN(6), MaxBytes: 1 + r.rng.IntN(200), MaxScanned: 1 + r.rng.IntN(10)}
	r.log = append(r.log, fmt.Sprintf("changes after %d prefix %q bounds %+v", after, prefix, b))
	match := func(k []byte) bool { return bytes.HasPrefix(k, []byte(prefix)) }
	if after < r.m.horizon {
		_, _, err := r.s.ReadChanges(after, 0, match, b)
		var ce *CompactedError
		if !errors.As(err, &ce) || ce.Oldest != r.m.horizon {
			r.fatalf("changes after %d below the horizon %d: %v", after, r.m.horizon, err)
		}
		return
	}
	want := r.wantChanges(after, prefix)
	var got []Change
	pos := after
	for pages := 0; pos < r.m.lastTS; pages++ {
		page, next, err := r.s.ReadChanges(pos, 0, match, b)
		if err != nil {
			r.fatalf("changes after %d: %v", pos, err)
		}
		if next <= pos && len(page) == 0 {
			r.fatalf("changes after %d: no progress (next %d)", pos, next)
		}
		for _, c := range page {
			if c.Rev <= pos || c.Rev > next {
				r.fatalf("changes after %d up to %d: change at %d", pos, next, c.Rev)
			}
		}
		if len(page) > 0 && page[len(page)-1].Rev != next && next != r.m.lastTS {
			// The page ended at a commit boundary: next is the last
			// commit read, matched or not; the next page starts after it.
			if page[len(page)-1].Rev > next {
				r.fatalf("page ends at %d past next %d", page[len(page)-1].Rev, next)
			}
		}
		got = append(got, page...)
		pos = next
		if pages > 100000 {
			r.fatal("changes: too many pages")
		}
	}
	if describeChanges(got) != describeChanges(want) {
		r.fatalf("changes after %d prefix %q:\n got %s\nwant %s", after, prefix, describeChanges(got), describeChanges(want))
	}
}

// TestChangesOfATransaction: every change of a commit shares its revision,
// a page never splits a commit, a key changed twice in a commit appears
// once with its last change, and a commit larger than the bounds still
// comes whole.
func TestChangesOfATransaction(t *testing.T) {
	fs := vfs.NewMem()
	db, err := engine.Open("/db", testEngineOptions(fs, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := Open(testStoreOptions(db, nil))
	if err != nil {
		t.Fatal(err)
	}
	ents := [][]cmdSpec{
		{{op: opPut, key: "a", value: "1"}},
		{{op: opTestTxn, body: testTxnBody(7, 1<<62, "x", "y", "z")}},
		{{op: opPut, key: "b", value: "2"}, {op: opDelete, key: "b"}, {op: opPut, key: "c", value: "3"}},
		{{op: opPut, key: "a", value: "4"}},
	}
	for i, cmds := range ents {
		if err := s.Apply([]*pb.Entry{entryV2(uint64(i+1), 0, cmds...)}); err != nil {
			t.Fatal(err)
		}
	}
	all, next, err := s.ReadChanges(0, 0, nil, ChangeBounds{MaxChanges: 1, MaxBytes: 1, MaxScanned: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || string(all[0].Key) != "a" || next != all[0].Rev {
		t.Fatalf("first page %s next %d: want the put of a alone", describeChanges(all), next)
	}
	txn, next2, err := s.ReadChanges(next, 0, nil, ChangeBounds{MaxChanges: 1, MaxBytes: 1, MaxScanned: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(txn) != 3 || txn[0].Rev != txn[2].Rev || next2 != txn[0].Rev || describeChanges(txn) != fmt.Sprintf("%d:1:\"x\"=\"t7\" %d:1:\"y\"=\"t7\" %d:1:\"z\"=\"t7\" ", next2, next2, next2) {
		t.Fatalf("the transaction's page: %s (next %d)", describeChanges(txn), next2)
	}
	rest, next3, err := s.ReadChanges(next2, 0, nil, ChangeBounds{MaxChanges: 100, MaxBytes: 1 << 20, MaxScanned: 100})
	if err != nil {
		t.Fatal(err)
	}
	r3 := rest[0].Rev
	if want := fmt.Sprintf("%d:2:\"b\"=\"\" %d:1:\"c\"=\"3\" %d:1:\"a\"=\"4\" ", r3, r3, r3+1); describeChanges(rest) != want || next3 != s.AppliedTS() {
		t.Fatalf("rest: %s next %d, want %s next %d", describeChanges(rest), next3, want, s.AppliedTS())
	}
}

// TestGCHoldsForConsumers: a registered consumer's position holds the GC
// target back, within the consumers' own time and byte bounds.
func TestGCHoldsForConsumers(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	sec := func(s int) uint64 { return TSFromTime(now.Add(time.Duration(s) * time.Second)) }
	g := newGCState(&Options{Retention: time.Minute, HoldRetention: 10 * time.Minute})
	for _, s := range []int{-900, -300, -120, -10} {
		g.buckets[sec(s)|g.bucketMask] = 400
		g.total += 400
	}
	if h, ok := g.target(now, sec(0), 0, 0, false); !ok || h != sec(-60) {
		t.Fatalf("no consumer: %d %v, want %d", h, ok, sec(-60))
	}
	if h, ok := g.target(now, sec(0), 0, sec(-200), true); !ok || h != sec(-200) {
		t.Fatalf("a consumer at -200 s: %d %v, want %d", h, ok, sec(-200))
	}
	if h, ok := g.target(now, sec(0), 0, sec(-2000), true); !ok || h != sec(-600) {
		t.Fatalf("a consumer at -2000 s past --cdc-retention: %d %v, want %d", h, ok, sec(-600))
	}
	if h, ok := g.target(now, sec(0), 0, sec(-30), true); !ok || h != sec(-60) {
		t.Fatalf("a consumer ahead of the target does not move it: %d %v, want %d", h, ok, sec(-60))
	}
	g.holdBytes = 1000
	if h, ok := g.target(now, sec(0), 0, sec(-2000), true); !ok || h != sec(-300)|g.bucketMask {
		t.Fatalf("a consumer past --cdc-retention-bytes: %d %v, want %d", h, ok, sec(-300)|g.bucketMask)
	}
}
