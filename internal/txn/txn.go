// Package txn is the transaction manager of a leader: the interactive
// transactions of opcodes 9–12 (TXN_BEGIN, TXN_OP, TXN_COMMIT,
// TXN_ROLLBACK) and the one-shot conditional writes of opcode 68
// (KAYA_TXN), as designed in docs/design/mvcc-and-transactions.md §5–§6.
//
// It owns the open transactions (in the leader's memory: their snapshot,
// read set and buffered writes), the ids it hands out (term << 32 |
// counter), their expiry and bounds, and the two raft commands that make
// transactions durable (command.go): TxnCommit, whose Evaluator validates
// a transaction and applies its writes atomically in the raft apply, and
// CondTxn. It answers in wire terms (status and payload): the error texts
// are the protocol's.
//
// It must never acknowledge a commit before its entry is applied, never
// let an open transaction outlive the leadership (term) it began in,
// never propose a write it has not validated (keys, sizes, the system
// prefix), never hold the manager's lock across raft or an engine read,
// and never decide a commit anywhere but in the apply.
//
// # Lock order
//
// Manager.mu guards the open transactions. It is never held while
// proposing, waiting for raft, or reading the engine.
package txn

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/wire"
)

// Defaults of the bounds (the flags --txn-timeout, --max-open-txns,
// --max-txn-bytes).
const (
	DefaultTimeout  = 30 * time.Second
	DefaultMaxOpen  = 10000
	DefaultMaxBytes = 16 << 20
)

// itemOverhead is what one key of a read or write set costs in the
// budget besides its bytes: its share of the TxnCommit encoding (kind,
// length prefixes) and of the manager's bookkeeping, so that a budget of
// tiny keys still bounds the raft entry and the memory.
const itemOverhead = 16

// MaxBytesLimit is the largest --max-txn-bytes: one TxnCommit must fit in
// one raft command (kv.MaxCommandBody), header included.
const MaxBytesLimit = kv.MaxCommandBody - 1<<10

// ErrTooLarge: a transaction or conditional write exceeds --max-txn-bytes.
var ErrTooLarge = errors.New("transaction too large")

// Options configures a Manager.
type Options struct {
	// Store is the node's state machine (with Evaluators() registered).
	Store *kv.Store
	// Leadership reports the node's current raft term and whether it
	// leads in it.
	Leadership func() (term uint64, leader bool)
	// LeaderAddr returns the known leader's client address ("" if none),
	// for NOT_LEADER replies.
	LeaderAddr func() string
	// AdmitWrite, when set, is asked before a write is proposed (the
	// disk-full guard); its error is the reply.
	AdmitWrite func() error
	// Timeout expires a transaction that sees no request for this long.
	// Default DefaultTimeout.
	Timeout time.Duration
	// MaxOpen bounds the open transactions. Default DefaultMaxOpen.
	MaxOpen int
	// MaxBytes bounds one transaction's read and write sets (keys and
	// values, plus itemOverhead per key): what its commit entry carries.
	// Default DefaultMaxBytes; at most MaxBytesLimit.
	MaxBytes int64
	// Isolation of new transactions. Default Serializable.
	Isolation Isolation
	// Now is the clock of expiry (tests). Default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
	// ObserveCommit, when set, is told every TXN_COMMIT's outcome
	// (committed, conflict, lost) and how long it took (metrics).
	ObserveCommit func(outcome string, d time.Duration)
}

// Validate fills in defaults and checks the bounds.
func (o *Options) Validate() error {
	if o.Store == nil || o.Leadership == nil {
		return errors.New("txn: Options need a Store and Leadership")
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxOpen == 0 {
		o.MaxOpen = DefaultMaxOpen
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Isolation == 0 {
		o.Isolation = Serializable
	}
	if o.Timeout < 0 {
		return fmt.Errorf("--txn-timeout %s: want a positive duration (default %s)", o.Timeout, DefaultTimeout)
	}
	if o.MaxOpen < 0 {
		return fmt.Errorf("--max-open-txns %d: want at least 1 (default %d)", o.MaxOpen, DefaultMaxOpen)
	}
	if o.MaxBytes < 1<<10 || o.MaxBytes > MaxBytesLimit {
		return fmt.Errorf("--max-txn-bytes %d: want 1KiB to %d bytes (one raft entry carries a commit; default %d)", o.MaxBytes, MaxBytesLimit, DefaultMaxBytes)
	}
	if o.Isolation != Serializable && o.Isolation != SnapshotIsolation {
		return fmt.Errorf("--txn-isolation: unknown level %d", o.Isolation)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.LeaderAddr == nil {
		o.LeaderAddr = func() string { return "" }
	}
	return nil
}

// state of an open transaction.
type state int

const (
	stateOpen state = iota
	// stateCommitting: its TxnCommit is proposed; requests wait for done.
	stateCommitting
	// stateInDoubt: the wait for its commit ended without an outcome (a
	// timeout): it was proposed and may still apply. A retried
	// TXN_COMMIT asks the log (LookupOutcome after a barrier).
	stateInDoubt
)

// txn is an open transaction.
type txn struct {
	id, snapshot uint64
	// owner is the party that began it (WithOwner): to any other its id
	// is unknown.
	owner     string
	isolation Isolation
	state     state
	lastUsed  time.Time
	reads     map[string]struct{}
	writes    map[string]*write
	order     []string // the keys of writes in first-write order
	bytes     int64
	// refused holds the answer to the first write of it that was refused
	// (a conflict, a bad key, the size bound): such a transaction cannot
	// commit, since its write set is not what its client sent. A client
	// may pipeline its writes with TXN_COMMIT (the Go client does), so the
	// commit must not run on a write set with a hole in it.
	refused        bool
	refusedSt      wire.Status
	refusedMessage string
	// done is closed when a commit in flight ends; status and reply are
	// its answer (the answer to every TXN_COMMIT that waited for it).
	done   chan struct{}
	status wire.Status
	reply  []byte
}

// readOnly records the answer of a read-only commit (decided without
// raft, so without an outcome record) for a retried TXN_COMMIT.
type readOnly struct {
	ts      uint64
	expires time.Time
	owner   string
}

// Manager holds the open transactions of this node while it leads.
type Manager struct {
	opts  Options
	store *kv.Store
	log   *slog.Logger

	mu struct {
		sync.Mutex
		// term is the term the open transactions began in; counter the
		// last id's counter in it.
		term, counter uint64
		txns          map[uint64]*txn
		// writers maps a key to the open transaction that wrote it (the
		// early conflict of TXN_OP).
		writers map[string]uint64
		// readOnly holds the answers of recent read-only commits, at most
		// MaxOpen of them, each for Timeout.
		readOnly map[uint64]readOnly
	}

	counts struct{ committed, conflict, lost, expired atomic.Uint64 }

	stopc chan struct{}
	wg    sync.WaitGroup
}

// New returns a manager; Start runs its expiry loop.
func New(opts Options) (*Manager, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	m := &Manager{opts: opts, store: opts.Store, log: opts.Logger, stopc: make(chan struct{})}
	m.mu.txns = map[uint64]*txn{}
	m.mu.writers = map[string]uint64{}
	m.mu.readOnly = map[uint64]readOnly{}
	return m, nil
}

// Start runs the loop that expires abandoned transactions and drops those
// of a lost leadership.
func (m *Manager) Start() {
	m.wg.Add(1)
	go m.expireLoop()
}

// Close stops the expiry loop.
func (m *Manager) Close() {
	select {
	case <-m.stopc:
	default:
		close(m.stopc)
	}
	m.wg.Wait()
}

// Stats is what STATS reports of transactions.
type Stats struct {
	Open      int     `json:"open"`
	Committed uint64  `json:"committed"`
	Conflict  uint64  `json:"conflict"`
	Lost      uint64  `json:"lost"`
	Expired   uint64  `json:"expired"`
	Isolation string  `json:"isolation"`
	TimeoutS  float64 `json:"timeout_seconds"`
	MaxOpen   int     `json:"max_open"`
	MaxBytes  int64   `json:"max_bytes"`
}

// Stats returns the counters.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	open := len(m.mu.txns)
	m.mu.Unlock()
	return Stats{Open: open, Committed: m.counts.committed.Load(), Conflict: m.counts.conflict.Load(),
		Lost: m.counts.lost.Load(), Expired: m.counts.expired.Load(), Isolation: m.opts.Isolation.String(),
		TimeoutS: m.opts.Timeout.Seconds(), MaxOpen: m.opts.MaxOpen, MaxBytes: m.opts.MaxBytes}
}

// Open returns the number of open transactions.
func (m *Manager) Open() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.mu.txns)
}

// expireLoop sweeps about four times per timeout (at most once a second).
func (m *Manager) expireLoop() {
	defer m.wg.Done()
	every := min(m.opts.Timeout/4, time.Second)
	t := time.NewTicker(max(every, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-m.stopc:
			return
		case <-t.C:
			m.sweep()
		}
	}
}

// sweep drops the transactions of a term this node no longer leads and
// expires the ones idle for the timeout.
func (m *Manager) sweep() {
	term, leader := m.opts.Leadership()
	now := m.opts.Now()
	var doubt []*txn
	m.mu.Lock()
	if !leader || term != m.mu.term {
		m.dropAllLocked()
		m.mu.term, m.mu.counter = term, 0
	}
	for id, t := range m.mu.txns {
		switch {
		case t.state == stateOpen && now.Sub(t.lastUsed) >= m.opts.Timeout:
			m.releaseLocked(t)
			m.counts.expired.Add(1)
			m.log.Info("transaction expired: no request for --txn-timeout", "txn_id", id, "timeout", m.opts.Timeout)
		case t.state == stateInDoubt:
			doubt = append(doubt, t)
		}
	}
	for id, r := range m.mu.readOnly {
		if now.After(r.expires) {
			delete(m.mu.readOnly, id)
		}
	}
	m.mu.Unlock()
	// An in-doubt commit is forgotten once its outcome is applied here
	// (a retry then reads the record); until then, or until leadership
	// moves, a retry answers that it is not known yet.
	for _, t := range doubt {
		if _, found, err := m.store.LookupOutcome(t.id); err == nil && found {
			m.mu.Lock()
			m.releaseLocked(t)
			m.mu.Unlock()
		}
	}
}

// dropAllLocked forgets every open transaction (leadership moved): their
// writes were never proposed. A commit in flight finishes on its own; its
// outcome record answers a retry.
func (m *Manager) dropAllLocked() {
	for _, t := range m.mu.txns {
		if t.state == stateOpen {
			m.counts.lost.Add(1)
		}
	}
	clear(m.mu.txns)
	clear(m.mu.writers)
	clear(m.mu.readOnly)
}

// releaseLocked removes t and its write intents.
func (m *Manager) releaseLocked(t *txn) {
	if m.mu.txns[t.id] == t {
		delete(m.mu.txns, t.id)
	}
	for _, k := range t.order {
		if m.mu.writers[k] == t.id {
			delete(m.mu.writers, k)
		}
	}
}

// leadLocked checks that this node leads and moves the manager to the
// current term (dropping the transactions of an older one). It returns
// the NOT_LEADER reply otherwise.
func (m *Manager) leadLocked() (ok bool, st wire.Status, reply []byte) {
	term, leader := m.opts.Leadership()
	if !leader {
		st, reply = m.notLeader()
		return false, st, reply
	}
	if term != m.mu.term {
		m.dropAllLocked()
		m.mu.term, m.mu.counter = term, 0
	}
	return true, 0, nil
}

func (m *Manager) notLeader() (wire.Status, []byte) {
	return wire.StatusNotLeader, wire.AppendNotLeader(nil, m.opts.LeaderAddr())
}

func errReply(st wire.Status, format string, args ...any) (wire.Status, []byte) {
	return st, wire.AppendError(nil, fmt.Sprintf(format, args...))
}

func conflict() (wire.Status, []byte) {
	return wire.StatusTxnConflict, wire.AppendError(nil, wire.MsgTxnConflict)
}

// unknownLocked answers a request for a transaction this node does not
// hold: lost with an older leadership, or unknown (finished, expired,
// never begun; an id of term 0, which no leader has, is unknown too).
func (m *Manager) unknownLocked(id uint64) (wire.Status, []byte) {
	if t := id >> 32; t > 0 && t < m.mu.term {
		return errReply(wire.StatusInvalidArgument, wire.MsgTxnLost, id, id>>32)
	}
	return errReply(wire.StatusInvalidArgument, wire.MsgTxnUnknown, id)
}

// ownerKey carries the owner of a request's transactions in its context.
type ownerKey struct{}

// WithOwner returns ctx saying whose request it is (the server's
// principal): a transaction belongs to the owner that began it, and
// TXN_OP, TXN_COMMIT and TXN_ROLLBACK by another owner are answered as
// for an unknown transaction (no oracle for another's ids). Without an
// owner, requests share the owner "".
func WithOwner(ctx context.Context, owner string) context.Context {
	return context.WithValue(ctx, ownerKey{}, owner)
}

func ownerOf(ctx context.Context) string {
	o, _ := ctx.Value(ownerKey{}).(string)
	return o
}

// Handle answers one request of opcodes 9–12 or 68 whose auth prefix was
// stripped.
func (m *Manager) Handle(ctx context.Context, op wire.Opcode, p []byte) (wire.Status, []byte) {
	switch op {
	case wire.OpTxnBegin:
		return m.begin(ctx)
	case wire.OpTxnOp:
		return m.txnOp(ownerOf(ctx), p)
	case wire.OpTxnCommit:
		if len(p) < 8 {
			return errReply(wire.StatusInvalidArgument, wire.MsgEOFU64, len(p))
		}
		id, _ := wire.DecodeTxnID(p)
		return m.commit(ctx, id)
	case wire.OpTxnRollback:
		if len(p) < 8 {
			return errReply(wire.StatusInvalidArgument, wire.MsgEOFU64, len(p))
		}
		id, _ := wire.DecodeTxnID(p)
		return m.rollback(ownerOf(ctx), id)
	case wire.OpKayaTxn:
		return m.condTxn(ctx, p)
	}
	return errReply(wire.StatusError, wire.MsgUnknownOpcode, uint8(op))
}

// begin: a ReadIndex barrier, then the snapshot is the last applied
// commit timestamp: every write acknowledged before BEGIN is in it.
func (m *Manager) begin(ctx context.Context) (wire.Status, []byte) {
	m.mu.Lock()
	ok, st, reply := m.leadLocked()
	n := len(m.mu.txns)
	m.mu.Unlock()
	if !ok {
		return st, reply
	}
	if n >= m.opts.MaxOpen {
		return m.tooMany()
	}
	// No ReadIndex round: once this leader has applied its term's first
	// entry, its applied state holds every acknowledged write (docs/design
	// mvcc-and-transactions.md, "BEGIN without a round"). A deposed
	// leader that does not know it yet hands out a stale snapshot, but
	// such a transaction cannot commit: a writing commit must be appended
	// in the transaction's term (checked in the apply) and is validated
	// against everything after the snapshot there; a read-only commit
	// confirms the leadership with a ReadIndex round.
	if err := m.store.LeaderApplied(ctx); err != nil {
		return m.replyErr(err)
	}
	snapshot := m.store.AppliedTS()
	m.mu.Lock()
	defer m.mu.Unlock()
	if ok, st, reply := m.leadLocked(); !ok {
		return st, reply
	}
	if len(m.mu.txns) >= m.opts.MaxOpen {
		return m.tooMany()
	}
	if m.mu.counter == 1<<32-1 {
		return errReply(wire.StatusError, "this leader has begun 2^32-1 transactions in term %d, the most one term can number; retry after the next election", m.mu.term)
	}
	m.mu.counter++
	t := &txn{id: m.mu.term<<32 | m.mu.counter, owner: ownerOf(ctx), snapshot: snapshot, isolation: m.opts.Isolation,
		lastUsed: m.opts.Now(), reads: map[string]struct{}{}, writes: map[string]*write{}}
	m.mu.txns[t.id] = t
	return wire.StatusOK, wire.AppendTxnBeginReply(nil, t.id, snapshot)
}

func (m *Manager) tooMany() (wire.Status, []byte) {
	return errReply(wire.StatusError, "too many open transactions: this leader holds %d, the most --max-open-txns allows; commit or roll back transactions, or retry later (abandoned ones expire after --txn-timeout, %s)", m.opts.MaxOpen, m.opts.Timeout)
}

// lookupLocked returns the open transaction id, touched, or the reply
// for a missing one.
func (m *Manager) lookupLocked(id uint64, owner string) (*txn, wire.Status, []byte) {
	if ok, st, reply := m.leadLocked(); !ok {
		return nil, st, reply
	}
	t, found := m.mu.txns[id]
	if !found || t.owner != owner {
		st, reply := m.unknownLocked(id)
		return nil, st, reply
	}
	t.lastUsed = m.opts.Now()
	return t, 0, nil
}

// checkOpKey applies the key and value rules of TXN_OP, with the
// original's texts where it had them.
func checkOpKey(o *wire.TxnOp) (wire.Status, []byte, bool) {
	if len(o.Key) > wire.MaxKeySize {
		st, r := errReply(wire.StatusInvalidArgument, wire.MsgTxnKeyTooLong, len(o.Key))
		return st, r, false
	}
	if o.Kind == wire.TxnOpPut && len(o.Value) > wire.MaxValueSize {
		st, r := errReply(wire.StatusInvalidArgument, wire.MsgTxnValueTooLong, len(o.Value))
		return st, r, false
	}
	if len(o.Key) > 0 && o.Key[0] == kv.SystemPrefix {
		st, r := errReply(wire.StatusInvalidArgument, "invalid argument: %v", kv.ErrReservedKey)
		return st, r, false
	}
	return 0, nil, true
}

// refuseLocked records st, reply as the refusal of a write of t (the
// first one counts) and returns them.
func (t *txn) refuseLocked(st wire.Status, reply []byte) (wire.Status, []byte) {
	if !t.refused {
		t.refused, t.refusedSt = true, st
		t.refusedMessage, _ = wire.DecodeError(reply)
	}
	return st, reply
}

func (m *Manager) txnOp(owner string, p []byte) (wire.Status, []byte) {
	o, msg := decodeTxnOp(p)
	if msg != "" {
		return errReply(wire.StatusInvalidArgument, "%s", msg)
	}
	m.mu.Lock()
	t, st, reply := m.lookupLocked(o.TxnID, owner)
	if t == nil {
		m.mu.Unlock()
		return st, reply
	}
	if t.state != stateOpen {
		m.mu.Unlock()
		return errReply(wire.StatusInvalidArgument, "invalid argument: transaction %d is committing; it takes no more operations", o.TxnID)
	}
	if st, reply, ok := checkOpKey(&o); !ok {
		if o.Kind != wire.TxnOpGet {
			st, reply = t.refuseLocked(st, reply)
		}
		m.mu.Unlock()
		return st, reply
	}
	k := string(o.Key)
	if o.Kind == wire.TxnOpGet {
		if w, ok := t.writes[k]; ok {
			m.mu.Unlock()
			if w.kind == wire.TxnOpDelete {
				return wire.StatusNotFound, nil
			}
			return wire.StatusOK, wire.AppendValue(nil, w.value)
		}
		if _, ok := t.reads[k]; !ok {
			cost := int64(len(k) + itemOverhead)
			if t.bytes+cost > m.opts.MaxBytes {
				m.mu.Unlock()
				return m.tooLarge(t)
			}
			t.bytes += cost
			t.reads[k] = struct{}{}
		}
		snapshot := t.snapshot
		m.mu.Unlock()
		if snapshot == 0 {
			return wire.StatusNotFound, nil // nothing was ever written
		}
		v, err := m.store.ReadAt(o.Key, snapshot)
		if err != nil {
			return m.replyErr(err)
		}
		return wire.StatusOK, wire.AppendValue(nil, v.Value)
	}
	// A write: the original's early conflict, when another open
	// transaction wrote the key (the first writer keeps it)...
	if other, ok := m.mu.writers[k]; ok && other != t.id {
		defer m.mu.Unlock()
		return t.refuseLocked(conflict())
	}
	snapshot := t.snapshot
	m.mu.Unlock()
	// ... or the key's current version is newer than the snapshot (the
	// commit would conflict anyway; validation in the apply decides). A
	// point lookup of the current version only: a key that is missing now
	// may have been deleted after the snapshot, but finding that takes an
	// iterator over its history (kv.LastModified), which cost more than
	// the rest of the request, for every write of a new key; the apply's
	// validation refuses such a commit anyway.
	var lm uint64
	cur, lmErr := m.store.ReadAt(o.Key, 0)
	if lmErr == nil {
		lm = cur.TS
	} else if errors.Is(lmErr, engine.ErrNotFound) {
		lmErr = nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mu.txns[t.id] != t || t.state != stateOpen {
		st, reply := m.unknownLocked(t.id)
		return st, reply
	}
	if lmErr != nil {
		return t.refuseLocked(m.replyErr(lmErr))
	}
	if lm > snapshot {
		return t.refuseLocked(conflict())
	}
	if other, ok := m.mu.writers[k]; ok && other != t.id {
		return t.refuseLocked(conflict())
	}
	cost := int64(len(o.Key) + len(o.Value) + itemOverhead)
	old, had := t.writes[k]
	if had {
		cost -= int64(len(old.key) + len(old.value) + itemOverhead)
	}
	if t.bytes+cost > m.opts.MaxBytes {
		return t.refuseLocked(m.tooLarge(t))
	}
	t.bytes += cost
	w := &write{kind: o.Kind, key: o.Key, value: o.Value}
	if o.Kind == wire.TxnOpDelete {
		w.value = nil
	}
	if !had {
		t.order = append(t.order, k)
	}
	t.writes[k] = w
	m.mu.writers[k] = t.id
	return wire.StatusOK, nil
}

// decodeTxnOp decodes a TXN_OP payload as the original does: fields in
// order, trailing bytes ignored, and its error texts (reference §1, §2.1).
func decodeTxnOp(p []byte) (wire.TxnOp, string) {
	var o wire.TxnOp
	if len(p) < 8 {
		return o, fmt.Sprintf(wire.MsgEOFU64, len(p))
	}
	o.TxnID, p = binary.LittleEndian.Uint64(p), p[8:]
	if len(p) < 1 {
		return o, wire.MsgEOFU8
	}
	o.Kind, p = wire.TxnOpKind(p[0]), p[1:]
	bytes32 := func() ([]byte, string) {
		if len(p) < 4 {
			return nil, fmt.Sprintf(wire.MsgEOFU32, len(p))
		}
		n := binary.LittleEndian.Uint32(p)
		p = p[4:]
		if uint64(n) > uint64(len(p)) {
			return nil, fmt.Sprintf(wire.MsgTruncated, n, len(p))
		}
		b := p[:n:n]
		p = p[n:]
		return b, ""
	}
	var msg string
	if o.Key, msg = bytes32(); msg != "" {
		return o, msg
	}
	switch o.Kind {
	case wire.TxnOpGet, wire.TxnOpDelete:
	case wire.TxnOpPut:
		if o.Value, msg = bytes32(); msg != "" {
			return o, msg
		}
	default:
		return o, fmt.Sprintf(wire.MsgTxnOpUnknownKind, uint8(o.Kind))
	}
	return o, ""
}

func (m *Manager) tooLarge(t *txn) (wire.Status, []byte) {
	return errReply(wire.StatusInvalidArgument, "invalid argument: transaction %d would hold more than %d bytes of keys and values (--max-txn-bytes; each key also counts %d bytes): commit it and continue in a new one, or raise the limit",
		t.id, m.opts.MaxBytes, itemOverhead)
}

func (m *Manager) rollback(owner string, id uint64) (wire.Status, []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, st, reply := m.lookupLocked(id, owner)
	if t == nil {
		return st, reply
	}
	if t.state != stateOpen {
		return errReply(wire.StatusInvalidArgument, "invalid argument: transaction %d is committing and cannot be rolled back; its TXN_COMMIT answers the outcome", id)
	}
	m.releaseLocked(t)
	return wire.StatusOK, nil
}

// observe counts a commit's outcome.
func (m *Manager) observe(outcome string, start time.Time) {
	switch outcome {
	case "committed":
		m.counts.committed.Add(1)
	case "conflict":
		m.counts.conflict.Add(1)
	case "lost":
		m.counts.lost.Add(1)
	}
	if m.opts.ObserveCommit != nil {
		m.opts.ObserveCommit(outcome, time.Since(start))
	}
}

func (m *Manager) commit(ctx context.Context, id uint64) (wire.Status, []byte) {
	start := time.Now()
	owner := ownerOf(ctx)
	m.mu.Lock()
	if r, ok := m.mu.readOnly[id]; ok && r.owner == owner {
		m.mu.Unlock()
		return wire.StatusOK, wire.AppendTxnCommitReply(nil, r.ts)
	}
	if ok, st, reply := m.leadLocked(); !ok {
		m.mu.Unlock()
		return st, reply
	}
	t, found := m.mu.txns[id]
	if found && t.owner != owner {
		defer m.mu.Unlock()
		return m.unknownLocked(id)
	}
	if !found || t.state == stateInDoubt {
		m.mu.Unlock()
		return m.resolve(ctx, id, t)
	}
	if t.state == stateCommitting {
		done := t.done
		m.mu.Unlock()
		select {
		case <-done:
			return t.status, t.reply
		case <-ctx.Done():
			return m.inDoubtReply(id)
		}
	}
	t.lastUsed = m.opts.Now()
	if t.refused {
		// A write of it was refused: committing the others would apply a
		// part of what the client meant as one unit. It is over.
		m.releaseLocked(t)
		m.mu.Unlock()
		if t.refusedSt == wire.StatusTxnConflict {
			m.observe("conflict", start)
			return conflict()
		}
		return errReply(wire.StatusInvalidArgument, "invalid argument: transaction %d was not committed: one of its writes was refused (%s); it is over, start it again", id, t.refusedMessage)
	}
	if len(t.writes) == 0 {
		// Read-only: its reads were one consistent snapshot, so it is
		// serialized at its snapshot without raft, once a ReadIndex round
		// confirms that this node still leads in the transaction's term
		// (so it led throughout, and its snapshot missed no write
		// acknowledged before BEGIN: BEGIN took no round).
		m.mu.Unlock()
		err := m.store.Barrier(ctx)
		m.mu.Lock()
		if err != nil {
			m.mu.Unlock()
			return m.replyErr(err)
		}
		if ok, st, reply := m.leadLocked(); !ok {
			m.mu.Unlock()
			return st, reply
		}
		if r, ok := m.mu.readOnly[id]; ok {
			// Committed by a concurrent TXN_COMMIT meanwhile.
			m.mu.Unlock()
			return wire.StatusOK, wire.AppendTxnCommitReply(nil, r.ts)
		}
		if cur, found := m.mu.txns[id]; !found || cur != t || t.state != stateOpen {
			// Lost with the term, or ended by a concurrent request.
			st, reply := m.unknownLocked(id)
			m.mu.Unlock()
			return st, reply
		}
		if len(t.writes) != 0 {
			m.mu.Unlock()
			return errReply(wire.StatusInvalidArgument, "invalid argument: transaction %d received a write while its read-only commit was confirming the leadership; send TXN_COMMIT again", id)
		}
		m.releaseLocked(t)
		if len(m.mu.readOnly) < m.opts.MaxOpen {
			m.mu.readOnly[id] = readOnly{ts: t.snapshot, expires: m.opts.Now().Add(m.opts.Timeout), owner: t.owner}
		}
		m.mu.Unlock()
		m.observe("committed", start)
		return wire.StatusOK, wire.AppendTxnCommitReply(nil, t.snapshot)
	}
	if m.opts.AdmitWrite != nil {
		if err := m.opts.AdmitWrite(); err != nil {
			// Refused before it was proposed: the transaction stays
			// open, so that the commit can be retried once there is room.
			m.mu.Unlock()
			return errReply(wire.StatusError, "%v", err)
		}
	}
	c := &commitCmd{txnID: id, snapshot: t.snapshot, isolation: t.isolation,
		reads: make([][]byte, 0, len(t.reads)), writes: make([]write, 0, len(t.order))}
	for k := range t.reads {
		if _, w := t.writes[k]; !w {
			c.reads = append(c.reads, []byte(k))
		}
	}
	for _, k := range t.order {
		c.writes = append(c.writes, *t.writes[k])
	}
	t.state, t.done = stateCommitting, make(chan struct{})
	m.mu.Unlock()

	res, err := m.store.Propose(ctx, OpTxnCommit, encodeCommit(c))
	var outcome string
	switch {
	case err == nil && len(res.Data) == 1:
		switch res.Data[0] {
		case OutcomeCommitted:
			outcome, t.status, t.reply = "committed", wire.StatusOK, wire.AppendTxnCommitReply(nil, res.TS)
		case OutcomeConflict:
			outcome = "conflict"
			t.status, t.reply = conflict()
		case OutcomeLost:
			outcome = "lost"
			t.status, t.reply = errReply(wire.StatusInvalidArgument, wire.MsgTxnLost, id, id>>32)
		default:
			outcome = "conflict"
			t.status, t.reply = compactedConflict(c.snapshot)
		}
	case errors.Is(err, kv.ErrNotLeader):
		// Dropped before it reached the log: it never commits.
		outcome = "lost"
		t.status, t.reply = errReply(wire.StatusInvalidArgument, wire.MsgTxnLost, id, id>>32)
	case errors.Is(err, kv.ErrRejectedEntry):
		outcome = "conflict"
		t.status, t.reply = errReply(wire.StatusError, "transaction %d was not committed: %v", id, err)
	default:
		// Proposed, and the wait ended without an outcome: it may still
		// apply. A retry asks the log.
		m.log.Warn("the outcome of a transaction commit is not known yet", "txn_id", id, "err", err)
		m.mu.Lock()
		t.state = stateInDoubt
		for _, k := range t.order {
			// Its intents go: they only make conflicts early, and the
			// apply validates whatever commits after it.
			if m.mu.writers[k] == t.id {
				delete(m.mu.writers, k)
			}
		}
		t.status, t.reply = m.inDoubtReply(id)
		close(t.done)
		m.mu.Unlock()
		return t.status, t.reply
	}
	m.mu.Lock()
	m.releaseLocked(t)
	close(t.done)
	m.mu.Unlock()
	m.observe(outcome, start)
	return t.status, t.reply
}

func compactedConflict(snapshot uint64) (wire.Status, []byte) {
	return errReply(wire.StatusTxnConflict, "%s: the transaction's snapshot (revision %d) is older than the retained history, so its reads cannot be validated; start it again", wire.MsgTxnConflict, snapshot)
}

func (m *Manager) inDoubtReply(id uint64) (wire.Status, []byte) {
	return errReply(wire.StatusError, "the outcome of committing transaction %d is not known yet (its commit was proposed and has not been applied in time); send TXN_COMMIT for it again to learn it", id)
}

// resolve answers a TXN_COMMIT of a transaction this node does not hold
// open: its outcome record, once everything committed is applied here
// (a barrier), or lost or unknown. t is the in-doubt transaction, if any.
func (m *Manager) resolve(ctx context.Context, id uint64, t *txn) (wire.Status, []byte) {
	if err := m.store.Barrier(ctx); err != nil {
		return m.replyErr(err)
	}
	out, found, err := m.store.LookupOutcome(id)
	if err != nil {
		return m.replyErr(err)
	}
	if found {
		if t != nil {
			m.mu.Lock()
			m.releaseLocked(t)
			m.mu.Unlock()
		}
		switch out.Code {
		case OutcomeCommitted:
			return wire.StatusOK, wire.AppendTxnCommitReply(nil, out.TS)
		case OutcomeCompacted:
			return compactedConflict(0)
		case OutcomeLost:
			return errReply(wire.StatusInvalidArgument, wire.MsgTxnLost, id, id>>32)
		}
		return conflict()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if t != nil && m.mu.txns[id] == t {
		// Proposed in this term and not applied yet (or never appended):
		// still unknown.
		return m.inDoubtReply(id)
	}
	// After the barrier, a commit of an earlier term's transaction that is
	// not applied here never commits: if it is appended later (a deposed
	// leader's queued proposal, forwarded by raft), it is appended in a
	// later term than its transaction's, and the apply records it lost.
	return m.unknownLocked(id)
}

// condTxn validates a KAYA_TXN and proposes it: one raft entry, evaluated
// in the apply against the latest state.
func (m *Manager) condTxn(ctx context.Context, p []byte) (wire.Status, []byte) {
	wait, st, reply := m.StartCondTxn(ctx, p)
	if wait == nil {
		return st, reply
	}
	return wait(ctx)
}

// StartCondTxn is a KAYA_TXN in two steps, like kv.Store.StartPut: it
// validates and proposes the request, and the returned wait gives its
// reply once applied. When the reply is known without proposing (a
// refusal), wait is nil and st, reply are it. A server proposes one
// connection's KAYA_TXNs in the order they arrived, as it does puts (the
// apply evaluates each after everything before it in the log), and waits
// for them concurrently: waiting for one before proposing the next would
// let a connection that many clients share commit one at a time.
func (m *Manager) StartCondTxn(ctx context.Context, p []byte) (wait func(context.Context) (wire.Status, []byte), st wire.Status, reply []byte) {
	if st, reply, ok := m.checkCondTxn(p); !ok {
		return nil, st, reply
	}
	w, err := m.store.StartPropose(ctx, OpCondTxn, p)
	if err != nil {
		st, reply = m.replyErr(err)
		return nil, st, reply
	}
	return func(ctx context.Context) (wire.Status, []byte) {
		res, err := w(ctx)
		if err != nil {
			return m.replyErr(err)
		}
		return wire.StatusOK, res.Data
	}, 0, nil
}

// StartCondTxnFunc is StartCondTxn reporting the reply to done (under the
// rules of kv.Store.StartPutFunc: called once, on the goroutine that
// settles the entry, and must not block) instead of through a wait
// function. It returns false, with the reply, when the request was refused
// without being proposed; done is then not called.
func (m *Manager) StartCondTxnFunc(ctx context.Context, p []byte, done func(wire.Status, []byte)) (st wire.Status, reply []byte, started bool) {
	if st, reply, ok := m.checkCondTxn(p); !ok {
		return st, reply, false
	}
	err := m.store.StartProposeFunc(ctx, OpCondTxn, p, func(res kv.Result, err error) {
		if err != nil {
			done(m.replyErr(err))
			return
		}
		done(wire.StatusOK, res.Data)
	})
	if err != nil {
		st, reply = m.replyErr(err)
		return st, reply, false
	}
	return 0, nil, true
}

// checkCondTxn decodes and checks a KAYA_TXN before it is proposed; it
// returns false with the reply when it is refused.
func (m *Manager) checkCondTxn(p []byte) (wire.Status, []byte, bool) {
	t, err := wire.DecodeCondTxn(p)
	if err != nil {
		st, reply := errReply(wire.StatusInvalidArgument, "%v", err)
		return st, reply, false
	}
	if err := checkCond(t, m.opts.MaxBytes); err != nil {
		st, reply := m.replyErr(err)
		return st, reply, false
	}
	if _, leader := m.opts.Leadership(); !leader {
		st, reply := m.notLeader()
		return st, reply, false
	}
	if t.Writes() && m.opts.AdmitWrite != nil {
		if err := m.opts.AdmitWrite(); err != nil {
			st, reply := errReply(wire.StatusError, "%v", err)
			return st, reply, false
		}
	}
	return 0, nil, true
}

// replyErr maps a state-machine error to a reply.
func (m *Manager) replyErr(err error) (wire.Status, []byte) {
	var ce *kv.CompactedError
	var fe *kv.FutureRevisionError
	switch {
	case errors.As(err, &ce):
		return wire.StatusCompacted, wire.AppendCompacted(nil, ce.Revision, ce.Oldest)
	case errors.As(err, &fe):
		return errReply(wire.StatusInvalidArgument, wire.MsgFutureRevision, fe.Revision, fe.Newest)
	case errors.Is(err, engine.ErrNotFound):
		return wire.StatusNotFound, nil
	case errors.Is(err, kv.ErrNotLeader):
		return m.notLeader()
	case errors.Is(err, engine.ErrInvalidArgument):
		return errReply(wire.StatusInvalidArgument, "%s", trimInvalid(err.Error()))
	}
	return errReply(wire.StatusError, "%v", err)
}

func trimInvalid(s string) string {
	const p = "kayadb: invalid argument: "
	if len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}
