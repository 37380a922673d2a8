package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"go.uber.org/goleak"

	"github.com/kayadb/kayadb/internal/crc"
)

var testToken = []byte("test-peer-token-0123456789abcdef")

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testNode is a transport on its own loopback listener, with a recording
// handler and captured logs.
type testNode struct {
	id   uint64
	tr   *TCP
	rec  *recorder
	logs *syncBuffer
	addr string
}

func startNode(t *testing.T, id uint64, token []byte, mutate ...func(*TCPOptions)) *testNode {
	t.Helper()
	l := listen(t)
	n := &testNode{id: id, rec: &recorder{}, logs: &syncBuffer{}, addr: l.Addr().String()}
	opts := TCPOptions{ID: id, Listener: l, Handler: n.rec, PeerToken: token,
		Logger: slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, m := range mutate {
		m(&opts)
	}
	n.tr = NewTCP(opts)
	t.Cleanup(func() { _ = n.tr.Close() })
	return n
}

// connect gives every node the others as peers.
func connect(nodes ...*testNode) {
	peers := map[uint64]string{}
	for _, n := range nodes {
		peers[n.id] = n.addr
	}
	for _, n := range nodes {
		n.tr.SetPeers(peers)
	}
}

// rawSession dials addr (from a local address when local is not empty),
// writes data and reads everything the server sends until it closes the
// connection. A server that keeps the connection open fails the test after
// 10 s: every caller expects it to be closed.
func rawSession(t *testing.T, local, addr string, data []byte) []byte {
	t.Helper()
	c := rawDial(t, local, addr)
	defer c.Close()
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	return readUntilClosed(t, c)
}

func rawDial(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readUntilClosed(t *testing.T, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept the connection open (read %d bytes)", len(b))
	}
	return b
}

func frameOf(t *testing.T, m *pb.Message) []byte {
	t.Helper()
	f, err := encodeFrame(m)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestProofBindsEverything: changing any input of a proof (the token, the
// role, the kind, either id, either nonce) changes the proof.
func TestProofBindsEverything(t *testing.T) {
	n1, n2 := newNonce(), newNonce()
	if n1 == n2 {
		t.Fatal("two nonces are equal")
	}
	base := proof(testToken, roleDialer, kindMessages, 2, 1, &n1, &n2)
	for name, p := range map[string][proofSize]byte{
		"token":  proof([]byte("another-peer-token-0123456789"), roleDialer, kindMessages, 2, 1, &n1, &n2),
		"role":   proof(testToken, roleAcceptor, kindMessages, 2, 1, &n1, &n2),
		"kind":   proof(testToken, roleDialer, kindSnapshot, 2, 1, &n1, &n2),
		"from":   proof(testToken, roleDialer, kindMessages, 3, 1, &n1, &n2),
		"to":     proof(testToken, roleDialer, kindMessages, 2, 3, &n1, &n2),
		"nonces": proof(testToken, roleDialer, kindMessages, 2, 1, &n2, &n1),
	} {
		if p == base {
			t.Errorf("the proof does not depend on the %s", name)
		}
	}
	if proof(testToken, roleDialer, kindMessages, 2, 1, &n1, &n2) != base {
		t.Fatal("the proof is not deterministic")
	}
}

// TestPeerTokenGoodProof: nodes with the same token exchange messages both
// ways, and nothing is rejected. (The snapshot tests run with a token too:
// see transports.)
func TestPeerTokenGoodProof(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	a, b := startNode(t, 1, testToken), startNode(t, 2, testToken)
	connect(a, b)
	for i := 0; i < 50; i++ {
		a.tr.Send([]*pb.Message{msg(1, 2, pb.MsgApp)})
	}
	b.tr.Send([]*pb.Message{msg(2, 1, pb.MsgAppResp)})
	waitUntil(t, "delivery", func() bool { return b.rec.count() == 50 && a.rec.count() == 1 })
	for _, n := range []*testNode{a, b} {
		if s := n.tr.Stats(); s.RejectedAuth != 0 || s.BadFrames != 0 {
			t.Fatalf("node %d stats %+v", n.id, s)
		}
	}
	closeWithin(t, a.tr)
	closeWithin(t, b.tr)
}

// TestPeerTokenWrongSecret: nodes with different secrets deliver nothing
// to each other, count the failures on both sides, and say why.
func TestPeerTokenWrongSecret(t *testing.T) {
	a, b := startNode(t, 1, testToken), startNode(t, 2, []byte("another-peer-token-0123456789"))
	connect(a, b)
	waitUntil(t, "rejections on both sides", func() bool {
		return a.tr.Stats().RejectedAuth >= 2 && b.tr.Stats().RejectedAuth >= 2
	})
	// Messages sent now go nowhere either: the peers keep failing.
	for i := 0; i < 10; i++ {
		a.tr.Send([]*pb.Message{msg(1, 2, pb.MsgApp)})
		b.tr.Send([]*pb.Message{msg(2, 1, pb.MsgApp)})
	}
	ra, rb := a.tr.Stats().RejectedAuth, b.tr.Stats().RejectedAuth
	waitUntil(t, "more attempts after the sends", func() bool {
		return a.tr.Stats().RejectedAuth >= ra+2 && b.tr.Stats().RejectedAuth >= rb+2
	})
	if a.rec.count()+b.rec.count() != 0 {
		t.Fatalf("delivered %d and %d messages across different secrets", a.rec.count(), b.rec.count())
	}
	for _, n := range []*testNode{a, b} {
		logs := n.logs.String()
		for _, want := range []string{"failed to prove it holds the peer token", "instead of proving it holds the peer token", fix} {
			if !strings.Contains(logs, want) {
				t.Errorf("node %d's log lacks %q:\n%s", n.id, want, logs)
			}
		}
	}
}

// recordingDial records the bytes written on the first connection it opens.
type recordingDial struct {
	mu    sync.Mutex
	first bool
	buf   bytes.Buffer
}

type recordConn struct {
	net.Conn
	d *recordingDial
}

func (c recordConn) Write(p []byte) (int, error) {
	c.d.mu.Lock()
	c.d.buf.Write(p)
	c.d.mu.Unlock()
	return c.Conn.Write(p)
}

func (d *recordingDial) bytes() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.buf.Bytes()...)
}

// TestPeerTokenReplay: the bytes of a legitimate connection (hello, proof,
// a frame), captured and replayed verbatim on a new connection, deliver
// nothing: the acceptor's new nonce makes the old proof wrong.
func TestPeerTokenReplay(t *testing.T) {
	a := startNode(t, 1, testToken)
	rd := &recordingDial{}
	b := startNode(t, 2, testToken, func(o *TCPOptions) {
		o.Listener = nil
		o.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			rd.mu.Lock()
			defer rd.mu.Unlock()
			if rd.first {
				return c, nil
			}
			rd.first = true
			return recordConn{c, rd}, nil
		}
	})
	a.tr.SetPeers(map[uint64]string{1: a.addr, 2: "127.0.0.1:1"})
	b.tr.SetPeers(map[uint64]string{1: a.addr})
	b.tr.Send([]*pb.Message{msg(2, 1, pb.MsgApp)})
	waitUntil(t, "the genuine message", func() bool { return a.rec.count() == 1 })
	captured := rd.bytes()
	if len(captured) < helloSize+proofSize+frameHeaderSize {
		t.Fatalf("captured only %d bytes", len(captured))
	}
	closeWithin(t, b.tr)
	got := rawSession(t, "", a.addr, captured)
	if len(got) != replySize || got[0] != replyOK {
		t.Fatalf("the acceptor answered % x", got)
	}
	waitUntil(t, "the rejection", func() bool { return a.tr.Stats().RejectedAuth == 1 })
	if n := a.rec.count(); n != 1 {
		t.Fatalf("the replayed frame was delivered (%d messages)", n)
	}
	if !strings.Contains(a.logs.String(), "failed the peer token check") {
		t.Fatalf("the log does not name the failure:\n%s", a.logs)
	}
}

// TestPeerOfAnotherVersion: a peer speaking the previous handshake (version
// 2: no nonce, frames right after it) is refused with a log line naming the
// version and the fix, and counted; a node of this version dialling an old
// node that hangs up says what that may mean.
func TestPeerOfAnotherVersion(t *testing.T) {
	a := startNode(t, 1, nil)
	a.tr.SetPeers(map[uint64]string{1: a.addr, 2: "127.0.0.1:1"})
	v2 := append([]byte(handshakeMagic), 2, 0, kindMessages)
	v2 = binary.LittleEndian.AppendUint64(v2, 2)
	v2 = binary.LittleEndian.AppendUint64(v2, 1)
	if got := rawSession(t, "", a.addr, append(v2, frameOf(t, msg(2, 1, pb.MsgApp))...)); len(got) != 0 {
		t.Fatalf("the old peer got an answer: % x", got)
	}
	waitUntil(t, "the rejection", func() bool { return a.tr.Stats().RejectedVersion == 1 })
	if a.rec.count() != 0 {
		t.Fatal("a frame of the old peer was delivered")
	}
	for _, want := range []string{"unsupported peer protocol version 2", "this node speaks 3", "run the same KayaDB release on every node"} {
		if !strings.Contains(a.logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, a.logs)
		}
	}

	// The other way: an old node reads 27 bytes, sees version 3 and hangs
	// up.
	old := listen(t)
	defer old.Close()
	go func() {
		for {
			c, err := old.Accept()
			if err != nil {
				return
			}
			_, _ = io.ReadFull(c, make([]byte, 27))
			_ = c.Close()
		}
	}()
	b := startNode(t, 2, nil)
	b.tr.SetPeers(map[uint64]string{2: b.addr, 1: old.Addr().String()})
	waitUntil(t, "the warning", func() bool { return strings.Contains(b.logs.String(), "unsupported peer protocol version") })
}

// TestPeerTokenOnOneSideOnly: a node with a token and one without refuse
// each other in both directions, each with a log line that names the
// problem and the fix, and count it.
func TestPeerTokenOnOneSideOnly(t *testing.T) {
	a, b := startNode(t, 1, testToken), startNode(t, 2, nil)
	connect(a, b)
	for i := 0; i < 10; i++ {
		a.tr.Send([]*pb.Message{msg(1, 2, pb.MsgApp)})
		b.tr.Send([]*pb.Message{msg(2, 1, pb.MsgApp)})
	}
	want := map[*testNode][]string{
		a: {"peer 2 at 127.0.0.1:", "sent no proof of the peer token: " + fix, "has no peer token and this node has one: " + fix},
		b: {"peer 1 at 127.0.0.1:", "requires a peer token and this node has none: " + fix, "uses a peer token and this node has none: " + fix},
	}
	for n, lines := range want {
		waitUntil(t, fmt.Sprintf("node %d's log lines", n.id), func() bool {
			logs := n.logs.String()
			for _, l := range lines {
				if !strings.Contains(logs, l) {
					return false
				}
			}
			return true
		})
		// Each node refused once as the acceptor and once as the dialer.
		if s := n.tr.Stats(); s.RejectedAuth < 2 {
			t.Errorf("node %d stats %+v", n.id, s)
		}
	}
	if a.rec.count()+b.rec.count() != 0 {
		t.Fatalf("delivered %d and %d messages", a.rec.count(), b.rec.count())
	}
}

// TestImpostorAcceptorLearnsNothing: a listener at a member's address that
// does not prove it holds the token (a made-up proof, no proof, or no
// answer at all) receives the dialer's hello and not one byte more — no
// proof, no frame, no snapshot — and the dialer counts the failure.
func TestImpostorAcceptorLearnsNothing(t *testing.T) {
	for _, mode := range []string{"forged-proof", "no-token", "silent"} {
		t.Run(mode, func(t *testing.T) {
			imp := listen(t)
			received := make(chan []byte, 16)
			var conns sync.WaitGroup
			conns.Add(1)
			go func() {
				defer conns.Done()
				for {
					c, err := imp.Accept()
					if err != nil {
						return
					}
					conns.Add(1)
					go func() {
						defer conns.Done()
						defer c.Close()
						var got bytes.Buffer
						hs := make([]byte, helloSize)
						if _, err := io.ReadFull(c, hs); err != nil {
							return
						}
						got.Write(hs)
						switch mode {
						case "forged-proof":
							r := reply{status: replyOK, auth: authHMAC, nonce: newNonce(), proof: newNonce()}
							_, _ = c.Write(r.encode())
						case "no-token":
							_, _ = c.Write((&reply{status: replyOK, auth: authNone}).encode())
						}
						_, _ = io.Copy(&got, c) // until the dialer hangs up
						select {
						case received <- got.Bytes():
						default: // the test has seen enough
						}
					}()
				}
			}()
			d := startNode(t, 1, testToken, func(o *TCPOptions) {
				o.Listener = nil
				o.HandshakeTimeout = 200 * time.Millisecond
			})
			d.tr.SetPeers(map[uint64]string{2: imp.Addr().String()})
			for i := 0; i < 5; i++ {
				d.tr.Send([]*pb.Message{msg(1, 2, pb.MsgApp)})
			}
			var wrote atomic.Bool
			done, errc := doneChan(t)
			d.tr.SendSnapshot(2, func(w io.Writer) error { wrote.Store(true); return writePayload(w, []byte("secret state")) }, done)
			err := waitErr(t, errc)
			if err == nil || wrote.Load() {
				t.Fatalf("snapshot to the impostor: done(%v), stream written: %v", err, wrote.Load())
			}
			for i := 0; i < 3; i++ {
				var got []byte
				select {
				case got = <-received:
				case <-time.After(10 * time.Second):
					t.Fatal("the impostor saw no connection end")
				}
				if len(got) != helloSize {
					t.Fatalf("the impostor received %d bytes, want only the %d-byte hello: % x", len(got), helloSize, got)
				}
				h := decodeHelloRest(got[helloPrefixSize:])
				if h.from != 1 || h.to != 2 || h.auth != authHMAC {
					t.Fatalf("hello %+v", h)
				}
			}
			if mode != "silent" && d.tr.Stats().RejectedAuth == 0 {
				t.Fatalf("stats %+v", d.tr.Stats())
			}
			closeWithin(t, d.tr)
			_ = imp.Close()
			conns.Wait()
		})
	}
}

// TestNoFrameFromUnprovenPeer: against a node with a token, a stranger who
// names a member sends forged frames and a snapshot stream after no proof,
// after a made-up proof, or nothing after its hello: nothing reaches the
// handler, the snapshot handler never runs, and every connection is closed
// (the silent one when the handshake deadline passes).
func TestNoFrameFromUnprovenPeer(t *testing.T) {
	h := &snapHandler{f: func(uint64, io.Reader) error { return nil }}
	l := listen(t)
	logs := &syncBuffer{}
	tr := NewTCP(TCPOptions{ID: 1, Listener: l, Handler: h, PeerToken: testToken, HandshakeTimeout: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	defer tr.Close()
	tr.SetPeers(map[uint64]string{1: l.Addr().String(), 2: "127.0.0.1:1"})
	forged := frameOf(t, msg(2, 1, pb.MsgApp))
	helloAs := func(kind, auth byte) []byte {
		return (&hello{kind: kind, from: 2, to: 1, auth: auth, nonce: newNonce()}).encode()
	}
	madeUp := newNonce()

	got := rawSession(t, "", l.Addr().String(), append(helloAs(kindMessages, authNone), forged...))
	if len(got) != replySize || got[0] != replyTokenRequired {
		t.Fatalf("no proof: reply % x", got)
	}
	got = rawSession(t, "", l.Addr().String(), append(append(helloAs(kindMessages, authHMAC), madeUp[:]...), forged...))
	if len(got) != replySize || got[0] != replyOK {
		t.Fatalf("made-up proof: reply % x", got)
	}
	stream := binary.LittleEndian.AppendUint64(nil, 5)
	rawSession(t, "", l.Addr().String(), append(append(helloAs(kindSnapshot, authHMAC), madeUp[:]...), append(stream, "hello"...)...))
	rawSession(t, "", l.Addr().String(), helloAs(kindMessages, authHMAC)) // then silence
	waitUntil(t, "four rejections", func() bool { return tr.Stats().RejectedAuth == 4 })
	if n := h.count(); n != 0 {
		t.Fatalf("%d forged messages delivered", n)
	}
	if n := h.calls.Load(); n != 0 {
		t.Fatalf("the snapshot handler ran %d times", n)
	}
	if s := tr.Stats(); s.Received != 0 || s.SnapshotsRecv+s.SnapshotsFailed != 0 {
		t.Fatalf("stats %+v", s)
	}
	if !strings.Contains(logs.String(), "sent no proof of the peer token") {
		t.Fatalf("log:\n%s", logs)
	}
}

// TestInboundConnectionCaps: over the per-source cap of unauthenticated
// connections, or the cap on all inbound connections, a connection is
// closed at once and counted; an authenticated connection no longer counts
// against its source, and a closed one frees its slot.
func TestInboundConnectionCaps(t *testing.T) {
	probe, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("this machine cannot use 127.0.0.2 as a second loopback address: %v", err)
	}
	_ = probe.Close()
	n := startNode(t, 1, nil, func(o *TCPOptions) {
		o.MaxInboundConns, o.MaxUnauthenticatedPerSource = 3, 2
		o.HandshakeTimeout = time.Minute // held connections must not time out during the test
	})
	n.tr.SetPeers(map[uint64]string{1: n.addr, 2: "127.0.0.1:1"})
	var held []net.Conn
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	hold := func(local string) net.Conn {
		c := rawDial(t, local, n.addr)
		held = append(held, c)
		want := len(held)
		waitUntil(t, "the connection admitted", func() bool { return n.tr.Stats().InboundConns == want })
		return c
	}
	first := hold("127.0.0.1")
	hold("127.0.0.1")
	if got := rawSession(t, "127.0.0.1", n.addr, nil); len(got) != 0 {
		t.Fatalf("over the source cap: % x", got)
	}
	if s := n.tr.Stats(); s.RejectedSourceLimit != 1 || s.InboundConns != 2 {
		t.Fatalf("stats %+v", s)
	}
	hold("127.0.0.2")
	rawSession(t, "127.0.0.3", n.addr, nil)
	if s := n.tr.Stats(); s.RejectedConnLimit != 1 || s.InboundConns != 3 {
		t.Fatalf("stats %+v", s)
	}
	// A closed connection frees its slot.
	_ = first.Close()
	held = held[1:]
	waitUntil(t, "the slot freed", func() bool { return n.tr.Stats().InboundConns == 2 })
	hold("127.0.0.1")

	// An authenticated connection leaves the source's unauthenticated
	// count: with a cap of 1, a second connection fits beside it.
	m := startNode(t, 1, nil, func(o *TCPOptions) { o.MaxUnauthenticatedPerSource = 1; o.HandshakeTimeout = time.Minute })
	m.tr.SetPeers(map[uint64]string{1: m.addr, 2: "127.0.0.1:1"})
	authed := rawDial(t, "127.0.0.1", m.addr)
	defer authed.Close()
	if _, err := authed.Write(plainHello(kindMessages, 2, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(authed, make([]byte, replySize)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "authenticated", func() bool {
		m.tr.mu.Lock()
		defer m.tr.mu.Unlock()
		return len(m.tr.unauth) == 0
	})
	pending := rawDial(t, "127.0.0.1", m.addr)
	defer pending.Close()
	waitUntil(t, "the second connection admitted", func() bool { return m.tr.Stats().InboundConns == 2 })
	rawSession(t, "127.0.0.1", m.addr, nil)
	if s := m.tr.Stats(); s.RejectedSourceLimit != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// starveListener wraps the connections it accepts so that the test learns
// when the server asks for more bytes than a connection was sent (expect):
// it has then read everything and waits, its buffers allocated.
type starveListener struct {
	net.Listener
	expect  int64
	starved chan struct{}
}

func (l *starveListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &starveConn{Conn: c, l: l}, nil
}

type starveConn struct {
	net.Conn
	l    *starveListener
	read int64
	once sync.Once
}

func (c *starveConn) Read(p []byte) (int, error) {
	if c.read >= c.l.expect {
		c.once.Do(func() { c.l.starved <- struct{}{} })
	}
	n, err := c.Conn.Read(p)
	c.read += int64(n)
	return n, err
}

// TestLargeFramesCostOnlyWhatArrives: many authenticated connections each
// announce a 64 MiB frame and send 100 bytes of it. The node's heap grows
// by about a chunk per connection, not by the announced sizes (the issue
// measured 3.36 GB for 50 such connections).
func TestLargeFramesCostOnlyWhatArrives(t *testing.T) {
	const conns = 32
	const sent = 100
	inner := listen(t)
	sl := &starveListener{Listener: inner, expect: helloSize + proofSize + frameHeaderSize + sent, starved: make(chan struct{}, conns)}
	rec := &recorder{}
	tr := NewTCP(TCPOptions{ID: 1, Listener: sl, Handler: rec, PeerToken: testToken, MaxInboundConns: 2 * conns, MaxUnauthenticatedPerSource: 2 * conns})
	defer tr.Close()
	tr.SetPeers(map[uint64]string{1: inner.Addr().String(), 2: "127.0.0.1:1"})
	dialer := newTCP(TCPOptions{ID: 2, PeerToken: testToken})

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var cs []net.Conn
	defer func() {
		for _, c := range cs {
			_ = c.Close()
		}
	}()
	hdr := make([]byte, frameHeaderSize)
	binary.LittleEndian.PutUint32(hdr[0:4], MaxFrameSize)
	binary.LittleEndian.PutUint32(hdr[4:8], crc.Masked(nil))
	part := append(hdr, make([]byte, sent)...)
	for i := 0; i < conns; i++ {
		c := rawDial(t, "", inner.Addr().String())
		cs = append(cs, c)
		if err := dialer.dialHandshake(c, kindMessages, 1, inner.Addr().String()); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(part); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < conns; i++ {
		select {
		case <-sl.starved:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d connections reached the frame body", i, conns)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew by %.1f MiB for %d connections announcing %d MiB each", float64(grew)/(1<<20), conns, MaxFrameSize>>20)
	// A chunk (1 MiB), a read buffer (64 KiB) and small change per
	// connection; 4 MiB each is generous and far below 64 MiB.
	if limit := int64(conns) * 4 << 20; grew > limit {
		t.Fatalf("heap grew by %d MiB for %d connections (limit %d MiB)", grew>>20, conns, limit>>20)
	}
	for _, c := range cs {
		_ = c.Close()
	}
	waitUntil(t, "connections closed", func() bool { return tr.Stats().InboundConns == 0 })
	if rec.count() != 0 {
		t.Fatal("a partial frame was delivered")
	}
}

// TestLargeFrameReadInChunks: a frame longer than a chunk, sent in pieces,
// arrives whole.
func TestLargeFrameReadInChunks(t *testing.T) {
	a, b := startNode(t, 1, testToken), startNode(t, 2, testToken)
	connect(a, b)
	m := msg(1, 2, pb.MsgApp)
	m.Entries[0].Data = bytes.Repeat([]byte("0123456789abcdef"), (3*frameChunk+12345)/16)
	a.tr.Send([]*pb.Message{m})
	waitUntil(t, "the large message", func() bool { return b.rec.count() == 1 })
	b.rec.mu.Lock()
	got := b.rec.msgs[0].GetEntries()[0].GetData()
	b.rec.mu.Unlock()
	if !bytes.Equal(got, m.Entries[0].Data) {
		t.Fatalf("the %d-byte payload arrived changed (%d bytes)", len(m.Entries[0].Data), len(got))
	}
}

// TestScreenLocalMessageTypes: message types raft uses only inside a node,
// unknown types, and MsgSnap outside a snapshot stream are dropped and
// counted by reason; the connection goes on, and a normal message after
// them is delivered.
func TestScreenLocalMessageTypes(t *testing.T) {
	n := startNode(t, 1, nil)
	n.tr.SetPeers(map[uint64]string{1: n.addr, 2: "127.0.0.1:1"})
	local := []pb.MessageType{pb.MsgHup, pb.MsgBeat, pb.MsgUnreachable, pb.MsgSnapStatus, pb.MsgCheckQuorum,
		pb.MsgStorageAppend, pb.MsgStorageAppendResp, pb.MsgStorageApply, pb.MsgStorageApplyResp, pb.MsgForgetLeader, pb.MessageType(99)}
	data := plainHello(kindMessages, 2, 1)
	for _, typ := range local {
		data = append(data, frameOf(t, msg(2, 1, typ))...)
	}
	data = append(data, frameOf(t, msg(2, 1, pb.MsgSnap))...)
	data = append(data, frameOf(t, msg(2, 1, pb.MsgHeartbeat))...)
	c := rawDial(t, "", n.addr)
	defer c.Close()
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the heartbeat", func() bool { return n.rec.count() == 1 })
	n.rec.mu.Lock()
	typ := n.rec.msgs[0].GetType()
	n.rec.mu.Unlock()
	if typ != pb.MsgHeartbeat {
		t.Fatalf("delivered %v", typ)
	}
	if s := n.tr.Stats(); s.ScreenedLocal != uint64(len(local)) || s.ScreenedSnap != 1 || s.Received != 1 || s.BadFrames != 0 {
		t.Fatalf("stats %+v", s)
	}
	if !strings.Contains(n.logs.String(), "no peer sends") {
		t.Fatalf("log:\n%s", n.logs)
	}
	for typ := range peerTypes {
		if screen(&pb.Message{Type: new(typ)}) != "" {
			t.Errorf("%v screened", typ)
		}
	}
}

// fakeClock is a settable clock for the log limiter.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// TestRejectionLogsLimitedPerSource: twenty bad connections from one
// address are all counted and logged once; a minute later the next one is
// logged again, with the number held back.
func TestRejectionLogsLimitedPerSource(t *testing.T) {
	clock := &fakeClock{}
	clock.ns.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	n := startNode(t, 1, testToken, func(o *TCPOptions) { o.now = clock.now })
	for i := 0; i < 20; i++ {
		rawSession(t, "", n.addr, []byte("GET / HTTP/1.1\r\n\r\n"+strings.Repeat("x", helloSize)))
	}
	waitUntil(t, "counted", func() bool { return n.tr.Stats().BadFrames == 20 })
	if c := strings.Count(n.logs.String(), "bad handshake magic"); c != 1 {
		t.Fatalf("%d log lines for 20 connections from one source:\n%s", c, n.logs)
	}
	clock.advance(61 * time.Second)
	rawSession(t, "", n.addr, []byte("GET / HTTP/1.1\r\n\r\n"+strings.Repeat("x", helloSize)))
	waitUntil(t, "logged again", func() bool { return strings.Count(n.logs.String(), "bad handshake magic") == 2 })
	if !strings.Contains(n.logs.String(), "similar_events_not_logged=19") {
		t.Fatalf("log:\n%s", n.logs)
	}
}

// TestLogLimiterBounded: the limiter holds at most maxLogKeys recent keys;
// beyond that new keys are not logged until old ones expire.
func TestLogLimiterBounded(t *testing.T) {
	clock := &fakeClock{}
	l := newLogLimiter(clock.now)
	for i := 0; i < maxLogKeys; i++ {
		if ok, _ := l.allow(fmt.Sprint(i)); !ok {
			t.Fatalf("key %d refused", i)
		}
	}
	if ok, _ := l.allow("one more"); ok {
		t.Fatal("a key beyond the bound was admitted")
	}
	if ok, _ := l.allow("0"); ok {
		t.Fatal("a key logged twice within the interval")
	}
	clock.advance(logInterval)
	if ok, _ := l.allow("one more"); !ok {
		t.Fatal("expired keys were not purged")
	}
	if len(l.seen) != 1 {
		t.Fatalf("%d keys kept", len(l.seen))
	}
}

// TestOptionsValidate: a short peer token is refused with the fix.
func TestOptionsValidate(t *testing.T) {
	o := TCPOptions{PeerToken: []byte("short")}
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "at least 16") || !strings.Contains(err.Error(), "/dev/urandom") {
		t.Fatalf("short token: %v", err)
	}
	o.PeerToken = testToken
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
}
