package transport

import (
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"syscall"
	"time"
)

// The handshake (see the package doc for the layout and the argument).
const (
	handshakeMagic   = "KAYARAFT"
	handshakeVersion = 3 // 2 added the stream kind; 3 the nonces and the peer token proofs

	nonceSize = 32
	proofSize = sha256.Size
	// helloPrefixSize is read first: magic and version, so that a peer of
	// another version is named as such rather than misparsed.
	helloPrefixSize = 8 + 2
	helloSize       = helloPrefixSize + 1 + 8 + 8 + 1 + nonceSize
	replySize       = 1 + 1 + nonceSize + proofSize

	kindMessages = 0 // a stream of message frames
	kindSnapshot = 1 // one snapshot stream, answered with one ack byte

	authNone = 0 // the dialer has no peer token
	authHMAC = 1 // the dialer has one and will prove it

	replyOK            = 0
	replyTokenRequired = 1 // the acceptor has a peer token; the dialer announced none
	replyNoToken       = 2 // the dialer announced a token; the acceptor has none

	roleAcceptor = 'A'
	roleDialer   = 'D'
	proofLabel   = "kaya-raft-v3"

	// defaultHandshakeTimeout bounds everything before authentication
	// (the TLS handshake included): a handshake is a few hundred bytes and
	// two round trips, so 10 s only ever runs out for a peer that stalls
	// on purpose or a network that is down.
	defaultHandshakeTimeout = 10 * time.Second
)

// hello is the dialer's opening message.
type hello struct {
	kind     byte
	from, to uint64
	auth     byte
	nonce    [nonceSize]byte
}

func (h *hello) encode() []byte {
	b := make([]byte, helloSize)
	copy(b[:8], handshakeMagic)
	binary.LittleEndian.PutUint16(b[8:10], handshakeVersion)
	b[10] = h.kind
	binary.LittleEndian.PutUint64(b[11:19], h.from)
	binary.LittleEndian.PutUint64(b[19:27], h.to)
	b[27] = h.auth
	copy(b[28:], h.nonce[:])
	return b
}

// decodeHelloRest decodes what follows magic and version.
func decodeHelloRest(b []byte) hello {
	h := hello{kind: b[0], from: binary.LittleEndian.Uint64(b[1:9]), to: binary.LittleEndian.Uint64(b[9:17]), auth: b[17]}
	copy(h.nonce[:], b[18:])
	return h
}

// reply is the acceptor's answer to a hello.
type reply struct {
	status, auth byte
	nonce        [nonceSize]byte
	proof        [proofSize]byte
}

func (r *reply) encode() []byte {
	b := make([]byte, replySize)
	b[0], b[1] = r.status, r.auth
	copy(b[2:2+nonceSize], r.nonce[:])
	copy(b[2+nonceSize:], r.proof[:])
	return b
}

func decodeReply(b []byte) reply {
	r := reply{status: b[0], auth: b[1]}
	copy(r.nonce[:], b[2:2+nonceSize])
	copy(r.proof[:], b[2+nonceSize:])
	return r
}

// proof is one side's answer to the challenge: it binds the token to this
// connection (both nonces), to what the connection is for (kind, from,
// to) and to the side that computes it (role).
func proof(token []byte, role, kind byte, from, to uint64, dialerNonce, acceptorNonce *[nonceSize]byte) [proofSize]byte {
	m := hmac.New(sha256.New, token)
	var b [len(proofLabel) + 2 + 16]byte
	n := copy(b[:], proofLabel)
	b[n], b[n+1] = role, kind
	binary.LittleEndian.PutUint64(b[n+2:], from)
	binary.LittleEndian.PutUint64(b[n+10:], to)
	m.Write(b[:])
	m.Write(dialerNonce[:])
	m.Write(acceptorNonce[:])
	var out [proofSize]byte
	m.Sum(out[:0])
	return out
}

func newNonce() (n [nonceSize]byte) {
	_, _ = crand.Read(n[:]) // never fails (Go 1.24+ crashes the program instead)
	return n
}

// fix is the remedy every peer token mismatch names.
const fix = "configure the same --peer-token-file on every node"

// authError is a peer token failure on the dialing side.
type authError struct{ msg string }

func (e *authError) Error() string { return e.msg }

// errHandshakeClosed: the acceptor closed the connection without a reply.
var errHandshakeClosed = errors.New("the peer closed the connection during the raft handshake: it may run another KayaDB release (unsupported peer protocol version), not list this node as a member, or be over its connection limit; its log says which")

// dialHandshake runs the dialer's half of the handshake on c, for a
// connection of kind to peer to at addr. On an error it has sent the hello
// and nothing more: in particular, no proof goes to an acceptor that did
// not prove itself first.
func (t *TCP) dialHandshake(c net.Conn, kind byte, to uint64, addr string) error {
	_ = c.SetDeadline(time.Now().Add(t.opts.HandshakeTimeout))
	token := t.opts.PeerToken
	h := hello{kind: kind, from: t.opts.ID, to: to, auth: authNone, nonce: newNonce()}
	if len(token) > 0 {
		h.auth = authHMAC
	}
	if _, err := c.Write(h.encode()); err != nil {
		return fmt.Errorf("sending the raft handshake: %w", err)
	}
	var rb [replySize]byte
	if _, err := io.ReadFull(c, rb[:]); err != nil {
		// An acceptor that refuses closes the connection, with the rest of
		// the hello unread when it is of an older version: a reset.
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
			return errHandshakeClosed
		}
		return fmt.Errorf("waiting for the peer's raft handshake: %w", err)
	}
	r := decodeReply(rb[:])
	switch r.status {
	case replyOK:
	case replyTokenRequired:
		return &authError{fmt.Sprintf("peer %d at %s requires a peer token and this node has none: %s", to, addr, fix)}
	case replyNoToken:
		return &authError{fmt.Sprintf("peer %d at %s has no peer token and this node has one: %s", to, addr, fix)}
	default:
		return fmt.Errorf("peer %d at %s answered the raft handshake with unknown status %d", to, addr, r.status)
	}
	if len(token) == 0 {
		if r.auth != authNone {
			return fmt.Errorf("peer %d at %s answered the raft handshake with a proof this node did not ask for", to, addr)
		}
		_ = c.SetDeadline(time.Time{})
		return nil
	}
	want := proof(token, roleAcceptor, kind, t.opts.ID, to, &h.nonce, &r.nonce)
	if r.auth != authHMAC || !hmac.Equal(r.proof[:], want[:]) {
		return &authError{fmt.Sprintf("peer %d at %s failed to prove it holds the peer token (another secret, or not the member at that address): %s", to, addr, fix)}
	}
	mine := proof(token, roleDialer, kind, t.opts.ID, to, &h.nonce, &r.nonce)
	if _, err := c.Write(mine[:]); err != nil {
		return fmt.Errorf("sending the raft handshake proof: %w", err)
	}
	_ = c.SetDeadline(time.Time{})
	return nil
}

// acceptHandshake runs the acceptor's half on an inbound connection (whose
// deadline the caller has set): it reads the hello and, with a peer token,
// the dialer's proof, and reads nothing else. It counts and logs (limited
// per source) every refusal; ok false closes the connection.
func (t *TCP) acceptHandshake(c net.Conn, src string, log *slog.Logger) (h hello, ok bool) {
	remote := c.RemoteAddr().String()
	var prefix [helloPrefixSize]byte
	if _, err := io.ReadFull(c, prefix[:]); err != nil {
		t.c.badFrames.Add(1)
		t.logLimited(log, src, "no-handshake", "closing raft connection: no handshake", "err", err)
		return h, false
	}
	if string(prefix[:8]) != handshakeMagic {
		t.c.badFrames.Add(1)
		t.logLimited(log, src, "magic", "closing raft connection: not a KayaDB raft peer (bad handshake magic)")
		return h, false
	}
	if v := binary.LittleEndian.Uint16(prefix[8:10]); v != handshakeVersion {
		t.c.rejectedVersion.Add(1)
		t.logLimited(log, src, "version", fmt.Sprintf("closing raft connection: unsupported peer protocol version %d from %s (this node speaks %d): run the same KayaDB release on every node", v, remote, handshakeVersion))
		return h, false
	}
	var rest [helloSize - helloPrefixSize]byte
	if _, err := io.ReadFull(c, rest[:]); err != nil {
		t.c.badFrames.Add(1)
		t.logLimited(log, src, "no-handshake", "closing raft connection: incomplete handshake", "err", err)
		return h, false
	}
	h = decodeHelloRest(rest[:])
	if h.to != t.opts.ID {
		t.c.rejectedTo.Add(1)
		t.logLimited(log, src, "to", "closing raft connection: peer thinks it is talking to another node", "from", h.from, "to", h.to, "self", t.opts.ID)
		return h, false
	}
	if !t.allowed(h.from) {
		t.c.rejectedFrom.Add(1)
		t.logLimited(log, src, "from", "closing raft connection from a node outside the roster", "from", h.from)
		return h, false
	}
	if tc, ok := c.(*tls.Conn); ok && t.opts.VerifyPeer != nil {
		if err := t.opts.VerifyPeer(h.from, tc.ConnectionState()); err != nil {
			t.c.rejectedTLS.Add(1)
			t.logLimited(log, src, "tls-identity", "closing raft connection: the peer's certificate does not belong to the member it claims to be", "from", h.from, "err", err)
			return h, false
		}
	}
	if h.kind != kindMessages && h.kind != kindSnapshot {
		t.c.badFrames.Add(1)
		t.logLimited(log, src, "kind", "closing raft connection: unknown stream kind", "kind", h.kind)
		return h, false
	}
	token := t.opts.PeerToken
	r := reply{status: replyOK, auth: authNone}
	switch {
	case h.auth != authNone && h.auth != authHMAC:
		t.c.badFrames.Add(1)
		t.logLimited(log, src, "auth-kind", "closing raft connection: unknown authentication method in the handshake", "auth", h.auth)
		return h, false
	case len(token) > 0 && h.auth == authNone:
		t.c.rejectedAuth.Add(1)
		_, _ = c.Write((&reply{status: replyTokenRequired}).encode())
		t.logLimited(log, authKey(src, h.from), "auth", fmt.Sprintf("closing raft connection: peer %d at %s sent no proof of the peer token: %s", h.from, remote, fix))
		return h, false
	case len(token) == 0 && h.auth == authHMAC:
		t.c.rejectedAuth.Add(1)
		_, _ = c.Write((&reply{status: replyNoToken}).encode())
		t.logLimited(log, authKey(src, h.from), "auth", fmt.Sprintf("closing raft connection: peer %d at %s uses a peer token and this node has none: %s", h.from, remote, fix))
		return h, false
	case len(token) > 0:
		r.auth = authHMAC
		r.nonce = newNonce()
		r.proof = proof(token, roleAcceptor, h.kind, h.from, h.to, &h.nonce, &r.nonce)
	}
	if _, err := c.Write(r.encode()); err != nil {
		log.Debug("raft connection ended during the handshake", "err", err)
		return h, false
	}
	if len(token) == 0 {
		return h, true
	}
	var got [proofSize]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		// The dialer refused this node's proof (another secret), or went
		// away: its own log names the reason.
		if errors.Is(err, net.ErrClosed) {
			return h, false // this transport is closing
		}
		t.c.rejectedAuth.Add(1)
		t.logLimited(log, authKey(src, h.from), "auth", fmt.Sprintf("closing raft connection: peer %d at %s closed the connection instead of proving it holds the peer token (it may hold another secret): %s", h.from, remote, fix), "err", err)
		return h, false
	}
	want := proof(token, roleDialer, h.kind, h.from, h.to, &h.nonce, &r.nonce)
	if !hmac.Equal(got[:], want[:]) {
		t.c.rejectedAuth.Add(1)
		t.logLimited(log, authKey(src, h.from), "auth", fmt.Sprintf("closing raft connection: peer %d at %s failed the peer token check (another secret, or not a member of this cluster): %s", h.from, remote, fix))
		return h, false
	}
	return h, true
}
