// Package kv is the replicated state machine: it turns client writes into
// raft proposals, applies committed entries to the storage engine as
// versioned data, and serves linearizable reads with ReadIndex, at the
// latest state or at a past revision.
//
// It owns the command encoding inside raft entries, the commit timestamps
// (hlc.go), the versioned layout of the engine's keys (mvcc.go), the apply
// (apply.go), garbage collection of old versions (gc.go), and the system
// keys it keeps in the engine (prefix 0x00). It must never acknowledge a
// write before it is committed and applied, never serve a read without a
// fresh ReadIndex round confirming leadership (or, on a leader that is the
// only voter or holds a lease with --read-mode lease, its commit index:
// raftnode.LocalReadIndex), never re-apply an entry at
// or below the applied index it recorded, and never decide anything in the
// apply that another replica could decide differently.
//
// # Entry format
//
//	version 2: 2 | proposed_ts u64 LE | uvarint n | n × command
//	version 1: 1 | uvarint n | n × command   (before versions; still applied)
//	command:   op u8 | id u64 LE | operands
//	  op 1 put:      uvarint keyLen | key | uvarint valueLen | value
//	  op 2 delete:   uvarint keyLen | key
//	  op 3 horizon:  u64 LE (a GC horizon proposed by the leader, gc.go)
//	  op ≥ 16:       uvarint bodyLen | body (an Evaluator's command,
//	                 apply.go: the transaction manager's TxnCommit and
//	                 conditional writes)
//
// id is the proposing node's request id (node id in the top 16 bits); it
// lets the proposer find its waiter when the entry is applied. The entry's
// commit timestamp is max(proposed_ts, last applied + 1) (a version-1
// entry proposes 0): every command of the entry shares it.
//
// A committed entry that does not follow this format, or holds a command a
// proposer would have refused (see decodeCommands), or whose Evaluator
// refuses it, is applied as a no-op on every replica (Apply): never partly,
// and never a reason to stop. A node must know every op a committed entry
// uses: new ops need every node upgraded before they are proposed.
//
// # System keys
//
//	0x00 "raft/applied"     appliedIndex u64 LE | appliedTerm u64 LE | appliedTS u64 LE
//	                        (16 bytes before versions: appliedTS 0)
//	0x00 "raft/confstate"   raftpb.ConfState proto, as of the applied index
//	0x00 "cluster/roster"   the membership roster (JSON, owned by the server)
//	0x00 "mvcc/…", 0x00 'h', 0x00 'l', 0x00 'o'   versioned data (mvcc.go)
//	0x00 "x/…"              state of components above kv, written by their
//	                        Evaluators (ApplyTx.PutSystem; changes.go)
//
// A new system key must not start with 0x00 'h', 0x00 'l' or 0x00 'o':
// garbage collection (Collector.Filter) reads those as history, revision
// log and outcome records and drops them by timestamp.
//
// They are written in the same engine batch as the entries' effects, so
// after a crash they agree, and an engine checkpoint (a raft snapshot, a
// backup) carries all of them.
package kv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/raftnode"
)

// SystemPrefix starts every key reserved for the system.
const SystemPrefix = 0x00

var (
	appliedKey   = []byte("\x00raft/applied")
	confStateKey = []byte("\x00raft/confstate")
	rosterKey    = []byte("\x00cluster/roster")
)

const (
	opPut     = 1
	opDelete  = 2
	opHorizon = 3
)

// entryVersion is the entry format this node proposes.
const entryVersion = 2

// Errors.
var (
	// ErrNotLeader: this node cannot serve the request; the client should
	// go to the leader.
	ErrNotLeader = errors.New("kv: not the leader")
	// ErrTimeout: the request did not finish in time. For a write the
	// outcome is unknown.
	ErrTimeout = errors.New("kv: request timed out")
	// ErrLeadershipLost: leadership changed while a write waited; its
	// outcome is unknown.
	ErrLeadershipLost = errors.New("kv: leadership changed while the write was pending; it may or may not have been applied")
	// ErrStopped: the store is shutting down.
	ErrStopped = errors.New("kv: stopped")
	// ErrRejectedEntry: the committed entry that held the write could not be
	// decoded or applied; every node applied it as a no-op.
	ErrRejectedEntry = errors.New("kv: the committed raft entry holding this write is invalid and was applied as a no-op on every node; the write did not happen")
	// ErrReservedKey: a user request touched the 0x00 system prefix.
	ErrReservedKey = errors.New("keys beginning with byte 0x00 are reserved for the system")
)

func corruptf(format string, args ...any) error {
	return fmt.Errorf("kv: "+format+": %w", append(args, engine.ErrCorruption)...)
}

// Options configures a Store.
type Options struct {
	NodeID uint64
	DB     *engine.DB
	// RequestTimeout bounds every wait (proposal, read index, apply).
	// Default 5 s.
	RequestTimeout time.Duration
	Logger         *slog.Logger
	// OnConfChange is called (from the raft loop) for every applied
	// membership change. It returns the new roster to store with it.
	OnConfChange func(e *pb.Entry, cc pb.ConfChangeI, cs *pb.ConfState) (roster []byte, err error)

	// Clock is the node's hybrid logical clock. Nil: the wall clock with
	// DefaultMaxClockOffset.
	Clock *Clock
	// Collector is the compaction filter installed in DB's options (and in
	// every engine that replaces it). Nil: a collector of this store's
	// own, which collects nothing unless the engine uses its Filter.
	Collector *Collector
	// Retention: the leader moves the GC horizon to now − Retention (0: no
	// time bound).
	Retention time.Duration
	// RetentionBytes bounds the history (and revision log and outcome
	// records) garbage collection may still keep: beyond it the horizon
	// moves past the oldest of it (0: no byte bound).
	RetentionBytes int64
	// GCInterval is how often the leader considers a new horizon.
	// Default 1 s.
	GCInterval time.Duration
	// Evaluators are the custom commands (op ≥ OpCustomMin) the apply
	// runs. Every node must have the same.
	Evaluators map[byte]Evaluator
	// Stages, when set, receives the durations of the request stages the
	// store sees (a read's queue, apply wait and engine lookup; every
	// request's wake-up after the raft loop answered it).
	Stages *raftnode.Stages

	// HoldHistory, when set, returns the oldest revision a registered
	// change-feed consumer still needs (ok false: none): the leader's GC
	// horizon does not pass it unless HoldRetention or HoldRetentionBytes
	// (0: no bound) allow (docs/design/cdc-and-watch.md §3). It is called
	// from the GC loop, on the leader.
	HoldHistory        func() (rev uint64, ok bool)
	HoldRetention      time.Duration
	HoldRetentionBytes int64

	// VersionCacheBytes bounds the apply's cache of current versions
	// (vcache.go): 0 means DefaultVersionCacheBytes, a negative value
	// turns the cache off.
	VersionCacheBytes int64
}

// Store is the state machine of one node.
type Store struct {
	opts Options
	node *raftnode.Node
	log  *slog.Logger

	// dbMu guards db: readers hold it shared while they use the engine; a
	// snapshot installation swaps the engine under it exclusively.
	dbMu sync.RWMutex
	db   *engine.DB

	nextID  atomic.Uint64
	applied atomic.Uint64
	term    atomic.Uint64
	// appliedTS is the commit timestamp of the last applied entry;
	// horizon the applied GC horizon.
	appliedTS atomic.Uint64
	horizon   atomic.Uint64

	clock *Clock
	coll  *Collector
	gc    *gcState
	// ap is the apply state, reused by every Apply (one at a time, from
	// the raft node's apply goroutine); vc its cache of current versions.
	ap applier
	vc *versionCache
	// pubMu orders the Collector's horizon against checkpoints: Apply
	// publishes a new horizon holding it exclusively, Checkpoint holds it
	// shared, so a checkpoint never holds data collected past the horizon
	// recorded in it (gc.go).
	pubMu sync.RWMutex

	mu      sync.Mutex
	waiters map[uint64]waiter
	// callbacks counts the waiters with fn set; fired collects their
	// completions under mu (completeLocked).
	callbacks int
	fired     []fired
	// appliedWaiters are released when applied reaches their index.
	appliedWaiters []appliedWaiter

	readMu  sync.Mutex
	pending *readRound
	// reading is set while a round runs, on the read loop or on the
	// goroutine of the read that started it (Barrier): one at a time, as
	// ReadStates has one consumer.
	reading  bool
	readWake chan struct{}
	readSeq  atomic.Uint64
	readSalt [4]byte
	// rounds counts the ReadIndex rounds run (ReadRounds).
	rounds atomic.Uint64

	// notifyMu guards notifyCh, closed (and replaced) when the applied
	// revision moves (AppliedNotify); nil until someone asks.
	notifyMu sync.Mutex
	notifyCh chan struct{}

	// interest tells the reader of applied changes (the watch hub) which
	// revisions touched a key it wants (SetInterest).
	interest interest

	counters struct{ put, get, del, scan atomic.Uint64 }
	// rejected counts committed entries applied as no-ops (they did not
	// decode or held an invalid command).
	rejected atomic.Uint64

	stopc chan struct{}
	wg    sync.WaitGroup
}

type appliedWaiter struct {
	index uint64
	ch    chan struct{}
}

type readRound struct {
	done chan struct{}
	err  error
	// created is when its first reader asked (raftnode.Now), doneAt when
	// it finished (0 without stage timing).
	created, doneAt int64
}

// Open creates a Store over db, converts an engine written before
// versions to the versioned format (Migrate), and reads the applied
// position it recorded.
func Open(opts Options) (*Store, error) {
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.GCInterval <= 0 {
		opts.GCInterval = time.Second
	}
	if opts.Retention < 0 || opts.RetentionBytes < 0 || opts.HoldRetention < 0 || opts.HoldRetentionBytes < 0 {
		return nil, fmt.Errorf("%w: negative retention", engine.ErrInvalidArgument)
	}
	for op, ev := range opts.Evaluators {
		if op < OpCustomMin || ev == nil {
			return nil, fmt.Errorf("%w: evaluator for op %d: custom ops start at %d and need a function", engine.ErrInvalidArgument, op, OpCustomMin)
		}
	}
	s := &Store{
		opts: opts, db: opts.DB, log: opts.Logger,
		clock: opts.Clock, coll: opts.Collector, gc: newGCState(&opts),
		waiters:  map[uint64]waiter{},
		readWake: make(chan struct{}, 1),
		stopc:    make(chan struct{}),
	}
	vcBytes := opts.VersionCacheBytes
	if vcBytes == 0 {
		vcBytes = DefaultVersionCacheBytes
	}
	s.vc = newVersionCache(vcBytes)
	if s.clock == nil {
		s.clock = NewClock(nil, 0, opts.Logger)
	}
	if s.coll == nil {
		s.coll = NewCollector()
	}
	_, _ = rand.Read(s.readSalt[:])
	if err := s.loadDB(opts.DB); err != nil {
		return nil, err
	}
	s.nextID.Store(opts.NodeID << 48)
	return s, nil
}

// loadDB migrates db if needed and loads its applied position, horizon and
// byte accounting.
func (s *Store) loadDB(db *engine.DB) error {
	if _, err := Migrate(db, s.log); err != nil {
		return err
	}
	index, term, ts, err := ReadAppliedTS(db)
	if err != nil {
		return err
	}
	h, err := readHorizon(db)
	if err != nil {
		return err
	}
	if err := s.gc.load(db); err != nil {
		return err
	}
	s.applied.Store(index)
	s.term.Store(term)
	// A loaded state (open, an installed snapshot) counts as touching
	// every key: the watch hub must read past it (and learn that a
	// snapshot took its history away).
	s.interest.publish(s, ts, true, 0)
	s.horizon.Store(h)
	s.clock.Update(ts)
	// The engine's horizon is durable (it was applied with a sync):
	// nothing it replays can need what it lets the filter drop.
	s.coll.publish(h)
	return nil
}

// ReadApplied returns the applied index and term recorded in db (zeros for
// a new database).
func ReadApplied(db Getter) (index, term uint64, err error) {
	index, term, _, err = ReadAppliedTS(db)
	return index, term, err
}

// ReadAppliedTS returns the applied index, term and commit timestamp
// recorded in db (zeros for a new database; timestamp 0 for a record
// written before versions).
func ReadAppliedTS(db Getter) (index, term, ts uint64, err error) {
	v, err := db.Get(appliedKey)
	switch {
	case err == nil:
		if len(v) != 16 && len(v) != 24 {
			return 0, 0, 0, corruptf("applied-index record is %d bytes, want 16 or 24", len(v))
		}
		if len(v) == 24 {
			ts = binary.LittleEndian.Uint64(v[16:])
		}
		return binary.LittleEndian.Uint64(v), binary.LittleEndian.Uint64(v[8:]), ts, nil
	case errors.Is(err, engine.ErrNotFound):
		return 0, 0, 0, nil
	}
	return 0, 0, 0, fmt.Errorf("kv: reading the applied index: %w", err)
}

// appliedRecord encodes the applied-index record.
func appliedRecord(index, term, ts uint64) []byte {
	v := make([]byte, 24)
	binary.LittleEndian.PutUint64(v, index)
	binary.LittleEndian.PutUint64(v[8:], term)
	binary.LittleEndian.PutUint64(v[16:], ts)
	return v
}

// State is what an engine holds besides user data: the raft position and
// the configuration as of that position.
type State struct {
	Index, Term uint64
	// TS is the commit timestamp of the entry at Index (0 before
	// versions); Horizon the GC horizon then.
	TS, Horizon uint64
	ConfState   *pb.ConfState
	Roster      []byte
}

// Getter reads one key: an *engine.DB, or an *engine.Snapshot for a
// consistent view of several keys.
type Getter interface {
	Get(key []byte) ([]byte, error)
}

// ReadState reads the system keys of db.
func ReadState(db Getter) (*State, error) {
	st := &State{ConfState: &pb.ConfState{}}
	var err error
	if st.Index, st.Term, st.TS, err = ReadAppliedTS(db); err != nil {
		return nil, err
	}
	if st.Horizon, err = readHorizon(db); err != nil {
		return nil, err
	}
	if v, err := db.Get(confStateKey); err == nil {
		if err := proto.Unmarshal(v, st.ConfState); err != nil {
			return nil, fmt.Errorf("kv: conf state record does not decode: %v: %w", err, engine.ErrCorruption)
		}
	} else if !errors.Is(err, engine.ErrNotFound) {
		return nil, err
	}
	if v, err := db.Get(rosterKey); err == nil {
		st.Roster = v
	} else if !errors.Is(err, engine.ErrNotFound) {
		return nil, err
	}
	return st, nil
}

// SyncState makes everything applied so far durable in the engine (one WAL
// fsync, no flush) and returns the raft state it covers: the engine alone
// can then stand for the raft log up to State.Index, which is what a
// metadata-only raft snapshot needs.
func (s *Store) SyncState() (*State, error) {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	// The system keys are written in the same batch as the entries they
	// describe; a snapshot reads them as of one batch boundary.
	sn := s.db.NewSnapshot()
	st, err := ReadState(sn)
	_ = sn.Close()
	if err != nil {
		return nil, err
	}
	if err := s.db.SyncWAL(); err != nil {
		return nil, fmt.Errorf("kv: syncing the engine's WAL: %w", err)
	}
	return st, nil
}

// DB runs fn with the current engine (shared with other readers; a
// snapshot installation waits).
func (s *Store) DB(fn func(db *engine.DB) error) error {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	return fn(s.db)
}

// Checkpoint writes a consistent copy of the engine to dest (which must not
// exist) and returns the raft state it holds: it is a raft snapshot at
// that index. It may run concurrently with Apply: the copy holds whatever
// prefix of the applied entries was flushed, and says which.
func (s *Store) Checkpoint(dest string) (*State, error) {
	s.pubMu.RLock()
	s.dbMu.RLock()
	err := s.db.Checkpoint(dest)
	opts := s.db.Options()
	s.dbMu.RUnlock()
	s.pubMu.RUnlock()
	if err != nil {
		return nil, err
	}
	return ReadCheckpoint(dest, opts)
}

// ReadCheckpoint opens a checkpoint read-only and reads its raft state.
func ReadCheckpoint(dir string, opts *engine.Options) (*State, error) {
	o := *opts
	o.ReadOnly, o.ErrorIfNotExists, o.ErrorIfExists, o.Cache = true, false, false, nil
	o.CacheSize = -1
	db, err := engine.Open(dir, &o)
	if err != nil {
		return nil, fmt.Errorf("kv: opening checkpoint %s: %w", dir, err)
	}
	st, err := ReadState(db)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return st, err
}

// ReplaceDB swaps the engine for the one of an installed snapshot: with
// every reader shut out, swap receives the current engine, must close it,
// and returns the new one. It is called from the raft loop while the apply
// goroutine is idle (raftnode installs a snapshot only then), so no Apply
// runs concurrently. If swap fails the store has no usable engine and the
// node must stop.
func (s *Store) ReplaceDB(swap func(old *engine.DB) (*engine.DB, error)) error {
	s.dbMu.Lock()
	db, err := swap(s.db)
	if err != nil {
		s.dbMu.Unlock()
		return err
	}
	s.db = db
	err = s.loadDB(db)
	s.dbMu.Unlock()
	if err != nil {
		return err
	}
	s.releaseApplied(s.applied.Load())
	s.signalApplied()
	return nil
}

// AppliedIndex returns the last applied raft index.
func (s *Store) AppliedIndex() uint64 { return s.applied.Load() }

// AppliedTS returns the commit timestamp of the last applied entry: every
// write with a timestamp up to it is applied on this node, and every later
// one will get a greater timestamp.
func (s *Store) AppliedTS() uint64 { return s.appliedTS.Load() }

// Clock returns the node's hybrid logical clock.
func (s *Store) Clock() *Clock { return s.clock }

// Start attaches the raft node and starts the read loop and, when a
// retention is configured, the garbage-collection loop.
func (s *Store) Start(n *raftnode.Node) {
	s.node = n
	s.wg.Add(2)
	go s.readLoop()
	go s.timeoutLoop()
	if s.opts.Retention > 0 || s.opts.RetentionBytes > 0 || s.opts.HoldHistory != nil {
		s.wg.Add(1)
		go s.gcLoop()
	}
}

// Stop ends the read loop and fails every waiter.
func (s *Store) Stop() {
	select {
	case <-s.stopc:
	default:
		close(s.stopc)
	}
	s.wg.Wait()
	s.failWaiters(ErrStopped, math.MaxUint64)
}

// ValidateKey checks a user key.
func ValidateKey(key []byte) error {
	if len(key) > engine.MaxKeySize {
		return fmt.Errorf("%w: key of %d bytes exceeds the %d-byte limit", engine.ErrInvalidArgument, len(key), engine.MaxKeySize)
	}
	if len(key) > 0 && key[0] == SystemPrefix {
		return fmt.Errorf("%w: %v", engine.ErrInvalidArgument, ErrReservedKey)
	}
	return nil
}

// Put replicates a write of value under key and returns once it is
// committed and applied on this node.
func (s *Store) Put(ctx context.Context, key, value []byte) error {
	wait, err := s.StartPut(ctx, key, value)
	if err != nil {
		return err
	}
	return wait(ctx)
}

// Delete replicates a deletion of key.
func (s *Store) Delete(ctx context.Context, key []byte) error {
	wait, err := s.StartDelete(ctx, key)
	if err != nil {
		return err
	}
	return wait(ctx)
}

// StartPut validates a write and queues its proposal, then returns a
// function that waits for the outcome. Writes started one after the other
// by one goroutine enter the raft log in that order (the server relies on
// it for pipelined requests on one connection).
func (s *Store) StartPut(ctx context.Context, key, value []byte) (func(context.Context) error, error) {
	if err := s.admitPut(key, value); err != nil {
		return nil, err
	}
	return errOnly(s.start(ctx, opPut, key, value))
}

// StartDelete is StartPut for a deletion.
func (s *Store) StartDelete(ctx context.Context, key []byte) (func(context.Context) error, error) {
	if err := s.admitDelete(key); err != nil {
		return nil, err
	}
	return errOnly(s.start(ctx, opDelete, key, nil))
}

// StartPutFunc is StartPut reporting the outcome to done instead of
// through a wait function: done(nil) once the write is committed (its
// apply on this node may still be under way: every read that must see it
// waits for the applied index to reach a commit index taken after done,
// see ackEarly), or done(err) as the wait would have returned it
// (ErrTimeout after the request timeout, ErrLeadershipLost, ...). done is
// called exactly once unless StartPutFunc returns an error, from the
// goroutine that settles the write: it must be quick and must not block
// (the apply goroutine's other completions wait behind it). A caller that
// answers many writes saves a goroutine and a timer per write.
func (s *Store) StartPutFunc(ctx context.Context, key, value []byte, done func(error)) error {
	if err := s.admitPut(key, value); err != nil {
		return err
	}
	return s.startFunc(ctx, opPut, key, value, true, func(r Result) { done(r.err) })
}

// StartDeleteFunc is StartPutFunc for a deletion.
func (s *Store) StartDeleteFunc(ctx context.Context, key []byte, done func(error)) error {
	if err := s.admitDelete(key); err != nil {
		return err
	}
	return s.startFunc(ctx, opDelete, key, nil, true, func(r Result) { done(r.err) })
}

// admitPut checks a put before it is proposed, and counts it.
func (s *Store) admitPut(key, value []byte) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if len(value) > engine.MaxValueSize {
		return fmt.Errorf("%w: value of %d bytes exceeds the %d-byte limit", engine.ErrInvalidArgument, len(value), engine.MaxValueSize)
	}
	s.counters.put.Add(1)
	return nil
}

// admitDelete checks a deletion before it is proposed, and counts it.
func (s *Store) admitDelete(key []byte) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	s.counters.del.Add(1)
	return nil
}

func errOnly(wait func(context.Context) (Result, error), err error) (func(context.Context) error, error) {
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		_, err := wait(ctx)
		return err
	}, nil
}

// Result is the outcome of an applied command.
type Result struct {
	// TS is the commit timestamp (revision) of the entry that held it.
	TS uint64
	// Data is the Evaluator's result (custom commands only).
	Data []byte
	err  error
	at   int64 // raftnode.Now() when the apply finished (stage timing)
}

// Propose replicates a custom command (op ≥ OpCustomMin, with an
// Evaluator registered in Options.Evaluators) and returns its result once
// it is committed and applied on this node. The caller validates the body
// before proposing it: an Evaluator's refusal in the apply rejects the
// entry (ErrRejectedEntry) after it took a raft round.
func (s *Store) Propose(ctx context.Context, op byte, body []byte) (Result, error) {
	wait, err := s.StartPropose(ctx, op, body)
	if err != nil {
		return Result{}, err
	}
	return wait(ctx)
}

// StartPropose is Propose in two steps, like StartPut.
func (s *Store) StartPropose(ctx context.Context, op byte, body []byte) (func(context.Context) (Result, error), error) {
	if err := s.checkCommand(op, body); err != nil {
		return nil, err
	}
	return s.start(ctx, op, nil, body)
}

// StartProposeFunc is StartPropose with a completion callback, under the
// rules of StartPutFunc: done is called exactly once unless it returns an
// error, must not block, and gets the result with its error.
func (s *Store) StartProposeFunc(ctx context.Context, op byte, body []byte, done func(Result, error)) error {
	if err := s.checkCommand(op, body); err != nil {
		return err
	}
	return s.startFunc(ctx, op, nil, body, false, func(r Result) { done(r, r.err) })
}

// checkCommand checks a custom command before it is proposed.
func (s *Store) checkCommand(op byte, body []byte) error {
	if _, ok := s.opts.Evaluators[op]; !ok || op < OpCustomMin {
		return fmt.Errorf("%w: no evaluator for command op %d", engine.ErrInvalidArgument, op)
	}
	if len(body) > MaxCommandBody {
		return fmt.Errorf("%w: a command of %d bytes exceeds the %d-byte limit", engine.ErrInvalidArgument, len(body), MaxCommandBody)
	}
	return nil
}

// bounded returns ctx limited to the request timeout. A context whose
// deadline is already that close (the server's requests carry one) is used
// as it is: a derived context costs a timer and a registration with its
// parent on every write.
func (s *Store) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= s.opts.RequestTimeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.opts.RequestTimeout)
}

// encodeEntry encodes a one-command entry: a put or delete of key, a
// horizon (value holds it, 8 bytes LE), or a custom command (value is its
// body).
func encodeEntry(proposed uint64, op byte, id uint64, key, value []byte) []byte {
	data := make([]byte, 0, 1+8+1+1+8+2+len(key)+4+len(value))
	data = append(data, entryVersion)
	data = binary.LittleEndian.AppendUint64(data, proposed)
	data = append(data, 1, op)
	data = binary.LittleEndian.AppendUint64(data, id)
	switch op {
	case opPut, opDelete:
		data = binary.AppendUvarint(data, uint64(len(key)))
		data = append(data, key...)
		if op == opPut {
			data = binary.AppendUvarint(data, uint64(len(value)))
			data = append(data, value...)
		}
	case opHorizon:
		data = append(data, value...)
	default:
		data = binary.AppendUvarint(data, uint64(len(value)))
		data = append(data, value...)
	}
	return data
}

func (s *Store) start(ctx context.Context, op byte, key, value []byte) (func(context.Context) (Result, error), error) {
	ch := make(chan Result, 1)
	id, err := s.propose(ctx, op, key, value, waiter{ch: ch})
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) (Result, error) {
		defer s.unregister(id)
		if plantedEarlyAck {
			return Result{}, nil
		}
		ctx, cancel := s.bounded(ctx)
		defer cancel()
		// One wake-up: the apply's result, or raft's refusal (above).
		select {
		case r := <-ch:
			s.opts.Stages.Since(raftnode.StageWake, r.at)
			return r, r.err
		case <-ctx.Done():
			return Result{}, ErrTimeout
		case <-s.stopc:
			return Result{}, ErrStopped
		}
	}, nil
}

// startFunc is start for a caller that takes the result in a callback
// (StartPutFunc): done is called exactly once, unless startFunc returns an
// error, from the goroutine that settles the write (the apply goroutine,
// the raft loop, the timeout sweep, a step-down or Stop). It must not
// block: it runs where every other write's completion waits behind it.
func (s *Store) startFunc(ctx context.Context, op byte, key, value []byte, early bool, done func(Result)) error {
	w := waiter{fn: done, deadline: time.Now().Add(s.opts.RequestTimeout).UnixNano(), early: early}
	if s.opts.Stages != nil {
		w.fn = func(r Result) {
			s.opts.Stages.Since(raftnode.StageWake, r.at)
			done(r)
		}
	}
	if plantedEarlyAck {
		w.fn = func(Result) {}
	}
	if _, err := s.propose(ctx, op, key, value, w); err != nil {
		return err
	}
	if plantedEarlyAck {
		done(Result{})
	}
	return nil
}

// propose registers w for a new write's result and queues the write's
// proposal. On an error the write was not proposed and w is unregistered.
func (s *Store) propose(ctx context.Context, op byte, key, value []byte, w waiter) (uint64, error) {
	if !s.node.IsLeader() {
		return 0, ErrNotLeader
	}
	id := s.nextID.Add(1)
	data := encodeEntry(s.clock.Now(), op, id, key, value)
	w.term = s.node.Term()
	s.mu.Lock()
	s.waiters[id] = w
	if w.fn != nil {
		s.callbacks++
	}
	s.mu.Unlock()
	refused := func(err error) {
		// On the raft loop: raft did not take the proposal.
		if errors.Is(err, raftnode.ErrDropped) {
			// Not appended: safe for the client to retry elsewhere.
			err = ErrNotLeader
		}
		s.mu.Lock()
		s.completeLocked(id, Result{err: err})
		fs := s.takeFiredLocked()
		s.mu.Unlock()
		fire(fs)
	}
	// The queue usually has room: only a wait for it needs the bound (and
	// its timer, which would otherwise cost every write).
	var err error
	if ctx.Err() != nil || !s.node.TryProposeOrRefuse(data, refused) {
		qctx, cancel := s.bounded(ctx)
		err = s.node.ProposeOrRefuse(qctx, data, refused)
		cancel()
	}
	if err != nil {
		s.unregister(id)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			// Never queued: the write did not happen.
			return 0, ErrTimeout
		}
		return 0, err
	}
	return id, nil
}

// unregister forgets the waiter of write id, if it is still there.
func (s *Store) unregister(id uint64) {
	s.mu.Lock()
	if w, ok := s.waiters[id]; ok {
		delete(s.waiters, id)
		if w.fn != nil {
			s.callbacks--
		}
	}
	s.mu.Unlock()
}

// Apply implements raftnode.StateMachine: one engine batch for the run of
// entries, including the new applied index and timestamp. The batch is not
// synced (unless an entry moved the GC horizon, gc.go): the raft log is
// the durable copy, and entries after the recorded applied index are
// applied again after a crash. It applies the whole run or, on an error,
// nothing (the raft node may retry it after a full disk).
//
// An entry that does not decode, or holds a command that is not valid
// (an unknown operation, a key or value over the limits, a system key), or
// that its Evaluator refuses, is applied as a no-op: it is checked whole
// before any of its writes is added, so every replica, deciding on the
// same bytes, applies exactly the same thing; the applied index moves past
// it, RejectedEntries counts it, the log names it, and the proposers whose
// ids it carries get ErrRejectedEntry. Commands are validated before they
// are proposed, so a correct node never proposes such an entry; this keeps
// one forged or corrupted entry from stopping every replica at every
// restart.
func (s *Store) Apply(ents []*pb.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	last := ents[len(ents)-1]
	if last.GetIndex() <= s.applied.Load() {
		return nil
	}
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	b := s.db.NewBatch()
	size := 32
	for _, e := range ents {
		size += 2*len(e.GetData()) + 48
	}
	b.Grow(size) // the value, its history and its revision-log entry
	defer s.ap.overlay.reset()
	a := &s.ap
	a.reset(s, s.db, b)
	if s.vc.db != s.db {
		// A snapshot's engine replaced the one the cache describes
		// (ReplaceDB), or this is the first run.
		s.vc.clear()
		s.vc.db = s.db
	}
	type done struct {
		ids     []uint64
		term    uint64
		ts      uint64
		results [][]byte
	}
	type reject struct {
		id, term uint64
		err      error
	}
	var applied []done
	var rejected []reject
	var rejects int
	dec := a.decoded[:0]
	for _, e := range ents {
		if e.GetIndex() <= s.applied.Load() || len(e.GetData()) == 0 {
			continue
		}
		d := decodedEntry{e: e}
		d.proposed, d.cmds, d.ids, d.err = s.decodeCommands(e.GetData())
		dec = append(dec, d)
	}
	a.decoded = dec
	defer clear(a.decoded)
	if s.ackEarly(dec) {
		// Let the replies settled go out before the engine work below:
		// their writers were readied onto this P.
		runtime.Gosched()
	}
	for i := range dec {
		d := &dec[i]
		e := d.e
		var results [][]byte
		err := d.err
		ts := max(d.proposed, a.lastTS+1)
		if err == nil {
			var fatal error
			results, err, fatal = a.applyEntry(d.cmds, ts, e.GetTerm())
			if fatal != nil {
				return fmt.Errorf("entry %d: %w", e.GetIndex(), fatal)
			}
		}
		if err != nil {
			rejects++
			for _, id := range d.ids {
				rejected = append(rejected, reject{id, e.GetTerm(), err})
			}
			s.log.Error("a committed raft entry is invalid; it is applied as a no-op on every node",
				"index", e.GetIndex(), "entry_term", e.GetTerm(), "bytes", len(e.GetData()), "err", err)
			continue
		}
		applied = append(applied, done{d.ids, e.GetTerm(), ts, results})
	}
	if err := s.gc.flush(a); err != nil {
		return err
	}
	if err := s.commitApplied(b, last.GetIndex(), last.GetTerm(), a); err != nil {
		s.vc.clear() // whether the batch is in the engine is unknown
		return err
	}
	s.vc.absorb(&a.overlay)
	s.rejected.Add(uint64(rejects))
	var at int64
	if s.opts.Stages != nil {
		at = raftnode.Now()
	}
	s.mu.Lock()
	for _, d := range applied {
		for i, id := range d.ids {
			r := Result{TS: d.ts, at: at}
			if d.results != nil {
				r.Data = d.results[i]
			}
			s.completeAppliedLocked(id, d.term, r)
		}
	}
	for _, r := range rejected {
		s.completeAppliedLocked(r.id, r.term, Result{err: fmt.Errorf("%w: %v", ErrRejectedEntry, r.err)})
	}
	fs := s.takeFiredLocked()
	s.mu.Unlock()
	fire(fs)
	return nil
}

// decodedEntry is a committed entry of an apply run, decoded.
type decodedEntry struct {
	e        *pb.Entry
	proposed uint64
	cmds     []command
	ids      []uint64
	err      error
}

// ackEarly answers, before the run is applied, the writes whose outcome
// the commit alone decides: an entry that decodes and holds only puts and
// deletes is applied whatever the state (the apply rejects only what does
// not decode, or what an Evaluator refuses), so its proposers that asked
// for it (waiter.early: StartPutFunc, StartDeleteFunc) learn of their
// success now instead of after the engine batch. Committed means durable
// on a quorum and applied on every replica, here after a crash too; every
// read that must see an acknowledged write waits for the applied index to
// reach a commit index taken after the acknowledgement (Barrier,
// LeaderApplied), which covers the entry. CockroachDB acknowledges such
// commands the same way (ackCommittedEntriesBeforeApplication). It
// reports whether it answered any.
func (s *Store) ackEarly(dec []decodedEntry) bool {
	s.mu.Lock()
	if s.callbacks == 0 {
		s.mu.Unlock()
		return false
	}
	var at int64
	if s.opts.Stages != nil {
		at = raftnode.Now()
	}
	acked := false
	for i := range dec {
		d := &dec[i]
		if d.err != nil || !putsAndDeletes(d.cmds) {
			continue
		}
		for _, id := range d.ids {
			if w, ok := s.waiters[id]; ok && w.early && s.completeAppliedLocked(id, d.e.GetTerm(), Result{at: at}) {
				acked = true
			}
		}
	}
	fs := s.takeFiredLocked()
	s.mu.Unlock()
	fire(fs)
	return acked
}

// putsAndDeletes reports whether cmds are all puts and deletes.
func putsAndDeletes(cmds []command) bool {
	for i := range cmds {
		if op := cmds[i].op; op != opPut && op != opDelete {
			return false
		}
	}
	return true
}

// RejectedEntries returns how many committed entries this node applied as
// no-ops because they were invalid.
func (s *Store) RejectedEntries() uint64 { return s.rejected.Load() }

// commitApplied adds the applied record to b, commits it (with a sync when
// the run moved the GC horizon) and publishes what the run applied. a is
// the run's apply state (nil for a configuration change).
func (s *Store) commitApplied(b *engine.Batch, index, term uint64, a *applier) error {
	ts, horizonSet := s.appliedTS.Load(), false
	if a != nil {
		ts, horizonSet = a.lastTS, a.horizonSet
	}
	if err := b.Set(appliedKey, appliedRecord(index, term, ts)); err != nil {
		return err
	}
	wo := engine.NoSync
	if horizonSet {
		// The horizon reaches the compaction filter only once durable
		// (gc.go).
		wo = engine.Sync
	}
	if err := b.Commit(wo); err != nil {
		return fmt.Errorf("kv: applying up to %d: %w", index, err)
	}
	if a != nil {
		s.gc.commit(a)
		s.interest.publish(s, ts, a.interestHit, a.interestGen)
		s.clock.Update(ts)
		if horizonSet {
			s.horizon.Store(a.horizon)
			s.pubMu.Lock()
			s.coll.publish(a.horizon)
			s.pubMu.Unlock()
		}
		s.signalApplied()
	}
	s.applied.Store(index)
	s.term.Store(term)
	s.releaseApplied(index)
	return nil
}

// command is one decoded command of an entry.
type command struct {
	op         byte
	key, value []byte // value: a put's value, a custom command's body
	horizon    uint64
}

// minCommandSize is the smallest encoded command (op, id, empty key): it
// bounds the count an entry may announce.
const minCommandSize = 1 + 8 + 1

// decodeCommands decodes and validates an entry: its proposed timestamp
// (0 for format version 1) and commands. On an error it returns the ids
// of the commands it could read before the bad one, so that their
// proposers learn the outcome.
func (s *Store) decodeCommands(data []byte) (proposed uint64, cmds []command, ids []uint64, err error) {
	if len(data) == 0 {
		return 0, nil, nil, errors.New("empty command")
	}
	version := data[0]
	p := data[1:]
	switch version {
	case 1:
	case 2:
		if len(p) < 8 {
			return 0, nil, nil, errors.New("truncated timestamp")
		}
		proposed, p = binary.LittleEndian.Uint64(p), p[8:]
	default:
		return 0, nil, nil, fmt.Errorf("unknown command format version %d", version)
	}
	n, w := binary.Uvarint(p)
	if w <= 0 {
		return 0, nil, nil, errors.New("bad command count")
	}
	p = p[w:]
	if n == 0 || n > uint64(len(p)/minCommandSize) {
		return 0, nil, nil, fmt.Errorf("entry announces %d commands in %d bytes", n, len(p))
	}
	cmds = make([]command, 0, n)
	ids = make([]uint64, 0, n)
	for i := uint64(0); i < n; i++ {
		if len(p) < 9 {
			return 0, nil, ids, fmt.Errorf("command %d: truncated", i)
		}
		c := command{op: p[0]}
		ids = append(ids, binary.LittleEndian.Uint64(p[1:9]))
		p = p[9:]
		switch {
		case c.op == opPut || c.op == opDelete:
			key, rest, ok := uvarintBytes(p)
			if !ok {
				return 0, nil, ids, fmt.Errorf("command %d: truncated key", i)
			}
			c.key, p = key, rest
			if err := ValidateKey(key); err != nil {
				return 0, nil, ids, fmt.Errorf("command %d: %w", i, err)
			}
			if c.op == opPut {
				value, rest, ok := uvarintBytes(p)
				if !ok {
					return 0, nil, ids, fmt.Errorf("command %d: truncated value", i)
				}
				c.value, p = value, rest
				if len(value) > engine.MaxValueSize {
					return 0, nil, ids, fmt.Errorf("command %d: value of %d bytes exceeds the %d-byte limit", i, len(value), engine.MaxValueSize)
				}
			}
		case c.op == opHorizon && version >= 2:
			if len(p) < 8 {
				return 0, nil, ids, fmt.Errorf("command %d: truncated horizon", i)
			}
			c.horizon, p = binary.LittleEndian.Uint64(p), p[8:]
		case c.op >= OpCustomMin && version >= 2 && s.opts.Evaluators[c.op] != nil:
			body, rest, ok := uvarintBytes(p)
			if !ok {
				return 0, nil, ids, fmt.Errorf("command %d: truncated body", i)
			}
			if len(body) > MaxCommandBody {
				return 0, nil, ids, fmt.Errorf("command %d: body of %d bytes exceeds the %d-byte limit", i, len(body), MaxCommandBody)
			}
			c.value, p = body, rest
		default:
			return 0, nil, ids, fmt.Errorf("command %d: unknown operation %d", i, c.op)
		}
		cmds = append(cmds, c)
	}
	if len(p) != 0 {
		return 0, nil, ids, fmt.Errorf("%d bytes after the last command", len(p))
	}
	return proposed, cmds, ids, nil
}

func uvarintBytes(p []byte) (b, rest []byte, ok bool) {
	n, w := binary.Uvarint(p)
	if w <= 0 || n > uint64(len(p)-w) {
		return nil, nil, false
	}
	return p[w : w+int(n)], p[w+int(n):], true
}

// ApplyConfChange implements raftnode.StateMachine.
func (s *Store) ApplyConfChange(e *pb.Entry, cc pb.ConfChangeI, cs *pb.ConfState) error {
	if e.GetIndex() <= s.applied.Load() {
		// Raft replays configuration changes after a restart to rebuild its
		// configuration; their effects here are already recorded.
		return nil
	}
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	b := s.db.NewBatch()
	if s.opts.OnConfChange != nil {
		roster, err := s.opts.OnConfChange(e, cc, cs)
		if err != nil {
			return err
		}
		if roster != nil {
			if err := b.Set(rosterKey, roster); err != nil {
				return err
			}
		}
	}
	csb, err := proto.Marshal(cs)
	if err != nil {
		return err
	}
	if err := b.Set(confStateKey, csb); err != nil {
		return err
	}
	return s.commitApplied(b, e.GetIndex(), e.GetTerm(), nil)
}

// waiter is a proposer waiting for its entry's result, and the raft term
// it proposed in (read as it proposed: in the instant a node becomes
// leader it may still read the term before, and a step-down of that term
// delivered late then tells it "outcome unknown", which stays true).
type waiter struct {
	ch   chan Result
	term uint64
	// fn, when set, takes the result instead of ch (StartPutFunc): it is
	// called once, outside mu, by whoever completes the write: the apply
	// goroutine, the raft loop (a refused proposal), the timeout sweep
	// (deadline, unix nanoseconds), or a step-down or Stop.
	fn       func(Result)
	deadline int64
	// early: the result is wanted at commit, before the apply (ackEarly):
	// a put or delete whose caller takes only its error.
	early bool
}

// fired is a callback waiter's completion, collected under mu and called
// after it is released.
type fired struct {
	fn func(Result)
	r  Result
}

// fire calls the completions collected under mu.
func fire(fs []fired) {
	for _, f := range fs {
		f.fn(f.r)
	}
}

// LeadershipChanged implements raftnode.StateMachine: when this node stops
// leading, every write proposed up to that term and still pending learns
// that its outcome is unknown. The change comes after the entries
// committed before it are applied, so those writes have completed with
// their results already; a write proposed after this node led again (a
// later term) is not touched.
func (s *Store) LeadershipChanged(leader, term uint64, isLeader bool) {
	if !isLeader {
		s.failWaiters(ErrLeadershipLost, term)
	}
}

// completeLocked hands a proposer its result. Called with mu.
// A callback waiter's completion is appended to s.fired, which the caller
// hands to fire once it released mu.
func (s *Store) completeLocked(id uint64, r Result) {
	if w, ok := s.waiters[id]; ok {
		delete(s.waiters, id)
		if w.fn != nil {
			s.callbacks--
			s.fired = append(s.fired, fired{w.fn, r})
			return
		}
		w.ch <- r
	}
}

// completeAppliedLocked completes id's waiter with the result of an entry
// of term applied, unless the waiter was registered in a later term: its
// id was then handed out again by this node after a restart (ids count up
// from NodeID<<48 in every incarnation), and the entry is an earlier
// incarnation's, which this node can no longer lead in the term it led
// it in. It reports whether it completed one. Called with mu.
func (s *Store) completeAppliedLocked(id, term uint64, r Result) bool {
	if w, ok := s.waiters[id]; ok && w.term <= term {
		s.completeLocked(id, r)
		return true
	}
	return false
}

// takeFiredLocked returns the completions collected so far and empties
// the list. Called with mu.
func (s *Store) takeFiredLocked() []fired {
	fs := s.fired
	s.fired = nil
	return fs
}

// failWaiters fails the writes proposed in term upTo or earlier.
func (s *Store) failWaiters(err error, upTo uint64) {
	s.mu.Lock()
	for id, w := range s.waiters {
		if w.term <= upTo {
			s.completeLocked(id, Result{err: err})
		}
	}
	fs := s.takeFiredLocked()
	s.mu.Unlock()
	fire(fs)
}

// expireCallbacks fails the callback waiters whose deadline passed
// (ErrTimeout), as a channel waiter's own wait does.
func (s *Store) expireCallbacks(now int64) {
	s.mu.Lock()
	if s.callbacks == 0 {
		s.mu.Unlock()
		return
	}
	for id, w := range s.waiters {
		if w.fn != nil && w.deadline <= now {
			s.completeLocked(id, Result{err: ErrTimeout})
		}
	}
	fs := s.takeFiredLocked()
	s.mu.Unlock()
	fire(fs)
}

// timeoutLoop runs expireCallbacks a few times per request timeout, so a
// callback waiter learns of its timeout within an eighth of it (at most
// 100 ms) after it passed.
func (s *Store) timeoutLoop() {
	defer s.wg.Done()
	t := time.NewTicker(max(min(s.opts.RequestTimeout/8, 100*time.Millisecond), time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.stopc:
			return
		case now := <-t.C:
			s.expireCallbacks(now.UnixNano())
		}
	}
}

// releaseApplied wakes reads waiting for index.
func (s *Store) releaseApplied(index uint64) {
	s.mu.Lock()
	ws := s.appliedWaiters
	n := 0
	for _, w := range ws {
		if w.index <= index {
			close(w.ch)
			continue
		}
		ws[n] = w
		n++
	}
	s.appliedWaiters = ws[:n]
	s.mu.Unlock()
}

// waitApplied blocks until the applied index reaches index.
func (s *Store) waitApplied(ctx context.Context, index uint64) error {
	s.mu.Lock()
	if s.applied.Load() >= index {
		s.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	s.appliedWaiters = append(s.appliedWaiters, appliedWaiter{index: index, ch: ch})
	s.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ErrTimeout
	case <-s.stopc:
		return ErrStopped
	}
}

// LeaderApplied returns once this node, leading, has applied the first
// entry of its term, and so every entry an earlier leader committed (and
// acknowledged), and everything committed when it was called: every
// write this leader acknowledged was committed before its acknowledgement
// (a put or delete may be acknowledged before it is applied, ackEarly).
// Without a network round, it does not prove that the node still leads
// (a deposed leader may not know yet): callers that need that use
// Barrier, or write through raft in the same term.
func (s *Store) LeaderApplied(ctx context.Context) error {
	if !s.node.IsLeader() {
		return ErrNotLeader
	}
	start := s.node.LeaderStart()
	if start == 0 {
		return ErrNotLeader
	}
	idx := max(start, s.node.Commit())
	if s.applied.Load() >= idx {
		return nil
	}
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	return s.waitApplied(ctx, idx)
}

// Barrier returns once this node has applied everything committed before
// the call, confirmed by a ReadIndex round (leadership checked with a
// quorum of heartbeats). Concurrent callers share rounds.
func (s *Store) Barrier(ctx context.Context) error {
	if idx, ok := s.node.LocalReadIndex(); ok {
		// No round needed: the only voter, or a leader holding a lease
		// (raftnode.LocalReadIndex).
		if s.applied.Load() >= idx {
			return nil
		}
		var t0 int64
		if s.opts.Stages != nil {
			t0 = raftnode.Now()
		}
		ctx, cancel := s.bounded(ctx)
		defer cancel()
		err := s.waitApplied(ctx, idx)
		s.opts.Stages.Since(raftnode.StageApply, t0)
		return err
	}
	if !s.node.IsLeader() {
		return ErrNotLeader
	}
	s.readMu.Lock()
	if !s.reading && s.pending == nil {
		// No round runs or waits: this read runs one itself, on its own
		// goroutine (two hand-offs fewer than through the read loop, which
		// a lone client's reads pay in full). Reads that come meanwhile
		// gather in s.pending for the read loop, woken when it ends.
		s.reading = true
		s.readMu.Unlock()
		var since int64
		if s.opts.Stages != nil {
			since = raftnode.Now()
		}
		s.rounds.Add(1)
		ctx, cancel := s.bounded(ctx)
		err := s.readIndex(ctx, since)
		cancel()
		s.roundEnded()
		return err
	}
	r := s.pending
	if r == nil {
		r = &readRound{done: make(chan struct{})}
		if s.opts.Stages != nil {
			r.created = raftnode.Now()
		}
		s.pending = r
	}
	s.readMu.Unlock()
	select {
	case s.readWake <- struct{}{}:
	default:
	}
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	select {
	case <-r.done:
		s.opts.Stages.Since(raftnode.StageWake, r.doneAt)
		return r.err
	case <-ctx.Done():
		return ErrTimeout
	case <-s.stopc:
		return ErrStopped
	}
}

// ReadRounds returns how many ReadIndex rounds this store ran: reads share
// rounds, and a node that is the only voter needs none.
func (s *Store) ReadRounds() uint64 { return s.rounds.Load() }

// ReadsLocally reports whether a linearizable read would be served now
// without waiting: this node needs no round (the only voter, or a lease:
// raftnode.LocalReadIndex) and has applied its commit index. The server then handles the read
// without a goroutine of its own.
func (s *Store) ReadsLocally() bool {
	idx, ok := s.node.LocalReadIndex()
	return ok && s.applied.Load() >= idx
}

// readLoop serves read rounds one after the other: every request that
// arrives while a round is in flight joins the next one.
func (s *Store) readLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.stopc:
			return
		case <-s.readWake:
		}
		s.readMu.Lock()
		if s.reading {
			// A read runs its own round; roundEnded wakes the loop.
			s.readMu.Unlock()
			continue
		}
		r := s.pending
		s.pending = nil
		if r != nil {
			s.reading = true
		}
		s.readMu.Unlock()
		if r == nil {
			continue
		}
		s.rounds.Add(1)
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.RequestTimeout)
		r.err = s.readIndex(ctx, r.created)
		cancel()
		if s.opts.Stages != nil {
			r.doneAt = raftnode.Now()
		}
		close(r.done)
		s.roundEnded()
	}
}

// roundEnded clears reading and wakes the read loop for the reads that
// gathered meanwhile.
func (s *Store) roundEnded() {
	s.readMu.Lock()
	s.reading = false
	more := s.pending != nil
	s.readMu.Unlock()
	if more {
		select {
		case s.readWake <- struct{}{}:
		default:
		}
	}
}

// readIndex runs one ReadIndex exchange, retrying with a fresh request id
// (never reusing one: etcd#20418) until it gets an answer, then waits for
// the applied index to reach it.
func (s *Store) readIndex(ctx context.Context, since int64) error {
	for {
		if !s.node.IsLeader() {
			return ErrNotLeader
		}
		var id [12]byte
		copy(id[:4], s.readSalt[:])
		binary.LittleEndian.PutUint64(id[4:], s.readSeq.Add(1))
		s.node.ReadIndexSince(id[:], since)
		since = 0 // a retry is timed from its own start
		retry := time.NewTimer(500 * time.Millisecond)
	wait:
		for {
			select {
			case rs := <-s.node.ReadStates():
				if !bytes.Equal(rs.RequestCtx, id[:]) {
					continue // an answer to an earlier, abandoned attempt
				}
				retry.Stop()
				var t0 int64
				if s.opts.Stages != nil {
					t0 = raftnode.Now()
				}
				err := s.waitApplied(ctx, rs.Index)
				s.opts.Stages.Since(raftnode.StageApply, t0)
				return err
			case <-retry.C:
				break wait
			case <-ctx.Done():
				retry.Stop()
				return ErrTimeout
			case <-s.stopc:
				retry.Stop()
				return ErrStopped
			}
		}
	}
}

// Get returns the value of key, linearizably.
func (s *Store) Get(ctx context.Context, key []byte) ([]byte, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	s.counters.get.Add(1)
	if err := s.readBarrier(ctx); err != nil {
		return nil, err
	}
	var t0 int64
	if s.opts.Stages != nil {
		t0 = raftnode.Now()
	}
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	v, err := s.db.Get(key)
	s.opts.Stages.Since(raftnode.StageEngine, t0)
	if err != nil {
		return nil, err
	}
	val, _, err := DecodeValue(v)
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", key, err)
	}
	return val, nil
}

// GetAt returns key's version at revision ts (0: the latest), with the
// revision that wrote it, linearizably: after a ReadIndex round, so every
// write acknowledged before the call is visible at ts ≥ its revision. A
// revision below the horizon answers a *CompactedError, one above the last
// applied a *FutureRevisionError.
func (s *Store) GetAt(ctx context.Context, key []byte, ts uint64) (Version, error) {
	if err := ValidateKey(key); err != nil {
		return Version{}, err
	}
	s.counters.get.Add(1)
	if err := s.readBarrier(ctx); err != nil {
		return Version{}, err
	}
	return s.ReadAt(key, ts)
}

// ReadAt is GetAt on this node's applied state, without a ReadIndex round:
// for the transaction manager, whose snapshot was fixed after one.
func (s *Store) ReadAt(key []byte, ts uint64) (Version, error) {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if ts == 0 {
		v, err := getCurrent(s.db, key)
		if err == nil {
			v.Value = bytes.Clone(v.Value)
		}
		return v, err
	}
	// Everything up to ts is applied (checked first); the iterator then
	// sees a state that holds all of it, and collection cannot touch the
	// state it pins; the horizon, checked after it opened, covers
	// whatever collection did before.
	if applied := s.appliedTS.Load(); ts > applied {
		return Version{}, &FutureRevisionError{Revision: ts, Newest: applied}
	}
	// Most reads at a past revision find the key unchanged since: a
	// current version that started at or before ts is the one live at ts,
	// and a point lookup finds it without the iterator (which merges every
	// level of the engine). Collection never touches a current version, so
	// the horizon, checked after the lookup as below, is all that can make
	// the answer "compacted".
	if v, err := getCurrent(s.db, key); err == nil && v.TS <= ts {
		if h := s.horizon.Load(); ts < h {
			return Version{}, &CompactedError{Revision: ts, Oldest: h}
		}
		v.Value = bytes.Clone(v.Value)
		return v, nil
	} else if err != nil && !errors.Is(err, engine.ErrNotFound) {
		return Version{}, err
	}
	it, err := s.db.NewIter(&engine.IterOptions{LowerBound: historyKeyPrefix(nil, key), UpperBound: append(bytes.Clone(key), 0)})
	if err != nil {
		return Version{}, err
	}
	defer it.Close()
	if h := s.horizon.Load(); ts < h {
		return Version{}, &CompactedError{Revision: ts, Oldest: h}
	}
	return versionAt(it, key, ts, nil)
}

// LastModified returns the commit timestamp of key's last change on this
// node (a put, or its deletion), 0 if none is known: never written, or
// last changed at or before the horizon, whose history may be collected.
func (s *Store) LastModified(key []byte) (uint64, error) {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	return lastModified(s.db, s.db, key)
}

// LookupOutcome returns the outcome recorded for transaction txnID on this
// node (ApplyTx.RecordOutcome); false when there is none (never recorded,
// not yet applied here, or collected after the horizon passed it).
func (s *Store) LookupOutcome(txnID uint64) (Outcome, bool, error) {
	s.dbMu.RLock()
	v, err := s.db.Get(outcomeKey(txnID))
	s.dbMu.RUnlock()
	if errors.Is(err, engine.ErrNotFound) {
		return Outcome{}, false, nil
	}
	if err != nil {
		return Outcome{}, false, err
	}
	if len(v) != 9 {
		return Outcome{}, false, corruptf("the outcome record of transaction %d is %d bytes, want 9", txnID, len(v))
	}
	return Outcome{TS: binary.BigEndian.Uint64(v), Code: v[8]}, true, nil
}

// readBarrier is the ReadIndex wait of a linearizable read (skipped only
// by the harness's planted-bug build).
func (s *Store) readBarrier(ctx context.Context) error {
	if plantedStaleReads {
		return nil
	}
	return s.Barrier(ctx)
}

// KV is one scan result: a key, its value and the revision that wrote it.
type KV struct {
	Key, Value []byte
	TS         uint64
}

// Scan returns the keys with the given prefix in order, linearizably, with
// at most maxItems items and about maxBytes of keys and values (the first
// item always fits).
func (s *Store) Scan(ctx context.Context, prefix []byte, maxItems, maxBytes int) ([]KV, error) {
	if len(prefix) > 0 && prefix[0] == SystemPrefix {
		return nil, fmt.Errorf("%w: %v", engine.ErrInvalidArgument, ErrReservedKey)
	}
	if len(prefix) > engine.MaxKeySize {
		return nil, fmt.Errorf("%w: prefix of %d bytes exceeds the %d-byte key limit", engine.ErrInvalidArgument, len(prefix), engine.MaxKeySize)
	}
	s.counters.scan.Add(1)
	if err := s.readBarrier(ctx); err != nil {
		return nil, err
	}
	lower := prefix
	if len(lower) == 0 {
		lower = []byte{SystemPrefix + 1}
	}
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	it, err := s.db.NewIter(&engine.IterOptions{LowerBound: lower, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	var out []KV
	size := 0
	for ok := it.First(); ok; ok = it.Next() {
		val, ts, err := DecodeValue(it.Value())
		if err != nil {
			_ = it.Close()
			return nil, fmt.Errorf("key %q: %w", it.Key(), err)
		}
		n := len(it.Key()) + len(val)
		if len(out) >= maxItems || (len(out) > 0 && size+n > maxBytes) {
			break
		}
		size += n
		out = append(out, KV{Key: append([]byte(nil), it.Key()...), Value: append([]byte(nil), val...), TS: ts})
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	return out, nil
}

// ScanAt is Scan at revision ts (0: the latest), with GetAt's errors for
// revisions below the horizon or above the last applied one.
func (s *Store) ScanAt(ctx context.Context, prefix []byte, ts uint64, maxItems, maxBytes int) ([]KV, error) {
	if ts == 0 {
		return s.Scan(ctx, prefix, maxItems, maxBytes)
	}
	if len(prefix) > 0 && prefix[0] == SystemPrefix {
		return nil, fmt.Errorf("%w: %v", engine.ErrInvalidArgument, ErrReservedKey)
	}
	if len(prefix) > engine.MaxKeySize {
		return nil, fmt.Errorf("%w: prefix of %d bytes exceeds the %d-byte key limit", engine.ErrInvalidArgument, len(prefix), engine.MaxKeySize)
	}
	s.counters.scan.Add(1)
	if err := s.readBarrier(ctx); err != nil {
		return nil, err
	}
	return s.ReadScanAt(prefix, ts, maxItems, maxBytes)
}

// ReadScanAt is ScanAt on this node's applied state, without a ReadIndex
// round (as ReadAt); ts 0 reads at the last applied revision.
func (s *Store) ReadScanAt(prefix []byte, ts uint64, maxItems, maxBytes int) ([]KV, error) {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if ts == 0 {
		ts = s.appliedTS.Load()
	}
	if applied := s.appliedTS.Load(); ts > applied {
		return nil, &FutureRevisionError{Revision: ts, Newest: applied}
	}
	// A snapshot: one state for both iterators, and the filter never
	// drops what it sees (see ReadAt).
	sn := s.db.NewSnapshot()
	defer sn.Close()
	if h := s.horizon.Load(); ts < h {
		return nil, &CompactedError{Revision: ts, Oldest: h}
	}
	out, _, err := scanAt(sn, prefix, nil, ts, maxItems, maxBytes)
	return out, err
}

// ReadScanAtFrom is ReadScanAt from start on (inclusive; nil: from the
// prefix), at revision ts (> 0), and says whether keys under the prefix
// remain after the last one returned (the limits cut the scan).
func (s *Store) ReadScanAtFrom(prefix, start []byte, ts uint64, maxItems, maxBytes int) ([]KV, bool, error) {
	if len(prefix) > 0 && prefix[0] == SystemPrefix {
		return nil, false, fmt.Errorf("%w: %v", engine.ErrInvalidArgument, ErrReservedKey)
	}
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if applied := s.appliedTS.Load(); ts > applied {
		return nil, false, &FutureRevisionError{Revision: ts, Newest: applied}
	}
	sn := s.db.NewSnapshot()
	defer sn.Close()
	if h := s.horizon.Load(); ts < h {
		return nil, false, &CompactedError{Revision: ts, Oldest: h}
	}
	return scanAt(sn, prefix, start, ts, maxItems, maxBytes)
}

// prefixEnd returns the smallest key greater than every key with the
// prefix, or nil when there is none.
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for len(end) > 0 {
		if end[len(end)-1] < 0xff {
			end[len(end)-1]++
			return end
		}
		end = end[:len(end)-1]
	}
	return nil
}

// Counters are request counts for STATS.
type Counters struct{ Put, Get, Delete, Scan uint64 }

// Counters returns the request counters.
func (s *Store) Counters() Counters {
	return Counters{s.counters.put.Load(), s.counters.get.Load(), s.counters.del.Load(), s.counters.scan.Load()}
}
