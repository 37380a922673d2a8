package server

import (
	"bufio"
	"container/list"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kayadb/kayadb/internal/security"
	"github.com/kayadb/kayadb/internal/wire"
)

// Client connections and reply memory
//
// (docs/design/hostile-input-and-resources.md §3.) Nothing a client does on
// its connection may grow the server's memory or its connection table
// without bound:
//
//   - Connections. acceptLoop admits a connection while its source (an IPv4
//     address, or an IPv6 /64: one host usually holds a whole /64) has fewer
//     than perSource connections and the server fewer than max. Over either
//     limit the connection gets one ERROR frame naming the limit and its flag,
//     and is closed (a lingering close, so that the frame is not lost to a
//     reset), counted by reason.
//   - Time. A connection with no request in flight that sends nothing for
//     the idle timeout is closed; so is one whose client reads none of its
//     replies for that long (a blocked write). Once the first byte of a
//     frame has arrived, the whole frame must arrive within the frame
//     timeout (one byte a second does not hold a slot).
//   - Memory, per connection. A request is charged to its connection: the
//     bytes of its frame plus an estimate of its reply; once the reply is
//     ready the charge becomes its encoded size, released when the reply
//     has been written. The reader reads no further request (not even its
//     payload) while the charge would pass connBytes — unless nothing is
//     charged, so that one reply larger than the bound is still served,
//     alone. Replies are written in order, and the oldest unwritten reply
//     may always take what it needs, so a connection always makes progress
//     when its client reads.
//   - Memory, for the server: replyMem, a budget of --max-reply-memory
//     bytes, holds every reply until it is written (its estimate while it
//     is produced) and every request payload larger than largeRequest while
//     it is read and handled. The requests that can produce large replies
//     (GET, SCAN, BACKUP_READ) and large request payloads wait for room
//     (first fit, oldest first) within the request timeout; then they are
//     refused with a clear ERROR. Small replies never wait: they are
//     charged as an overdraft, bounded by connections × 128 requests ×
//     small replies.
//
// Estimates. A SCAN may return up to a whole frame (wire.MaxFrameSize): it
// is charged that much while it runs, so on one connection it runs alone
// and the server runs at most replyMem/64 MiB of them at once; the charge
// falls to the reply's real size as soon as it is encoded. A GET is charged
// getReplyEstimate (values are usually small): when its value turns out
// larger and there is no room for it, the reply is dropped and the GET runs
// again once the room is there — a GET is a pure read, and reading again
// before answering is still linearizable. (Its value is read before it is
// charged: the engine gives no size first. So the values of the GETs in
// flight, at most 128 per connection, are held a moment uncharged; an
// engine Get that reports the size before it copies would close that.) A
// BACKUP_READ is charged its largest chunk.
//
// Lock order: Server.mu, then clientLimits.mu, then clientConn.mu (only
// readersWaiting nests it). budget.mu is taken alone.

// Defaults of the limits (Config, and the flags of the same names).
const (
	// defaultMaxClientConnections is the original KayaDB's default.
	defaultMaxClientConnections = 1024
	// minPerSource is the least per-source limit: a host with a connection
	// pool of 16 always fits.
	minPerSource = 16
	// defaultClientIdleTimeout closes forgotten connections without
	// bothering clients that pause between bursts.
	defaultClientIdleTimeout = 5 * time.Minute
	// defaultClientFrameTimeout: a 64 MiB frame arrives in 30 s at about
	// 2 MiB/s; a frame that arrives slower is not worth a slot.
	defaultClientFrameTimeout = 30 * time.Second
	// defaultMaxReplyMemory holds eight of the largest replies, or
	// thousands of ordinary ones.
	defaultMaxReplyMemory = 512 << 20
	// defaultConnReplyBytes lets one connection pipeline its 128 requests
	// with ordinary replies while bounding a client that never reads.
	defaultConnReplyBytes = 8 << 20
)

// Estimates and sizes of the memory accounting.
const (
	// frameOverhead is frame_len and status, before a reply's payload.
	frameOverhead = 6
	// smallReplyEstimate is charged for a reply of bounded small size
	// (writes, HELLO, HEALTH, STATS, errors) before it is known.
	smallReplyEstimate = 4 << 10
	// getReplyEstimate is charged for a GET's reply before it is known: 128
	// of them fit in the default connection bound, so GETs pipeline.
	getReplyEstimate = 32 << 10
	// maxScanReply is the largest SCAN reply: a whole frame (dispatch caps
	// the scan so that it fits, scanMaxBytes).
	maxScanReply = 4 + wire.MaxFrameSize
	// scanMaxBytes caps the keys and values of a SCAN reply so that the
	// encoded reply fits in one frame: frame_len counts the status (2),
	// the count (4) and 8 bytes of lengths per item besides them. (A cap
	// of wire.MaxScanBytes itself could make a frame clients refuse.)
	scanMaxBytes = wire.MaxFrameSize - 2 - 4 - 8*wire.MaxScanItems
	// largeRequest: request payloads above it are charged to replyMem
	// before they are read.
	largeRequest = 64 << 10
	// writeChunk: replies are written in pieces of this size, so that the
	// write deadline measures progress, not the whole reply.
	writeChunk = 1 << 20
	// maxRefusing bounds the connections being refused at once (each holds
	// a goroutine for at most a TLS handshake, a wait for the first request
	// and a short linger); beyond it, over-limit connections are closed
	// without a reply.
	maxRefusing = 64
	// refuseLinger is how long a refused connection waits for the client's
	// first request, and then is drained after its ERROR frame, before it
	// is closed.
	refuseLinger = time.Second
	// logEvery: a repeated event (refusals, timeouts) is logged at most
	// once per this period, with the number of events since the last line.
	logEvery = 10 * time.Second
)

// Reasons for refusing and closing connections (metric labels).
const (
	refusedMaxConns  = "max_connections"
	refusedPerSource = "per_source"
	closedIdle       = "idle_timeout"
	closedFrame      = "frame_timeout"
	closedWrite      = "write_timeout"
)

// errReplyMemory refuses a request that found no room in replyMem within
// its request timeout.
var errReplyMemory = errors.New("no room for the reply")

// sourceKey is what per-source fairness counts by: an IPv4 address, or the
// /64 of an IPv6 address.
type sourceKey struct {
	prefix netip.Prefix
	other  string // a non-IP address (tests' pipes)
}

func (k sourceKey) String() string {
	if k.other != "" {
		return k.other
	}
	if k.prefix.Addr().Is4() {
		return k.prefix.Addr().String()
	}
	return k.prefix.String()
}

func sourceOf(a net.Addr) sourceKey {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			ip = ip.Unmap().WithZone("")
			bits := 32
			if ip.Is6() {
				bits = 64
			}
			p, _ := ip.Prefix(bits)
			return sourceKey{prefix: p}
		}
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		host = a.String()
	}
	return sourceKey{other: host}
}

// clientLimits holds the connection limits, the reply budget and their
// metrics.
type clientLimits struct {
	maxConns, perSource int
	idle, frame         time.Duration // 0: disabled
	connBytes           int64
	replyMem            *budget
	log                 *slog.Logger
	stopping            chan struct{} // closed by Server.Close
	stopOnce            sync.Once

	refused   *prometheus.CounterVec
	closed    *prometheus.CounterVec
	memDenied prometheus.Counter

	mu       sync.Mutex
	total    int
	bySource map[sourceKey]int
	refusing int
	logged   map[string]*episode
	active   map[*clientConn]struct{}
}

// episode rate-limits the log lines of one kind of event.
type episode struct {
	last       time.Time
	suppressed int
}

func newClientLimits(cfg *Config, log *slog.Logger) *clientLimits {
	l := &clientLimits{
		maxConns: cfg.MaxClientConnections, perSource: cfg.MaxClientConnectionsPerSource,
		idle: cfg.ClientIdleTimeout, frame: cfg.ClientFrameTimeout, connBytes: cfg.MaxConnReplyBytes,
		log: log, stopping: make(chan struct{}), bySource: map[sourceKey]int{}, logged: map[string]*episode{},
		active: map[*clientConn]struct{}{},
	}
	if l.maxConns <= 0 {
		l.maxConns = defaultMaxClientConnections
	}
	if l.perSource <= 0 {
		l.perSource = max(minPerSource, l.maxConns/4)
	}
	l.perSource = min(l.perSource, l.maxConns)
	switch {
	case l.idle == 0:
		l.idle = defaultClientIdleTimeout
	case l.idle < 0:
		l.idle = 0
	}
	switch {
	case l.frame == 0:
		l.frame = defaultClientFrameTimeout
	case l.frame < 0:
		l.frame = 0
	}
	if l.connBytes <= 0 {
		l.connBytes = defaultConnReplyBytes
	}
	mem := cfg.MaxReplyMemory
	if mem <= 0 {
		mem = defaultMaxReplyMemory
	}
	l.replyMem = &budget{limit: mem}
	l.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kayadb_client_connections_refused_total",
		Help: "Client connections refused with an ERROR frame (or closed, when too many are being refused at once), by reason: max_connections (--max-client-connections), per_source (a quarter of it from one address).",
	}, []string{"reason"})
	l.closed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kayadb_client_connections_timed_out_total",
		Help: "Client connections closed by a timeout: idle_timeout (no request for --client-idle-timeout), write_timeout (the client read none of its replies for that long), frame_timeout (a frame did not arrive whole within --client-frame-timeout).",
	}, []string{"reason"})
	l.memDenied = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kayadb_client_reply_memory_refusals_total",
		Help: "Client requests refused because the reply memory budget (--max-reply-memory) had no room for them within the request timeout.",
	})
	for _, r := range []string{refusedMaxConns, refusedPerSource} {
		l.refused.WithLabelValues(r)
	}
	for _, r := range []string{closedIdle, closedFrame, closedWrite} {
		l.closed.WithLabelValues(r)
	}
	return l
}

// collectors are the metrics of the limits, for the server's registry.
func (l *clientLimits) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		l.refused, l.closed, l.memDenied,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kayadb_client_connections",
			Help: "Open client connections (--max-client-connections bounds them).",
		}, func() float64 {
			l.mu.Lock()
			defer l.mu.Unlock()
			return float64(l.total)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kayadb_client_reply_bytes_in_flight",
			Help: "Bytes of the reply memory budget in use: replies not yet written (estimates while they are produced) and large request payloads being handled.",
		}, func() float64 { return float64(l.replyMem.inUse()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kayadb_client_reply_memory_limit_bytes",
			Help: "The reply memory budget (--max-reply-memory).",
		}, func() float64 { return float64(l.replyMem.limit) }),
	}
}

// shutdown wakes every wait for memory: the server is closing.
func (l *clientLimits) shutdown() { l.stopOnce.Do(func() { close(l.stopping) }) }

// admit decides on a new connection from src: "" admits it (and counts it;
// leave uncounts it), otherwise the refusal's reason and message.
func (l *clientLimits) admit(src sourceKey) (reason, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.perSource < l.maxConns && l.bySource[src] >= l.perSource:
		return refusedPerSource, fmt.Sprintf("too many client connections from %s (%d of the server's %d, --max-client-connections); close some or spread the clients over more hosts, then try again",
			src, l.perSource, l.maxConns)
	case l.total >= l.maxConns:
		return refusedMaxConns, fmt.Sprintf("too many client connections (%d, --max-client-connections); try again later", l.maxConns)
	}
	l.total++
	l.bySource[src]++
	return "", ""
}

func (l *clientLimits) leave(src sourceKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.bySource[src]--; l.bySource[src] <= 0 {
		delete(l.bySource, src)
	}
}

// track registers (or forgets) a connection's accounting (tests look at
// it through readersWaiting).
func (l *clientLimits) track(cc *clientConn, on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if on {
		l.active[cc] = struct{}{}
	} else {
		delete(l.active, cc)
	}
}

// readersWaiting counts the connections whose reader waits for their
// client to drain replies.
func (l *clientLimits) readersWaiting() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for cc := range l.active {
		cc.mu.Lock()
		if cc.waiting {
			n++
		}
		cc.mu.Unlock()
	}
	return n
}

// note logs an event of kind at most once per logEvery, with the number of
// like events not logged since.
func (l *clientLimits) note(level slog.Level, kind, msg string, args ...any) {
	l.mu.Lock()
	e := l.logged[kind]
	if e == nil {
		e = &episode{}
		l.logged[kind] = e
	}
	now := time.Now()
	if !e.last.IsZero() && now.Sub(e.last) < logEvery {
		e.suppressed++
		l.mu.Unlock()
		return
	}
	n := e.suppressed
	e.last, e.suppressed = now, 0
	l.mu.Unlock()
	if n > 0 {
		args = append(args, "more_since_last_logged", n)
	}
	l.log.Log(context.Background(), level, msg, args...)
}

// refuse answers an over-limit connection with one ERROR frame and closes
// it. It returns false when too many refusals are under way: the caller
// closes the connection at once (on plain TCP the ERROR frame has been
// sent; a TLS client gets no reply then).
func (s *Server) refuse(c net.Conn, msg string) bool {
	l := s.clim
	frame := wire.AppendResponse(nil, wire.StatusError, wire.AppendError(nil, msg))
	plain := s.tlsConf == nil
	if plain {
		// Plain TCP: the ERROR frame goes out at once (a fresh socket's
		// send buffer takes it without blocking), then a FIN, so that
		// every refused client can read why, also during a flood, when
		// too many refusals are under way to linger over each. It is the
		// first frame on the connection: the reply to the client's first
		// request.
		_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := c.Write(frame); err != nil {
			return false
		}
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}
	l.mu.Lock()
	if l.refusing >= maxRefusing {
		l.mu.Unlock()
		return false
	}
	l.refusing++
	l.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			_ = c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			l.mu.Lock()
			l.refusing--
			l.mu.Unlock()
		}()
		if plain {
			// Linger: drain what the client sends (its first request,
			// likely) before closing, since closing with unread bytes
			// resets the connection, which can destroy the ERROR frame
			// before the client reads it.
			_ = c.SetReadDeadline(time.Now().Add(refuseLinger))
			_, _ = io.CopyN(io.Discard, c, 64<<10)
			return
		}
		tc := tls.Server(c, s.tlsConf)
		if err := security.Handshake(tc); err != nil {
			return
		}
		conn := net.Conn(tc)
		// Wait (briefly) for the client's first request, so that the ERROR
		// is its reply: clients match replies to requests. A client that
		// sends nothing gets it all the same.
		_ = conn.SetDeadline(time.Now().Add(refuseLinger))
		var first [1]byte
		_, _ = io.ReadFull(conn, first[:])
		_ = conn.SetDeadline(time.Now().Add(refuseLinger))
		if _, err := conn.Write(frame); err != nil {
			return
		}
		// Half-close, then drain what the client sent meanwhile (its first
		// request, likely): closing with unread bytes would reset the
		// connection and could destroy the ERROR frame before the client
		// reads it.
		_ = tc.CloseWrite()
		_, _ = io.CopyN(io.Discard, conn, 64<<10)
	}()
	return true
}

// budget is a byte budget. A charge is granted when it fits, or when
// nothing at all is charged (so that one charge larger than the whole
// budget is still served, alone). Waiters are granted first-fit, oldest
// first: a small request is not held up behind a large one that waits for
// room (which may then wait until its deadline: it gets a clear refusal,
// and the small ones keep being served).
type budget struct {
	limit int64

	mu      sync.Mutex
	used    int64
	waiters list.List // of *budgetWaiter, oldest first
}

type budgetWaiter struct {
	n     int64
	ready chan struct{}
}

func (b *budget) fitsLocked(n int64) bool { return b.used == 0 || b.used+n <= b.limit }

// acquire charges n, waiting for room until ctx ends (errReplyMemory) or
// abort or stop is closed (net.ErrClosed).
func (b *budget) acquire(ctx context.Context, abort, stop <-chan struct{}, n int64) error {
	b.mu.Lock()
	if b.fitsLocked(n) {
		b.used += n
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	e := b.waiters.PushBack(w)
	b.mu.Unlock()
	var err error
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		err = errReplyMemory
	case <-abort:
		err = net.ErrClosed
	case <-stop:
		err = net.ErrClosed
	}
	b.mu.Lock()
	select {
	case <-w.ready: // granted meanwhile: give it back
		b.used -= n
		b.grantLocked()
	default:
		b.waiters.Remove(e)
	}
	b.mu.Unlock()
	return err
}

// tryAcquire charges n if it fits at once.
func (b *budget) tryAcquire(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fitsLocked(n) {
		b.used += n
		return true
	}
	return false
}

// force charges n without waiting (an overdraft: small replies).
func (b *budget) force(n int64) {
	b.mu.Lock()
	b.used += n
	b.mu.Unlock()
}

func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.grantLocked()
	b.mu.Unlock()
}

// grantLocked grants the waiters that fit, oldest first.
func (b *budget) grantLocked() {
	for e := b.waiters.Front(); e != nil; {
		next := e.Next()
		if w := e.Value.(*budgetWaiter); b.fitsLocked(w.n) {
			b.used += w.n
			b.waiters.Remove(e)
			close(w.ready)
		}
		e = next
	}
}

func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// clientConn is the memory accounting of one client connection.
type clientConn struct {
	limit    int64
	gone     chan struct{} // closed when no reply can be written any more
	goneOnce sync.Once

	mu       sync.Mutex
	charged  int64         // bytes charged by calls not yet written (and by the request being read)
	pending  int           // calls read and not yet written
	head     uint64        // seq of the oldest call not yet written
	next     uint64        // seq of the next call
	wake     chan struct{} // closed, and replaced, when charged falls or head moves
	waiting  bool          // the reader waits for room (tests)
	sleepers int           // goroutines waiting on wake
	last     time.Time     // when the last reply was written (idle timeout)
}

func newClientConn(limit int64) *clientConn {
	return &clientConn{limit: limit, gone: make(chan struct{}), wake: make(chan struct{}), last: time.Now()}
}

// fail marks the connection as gone: waits for its memory end.
func (cc *clientConn) fail() { cc.goneOnce.Do(func() { close(cc.gone) }) }

func (cc *clientConn) wakeLocked() {
	if cc.sleepers > 0 {
		close(cc.wake)
		cc.wake = make(chan struct{})
	}
}

// sleepLocked waits for a wake, the connection's end or stop, with cc.mu
// held on entry and on return; false means it ended or stopped.
func (cc *clientConn) sleepLocked(stop <-chan struct{}) bool {
	cc.sleepers++
	wake := cc.wake
	cc.mu.Unlock()
	ok := true
	select {
	case <-wake:
	case <-cc.gone:
		ok = false
	case <-stop:
		ok = false
	}
	cc.mu.Lock()
	cc.sleepers--
	return ok
}

// admit charges n for a request about to be read, waiting while the charge
// would pass the bound (unless nothing is charged). It returns false when
// the connection is gone or the server stops.
func (cc *clientConn) admit(n int64, stop <-chan struct{}) bool {
	cc.mu.Lock()
	for cc.charged != 0 && cc.charged+n > cc.limit {
		cc.waiting = true
		if !cc.sleepLocked(stop) {
			cc.waiting = false
			cc.mu.Unlock()
			return false
		}
	}
	cc.waiting = false
	cc.charged += n
	cc.mu.Unlock()
	return true
}

// enqueue numbers a call read and admitted.
func (cc *clientConn) enqueue(cl *call) {
	cc.mu.Lock()
	cl.seq = cc.next
	cc.next++
	cc.pending++
	cc.mu.Unlock()
}

// grow adds n to call seq's charge: at once when it fits or when the call
// is the oldest unwritten one; otherwise, with wait, once that is so, and
// without, not at all.
func (cc *clientConn) grow(seq uint64, n int64, wait bool, stop <-chan struct{}) bool {
	cc.mu.Lock()
	for cc.head != seq && cc.charged+n > cc.limit {
		if !wait || !cc.sleepLocked(stop) {
			cc.mu.Unlock()
			return false
		}
	}
	cc.charged += n
	cc.mu.Unlock()
	return true
}

// adjust changes the charge by delta without waiting.
func (cc *clientConn) adjust(delta int64) {
	cc.mu.Lock()
	cc.charged += delta
	if delta < 0 {
		cc.wakeLocked()
	}
	cc.mu.Unlock()
}

// written releases a call whose reply was written (or dropped with its
// connection).
func (cc *clientConn) written(cl *call) {
	cc.mu.Lock()
	cc.charged -= cl.conn
	cc.pending--
	cc.head = cl.seq + 1
	cc.last = time.Now()
	cc.wakeLocked()
	cc.mu.Unlock()
}

// activity returns the calls not yet written and when the last one was
// (or when the connection started).
func (cc *clientConn) activity() (pending int, last time.Time) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.pending, cc.last
}

// openPayloadBytes is how much of the payload of an opcode that carries
// no credentials (HELLO, HEALTH, an unknown opcode) is read before it is
// answered: what its decoder reads (HELLO's client_version u16; nothing
// for the others). The rest, which decoders ignore, is skipped unheld.
func openPayloadBytes(op wire.Opcode) int {
	if op == wire.OpHello {
		return 2
	}
	return 0
}

// replyEstimate is what a request's reply is charged before it is known.
func replyEstimate(op wire.Opcode) int64 {
	switch op {
	case wire.OpScan, wire.OpScanAt:
		return maxScanReply
	case wire.OpGet, wire.OpGetAt, wire.OpTxnOp, wire.OpKayaTxn:
		return getReplyEstimate
	case wire.OpBackupRead:
		return frameOverhead + 4 + wire.MaxBackupChunk
	case wire.OpCDCPoll:
		return maxPollReply
	}
	return smallReplyEstimate
}

// waitsForReplyMemory: the opcodes whose replies may be large wait for
// room in replyMem before they run; the others are charged as overdrafts.
func waitsForReplyMemory(op wire.Opcode) bool {
	return op == wire.OpScan || op == wire.OpGet || op == wire.OpBackupRead ||
		op == wire.OpScanAt || op == wire.OpGetAt || op == wire.OpTxnOp || op == wire.OpKayaTxn ||
		op == wire.OpCDCPoll
}

// replyMemoryError is the reply to a request refused for want of reply
// memory.
func (s *Server) replyMemoryError() (wire.Status, []byte) {
	s.clim.memDenied.Inc()
	return wire.StatusError, wire.AppendError(nil, fmt.Sprintf(
		"server busy: replies waiting for their clients fill the reply memory budget (%d MiB, --max-reply-memory) and no room came free within the request timeout (%s); retry later",
		s.clim.replyMem.limit>>20, s.cfg.RequestTimeout))
}

// settle records a call's reply and turns its charges into the reply's
// encoded size: the request's bytes are no longer held, the estimate gives
// way to the real size (more without waiting: see handleRead for the
// replies that may be large).
func (s *Server) settle(cc *clientConn, cl *call, st wire.Status, p []byte) {
	if len(p)+2 > wire.MaxFrameSize {
		s.log.Error("a reply exceeds the frame size limit; answering ERROR instead", "opcode", cl.op.String(), "bytes", len(p))
		st, p = wire.StatusError, wire.AppendError(nil, fmt.Sprintf("the reply of %d bytes exceeds the %d-byte frame limit", len(p), wire.MaxFrameSize))
	}
	cl.status, cl.payload = st, p
	size := int64(frameOverhead + len(p))
	if cl.reqGlobal > 0 {
		s.clim.replyMem.release(cl.reqGlobal)
		cl.reqGlobal = 0
	}
	cc.adjust(size - cl.conn)
	cl.conn = size
	if size > cl.global {
		s.clim.replyMem.force(size - cl.global)
	} else {
		s.clim.replyMem.release(cl.global - size)
	}
	cl.global = size
}

// handleRead runs a request that may produce a large reply within the
// reply budget: it waits for room for the reply's estimate, and a GET whose
// reply is larger than that and finds no room for it is run again once the
// room is there. Waits for the server's budget count against the request
// timeout; a wait for the client to read its earlier replies starts the
// timeout afresh (that wait is the client's doing).
func (s *Server) handleRead(cc *clientConn, cl *call, op wire.Opcode, p []byte) (wire.Status, []byte) {
	budget := s.clim.replyMem
	// wait charges n, waiting for room within a request timeout that the
	// request's handling then shares.
	base := withPrincipal(context.Background(), cl.principal) // authz.go
	wait := func(n int64) (context.Context, context.CancelFunc, error) {
		flushHeld(cl)
		ctx, cancel := context.WithTimeout(base, s.cfg.RequestTimeout)
		err := budget.acquire(ctx, cc.gone, s.clim.stopping, n)
		return ctx, cancel, err
	}
	ctx := base // dispatch applies the request timeout
	est := replyEstimate(op)
	if !budget.tryAcquire(est) {
		wctx, cancel, err := wait(est)
		defer cancel()
		if err != nil {
			return s.readRefused(err)
		}
		ctx = wctx
	}
	cl.global = est
	for {
		st, reply := s.dispatchBy(ctx, op, p)
		size := int64(frameOverhead + len(reply))
		if !rerunnable(op) || size <= cl.global {
			return st, reply
		}
		extra := size - cl.global
		if cc.grow(cl.seq, extra, false, nil) {
			if budget.tryAcquire(extra) {
				cl.conn += extra
				cl.global += extra
				return st, reply
			}
			cc.adjust(-extra)
		}
		// No room for this value now: drop it, wait for the room, read
		// again. (Rare: the loop runs again only when the value grew.)
		reply = nil
		flushHeld(cl)
		if !cc.grow(cl.seq, extra, true, s.clim.stopping) {
			return s.readRefused(net.ErrClosed)
		}
		cl.conn += extra
		wctx, cancel, err := wait(extra)
		defer cancel()
		if err != nil {
			return s.readRefused(err)
		}
		cl.global += extra
		ctx = wctx
	}
}

// flushHeld writes the replies the reader holds before cl (see
// call.heldBefore), before cl waits for room they may take.
func flushHeld(cl *call) {
	if r := cl.heldBefore; r != nil {
		cl.heldBefore = nil
		r.flush()
	}
}

// rerunnable: the reads handleRead may run again when their reply grew
// past the room charged for it (a TXN_OP put or delete, whose reply is
// empty, never does).
func rerunnable(op wire.Opcode) bool {
	return op == wire.OpGet || op == wire.OpGetAt || op == wire.OpTxnOp
}

// readRefused is the reply to a read that got no reply memory: the budget
// had no room in time, or the connection or the server is closing.
func (s *Server) readRefused(err error) (wire.Status, []byte) {
	if errors.Is(err, errReplyMemory) {
		return s.replyMemoryError()
	}
	return wire.StatusError, wire.AppendError(nil, "the server is closing the connection")
}

// writeReply writes one reply frame: the header, then the payload in
// pieces, each within the idle timeout of the previous one (a client that
// reads nothing for that long is dropped). The payload is not copied.
func (w *replyWriter) writeReply(st wire.Status, p []byte, flush bool) error {
	if w.w == nil {
		w.w = replyBuffers.Get().(*bufio.Writer)
		w.w.Reset(w.c)
	}
	var hdr [frameOverhead]byte
	binary.LittleEndian.PutUint32(hdr[:4], uint32(2+len(p)))
	binary.LittleEndian.PutUint16(hdr[4:], uint16(st))
	w.arm()
	if _, err := w.w.Write(hdr[:]); err != nil {
		return err
	}
	for len(p) > 0 {
		n := min(len(p), writeChunk)
		w.arm()
		if _, err := w.w.Write(p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	if flush {
		w.arm()
		if err := w.w.Flush(); err != nil {
			return err
		}
		// Flushed and idle until the next batch: the buffer goes back to
		// the pool, so that an idle connection (a watch, say) holds none.
		w.w.Reset(nil)
		replyBuffers.Put(w.w)
		w.w = nil
	}
	return nil
}

// replyBuffers are the connections' reply buffers, held only while a
// connection writes a batch of replies.
var replyBuffers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, connWriteBuffer) }}

// replyWriter is the writing side of a client connection. Its methods are
// called by one goroutine at a time (replies.write).
type replyWriter struct {
	c     net.Conn
	w     *bufio.Writer // nil between batches (replyBuffers)
	idle  time.Duration
	armed time.Time
}

// arm moves the write deadline to idle from now, at most every idle/8 (a
// deadline costs a timer update): a write always has at least 7/8 of the
// idle timeout to make progress.
func (w *replyWriter) arm() {
	if w.idle <= 0 {
		return
	}
	if now := time.Now(); now.Sub(w.armed) > w.idle/8 {
		_ = w.c.SetWriteDeadline(now.Add(w.idle))
		w.armed = now
	}
}

// deadlineExceeded reports whether err is a deadline that expired.
func deadlineExceeded(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
