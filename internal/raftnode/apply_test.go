package raftnode

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// openGate returns a gate for testSM and its opener, which the test's
// cleanup also calls (a node stops only once its Apply returns).
func openGate(t *testing.T) (chan struct{}, func()) {
	g := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(g) }) }
	t.Cleanup(open)
	return g, open
}

// TestApplyDoesNotHoldTheLoop: while the followers' state machines cannot
// apply (an engine stalled in a write), they still append, fsync and
// acknowledge new entries, answer heartbeats and stay followers, so the
// leader commits; what they could not apply is applied, in order and
// once, when the engine moves again. With the apply on the raft loop, the
// first blocked Apply stopped all of that.
func TestApplyDoesNotHoldTheLoop(t *testing.T) {
	e := startLeader1(t)
	gate, open := openGate(t)
	for _, id := range []uint64{2, 3} {
		e.nodes[id].sm.setGate(gate)
	}
	e.propose(1, "a")
	e.deliver(0)
	e.propose(1, "b")
	e.deliver(0)
	lead := e.nodes[1].n.Status()
	if lead.Applied != lead.Commit {
		t.Fatalf("the leader (not blocked) did not apply what it committed: %+v", lead)
	}
	_, data := e.nodes[1].sm.state()
	if !slices.Equal(data, []string{"5:a", "6:b"}) {
		t.Fatalf("leader applied %v, want [5:a 6:b]", data)
	}
	// More than an election timeout of heartbeats.
	for range 12 {
		e.tick(1, 1)
		e.deliver(0)
	}
	for _, id := range []uint64{2, 3} {
		st := e.nodes[id].n.Status()
		if st.Role != raft.StateFollower || st.Leader != 1 || st.Commit != 6 {
			t.Fatalf("node %d with its apply blocked: %+v; want a follower of 1 that committed 6", id, st)
		}
		if idx, _ := e.nodes[id].sm.state(); idx >= 5 {
			t.Fatalf("node %d applied %d through a closed gate", id, idx)
		}
	}
	if !e.nodes[1].n.IsLeader() {
		t.Fatalf("the leader lost its role while the followers' apply was blocked:\n%s", e.status())
	}
	for _, id := range []uint64{2, 3} {
		e.nodes[id].sm.setGate(nil)
	}
	open()
	for _, id := range []uint64{2, 3} {
		e.waitIdle(id)
		idx, data := e.nodes[id].sm.state()
		if idx != 6 || !slices.Equal(data, []string{"5:a", "6:b"}) {
			t.Fatalf("node %d after the gate opened: applied %d %v; want 6 [5:a 6:b]", id, idx, data)
		}
		if st := e.nodes[id].n.Status(); st.Applied != 6 {
			t.Fatalf("node %d publishes applied %d, want 6", id, st.Applied)
		}
		for i := uint64(1); i <= 6; i++ {
			if k := e.nodes[id].sm.applies[i]; k != 1 {
				t.Fatalf("node %d applied index %d %d times", id, i, k)
			}
		}
	}
}

// TestConfChangeWaitsForEarlierApplies: a configuration change committed
// behind entries the apply goroutine has not applied yet is applied (to
// raft and to the state machine) only after them, so the state machine
// sees the log's order; meanwhile the follower keeps following.
func TestConfChangeWaitsForEarlierApplies(t *testing.T) {
	e := startLeader1(t)
	e.nodes[2].sm.mu.Lock()
	confsBefore := len(e.nodes[2].sm.confs) // the bootstrap's
	e.nodes[2].sm.mu.Unlock()
	gate, open := openGate(t)
	e.nodes[2].sm.setGate(gate)
	e.propose(1, "a")
	cc := &pb.ConfChange{Type: pb.ConfChangeAddLearnerNode.Enum(), NodeId: new(uint64(4))}
	if err := e.nodes[1].n.ProposeConfChange(t.Context(), cc); err != nil {
		t.Fatal(err)
	}
	e.waitIdle(1)
	e.deliver(0)
	if st := e.nodes[2].n.Status(); len(st.Learners) != 0 || st.Commit < 6 {
		t.Fatalf("node 2 applied the change before the entry ahead of it, or did not commit it: %+v", st)
	}
	e.nodes[2].sm.mu.Lock()
	confs := len(e.nodes[2].sm.confs)
	e.nodes[2].sm.mu.Unlock()
	if confs != confsBefore {
		t.Fatalf("node 2's state machine got the change before the entry ahead of it")
	}
	e.tick(1, 1)
	e.deliver(0) // heartbeats still answered
	if !e.nodes[1].n.IsLeader() || e.nodes[2].n.Status().Leader != 1 {
		t.Fatalf("the cluster lost its leader:\n%s", e.status())
	}
	e.nodes[2].sm.setGate(nil)
	open()
	e.waitIdle(2)
	st := e.nodes[2].n.Status()
	if !slices.Equal(st.Learners, []uint64{4}) || st.Applied != 6 {
		t.Fatalf("node 2 after the gate opened: %+v; want learner 4 and applied 6", st)
	}
	_, data := e.nodes[2].sm.state()
	e.nodes[2].sm.mu.Lock()
	got := strings.Join(e.nodes[2].sm.confs[confsBefore:], ",")
	e.nodes[2].sm.mu.Unlock()
	if !slices.Equal(data, []string{"5:a"}) || !strings.HasPrefix(got, "6:") {
		t.Fatalf("node 2 applied %v and changes %q; want [5:a] then the change at 6", data, got)
	}
}

// TestStepDownComesAfterCommittedApplies: a leader that steps down while
// its apply goroutine is behind tells the state machine only after the
// entries it had committed are applied, so that their proposers get their
// results rather than "leadership lost, outcome unknown".
func TestStepDownComesAfterCommittedApplies(t *testing.T) {
	e := startLeader1(t)
	gate, open := openGate(t)
	e.nodes[1].sm.setGate(gate)
	e.propose(1, "a")
	e.deliver(0)
	if st := e.nodes[1].n.Status(); st.Commit != 5 || st.Applied >= 5 {
		t.Fatalf("leader: %+v; want 5 committed and not applied", st)
	}
	e.nodes[1].n.TransferLeadership(2)
	e.waitIdle(1)
	e.deliver(0)
	if st := e.nodes[1].n.Status(); st.Role != raft.StateFollower || st.Leader != 2 {
		t.Fatalf("node 1 did not step down for node 2:\n%s", e.status())
	}
	events := func() []string {
		e.nodes[1].sm.mu.Lock()
		defer e.nodes[1].sm.mu.Unlock()
		return slices.Clone(e.nodes[1].sm.events)
	}
	for _, ev := range events() {
		if strings.HasPrefix(ev, "leader 2 ") {
			t.Fatalf("node 1's state machine heard of the step-down before applying 5:a: %v", events())
		}
	}
	e.nodes[1].sm.setGate(nil)
	open()
	e.waitIdle(1)
	e.deliver(0)
	e.waitIdle(1)
	evs := events()
	i := slices.Index(evs, "apply 5:a")
	j := slices.IndexFunc(evs, func(s string) bool { return strings.HasPrefix(s, "leader 2 ") && strings.HasSuffix(s, " false") })
	if i < 0 || j < i {
		t.Fatalf("node 1's events %v; want apply 5:a, then leader 2 (not this node)", evs)
	}
	var term uint64
	if _, err := fmt.Sscanf(evs[j], "leader 2 term %d false", &term); err != nil || term != e.nodes[2].n.Term() {
		t.Fatalf("step-down event %q; want node 2's term %d", evs[j], e.nodes[2].n.Term())
	}
}
