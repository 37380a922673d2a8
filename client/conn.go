package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kayadb/kayadb/internal/wire"
)

// A conn is one pipelined connection to one server. A caller that finds
// nothing queued and nobody writing writes its call itself (one goroutine
// hop less for a lone client); otherwise it queues the call, and the writer
// goroutine writes calls in queue order, flushing when the queue drains; the reader goroutine matches responses to calls in the same order
// (the server answers in order). When either side fails, the connection
// breaks: every call queued but not written fails as "not sent", every call
// written fails as "maybe sent", and the pool replaces the connection on
// next use.
//
// Lock order: Client.mu, then pool.mu, then conn.mu. No lock is held across
// network I/O (SetReadDeadline under conn.mu only arms a timer).
type conn struct {
	addr    string
	nc      net.Conn
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

	done       chan struct{} // closed when the connection breaks
	writerDone chan struct{} // closed when the writer has returned
	failOnce   sync.Once

	mu struct {
		sync.Mutex
		broken  bool
		err     error // why it broke
		pending int   // calls written and not yet answered
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

// start launches the writer and reader; wg tracks them.
func (c *conn) start(wg *sync.WaitGroup) {
	wg.Add(2)
	go func() {
		defer wg.Done()
		c.writeLoop()
	}()
	go func() {
		defer wg.Done()
		c.readLoop()
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
	select {
	case c.sem <- struct{}{}:
	case <-c.done:
		return nil, c.failure()
	case <-ctx.Done():
		return nil, ctx.Err()
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
		select {
		case c.sem <- struct{}{}:
		case <-c.done:
			return calls, c.failure()
		case <-ctx.Done():
			return calls, ctx.Err()
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
func (c *conn) writeInlineAll(calls []*call) error {
	defer c.wmu.Unlock()
	c.mu.Lock()
	if c.mu.broken {
		// The reader's cleanup may have run already: the calls must not
		// reach inflight.
		err := c.mu.err
		c.mu.Unlock()
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
	if err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		c.fail(fmt.Errorf("kayadb: writing to %s: %w", c.addr, err))
	}
	return nil
}

// startPendingLocked counts one more written call and arms the reply
// watchdog when it is the only one. Called with mu.
func (c *conn) startPendingLocked() {
	c.mu.pending++
	if c.mu.pending == 1 {
		// Watchdog: no reply for RequestTimeout while a request is
		// outstanding means the server or the path is stuck. Every
		// caller waiting on this connection has given up by then.
		c.nc.SetReadDeadline(time.Now().Add(c.timeout))
	}
}

// wait waits for cl's result or for ctx. When ctx ends first, the call is
// abandoned (its eventual reply is discarded), and sent reports whether it
// may have been written.
func (cl *call) wait(ctx context.Context) result {
	select {
	case r := <-cl.res:
		return r
	case <-ctx.Done():
	}
	select {
	case r := <-cl.res: // it raced in: use it
		return r
	default:
	}
	sent := !cl.state.CompareAndSwap(callQueued, callAbandoned)
	return result{err: ctx.Err(), sent: sent}
}

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
				err := c.bw.Flush()
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
		if err == nil && len(c.queue) == 0 {
			err = c.bw.Flush()
		}
		c.wmu.Unlock()
		if err != nil {
			c.fail(fmt.Errorf("kayadb: writing to %s: %w", c.addr, err))
			return
		}
	}
}

func (c *conn) readLoop() {
	c.readResponses()
	<-c.writerDone
	// The writer is gone and submit refuses new calls (mu.broken), so the
	// queues only shrink from here.
	err := c.failure()
	for {
		select {
		case cl := <-c.inflight:
			cl.finish(result{err: err, sent: true})
			continue
		default:
		}
		break
	}
	for {
		select {
		case cl := <-c.queue:
			cl.finish(result{err: err, sent: false})
			continue
		default:
		}
		break
	}
}

func (c *conn) readResponses() {
	for {
		// A fresh buffer per response: the payload is handed to the caller.
		st, p, _, err := wire.ReadResponse(c.br, nil)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				err = fmt.Errorf("no reply within %v: %w", c.timeout, err)
			}
			c.fail(fmt.Errorf("kayadb: reading from %s: %w", c.addr, err))
			return
		}
		var cl *call
		select {
		case cl = <-c.inflight:
		default:
			c.fail(fmt.Errorf("%w: %s sent a response without a request", ErrProtocol, c.addr))
			return
		}
		c.mu.Lock()
		c.mu.pending--
		if c.mu.pending == 0 {
			c.nc.SetReadDeadline(time.Time{}) // idle: wait for the server's close
		} else {
			c.nc.SetReadDeadline(time.Now().Add(c.timeout))
		}
		c.mu.Unlock()
		cl.finish(result{st: st, payload: p, sent: true})
	}
}
