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
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/kayadb/kayadb/internal/lsm/base"
)

const (
	handshakeMagic   = "KAYARAFT"
	handshakeVersion = 2 // 2 added the stream kind
	handshakeSize    = 8 + 2 + 1 + 8 + 8
	frameHeaderSize  = 8

	kindMessages = 0 // a stream of message frames
	kindSnapshot = 1 // one snapshot stream, answered with one ack byte
)

func encodeHandshake(kind byte, from, to uint64) []byte {
	hs := make([]byte, handshakeSize)
	copy(hs[:8], handshakeMagic)
	binary.LittleEndian.PutUint16(hs[8:10], handshakeVersion)
	hs[10] = kind
	binary.LittleEndian.PutUint64(hs[11:19], from)
	binary.LittleEndian.PutUint64(hs[19:27], to)
	return hs
}

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
	// Logger receives connection events.
	Logger *slog.Logger
}

// TCP is the production transport: length-prefixed, checksummed frames over
// TCP connections.
type TCP struct {
	opts TCPOptions
	c    counters

	mu    sync.Mutex
	peers map[uint64]*peer
	conns map[net.Conn]struct{}
	// roster is the set of ids allowed to send to us; guarded by mu.
	roster map[uint64]bool
	closed bool

	wg sync.WaitGroup
}

// NewTCP starts a transport; it accepts connections on opts.Listener until
// Close.
func NewTCP(opts TCPOptions) *TCP {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 4096
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Dial == nil {
		d := &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}
		opts.Dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	t := &TCP{opts: opts, peers: map[uint64]*peer{}, conns: map[net.Conn]struct{}{}, roster: map[uint64]bool{}}
	if opts.Listener != nil {
		t.wg.Add(1)
		go t.acceptLoop()
	}
	return t
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
	binary.LittleEndian.PutUint32(frame[4:8], base.MaskedCRC(payload))
	return frame, nil
}

// Stats implements Transport.
func (t *TCP) Stats() Stats {
	s := t.c.snapshot()
	t.mu.Lock()
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
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			_ = c.Close()
			return
		}
		t.conns[c] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go t.serveConn(c)
	}
}

// serveConn reads one inbound connection until it fails or a frame is bad.
func (t *TCP) serveConn(c net.Conn) {
	defer t.wg.Done()
	defer func() {
		t.mu.Lock()
		delete(t.conns, c)
		t.mu.Unlock()
		_ = c.Close()
	}()
	log := t.opts.Logger.With("remote", c.RemoteAddr().String())
	if tc, ok := c.(*tls.Conn); ok {
		// A TLS listener: finish the handshake (the peer's certificate is
		// verified here) before reading anything.
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			t.c.rejectedTLS.Add(1)
			var rh tls.RecordHeaderError
			if errors.As(err, &rh) {
				log.Warn("closing raft connection: the peer did not start a TLS handshake (plain TCP to a TLS port?)", "err", err)
			} else {
				log.Warn("closing raft connection: TLS handshake failed", "err", err)
			}
			return
		}
		_ = tc.SetDeadline(time.Time{})
	}
	r := bufio.NewReaderSize(c, 64<<10)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var hs [handshakeSize]byte
	if _, err := io.ReadFull(r, hs[:]); err != nil {
		t.c.badFrames.Add(1)
		log.Warn("closing raft connection: no handshake", "err", err)
		return
	}
	if string(hs[:8]) != handshakeMagic {
		t.c.badFrames.Add(1)
		log.Warn("closing raft connection: not a KayaDB raft peer (bad handshake magic)")
		return
	}
	if v := binary.LittleEndian.Uint16(hs[8:10]); v != handshakeVersion {
		t.c.badFrames.Add(1)
		log.Warn("closing raft connection: unsupported peer protocol version", "version", v, "supported", handshakeVersion)
		return
	}
	kind := hs[10]
	from := binary.LittleEndian.Uint64(hs[11:19])
	to := binary.LittleEndian.Uint64(hs[19:27])
	if to != t.opts.ID {
		t.c.rejectedTo.Add(1)
		log.Warn("closing raft connection: peer thinks it is talking to another node", "from", from, "to", to, "self", t.opts.ID)
		return
	}
	if !t.allowed(from) {
		t.c.rejectedFrom.Add(1)
		log.Warn("closing raft connection from a node outside the roster", "from", from)
		return
	}
	if tc, ok := c.(*tls.Conn); ok && t.opts.VerifyPeer != nil {
		if err := t.opts.VerifyPeer(from, tc.ConnectionState()); err != nil {
			t.c.rejectedTLS.Add(1)
			log.Warn("closing raft connection: the peer's certificate does not belong to the member it claims to be", "from", from, "err", err)
			return
		}
	}
	log = log.With("peer", from)
	switch kind {
	case kindMessages:
	case kindSnapshot:
		t.serveSnapshot(c, r, from, log)
		return
	default:
		t.c.badFrames.Add(1)
		log.Warn("closing raft connection: unknown stream kind", "kind", kind)
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
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			log.Debug("raft connection ended inside a frame", "err", err)
			return
		}
		if got, want := base.MaskedCRC(buf), binary.LittleEndian.Uint32(hdr[4:8]); got != want {
			t.c.badFrames.Add(1)
			log.Warn("closing raft connection: frame checksum mismatch", "stored", want, "computed", got)
			return
		}
		m := &pb.Message{}
		if err := proto.Unmarshal(buf, m); err != nil {
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
		t.c.received.Add(1)
		t.opts.Handler.Receive(m)
	}
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
func (p *peer) run() {
	defer p.t.wg.Done()
	backoff := 50 * time.Millisecond
	log := p.t.opts.Logger.With("peer", p.id, "addr", p.addr)
	for {
		select {
		case <-p.quit:
			return
		default:
		}
		p.t.c.dials.Add(1)
		c, err := p.dial(2 * time.Second)
		if err != nil {
			p.t.c.fails.Add(1)
			p.drainReportingUnreachable()
			log.Debug("cannot reach raft peer", "err", err, "retry_in", backoff)
			select {
			case <-p.quit:
				return
			case <-time.After(backoff + time.Duration(rand.Int64N(int64(backoff)/2+1))):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
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

func (p *peer) write(c net.Conn) error {
	w := bufio.NewWriterSize(c, 64<<10)
	if _, err := w.Write(encodeHandshake(kindMessages, p.t.opts.ID, p.id)); err != nil {
		return err
	}
	// The peer never writes on this connection; a read returning means it
	// closed it.
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
	_ = c.SetDeadline(time.Now().Add(snapshotTimeout))
	if _, err := c.Write(encodeHandshake(kindSnapshot, t.opts.ID, p.id)); err != nil {
		return err
	}
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
