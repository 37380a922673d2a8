package wiretest

import (
	"fmt"
	"testing"

	"github.com/kayadb/kayadb/internal/wire"
)

// do sends one request to m and fails unless the status is want.
func do(t *testing.T, m *Model, op wire.Opcode, p []byte, want wire.Status) []byte {
	t.Helper()
	st, reply := m.Handle(op, p)
	if st != want {
		msg, _ := wire.DecodeError(reply)
		t.Fatalf("%v: status %v (%q), want %v", op, st, msg, want)
	}
	return reply
}

func begin(t *testing.T, m *Model) uint64 {
	t.Helper()
	id, _, err := wire.DecodeTxnBeginReply(do(t, m, wire.OpTxnBegin, nil, wire.StatusOK))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func op(id uint64, kind wire.TxnOpKind, k, v string) []byte {
	return wire.AppendTxnOp(nil, wire.TxnOp{TxnID: id, Kind: kind, Key: []byte(k), Value: []byte(v)})
}

// TestModelTransactions: the semantics the client tests rely on.
func TestModelTransactions(t *testing.T) {
	m := New()
	m.Put([]byte("x"), []byte("1"))
	m.Put([]byte("y"), []byte("1"))

	// Write skew: each reads both and writes one. Serializable refuses the
	// second commit; snapshot isolation lets both commit.
	for _, si := range []bool{false, true} {
		m.SetSnapshotIsolation(si)
		a, b := begin(t, m), begin(t, m)
		for _, id := range []uint64{a, b} {
			do(t, m, wire.OpTxnOp, op(id, wire.TxnOpGet, "x", ""), wire.StatusOK)
			do(t, m, wire.OpTxnOp, op(id, wire.TxnOpGet, "y", ""), wire.StatusOK)
		}
		do(t, m, wire.OpTxnOp, op(a, wire.TxnOpPut, "x", "0"), wire.StatusOK)
		do(t, m, wire.OpTxnOp, op(b, wire.TxnOpPut, "y", "0"), wire.StatusOK)
		do(t, m, wire.OpTxnCommit, wire.AppendTxnID(nil, a), wire.StatusOK)
		want := wire.StatusTxnConflict
		if si {
			want = wire.StatusOK
		}
		do(t, m, wire.OpTxnCommit, wire.AppendTxnID(nil, b), want)
		// A retried commit answers the first outcome.
		do(t, m, wire.OpTxnCommit, wire.AppendTxnID(nil, b), want)
		if m.OpenTxns() != 0 {
			t.Fatal("transactions left open")
		}
	}
	m.SetSnapshotIsolation(false)

	// Early conflict on a key another open transaction wrote.
	a, b := begin(t, m), begin(t, m)
	do(t, m, wire.OpTxnOp, op(a, wire.TxnOpPut, "k", "a"), wire.StatusOK)
	do(t, m, wire.OpTxnOp, op(b, wire.TxnOpPut, "k", "b"), wire.StatusTxnConflict)
	// Reads see the transaction's own writes.
	if v, err := wire.DecodeValue(do(t, m, wire.OpTxnOp, op(a, wire.TxnOpGet, "k", ""), wire.StatusOK)); err != nil || string(v) != "a" {
		t.Fatalf("own write: %q %v", v, err)
	}
	do(t, m, wire.OpTxnRollback, wire.AppendTxnID(nil, b), wire.StatusOK)
	// A leadership change loses open transactions.
	m.LoseTxns()
	reply := do(t, m, wire.OpTxnCommit, wire.AppendTxnID(nil, a), wire.StatusInvalidArgument)
	msg, _ := wire.DecodeError(reply)
	if id, term, ok := wire.ParseTxnLost(msg); !ok || id != a || term != 1 {
		t.Fatalf("lost: %q", msg)
	}
	c := begin(t, m)
	if c>>32 != 2 {
		t.Fatalf("id %x after the term moved", c)
	}
	do(t, m, wire.OpTxnRollback, wire.AppendTxnID(nil, c), wire.StatusOK)
	msg, _ = wire.DecodeError(do(t, m, wire.OpTxnRollback, wire.AppendTxnID(nil, c), wire.StatusInvalidArgument))
	if msg != fmt.Sprintf(wire.MsgTxnUnknown, c) {
		t.Fatalf("unknown: %q", msg)
	}
}

// TestModelVersions: reads at a revision, compaction, and conditional
// writes.
func TestModelVersions(t *testing.T) {
	m := New()
	r1 := m.Put([]byte("k"), []byte("1"))
	r2 := m.Put([]byte("k"), []byte("2"))
	v, rev, err := wire.DecodeGetAtReply(do(t, m, wire.OpGetAt, wire.AppendGetAt(nil, r1, []byte("k")), wire.StatusOK))
	if err != nil || string(v) != "1" || rev != r1 {
		t.Fatalf("at r1: %q %d %v", v, rev, err)
	}
	do(t, m, wire.OpGetAt, wire.AppendGetAt(nil, r2+1, []byte("k")), wire.StatusInvalidArgument)
	m.Compact(r2)
	msg, _ := wire.DecodeError(do(t, m, wire.OpGetAt, wire.AppendGetAt(nil, r1, []byte("k")), wire.StatusCompacted))
	if r, h, ok := wire.ParseCompacted(msg); !ok || r != r1 || h != r2 {
		t.Fatalf("compacted: %q", msg)
	}
	cas := &wire.CondTxn{
		Compares: []wire.Compare{{Target: wire.CmpValue, Op: wire.CmpEqual, Key: []byte("k"), Value: []byte("2")}},
		Then:     []wire.CondOp{{Kind: wire.TxnOpPut, Key: []byte("k"), Value: []byte("3")}, {Kind: wire.TxnOpGet, Key: []byte("k")}},
		Else:     []wire.CondOp{{Kind: wire.TxnOpGet, Key: []byte("k")}},
	}
	r, err := wire.DecodeCondTxnReply(do(t, m, wire.OpKayaTxn, wire.AppendCondTxn(nil, cas), wire.StatusOK))
	if err != nil || !r.Succeeded || r.Revision != r2+1 || len(r.Results) != 2 || string(r.Results[1].Value) != "3" || r.Results[1].ModRev != r2+1 {
		t.Fatalf("cas: %+v %v", r, err)
	}
	r, err = wire.DecodeCondTxnReply(do(t, m, wire.OpKayaTxn, wire.AppendCondTxn(nil, cas), wire.StatusOK))
	if err != nil || r.Succeeded || r.Revision != 0 || len(r.Results) != 1 || string(r.Results[0].Value) != "3" {
		t.Fatalf("cas again: %+v %v", r, err)
	}
	m.Put([]byte("k2"), []byte("x"))
	m.SetScanCap(1)
	s, err := wire.DecodeScanAtReply(do(t, m, wire.OpScanAt, wire.AppendScanAt(nil, wire.ScanAt{Prefix: []byte("k")}), wire.StatusOK))
	if err != nil || !s.More || len(s.Items) != 1 || string(s.Items[0].Key) != "k" {
		t.Fatalf("scan page 1: %+v %v", s, err)
	}
	s, err = wire.DecodeScanAtReply(do(t, m, wire.OpScanAt, wire.AppendScanAt(nil,
		wire.ScanAt{ReadTS: s.ReadRev, Prefix: []byte("k"), Start: []byte("k\x00")}), wire.StatusOK))
	if err != nil || s.More || len(s.Items) != 1 || string(s.Items[0].Key) != "k2" {
		t.Fatalf("scan page 2: %+v %v", s, err)
	}
}
