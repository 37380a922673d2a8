// Package clustertest runs a raft cluster inside one test process: every
// node is the real stack below the server (raftnode over raftlog, kv over
// the engine), on its own in-memory disk, connected by an in-memory network
// (transport.MemNetwork), with a manual clock.
//
// It owns nothing that production code uses and must never be imported by
// it. Its clock only moves when the test calls Tick, and Quiesce waits until
// every node's loop is idle and the network carries nothing, so a test
// drives elections and heartbeats step by step instead of sleeping on real
// tickers. Writes and reads (kv.Store) flow without ticks: they need
// messages, not time.
//
// Tests that need the server's client protocol, TLS or real TCP build
// servers instead (internal/server's testCluster); this harness is the
// layer under them.
package clustertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/raftlog"
	"github.com/kayadb/kayadb/internal/raftnode"
	"github.com/kayadb/kayadb/internal/transport"
	"github.com/kayadb/kayadb/internal/vfs"
)

// Ticker is a raftnode.Ticker the test drives: Tick blocks until the loop
// has taken the tick (or the node stopped).
type Ticker struct{ c chan time.Time }

// NewTicker returns a manual ticker.
func NewTicker() *Ticker { return &Ticker{c: make(chan time.Time)} }

// C implements raftnode.Ticker.
func (t *Ticker) C() <-chan time.Time { return t.c }

// Stop implements raftnode.Ticker.
func (t *Ticker) Stop() {}

// Tick delivers one tick; false if done closed first.
func (t *Ticker) Tick(done <-chan struct{}) bool {
	select {
	case t.c <- time.Time{}:
		return true
	case <-done:
		return false
	}
}

// Options configures a Cluster.
type Options struct {
	// Nodes is the number of voters (ids 1..Nodes). Default 3.
	Nodes int
	// Seed seeds the network's randomness (drop rates). Default 1.
	Seed uint64
	// Configure, when set, adjusts a node's raft configuration before it
	// starts (now and at every restart).
	Configure func(id uint64, cfg *raftnode.Config)
	// WrapFS, when set, wraps a node's disk (fault injection).
	WrapFS func(id uint64, fs vfs.FS) vfs.FS
}

// Node is one member: its disk survives restarts, the rest is rebuilt.
type Node struct {
	ID     uint64
	FS     *vfs.MemFS
	Raft   *raftnode.Node
	Store  *kv.Store
	Trans  *transport.MemTransport
	Ticker *Ticker

	db   *engine.DB
	rlog *raftlog.Log
}

// Cluster is a running test cluster.
type Cluster struct {
	t     testing.TB
	opts  Options
	Net   *transport.MemNetwork
	mu    sync.Mutex
	nodes map[uint64]*Node
	disks map[uint64]*vfs.MemFS
	peers []uint64
}

// New starts a cluster and stops it when the test ends. No node leads
// until the test elects one (Elect) or ticks the clock.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes <= 0 {
		opts.Nodes = 3
	}
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	c := &Cluster{t: t, opts: opts, Net: transport.NewMemNetwork(opts.Seed),
		nodes: map[uint64]*Node{}, disks: map[uint64]*vfs.MemFS{}}
	for id := uint64(1); id <= uint64(opts.Nodes); id++ {
		c.peers = append(c.peers, id)
		c.disks[id] = vfs.NewMem()
	}
	for _, id := range c.peers {
		c.Start(id)
	}
	t.Cleanup(c.StopAll)
	return c
}

func (c *Cluster) logger(id uint64) *slog.Logger {
	if os.Getenv("KAYA_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test_node", id)
	}
	return slog.New(slog.DiscardHandler)
}

// Start starts node id on its disk (again, after Stop).
func (c *Cluster) Start(id uint64) *Node {
	c.t.Helper()
	n, err := c.start(id)
	if err != nil {
		c.t.Fatalf("starting node %d: %v", id, err)
	}
	return n
}

func (c *Cluster) start(id uint64) (*Node, error) {
	c.mu.Lock()
	mem := c.disks[id]
	c.mu.Unlock()
	var fs vfs.FS = mem
	if c.opts.WrapFS != nil {
		fs = c.opts.WrapFS(id, mem)
	}
	log := c.logger(id)
	db, err := engine.Open("/engine", &engine.Options{FS: fs, MemTableSize: 256 << 10})
	if err != nil {
		return nil, err
	}
	store, err := kv.Open(kv.Options{NodeID: id, DB: db, RequestTimeout: 10 * time.Second, Logger: log})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	rlog, _, err := raftlog.Open(raftlog.Options{FS: fs, Dir: "/raft", NodeID: id})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	tk := NewTicker()
	cfg := raftnode.Config{ID: id, Peers: c.peers, Log: rlog, SM: store, Ticker: tk, Logger: log}
	if c.opts.Configure != nil {
		c.opts.Configure(id, &cfg)
	}
	rn, err := raftnode.New(cfg)
	if err != nil {
		_ = rlog.Close()
		_ = db.Close()
		return nil, err
	}
	tr := c.Net.Transport(id, handler{rn})
	peers := map[uint64]string{}
	for _, p := range c.peers {
		peers[p] = fmt.Sprintf("mem:%d", p)
	}
	tr.SetPeers(peers)
	rn.Start(tr)
	store.Start(rn)
	n := &Node{ID: id, FS: mem, Raft: rn, Store: store, Trans: tr, Ticker: tk, db: db, rlog: rlog}
	c.mu.Lock()
	c.nodes[id] = n
	c.mu.Unlock()
	return n, nil
}

// handler is the transport's handler: the raft node; snapshot streams are
// refused (the harness runs without raft snapshots, Config.Snapshots nil;
// internal/server's tests cover them).
type handler struct{ *raftnode.Node }

func (handler) ReceiveSnapshot(from uint64, r io.Reader) error {
	return errors.New("clustertest: snapshot streams are not supported")
}

// Stop stops node id (its disk keeps what it wrote).
func (c *Cluster) Stop(id uint64) {
	c.mu.Lock()
	n := c.nodes[id]
	delete(c.nodes, id)
	c.mu.Unlock()
	if n == nil {
		return
	}
	_ = n.Trans.Close()
	n.Raft.Stop()
	n.Store.Stop()
	if err := n.rlog.Close(); err != nil {
		c.t.Errorf("closing node %d's raft log: %v", id, err)
	}
	if err := n.db.Close(); err != nil {
		c.t.Errorf("closing node %d's engine: %v", id, err)
	}
}

// Restart stops and starts node id.
func (c *Cluster) Restart(id uint64) *Node {
	c.Stop(id)
	return c.Start(id)
}

// StopAll stops every node.
func (c *Cluster) StopAll() {
	for _, id := range c.IDs() {
		c.Stop(id)
	}
}

// IDs returns the running nodes' ids in order.
func (c *Cluster) IDs() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := make([]uint64, 0, len(c.nodes))
	for id := range c.nodes {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// Node returns running node id (nil if stopped).
func (c *Cluster) Node(id uint64) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

// quiesceTimeout bounds one Quiesce: a cluster that keeps exchanging
// messages without ticks for this long is broken (a livelock), and the
// test should fail rather than hang.
const quiesceTimeout = 30 * time.Second

// Quiesce waits until every running node's loop is idle and the network
// carries nothing: a full pass over the nodes that sees them all idle,
// with nothing in flight and no message handled during the pass.
func (c *Cluster) Quiesce() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), quiesceTimeout)
	defer cancel()
	for {
		inflight, before := c.Net.Traffic()
		if inflight == 0 {
			for _, id := range c.IDs() {
				n := c.Node(id)
				if n == nil {
					continue
				}
				if err := n.Raft.WaitIdle(ctx); err != nil {
					if errors.Is(err, raftnode.ErrStopped) {
						c.t.Fatalf("node %d's raft loop stopped: %v", id, n.Raft.Err())
					}
					c.t.Fatalf("the cluster did not quiesce within %v", quiesceTimeout)
				}
			}
			inflight, after := c.Net.Traffic()
			if inflight == 0 && after == before {
				return
			}
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("the cluster did not quiesce within %v", quiesceTimeout)
		default:
		}
		// Messages are being handed over by the network's goroutines.
		waitForNetwork()
	}
}

// waitForNetwork yields to the delivery goroutines of the in-memory
// network, which hand over a message in microseconds.
func waitForNetwork() { time.Sleep(50 * time.Microsecond) }

// Tick moves every running node's clock by k ticks, quiescing after each.
func (c *Cluster) Tick(k int) {
	c.t.Helper()
	for i := 0; i < k; i++ {
		for _, id := range c.IDs() {
			if n := c.Node(id); n != nil {
				n.Ticker.Tick(n.Raft.Done())
			}
		}
		c.Quiesce()
	}
}

// Elect makes node id campaign and returns once it leads (ticking the
// clock at most a few election timeouts while it does not).
func (c *Cluster) Elect(id uint64) {
	c.t.Helper()
	c.Quiesce()
	for i := 0; i < 100; i++ {
		if c.Node(id).Raft.IsLeader() && c.agree(id) {
			return
		}
		if i%30 == 0 {
			c.Node(id).Raft.Campaign()
		}
		c.Quiesce()
		c.Tick(1)
	}
	c.t.Fatalf("node %d did not become the leader that every node knows", id)
}

// agree reports whether every running node knows lead as the leader.
func (c *Cluster) agree(lead uint64) bool {
	for _, id := range c.IDs() {
		if n := c.Node(id); n != nil && n.Raft.Leader() != lead {
			return false
		}
	}
	return true
}

// Leader returns the id of the node every running node follows, or 0.
func (c *Cluster) Leader() uint64 {
	ids := c.IDs()
	if len(ids) == 0 {
		return 0
	}
	lead := c.Node(ids[0]).Raft.Leader()
	if lead == 0 || c.Node(lead) == nil || !c.agree(lead) {
		return 0
	}
	return lead
}

// Put writes through the leader and fails the test on an error.
func (c *Cluster) Put(key, value string) {
	c.t.Helper()
	lead := c.Leader()
	if lead == 0 {
		c.t.Fatal("no leader to write through")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Node(lead).Store.Put(ctx, []byte(key), []byte(value)); err != nil {
		c.t.Fatalf("put %q on leader %d: %v", key, lead, err)
	}
}

// WaitApplied waits until every running node has applied index.
func (c *Cluster) WaitApplied(index uint64) {
	c.t.Helper()
	for i := 0; ; i++ {
		c.Quiesce()
		behind := false
		for _, id := range c.IDs() {
			if c.Node(id).Store.AppliedIndex() < index {
				behind = true
			}
		}
		if !behind {
			return
		}
		if i == 100 {
			c.t.Fatalf("not every node applied index %d after %d ticks", index, i)
		}
		c.Tick(1) // a follower that missed an append learns of it by a heartbeat
	}
}

// Get reads key from node id's engine directly (no read index: for
// comparing replicas after WaitApplied).
func (c *Cluster) Get(id uint64, key string) (string, error) {
	var v []byte
	err := c.Node(id).Store.DB(func(db *engine.DB) error {
		var err error
		v, err = db.Get([]byte(key))
		return err
	})
	return string(v), err
}
