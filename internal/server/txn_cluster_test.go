package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kayadb/kayadb/client"
	"github.com/kayadb/kayadb/internal/wire"
)

// TestTxnRetriedCommitAndLeaderChange: a retried TXN_COMMIT answers the
// first outcome (committed at the same revision, or conflict), on the
// leader that committed it and, after leadership moved, on the new one;
// a transaction open when leadership moved answers "lost" on the new
// leader and NOT_LEADER on the old one, which forgets it.
func TestTxnRetriedCommitAndLeaderChange(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{manual: true})
	c.Elect(1)
	one := txnConn{t, dial(t, c.addr(1))}
	one.put("x", "0")

	a, _ := one.begin()
	one.mustOp(a, wire.TxnOpPut, "k", "a")
	st, first := one.commit(a)
	if st != wire.StatusOK {
		t.Fatalf("commit a: %v %q", st, first)
	}
	if st, again := one.commit(a); st != wire.StatusOK || !bytes.Equal(again, first) {
		t.Fatalf("retried commit of a on the same leader: %v %q, first %q", st, again, first)
	}

	b, _ := one.begin()
	one.mustOp(b, wire.TxnOpGet, "x", "")
	one.put("x", "1") // what b read changes
	one.mustOp(b, wire.TxnOpPut, "y", "b")
	if st, p := one.commit(b); st != wire.StatusTxnConflict {
		t.Fatalf("commit b: %v %q, want TXN_CONFLICT", st, p)
	}

	open, _ := one.begin()
	one.mustOp(open, wire.TxnOpPut, "z", "open")
	term1 := c.node(1).Node().Term()

	c.Elect(2)
	two := txnConn{t, dial(t, c.addr(2))}
	if st, p := two.commit(a); st != wire.StatusOK || !bytes.Equal(p, first) {
		t.Fatalf("retried commit of a on the new leader: %v %q, first %q", st, p, first)
	}
	if st, p := two.commit(b); st != wire.StatusTxnConflict || string(p[4:]) != wire.MsgTxnConflict {
		t.Fatalf("retried commit of b on the new leader: %v %q, want TXN_CONFLICT", st, p)
	}
	lost := fmt.Sprintf(wire.MsgTxnLost, open, term1)
	if st, p := two.op(open, wire.TxnOpGet, "z", ""); st != wire.StatusInvalidArgument || string(p[4:]) != lost {
		t.Fatalf("TXN_OP of a transaction from the old term on the new leader: %v %q, want %q", st, p, lost)
	}
	if st, p := two.commit(open); st != wire.StatusInvalidArgument || string(p[4:]) != lost {
		t.Fatalf("TXN_COMMIT of a transaction from the old term: %v %q, want %q", st, p, lost)
	}
	if st, p := one.op(open, wire.TxnOpGet, "z", ""); st != wire.StatusNotLeader {
		t.Fatalf("TXN_OP on the old leader: %v %q, want NOT_LEADER", st, p)
	}
	if st, v, _ := two.get("z"); st != wire.StatusNotFound {
		t.Fatalf("the lost transaction's write is visible: %v %q", st, v)
	}
	c.Eventually("the old leader to forget its open transactions", func() bool { return c.node(1).txns.Open() == 0 })
	if s := c.node(1).txns.Stats(); s.Lost == 0 || s.Committed != 1 || s.Conflict != 1 {
		t.Fatalf("old leader's counters: %+v", s)
	}
	// New ids carry the new term.
	id, _ := two.begin()
	if id>>32 != c.node(2).Node().Term() || id>>32 <= term1 {
		t.Fatalf("new leader's txn id %#x: term %d, want %d", id, id>>32, c.node(2).Node().Term())
	}
}

// TestTxnExpiryAndBounds: an abandoned transaction expires after
// --txn-timeout; --max-open-txns and --max-txn-bytes refuse with errors
// naming the flag.
func TestTxnExpiryAndBounds(t *testing.T) {
	c := newCluster(t, 1, clusterOpts{manual: true, configure: func(_ uint64, cfg *Config) {
		cfg.TxnTimeout, cfg.MaxOpenTxns, cfg.MaxTxnBytes = 300*time.Millisecond, 2, 1024
		cfg.MetricsListener = metricsListener(t)
	}})
	c.Elect(1)
	tc := txnConn{t, dial(t, c.addr(1))}
	a, _ := tc.begin()
	tc.begin()
	if st, p, _ := tc.do(wire.OpTxnBegin, nil); st != wire.StatusError || !strings.Contains(string(p), "--max-open-txns") {
		t.Fatalf("a third TXN_BEGIN: %v %q, want an error naming --max-open-txns", st, p)
	}
	if st, p := tc.op(a, wire.TxnOpPut, "big", strings.Repeat("v", 2000)); st != wire.StatusInvalidArgument || !strings.Contains(string(p), "--max-txn-bytes") {
		t.Fatalf("a write over --max-txn-bytes: %v %q", st, p)
	}
	tc.mustOp(a, wire.TxnOpPut, "small", "v")
	c.Eventually("both transactions to expire", func() bool { return c.node(1).txns.Open() == 0 })
	if st, p := tc.op(a, wire.TxnOpGet, "small", ""); st != wire.StatusInvalidArgument || string(p[4:]) != fmt.Sprintf(wire.MsgTxnUnknown, a) {
		t.Fatalf("TXN_OP of an expired transaction: %v %q", st, p)
	}
	if s := c.node(1).txns.Stats(); s.Expired != 2 {
		t.Fatalf("expired %d, want 2 (%+v)", s.Expired, s)
	}
	// Its write intent went with it.
	b, _ := tc.begin()
	tc.mustOp(b, wire.TxnOpPut, "small", "b")
	if st, p := tc.commit(b); st != wire.StatusOK {
		t.Fatalf("commit b: %v %q", st, p)
	}
	// STATS and the metrics report transactions.
	st, p, err := tc.do(wire.OpStats, nil)
	if err != nil || st != wire.StatusOK {
		t.Fatal(st, err)
	}
	var doc struct {
		Txn map[string]any `json:"txn"`
	}
	if err := json.Unmarshal(p, &doc); err != nil || doc.Txn["expired"] != float64(2) || doc.Txn["committed"] != float64(1) || doc.Txn["isolation"] != "serializable" {
		t.Fatalf("STATS txn: %v %v", doc.Txn, err)
	}
	m := scrapeMetrics(t, c.node(1).MetricsAddr())
	for name, want := range map[string]float64{`kayadb_txn_commits_total{outcome="expired"}`: 2, `kayadb_txn_commits_total{outcome="committed"}`: 1,
		`kayadb_txn_commits_total{outcome="conflict"}`: 0, "kayadb_txn_open": 0, `kayadb_txn_commit_duration_seconds_count{outcome="committed"}`: 1} {
		if got := series(t, m, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// TestTxnReadOnlyCommit: a transaction that only read commits without a
// raft entry, at its snapshot, and a retry answers the same.
func TestTxnReadOnlyCommit(t *testing.T) {
	c := newCluster(t, 1, clusterOpts{manual: true})
	c.Elect(1)
	tc := txnConn{t, dial(t, c.addr(1))}
	tc.put("x", "1")
	id, snap := tc.begin()
	if v := tc.mustOp(id, wire.TxnOpGet, "x", ""); string(v) != "1" {
		t.Fatalf("get x: %q", v)
	}
	tc.put("x", "2") // after the snapshot: not seen
	if v := tc.mustOp(id, wire.TxnOpGet, "x", ""); string(v) != "1" {
		t.Fatalf("get x after a later write: %q, want the snapshot's 1", v)
	}
	applied := c.node(1).Store().AppliedIndex()
	st, p := tc.commit(id)
	if ts, err := wire.DecodeTxnCommitReply(p); st != wire.StatusOK || err != nil || ts != snap {
		t.Fatalf("read-only commit: %v %q, want OK at the snapshot %d", st, p, snap)
	}
	if got := c.node(1).Store().AppliedIndex(); got != applied {
		t.Fatalf("a read-only commit went through raft: applied %d → %d", applied, got)
	}
	if st2, p2 := tc.commit(id); st2 != st || !bytes.Equal(p2, p) {
		t.Fatalf("retried read-only commit: %v %q", st2, p2)
	}
}

// TestTxnGoClientOnCluster runs the Go client's transactions and
// conditional writes against a real 3-node cluster: RunTxn increments of
// one counter from concurrent clients (no update lost: the counter ends
// at the number of commits, and every commit has its own revision),
// Begin/Get/Put/Delete/Commit, CompareAndSwap, PutIfAbsent, and reads at
// past revisions.
func TestTxnGoClientOnCluster(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.WaitLeader()
	var addrs []string
	for _, id := range c.IDs() {
		addrs = append(addrs, c.addr(id))
	}
	newClient := func() *client.Client {
		cl, err := client.New(addrs, &client.Options{RequestTimeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cl.Close() })
		return cl
	}
	ctx := context.Background()
	cl := newClient()
	if err := cl.Put(ctx, []byte("counter"), []byte("0")); err != nil {
		t.Fatal(err)
	}
	const workers, each = 4, 8
	var mu sync.Mutex
	revs := map[uint64]bool{}
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wcl := newClient()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				rev, err := wcl.RunTxn(ctx, func(tx *client.Txn) error {
					v, err := tx.Get(ctx, []byte("counter"))
					if err != nil {
						return err
					}
					n, err := strconv.Atoi(string(v))
					if err != nil {
						return err
					}
					return tx.Put(ctx, []byte("counter"), []byte(strconv.Itoa(n+1)))
				})
				if err != nil {
					errc <- err
					return
				}
				mu.Lock()
				if revs[rev] {
					errc <- fmt.Errorf("two commits at revision %d", rev)
				}
				revs[rev] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	v, err := cl.Get(ctx, []byte("counter"))
	if err != nil || string(v) != strconv.Itoa(workers*each) {
		t.Fatalf("counter = %q %v after %d committed increments: an update was lost", v, err, workers*each)
	}

	// Begin/Commit, and reads at the revisions before and after.
	tx, err := cl.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := tx.SnapshotRevision()
	if err := tx.Put(ctx, []byte("t/a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Delete(ctx, []byte("counter")); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Get(ctx, []byte("counter")); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("get of a key the transaction deleted: %v", err)
	}
	rev, err := tx.Commit(ctx)
	if err != nil || rev <= before {
		t.Fatalf("commit: %d %v (snapshot %d)", rev, err, before)
	}
	if _, err := cl.Get(ctx, []byte("counter")); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("counter after the delete committed: %v", err)
	}
	old, mod, err := cl.GetWithRevision(ctx, []byte("counter"), client.WithReadAt(before))
	if err != nil || string(old) != strconv.Itoa(workers*each) || mod > before {
		t.Fatalf("counter at revision %d: %q@%d %v", before, old, mod, err)
	}
	if _, mod, err := cl.GetWithRevision(ctx, []byte("t/a")); err != nil || mod != rev {
		t.Fatalf("t/a's mod revision %d %v, want the commit's %d", mod, err, rev)
	}
	page, err := cl.ScanPage(ctx, []byte("t/"), nil, 10, client.WithReadAt(rev))
	if err != nil || len(page.KVs) != 1 || page.Revision != rev || page.More {
		t.Fatalf("scan t/ at %d: %+v %v", rev, page, err)
	}

	// Conditional writes.
	put, prev, err := cl.PutIfAbsent(ctx, []byte("lock"), []byte("me"))
	if err != nil || !put || prev == 0 {
		t.Fatalf("PutIfAbsent on a missing key: %v %d %v", put, prev, err)
	}
	if put, _, err := cl.PutIfAbsent(ctx, []byte("lock"), []byte("you")); err != nil || put {
		t.Fatalf("PutIfAbsent on a present key: %v %v", put, err)
	}
	if ok, _, err := cl.CompareAndSwap(ctx, []byte("lock"), []byte("you"), []byte("x")); err != nil || ok {
		t.Fatalf("CompareAndSwap with the wrong old value: %v %v", ok, err)
	}
	ok, casRev, err := cl.CompareAndSwap(ctx, []byte("lock"), []byte("me"), []byte("you"))
	if err != nil || !ok || casRev <= prev {
		t.Fatalf("CompareAndSwap: %v %d %v", ok, casRev, err)
	}
	if v, err := cl.Get(ctx, []byte("lock")); err != nil || string(v) != "you" {
		t.Fatalf("lock = %q %v", v, err)
	}
	resp, err := cl.Txn(ctx).If(client.CompareModRevision([]byte("lock"), client.Equal, casRev)).
		Then(client.OpGet([]byte("lock")), client.OpDelete([]byte("lock"))).Else(client.OpPut([]byte("lock"), []byte("else"))).Commit()
	if err != nil || !resp.Succeeded || len(resp.Results) != 2 {
		t.Fatalf("txn on the mod revision: %+v %v", resp, err)
	}
	c.waitConverged(c.IDs()...)
	_ = lead
}

// TestGetAtScanAt: GET_AT and SCAN_AT on a real node: past revisions,
// pages of one revision (start, limit, more), a future revision, and a
// revision below the retained history (COMPACTED naming the oldest
// readable one).
func TestGetAtScanAt(t *testing.T) {
	c := newCluster(t, 1, clusterOpts{manual: true, configure: func(_ uint64, cfg *Config) {
		cfg.MVCCRetention = time.Millisecond
	}})
	c.Elect(1)
	tc := txnConn{t, dial(t, c.addr(1))}
	store := c.node(1).Store()
	tc.put("p/a", "1")
	r1 := c.settled(1).AppliedTS()
	tc.put("p/b", "2")
	tc.put("p/c", "3")
	tc.put("p/a", "4")
	r2 := c.settled(1).AppliedTS()
	getAt := func(k string, ts uint64) (wire.Status, []byte) {
		st, p, err := tc.do(wire.OpGetAt, wire.AppendGetAt(nil, ts, []byte(k)))
		if err != nil {
			t.Fatal(err)
		}
		return st, p
	}
	if st, p := getAt("p/a", r1); st != wire.StatusOK {
		t.Fatalf("GET_AT p/a@%d: %v %q", r1, st, p)
	} else if v, rev, err := wire.DecodeGetAtReply(p); err != nil || string(v) != "1" || rev != r1 {
		t.Fatalf("GET_AT p/a@%d: %q@%d %v", r1, v, rev, err)
	}
	if st, _ := getAt("p/b", r1); st != wire.StatusNotFound {
		t.Fatalf("GET_AT p/b before it was written: %v", st)
	}
	if st, p := getAt("p/a", 0); st != wire.StatusOK {
		t.Fatal(st)
	} else if v, rev, _ := wire.DecodeGetAtReply(p); string(v) != "4" || rev != r2 {
		t.Fatalf("GET_AT p/a latest: %q@%d", v, rev)
	}
	if st, p := getAt("p/a", wire.ReadTSLocal); st != wire.StatusOK {
		t.Fatal(st)
	} else if v, rev, _ := wire.DecodeGetAtReply(p); string(v) != "4" || rev != r2 {
		t.Fatalf("GET_AT p/a at ReadTSLocal: %q@%d", v, rev)
	}
	if st, _ := getAt("p/none", wire.ReadTSLocal); st != wire.StatusNotFound {
		t.Fatalf("GET_AT of a missing key at ReadTSLocal: %v", st)
	}
	if st, _ := getAt("\x00sys", wire.ReadTSLocal); st != wire.StatusInvalidArgument {
		t.Fatalf("GET_AT of a system key at ReadTSLocal: %v", st)
	}
	if st, p := getAt("p/a", r2+1000); st != wire.StatusInvalidArgument {
		t.Fatalf("GET_AT at a future revision: %v %q", st, p)
	} else if msg, _ := wire.DecodeError(p); !strings.Contains(msg, "in the future") {
		t.Fatalf("future revision: %q", msg)
	}
	scan := func(req wire.ScanAt) *wire.ScanAtReply {
		t.Helper()
		st, p, err := tc.do(wire.OpScanAt, wire.AppendScanAt(nil, req))
		if err != nil || st != wire.StatusOK {
			t.Fatalf("SCAN_AT %+v: %v %v %q", req, st, err, p)
		}
		r, err := wire.DecodeScanAtReply(p)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	page := scan(wire.ScanAt{Prefix: []byte("p/"), Limit: 2})
	if page.ReadRev != r2 || !page.More || len(page.Items) != 2 || string(page.Items[0].Value) != "4" {
		t.Fatalf("first page: %+v", page)
	}
	tc.put("p/d", "5") // after the page's revision: not in the next page
	next := scan(wire.ScanAt{ReadTS: page.ReadRev, Prefix: []byte("p/"), Start: append([]byte("p/b"), 0), Limit: 2})
	if next.More || len(next.Items) != 1 || string(next.Items[0].Key) != "p/c" {
		t.Fatalf("second page: %+v", next)
	}
	if old := scan(wire.ScanAt{ReadTS: r1, Prefix: []byte("p/")}); len(old.Items) != 1 || string(old.Items[0].Value) != "1" {
		t.Fatalf("scan at %d: %+v", r1, old)
	}
	if st, p, _ := tc.do(wire.OpScanAt, wire.AppendScanAt(nil, wire.ScanAt{Prefix: []byte("p/"), Start: []byte("q")})); st != wire.StatusInvalidArgument {
		t.Fatalf("a start outside the prefix: %v %q", st, p)
	}
	// History is collected past a 1 ms retention: the leader moves the
	// horizon about once a second.
	c.Eventually("the horizon to pass "+strconv.FormatUint(r1, 10), func() bool {
		tc.put("p/a", "again")
		return store.Horizon() > r1
	})
	st, p := getAt("p/a", r1)
	msg, _ := wire.DecodeError(p)
	if rev, oldest, ok := wire.ParseCompacted(msg); st != wire.StatusCompacted || !ok || rev != r1 || oldest != store.Horizon() {
		t.Fatalf("GET_AT below the horizon: %v %q", st, msg)
	}
	if st, _, _ := tc.do(wire.OpScanAt, wire.AppendScanAt(nil, wire.ScanAt{ReadTS: r1, Prefix: []byte("p/")})); st != wire.StatusCompacted {
		t.Fatalf("SCAN_AT below the horizon: %v", st)
	}
}

// TestTxnStaleLeaderCannotCommit: BEGIN takes no ReadIndex round, so a
// leader cut off from the majority (which elected another and took a
// write) still begins transactions, at a snapshot without that write. None
// of them may commit: a read-only commit confirms the leadership first
// (and is refused), a writing one cannot reach the log in its term; after
// healing, the write-skew-free history holds: the old leader's
// transaction wrote nothing.
func TestTxnStaleLeaderCannotCommit(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{manual: true})
	lead := c.WaitLeader()
	old := txnConn{t, dial(t, c.addr(lead))}
	old.put("k", "before")
	newLead := c.isolateLeader(lead)
	nl := txnConn{t, dial(t, c.addr(newLead))}
	nl.put("k", "after")

	// The old leader still believes it leads: BEGIN answers, with a
	// snapshot that misses "after".
	ro, _ := old.begin()
	if st, v := old.op(ro, wire.TxnOpGet, "k", ""); st != wire.StatusOK || string(v[4:]) != "before" {
		t.Fatalf("read in the stale snapshot: %v %q", st, v)
	}
	rw, _ := old.begin()
	old.mustOp(rw, wire.TxnOpGet, "k", "")
	old.mustOp(rw, wire.TxnOpPut, "other", "from the stale leader")

	// A read-only commit must confirm the leadership: cut off, it cannot
	// (it ends with an error after the request timeout instead of
	// answering the stale snapshot as committed).
	if st, p := old.commit(ro); st == wire.StatusOK {
		t.Fatalf("a read-only transaction of the deposed leader committed at its stale snapshot: %q", p)
	}
	// A writing commit cannot reach the log in its term.
	done := make(chan wire.Status, 1)
	go func() {
		st, _ := old.commit(rw)
		done <- st
	}()
	c.Net.Heal()
	var got wire.Status
	for i := 0; ; i++ {
		select {
		case got = <-done:
		default:
			if i == 2000 {
				t.Fatal("the stale leader's commit did not end")
			}
			c.Tick(1)
			continue
		}
		break
	}
	if got == wire.StatusOK {
		t.Fatal("a writing transaction of the deposed leader committed")
	}
	c.Eventually("the old leader to learn the new term", func() bool { return !c.node(lead).Node().IsLeader() })
	if st, v, _ := nl.get("other"); st != wire.StatusNotFound {
		t.Fatalf("the stale leader's transaction wrote: %v %q", st, v)
	}
}
