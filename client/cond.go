package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/kayadb/kayadb/internal/wire"
)

// One-shot conditional writes (opcode 68, KAYA_TXN), in the manner of
// etcd's clientv3 Txn:
//
//	resp, err := c.Txn(ctx).
//		If(client.CompareValue(key, client.Equal, old)).
//		Then(client.OpPut(key, new)).
//		Else(client.OpGet(key)).
//		Commit()
//
// The compares are evaluated on the leader against the latest state, and
// the branch runs, atomically, in one raft entry: no other write comes
// between them. Unlike a Txn, nothing is held on the server between
// requests, so there is nothing to lose or roll back.

// CmpOp is the relation a compare tests.
type CmpOp uint8

// Relations of CompareValue and CompareModRevision.
const (
	Equal        = CmpOp(wire.CmpEqual)
	NotEqual     = CmpOp(wire.CmpNotEqual)
	Less         = CmpOp(wire.CmpLess)
	Greater      = CmpOp(wire.CmpGreater)
	LessEqual    = CmpOp(wire.CmpLessEqual)
	GreaterEqual = CmpOp(wire.CmpGreaterEqual)
)

// String returns the relation's symbol ("=", "!=", "<", ">", "<=", ">=").
func (op CmpOp) String() string { return wire.CompareOp(op).String() }

// Cmp is one condition of a conditional write.
type Cmp struct{ c wire.Compare }

// KeyExists holds when key exists.
func KeyExists(key []byte) Cmp {
	return Cmp{wire.Compare{Target: wire.CmpExists, Op: wire.CmpEqual, Key: key}}
}

// KeyMissing holds when key does not exist.
func KeyMissing(key []byte) Cmp {
	return Cmp{wire.Compare{Target: wire.CmpExists, Op: wire.CmpNotEqual, Key: key}}
}

// CompareValue compares key's value with value, as bytes
// (lexicographically). It is false whenever key does not exist, whatever
// op (NotEqual too: there is no value to differ), as in etcd.
func CompareValue(key []byte, op CmpOp, value []byte) Cmp {
	return Cmp{wire.Compare{Target: wire.CmpValue, Op: wire.CompareOp(op), Key: key, Value: value}}
}

// CompareModRevision compares key's mod revision (the revision of the
// write that gave it its current value; 0 when key does not exist) with
// rev. CompareModRevision(k, Equal, rev) after a read that returned rev is
// an optimistic lock: the write happens only if nobody wrote k since.
func CompareModRevision(key []byte, op CmpOp, rev uint64) Cmp {
	return Cmp{wire.Compare{Target: wire.CmpMod, Op: wire.CompareOp(op), Key: key, Rev: rev}}
}

// Not returns the condition that holds exactly when c does not, except
// that a CompareValue on a missing key stays false.
func (c Cmp) Not() Cmp {
	n := c
	n.c.Op = c.c.Op.Negate()
	return n
}

// String renders c as kayactl txn reads it: exists("k"), value("k") = "v",
// mod("k") < 42.
func (c Cmp) String() string { return c.c.String() }

// Op is one operation of a conditional write's branch.
type Op struct{ op wire.CondOp }

// OpGet reads key (its result is in TxnResponse.Results).
func OpGet(key []byte) Op { return Op{wire.CondOp{Kind: wire.TxnOpGet, Key: key}} }

// OpPut writes value under key.
func OpPut(key, value []byte) Op {
	return Op{wire.CondOp{Kind: wire.TxnOpPut, Key: key, Value: value}}
}

// OpDelete deletes key (deleting a missing key is not an error; its
// result says whether it existed).
func OpDelete(key []byte) Op { return Op{wire.CondOp{Kind: wire.TxnOpDelete, Key: key}} }

// OpKind is the kind of an Op.
type OpKind uint8

// Op kinds.
const (
	KindGet    = OpKind(wire.TxnOpGet)
	KindPut    = OpKind(wire.TxnOpPut)
	KindDelete = OpKind(wire.TxnOpDelete)
)

// String returns "get", "put" or "delete".
func (k OpKind) String() string { return kindName(wire.TxnOpKind(k)) }

// OpResult is the result of one op of the branch that ran.
type OpResult struct {
	// Kind and Key are the op's.
	Kind OpKind
	Key  []byte
	// Found is, for a get, whether the key exists; for a delete, whether
	// it existed (and so was deleted).
	Found bool
	// Value and ModRevision are a found get's.
	Value       []byte
	ModRevision uint64
}

// TxnResponse is the outcome of a conditional write.
type TxnResponse struct {
	// Succeeded is true when every compare held and the Then ops ran;
	// false when the Else ops ran.
	Succeeded bool
	// Revision is the commit revision of the branch's writes, or 0 when
	// the branch wrote nothing.
	Revision uint64
	// Results has one entry per op of the branch that ran, in order.
	Results []OpResult
}

// CondTxn builds a conditional write; Client.Txn returns one. Call If,
// Then and Else at most once each, in that order (each may be left out),
// then Commit.
type CondTxn struct {
	c   *Client
	ctx context.Context
	t   wire.CondTxn
	// stage is how far the building went: 0 none, 1 If, 2 Then, 3 Else.
	stage int
	err   error
}

// Txn starts building a conditional write (opcode 68, KAYA_TXN) that
// Commit sends. For multi-request transactions, see Begin and RunTxn.
func (c *Client) Txn(ctx context.Context) *CondTxn { return &CondTxn{c: c, ctx: ctx} }

func (t *CondTxn) step(stage int, name string) bool {
	if t.err != nil {
		return false
	}
	if t.stage >= stage {
		t.err = fmt.Errorf("%w: Txn().%s called after %s (call If, Then and Else at most once each, in that order)",
			ErrInvalidArgument, name, [...]string{"", "If", "Then", "Else"}[t.stage])
		return false
	}
	t.stage = stage
	return true
}

// If adds the compares that must all hold for Then's ops to run (none:
// Then's run).
func (t *CondTxn) If(cmps ...Cmp) *CondTxn {
	if t.step(1, "If") {
		for _, c := range cmps {
			t.t.Compares = append(t.t.Compares, c.c)
		}
	}
	return t
}

// Then sets the ops that run when every compare holds.
func (t *CondTxn) Then(ops ...Op) *CondTxn {
	if t.step(2, "Then") {
		for _, op := range ops {
			t.t.Then = append(t.t.Then, op.op)
		}
	}
	return t
}

// Else sets the ops that run when a compare does not hold.
func (t *CondTxn) Else(ops ...Op) *CondTxn {
	if t.step(3, "Else") {
		for _, op := range ops {
			t.t.Else = append(t.t.Else, op.op)
		}
	}
	return t
}

// check applies the protocol's limits before anything is sent.
func (t *CondTxn) check() error {
	if t.err != nil {
		return t.err
	}
	if n := len(t.t.Compares); n > wire.MaxCondCompares {
		return fmt.Errorf("%w: %d compares, at most %d", ErrInvalidArgument, n, wire.MaxCondCompares)
	}
	for _, c := range t.t.Compares {
		if err := checkKey("compare key", c.Key); err != nil {
			return err
		}
		if c.Target == wire.CmpValue && len(c.Value) > wire.MaxValueSize {
			return fmt.Errorf("%w: compare value is %d bytes, the limit is %d", ErrInvalidArgument, len(c.Value), wire.MaxValueSize)
		}
		if c.Op < wire.CmpEqual || c.Op > wire.CmpGreaterEqual {
			return fmt.Errorf("%w: unknown compare relation %d", ErrInvalidArgument, c.Op)
		}
	}
	for _, b := range []struct {
		name string
		ops  []wire.CondOp
	}{{"Then", t.t.Then}, {"Else", t.t.Else}} {
		if len(b.ops) > wire.MaxCondOps {
			return fmt.Errorf("%w: %d %s ops, at most %d", ErrInvalidArgument, len(b.ops), b.name, wire.MaxCondOps)
		}
		for _, op := range b.ops {
			if err := checkKey("key", op.Key); err != nil {
				return err
			}
			if len(op.Value) > wire.MaxValueSize {
				return fmt.Errorf("%w: value is %d bytes, the limit is %d", ErrInvalidArgument, len(op.Value), wire.MaxValueSize)
			}
		}
	}
	return nil
}

// Commit sends the conditional write and returns its outcome. A request
// with a put or delete is a write: at most once, ErrAmbiguous when its
// reply was lost. A server without conditional writes answers
// ErrUnsupported.
func (t *CondTxn) Commit() (*TxnResponse, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	writes := t.t.Writes()
	a, err := t.c.do(t.ctx, request{op: wire.OpKayaTxn, inner: wire.AppendCondTxn(nil, &t.t), write: writes, leaderOnly: true})
	if err != nil {
		return nil, err
	}
	if err := unsupported(wire.OpKayaTxn, statusError(a.st, a.payload)); err != nil {
		if writes && !errors.Is(err, ErrUnsupported) {
			return nil, writeOutcome(err)
		}
		return nil, err
	}
	r, err := wire.DecodeCondTxnReply(a.payload)
	if err != nil {
		return nil, fmt.Errorf("%w: KAYA_TXN reply from %s: %w", ErrProtocol, a.addr, err)
	}
	ops := t.t.Then
	if !r.Succeeded {
		ops = t.t.Else
	}
	if len(r.Results) != len(ops) {
		return nil, fmt.Errorf("%w: KAYA_TXN reply from %s has %d results for %d ops", ErrProtocol, a.addr, len(r.Results), len(ops))
	}
	resp := &TxnResponse{Succeeded: r.Succeeded, Revision: r.Revision, Results: make([]OpResult, len(ops))}
	for i, res := range r.Results {
		if res.Kind != ops[i].Kind {
			return nil, fmt.Errorf("%w: KAYA_TXN reply from %s: result %d is a %s, the op a %s", ErrProtocol, a.addr, i,
				kindName(res.Kind), kindName(ops[i].Kind))
		}
		resp.Results[i] = OpResult{Kind: OpKind(res.Kind), Key: ops[i].Key, Found: res.Found, Value: res.Value, ModRevision: res.ModRev}
	}
	return resp, nil
}

// CompareAndSwap writes new under key if its value is old, atomically. It
// returns whether it swapped and a revision: the write's when it swapped,
// else the key's current mod revision (0 when the key does not exist; a
// missing key never equals old: use PutIfAbsent to create one). On
// ErrAmbiguous the swap may or may not have happened.
func (c *Client) CompareAndSwap(ctx context.Context, key, old, new []byte) (swapped bool, rev uint64, err error) {
	resp, err := c.Txn(ctx).If(CompareValue(key, Equal, old)).Then(OpPut(key, new)).Else(OpGet(key)).Commit()
	if err != nil {
		return false, 0, err
	}
	if resp.Succeeded {
		return true, resp.Revision, nil
	}
	return false, resp.Results[0].ModRevision, nil
}

// PutIfAbsent writes value under key if key does not exist, atomically.
// It returns whether it wrote and a revision: the write's when it wrote,
// else the existing key's mod revision. On ErrAmbiguous the write may or
// may not have happened.
func (c *Client) PutIfAbsent(ctx context.Context, key, value []byte) (put bool, rev uint64, err error) {
	resp, err := c.Txn(ctx).If(KeyMissing(key)).Then(OpPut(key, value)).Else(OpGet(key)).Commit()
	if err != nil {
		return false, 0, err
	}
	if resp.Succeeded {
		return true, resp.Revision, nil
	}
	return false, resp.Results[0].ModRevision, nil
}
