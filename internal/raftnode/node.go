// Package raftnode drives one go.etcd.io/raft RawNode: the only goroutine
// that touches it ticks the clock, steps messages and proposals, and handles
// each Ready in the order raft requires.
//
// It owns the raft state machine and the order of I/O around it; it never
// applies an entry before it is durable (etcd#14370), never sends a
// follower's message before the state it depends on is durable, and never
// waits on the network or a client while holding the loop.
//
// Ready handling, in order:
//
//  1. role and leader changes are published (and waiting proposals learn
//     that leadership was lost);
//  2. a leader sends its messages first (it may write its own log while the
//     followers write theirs, Raft thesis §10.2.1);
//  3. entries and hard state are appended to the WAL and fsynced when
//     MustSync;
//  4. a follower or candidate sends its messages;
//  5. ReadIndex answers are handed to the read loop;
//  6. committed entries are handed to the apply goroutine (apply.go);
//     configuration changes are applied on the loop, through
//     ApplyConfChange, once everything before them is applied;
//  7. Advance.
//
// That is the synchronous loop (Config.SyncStorageWrites). By default the
// log is written asynchronously (storage.go): every message to a peer is
// sent at once in step 2, step 3 queues the entries and hard state for the
// storage goroutine, which fsyncs them and only then sends the messages
// that depend on them, and raft needs no Advance.
//
// # A full disk
//
// A step of a Ready that fails because the disk is full (vfs.IsNoSpace:
// persisting the log or the hard state, installing a snapshot, applying
// entries) does not stop the loop. The Ready is kept and the failed step is
// retried, with back-off counted in ticks, from where it stopped: the steps
// that succeeded are not repeated (a leader's messages are sent once, an
// entry is applied once), the later ones wait (a follower acknowledges
// nothing it has not persisted, nothing is applied before it is durable).
// Meanwhile the loop still ticks and steps messages and proposals, which
// raft allows between Ready and Advance, so the node keeps its term and
// stays a follower; it hands out no new Ready until the kept one is
// advanced. Stalled reports the condition and Config.OnStall announces it.
// Any other error of those steps is fatal. Applying entries is the apply
// goroutine's step (apply.go): a run it fails to apply on a full disk is
// retried with the same back-off and reported the same way, while the loop
// goes on handling Readys until the apply queue is full.
//
// # Screening
//
// Every message from the network is screened before RawNode.Step (see
// screen.go): messages that would make the raft library panic, or that no
// correct peer sends, are dropped and counted by reason (ScreenStats).
package raftnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/kayadb/kayadb/internal/transport"
	"github.com/kayadb/kayadb/internal/vfs"
)

// Storage is the durable raft log the node writes: *raftlog.Log in
// production, a wrapper that injects failures in tests.
type Storage interface {
	raft.Storage
	// Save persists entries and the hard state, fsynced when sync is set.
	// After a failed Save the log must stay usable, and Save may be called
	// again with the same arguments.
	Save(hs *pb.HardState, ents []*pb.Entry, sync bool) error
	// SaveSnapshot records an installed snapshot durably.
	SaveSnapshot(snap *pb.Snapshot) error
	// CreateSnapshot records a snapshot taken locally at index i.
	CreateSnapshot(i uint64, cs *pb.ConfState, data []byte) (*pb.Snapshot, error)
	// Compact drops the entries up to and including index.
	Compact(index uint64) error
}

// Ticker is the raft clock: every value received from C is one tick.
// Production uses a time.Ticker of Config.TickInterval; tests pass a ticker
// they drive by hand, which makes the node loop deterministic.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

type timeTicker struct{ t *time.Ticker }

func (t timeTicker) C() <-chan time.Time { return t.t.C }
func (t timeTicker) Stop()               { t.t.Stop() }

// StateMachine is what committed entries are applied to. Its methods are
// called in log order, one at a time: Apply from the apply goroutine,
// ApplyConfChange from the raft loop while the apply goroutine is idle.
// LeadershipChanged comes in order with Apply: after the runs of entries
// committed before the change (those of the Ready that shows it
// included), from the apply goroutine, or from the raft loop when nothing
// is being applied. It may run concurrently with ApplyConfChange or a
// snapshot's Install.
type StateMachine interface {
	// Apply applies a run of committed normal entries (including empty
	// ones, whose index must still be recorded as applied).
	Apply(ents []*pb.Entry) error
	// ApplyConfChange records an applied configuration change and the
	// configuration that results.
	ApplyConfChange(e *pb.Entry, cc pb.ConfChangeI, cs *pb.ConfState) error
	// LeadershipChanged tells the state machine the current leader (0 when
	// none is known), the term in which the change was seen, and whether
	// the leader is this node.
	LeadershipChanged(leader, term uint64, isLeader bool)
}

// Snapshotter creates, installs and sends snapshots of the state machine.
type Snapshotter interface {
	// Take checkpoints the state machine as applied now and returns the
	// snapshot's metadata (the index it holds, with the term and
	// configuration as of that index). The snapshot is durable when it
	// returns. It runs on a background goroutine, concurrently with Apply.
	Take() (*pb.SnapshotMetadata, error)
	// Install makes a received snapshot (already stored durably by the
	// transport) the node's state, durably, before the raft log records
	// it. It runs on the raft loop.
	Install(snap *pb.Snapshot) error
	// Send streams a MsgSnap to its destination in the background and
	// reports the outcome with Node.ReportSnapshot. It must not block.
	Send(m *pb.Message)
}

// Config configures a Node.
type Config struct {
	ID uint64
	// Peers are the initial voters of a brand-new cluster. They are used only
	// when the log is empty and Join is false.
	Peers []uint64
	// Join starts this node with an empty log and no configuration: it
	// waits for the leader to add it and send a snapshot.
	Join bool
	// Log is the durable raft log.
	Log Storage
	// SM receives committed entries.
	SM StateMachine
	// Applied is the last index the state machine had applied before this
	// start; raft does not hand out entries at or below it again.
	Applied uint64
	// Snapshots takes, installs and sends snapshots; nil disables them.
	Snapshots Snapshotter
	// SnapshotEntries: after this many applied entries since the last
	// snapshot, a new one is taken and the log compacted. 0 disables.
	SnapshotEntries uint64
	// CatchUpEntries is how many entries before the snapshot the log keeps,
	// so that a follower slightly behind catches up from the log rather than
	// by a snapshot. Default 5,000.
	CatchUpEntries uint64
	// TickInterval is the raft clock tick. Default 100 ms.
	TickInterval time.Duration
	// Ticker, when set, replaces the time.Ticker of TickInterval as the
	// source of ticks (tests drive the clock by hand). The node stops it.
	Ticker Ticker
	// OnStall, when set, is called from the raft loop when a step of a
	// Ready fails because the disk is full (with that error) and again when
	// the step succeeds after all (with nil). It must not block: the server
	// uses it to enter and leave disk-full mode.
	OnStall func(err error)
	// StallRetryMaxTicks bounds the back-off between retries of a step
	// that failed on a full disk: 1, 2, 4, ... ticks, at most this many.
	// Default 10 (one second at the default tick): a freed disk is used
	// within a second, and a full one costs at most ten attempts a second.
	StallRetryMaxTicks int
	// ElectionTicks and HeartbeatTicks: defaults 10 and 1 (etcd's).
	ElectionTicks, HeartbeatTicks int
	// MaxSizePerMsg bounds the entries in one append message. Default 1 MiB.
	MaxSizePerMsg uint64
	// MaxInflightMsgs bounds unacknowledged appends per follower. Default
	// 256 (it must stay below the transport's per-peer queue).
	MaxInflightMsgs int
	// MaxUncommittedBytes makes the leader refuse proposals (back-pressure)
	// beyond this many uncommitted bytes. Default 64 MiB.
	MaxUncommittedBytes uint64
	// Logger receives the node's log lines, raft's own included. It should
	// say which node they come from (the server's has node=ID): this
	// package adds no attribute of its own for it.
	Logger *slog.Logger
	// Stages, when set, receives the durations of the request stages the
	// loop sees (queue, raft_ready, log_fsync, replicate, apply).
	Stages *Stages
	// SyncStorageWrites handles each Ready synchronously: its entries and
	// hard state are written and fsynced on the loop before raft hands out
	// the next one. Unset (the default), the storage goroutine writes them
	// while the loop goes on (storage.go).
	SyncStorageWrites bool
	// LeaseReads lets LocalReadIndex answer on a leader of several voters
	// while it holds a lease: a quorum acknowledged it within LeaseDuration
	// (see LocalReadIndex for the clock assumption).
	LeaseReads bool
	// CommitNoticeDelay: a leader holds an append that carries no entries
	// (a follower's notice of a new commit index) for at most this long,
	// and drops it when an append with entries to the same follower goes
	// out meanwhile (notice.go). 0 sends every message at once.
	CommitNoticeDelay time.Duration
}

// Errors returned to proposers.
var (
	// ErrStopped: the node is stopped.
	ErrStopped = errors.New("raftnode: stopped")
	// ErrNotLeader: this node is not the leader (for operations that must
	// run on the leader).
	ErrNotLeader = errors.New("raftnode: not the leader")
	// ErrDropped: raft dropped the proposal (no leader, leadership
	// transfer, or too much uncommitted data). It was not appended.
	ErrDropped = errors.New("raftnode: proposal dropped")
)

// Node runs one member of a raft group.
type Node struct {
	cfg Config
	rn  *raft.RawNode
	t   transport.Transport
	log *slog.Logger

	// heard holds, per peer id, the time (unix ns, *atomic.Int64) a
	// message from it last arrived. Raft's own RecentActive is cleared at
	// every quorum check, so on its own it briefly shows every peer as
	// inactive.
	heard sync.Map
	// acked holds, per voter id, when (Now) a reply from it to this node
	// as leader last arrived (*atomic.Int64): the lease of LeaseReads.
	// Cleared when the node stops leading.
	acked sync.Map
	lease int64 // LeaseDuration in ns; 0 without LeaseReads

	propc   chan proposal
	recvc   chan inbound
	ctrlc   chan func(rn *raft.RawNode)
	reads   chan raft.ReadState
	stopc   chan struct{}
	donec   chan struct{}
	stopped atomic.Bool
	started atomic.Bool
	err     atomic.Pointer[error]

	// Published state, read without the loop.
	leader   atomic.Uint64
	role     atomic.Int32 // raft.StateType
	term     atomic.Uint64
	commit   atomic.Uint64
	applied  atomic.Uint64
	statusMu sync.Mutex
	voters   []uint64
	learners []uint64
	// sole is set while this node is the only voter (LocalReadIndex).
	sole atomic.Bool

	// Snapshot state, owned by the loop.
	loopExit       chan struct{} // closed when the loop returns
	snapIndex      uint64        // index of the newest snapshot in the log storage
	snapshotting   bool          // a Take is running
	snapWG         sync.WaitGroup
	snapTaken      atomic.Uint64
	snapsInstalled atomic.Uint64

	leaderStart atomic.Uint64

	// props are the proposals taken from propc and not yet stepped into
	// raft (owned by the loop; flushProposals).
	props     []proposal
	propBytes int // data bytes in props

	proposalsDropped atomic.Uint64 // proposals raft refused (ErrDropped)

	// Stall state: pend is the Ready being handled when a step failed on a
	// full disk or had to wait for the apply goroutine (owned by the
	// loop); stallErr publishes the condition, which readyStalled (a step
	// of pend) or astall (the apply goroutine) holds.
	pend         *pendingReady
	readyStalled bool
	// prepareDue: the loop saved to the log since it last called
	// prepareLog (owned by the loop).
	prepareDue     bool
	stallErr       atomic.Pointer[error]
	stalls         atomic.Uint64 // episodes
	stallRetries   atomic.Uint64 // failed retries
	rejectedConfCh atomic.Uint64 // committed conf changes applied as no-ops

	// Commit notices held back (notice.go): owned by the loop, but the
	// counters.
	held            []*pb.Message
	holdTimer       *time.Timer
	noticesSent     atomic.Uint64
	noticesReplaced atomic.Uint64

	// Stage timing, owned by the loop (stages.go): when the loop last
	// woke up, when the newest ReadIndex reached it, and the leader's
	// durable-but-uncommitted appends (last index, time saved).
	stages  *Stages
	wokeAt  int64
	readAt  int64
	pending appendRing

	// The apply goroutine (apply.go). queued and astall are owned by the
	// loop: the last index handed to it (or applied on the loop), and
	// its stall on a full disk.
	aq         applyQueue
	queued     uint64
	astall     *applyStall
	applyWake  chan struct{} // cap 1: runs were queued
	applyRetry chan struct{} // cap 1: retry the run that stalled
	loopWake   chan struct{} // cap 1: the apply goroutine progressed or reported
	awaitApply atomic.Bool   // the loop waits for the apply goroutine
	evMu       sync.Mutex
	events     []applyEvent
	applyWG    sync.WaitGroup

	// The storage goroutine (storage.go), when async. sstall is owned by
	// the loop; stTerm and stVote (the hard state last written) by the
	// storage goroutine.
	async          bool
	sq             storageQueue
	sevents        []storageEvent // under evMu
	sstall         *applyStall
	storageWake    chan struct{} // cap 1: messages were queued
	storageRetry   chan struct{} // cap 1: retry the Save that stalled
	awaitStorage   atomic.Bool   // the loop waits for the storage goroutine
	parked         atomic.Bool   // the loop waits (or is about to) in its select (TryProposeOrRefuse)
	peersFirst     atomic.Bool   // appends to peers were just queued with the storage goroutine's batch (storageLoop)
	stTerm, stVote uint64
	storageWG      sync.WaitGroup
	// sentLast is the last index of the newest Ready taken (owned by the
	// loop; see lastIndex).
	sentLast uint64

	// Screening state, owned by the loop except the counters.
	members    map[uint64]bool // ids in raft's configuration
	screened   [numScreenReasons]atomic.Uint64
	screenLogs [numScreenReasons]time.Time // last log line per reason
}

// pendingReady is a Ready whose handling has begun, with the steps done so
// far; a step that failed on a full disk is retried from here.
type pendingReady struct {
	rd           raft.Ready
	started      bool // soft state published, leader's messages sent
	leader       bool
	sentEntries  bool // appends with entries went to peers (storageLoop's peersFirst)
	snapDone     bool // snapshot installed and recorded
	saved        bool // entries and hard state persisted
	followerSent bool // a follower's messages sent, read states handed on
	handed       int  // committed entries handed to the apply goroutine or applied
	// note is the Ready's change of leadership, delivered once its
	// committed entries are handed on.
	note *leaderNote
	// A conf change applied to raft whose state machine step failed:
	// retried without applying it to raft again.
	ccDone    *pb.ConfState
	backoff   int   // ticks of the current back-off
	wait      int   // ticks left before the next retry
	waitApply error // errApplyFull, errApplyBusy or errStorageBusy: a step waits for another goroutine
	// With asynchronous storage writes: the Ready's MsgStorageAppend and
	// MsgStorageApply (either may be nil).
	app, applied *pb.Message
}

// inbound is a message from the network; fromStream marks the MsgSnap of a
// received snapshot stream.
type inbound struct {
	m          *pb.Message
	fromStream bool
}

type proposal struct {
	data []byte
	cc   pb.ConfChangeI
	errc chan error
	// refused, when set instead of errc, is called on the loop with
	// raft's error when raft refuses the proposal (never when it takes it).
	refused func(error)
	at      int64 // Now() when queued (0 without stage timing)
}

// New creates a node. Call Start to run it.
func New(cfg Config) (*Node, error) {
	if cfg.TickInterval <= 0 {
		cfg.TickInterval = 100 * time.Millisecond
	}
	if cfg.ElectionTicks <= 0 {
		cfg.ElectionTicks = 10
	}
	if cfg.HeartbeatTicks <= 0 {
		cfg.HeartbeatTicks = 1
	}
	if cfg.MaxSizePerMsg == 0 {
		cfg.MaxSizePerMsg = 1 << 20
	}
	if cfg.MaxInflightMsgs <= 0 {
		cfg.MaxInflightMsgs = 256
	}
	if cfg.MaxUncommittedBytes == 0 {
		cfg.MaxUncommittedBytes = 64 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.CatchUpEntries == 0 {
		cfg.CatchUpEntries = 5000
	}
	if cfg.StallRetryMaxTicks <= 0 {
		cfg.StallRetryMaxTicks = 10
	}
	// The caller's logger identifies the node (the server's carries
	// node=ID); adding it again here would print it twice.
	log := cfg.Logger
	rc := &raft.Config{
		ID:                        cfg.ID,
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             cfg.HeartbeatTicks,
		Storage:                   cfg.Log,
		Applied:                   cfg.Applied,
		MaxSizePerMsg:             cfg.MaxSizePerMsg,
		MaxInflightMsgs:           cfg.MaxInflightMsgs,
		MaxUncommittedEntriesSize: cfg.MaxUncommittedBytes,
		MaxCommittedSizePerReady:  16 << 20,
		CheckQuorum:               true,
		PreVote:                   true,
		ReadOnlyOption:            raft.ReadOnlySafe,
		StepDownOnRemoval:         true,
		Logger:                    &raftLogger{log: log},
		AsyncStorageWrites:        !cfg.SyncStorageWrites,
	}
	rn, err := raft.NewRawNode(rc)
	if err != nil {
		return nil, fmt.Errorf("raftnode: %w", err)
	}
	last, _ := cfg.Log.LastIndex()
	hs, cs, _ := cfg.Log.InitialState()
	fresh := last == 0 && raft.IsEmptyHardState(hs) && len(cs.GetVoters()) == 0
	if fresh && !cfg.Join {
		if len(cfg.Peers) == 0 {
			return nil, errors.New("raftnode: a new cluster needs at least one peer")
		}
		ids := append([]uint64(nil), cfg.Peers...)
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		peers := make([]raft.Peer, len(ids))
		for i, id := range ids {
			peers[i] = raft.Peer{ID: id}
		}
		if err := rn.Bootstrap(peers); err != nil {
			return nil, fmt.Errorf("raftnode: bootstrapping: %w", err)
		}
		log.Info("bootstrapping a new cluster", "voters", ids)
	}
	n := &Node{
		cfg:      cfg,
		rn:       rn,
		log:      log,
		propc:    make(chan proposal, 1024),
		recvc:    make(chan inbound, 4096),
		ctrlc:    make(chan func(*raft.RawNode), 64),
		reads:    make(chan raft.ReadState, 256),
		stopc:    make(chan struct{}),
		donec:    make(chan struct{}),
		loopExit: make(chan struct{}),
		stages:   cfg.Stages,

		applyWake:  make(chan struct{}, 1),
		applyRetry: make(chan struct{}, 1),
		loopWake:   make(chan struct{}, 1),

		async:        !cfg.SyncStorageWrites,
		storageWake:  make(chan struct{}, 1),
		storageRetry: make(chan struct{}, 1),
		stTerm:       hs.GetTerm(),
		stVote:       hs.GetVote(),

		holdTimer: newStoppedTimer(),
	}
	if cfg.LeaseReads {
		n.lease = int64(LeaseDuration(cfg.ElectionTicks, cfg.TickInterval))
	}
	n.applied.Store(cfg.Applied)
	if sn, err := cfg.Log.Snapshot(); err == nil {
		n.snapIndex = sn.GetMetadata().GetIndex()
		if n.snapIndex > cfg.Applied {
			n.applied.Store(n.snapIndex)
		}
	}
	n.queued = n.applied.Load()
	n.sentLast = last
	n.term.Store(hs.GetTerm())
	n.commit.Store(hs.GetCommit())
	n.voters = cs.GetVoters()
	n.learners = cs.GetLearners()
	n.sole.Store(soleVoter(n.voters, cfg.ID))
	n.refreshMembers()
	return n, nil
}

// Start runs the loop with transport t (whose handler is this node).
func (n *Node) Start(t transport.Transport) {
	n.t = t
	n.started.Store(true)
	// The only voter need not wait an election timeout to lead.
	if st := n.Status(); len(st.Voters) == 1 && st.Voters[0] == n.cfg.ID && len(st.Learners) == 0 {
		n.Campaign()
	} else if len(n.cfg.Peers) == 1 && n.cfg.Peers[0] == n.cfg.ID && len(st.Voters) == 0 {
		n.Campaign()
	}
	n.applyWG.Add(1)
	go n.applyLoop()
	if n.async {
		n.storageWG.Add(1)
		go n.storageLoop()
	}
	go n.run()
}

// Stop stops the loop and waits for it.
func (n *Node) Stop() {
	if n.stopped.CompareAndSwap(false, true) {
		close(n.stopc)
		if !n.started.Load() {
			close(n.loopExit)
			close(n.donec)
		}
	}
	<-n.donec
}

// Done is closed when the loop has ended (after Stop or a fatal error).
func (n *Node) Done() <-chan struct{} { return n.donec }

// Err returns the fatal error that stopped the loop, if any.
func (n *Node) Err() error {
	if p := n.err.Load(); p != nil {
		return *p
	}
	return nil
}

func (n *Node) fail(err error) {
	n.err.CompareAndSwap(nil, &err)
	n.log.Error("raft node stopping after a fatal error", "err", err)
}

// Receive implements transport.Handler: a message frame from a peer. A
// MsgSnap that arrives this way is dropped (ScreenSnapshotOutsideStream):
// snapshots come with their files, through DeliverSnapshot.
func (n *Node) Receive(m *pb.Message) { n.receive(inbound{m: m}) }

// DeliverSnapshot hands raft the MsgSnap of a snapshot stream that was
// received, stored and checked.
func (n *Node) DeliverSnapshot(m *pb.Message) { n.receive(inbound{m: m, fromStream: true}) }

func (n *Node) receive(in inbound) {
	select {
	case n.recvc <- in:
	case <-n.stopc:
	default:
		// The loop is far behind: dropping is what a lossy network does,
		// and raft recovers from it.
	}
}

// ReportUnreachable implements transport.Handler.
func (n *Node) ReportUnreachable(id uint64) {
	n.control(func(rn *raft.RawNode) { rn.ReportUnreachable(id) })
}

// ReportSnapshot tells raft how sending a snapshot to id ended.
// Unlike other hints it is never dropped: until raft hears the outcome it
// sends that follower nothing else. It blocks until the loop takes it.
func (n *Node) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	select {
	case n.ctrlc <- func(rn *raft.RawNode) { rn.ReportSnapshot(id, status) }:
	case <-n.loopExit:
	}
}

// control runs f on the loop without waiting; it is dropped if the loop is
// gone or badly behind (these are hints).
func (n *Node) control(f func(*raft.RawNode)) {
	select {
	case n.ctrlc <- f:
	default:
	}
}

// Propose appends data to the log. It returns when raft has accepted the
// proposal (not when it commits), ErrDropped when raft refused it, or the
// context's error.
func (n *Node) Propose(ctx context.Context, data []byte) error {
	return n.propose(ctx, proposal{data: data, errc: make(chan error, 1)})
}

// ProposeConfChange proposes a membership change.
func (n *Node) ProposeConfChange(ctx context.Context, cc pb.ConfChangeI) error {
	return n.propose(ctx, proposal{cc: cc, errc: make(chan error, 1)})
}

func (n *Node) propose(ctx context.Context, p proposal) error {
	errc, err := n.enqueue(ctx, p)
	if err != nil {
		return err
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.donec:
		return ErrStopped
	}
}

// ProposeAsync queues data for the log and returns at once with a channel
// that later yields raft's verdict (nil, ErrDropped, ...). Proposals queued
// by one goroutine reach raft, and so the log, in the order they were
// queued. It blocks only while the queue is full (back-pressure).
func (n *Node) ProposeAsync(ctx context.Context, data []byte) (<-chan error, error) {
	return n.enqueue(ctx, proposal{data: data, errc: make(chan error, 1)})
}

// ProposeOrRefuse queues data for the log like ProposeAsync, but reports
// only a refusal: refused is called on the raft loop (it must not block)
// with raft's error (ErrDropped, ...) if raft does not take the proposal,
// and never otherwise. The proposer that waits for the entry's apply
// anyway is then woken once, by the apply, instead of also by raft's
// verdict (a scheduling hop per write on a busy node).
func (n *Node) ProposeOrRefuse(ctx context.Context, data []byte, refused func(error)) error {
	_, err := n.enqueue(ctx, proposal{data: data, refused: refused})
	return err
}

// TryProposeOrRefuse is ProposeOrRefuse without waiting: it reports false,
// having queued nothing, when the queue is full (or the node stopped), and
// the caller then waits with ProposeOrRefuse. A proposer that tries this
// first needs no timer for the wait it usually does not have.
func (n *Node) TryProposeOrRefuse(data []byte, refused func(error)) bool {
	p := proposal{data: data, refused: refused}
	if n.stages != nil {
		p.at = Now()
	}
	select {
	case n.propc <- p:
		if n.parked.Load() && n.sole.Load() {
			// This proposal woke the only voter's loop, which writes and
			// fsyncs it itself. Readied onto this P, the loop would run
			// only once the proposer (usually a connection's reader) has
			// read its socket again and parked; let it go first. Not with peers:
			// there, the proposals of many connections that gather while
			// the loop waits make one Ready, and a yield per proposal
			// split them (0.78x puts from 64 clients on three nodes).
			runtime.Gosched()
		}
		return true
	default:
		return false
	}
}

func (n *Node) enqueue(ctx context.Context, p proposal) (<-chan error, error) {
	if n.stages != nil {
		p.at = Now()
	}
	select {
	case n.propc <- p:
		return p.errc, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-n.donec:
		return nil, ErrStopped
	}
}

// ReadIndex asks for a read index tagged rctx; the answer arrives on
// ReadStates. Requests can be lost; callers retry with a fresh rctx.
func (n *Node) ReadIndex(rctx []byte) { n.ReadIndexSince(rctx, 0) }

// ReadIndexSince is ReadIndex for a read that started waiting at since (a
// Now reading, 0 if unknown): the wait until the loop takes the request is
// its queue stage.
func (n *Node) ReadIndexSince(rctx []byte, since int64) {
	if n.stages != nil && since == 0 {
		since = Now()
	}
	n.control(func(rn *raft.RawNode) {
		n.readAt = n.stages.Since(StageQueue, since)
		rn.ReadIndex(rctx)
	})
}

// LocalReadIndex returns what a ReadIndex round would answer when no round
// is needed: on a leader that is the only voter and has committed an entry
// of its term, its commit index (raft answers such a leader's ReadIndex at
// once with it, its single-node fast path, so the hops through the raft
// loop buy nothing). ok is false otherwise, and the caller asks raft.
//
// Why it is linearizable: every acknowledged write was applied, so its
// index was published in commit (which is stored after the log is saved
// and before the apply; with asynchronous log writes, when the Ready that
// hands the entry on is taken, and raft counts this node's own entry only
// once it is durable) before the acknowledgement. The entry of the term
// being committed means commit covers everything committed in earlier
// terms. Another node can lead only once this one voted for it (it is the
// only voter until a configuration change adds another, and then a quorum
// needs it), and this node publishes its step-down (handleReady's first
// step) before its vote goes out; so while this node is seen leading,
// no other leader has acknowledged anything, and a read that starts after
// another leader's write was acknowledged sees this node as a follower.
//
// With Config.LeaseReads, a leader of several voters answers the same way
// while it holds a lease: a quorum of voters (itself included) replied to
// it as leader within LeaseDuration. Each of them reset its election
// timer when it received the message it answered, and with CheckQuorum
// votes for no one else for an election timeout (ElectionTicks−1 ticks at
// least, measured by its own ticker) from then, so no other leader can be
// elected before the lease ends. The clock assumption: the nodes' clocks
// run at rates within a few percent of each other, and a reply reaches
// the leader less than half an election timeout after the follower
// received the message it answers. A leader that was paused (SIGSTOP, a
// stalled VM) is safe without more: the monotonic clock runs on while it
// is stopped, so its lease has expired when it resumes, and it asks for a
// round until fresh replies arrive. Raft's own ReadOnlyLeaseBased trusts
// the leader role alone, with no clock check, and is not used.
func (n *Node) LocalReadIndex() (index uint64, ok bool) {
	if raft.StateType(n.role.Load()) != raft.StateLeader {
		return 0, false
	}
	start, commit := n.leaderStart.Load(), n.commit.Load()
	if start == 0 || commit < start {
		return 0, false
	}
	if n.sole.Load() || (n.lease > 0 && n.leaseHeld()) {
		return commit, true
	}
	return 0, false
}

// LeaseDuration is the lease of LeaseReads: half of the shortest time for
// which a follower that heard from the leader refuses to vote for another
// ((ElectionTicks−1) ticks: its first tick may come at once).
func LeaseDuration(electionTicks int, tick time.Duration) time.Duration {
	if electionTicks <= 0 {
		electionTicks = 10
	}
	if tick <= 0 {
		tick = 100 * time.Millisecond
	}
	return time.Duration(electionTicks-1) * tick / 2
}

// leaseHeld reports whether a quorum of the voters, this node included,
// replied to it as leader within the lease.
func (n *Node) leaseHeld() bool {
	now := Now()
	n.statusMu.Lock()
	defer n.statusMu.Unlock()
	fresh, self := 0, false
	for _, id := range n.voters {
		if id == n.cfg.ID {
			fresh++
			self = true
			continue
		}
		if v, ok := n.acked.Load(id); ok && now-v.(*atomic.Int64).Load() < n.lease {
			fresh++
		}
	}
	return self && fresh > len(n.voters)/2
}

func soleVoter(voters []uint64, id uint64) bool { return len(voters) == 1 && voters[0] == id }

// ReadStates delivers ReadIndex answers. One consumer must drain it.
func (n *Node) ReadStates() <-chan raft.ReadState { return n.reads }

// TransferLeadership asks the leader to hand over to transferee.
func (n *Node) TransferLeadership(transferee uint64) {
	n.control(func(rn *raft.RawNode) { rn.TransferLeader(transferee) })
}

// Term returns the current raft term.
func (n *Node) Term() uint64 { return n.term.Load() }

// ElectionTimeout is the base election timeout (ElectionTicks ticks).
func (n *Node) ElectionTimeout() time.Duration {
	return time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval
}

// Campaign makes this node start an election (tests and tools).
func (n *Node) Campaign() {
	n.control(func(rn *raft.RawNode) { _ = rn.Campaign() })
}

// Status is a snapshot of the node's published state.
type Status struct {
	ID       uint64
	Leader   uint64
	Role     raft.StateType
	Term     uint64
	Commit   uint64
	Applied  uint64
	Voters   []uint64
	Learners []uint64
}

// Status returns the published state (without waiting for the loop).
func (n *Node) Status() Status {
	n.statusMu.Lock()
	voters := append([]uint64(nil), n.voters...)
	learners := append([]uint64(nil), n.learners...)
	n.statusMu.Unlock()
	return Status{
		ID: n.cfg.ID, Leader: n.leader.Load(), Role: raft.StateType(n.role.Load()),
		Term: n.term.Load(), Commit: n.commit.Load(), Applied: n.applied.Load(),
		Voters: voters, Learners: learners,
	}
}

// Commit is the commit index the loop last published: a quorum has the
// entries up to it on disk. A write acknowledged at its commit has an
// index at most this.
func (n *Node) Commit() uint64 { return n.commit.Load() }

// IsLeader reports whether this node believes it leads.
func (n *Node) IsLeader() bool { return raft.StateType(n.role.Load()) == raft.StateLeader }

// Leader returns the known leader id (0 if none).
func (n *Node) Leader() uint64 { return n.leader.Load() }

// PeerProgress is what the leader knows about one member's replication.
type PeerProgress struct {
	Match        uint64 // highest index known to be replicated there
	RecentActive bool   // heard from within the last election timeout
	Learner      bool
}

// Progress returns, on the leader, every member's replication progress and
// the leader's last log index (for membership decisions); nil elsewhere.
func (n *Node) Progress(ctx context.Context) (map[uint64]PeerProgress, uint64, error) {
	type result struct {
		m    map[uint64]PeerProgress
		last uint64
	}
	res := make(chan result, 1)
	f := func(rn *raft.RawNode) {
		st := rn.Status()
		if st.RaftState != raft.StateLeader {
			res <- result{}
			return
		}
		m := map[uint64]PeerProgress{}
		window := time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval
		for id, pr := range st.Progress {
			active := pr.RecentActive || id == n.cfg.ID
			if v, ok := n.heard.Load(id); ok && time.Since(time.Unix(0, v.(*atomic.Int64).Load())) < window {
				active = true
			}
			m[id] = PeerProgress{Match: pr.Match, RecentActive: active, Learner: pr.IsLearner}
		}
		last := uint64(0)
		if pr, ok := st.Progress[n.cfg.ID]; ok {
			last = pr.Match
		}
		res <- result{m, last}
	}
	select {
	case n.ctrlc <- f:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	case <-n.donec:
		return nil, 0, ErrStopped
	}
	select {
	case r := <-res:
		return r.m, r.last, nil
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	case <-n.donec:
		return nil, 0, ErrStopped
	}
}

// WaitIdle returns once the loop has nothing queued and raft nothing to
// hand out (or a Ready stalled on a full disk waits for its next retry).
// Tests use it to step a cluster deterministically; it costs a round trip
// to the loop per check.
func (n *Node) WaitIdle(ctx context.Context) error {
	for {
		res := make(chan bool, 1)
		f := func(*raft.RawNode) { res <- !n.busy() }
		select {
		case n.ctrlc <- f:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.donec:
			return ErrStopped
		}
		select {
		case idle := <-res:
			if idle {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-n.donec:
			return ErrStopped
		}
	}
}

// busy reports, on the loop, whether the node has work it will do without
// a tick: something queued for the loop, a Ready to handle (one stalled on
// a full disk waits for its back-off), or runs the apply goroutine has not
// applied yet. The apply goroutine is asked first: once it is seen idle,
// a Ready that waits for it is seen ready to resume (the applied index
// only grows), and the node is never seen idle in between.
func (n *Node) busy() bool { return n.storageBusy() || n.applyBusy() || n.loopBusy() }

// loopBusy is busy without the apply goroutine's work.
func (n *Node) loopBusy() bool {
	if len(n.recvc) > 0 || len(n.propc) > 0 || len(n.ctrlc) > 0 || len(n.props) > 0 {
		return true
	}
	if n.pend != nil {
		// A Ready stalled on a full disk waits for ticks; one that waits
		// for the apply goroutine waits for that.
		switch n.pend.waitApply {
		case nil:
			return n.pend.wait == 0
		case errApplyFull:
			// Resumed once the apply goroutine takes a run (it wakes
			// the loop).
			return n.aq.room()
		case errStorageBusy:
			// Resumed once the storage goroutine has written everything.
			return n.sq.count() == 0
		default:
			// Resumed once it is idle.
			return n.applied.Load() >= n.queued
		}
	}
	if n.async && n.sq.full() {
		// No Ready is taken until the storage goroutine catches up.
		return false
	}
	return n.rn.HasReady()
}

// LeaderStart returns the index of the first entry of this node's current
// term as leader (0 when not leader). Raft refuses a membership change until
// everything before it is applied: callers wait for that first.
func (n *Node) LeaderStart() uint64 { return n.leaderStart.Load() }

// Applied returns the last index handed to the state machine.
func (n *Node) Applied() uint64 { return n.applied.Load() }

func (n *Node) run() {
	defer close(n.donec)
	defer n.snapWG.Wait()
	defer n.applyWG.Wait()
	defer n.storageWG.Wait()
	defer close(n.loopExit)
	ticker := n.cfg.Ticker
	if ticker == nil {
		ticker = timeTicker{time.NewTicker(n.cfg.TickInterval)}
	}
	defer ticker.Stop()
	defer n.holdTimer.Stop()
	tickc := ticker.C()
	for {
		n.parked.Store(true)
		select {
		case <-n.stopc:
			return
		case <-tickc:
			n.rn.Tick()
			if p := n.pend; p != nil && p.wait > 0 {
				p.wait--
			}
			n.applyTick()
			n.storageTick()
		case <-n.loopWake:
		case <-n.holdTimer.C:
			n.sendHeld()
		case p := <-n.propc:
			n.takeProposal(p)
		case in := <-n.recvc:
			n.step(in)
		case f := <-n.ctrlc:
			n.flushProposals()
			f(n.rn)
		}
		n.parked.Store(false)
		if n.stages != nil {
			n.wokeAt = Now()
		}
		// Take everything else that is waiting, so that one Ready (one
		// fsync) covers as much as possible.
		n.drain()
		n.flushProposals()
		if err := n.process(); err != nil {
			n.fail(err)
			n.stopped.Store(true)
			return
		}
		// The apply goroutine may have crossed the snapshot threshold
		// since the last Ready.
		n.maybeSnapshot()
		if n.prepareDue {
			// After the Readys are handed on: no write waits for it.
			n.prepareDue = false
			n.prepareLog()
		}
	}
}

// prepareLog lets a log that prepares space ahead of its records
// (raftlog.Log.PrepareAhead) do so now. It is called after Saves whose
// results were handed on, by the goroutine that saved.
func (n *Node) prepareLog() {
	if p, ok := n.cfg.Log.(interface{ PrepareAhead() }); ok {
		p.PrepareAhead()
	}
}

// process handles Readys until raft has none or one stalls on a full disk.
// While a Ready is kept (n.pend), raft hands out no other: its next one
// waits for the kept one's Advance.
func (n *Node) process() error {
	if err := n.applyEvents(); err != nil {
		return err
	}
	if err := n.storageEvents(); err != nil {
		return err
	}
	for {
		if n.pend == nil {
			if n.async && n.storageFull() {
				// Resumed when the storage goroutine has written a batch.
				return nil
			}
			if !n.rn.HasReady() {
				return nil
			}
			n.pend = &pendingReady{rd: n.rn.Ready()}
			if n.async {
				rd := &n.pend.rd
				if k := len(rd.Entries); k > 0 {
					n.sentLast = rd.Entries[k-1].GetIndex()
				} else if !raft.IsEmptySnap(rd.Snapshot) {
					n.sentLast = rd.Snapshot.GetMetadata().GetIndex()
				}
			}
		} else if n.pend.wait > 0 {
			return nil
		}
		n.pend.waitApply = nil
		err := n.handleReady(n.pend)
		if err == nil {
			if n.readyStalled {
				n.readyStalled = false
				n.stallEnd()
			}
			n.pend = nil
			continue
		}
		if err == errApplyFull || err == errApplyBusy || err == errStorageBusy {
			// Resumed when the apply goroutine wakes the loop.
			n.pend.waitApply = err
			return nil
		}
		if !vfs.IsNoSpace(err) {
			return err
		}
		p := n.pend
		p.backoff = min(max(2*p.backoff, 1), n.cfg.StallRetryMaxTicks)
		p.wait = p.backoff
		if !n.readyStalled {
			n.readyStalled = true
			n.stallBegin(err, "raft stalled: the disk is full; retrying, and still following the leader meanwhile")
		} else {
			n.stallRetries.Add(1)
		}
		return nil
	}
}

// A step of a Ready waits for the apply goroutine: its queue is full
// (errApplyFull), or a configuration change or a snapshot needs it idle
// (errApplyBusy).
var (
	errApplyFull = errors.New("raftnode: the apply queue is full")
	errApplyBusy = errors.New("raftnode: waiting for the apply goroutine to be idle")
	// errStorageBusy: a received snapshot waits for the storage goroutine
	// to have written everything queued before it.
	errStorageBusy = errors.New("raftnode: waiting for the storage goroutine to be idle")
)

// stallBegin records that a step (of a Ready, or the apply goroutine's)
// failed on a full disk. An episode begins when no other step is stalled;
// otherwise it is already under way.
func (n *Node) stallBegin(err error, msg string) {
	if n.stallErr.Load() != nil {
		return
	}
	n.stallErr.Store(&err)
	n.stalls.Add(1)
	n.log.Error(msg, "err", err)
	if n.cfg.OnStall != nil {
		n.cfg.OnStall(err)
	}
}

// stallEnd records that a stalled step succeeded; the episode ends when
// none is stalled any more.
func (n *Node) stallEnd() {
	if n.readyStalled || n.astall != nil || n.stallErr.Load() == nil {
		return
	}
	n.stallErr.Store(nil)
	n.log.Info("the disk has room again; raft resumed")
	if n.cfg.OnStall != nil {
		n.cfg.OnStall(nil)
	}
}

// Stalled returns the error that keeps a Ready from being handled or
// committed entries from being applied (a full disk), or nil when the node
// is not stalled.
func (n *Node) Stalled() error {
	if p := n.stallErr.Load(); p != nil {
		return *p
	}
	return nil
}

// StallCounts returns how many times the node stalled on a full disk and
// how many retries failed since it started.
func (n *Node) StallCounts() (episodes, failedRetries uint64) {
	return n.stalls.Load(), n.stallRetries.Load()
}

// RejectedConfChanges returns how many committed configuration-change
// entries were applied as no-ops because they did not decode or raft
// refused them.
func (n *Node) RejectedConfChanges() uint64 { return n.rejectedConfCh.Load() }

func (n *Node) drain() {
	for i := 0; i < 4096; i++ {
		select {
		case p := <-n.propc:
			n.takeProposal(p)
		case in := <-n.recvc:
			n.step(in)
		case f := <-n.ctrlc:
			n.flushProposals()
			f(n.rn)
		default:
			return
		}
	}
}

// takeProposal adds a proposal to the batch flushProposals steps into
// raft; a configuration change is proposed alone, after the batch.
func (n *Node) takeProposal(p proposal) {
	if p.cc != nil {
		n.flushProposals()
		n.handleProposal(p)
		return
	}
	// Raft checks its uncommitted-bytes limit per MsgProp, and takes one
	// whatever its size when nothing is uncommitted: a batch is kept to a
	// sixteenth of the limit (a larger proposal goes alone, as before), so
	// that it overshoots the limit by no more than that. Near the limit a
	// batch is refused as a whole.
	limit := int(n.cfg.MaxUncommittedBytes / 16)
	if len(n.props) > 0 && n.propBytes+len(p.data) > limit {
		n.flushProposals()
	}
	n.props = append(n.props, p)
	n.propBytes += len(p.data)
	if len(n.props) >= maxProposalBatch || n.propBytes >= limit {
		n.flushProposals()
	}
}

// maxProposalBatch bounds the proposals stepped as one MsgProp.
const maxProposalBatch = 256

// flushProposals steps the batched proposals into raft as one MsgProp, in
// the order they were queued: raft appends them together and sends each
// follower one append for all of them, where a proposal at a time cost an
// append (a frame, a decode, a step and a reply) per proposal and
// follower. Raft takes or refuses the batch as a whole (no leader, a
// leadership transfer, the uncommitted-bytes limit): each proposer gets
// its verdict.
func (n *Node) flushProposals() {
	b := n.props
	if len(b) == 0 {
		return
	}
	ents := make([]*pb.Entry, len(b))
	for i := range b {
		n.stages.Since(StageQueue, b[i].at)
		ents[i] = &pb.Entry{Data: b[i].data}
	}
	err := n.rn.Step(&pb.Message{Type: pb.MsgProp.Enum(), From: new(n.cfg.ID), Entries: ents})
	if errors.Is(err, raft.ErrProposalDropped) {
		err = ErrDropped
		n.proposalsDropped.Add(uint64(len(b)))
	}
	for i := range b {
		if b[i].refused != nil {
			if err != nil {
				b[i].refused(err)
			}
		} else {
			b[i].errc <- err
		}
	}
	clear(b)
	n.props = b[:0]
	n.propBytes = 0
}

func (n *Node) step(in inbound) {
	m := in.m
	if r := n.screen(m, in.fromStream); r != screenOK {
		n.dropped(r, m)
		return
	}
	// Only messages that passed the screen count as signs of life.
	now := time.Now().UnixNano()
	if v, ok := n.heard.Load(m.GetFrom()); ok {
		v.(*atomic.Int64).Store(now)
	} else {
		a := &atomic.Int64{}
		a.Store(now)
		n.heard.Store(m.GetFrom(), a)
	}
	if n.lease > 0 && (m.GetType() == pb.MsgHeartbeatResp || m.GetType() == pb.MsgAppResp) &&
		raft.StateType(n.role.Load()) == raft.StateLeader && m.GetTerm() == n.rn.BasicStatus().GetTerm() {
		// A follower's reply to this leader: it reset its election timer
		// when it received the message it answers, so it votes for no one
		// else for an election timeout from then (CheckQuorum).
		if v, ok := n.acked.Load(m.GetFrom()); ok {
			v.(*atomic.Int64).Store(Now())
		} else {
			a := &atomic.Int64{}
			a.Store(Now())
			n.acked.Store(m.GetFrom(), a)
		}
	}
	if err := n.rn.Step(m); err != nil && !errors.Is(err, raft.ErrStepPeerNotFound) && !errors.Is(err, raft.ErrStepLocalMsg) {
		n.log.Debug("raft rejected a message", "from", m.GetFrom(), "type", m.GetType().String(), "err", err)
	}
}

func (n *Node) handleProposal(p proposal) {
	var err error
	if p.cc != nil {
		err = n.rn.ProposeConfChange(p.cc)
	} else {
		n.stages.Since(StageQueue, p.at)
		err = n.rn.Propose(p.data)
	}
	if errors.Is(err, raft.ErrProposalDropped) {
		err = ErrDropped
		n.proposalsDropped.Add(1)
	}
	if p.refused != nil {
		if err != nil {
			p.refused(err)
		}
		return
	}
	p.errc <- err
}

// handleReady carries out the steps of p's Ready that are not done yet, in
// the order of the package doc, and advances raft. A failed step leaves the
// ones before it done and is tried again at the next call.
func (n *Node) handleReady(p *pendingReady) error {
	if n.async {
		return n.handleReadyAsync(p)
	}
	rd := p.rd
	if !p.started {
		p.started = true
		p.note = n.publishSoftState(rd)
		p.leader = raft.StateType(n.role.Load()) == raft.StateLeader
		if p.leader {
			n.send(rd.Messages)
		}
	}
	if !p.snapDone {
		if !raft.IsEmptySnap(rd.Snapshot) {
			if !n.applierIdle() {
				// The snapshot replaces the state machine.
				return errApplyBusy
			}
			if err := n.installSnapshot(rd.Snapshot); err != nil {
				return err
			}
		}
		p.snapDone = true
	}
	if !p.saved {
		var t0 int64
		if n.stages != nil && (len(rd.Entries) > 0 || len(rd.ReadStates) > 0) {
			t0 = n.stages.Since(StageRaftReady, n.wokeAt)
		}
		if err := n.cfg.Log.Save(rd.HardState, rd.Entries, rd.MustSync); err != nil {
			return fmt.Errorf("raftnode: persisting raft state: %w", err)
		}
		p.saved = true
		n.prepareDue = true
		if t0 != 0 && rd.MustSync {
			saved := n.stages.Since(StageLogFsync, t0)
			if k := len(rd.Entries); k > 0 {
				n.savedAppend(rd.Entries[k-1].GetIndex(), saved)
			}
		}
		if rd.HardState != nil {
			n.term.Store(rd.HardState.GetTerm())
			n.commit.Store(rd.HardState.GetCommit())
		}
	}
	if !p.followerSent {
		p.followerSent = true
		if !p.leader {
			n.send(rd.Messages)
		}
		n.handOnReadStates(rd.ReadStates)
	}
	if err := n.handOnCommitted(p); err != nil {
		return err
	}
	n.rn.Advance(rd)
	n.maybeSnapshot()
	return nil
}

// handleReadyAsync is handleReady with asynchronous storage writes
// (storage.go): every message to a peer is sent at once, the
// MsgStorageAppend is queued for the storage goroutine, the committed
// entries (durable here already) are handed on as in the synchronous loop,
// and the MsgStorageApply's responses are stepped once they are. Raft needs
// no Advance in this mode.
func (n *Node) handleReadyAsync(p *pendingReady) error {
	rd := p.rd
	if !p.started {
		p.started = true
		p.note = n.publishSoftState(rd)
		p.leader = raft.StateType(n.role.Load()) == raft.StateLeader
		var peers []*pb.Message
		peers, p.app, p.applied = n.splitLocal(rd.Messages)
		for _, m := range peers {
			if m.GetType() == pb.MsgApp && len(m.GetEntries()) > 0 {
				p.sentEntries = true
				break
			}
		}
		n.send(peers)
		if rd.HardState != nil {
			// Raft's term, and a commit index a quorum (this node
			// included only once its log is durable) has persisted.
			n.term.Store(rd.HardState.GetTerm())
			n.commit.Store(rd.HardState.GetCommit())
		}
	}
	if !p.snapDone {
		if snap := p.app.GetSnapshot(); !raft.IsEmptySnap(snap) {
			if !n.storageIdle() {
				// The snapshot goes after everything queued before it.
				return errStorageBusy
			}
			if !n.applierIdle() {
				// The snapshot replaces the state machine.
				return errApplyBusy
			}
			if err := n.installSnapshot(snap); err != nil {
				return err
			}
		}
		p.snapDone = true
	}
	if !p.saved {
		var t0 int64
		if n.stages != nil && (len(p.app.GetEntries()) > 0 || len(rd.ReadStates) > 0) {
			t0 = n.stages.Since(StageRaftReady, n.wokeAt)
		}
		if m := p.app; m != nil {
			m.Snapshot = nil // installed above
			if n.sole.Load() && n.sq.count() == 0 {
				// The only voter waits for its own disk whatever the
				// mode: writing on the loop saves the two hand-offs to
				// the storage goroutine and back.
				if err := n.writeInline(m, t0); err != nil {
					return err
				}
			} else {
				if len(m.GetEntries()) > 0 && p.sentEntries { // only a leader sends entries
					n.peersFirst.Store(true)
				}
				n.queueAppend(m)
			}
		}
		p.saved = true
	}
	if !p.followerSent {
		p.followerSent = true
		n.handOnReadStates(rd.ReadStates)
	}
	if err := n.handOnCommitted(p); err != nil {
		return err
	}
	n.stepLocal(p.applied.GetResponses())
	n.maybeSnapshot()
	return nil
}

// handOnReadStates hands a Ready's ReadIndex answers to the read loop.
func (n *Node) handOnReadStates(states []raft.ReadState) {
	if len(states) > 0 {
		n.stages.Since(StageReplicate, n.readAt)
	}
	for _, rs := range states {
		select {
		case n.reads <- rs:
		default:
			// The read loop is gone or far behind; the request is retried.
		}
	}
}

// handOnCommitted hands p's committed entries on (apply), then its change
// of leadership, which comes after them.
func (n *Node) handOnCommitted(p *pendingReady) error {
	if err := n.apply(p); err != nil {
		return err
	}
	if p.note != nil {
		n.deliverNote(*p.note)
		p.note = nil
	}
	return nil
}

// stepLocal steps into raft the responses of the local storage threads
// (MsgStorageAppendResp, MsgStorageApplyResp, this node's own MsgAppResp
// and votes), which are not screened: they never came from the network.
func (n *Node) stepLocal(msgs []*pb.Message) {
	for _, m := range msgs {
		if err := n.rn.Step(m); err != nil {
			n.log.Debug("raft rejected a local response", "type", m.GetType().String(), "err", err)
		}
	}
}

// savedAppend records, for the stage timings, a leader's entries up to
// last as durable at saved (replicate runs from there to their commit).
func (n *Node) savedAppend(last uint64, saved int64) {
	if saved != 0 && last > 0 && raft.StateType(n.role.Load()) == raft.StateLeader {
		n.pending.push(last, saved)
	}
}

// publishSoftState publishes role and leader changes of a Ready, and
// returns the change for the state machine (nil when there is none).
func (n *Node) publishSoftState(rd raft.Ready) *leaderNote {
	ss := rd.SoftState
	if ss == nil {
		return nil
	}
	prevLeader := n.leader.Load()
	prevRole := raft.StateType(n.role.Load())
	n.leader.Store(ss.Lead)
	n.role.Store(int32(ss.RaftState))
	if ss.RaftState != raft.StateLeader {
		n.leaderStart.Store(0)
		n.pending.reset()
		n.acked.Range(func(k, _ any) bool { n.acked.Delete(k); return true })
	} else if prevRole != raft.StateLeader {
		// This Ready carries the empty entry that starts the term.
		start := n.commit.Load()
		if k := len(rd.Entries); k > 0 {
			start = rd.Entries[k-1].GetIndex()
		}
		n.leaderStart.Store(start)
	}
	if ss.Lead != prevLeader || ss.RaftState != prevRole {
		term := n.rn.BasicStatus().GetTerm()
		n.log.Info("raft role changed", "role", ss.RaftState.String(), "leader", ss.Lead, "term", term)
		return &leaderNote{leader: ss.Lead, term: term, isLeader: ss.RaftState == raft.StateLeader}
	}
	return nil
}

// send hands snapshot messages to the snapshotter and the rest to the
// transport.
func (n *Node) send(msgs []*pb.Message) {
	j := 0
	hold := n.holdNotices()
	for _, m := range msgs {
		if m.GetType() == pb.MsgSnap {
			if n.cfg.Snapshots != nil {
				n.cfg.Snapshots.Send(m)
			} else {
				n.rn.ReportSnapshot(m.GetTo(), raft.SnapshotFailure)
			}
			continue
		}
		if m.GetType() == pb.MsgApp && len(n.held) > 0 {
			n.replaceHeld(m.GetTo())
		}
		if hold && isNotice(m) {
			n.hold(m)
			continue
		}
		msgs[j] = m
		j++
	}
	if j > 0 {
		n.t.Send(msgs[:j])
	}
}

// installSnapshot persists a received snapshot before the rest of the
// Ready: the state machine takes it over durably, then the log records it.
func (n *Node) installSnapshot(snap *pb.Snapshot) error {
	if n.cfg.Snapshots == nil {
		return errors.New("raftnode: received a snapshot but snapshots are disabled")
	}
	meta := snap.GetMetadata()
	n.log.Info("installing a snapshot from the leader", "index", meta.GetIndex(), "snapshot_term", meta.GetTerm())
	if err := n.cfg.Snapshots.Install(snap); err != nil {
		return fmt.Errorf("raftnode: installing snapshot %d: %w", meta.GetIndex(), err)
	}
	if err := n.cfg.Log.SaveSnapshot(snap); err != nil {
		return fmt.Errorf("raftnode: recording snapshot %d: %w", meta.GetIndex(), err)
	}
	cs := meta.GetConfState()
	n.statusMu.Lock()
	n.voters, n.learners = cs.GetVoters(), cs.GetLearners()
	n.sole.Store(soleVoter(n.voters, n.cfg.ID))
	n.statusMu.Unlock()
	n.refreshMembers()
	n.snapIndex = meta.GetIndex()
	n.applied.Store(meta.GetIndex())
	n.queued = meta.GetIndex()
	n.snapsInstalled.Add(1)
	return nil
}

// maybeSnapshot starts a background snapshot once enough entries have been
// applied since the last one.
func (n *Node) maybeSnapshot() {
	if n.cfg.Snapshots == nil || n.cfg.SnapshotEntries == 0 || n.snapshotting {
		return
	}
	if n.applied.Load() < n.snapIndex+n.cfg.SnapshotEntries {
		return
	}
	n.snapshotting = true
	n.snapWG.Add(1)
	go func() {
		defer n.snapWG.Done()
		meta, err := n.cfg.Snapshots.Take()
		select {
		case n.ctrlc <- func(*raft.RawNode) {
			n.snapshotDone(meta, err)
			n.maybeSnapshot() // an idle node has no Ready to trigger it
		}:
		case <-n.loopExit:
		}
	}()
}

// snapshotDone records a finished local snapshot in the log storage and
// compacts the log behind it, keeping CatchUpEntries.
func (n *Node) snapshotDone(meta *pb.SnapshotMetadata, err error) {
	n.snapshotting = false
	if err != nil {
		n.log.Error("taking a snapshot failed; will retry", "err", err)
		return
	}
	idx := meta.GetIndex()
	if idx <= n.snapIndex {
		return
	}
	if _, err := n.cfg.Log.CreateSnapshot(idx, meta.GetConfState(), nil); err != nil {
		n.log.Error("recording the snapshot in the raft log storage failed", "index", idx, "err", err)
		return
	}
	n.snapIndex = idx
	n.snapTaken.Add(1)
	if idx > n.cfg.CatchUpEntries {
		if err := n.cfg.Log.Compact(idx - n.cfg.CatchUpEntries); err != nil {
			n.fail(fmt.Errorf("raftnode: compacting the raft log: %w", err))
			return
		}
	}
	n.log.Info("took a snapshot and compacted the raft log", "index", idx, "kept_from", idx-min(idx, n.cfg.CatchUpEntries))
}

// SnapshotCounts returns how many snapshots this node took and installed.
func (n *Node) SnapshotCounts() (taken, installed uint64) {
	return n.snapTaken.Load(), n.snapsInstalled.Load()
}

// apply hands p's committed entries that are not handed on yet to the
// apply goroutine, and applies configuration changes on the loop once it
// has applied everything before them. p.handed moves past every run queued
// and every change applied, so that a resumed step (after the queue was
// full, or a full disk) hands on each entry exactly once.
// StateMachine.Apply must apply a run entirely or not at all.
func (n *Node) apply(p *pendingReady) error {
	ents := p.rd.CommittedEntries
	if n.stages != nil && len(ents) > p.handed {
		// The leader's appends that these entries commit.
		n.pending.commit(n.stages, ents[len(ents)-1].GetIndex())
	}
	handOff := func(end int) error {
		if end > p.handed {
			if !n.handOff(ents[p.handed:end]) {
				return errApplyFull
			}
			p.handed = end
		}
		return nil
	}
	for i := p.handed; i < len(ents); i++ {
		e := ents[i]
		if e.GetType() != pb.EntryConfChange && e.GetType() != pb.EntryConfChangeV2 {
			continue
		}
		if err := handOff(i); err != nil {
			return err
		}
		if !n.applierIdle() {
			return errApplyBusy
		}
		if err := n.applyConfChange(p, e); err != nil {
			return err
		}
		n.applied.Store(e.GetIndex())
		n.queued = e.GetIndex()
		p.handed = i + 1
		p.ccDone = nil
	}
	return handOff(len(ents))
}

// applyConfChange applies one committed configuration change to raft and
// the state machine. A change that does not decode, or that raft refuses
// (its Changer panics on an invalid change before it modifies anything), is
// applied as a no-op: every replica reaches the same verdict on the same
// bytes, so they stay in agreement, and none of them dies on it at every
// restart. Correct members never propose such a change.
func (n *Node) applyConfChange(p *pendingReady, e *pb.Entry) error {
	var cc pb.ConfChangeI
	var derr error
	if e.GetType() == pb.EntryConfChange {
		c := &pb.ConfChange{}
		derr = proto.Unmarshal(e.GetData(), c)
		cc = c
	} else {
		c := &pb.ConfChangeV2{}
		derr = proto.Unmarshal(e.GetData(), c)
		cc = c
	}
	cs := p.ccDone
	if derr == nil && cs == nil {
		cs, derr = n.raftApplyConfChange(cc)
	}
	if derr != nil {
		n.rejectedConfCh.Add(1)
		n.log.Error("a committed configuration change is invalid; it is applied as a no-op on every member",
			"index", e.GetIndex(), "entry_term", e.GetTerm(), "err", derr)
		// The state machine records the index as applied.
		empty := &pb.Entry{Index: e.Index, Term: e.Term, Type: pb.EntryNormal.Enum()}
		if err := n.cfg.SM.Apply([]*pb.Entry{empty}); err != nil {
			return fmt.Errorf("raftnode: recording rejected conf change at %d: %w", e.GetIndex(), err)
		}
		return nil
	}
	p.ccDone = cs
	n.statusMu.Lock()
	n.voters, n.learners = cs.GetVoters(), cs.GetLearners()
	n.sole.Store(soleVoter(n.voters, n.cfg.ID))
	n.statusMu.Unlock()
	n.refreshMembers()
	if err := n.cfg.SM.ApplyConfChange(e, cc, cs); err != nil {
		return fmt.Errorf("raftnode: applying conf change at %d: %w", e.GetIndex(), err)
	}
	return nil
}

// raftApplyConfChange calls RawNode.ApplyConfChange, turning its panic on
// an invalid change into an error. Raft computes the new configuration on
// copies (confchange.Changer) and panics before it switches to it, so its
// state is unchanged when the panic is recovered.
func (n *Node) raftApplyConfChange(cc pb.ConfChangeI) (cs *pb.ConfState, err error) {
	defer func() {
		if r := recover(); r != nil {
			cs, err = nil, fmt.Errorf("raft refused the change %s: %v", raft.DescribeConfChange(cc), r)
		}
	}()
	return n.rn.ApplyConfChange(cc), nil
}

// raftLogger adapts slog to raft.Logger; raft's chatty Info goes to Debug,
// and so do the warnings raft gives in the normal course of things
// (routineRaftWarnings).
type raftLogger struct{ log *slog.Logger }

// routineRaftWarnings are the raft library's Warningf formats (raft.go of
// go.etcd.io/raft/v3 v3.7.0) that describe normal operation, not a
// problem, with the level they are logged at. The others — a leader that
// stepped down because it lost its quorum, "should never happen" — stay
// warnings.
var routineRaftWarnings = []struct {
	format string
	level  slog.Level
}{
	// A learner, a removed node or a joining node not yet in the
	// configuration was asked to campaign (an election timeout, a
	// transfer): it cannot, and says so at every timeout.
	{"%x is unpromotable and can not campaign", slog.LevelDebug},
	// A node that restarted, or just bootstrapped, has committed
	// configuration entries it has not applied yet; it campaigns once it
	// has (a moment later).
	{"%x cannot campaign at term %d since there are still pending configuration changes to apply", slog.LevelInfo},
	// Back-pressure: the proposal is refused and its client gets an error
	// (ErrProposalDropped); under load this is routine, and counted.
	{"%x appending new entries to log would exceed uncommitted entry size limit; dropping proposal", slog.LevelInfo},
}

// warningLevel is the level of a raft warning with this format.
func warningLevel(format string) slog.Level {
	for _, w := range routineRaftWarnings {
		if format == w.format {
			return w.level
		}
	}
	return slog.LevelWarn
}

func (l *raftLogger) Debug(v ...any)                 { l.log.Debug(fmt.Sprint(v...)) }
func (l *raftLogger) Debugf(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *raftLogger) Info(v ...any)                  { l.log.Debug(fmt.Sprint(v...)) }
func (l *raftLogger) Infof(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *raftLogger) Warning(v ...any)               { l.log.Warn(fmt.Sprint(v...)) }
func (l *raftLogger) Warningf(format string, v ...any) {
	l.log.Log(context.Background(), warningLevel(format), fmt.Sprintf(format, v...))
}
func (l *raftLogger) Error(v ...any)                 { l.log.Error(fmt.Sprint(v...)) }
func (l *raftLogger) Errorf(format string, v ...any) { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *raftLogger) Fatal(v ...any)                 { l.log.Error(fmt.Sprint(v...)); panic(fmt.Sprint(v...)) }
func (l *raftLogger) Fatalf(format string, v ...any) {
	l.log.Error(fmt.Sprintf(format, v...))
	panic(fmt.Sprintf(format, v...))
}
func (l *raftLogger) Panic(v ...any) { l.log.Error(fmt.Sprint(v...)); panic(fmt.Sprint(v...)) }
func (l *raftLogger) Panicf(format string, v ...any) {
	l.log.Error(fmt.Sprintf(format, v...))
	panic(fmt.Sprintf(format, v...))
}
