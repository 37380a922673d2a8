package wire

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
)

// Authentication prefixes, as they appear on the wire.
const (
	// AdminPrefix starts the payload of an admin opcode when the server has
	// an operator token: 41 44 4d 49 4e 00.
	AdminPrefix = "ADMIN\x00"
	// ClientPrefix starts the payload of a data opcode when the server has
	// a client token: 43 4c 49 45 4e 54 00.
	ClientPrefix = "CLIENT\x00"
)

// ErrAdminMismatch is returned by SplitAdmin when the opcode inside the
// ADMIN prefix is not the frame's opcode; a server answers
// StatusInvalidArgument with MsgAdminMismatch.
var ErrAdminMismatch = errors.New("wire: " + MsgAdminMismatch)

// AppendAdmin appends an admin payload carrying an operator token:
// "ADMIN\0" · bytes16 token · opcode u8 · inner. It always writes the
// prefix, even for an empty token; a client without an operator token
// sends the bare inner payload instead. A token longer than MaxTokenSize is
// cut (callers validate token lengths up front).
func AppendAdmin(dst []byte, token string, op Opcode, inner []byte) []byte {
	dst = append(dst, AdminPrefix...)
	dst = appendString16(dst, token)
	dst = append(dst, byte(op))
	return append(dst, inner...)
}

// HasAdminPrefix reports whether p starts with "ADMIN\0".
func HasAdminPrefix(p []byte) bool { return hasPrefix(p, AdminPrefix) }

// DecodeAdmin decodes an admin payload that starts with the ADMIN prefix,
// returning the token, the embedded opcode and the inner payload (an alias
// of p). A missing prefix, a truncated token or opcode, or a token that is
// not valid UTF-8 is an error matching ErrMalformed.
func DecodeAdmin(p []byte) (token string, op Opcode, inner []byte, err error) {
	if !HasAdminPrefix(p) {
		return "", 0, nil, fmt.Errorf("%w: admin payload: missing %q prefix", ErrMalformed, AdminPrefix)
	}
	d := decoder{msg: "ADMIN prefix", p: p, off: len(AdminPrefix)}
	if token, err = d.text16("token"); err != nil {
		return "", 0, nil, err
	}
	b, err := d.u8("opcode")
	if err != nil {
		return "", 0, nil, err
	}
	return token, Opcode(b), p[d.off:], nil
}

// SplitAdmin peels the optional ADMIN prefix off the payload of admin
// opcode frameOp, as a server does. Without the prefix it returns
// prefixed=false and inner=p. With it, it returns the token and the inner
// payload; an embedded opcode other than frameOp is ErrAdminMismatch and a
// malformed prefix matches ErrMalformed. Checking the token (TokenEqual) is
// the caller's job.
func SplitAdmin(frameOp Opcode, p []byte) (token string, prefixed bool, inner []byte, err error) {
	if !HasAdminPrefix(p) {
		return "", false, p, nil
	}
	token, op, inner, err := DecodeAdmin(p)
	if err != nil {
		return "", true, nil, err
	}
	if op != frameOp {
		return "", true, nil, fmt.Errorf("%w: frame opcode %d, embedded opcode %d", ErrAdminMismatch, frameOp, op)
	}
	return token, true, inner, nil
}

// AppendClient appends a data payload carrying a client token:
// "CLIENT\0" · bytes16 token · inner. It always writes the prefix; a
// client without a client token sends the bare inner payload instead. A
// token longer than MaxTokenSize is cut (callers validate token lengths up
// front).
func AppendClient(dst []byte, token string, inner []byte) []byte {
	dst = append(dst, ClientPrefix...)
	dst = appendString16(dst, token)
	return append(dst, inner...)
}

// HasClientPrefix reports whether p starts with "CLIENT\0".
func HasClientPrefix(p []byte) bool { return hasPrefix(p, ClientPrefix) }

// DecodeClient decodes a data payload that starts with the CLIENT prefix,
// returning the token and the inner payload (an alias of p). A missing
// prefix, a truncated token or a token that is not valid UTF-8 is an error
// matching ErrMalformed.
func DecodeClient(p []byte) (token string, inner []byte, err error) {
	if !HasClientPrefix(p) {
		return "", nil, fmt.Errorf("%w: data payload: missing %q prefix", ErrMalformed, ClientPrefix)
	}
	d := decoder{msg: "CLIENT prefix", p: p, off: len(ClientPrefix)}
	if token, err = d.text16("token"); err != nil {
		return "", nil, err
	}
	return token, p[d.off:], nil
}

// SplitClient peels the optional CLIENT prefix off a data opcode's payload,
// as a server does: without the prefix it returns prefixed=false and
// inner=p; with it, the token and the inner payload. A malformed prefix
// matches ErrMalformed.
func SplitClient(p []byte) (token string, prefixed bool, inner []byte, err error) {
	if !HasClientPrefix(p) {
		return "", false, p, nil
	}
	token, inner, err = DecodeClient(p)
	if err != nil {
		return "", true, nil, err
	}
	return token, true, inner, nil
}

// TokenEqual reports whether two tokens are equal in time that depends on
// neither their contents nor their lengths: it compares SHA-256 digests
// with crypto/subtle.
func TokenEqual(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

func hasPrefix(p []byte, prefix string) bool {
	return len(p) >= len(prefix) && strings.HasPrefix(string(p[:len(prefix)]), prefix)
}
