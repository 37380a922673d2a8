// Package kv is the replicated state machine: it turns client writes into
// raft proposals, applies committed entries to the storage engine, and
// serves linearizable reads with ReadIndex.
//
// It owns the command encoding inside raft entries and the system keys it
// keeps in the engine (prefix 0x00). It must never acknowledge a write
// before it is committed and applied, never serve a read without a fresh
// ReadIndex round confirming leadership, and never re-apply an entry at or
// below the applied index it recorded.
//
// # Entry format
//
//	version u8 (=1) | uvarint n | n × command
//	command: op u8 (1 put, 2 delete) | id u64 LE | uvarint keyLen | key | [uvarint valueLen | value]
//
// id is the proposing node's request id (node id in the top 16 bits); it
// lets the proposer find its waiter when the entry is applied.
//
// A committed entry that does not follow this format, or holds a command a
// proposer would have refused (see decodeCommands), is applied as a no-op
// on every replica (Apply): never partly, and never a reason to stop.
//
// # System keys
//
//	0x00 "raft/applied"     appliedIndex u64 LE | appliedTerm u64 LE
//	0x00 "raft/confstate"   raftpb.ConfState proto, as of the applied index
//	0x00 "cluster/roster"   the membership roster (JSON, owned by the server)
//
// They are written in the same engine batch as the entries' effects, so
// after a crash they agree, and an engine checkpoint (a raft snapshot)
// carries all of them.
package kv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
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
	opPut    = 1
	opDelete = 2
)

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

	mu      sync.Mutex
	waiters map[uint64]chan error
	// appliedWaiters are released when applied reaches their index.
	appliedWaiters []appliedWaiter

	readMu   sync.Mutex
	pending  *readRound
	readWake chan struct{}
	readSeq  atomic.Uint64
	readSalt [4]byte

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
}

// Open creates a Store over db and reads the applied index it recorded.
func Open(opts Options) (*Store, error) {
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		opts: opts, db: opts.DB, log: opts.Logger,
		waiters:  map[uint64]chan error{},
		readWake: make(chan struct{}, 1),
		stopc:    make(chan struct{}),
	}
	_, _ = rand.Read(s.readSalt[:])
	index, term, err := ReadApplied(opts.DB)
	if err != nil {
		return nil, err
	}
	s.applied.Store(index)
	s.term.Store(term)
	s.nextID.Store(opts.NodeID << 48)
	return s, nil
}

// ReadApplied returns the applied index and term recorded in db (zeros for
// a new database).
func ReadApplied(db Getter) (index, term uint64, err error) {
	v, err := db.Get(appliedKey)
	switch {
	case err == nil:
		if len(v) != 16 {
			return 0, 0, fmt.Errorf("kv: applied-index record is %d bytes, want 16: %w", len(v), engine.ErrCorruption)
		}
		return binary.LittleEndian.Uint64(v), binary.LittleEndian.Uint64(v[8:]), nil
	case errors.Is(err, engine.ErrNotFound):
		return 0, 0, nil
	}
	return 0, 0, fmt.Errorf("kv: reading the applied index: %w", err)
}

// State is what an engine holds besides user data: the raft position and
// the configuration as of that position.
type State struct {
	Index, Term uint64
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
	if st.Index, st.Term, err = ReadApplied(db); err != nil {
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
	s.dbMu.RLock()
	err := s.db.Checkpoint(dest)
	opts := s.db.Options()
	s.dbMu.RUnlock()
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
// and returns the new one. It is called from the raft loop, so no Apply
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
	s.dbMu.Unlock()
	index, term, err := ReadApplied(db)
	if err != nil {
		return err
	}
	s.applied.Store(index)
	s.term.Store(term)
	s.releaseApplied(index)
	return nil
}

// AppliedIndex returns the last applied raft index.
func (s *Store) AppliedIndex() uint64 { return s.applied.Load() }

// Start attaches the raft node and starts the read loop.
func (s *Store) Start(n *raftnode.Node) {
	s.node = n
	s.wg.Add(1)
	go s.readLoop()
}

// Stop ends the read loop and fails every waiter.
func (s *Store) Stop() {
	select {
	case <-s.stopc:
	default:
		close(s.stopc)
	}
	s.wg.Wait()
	s.failWaiters(ErrStopped)
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
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if len(value) > engine.MaxValueSize {
		return nil, fmt.Errorf("%w: value of %d bytes exceeds the %d-byte limit", engine.ErrInvalidArgument, len(value), engine.MaxValueSize)
	}
	s.counters.put.Add(1)
	return s.start(ctx, opPut, key, value)
}

// StartDelete is StartPut for a deletion.
func (s *Store) StartDelete(ctx context.Context, key []byte) (func(context.Context) error, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	s.counters.del.Add(1)
	return s.start(ctx, opDelete, key, nil)
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

func (s *Store) start(ctx context.Context, op byte, key, value []byte) (func(context.Context) error, error) {
	if !s.node.IsLeader() {
		return nil, ErrNotLeader
	}
	id := s.nextID.Add(1)
	data := make([]byte, 0, 1+1+1+8+2+len(key)+4+len(value))
	data = append(data, 1, 1, op)
	data = binary.LittleEndian.AppendUint64(data, id)
	data = binary.AppendUvarint(data, uint64(len(key)))
	data = append(data, key...)
	if op == opPut {
		data = binary.AppendUvarint(data, uint64(len(value)))
		data = append(data, value...)
	}
	ch := make(chan error, 1)
	s.mu.Lock()
	s.waiters[id] = ch
	s.mu.Unlock()
	unregister := func() {
		s.mu.Lock()
		delete(s.waiters, id)
		s.mu.Unlock()
	}
	qctx, cancel := s.bounded(ctx)
	errc, err := s.node.ProposeAsync(qctx, data)
	cancel()
	if err != nil {
		unregister()
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			// Never queued: the write did not happen.
			return nil, ErrTimeout
		}
		return nil, err
	}
	return func(ctx context.Context) error {
		defer unregister()
		if plantedEarlyAck {
			return nil
		}
		ctx, cancel := s.bounded(ctx)
		defer cancel()
		select {
		case err := <-errc:
			if errors.Is(err, raftnode.ErrDropped) {
				// Not appended: safe for the client to retry elsewhere.
				return ErrNotLeader
			}
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return ErrTimeout
		case <-s.stopc:
			return ErrStopped
		}
		select {
		case err := <-ch:
			return err
		case <-ctx.Done():
			return ErrTimeout
		case <-s.stopc:
			return ErrStopped
		}
	}, nil
}

// Apply implements raftnode.StateMachine: one engine batch for the run of
// entries, including the new applied index. The batch is not synced: the
// raft log is the durable copy, and entries after the recorded applied index
// are applied again after a crash. It applies the whole run or, on an
// error, nothing (the raft node may retry it after a full disk).
//
// An entry that does not decode, or holds a command that is not valid
// (an unknown operation, a key or value over the limits, a system key), is
// applied as a no-op: it is checked whole before any of its commands is
// added, so every replica, deciding on the same bytes, applies exactly the
// same thing; the applied index moves past it, RejectedEntries counts it,
// the log names it, and the proposers whose ids it carries get
// ErrRejectedEntry. Commands are validated before they are proposed, so a
// correct node never proposes such an entry; this keeps one forged or
// corrupted entry from stopping every replica at every restart.
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
		size += len(e.GetData())
	}
	b.Grow(size) // the commands' framing is about the batch records'
	var done, rejected []uint64
	var rejects int
	for _, e := range ents {
		if e.GetIndex() <= s.applied.Load() || len(e.GetData()) == 0 {
			continue
		}
		cmds, ids, err := decodeCommands(e.GetData())
		if err != nil {
			rejects++
			rejected = append(rejected, ids...)
			s.log.Error("a committed raft entry is invalid; it is applied as a no-op on every node",
				"index", e.GetIndex(), "entry_term", e.GetTerm(), "bytes", len(e.GetData()), "err", err)
			continue
		}
		for _, c := range cmds {
			if c.op == opPut {
				err = b.Set(c.key, c.value)
			} else {
				err = b.Delete(c.key)
			}
			if err != nil {
				return fmt.Errorf("entry %d: %w", e.GetIndex(), err)
			}
		}
		done = append(done, ids...)
	}
	if err := s.recordApplied(b, last.GetIndex(), last.GetTerm()); err != nil {
		return err
	}
	s.rejected.Add(uint64(rejects))
	s.complete(done, nil)
	s.complete(rejected, ErrRejectedEntry)
	return nil
}

// RejectedEntries returns how many committed entries this node applied as
// no-ops because they were invalid.
func (s *Store) RejectedEntries() uint64 { return s.rejected.Load() }

func (s *Store) recordApplied(b *engine.Batch, index, term uint64) error {
	var v [16]byte
	binary.LittleEndian.PutUint64(v[:], index)
	binary.LittleEndian.PutUint64(v[8:], term)
	if err := b.Set(appliedKey, v[:]); err != nil {
		return err
	}
	if err := b.Commit(engine.NoSync); err != nil {
		return fmt.Errorf("kv: applying up to %d: %w", index, err)
	}
	s.applied.Store(index)
	s.term.Store(term)
	s.releaseApplied(index)
	return nil
}

// command is one decoded command of an entry.
type command struct {
	op         byte
	key, value []byte
}

// minCommandSize is the smallest encoded command (op, id, empty key): it
// bounds the count an entry may announce.
const minCommandSize = 1 + 8 + 1

// decodeCommands decodes and validates an entry's commands. On an error it
// returns the ids of the commands it could read before the bad one, so
// that their proposers learn the outcome.
func decodeCommands(data []byte) ([]command, []uint64, error) {
	if len(data) == 0 {
		return nil, nil, errors.New("empty command")
	}
	if data[0] != 1 {
		return nil, nil, fmt.Errorf("unknown command format version %d", data[0])
	}
	p := data[1:]
	n, w := binary.Uvarint(p)
	if w <= 0 {
		return nil, nil, errors.New("bad command count")
	}
	p = p[w:]
	if n == 0 || n > uint64(len(p)/minCommandSize) {
		return nil, nil, fmt.Errorf("entry announces %d commands in %d bytes", n, len(p))
	}
	cmds := make([]command, 0, n)
	ids := make([]uint64, 0, n)
	for i := uint64(0); i < n; i++ {
		if len(p) < 9 {
			return nil, ids, fmt.Errorf("command %d: truncated", i)
		}
		c := command{op: p[0]}
		ids = append(ids, binary.LittleEndian.Uint64(p[1:9]))
		p = p[9:]
		key, rest, ok := uvarintBytes(p)
		if !ok {
			return nil, ids, fmt.Errorf("command %d: truncated key", i)
		}
		c.key, p = key, rest
		if err := ValidateKey(key); err != nil {
			return nil, ids, fmt.Errorf("command %d: %w", i, err)
		}
		switch c.op {
		case opPut:
			value, rest, ok := uvarintBytes(p)
			if !ok {
				return nil, ids, fmt.Errorf("command %d: truncated value", i)
			}
			c.value, p = value, rest
			if len(value) > engine.MaxValueSize {
				return nil, ids, fmt.Errorf("command %d: value of %d bytes exceeds the %d-byte limit", i, len(value), engine.MaxValueSize)
			}
		case opDelete:
		default:
			return nil, ids, fmt.Errorf("command %d: unknown operation %d", i, c.op)
		}
		cmds = append(cmds, c)
	}
	if len(p) != 0 {
		return nil, ids, fmt.Errorf("%d bytes after the last command", len(p))
	}
	return cmds, ids, nil
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
	return s.recordApplied(b, e.GetIndex(), e.GetTerm())
}

// LeadershipChanged implements raftnode.StateMachine: when this node stops
// leading, every pending write learns that its outcome is unknown.
func (s *Store) LeadershipChanged(leader uint64, isLeader bool) {
	if !isLeader {
		s.failWaiters(ErrLeadershipLost)
	}
}

func (s *Store) complete(ids []uint64, err error) {
	if len(ids) == 0 {
		return
	}
	s.mu.Lock()
	for _, id := range ids {
		if ch, ok := s.waiters[id]; ok {
			ch <- err
			delete(s.waiters, id)
		}
	}
	s.mu.Unlock()
}

func (s *Store) failWaiters(err error) {
	s.mu.Lock()
	for id, ch := range s.waiters {
		ch <- err
		delete(s.waiters, id)
	}
	s.mu.Unlock()
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

// Barrier returns once this node has applied everything committed before
// the call, confirmed by a ReadIndex round (leadership checked with a
// quorum of heartbeats). Concurrent callers share rounds.
func (s *Store) Barrier(ctx context.Context) error {
	if !s.node.IsLeader() {
		return ErrNotLeader
	}
	s.readMu.Lock()
	r := s.pending
	if r == nil {
		r = &readRound{done: make(chan struct{})}
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
		return r.err
	case <-ctx.Done():
		return ErrTimeout
	case <-s.stopc:
		return ErrStopped
	}
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
		r := s.pending
		s.pending = nil
		s.readMu.Unlock()
		if r == nil {
			continue
		}
		r.err = s.readIndex()
		close(r.done)
	}
}

// readIndex runs one ReadIndex exchange, retrying with a fresh request id
// (never reusing one: etcd#20418) until it gets an answer, then waits for
// the applied index to reach it.
func (s *Store) readIndex() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.RequestTimeout)
	defer cancel()
	for {
		if !s.node.IsLeader() {
			return ErrNotLeader
		}
		var id [12]byte
		copy(id[:4], s.readSalt[:])
		binary.LittleEndian.PutUint64(id[4:], s.readSeq.Add(1))
		s.node.ReadIndex(id[:])
		retry := time.NewTimer(500 * time.Millisecond)
	wait:
		for {
			select {
			case rs := <-s.node.ReadStates():
				if !bytes.Equal(rs.RequestCtx, id[:]) {
					continue // an answer to an earlier, abandoned attempt
				}
				retry.Stop()
				return s.waitApplied(ctx, rs.Index)
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
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	return s.db.Get(key)
}

// readBarrier is the ReadIndex wait of a linearizable read (skipped only
// by the harness's planted-bug build).
func (s *Store) readBarrier(ctx context.Context) error {
	if plantedStaleReads {
		return nil
	}
	return s.Barrier(ctx)
}

// KV is one scan result.
type KV struct{ Key, Value []byte }

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
		n := len(it.Key()) + len(it.Value())
		if len(out) >= maxItems || (len(out) > 0 && size+n > maxBytes) {
			break
		}
		size += n
		out = append(out, KV{Key: append([]byte(nil), it.Key()...), Value: append([]byte(nil), it.Value()...)})
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	return out, nil
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
