package client

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/wire"
)

func TestTxnCommitAndRead(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)
	if err := c.Put(ctx, []byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tx.Endpoint() != srv.addr || tx.ID() == 0 || tx.SnapshotRevision() != 1 {
		t.Fatalf("txn %d at %s, snapshot %d", tx.ID(), tx.Endpoint(), tx.SnapshotRevision())
	}
	if v, err := tx.Get(ctx, []byte("a")); err != nil || string(v) != "1" {
		t.Fatalf("Get a: %q %v", v, err)
	}
	if _, err := tx.Get(ctx, []byte("b")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get b: %v", err)
	}
	if err := tx.Put(ctx, []byte("b"), []byte("2")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Delete(ctx, []byte("a")); err != nil {
		t.Fatal(err)
	}
	// Its own writes, not yet anyone else's.
	if v, err := tx.Get(ctx, []byte("b")); err != nil || string(v) != "2" {
		t.Fatalf("own write: %q %v", v, err)
	}
	if _, err := tx.Get(ctx, []byte("a")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("own delete: %v", err)
	}
	if _, err := c.Get(ctx, []byte("b")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("uncommitted write visible: %v", err)
	}
	rev, err := tx.Commit(ctx)
	if err != nil || rev != 2 {
		t.Fatalf("Commit: %d %v", rev, err)
	}
	if v, err := c.Get(ctx, []byte("b")); err != nil || string(v) != "2" {
		t.Fatalf("after commit: %q %v", v, err)
	}
	if _, err := c.Get(ctx, []byte("a")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after commit, a: %v", err)
	}
	// Committing again is idempotent; rolling back after commit is a
	// no-op; operations are refused.
	if again, err := tx.Commit(ctx); err != nil || again != rev {
		t.Fatalf("Commit again: %d %v", again, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tx.Put(ctx, []byte("c"), nil); !errors.Is(err, ErrTxnDone) {
		t.Fatalf("Put after commit: %v", err)
	}
	if srv.count(wire.OpTxnCommit) != 1 || srv.count(wire.OpTxnRollback) != 0 {
		t.Fatalf("%d commits, %d rollbacks", srv.count(wire.OpTxnCommit), srv.count(wire.OpTxnRollback))
	}

	// Rollback frees it; nothing is applied.
	tx, err = c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Put(ctx, []byte("c"), []byte("3")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Commit(ctx); !errors.Is(err, ErrTxnDone) {
		t.Fatalf("Commit after rollback: %v", err)
	}
	if _, err := c.Get(ctx, []byte("c")); !errors.Is(err, ErrNotFound) || srv.model.OpenTxns() != 0 {
		t.Fatalf("after rollback: %v, %d open", err, srv.model.OpenTxns())
	}
	// A read-only transaction commits at its snapshot.
	tx, _ = c.Begin(ctx)
	if rev, err := tx.Commit(ctx); err != nil || rev != 2 {
		t.Fatalf("read-only commit: %d %v", rev, err)
	}
}

// TestTxnBytes: the client sends the original's exact bytes
// (protocol-later.md §7), with the CLIENT prefix when it has a token.
func TestTxnBytes(t *testing.T) {
	srv := newFakeServer(t)
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		switch r.op {
		case wire.OpTxnBegin:
			return fakeAction{payload: wire.AppendTxnBeginReply(nil, 1, 0)}, true
		case wire.OpTxnOp:
			return fakeAction{payload: wire.AppendValue(nil, []byte("v"))}, true
		case wire.OpTxnCommit:
			return fakeAction{payload: wire.AppendTxnCommitReply(nil, 12)}, true
		case wire.OpTxnRollback:
			return fakeAction{}, true
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if v, err := tx.Get(ctx, []byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("Get: %q %v", v, err)
	}
	if err := tx.Delete(ctx, []byte("k")); err != nil {
		t.Fatal(err)
	}
	if rev, err := tx.Commit(ctx); err != nil || rev != 12 {
		t.Fatalf("Commit: %d %v", rev, err)
	}
	tx2, _ := c.Begin(ctx)
	if err := tx2.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, op := range []wire.Opcode{wire.OpTxnBegin, wire.OpTxnOp, wire.OpTxnCommit, wire.OpTxnRollback} {
		for _, r := range srv.requests(op) {
			got = append(got, hex.EncodeToString(r.frame))
		}
	}
	want := []string{
		"0100000009", "0100000009",
		"140000000a010000000000000002010000006b0100000076",
		"0f0000000a010000000000000001010000006b",
		"0f0000000a010000000000000003010000006b",
		"090000000b0100000000000000",
		"090000000c0100000000000000",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("frames:\n got  %v\n want %v", got, want)
	}

	// With a client token every transaction request carries it.
	srv2 := newFakeServer(t)
	srv2.setTokens("tok", "")
	c2 := newClient(t, []string{srv2.addr}, &Options{ClientToken: "tok"})
	if _, err := c2.RunTxn(ctx, func(tx *Txn) error { return tx.Put(ctx, []byte("k"), []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	for _, op := range []wire.Opcode{wire.OpTxnBegin, wire.OpTxnOp, wire.OpTxnCommit} {
		for _, r := range srv2.requests(op) {
			if !wire.HasClientPrefix(r.payload) {
				t.Errorf("%v without the CLIENT prefix: % x", op, r.payload)
			}
		}
	}
	c3 := newClient(t, []string{srv2.addr}, nil)
	if _, err := c3.Begin(ctx); !errors.Is(err, ErrServer) || !strings.Contains(err.Error(), wire.MsgClientCredential) {
		t.Fatalf("Begin without the token: %v", err)
	}
}

func TestTxnConflicts(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)
	c.Put(ctx, []byte("x"), []byte("1"))
	c.Put(ctx, []byte("y"), []byte("1"))

	// Early: a key another open transaction wrote. Puts are buffered: the
	// conflict surfaces with the next request that sends them.
	a, _ := c.Begin(ctx)
	b, _ := c.Begin(ctx)
	ops := srv.count(wire.OpTxnOp)
	if err := a.Put(ctx, []byte("k"), []byte("a")); err != nil || srv.count(wire.OpTxnOp) != ops {
		t.Fatalf("Put: %v, %d TXN_OPs sent (want none yet)", err, srv.count(wire.OpTxnOp)-ops)
	}
	if v, err := a.Get(ctx, []byte("k")); err != nil || string(v) != "a" || srv.count(wire.OpTxnOp) != ops+2 {
		t.Fatalf("Get after Put: %q, %v, %d TXN_OPs sent", v, err, srv.count(wire.OpTxnOp)-ops)
	}
	if err := b.Put(ctx, []byte("k"), []byte("b")); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, []byte("other"), []byte("b")); err != nil {
		t.Fatal(err)
	}
	_, err := b.Commit(ctx)
	var se *ServerError
	if !errors.Is(err, ErrTxnConflict) || !errors.As(err, &se) || se.Status != 3 || se.Message != "txn conflict" {
		t.Fatalf("early conflict: %v", err)
	}
	// The write after the refused one was not committed without it.
	if _, err := c.Get(ctx, []byte("other")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a transaction with a refused write committed its other write: %v", err)
	}
	if err := b.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	// At commit: write skew (each reads x and y, writes one) is refused.
	a, _ = c.Begin(ctx)
	b, _ = c.Begin(ctx)
	for _, tx := range []*Txn{a, b} {
		for _, k := range []string{"x", "y"} {
			if _, err := tx.Get(ctx, []byte(k)); err != nil {
				t.Fatal(err)
			}
		}
	}
	a.Put(ctx, []byte("x"), []byte("0"))
	b.Put(ctx, []byte("y"), []byte("0"))
	if _, err := a.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Commit(ctx); !errors.Is(err, ErrTxnConflict) {
		t.Fatalf("write skew: %v", err)
	}
	// The server released it: no rollback is sent, and it stays over.
	if err := b.Rollback(ctx); err != nil || srv.count(wire.OpTxnRollback) != 0 {
		t.Fatalf("Rollback after conflict: %v (%d rollbacks)", err, srv.count(wire.OpTxnRollback))
	}
	if _, err := b.Commit(ctx); !errors.Is(err, ErrTxnConflict) {
		t.Fatalf("Commit again: %v", err)
	}
	if v, _ := c.Get(ctx, []byte("y")); string(v) != "1" {
		t.Fatalf("y = %q: the conflicting commit was applied", v)
	}
}

// TestRunTxnCounter: concurrent read-modify-write transactions lose no
// update (each retried until it commits).
func TestRunTxnCounter(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, []string{srv.addr}, &Options{MaxTxnAttempts: 1000})
	ctx := ctxT(t, 30*time.Second)
	const workers, each = 8, 10
	var attempts atomic.Int64
	inParallel(t, workers, each, func(int, int) error {
		_, err := c.RunTxn(ctx, func(tx *Txn) error {
			attempts.Add(1)
			next, err := incremented(tx.Get(ctx, []byte("counter")))
			if err != nil {
				return err
			}
			return tx.Put(ctx, []byte("counter"), next)
		})
		return err
	})
	v, err := c.Get(ctx, []byte("counter"))
	if err != nil || string(v) != fmt.Sprint(workers*each) {
		t.Fatalf("counter = %q (%v), want %d", v, err, workers*each)
	}
	if srv.model.OpenTxns() != 0 {
		t.Fatalf("%d transactions left open", srv.model.OpenTxns())
	}
	t.Logf("%d attempts for %d transactions", attempts.Load(), workers*each)
}

// TestRunTxnRetries: conflicts at commit are retried with a new
// transaction; a function error is not, and rolls back; the attempts are
// bounded.
func TestRunTxnRetries(t *testing.T) {
	srv := newFakeServer(t)
	var failCommits atomic.Int64
	failCommits.Store(2)
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpTxnCommit && failCommits.Add(-1) >= 0 {
			// A conflict at commit releases the transaction.
			srv.model.Handle(wire.OpTxnRollback, r.payload)
			return errAction(wire.StatusTxnConflict, wire.MsgTxnConflict), true
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, &Options{MaxTxnAttempts: 3})
	ctx := ctxT(t, 10*time.Second)
	runs := 0
	rev, err := c.RunTxn(ctx, func(tx *Txn) error {
		runs++
		return tx.Put(ctx, []byte("k"), fmt.Append(nil, runs))
	})
	if err != nil || runs != 3 || rev == 0 {
		t.Fatalf("RunTxn: rev %d, %d runs, %v", rev, runs, err)
	}
	if v, _ := c.Get(ctx, []byte("k")); string(v) != "3" {
		t.Fatalf("k = %q", v)
	}
	// The server released the two that conflicted: no rollback is sent.
	if srv.count(wire.OpTxnBegin) != 3 || srv.count(wire.OpTxnRollback) != 0 {
		t.Fatalf("%d begins, %d rollbacks", srv.count(wire.OpTxnBegin), srv.count(wire.OpTxnRollback))
	}

	// Always conflicting: gives up after MaxTxnAttempts, still matching.
	failCommits.Store(1 << 30)
	runs = 0
	_, err = c.RunTxn(ctx, func(tx *Txn) error { runs++; return tx.Put(ctx, []byte("k"), nil) })
	if !errors.Is(err, ErrTxnConflict) || runs != 3 || !strings.Contains(err.Error(), "after 3 attempts") {
		t.Fatalf("gave up: %d runs, %v", runs, err)
	}

	// A function error: no retry, the transaction is rolled back.
	failCommits.Store(0)
	boom := errors.New("boom")
	before := srv.count(wire.OpTxnRollback)
	runs = 0
	_, err = c.RunTxn(ctx, func(tx *Txn) error { runs++; tx.Put(ctx, []byte("z"), nil); return boom })
	if !errors.Is(err, boom) || runs != 1 || srv.count(wire.OpTxnRollback) != before+1 {
		t.Fatalf("function error: %d runs, %v, %d rollbacks", runs, err, srv.count(wire.OpTxnRollback)-before)
	}
	if _, err := c.Get(ctx, []byte("z")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rolled-back write applied: %v", err)
	}
	// An early conflict returned by fn is retried too (and the loser
	// rolled back, so that it does not block the next attempt).
	blocker, _ := c.Begin(ctx)
	blocker.Put(ctx, []byte("hot"), []byte("b"))
	if _, err := blocker.Get(ctx, []byte("hot")); err != nil { // sends the put
		t.Fatal(err)
	}
	runs = 0
	done := make(chan error, 1)
	go func() {
		_, err := c.RunTxn(ctx, func(tx *Txn) error {
			runs++
			if runs == 2 {
				blocker.Rollback(ctx)
			}
			return tx.Put(ctx, []byte("hot"), []byte("a"))
		})
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatalf("early conflict retried: %v", err)
	}
	if v, _ := c.Get(ctx, []byte("hot")); string(v) != "a" || runs < 2 {
		t.Fatalf("hot = %q after %d runs", v, runs)
	}
	if srv.model.OpenTxns() != 0 {
		t.Fatalf("%d transactions left open", srv.model.OpenTxns())
	}
	// The deadline bounds it too.
	failCommits.Store(1 << 30)
	c2 := newClient(t, []string{srv.addr}, &Options{MaxTxnAttempts: 1 << 20})
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	// (The deadline may also end a BEGIN or PUT: then it is a timeout.)
	if _, err := c2.RunTxn(short, func(tx *Txn) error { return tx.Put(short, []byte("k"), nil) }); !errors.Is(err, ErrTxnConflict) && !errors.Is(err, ErrTimeout) {
		t.Fatalf("deadline: %v", err)
	}
}

// TestTxnBoundToItsLeader: a transaction's requests go to the node it
// began on and are never redirected: a NOT_LEADER fails it with a
// retryable *TxnLostError naming the new leader, and RunTxn starts again
// there.
func TestTxnBoundToItsLeader(t *testing.T) {
	a, b := newFakeServer(t), newFakeServer(t)
	var moved atomic.Bool
	a.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if moved.Load() && r.op != wire.OpHello {
			return fakeAction{st: wire.StatusNotLeader, payload: wire.AppendNotLeader(nil, b.addr)}, true
		}
		return fakeAction{}, false
	})
	b.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if !moved.Load() && r.op != wire.OpHello {
			return fakeAction{st: wire.StatusNotLeader, payload: wire.AppendNotLeader(nil, a.addr)}, true
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{a.addr, b.addr}, nil)
	ctx := ctxT(t, 10*time.Second)
	tx, err := c.Begin(ctx)
	if err != nil || tx.Endpoint() != a.addr {
		t.Fatalf("Begin: %v at %s", err, tx.Endpoint())
	}
	if err := tx.Put(ctx, []byte("k"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	moved.Store(true) // a's open transactions are gone with its leadership
	a.model.LoseTxns()
	if err := tx.Put(ctx, []byte("k2"), []byte("2")); err != nil {
		t.Fatal(err) // buffered
	}
	_, err = tx.Commit(ctx)
	var lost *TxnLostError
	if !errors.Is(err, ErrTxnLost) || !errors.As(err, &lost) || lost.Leader != b.addr || lost.TxnID != tx.ID() {
		t.Fatalf("Commit after the move: %v", err)
	}
	if _, err := tx.Commit(ctx); !errors.Is(err, ErrTxnLost) {
		t.Fatalf("Commit of a lost transaction: %v", err)
	}
	if n := b.count(wire.OpTxnOp) + b.count(wire.OpTxnCommit); n != 0 {
		t.Fatalf("%d requests of the transaction went to the new leader", n)
	}
	if c.Leader() != b.addr {
		t.Fatalf("the client did not learn the new leader: %q", c.Leader())
	}

	// RunTxn: the first attempt begins on a, is lost mid-way, the second
	// runs on b.
	moved.Store(false)
	runs := 0
	rev, err := c.RunTxn(ctx, func(tx *Txn) error {
		runs++
		if err := tx.Put(ctx, []byte("k"), fmt.Append(nil, runs)); err != nil {
			return err
		}
		if runs == 1 {
			moved.Store(true)
			a.model.LoseTxns()
		}
		return tx.Put(ctx, []byte("k2"), []byte("x"))
	})
	if err != nil || runs != 2 || rev == 0 {
		t.Fatalf("RunTxn: %d runs, %v", runs, err)
	}
	if st, reply := b.model.Handle(wire.OpGet, wire.AppendKey(nil, []byte("k"))); st != wire.StatusOK || string(reply[4:]) != "2" {
		t.Fatalf("b holds k=%q (%v)", reply, st)
	}
	if st, _ := a.model.Handle(wire.OpGet, wire.AppendKey(nil, []byte("k2"))); st != wire.StatusNotFound {
		t.Fatal("the lost attempt's write reached a's store")
	}
}

// TestTxnLostText: the server's "lost when leadership moved" and "unknown
// or finished" answers become *TxnLostError, with the term.
func TestTxnLostText(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)
	tx, _ := c.Begin(ctx)
	tx.Put(ctx, []byte("k"), []byte("v"))
	srv.model.LoseTxns()
	_, err := tx.Get(ctx, []byte("k"))
	var lost *TxnLostError
	if !errors.As(err, &lost) || lost.Term != 1 || lost.TxnID != tx.ID() || !strings.Contains(err.Error(), "leadership moved") {
		t.Fatalf("lost: %v", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatalf("Rollback of a lost transaction: %v", err)
	}
	// Forgotten by its server (expired): unknown or finished.
	tx, _ = c.Begin(ctx)
	srv.model.Handle(wire.OpTxnRollback, wire.AppendTxnID(nil, tx.ID()))
	if _, err := tx.Commit(ctx); !errors.Is(err, ErrTxnLost) || !strings.Contains(err.Error(), "no longer knows it") {
		t.Fatalf("unknown: %v", err)
	}
	// A snapshot out of the retained history.
	tx, _ = c.Begin(ctx)
	c.Put(ctx, []byte("k"), []byte("w"))
	srv.model.Compact(srv.model.Revision())
	if _, err := tx.Get(ctx, []byte("k")); !errors.Is(err, ErrTxnLost) || !errors.Is(err, ErrCompacted) {
		t.Fatalf("compacted snapshot: %v", err)
	}
}

// TestTxnConnectionFailure: a transaction whose connection fails is lost
// (and RunTxn starts again); one whose COMMIT never left is not committed.
func TestTxnConnectionFailure(t *testing.T) {
	srv := newFakeServer(t)
	var drop atomic.Int64
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpTxnOp && drop.Add(-1) >= 0 {
			return fakeAction{drop: true}, true
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 10*time.Second)
	drop.Store(1)
	tx, _ := c.Begin(ctx)
	if err := tx.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err) // buffered
	}
	// The put, sent ahead of COMMIT, is dropped with the connection: the
	// client must not ask for the commit again (that would commit the
	// transaction without the put) but roll it back first.
	if _, err := tx.Commit(ctx); !errors.Is(err, ErrTxnLost) || errors.Is(err, ErrAmbiguous) || srv.count(wire.OpTxnCommit) != 0 {
		t.Fatalf("Commit after a dropped put: %v (%d commits sent)", err, srv.count(wire.OpTxnCommit))
	}
	if srv.model.OpenTxns() != 0 || srv.count(wire.OpTxnRollback) != 1 {
		t.Fatalf("%d open, %d rollbacks", srv.model.OpenTxns(), srv.count(wire.OpTxnRollback))
	}
	if _, err := c.Get(ctx, []byte("k")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the dropped transaction's write is there: %v", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	drop.Store(1)
	runs := 0
	if _, err := c.RunTxn(ctx, func(tx *Txn) error { runs++; return tx.Put(ctx, []byte("k"), []byte("v")) }); err != nil || runs != 2 {
		t.Fatalf("RunTxn: %d runs, %v", runs, err)
	}

	// The node is gone: COMMIT cannot be sent, so nothing was committed.
	dead := newFakeServer(t)
	c2 := newClient(t, []string{dead.addr}, &Options{FailFast: true})
	tx, _ = c2.Begin(ctx)
	tx.Put(ctx, []byte("k"), []byte("v"))
	dead.Close()
	// Once the client has seen the connection refused, COMMIT cannot
	// leave.
	if _, err := c2.Get(ctx, []byte("k")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get from a stopped node: %v", err)
	}
	if _, err := tx.Commit(ctx); !errors.Is(err, ErrTxnLost) || errors.Is(err, ErrAmbiguous) {
		t.Fatalf("Commit to a stopped node: %v", err)
	}
}

// TestTxnCommitOutcomeResolved: when COMMIT's reply is lost the client asks
// again by id (commit is idempotent) and reports the first outcome; when it
// cannot learn it, ErrAmbiguous.
func TestTxnCommitOutcomeResolved(t *testing.T) {
	srv := newFakeServer(t)
	// What happens to the first COMMIT after mode is set (armed): 1 it is
	// applied and its reply lost; 2 it is lost unapplied; 3 it is lost
	// and leadership moves; 4 (every COMMIT) no reply ever; 5 the server
	// forgets the transaction and the reply is lost.
	var mode atomic.Int64
	var armed atomic.Bool
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op != wire.OpTxnCommit {
			return fakeAction{}, false
		}
		first := armed.CompareAndSwap(true, false)
		switch m := mode.Load(); {
		case m == 1 && first:
			srv.model.Handle(r.op, r.payload)
			return fakeAction{drop: true}, true
		case m == 2 && first:
			return fakeAction{drop: true}, true
		case m == 3 && first:
			srv.model.LoseTxns()
			return fakeAction{drop: true}, true
		case m == 4:
			return fakeAction{drop: true}, true
		case m == 5 && first:
			// The server forgets it (as after a read-only commit, or
			// an expiry), and the reply is lost.
			srv.model.Handle(wire.OpTxnRollback, r.payload)
			return fakeAction{drop: true}, true
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, &Options{RequestTimeout: 2 * time.Second})
	ctx := ctxT(t, 20*time.Second)
	commit := func(m int64, key string) (uint64, error) { // key "": a read-only transaction
		t.Helper()
		ctx := ctx
		if m == 4 {
			// Nothing will answer: the deadline ends asking.
			short, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			ctx = short
		}
		mode.Store(0)
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if key != "" {
			if err := tx.Put(ctx, []byte(key), []byte("v")); err != nil {
				t.Fatal(err)
			}
			// Send the put (buffered) now: COMMIT then goes alone.
			if _, err := tx.Get(ctx, []byte(key)); err != nil {
				t.Fatal(err)
			}
		}
		mode.Store(m)
		armed.Store(true)
		return tx.Commit(ctx)
	}
	// Applied, reply lost: the retry answers the first outcome; the write
	// is applied once.
	before := srv.model.Revision()
	rev, err := commit(1, "a")
	if err != nil || rev != before+1 || srv.model.Revision() != rev {
		t.Fatalf("applied: %d %v (store at %d)", rev, err, srv.model.Revision())
	}
	// Never reached the store: the retry commits it.
	if rev, err := commit(2, "b"); err != nil || rev == 0 {
		t.Fatalf("unapplied: %d %v", rev, err)
	}
	// Leadership moved before it was decided: lost, not ambiguous.
	if _, err := commit(3, "c"); !errors.Is(err, ErrTxnLost) || errors.Is(err, ErrAmbiguous) {
		t.Fatalf("lost with leadership: %v", err)
	}
	if _, err := c.Get(ctx, []byte("c")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("c applied: %v", err)
	}
	// Forgotten by its server: a read-only transaction is committed at its
	// snapshot; one with writes cannot be known (ambiguous).
	snap := srv.model.Revision()
	if rev, err := commit(5, ""); err != nil || rev != snap {
		t.Fatalf("read-only, forgotten: %d %v (snapshot %d)", rev, err, snap)
	}
	if _, err := commit(5, "f"); !errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), "unknown or finished") {
		t.Fatalf("with writes, forgotten: %v", err)
	}
	// No answer at all: ambiguous (and RunTxn does not retry it).
	if _, err := commit(4, "d"); !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("no answer: %v", err)
	}
	runs := 0
	mode.Store(4)
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = c.RunTxn(short, func(tx *Txn) error {
		runs++
		if err := tx.Put(short, []byte("e"), nil); err != nil {
			return err
		}
		_, err := tx.Get(short, []byte("e"))
		return err
	})
	if !errors.Is(err, ErrAmbiguous) || runs != 1 {
		t.Fatalf("RunTxn with no answer: %d runs, %v", runs, err)
	}
}

func TestTxnUnsupported(t *testing.T) {
	srv := newFakeServer(t)
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpTxnBegin || r.op >= wire.OpKayaTxn {
			return errAction(wire.StatusError, fmt.Sprintf(wire.MsgUnknownOpcode, r.op)), true
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)
	if _, err := c.Begin(ctx); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "TXN_BEGIN") {
		t.Fatalf("Begin: %v", err)
	}
	if _, _, err := c.CompareAndSwap(ctx, []byte("k"), nil, nil); !errors.Is(err, ErrUnsupported) || errors.Is(err, ErrAmbiguous) {
		t.Fatalf("CompareAndSwap: %v", err)
	}
	if _, err := c.Get(ctx, []byte("k"), WithReadAt(1)); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Get at: %v", err)
	}
	if _, err := c.Scan(ctx, nil, WithModRevisions()); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Scan with revisions: %v", err)
	}
}

func TestCondTxn(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)
	k := []byte("lock")

	put, rev, err := c.PutIfAbsent(ctx, k, []byte("me"))
	if err != nil || !put || rev != 1 {
		t.Fatalf("PutIfAbsent: %v %d %v", put, rev, err)
	}
	put, rev2, err := c.PutIfAbsent(ctx, k, []byte("you"))
	if err != nil || put || rev2 != rev {
		t.Fatalf("PutIfAbsent again: %v %d %v", put, rev2, err)
	}
	swapped, rev, err := c.CompareAndSwap(ctx, k, []byte("you"), []byte("x"))
	if err != nil || swapped || rev != 1 {
		t.Fatalf("CAS mismatch: %v %d %v", swapped, rev, err)
	}
	swapped, rev, err = c.CompareAndSwap(ctx, k, []byte("me"), []byte("you"))
	if err != nil || !swapped || rev != 2 {
		t.Fatalf("CAS: %v %d %v", swapped, rev, err)
	}
	if v, _ := c.Get(ctx, k); string(v) != "you" {
		t.Fatalf("after CAS: %q", v)
	}
	if swapped, rev, err := c.CompareAndSwap(ctx, []byte("absent"), nil, []byte("x")); err != nil || swapped || rev != 0 {
		t.Fatalf("CAS of a missing key: %v %d %v", swapped, rev, err)
	}
	// The bytes of a compare-and-swap are doc.go's example.
	srv.setHandler(nil)
	c.CompareAndSwap(ctx, []byte("k"), []byte("v"), []byte("w"))
	reqs := srv.requests(wire.OpKayaTxn)
	if got := hex.EncodeToString(reqs[len(reqs)-1].frame); got != "2a00000044"+"01000000"+"0201"+"010000006b"+"0100000076"+
		"01000000"+"02"+"010000006b"+"0100000077"+"01000000"+"01"+"010000006b" {
		t.Fatalf("CAS frame %s", got)
	}

	// The general form: an optimistic lock on the mod revision.
	resp, err := c.Txn(ctx).
		If(CompareModRevision(k, Equal, 2), KeyExists(k), KeyMissing([]byte("nope")).Not().Not()).
		Then(OpGet(k), OpDelete(k), OpDelete(k), OpPut([]byte("other"), []byte("1")), OpGet([]byte("other"))).
		Else(OpGet(k)).
		Commit()
	if err != nil || !resp.Succeeded || resp.Revision != 3 || len(resp.Results) != 5 {
		t.Fatalf("Txn: %+v %v", resp, err)
	}
	r := resp.Results
	if r[0].Kind != KindGet || !r[0].Found || string(r[0].Value) != "you" || r[0].ModRevision != 2 || string(r[0].Key) != "lock" ||
		!r[1].Found || r[2].Found || r[3].Kind != KindPut || string(r[4].Value) != "1" || r[4].ModRevision != 3 {
		t.Fatalf("results %+v", r)
	}
	resp, err = c.Txn(ctx).If(CompareModRevision(k, Equal, 2)).Then(OpDelete(k)).Else(OpGet(k), OpGet([]byte("other"))).Commit()
	if err != nil || resp.Succeeded || resp.Revision != 0 || len(resp.Results) != 2 || resp.Results[0].Found || !resp.Results[1].Found {
		t.Fatalf("Txn else: %+v %v", resp, err)
	}
	// No compares: Then runs.
	if resp, err := c.Txn(ctx).Commit(); err != nil || !resp.Succeeded || len(resp.Results) != 0 {
		t.Fatalf("empty: %+v %v", resp, err)
	}

	// Misuse and limits are refused before anything is sent.
	n := srv.count(wire.OpKayaTxn)
	for _, bad := range []*CondTxn{
		c.Txn(ctx).Then(OpGet(k)).If(KeyExists(k)),
		c.Txn(ctx).If().If(),
		c.Txn(ctx).Else().Then(),
		c.Txn(ctx).If(CompareValue([]byte("\x00sys"), Equal, nil)),
		c.Txn(ctx).Then(OpPut(make([]byte, wire.MaxKeySize+1), nil)),
		c.Txn(ctx).If(CompareValue(k, CmpOp(9), nil)),
		c.Txn(ctx).Then(make([]Op, wire.MaxCondOps+1)...),
		c.Txn(ctx).If(make([]Cmp, wire.MaxCondCompares+1)...),
	} {
		if _, err := bad.Commit(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("bad txn: %v", err)
		}
	}
	if srv.count(wire.OpKayaTxn) != n {
		t.Fatal("a refused txn was sent")
	}
	if s := fmt.Sprint(CompareValue(k, LessEqual, []byte("v")), " ", CompareModRevision(k, Less, 5).Not(), " ", KeyExists(k).Not()); s != `value("lock") <= "v" mod("lock") >= 5 !exists("lock")` {
		t.Fatalf("strings: %s", s)
	}
}

// TestCondTxnAtMostOnce: a conditional write whose reply is lost is
// ErrAmbiguous and not sent again; one that only reads is retried.
func TestCondTxnAtMostOnce(t *testing.T) {
	srv := newFakeServer(t)
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpKayaTxn && r.nth == 1 {
			return fakeAction{drop: true}, true
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)
	if _, err := c.Txn(ctx).Then(OpGet([]byte("k"))).Commit(); err != nil || srv.count(wire.OpKayaTxn) != 2 {
		t.Fatalf("read-only: %v, sent %d times", err, srv.count(wire.OpKayaTxn))
	}
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpKayaTxn {
			return fakeAction{drop: true}, true
		}
		return fakeAction{}, false
	})
	if _, _, err := c.CompareAndSwap(ctx, []byte("k"), nil, []byte("v")); !errors.Is(err, ErrAmbiguous) || srv.count(wire.OpKayaTxn) != 3 {
		t.Fatalf("write: %v, sent %d times", err, srv.count(wire.OpKayaTxn))
	}
	// A reply whose results do not match the ops is a protocol error.
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpKayaTxn {
			return fakeAction{payload: wire.AppendCondTxnReply(nil, &wire.CondTxnReply{Succeeded: true})}, true
		}
		return fakeAction{}, false
	})
	if _, err := c.Txn(ctx).Then(OpGet([]byte("k"))).Commit(); !errors.Is(err, ErrProtocol) {
		t.Fatalf("mismatched reply: %v", err)
	}
}

func TestReadAtRevision(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)
	c.Put(ctx, []byte("k"), []byte("1"))   // rev 1
	c.Put(ctx, []byte("k"), []byte("2"))   // rev 2
	c.Put(ctx, []byte("k/a"), []byte("a")) // rev 3
	c.Delete(ctx, []byte("k"))             // rev 4
	if v, err := c.Get(ctx, []byte("k"), WithReadAt(1)); err != nil || string(v) != "1" {
		t.Fatalf("at 1: %q %v", v, err)
	}
	if v, rev, err := c.GetWithRevision(ctx, []byte("k"), WithReadAt(3)); err != nil || string(v) != "2" || rev != 2 {
		t.Fatalf("at 3: %q %d %v", v, rev, err)
	}
	if _, _, err := c.GetWithRevision(ctx, []byte("k")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("latest after delete: %v", err)
	}
	if v, rev, err := c.GetWithRevision(ctx, []byte("k/a")); err != nil || string(v) != "a" || rev != 3 {
		t.Fatalf("latest: %q %d %v", v, rev, err)
	}
	kvs, err := c.Scan(ctx, []byte("k"), WithReadAt(3))
	if err != nil || len(kvs) != 2 || string(kvs[0].Value) != "2" || kvs[0].ModRevision != 2 || kvs[1].ModRevision != 3 {
		t.Fatalf("scan at 3: %+v %v", kvs, err)
	}
	if kvs, err := c.Scan(ctx, []byte("k"), WithModRevisions()); err != nil || len(kvs) != 1 || kvs[0].ModRevision != 3 {
		t.Fatalf("scan with revisions: %+v %v", kvs, err)
	}
	if kvs, err := c.Scan(ctx, []byte("k")); err != nil || len(kvs) != 1 || kvs[0].ModRevision != 0 {
		t.Fatalf("plain scan: %+v %v", kvs, err)
	}
	if n := srv.count(wire.OpScan); n != 1 {
		t.Fatalf("plain Scan must use SCAN (old servers): %d", n)
	}
	if _, err := c.Get(ctx, []byte("k"), WithReadAt(99)); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "in the future") {
		t.Fatalf("future: %v", err)
	}
	srv.model.Compact(3)
	_, err = c.Get(ctx, []byte("k"), WithReadAt(2))
	var ce *CompactedError
	if !errors.Is(err, ErrCompacted) || !errors.As(err, &ce) || ce.Revision != 2 || ce.Oldest != 3 {
		t.Fatalf("compacted: %v", err)
	}
	if _, err := c.Scan(ctx, nil, WithReadAt(1)); !errors.Is(err, ErrCompacted) {
		t.Fatalf("scan compacted: %v", err)
	}
}

// TestScanPages: a prefix read page by page at one revision sees one
// snapshot, whatever is written between the pages.
func TestScanPages(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)
	for i := range 10 {
		c.Put(ctx, fmt.Appendf(nil, "p/%02d", i), []byte("old"))
	}
	c.Put(ctx, []byte("q"), nil)
	srv.model.SetScanCap(4) // the server's cap ends pages too
	var got []string
	page, err := c.ScanPage(ctx, []byte("p/"), nil, 3)
	for i := 0; err == nil; i++ {
		if len(page.KVs) > 3 {
			t.Fatalf("page of %d", len(page.KVs))
		}
		for _, kv := range page.KVs {
			got = append(got, string(kv.Key)+"="+string(kv.Value))
		}
		// Writes between pages are not seen.
		c.Put(ctx, fmt.Appendf(nil, "p/%02d", 9-i), []byte("new"))
		c.Put(ctx, fmt.Appendf(nil, "p/%02da", i), []byte("new"))
		if !page.More {
			break
		}
		page, err = c.ScanPage(ctx, []byte("p/"), page.Next, 3, WithReadAt(page.Revision))
	}
	if err != nil || len(got) != 10 || strings.Contains(strings.Join(got, ","), "new") {
		t.Fatalf("pages: %v %v", got, err)
	}
	if _, err := c.ScanPage(ctx, []byte("p/"), []byte("q"), 0); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("start outside the prefix: %v", err)
	}
	// A page that ends on a key of the maximum size continues past it.
	long := append([]byte("p/"), strings.Repeat("y", wire.MaxKeySize-2)...)
	c.Put(ctx, long, nil)
	c.Put(ctx, []byte("p/z"), nil)
	page, err = c.ScanPage(ctx, []byte("p/"), long, 1)
	if err != nil || len(page.KVs) != 1 || !page.More || len(page.Next) != wire.MaxKeySize+1 {
		t.Fatalf("long key page: %d items, more %v, %v", len(page.KVs), page.More, err)
	}
	if page, err := c.ScanPage(ctx, []byte("p/"), page.Next, 1); err != nil || string(page.KVs[0].Key) != "p/z" {
		t.Fatalf("after the long key: %v", err)
	}
	// A server that breaks the page contract is a protocol error.
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpScanAt {
			return fakeAction{payload: wire.AppendScanAtReply(nil, &wire.ScanAtReply{ReadRev: 1, More: true})}, true
		}
		return fakeAction{}, false
	})
	if _, err := c.ScanPage(ctx, []byte("p/"), nil, 0); !errors.Is(err, ErrProtocol) {
		t.Fatalf("more without items: %v", err)
	}
}

// TestTxnGetMany: several reads in one pipeline, behind the buffered
// writes; a missing key is nil, an empty value a non-nil empty slice.
func TestTxnGetMany(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)
	c.Put(ctx, []byte("a"), []byte("1"))
	c.Put(ctx, []byte("empty"), []byte{})
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Put(ctx, []byte("mine"), []byte("m")); err != nil {
		t.Fatal(err)
	}
	vals, err := tx.GetMany(ctx, []byte("a"), []byte("missing"), []byte("empty"), []byte("mine"))
	if err != nil {
		t.Fatal(err)
	}
	if len(vals) != 4 || string(vals[0]) != "1" || vals[1] != nil || vals[2] == nil || len(vals[2]) != 0 || string(vals[3]) != "m" {
		t.Fatalf("GetMany = %q", vals)
	}
	if _, err := tx.GetMany(ctx, []byte("a"), []byte("\x00sys")); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("a reserved key: %v", err)
	}
	if rev, err := tx.Commit(ctx); err != nil || rev == 0 {
		t.Fatalf("Commit: %d %v", rev, err)
	}
	if v, err := c.Get(ctx, []byte("mine")); err != nil || string(v) != "m" {
		t.Fatalf("mine = %q, %v", v, err)
	}
}

// incremented is a counter's next value given the read of its current one
// (a missing key counts as 0).
func incremented(v []byte, err error) ([]byte, error) {
	n := 0
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return nil, err
	default:
		fmt.Sscan(string(v), &n)
	}
	return fmt.Append(nil, n+1), nil
}

// TestTxnCommitRefusedByAFullDisk: a TXN_COMMIT a disk-full leader refused
// (before proposing it) fails with ErrDiskFull at once, without asking
// again and without ErrAmbiguous; the transaction stays open, and a later
// Commit commits it.
func TestTxnCommitRefusedByAFullDisk(t *testing.T) {
	srv := newFakeServer(t)
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpTxnCommit && r.nth == 1 {
			return fakeAction{st: wire.StatusError, payload: wire.AppendError(nil, diskFullRefusal)}, true
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	_, err = tx.Commit(ctx)
	if !errors.Is(err, ErrDiskFull) || errors.Is(err, ErrAmbiguous) {
		t.Fatalf("Commit on a full disk: got %v, want ErrDiskFull without ErrAmbiguous", err)
	}
	if n := srv.count(wire.OpTxnCommit); n != 1 {
		t.Fatalf("%d TXN_COMMITs sent, want 1 (a refusal needs no resolving)", n)
	}
	rev, err := tx.Commit(ctx)
	if err != nil || rev == 0 {
		t.Fatalf("Commit again once there is room: rev %d, %v", rev, err)
	}
	if v, err := c.Get(ctx, []byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("Get k after the commit: %q %v", v, err)
	}
}
