package raftnode

import (
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
)

// startHolding starts nodes 1..3 with commit notices held for delay and
// makes 1 their leader.
func startHolding(t *testing.T, delay time.Duration, sync bool) *testEnv {
	t.Helper()
	e := newTestEnv(t)
	e.noticeDelay = delay
	e.sync = sync
	return e.startLeader1()
}

// notices returns the lines of log that are appends without entries.
func notices(log string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, " MsgApp ") && !strings.Contains(l, "entries=") {
			out = append(out, l)
		}
	}
	return out
}

// applied returns what node id's state machine applied.
func (e *testEnv) applied(id uint64) []string {
	_, data := e.nodes[id].sm.state()
	return data
}

// TestCommitNoticesReplacedByTheNextAppend: a leader holding commit
// notices sends none of them while writes keep coming; each write's append
// tells the followers the commit index the notice would have, so they
// still apply every committed write, one write later.
func TestCommitNoticesReplacedByTheNextAppend(t *testing.T) {
	for _, sync := range []bool{false, true} {
		e := startHolding(t, time.Hour, sync) // the timer never fires in this test
		// The notices of the new term's empty entry are held too; a's
		// appends replace them.
		e.propose(1, "a")
		log := e.deliver(0)
		if n := notices(log); len(n) != 0 {
			t.Fatalf("sync=%v: the leader sent commit notices while holding them:\n%s", sync, strings.Join(n, "\n"))
		}
		if got := e.applied(1); len(got) != 1 {
			t.Fatalf("sync=%v: leader applied %v, want a", sync, got)
		}
		for _, f := range []uint64{2, 3} {
			if got := e.applied(f); len(got) != 0 {
				t.Fatalf("sync=%v: follower %d applied %v before it could know the commit", sync, f, got)
			}
		}
		sent0, replaced0 := e.nodes[1].n.CommitNoticeCounts()
		if sent0 != 0 || replaced0 != 2 {
			t.Fatalf("sync=%v: after a: notices sent %d replaced %d, want 0 and 2 (the term's empty entry's, replaced by a's appends)", sync, sent0, replaced0)
		}
		e.propose(1, "b")
		log = e.deliver(0)
		if n := notices(log); len(n) != 0 {
			t.Fatalf("sync=%v: commit notices sent:\n%s", sync, strings.Join(n, "\n"))
		}
		for _, f := range []uint64{2, 3} {
			if got := e.applied(f); len(got) != 1 || !strings.HasSuffix(got[0], ":a") {
				t.Fatalf("sync=%v: follower %d applied %v, want a (the append of b carries its commit)\n%s", sync, f, got, e.status())
			}
		}
		sent, replaced := e.nodes[1].n.CommitNoticeCounts()
		if sent != 0 || replaced != 4 {
			t.Fatalf("sync=%v: notices sent %d replaced %d, want 0 and 4 (a's two more, replaced by b's appends)", sync, sent, replaced)
		}
		// The heartbeat carries the commit of b.
		e.tick(1, 1)
		e.deliver(0)
		for _, f := range []uint64{2, 3} {
			if got := e.applied(f); len(got) != 2 {
				t.Fatalf("sync=%v: follower %d applied %v after a heartbeat, want a and b", sync, f, got)
			}
		}
	}
}

// TestCommitNoticesSentAfterTheDelay: with no later write, the held
// notices go out when the delay ends, and the followers apply. (The
// delay is an hour, so that nothing goes out while the test delivers on a
// slow machine; the test then ends it by resetting the timer on the loop,
// which owns it.)
func TestCommitNoticesSentAfterTheDelay(t *testing.T) {
	e := startHolding(t, time.Hour, false)
	e.propose(1, "a")
	if n := notices(e.deliver(0)); len(n) != 0 {
		t.Fatalf("notices sent before the delay:\n%s", strings.Join(n, "\n"))
	}
	leader := e.nodes[1].n
	e.onLoop(1, func() { leader.holdTimer.Reset(time.Millisecond) })
	deadline := time.Now().Add(10 * time.Second)
	var got []string
	for len(got) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the held notices were not sent within 10s of the delay's end (got %v)", got)
		}
		time.Sleep(time.Millisecond)
		got = got[:0]
		e.mu.Lock()
		for _, s := range e.out {
			if isNotice(s.m) {
				got = append(got, describe(s.m))
			}
		}
		e.mu.Unlock()
	}
	log := e.deliver(0)
	for _, f := range []uint64{2, 3} {
		e.waitIdle(f)
		if got := e.applied(f); len(got) != 1 {
			t.Fatalf("follower %d applied %v after the notice, want a\n%s\n%s", f, got, log, e.status())
		}
	}
	if sent, replaced := leader.CommitNoticeCounts(); sent != 2 || replaced != 2 {
		t.Fatalf("notices sent %d replaced %d, want 2 (a's) and 2 (the term's empty entry's, replaced by a's appends)", sent, replaced)
	}
}

// TestCommitNoticesOnlyOnALeader: an append with entries and a notice are
// told apart, and a follower's messages are never held.
func TestCommitNoticesOnlyOnALeader(t *testing.T) {
	if isNotice(&pb.Message{Type: pb.MsgApp.Enum(), Entries: []*pb.Entry{{}}}) {
		t.Fatal("an append with an entry counted as a notice")
	}
	if !isNotice(&pb.Message{Type: pb.MsgApp.Enum()}) || isNotice(&pb.Message{Type: pb.MsgHeartbeat.Enum()}) {
		t.Fatal("isNotice")
	}
	e := startHolding(t, time.Hour, false)
	for _, f := range []uint64{2, 3} {
		if e.nodes[f].n.holdNotices() {
			t.Fatalf("follower %d holds notices", f)
		}
	}
	if !e.nodes[1].n.holdNotices() {
		t.Fatal("the leader does not hold notices")
	}
}
