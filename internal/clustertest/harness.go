package clustertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/loopport"
	"github.com/kayadb/kayadb/internal/raftnode"
	"github.com/kayadb/kayadb/internal/transport"
	"github.com/kayadb/kayadb/internal/vfs"
)

// Member is what the harness needs of a running node: its raft node (to
// read its role and leader, to tick it and to wait until it is idle) and
// a way to stop it. *server.Server is one as it is; this package's Node
// is another.
type Member interface {
	Node() *raftnode.Node
	Close() error
}

// Peer is a member's identity and addresses.
type Peer struct {
	ID                   uint64
	RaftAddr, ClientAddr string
}

// Env is what a start function gets to build one incarnation of a node
// (the slot's identity, disk and addresses survive restarts; the rest is
// new every time).
type Env struct {
	ID uint64
	// Peers are the bootstrap members (Config.Nodes), this one included
	// unless it joins later.
	Peers []Peer
	// Self is this slot's identity and addresses.
	Self Peer
	// Join: the slot was added with AddSlot(id, true) (a node that joins a
	// running cluster instead of bootstrapping one).
	Join bool
	// Disk is the slot's in-memory disk. It survives Stop and Restart;
	// Crash replaces it with what a power cut would have left.
	Disk *vfs.MemFS
	// ClientListener listens on Self.ClientAddr (Config.ClientListeners).
	// The node owns it once the start function returns without an error.
	ClientListener net.Listener
	// RaftListener listens on Self.RaftAddr (Config.TCPRaft); the node
	// owns it as it owns ClientListener.
	RaftListener net.Listener
	// NewTransport returns the node's endpoint on the in-memory network
	// (nil with Config.TCPRaft: the node dials its peers itself).
	NewTransport func(h transport.Handler) transport.Transport
	// Ticker is the node's raft clock (raftnode.Config.Ticker). The start
	// function must hand it on: a manual tick that no loop takes within
	// 20 s fails the test.
	Ticker raftnode.Ticker
	// TickInterval is the length of a tick the clock stands for: a node
	// that derives durations from its tick (timeouts measured in election
	// timeouts) should be configured with it.
	TickInterval time.Duration
	// Logger is the node's logger: to the slot's captured log
	// (Config.CaptureLogs), to stderr at debug level when $KAYA_TEST_LOG
	// is set, else discarding.
	Logger *slog.Logger
}

// Config configures a Harness.
type Config[N Member] struct {
	// Nodes is the number of bootstrap members (ids 1..Nodes).
	Nodes int
	// Start builds and starts a node from env, its raft clock env.Ticker.
	// Required.
	Start func(env *Env) (N, error)
	// Seed seeds the in-memory network's randomness. Default 1.
	Seed uint64
	// TickInterval is the length of a tick. Default 10 ms.
	TickInterval time.Duration
	// FreeClock starts the clock running in real time; without it the
	// clock is manual (see Clock).
	FreeClock bool
	// ClientListeners reserves a loopback client address for every slot
	// (outside the ephemeral range, see package loopport) and listens on
	// it at every start (Env.ClientListener).
	ClientListeners bool
	// TCPRaft carries raft over real loopback TCP (Env.RaftListener)
	// instead of the in-memory network; for tests of the raft port itself
	// (TLS, peer tokens). Such a cluster has no Net: no partitions, no
	// Quiesce, so no manual clock either, and Crash is refused.
	TCPRaft bool
	// CaptureLogs keeps every node's log (at debug level) for Log.
	CaptureLogs bool
	// Deferred leaves the bootstrap members stopped; the test starts them
	// (Start, TryStart, StartAll).
	Deferred bool
}

// Harness runs the nodes of one test cluster in this process: a slot per
// node id with its disk and addresses, the in-memory network between them,
// and one clock. It is safe for use by several goroutines (a test may
// crash a node from a load goroutine).
type Harness[N Member] struct {
	t    testing.TB
	cfg  Config[N]
	peer []Peer // bootstrap members

	// Net is the in-memory raft network (nil with Config.TCPRaft):
	// partitions, dropped links, snapshot stream filters.
	Net *transport.MemNetwork
	// Clock is every node's raft clock.
	Clock *Clock

	mu    sync.Mutex
	slots map[uint64]*slot[N]
}

type slot[N Member] struct {
	peer Peer
	join bool
	disk *vfs.MemFS
	// cln and rln hold the reserved addresses from reservation to the
	// first start, so that nothing else takes them meanwhile.
	cln, rln net.Listener
	log      *logBuffer

	running bool
	node    N
	trans   *transport.MemTransport // this incarnation's endpoint
	ticker  *Ticker                 // this incarnation's clock
}

// NewHarness creates a harness, starts the bootstrap members (unless
// Config.Deferred) and stops everything when the test ends.
func NewHarness[N Member](t testing.TB, cfg Config[N]) *Harness[N] {
	t.Helper()
	if cfg.Start == nil {
		t.Fatal("clustertest.Config.Start is required")
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	if cfg.TickInterval <= 0 {
		cfg.TickInterval = 10 * time.Millisecond
	}
	if cfg.TCPRaft && !cfg.FreeClock {
		t.Fatal("clustertest: a manual clock needs the in-memory network (Quiesce counts its messages); set FreeClock with TCPRaft")
	}
	h := &Harness[N]{t: t, cfg: cfg, Clock: NewClock(cfg.TickInterval, cfg.FreeClock), slots: map[uint64]*slot[N]{}}
	if !cfg.TCPRaft {
		h.Net = transport.NewMemNetwork(cfg.Seed)
	}
	t.Cleanup(h.StopAll)
	for id := uint64(1); id <= uint64(cfg.Nodes); id++ {
		h.peer = append(h.peer, h.AddSlot(id, false))
	}
	if !cfg.Deferred {
		h.StartAll()
	}
	return h
}

// AddSlot reserves a disk and addresses for node id; join marks a node
// that joins a running cluster (Env.Join). The bootstrap members' slots
// exist from New on.
func (h *Harness[N]) AddSlot(id uint64, join bool) Peer {
	h.t.Helper()
	s := &slot[N]{join: join, disk: vfs.NewMem()}
	s.peer = Peer{ID: id, RaftAddr: fmt.Sprintf("127.0.0.1:%d", 40000+id)}
	if h.cfg.ClientListeners {
		s.cln = h.reserve()
		s.peer.ClientAddr = s.cln.Addr().String()
	}
	if h.cfg.TCPRaft {
		s.rln = h.reserve()
		s.peer.RaftAddr = s.rln.Addr().String()
	}
	if h.cfg.CaptureLogs {
		s.log = &logBuffer{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.slots[id] != nil {
		h.t.Fatalf("clustertest: node %d has a slot already", id)
	}
	h.slots[id] = s
	return s.peer
}

// reserve listens on a free loopback address outside the ephemeral range
// (a node restarted on it must find it free again).
func (h *Harness[N]) reserve() net.Listener {
	h.t.Helper()
	for attempt := 0; ; attempt++ {
		addr, err := loopport.Pick()
		if err != nil {
			h.t.Fatal(err)
		}
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			return ln
		}
		if attempt == 10 {
			h.t.Fatalf("reserving a loopback address: %v", err)
		}
	}
}

// listen listens on addr again for a restart. The previous incarnation's
// listener may still be closing: retry for a second.
func listen(addr string) (net.Listener, error) {
	var err error
	for i := 0; i < 50; i++ {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, err
}

func (h *Harness[N]) slot(id uint64) *slot[N] {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.slots[id]
	if s == nil {
		h.t.Fatalf("clustertest: node %d has no slot (AddSlot)", id)
	}
	return s
}

// StartAll starts every stopped bootstrap member.
func (h *Harness[N]) StartAll() {
	h.t.Helper()
	for _, p := range h.peer {
		if !h.Running(p.ID) {
			h.Start(p.ID)
		}
	}
}

// Start starts node id on its disk and fails the test on an error.
func (h *Harness[N]) Start(id uint64) N {
	h.t.Helper()
	n, err := h.TryStart(id)
	if err != nil {
		h.t.Fatalf("starting node %d: %v", id, err)
	}
	return n
}

// TryStart starts node id and returns the start function's error.
func (h *Harness[N]) TryStart(id uint64) (N, error) {
	h.t.Helper()
	var zero N
	s := h.slot(id)
	h.mu.Lock()
	if s.running {
		h.mu.Unlock()
		h.t.Fatalf("clustertest: node %d is running already", id)
	}
	env := &Env{ID: id, Peers: append([]Peer(nil), h.peer...), Self: s.peer, Join: s.join, Disk: s.disk,
		TickInterval: h.cfg.TickInterval, Logger: h.logger(id, s.log)}
	env.ClientListener, env.RaftListener = s.cln, s.rln
	s.cln, s.rln = nil, nil
	h.mu.Unlock()

	var err error
	if h.cfg.ClientListeners && env.ClientListener == nil {
		if env.ClientListener, err = listen(s.peer.ClientAddr); err != nil {
			return zero, err
		}
	}
	if h.cfg.TCPRaft && env.RaftListener == nil {
		if env.RaftListener, err = listen(s.peer.RaftAddr); err != nil {
			if env.ClientListener != nil {
				_ = env.ClientListener.Close()
			}
			return zero, err
		}
	}
	var trans *transport.MemTransport
	if h.Net != nil {
		env.NewTransport = func(th transport.Handler) transport.Transport {
			trans = h.Net.Transport(id, th)
			return trans
		}
	}
	tk := h.Clock.NewTicker()
	env.Ticker = tk
	n, err := h.cfg.Start(env)
	if err != nil {
		// Whatever the node took over is closed (again: closing twice is
		// harmless).
		for _, ln := range []net.Listener{env.ClientListener, env.RaftListener} {
			if ln != nil {
				_ = ln.Close()
			}
		}
		if trans != nil {
			_ = trans.Close()
		}
		tk.Stop()
		return zero, err
	}
	h.mu.Lock()
	s.running, s.node, s.trans, s.ticker = true, n, trans, tk
	h.mu.Unlock()
	return n, nil
}

func (h *Harness[N]) logger(id uint64, buf *logBuffer) *slog.Logger {
	debug := &slog.HandlerOptions{Level: slog.LevelDebug}
	var hs []slog.Handler
	if buf != nil {
		// The slot's own log: no attribute of the harness's in it, so
		// that a test reads exactly what the node logged.
		hs = append(hs, slog.NewTextHandler(buf, debug))
	}
	if os.Getenv("KAYA_TEST_LOG") != "" {
		hs = append(hs, slog.NewTextHandler(os.Stderr, debug).WithAttrs([]slog.Attr{slog.Uint64("test_node", id)}))
	}
	switch len(hs) {
	case 0:
		return slog.New(slog.DiscardHandler)
	case 1:
		return slog.New(hs[0])
	}
	return slog.New(slog.NewMultiHandler(hs...))
}

// take marks node id stopped and returns what ran (ok false if nothing).
func (h *Harness[N]) take(id uint64) (n N, trans *transport.MemTransport, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.slots[id]
	if s == nil || !s.running {
		return n, nil, false
	}
	n, trans = s.node, s.trans
	var zero N
	s.running, s.node, s.trans, s.ticker = false, zero, nil, nil
	return n, trans, true
}

// Stop stops node id (its disk keeps what it wrote) and fails the test if
// Close returns an error.
func (h *Harness[N]) Stop(id uint64) {
	h.t.Helper()
	if n, _, ok := h.take(id); ok {
		if err := n.Close(); err != nil {
			h.t.Errorf("closing node %d: %v", id, err)
		}
	}
}

// Kill stops node id as a crash would: cut off the network first (nothing
// it does afterwards reaches a peer), then closed without checking the
// error (its disk may be failing on purpose). The disk is left as it is.
func (h *Harness[N]) Kill(id uint64) {
	if n, trans, ok := h.take(id); ok {
		if trans != nil {
			_ = trans.Close()
		}
		_ = n.Close()
	}
}

// Crash cuts power to node id: it is cut off the network (a crashed
// process sends nothing after its disk froze; otherwise it could
// acknowledge entries that the clone does not hold), its disk is replaced
// by what a power cut would have left, and it is stopped.
func (h *Harness[N]) Crash(id uint64) {
	h.t.Helper()
	if h.Net == nil {
		h.t.Fatal("clustertest: Crash needs the in-memory network (a TCP raft node cannot be cut off from outside)")
	}
	n, trans, ok := h.take(id)
	if !ok {
		return
	}
	if trans != nil {
		_ = trans.Close()
	}
	s := h.slot(id)
	h.mu.Lock()
	disk := s.disk
	h.mu.Unlock()
	crashed := disk.CrashClone(vfs.CrashCloneOptions{})
	if err := n.Close(); err != nil {
		h.t.Errorf("closing node %d: %v", id, err)
	}
	h.mu.Lock()
	s.disk = crashed
	h.mu.Unlock()
}

// Restart stops and starts node id.
func (h *Harness[N]) Restart(id uint64) N {
	h.t.Helper()
	h.Stop(id)
	return h.Start(id)
}

// Detach hands running node id over to the test, which stops it itself
// (a graceful shutdown); the harness counts it as stopped.
func (h *Harness[N]) Detach(id uint64) N {
	h.t.Helper()
	n, _, ok := h.take(id)
	if !ok {
		h.t.Fatalf("clustertest: node %d is not running", id)
	}
	return n
}

// StopAll stops every running node and gives up the addresses reserved
// for slots that never started.
func (h *Harness[N]) StopAll() {
	for _, id := range h.IDs() {
		h.Stop(id)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.slots {
		for _, ln := range []net.Listener{s.cln, s.rln} {
			if ln != nil {
				_ = ln.Close()
			}
		}
		s.cln, s.rln = nil, nil
	}
}

// Vacate gives up the addresses held for slot id until its first start:
// nothing answers on them (a member that never started).
func (h *Harness[N]) Vacate(id uint64) {
	s := h.slot(id)
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ln := range []net.Listener{s.cln, s.rln} {
		if ln != nil {
			_ = ln.Close()
		}
	}
	s.cln, s.rln = nil, nil
}

// IDs returns the running nodes' ids in order.
func (h *Harness[N]) IDs() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.idsLocked()
}

func (h *Harness[N]) idsLocked() []uint64 {
	var ids []uint64
	for id, s := range h.slots {
		if s.running {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// Node returns running node id (the zero N if it is stopped).
func (h *Harness[N]) Node(id uint64) N {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.slots[id]; s != nil && s.running {
		return s.node
	}
	var zero N
	return zero
}

// Running reports whether node id runs.
func (h *Harness[N]) Running(id uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.slots[id]
	return s != nil && s.running
}

// Nodes returns the running nodes by id (a copy).
func (h *Harness[N]) Nodes() map[uint64]N {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := map[uint64]N{}
	for id, s := range h.slots {
		if s.running {
			m[id] = s.node
		}
	}
	return m
}

// Peers returns the bootstrap members.
func (h *Harness[N]) Peers() []Peer { return append([]Peer(nil), h.peer...) }

// Peer returns slot id's identity and addresses.
func (h *Harness[N]) Peer(id uint64) Peer { return h.slot(id).peer }

// ClientAddr returns slot id's client address (Config.ClientListeners).
func (h *Harness[N]) ClientAddr(id uint64) string { return h.slot(id).peer.ClientAddr }

// Disk returns slot id's disk.
func (h *Harness[N]) Disk(id uint64) *vfs.MemFS {
	s := h.slot(id)
	h.mu.Lock()
	defer h.mu.Unlock()
	return s.disk
}

// SetDisk gives slot id another disk for its next start (a crash clone
// the test made itself, a disk shared by another test step).
func (h *Harness[N]) SetDisk(id uint64, d *vfs.MemFS) {
	s := h.slot(id)
	h.mu.Lock()
	defer h.mu.Unlock()
	s.disk = d
}

// SetJoin changes whether slot id's next start joins (Env.Join): an
// operator who forgets --join on a restart.
func (h *Harness[N]) SetJoin(id uint64, join bool) {
	s := h.slot(id)
	h.mu.Lock()
	defer h.mu.Unlock()
	s.join = join
}

// Transport returns running node id's endpoint on the in-memory network
// (nil with Config.TCPRaft or when it is stopped).
func (h *Harness[N]) Transport(id uint64) *transport.MemTransport {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.slots[id]; s != nil && s.running {
		return s.trans
	}
	return nil
}

// Log returns what slot id's incarnations logged (Config.CaptureLogs).
func (h *Harness[N]) Log(id uint64) string {
	if b := h.slot(id).log; b != nil {
		return b.String()
	}
	return ""
}

// waitTimeout bounds every wait of the harness (a leader, quiescence, a
// condition): a cluster that needs longer is broken or starved, and the
// test must fail rather than hang.
const waitTimeout = 20 * time.Second

// Quiesce waits until every running node's loop is idle and the network
// carries nothing: a full pass over the nodes that sees them all idle,
// with nothing in flight and no message handled during the pass. A loop
// that stopped (a node that failed, on purpose or not) counts as idle:
// tests that must see every node up check Node().Done() themselves. It
// needs the in-memory network.
func (h *Harness[N]) Quiesce() {
	h.t.Helper()
	if h.Net == nil {
		h.t.Fatal("clustertest: Quiesce needs the in-memory network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for {
		inflight, before := h.Net.Traffic()
		if inflight == 0 {
			for _, n := range h.Nodes() {
				if err := n.Node().WaitIdle(ctx); err != nil && !errors.Is(err, raftnode.ErrStopped) {
					h.t.Fatalf("the cluster did not quiesce within %v", waitTimeout)
				}
			}
			inflight, after := h.Net.Traffic()
			if inflight == 0 && after == before {
				return
			}
		}
		select {
		case <-ctx.Done():
			h.t.Fatalf("the cluster did not quiesce within %v", waitTimeout)
		default:
		}
		// Messages are being handed over by the network's goroutines,
		// which take microseconds.
		time.Sleep(50 * time.Microsecond)
	}
}

// Tick moves every running node's clock by k ticks, quiescing after each.
func (h *Harness[N]) Tick(k int) {
	h.t.Helper()
	h.TickNodes(k)
}

// TickNodes moves the clocks of the running nodes among ids (every
// running node when ids is empty) by k ticks, quiescing after each; the
// other nodes' time stands still (a node whose process is paused, or
// whose clock is slow).
func (h *Harness[N]) TickNodes(k int, ids ...uint64) {
	h.t.Helper()
	for i := 0; i < k; i++ {
		h.tickOnce(ids)
		h.Quiesce()
	}
}

func (h *Harness[N]) tickOnce(ids []uint64) {
	h.t.Helper()
	type ticking struct {
		id   uint64
		tk   *Ticker
		done <-chan struct{}
	}
	h.mu.Lock()
	if len(ids) == 0 {
		ids = h.idsLocked()
	}
	var all []ticking
	for _, id := range ids {
		if s := h.slots[id]; s != nil && s.running {
			all = append(all, ticking{id, s.ticker, s.node.Node().Done()})
		}
	}
	h.mu.Unlock()
	for _, x := range all {
		timer := time.NewTimer(waitTimeout)
		select {
		case x.tk.c <- time.Now():
		case <-x.done:
		case <-x.tk.stop:
		case <-timer.C:
			h.t.Fatalf("node %d's raft loop took no tick within %v: it is stuck, or its start function did not pass Env.Ticker on", x.id, waitTimeout)
		}
		timer.Stop()
	}
}

// Leader returns the node that leads with the agreement of every running
// node among ids (every running node when ids is empty), or 0.
func (h *Harness[N]) Leader(ids ...uint64) uint64 {
	nodes := h.Nodes()
	if len(ids) == 0 {
		for id := range nodes {
			ids = append(ids, id)
		}
	}
	var lead uint64
	for _, id := range ids {
		n, ok := nodes[id]
		if !ok {
			continue
		}
		l := n.Node().Leader()
		if l == 0 || (lead != 0 && l != lead) {
			return 0
		}
		lead = l
	}
	if n, ok := nodes[lead]; lead == 0 || !ok || !n.Node().IsLeader() {
		return 0
	}
	return lead
}

// WaitLeader waits for a leader that the running nodes among ids (all
// when empty) agree on, and returns it. A manual clock is ticked while
// there is none.
func (h *Harness[N]) WaitLeader(ids ...uint64) uint64 {
	h.t.Helper()
	var lead uint64
	h.Eventually(fmt.Sprintf("a leader that the nodes %v agree on", ids), func() bool {
		lead = h.Leader(ids...)
		return lead != 0
	})
	return lead
}

// Elect makes node id the leader that every running node agrees on: it
// campaigns (or, when another node leads already, that one hands
// leadership over), and a manual clock is ticked until it wins.
func (h *Harness[N]) Elect(id uint64) {
	h.t.Helper()
	if !h.Running(id) {
		h.t.Fatalf("clustertest: node %d is not running", id)
	}
	if !h.Clock.Free() {
		h.Quiesce() // a node campaigns once it has its configuration
	}
	deadline := time.Now().Add(waitTimeout)
	for i := 0; ; i++ {
		lead := h.Leader()
		if lead == id {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("node %d did not become the leader that every node knows within %v", id, waitTimeout)
		}
		// Again every 30 rounds: a split vote, a message lost to a
		// partition, a transfer that timed out.
		if i%30 == 0 {
			if n, ok := h.Nodes()[lead]; ok {
				n.Node().TransferLeadership(id)
			} else {
				h.Node(id).Node().Campaign()
			}
		}
		h.step()
	}
}

// step lets time pass: one tick of a manual clock (after which the
// cluster is quiet), a few milliseconds of a free-running one.
func (h *Harness[N]) step() {
	h.t.Helper()
	if h.Clock.Free() {
		time.Sleep(5 * time.Millisecond)
		return
	}
	h.Quiesce()
	h.Tick(1)
}

// Eventually waits until cond holds, letting time pass meanwhile (a
// manual clock is ticked once between checks, after the cluster went
// quiet; a free-running one is polled). It fails the test after 20 s.
func (h *Harness[N]) Eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		h.step()
	}
}

// Converge waits until the running nodes ids report the same state (their
// applied index and a digest of their data, say) and returns it; it fails
// the test with every node's state after 20 s.
func Converge[N Member, S comparable](h *Harness[N], ids []uint64, state func(id uint64, n N) S) S {
	h.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		var first S
		same := true
		var seen bytes.Buffer
		for i, id := range ids {
			n := h.Node(id)
			if !h.Running(id) {
				h.t.Fatalf("node %d is not running", id)
			}
			st := state(id, n)
			fmt.Fprintf(&seen, "; node %d: %+v", id, st)
			if i == 0 {
				first = st
			} else if st != first {
				same = false
			}
		}
		if same {
			return first
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("nodes did not converge in %v%s", waitTimeout, seen.String())
		}
		h.step()
	}
}

// logBuffer is a node's captured log, shared by its goroutines and kept
// across restarts. It keeps the first maxLog bytes: enough for any test
// that reads it, and bounded if a node logs at debug level for long.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

const maxLog = 32 << 20

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len()+len(p) <= maxLog {
		l.b.Write(p)
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
