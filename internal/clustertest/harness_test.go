package clustertest_test

import (
	"fmt"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.uber.org/goleak"

	"github.com/kayadb/kayadb/internal/clustertest"
)

// TestManualClockElection: on a manual clock nothing happens until the
// test ticks. Quiet after 9 ticks, the cluster has no leader (an election
// timeout is 10 to 19 ticks); ticked on, it elects one that every node
// knows, and it keeps it while the clock moves evenly.
func TestManualClockElection(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{})
	c.Tick(9)
	for _, id := range c.IDs() {
		if st := c.Node(id).Raft.Status(); st.Role != raft.StateFollower || st.Leader != 0 {
			t.Fatalf("node %d after 9 ticks: %+v; want a follower that knows no leader", id, st)
		}
	}
	ticks := 9
	for c.Leader() == 0 {
		if ticks == 200 {
			t.Fatal("no leader after 200 ticks")
		}
		c.Tick(1)
		ticks++
	}
	lead := c.Leader()
	term := c.Node(lead).Raft.Term()
	c.Tick(100)
	if got := c.Leader(); got != lead || c.Node(lead).Raft.Term() != term {
		t.Fatalf("leadership moved from %d (term %d) to %d (term %d) with every clock ticking evenly",
			lead, term, got, c.Node(got).Raft.Term())
	}
	t.Logf("node %d elected after %d ticks", lead, ticks)
}

// TestTickNodesPausesTheOthers: a node whose clock stands still keeps
// believing it leads while a partitioned majority elects another; healed
// and ticked, it learns of the new term.
func TestTickNodesPausesTheOthers(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{})
	c.Elect(1)
	c.Net.Isolate(1)
	for i := 0; c.Leader(2, 3) == 0 || c.Leader(2, 3) == 1; i++ {
		if i == 200 {
			t.Fatal("nodes 2 and 3 elected nobody in 200 ticks")
		}
		c.TickNodes(1, 2, 3)
	}
	if !c.Node(1).Raft.IsLeader() {
		t.Fatal("node 1 stepped down without a tick")
	}
	c.Net.Heal()
	c.WaitLeader()
	if c.Node(1).Raft.IsLeader() {
		t.Fatal("two leaders after healing")
	}
}

// TestElectMovesLeadership: Elect makes the node asked for the leader,
// also when another leads already (by a leadership transfer).
func TestElectMovesLeadership(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{})
	c.Elect(1)
	c.Elect(3)
	if c.Leader() != 3 {
		t.Fatalf("leader %d, want 3", c.Leader())
	}
}

// TestFreeClock: a free-running clock elects a leader with nobody ticking,
// and a test can switch between the modes.
func TestFreeClock(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{})
	c.Clock.SetFree(true)
	lead := c.WaitLeader()
	c.Put("k", "v")
	c.Clock.SetFree(false)
	c.Quiesce()
	c.Tick(3)
	c.WaitApplied(c.Node(lead).Store.AppliedIndex())
	for _, id := range c.IDs() {
		if v, err := c.Get(id, "k"); err != nil || v != "v" {
			t.Fatalf("node %d: k = %q, %v", id, v, err)
		}
	}
}

// TestCrashAndRestart: a node that loses power restarts from what its disk
// held when the power went; a stopped node restarts from all of it; both
// catch up.
func TestCrashAndRestart(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{})
	c.Elect(1)
	for i := 0; i < 20; i++ {
		c.Put(fmt.Sprint("k", i), "v")
	}
	before := c.Disk(3)
	c.Crash(3)
	if c.Disk(3) == before {
		t.Fatal("Crash kept the disk instead of its power-cut clone")
	}
	c.Put("during", "x") // committed by nodes 1 and 2
	c.Restart(2)
	c.Start(3)
	c.WaitApplied(c.Node(1).Store.AppliedIndex())
	for _, id := range c.IDs() {
		for _, k := range []string{"k0", "k19", "during"} {
			if _, err := c.Get(id, k); err != nil {
				t.Fatalf("node %d: %s: %v", id, k, err)
			}
		}
	}
}

// TestTickerStops: a stopped ticker takes no ticks and leaves no
// goroutine behind, in either mode.
func TestTickerStops(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	clk := clustertest.NewClock(time.Millisecond, true)
	tk := clk.NewTicker()
	<-tk.C() // the pump runs
	clk.SetFree(false)
	clk.SetFree(true)
	<-tk.C()
	tk.Stop()
	tk.Stop() // twice is harmless
	if tk.Tick(nil) {
		t.Fatal("a stopped ticker took a tick")
	}
	clk.SetFree(false)
	manual := clk.NewTicker()
	got := make(chan bool)
	go func() { got <- manual.Tick(nil) }()
	<-manual.C()
	if !<-got {
		t.Fatal("a manual tick taken by the loop was reported as not taken")
	}
	manual.Stop()
}
