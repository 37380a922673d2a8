package audit

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// Record is one audited request: what the server decided, for whom, never
// what the request carried (no token, key or value).
type Record struct {
	// Time is when the reply was decided.
	Time time.Time
	// NodeID is the node that served the request.
	NodeID uint64
	// Peer is the client's address ("ip:port").
	Peer string
	// Opcode is the request's opcode; negative for an event without a
	// request frame (a connection refused over a limit), which then has
	// no "opcode" member.
	Opcode int
	// Op is the opcode's protocol name ("PUT"), or the event's name.
	Op string
	// Status is the reply's status code.
	Status int
	// Auth is the credential the request proved: "client", "operator" or
	// "none" (the original's field).
	Auth string
	// Identity, Source and Tenant say who asked: the principal's name
	// ("operator", "client", a certificate subject, "anonymous"), how it
	// was proven ("token", "certificate", "none") and its tenant ("" when
	// none).
	Identity, Source, Tenant string
	// KeyLen is the length of the request's key; negative when the request
	// has none.
	KeyLen int
	// Latency is the time from reading the request to deciding its reply.
	Latency time.Duration
	// Reason is the error text sent with a refusal ("" otherwise).
	Reason string
}

// Bounds of the strings of one line, so that a line stays under
// MaxLineBytes whatever a peer or a certificate says (a UDP syslog
// datagram carries a line whole).
const (
	maxPeerBytes     = 64
	maxIdentityBytes = 256
	maxTenantBytes   = 128
	maxReasonBytes   = 512
	maxOpBytes       = 32
	// MaxLineBytes bounds an encoded line: the bounded strings, each
	// escaped at worst 6 bytes per input byte, plus the numbers and names.
	MaxLineBytes = 6*(maxPeerBytes+maxIdentityBytes+maxTenantBytes+maxReasonBytes+maxOpBytes+2*16) + 512
)

// AppendJSON appends the record as one JSON line, ending in '\n', in the
// documented member order:
//
//	{"ts":"2026-12-06T04:40:00.123Z","node_id":1,"peer":"127.0.0.1:53412",
//	 "opcode":1,"op":"PUT","status":0,"auth":"client","identity":"billing-app",
//	 "source":"token","tenant":"t1","key_len":12,"latency_us":840}
//
// "opcode" is left out for an event without a request, "tenant" when
// there is none, "key_len" when the request has no key, "reason" unless
// the request was refused. It uses no reflection: it runs for every
// request.
func (r *Record) AppendJSON(b []byte) []byte {
	b = append(b, `{"ts":"`...)
	b = r.Time.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z")
	b = append(b, `","node_id":`...)
	b = strconv.AppendUint(b, r.NodeID, 10)
	b = append(b, `,"peer":`...)
	b = appendString(b, r.Peer, maxPeerBytes)
	if r.Opcode >= 0 {
		b = append(b, `,"opcode":`...)
		b = strconv.AppendInt(b, int64(r.Opcode), 10)
	}
	b = append(b, `,"op":`...)
	b = appendString(b, r.Op, maxOpBytes)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(r.Status), 10)
	b = append(b, `,"auth":`...)
	b = appendString(b, r.Auth, 16)
	b = append(b, `,"identity":`...)
	b = appendString(b, r.Identity, maxIdentityBytes)
	b = append(b, `,"source":`...)
	b = appendString(b, r.Source, 16)
	if r.Tenant != "" {
		b = append(b, `,"tenant":`...)
		b = appendString(b, r.Tenant, maxTenantBytes)
	}
	if r.KeyLen >= 0 {
		b = append(b, `,"key_len":`...)
		b = strconv.AppendInt(b, int64(r.KeyLen), 10)
	}
	b = append(b, `,"latency_us":`...)
	b = strconv.AppendInt(b, max(r.Latency.Microseconds(), 0), 10)
	if r.Reason != "" {
		b = append(b, `,"reason":`...)
		b = appendString(b, r.Reason, maxReasonBytes)
	}
	return append(b, "}\n"...)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, cut to at most limit bytes of
// input (at a character boundary, marked with "…"). Invalid UTF-8 becomes
// U+FFFD, so that every line is valid JSON whatever a certificate holds.
func appendString(b []byte, s string, limit int) []byte {
	cut := false
	if len(s) > limit {
		i := limit
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s, cut = s[:i], true
	}
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			// Valid JSON, but line separators to some JavaScript readers.
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	if cut {
		b = append(b, "…"...)
	}
	return append(b, '"')
}
