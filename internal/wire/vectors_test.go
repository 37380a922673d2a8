package wire

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"
)

// The cross-language conformance vectors (a copy of the shared file, so the
// tests depend on nothing outside the repository). Positive vectors are
// encode→decode round trips; negative ones give raw_hex that must fail to
// decode.

type vector struct {
	Name     string      `json:"name"`
	Fn       string      `json:"fn"`
	Input    vectorInput `json:"input"`
	ExpectOK bool        `json:"expect_ok"`
}

type vectorInput struct {
	Key        *string      `json:"key"`
	Value      *string      `json:"value"`
	KeyHex     *string      `json:"key_hex"`
	ValueHex   *string      `json:"value_hex"`
	Token      *string      `json:"token"`
	Opcode     *uint8       `json:"opcode"`
	Inner      *string      `json:"inner"`
	InnerHex   *string      `json:"inner_hex"`
	Items      []vectorKV   `json:"items"`
	Message    *string      `json:"message"`
	RawHex     *string      `json:"raw_hex"`
	TxnID      *uint64      `json:"txn_id"`
	SnapshotTS *uint64      `json:"snapshot_ts"`
	Op         *string      `json:"op"`
	CommitTS   *uint64      `json:"commit_ts"`
	Consumer   *string      `json:"consumer"`
	FromSeq    *uint64      `json:"from_seq"`
	Limit      *uint32      `json:"limit"`
	Events     []vectorCDCE `json:"events"`
}

type vectorKV struct {
	Key      *string `json:"key"`
	Value    *string `json:"value"`
	KeyHex   *string `json:"key_hex"`
	ValueHex *string `json:"value_hex"`
}

type vectorCDCE struct {
	Seq      *uint64 `json:"seq"`
	Op       *string `json:"op"`
	Key      *string `json:"key"`
	Value    *string `json:"value"`
	KeyHex   *string `json:"key_hex"`
	ValueHex *string `json:"value_hex"`
}

// field returns the bytes of a text-or-hex input pair (hex wins, absent is
// empty).
func field(text, hexText *string) ([]byte, error) {
	switch {
	case hexText != nil:
		return hex.DecodeString(*hexText)
	case text != nil:
		return []byte(*text), nil
	}
	return []byte{}, nil
}

func u64or(p *uint64, d uint64) uint64 {
	if p != nil {
		return *p
	}
	return d
}

// vectorFns maps every fn of the conformance file to its runner. A runner
// returns nil when the vector's round trip (or raw decode) succeeded.
var vectorFns = map[string]func(in vectorInput) error{
	"put_roundtrip":            runPut,
	"key_roundtrip":            runKey,
	"admin_roundtrip":          runAdmin,
	"client_roundtrip":         runClient,
	"scan_roundtrip":           runScan,
	"error_roundtrip":          runError,
	"txn_begin_roundtrip":      runTxnBegin,
	"txn_op_roundtrip":         runTxnOp,
	"txn_id_roundtrip":         runTxnID,
	"txn_commit_roundtrip":     runTxnCommit,
	"cdc_poll_roundtrip":       runCDCPoll,
	"cdc_checkpoint_roundtrip": runCDCCheckpoint,
}

// raw decodes raw_hex with dec when the vector has one; ok reports whether
// it did.
func raw(in vectorInput, dec func([]byte) error) (ok bool, err error) {
	if in.RawHex == nil {
		return false, nil
	}
	p, err := hex.DecodeString(*in.RawHex)
	if err != nil {
		return true, fmt.Errorf("raw_hex: %w", err)
	}
	return true, dec(p)
}

func runPut(in vectorInput) error {
	if ok, err := raw(in, func(p []byte) error { _, _, err := DecodePut(p); return err }); ok {
		return err
	}
	key, err := field(in.Key, in.KeyHex)
	if err != nil {
		return err
	}
	value, err := field(in.Value, in.ValueHex)
	if err != nil {
		return err
	}
	k, v, err := DecodePut(AppendPut(nil, key, value))
	if err != nil {
		return err
	}
	if !bytes.Equal(k, key) || !bytes.Equal(v, value) {
		return fmt.Errorf("got (%x, %x), want (%x, %x)", k, v, key, value)
	}
	return nil
}

func runKey(in vectorInput) error {
	if ok, err := raw(in, func(p []byte) error { _, err := DecodeKey(p); return err }); ok {
		return err
	}
	key, err := field(in.Key, in.KeyHex)
	if err != nil {
		return err
	}
	k, err := DecodeKey(AppendKey(nil, key))
	if err != nil {
		return err
	}
	if !bytes.Equal(k, key) {
		return fmt.Errorf("got %x, want %x", k, key)
	}
	return nil
}

// runAdmin: with a token the payload carries the ADMIN prefix; without one
// the client sends the bare inner payload (protocol.md; unlike the Rust
// helper, which would still prepend the opcode byte). Either way the
// server-side split must give back the token (or none) and the inner bytes.
func runAdmin(in vectorInput) error {
	if in.Opcode == nil {
		return errors.New("admin_roundtrip needs opcode")
	}
	op := Opcode(*in.Opcode)
	inner, err := field(in.Inner, in.InnerHex)
	if err != nil {
		return err
	}
	var p []byte
	if in.Token != nil {
		p = AppendAdmin(nil, *in.Token, op, inner)
		tok, gotOp, gotInner, err := DecodeAdmin(p)
		if err != nil {
			return err
		}
		if tok != *in.Token || gotOp != op || !bytes.Equal(gotInner, inner) {
			return fmt.Errorf("DecodeAdmin: got (%q, %d, %x)", tok, gotOp, gotInner)
		}
	} else {
		p = append([]byte{}, inner...)
	}
	tok, prefixed, gotInner, err := SplitAdmin(op, p)
	if err != nil {
		return err
	}
	if prefixed != (in.Token != nil) || (in.Token != nil && tok != *in.Token) || !bytes.Equal(gotInner, inner) {
		return fmt.Errorf("SplitAdmin: got (%q, %v, %x)", tok, prefixed, gotInner)
	}
	return nil
}

func runClient(in vectorInput) error {
	inner, err := field(in.Inner, in.InnerHex)
	if err != nil {
		return err
	}
	var p []byte
	if in.Token != nil {
		p = AppendClient(nil, *in.Token, inner)
		tok, gotInner, err := DecodeClient(p)
		if err != nil {
			return err
		}
		if tok != *in.Token || !bytes.Equal(gotInner, inner) {
			return fmt.Errorf("DecodeClient: got (%q, %x)", tok, gotInner)
		}
	} else {
		p = append([]byte{}, inner...)
	}
	tok, prefixed, gotInner, err := SplitClient(p)
	if err != nil {
		return err
	}
	if prefixed != (in.Token != nil) || (in.Token != nil && tok != *in.Token) || !bytes.Equal(gotInner, inner) {
		return fmt.Errorf("SplitClient: got (%q, %v, %x)", tok, prefixed, gotInner)
	}
	return nil
}

func runScan(in vectorInput) error {
	if ok, err := raw(in, func(p []byte) error { _, err := DecodeScanResult(p); return err }); ok {
		return err
	}
	items := []KV{}
	for _, it := range in.Items {
		k, err := field(it.Key, it.KeyHex)
		if err != nil {
			return err
		}
		v, err := field(it.Value, it.ValueHex)
		if err != nil {
			return err
		}
		items = append(items, KV{Key: k, Value: v})
	}
	got, err := DecodeScanResult(AppendScanResult(nil, items))
	if err != nil {
		return err
	}
	if !slices.EqualFunc(got, items, func(a, b KV) bool {
		return bytes.Equal(a.Key, b.Key) && bytes.Equal(a.Value, b.Value)
	}) {
		return fmt.Errorf("got %q, want %q", got, items)
	}
	return nil
}

func runError(in vectorInput) error {
	if ok, err := raw(in, func(p []byte) error { _, err := DecodeError(p); return err }); ok {
		return err
	}
	if in.Message == nil {
		return errors.New("error_roundtrip needs message")
	}
	got, err := DecodeError(AppendError(nil, *in.Message))
	if err != nil {
		return err
	}
	if got != *in.Message {
		return fmt.Errorf("got %q, want %q", got, *in.Message)
	}
	return nil
}

func runTxnBegin(in vectorInput) error {
	if ok, err := raw(in, func(p []byte) error { _, _, err := DecodeTxnBeginReply(p); return err }); ok {
		return err
	}
	id, ts := u64or(in.TxnID, 1), u64or(in.SnapshotTS, 0)
	gotID, gotTS, err := DecodeTxnBeginReply(AppendTxnBeginReply(nil, id, ts))
	if err != nil {
		return err
	}
	if gotID != id || gotTS != ts {
		return fmt.Errorf("got (%d, %d), want (%d, %d)", gotID, gotTS, id, ts)
	}
	return nil
}

func runTxnOp(in vectorInput) error {
	if ok, err := raw(in, func(p []byte) error { _, err := DecodeTxnOp(p); return err }); ok {
		return err
	}
	kinds := map[string]TxnOpKind{"get": TxnOpGet, "put": TxnOpPut, "delete": TxnOpDelete}
	name := "get"
	if in.Op != nil {
		name = *in.Op
	}
	kind, ok := kinds[name]
	if !ok {
		return fmt.Errorf("unknown op %q", name)
	}
	key, err := field(in.Key, in.KeyHex)
	if err != nil {
		return err
	}
	want := TxnOp{TxnID: u64or(in.TxnID, 1), Kind: kind, Key: key}
	if kind == TxnOpPut {
		if want.Value, err = field(in.Value, in.ValueHex); err != nil {
			return err
		}
	}
	got, err := DecodeTxnOp(AppendTxnOp(nil, want))
	if err != nil {
		return err
	}
	if got.TxnID != want.TxnID || got.Kind != want.Kind || !bytes.Equal(got.Key, want.Key) ||
		!bytes.Equal(got.Value, want.Value) || (got.Value == nil) != (want.Value == nil) {
		return fmt.Errorf("got %+v, want %+v", got, want)
	}
	return nil
}

func runTxnID(in vectorInput) error {
	if ok, err := raw(in, func(p []byte) error { _, err := DecodeTxnID(p); return err }); ok {
		return err
	}
	id := u64or(in.TxnID, 1)
	got, err := DecodeTxnID(AppendTxnID(nil, id))
	if err != nil {
		return err
	}
	if got != id {
		return fmt.Errorf("got %d, want %d", got, id)
	}
	return nil
}

func runTxnCommit(in vectorInput) error {
	if ok, err := raw(in, func(p []byte) error { _, err := DecodeTxnCommitReply(p); return err }); ok {
		return err
	}
	ts := u64or(in.CommitTS, 1)
	got, err := DecodeTxnCommitReply(AppendTxnCommitReply(nil, ts))
	if err != nil {
		return err
	}
	if got != ts {
		return fmt.Errorf("got %d, want %d", got, ts)
	}
	return nil
}

// runCDCPoll round-trips both the request and the reply. A raw_hex vector
// must fail to decode as a request and as a reply.
func runCDCPoll(in vectorInput) error {
	if ok, err := raw(in, func(p []byte) error {
		_, errReq := DecodeCDCPoll(p)
		_, errReply := DecodeCDCPollReply(p)
		if errReq == nil || errReply == nil {
			return nil // one of them decoded: the vector "succeeded"
		}
		return errors.Join(errReq, errReply)
	}); ok {
		return err
	}
	if in.Consumer == nil {
		return errors.New("cdc_poll_roundtrip needs consumer")
	}
	req := CDCPoll{Consumer: *in.Consumer, FromSeq: u64or(in.FromSeq, 0), Limit: 10}
	if in.Limit != nil {
		req.Limit = *in.Limit
	}
	gotReq, err := DecodeCDCPoll(AppendCDCPoll(nil, req))
	if err != nil {
		return err
	}
	if gotReq != req {
		return fmt.Errorf("request: got %+v, want %+v", gotReq, req)
	}
	events := []CDCEvent{}
	for i, e := range in.Events {
		ops := map[string]CDCOp{"put": CDCOpPut, "delete": CDCOpDelete}
		name := "put"
		if e.Op != nil {
			name = *e.Op
		}
		op, ok := ops[name]
		if !ok {
			return fmt.Errorf("unknown cdc op %q", name)
		}
		key, err := field(e.Key, e.KeyHex)
		if err != nil {
			return err
		}
		ev := CDCEvent{Seq: u64or(e.Seq, uint64(i)+1), Op: op, Key: key}
		if op == CDCOpPut {
			if ev.Value, err = field(e.Value, e.ValueHex); err != nil {
				return err
			}
		}
		events = append(events, ev)
	}
	got, err := DecodeCDCPollReply(AppendCDCPollReply(nil, events))
	if err != nil {
		return err
	}
	if !slices.EqualFunc(got, events, func(a, b CDCEvent) bool {
		return a.Seq == b.Seq && a.Op == b.Op && bytes.Equal(a.Key, b.Key) &&
			bytes.Equal(a.Value, b.Value) && (a.Value == nil) == (b.Value == nil)
	}) {
		return fmt.Errorf("reply: got %+v, want %+v", got, events)
	}
	return nil
}

func runCDCCheckpoint(in vectorInput) error {
	if ok, err := raw(in, func(p []byte) error { _, err := DecodeCDCCheckpoint(p); return err }); ok {
		return err
	}
	if in.Consumer == nil {
		return errors.New("cdc_checkpoint_roundtrip needs consumer")
	}
	got, err := DecodeCDCCheckpoint(AppendCDCCheckpoint(nil, *in.Consumer))
	if err != nil {
		return err
	}
	if got != *in.Consumer {
		return fmt.Errorf("got %q, want %q", got, *in.Consumer)
	}
	return nil
}

func loadVectors(t *testing.T) []vector {
	t.Helper()
	data, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields() // a new input key must not be silently ignored
	var vs []vector
	if err := dec.Decode(&vs); err != nil {
		t.Fatalf("parsing vectors.json: %v", err)
	}
	return vs
}

// TestConformanceVectorsHandled fails when the vectors file uses a fn this
// package does not run, or when the file shrank.
func TestConformanceVectorsHandled(t *testing.T) {
	vs := loadVectors(t)
	if len(vs) < 20 {
		t.Fatalf("only %d vectors", len(vs))
	}
	names := map[string]bool{}
	for _, v := range vs {
		if _, ok := vectorFns[v.Fn]; !ok {
			t.Errorf("vector %q: fn %q is not handled", v.Name, v.Fn)
		}
		if names[v.Name] {
			t.Errorf("duplicate vector name %q", v.Name)
		}
		names[v.Name] = true
	}
	// Every fn the protocol lists is exercised by at least one vector.
	for fn := range vectorFns {
		if !slices.ContainsFunc(vs, func(v vector) bool { return v.Fn == fn }) {
			t.Errorf("fn %q has no vector", fn)
		}
	}
}

// TestConformanceVectors runs every vector.
func TestConformanceVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			run, ok := vectorFns[v.Fn]
			if !ok {
				t.Fatalf("fn %q is not handled", v.Fn)
			}
			err := run(v.Input)
			switch {
			case v.ExpectOK && err != nil:
				t.Fatalf("expected success: %v", err)
			case !v.ExpectOK && err == nil:
				t.Fatal("expected a decoding failure, got success")
			case !v.ExpectOK && !errors.Is(err, ErrMalformed):
				t.Fatalf("failure %v does not match ErrMalformed", err)
			}
		})
	}
}
