// Package clustertest is the one cluster harness of the tests: it runs the
// nodes of a raft cluster inside one test process, each on its own
// in-memory disk, connected by an in-memory network
// (transport.MemNetwork), on a clock the test drives.
//
// It owns nothing that production code uses and must never be imported by
// it. It has two layers:
//
//   - Harness[N] is generic over the node: the caller supplies a start
//     function that builds one node from an Env (identity, peers, disk,
//     listeners, network endpoint, ticker, logger), and a node type with
//     Node() *raftnode.Node and Close() (Member). The harness owns
//     everything around the nodes: slots with disks that survive restarts
//     (and power cuts: Crash), reserved loopback client addresses
//     (package loopport), the network and its partitions, the clock,
//     start/stop/crash/restart, and the waits: an agreed leader, a quiet
//     cluster, a condition, convergence. internal/server's and
//     internal/cli's tests run *server.Server nodes on it; because it
//     does not import internal/server, the server package's own tests can
//     use it.
//   - Cluster is the harness with nodes of the stack below the server
//     (raftnode over raftlog, kv over the engine), for the kv and raft
//     tests.
//
// # The clock
//
// A manual Clock only moves when the test calls Tick, and Quiesce waits
// until every node's loop is idle and the network carries nothing, so a
// test drives elections and heartbeats step by step instead of sleeping on
// real tickers; every wait of the harness (WaitLeader, Eventually,
// Converge) ticks a manual clock instead of sleeping. Writes and reads
// flow without ticks: they need messages, not time. A test whose subject
// is wall-clock behaviour (a load, a timeout, a leadership move under real
// delays) runs the clock freely (Config.FreeClock, Clock.SetFree); so does
// a cluster whose raft traffic goes over real TCP (Config.TCPRaft: TLS and
// peer-token tests), since only the in-memory network can tell when the
// cluster is quiet. Only raft's time stands still on a manual clock: what
// a node measures in wall time (a request's timeout, a retry timer) still
// runs.
package clustertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/raftlog"
	"github.com/kayadb/kayadb/internal/raftnode"
	"github.com/kayadb/kayadb/internal/transport"
	"github.com/kayadb/kayadb/internal/vfs"
)

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
	// StoreOptions, when set, adjusts a node's state machine options
	// (evaluators, retention) before it opens, now and at every restart.
	// The engine's compaction filter is the options' Collector when set.
	StoreOptions func(id uint64, o *kv.Options)
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

// Node returns the raft node (Member).
func (n *Node) Node() *raftnode.Node { return n.Raft }

// Close stops the node: network, raft loop, state machine, log, engine
// (Member).
func (n *Node) Close() error {
	_ = n.Trans.Close()
	n.Raft.Stop()
	n.Store.Stop()
	var errs []error
	if err := n.rlog.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing the raft log: %w", err))
	}
	if err := n.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing the engine: %w", err))
	}
	return errors.Join(errs...)
}

// Cluster is a running test cluster of Nodes on a Harness with a manual
// clock.
type Cluster struct {
	*Harness[*Node]
	opts Options
}

// New starts a cluster and stops it when the test ends. No node leads
// until the test elects one (Elect) or ticks the clock.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes <= 0 {
		opts.Nodes = 3
	}
	c := &Cluster{opts: opts}
	c.Harness = NewHarness(t, Config[*Node]{Nodes: opts.Nodes, Seed: opts.Seed, Start: c.start})
	return c
}

func (c *Cluster) start(env *Env) (*Node, error) {
	id := env.ID
	var fs vfs.FS = env.Disk
	if c.opts.WrapFS != nil {
		fs = c.opts.WrapFS(id, env.Disk)
	}
	so := kv.Options{NodeID: id, RequestTimeout: 10 * time.Second, Logger: env.Logger}
	if c.opts.StoreOptions != nil {
		c.opts.StoreOptions(id, &so)
	}
	eo := &engine.Options{FS: fs, MemTableSize: 256 << 10}
	if so.Collector != nil {
		eo.CompactionFilter = so.Collector.Filter
	}
	db, err := engine.Open("/engine", eo)
	if err != nil {
		return nil, err
	}
	so.DB = db
	store, err := kv.Open(so)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	rlog, _, err := raftlog.Open(raftlog.Options{FS: fs, Dir: "/raft", NodeID: id})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	var peers []uint64
	addrs := map[uint64]string{}
	for _, p := range env.Peers {
		peers = append(peers, p.ID)
		addrs[p.ID] = fmt.Sprintf("mem:%d", p.ID)
	}
	cfg := raftnode.Config{ID: id, Peers: peers, Log: rlog, SM: store, Ticker: env.Ticker, Logger: env.Logger}
	if c.opts.Configure != nil {
		c.opts.Configure(id, &cfg)
	}
	rn, err := raftnode.New(cfg)
	if err != nil {
		_ = rlog.Close()
		_ = db.Close()
		return nil, err
	}
	tr := env.NewTransport(handler{rn}).(*transport.MemTransport)
	tr.SetPeers(addrs)
	rn.Start(tr)
	store.Start(rn)
	return &Node{ID: id, FS: env.Disk, Raft: rn, Store: store, Trans: tr, Ticker: env.Ticker.(*Ticker), db: db, rlog: rlog}, nil
}

// handler is the transport's handler: the raft node; snapshot streams are
// refused (the harness runs without raft snapshots, Config.Snapshots nil;
// internal/server's tests cover them).
type handler struct{ *raftnode.Node }

func (handler) ReceiveSnapshot(from uint64, r io.Reader) error {
	return errors.New("clustertest: snapshot streams are not supported")
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
		v, err = kv.LocalGet(db, []byte(key))
		return err
	})
	return string(v), err
}
