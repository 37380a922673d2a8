package kv_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/clustertest"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/raftnode"
	pb "go.etcd.io/raft/v3/raftpb"
)

// forgedEntry is a committed command a correct node never proposes: one
// valid put followed by an unknown operation, in one entry.
func forgedEntry() []byte {
	data := []byte{1, 2, 1}
	data = binary.LittleEndian.AppendUint64(data, 1<<62)
	data = binary.AppendUvarint(data, 6)
	data = append(data, "forged"...)
	data = binary.AppendUvarint(data, 1)
	data = append(data, 'x')
	data = append(data, 77) // unknown operation
	data = binary.LittleEndian.AppendUint64(data, 1<<62+1)
	data = binary.AppendUvarint(data, 1)
	return append(data, 'k')
}

// TestUndecodableEntryOnACluster: an entry whose command does not decode is
// committed through raft on a 3-node cluster. Every node applies it as a
// no-op (none of its commands, not even the valid first one), stays up,
// applies the entries after it, restarts cleanly, and agrees on the data.
// Before, every node stopped on it, at every restart.
func TestUndecodableEntryOnACluster(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{})
	c.Elect(1)
	c.Put("before", "1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, data := range [][]byte{forgedEntry(), {9, 9, 9}, {1}} {
		if err := c.Node(1).Raft.Propose(ctx, data); err != nil {
			t.Fatal(err)
		}
	}
	c.Put("after", "2")
	c.WaitApplied(c.Node(1).Store.AppliedIndex())
	check := func(when string) {
		t.Helper()
		for _, id := range c.IDs() {
			n := c.Node(id)
			select {
			case <-n.Raft.Done():
				t.Fatalf("%s: node %d stopped: %v", when, id, n.Raft.Err())
			default:
			}
			for k, want := range map[string]string{"before": "1", "after": "2"} {
				if v, err := c.Get(id, k); err != nil || v != want {
					t.Fatalf("%s: node %d: %s = %q, %v; want %q", when, id, k, v, err, want)
				}
			}
			if _, err := c.Get(id, "forged"); !errors.Is(err, engine.ErrNotFound) {
				t.Fatalf("%s: node %d applied part of the invalid entry: %v", when, id, err)
			}
		}
	}
	check("after the invalid entries")
	for _, id := range c.IDs() {
		if got := c.Node(id).Store.RejectedEntries(); got != 3 {
			t.Fatalf("node %d counted %d rejected entries, want 3", id, got)
		}
	}
	applied := c.Node(1).Store.AppliedIndex()
	for _, id := range c.IDs() {
		c.Restart(id)
	}
	c.Elect(2)
	c.WaitApplied(applied)
	check("after a restart of every node")
	c.Put("later", "3")
	c.WaitApplied(c.Node(2).Store.AppliedIndex())
	for _, id := range c.IDs() {
		if v, err := c.Get(id, "later"); v != "3" || err != nil {
			t.Fatalf("node %d: later = %q, %v", id, v, err)
		}
	}
	_ = fmt.Sprint()
}

// TestVersionsOnACluster: on a 3-node cluster, writes get increasing
// revisions, GetAt and ScanAt on the leader read past revisions
// linearizably (a follower refuses: not the leader), every node reads the
// same history locally, a custom command proposed with Propose is
// evaluated in the apply on every node (its result and revision come back
// to the proposer), and the leader's garbage collection moves the horizon
// on every node alike: reads below it answer "compacted" everywhere.
func TestVersionsOnACluster(t *testing.T) {
	const opCAS = kv.OpCustomMin + 1
	// opCAS: body = len u8 | key | old | 0x00 | new (no 0x00 in old):
	// put new if the latest value is old.
	cas := func(tx *kv.ApplyTx, body []byte) ([]byte, error) {
		if len(body) < 1 || len(body) < 1+int(body[0]) {
			return nil, errors.New("short body")
		}
		key, rest := body[1:1+int(body[0])], body[1+int(body[0]):]
		i := bytes.IndexByte(rest, 0)
		if i < 0 {
			return nil, errors.New("no separator")
		}
		cur, err := tx.Get(key)
		if err != nil && !errors.Is(err, engine.ErrNotFound) {
			return nil, err
		}
		if string(cur.Value) != string(rest[:i]) {
			return []byte("mismatch"), nil
		}
		return []byte("swapped"), tx.Put(key, rest[i+1:])
	}
	var retention atomic.Int64
	c := clustertest.New(t, clustertest.Options{StoreOptions: func(id uint64, o *kv.Options) {
		o.Collector = kv.NewCollector()
		o.Evaluators = map[byte]kv.Evaluator{opCAS: cas}
		o.Retention, o.GCInterval = time.Duration(retention.Load()), 5*time.Millisecond
	}})
	c.Elect(1)
	leader := c.Node(1).Store
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var revs []uint64
	for i := 0; i < 5; i++ {
		c.Put("k", fmt.Sprintf("v%d", i))
		revs = append(revs, leader.AppliedTS())
	}
	for i := 1; i < len(revs); i++ {
		if revs[i] <= revs[i-1] {
			t.Fatalf("revisions do not increase: %v", revs)
		}
	}
	body := append([]byte{1, 'k'}, "v4\x00swapped-in"...)
	res, err := leader.Propose(ctx, opCAS, body)
	if err != nil || string(res.Data) != "swapped" || res.TS <= revs[4] {
		t.Fatalf("CAS: %q@%d %v", res.Data, res.TS, err)
	}
	if res, err := leader.Propose(ctx, opCAS, body); err != nil || string(res.Data) != "mismatch" {
		t.Fatalf("second CAS: %q %v", res.Data, err)
	}
	if _, err := leader.Propose(ctx, opCAS, []byte{9}); !errors.Is(err, kv.ErrRejectedEntry) {
		t.Fatalf("a command its evaluator refuses: %v", err)
	}
	if _, err := leader.Propose(ctx, kv.OpCustomMin+5, nil); !errors.Is(err, engine.ErrInvalidArgument) {
		t.Fatalf("an op without an evaluator was proposed: %v", err)
	}
	c.WaitApplied(leader.AppliedIndex())
	for i, rev := range revs {
		v, err := leader.GetAt(ctx, []byte("k"), rev)
		if err != nil || string(v.Value) != fmt.Sprintf("v%d", i) || v.TS != rev {
			t.Fatalf("leader: k at %d: %q@%d %v", rev, v.Value, v.TS, err)
		}
		items, err := leader.ScanAt(ctx, nil, rev, 10, 1<<20)
		if err != nil || len(items) != 1 || string(items[0].Value) != fmt.Sprintf("v%d", i) {
			t.Fatalf("leader: scan at %d: %v %v", rev, items, err)
		}
		for _, id := range c.IDs() {
			v, err := c.Node(id).Store.ReadAt([]byte("k"), rev)
			if err != nil || string(v.Value) != fmt.Sprintf("v%d", i) {
				t.Fatalf("node %d: k at %d: %q %v", id, rev, v.Value, err)
			}
		}
	}
	if _, err := c.Node(2).Store.GetAt(ctx, []byte("k"), revs[0]); !errors.Is(err, kv.ErrNotLeader) {
		t.Fatalf("a follower served a linearizable read at a revision: %v", err)
	}
	if _, err := leader.GetAt(ctx, []byte("k"), leader.AppliedTS()+1000); !errors.Is(err, kv.ErrFutureRevision) {
		t.Fatalf("a future revision: %v", err)
	}

	// Garbage collection: restart the nodes with a tiny retention. The
	// leader moves the horizon; every node applies the same one, and
	// compactions collect the history below it.
	retention.Store(int64(time.Millisecond))
	for _, id := range c.IDs() {
		c.Restart(id)
	}
	c.Elect(2)
	c.Put("k", "after-restart")
	deadline := time.Now().Add(10 * time.Second)
	for c.Node(2).Store.Horizon() <= revs[4] {
		if time.Now().After(deadline) {
			t.Fatalf("the horizon did not move past %d: %d", revs[4], c.Node(2).Store.Horizon())
		}
		c.Put("tick", "x") // something to apply; the loop proposes meanwhile
	}
	// Stop the collection (a restart without retention; the horizon is
	// durable) to compare the nodes at one log position.
	retention.Store(0)
	for _, id := range c.IDs() {
		c.Restart(id)
	}
	c.Elect(3)
	c.Put("k", "after-restart")
	c.WaitApplied(c.Node(3).Store.AppliedIndex())
	h := c.Node(3).Store.Horizon()
	if h <= revs[4] {
		t.Fatalf("the horizon went back to %d after a restart", h)
	}
	for _, id := range c.IDs() {
		s := c.Node(id).Store
		if s.Horizon() != h {
			t.Fatalf("node %d has horizon %d, the leader %d", id, s.Horizon(), h)
		}
		_, err := s.ReadAt([]byte("k"), revs[0])
		var ce *kv.CompactedError
		if !errors.As(err, &ce) || ce.Oldest != h || !strings.Contains(err.Error(), fmt.Sprintf("the oldest readable revision is %d", h)) {
			t.Fatalf("node %d: a read below the horizon: %v", id, err)
		}
		if v, err := s.ReadAt([]byte("k"), 0); err != nil || string(v.Value) != "after-restart" {
			t.Fatalf("node %d: latest k: %q %v", id, v.Value, err)
		}
		_ = s.DB(func(db *engine.DB) error {
			if err := db.Compact(nil, nil); err != nil {
				t.Fatal(err)
			}
			if db.Metrics().Compaction.FilterDropped == 0 {
				t.Fatalf("node %d collected nothing below horizon %d", id, h)
			}
			return nil
		})
	}
}

// TestRefusedProposalAnswersAtOnce: a write that raft refuses (too much
// uncommitted data on a leader cut off from its followers) is answered
// ErrNotLeader as soon as raft refuses it — the write did not happen, and
// the client may retry elsewhere — not after the request timeout.
func TestRefusedProposalAnswersAtOnce(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{Configure: func(_ uint64, cfg *raftnode.Config) {
		cfg.MaxUncommittedBytes = 1024
	}})
	c.Elect(1)
	c.Put("before", "1")
	leader := c.Node(1).Store
	c.Net.Isolate(1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Taken by raft (nothing was uncommitted), never committed.
	if _, err := leader.StartPut(ctx, []byte("big"), make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	wait, err := leader.StartPut(ctx, []byte("next"), make([]byte, 4096))
	if err != nil {
		t.Fatal(err)
	}
	// The store's request timeout is 10 s (clustertest): the refusal must
	// come long before.
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := wait(wctx); !errors.Is(err, kv.ErrNotLeader) {
		t.Fatalf("a write raft refused: %v, want ErrNotLeader at once", err)
	}
	c.Net.Heal()
}

// TestReadRoundsRunByReaders: linearizable reads on the leader of three,
// concurrent with writes. A read with no round under way runs one itself
// (kv.Barrier), the others gather for the read loop; every read sees
// every write acknowledged before it started, all of them finish, and the
// reads share rounds.
func TestReadRoundsRunByReaders(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{})
	c.Elect(1)
	leader := c.Node(1).Store
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.Put("n", "0")
	var acked atomic.Int64
	stop := make(chan struct{})
	writerDone := make(chan error, 1)
	go func() {
		for i := int64(1); ; i++ {
			select {
			case <-stop:
				writerDone <- nil
				return
			default:
			}
			if err := leader.Put(ctx, []byte("n"), []byte(fmt.Sprint(i))); err != nil {
				writerDone <- err
				return
			}
			acked.Store(i)
		}
	}()
	rounds := leader.ReadRounds()
	const readers, each = 16, 40
	errs := make(chan error, readers)
	for range readers {
		go func() {
			for range each {
				before := acked.Load()
				v, err := leader.Get(ctx, []byte("n"))
				if err != nil {
					errs <- err
					return
				}
				var got int64
				fmt.Sscan(string(v), &got)
				if got < before {
					errs <- fmt.Errorf("a read returned %d after write %d was acknowledged", got, before)
					return
				}
			}
			errs <- nil
		}()
	}
	for range readers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	ran := leader.ReadRounds() - rounds
	if ran == 0 || ran >= readers*each {
		t.Fatalf("%d reads ran %d ReadIndex rounds; want at least one, and fewer than reads (they share)", readers*each, ran)
	}
	t.Logf("%d reads, %d rounds", readers*each, ran)
}

// gatedLog holds every Save while its gate is shut: a raft log whose disk
// stalls, which stops a single voter's loop (it writes on the loop).
type gatedLog struct {
	raftnode.Storage
	shut atomic.Bool
	open chan struct{}
}

func (g *gatedLog) Save(hs *pb.HardState, ents []*pb.Entry, sync bool) error {
	if g.shut.Load() {
		<-g.open
	}
	return g.Storage.Save(hs, ents, sync)
}

// TestProposalQueueFullTimesOut: when the raft node's proposal queue is
// full (its loop stalled on a disk that does not answer), a write waits
// for room only until its context ends, then fails with ErrTimeout; it
// was never queued, so it never happens, and its waiter is gone. The
// writes queued before it all commit once the disk answers.
func TestProposalQueueFullTimesOut(t *testing.T) {
	gl := &gatedLog{open: make(chan struct{})}
	var opened sync.Once
	openGate := func() {
		opened.Do(func() {
			gl.shut.Store(false)
			close(gl.open)
		})
	}
	c := clustertest.New(t, clustertest.Options{Nodes: 1, Configure: func(_ uint64, cfg *raftnode.Config) {
		gl.Storage = cfg.Log
		cfg.Log = gl
	}})
	// Registered after the cluster's own cleanup, so run before it: a
	// stopping node must not wait on a shut gate.
	t.Cleanup(openGate)
	c.Elect(1)
	c.Put("before", "1")
	s := c.Node(1).Store
	gl.shut.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The loop takes the first write and stalls in its Save; the next
	// ones fill the queue (1,024), and then some: a proposal the loop has
	// taken out of the queue before stalling leaves room for one more.
	var waits []func(context.Context) error
	queued := 0
	for i := 0; queued < 2000; i++ {
		wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		start := time.Now()
		wait, err := s.StartPut(wctx, []byte(fmt.Sprintf("k%05d", i)), []byte("v"))
		wcancel()
		if errors.Is(err, kv.ErrTimeout) {
			if d := time.Since(start); d < 150*time.Millisecond {
				t.Fatalf("write %d: ErrTimeout after %v, before its 200ms context ended", i, d)
			}
			if got := s.PendingWrites(); got != queued {
				t.Fatalf("%d writes waiting after the refused one, want %d (the refused one's waiter left behind?)", got, queued)
			}
			openGate()
			for j, w := range waits {
				if err := w(ctx); err != nil {
					t.Fatalf("queued write %d: %v", j, err)
				}
			}
			c.Put("after", "1")
			if _, err := c.Get(1, fmt.Sprintf("k%05d", i)); !errors.Is(err, engine.ErrNotFound) {
				t.Fatalf("the write refused with ErrTimeout was applied anyway (get: %v)", err)
			}
			if v, err := c.Get(1, fmt.Sprintf("k%05d", i-1)); err != nil || v != "v" {
				t.Fatalf("the last queued write: %q, %v", v, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		waits = append(waits, wait)
		queued++
	}
	t.Fatalf("%d writes queued behind a stalled loop: the queue never filled", queued)
}

// TestEarlyAckedWriteIsInLeaderApplied: a put answered at its commit,
// before its run is applied (kv.Store.StartPutFunc), is seen by what
// follows its answer: LeaderApplied (a transaction's BEGIN) waits until
// the put is applied, and a Barrier (a read) too. Without the wait for the
// commit index, BEGIN took a snapshot without the acknowledged put.
func TestEarlyAckedWriteIsInLeaderApplied(t *testing.T) {
	const opGate = kv.OpCustomMin + 2
	gates := [3]chan struct{}{nil, make(chan struct{}), make(chan struct{})}
	var opened [3]sync.Once
	open := func(i int) { opened[i].Do(func() { close(gates[i]) }) }
	// On a failure, before the cluster stops: its apply goroutine must
	// not stay held.
	defer open(1)
	defer open(2)
	entered := make(chan byte, 2)
	gate := func(tx *kv.ApplyTx, body []byte) ([]byte, error) {
		entered <- body[0]
		<-gates[body[0]]
		return nil, nil
	}
	c := clustertest.New(t, clustertest.Options{Nodes: 1, StoreOptions: func(id uint64, o *kv.Options) {
		o.Evaluators = map[byte]kv.Evaluator{opGate: gate}
	}})
	c.Elect(1)
	s, rn := c.Node(1).Store, c.Node(1).Raft
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	before := s.AppliedIndex()
	proposed := make(chan error, 2)
	go func() { _, err := s.Propose(ctx, opGate, []byte{1}); proposed <- err }()
	if b := <-entered; b != 1 {
		t.Fatalf("gate %d entered first", b)
	}
	// The apply goroutine is held in gate 1: the put and gate 2 commit
	// meanwhile, and are applied as one run once it lets go.
	acked := make(chan error, 1)
	if err := s.StartPutFunc(ctx, []byte("k"), []byte("v"), func(err error) { acked <- err }); err != nil {
		t.Fatal(err)
	}
	go func() { _, err := s.Propose(ctx, opGate, []byte{2}); proposed <- err }()
	for rn.Commit() < before+3 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the loop hands both runs on right after publishing the commit
	open(1)
	select {
	case err := <-acked:
		if err != nil {
			t.Fatalf("put: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the put was not answered")
	}
	if b := <-entered; b != 2 {
		t.Fatalf("gate %d entered second", b)
	}
	if _, err := c.Get(1, "k"); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("the put was applied before gate 2 (%v): its answer was not early, the test proves nothing", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	err := s.LeaderApplied(short)
	cancelShort()
	if err == nil {
		t.Fatal("LeaderApplied returned while an acknowledged put was not applied")
	}
	short, cancelShort = context.WithTimeout(ctx, 100*time.Millisecond)
	err = s.Barrier(short)
	cancelShort()
	if err == nil {
		t.Fatal("Barrier returned while an acknowledged put was not applied")
	}
	open(2)
	if err := s.LeaderApplied(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(1, "k"); err != nil || v != "v" {
		t.Fatalf("after LeaderApplied: k = %q, %v", v, err)
	}
	for range 2 {
		if err := <-proposed; err != nil {
			t.Fatal(err)
		}
	}
}
