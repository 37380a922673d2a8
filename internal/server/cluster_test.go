package server

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/internal/wire"
)

// conn is a minimal protocol client for tests.
type conn struct {
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &conn{c: c, r: bufio.NewReader(c)}
}

func (c *conn) do(op wire.Opcode, payload []byte) (wire.Status, []byte, error) {
	_ = c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.c.Write(wire.AppendRequest(nil, op, payload)); err != nil {
		return 0, nil, err
	}
	st, p, _, err := wire.ReadResponse(c.r, nil)
	return st, p, err
}

func (c *conn) put(k, v string) (wire.Status, []byte, error) {
	return c.do(wire.OpPut, wire.AppendPut(nil, []byte(k), []byte(v)))
}

func (c *conn) get(k string) (wire.Status, []byte, error) {
	st, p, err := c.do(wire.OpGet, wire.AppendKey(nil, []byte(k)))
	if err == nil && st == wire.StatusOK {
		p, err = wire.DecodeValue(p)
	}
	return st, p, err
}

// TestElectionAndReplication: on a manual clock nobody leads until the
// election timeout has passed; ticked, the cluster elects a leader that
// every node knows, which replicates and serves writes and reads.
func TestElectionAndReplication(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{manual: true})
	// Raft's election timeout is at least ElectionTicks (10) ticks: before
	// that, nobody campaigns.
	c.Tick(9)
	for id, s := range c.Nodes() {
		if st := s.Node().Status(); st.Role != raft.StateFollower || st.Leader != 0 {
			t.Fatalf("node %d after 9 ticks: %+v; want a follower that knows no leader", id, st)
		}
	}
	// From the 10th tick on, some node's randomized timeout (10 to 19
	// ticks) fires: each election completes in messages, with no more
	// time passing (a split vote takes another timeout).
	for i := 9; c.Leader() == 0; i++ {
		if i == 200 {
			t.Fatal("no leader after 200 ticks (ten election timeouts)")
		}
		c.Tick(1)
	}
	lead := c.Leader()
	cl := dial(t, c.addr(lead))
	for i := 0; i < 50; i++ {
		if st, p, err := cl.put(fmt.Sprintf("k%02d", i), fmt.Sprintf("v%02d", i)); err != nil || st != wire.StatusOK {
			t.Fatalf("put %d: %v %v %q", i, err, st, p)
		}
	}
	st, v, err := cl.get("k07")
	if err != nil || st != wire.StatusOK || string(v) != "v07" {
		t.Fatalf("get: %v %v %q", err, st, v)
	}
	if st, _, _ := cl.get("missing"); st != wire.StatusNotFound {
		t.Fatalf("get missing: %v", st)
	}
	// Every node's engine converges to the same data (a follower learns of
	// the last commit from the next heartbeat: waitApplied ticks).
	for id := range c.Nodes() {
		c.waitApplied(id, "k49", "v49")
	}
	if got := c.Leader(); got != lead {
		t.Fatalf("leadership moved from %d to %d with every node up and the clock ticking evenly", lead, got)
	}
}

func TestFollowerAnswersNotLeader(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{manual: true})
	c.Elect(2)
	lead := uint64(2)
	follower := c.follower(lead)
	cl := dial(t, c.addr(follower))
	for _, f := range []func() (wire.Status, []byte, error){
		func() (wire.Status, []byte, error) { return cl.put("a", "b") },
		func() (wire.Status, []byte, error) { return cl.get("a") },
		func() (wire.Status, []byte, error) { return cl.do(wire.OpDelete, wire.AppendKey(nil, []byte("a"))) },
		func() (wire.Status, []byte, error) { return cl.do(wire.OpScan, wire.AppendKey(nil, nil)) },
	} {
		st, p, err := f()
		if err != nil || st != wire.StatusNotLeader || string(p) != c.addr(lead) {
			t.Fatalf("follower reply: %v %v %q (leader at %s)", err, st, p, c.addr(lead))
		}
	}
	st, p, _ := cl.do(wire.OpHealth, nil)
	if st != wire.StatusOK || string(p) != "follower" {
		t.Fatalf("follower health: %v %q", st, p)
	}
}

// TestLeaderCrashUnderLoad: writers hammer the cluster, the leader loses
// power, a new leader takes over; every acknowledged write is readable.
// (A free-running clock: the subject is a load in real time.)
func TestLeaderCrashUnderLoad(t *testing.T) { leaderCrashUnderLoad(t) }

// TestLeaderCrashUnderLoadSyncLogWrites is TestLeaderCrashUnderLoad with
// --raft-log-writes sync (each raft Ready written and fsynced on the raft
// loop), the mode the default asynchronous one replaced: it must keep
// every acknowledged write too.
func TestLeaderCrashUnderLoadSyncLogWrites(t *testing.T) {
	leaderCrashUnderLoad(t, func(_ uint64, cfg *Config) { cfg.SyncLogWrites = true })
}

func leaderCrashUnderLoad(t *testing.T, configure ...func(uint64, *Config)) {
	c := newTestCluster(t, 3, configure...)
	lead := c.WaitLeader()
	load := c.startLoad(4)
	time.Sleep(300 * time.Millisecond)
	c.Crash(lead)
	time.Sleep(700 * time.Millisecond)
	load.finish()
	newLead := c.WaitLeader()
	if newLead == lead {
		t.Fatalf("crashed node %d still leads", lead)
	}
	c.Start(lead) // the old leader restarts from what survived on its disk
	c.verifyAcked(load, 1, 2, 3)
	if n := load.n.Load(); n < 20 {
		t.Fatalf("only %d writes acknowledged; the test did not exercise much", n)
	}
}

// TestRestartsKeepData: a follower that lost power catches up; after a
// power cut of the whole cluster, every write is there. Manual clock:
// the elections after the restarts are driven by ticks.
func TestRestartsKeepData(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{manual: true})
	lead := c.WaitLeader()
	cl := dial(t, c.addr(lead))
	for i := 0; i < 30; i++ {
		if st, _, err := cl.put(fmt.Sprintf("k%02d", i), "x"); err != nil || st != wire.StatusOK {
			t.Fatalf("put: %v %v", err, st)
		}
	}
	// A follower misses writes while down and catches up.
	f := c.follower(lead)
	c.Crash(f)
	for i := 30; i < 60; i++ {
		if st, _, err := cl.put(fmt.Sprintf("k%02d", i), "y"); err != nil || st != wire.StatusOK {
			t.Fatalf("put with a follower down: %v %v", err, st)
		}
	}
	c.Start(f)
	c.waitApplied(f, "k59", "y")
	// Whole-cluster power cut and restart.
	for _, id := range c.IDs() {
		c.Crash(id)
	}
	for id := uint64(1); id <= 3; id++ {
		c.Start(id)
	}
	cl = dial(t, c.addr(c.WaitLeader()))
	for i := 0; i < 60; i++ {
		want := "x"
		if i >= 30 {
			want = "y"
		}
		st, v, err := cl.get(fmt.Sprintf("k%02d", i))
		if err != nil || st != wire.StatusOK || string(v) != want {
			t.Fatalf("after full restart k%02d: %v %v %q", i, err, st, v)
		}
	}
}

// isolateLeader cuts lead off the network and ticks only the others' clocks
// until they elect a new leader, which it returns; lead, its clock standing
// still, goes on believing it leads (manual clock only).
func (c *testCluster) isolateLeader(lead uint64) uint64 {
	c.t.Helper()
	c.Net.Isolate(lead)
	var rest []uint64
	for _, id := range c.IDs() {
		if id != lead {
			rest = append(rest, id)
		}
	}
	for i := 0; ; i++ {
		if newLead := c.Leader(rest...); newLead != 0 && newLead != lead {
			return newLead
		}
		if i == 200 {
			c.t.Fatal("majority did not elect a new leader in 200 ticks (ten election timeouts)")
		}
		c.TickNodes(1, rest...)
	}
}

// TestMinorityPartition: an isolated leader cannot commit; its reads fail
// instead of returning stale data; the majority elects a new leader whose
// writes the old one sees after healing. Manual clock: only the
// majority's clocks move, so the old leader, cut off, still believes it
// leads while the new one takes writes (the case a stale read would come
// from), until it hears of the new term after healing.
func TestMinorityPartition(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{manual: true})
	lead := c.WaitLeader()
	old := dial(t, c.addr(lead))
	if st, _, err := old.put("k", "before"); err != nil || st != wire.StatusOK {
		t.Fatalf("put: %v %v", err, st)
	}
	// The majority moves on.
	newLead := c.isolateLeader(lead)
	if !c.node(lead).Node().IsLeader() {
		t.Fatal("the old leader stepped down although its clock stood still")
	}
	nl := dial(t, c.addr(newLead))
	if st, _, err := nl.put("k", "after"); err != nil || st != wire.StatusOK {
		t.Fatalf("put on new leader: %v %v", err, st)
	}
	// The old leader, which still believes it leads, must not serve the
	// stale value, nor commit writes.
	st, v, err := old.get("k")
	if err == nil && st == wire.StatusOK {
		t.Fatalf("isolated old leader served a read: %q", v)
	}
	// Nothing steps the old leader down (its clock stands still): its
	// write is answered by the request timeout (kv's sweep of the writes
	// waiting for a callback), on the open connection.
	st, body, err := old.put("k", "lost")
	if err != nil || st == wire.StatusOK {
		t.Fatalf("isolated old leader's write: %v %v; want an answer that it timed out", st, err)
	}
	if msg, _ := wire.DecodeError(body); !strings.Contains(msg, "timed out") {
		t.Fatalf("isolated old leader's write answered %v %q; want a timeout", st, msg)
	}
	c.Net.Heal()
	c.waitApplied(lead, "k", "after")
	cl := dial(t, c.addr(c.WaitLeader()))
	if st, v, _ := cl.get("k"); st != wire.StatusOK || string(v) != "after" {
		t.Fatalf("after heal: %v %q", st, v)
	}
}

// TestUnknownSenderIgnored: a message from an id outside the roster, or to
// another id, is dropped and counted, and changes nothing. Manual clock:
// once the cluster is quiet, nothing else could have moved the term.
func TestUnknownSenderIgnored(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{manual: true})
	lead := c.WaitLeader()
	target := c.node(lead)
	term := target.Node().Status().Term
	tr := c.Net.Transport(99, nopHandler{})
	defer tr.Close()
	// Inject directly at the leader's endpoint: a vote request with a huge
	// term from node 99, and a message for node 42.
	mt := c.memTransport(lead)
	mt.Inject(&pb.Message{Type: new(pb.MsgVote), From: new(uint64(99)), To: new(lead), Term: new(term + 100)})
	peer := lead%3 + 1
	mt.Inject(&pb.Message{Type: new(pb.MsgHeartbeat), From: new(peer), To: new(uint64(42)), Term: new(term + 100)})
	c.Quiesce() // both handled (or dropped), and everything they caused done
	if !target.Node().IsLeader() || target.Node().Status().Term != term {
		t.Fatalf("leader disturbed by a foreign message: leader=%v term=%d (was %d)", target.Node().IsLeader(), target.Node().Status().Term, term)
	}
	stats := mt.Stats()
	if stats.RejectedFrom == 0 || stats.RejectedTo == 0 {
		t.Fatalf("rejections not counted: %+v", stats)
	}
}

type nopHandler struct{}

func (nopHandler) Receive(*pb.Message)      {}
func (nopHandler) ReportUnreachable(uint64) {}
func (nopHandler) ReceiveSnapshot(uint64, io.Reader) error {
	return errors.New("this test peer takes no snapshots")
}

func TestProtocolErrors(t *testing.T) {
	c := newCluster(t, 1, clusterOpts{manual: true})
	c.Elect(1)
	cl := dial(t, c.addr(1))
	if st, p, _ := cl.do(wire.Opcode(42), nil); st != wire.StatusError {
		t.Fatalf("unknown opcode: %v", st)
	} else if msg, _ := wire.DecodeError(p); msg != "unknown opcode: 42" {
		t.Fatalf("unknown opcode message %q", msg)
	}
	if st, _, _ := cl.do(wire.OpPut, []byte{1, 2}); st != wire.StatusInvalidArgument {
		t.Fatalf("short put: %v", st)
	}
	if st, _, _ := cl.put("\x00sys", "x"); st != wire.StatusInvalidArgument {
		t.Fatalf("reserved key: %v", st)
	}
	if st, p, _ := cl.do(wire.OpHello, wire.AppendHello(nil, 1)); st != wire.StatusOK {
		t.Fatalf("hello: %v %q", st, p)
	}
	if st, p, _ := cl.do(wire.OpHello, wire.AppendHello(nil, 7)); st != wire.StatusInvalidArgument {
		t.Fatalf("hello v7: %v", st)
	} else if msg, _ := wire.DecodeError(p); msg != "unsupported protocol version 7 (max 1)" {
		t.Fatalf("hello v7 message %q", msg)
	}
	st, p, _ := cl.do(wire.OpStats, nil)
	stats, err := wire.DecodeStats(p)
	if st != wire.StatusOK || err != nil || stats.Role != "leader" || stats.RaftGroups != 1 {
		t.Fatalf("stats: %v %v %+v", st, err, stats)
	}
}
