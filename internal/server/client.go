package server

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"go.etcd.io/raft/v3"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/authz"
	"github.com/kayadb/kayadb/internal/buildinfo"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/raftnode"
	"github.com/kayadb/kayadb/internal/wire"
)

const (
	// maxPipelined bounds the requests one connection may have in flight;
	// the reader stops reading until replies drain. (The bytes they hold
	// are bounded too: clientlimits.go.)
	maxPipelined = 128
	// maxHeldReplies bounds the replies of reads the reader serves itself
	// and holds to write with the next one's (serveClient): a small share
	// of the connection's reply bound.
	maxHeldReplies = 16
	// protocolVersion is the client protocol version this server speaks.
	protocolVersion = 1
	// connReadBuffer sizes a connection's read buffer, held for the
	// connection's life, idle or not: it is most of what an idle
	// connection (a client's watch, say) costs. 1,000 connections with
	// 64 KiB each way held 128 MiB, and the larger heap made every
	// write's garbage dearer (fresh spans to clear). 16 KiB holds dozens
	// of pipelined requests per system call; a larger frame is read past
	// the buffer.
	connReadBuffer = 16 << 10
	// connWriteBuffer sizes the reply buffers, which a connection holds
	// only while it writes a batch (replyBuffers).
	connWriteBuffer = 64 << 10
)

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	s.startBackups() // backup.go
	defer s.stopBackups()
	for {
		c, err := s.clientLn.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return
			}
			s.log.Warn("client accept failed", "err", err)
			time.Sleep(20 * time.Millisecond)
			continue
		}
		src := sourceOf(c.RemoteAddr())
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			_ = c.Close()
			continue
		}
		reason, msg := s.clim.admit(src)
		if reason == "" {
			s.conns[c] = struct{}{}
			s.wg.Add(1)
			s.mu.Unlock()
			go s.serveClient(c, src)
			continue
		}
		// Over a limit: one ERROR frame that names it, then close.
		s.conns[c] = struct{}{} // so that Close closes it meanwhile
		replied := s.refuse(c, msg)
		if !replied {
			delete(s.conns, c)
		}
		s.mu.Unlock()
		if !replied {
			_ = c.Close()
		}
		s.clim.refused.WithLabelValues(reason).Inc()
		s.auditConnRefused(c.RemoteAddr(), msg)
		s.clim.note(slog.LevelWarn, reason, "refusing client connections over a limit", "limit", reason, "source", src.String(), "reply", msg)
	}
}

// call is one request's reply slot; replies are written in request order.
type call struct {
	// done is closed once the reply is settled (settled), for the
	// requests that wait for this one (orderedOp); nil for the others.
	done    chan struct{}
	status  wire.Status
	payload []byte
	op      wire.Opcode
	start   time.Time // when the request was read (metrics)
	// Stage timing (raftnode.Now readings): when the frame was read, and
	// when its reply was ready to write.
	readAt, ready int64
	// finished: the reply is settled and may be written (replies.mu).
	finished bool
	// push: a frame pushed by a watch (feed.go), answering no request.
	push bool
	// principal is who the request is served for (authz.go), nil before
	// it is authorized and for opcodes without credentials (HELLO,
	// HEALTH) and pushed frames.
	principal *authz.Principal
	// heldBefore, set for a read served on the reader while replies of
	// earlier reads are held there (serveClient), is flushed before the
	// read waits for reply memory: the room it waits for may be theirs.
	heldBefore *replies

	// Memory accounting (clientlimits.go). seq numbers the call on its
	// connection; conn is its charge there, global its reply's charge in
	// the server's budget, reqGlobal its request payload's.
	seq                     uint64
	conn, global, reqGlobal int64

	aud callAudit // what its audit line needs (audit.go)
}

// settled marks the call's reply settled for the requests ordered after
// it (done, when the call has one).
func (cl *call) settled() {
	if cl.done != nil {
		close(cl.done)
	}
}

// orderedOp reports whether later requests of a connection may wait for
// a request of op (its call's done): a write, whose effects later reads
// of the connection must see, and a transaction's requests, which run in
// order. Other calls get no channel.
func orderedOp(op wire.Opcode) bool {
	return op == wire.OpPut || op == wire.OpDelete || op == wire.OpKayaTxn || isTxnOp(op)
}

// serveClient reads pipelined requests, handles each on its own goroutine,
// and writes the replies in order (replies: the goroutine that finishes
// the oldest one writes). A malformed frame closes the connection (with a
// logged reason); it never affects other connections or data.
func (s *Server) serveClient(raw net.Conn, src sourceKey) {
	defer s.wg.Done()
	log := s.log.With("client", raw.RemoteAddr().String())
	cc := newClientConn(s.clim.connBytes)
	s.clim.track(cc, true)
	defer func() {
		_ = raw.Close()
		s.mu.Lock()
		delete(s.conns, raw)
		s.mu.Unlock()
		s.clim.track(cc, false)
		s.clim.leave(src)
	}()
	c, err := s.tlsServer(raw)
	if err != nil {
		log.Warn("closing client connection: TLS handshake failed", "err", err)
		return
	}
	refused := false // one log line per connection, however many refusals
	out := &replies{s: s, cc: cc, aud: newConnAudit(c), rw: &replyWriter{c: c, idle: s.clim.idle},
		slots: make(chan struct{}, maxPipelined)}
	ws := s.newConnWatches(cc, out) // watches push frames into the replies (feed.go)
	rd := &clientReader{s: s, c: c, r: bufio.NewReaderSize(c, connReadBuffer), cc: cc, cert: connCert(c)}
	var lastWrite <-chan struct{} // done when this connection's latest write has its reply
	txnLast := txnOrder{}         // each transaction's latest request on this connection
	held := 0                     // replies of reads served here and not yet written (see below)
	for {
		// A reply is held only when the next frame, already buffered, is a
		// GET_AT (below), so the request read here never blocks with
		// replies held; what ends the loop flushes them.
		cl, req, err := rd.next()
		if err != nil {
			rd.ended(err, log)
			break
		}
		op := req.op
		s.inflight.Add(1)
		cc.enqueue(cl)
		out.add(cl)
		if req.refusal != nil {
			s.clim.note(slog.LevelWarn, "reply_memory", "refused a request: the reply memory budget is full", "opcode", op.String(), "client", raw.RemoteAddr().String())
			cl.aud.refused = true
			s.answerNow(cc, cl, out, req.refusalSt, req.refusal)
			if err := rd.discard(req.skip); err != nil {
				rd.ended(err, log)
				break
			}
			continue
		}
		inner, pr, ast, areply, ok := s.authorize(req.pol, rd.cert, op, req.payload) // authz.go
		cl.principal = pr
		if !ok {
			if !refused {
				refused = true
				reason, _ := wire.DecodeError(areply)
				log.Warn("refused a request", "opcode", op.String(), "reason", reason)
			}
			cl.aud.refused = true
			s.answerNow(cc, cl, out, ast, areply)
			// A refusal decided on the auth prefix alone: the rest of the
			// frame is skipped, never held.
			if err := rd.discard(req.skip); err != nil {
				rd.ended(err, log)
				break
			}
			continue
		}
		cl.aud = callAudit{authorized: true, keyLen: auditKeyLen(op, inner)}
		if st, p, refuse := s.auditGate(op); refuse {
			cl.aud.refused = true
			s.answerNow(cc, cl, out, st, p)
			if err := rd.discard(req.skip); err != nil {
				rd.ended(err, log)
				break
			}
			continue
		}
		payload := inner
		if op == wire.OpPut || op == wire.OpDelete {
			// Writes enter the raft log in the order they arrived on this
			// connection: they are queued here, on the reader, and only
			// their wait runs concurrently.
			st, p, ok := s.startWriteFunc(cc, cl, out, op, payload)
			s.stages.Since(raftnode.StageDecode, cl.readAt)
			if !ok {
				s.answerNow(cc, cl, out, st, p)
				continue
			}
			lastWrite = cl.done
			continue
		}
		if op == wire.OpKayaTxn && s.txns != nil {
			// A conditional write is proposed here too, in arrival order
			// (its compares see every earlier write of this connection,
			// which the log applies first), and only its wait runs
			// concurrently; later requests of the connection wait for
			// its reply like a put's.
			st, p, ok := s.startCondTxnFunc(cc, cl, out, payload)
			if !ok {
				s.answerNow(cc, cl, out, st, p)
				continue
			}
			lastWrite = cl.done
			continue
		}
		// Other requests see every earlier write of this connection
		// (read-your-writes under pipelining). A conditional write is
		// ordered like a write; the requests of one transaction run in the
		// order they were sent, after each other, but not after other
		// transactions' (a commit waits for raft: ordering the
		// transactions of a connection that many clients share would
		// serialize them all).
		after := lastWrite
		var afterTxn <-chan struct{}
		localRead := false
		switch {
		case op == wire.OpGetAt && len(payload) >= 8 && binary.LittleEndian.Uint64(payload) == wire.ReadTSLocal:
			localRead = true
			// A read of the applied state as it is (wire.ReadTSLocal) may
			// miss the newest writes anyway, this connection's included:
			// it does not wait for them (its reader validates what it
			// read; waiting would put it behind other clients' commits
			// on a shared connection).
			after = nil
		case op == wire.OpKayaTxn:
			lastWrite = cl.done
		case isTxnOp(op) && op != wire.OpTxnBegin && len(payload) >= 8:
			id := binary.LittleEndian.Uint64(payload)
			afterTxn = txnLast.order(id, op, cl.done)
		}
		hold := false // run(true) leaves the reply for the next read's write
		run := func(onReader bool) {
			if after != nil {
				<-after
			}
			if afterTxn != nil {
				<-afterTxn
			}
			timed := op == wire.OpGet || op == wire.OpScan
			if timed {
				s.stages.Since(raftnode.StageDecode, cl.readAt)
			}
			var st wire.Status
			var p []byte
			if waitsForReplyMemory(op) {
				st, p = s.handleRead(cc, cl, op, payload)
			} else if ws.handles(op) {
				ctx, cancel := context.WithTimeout(withPrincipal(context.Background(), cl.principal), s.cfg.RequestTimeout)
				st, p = ws.handle(ctx, op, payload)
				cancel()
			} else {
				st, p = s.dispatchBy(withPrincipal(context.Background(), cl.principal), op, payload)
			}
			s.settle(cc, cl, st, p)
			if timed {
				cl.ready = raftnode.Now()
			}
			cl.settled()
			if hold && len(p) <= maxHeldReply {
				out.hold(cl)
			} else {
				// A large reply is not held: roomToHold counts on held
				// replies being small. It goes out now, after the held ones.
				out.finish(cl, onReader)
			}
		}
		next, buffered := rd.frameBuffered()
		if (localRead || op == wire.OpGet && (s.store.ReadsLocally() || !buffered)) && closedOrNil(after) && out.aloneAfterSettled() {
			// A read that waits for nothing (a read of the applied state
			// as it is, or one voter with everything committed applied;
			// nothing else of this connection unwritten, so no wait for
			// room either) is served here: a goroutine of its own would
			// cost a scheduling hop (docs/design/latency.md). So is a GET
			// that needs a ReadIndex round when no other request is
			// waiting to be read: the reader runs the round (kv.Barrier);
			// a request sent meanwhile is read after it, and its reply
			// would have come after this one's anyway. When the
			// next frame, already buffered, is a GET_AT or a GET (a
			// client pipelining its reads, the read lane of the Go
			// client, several clients sharing a connection), this reply
			// is held and written with the next one's: one write(2) for
			// several replies (Redis answers a connection's buffered
			// commands the same way). Should the next one not be served
			// here, the held replies are written before it is started.
			// Only small replies are held (maxHeldReply), at most
			// maxHeldReplies, far below the connection's reply bound, and
			// a read that waits for reply memory writes them first
			// (call.heldBefore): the reader never waits for room its held
			// replies take.
			if held > 0 {
				cl.heldBefore = out
			}
			if buffered && (next == wire.OpGetAt || next == wire.OpGet) && held < maxHeldReplies && s.roomToHold(cc, held) {
				hold = true
				held++
			} else {
				held = 0
			}
			run(true)
		} else {
			if held > 0 {
				out.flush()
				held = 0
			}
			go run(false)
		}
		// An opcode without credentials keeps only the start of its
		// payload; the rest is skipped.
		if err := rd.discard(req.skip); err != nil {
			rd.ended(err, log)
			break
		}
	}
	out.flush() // replies the reader held, whatever ended the loop
	ws.close()
	out.wait()
	_ = c.Close()
}

// maxHeldReply is the largest reply payload the reader holds (serveClient):
// a GET or GET_AT of a small value, generously. A larger one is written at
// once, with the replies held before it.
const maxHeldReply = getReplyEstimate + wire.MaxKeySize + 64

// roomToHold reports whether the reader may hold one more reply (it
// already holds held) with memory to spare: the held replies stay charged
// until written, and the reader must never wait, in the connection's
// admission or the server's reply budget, for room they take.
func (s *Server) roomToHold(cc *clientConn, held int) bool {
	per := int64(frameOverhead + maxHeldReply) // a held reply's charge at most
	if int64(held+2)*per > cc.limit/2 {
		return false
	}
	b := s.clim.replyMem
	return b.inUse()+int64(held+2)*per <= b.limit/2
}

// closedOrNil reports whether ch is nil or closed.
func closedOrNil(ch <-chan struct{}) bool {
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// replies writes a connection's replies in request order without a
// goroutine of its own: the goroutine that finishes the oldest unwritten
// call writes it and every later one already finished, so a reply goes
// out with no scheduling hop after its request's own (a writer goroutine
// cost one per reply: docs/design/latency.md). The mutex guards the queue
// only and is never held across a write: writing, set and cleared under
// it, says that a goroutine is writing, and a call finished meanwhile is
// written by that goroutine before it clears the flag. A write that blocks
// (a client that reads nothing) holds up the goroutine that writes, for
// at most the idle timeout (replyWriter), as it held up the writer
// goroutine before.
type replies struct {
	s   *Server
	cc  *clientConn
	aud *connAudit // the connection's part of its audit lines
	rw  *replyWriter
	// slots bounds the calls in flight on the connection (maxPipelined):
	// the reader waits for one before it queues a call.
	slots chan struct{}
	// pending counts calls neither written nor dropped (wait).
	pending sync.WaitGroup
	mu      struct {
		sync.Mutex
		ring       [maxPipelined]*call // unwritten calls, oldest at head
		head, n    int
		writing    bool
		broken     bool // a write failed: the rest is dropped
		batchSpace [maxPipelined]*call
	}
}

// add queues a call read from the connection, waiting while maxPipelined
// are in flight.
func (r *replies) add(cl *call) {
	r.slots <- struct{}{}
	r.pending.Add(1)
	r.mu.Lock()
	r.mu.ring[(r.mu.head+r.mu.n)%maxPipelined] = cl
	r.mu.n++
	r.mu.Unlock()
}

// push queues a frame pushed by a watch (feed.go), already settled,
// behind the replies queued before it, unless gone closes first. It never
// writes on the caller's goroutine (the watch hub's: a client that does
// not read must stall its watchers, never the hub); when no goroutine is
// writing, one is started.
func (r *replies) push(cl *call, gone <-chan struct{}) bool {
	select {
	case r.slots <- struct{}{}:
	case <-gone:
		return false
	}
	r.pending.Add(1)
	r.mu.Lock()
	r.mu.ring[(r.mu.head+r.mu.n)%maxPipelined] = cl
	r.mu.n++
	cl.finished = true
	r.writeAsyncLocked()
	return true
}

// complete marks cl's reply settled for a goroutine that must not write
// (kv's completion callback, on the apply goroutine: a client that reads
// nothing must not stall it). Unless a goroutine is writing, one is
// started to write every settled reply at the head of the queue; the
// replies settled meanwhile by the same apply run go out with it.
func (r *replies) complete(cl *call) {
	r.mu.Lock()
	cl.finished = true
	r.writeAsyncLocked()
}

// writeAsyncLocked starts a goroutine that writes the settled replies at
// the head of the queue, unless one is writing already (it writes them).
// Called with mu held; returns with mu released.
func (r *replies) writeAsyncLocked() {
	if r.mu.writing {
		r.mu.Unlock()
		return
	}
	r.mu.writing = true
	r.mu.Unlock()
	go func() {
		r.mu.Lock()
		r.drainLocked(false)
	}()
}

// readerWriteBytes bounds the replies the connection's reader writes
// itself: a write of more may block until the client reads (a socket
// buffer holds a few hundred KiB), and a reader blocked in a write could
// not read the connection's next requests meanwhile, or wait for room to
// read them (clientlimits.go), so larger replies go to a goroutine.
const readerWriteBytes = 64 << 10

// finish marks cl's reply settled and, unless another goroutine is
// writing, writes every settled reply at the head of the queue. onReader
// says the caller is the connection's reader (readerWriteBytes).
func (r *replies) finish(cl *call, onReader bool) {
	r.mu.Lock()
	cl.finished = true
	if r.mu.writing {
		r.mu.Unlock()
		return
	}
	r.mu.writing = true
	r.drainLocked(onReader)
}

// drainLocked writes the settled replies at the head until there are none,
// then clears writing. Called with mu held and writing set; returns with
// mu released.
func (r *replies) drainLocked(onReader bool) {
	for {
		batch := r.mu.batchSpace[:0] // only the writing goroutine uses it
		bytes := 0
		for r.mu.n > 0 && r.mu.ring[r.mu.head].finished {
			cl := r.mu.ring[r.mu.head]
			batch = append(batch, cl)
			bytes += len(cl.payload)
			r.mu.ring[r.mu.head] = nil
			r.mu.head = (r.mu.head + 1) % maxPipelined
			r.mu.n--
		}
		if len(batch) == 0 {
			r.mu.writing = false
			r.mu.Unlock()
			return
		}
		broken := r.mu.broken
		r.mu.Unlock()
		if onReader && bytes > readerWriteBytes {
			go func() {
				broken := r.write(batch, broken)
				r.mu.Lock()
				r.mu.broken = broken
				r.drainLocked(false)
			}()
			return
		}
		broken = r.write(batch, broken)
		r.mu.Lock()
		r.mu.broken = broken
	}
}

// write writes a batch of settled replies (flushing after the last),
// releases their memory, and reports whether the connection is broken.
// After a failed write it drops the rest.
func (r *replies) write(batch []*call, broken bool) bool {
	s, c := r.s, r.rw.c
	for i, cl := range batch {
		if !cl.push {
			s.observeRequest(cl.op, cl.status, cl.start)
			s.auditCall(r.aud, cl)
		}
		if !broken {
			err := r.rw.writeReply(cl.status, cl.payload, i == len(batch)-1)
			s.stages.Since(raftnode.StageReply, cl.ready)
			if err != nil {
				broken = true
				if deadlineExceeded(err) {
					s.clim.closed.WithLabelValues(closedWrite).Inc()
					s.clim.note(slog.LevelInfo, closedWrite, "closing a client connection: its client read none of its replies for the idle timeout (--client-idle-timeout)",
						"client", c.RemoteAddr().String(), "timeout", s.clim.idle)
				}
				_ = c.Close()
				r.cc.fail()
			}
		}
		cl.payload = nil
		s.clim.replyMem.release(cl.global)
		if cl.push {
			r.cc.pushed(cl)
		} else {
			r.cc.written(cl)
			s.inflight.Add(-1) // answered (or its connection is gone)
		}
		batch[i] = nil
		<-r.slots
		r.pending.Done()
	}
	return broken
}

// aloneAfterSettled reports whether every call queued before the last one
// is settled (held by the reader, or being written): the last one's reply
// then waits for no other request.
func (r *replies) aloneAfterSettled() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := 0; i < r.mu.n-1; i++ {
		if !r.mu.ring[(r.mu.head+i)%maxPipelined].finished {
			return false
		}
	}
	return r.mu.n >= 1
}

// hold marks cl's reply settled without writing it: the reader writes it
// with a later reply (finish) or alone (flush). A goroutine writing
// meanwhile may write it first.
func (r *replies) hold(cl *call) {
	r.mu.Lock()
	cl.finished = true
	r.mu.Unlock()
}

// flush writes the settled replies at the head, unless a goroutine is
// writing (it writes them).
func (r *replies) flush() {
	r.mu.Lock()
	if r.mu.writing {
		r.mu.Unlock()
		return
	}
	r.mu.writing = true
	r.drainLocked(true)
}

// wait returns once every queued call was written (and flushed) or
// dropped.
func (r *replies) wait() { r.pending.Wait() }

// errIdle ends a connection that had nothing in flight and sent nothing for
// the idle timeout.
var errIdle = errors.New("idle")

// clientReader is the reading side of a client connection: the idle and
// frame timeouts, and the memory a request may take before it is read.
type clientReader struct {
	s        *Server
	c        net.Conn
	r        *bufio.Reader
	cc       *clientConn
	deadline bool // a read deadline is set
	// cert is the connection's verified client certificate (authz.go).
	cert *x509.Certificate
}

// frameBuffered reports whether a whole request frame is already in the
// read buffer (so reading it will not block), and its opcode.
func (rd *clientReader) frameBuffered() (wire.Opcode, bool) {
	if rd.r.Buffered() < 5 {
		return 0, false
	}
	b, err := rd.r.Peek(5)
	if err != nil {
		return 0, false
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n == 0 || rd.r.Buffered() < 4+n {
		return 0, false
	}
	return wire.Opcode(b[4]), true
}

// request is a request frame as the reader leaves it.
type request struct {
	op      wire.Opcode
	payload []byte // the payload, or its start when skip > 0
	skip    int    // payload bytes not read: skipped after the call is queued
	// refusal, when set, is the reply (status refusalSt) of a request
	// refused before its payload was read.
	refusal   []byte
	refusalSt wire.Status
	// pol is the policy the request is decided under (authz.go).
	pol *authz.Policy
}

// next reads the next request and returns it with its call, admitted and
// charged. The payload is read only once the connection has room for it;
// with credentials required, only once its prefix carries them.
func (rd *clientReader) next() (*call, *request, error) {
	s, l := rd.s, rd.s.clim
	if err := rd.waitFrame(); err != nil {
		return nil, nil, err
	}
	first := raftnode.Now() // the frame's first byte is here
	op, n, err := wire.ReadRequestHeader(rd.r)
	if err != nil {
		return nil, nil, err
	}
	cl := &call{op: op}
	if orderedOp(op) {
		cl.done = make(chan struct{})
	}
	req := &request{op: op, pol: s.policyNow()}
	var head []byte
	if marker := authMarker(req.pol, op); marker != "" {
		if head, err = wire.ReadAuthPrefix(rd.r, marker, n, nil); err != nil {
			return nil, nil, err
		}
		if _, _, _, _, ok := s.authenticate(req.pol, rd.cert, op, head); !ok {
			req.payload, req.skip = head, n-len(head)
			return rd.admitSmall(cl, req)
		}
	} else if !wire.IsAdmin(op) && !wire.IsData(op) {
		k := min(n, openPayloadBytes(op))
		if head, err = wire.ReadPayload(rd.r, nil, k); err != nil {
			return nil, nil, err
		}
		req.payload, req.skip = head, n-k
		return rd.admitSmall(cl, req)
	}
	// The payload is charged before it is read: to the connection, and
	// when large to the server's budget too.
	charge := int64(n) + replyEstimate(op)
	if !rd.cc.admit(charge, l.stopping) {
		return nil, nil, net.ErrClosed
	}
	cl.conn = charge
	if rest := n - len(head); rest > largeRequest {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
		err := l.replyMem.acquire(ctx, rd.cc.gone, l.stopping, int64(rest))
		cancel()
		rd.armFrame() // the wait was the server's, not the client's
		if errors.Is(err, errReplyMemory) {
			req.refusalSt, req.refusal = s.replyMemoryError()
			req.payload, req.skip = head, rest
			cl.start = time.Now()
			return cl, req, nil
		}
		if err != nil {
			return nil, nil, err
		}
		cl.reqGlobal = int64(rest)
	}
	if req.payload, err = wire.ReadPayload(rd.r, head, n); err != nil {
		l.replyMem.release(cl.reqGlobal)
		return nil, nil, err
	}
	cl.start = time.Now()
	cl.readAt = s.stages.Since(raftnode.StageRead, first)
	return cl, req, nil
}

// admitSmall admits a request whose reply is small and whose payload has
// been read as far as it will be.
func (rd *clientReader) admitSmall(cl *call, req *request) (*call, *request, error) {
	charge := int64(len(req.payload)) + smallReplyEstimate
	if !rd.cc.admit(charge, rd.s.clim.stopping) {
		return nil, nil, net.ErrClosed
	}
	cl.conn = charge
	cl.start = time.Now()
	return cl, req, nil
}

// waitFrame waits for the first byte of the next frame — closing the
// connection once it has had nothing in flight and received nothing for
// the idle timeout, counted from its last reply — then starts the frame
// timeout.
func (rd *clientReader) waitFrame() error {
	l := rd.s.clim
	if rd.r.Buffered() == 0 {
		wait := l.idle
		for {
			if wait > 0 {
				_ = rd.c.SetReadDeadline(time.Now().Add(wait))
				rd.deadline = true
			} else if rd.deadline {
				_ = rd.c.SetReadDeadline(time.Time{})
				rd.deadline = false
			}
			_, err := rd.r.Peek(1)
			if err == nil {
				break
			}
			if !deadlineExceeded(err) {
				return err
			}
			pending, last := rd.cc.activity()
			if pending > 0 {
				wait = l.idle // the client waits for replies: it is not idle
				continue
			}
			if wait = l.idle - time.Since(last); wait <= 0 {
				return errIdle
			}
		}
	}
	if rd.r.Buffered() >= 4 {
		b, _ := rd.r.Peek(4)
		if n := int(binary.LittleEndian.Uint32(b)); n <= wire.MaxFrameSize && rd.r.Buffered() >= 4+n {
			return nil // the whole frame is here: no more reading from the network
		}
	}
	rd.armFrame()
	return nil
}

// armFrame gives the frame being read the frame timeout from now.
func (rd *clientReader) armFrame() {
	if f := rd.s.clim.frame; f > 0 {
		_ = rd.c.SetReadDeadline(time.Now().Add(f))
		rd.deadline = true
	} else if rd.deadline {
		_ = rd.c.SetReadDeadline(time.Time{})
		rd.deadline = false
	}
}

// discard skips n bytes of the current frame, within its frame timeout,
// without holding them.
func (rd *clientReader) discard(n int) error {
	if n == 0 {
		return nil
	}
	if _, err := rd.r.Discard(n); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("skipping the rest of a request frame: %w", err)
	}
	return nil
}

// ended logs and counts why the reader stopped.
func (rd *clientReader) ended(err error, log *slog.Logger) {
	l := rd.s.clim
	switch {
	case errors.Is(err, errIdle):
		l.closed.WithLabelValues(closedIdle).Inc()
		log.Debug("closing an idle client connection", "timeout", l.idle)
	case deadlineExceeded(err):
		l.closed.WithLabelValues(closedFrame).Inc()
		l.note(slog.LevelWarn, closedFrame, "closing a client connection: a request frame did not arrive whole within the frame timeout (--client-frame-timeout)",
			"client", rd.c.RemoteAddr().String(), "timeout", l.frame)
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
	case errors.Is(err, wire.ErrFrameEmpty), errors.Is(err, wire.ErrFrameTooLarge):
		log.Warn("closing client connection: bad frame", "err", err)
	default:
		log.Debug("client connection ended", "err", err)
	}
	if errors.Is(err, net.ErrClosed) || errors.Is(err, errIdle) || deadlineExceeded(err) {
		rd.cc.fail()
	}
	if errors.Is(err, errIdle) || deadlineExceeded(err) {
		_ = rd.c.Close()
	}
}

// dispatchBy handles one request within parent's deadline (time a request spent
// waiting for reply memory counts against its request timeout).
func (s *Server) dispatchBy(parent context.Context, op wire.Opcode, p []byte) (st wire.Status, payload []byte) {
	defer func() {
		// A bug in a handler must not take the node down or leave the
		// client without a reply.
		if r := recover(); r != nil {
			s.log.Error("request handler panicked", "opcode", op.String(), "panic", fmt.Sprint(r))
			st, payload = wire.StatusError, wire.AppendError(nil, "internal error")
		}
	}()
	if op == wire.OpGet {
		// Store.Get bounds each of its waits by the request timeout
		// itself, and a read served at once (one voter, or a lease)
		// waits for nothing: no timer for it.
		return s.get(parent, p)
	}
	ctx, cancel := context.WithTimeout(parent, s.cfg.RequestTimeout)
	defer cancel()
	switch op {
	case wire.OpHello:
		v, err := wire.DecodeHello(p)
		if err != nil {
			return invalid(err)
		}
		if v > protocolVersion {
			return wire.StatusInvalidArgument, wire.AppendError(nil, fmt.Sprintf(wire.MsgUnsupportedVersion, v))
		}
		return wire.StatusOK, wire.AppendHello(nil, protocolVersion)
	case wire.OpHealth:
		role := "follower"
		if s.node.IsLeader() {
			role = "leader"
		}
		return wire.StatusOK, wire.AppendHealth(nil, role)
	case wire.OpScan:
		prefix, err := wire.DecodeKey(p)
		if err != nil {
			return invalid(err)
		}
		items, err := s.scan(ctx, prefix) // authz.go: clamped to what the principal may read
		if err != nil {
			return s.reply(err, nil)
		}
		kvs := make([]wire.KV, len(items))
		for i, it := range items {
			kvs[i] = wire.KV{Key: it.Key, Value: it.Value}
		}
		return wire.StatusOK, wire.AppendScanResult(nil, kvs)
	case wire.OpAddMember:
		return s.addMember(ctx, p)
	case wire.OpRemoveMember:
		return s.removeMember(ctx, p)
	case wire.OpPromoteLearner:
		return s.promoteLearner(ctx, p)
	case wire.OpTransferLeader:
		return s.transferLeader(ctx, p)
	case wire.OpBackupBegin, wire.OpBackupRead, wire.OpBackupEnd, wire.OpBackupStatus:
		return s.backupRequest(ctx, op, p)
	case wire.OpTxnBegin, wire.OpTxnOp, wire.OpTxnCommit, wire.OpTxnRollback, wire.OpKayaTxn:
		return s.txns.Handle(txnOwner(ctx), op, p) // a transaction belongs to its principal (authz.go)
	case wire.OpGetAt:
		return s.getAt(ctx, p)
	case wire.OpScanAt:
		return s.scanAt(ctx, p)
	case wire.OpCDCPoll, wire.OpCDCCheckpoint, wire.OpCDCConsumer:
		return s.cdcRequest(ctx, op, p) // feed.go
	case wire.OpStats:
		b, err := wire.AppendStats(nil, s.stats())
		if err != nil {
			return wire.StatusError, wire.AppendError(nil, err.Error())
		}
		return wire.StatusOK, b
	}
	return wire.StatusError, wire.AppendError(nil, fmt.Sprintf(wire.MsgUnknownOpcode, uint8(op)))
}

// get serves a GET.
func (s *Server) get(ctx context.Context, p []byte) (wire.Status, []byte) {
	key, err := wire.DecodeKey(p)
	if err != nil {
		return invalid(err)
	}
	v, err := s.store.Get(ctx, key)
	if err != nil {
		return s.reply(err, nil)
	}
	return wire.StatusOK, wire.AppendValue(nil, v)
}

// startWriteFunc decodes a PUT or DELETE on the connection's reader and
// queues its proposal. The write's reply is settled by kv's completion
// callback, on the goroutine that completes it (usually the apply
// goroutine), and written by a goroutine of the connection's
// (replies.complete): no goroutine waits for each write, and the replies
// of one apply run on one connection go out in one system call. It
// reports false, with the reply, when the write was refused before it
// was proposed.
func (s *Server) startWriteFunc(cc *clientConn, cl *call, out *replies, op wire.Opcode, p []byte) (wire.Status, []byte, bool) {
	// No timer: the store bounds its one wait (for room in the proposal
	// queue) by the request timeout itself, and the reply's deadline is the
	// waiter's.
	ctx := context.Background()
	// A full disk refuses the write before it is proposed (so the client
	// knows it did not happen); a follower sends the client to the leader
	// instead, whose disk may have room.
	if s.node.IsLeader() {
		if err := s.disk.admit(); err != nil {
			return wire.StatusError, wire.AppendError(nil, err.Error()), false
		}
	}
	done := func(err error) {
		st, payload := s.reply(err, nil)
		s.answerLater(cc, cl, out, st, payload)
	}
	var err error
	if op == wire.OpPut {
		key, value, derr := wire.DecodePut(p)
		if derr != nil {
			st, payload := invalid(derr)
			return st, payload, false
		}
		err = s.store.StartPutFunc(ctx, key, value, done)
		if err == nil {
			s.hub.Proposed(key, value) // a no-op but in a planted-bug build (feed)
		}
	} else {
		key, derr := wire.DecodeKey(p)
		if derr != nil {
			st, payload := invalid(derr)
			return st, payload, false
		}
		err = s.store.StartDeleteFunc(ctx, key, done)
	}
	if err != nil {
		st, payload := s.reply(err, nil)
		return st, payload, false
	}
	return 0, nil, true
}

// answerNow settles cl with st, p on the connection's reader and writes
// every settled reply at the head of the queue.
func (s *Server) answerNow(cc *clientConn, cl *call, out *replies, st wire.Status, p []byte) {
	s.settle(cc, cl, st, p)
	cl.settled()
	out.finish(cl, true)
}

// answerLater settles cl with st, p from a completion callback, which must
// not write (replies.complete), and marks its reply time for the stage
// histograms.
func (s *Server) answerLater(cc *clientConn, cl *call, out *replies, st wire.Status, p []byte) {
	s.settle(cc, cl, st, p)
	if s.stages != nil {
		cl.ready = raftnode.Now()
	}
	cl.settled()
	out.complete(cl)
}

// startCondTxnFunc proposes a KAYA_TXN (StartCondTxnFunc) whose reply,
// like a put's (startWriteFunc), is settled by a callback and written by a
// goroutine of the connection's. It reports false, with the reply, when
// the request was refused without being proposed.
func (s *Server) startCondTxnFunc(cc *clientConn, cl *call, out *replies, p []byte) (wire.Status, []byte, bool) {
	// No timer, as for a put (startWriteFunc).
	return s.txns.StartCondTxnFunc(context.Background(), p, func(st wire.Status, payload []byte) {
		s.answerLater(cc, cl, out, st, payload)
	})
}

func invalid(err error) (wire.Status, []byte) {
	return wire.StatusInvalidArgument, wire.AppendError(nil, err.Error())
}

// reply maps a state-machine result to a status.
func (s *Server) reply(err error, ok []byte) (wire.Status, []byte) {
	switch {
	case err == nil:
		return wire.StatusOK, ok
	case errors.Is(err, engine.ErrNotFound):
		return wire.StatusNotFound, nil
	case errors.Is(err, kv.ErrNotLeader):
		return wire.StatusNotLeader, wire.AppendNotLeader(nil, s.leaderClientAddr())
	case errors.Is(err, engine.ErrInvalidArgument):
		return wire.StatusInvalidArgument, wire.AppendError(nil, strings.TrimPrefix(err.Error(), "kayadb: invalid argument: "))
	}
	return wire.StatusError, wire.AppendError(nil, err.Error())
}

// stats builds the STATS document.
func (s *Server) stats() *wire.Stats {
	st := s.node.Status()
	role := "follower"
	switch st.Role {
	case raft.StateLeader:
		role = "leader"
	case raft.StateCandidate, raft.StatePreCandidate:
		role = "candidate"
	}
	peers := 0
	for _, m := range s.ros.list() {
		if m.ID != s.cfg.NodeID {
			peers++
		}
	}
	var m *engine.Metrics
	_ = s.store.DB(func(db *engine.DB) error { m = db.Metrics(); return nil })
	c := s.store.Counters()
	tables := 0
	for _, l := range m.Levels {
		tables += l.NumFiles
	}
	type memberJSON struct {
		ID         uint64 `json:"id"`
		RaftAddr   string `json:"raft_addr"`
		ClientAddr string `json:"client_addr"`
		Role       string `json:"role"`
	}
	voters, learners := s.voterSets()
	members := []memberJSON{}
	for _, mb := range s.ros.list() {
		r := "unknown"
		switch {
		case voters[mb.ID]:
			r = "voter"
		case learners[mb.ID]:
			r = "learner"
		}
		members = append(members, memberJSON{ID: mb.ID, RaftAddr: mb.RaftAddr, ClientAddr: mb.ClientAddr, Role: r})
	}
	extra := map[string]json.RawMessage{}
	put := func(k string, v any) {
		if b, err := json.Marshal(v); err == nil {
			extra[k] = b
		}
	}
	put("node_id", s.cfg.NodeID)
	put("leader_id", st.Leader)
	put("members", members)
	snapIndex := uint64(0)
	if cur := s.snaps.Current(); cur != nil {
		snapIndex = cur.Index
	}
	put("snapshot_index", snapIndex)
	if full, why := s.disk.state(); full {
		put("disk_full", why)
	} else {
		put("disk_full", false)
	}
	taken, installed := s.node.SnapshotCounts()
	put("snapshots_taken", taken)
	put("snapshots_installed", installed)
	put("version", buildinfo.Read().Version)
	put("mvcc", s.mvccStats())
	put("txn", s.txns.Stats())
	put("cdc", s.cdcStats())
	put("security", s.securityStats()) // securitystats.go
	return &wire.Stats{
		Extra: extra,
		Role:  role, Term: st.Term, CommitIndex: st.Commit, AppliedIndex: s.store.AppliedIndex(),
		PeerCount: uint64(peers), RaftGroups: 1,
		Engine: wire.EngineStats{
			PutCount: c.Put, GetCount: c.Get, DeleteCount: c.Delete, ScanCount: c.Scan,
			WALBytesWritten: m.WAL.BytesWritten, WALFsyncCount: m.WAL.Syncs,
			WALFsyncTotalUs: uint64(m.WAL.SyncLatency.Mean.Microseconds()) * m.WAL.SyncLatency.Count,
			WALFsyncMaxUs:   uint64(m.WAL.SyncLatency.Max.Microseconds()),
			MemtableEntries: m.MemTable.Entries, SSTableCount: uint64(tables), LastSequence: m.VisibleSeq,
			FlushTotalUs: uint64(m.Flush.Duration.Mean.Microseconds()) * m.Flush.Duration.Count,
			FlushMaxUs:   uint64(m.Flush.Duration.Max.Microseconds()), FlushCount: m.Flush.Count,
			CompactionTotalUs: uint64(m.Compaction.Duration.Mean.Microseconds()) * m.Compaction.Duration.Count,
			CompactionMaxUs:   uint64(m.Compaction.Duration.Max.Microseconds()), CompactionCount: m.Compaction.Count,
			BlockCacheHits: uint64(m.BlockCache.Hits), BlockCacheMisses: uint64(m.BlockCache.Misses),
			RecoveryDurationUs: uint64(s.openDur.Microseconds()),
		},
	}
}

// txnOrder keeps, for each transaction with requests on one connection,
// the completion of its latest request, so that the next one waits for it.
// Only the connection's reader uses it.
type txnOrder map[uint64]<-chan struct{}

// txnOrderPrune is the size at which a connection's txnOrder drops the
// transactions whose latest request is done (transactions that were
// abandoned without a commit or rollback would otherwise stay).
const txnOrderPrune = 1024

// order records done as the latest request of transaction id (op) and
// returns the completion of the one before it, if any. A commit or
// rollback ends the transaction's entry.
func (o txnOrder) order(id uint64, op wire.Opcode, done <-chan struct{}) <-chan struct{} {
	prev := o[id]
	if op == wire.OpTxnCommit || op == wire.OpTxnRollback {
		delete(o, id)
		return prev
	}
	if len(o) >= txnOrderPrune {
		for k, ch := range o {
			select {
			case <-ch:
				delete(o, k)
			default:
			}
		}
	}
	o[id] = done
	return prev
}
