package raftnode

import (
	"fmt"
	"testing"
	"time"

	"go.etcd.io/raft/v3"

	"github.com/kayadb/kayadb/internal/vfs"
)

// TestLocalReadIndex: a leader that is the only voter answers a read index
// without a round, and only once an entry of its term is committed; a
// node with other voters, or that does not lead, never does.
func TestLocalReadIndex(t *testing.T) {
	t.Run("sole voter", func(t *testing.T) {
		e := newTestEnv(t)
		tn := e.addNode(1, []uint64{1})
		tn.n.Campaign() // at Start, the bootstrap's configuration was not applied yet
		e.waitIdle(1)
		st := tn.n.Status()
		if st.Role != raft.StateLeader {
			t.Fatalf("a sole voter did not lead: %+v", st)
		}
		idx, ok := tn.n.LocalReadIndex()
		if !ok || idx != st.Commit || idx == 0 {
			t.Fatalf("LocalReadIndex = %d, %v; want the commit index %d", idx, ok, st.Commit)
		}
		e.propose(1, "x")
		if idx, ok := tn.n.LocalReadIndex(); !ok || idx != tn.n.Status().Commit {
			t.Fatalf("after a write: LocalReadIndex = %d, %v; want %d", idx, ok, tn.n.Status().Commit)
		}
	})
	t.Run("term entry not committed", func(t *testing.T) {
		// The log cannot be written (a full disk): the node leads, but the
		// entry of its term is not durable, so not committed: what it
		// has committed may miss writes acknowledged in an earlier term.
		e := newTestEnv(t)
		tn := e.addNode(1, []uint64{1})
		n := tn.n
		// Votes (hard state only) are saved; the term's entry is not.
		tn.st.mu.Lock()
		tn.st.failEntries = true
		tn.st.mu.Unlock()
		tn.st.setFail(fmt.Errorf("raftlog: writing segment: %w", vfs.ErrNoSpace))
		n.Campaign()
		e.waitIdle(1)
		if !n.IsLeader() {
			t.Fatalf("not leading: %+v", n.Status())
		}
		if idx, ok := n.LocalReadIndex(); ok {
			t.Fatalf("LocalReadIndex = %d before the term's entry was committed", idx)
		}
		tn.st.setFail(nil)
		e.tick(1, 1) // the stalled Ready is retried
		if idx, ok := n.LocalReadIndex(); !ok || idx != n.Status().Commit {
			t.Fatalf("after the term's entry committed: LocalReadIndex = %d, %v (status %+v)", idx, ok, n.Status())
		}
	})
	t.Run("three voters", func(t *testing.T) {
		e := startLeader1(t)
		for id := uint64(1); id <= 3; id++ {
			if idx, ok := e.nodes[id].n.LocalReadIndex(); ok {
				t.Fatalf("node %d of three voters: LocalReadIndex = %d without a round", id, idx)
			}
		}
	})
}

// TestLeaseReads: with LeaseReads, the leader of three answers a read
// index without a round while a quorum's replies are fresh; once no reply
// came for the lease (a partition, or the leader paused: its clock runs
// on), it asks for rounds again, although it still leads (its ticks,
// which CheckQuorum counts, stopped too).
func TestLeaseReads(t *testing.T) {
	e := newTestEnv(t)
	const tick = 4 * time.Millisecond // lease: 9 ticks / 2 = 18 ms
	for id := uint64(1); id <= 3; id++ {
		tn := &testNode{st: &testStorage{MemoryStorage: raft.NewMemoryStorage()},
			sm: &testSM{applies: map[uint64]int{}}, tick: newManualTicker()}
		n, err := New(Config{ID: id, Peers: []uint64{1, 2, 3}, Log: tn.st, SM: tn.sm, Ticker: tn.tick,
			TickInterval: tick, LeaseReads: true, Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		tn.n = n
		e.nodes[id] = tn
		n.Start(&testTransport{env: e, id: id})
		e.waitIdle(id)
	}
	lead := e.nodes[1].n
	lead.Campaign()
	e.waitIdle(1)
	e.deliver(0)
	if !lead.IsLeader() {
		t.Fatalf("node 1 did not win: %s", e.status())
	}
	// A heartbeat round: the followers' replies start the lease.
	e.tick(1, 1)
	e.deliver(0)
	idx, ok := lead.LocalReadIndex()
	if !ok || idx != lead.Status().Commit {
		// The lease is 18 ms: a very slow machine may lose it before
		// this check, so give it more rounds before failing.
		for i := 0; i < 100 && !ok; i++ {
			e.tick(1, 1)
			e.deliver(0)
			idx, ok = lead.LocalReadIndex()
		}
		if !ok {
			t.Fatalf("the leader of three with fresh replies: LocalReadIndex = %d, %v", idx, ok)
		}
	}
	for _, id := range []uint64{2, 3} {
		if _, ok := e.nodes[id].n.LocalReadIndex(); ok {
			t.Fatalf("follower %d answered a read index locally", id)
		}
	}
	// No reply arrives any more (the messages are not delivered, and no
	// tick comes, as for a paused leader): the lease runs out while the
	// node still leads.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := lead.LocalReadIndex(); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lease never expired without replies")
		}
		time.Sleep(time.Millisecond)
	}
	if !lead.IsLeader() {
		t.Fatal("the leader stepped down; the test wants it leading with its lease expired")
	}
	// Replies again: the lease is back.
	e.tick(1, 1)
	e.deliver(0)
	if _, ok := lead.LocalReadIndex(); !ok {
		t.Log("the lease did not come back at once (a slow machine); not an error")
	}
}
