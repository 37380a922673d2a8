package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/kayadb/kayadb/internal/wire"
)

// Interactive transactions (opcodes 9–12)
//
// A transaction lives in the memory of the leader that answered its
// TXN_BEGIN, so every later request of it goes to that node and to no
// other: a transaction is never redirected. When that node stops leading
// (it answers NOT_LEADER, or a request finds the transaction gone with
// leadership), or the connection to it fails before COMMIT is sent, the
// transaction is lost and was not committed: *TxnLostError, which RunTxn
// retries with a new transaction on whichever node leads then.
//
// COMMIT is the one request whose outcome can be unknown: sent, and then
// the connection broke, the deadline passed, or the server answered
// NOT_LEADER or ERROR. A server decides a commit once and answers a
// repeated TXN_COMMIT of the same id with that first outcome, on any node
// that leads later, so the client asks again, by id, on the leader, until
// it learns the outcome or the deadline passes (then ErrAmbiguous, which
// RunTxn does not retry).

// Bounds of RunTxn's back-off between attempts: a conflict clears as soon
// as the winner commits (one raft round, milliseconds), so the first
// retries come soon; "full jitter" (a random pause up to the bound) spreads
// contenders apart, which is what ends a conflict storm.
const (
	txnBackoffBase = 5 * time.Millisecond
	txnBackoffCap  = 500 * time.Millisecond
	// txnResolveAttempts bounds how often Commit asks again for the
	// outcome of a commit whose reply was lost (each ask retries
	// connection failures itself, within RequestTimeout).
	txnResolveAttempts = 5
	// txnRollbackTimeout bounds the rollback RunTxn sends after a failed
	// attempt: it only frees the server early (the server expires
	// abandoned transactions anyway), so it must not hold up the retry.
	txnRollbackTimeout = time.Second
)

// txnState is where a Txn is in its life.
type txnState int

const (
	txnOpen       txnState = iota
	txnCommitted           // Commit succeeded
	txnRolledBack          // Rollback succeeded
	txnReleased            // the server ended it: conflict at commit, lost, unknown
	txnBroken              // unusable (lost leadership or connection); Rollback may still free it
)

// Txn is an interactive transaction: reads see a snapshot taken at Begin
// (and the transaction's own writes), writes are buffered on the server and
// applied atomically at Commit, at the commit revision Commit returns. By
// default the server makes transactions serializable: Commit fails with
// ErrTxnConflict when anything the transaction read or wrote changed since
// its snapshot.
//
// A Txn is bound to the node it began on (see the package's comment above
// Txn). Its methods may be called from several goroutines, but a
// transaction is one unit of work: the order of concurrent operations on
// the server is not defined. End every Txn with Commit or Rollback;
// Rollback is safe to call after any error and after Commit. RunTxn does
// all of this and retries conflicts.
type Txn struct {
	c        *Client
	addr     string // the node the transaction began on
	id       uint64
	snapshot uint64

	mu struct {
		sync.Mutex
		state txnState
		rev   uint64 // commit revision, when committed
		err   error  // why it broke or was released
		wrote bool   // a put or delete may have reached the server
		// pending holds the writes not sent yet (Put and Delete buffer
		// them; the next Get, GetMany or Commit sends them pipelined
		// ahead of itself); pendingBytes is their size.
		pending      []pendingWrite
		pendingBytes int
	}
}

// pendingWrite is a buffered TXN_OP put or delete.
type pendingWrite struct {
	kind       wire.TxnOpKind
	key, value []byte
}

// Bounds of a transaction's buffered writes: past either, Put sends them
// (and waits for their replies) before it returns. They bound the client's
// memory and one pipeline's length, not the transaction (the server's
// --max-txn-bytes does that); 64 writes or 1 MiB already make the round
// trip a small share of their cost.
const (
	maxPendingWrites = 64
	maxPendingBytes  = 1 << 20
)

// ID returns the transaction's id (unique in the cluster).
func (t *Txn) ID() uint64 { return t.id }

// SnapshotRevision returns the revision the transaction reads at.
func (t *Txn) SnapshotRevision() uint64 { return t.snapshot }

// Endpoint returns the client address of the node the transaction is
// bound to.
func (t *Txn) Endpoint() string { return t.addr }

// Begin starts a transaction on the leader. The snapshot includes every
// write acknowledged before Begin was called. A server without
// transactions answers ErrUnsupported.
func (c *Client) Begin(ctx context.Context) (*Txn, error) {
	// BEGIN changes nothing but the leader's memory (an orphan from a
	// re-sent BEGIN expires there), so it is retried like a read.
	a, err := c.do(ctx, request{op: wire.OpTxnBegin, leaderOnly: true})
	if err != nil {
		return nil, err
	}
	if err := statusError(a.st, a.payload); err != nil {
		return nil, unsupported(wire.OpTxnBegin, err)
	}
	id, snap, err := wire.DecodeTxnBeginReply(a.payload)
	if err != nil {
		return nil, fmt.Errorf("%w: TXN_BEGIN reply from %s: %w", ErrProtocol, a.addr, err)
	}
	return &Txn{c: c, addr: a.addr, id: id, snapshot: snap}, nil
}

// usable fails unless the transaction may still run operations.
func (t *Txn) usable() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch t.mu.state {
	case txnOpen:
		return nil
	case txnBroken, txnReleased:
		if t.mu.err != nil {
			return t.mu.err
		}
	}
	return fmt.Errorf("%w (transaction %d)", ErrTxnDone, t.id)
}

// end moves an open or broken transaction to state st with err; a
// transaction already ended keeps its state.
func (t *Txn) end(st txnState, err error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.state == txnOpen || t.mu.state == txnBroken {
		t.mu.state, t.mu.err = st, err
	}
	return err
}

// lost builds the transaction's *TxnLostError.
func (t *Txn) lost(reason string, err error) *TxnLostError {
	return &TxnLostError{TxnID: t.id, Reason: reason, Err: err}
}

// connLost is the error of a request that could not be completed on the
// transaction's node.
func (t *Txn) connLost(err error) error {
	if errors.Is(err, ErrClosed) {
		return err
	}
	return t.lost("the connection to "+t.addr+" failed", err)
}

// serverGone interprets a reply that means the server no longer has the
// transaction: NOT_LEADER, or INVALID_ARGUMENT with the lost or unknown
// text. ok is false for other replies.
func (t *Txn) serverGone(a answer) (err error, ok bool) {
	switch a.st {
	case wire.StatusNotLeader:
		hint, _ := wire.DecodeNotLeader(a.payload)
		t.c.forgetLeader(t.addr)
		if hint != "" && checkAddr(hint) == nil {
			_ = t.c.learn(hint, true, true)
		} else {
			hint = ""
		}
		e := t.lost(t.addr+" no longer leads", nil)
		e.Leader = hint
		return e, true
	case wire.StatusInvalidArgument:
		msg, _ := wire.DecodeError(a.payload)
		if id, term, ok := wire.ParseTxnLost(msg); ok && id == t.id {
			e := t.lost(fmt.Sprintf("leadership moved since it began (term %d)", term), nil)
			e.Term = term
			return e, true
		}
		if id, ok := wire.ParseTxnUnknown(msg); ok && id == t.id {
			return t.lost(t.addr+" no longer knows it (it was open longer than the server's --txn-timeout, or the server restarted)", nil), true
		}
	}
	return nil, false
}

// checkOp validates a TXN_OP's key and value before anything is sent.
func checkOp(key, value []byte) error {
	if err := checkKey("key", key); err != nil {
		return err
	}
	if len(value) > wire.MaxValueSize {
		return fmt.Errorf("%w: value is %d bytes, the limit is %d", ErrInvalidArgument, len(value), wire.MaxValueSize)
	}
	return nil
}

func (t *Txn) opRequest(kind wire.TxnOpKind, key, value []byte) request {
	return request{op: wire.OpTxnOp, inner: wire.AppendTxnOp(nil, wire.TxnOp{TxnID: t.id, Kind: kind, Key: key, Value: value})}
}

// takePending removes the buffered writes, returning their requests and
// kinds; a transaction with buffered writes has wrote set.
func (t *Txn) takePending() ([]request, []wire.TxnOpKind) {
	t.mu.Lock()
	pend := t.mu.pending
	t.mu.pending, t.mu.pendingBytes = nil, 0
	t.mu.Unlock()
	reqs := make([]request, 0, len(pend)+2)
	kinds := make([]wire.TxnOpKind, 0, len(pend)+2)
	for _, w := range pend {
		reqs = append(reqs, t.opRequest(w.kind, w.key, w.value))
		kinds = append(kinds, w.kind)
	}
	return reqs, kinds
}

// ops sends the buffered writes and then reqs (TXN_OPs of kinds)
// pipelined on one connection to the transaction's node, and returns the
// values of the gets among reqs (nil for a missing key). The first failure
// of a buffered write is its error (the server then refuses to commit the
// transaction); a write's failure after that is not reported again.
func (t *Txn) ops(ctx context.Context, reqs []request, kinds []wire.TxnOpKind) ([][]byte, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	all, allKinds := t.takePending()
	nw := len(all)
	all, allKinds = append(all, reqs...), append(allKinds, kinds...)
	if len(all) == 0 {
		return nil, nil
	}
	res := t.c.pipeline(ctx, t.addr, all)
	var vals [][]byte
	var first error
	for i, r := range res {
		v, err := t.opAnswer(allKinds[i], r)
		if i >= nw {
			vals = append(vals, v)
		}
		if err != nil && !(errors.Is(err, ErrNotFound) && allKinds[i] == wire.TxnOpGet) && first == nil {
			first = err
		}
	}
	return vals, first
}

// opAnswer interprets the outcome of one TXN_OP; a get of a missing key
// is ErrNotFound.
func (t *Txn) opAnswer(kind wire.TxnOpKind, r piped) ([]byte, error) {
	write := kind != wire.TxnOpGet
	if r.err != nil {
		// A get could be asked again, but the node may be gone, and a
		// write's fate is unknown: either way the transaction cannot be
		// trusted to go on.
		return nil, t.end(txnBroken, t.connLost(r.err))
	}
	a := r.a
	if gone, ok := t.serverGone(a); ok {
		return nil, t.end(txnReleased, gone)
	}
	switch a.st {
	case wire.StatusOK:
		if !write {
			v, err := wire.DecodeValue(a.payload)
			if err != nil {
				return nil, fmt.Errorf("%w: TXN_OP reply from %s: %w", ErrProtocol, t.addr, err)
			}
			if v == nil {
				v = []byte{}
			}
			return v, nil
		}
		return nil, nil
	case wire.StatusNotFound:
		if write {
			return nil, fmt.Errorf("%w: NOT_FOUND answering a TXN_OP %s", ErrProtocol, kindName(kind))
		}
		return nil, ErrNotFound
	case wire.StatusCompacted:
		// The snapshot fell out of the retained history: the transaction
		// cannot read any more; a new one gets a new snapshot.
		return nil, t.end(txnBroken, t.lost("its snapshot is older than the retained history", statusError(a.st, a.payload)))
	}
	err := statusError(a.st, a.payload)
	if write && !errors.Is(err, ErrTxnConflict) && !errors.Is(err, ErrInvalidArgument) {
		// A write the server failed on may or may not be buffered: the
		// transaction must not commit.
		return nil, t.end(txnBroken, err)
	}
	return nil, err
}

// buffer records a put or delete to send with the next request of the
// transaction, sending the buffer when it reaches its bounds.
func (t *Txn) buffer(ctx context.Context, kind wire.TxnOpKind, key, value []byte) error {
	if err := checkOp(key, value); err != nil {
		return err
	}
	if err := t.usable(); err != nil {
		return err
	}
	w := pendingWrite{kind: kind, key: bytes.Clone(key), value: bytes.Clone(value)}
	if w.key == nil {
		w.key = []byte{}
	}
	t.mu.Lock()
	t.mu.wrote = true
	t.mu.pending = append(t.mu.pending, w)
	t.mu.pendingBytes += len(key) + len(value)
	full := len(t.mu.pending) >= maxPendingWrites || t.mu.pendingBytes >= maxPendingBytes
	t.mu.Unlock()
	if full {
		_, err := t.ops(ctx, nil, nil)
		return err
	}
	return nil
}

func kindName(k wire.TxnOpKind) string {
	switch k {
	case wire.TxnOpGet:
		return "get"
	case wire.TxnOpPut:
		return "put"
	}
	return "delete"
}

// Get returns the value of key in the transaction's snapshot, or its own
// write of key; a missing (or, by this transaction, deleted) key is
// ErrNotFound. Under serializable isolation the key joins the read set:
// Commit fails with ErrTxnConflict when another writer changed it since the
// snapshot.
//
// Writes buffered by Put and Delete are sent first, in the same round trip;
// when one of them is refused, Get returns that error instead (and the
// transaction cannot commit).
func (t *Txn) Get(ctx context.Context, key []byte) ([]byte, error) {
	if err := checkOp(key, nil); err != nil {
		return nil, err
	}
	vals, err := t.ops(ctx, []request{t.opRequest(wire.TxnOpGet, key, nil)}, []wire.TxnOpKind{wire.TxnOpGet})
	if err != nil {
		return nil, err
	}
	if vals[0] == nil {
		return nil, ErrNotFound
	}
	return vals[0], nil
}

// GetMany is Get of several keys in one round trip (the requests are
// pipelined): values[i] is the value of keys[i], nil when the key is
// missing (a present empty value is a non-nil empty slice). It returns the
// first error other than a missing key.
func (t *Txn) GetMany(ctx context.Context, keys ...[]byte) (values [][]byte, err error) {
	reqs := make([]request, len(keys))
	kinds := make([]wire.TxnOpKind, len(keys))
	for i, k := range keys {
		if err := checkOp(k, nil); err != nil {
			return nil, err
		}
		reqs[i], kinds[i] = t.opRequest(wire.TxnOpGet, k, nil), wire.TxnOpGet
	}
	vals, err := t.ops(ctx, reqs, kinds)
	if err != nil {
		return nil, err
	}
	return vals, nil
}

// Put buffers a write of value under key, applied at Commit. It does not
// wait for the server: the write travels with the transaction's next Get,
// GetMany or Commit, pipelined ahead of it in the same round trip (or at
// once, when 64 writes or 1 MiB are buffered). So Put's errors surface
// there: ErrTxnConflict when another open transaction wrote key or key
// changed since the snapshot, or the server's refusal of the write (the
// --max-txn-bytes bound); the server then refuses to commit the
// transaction, so that it never commits without a write it was sent. A
// bad key or an oversized value fails at once. key and value are copied.
func (t *Txn) Put(ctx context.Context, key, value []byte) error {
	return t.buffer(ctx, wire.TxnOpPut, key, value)
}

// Delete buffers a delete of key, applied at Commit; sent and refused as
// Put.
func (t *Txn) Delete(ctx context.Context, key []byte) error {
	return t.buffer(ctx, wire.TxnOpDelete, key, nil)
}

// Commit applies the transaction's writes atomically and returns the
// commit revision (a transaction without writes returns its snapshot
// revision). ErrTxnConflict: something it read or wrote changed since its
// snapshot; nothing was applied and the transaction is over. ErrTxnLost:
// it was not committed. ErrAmbiguous: the outcome could not be learned
// before the deadline (it may or may not be applied). ErrDiskFull: the
// leader's disk is full and it refused the commit before proposing it;
// nothing was applied and the transaction is still open, so Commit may be
// called again once there is room (or Rollback). Committing again after
// success returns the same revision.
func (t *Txn) Commit(ctx context.Context) (uint64, error) {
	t.mu.Lock()
	st, rev, err := t.mu.state, t.mu.rev, t.mu.err
	t.mu.Unlock()
	switch st {
	case txnCommitted:
		return rev, nil
	case txnRolledBack:
		return 0, fmt.Errorf("%w (transaction %d was rolled back)", ErrTxnDone, t.id)
	case txnBroken, txnReleased:
		if err == nil {
			err = fmt.Errorf("%w (transaction %d)", ErrTxnDone, t.id)
		}
		return 0, err
	}
	// The buffered writes go ahead of COMMIT on one connection, in one
	// round trip; the server runs them in order and refuses to commit a
	// transaction with a refused write.
	reqs, kinds := t.takePending()
	reqs = append(reqs, request{op: wire.OpTxnCommit, inner: wire.AppendTxnID(nil, t.id)})
	res := t.c.pipeline(ctx, t.addr, reqs)
	var writeErr error
	unanswered := false // a write pipelined with COMMIT has no reply
	for i, k := range kinds {
		if res[i].err != nil {
			unanswered = true
			break // the connection failed: COMMIT's own outcome says what is known
		}
		if _, err := t.opAnswer(k, res[i]); err != nil && writeErr == nil {
			writeErr = err
		}
	}
	r := res[len(res)-1]
	a, sent, err := r.a, r.sent, r.err
	switch {
	case err != nil && !sent:
		// COMMIT never left: nothing was committed. The server may still
		// hold the transaction (with a prefix of its writes): one
		// best-effort TXN_ROLLBACK releases it now rather than at
		// --txn-timeout.
		return 0, t.abandon(ctx, err)
	case err != nil && unanswered:
		return t.resolveUnanswered(ctx, err)
	case err != nil:
		return t.resolve(ctx, err)
	}
	if writeErr != nil {
		if a.st == wire.StatusOK {
			// Only a server that predates the refusal rule commits a
			// transaction after refusing one of its writes.
			err := fmt.Errorf("%w: %s committed transaction %d although it refused one of its writes (%w): the server is older than this client; upgrade it", ErrProtocol, t.addr, t.id, writeErr)
			t.mu.Lock()
			t.mu.state, t.mu.err = txnReleased, err
			t.mu.Unlock()
			return 0, err
		}
		// The server refused the commit because of the write: the write's
		// error says why.
		if errors.Is(writeErr, ErrTxnLost) || a.st == wire.StatusTxnConflict || a.st == wire.StatusInvalidArgument {
			return 0, t.end(txnReleased, writeErr)
		}
	}
	switch a.st {
	case wire.StatusNotLeader, wire.StatusError:
		se := statusError(a.st, a.payload)
		var srv *ServerError
		if errors.As(se, &srv) && (srv.Message == wire.MsgClientCredential || srv.Message == wire.MsgACLDenied) {
			return 0, t.end(txnReleased, se) // refused before anything was proposed
		}
		if errors.Is(se, ErrDiskFull) {
			// Refused before it was proposed, and the transaction stays
			// open on the server: Commit may be called again once the
			// node has room (or Rollback). Nothing to resolve.
			return 0, se
		}
		if a.st == wire.StatusNotLeader {
			t.serverGone(a) // learn the new leader
		}
		return t.resolve(ctx, se)
	}
	return t.outcome(a)
}

// outcome interprets a decided TXN_COMMIT reply.
func (t *Txn) outcome(a answer) (uint64, error) {
	switch a.st {
	case wire.StatusOK:
		rev, err := wire.DecodeTxnCommitReply(a.payload)
		if err != nil {
			return 0, fmt.Errorf("%w: TXN_COMMIT reply from %s: %w", ErrProtocol, a.addr, err)
		}
		t.mu.Lock()
		t.mu.state, t.mu.rev, t.mu.err = txnCommitted, rev, nil
		t.mu.Unlock()
		return rev, nil
	case wire.StatusTxnConflict:
		return 0, t.end(txnReleased, statusError(a.st, a.payload))
	}
	if gone, ok := t.serverGone(a); ok {
		return 0, t.end(txnReleased, gone)
	}
	return 0, t.end(txnReleased, statusError(a.st, a.payload))
}

// abandon ends a transaction whose COMMIT could not be sent: nothing was
// committed. It tries TXN_ROLLBACK once on a new connection; when that
// cannot be sent either the transaction stays broken (Rollback may try
// again; the server expires it).
func (t *Txn) abandon(ctx context.Context, cause error) error {
	lostErr := t.connLost(cause)
	if errors.Is(cause, ErrClosed) || ctx.Err() != nil {
		return t.end(txnBroken, lostErr)
	}
	a, _, err := t.c.once(ctx, t.addr, request{op: wire.OpTxnRollback, inner: wire.AppendTxnID(nil, t.id)})
	if err != nil {
		return t.end(txnBroken, lostErr)
	}
	if _, ok := t.serverGone(a); ok || a.st == wire.StatusOK {
		return t.end(txnReleased, lostErr)
	}
	return t.end(txnBroken, lostErr)
}

// resolveUnanswered learns the outcome of a COMMIT sent after writes whose
// replies were lost with it. Asking again with TXN_COMMIT could commit the
// transaction without a write that never reached the server (the
// connection broke in the middle of the pipeline, after the server had
// read a prefix of it). So it first sends TXN_ROLLBACK: if the transaction
// is still open, that ends it, and nothing was applied; any other answer
// (committing, finished, lost, not the leader) means it is no longer open
// anywhere, so a TXN_COMMIT cannot commit it any more and only learns
// its outcome.
func (t *Txn) resolveUnanswered(ctx context.Context, cause error) (uint64, error) {
	last := cause
	for attempt := 1; attempt <= txnResolveAttempts; attempt++ {
		if attempt > 1 {
			if err := t.c.sleep(ctx, backoff(attempt-1)); err != nil {
				break
			}
		}
		a, _, err := t.c.once(ctx, t.addr, request{op: wire.OpTxnRollback, inner: wire.AppendTxnID(nil, t.id)})
		if err != nil {
			last = err
			if ctx.Err() != nil || errors.Is(err, ErrClosed) {
				break
			}
			continue
		}
		switch a.st {
		case wire.StatusOK:
			return 0, t.end(txnReleased, t.lost("the connection to "+t.addr+" failed while its writes and COMMIT were in flight; it was rolled back, nothing was applied", cause))
		case wire.StatusNotLeader, wire.StatusInvalidArgument:
			return t.resolve(ctx, cause)
		}
		last = statusError(a.st, a.payload)
	}
	err := fmt.Errorf("%w: TXN_COMMIT of transaction %d sent to %s with writes whose replies were lost, outcome unknown: %w", ErrAmbiguous, t.id, t.addr, last)
	return 0, t.end(txnReleased, err)
}

// resolve learns the outcome of a COMMIT that may have been applied, by
// asking again on the leader (commit is idempotent by txn id).
func (t *Txn) resolve(ctx context.Context, cause error) (uint64, error) {
	t.mu.Lock()
	wrote := t.mu.wrote
	t.mu.Unlock()
	last := cause
ask:
	for attempt := 1; attempt <= txnResolveAttempts; attempt++ {
		if attempt > 1 {
			if err := t.c.sleep(ctx, backoff(attempt-1)); err != nil {
				break ask
			}
		}
		a, err := t.c.do(ctx, request{op: wire.OpTxnCommit, inner: wire.AppendTxnID(nil, t.id), leaderOnly: true})
		if err != nil {
			last = err
			if ctx.Err() != nil || errors.Is(err, ErrClosed) {
				break ask
			}
			continue
		}
		switch a.st {
		case wire.StatusOK, wire.StatusTxnConflict:
			return t.outcome(a)
		case wire.StatusError:
			last = statusError(a.st, a.payload) // not decided yet, or the server failed: ask again
			continue
		}
		last = statusError(a.st, a.payload)
		if a.st != wire.StatusInvalidArgument {
			break ask
		}
		msg, _ := wire.DecodeError(a.payload)
		if id, _, ok := wire.ParseTxnLost(msg); ok && id == t.id {
			// Lost with leadership: the new leader has applied every
			// entry of the old terms and holds no outcome, so the commit
			// was never applied.
			gone, _ := t.serverGone(a)
			return 0, t.end(txnReleased, gone)
		}
		if id, ok := wire.ParseTxnUnknown(msg); ok && id == t.id && !wrote {
			// "Unknown or finished": the node that held the transaction
			// has no outcome for it. With writes it may still have been
			// applied (the outcome unknown); without, there was nothing
			// to apply: committed at its snapshot.
			t.mu.Lock()
			t.mu.state, t.mu.rev, t.mu.err = txnCommitted, t.snapshot, nil
			t.mu.Unlock()
			return t.snapshot, nil
		}
		break ask
	}
	err := fmt.Errorf("%w: TXN_COMMIT of transaction %d sent to %s, outcome unknown: %w", ErrAmbiguous, t.id, t.addr, last)
	return 0, t.end(txnReleased, err)
}

// Rollback ends the transaction without applying anything and frees it on
// the server. It returns nil when the transaction is already over (after
// Commit, after a commit conflict, when it was lost) and may be called
// after any error.
func (t *Txn) Rollback(ctx context.Context) error {
	t.mu.Lock()
	st := t.mu.state
	t.mu.pending, t.mu.pendingBytes = nil, 0 // never sent: nothing to undo
	t.mu.Unlock()
	if st != txnOpen && st != txnBroken {
		return nil
	}
	a, _, err := t.c.once(ctx, t.addr, request{op: wire.OpTxnRollback, inner: wire.AppendTxnID(nil, t.id)})
	if err != nil {
		if st == txnBroken {
			return nil // best effort: the server expires it
		}
		return t.connLost(err)
	}
	if _, ok := t.serverGone(a); ok {
		t.end(txnReleased, nil)
		return nil
	}
	if err := statusError(a.st, a.payload); err != nil {
		if st == txnBroken {
			return nil
		}
		return err
	}
	t.mu.Lock()
	t.mu.state, t.mu.err = txnRolledBack, nil
	t.mu.Unlock()
	return nil
}

// RunTxn runs fn in a transaction and commits it, starting again (with a
// jittered exponential back-off) when it conflicts or is lost, at most
// Options.MaxTxnAttempts times and never past ctx's deadline. fn may run
// several times, so it must have no effects outside the transaction (or
// only idempotent ones); when it returns an error, the transaction is
// rolled back and that error returned (an error from the Txn's methods that
// matches ErrTxnConflict or ErrTxnLost makes RunTxn retry). It returns the
// commit revision.
//
//	rev, err := c.RunTxn(ctx, func(tx *client.Txn) error {
//		v, err := tx.Get(ctx, []byte("counter"))
//		...
//		return tx.Put(ctx, []byte("counter"), next)
//	})
func (c *Client) RunTxn(ctx context.Context, fn func(*Txn) error) (uint64, error) {
	var last error
	for attempt := 1; ; attempt++ {
		rev, err := c.runTxnOnce(ctx, fn)
		if err == nil {
			return rev, nil
		}
		if !errors.Is(err, ErrTxnConflict) && !errors.Is(err, ErrTxnLost) {
			return 0, err
		}
		last = err
		if attempt >= c.opts.MaxTxnAttempts {
			return 0, fmt.Errorf("kayadb: transaction given up after %d attempts: %w", attempt, last)
		}
		if err := c.sleep(ctx, txnBackoff(attempt)); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return 0, fmt.Errorf("kayadb: transaction given up after %d attempts (no time left for another): %w", attempt, last)
			}
			return 0, sleepError(err, last)
		}
	}
}

// runTxnOnce is one attempt of RunTxn.
func (c *Client) runTxnOnce(ctx context.Context, fn func(*Txn) error) (uint64, error) {
	t, err := c.Begin(ctx)
	if err != nil {
		return 0, err
	}
	if err := fn(t); err != nil {
		t.rollbackQuietly(ctx)
		return 0, err
	}
	rev, err := t.Commit(ctx)
	if err != nil {
		t.rollbackQuietly(ctx)
	}
	return rev, err
}

// rollbackQuietly frees an abandoned transaction on its server, within a
// short bound; failures are ignored (the server expires it anyway).
func (t *Txn) rollbackQuietly(ctx context.Context) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), txnRollbackTimeout)
	defer cancel()
	_ = t.Rollback(rctx)
}

// txnBackoff is the pause before attempt n+1 of RunTxn: a random duration
// up to txnBackoffBase·2^(n-1), capped at txnBackoffCap ("full jitter").
func txnBackoff(n int) time.Duration {
	d := txnBackoffCap
	if n < 16 {
		d = min(txnBackoffBase<<(n-1), txnBackoffCap)
	}
	return rand.N(d + 1)
}
