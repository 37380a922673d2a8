package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// decoders lists every payload decoder by name, for the table tests and the
// fuzz target.
var decoders = map[string]func(p []byte) error{
	"Hello":            func(p []byte) error { _, err := DecodeHello(p); return err },
	"Put":              func(p []byte) error { _, _, err := DecodePut(p); return err },
	"Key":              func(p []byte) error { _, err := DecodeKey(p); return err },
	"Value":            func(p []byte) error { _, err := DecodeValue(p); return err },
	"ScanResult":       func(p []byte) error { _, err := DecodeScanResult(p); return err },
	"Error":            func(p []byte) error { _, err := DecodeError(p); return err },
	"NotLeader":        func(p []byte) error { _, err := DecodeNotLeader(p); return err },
	"Health":           func(p []byte) error { _, err := DecodeHealth(p); return err },
	"Text":             func(p []byte) error { _, err := DecodeText(p); return err },
	"AddMember":        func(p []byte) error { _, err := DecodeAddMember(p); return err },
	"RemoveMember":     func(p []byte) error { _, err := DecodeRemoveMember(p); return err },
	"PromoteLearner":   func(p []byte) error { _, err := DecodePromoteLearner(p); return err },
	"TransferLeader":   func(p []byte) error { _, _, err := DecodeTransferLeader(p); return err },
	"Stats":            func(p []byte) error { _, err := DecodeStats(p); return err },
	"TxnBeginReply":    func(p []byte) error { _, _, err := DecodeTxnBeginReply(p); return err },
	"TxnOp":            func(p []byte) error { _, err := DecodeTxnOp(p); return err },
	"TxnID":            func(p []byte) error { _, err := DecodeTxnID(p); return err },
	"TxnCommitReply":   func(p []byte) error { _, err := DecodeTxnCommitReply(p); return err },
	"CDCPoll":          func(p []byte) error { _, err := DecodeCDCPoll(p); return err },
	"CDCPollReply":     func(p []byte) error { _, err := DecodeCDCPollReply(p); return err },
	"CDCCheckpoint":    func(p []byte) error { _, err := DecodeCDCCheckpoint(p); return err },
	"CDCCheckpointAt":  func(p []byte) error { _, _, _, err := DecodeCDCCheckpointAt(p); return err },
	"CDCConsumer":      func(p []byte) error { _, err := DecodeCDCConsumer(p); return err },
	"WatchCreate":      func(p []byte) error { _, err := DecodeWatchCreate(p); return err },
	"WatchCreated":     func(p []byte) error { _, err := DecodeWatchCreated(p); return err },
	"WatchCancel":      func(p []byte) error { _, err := DecodeWatchCancel(p); return err },
	"WatchEvent":       func(p []byte) error { _, err := DecodeWatchEvent(p); return err },
	"Seq":              func(p []byte) error { _, err := DecodeSeq(p); return err },
	"CondTxn":          func(p []byte) error { _, err := DecodeCondTxn(p); return err },
	"CondTxnReply":     func(p []byte) error { _, err := DecodeCondTxnReply(p); return err },
	"GetAt":            func(p []byte) error { _, _, err := DecodeGetAt(p); return err },
	"GetAtReply":       func(p []byte) error { _, _, err := DecodeGetAtReply(p); return err },
	"ScanAt":           func(p []byte) error { _, err := DecodeScanAt(p); return err },
	"ScanAtReply":      func(p []byte) error { _, err := DecodeScanAtReply(p); return err },
	"Admin":            func(p []byte) error { _, _, _, err := DecodeAdmin(p); return err },
	"Client":           func(p []byte) error { _, _, err := DecodeClient(p); return err },
	"SplitAdmin(PUT)":  func(p []byte) error { _, _, _, err := SplitAdmin(OpRemoveMember, p); return err },
	"SplitClient(PUT)": func(p []byte) error { _, _, _, err := SplitClient(p); return err },
}

// strictDecoders are the decoders that refuse trailing bytes (the
// versioned-data opcodes 68–70).
var strictDecoders = map[string]bool{"CondTxn": true, "CondTxnReply": true, "GetAt": true, "GetAtReply": true,
	"ScanAt": true, "ScanAtReply": true, "WatchCreate": true, "WatchCreated": true, "WatchCancel": true,
	"WatchEvent": true, "CDCConsumer": true, "Seq": true}

// validPayloads holds one well-formed payload per decoder.
func validPayloads() map[string][]byte {
	yes := true
	return map[string][]byte{
		"Hello":           AppendHello(nil, 1),
		"Put":             AppendPut(nil, []byte("key"), []byte("value")),
		"Key":             AppendKey(nil, []byte("key")),
		"Value":           AppendValue(nil, []byte("value")),
		"ScanResult":      AppendScanResult(nil, []KV{{[]byte("a"), []byte("1")}, {[]byte("b"), []byte("2")}}),
		"Error":           AppendError(nil, "boom"),
		"NotLeader":       AppendNotLeader(nil, "10.0.0.1:7379"),
		"Health":          AppendHealth(nil, HealthFollower),
		"Text":            AppendText(nil, fmt.Sprintf(MsgMembershipProposed, 7)),
		"AddMember":       AppendAddMember(nil, 3, "h:7481", "h:7379", &yes),
		"RemoveMember":    AppendRemoveMember(nil, 3),
		"PromoteLearner":  AppendPromoteLearner(nil, 3),
		"TransferLeader":  AppendTransferLeader(nil, 0, 3),
		"Stats":           []byte(`{"role":"leader","term":1,"commit_index":2,"applied_index":2,"peer_count":2,"raft_groups":1,"engine":{"put_count":5}}`),
		"TxnBeginReply":   AppendTxnBeginReply(nil, 1, 2),
		"TxnOp":           AppendTxnOp(nil, TxnOp{TxnID: 1, Kind: TxnOpPut, Key: []byte("k"), Value: []byte("v")}),
		"TxnID":           AppendTxnID(nil, 9),
		"TxnCommitReply":  AppendTxnCommitReply(nil, 9),
		"CDCPoll":         AppendCDCPoll(nil, CDCPoll{Consumer: "c", FromSeq: 1, Limit: 2}),
		"CDCPollReply":    AppendCDCPollReply(nil, []CDCEvent{{1, CDCOpPut, []byte("k"), []byte("v")}, {2, CDCOpDelete, []byte("k"), nil}}),
		"CDCCheckpoint":   AppendCDCCheckpoint(nil, "c"),
		"CDCCheckpointAt": AppendCDCCheckpointAt(nil, "c", 7),
		"CDCConsumer":     AppendCDCConsumer(nil, CDCConsumerRequest{Action: CDCConsumerDelete, Consumer: "c"}),
		"WatchCreate":     AppendWatchCreate(nil, WatchCreate{Kind: WatchPrefix, StartRevision: 3, ProgressMs: 100, Key: []byte("p/")}),
		"WatchCreated":    AppendWatchCreated(nil, WatchCreated{ID: 1, StartRevision: 2}),
		"WatchCancel":     AppendWatchCancel(nil, 4),
		"Seq":             AppendSeq(nil, 3),
		"WatchEvent":      AppendWatchEvent(nil, &WatchEvent{ID: 1, Kind: WatchEvents, Revision: 5, Events: []CDCEvent{{5, CDCOpPut, []byte("k"), []byte("v")}}}),
		"CondTxn":         AppendCondTxn(nil, casTxn()),
		"CondTxnReply": AppendCondTxnReply(nil, &CondTxnReply{Succeeded: true, Revision: 9, Results: []CondResult{
			{Kind: TxnOpGet, Found: true, Value: []byte("v"), ModRev: 3}, {Kind: TxnOpPut}, {Kind: TxnOpDelete, Found: true}}}),
		"GetAt":            AppendGetAt(nil, 5, []byte("k")),
		"GetAtReply":       AppendGetAtReply(nil, []byte("v"), 3),
		"ScanAt":           AppendScanAt(nil, ScanAt{ReadTS: 5, Prefix: []byte("a"), Start: []byte("ab"), Limit: 10}),
		"ScanAtReply":      AppendScanAtReply(nil, &ScanAtReply{ReadRev: 5, More: true, Items: []VersionedKV{{Key: []byte("ab"), Value: []byte("1"), ModRev: 4}}}),
		"Admin":            AppendAdmin(nil, "tok", OpRemoveMember, AppendRemoveMember(nil, 4)),
		"Client":           AppendClient(nil, "tok", AppendKey(nil, []byte("k"))),
		"SplitAdmin(PUT)":  AppendAdmin(nil, "tok", OpRemoveMember, nil),
		"SplitClient(PUT)": AppendClient(nil, "tok", nil),
	}
}

// TestDecodersShortPayloads cuts every valid payload at every length: each
// shorter prefix that fails must fail with ErrMalformed and a message; the
// full payload, and the payload with trailing bytes, must decode.
func TestDecodersShortPayloads(t *testing.T) {
	valid := validPayloads()
	for name, dec := range decoders {
		p, ok := valid[name]
		if !ok {
			t.Fatalf("no valid payload for %s", name)
		}
		if err := dec(p); err != nil {
			t.Fatalf("%s: valid payload: %v", name, err)
		}
		// Trailing bytes are ignored (except by the raw-text decoders and
		// STATS, where the whole payload is the value), and refused by the
		// strict decoders of the versioned-data opcodes.
		err := dec(append(bytes.Clone(p), 0x41, 0x42))
		switch {
		case strictDecoders[name]:
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s: trailing bytes: %v, want ErrMalformed", name, err)
			}
		case err != nil && name != "Stats":
			t.Fatalf("%s: trailing bytes: %v", name, err)
		}
		for cut := range len(p) {
			err := dec(p[:cut])
			if err == nil {
				continue // e.g. raw text, the optional learner byte, bare payloads
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s cut at %d: %v does not match ErrMalformed", name, cut, err)
			}
			if !strings.Contains(err.Error(), "malformed") {
				t.Fatalf("%s cut at %d: unclear message %q", name, cut, err)
			}
		}
	}
}

func TestDecodersMustFail(t *testing.T) {
	le32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	cases := []struct {
		dec string
		p   []byte
	}{
		{"Put", nil},
		{"Put", []byte{5, 0}},
		{"Put", append(append(le32(10), le32(5)...), "short"...)},
		{"Put", append(append(le32(3), le32(10)...), "keyshort"...)},
		{"Put", append(le32(1<<32-1), le32(1<<32-1)...)},
		{"Key", []byte{1}},
		{"Key", append(le32(100), "tiny"...)},
		{"Value", append(le32(50), "short"...)},
		{"ScanResult", nil},
		{"ScanResult", le32(MaxScanDecodeCount + 1)},
		{"ScanResult", append(le32(1), append(le32(5), "key"...)...)},
		{"Error", append(le32(3), 0xff, 0xfe, 0xfd)},
		{"Error", append(le32(100), "err"...)},
		{"NotLeader", []byte{0xff}},
		{"Health", []byte{0xc3}},
		{"AddMember", append(binary.LittleEndian.AppendUint64(nil, 1), append(le32(1), 0xff)...)},
		{"PromoteLearner", []byte{1, 0, 0, 0, 0, 0, 0}},
		{"TransferLeader", binary.LittleEndian.AppendUint64(nil, 0)}, // group only
		{"TransferLeader", []byte{0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0}},
		{"Stats", []byte("not json")},
		{"Stats", []byte(`[1,2]`)},
		{"Stats", []byte(`null`)},
		{"Stats", []byte(`{"term":-1}`)},
		{"Stats", nil},
		{"TxnOp", []byte{1, 0, 0, 0}},
		{"TxnOp", append(binary.LittleEndian.AppendUint64(nil, 1), 4, 0, 0, 0, 0)}, // unknown kind
		{"TxnOp", append(binary.LittleEndian.AppendUint64(nil, 1), 2, 0, 0, 0, 0)}, // put without value
		{"CDCPoll", []byte{1, 0}},
		{"CDCPoll", []byte{1, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"CDCPollReply", []byte{1, 0}},
		{"CDCPollReply", append(le32(1), append(binary.LittleEndian.AppendUint64(nil, 1), 3, 0, 0, 0, 0)...)},
		{"CDCCheckpoint", []byte{2, 0, 'a'}},
		{"Admin", []byte("ADMIN")},
		{"Admin", []byte("ADMIN\x00\x03\x00to")},
		{"Admin", []byte("ADMIN\x00\x03\x00tok")}, // no opcode
		{"Admin", []byte("ADMIN\x00\x01\x00\xff\x08")},
		{"Admin", []byte("NOPE")},
		{"Client", []byte("CLIENT\x00\x05\x00tok")},
		{"Client", []byte("CLIENT\x00\x01")},
		{"Client", []byte("xx")},
	}
	for _, c := range cases {
		err := decoders[c.dec](c.p)
		if err == nil {
			t.Errorf("%s(% x): decoded", c.dec, c.p)
		} else if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s(% x): %v does not match ErrMalformed", c.dec, c.p, err)
		}
	}
}

func TestDecodeScanHugeCountSmallPayload(t *testing.T) {
	p := binary.LittleEndian.AppendUint32(nil, MaxScanDecodeCount) // allowed count, no items
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	_, err := DecodeScanResult(p)
	_, err2 := DecodeCDCPollReply(binary.LittleEndian.AppendUint32(nil, 1<<32-1))
	runtime.ReadMemStats(&ms1)
	if !errors.Is(err, ErrMalformed) || !errors.Is(err2, ErrMalformed) {
		t.Fatalf("got %v, %v", err, err2)
	}
	if d := ms1.TotalAlloc - ms0.TotalAlloc; d > 64<<10 {
		t.Fatalf("allocated %d bytes for a 4-byte payload", d)
	}
	// Exactly MaxScanDecodeCount empty items decode.
	items := make([]KV, MaxScanDecodeCount)
	got, err := DecodeScanResult(AppendScanResult(nil, items))
	if err != nil || len(got) != MaxScanDecodeCount {
		t.Fatalf("got %d items, %v", len(got), err)
	}
}

// TestAdminPayloadBytes pins the PROMOTE_LEARNER and TRANSFER_LEADER
// payloads byte for byte, with and without the ADMIN prefix.
func TestAdminPayloadBytes(t *testing.T) {
	cases := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"promote 5", AppendRequest(nil, OpPromoteLearner, AppendPromoteLearner(nil, 5)),
			[]byte{0x09, 0, 0, 0, 0x13, 5, 0, 0, 0, 0, 0, 0, 0}},
		{"transfer group 0 to 2", AppendRequest(nil, OpTransferLeader, AppendTransferLeader(nil, 0, 2)),
			[]byte{0x11, 0, 0, 0, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0}},
		{"promote 5, token tok", AppendRequest(nil, OpPromoteLearner, AppendAdmin(nil, "tok", OpPromoteLearner, AppendPromoteLearner(nil, 5))),
			append([]byte{0x15, 0, 0, 0, 0x13, 'A', 'D', 'M', 'I', 'N', 0, 3, 0, 't', 'o', 'k', 0x13}, 5, 0, 0, 0, 0, 0, 0, 0)},
	}
	for _, c := range cases {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("%s:\n got  % x\n want % x", c.name, c.got, c.want)
		}
	}
	g, target, err := DecodeTransferLeader(AppendTransferLeader(nil, 7, 1<<40+3))
	if err != nil || g != 7 || target != 1<<40+3 {
		t.Fatalf("DecodeTransferLeader: %d %d %v", g, target, err)
	}
	id, err := DecodePromoteLearner(AppendPromoteLearner(nil, 1<<63))
	if err != nil || id != 1<<63 {
		t.Fatalf("DecodePromoteLearner: %d %v", id, err)
	}
	if !IsAdmin(OpPromoteLearner) || !IsAdmin(OpTransferLeader) || IsData(OpPromoteLearner) || IsData(OpTransferLeader) {
		t.Fatal("PROMOTE_LEARNER and TRANSFER_LEADER must be admin opcodes")
	}
}

func TestAddMemberLearner(t *testing.T) {
	yes, no := true, false
	for _, l := range []*bool{nil, &yes, &no} {
		p := AppendAddMember(nil, 42, "10.0.0.2:7481", "10.0.0.2:7379", l)
		m, err := DecodeAddMember(p)
		if err != nil {
			t.Fatal(err)
		}
		if m.NodeID != 42 || m.RaftAddr != "10.0.0.2:7481" || m.ClientAddr != "10.0.0.2:7379" {
			t.Fatalf("got %+v", m)
		}
		if (l == nil) != (m.Learner == nil) || (l != nil && *l != *m.Learner) {
			t.Fatalf("learner: got %v, want %v", m.Learner, l)
		}
		if m.IsLearner() != (l != nil && *l) {
			t.Fatal("IsLearner")
		}
	}
	// Exact bytes: id, two bytes32, flag.
	want := unhex(t, "0100000000000000 01000000 61 02000000 6263 01")
	if got := AppendAddMember(nil, 1, "a", "bc", &yes); !bytes.Equal(got, want) {
		t.Fatalf("got % x", got)
	}
}

func TestOpcodesAndStatuses(t *testing.T) {
	admin := map[Opcode]bool{7: true, 8: true, 18: true, 19: true, 20: true, 21: true, 22: true,
		64: true, 65: true, 66: true, 67: true} // the backup opcodes (KayaDB additions)
	data := map[Opcode]bool{1: true, 2: true, 3: true, 4: true, 6: true,
		68: true, 69: true, 70: true, // the versioned-data opcodes (KayaDB additions)
		71: true, 72: true, 73: true} // watch and change-feed opcodes (KayaDB additions)
	for op := Opcode(9); op <= 17; op++ {
		data[op] = true
	}
	for i := range 256 {
		op := Opcode(i)
		if IsAdmin(op) != admin[op] || IsData(op) != data[op] {
			t.Errorf("opcode %d: IsAdmin %v IsData %v", i, IsAdmin(op), IsData(op))
		}
		if (i <= 22 || (i >= 64 && i <= 73)) == strings.HasPrefix(op.String(), "OPCODE(") {
			t.Errorf("opcode %d is named %q", i, op.String())
		}
	}
	if OpHello.String() != "HELLO" || OpTxnForward.String() != "TXN_FORWARD" || Opcode(64).String() != "BACKUP_BEGIN" ||
		Opcode(67).String() != "BACKUP_STATUS" || Opcode(63).String() != "OPCODE(63)" || Opcode(68).String() != "KAYA_TXN" ||
		Opcode(69).String() != "GET_AT" || Opcode(70).String() != "SCAN_AT" || Opcode(71).String() != "WATCH_CREATE" ||
		Opcode(73).String() != "CDC_CONSUMER" || Opcode(74).String() != "OPCODE(74)" {
		t.Error("opcode names")
	}
	want := map[Status]string{0: "OK", 1: "INVALID_ARGUMENT", 2: "NOT_FOUND", 3: "TXN_CONFLICT", 9: "ERROR", 10: "NOT_LEADER", 11: "RANGE_MOVED", 64: "COMPACTED", 65: "WATCH_EVENT", 4: "STATUS(4)"}
	for st, name := range want {
		if st.String() != name {
			t.Errorf("status %d: %q, want %q", st, st.String(), name)
		}
	}
	// The numbers are fixed by the protocol.
	if OpCDCPoll != 13 || OpListRanges != 15 || OpTransferLeader != 18 || OpTxnForward != 22 || StatusNotLeader != 10 ||
		OpKayaTxn != 68 || OpGetAt != 69 || OpScanAt != 70 || StatusCompacted != 64 {
		t.Error("opcode or status numbers moved")
	}
}

func TestMessages(t *testing.T) {
	cases := map[string]string{
		fmt.Sprintf(MsgUnknownOpcode, 64):            "unknown opcode: 64",
		fmt.Sprintf(MsgUnsupportedVersion, 2):        "unsupported protocol version 2 (max 1)",
		fmt.Sprintf(MsgAlreadyMember, 3):             "node 3 is already a cluster member",
		fmt.Sprintf(MsgCannotRemove, 3):              "cannot remove node 3 (not a member, is self, or would shrink below quorum)",
		fmt.Sprintf(MsgMembershipProposed, 12):       "membership change proposed at index 12",
		fmt.Sprintf(MsgMembershipRemovalProposed, 1): "membership removal proposed at index 1",
	}
	for got, want := range cases {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func TestAuthPrefixes(t *testing.T) {
	p := AppendAdmin(nil, "tok", OpAddMember, []byte("inner"))
	if !HasAdminPrefix(p) || HasClientPrefix(p) {
		t.Fatal("prefix detection")
	}
	if _, _, _, err := SplitAdmin(OpRemoveMember, p); !errors.Is(err, ErrAdminMismatch) {
		t.Fatalf("mismatch: %v", err)
	}
	tok, prefixed, inner, err := SplitAdmin(OpAddMember, p)
	if err != nil || !prefixed || tok != "tok" || string(inner) != "inner" {
		t.Fatalf("got %q %v %q %v", tok, prefixed, inner, err)
	}
	// An empty token still gets a prefix when asked for.
	if got := AppendClient(nil, "", nil); !bytes.Equal(got, []byte("CLIENT\x00\x00\x00")) {
		t.Fatalf("got % x", got)
	}
	// An over-long token is cut to a well-formed bytes16.
	long := strings.Repeat("x", MaxTokenSize+10)
	tok, _, err = DecodeClient(AppendClient(nil, long, []byte("in")))
	if err != nil || len(tok) != MaxTokenSize {
		t.Fatalf("long token: %d %v", len(tok), err)
	}
}

func TestTokenEqual(t *testing.T) {
	if !TokenEqual("secret", "secret") || !TokenEqual("", "") {
		t.Fatal("equal tokens")
	}
	for _, b := range []string{"secreT", "secret ", "", "s", "secret\x00"} {
		if TokenEqual("secret", b) {
			t.Fatalf("%q equal to secret", b)
		}
	}
}

func TestStatsJSON(t *testing.T) {
	in := []byte(`{"role":"leader","term":3,"commit_index":10,"applied_index":9,"peer_count":2,"raft_groups":1,` +
		`"drain":false,"future":{"x":[1,2]},"engine":{"put_count":1,"get_count":2,"delete_count":3,"scan_count":4,` +
		`"wal_bytes_written":5,"wal_fsync_count":6,"wal_fsync_total_us":7,"wal_fsync_max_us":8,"memtable_entries":9,` +
		`"sstable_count":10,"last_sequence":11,"flush_total_us":12,"flush_max_us":13,"flush_count":14,` +
		`"compaction_total_us":15,"compaction_max_us":16,"compaction_count":17,"block_cache_hits":18,` +
		`"block_cache_misses":19,"recovery_duration_us":20,"new_counter":21}}`)
	s, err := DecodeStats(in)
	if err != nil {
		t.Fatal(err)
	}
	if s.Role != "leader" || s.Term != 3 || s.CommitIndex != 10 || s.AppliedIndex != 9 || s.PeerCount != 2 || s.RaftGroups != 1 {
		t.Fatalf("got %+v", s)
	}
	if s.Engine.PutCount != 1 || s.Engine.WALFsyncMaxUs != 8 || s.Engine.RecoveryDurationUs != 20 || s.Engine.BlockCacheMisses != 19 {
		t.Fatalf("engine %+v", s.Engine)
	}
	if string(s.Extra["drain"]) != "false" || string(s.Extra["future"]) != `{"x":[1,2]}` || len(s.Extra) != 2 {
		t.Fatalf("extra %v", s.Extra)
	}
	if string(s.Engine.Extra["new_counter"]) != "21" || len(s.Engine.Extra) != 1 {
		t.Fatalf("engine extra %v", s.Engine.Extra)
	}
	// Encoding keeps every member; decoding that gives the same document.
	out, err := AppendStats(nil, s)
	if err != nil {
		t.Fatal(err)
	}
	var a, b map[string]any
	if err := json.Unmarshal(in, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &b); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("round trip:\n in  %s\n out %s", in, out)
	}
	// Known members come first, in the documented order.
	if !bytes.HasPrefix(out, []byte(`{"role":"leader","term":3,"commit_index":10,"applied_index":9,"peer_count":2,"raft_groups":1,"engine":{"put_count":1,`)) {
		t.Fatalf("order: %s", out)
	}
	// Every documented engine counter is a field.
	for _, name := range []string{"put_count", "get_count", "delete_count", "scan_count", "wal_bytes_written",
		"wal_fsync_count", "wal_fsync_total_us", "wal_fsync_max_us", "memtable_entries", "sstable_count",
		"last_sequence", "flush_total_us", "flush_max_us", "flush_count", "compaction_total_us",
		"compaction_max_us", "compaction_count", "block_cache_hits", "block_cache_misses", "recovery_duration_us"} {
		if !strings.Contains(string(out), `"`+name+`":`) {
			t.Errorf("engine counter %s missing", name)
		}
	}
	// A minimal document decodes with zero values.
	if s, err := DecodeStats([]byte(`{"role":"follower"}`)); err != nil || s.Role != "follower" || s.Extra != nil {
		t.Fatalf("minimal: %+v %v", s, err)
	}
}
