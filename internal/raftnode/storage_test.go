package raftnode

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/raft/v3"

	"github.com/kayadb/kayadb/internal/vfs"
)

// TestAsyncLogWritesPipeline: with asynchronous log writes, a leader whose
// fsync is slow (its Save blocked) still takes proposals and sends them to
// the followers, which commit them with their own acknowledgements; but
// it applies nothing it has not made durable itself. When its disk moves
// again, the entries queued meanwhile are written together, with one
// fsync, and applied in order, once.
func TestAsyncLogWritesPipeline(t *testing.T) {
	e := startLeader1(t)
	e.propose(1, "a")
	e.deliver(0)
	lead := e.nodes[1]
	_, syncs0 := lead.st.counts()

	gate, open := openGate(t)
	lead.st.setGate(gate)
	e.propose(1, "b")
	// The storage goroutine holds b's Save at the gate before c and d
	// come: they queue behind it (else all three could go in one batch).
	lead.st.waitAtGate(t, 1)
	for _, d := range []string{"c", "d"} {
		e.propose(1, d)
	}
	out := e.deliver(0)
	// Every proposal went out while the first Save was still blocked
	// (before anything new committed).
	for _, want := range []string{"index=5 commit=5 entries=2/6", "index=6 commit=5 entries=2/7", "index=7 commit=5 entries=2/8"} {
		if !strings.Contains(out, "1->2 MsgApp term=2 logterm=2 "+want+"\n") {
			t.Fatalf("the leader did not send %s with its disk blocked:\n%s", want, out)
		}
	}
	st := lead.n.Status()
	if st.Commit != 8 {
		t.Fatalf("the followers' acknowledgements did not commit 8: %+v\n%s", st, out)
	}
	if idx, _ := lead.sm.state(); idx != 5 || st.Applied != 5 {
		t.Fatalf("the leader applied past its durable log (state machine at %d, applied %d; want 5)", idx, st.Applied)
	}
	// The followers learn the commit index from the leader, which sends it
	// before it has the entries itself: they apply.
	for _, id := range []uint64{2, 3} {
		if _, data := e.nodes[id].sm.state(); !slices.Equal(data, []string{"5:a", "6:b", "7:c", "8:d"}) {
			t.Fatalf("node %d applied %v", id, data)
		}
	}

	lead.st.setGate(nil)
	open()
	e.waitIdle(1)
	e.tick(1, 1)
	e.deliver(0)
	if _, data := lead.sm.state(); !slices.Equal(data, []string{"5:a", "6:b", "7:c", "8:d"}) {
		t.Fatalf("the leader applied %v after its disk moved again", data)
	}
	// Entry 6 was in the blocked Save; 7 and 8 were queued behind it and
	// written with one fsync.
	if _, syncs := lead.st.counts(); syncs-syncs0 != 2 {
		t.Fatalf("%d fsyncs for three proposals queued behind a slow one; want 2", syncs-syncs0)
	}
	for _, id := range e.ids() {
		n := e.nodes[id]
		if st := n.n.Status(); st.Applied != 8 || (id != 1 && st.Role != raft.StateFollower) {
			t.Fatalf("node %d: %+v\n%s", id, st, e.status())
		}
		for i := uint64(5); i <= 8; i++ {
			if c := n.sm.applies[i]; c != 1 {
				t.Fatalf("node %d applied index %d %d times", id, i, c)
			}
		}
	}
}

// TestAsyncFollowerAcksOnlyDurable: a follower whose fsync is slow answers
// heartbeats but acknowledges an append only once its Save returned; the
// acknowledgement then goes out without waiting for the loop.
func TestAsyncFollowerAcksOnlyDurable(t *testing.T) {
	e := startLeader1(t)
	gate, open := openGate(t)
	f := e.nodes[2]
	f.st.setGate(gate)
	e.propose(1, "a")
	out := e.deliver(0)
	if strings.Contains(out, "2->1 MsgAppResp term=2 index=5") {
		t.Fatalf("node 2 acknowledged entry 5 before its Save returned:\n%s", out)
	}
	if !strings.Contains(out, "3->1 MsgAppResp term=2 index=5") {
		t.Fatalf("node 3 did not acknowledge entry 5:\n%s", out)
	}
	e.tick(1, 1)
	if out := e.deliver(0); !strings.Contains(out, "2->1 MsgHeartbeatResp term=2") {
		t.Fatalf("node 2 with a slow disk did not answer a heartbeat:\n%s", out)
	}
	f.st.setGate(nil)
	open()
	e.waitIdle(2)
	if out := e.deliver(0); !strings.Contains(out, "2->1 MsgAppResp term=2 index=5") {
		t.Fatalf("node 2 did not acknowledge entry 5 once it was durable:\n%s", out)
	}
	if idx, _ := f.sm.state(); idx != 5 {
		t.Fatalf("node 2 applied up to %d, want 5\n%s", idx, e.status())
	}
}

// TestSoleVoterWritesInline: the only voter writes its log on the loop
// (no storage goroutine hand-offs), and a full disk stalls it as a
// synchronous Ready would: nothing is applied until the write succeeds,
// then everything is applied once.
func TestSoleVoterWritesInline(t *testing.T) {
	e := newTestEnv(t)
	tn := e.addNode(1, []uint64{1})
	tn.n.Campaign()
	e.waitIdle(1)
	if !tn.n.IsLeader() {
		t.Fatalf("the only voter is not leader:\n%s", e.status())
	}
	e.propose(1, "a")
	if _, data := tn.sm.state(); !slices.Equal(data, []string{"3:a"}) {
		t.Fatalf("applied %v, want [3:a]\n%s", data, e.status())
	}
	tn.st.setFail(vfs.ErrNoSpace)
	e.propose(1, "b")
	if tn.n.Stalled() == nil {
		t.Fatalf("a failed Save did not stall the node:\n%s", e.status())
	}
	if _, data := tn.sm.state(); !slices.Equal(data, []string{"3:a"}) {
		t.Fatalf("applied %v with the disk full", data)
	}
	// The Ready itself is stalled (written on the loop), not the storage
	// goroutine.
	var kept, queued bool
	e.onLoop(1, func() { kept, queued = tn.n.readyStalled, tn.n.sstall != nil || tn.n.sq.count() > 0 })
	if !kept || queued {
		t.Fatalf("the only voter's write went to the storage goroutine (Ready stalled %v, storage stalled or busy %v)", kept, queued)
	}
	tn.st.setFail(nil)
	e.tick(1, 4)
	if _, data := tn.sm.state(); !slices.Equal(data, []string{"3:a", "4:b"}) || tn.n.Stalled() != nil {
		t.Fatalf("applied %v (stalled: %v) once the disk had room", data, tn.n.Stalled())
	}
	if c := tn.sm.applies[4]; c != 1 {
		t.Fatalf("index 4 applied %d times", c)
	}
}

// TestAsyncStorageQueueBounded: a leader whose disk does not move takes at
// most maxStorageInflight Readys past it, then hands out no more (its
// memory stays bounded, as a stalled synchronous Ready bounds it) while it
// still takes proposals; once the disk moves, everything proposed is
// written, committed and applied on every node, in order and once.
func TestAsyncStorageQueueBounded(t *testing.T) {
	e := startLeader1(t)
	lead := e.nodes[1]
	gate, open := openGate(t)
	lead.st.setGate(gate)
	const k = maxStorageInflight + 20
	maxSeen := 0
	for i := range k {
		e.propose(1, fmt.Sprintf("v%d", i))
		e.deliver(0)
		var inflight int
		e.onLoop(1, func() { inflight = lead.n.sq.count() })
		if inflight > maxStorageInflight {
			t.Fatalf("%d appends in flight to a blocked disk, more than %d", inflight, maxStorageInflight)
		}
		maxSeen = max(maxSeen, inflight)
	}
	if maxSeen != maxStorageInflight {
		t.Fatalf("at most %d appends were in flight; the bound (%d) was never reached", maxSeen, maxStorageInflight)
	}
	if idx, _ := lead.sm.state(); idx > 4 {
		t.Fatalf("the leader applied %d with its disk blocked", idx)
	}
	lead.st.setGate(nil)
	open()
	for range 3 {
		e.waitIdle(1)
		e.tick(1, 1)
		e.deliver(0)
	}
	last := uint64(4 + k)
	for _, id := range e.ids() {
		n := e.nodes[id]
		idx, data := n.sm.state()
		if idx != last || len(data) != k {
			t.Fatalf("node %d applied up to %d (%d entries), want %d (%d)\n%s", id, idx, len(data), last, k, e.status())
		}
		for i, d := range data {
			if want := fmt.Sprintf("%d:v%d", 5+i, i); d != want {
				t.Fatalf("node %d: entry %d is %q, want %q", id, i, d, want)
			}
		}
		for i := uint64(5); i <= last; i++ {
			if c := n.sm.applies[i]; c != 1 {
				t.Fatalf("node %d applied index %d %d times", id, i, c)
			}
		}
	}
}

// TestProposalsSteppedTogether: proposals that queue up while the loop is
// busy are stepped into raft as one batch, in order, and each follower
// gets one append for all of them (a proposal at a time cost an append,
// and an acknowledgement, per proposal and follower).
func TestProposalsSteppedTogether(t *testing.T) {
	e := startLeader1(t)
	n := e.nodes[1].n
	release, busy := make(chan struct{}), make(chan struct{})
	// The loop must be inside the control function before the proposals
	// queue: ctrlc is buffered, and a loop that had not taken it yet could
	// take the first proposal on its own.
	n.ctrlc <- func(*raft.RawNode) { close(busy); <-release }
	<-busy
	var verdicts []<-chan error
	for _, d := range []string{"a", "b", "c"} {
		errc, err := n.ProposeAsync(context.Background(), []byte(d))
		if err != nil {
			t.Fatal(err)
		}
		verdicts = append(verdicts, errc)
	}
	close(release)
	for i, errc := range verdicts {
		if err := <-errc; err != nil {
			t.Fatalf("proposal %d: %v", i, err)
		}
	}
	e.waitIdle(1)
	out := e.deliver(0)
	for _, to := range []string{"2", "3"} {
		if c := strings.Count(out, "1->"+to+" MsgApp term=2 logterm=2 index=4 commit=4 entries="); c != 1 ||
			!strings.Contains(out, "1->"+to+" MsgApp term=2 logterm=2 index=4 commit=4 entries=2/5,2/6,2/7\n") {
			t.Fatalf("node %s did not get the three proposals in one append:\n%s", to, out)
		}
	}
	for _, id := range e.ids() {
		if _, data := e.nodes[id].sm.state(); !slices.Equal(data, []string{"5:a", "6:b", "7:c"}) {
			t.Fatalf("node %d applied %v", id, data)
		}
	}
}

// TestLogPreparedAfterSaves: the node lets its log prepare space ahead of
// its records (raftlog's zeros, PrepareAhead) after the Saves whose results
// it handed on: the only voter from its loop, a node of three from its
// storage goroutine. Without it every log fsync would commit a size change.
func TestLogPreparedAfterSaves(t *testing.T) {
	settled := func(name string, st *testStorage) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			prepared, at, saves := st.prepareCounts()
			if prepared > 0 && at == saves {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: PrepareAhead called %d times, last after Save %d of %d", name, prepared, at, saves)
			}
			time.Sleep(time.Millisecond)
		}
	}
	e := newTestEnv(t)
	sole := e.addNode(1, []uint64{1})
	sole.n.Campaign()
	e.waitIdle(1)
	for i := range 3 {
		e.propose(1, fmt.Sprint("s", i))
	}
	settled("the only voter", sole.st)

	e3 := startLeader1(t)
	for i := range 3 {
		e3.propose(1, fmt.Sprint("v", i))
		e3.deliver(0)
	}
	for id := uint64(1); id <= 3; id++ {
		settled(fmt.Sprintf("node %d of three", id), e3.nodes[id].st)
	}
}
