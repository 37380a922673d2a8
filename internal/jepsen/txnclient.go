//go:build kaya_txn_client

package jepsen

// The adapter from the Go client to TxnClient: a thin mapping, one method
// each. Built only with the kaya_txn_client tag until the client has
// transactions (see txnclient_pending.go).

import (
	"context"
	"errors"

	"github.com/kayadb/kayadb/client"
)

// txnWorkloadsByDefault puts TxnWorkloads in the default set
// (AllWorkloads): set it false again if the server lags the client.
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
	return c.cl.CompareAndSwap(ctx, key, old, new)
}

// NotApplied: a conflict aborted the transaction; anything writeStatus
// calls failed (refused before it was sent or proposed) did not happen.
func (c clientTxns) NotApplied(err error) bool {
	return errors.Is(err, client.ErrTxnConflict) || writeStatus(err) == StatusFail
}

type clientTxn struct{ t *client.Txn }

func (t clientTxn) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	return found(t.t.Get(ctx, key))
}
func (t clientTxn) Put(ctx context.Context, key, value []byte) error { return t.t.Put(ctx, key, value) }
func (t clientTxn) Delete(ctx context.Context, key []byte) error     { return t.t.Delete(ctx, key) }
func (t clientTxn) Commit(ctx context.Context) error                 { return t.t.Commit(ctx) }
func (t clientTxn) Rollback(ctx context.Context) error               { return t.t.Rollback(ctx) }

// found turns the client's ErrNotFound into found = false.
func found(v []byte, err error) ([]byte, bool, error) {
	if errors.Is(err, client.ErrNotFound) {
		return nil, false, nil
	}
	return v, err == nil, err
}
