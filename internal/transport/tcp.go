package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/kayadb/kayadb/internal/crc"
)

// frameHeaderSize is a frame's length and checksum.
const frameHeaderSize = 8

// frameChunk bounds how far a frame's buffer runs ahead of the bytes that
// arrived: a frame longer than this is read in chunks of this size, so
// that a peer announcing a 64 MiB frame and sending a few bytes costs
// 1 MiB, not 64. Raft's appends are far smaller (MaxSizePerMsg), so the
// common frame is read in one piece into a reused buffer.
const frameChunk = 1 << 20

// TCPOptions configures a TCP transport.
type TCPOptions struct {
	// ID is this node's id.
	ID uint64
	// Listener accepts peer connections (already bound). Nil: send only.
	Listener net.Listener
	// Dial opens a connection to a peer; nil uses net.Dialer with a 2 s
	// timeout. A TLS dialer plugs in here.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Handler receives incoming messages and unreachable reports.
	Handler Handler
	// VerifyPeer, when set, checks the TLS state of an inbound connection
	// against the node id its handshake claims (a peer's certificate must
	// belong to that member). An error closes the connection.
	VerifyPeer func(id uint64, cs tls.ConnectionState) error
	// QueueSize bounds each peer's send queue (messages). Default 4096: it
	// must stay above raft's MaxInflightMsgs so that a healthy peer never
	// drops appends.
	QueueSize int
	// PeerToken, when set, is the cluster secret every member holds: a
	// connection in either direction carries frames only after both ends
	// proved they hold it (see the package doc). At least
	// MinPeerTokenSize bytes. Nil: no proof is asked or given, and a peer
	// that has a token is refused (both ends must agree).
	PeerToken []byte
	// HandshakeTimeout bounds everything before authentication: the TLS
	// handshake, the hello, the proofs. Default 10 s.
	HandshakeTimeout time.Duration
	// MaxInboundConns caps the inbound connections open at once; one over
	// it is closed at once (and counted). Default 64 (see
	// defaultMaxInboundConns for the reasoning).
	MaxInboundConns int
	// MaxUnauthenticatedPerSource caps the inbound connections from one
	// source address that have not finished the handshake. Default 4.
	MaxUnauthenticatedPerSource int
	// Logger receives connection events.
	Logger *slog.Logger

	// now is the clock of the log limiter and of outages (tests); nil is
	// time.Now.
	now func() time.Time
	// outageGrace is how long a peer must have been unreachable before it
	// is logged (tests); 0 is defaultOutageGrace.
	outageGrace time.Duration
}

// defaultOutageGrace: a peer unreachable for less than this is not logged.
// The nodes of a cluster started together miss each other for a moment,
// and a connection that breaks is re-dialled at once; neither is news. A
// second is far above those and far below an outage worth knowing about.
const defaultOutageGrace = time.Second

// MinPeerTokenSize is the shortest peer token accepted: 16 bytes of a
// random secret are 128 bits or more, beyond guessing.
const MinPeerTokenSize = 16

// Validate checks the options that have no safe default.
func (o *TCPOptions) Validate() error {
	if len(o.PeerToken) > 0 && len(o.PeerToken) < MinPeerTokenSize {
		return fmt.Errorf("the peer token is %d bytes; it must be at least %d (for example: head -c 32 /dev/urandom | base64)", len(o.PeerToken), MinPeerTokenSize)
	}
	if o.HandshakeTimeout < 0 || o.MaxInboundConns < 0 || o.MaxUnauthenticatedPerSource < 0 || o.QueueSize < 0 {
		return errors.New("transport: negative timeout, cap or queue size")
	}
	return nil
}

// TCP is the production transport: length-prefixed, checksummed frames over
// TCP connections.
type TCP struct {
	opts TCPOptions
	c    counters

	logs *logLimiter

	mu    sync.Mutex
	peers map[uint64]*peer
	// conns are the inbound connections (at most MaxInboundConns).
	conns map[net.Conn]struct{}
	// unauth counts, per source address, the inbound connections that have
	// not finished the handshake; sources at zero are absent.
	unauth map[string]int
	// roster is the set of ids allowed to send to us; guarded by mu.
	roster map[uint64]bool
	closed bool

	wg sync.WaitGroup
}

// NewTCP starts a transport; it accepts connections on opts.Listener until
// Close. The options should have passed Validate (a peer token that is too
// short is used as given).
func NewTCP(opts TCPOptions) *TCP {
	t := newTCP(opts)
	if t.opts.Listener != nil {
		t.wg.Add(1)
		go t.acceptLoop()
	}
	return t
}

// newTCP fills in the defaults and builds the transport without starting
// anything.
func newTCP(opts TCPOptions) *TCP {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 4096
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = defaultHandshakeTimeout
	}
	if opts.MaxInboundConns <= 0 {
		opts.MaxInboundConns = defaultMaxInboundConns
	}
	if opts.MaxUnauthenticatedPerSource <= 0 {
		opts.MaxUnauthenticatedPerSource = defaultMaxUnauthPerSource
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	if opts.outageGrace <= 0 {
		opts.outageGrace = defaultOutageGrace
	}
	if opts.Dial == nil {
		d := &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}
		opts.Dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	opts.PeerToken = append([]byte(nil), opts.PeerToken...)
	if len(opts.PeerToken) == 0 {
		opts.PeerToken = nil
	}
	return &TCP{opts: opts, logs: newLogLimiter(opts.now), peers: map[uint64]*peer{}, conns: map[net.Conn]struct{}{},
		unauth: map[string]int{}, roster: map[uint64]bool{}}
}

// SetPeers implements Transport.
func (t *TCP) SetPeers(peers map[uint64]string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.roster = map[uint64]bool{}
	for id, addr := range peers {
		if id == t.opts.ID {
			continue
		}
		t.roster[id] = true
		if p, ok := t.peers[id]; ok {
			if p.addr == addr {
				continue
			}
			p.stop()
		}
		p := newPeer(t, id, addr)
		t.peers[id] = p
		t.wg.Add(1)
		go p.run()
	}
	for id, p := range t.peers {
		if !t.roster[id] {
			p.stop()
			delete(t.peers, id)
		}
	}
}

// Send implements Transport. It marshals on the caller's goroutine (the
// Raft loop), as raft requires, and never blocks.
func (t *TCP) Send(msgs []*pb.Message) {
	for _, m := range msgs {
		t.mu.Lock()
		p := t.peers[m.GetTo()]
		t.mu.Unlock()
		if p == nil {
			t.c.droppedUnknown.Add(1)
			continue
		}
		frame, err := encodeFrame(m)
		if err != nil {
			t.opts.Logger.Error("cannot encode raft message", "to", m.GetTo(), "type", m.GetType().String(), "err", err)
			continue
		}
		select {
		case p.q <- frame:
		default:
			t.c.droppedFull.Add(1)
			t.opts.Handler.ReportUnreachable(m.GetTo())
		}
	}
}

func encodeFrame(m *pb.Message) ([]byte, error) {
	frame := make([]byte, frameHeaderSize, frameHeaderSize+proto.Size(m))
	frame, err := proto.MarshalOptions{}.MarshalAppend(frame, m)
	if err != nil {
		return nil, err
	}
	payload := frame[frameHeaderSize:]
	if len(payload) > MaxFrameSize {
		return nil, fmt.Errorf("message of %d bytes exceeds the %d-byte frame limit", len(payload), MaxFrameSize)
	}
	binary.LittleEndian.PutUint32(frame[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(frame[4:8], crc.Masked(payload))
	return frame, nil
}

// Stats implements Transport.
func (t *TCP) Stats() Stats {
	s := t.c.snapshot()
	t.mu.Lock()
	s.InboundConns = len(t.conns)
	for _, p := range t.peers {
		if p.connected.Load() {
			s.ConnectedPeers++
		}
	}
	t.mu.Unlock()
	return s
}

// Close implements Transport.
func (t *TCP) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	for _, p := range t.peers {
		p.stop()
	}
	for c := range t.conns {
		_ = c.Close()
	}
	t.mu.Unlock()
	var err error
	if t.opts.Listener != nil {
		err = t.opts.Listener.Close()
	}
	t.wg.Wait()
	return err
}

func (t *TCP) acceptLoop() {
	defer t.wg.Done()
	for {
		c, err := t.opts.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			t.mu.Lock()
			closed := t.closed
			t.mu.Unlock()
			if closed {
				return
			}
			t.opts.Logger.Warn("raft listener accept failed", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		src := sourceOf(c.RemoteAddr())
		if ok, reason := t.admit(c, src); !ok {
			_ = c.Close()
			switch reason {
			case "":
				return // closed
			case "connection_limit":
				t.logLimited(t.opts.Logger, src, reason, "closing raft connection: too many inbound raft connections; a correct peer needs one or two",
					"remote", c.RemoteAddr().String(), "max", t.opts.MaxInboundConns)
			default:
				t.logLimited(t.opts.Logger, src, reason, "closing raft connection: too many unauthenticated raft connections from one address",
					"remote", c.RemoteAddr().String(), "max", t.opts.MaxUnauthenticatedPerSource)
			}
			continue
		}
		go t.serveConn(c, src)
	}
}

// serveConn reads one inbound connection (admitted by admit) until it
// fails or a frame is bad. Until the handshake has authenticated the peer,
// it reads only the handshake, within HandshakeTimeout.
func (t *TCP) serveConn(c net.Conn, src string) {
	defer t.wg.Done()
	authed := false
	defer func() {
		t.release(c, src, authed)
		_ = c.Close()
	}()
	log := t.opts.Logger.With("remote", c.RemoteAddr().String())
	_ = c.SetDeadline(time.Now().Add(t.opts.HandshakeTimeout))
	if tc, ok := c.(*tls.Conn); ok {
		// A TLS listener: finish the handshake (the peer's certificate is
		// verified here) before reading anything.
		if err := tc.Handshake(); err != nil {
			t.c.rejectedTLS.Add(1)
			var rh tls.RecordHeaderError
			if errors.As(err, &rh) {
				t.logLimited(log, src, "tls", "closing raft connection: the peer did not start a TLS handshake (plain TCP to a TLS port?)", "err", err)
			} else {
				t.logLimited(log, src, "tls", "closing raft connection: TLS handshake failed", "err", err)
			}
			return
		}
	}
	hs, ok := t.acceptHandshake(c, src, log)
	if !ok {
		return
	}
	authed = true
	t.authenticated(src)
	_ = c.SetDeadline(time.Time{})
	from := hs.from
	log = log.With("peer", from)
	// Only now may bytes beyond the handshake be read (and buffered).
	r := bufio.NewReaderSize(c, 64<<10)
	if hs.kind == kindSnapshot {
		t.serveSnapshot(c, r, from, log)
		return
	}
	var buf []byte
	var hdr [frameHeaderSize]byte
	for {
		// Peers heartbeat every tick; a minute of silence is a dead peer.
		_ = c.SetReadDeadline(time.Now().Add(time.Minute))
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				log.Debug("raft connection ended", "err", err)
			}
			return
		}
		n := binary.LittleEndian.Uint32(hdr[0:4])
		if n == 0 || n > MaxFrameSize {
			t.c.badFrames.Add(1)
			log.Warn("closing raft connection: bad frame length", "length", n, "max", MaxFrameSize)
			return
		}
		payload, err := readFramePayload(r, int(n), buf)
		if err != nil {
			log.Debug("raft connection ended inside a frame", "err", err)
			return
		}
		if cap(payload) <= frameChunk {
			buf = payload // reuse small buffers; large ones go back to the GC
		}
		if got, want := crc.Masked(payload), binary.LittleEndian.Uint32(hdr[4:8]); got != want {
			t.c.badFrames.Add(1)
			log.Warn("closing raft connection: frame checksum mismatch", "stored", want, "computed", got)
			return
		}
		m := &pb.Message{}
		if err := proto.Unmarshal(payload, m); err != nil {
			t.c.badFrames.Add(1)
			log.Warn("closing raft connection: frame does not decode", "err", err)
			return
		}
		if m.GetFrom() != from || !t.allowed(from) {
			t.c.rejectedFrom.Add(1)
			continue
		}
		if m.GetTo() != t.opts.ID {
			t.c.rejectedTo.Add(1)
			continue
		}
		if reason := screen(m); reason != "" {
			if reason == screenSnap {
				t.c.screenedSnap.Add(1)
			} else {
				t.c.screenedLocal.Add(1)
			}
			t.logLimited(log, src, reason, "dropping a raft message no peer sends over a message connection", "type", m.GetType().String(), "reason", reason)
			continue
		}
		t.c.received.Add(1)
		t.opts.Handler.Receive(m)
	}
}

// readFramePayload reads an n-byte frame payload from r. Up to frameChunk bytes
// it reads into buf (reused when large enough); a longer payload is read
// chunk by chunk, each allocated only when the bytes before it have
// arrived, and joined at the end: memory follows the bytes received.
func readFramePayload(r io.Reader, n int, buf []byte) ([]byte, error) {
	if n <= frameChunk {
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		_, err := io.ReadFull(r, buf)
		return buf, err
	}
	chunks := make([][]byte, 0, (n+frameChunk-1)/frameChunk)
	for got := 0; got < n; {
		c := make([]byte, min(frameChunk, n-got))
		if _, err := io.ReadFull(r, c); err != nil {
			return nil, err
		}
		chunks = append(chunks, c)
		got += len(c)
	}
	out := make([]byte, 0, n)
	for _, c := range chunks {
		out = append(out, c...)
	}
	return out, nil
}

func (t *TCP) allowed(id uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.roster[id]
}

// peer owns the outbound connection to one node.
type peer struct {
	t         *TCP
	id        uint64
	addr      string
	q         chan []byte
	quit      chan struct{}
	once      sync.Once
	connected atomic.Bool
}

func newPeer(t *TCP, id uint64, addr string) *peer {
	return &peer{t: t, id: id, addr: addr, q: make(chan []byte, t.opts.QueueSize), quit: make(chan struct{})}
}

func (p *peer) stop() { p.once.Do(func() { close(p.quit) }) }

// dial connects to the peer. Stopping the peer (Close, or its removal from
// the roster) cancels the attempt, so Close never waits for a dial timeout.
func (p *peer) dial(timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel() // also ends the goroutine below
	go func() {
		select {
		case <-p.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	return p.t.opts.Dial(ctx, p.addr)
}

// run dials the peer (with jittered exponential back-off) and writes queued
// frames, batching them into as few writes as the queue allows.
//
// An outage — dials failing for outageGrace or longer — is logged once, as a
// warning with the peer's address, and its end once, when a dial succeeds
// again: an unreachable peer is visible at the default level without a
// line per attempt.
func (p *peer) run() {
	defer p.t.wg.Done()
	backoff := 50 * time.Millisecond
	log := p.t.opts.Logger.With("peer", p.id, "addr", p.addr)
	var outage time.Time // when the dials started failing; zero while they succeed
	outageLogged := false
	for {
		select {
		case <-p.quit:
			return
		default:
		}
		p.t.c.dials.Add(1)
		c, err := p.dial(2 * time.Second)
		if err == nil {
			if err = p.handshake(c, kindMessages); err != nil {
				_ = c.Close()
				p.t.noteHandshakeError(err, p.id, p.addr, log)
			}
		}
		if err != nil {
			p.t.c.fails.Add(1)
			p.drainReportingUnreachable()
			now := p.t.opts.now()
			if outage.IsZero() {
				outage = now
			}
			if !outageLogged && now.Sub(outage) >= p.t.opts.outageGrace {
				outageLogged = true
				log.Warn("cannot reach raft peer; retrying (logged once until it is reachable again)",
					"err", err, "unreachable_for", now.Sub(outage).Round(time.Millisecond))
			} else {
				log.Debug("cannot reach raft peer", "err", err, "retry_in", backoff)
			}
			select {
			case <-p.quit:
				return
			case <-time.After(backoff + time.Duration(rand.Int64N(int64(backoff)/2+1))):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		if outageLogged {
			log.Info("raft peer reachable again", "unreachable_for", p.t.opts.now().Sub(outage).Round(time.Millisecond))
		}
		outage, outageLogged = time.Time{}, false
		p.connected.Store(true)
		err = p.write(c)
		p.connected.Store(false)
		_ = c.Close()
		if err != nil {
			log.Debug("raft peer connection lost", "err", err)
			p.t.opts.Handler.ReportUnreachable(p.id)
		}
	}
}

// drainReportingUnreachable drops what is queued while the peer is down:
// raft resends what matters, and stale messages would only be noise.
func (p *peer) drainReportingUnreachable() {
	dropped := false
	for {
		select {
		case <-p.q:
			dropped = true
		default:
			if dropped {
				p.t.opts.Handler.ReportUnreachable(p.id)
			}
			return
		}
	}
}

// handshake runs the dialer's half of the handshake on c. Stopping the
// peer closes c, so that Close never waits for a peer that stalls it.
func (p *peer) handshake(c net.Conn, kind byte) error {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-p.quit:
			_ = c.Close()
		case <-stop:
		}
	}()
	err := p.t.dialHandshake(c, kind, p.id, p.addr)
	close(stop)
	<-done
	return err
}

// noteHandshakeError counts and logs a failed outbound handshake: a peer
// token problem or a peer that hung up on us is a configuration problem
// worth a warning (once a minute per peer); a timeout or a reset is not.
func (t *TCP) noteHandshakeError(err error, id uint64, addr string, log *slog.Logger) {
	key := "peer " + strconv.FormatUint(id, 10) + " " + addr
	var ae *authError
	switch {
	case errors.As(err, &ae):
		t.c.rejectedAuth.Add(1)
		t.logLimited(log, key, "auth", "cannot talk to raft peer: "+ae.msg)
	case errors.Is(err, errHandshakeClosed):
		t.logLimited(log, key, "closed", "cannot talk to raft peer", "err", err)
	default:
		log.Debug("raft handshake failed", "err", err)
	}
}

// write sends queued frames on c (handshake done) until it fails or the
// peer stops.
func (p *peer) write(c net.Conn) error {
	w := bufio.NewWriterSize(c, 64<<10)
	// The peer never writes on this connection after its handshake reply;
	// a read returning means it closed it.
	closed := make(chan struct{})
	go func() {
		var b [1]byte
		_, _ = c.Read(b[:])
		close(closed)
	}()
	defer func() { _ = c.Close(); <-closed }()
	for {
		select {
		case <-p.quit:
			return w.Flush()
		case <-closed:
			return errors.New("peer closed the connection")
		case f := <-p.q:
			_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := w.Write(f); err != nil {
				return err
			}
			p.t.c.sent.Add(1)
			// Batch: keep writing while more frames are queued.
			for more := true; more; {
				select {
				case f := <-p.q:
					if _, err := w.Write(f); err != nil {
						return err
					}
					p.t.c.sent.Add(1)
				default:
					more = false
				}
			}
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
}

// snapshotTimeout bounds one snapshot transfer (sending and storing).
const snapshotTimeout = 30 * time.Minute

// serveSnapshot receives one snapshot stream and acknowledges it.
func (t *TCP) serveSnapshot(c net.Conn, r io.Reader, from uint64, log *slog.Logger) {
	_ = c.SetDeadline(time.Now().Add(snapshotTimeout))
	err := t.opts.Handler.ReceiveSnapshot(from, r)
	ack := []byte{0}
	if err != nil {
		ack[0] = 1
		t.c.snapFailed.Add(1)
		log.Warn("snapshot from peer failed", "err", err)
	} else {
		t.c.snapRecv.Add(1)
	}
	_, _ = c.Write(ack)
}

// SendSnapshot implements Transport.
func (t *TCP) SendSnapshot(to uint64, write func(w io.Writer) error, done func(error)) {
	t.mu.Lock()
	p := t.peers[to]
	closed := t.closed
	if p != nil && !closed {
		t.wg.Add(1)
	}
	t.mu.Unlock()
	if p == nil || closed {
		t.c.snapFailed.Add(1)
		done(fmt.Errorf("transport: no peer %d", to))
		return
	}
	go func() {
		defer t.wg.Done()
		err := t.sendSnapshot(p, write)
		if err != nil {
			t.c.snapFailed.Add(1)
		} else {
			t.c.snapSent.Add(1)
		}
		done(err)
	}()
}

func (t *TCP) sendSnapshot(p *peer, write func(w io.Writer) error) error {
	c, err := p.dial(5 * time.Second)
	if err != nil {
		return fmt.Errorf("dialing %s: %w", p.addr, err)
	}
	defer c.Close()
	// Abort when the transport closes.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-p.quit:
			_ = c.Close()
		case <-stop:
		}
	}()
	if err := t.dialHandshake(c, kindSnapshot, p.id, p.addr); err != nil {
		t.noteHandshakeError(err, p.id, p.addr, t.opts.Logger.With("peer", p.id, "addr", p.addr))
		return err
	}
	_ = c.SetDeadline(time.Now().Add(snapshotTimeout))
	if err := write(c); err != nil {
		return fmt.Errorf("streaming the snapshot: %w", err)
	}
	var ack [1]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return fmt.Errorf("waiting for the receiver's acknowledgement: %w", err)
	}
	if ack[0] != 0 {
		return errors.New("the receiver refused the snapshot")
	}
	return nil
}
