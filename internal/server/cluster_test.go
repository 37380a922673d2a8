package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/loopport"
	"github.com/kayadb/kayadb/internal/transport"
	"github.com/kayadb/kayadb/internal/vfs"
	"github.com/kayadb/kayadb/internal/wire"
)

// testCluster runs nodes in this process on an in-memory raft network, each
// with its own in-memory disk and a real loopback client listener.
type testCluster struct {
	t       *testing.T
	mu      sync.Mutex // guards nodes against the load goroutines of some tests
	net     *transport.MemNetwork
	members []Member
	fs      map[uint64]*vfs.MemFS
	nodes   map[uint64]*Server
	lns     map[uint64]string // client addresses, stable across restarts
	// configure, when set, adjusts a node's configuration before it starts
	// (snapshot thresholds, a wrapped file system).
	configure func(id uint64, cfg *Config)
	joiners   map[uint64]bool // nodes started with --join
}

// newNodeSlot reserves a client address and a disk for a node that will
// join later (with --join).
func (c *testCluster) newNodeSlot(id uint64) Member {
	m := c.reserve(id)
	if c.joiners == nil {
		c.joiners = map[uint64]bool{}
	}
	c.joiners[id] = true
	return m
}

// reservePort picks a free loopback address outside the kernel's
// ephemeral range (see package loopport): a node restarted on it must find
// it free again.
func reservePort(t *testing.T) string {
	t.Helper()
	addr, err := loopport.Pick()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// reserve picks a free client address and a new disk for node id.
func (c *testCluster) reserve(id uint64) Member {
	c.t.Helper()
	c.lns[id] = reservePort(c.t)
	c.fs[id] = vfs.NewMem()
	return Member{ID: id, RaftAddr: fmt.Sprintf("127.0.0.1:%d", 40000+id), ClientAddr: c.lns[id]}
}

// newTestCluster starts n nodes; configure (optional) adjusts each node's
// configuration, now and at every restart.
func newTestCluster(t *testing.T, n int, configure ...func(id uint64, cfg *Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, net: transport.NewMemNetwork(1), fs: map[uint64]*vfs.MemFS{}, nodes: map[uint64]*Server{}, lns: map[uint64]string{}}
	if len(configure) > 0 {
		c.configure = configure[0]
	}
	for id := uint64(1); id <= uint64(n); id++ {
		c.members = append(c.members, c.reserve(id))
	}
	for id := uint64(1); id <= uint64(n); id++ {
		c.start(id)
	}
	t.Cleanup(c.stopAll)
	return c
}

func (c *testCluster) start(id uint64) {
	c.t.Helper()
	if err := c.tryStart(id); err != nil {
		c.t.Fatalf("starting node %d: %v", id, err)
	}
}

// tryStart starts a node and returns New's error.
func (c *testCluster) tryStart(id uint64) error {
	c.t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", c.lns[id]); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	c.mu.Lock()
	joiner := c.joiners[id]
	c.mu.Unlock()
	cfg := Config{
		NodeID: id, DataDir: "/node", Peers: c.members, Join: joiner,
		TickInterval: 10 * time.Millisecond, RequestTimeout: 2 * time.Second,
		EngineOptions:  &engine.Options{FS: c.disk(id), MemTableSize: 256 << 10},
		NewTransport:   func(h transport.Handler) transport.Transport { return c.net.Transport(id, h) },
		ClientListener: ln,
	}
	if os.Getenv("KAYA_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if c.configure != nil {
		c.configure(id, &cfg)
	}
	s, err := New(cfg)
	if err != nil {
		_ = ln.Close()
		return err
	}
	c.mu.Lock()
	c.nodes[id] = s
	c.mu.Unlock()
	return nil
}

func (c *testCluster) stop(id uint64) {
	c.mu.Lock()
	s := c.nodes[id]
	delete(c.nodes, id)
	c.mu.Unlock()
	if s != nil {
		if err := s.Close(); err != nil {
			c.t.Errorf("closing node %d: %v", id, err)
		}
	}
}

// crash stops a node and replaces its disk with what a power cut would have
// left. The node is cut off the network first: a crashed process sends
// nothing after its disk froze (otherwise it could acknowledge entries that
// the clone does not hold).
func (c *testCluster) crash(id uint64) {
	c.mu.Lock()
	s := c.nodes[id]
	c.mu.Unlock()
	if s != nil {
		_ = s.trans.Close()
	}
	crashed := c.disk(id).CrashClone(vfs.CrashCloneOptions{})
	c.stop(id)
	c.mu.Lock()
	c.fs[id] = crashed
	c.mu.Unlock()
}

// disk returns node id's disk (crash may replace it from another goroutine).
func (c *testCluster) disk(id uint64) *vfs.MemFS {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fs[id]
}

func (c *testCluster) stopAll() {
	c.mu.Lock()
	var ids []uint64
	for id := range c.nodes {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	for _, id := range ids {
		c.stop(id)
	}
}

// leader waits for a leader that every running node agrees on.
func (c *testCluster) leader() uint64 {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var lead uint64
		agree := true
		for _, s := range c.nodes {
			l := s.Node().Leader()
			if l == 0 || (lead != 0 && l != lead) {
				agree = false
				break
			}
			lead = l
		}
		if agree && lead != 0 && c.nodes[lead] != nil && c.nodes[lead].Node().IsLeader() {
			return lead
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatal("no agreed leader within 10s")
	return 0
}

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

func TestElectionAndReplication(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.leader()
	cl := dial(t, c.lns[lead])
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
	// Every node's engine converges to the same data.
	deadline := time.Now().Add(5 * time.Second)
	for id, s := range c.nodes {
		for {
			v, err := s.DB().Get([]byte("k49"))
			if err == nil && string(v) == "v49" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d did not apply the writes: %q %v", id, v, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestFollowerAnswersNotLeader(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.leader()
	var follower uint64
	for id := range c.nodes {
		if id != lead {
			follower = id
		}
	}
	cl := dial(t, c.lns[follower])
	for _, f := range []func() (wire.Status, []byte, error){
		func() (wire.Status, []byte, error) { return cl.put("a", "b") },
		func() (wire.Status, []byte, error) { return cl.get("a") },
		func() (wire.Status, []byte, error) { return cl.do(wire.OpDelete, wire.AppendKey(nil, []byte("a"))) },
		func() (wire.Status, []byte, error) { return cl.do(wire.OpScan, wire.AppendKey(nil, nil)) },
	} {
		st, p, err := f()
		if err != nil || st != wire.StatusNotLeader || string(p) != c.lns[lead] {
			t.Fatalf("follower reply: %v %v %q (leader at %s)", err, st, p, c.lns[lead])
		}
	}
	st, p, _ := cl.do(wire.OpHealth, nil)
	if st != wire.StatusOK || string(p) != "follower" {
		t.Fatalf("follower health: %v %q", st, p)
	}
}

// TestLeaderCrashUnderLoad: writers hammer the cluster, the leader loses
// power, a new leader takes over; every acknowledged write is readable.
func TestLeaderCrashUnderLoad(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.leader()
	load := c.startLoad(4)
	time.Sleep(300 * time.Millisecond)
	c.crash(lead)
	time.Sleep(700 * time.Millisecond)
	load.finish()
	newLead := c.leader()
	if newLead == lead {
		t.Fatalf("crashed node %d still leads", lead)
	}
	c.start(lead) // the old leader restarts from what survived on its disk
	c.verifyAcked(load, 1, 2, 3)
	if n := load.n.Load(); n < 20 {
		t.Fatalf("only %d writes acknowledged; the test did not exercise much", n)
	}
}

// leaderGuess returns a running node that believes it leads, or 0.
func (c *testCluster) leaderGuess() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, s := range c.nodes {
		if s.Node().IsLeader() {
			return id
		}
	}
	return 0
}

func TestRestartsKeepData(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.leader()
	cl := dial(t, c.lns[lead])
	for i := 0; i < 30; i++ {
		if st, _, err := cl.put(fmt.Sprintf("k%02d", i), "x"); err != nil || st != wire.StatusOK {
			t.Fatalf("put: %v %v", err, st)
		}
	}
	// A follower misses writes while down and catches up.
	var f uint64
	for id := range c.nodes {
		if id != lead {
			f = id
			break
		}
	}
	c.crash(f)
	for i := 30; i < 60; i++ {
		if st, _, err := cl.put(fmt.Sprintf("k%02d", i), "y"); err != nil || st != wire.StatusOK {
			t.Fatalf("put with a follower down: %v %v", err, st)
		}
	}
	c.start(f)
	waitApplied(t, c.nodes[f], "k59", "y")
	// Whole-cluster power cut and restart.
	for id := range c.nodes {
		c.crash(id)
	}
	for id := uint64(1); id <= 3; id++ {
		c.start(id)
	}
	cl = dial(t, c.lns[c.leader()])
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

func waitApplied(t *testing.T, s *Server, k, v string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := s.DB().Get([]byte(k))
		if err == nil && string(got) == v {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node did not catch up: %s=%q %v", k, got, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMinorityPartition: an isolated leader cannot commit; its reads fail
// instead of returning stale data; the majority elects a new leader whose
// writes the old one sees after healing.
func TestMinorityPartition(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.leader()
	old := dial(t, c.lns[lead])
	if st, _, err := old.put("k", "before"); err != nil || st != wire.StatusOK {
		t.Fatalf("put: %v %v", err, st)
	}
	c.net.Isolate(lead)
	// The majority moves on.
	var newLead uint64
	deadline := time.Now().Add(10 * time.Second)
	for newLead == 0 || newLead == lead {
		if time.Now().After(deadline) {
			t.Fatal("majority did not elect a new leader")
		}
		time.Sleep(20 * time.Millisecond)
		for id, s := range c.nodes {
			if id != lead && s.Node().IsLeader() {
				newLead = id
			}
		}
	}
	nl := dial(t, c.lns[newLead])
	if st, _, err := nl.put("k", "after"); err != nil || st != wire.StatusOK {
		t.Fatalf("put on new leader: %v %v", err, st)
	}
	// The old leader must not serve the stale value, nor commit writes.
	st, v, err := old.get("k")
	if err == nil && st == wire.StatusOK {
		t.Fatalf("isolated old leader served a read: %q", v)
	}
	st, _, err = old.put("k", "lost")
	if err == nil && st == wire.StatusOK {
		t.Fatal("isolated old leader committed a write")
	}
	c.net.Heal()
	waitApplied(t, c.nodes[lead], "k", "after")
	cl := dial(t, c.lns[c.leader()])
	if st, v, _ := cl.get("k"); st != wire.StatusOK || string(v) != "after" {
		t.Fatalf("after heal: %v %q", st, v)
	}
}

// TestUnknownSenderIgnored: a message from an id outside the roster, or to
// another id, is dropped and counted, and changes nothing.
func TestUnknownSenderIgnored(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.leader()
	term := c.nodes[lead].Node().Status().Term
	tr := c.net.Transport(99, nopHandler{})
	defer tr.Close()
	target := c.nodes[lead]
	// Inject directly at the leader's endpoint: a vote request with a huge
	// term from node 99, and a message for node 42.
	mt := c.netTransport(lead)
	mt.Inject(&pb.Message{Type: new(pb.MsgVote), From: new(uint64(99)), To: new(lead), Term: new(term + 100)})
	peer := lead%3 + 1
	mt.Inject(&pb.Message{Type: new(pb.MsgHeartbeat), From: new(peer), To: new(uint64(42)), Term: new(term + 100)})
	time.Sleep(200 * time.Millisecond)
	if !target.Node().IsLeader() || target.Node().Status().Term != term {
		t.Fatalf("leader disturbed by a foreign message: leader=%v term=%d (was %d)", target.Node().IsLeader(), target.Node().Status().Term, term)
	}
	stats := mt.Stats()
	if stats.RejectedFrom == 0 || stats.RejectedTo == 0 {
		t.Fatalf("rejections not counted: %+v", stats)
	}
}

func (c *testCluster) netTransport(id uint64) *transport.MemTransport {
	return c.nodes[id].trans.(*transport.MemTransport)
}

type nopHandler struct{}

func (nopHandler) Receive(*pb.Message)      {}
func (nopHandler) ReportUnreachable(uint64) {}
func (nopHandler) ReceiveSnapshot(uint64, io.Reader) error {
	return errors.New("this test peer takes no snapshots")
}

func TestProtocolErrors(t *testing.T) {
	c := newTestCluster(t, 1)
	lead := c.leader()
	cl := dial(t, c.lns[lead])
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
	_ = errors.New
	_ = context.Background
}
