package wire

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func readOneRequest(t *testing.T, frame []byte) (Opcode, []byte) {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(frame))
	op, p, _, err := ReadRequest(r, nil)
	if err != nil {
		t.Fatalf("ReadRequest: %v", err)
	}
	if r.Buffered() != 0 {
		t.Fatalf("ReadRequest left %d bytes", r.Buffered())
	}
	return op, p
}

func readOneResponse(t *testing.T, frame []byte) (Status, []byte) {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(frame))
	st, p, _, err := ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("ReadResponse: %v", err)
	}
	if r.Buffered() != 0 {
		t.Fatalf("ReadResponse left %d bytes", r.Buffered())
	}
	return st, p
}

// TestWorkedBytes checks every row of the protocol's "Worked bytes" table in
// both directions: encoding yields the exact bytes, and reading the bytes
// yields the message.
func TestWorkedBytes(t *testing.T) {
	b := func(s string) []byte { return []byte(s) }
	type row struct {
		name   string
		hex    string
		encode func() []byte
		decode func(t *testing.T, frame []byte)
	}
	rows := []row{
		{
			name:   "PUT hello=world",
			hex:    "13 00 00 00 01 05 00 00 00 05 00 00 00 68 65 6c 6c 6f 77 6f 72 6c 64",
			encode: func() []byte { return AppendRequest(nil, OpPut, AppendPut(nil, b("hello"), b("world"))) },
			decode: func(t *testing.T, f []byte) {
				op, p := readOneRequest(t, f)
				k, v, err := DecodePut(p)
				if op != OpPut || err != nil || string(k) != "hello" || string(v) != "world" {
					t.Fatalf("got %v %q %q %v", op, k, v, err)
				}
			},
		},
		{
			name:   "GET hello",
			hex:    "0a 00 00 00 02 05 00 00 00 68 65 6c 6c 6f",
			encode: func() []byte { return AppendRequest(nil, OpGet, AppendKey(nil, b("hello"))) },
			decode: func(t *testing.T, f []byte) {
				op, p := readOneRequest(t, f)
				k, err := DecodeKey(p)
				if op != OpGet || err != nil || string(k) != "hello" {
					t.Fatalf("got %v %q %v", op, k, err)
				}
			},
		},
		{
			name:   "GET OK world",
			hex:    "0b 00 00 00 00 00 05 00 00 00 77 6f 72 6c 64",
			encode: func() []byte { return AppendResponse(nil, StatusOK, AppendValue(nil, b("world"))) },
			decode: func(t *testing.T, f []byte) {
				st, p := readOneResponse(t, f)
				v, err := DecodeValue(p)
				if st != StatusOK || err != nil || string(v) != "world" {
					t.Fatalf("got %v %q %v", st, v, err)
				}
			},
		},
		{
			name:   "NOT_FOUND",
			hex:    "02 00 00 00 02 00",
			encode: func() []byte { return AppendResponse(nil, StatusNotFound, nil) },
			decode: func(t *testing.T, f []byte) {
				if st, p := readOneResponse(t, f); st != StatusNotFound || len(p) != 0 {
					t.Fatalf("got %v %x", st, p)
				}
			},
		},
		{
			name:   "PUT OK",
			hex:    "02 00 00 00 00 00",
			encode: func() []byte { return AppendResponse(nil, StatusOK, nil) },
			decode: func(t *testing.T, f []byte) {
				if st, p := readOneResponse(t, f); st != StatusOK || len(p) != 0 {
					t.Fatalf("got %v %x", st, p)
				}
			},
		},
		{
			name:   "HEALTH request",
			hex:    "01 00 00 00 05",
			encode: func() []byte { return AppendRequest(nil, OpHealth, nil) },
			decode: func(t *testing.T, f []byte) {
				if op, p := readOneRequest(t, f); op != OpHealth || len(p) != 0 {
					t.Fatalf("got %v %x", op, p)
				}
			},
		},
		{
			name:   "HEALTH reply leader",
			hex:    "08 00 00 00 00 00 6c 65 61 64 65 72",
			encode: func() []byte { return AppendResponse(nil, StatusOK, AppendHealth(nil, HealthLeader)) },
			decode: func(t *testing.T, f []byte) {
				st, p := readOneResponse(t, f)
				role, err := DecodeHealth(p)
				if st != StatusOK || err != nil || role != HealthLeader {
					t.Fatalf("got %v %q %v", st, role, err)
				}
			},
		},
		{
			name:   "HELLO v1 request",
			hex:    "03 00 00 00 00 01 00",
			encode: func() []byte { return AppendRequest(nil, OpHello, AppendHello(nil, 1)) },
			decode: func(t *testing.T, f []byte) {
				op, p := readOneRequest(t, f)
				v, err := DecodeHello(p)
				if op != OpHello || err != nil || v != 1 {
					t.Fatalf("got %v %d %v", op, v, err)
				}
			},
		},
		{
			name:   "HELLO v1 reply",
			hex:    "04 00 00 00 00 00 01 00",
			encode: func() []byte { return AppendResponse(nil, StatusOK, AppendHello(nil, ProtocolVersion)) },
			decode: func(t *testing.T, f []byte) {
				st, p := readOneResponse(t, f)
				v, err := DecodeHello(p)
				if st != StatusOK || err != nil || v != 1 {
					t.Fatalf("got %v %d %v", st, v, err)
				}
			},
		},
		{
			name:   "NOT_LEADER 127.0.0.1:7379",
			hex:    "10 00 00 00 0a 00 31 32 37 2e 30 2e 30 2e 31 3a 37 33 37 39",
			encode: func() []byte { return AppendResponse(nil, StatusNotLeader, AppendNotLeader(nil, "127.0.0.1:7379")) },
			decode: func(t *testing.T, f []byte) {
				st, p := readOneResponse(t, f)
				hint, err := DecodeNotLeader(p)
				if st != StatusNotLeader || err != nil || hint != "127.0.0.1:7379" {
					t.Fatalf("got %v %q %v", st, hint, err)
				}
			},
		},
		{
			name: "PUT a=b, client token tok",
			hex:  "17 00 00 00 01 43 4c 49 45 4e 54 00 03 00 74 6f 6b 01 00 00 00 01 00 00 00 61 62",
			encode: func() []byte {
				return AppendRequest(nil, OpPut, AppendClient(nil, "tok", AppendPut(nil, b("a"), b("b"))))
			},
			decode: func(t *testing.T, f []byte) {
				op, p := readOneRequest(t, f)
				tok, prefixed, inner, err := SplitClient(p)
				if op != OpPut || err != nil || !prefixed || tok != "tok" {
					t.Fatalf("got %v %q %v %v", op, tok, prefixed, err)
				}
				k, v, err := DecodePut(inner)
				if err != nil || string(k) != "a" || string(v) != "b" {
					t.Fatalf("got %q %q %v", k, v, err)
				}
			},
		},
		{
			name: "REMOVE_MEMBER 4, operator token tok",
			hex:  "15 00 00 00 08 41 44 4d 49 4e 00 03 00 74 6f 6b 08 04 00 00 00 00 00 00 00",
			encode: func() []byte {
				return AppendRequest(nil, OpRemoveMember, AppendAdmin(nil, "tok", OpRemoveMember, AppendRemoveMember(nil, 4)))
			},
			decode: func(t *testing.T, f []byte) {
				op, p := readOneRequest(t, f)
				tok, prefixed, inner, err := SplitAdmin(op, p)
				if op != OpRemoveMember || err != nil || !prefixed || tok != "tok" {
					t.Fatalf("got %v %q %v %v", op, tok, prefixed, err)
				}
				id, err := DecodeRemoveMember(inner)
				if err != nil || id != 4 {
					t.Fatalf("got %d %v", id, err)
				}
			},
		},
		{
			name:   "REMOVE_MEMBER 4, no token",
			hex:    "09 00 00 00 08 04 00 00 00 00 00 00 00",
			encode: func() []byte { return AppendRequest(nil, OpRemoveMember, AppendRemoveMember(nil, 4)) },
			decode: func(t *testing.T, f []byte) {
				op, p := readOneRequest(t, f)
				_, prefixed, inner, err := SplitAdmin(op, p)
				if op != OpRemoveMember || err != nil || prefixed {
					t.Fatalf("got %v %v %v", op, prefixed, err)
				}
				id, err := DecodeRemoveMember(inner)
				if err != nil || id != 4 {
					t.Fatalf("got %d %v", id, err)
				}
			},
		},
		// Not in protocol.md's table, but in the original's worked examples.
		{
			name:   "TXN_CONFLICT",
			hex:    "12 00 00 00 03 00 0c 00 00 00 74 78 6e 20 63 6f 6e 66 6c 69 63 74",
			encode: func() []byte { return AppendResponse(nil, StatusTxnConflict, AppendError(nil, MsgTxnConflict)) },
			decode: func(t *testing.T, f []byte) {
				st, p := readOneResponse(t, f)
				msg, err := DecodeError(p)
				if st != StatusTxnConflict || err != nil || msg != MsgTxnConflict {
					t.Fatalf("got %v %q %v", st, msg, err)
				}
			},
		},
	}
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
