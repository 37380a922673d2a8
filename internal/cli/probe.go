package cli

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kayadb/kayadb/client"
	"github.com/kayadb/kayadb/internal/wire"
)

// Port probing
//
// When a server-mode command fails without any server having answered the
// client protocol, kayactl looks at what does answer at each --server
// address, so that the error can say "that is the raft port" instead of
// "deadline exceeded". The probe sends, on one connection:
//
//  1. a HELLO frame (7 bytes), and waits up to a quarter of its budget: a
//     KayaDB client port answers it at once;
//  2. then an HTTP request line. An HTTP server (the metrics port) answers
//     "HTTP/1.1 400 ..." to the combined bytes. A raft port has now read the
//     27 bytes of a peer handshake, finds no "KAYARAFT" magic and closes the
//     connection without a word. A TLS server answers with an alert or
//     closes; a TLS handshake on a second connection tells it apart from a
//     raft port.
//
// Probes run only on failure paths, at most maxProbes of them, in parallel,
// each within probeBudget (or --timeout, if shorter), so a failing command
// takes at most that much longer.

// Bounds of the probes.
const (
	// probeBudget bounds one probe: a port on the same network answers in
	// milliseconds.
	probeBudget = time.Second
	// maxProbes bounds the addresses probed after one failure (an error
	// naming more would not be read).
	maxProbes = 8
	// probeReadLimit bounds what a probe reads: a status line, an alert or
	// a frame header is enough to tell.
	probeReadLimit = 256
)

// portKind is what a probe found at an address.
type portKind int

const (
	portUnknown  portKind = iota // could not tell (no connection, nothing conclusive)
	portClient                   // a KayaDB client port: it answered HELLO
	portHTTP                     // an HTTP server
	portRaft                     // closed after a stranger's handshake, like a raft port
	portTLS                      // speaks TLS, and kayactl did not
	portPlain                    // does not speak TLS, and kayactl did
	portSilent                   // accepted, never answered
	portGreeting                 // closed at the greeting, and no TLS either
	portOther                    // answered with bytes of another protocol
)

// probeResult is one address's verdict.
type probeResult struct {
	addr   string
	kind   portKind
	detail string // the HTTP status line, the first bytes of another protocol
}

// explain renders a verdict for the error line; "" for a KayaDB client
// port or no verdict.
func (r probeResult) explain() string {
	switch r.kind {
	case portHTTP:
		return fmt.Sprintf("%s answers HTTP (%q), not the KayaDB client protocol: it looks like a kayadb-server metrics port (--metrics-addr, default 127.0.0.1:9090)", r.addr, r.detail)
	case portRaft:
		return fmt.Sprintf("%s closed the connection after kayactl's first bytes without answering: that is what a kayadb-server raft port (--raft-addr, default 127.0.0.1:7481) does with anything but the peers' \"KAYARAFT\" handshake", r.addr)
	case portTLS:
		return fmt.Sprintf("%s requires TLS (it speaks TLS), and kayactl connected without it", r.addr)
	case portPlain:
		return fmt.Sprintf("%s does not speak TLS, and kayactl connected with it", r.addr)
	case portSilent:
		return fmt.Sprintf("%s accepted the connection but answered neither the KayaDB greeting (HELLO) nor HTTP: not a KayaDB client port, or a stuck server (a stopped process?)", r.addr)
	case portGreeting:
		return fmt.Sprintf("%s closed the connection at the KayaDB greeting (HELLO) and does not speak TLS: not a KayaDB client port", r.addr)
	case portOther:
		return fmt.Sprintf("%s answers another protocol (first bytes %s), not the KayaDB client protocol", r.addr, r.detail)
	}
	return ""
}

// fix is what to do about a verdict.
func (r probeResult) fix() string {
	switch r.kind {
	case portHTTP, portRaft:
		return "clients connect to a node's client port (kayadb-server --client-addr, default 127.0.0.1:7379); `kayactl --server ADDR status` lists every member's client address"
	case portTLS:
		return "pass --tls with --tls-ca-cert CA (and --tls-cert/--tls-key if the servers ask for a client certificate), or set $KAYA_TLS_CA_CERT"
	case portPlain:
		return "drop --tls and the --tls-* flags (and $KAYA_TLS*), or check the address"
	}
	return "check the address: clients connect to a node's client port (kayadb-server --client-addr, default 127.0.0.1:7379)"
}

// probeAll probes up to maxProbes addresses in parallel.
func probeAll(addrs []string, tlsConf *tls.Config, budget time.Duration) []probeResult {
	if len(addrs) > maxProbes {
		addrs = addrs[:maxProbes]
	}
	out := make([]probeResult, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = probePort(addr, tlsConf, budget)
		}()
	}
	wg.Wait()
	return out
}

// helloFrame is a HELLO request, what a KayaDB client port answers first.
var helloFrame = wire.AppendRequest(nil, wire.OpHello, wire.AppendHello(nil, wire.ProtocolVersion))

// probePort finds out what answers at addr, connecting with tlsConf when
// it is not nil (as the client did).
func probePort(addr string, tlsConf *tls.Config, budget time.Duration) probeResult {
	res := probeResult{addr: addr}
	deadline := time.Now().Add(budget)
	kind, detail, closedAtGreeting := probeConn(addr, tlsConf, deadline)
	res.kind, res.detail = kind, detail
	switch {
	case kind == portUnknown && tlsConf != nil:
		// The TLS handshake failed: does a plain KayaDB or HTTP server
		// answer there?
		if k, _, _ := probeConn(addr, nil, deadline); k == portClient || k == portHTTP {
			res.kind = portPlain
		}
	case kind == portRaft && tlsConf == nil:
		// A TLS server closes on plain bytes too: is it one?
		if speaksTLS(addr, deadline) {
			res.kind = portTLS
		} else if closedAtGreeting {
			res.kind = portGreeting
		}
	case kind == portRaft && closedAtGreeting:
		res.kind = portGreeting
	}
	return res
}

// probeConn runs the two-step probe on one connection. closedAtGreeting
// reports that the peer hung up after the HELLO alone (fewer bytes than a
// raft handshake).
func probeConn(addr string, tlsConf *tls.Config, deadline time.Time) (kind portKind, detail string, closedAtGreeting bool) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	var nc net.Conn
	var err error
	if tlsConf != nil {
		cfg := tlsConf.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		nc, err = (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	} else {
		nc, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return portUnknown, "", false
	}
	defer nc.Close()
	// Step 1: the greeting, for a quarter of the budget.
	step1 := time.Now().Add(time.Until(deadline) / 4)
	nc.SetDeadline(step1)
	if _, err := nc.Write(helloFrame); err != nil {
		return portUnknown, "", false
	}
	buf := make([]byte, probeReadLimit)
	n, err := io.ReadAtLeast(nc, buf, 6)
	if n > 0 {
		kind, detail = classifyBytes(buf[:n])
		return kind, detail, false
	}
	if !isTimeout(err) {
		if !isHangUp(err) {
			return portUnknown, "", false // a TLS alert, say: not ours to explain
		}
		// Closed at the greeting alone: a raft port waits for 27 bytes,
		// so this is something else (a TLS server, a refusing server).
		return portRaft, "", true
	}
	// Step 2: an HTTP request line after the HELLO bytes.
	nc.SetDeadline(deadline)
	req := fmt.Sprintf("GET /livez HTTP/1.0\r\nHost: %s\r\nUser-Agent: kayactl-probe\r\n\r\n", addr)
	if _, err := nc.Write([]byte(req)); err != nil {
		return portRaft, "", false
	}
	n, err = io.ReadAtLeast(nc, buf, 6)
	switch {
	case n > 0:
		kind, detail = classifyBytes(buf[:n])
		return kind, detail, false
	case isTimeout(err):
		return portSilent, "", false
	case isHangUp(err):
		return portRaft, "", false // closed after our bytes
	}
	return portUnknown, "", false
}

// isHangUp reports whether a read ended because the peer closed the
// connection (a FIN, or a reset when it left our bytes unread).
func isHangUp(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// classifyBytes names the protocol of a peer's first bytes.
func classifyBytes(b []byte) (portKind, string) {
	switch {
	case len(b) >= 5 && string(b[:5]) == "HTTP/":
		line, _, _ := strings.Cut(string(b), "\r\n")
		return portHTTP, line
	case len(b) >= 2 && b[0] == 0x15 && b[1] == 0x03: // a TLS alert record
		return portTLS, ""
	case len(b) >= 6:
		if _, _, _, err := wire.ReadResponse(bufio.NewReader(strings.NewReader(string(b))), nil); err == nil || errors.Is(err, io.ErrUnexpectedEOF) {
			// A well-formed response frame (maybe cut by the read limit).
			return portClient, ""
		}
	}
	shown := b
	if len(shown) > 16 {
		shown = shown[:16]
	}
	return portOther, fmt.Sprintf("%q", shown)
}

// speaksTLS reports whether a TLS handshake succeeds at addr (the
// certificate is not checked: nothing is sent over the connection).
func speaksTLS(addr string, deadline time.Time) bool {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	nc, err := (&tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true}}).DialContext(ctx, "tcp", addr) // #nosec G402 -- a probe: nothing is sent
	if err != nil {
		return false
	}
	nc.Close()
	return true
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isRefusedEverywhere reports whether err says that nothing listens at any
// endpoint (client.Options.FailFast).
func isRefusedEverywhere(err error) bool {
	return errors.Is(err, client.ErrUnavailable) && errors.Is(err, syscall.ECONNREFUSED)
}

// mayBeWrongPort reports whether err is a failure that a port speaking
// another protocol explains: no server answered (unavailable, timed out),
// and none said it was not the leader or got the request.
func mayBeWrongPort(err error) bool {
	return (errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrTimeout)) &&
		!errors.Is(err, client.ErrNotLeader) && !errors.Is(err, client.ErrAmbiguous) && !isRefusedEverywhere(err)
}
