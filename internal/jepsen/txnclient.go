package jepsen

// The adapter from the Go client to TxnClient: a thin mapping, one method
// each: Begin → *Txn; Txn.Commit → (revision, error); CompareAndSwap →
// (swapped, revision, error); ErrTxnConflict, ErrTxnLost.

import (
	"context"
	"errors"

	"github.com/kayadb/kayadb/client"
)

// txnWorkloadsByDefault puts TxnWorkloads in the default set
// (AllWorkloads).
const txnWorkloadsByDefault = true

func txnClientSupported() error { return nil }

// txnClientFor adapts cl; the caller keeps owning (and closes) cl.
func txnClientFor(cl *client.Client) (TxnClient, error) { return clientTxns{cl}, nil }

type clientTxns struct{ cl *client.Client }

func (c clientTxns) Begin(ctx context.Context) (TxnHandle, error) {
	t, err := c.cl.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return clientTxn{t}, nil
}

func (c clientTxns) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	return found(c.cl.Get(ctx, key))
}

func (c clientTxns) Put(ctx context.Context, key, value []byte) error {
	return c.cl.Put(ctx, key, value)
}

func (c clientTxns) CompareAndSwap(ctx context.Context, key, old, new []byte) (bool, error) {
	swapped, _, err := c.cl.CompareAndSwap(ctx, key, old, new)
	return swapped, err
}

// NotApplied: a conflict aborted the transaction; a lost one was not
// committed (the client says so — and the checkers test that claim: a
// lost transaction whose append is seen is a G1a); anything writeStatus
// calls failed (refused before it was sent or proposed) did not happen.
// ErrAmbiguous and everything else stay unknown.
func (c clientTxns) NotApplied(err error) bool {
	return errors.Is(err, client.ErrTxnConflict) || errors.Is(err, client.ErrTxnLost) || writeStatus(err) == StatusFail
}

type clientTxn struct{ t *client.Txn }

func (t clientTxn) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	return found(t.t.Get(ctx, key))
}
func (t clientTxn) Put(ctx context.Context, key, value []byte) error { return t.t.Put(ctx, key, value) }
func (t clientTxn) Delete(ctx context.Context, key []byte) error     { return t.t.Delete(ctx, key) }
func (t clientTxn) Commit(ctx context.Context) error {
	_, err := t.t.Commit(ctx)
	return err
}
func (t clientTxn) Rollback(ctx context.Context) error { return t.t.Rollback(ctx) }

// found turns the client's ErrNotFound into found = false.
func found(v []byte, err error) ([]byte, bool, error) {
	if errors.Is(err, client.ErrNotFound) {
		return nil, false, nil
	}
	return v, err == nil, err
}

// STMClientFor adapts cl so that the transactional workloads run optimistic
// transactions (client.NewSTM) instead of interactive ones: Begin makes an
// STM, Commit is its one conditional write. kaya-jepsen -txn stm uses it.
func STMClientFor(cl *client.Client) (TxnClient, error) { return stmTxns{clientTxns{cl}}, nil }

type stmTxns struct{ clientTxns }

func (c stmTxns) Begin(ctx context.Context) (TxnHandle, error) {
	return stmTxn{c.cl.NewSTM(ctx)}, nil
}

type stmTxn struct{ s *client.STM }

func (t stmTxn) Get(_ context.Context, key []byte) ([]byte, bool, error) { return found(t.s.Get(key)) }
func (t stmTxn) Put(_ context.Context, key, value []byte) error          { return t.s.Put(key, value) }
func (t stmTxn) Delete(_ context.Context, key []byte) error              { return t.s.Delete(key) }
func (t stmTxn) Commit(context.Context) error {
	_, err := t.s.Commit()
	return err
}

// Rollback has nothing to free: an STM holds nothing on the server.
func (t stmTxn) Rollback(context.Context) error { return nil }
