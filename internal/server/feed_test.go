package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kayadb/kayadb/client"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/wire"
)

// committed is the history of the keys under prefix as node id applied
// it: what a change feed and a watch must deliver.
func committed(t *testing.T, s *Server, prefix string) []kv.Change {
	t.Helper()
	var out []kv.Change
	pos := uint64(0)
	for {
		page, next, err := s.Store().ReadChanges(pos, 0, func(k []byte) bool { return strings.HasPrefix(string(k), prefix) },
			kv.ChangeBounds{MaxChanges: 1000, MaxBytes: 1 << 20, MaxScanned: 10000})
		if err != nil {
			t.Fatalf("the committed history: %v", err)
		}
		out = append(out, page...)
		if next >= s.Store().AppliedTS() {
			return out
		}
		pos = next
	}
}

func describeEvents(evs []client.ChangeEvent) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "%d %s %s=%s\n", e.Seq, e.Type, e.Key, e.Value)
	}
	return b.String()
}

func describeHistory(cs []kv.Change) string {
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "%d %s %s=%s\n", c.Rev, client.EventType(c.Op), c.Key, c.Value)
	}
	return b.String()
}

// putRetry puts k=v, again after an ambiguous outcome (a connection to a
// node that was stopped): the history may then hold the write twice,
// which the tests compare against, not against the calls.
func putRetry(t *testing.T, cl *client.Client, k, v string) {
	t.Helper()
	for i := 0; ; i++ {
		err := cl.Put(context.Background(), []byte(k), []byte(v))
		if err == nil {
			return
		}
		if !errors.Is(err, client.ErrAmbiguous) || i == 5 {
			t.Fatalf("put %s: %v", k, err)
		}
	}
}

func newFeedClient(t *testing.T, addrs ...string) *client.Client {
	t.Helper()
	cl, err := client.New(addrs, &client.Options{RequestTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// TestCDCAcrossLeaderFailover: a consumer polls and checkpoints; the leader
// is killed; on the new leader the consumer reads its stored position back
// and polls on: the events it got, in all, are the committed history of
// the cluster, each once, with the same seqs (commit revisions) every
// node has. A follower answers NOT_LEADER with the leader's address.
func TestCDCAcrossLeaderFailover(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.WaitLeader()
	cl := newFeedClient(t, c.addr(1), c.addr(2), c.addr(3))
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		if err := cl.Put(ctx, []byte(fmt.Sprintf("k%02d", i%7)), []byte(fmt.Sprintf("v%d", i))); err != nil {
			t.Fatal(err)
		}
		if i%5 == 4 {
			if err := cl.Delete(ctx, []byte(fmt.Sprintf("k%02d", i%7))); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The original's bytes: a follower redirects.
	f := c.follower(lead)
	st, p, err := dial(t, c.addr(f)).do(wire.OpCDCPoll, wire.AppendCDCPoll(nil, wire.CDCPoll{Consumer: "c1", Limit: 10}))
	if err != nil || st != wire.StatusNotLeader || string(p) != c.addr(lead) {
		t.Fatalf("poll on a follower: %v %v %q, want NOT_LEADER %s", st, err, p, c.addr(lead))
	}
	// Name rules, byte for byte the original's.
	st, p, _ = dial(t, c.addr(lead)).do(wire.OpCDCPoll, wire.AppendCDCPoll(nil, wire.CDCPoll{Consumer: "a b", Limit: 10}))
	if msg, _ := wire.DecodeError(p); st != wire.StatusInvalidArgument || msg != wire.MsgCDCConsumerChars {
		t.Fatalf("bad name: %v %q", st, msg)
	}

	var got []client.ChangeEvent
	pos := uint64(0)
	for len(got) < 12 {
		evs, err := cl.CDCPoll(ctx, "c1", pos, 5)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 || len(evs) > 5 {
			t.Fatalf("a poll of 5 from %d returned %d events", pos, len(evs))
		}
		got = append(got, evs...)
		pos = evs[len(evs)-1].Seq
	}
	// The original's checkpoint (the last seq this leader sent), then ours.
	if err := cl.CDCCheckpointLast(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if stored, err := cl.CDCPosition(ctx, "c1"); err != nil || stored != pos {
		t.Fatalf("stored position %d, %v; want %d", stored, err, pos)
	}
	if err := cl.CDCCheckpoint(ctx, "c1", pos); err != nil {
		t.Fatal(err)
	}

	c.Stop(lead)
	for i := 20; i < 30; i++ {
		putRetry(t, cl, fmt.Sprintf("k%02d", i%7), fmt.Sprintf("v%d", i))
	}
	newLead := c.WaitLeader()
	if newLead == lead {
		t.Fatal("the stopped node leads")
	}
	stored, err := cl.CDCPosition(ctx, "c1")
	if err != nil || stored != pos {
		t.Fatalf("the new leader's stored position %d, %v; want %d", stored, err, pos)
	}
	// The original's checkpoint has nothing to store on a new leader that
	// sent nothing: an error, not the original's silent 0.
	if err := cl.CDCCheckpointLast(ctx, "c1"); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("a checkpoint without a poll on the new leader: %v", err)
	}
	for {
		evs, err := cl.CDCPoll(ctx, "c1", stored, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		got = append(got, evs...)
		stored = evs[len(evs)-1].Seq
	}
	want := committed(t, c.node(newLead), "k")
	if describeEvents(got) != describeHistory(want) {
		t.Fatalf("the consumer got\n%s\nthe committed history is\n%s", describeEvents(got), describeHistory(want))
	}
	if len(want) < 34 {
		t.Fatalf("history of %d changes, want at least 34 (30 puts, 4 deletes)", len(want))
	}
	// Every node has the same history, seqs included.
	c.Start(lead)
	c.waitConverged(1, 2, 3)
	for id, s := range c.Nodes() {
		if h := describeHistory(committed(t, s, "k")); h != describeHistory(want) {
			t.Fatalf("node %d's history differs:\n%s", id, h)
		}
	}
	if err := cl.CDCDelete(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.CDCPosition(ctx, "c1"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("position after delete: %v", err)
	}
}

// TestWatchResumesAcrossLeaderChange: a watch on a prefix, served by the
// leader, survives the leader's death: the client resumes on another node
// after the last revision it received and, in all, gets every committed
// change of the prefix once, in order, with the history's revisions, and
// nothing of other keys.
func TestWatchResumesAcrossLeaderChange(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.WaitLeader()
	addrs := []string{c.addr(lead)}
	for _, id := range c.IDs() {
		if id != lead {
			addrs = append(addrs, c.addr(id))
		}
	}
	cl := newFeedClient(t, addrs...) // the first session goes to the leader
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := cl.Put(ctx, []byte("w/before"), []byte("0")); err != nil {
		t.Fatal(err)
	}
	first := c.settled(lead).AppliedTS()
	ch := cl.Watch(ctx, []byte("w/"), client.WithStartRevision(first))
	var got []client.ChangeEvent
	recv := func(n int) {
		t.Helper()
		for len(got) < n {
			select {
			case r, ok := <-ch:
				if !ok || r.Err != nil {
					t.Fatalf("the watch ended: %v", r.Err)
				}
				for _, e := range r.Events {
					got = append(got, client.ChangeEvent{Seq: e.Revision, Type: e.Type, Key: e.Key, Value: e.Value})
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("waited 20 s for event %d; got\n%s", n, describeEvents(got))
			}
		}
	}
	for i := 0; i < 10; i++ {
		if err := cl.Put(ctx, []byte(fmt.Sprintf("w/%d", i)), []byte("a")); err != nil {
			t.Fatal(err)
		}
		if err := cl.Put(ctx, []byte(fmt.Sprintf("x/%d", i)), []byte("no")); err != nil {
			t.Fatal(err)
		}
	}
	recv(11)
	c.Stop(lead)
	for i := 0; i < 10; i++ {
		putRetry(t, cl, fmt.Sprintf("w/%d", i), "b")
		if i == 3 {
			if err := cl.Delete(ctx, []byte("w/0")); err != nil {
				t.Fatal(err)
			}
		}
	}
	newLead := c.WaitLeader()
	want := committed(t, c.node(newLead), "w/")
	recv(len(want))
	if describeEvents(got) != describeHistory(want) {
		t.Fatalf("the watch got\n%s\nthe committed history is\n%s", describeEvents(got), describeHistory(want))
	}
	// Nothing more arrives (no repeats).
	select {
	case r := <-ch:
		t.Fatalf("an extra response after the history: %+v", r)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestSlowWatcherCancelled: a client that creates a watch and reads
// nothing does not slow writes down, nor another watcher: its watch is
// cancelled as slow (with the revision to resume from), while the other
// watcher gets every change.
func TestSlowWatcherCancelled(t *testing.T) {
	// A blocked write would wait forever: a generous request timeout keeps
	// a busy machine's slow fsyncs from passing for one.
	c := newTestCluster(t, 1, func(_ uint64, cfg *Config) { cfg.RequestTimeout = 10 * time.Second })
	lead := c.WaitLeader()
	slow := dial(t, c.addr(lead))
	st, p, err := slow.do(wire.OpWatchCreate, wire.AppendWatchCreate(nil, wire.WatchCreate{Kind: wire.WatchPrefix, Key: []byte("s/")}))
	if err != nil || st != wire.StatusOK {
		t.Fatalf("create: %v %v %q", st, err, p)
	}
	created, err := wire.DecodeWatchCreated(p)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New([]string{c.addr(lead)}, &client.Options{RequestTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fast := cl.Watch(ctx, []byte("s/"), client.WithStartRevision(created.StartRevision), client.WithWatchBuffer(4096))
	// 2,000 commits of 16 KiB: far more than the slow watcher's buffer
	// (1,024 commits, 8 MiB), its connection's reply bytes (8 MiB) and the
	// socket's buffers. Every put must succeed within its timeout.
	value := strings.Repeat("v", 16<<10)
	const n = 2000
	for i := 0; i < n; i++ {
		if err := cl.Put(ctx, []byte(fmt.Sprintf("s/%04d", i)), []byte(value)); err != nil {
			t.Fatalf("put %d while a watcher reads nothing: %v", i, err)
		}
	}
	fastGot := 0
	for fastGot < n {
		select {
		case r := <-fast:
			if r.Err != nil {
				t.Fatalf("the reading watcher ended: %v", r.Err)
			}
			fastGot += len(r.Events)
		case <-time.After(20 * time.Second):
			t.Fatalf("the reading watcher got %d of %d", fastGot, n)
		}
	}
	// Now the slow client reads: events in order, then the cancellation.
	_ = slow.c.SetDeadline(time.Now().Add(20 * time.Second))
	var last uint64
	events := 0
	for {
		st, p, _, err := wire.ReadResponse(slow.r, nil)
		if err != nil {
			t.Fatalf("reading the slow watch after %d events: %v", events, err)
		}
		if st != wire.StatusWatchEvent {
			t.Fatalf("status %v on the watch connection", st)
		}
		ev, err := wire.DecodeWatchEvent(p)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind == wire.WatchEvents {
			for _, e := range ev.Events {
				if e.Seq <= last {
					t.Fatalf("revision %d after %d", e.Seq, last)
				}
				last = e.Seq
				events++
			}
			continue
		}
		if ev.Kind != wire.WatchCanceled || ev.Reason != wire.CancelSlow || !strings.Contains(ev.Message, "reads too slowly") {
			t.Fatalf("the slow watch ended with %+v", ev)
		}
		if ev.Revision != last+1 || events >= n {
			t.Fatalf("cancelled with resume revision %d after %d events (last %d)", ev.Revision, events, last)
		}
		break
	}
	if w := c.node(lead).hub.Watches(); w != 1 {
		t.Fatalf("%d watches open, want the reading one only", w)
	}
}

// TestCompactedStarts: below the GC horizon, a watch and a poll answer
// COMPACTED with the oldest available start or position; a registered
// consumer holds the horizon at its position until it is deleted.
func TestCompactedStarts(t *testing.T) {
	c := newTestCluster(t, 1, func(_ uint64, cfg *Config) { cfg.MVCCRetention = time.Millisecond })
	lead := c.WaitLeader()
	cl := newFeedClient(t, c.addr(lead))
	ctx := context.Background()
	s := c.node(lead)
	if err := cl.Put(ctx, []byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	hold := settledStore(t, s).AppliedTS()
	if err := cl.CDCCheckpoint(ctx, "holder", hold); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if err := cl.Put(ctx, []byte("a"), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	c.Eventually("the horizon to reach the consumer", func() bool { return s.Store().Horizon() == hold })
	time.Sleep(2 * time.Second) // two GC ticks: it stays there
	if h := s.Store().Horizon(); h != hold {
		t.Fatalf("the horizon moved to %d past the consumer at %d", h, hold)
	}
	if evs, err := cl.CDCPoll(ctx, "holder", hold, 100); err != nil || len(evs) != 5 {
		t.Fatalf("the consumer's changes: %d, %v", len(evs), err)
	}
	if err := cl.CDCDelete(ctx, "holder"); err != nil {
		t.Fatal(err)
	}
	if err := cl.Put(ctx, []byte("a"), []byte("last")); err != nil {
		t.Fatal(err)
	}
	c.Eventually("the horizon to pass the deleted consumer", func() bool { return s.Store().Horizon() > hold })
	h := s.Store().Horizon()

	var ce *client.CompactedError
	if _, err := cl.CDCPoll(ctx, "late", hold, 10); !errors.As(err, &ce) || ce.Oldest < h || ce.Revision != hold {
		t.Fatalf("a poll from a collected position: %v", err)
	}
	st, p, _ := dial(t, c.addr(lead)).do(wire.OpWatchCreate, wire.AppendWatchCreate(nil, wire.WatchCreate{Kind: wire.WatchKey, StartRevision: hold, Key: []byte("a")}))
	msg, _ := wire.DecodeError(p)
	start, oldest, ok := wire.ParseCDCCompacted(msg)
	if st != wire.StatusCompacted || !ok || start != hold || oldest < h+1 {
		t.Fatalf("a watch from a collected revision: %v %q", st, msg)
	}
	// The client's Watch ends with the same error.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r := <-cl.Watch(wctx, []byte("a"), client.WithKey(), client.WithStartRevision(hold))
	if !errors.As(r.Err, &ce) || ce.Oldest < h+1 {
		t.Fatalf("client.Watch from a collected revision: %+v", r)
	}
	// From the oldest start it names, the watch works.
	r = <-cl.Watch(wctx, []byte("a"), client.WithKey(), client.WithStartRevision(ce.Oldest), client.WithProgressNotify(100*time.Millisecond))
	if r.Err != nil {
		t.Fatalf("a watch from the oldest start: %v", r.Err)
	}
}

// TestTransactionChangesTogether: the writes of a transaction reach a CDC
// poll and a watch together, all with the transaction's commit revision,
// in one watch response, and a poll with a limit smaller than the
// transaction still returns it whole.
func TestTransactionChangesTogether(t *testing.T) {
	c := newTestCluster(t, 1)
	lead := c.WaitLeader()
	cl := newFeedClient(t, c.addr(lead))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := cl.Put(ctx, []byte("t/0"), []byte("before")); err != nil {
		t.Fatal(err)
	}
	start := c.settled(lead).AppliedTS()
	ch := cl.Watch(ctx, []byte("t/"), client.WithStartRevision(start+1))
	rev, err := cl.RunTxn(ctx, func(tx *client.Txn) error {
		for _, k := range []string{"t/1", "t/2", "t/3"} {
			if err := tx.Put(ctx, []byte(k), []byte("in-txn")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := cl.CDCPoll(ctx, "txn", start, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 || evs[0].Seq != rev || evs[2].Seq != rev {
		t.Fatalf("a poll of 1 after the transaction: %s, want its 3 writes at %d", describeEvents(evs), rev)
	}
	select {
	case r := <-ch:
		if r.Err != nil || len(r.Events) != 3 || r.Revision != rev {
			t.Fatalf("the watch's first response: %+v, want the 3 writes at %d", r, rev)
		}
		for _, e := range r.Events {
			if e.Revision != rev {
				t.Fatalf("an event of the transaction at %d, not %d", e.Revision, rev)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no watch response for the transaction")
	}
}
