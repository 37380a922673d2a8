package wire

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

var updateFuzzSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite the committed seed corpora under testdata/fuzz")

// frameSeeds are byte streams for the frame readers: the worked examples,
// pipelined frames, and the malformed cases.
func frameSeeds() [][]byte {
	seeds := [][]byte{
		{},
		{0, 0, 0, 0},
		{1, 0, 0, 0},
		{0, 0, 0, 4, 0},                      // frame_len 64 MiB, nothing after
		{1, 0, 0, 4},                         // frame_len 64 MiB + 1
		{0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}, // frame_len 4 GiB
		{3, 0, 0},                            // truncated header
		{9, 0, 0, 0, 1, 2},                   // truncated body
	}
	worked := []string{
		"13000000010500000005000000" + "68656c6c6f776f726c64",
		"0a00000002050000006865 6c6c6f",
		"0b0000000000050000 00776f726c64",
		"020000000200",
		"020000000000",
		"0100000005",
		"080000000000 6c6561646572",
		"03000000000100",
		"0400000000000100",
		"100000000a00 3132372e302e302e313a37333739",
		"17000000014 34c49454e5400030074 6f6b01000000010000006162",
		"1500000008 41444d494e0003 00746f6b080400000000000000",
		"09000000080400000000000000",
		// Transactions (protocol-later.md §7) and the versioned-data opcodes.
		"0100000009",
		"120000000000 0100000000000000 0000000000000000",
		"140000000a 0100000000000000 02 010000006b 0100000076",
		"0f0000000a 0100000000000000 01 010000006b",
		"090000000b 0100000000000000",
		"0a0000000000 0c00000000000000",
		"120000000300 0c000000 74786e20636f6e666c696374",
		"2a00000044 01000000 0201 010000006b 0100000076 01000000 02 010000006b 0100000077 01000000 01 010000006b",
		"0e00000045 0500000000000000 010000006b",
		"1800000046 0000000000000000 0100000061 020000006162 02000000",
	}
	var all []byte
	for _, w := range worked {
		b, err := hex.DecodeString(stripSpaces(w))
		if err != nil {
			panic(err)
		}
		seeds = append(seeds, b)
		all = append(all, b...)
	}
	return append(seeds, all) // pipelined
}

func stripSpaces(s string) string {
	return string(slices.DeleteFunc([]byte(s), func(c byte) bool { return c == ' ' }))
}

// payloadSeeds are payloads for the decoders: one valid payload per decoder
// and the negative conformance vectors.
func payloadSeeds() [][]byte {
	var seeds [][]byte
	valid := validPayloads()
	names := make([]string, 0, len(valid))
	for n := range valid {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		seeds = append(seeds, valid[n])
	}
	seeds = append(seeds, AppendCompacted(nil, 3, 10), AppendError(nil, fmt.Sprintf(MsgTxnLost, 1<<32|1, 1)))
	for _, h := range []string{"0500", "64000000", "00842e45", "03000000fffefd", "01000000", "0100",
		"00000000000000000000000000",                 // an empty KAYA_TXN with a trailing byte
		"01000000 0103 010000006b 00000000 00000000", // exists with <
		"00 0000000000000000 01000000 05",            // unknown result kind
		"0000000000000000 02 00000000",               // SCAN_AT reply, more = 2
		"0c000000" + "74786e20636f6e666c696374",
	} {
		h = stripSpaces(h)
		b, _ := hex.DecodeString(h)
		seeds = append(seeds, b)
	}
	return seeds
}

type authSeed struct {
	p  []byte
	op byte
}

func authSeeds() []authSeed {
	return []authSeed{
		{AppendAdmin(nil, "tok", OpRemoveMember, AppendRemoveMember(nil, 4)), byte(OpRemoveMember)},
		{AppendAdmin(nil, "tok", OpRemoveMember, nil), byte(OpAddMember)},
		{AppendAdmin(nil, "", OpAddMember, []byte("x")), byte(OpAddMember)},
		{AppendClient(nil, "tok", AppendPut(nil, []byte("a"), []byte("b"))), byte(OpPut)},
		{AppendClient(nil, "クライアント", nil), byte(OpGet)},
		{[]byte("ADMIN\x00\xff\xff"), byte(OpAddMember)},
		{[]byte("CLIENT\x00\x01"), byte(OpGet)},
		{AppendRemoveMember(nil, 4), byte(OpRemoveMember)},
	}
}

// checkFrameErr fails unless err is one of the documented frame errors.
func checkFrameErr(t *testing.T, err error) {
	t.Helper()
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrFrameEmpty) ||
		errors.Is(err, ErrFrameTooLarge) || errors.Is(err, ErrFrameTooSmall) {
		return
	}
	t.Fatalf("undocumented frame error: %v", err)
}

func FuzzReadRequest(f *testing.F) {
	for _, s := range frameSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		var buf, again []byte
		for {
			op, p, b, err := ReadRequest(r, buf)
			buf = b
			if err != nil {
				checkFrameErr(t, err)
				break
			}
			again = AppendRequest(again, op, p)
		}
		// What was read re-encodes to exactly the bytes it came from.
		if !bytes.HasPrefix(data, again) {
			t.Fatalf("re-encoded frames are not a prefix of the input")
		}
	})
}

// stepSeeds are request streams for FuzzReadRequestInSteps: the frame
// seeds and frames carrying the auth seeds.
func stepSeeds() [][]byte {
	seeds := frameSeeds()
	for _, a := range authSeeds() {
		seeds = append(seeds, AppendRequest(nil, Opcode(a.op), a.p))
	}
	return seeds
}

// FuzzReadRequestInSteps: reading a stream with ReadRequestHeader,
// ReadAuthPrefix and ReadPayload yields the frames ReadRequest yields, the
// prefix step reads no more than the prefix, and the credential decision
// taken on the prefix alone is the one taken on the whole payload.
func FuzzReadRequestInSteps(f *testing.F) {
	for _, s := range stepSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		whole := bufio.NewReader(bytes.NewReader(data))
		steps := bufio.NewReader(bytes.NewReader(data))
		for {
			op, p, _, err := ReadRequest(whole, nil)
			sop, n, serr := ReadRequestHeader(steps)
			if serr != nil {
				if err == nil {
					t.Fatalf("ReadRequestHeader failed (%v) where ReadRequest read a frame", serr)
				}
				checkFrameErr(t, serr)
				return
			}
			marker := ""
			switch {
			case IsAdmin(sop):
				marker = AdminPrefix
			case IsData(sop):
				marker = ClientPrefix
			}
			var head []byte
			if marker != "" {
				head, serr = ReadAuthPrefix(steps, marker, n, nil)
				if serr == nil && (len(head) > n || len(head) > MaxAuthPrefixSize) {
					t.Fatalf("ReadAuthPrefix read %d bytes of a %d-byte payload", len(head), n)
				}
			}
			var sp []byte
			if serr == nil {
				sp, serr = ReadPayload(steps, head, n)
			}
			if (err == nil) != (serr == nil) {
				t.Fatalf("ReadRequest: %v; in steps: %v", err, serr)
			}
			if err != nil {
				checkFrameErr(t, serr)
				return
			}
			if op != sop || !bytes.Equal(p, sp) {
				t.Fatalf("in steps: opcode %v, %d bytes; ReadRequest: opcode %v, %d bytes", sop, len(sp), op, len(p))
			}
			switch marker {
			case ClientPrefix:
				tok, pre, _, err := SplitClient(head)
				wtok, wpre, _, werr := SplitClient(p)
				if tok != wtok || pre != wpre || (err == nil) != (werr == nil) {
					t.Fatalf("CLIENT prefix: on the prefix %q %v %v; on the payload %q %v %v", tok, pre, err, wtok, wpre, werr)
				}
			case AdminPrefix:
				tok, pre, _, err := SplitAdmin(op, head)
				wtok, wpre, _, werr := SplitAdmin(op, p)
				if tok != wtok || pre != wpre || (err == nil) != (werr == nil) || errors.Is(err, ErrAdminMismatch) != errors.Is(werr, ErrAdminMismatch) {
					t.Fatalf("ADMIN prefix: on the prefix %q %v %v; on the payload %q %v %v", tok, pre, err, wtok, wpre, werr)
				}
			}
		}
	})
}

func FuzzReadResponse(f *testing.F) {
	for _, s := range frameSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		var buf, again []byte
		for {
			st, p, b, err := ReadResponse(r, buf)
			buf = b
			if err != nil {
				checkFrameErr(t, err)
				break
			}
			again = AppendResponse(again, st, p)
		}
		if !bytes.HasPrefix(data, again) {
			t.Fatalf("re-encoded frames are not a prefix of the input")
		}
	})
}

// FuzzDecodePayloads feeds the input to every decoder. A decoder must not
// panic, must fail only with ErrMalformed, and what it decodes must encode
// and decode again to the same value.
func FuzzDecodePayloads(f *testing.F) {
	for _, s := range payloadSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		for name, dec := range decoders {
			if err := dec(p); err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrAdminMismatch) {
				t.Fatalf("%s: %v does not match ErrMalformed", name, err)
			}
		}
		same := func(what string, a, b any) {
			if fmt.Sprintf("%q", a) != fmt.Sprintf("%q", b) {
				t.Fatalf("%s: %q re-decoded as %q", what, a, b)
			}
		}
		if v, err := DecodeHello(p); err == nil {
			v2, _ := DecodeHello(AppendHello(nil, v))
			same("hello", v, v2)
		}
		if k, v, err := DecodePut(p); err == nil {
			k2, v2, err := DecodePut(AppendPut(nil, k, v))
			same("put", []any{k, v, nil}, []any{k2, v2, err})
		}
		if k, err := DecodeKey(p); err == nil {
			k2, err := DecodeKey(AppendKey(nil, k))
			same("key", []any{k, nil}, []any{k2, err})
		}
		if v, err := DecodeValue(p); err == nil {
			v2, err := DecodeValue(AppendValue(nil, v))
			same("value", []any{v, nil}, []any{v2, err})
		}
		if items, err := DecodeScanResult(p); err == nil {
			items2, err := DecodeScanResult(AppendScanResult(nil, items))
			same("scan", []any{items, nil}, []any{items2, err})
		}
		if m, err := DecodeError(p); err == nil {
			m2, err := DecodeError(AppendError(nil, m))
			same("error", []any{m, nil}, []any{m2, err})
		}
		if h, err := DecodeNotLeader(p); err == nil && h != string(p) {
			t.Fatalf("not leader: %q from %q", h, p)
		}
		if m, err := DecodeAddMember(p); err == nil {
			m2, err := DecodeAddMember(AppendAddMember(nil, m.NodeID, m.RaftAddr, m.ClientAddr, m.Learner))
			if err != nil || m2.NodeID != m.NodeID || m2.RaftAddr != m.RaftAddr || m2.ClientAddr != m.ClientAddr ||
				(m.Learner == nil) != (m2.Learner == nil) || m.IsLearner() != m2.IsLearner() {
				t.Fatalf("add member: %+v re-decoded as %+v, %v", m, m2, err)
			}
		}
		if id, err := DecodeRemoveMember(p); err == nil {
			id2, _ := DecodeRemoveMember(AppendRemoveMember(nil, id))
			same("remove member", id, id2)
		}
		if id, err := DecodePromoteLearner(p); err == nil {
			id2, _ := DecodePromoteLearner(AppendPromoteLearner(nil, id))
			same("promote learner", id, id2)
		}
		if g, id, err := DecodeTransferLeader(p); err == nil {
			g2, id2, _ := DecodeTransferLeader(AppendTransferLeader(nil, g, id))
			same("transfer leader", []uint64{g, id}, []uint64{g2, id2})
		}
		if s, err := DecodeStats(p); err == nil {
			out, err := AppendStats(nil, s)
			if err != nil {
				t.Fatalf("stats %+v does not encode: %v", s, err)
			}
			s2, err := DecodeStats(out)
			if err != nil {
				t.Fatalf("stats: %s does not decode: %v", out, err)
			}
			out2, _ := AppendStats(nil, s2)
			if !bytes.Equal(out, out2) {
				t.Fatalf("stats not stable:\n%s\n%s", out, out2)
			}
		}
		if id, ts, err := DecodeTxnBeginReply(p); err == nil {
			id2, ts2, _ := DecodeTxnBeginReply(AppendTxnBeginReply(nil, id, ts))
			same("txn begin", []uint64{id, ts}, []uint64{id2, ts2})
		}
		if op, err := DecodeTxnOp(p); err == nil {
			op2, err := DecodeTxnOp(AppendTxnOp(nil, op))
			same("txn op", []any{op, nil}, []any{op2, err})
		}
		if id, err := DecodeTxnID(p); err == nil {
			id2, _ := DecodeTxnID(AppendTxnID(nil, id))
			same("txn id", id, id2)
		}
		if ts, err := DecodeTxnCommitReply(p); err == nil {
			ts2, _ := DecodeTxnCommitReply(AppendTxnCommitReply(nil, ts))
			same("txn commit", ts, ts2)
		}
		if req, err := DecodeCDCPoll(p); err == nil {
			req2, err := DecodeCDCPoll(AppendCDCPoll(nil, req))
			same("cdc poll", []any{req, nil}, []any{req2, err})
		}
		if evs, err := DecodeCDCPollReply(p); err == nil {
			evs2, err := DecodeCDCPollReply(AppendCDCPollReply(nil, evs))
			same("cdc poll reply", []any{evs, nil}, []any{evs2, err})
		}
		if r, err := DecodeWatchCreate(p); err == nil {
			r2, err := DecodeWatchCreate(AppendWatchCreate(nil, r))
			same("watch create", []any{r, nil}, []any{r2, err})
		}
		if r, err := DecodeWatchCreated(p); err == nil {
			r2, err := DecodeWatchCreated(AppendWatchCreated(nil, r))
			same("watch created", []any{r, nil}, []any{r2, err})
		}
		if id, err := DecodeWatchCancel(p); err == nil {
			id2, err := DecodeWatchCancel(AppendWatchCancel(nil, id))
			same("watch cancel", []any{id, nil}, []any{id2, err})
		}
		if ev, err := DecodeWatchEvent(p); err == nil {
			if enc := AppendWatchEvent(nil, &ev); !bytes.Equal(enc, p) {
				t.Fatalf("watch event %+v re-encodes as %x, not %x", ev, enc, p)
			}
		}
		if r, err := DecodeCDCConsumer(p); err == nil {
			r2, err := DecodeCDCConsumer(AppendCDCConsumer(nil, r))
			same("cdc consumer", []any{r, nil}, []any{r2, err})
		}
		if c, seq, has, err := DecodeCDCCheckpointAt(p); err == nil && has {
			c2, seq2, has2, err := DecodeCDCCheckpointAt(AppendCDCCheckpointAt(nil, c, seq))
			same("cdc checkpoint at", []any{c, seq, has, nil}, []any{c2, seq2, has2, err})
		}
		if c, err := DecodeCDCCheckpoint(p); err == nil {
			c2, err := DecodeCDCCheckpoint(AppendCDCCheckpoint(nil, c))
			same("cdc checkpoint", []any{c, nil}, []any{c2, err})
		}
		// The versioned-data decoders are strict and their encodings
		// canonical: what decodes re-encodes to exactly the input.
		exact := func(what string, again []byte) {
			if !bytes.Equal(again, p) {
				t.Fatalf("%s: re-encoded % x from % x", what, again, p)
			}
		}
		if txn, err := DecodeCondTxn(p); err == nil {
			exact("KAYA_TXN request", AppendCondTxn(nil, txn))
			for _, c := range txn.Compares {
				// Every decoded compare is well formed, and its negation
				// is its complement (but for value compares on a missing
				// key, which are always false).
				n := c
				n.Op = c.Op.Negate()
				for _, exists := range []bool{false, true} {
					a, b := c.Holds(exists, p, uint64(len(p))), n.Holds(exists, p, uint64(len(p)))
					if a == b && (c.Target != CmpValue || exists) {
						t.Fatalf("%s and %s agree (%v) with exists=%v", c, n, a, exists)
					}
				}
			}
		}
		if r, err := DecodeCondTxnReply(p); err == nil {
			exact("KAYA_TXN reply", AppendCondTxnReply(nil, r))
		}
		if ts, k, err := DecodeGetAt(p); err == nil {
			exact("GET_AT request", AppendGetAt(nil, ts, k))
		}
		if v, rev, err := DecodeGetAtReply(p); err == nil {
			exact("GET_AT reply", AppendGetAtReply(nil, v, rev))
		}
		if s, err := DecodeScanAt(p); err == nil {
			exact("SCAN_AT request", AppendScanAt(nil, s))
		}
		if r, err := DecodeScanAtReply(p); err == nil {
			exact("SCAN_AT reply", AppendScanAtReply(nil, r))
		}
		if msg, err := DecodeError(p); err == nil {
			if r, h, ok := ParseCompacted(msg); ok && !bytes.Equal(AppendCompacted(nil, r, h), p[:4+len(msg)]) {
				t.Fatalf("compacted %q does not re-encode", msg)
			}
			if id, term, ok := ParseTxnLost(msg); ok && fmt.Sprintf(MsgTxnLost, id, term) != msg {
				t.Fatalf("txn lost %q does not re-format", msg)
			}
		}
	})
}

// FuzzAuthPrefixes checks that a prefix that decodes re-encodes to exactly
// the input, and that the server-side split agrees with the decoders.
func FuzzAuthPrefixes(f *testing.F) {
	for _, s := range authSeeds() {
		f.Add(s.p, s.op)
	}
	f.Fuzz(func(t *testing.T, p []byte, frameOp byte) {
		tok, op, inner, err := DecodeAdmin(p)
		if err == nil {
			if !HasAdminPrefix(p) {
				t.Fatal("DecodeAdmin accepted a payload without the prefix")
			}
			if got := AppendAdmin(nil, tok, op, inner); !bytes.Equal(got, p) {
				t.Fatalf("admin: re-encoded % x from % x", got, p)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatalf("admin: %v", err)
		}
		stok, prefixed, sinner, serr := SplitAdmin(Opcode(frameOp), p)
		switch {
		case !HasAdminPrefix(p):
			if serr != nil || prefixed || !bytes.Equal(sinner, p) {
				t.Fatal("SplitAdmin changed a bare payload")
			}
		case err != nil:
			if !errors.Is(serr, ErrMalformed) {
				t.Fatalf("SplitAdmin: %v, DecodeAdmin: %v", serr, err)
			}
		case op != Opcode(frameOp):
			if !errors.Is(serr, ErrAdminMismatch) {
				t.Fatalf("SplitAdmin: %v, want ErrAdminMismatch", serr)
			}
		default:
			if serr != nil || !prefixed || stok != tok || !bytes.Equal(sinner, inner) {
				t.Fatalf("SplitAdmin disagrees with DecodeAdmin: %v", serr)
			}
		}

		ctok, cinner, err := DecodeClient(p)
		if err == nil {
			if got := AppendClient(nil, ctok, cinner); !bytes.Equal(got, p) {
				t.Fatalf("client: re-encoded % x from % x", got, p)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatalf("client: %v", err)
		}
		stok, prefixed, sinner, serr = SplitClient(p)
		switch {
		case !HasClientPrefix(p):
			if serr != nil || prefixed || !bytes.Equal(sinner, p) {
				t.Fatal("SplitClient changed a bare payload")
			}
		case err != nil:
			if !errors.Is(serr, ErrMalformed) {
				t.Fatalf("SplitClient: %v, DecodeClient: %v", serr, err)
			}
		default:
			if serr != nil || !prefixed || stok != ctok || !bytes.Equal(sinner, cinner) {
				t.Fatalf("SplitClient disagrees with DecodeClient: %v", serr)
			}
		}
		if HasAdminPrefix(p) && HasClientPrefix(p) {
			t.Fatal("both prefixes")
		}
	})
}

// TestWriteFuzzSeeds rewrites the committed seed corpora from the seed
// lists above when run with -update-fuzz-seeds; otherwise it checks that
// every seed is committed.
func TestWriteFuzzSeeds(t *testing.T) {
	corpora := map[string][]string{}
	for _, s := range frameSeeds() {
		e := "go test fuzz v1\n[]byte(" + strconv.Quote(string(s)) + ")\n"
		corpora["FuzzReadRequest"] = append(corpora["FuzzReadRequest"], e)
		corpora["FuzzReadResponse"] = append(corpora["FuzzReadResponse"], e)
	}
	for _, s := range stepSeeds() {
		corpora["FuzzReadRequestInSteps"] = append(corpora["FuzzReadRequestInSteps"],
			"go test fuzz v1\n[]byte("+strconv.Quote(string(s))+")\n")
	}
	for _, s := range payloadSeeds() {
		corpora["FuzzDecodePayloads"] = append(corpora["FuzzDecodePayloads"],
			"go test fuzz v1\n[]byte("+strconv.Quote(string(s))+")\n")
	}
	for _, s := range authSeeds() {
		corpora["FuzzAuthPrefixes"] = append(corpora["FuzzAuthPrefixes"],
			"go test fuzz v1\n[]byte("+strconv.Quote(string(s.p))+")\nbyte("+strconv.QuoteRune(rune(s.op))+")\n")
	}
	for target, entries := range corpora {
		dir := filepath.Join("testdata", "fuzz", target)
		for _, e := range entries {
			sum := sha256.Sum256([]byte(e))
			path := filepath.Join(dir, "seed-"+hex.EncodeToString(sum[:8]))
			if *updateFuzzSeeds {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(e), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != e {
				t.Errorf("seed %s missing or stale (run go test -run TestWriteFuzzSeeds -update-fuzz-seeds): %v", path, err)
			}
		}
	}
}
