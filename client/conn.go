package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kayadb/kayadb/internal/wire"
)

// A conn is one pipelined connection to one server. A caller that finds
// nothing queued and nobody writing writes its call itself (one goroutine
// hop less for a lone client); otherwise it queues the call, and the writer
// goroutine writes calls in queue order, flushing when the queue drains.
// Callers sharing the connection yield once before their flush, so that
// those whose replies came back together send their next calls with one
// write(2) (writeInlineAll): a system call per request was a third of a
// loaded client's CPU, and each one also makes the server read once more.
//
// There is no reader goroutine: the callers waiting for replies read them.
// One of them at a time holds the read token (rtok), reads responses and
// matches each to the oldest written call (the server answers in order),
// until its own arrives; then it hands the token on to the next waiter. A
// lone caller so reads its own reply, without the hop from a reader
// goroutine to its own (15–30 µs on a busy 2-core VM, a third of a local
// GET). Frames are parsed from the buffered reader without consuming a
// byte until a whole frame is there, so a reader whose ctx ends can leave
// in the middle of a frame (its read is interrupted by moving the read
// deadline) and the next reader goes on where it stopped.
//
// With no reader while idle, a server that closed the connection is found
// by idleCheck before a call is written on it (a non-blocking peek at the
// socket), so that the call is still "not sent" and may go elsewhere.
// (Under TLS, bytes a server sent unasked in the same read as a reply may
// sit in the TLS layer where the peek does not see them; they are then
// taken for the next reply. Only a server that breaks the protocol sends
// them.)
//
// When either side fails, the connection breaks: every call queued but not
// written fails as "not sent", every call written fails as "maybe sent",
// and the pool replaces the connection on next use. The reader that meets
// the failure finishes them (drain).
//
// Lock order: Client.mu, then pool.mu, then conn.mu. No lock is held across
// network I/O (SetReadDeadline under conn.mu only arms a timer).
type conn struct {
	addr    string
	nc      net.Conn
	raw     syscall.RawConn // the TCP socket (under TLS too), for idleCheck; nil if unavailable
	br      *bufio.Reader
	bw      *bufio.Writer
	timeout time.Duration // RequestTimeout: the longest a written call may wait for its reply

	// sem holds one token per unfinished call (queued, being written or
	// awaiting its reply), so it bounds the pipeline at MaxPipeline and
	// guarantees that sends on queue and inflight never block.
	sem      chan struct{}
	queue    chan *call // callers → writer
	inflight chan *call // writer → reader, in wire order

	// wmu is held while writing to bw (by the writer goroutine, or by a
	// caller writing its call itself); unwritten counts the calls queued
	// for the writer and not yet written. A caller writes inline only when
	// it holds wmu and unwritten is 0, so calls reach the wire in the order
	// they were submitted.
	wmu       sync.Mutex
	unwritten atomic.Int32
	// flushOwed (under wmu) is set while a caller that wrote into bw
	// yields before flushing: bytes written to bw meanwhile are flushed
	// by it (writeInlineAll). Any flush clears it.
	flushOwed bool
	// unflushed counts the calls written into bw since the last flush,
	// lastBatch those the last flush carried (both under wmu): a caller
	// yields before flushing also when the last flush carried several.
	unflushed, lastBatch int

	done       chan struct{} // closed when the connection breaks
	writerDone chan struct{} // closed when the writer has returned
	failOnce   sync.Once

	// rtok holds a value while a caller reads responses (the read token):
	// br, big and bigN belong to its holder.
	rtok chan struct{}
	big  []byte // the body read so far of a frame larger than br's buffer
	bigN int    // that frame's length; 0 when none is in progress
	// interrupted is set when a reader's ctx moved the read deadline to
	// the past; the next read restores the watchdog's.
	interrupted atomic.Bool
	// written gets a value when a call is written with none pending, for
	// acquire.
	written chan struct{}

	mu struct {
		sync.Mutex
		broken   bool
		err      error     // why it broke
		pending  int       // calls written and not yet answered
		deadline time.Time // the watchdog's read deadline; zero when nothing is pending
		// readerDL is the own deadline of the caller reading responses,
		// when its context is a callCtx (deadline.go); zero otherwise.
		readerDL time.Time
		// readDL is the read deadline last set under mu (setReadDeadlineLocked).
		readDL time.Time
		// idleSince is when the last pending reply arrived: idleCheck
		// looks at the socket only after idlePeekAfter.
		idleSince time.Time
	}
}

// Call states: a caller may abandon a call only while it is still queued,
// which proves that not a byte of it was written.
const (
	callQueued int32 = iota
	callTaken
	callAbandoned
)

type call struct {
	frame []byte
	state atomic.Int32
	res   chan result // buffered: finish never blocks
	conn  *conn
}

// result is the outcome of one call on one connection.
type result struct {
	st      wire.Status
	payload []byte
	err     error
	// sent is false only when the request provably did not reach the
	// server: it was never handed to the socket.
	sent bool
}

// finish delivers r and releases the call's pipeline slot. Every call is
// finished exactly once, by whoever holds it.
func (cl *call) finish(r result) {
	cl.res <- r
	<-cl.conn.sem
}

var errAbandoned = errors.New("kayadb: call abandoned before it was sent")

// dial connects to addr (TLS when tlsConf is set) and performs the HELLO
// handshake within ctx.
func dial(ctx context.Context, addr string, tlsConf *tls.Config, timeout time.Duration, maxPipeline int) (*conn, error) {
	var nc net.Conn
	var err error
	nd := &net.Dialer{KeepAlive: 30 * time.Second}
	if tlsConf != nil {
		cfg := tlsConf
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			host, _, _ := net.SplitHostPort(addr)
			cfg.ServerName = host
		}
		nc, err = (&tls.Dialer{NetDialer: nd, Config: cfg}).DialContext(ctx, "tcp", addr)
	} else {
		nc, err = nd.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		var cv *tls.CertificateVerificationError
		if errors.As(err, &cv) {
			// The server's certificate is not trusted: retrying cannot
			// help, so the call fails now with the reason.
			return nil, fmt.Errorf("kayadb: connecting to %s: %w", addr, err)
		}
		return nil, &dialError{addr: addr, err: err}
	}
	c := &conn{
		addr:       addr,
		nc:         nc,
		br:         bufio.NewReaderSize(nc, 32<<10),
		bw:         bufio.NewWriterSize(nc, 32<<10),
		timeout:    timeout,
		raw:        rawConn(nc),
		rtok:       make(chan struct{}, 1),
		written:    make(chan struct{}, 1),
		sem:        make(chan struct{}, maxPipeline),
		queue:      make(chan *call, maxPipeline),
		inflight:   make(chan *call, maxPipeline),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	if err := c.hello(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// dialError is a failure to connect or to complete the handshake at the
// transport level: the request was not sent, so any request may be
// retried elsewhere.
type dialError struct {
	addr string
	err  error
}

func (e *dialError) Error() string { return "kayadb: connecting to " + e.addr + ": " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// hello sends HELLO v1 and checks the answer. A transport failure is a
// *dialError; a refusal or another version is permanent.
func (c *conn) hello(ctx context.Context) error {
	if dl, ok := ctx.Deadline(); ok {
		c.nc.SetDeadline(dl)
	}
	// A cancelled ctx unblocks the handshake by moving the deadline to the
	// past.
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Unix(1, 0)) })
	err := c.handshake()
	if !stop() && err == nil {
		// ctx ended during the handshake and its deadline change may land
		// at any moment: the connection is not trustworthy.
		err = &dialError{addr: c.addr, err: fmt.Errorf("HELLO: %w", ctx.Err())}
	}
	if err == nil {
		err = c.nc.SetDeadline(time.Time{})
	}
	return err
}

func (c *conn) handshake() error {
	frame := wire.AppendRequest(nil, wire.OpHello, wire.AppendHello(nil, wire.ProtocolVersion))
	if _, err := c.nc.Write(frame); err != nil {
		return &dialError{addr: c.addr, err: fmt.Errorf("sending HELLO: %w", err)}
	}
	st, p, _, err := wire.ReadResponse(c.br, nil)
	if err != nil {
		return &dialError{addr: c.addr, err: fmt.Errorf("reading HELLO reply: %w", err)}
	}
	if st != wire.StatusOK {
		// Status 1 is "unsupported protocol version V (max 1)"; any refusal
		// is permanent.
		msg, derr := wire.DecodeError(p)
		if derr != nil {
			msg = fmt.Sprintf("(undecodable error body: %v)", derr)
		}
		return fmt.Errorf("kayadb: %s refused HELLO v%d: %w", c.addr, wire.ProtocolVersion,
			&ServerError{Status: uint16(st), Message: msg})
	}
	v, err := wire.DecodeHello(p)
	if err != nil {
		return fmt.Errorf("%w: HELLO reply from %s: %w", ErrProtocol, c.addr, err)
	}
	if v != wire.ProtocolVersion {
		return fmt.Errorf("%w: %s speaks protocol version %d, this client speaks %d", ErrProtocol, c.addr, v, wire.ProtocolVersion)
	}
	return nil
}

// start launches the writer; wg tracks it.
func (c *conn) start(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.writeLoop()
	}()
}

// load is the number of unfinished calls.
func (c *conn) load() int { return len(c.sem) }

// broken reports whether the connection has failed.
func (c *conn) broken() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// fail breaks the connection (once): the socket is closed, which stops
// both goroutines.
func (c *conn) fail(err error) {
	c.failOnce.Do(func() {
		c.mu.Lock()
		c.mu.broken = true
		c.mu.err = err
		c.mu.Unlock()
		close(c.done)
		c.nc.Close()
	})
}

func (c *conn) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.err
}

// submit queues frame (see submitAll). An error means the call was not
// queued (and so not sent).
func (c *conn) submit(ctx context.Context, frame []byte) (*call, error) {
	if err := c.acquire(ctx); err != nil {
		return nil, err
	}
	cl := &call{frame: frame, res: make(chan result, 1), conn: c}
	if err := c.enqueue([]*call{cl}); err != nil {
		return nil, err
	}
	return cl, nil
}

// submitAll queues frames in order, as submit does one by one, but when
// the caller may write them itself it writes those it has slots for with
// one flush (one write(2), which the server reads at once). It never waits
// for a slot while holding slots of unsent calls: with many callers
// sharing the pipeline, that would let each hold part of the slots and
// wait for the rest forever. It returns the calls of the frames queued, a
// prefix of frames; err says why the rest was not.
func (c *conn) submitAll(ctx context.Context, frames [][]byte) ([]*call, error) {
	calls := make([]*call, 0, len(frames))
	for len(calls) < len(frames) {
		if err := c.acquire(ctx); err != nil {
			return calls, err
		}
		n := 1
	more:
		for len(calls)+n < len(frames) {
			select {
			case c.sem <- struct{}{}:
				n++
			default:
				break more
			}
		}
		start := len(calls)
		for _, f := range frames[start : start+n] {
			calls = append(calls, &call{frame: f, res: make(chan result, 1), conn: c})
		}
		if err := c.enqueue(calls[start:]); err != nil {
			return calls[:start], err
		}
	}
	return calls, nil
}

// enqueue sends calls that hold their slots: written here with one flush
// when nothing is queued and nobody writes, else queued for the writer.
// An error means none was sent (their slots are released).
func (c *conn) enqueue(calls []*call) error {
	if c.unwritten.Load() == 0 && c.wmu.TryLock() {
		if c.unwritten.Load() == 0 {
			return c.writeInlineAll(calls)
		}
		c.wmu.Unlock()
	}
	c.mu.Lock()
	if c.mu.broken {
		err := c.mu.err
		c.mu.Unlock()
		for range calls {
			<-c.sem
		}
		return err
	}
	c.unwritten.Add(int32(len(calls)))
	for _, cl := range calls {
		c.queue <- cl // never blocks: sem bounds queue+inflight by its capacity
	}
	c.mu.Unlock()
	return nil
}

// writeInlineAll writes calls from the caller's goroutine, with one flush.
// Called with wmu held and nothing queued; it releases wmu. An error means
// none was sent (their slots are released); once the calls are in
// inflight, a failed write breaks the connection and the reader's cleanup
// finishes them as maybe sent.
//
// When other calls of the connection are unfinished, other callers are
// likely about to write too (their replies came back together): the
// caller then yields once before it flushes, and the calls written into
// the buffer meanwhile (flushOwed tells their writers not to flush) leave
// with the same write(2). A lone caller flushes at once.
func (c *conn) writeInlineAll(calls []*call) error {
	c.mu.Lock()
	if c.mu.broken {
		// The reader's cleanup may have run already: the calls must not
		// reach inflight.
		err := c.mu.err
		c.mu.Unlock()
		c.wmu.Unlock()
		for range calls {
			<-c.sem
		}
		return err
	}
	for _, cl := range calls {
		cl.state.Store(callTaken)
		c.startPendingLocked()
		c.inflight <- cl // under mu: before a failure, so the cleanup finds it
	}
	c.mu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(c.timeout))
	var err error
	for _, cl := range calls {
		if _, err = c.bw.Write(cl.frame); err != nil {
			break
		}
	}
	c.unflushed += len(calls)
	if err == nil && !c.flushOwed && (len(c.sem) > len(calls) || c.lastBatch > 1) {
		c.flushOwed = true
		c.wmu.Unlock()
		runtime.Gosched()
		c.wmu.Lock()
		if c.flushOwed {
			err = c.flushLocked()
		}
	} else if err == nil && !c.flushOwed {
		err = c.flushLocked()
	}
	c.wmu.Unlock()
	if err != nil {
		c.fail(fmt.Errorf("kayadb: writing to %s: %w", c.addr, err))
	}
	return nil
}

// flushLocked flushes bw. Called with wmu.
func (c *conn) flushLocked() error {
	c.flushOwed = false
	c.lastBatch, c.unflushed = c.unflushed, 0
	return c.bw.Flush()
}

// startPendingLocked counts one more written call and arms the reply
// watchdog when it is the only one. Called with mu.
func (c *conn) startPendingLocked() {
	c.mu.pending++
	if c.mu.pending == 1 {
		select {
		case c.written <- struct{}{}: // for a caller waiting in acquire
		default:
		}
		// Watchdog: no reply for RequestTimeout while a request is
		// outstanding means the server or the path is stuck. Every
		// caller waiting on this connection has given up by then.
		c.mu.deadline = time.Now().Add(c.timeout)
		c.setReadDeadlineLocked(false)
	}
}

// setReadDeadlineLocked sets the socket's read deadline to the watchdog's,
// or to the reading caller's own deadline when that is earlier by more
// than a tick of the client's deadline clock (the precision the waiting
// callers get anyway). force sets it even when it seems unchanged: a
// reader's interrupt moved it outside mu. Called with mu.
func (c *conn) setReadDeadlineLocked(force bool) {
	dl := c.mu.deadline
	if own := c.mu.readerDL; !own.IsZero() && (dl.IsZero() || dl.Sub(own) > clockPeriod(c.timeout)) {
		dl = own
	}
	if force || !dl.Equal(c.mu.readDL) {
		c.mu.readDL = dl
		c.nc.SetReadDeadline(dl)
	}
}

// wait waits for cl's result or for ctx. When ctx ends first, the call is
// abandoned (its eventual reply is discarded), and sent reports whether it
// may have been written.
func (cl *call) wait(ctx context.Context) result {
	if r, ok := cl.await(ctx); ok {
		return r
	}
	select {
	case r := <-cl.res: // it raced in: use it
		return r
	default:
	}
	sent := !cl.state.CompareAndSwap(callQueued, callAbandoned)
	return result{err: ctx.Err(), sent: sent}
}

// await waits for cl's result, reading responses itself whenever nobody
// else does; ok is false when ctx ended first.
func (cl *call) await(ctx context.Context) (r result, ok bool) {
	c := cl.conn
	select { // answered already, or the read token is free
	case r := <-cl.res:
		return r, true
	case c.rtok <- struct{}{}:
		return c.readUntil(ctx, cl)
	default:
	}
	done, cc := waitOn(ctx)
	var tick <-chan struct{}
	if cc != nil {
		// No timer of its own (deadline.go): the client's clock wakes
		// the wait to check the deadline.
		tick = cc.clock.enter()
		defer cc.clock.leave()
	}
	for {
		select {
		case r := <-cl.res:
			return r, true
		case c.rtok <- struct{}{}:
			return c.readUntil(ctx, cl)
		case <-done:
			return result{}, false
		case <-tick:
			if cc.expired() {
				return result{}, false
			}
			tick = cc.clock.next()
		}
	}
}

// readUntil reads responses until cl's result is there or ctx ends (ok
// false). Called with the read token; it releases it.
func (c *conn) readUntil(ctx context.Context, cl *call) (r result, ok bool) {
	defer func() { <-c.rtok }()
	select {
	case r := <-cl.res: // the previous reader finished it
		return r, true
	default:
	}
	if !c.readResponses(ctx, func(head *call) bool { return head == cl }) {
		return result{}, false
	}
	return <-cl.res, true
}

// readResponses reads responses, finishing each call in turn, until
// last(call) is true of the call just finished (true), the connection
// fails (its calls are then all finished: true), or ctx ends (false).
// Called with the read token.
func (c *conn) readResponses(ctx context.Context, last func(*call) bool) bool {
	done, cc := waitOn(ctx)
	if done != nil {
		var parent context.Context = ctx
		if cc != nil {
			parent = cc.Context
		}
		stop := context.AfterFunc(parent, func() {
			c.interrupted.Store(true)
			c.nc.SetReadDeadline(time.Unix(1, 0))
		})
		defer stop()
	}
	// A callCtx has no timer to interrupt the read at its deadline: the
	// socket's read deadline, the connection's watchdog, is brought
	// forward to it while this caller reads (setReadDeadlineLocked).
	if cc != nil {
		c.mu.Lock()
		c.mu.readerDL = cc.deadline
		c.setReadDeadlineLocked(false)
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			c.mu.readerDL = time.Time{}
			c.setReadDeadlineLocked(false)
			c.mu.Unlock()
		}()
	}
	for {
		if c.interrupted.Swap(false) {
			c.mu.Lock()
			c.setReadDeadlineLocked(true)
			c.mu.Unlock()
		}
		st, p, err := c.readFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if ctx.Err() != nil {
					return false // nothing consumed: the next reader goes on
				}
				c.mu.Lock()
				dl := c.mu.deadline
				c.mu.Unlock()
				if dl.IsZero() || time.Now().Before(dl) {
					// Another reader's interrupt, landed late.
					c.interrupted.Store(true)
					continue
				}
				err = fmt.Errorf("no reply within %v: %w", c.timeout, err)
			}
			c.fail(fmt.Errorf("kayadb: reading from %s: %w", c.addr, err))
			c.drain()
			return true
		}
		var head *call
		select {
		case head = <-c.inflight:
		default:
			c.fail(fmt.Errorf("%w: %s sent a response without a request", ErrProtocol, c.addr))
			c.drain()
			return true
		}
		c.mu.Lock()
		c.mu.pending--
		if c.mu.pending == 0 {
			c.mu.deadline = time.Time{} // idle: no watchdog
			c.mu.idleSince = time.Now()
		} else {
			c.mu.deadline = time.Now().Add(c.timeout)
		}
		c.setReadDeadlineLocked(false)
		c.mu.Unlock()
		head.finish(result{st: st, payload: p, sent: true})
		if last(head) {
			// Replies already here go to their callers now rather than
			// after a hand-off of the token.
			last = func(*call) bool { return !c.frameBuffered() }
			if last(nil) {
				return true
			}
		}
	}
}

// frameBuffered reports whether br holds a whole response frame, so that
// reading it will not wait. Called with the read token.
func (c *conn) frameBuffered() bool {
	if c.bigN != 0 || c.br.Buffered() < 4 {
		return false
	}
	hdr, _ := c.br.Peek(4)
	n := int(binary.LittleEndian.Uint32(hdr))
	return 4+n <= c.br.Buffered()
}

// acquire takes a pipeline slot. While none is free it reads responses
// when nobody else does: the slots it waits for are freed by replies, and
// their callers may themselves be waiting here.
func (c *conn) acquire(ctx context.Context) error {
	select {
	case c.sem <- struct{}{}:
		return nil
	default:
	}
	for {
		select {
		case c.sem <- struct{}{}:
			return nil
		case <-c.done:
			return c.failure()
		case <-ctx.Done():
			return ctx.Err()
		case c.rtok <- struct{}{}:
			select {
			case c.sem <- struct{}{}: // freed meanwhile
				<-c.rtok
				return nil
			default:
			}
			c.mu.Lock()
			pending := c.mu.pending
			c.mu.Unlock()
			if pending > 0 {
				c.readResponses(ctx, func(*call) bool { return true })
				<-c.rtok
				continue
			}
			<-c.rtok
			// Every slot is held by a call not yet written (or by
			// one being finished): wait for a slot, or for a call
			// written, whose reply someone must read. The read token
			// is left out of this wait on purpose: it is free, and
			// taking it with nothing due would spin. (Checking
			// pending once before the first wait instead would miss a
			// reader that leaves while others still wait here.)
			select {
			case c.sem <- struct{}{}:
				return nil
			case <-c.done:
				return c.failure()
			case <-ctx.Done():
				return ctx.Err()
			case <-c.written:
			}
		}
	}
}

// readFrame reads one response. A frame that fits br's buffer is only
// consumed once whole, and a larger one is gathered in big, so an
// interrupted read loses nothing. The payload is a fresh slice: it is
// handed to the caller.
func (c *conn) readFrame() (wire.Status, []byte, error) {
	if c.bigN == 0 {
		hdr, err := c.br.Peek(4)
		if err != nil {
			return 0, nil, frameErr(err, len(hdr))
		}
		n := binary.LittleEndian.Uint32(hdr)
		switch {
		case n < 2:
			return 0, nil, fmt.Errorf("wire: response frame_len %d: %w", n, wire.ErrFrameTooSmall)
		case n > wire.MaxFrameSize:
			return 0, nil, fmt.Errorf("%w: frame_len %d", wire.ErrFrameTooLarge, n)
		}
		if 4+int(n) <= c.br.Size() {
			b, err := c.br.Peek(4 + int(n))
			if err != nil {
				return 0, nil, frameErr(err, len(b))
			}
			st := wire.Status(binary.LittleEndian.Uint16(b[4:]))
			p := append([]byte(nil), b[6:]...)
			c.br.Discard(len(b))
			return st, p, nil
		}
		c.br.Discard(4)
		c.bigN = int(n)
		c.big = make([]byte, 0, min(c.bigN, 1<<20)) // grown as the body arrives: a length is only a claim
	}
	for len(c.big) < c.bigN {
		if len(c.big) == cap(c.big) {
			c.big = append(c.big, 0)[:len(c.big)]
		}
		m, err := c.br.Read(c.big[len(c.big):min(cap(c.big), c.bigN)])
		c.big = c.big[:len(c.big)+m]
		if err != nil && len(c.big) < c.bigN {
			return 0, nil, frameErr(err, 1)
		}
	}
	b := c.big
	c.big, c.bigN = nil, 0
	return wire.Status(binary.LittleEndian.Uint16(b)), b[2:], nil
}

// frameErr names an end of stream inside a frame (got > 0 bytes of it).
func frameErr(err error, got int) error {
	if err == io.EOF && got > 0 {
		return fmt.Errorf("wire: reading response frame: %w", io.ErrUnexpectedEOF)
	}
	return err
}

// drain finishes every call after a failure: those written as maybe sent,
// those still queued as not sent. Called by a reader holding the token
// once the connection is broken.
func (c *conn) drain() {
	<-c.writerDone
	// The writer is gone and submit refuses new calls (mu.broken), so the
	// queues only shrink from here.
	err := c.failure()
	finishAll := func(calls chan *call, sent bool) {
		for {
			select {
			case cl := <-calls:
				cl.finish(result{err: err, sent: sent})
			default:
				return
			}
		}
	}
	finishAll(c.inflight, true)
	finishAll(c.queue, false)
}

// idleCheck reports whether a connection nobody waits on is still usable:
// with no reader while idle, a server's close is only seen by looking. A
// connection that has ended, failed, or holds bytes nobody asked for is
// broken here, before a call is written on it.
func (c *conn) idleCheck() bool {
	if c.broken() {
		return false
	}
	c.mu.Lock()
	idle := c.mu.pending == 0 && time.Since(c.mu.idleSince) >= idlePeekAfter
	c.mu.Unlock()
	if !idle || c.raw == nil {
		return true
	}
	select {
	case c.rtok <- struct{}{}: // nobody reads: br is ours to look at
	default:
		return true
	}
	err := errUnasked
	if c.br.Buffered() == 0 {
		err = peekIdle(c.raw)
	}
	<-c.rtok
	if err != nil {
		c.fail(fmt.Errorf("kayadb: connection to %s: %w", c.addr, err))
		return false
	}
	return true
}

var errUnasked = errors.New("the server sent bytes nobody asked for")

// idlePeekAfter is how long a connection must have been idle before
// idleCheck looks at its socket. A system call costs several µs on a
// virtual machine, and a connection in steady use is not closed for being
// idle; a server that goes away during a pause shorter than this is found
// as it was with a reader goroutine, by the reply that never comes (a
// write then fails as maybe sent, as it would if the server had gone away
// just after the write).
const idlePeekAfter = time.Millisecond

func (c *conn) writeLoop() {
	defer close(c.writerDone)
	for {
		var cl *call
		select {
		case cl = <-c.queue:
		case <-c.done:
			return
		}
		if !cl.state.CompareAndSwap(callQueued, callTaken) {
			c.unwritten.Add(-1)
			cl.finish(result{err: errAbandoned}) // its caller is gone
			if len(c.queue) == 0 {
				// Calls written before it may still be buffered: they
				// waited for this one's flush.
				c.wmu.Lock()
				err := c.flushLocked()
				c.wmu.Unlock()
				if err != nil {
					c.fail(fmt.Errorf("kayadb: writing to %s: %w", c.addr, err))
					return
				}
			}
			continue
		}
		c.wmu.Lock()
		c.mu.Lock()
		c.startPendingLocked()
		c.mu.Unlock()
		c.inflight <- cl // before the bytes go out, so the reader always finds it
		c.nc.SetWriteDeadline(time.Now().Add(c.timeout))
		_, err := c.bw.Write(cl.frame)
		c.unwritten.Add(-1)
		c.unflushed++
		if err == nil && len(c.queue) == 0 {
			err = c.flushLocked()
		}
		c.wmu.Unlock()
		if err != nil {
			c.fail(fmt.Errorf("kayadb: writing to %s: %w", c.addr, err))
			return
		}
	}
}

// rawConn is the socket under nc (under TLS too), or nil.
func rawConn(nc net.Conn) syscall.RawConn {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}
