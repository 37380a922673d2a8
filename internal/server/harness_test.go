package server

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/clustertest"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/transport"
	"github.com/kayadb/kayadb/internal/vfs"
)

// testCluster runs servers in this process on the shared cluster harness
// (package clustertest): each node on its own in-memory disk, with a real
// loopback client listener at an address that survives restarts, raft on
// the in-memory network (or on loopback TCP, clusterOpts.tcpRaft), and
// the harness's clock as the raft clock. Everything about slots, disks,
// crashes, the network, the clock and the waits is the harness's; this
// adapter only builds a Config.
type testCluster struct {
	*clustertest.Harness[*Server]
	t *testing.T

	mu        sync.Mutex
	configure func(id uint64, cfg *Config)
	base      func(env *clustertest.Env) (Config, error)
}

// clusterOpts selects the harness's modes for a testCluster.
type clusterOpts struct {
	// manual drives the raft clock by hand (Tick, and every wait of the
	// harness ticks it); without it the clock runs freely at 10 ms a tick,
	// as a node's would.
	manual bool
	// tcpRaft carries raft over loopback TCP (the raft port's own
	// handshake, TLS and peer token) instead of the in-memory network.
	tcpRaft bool
	// logs captures every node's log (testCluster.Log).
	logs bool
	// deferred leaves the bootstrap members stopped until the test starts
	// them.
	deferred bool
	// configure adjusts a node's configuration before every start.
	configure func(id uint64, cfg *Config)
	// base, when set, builds the configuration instead of baseConfig (a
	// node configured through ParseFlags); configure still applies.
	base func(env *clustertest.Env) (Config, error)
}

// newTestCluster starts n nodes with a free-running clock; configure
// (optional) adjusts each node's configuration, now and at every restart.
func newTestCluster(t *testing.T, n int, configure ...func(id uint64, cfg *Config)) *testCluster {
	t.Helper()
	var o clusterOpts
	if len(configure) > 0 {
		o.configure = configure[0]
	}
	return newCluster(t, n, o)
}

// newCluster starts n nodes (unless o.deferred).
func newCluster(t *testing.T, n int, o clusterOpts) *testCluster {
	t.Helper()
	c := &testCluster{t: t, configure: o.configure, base: o.base}
	c.Harness = clustertest.NewHarness(t, clustertest.Config[*Server]{
		Nodes: n, Start: c.startNode, FreeClock: !o.manual, ClientListeners: true,
		TCPRaft: o.tcpRaft, CaptureLogs: o.logs, Deferred: o.deferred,
	})
	return c
}

// baseConfig is a node of a test cluster: its slot's disk, listeners,
// network endpoint and clock, short timeouts.
func baseConfig(env *clustertest.Env) Config {
	cfg := Config{
		NodeID: env.ID, DataDir: "/node", Peers: members(env.Peers), Join: env.Join,
		TickInterval: env.TickInterval, RaftTicker: env.Ticker, RequestTimeout: 2 * time.Second,
		EngineOptions:  &engine.Options{FS: env.Disk, MemTableSize: 256 << 10},
		NewTransport:   env.NewTransport,
		ClientListener: env.ClientListener, RaftListener: env.RaftListener,
		Logger: env.Logger,
	}
	if env.RaftListener != nil {
		cfg.RaftAddr = env.Self.RaftAddr
	}
	return cfg
}

func (c *testCluster) startNode(env *clustertest.Env) (*Server, error) {
	c.mu.Lock()
	configure, base := c.configure, c.base
	c.mu.Unlock()
	cfg := baseConfig(env)
	if base != nil {
		var err error
		if cfg, err = base(env); err != nil {
			return nil, err
		}
	}
	if configure != nil {
		configure(env.ID, &cfg)
	}
	return New(cfg)
}

// setConfigure replaces the configuration hook for later starts.
func (c *testCluster) setConfigure(f func(id uint64, cfg *Config)) {
	c.mu.Lock()
	c.configure = f
	c.mu.Unlock()
}

func members(peers []clustertest.Peer) []Member {
	var ms []Member
	for _, p := range peers {
		ms = append(ms, Member{ID: p.ID, RaftAddr: p.RaftAddr, ClientAddr: p.ClientAddr})
	}
	return ms
}

// members returns the bootstrap members.
func (c *testCluster) members() []Member { return members(c.Peers()) }

// member returns slot id's identity and addresses.
func (c *testCluster) member(id uint64) Member {
	p := c.Peer(id)
	return Member{ID: p.ID, RaftAddr: p.RaftAddr, ClientAddr: p.ClientAddr}
}

// newNodeSlot reserves a client address and a disk for a node that will
// join later (with --join).
func (c *testCluster) newNodeSlot(id uint64) Member {
	p := c.AddSlot(id, true)
	return Member{ID: p.ID, RaftAddr: p.RaftAddr, ClientAddr: p.ClientAddr}
}

// node returns running node id (nil if stopped).
func (c *testCluster) node(id uint64) *Server { return c.Node(id) }

// addr returns node id's client address.
func (c *testCluster) addr(id uint64) string { return c.ClientAddr(id) }

// follower returns a running node other than lead.
func (c *testCluster) follower(lead uint64) uint64 {
	for _, id := range c.IDs() {
		if id != lead {
			return id
		}
	}
	c.t.Fatal("no follower")
	return 0
}

// leaderGuess returns a running node that believes it leads, or 0.
func (c *testCluster) leaderGuess() uint64 {
	for id, s := range c.Nodes() {
		if s.Node().IsLeader() {
			return id
		}
	}
	return 0
}

// memTransport returns node id's endpoint on the in-memory network.
func (c *testCluster) memTransport(id uint64) *transport.MemTransport {
	return c.node(id).trans.(*transport.MemTransport)
}

// tcpStats returns the counters of a node's TCP raft transport.
func tcpStats(s *Server) transport.Stats { return s.trans.(*transport.TCP).Stats() }

// nodeState is what converged nodes have in common: the index the state
// machine applied, the one raft handed out (after a snapshot install the
// engine holds the data before the raft loop records the install), and
// the data.
type nodeState struct {
	Applied, RaftApplied uint64
	Keys                 int
	Hash                 string
}

// waitConverged waits until the nodes ids have all applied the same index
// and hold identical data; it returns the common hash and key count.
func (c *testCluster) waitConverged(ids ...uint64) (string, int) {
	c.t.Helper()
	// A put is answered at its commit, before the leader applies it
	// (kv.ackEarly): nodes that agree may not have reached it yet.
	for _, id := range ids {
		if s := c.node(id); s != nil && s.Node().IsLeader() {
			settledStore(c.t, s)
		}
	}
	st := clustertest.Converge(c.Harness, ids, func(id uint64, s *Server) nodeState {
		h, n := dataHash(c.t, s)
		return nodeState{Applied: s.Store().AppliedIndex(), RaftApplied: s.Node().Applied(), Keys: n, Hash: h}
	})
	return st.Hash, st.Keys
}

// settled returns node id's store once it has applied everything
// committed when called.
func (c *testCluster) settled(id uint64) *kv.Store {
	c.t.Helper()
	return settledStore(c.t, c.node(id))
}

// settledStore returns s's store once it has applied everything committed
// when called: a put or delete is answered at its commit, before the
// leader applies it (kv.ackEarly), so a test that reads the leader's
// local state after an acknowledged write waits for this first (a client's
// reads wait for it themselves).
func settledStore(t testing.TB, s *Server) *kv.Store {
	t.Helper()
	commit := s.Node().Commit()
	deadline := time.Now().Add(10 * time.Second)
	for s.Store().AppliedIndex() < commit {
		if time.Now().After(deadline) {
			t.Fatalf("the node did not apply index %d in 10s (applied %d)", commit, s.Store().AppliedIndex())
		}
		time.Sleep(time.Millisecond)
	}
	return s.Store()
}

// waitApplied waits until running node id holds k = v (a manual clock is
// ticked meanwhile: a follower learns of the last commit from a
// heartbeat).
func (c *testCluster) waitApplied(id uint64, k, v string) {
	c.t.Helper()
	c.Eventually(fmt.Sprintf("node %d to apply %s=%s", id, k, v), func() bool {
		s := c.node(id)
		if s == nil {
			return false
		}
		got, err := kv.LocalGet(s.DB(), []byte(k))
		return err == nil && string(got) == v
	})
}

// nodeLog reads one node's captured log.
type nodeLog struct {
	c  *testCluster
	id uint64
}

func (l nodeLog) String() string { return l.c.Log(l.id) }

// startSecured starts a one-node server (in-memory disk and raft network,
// a manual clock: it is elected at once and leads for good) with cfg's
// settings, and returns it with its log. cfg's listeners, disk and
// identity are the harness's.
func startSecured(t *testing.T, cfg Config) (*Server, nodeLog) {
	t.Helper()
	c := newCluster(t, 1, clusterOpts{manual: true, logs: true, configure: func(id uint64, base *Config) {
		mine := cfg
		mine.NodeID, mine.DataDir = base.NodeID, base.DataDir
		mine.TickInterval, mine.RaftTicker = base.TickInterval, base.RaftTicker
		mine.RequestTimeout = base.RequestTimeout
		if mine.EngineOptions == nil {
			mine.EngineOptions = &engine.Options{FS: base.EngineOptions.FS}
		}
		mine.NewTransport, mine.ClientListener, mine.Logger = base.NewTransport, base.ClientListener, base.Logger
		*base = mine
	}})
	c.Elect(1)
	return c.node(1), nodeLog{c, 1}
}

// startSingle starts a one-node server on fs (manual clock, elected at
// once) and returns its client address and a function that stops it.
func startSingle(t *testing.T, fs vfs.FS) (string, func()) {
	t.Helper()
	c := newCluster(t, 1, clusterOpts{manual: true, configure: func(_ uint64, cfg *Config) {
		cfg.EngineOptions = &engine.Options{FS: fs, MemTableSize: 64 << 10}
	}})
	c.Elect(1)
	return c.addr(1), func() { c.Stop(1) }
}
