package server

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/txn"
	"github.com/kayadb/kayadb/internal/wire"
)

// raw sends request frame bytes as they are and returns the reply frame's
// bytes as they came (length prefix included).
func (c *conn) raw(t *testing.T, req []byte) []byte {
	t.Helper()
	_ = c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.c.Write(req); err != nil {
		t.Fatal(err)
	}
	var hdr [4]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, binary.LittleEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(c.r, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr[:], body...)
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withTxnID puts id in a golden request in place of its txn id 1 (the
// 8 bytes after the frame length and opcode): the original's ids were a
// counter from 1, ours are term<<32|counter, and a client sends the id
// TXN_BEGIN gave it.
func withTxnID(t *testing.T, golden string, id uint64) []byte {
	b := unhex(t, golden)
	if binary.LittleEndian.Uint64(b[5:]) != 1 {
		t.Fatalf("golden request %s does not carry txn id 1", golden)
	}
	binary.LittleEndian.PutUint64(b[5:], id)
	return b
}

// beginRaw sends the golden TXN_BEGIN and checks the reply's layout.
func beginRaw(t *testing.T, c *conn) (id, snapshot uint64) {
	t.Helper()
	r := c.raw(t, unhex(t, "01 00 00 00 09"))
	if !bytes.Equal(r[:6], unhex(t, "12 00 00 00 00 00")) || len(r) != 22 {
		t.Fatalf("TXN_BEGIN reply % x: want 12 00 00 00 00 00 · txn_id u64 · snapshot_ts u64", r)
	}
	return binary.LittleEndian.Uint64(r[6:]), binary.LittleEndian.Uint64(r[14:])
}

func expectBytes(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	if w := unhex(t, want); !bytes.Equal(got, w) {
		t.Fatalf("%s: reply\n% x\nwant\n% x", what, got, w)
	}
}

// TestTxnOriginalClientBytes speaks the original Go client's exact
// encodings (reference protocol-later.md §7) to a real server: TXN_BEGIN,
// TXN_OP put/get/delete, TXN_COMMIT, TXN_ROLLBACK, the NOT_FOUND of a key
// the transaction deleted, the unknown-transaction error and
// TXN_CONFLICT (status 3, body "txn conflict"). Replies are compared byte
// for byte except for the ids and timestamps the server chooses.
func TestTxnOriginalClientBytes(t *testing.T) {
	c := newCluster(t, 1, clusterOpts{manual: true})
	c.Elect(1)
	cl := dial(t, c.addr(1))
	if st, _, err := cl.put("k", "old"); err != nil || st != wire.StatusOK {
		t.Fatalf("put: %v %v", st, err)
	}
	id, snap := beginRaw(t, cl)
	term := c.node(1).Node().Term()
	if id != term<<32|1 || snap != c.node(1).Store().AppliedTS() || snap == 0 {
		t.Fatalf("TXN_BEGIN: id %#x snapshot %d; want id %#x (term<<32|1), snapshot %d (the applied revision)", id, snap, term<<32|1, c.node(1).Store().AppliedTS())
	}
	ok := "02 00 00 00 00 00"
	expectBytes(t, "TXN_OP PUT k=v", cl.raw(t, withTxnID(t, "14 00 00 00 0a 01 00 00 00 00 00 00 00 02 01 00 00 00 6b 01 00 00 00 76", id)), ok)
	get := "0f 00 00 00 0a 01 00 00 00 00 00 00 00 01 01 00 00 00 6b"
	expectBytes(t, "TXN_OP GET k (own write)", cl.raw(t, withTxnID(t, get, id)), "07 00 00 00 00 00 01 00 00 00 76")
	expectBytes(t, "TXN_OP DELETE k", cl.raw(t, withTxnID(t, "0f 00 00 00 0a 01 00 00 00 00 00 00 00 03 01 00 00 00 6b", id)), ok)
	expectBytes(t, "TXN_OP GET k (deleted by the transaction)", cl.raw(t, withTxnID(t, get, id)), "02 00 00 00 02 00")
	expectBytes(t, "TXN_OP PUT k=v again", cl.raw(t, withTxnID(t, "14 00 00 00 0a 01 00 00 00 00 00 00 00 02 01 00 00 00 6b 01 00 00 00 76", id)), ok)
	// Outside the transaction nothing changed yet.
	if st, v, _ := cl.get("k"); st != wire.StatusOK || string(v) != "old" {
		t.Fatalf("GET k before the commit: %v %q", st, v)
	}
	r := cl.raw(t, withTxnID(t, "09 00 00 00 0b 01 00 00 00 00 00 00 00", id))
	if !bytes.Equal(r[:6], unhex(t, "0a 00 00 00 00 00")) || len(r) != 14 {
		t.Fatalf("TXN_COMMIT reply % x: want 0a 00 00 00 00 00 · commit_ts u64", r)
	}
	commitTS := binary.LittleEndian.Uint64(r[6:])
	v, err := c.node(1).Store().ReadAt([]byte("k"), 0)
	if err != nil || string(v.Value) != "v" || v.TS != commitTS || commitTS <= snap {
		t.Fatalf("after the commit at %d (snapshot %d): k = %q@%d %v; want v at the commit's own timestamp", commitTS, snap, v.Value, v.TS, err)
	}
	// The transaction is finished: the original's unknown text, for it
	// and for the golden id 7.
	want := fmt.Sprintf(wire.MsgTxnUnknown, id)
	if st, p, _ := cl.do(wire.OpTxnOp, wire.AppendTxnOp(nil, wire.TxnOp{TxnID: id, Kind: wire.TxnOpGet, Key: []byte("k")})); st != wire.StatusInvalidArgument || !bytes.Contains(p, []byte(want)) {
		t.Fatalf("TXN_OP after commit: %v %q, want %q", st, p, want)
	}
	expectBytes(t, "TXN_ROLLBACK of unknown txn 7", cl.raw(t, unhex(t, "09 00 00 00 0c 07 00 00 00 00 00 00 00")),
		"39 00 00 00 01 00 33 00 00 00"+hex.EncodeToString([]byte("invalid argument: unknown or finished transaction 7")))

	// TXN_CONFLICT: a key another open transaction wrote.
	a, _ := beginRaw(t, cl)
	b, _ := beginRaw(t, cl)
	put := "14 00 00 00 0a 01 00 00 00 00 00 00 00 02 01 00 00 00 6b 01 00 00 00 76"
	expectBytes(t, "txn a: PUT k", cl.raw(t, withTxnID(t, put, a)), ok)
	expectBytes(t, "txn b: PUT k", cl.raw(t, withTxnID(t, put, b)), "12 00 00 00 03 00 0c 00 00 00 74 78 6e 20 63 6f 6e 66 6c 69 63 74")
	expectBytes(t, "TXN_ROLLBACK a", cl.raw(t, withTxnID(t, "09 00 00 00 0c 01 00 00 00 00 00 00 00", a)), ok)
	expectBytes(t, "TXN_ROLLBACK b", cl.raw(t, withTxnID(t, "09 00 00 00 0c 01 00 00 00 00 00 00 00", b)), ok)
	// A key changed after the snapshot conflicts at once, too.
	d, _ := beginRaw(t, cl)
	if st, _, _ := cl.put("k", "newer"); st != wire.StatusOK {
		t.Fatal(st)
	}
	expectBytes(t, "PUT k changed after the snapshot", cl.raw(t, withTxnID(t, put, d)), "12 00 00 00 03 00 0c 00 00 00 74 78 6e 20 63 6f 6e 66 6c 69 63 74")
	// Decoding errors answer the original's texts.
	if st, p, _ := cl.do(wire.OpTxnOp, wire.AppendTxnOp(nil, wire.TxnOp{TxnID: d, Kind: wire.TxnOpGet, Key: []byte("k")})[:12]); st != wire.StatusInvalidArgument || !bytes.Contains(p, []byte("unexpected EOF reading u32 (have 3 bytes)")) {
		t.Fatalf("truncated TXN_OP: %v %q", st, p)
	}
	if st, p, _ := cl.do(wire.OpTxnOp, append(binary.LittleEndian.AppendUint64(nil, d), 9, 1, 0, 0, 0, 'k')); st != wire.StatusInvalidArgument || !bytes.Contains(p, []byte("unknown TXN_OP kind: 9")) {
		t.Fatalf("TXN_OP kind 9: %v %q", st, p)
	}
	if st, p, _ := cl.do(wire.OpTxnOp, append(binary.LittleEndian.AppendUint64(nil, d), 2, 1, 0, 0, 0, 'k')); st != wire.StatusInvalidArgument || !bytes.Contains(p, []byte("unexpected EOF reading u32 (have 0 bytes)")) {
		t.Fatalf("TXN_OP put without its value: %v %q", st, p)
	}
	if st, p, _ := cl.do(wire.OpTxnOp, wire.AppendTxnOp(nil, wire.TxnOp{TxnID: d, Kind: wire.TxnOpPut, Key: bytes.Repeat([]byte("k"), 4097)})); st != wire.StatusInvalidArgument || !bytes.Contains(p, []byte("invalid argument: key length 4097 exceeds max 4096")) {
		t.Fatalf("TXN_OP long key: %v %q", st, p)
	}
	if st, p, _ := cl.do(wire.OpTxnOp, wire.AppendTxnOp(nil, wire.TxnOp{TxnID: d, Kind: wire.TxnOpPut, Key: []byte("\x00raft/applied")})); st != wire.StatusInvalidArgument || !bytes.Contains(p, []byte("reserved for the system")) {
		t.Fatalf("TXN_OP system key: %v %q", st, p)
	}
}

// txnConn is a raw client for transactions.
type txnConn struct {
	t *testing.T
	*conn
}

func (c txnConn) begin() (id, snapshot uint64) {
	c.t.Helper()
	st, p, err := c.do(wire.OpTxnBegin, nil)
	if err != nil || st != wire.StatusOK {
		c.t.Fatalf("TXN_BEGIN: %v %v %q", st, err, p)
	}
	id, snapshot, err = wire.DecodeTxnBeginReply(p)
	if err != nil {
		c.t.Fatal(err)
	}
	return id, snapshot
}

func (c txnConn) op(id uint64, kind wire.TxnOpKind, k, v string) (wire.Status, []byte) {
	c.t.Helper()
	st, p, err := c.do(wire.OpTxnOp, wire.AppendTxnOp(nil, wire.TxnOp{TxnID: id, Kind: kind, Key: []byte(k), Value: []byte(v)}))
	if err != nil {
		c.t.Fatal(err)
	}
	return st, p
}

func (c txnConn) mustOp(id uint64, kind wire.TxnOpKind, k, v string) []byte {
	c.t.Helper()
	st, p := c.op(id, kind, k, v)
	if st != wire.StatusOK && !(kind == wire.TxnOpGet && st == wire.StatusNotFound) {
		c.t.Fatalf("TXN_OP %d %s: %v %q", kind, k, st, p)
	}
	if kind == wire.TxnOpGet && st == wire.StatusOK {
		v, err := wire.DecodeValue(p)
		if err != nil {
			c.t.Fatal(err)
		}
		return v
	}
	return nil
}

func (c txnConn) commit(id uint64) (wire.Status, []byte) {
	c.t.Helper()
	st, p, err := c.do(wire.OpTxnCommit, wire.AppendTxnID(nil, id))
	if err != nil {
		c.t.Fatal(err)
	}
	return st, p
}

func isolationCfg(iso txn.Isolation) func(uint64, *Config) {
	return func(_ uint64, cfg *Config) { cfg.TxnIsolation = iso }
}

// TestTxnWriteSkew: two transactions each read x and y (x+y ≥ 1 holds)
// and each clears a different one. Under serializable isolation (the
// default) the second commit conflicts: what it read changed, which only
// the read-set validation in the apply sees (neither wrote the other's
// key, so no early conflict applies). Under --txn-isolation snapshot both
// commit and the invariant breaks, as in the original.
func TestTxnWriteSkew(t *testing.T) {
	for _, iso := range []txn.Isolation{txn.Serializable, txn.SnapshotIsolation} {
		t.Run(iso.String(), func(t *testing.T) {
			c := newCluster(t, 1, clusterOpts{manual: true, configure: isolationCfg(iso)})
			c.Elect(1)
			tc := txnConn{t, dial(t, c.addr(1))}
			tc.put("x", "1")
			tc.put("y", "1")
			a, _ := tc.begin()
			b, _ := tc.begin()
			for _, id := range []uint64{a, b} {
				tc.mustOp(id, wire.TxnOpGet, "x", "")
				tc.mustOp(id, wire.TxnOpGet, "y", "")
			}
			tc.mustOp(a, wire.TxnOpPut, "x", "0")
			tc.mustOp(b, wire.TxnOpPut, "y", "0")
			if st, p := tc.commit(a); st != wire.StatusOK {
				t.Fatalf("commit a: %v %q", st, p)
			}
			st, p := tc.commit(b)
			_, x, _ := tc.get("x")
			_, y, _ := tc.get("y")
			switch iso {
			case txn.Serializable:
				if st != wire.StatusTxnConflict || string(p[4:]) != wire.MsgTxnConflict {
					t.Fatalf("serializable: commit b answered %v %q; want TXN_CONFLICT (write skew)", st, p)
				}
				if string(x)+string(y) != "01" {
					t.Fatalf("serializable: x=%s y=%s, want x=0 y=1", x, y)
				}
			case txn.SnapshotIsolation:
				if st != wire.StatusOK {
					t.Fatalf("snapshot isolation: commit b answered %v %q; want OK (write skew is allowed)", st, p)
				}
				if string(x)+string(y) != "00" {
					t.Fatalf("snapshot isolation: x=%s y=%s, want both 0", x, y)
				}
			}
			// The conflicted transaction was released, and a retried
			// commit answers the first outcome.
			if st2, p2 := tc.commit(b); st2 != st || !bytes.Equal(p2, p) {
				t.Fatalf("retried commit of b: %v %q, first %v %q", st2, p2, st, p)
			}
			if n := c.node(1).txns.Open(); n != 0 {
				t.Fatalf("%d transactions still open", n)
			}
		})
	}
}

// TestTxnOrderPerTransaction: on one connection, a transaction's request
// waits for that transaction's previous one only (not for other
// transactions', which would serialize every transaction of a shared
// connection behind each other's commits); a commit or rollback ends the
// entry; done transactions are pruned once many are recorded.
func TestTxnOrderPerTransaction(t *testing.T) {
	o := txnOrder{}
	a1, b1, a2 := make(chan struct{}), make(chan struct{}), make(chan struct{})
	if prev := o.order(1, wire.OpTxnOp, a1); prev != nil {
		t.Fatal("the first request of a transaction waits for something")
	}
	if prev := o.order(2, wire.OpTxnOp, b1); prev != nil {
		t.Fatal("another transaction's request waits for the first one's")
	}
	if prev := o.order(1, wire.OpTxnOp, a2); prev != (<-chan struct{})(a1) {
		t.Fatal("a transaction's second request does not wait for its first")
	}
	if prev := o.order(1, wire.OpTxnCommit, make(chan struct{})); prev != (<-chan struct{})(a2) {
		t.Fatal("a commit does not wait for the transaction's last request")
	}
	if _, ok := o[1]; ok {
		t.Fatal("a committed transaction stays recorded")
	}
	close(b1)
	for i := uint64(10); len(o) < txnOrderPrune; i++ {
		ch := make(chan struct{})
		close(ch)
		o.order(i, wire.OpTxnOp, ch)
	}
	o.order(99999, wire.OpTxnOp, make(chan struct{}))
	if len(o) != 1 {
		t.Fatalf("%d transactions recorded after pruning, want only the open one", len(o))
	}
}
