package client

import (
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
	}
}

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

// op runs one TXN_OP on the transaction's node.
func (t *Txn) op(ctx context.Context, kind wire.TxnOpKind, key, value []byte) ([]byte, error) {
	if err := checkKey("key", key); err != nil {
		return nil, err
	}
	if len(value) > wire.MaxValueSize {
		return nil, fmt.Errorf("%w: value is %d bytes, the limit is %d", ErrInvalidArgument, len(value), wire.MaxValueSize)
	}
	if err := t.usable(); err != nil {
		return nil, err
	}
	write := kind != wire.TxnOpGet
	if write {
		t.mu.Lock()
		t.mu.wrote = true
		t.mu.Unlock()
	}
	inner := wire.AppendTxnOp(nil, wire.TxnOp{TxnID: t.id, Kind: kind, Key: key, Value: value})
	a, _, err := t.c.once(ctx, t.addr, request{op: wire.OpTxnOp, inner: inner})
	if err != nil {
		// A get could be asked again, but the node may be gone, and a
		// write's fate is unknown: either way the transaction cannot be
		// trusted to go on.
		return nil, t.end(txnBroken, t.connLost(err))
	}
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
	err = statusError(a.st, a.payload)
	if write && !errors.Is(err, ErrTxnConflict) && !errors.Is(err, ErrInvalidArgument) {
		// A write the server failed on may or may not be buffered: the
		// transaction must not commit.
		return nil, t.end(txnBroken, err)
	}
	return nil, err
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
func (t *Txn) Get(ctx context.Context, key []byte) ([]byte, error) {
	return t.op(ctx, wire.TxnOpGet, key, nil)
}

// Put buffers a write of value under key, applied at Commit. It fails at
// once with ErrTxnConflict when another open transaction wrote key or key
// changed since the snapshot (the transaction cannot commit then; roll it
// back and start again).
func (t *Txn) Put(ctx context.Context, key, value []byte) error {
	_, err := t.op(ctx, wire.TxnOpPut, key, value)
	return err
}

// Delete buffers a delete of key, applied at Commit; conflicts as Put.
func (t *Txn) Delete(ctx context.Context, key []byte) error {
	_, err := t.op(ctx, wire.TxnOpDelete, key, nil)
	return err
}

// Commit applies the transaction's writes atomically and returns the
// commit revision (a transaction without writes returns its snapshot
// revision). ErrTxnConflict: something it read or wrote changed since its
// snapshot; nothing was applied and the transaction is over. ErrTxnLost:
// it was not committed. ErrAmbiguous: the outcome could not be learned
// before the deadline (it may or may not be applied). Committing again
// after success returns the same revision.
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
	a, sent, err := t.c.once(ctx, t.addr, request{op: wire.OpTxnCommit, inner: wire.AppendTxnID(nil, t.id)})
	switch {
	case err != nil && !sent:
		// COMMIT never left: nothing was committed.
		return 0, t.end(txnBroken, t.connLost(err))
	case err != nil:
		return t.resolve(ctx, err)
	}
	switch a.st {
	case wire.StatusNotLeader, wire.StatusError:
		se := statusError(a.st, a.payload)
		var srv *ServerError
		if errors.As(se, &srv) && (srv.Message == wire.MsgClientCredential || srv.Message == wire.MsgACLDenied) {
			return 0, t.end(txnReleased, se) // refused before anything was proposed
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
