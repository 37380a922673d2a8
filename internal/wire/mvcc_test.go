package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"testing"
)

// goldenRow is one message with its exact bytes: encode must produce them,
// and decoding them must give the message back.
type goldenRow struct {
	name   string
	hex    string
	encode func() []byte
	decode func(t *testing.T, frame []byte)
}

func runGolden(t *testing.T, rows []goldenRow) {
	t.Helper()
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			want := unhex(t, r.hex)
			if got := r.encode(); !bytes.Equal(got, want) {
				t.Fatalf("encode:\n got  % x\n want % x", got, want)
			}
			r.decode(t, want)
		})
	}
}

// TestTxnWorkedBytes checks the transaction rows of the reference's hex
// examples (protocol-later.md §7), byte for byte, both ways: the bytes the
// original's Go and TypeScript clients send and expect.
func TestTxnWorkedBytes(t *testing.T) {
	b := func(s string) []byte { return []byte(s) }
	txnOp := func(kind TxnOpKind, key, value string) TxnOp {
		return TxnOp{TxnID: 1, Kind: kind, Key: b(key), Value: b(value)}
	}
	decodeOp := func(want TxnOp) func(t *testing.T, f []byte) {
		return func(t *testing.T, f []byte) {
			op, p := readOneRequest(t, f)
			got, err := DecodeTxnOp(p)
			if op != OpTxnOp || err != nil || got.TxnID != want.TxnID || got.Kind != want.Kind ||
				string(got.Key) != string(want.Key) || string(got.Value) != string(want.Value) {
				t.Fatalf("got %v %+v %v", op, got, err)
			}
		}
	}
	runGolden(t, []goldenRow{
		{
			name:   "TXN_BEGIN request",
			hex:    "01 00 00 00 09",
			encode: func() []byte { return AppendRequest(nil, OpTxnBegin, nil) },
			decode: func(t *testing.T, f []byte) {
				if op, p := readOneRequest(t, f); op != OpTxnBegin || len(p) != 0 {
					t.Fatalf("got %v % x", op, p)
				}
			},
		},
		{
			name:   "TXN_BEGIN OK txn_id=1 snapshot_ts=0",
			hex:    "12 00 00 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00",
			encode: func() []byte { return AppendResponse(nil, StatusOK, AppendTxnBeginReply(nil, 1, 0)) },
			decode: func(t *testing.T, f []byte) {
				st, p := readOneResponse(t, f)
				id, ts, err := DecodeTxnBeginReply(p)
				if st != StatusOK || err != nil || id != 1 || ts != 0 {
					t.Fatalf("got %v %d %d %v", st, id, ts, err)
				}
			},
		},
		{
			name:   "TXN_OP PUT txn=1 k=v",
			hex:    "14 00 00 00 0a 01 00 00 00 00 00 00 00 02 01 00 00 00 6b 01 00 00 00 76",
			encode: func() []byte { return AppendRequest(nil, OpTxnOp, AppendTxnOp(nil, txnOp(TxnOpPut, "k", "v"))) },
			decode: decodeOp(txnOp(TxnOpPut, "k", "v")),
		},
		{
			name:   "TXN_OP GET txn=1 k",
			hex:    "0f 00 00 00 0a 01 00 00 00 00 00 00 00 01 01 00 00 00 6b",
			encode: func() []byte { return AppendRequest(nil, OpTxnOp, AppendTxnOp(nil, txnOp(TxnOpGet, "k", "ignored"))) },
			decode: decodeOp(txnOp(TxnOpGet, "k", "")),
		},
		{
			name:   "TXN_OP DELETE txn=1 k",
			hex:    "0f 00 00 00 0a 01 00 00 00 00 00 00 00 03 01 00 00 00 6b",
			encode: func() []byte { return AppendRequest(nil, OpTxnOp, AppendTxnOp(nil, txnOp(TxnOpDelete, "k", ""))) },
			decode: decodeOp(txnOp(TxnOpDelete, "k", "")),
		},
		{
			name:   "TXN_OP GET OK v",
			hex:    "07 00 00 00 00 00 01 00 00 00 76",
			encode: func() []byte { return AppendResponse(nil, StatusOK, AppendValue(nil, b("v"))) },
			decode: func(t *testing.T, f []byte) {
				st, p := readOneResponse(t, f)
				v, err := DecodeValue(p)
				if st != StatusOK || err != nil || string(v) != "v" {
					t.Fatalf("got %v %q %v", st, v, err)
				}
			},
		},
		{
			name:   "TXN_OP GET miss: NOT_FOUND, empty body",
			hex:    "02 00 00 00 02 00",
			encode: func() []byte { return AppendResponse(nil, StatusNotFound, nil) },
			decode: func(t *testing.T, f []byte) {
				if st, p := readOneResponse(t, f); st != StatusNotFound || len(p) != 0 {
					t.Fatalf("got %v % x", st, p)
				}
			},
		},
		{
			name:   "TXN_COMMIT txn=1",
			hex:    "09 00 00 00 0b 01 00 00 00 00 00 00 00",
			encode: func() []byte { return AppendRequest(nil, OpTxnCommit, AppendTxnID(nil, 1)) },
			decode: func(t *testing.T, f []byte) {
				op, p := readOneRequest(t, f)
				id, err := DecodeTxnID(p)
				if op != OpTxnCommit || err != nil || id != 1 {
					t.Fatalf("got %v %d %v", op, id, err)
				}
			},
		},
		{
			name:   "TXN_COMMIT OK commit_ts=12",
			hex:    "0a 00 00 00 00 00 0c 00 00 00 00 00 00 00",
			encode: func() []byte { return AppendResponse(nil, StatusOK, AppendTxnCommitReply(nil, 12)) },
			decode: func(t *testing.T, f []byte) {
				st, p := readOneResponse(t, f)
				ts, err := DecodeTxnCommitReply(p)
				if st != StatusOK || err != nil || ts != 12 {
					t.Fatalf("got %v %d %v", st, ts, err)
				}
			},
		},
		{
			name:   "TXN_ROLLBACK txn=1",
			hex:    "09 00 00 00 0c 01 00 00 00 00 00 00 00",
			encode: func() []byte { return AppendRequest(nil, OpTxnRollback, AppendTxnID(nil, 1)) },
			decode: func(t *testing.T, f []byte) {
				op, p := readOneRequest(t, f)
				id, err := DecodeTxnID(p)
				if op != OpTxnRollback || err != nil || id != 1 {
					t.Fatalf("got %v %d %v", op, id, err)
				}
			},
		},
		{
			name: "unknown txn 7 → INVALID_ARGUMENT",
			hex:  "39 00 00 00 01 00 33 00 00 00" + fmt.Sprintf("%x", "invalid argument: unknown or finished transaction 7"),
			encode: func() []byte {
				return AppendResponse(nil, StatusInvalidArgument, AppendError(nil, fmt.Sprintf(MsgTxnUnknown, 7)))
			},
			decode: func(t *testing.T, f []byte) {
				st, p := readOneResponse(t, f)
				msg, err := DecodeError(p)
				id, ok := ParseTxnUnknown(msg)
				if st != StatusInvalidArgument || err != nil || !ok || id != 7 {
					t.Fatalf("got %v %q %v (%d %v)", st, msg, err, id, ok)
				}
			},
		},
		{
			name:   "TXN_CONFLICT: status 3, body txn conflict",
			hex:    "12 00 00 00 03 00 0c 00 00 00 74 78 6e 20 63 6f 6e 66 6c 69 63 74",
			encode: func() []byte { return AppendResponse(nil, StatusTxnConflict, AppendError(nil, MsgTxnConflict)) },
			decode: func(t *testing.T, f []byte) {
				st, p := readOneResponse(t, f)
				msg, err := DecodeError(p)
				if st != StatusTxnConflict || err != nil || msg != "txn conflict" {
					t.Fatalf("got %v %q %v", st, msg, err)
				}
			},
		},
	})
}

// TestTxnMessages pins the transaction error texts of the reference
// (protocol-later.md §2.1) byte for byte, and the parsers of the texts
// clients act on.
func TestTxnMessages(t *testing.T) {
	cases := map[string]string{
		fmt.Sprintf(MsgTxnUnknown, 42):           "invalid argument: unknown or finished transaction 42",
		fmt.Sprintf(MsgTxnOpUnknownKind, 4):      "unknown TXN_OP kind: 4",
		MsgACLDenied:                             "acl denied",
		MsgTxnConflict:                           "txn conflict",
		MsgTxnEmptyKey:                           "invalid argument: empty keys are not supported in MVP",
		fmt.Sprintf(MsgTxnKeyTooLong, 4097):      "invalid argument: key length 4097 exceeds max 4096",
		fmt.Sprintf(MsgTxnValueTooLong, 1<<24+1): "invalid argument: value length 16777217 exceeds max 16777216",
		MsgRaftUnavailable:                       "raft loop unavailable",
		MsgReplyDropped:                          "reply channel dropped",
		MsgEOFU8:                                 "unexpected EOF reading u8",
		fmt.Sprintf(MsgEOFU16, 1):                "unexpected EOF reading u16 (have 1 bytes)",
		fmt.Sprintf(MsgEOFU32, 0):                "unexpected EOF reading u32 (have 0 bytes)",
		fmt.Sprintf(MsgEOFU64, 7):                "unexpected EOF reading u64 (have 7 bytes)",
		fmt.Sprintf(MsgTruncated, 5, 2):          "truncated data: need 5 bytes, have 2",
		fmt.Sprintf(MsgTxnLost, 1<<32|5, 1):      "transaction 4294967301 was lost when leadership moved (term 1); start it again",
		fmt.Sprintf(MsgCompacted, 10, 20):        "mvcc: revision 10 is compacted; the oldest readable revision is 20",
		fmt.Sprintf(MsgFutureRevision, 30, 20):   "mvcc: revision 30 is in the future; the newest revision is 20",
	}
	for got, want := range cases {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	if id, term, ok := ParseTxnLost(fmt.Sprintf(MsgTxnLost, uint64(1)<<63, 9)); !ok || id != 1<<63 || term != 9 {
		t.Errorf("ParseTxnLost: %d %d %v", id, term, ok)
	}
	if r, h, ok := ParseCompacted(fmt.Sprintf(MsgCompacted, 1, uint64(1)<<63)); !ok || r != 1 || h != 1<<63 {
		t.Errorf("ParseCompacted: %d %d %v", r, h, ok)
	}
	if r, n, ok := ParseFutureRevision(fmt.Sprintf(MsgFutureRevision, 5, 4)); !ok || r != 5 || n != 4 {
		t.Errorf("ParseFutureRevision: %d %d %v", r, n, ok)
	}
	// Anything else is not mistaken for them: other texts, extra bytes,
	// signs, a different number of digits than the number formats to.
	for _, s := range []string{"", "txn conflict", fmt.Sprintf(MsgTxnUnknown, 7),
		fmt.Sprintf(MsgTxnLost, 7, 1) + " ", "x" + fmt.Sprintf(MsgTxnLost, 7, 1),
		"transaction +7 was lost when leadership moved (term 1); start it again",
		"transaction 07 was lost when leadership moved (term 1); start it again",
		"transaction -7 was lost when leadership moved (term 1); start it again",
		"transaction 7 was lost when leadership moved (term 1)"} {
		if _, _, ok := ParseTxnLost(s); ok {
			t.Errorf("ParseTxnLost accepted %q", s)
		}
	}
	for _, s := range []string{fmt.Sprintf(MsgCompacted, 1, 2) + ".", "mvcc: revision 1 is compacted",
		fmt.Sprintf(MsgFutureRevision, 1, 2)} {
		if _, _, ok := ParseCompacted(s); ok {
			t.Errorf("ParseCompacted accepted %q", s)
		}
	}
	if _, ok := ParseTxnUnknown(fmt.Sprintf(MsgTxnUnknown, 3) + "!"); ok {
		t.Error("ParseTxnUnknown accepted a longer text")
	}
}

// casTxn is the compare-and-swap of doc.go's example: if value("k") = "v"
// then put k=w else get k.
func casTxn() *CondTxn {
	return &CondTxn{
		Compares: []Compare{{Target: CmpValue, Op: CmpEqual, Key: []byte("k"), Value: []byte("v")}},
		Then:     []CondOp{{Kind: TxnOpPut, Key: []byte("k"), Value: []byte("w")}},
		Else:     []CondOp{{Kind: TxnOpGet, Key: []byte("k")}},
	}
}

// TestVersionedWorkedBytes pins the examples of doc.go byte for byte, both
// ways.
func TestVersionedWorkedBytes(t *testing.T) {
	runGolden(t, []goldenRow{
		{
			name: "KAYA_TXN compare-and-swap",
			hex: "2a 00 00 00 44 01 00 00 00 02 01 01 00 00 00 6b 01 00 00 00 76" +
				" 01 00 00 00 02 01 00 00 00 6b 01 00 00 00 77" +
				" 01 00 00 00 01 01 00 00 00 6b",
			encode: func() []byte { return AppendRequest(nil, OpKayaTxn, AppendCondTxn(nil, casTxn())) },
			decode: func(t *testing.T, f []byte) {
				op, p := readOneRequest(t, f)
				got, err := DecodeCondTxn(p)
				if op != OpKayaTxn || err != nil || !reflect.DeepEqual(got, casTxn()) {
					t.Fatalf("got %v %+v %v", op, got, err)
				}
			},
		},
		{
			name: "KAYA_TXN OK swapped",
			hex:  "10 00 00 00 00 00 01 07 00 00 00 00 00 00 00 01 00 00 00 02",
			encode: func() []byte {
				return AppendResponse(nil, StatusOK, AppendCondTxnReply(nil, &CondTxnReply{Succeeded: true, Revision: 7,
					Results: []CondResult{{Kind: TxnOpPut}}}))
			},
			decode: func(t *testing.T, f []byte) {
				st, p := readOneResponse(t, f)
				r, err := DecodeCondTxnReply(p)
				if st != StatusOK || err != nil || !r.Succeeded || r.Revision != 7 || len(r.Results) != 1 || r.Results[0].Kind != TxnOpPut {
					t.Fatalf("got %v %+v %v", st, r, err)
				}
			},
		},
		{
			name: "KAYA_TXN OK not swapped, the get's result",
			hex:  "1e 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 00 00 00 01 01 01 00 00 00 78 05 00 00 00 00 00 00 00",
			encode: func() []byte {
				return AppendResponse(nil, StatusOK, AppendCondTxnReply(nil, &CondTxnReply{
					Results: []CondResult{{Kind: TxnOpGet, Found: true, Value: []byte("x"), ModRev: 5}}}))
			},
			decode: func(t *testing.T, f []byte) {
				st, p := readOneResponse(t, f)
				r, err := DecodeCondTxnReply(p)
				want := &CondTxnReply{Results: []CondResult{{Kind: TxnOpGet, Found: true, Value: []byte("x"), ModRev: 5}}}
				if st != StatusOK || err != nil || !reflect.DeepEqual(r, want) {
					t.Fatalf("got %v %+v %v", st, r, err)
				}
			},
		},
		{
			name:   "GET_AT 5 k",
			hex:    "0e 00 00 00 45 05 00 00 00 00 00 00 00 01 00 00 00 6b",
			encode: func() []byte { return AppendRequest(nil, OpGetAt, AppendGetAt(nil, 5, []byte("k"))) },
			decode: func(t *testing.T, f []byte) {
				op, p := readOneRequest(t, f)
				ts, k, err := DecodeGetAt(p)
				if op != OpGetAt || err != nil || ts != 5 || string(k) != "k" {
					t.Fatalf("got %v %d %q %v", op, ts, k, err)
				}
			},
		},
		{
			name:   "GET_AT OK v mod_rev 3",
			hex:    "0f 00 00 00 00 00 01 00 00 00 76 03 00 00 00 00 00 00 00",
			encode: func() []byte { return AppendResponse(nil, StatusOK, AppendGetAtReply(nil, []byte("v"), 3)) },
			decode: func(t *testing.T, f []byte) {
				st, p := readOneResponse(t, f)
				v, rev, err := DecodeGetAtReply(p)
				if st != StatusOK || err != nil || string(v) != "v" || rev != 3 {
					t.Fatalf("got %v %q %d %v", st, v, rev, err)
				}
			},
		},
		{
			name: "SCAN_AT 0 prefix a, start ab, limit 2",
			hex:  "18 00 00 00 46 00 00 00 00 00 00 00 00 01 00 00 00 61 02 00 00 00 61 62 02 00 00 00",
			encode: func() []byte {
				return AppendRequest(nil, OpScanAt, AppendScanAt(nil, ScanAt{Prefix: []byte("a"), Start: []byte("ab"), Limit: 2}))
			},
			decode: func(t *testing.T, f []byte) {
				op, p := readOneRequest(t, f)
				s, err := DecodeScanAt(p)
				if op != OpScanAt || err != nil || s.ReadTS != 0 || string(s.Prefix) != "a" || string(s.Start) != "ab" || s.Limit != 2 {
					t.Fatalf("got %v %+v %v", op, s, err)
				}
			},
		},
		{
			name: "SCAN_AT OK read_rev 9, more, ab=1@4",
			hex:  "22 00 00 00 00 00 09 00 00 00 00 00 00 00 01 01 00 00 00 02 00 00 00 61 62 01 00 00 00 31 04 00 00 00 00 00 00 00",
			encode: func() []byte {
				return AppendResponse(nil, StatusOK, AppendScanAtReply(nil, &ScanAtReply{ReadRev: 9, More: true,
					Items: []VersionedKV{{Key: []byte("ab"), Value: []byte("1"), ModRev: 4}}}))
			},
			decode: func(t *testing.T, f []byte) {
				st, p := readOneResponse(t, f)
				r, err := DecodeScanAtReply(p)
				want := &ScanAtReply{ReadRev: 9, More: true, Items: []VersionedKV{{Key: []byte("ab"), Value: []byte("1"), ModRev: 4}}}
				if st != StatusOK || err != nil || !reflect.DeepEqual(r, want) {
					t.Fatalf("got %v %+v %v", st, r, err)
				}
			},
		},
		{
			name:   "COMPACTED",
			hex:    "47 00 00 00 40 00 41 00 00 00" + fmt.Sprintf("%x", "mvcc: revision 3 is compacted; the oldest readable revision is 10"),
			encode: func() []byte { return AppendResponse(nil, StatusCompacted, AppendCompacted(nil, 3, 10)) },
			decode: func(t *testing.T, f []byte) {
				st, p := readOneResponse(t, f)
				msg, err := DecodeError(p)
				r, h, ok := ParseCompacted(msg)
				if st != StatusCompacted || st.String() != "COMPACTED" || err != nil || !ok || r != 3 || h != 10 {
					t.Fatalf("got %v %q %v", st, msg, err)
				}
			},
		},
	})
	// The doc comment shows the same bytes.
	doc := docText(t)
	for _, want := range []string{
		"request  2a 00 00 00 44 | 01 00 00 00 | 02 01 01 00 00 00 6b 01 00 00 00 76",
		"swapped  10 00 00 00 00 00 | 01 | 07 00 00 00 00 00 00 00 | 01 00 00 00 | 02",
		"not      1e 00 00 00 00 00 | 00 | 00 00 00 00 00 00 00 00 | 01 00 00 00 | 01 01 01 00 00 00 78 05 00 00 00 00 00 00 00",
		"request  0e 00 00 00 45 | 05 00 00 00 00 00 00 00 | 01 00 00 00 6b",
		"reply    0f 00 00 00 00 00 | 01 00 00 00 76 | 03 00 00 00 00 00 00 00",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("doc.go lacks %q", want)
		}
	}
}

// TestCompareHolds: the protocol's compare semantics, and that Negate
// gives the complement except for value compares on a missing key (always
// false, as in etcd).
func TestCompareHolds(t *testing.T) {
	k := []byte("k")
	val := func(op CompareOp, v string) Compare {
		return Compare{Target: CmpValue, Op: op, Key: k, Value: []byte(v)}
	}
	mod := func(op CompareOp, r uint64) Compare { return Compare{Target: CmpMod, Op: op, Key: k, Rev: r} }
	cases := []struct {
		c      Compare
		exists bool
		value  string
		rev    uint64
		want   bool
	}{
		{Compare{Target: CmpExists, Op: CmpEqual, Key: k}, true, "", 5, true},
		{Compare{Target: CmpExists, Op: CmpEqual, Key: k}, false, "", 0, false},
		{Compare{Target: CmpExists, Op: CmpNotEqual, Key: k}, false, "", 0, true},
		{Compare{Target: CmpExists, Op: CmpLess, Key: k}, false, "", 0, false}, // ill-formed
		{val(CmpEqual, "v"), true, "v", 5, true},
		{val(CmpEqual, ""), true, "", 5, true},
		{val(CmpEqual, ""), false, "", 0, false},
		{val(CmpNotEqual, "v"), false, "", 0, false}, // absent: every value compare is false
		{val(CmpNotEqual, "v"), true, "w", 1, true},
		{val(CmpLess, "b"), true, "a", 1, true},
		{val(CmpLess, "b"), true, "ab", 1, true},
		{val(CmpGreater, "a"), true, "ab", 1, true},
		{val(CmpGreaterEqual, "b"), true, "b", 1, true},
		{val(CmpLessEqual, "a"), true, "b", 1, false},
		{mod(CmpEqual, 0), false, "", 99, true}, // absent: mod revision 0
		{mod(CmpEqual, 5), true, "", 5, true},
		{mod(CmpLess, 5), true, "", 4, true},
		{mod(CmpLess, 5), true, "", 5, false},
		{mod(CmpLessEqual, 5), true, "", 5, true},
		{mod(CmpGreater, 0), true, "", 1, true},
		{mod(CmpGreater, 0), false, "", 7, false},
		{mod(CmpGreaterEqual, 1<<63), true, "", 1 << 63, true},
		{Compare{Target: 9, Op: CmpEqual, Key: k}, true, "", 0, false},
		{mod(9, 1), true, "", 1, false},
	}
	for _, c := range cases {
		if got := c.c.Holds(c.exists, []byte(c.value), c.rev); got != c.want {
			t.Errorf("%s with exists=%v value=%q mod=%d: %v, want %v", c.c, c.exists, c.value, c.rev, got, c.want)
		}
	}
	seed := rand.Uint64()
	rng := rand.New(rand.NewPCG(seed, 0))
	for range 10000 {
		c := Compare{Target: CompareTarget(1 + rng.IntN(3)), Op: CompareOp(1 + rng.IntN(6)), Key: k,
			Value: []byte{byte(rng.IntN(3))}, Rev: uint64(rng.IntN(3))}
		if c.Target == CmpExists {
			c.Op = CompareOp(1 + rng.IntN(2))
		}
		exists := rng.IntN(4) > 0
		value, rev := []byte{byte(rng.IntN(3))}, uint64(rng.IntN(3))
		n := c
		n.Op = c.Op.Negate()
		a, b := c.Holds(exists, value, rev), n.Holds(exists, value, rev)
		if c.Target == CmpValue && !exists {
			if a || b {
				t.Fatalf("seed %d: value compare %s on a missing key holds", seed, c)
			}
			continue
		}
		if a == b {
			t.Fatalf("seed %d: %s and %s both %v (exists=%v value=%x mod=%d)", seed, c, n, a, exists, value, rev)
		}
	}
	for op := CmpEqual; op <= CmpGreaterEqual; op++ {
		if op.Negate().Negate() != op || op.Negate() == op {
			t.Errorf("Negate(%s) = %s", op, op.Negate())
		}
	}
	if got := fmt.Sprint(CmpEqual, CmpNotEqual, CmpLess, CmpGreater, CmpLessEqual, CmpGreaterEqual, CompareOp(0)); got != "= != < > <= >= OP(0)" {
		t.Errorf("relation names: %s", got)
	}
	if got := fmt.Sprint(casTxn().Compares[0], Compare{Target: CmpExists, Op: CmpNotEqual, Key: k}, mod(CmpLess, 5)); got != `value("k") = "v" !exists("k") mod("k") < 5` {
		t.Errorf("compare strings: %s", got)
	}
}

// TestCondTxnRoundTrip: every target, relation and kind round-trips; the
// bounds are inclusive; one more is refused before allocating.
func TestCondTxnRoundTrip(t *testing.T) {
	in := &CondTxn{}
	for op := CmpEqual; op <= CmpGreaterEqual; op++ {
		in.Compares = append(in.Compares,
			Compare{Target: CmpValue, Op: op, Key: []byte{byte(op)}, Value: []byte("v")},
			Compare{Target: CmpMod, Op: op, Key: []byte{}, Rev: uint64(op) << 40})
	}
	in.Compares = append(in.Compares, Compare{Target: CmpExists, Op: CmpEqual, Key: []byte("e")},
		Compare{Target: CmpExists, Op: CmpNotEqual, Key: []byte("\x00\xff")})
	in.Then = []CondOp{{Kind: TxnOpPut, Key: []byte("a"), Value: []byte{}}, {Kind: TxnOpDelete, Key: []byte("b")}, {Kind: TxnOpGet, Key: []byte("a")}}
	in.Else = []CondOp{{Kind: TxnOpGet, Key: []byte("c")}}
	p := AppendCondTxn(nil, in)
	out, err := DecodeCondTxn(p)
	if err != nil || !reflect.DeepEqual(out, in) {
		t.Fatalf("round trip: %+v %v", out, err)
	}
	if !in.Writes() || (&CondTxn{Then: []CondOp{{Kind: TxnOpGet}}, Else: []CondOp{{Kind: TxnOpGet}}}).Writes() || (&CondTxn{}).Writes() {
		t.Error("Writes")
	}
	// Empty: three zero counts, nothing else.
	if p := AppendCondTxn(nil, &CondTxn{}); !bytes.Equal(p, make([]byte, 12)) {
		t.Fatalf("empty: % x", p)
	}
	if out, err := DecodeCondTxn(make([]byte, 12)); err != nil || len(out.Compares)+len(out.Then)+len(out.Else) != 0 {
		t.Fatalf("empty: %+v %v", out, err)
	}
	// At the bounds.
	big := &CondTxn{}
	for range MaxCondCompares {
		big.Compares = append(big.Compares, Compare{Target: CmpExists, Op: CmpEqual, Key: []byte("k")})
	}
	for range MaxCondOps {
		big.Then = append(big.Then, CondOp{Kind: TxnOpDelete, Key: []byte("k")})
		big.Else = append(big.Else, CondOp{Kind: TxnOpGet, Key: []byte("k")})
	}
	if out, err := DecodeCondTxn(AppendCondTxn(nil, big)); err != nil || !reflect.DeepEqual(out, big) {
		t.Fatalf("at the bounds: %v", err)
	}
	for _, over := range []*CondTxn{
		{Compares: append(big.Compares, big.Compares[0])},
		{Then: append(big.Then, big.Then[0])},
		{Else: append(big.Else, big.Else[0])},
	} {
		if _, err := DecodeCondTxn(AppendCondTxn(nil, over)); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "at most 128") {
			t.Errorf("over the bound: %v", err)
		}
	}
	huge := binary.LittleEndian.AppendUint32(nil, 1<<32-1)
	if _, err := DecodeCondTxn(huge); !errors.Is(err, ErrMalformed) {
		t.Errorf("huge count: %v", err)
	}
	reply := &CondTxnReply{Succeeded: true, Revision: 1 << 50, Results: []CondResult{
		{Kind: TxnOpGet, Found: true, Value: []byte{}, ModRev: 3}, {Kind: TxnOpGet}, {Kind: TxnOpPut},
		{Kind: TxnOpDelete, Found: true}, {Kind: TxnOpDelete}}}
	if out, err := DecodeCondTxnReply(AppendCondTxnReply(nil, reply)); err != nil || !reflect.DeepEqual(out, reply) {
		t.Fatalf("reply round trip: %+v %v", out, err)
	}
}

// TestVersionedDecodersStrict: the decoders of 68–70 refuse trailing
// bytes, flags other than 0 and 1, and unknown enumeration values, with a
// message that names the problem.
func TestVersionedDecodersStrict(t *testing.T) {
	le32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	le64 := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	valid := validPayloads()
	for _, name := range []string{"CondTxn", "CondTxnReply", "GetAt", "GetAtReply", "ScanAt", "ScanAtReply"} {
		err := decoders[name](append(bytes.Clone(valid[name]), 0))
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "1 trailing bytes") {
			t.Errorf("%s with a trailing byte: %v", name, err)
		}
	}
	cases := []struct {
		dec, want string
		p         []byte
	}{
		{"CondTxn", "unknown compare target 4", cat(le32(1), []byte{4, 1}, le32(0), le32(0), le32(0))},
		{"CondTxn", "unknown compare target 0", cat(le32(1), []byte{0, 1}, le32(0), le32(0), le32(0))},
		{"CondTxn", "exists compare takes = or !=", cat(le32(1), []byte{1, 3}, le32(0), le32(0), le32(0))},
		{"CondTxn", "unknown compare relation 7", cat(le32(1), []byte{3, 7}, le32(0), le64(1), le32(0), le32(0))},
		{"CondTxn", "unknown compare relation 0", cat(le32(1), []byte{2, 0}, le32(0), le32(0), le32(0), le32(0))},
		{"CondTxn", "unknown op kind 4", cat(le32(0), le32(1), []byte{4}, le32(0), le32(0))},
		{"CondTxn", "unknown op kind 0", cat(le32(0), le32(0), le32(1), []byte{0}, le32(0))},
		{"CondTxn", "then op value length", cat(le32(0), le32(1), []byte{2}, le32(1), []byte("k"))}, // put without a value
		{"CondTxn", "compare mod_rev", cat(le32(1), []byte{3, 1}, le32(0), []byte{1, 2, 3})},
		{"CondTxn", "else op count", cat(le32(0), le32(0))},
		{"CondTxnReply", "succeeded is 2", cat([]byte{2}, le64(0), le32(0))},
		{"CondTxnReply", "found is 2", cat([]byte{1}, le64(0), le32(1), []byte{1, 2})},
		{"CondTxnReply", "deleted is 9", cat([]byte{1}, le64(0), le32(1), []byte{3, 9})},
		{"CondTxnReply", "unknown result kind 5", cat([]byte{1}, le64(0), le32(1), []byte{5})},
		{"CondTxnReply", "129 results, at most 128", cat([]byte{1}, le64(0), le32(129))},
		{"CondTxnReply", "mod_rev", cat([]byte{1}, le64(0), le32(1), []byte{1, 1}, le32(0), []byte{1})},
		{"GetAt", "key", le64(1)},
		{"GetAtReply", "mod_rev", cat(le32(1), []byte("v"))},
		{"ScanAt", "limit", cat(le64(1), le32(0), le32(0), []byte{1})},
		{"ScanAtReply", "more is 3", cat(le64(1), []byte{3}, le32(0))},
		{"ScanAtReply", "count 1000001 exceeds", cat(le64(1), []byte{0}, le32(MaxScanDecodeCount+1))},
		{"ScanAtReply", "item 0 of 2", cat(le64(1), []byte{0}, le32(2), le32(0), le32(0))},
	}
	for _, c := range cases {
		err := decoders[c.dec](c.p)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s(% x): %v, want an error mentioning %q", c.dec, c.p, err, c.want)
		}
	}
}

// docText returns the package documentation (doc.go) for tests that check
// it shows what the code does.
func docText(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDecodeCondTxnAllocations: decoding a conditional write (done in the
// apply of every KAYA_TXN, on every node) allocates its result only, not
// a field name per field decoded.
func TestDecodeCondTxnAllocations(t *testing.T) {
	p := AppendCondTxn(nil, &CondTxn{
		Compares: []Compare{
			{Target: CmpMod, Op: CmpEqual, Key: []byte("account/1"), Rev: 7},
			{Target: CmpMod, Op: CmpEqual, Key: []byte("account/2"), Rev: 9},
		},
		Then: []CondOp{{Kind: TxnOpPut, Key: []byte("account/1"), Value: []byte("90")}, {Kind: TxnOpPut, Key: []byte("account/2"), Value: []byte("110")}},
		Else: []CondOp{{Kind: TxnOpGet, Key: []byte("account/1")}, {Kind: TxnOpGet, Key: []byte("account/2")}},
	})
	// The CondTxn and its three slices.
	if n := testing.AllocsPerRun(100, func() {
		if _, err := DecodeCondTxn(p); err != nil {
			t.Fatal(err)
		}
	}); n > 4 {
		t.Fatalf("DecodeCondTxn allocates %.0f times, want at most 4", n)
	}
}
