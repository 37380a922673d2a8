package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/kayadb/kayadb/internal/feed"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/vfs"
	"github.com/kayadb/kayadb/internal/wire"
)

// Change data capture (opcodes 13, 14, 73) and watches (71, 72, pushed
// status 65): docs/design/cdc-and-watch.md. The feed package holds the
// logic; this file maps it to requests and to client connections.

const (
	// maxWatchesPerConn bounds the watches one connection holds (each
	// has a goroutine and a buffer of up to feed.MaxBufferedBytes).
	maxWatchesPerConn = 256
	// maxPollReply is the largest CDC_POLL reply a poll's bounds allow:
	// the keys and values, and each event's 17 bytes of framing.
	maxPollReply = frameOverhead + 4 + feed.MaxPollBytes + 17*feed.MaxPollEvents
	// minAutoCDCRetentionBytes, maxAutoCDCRetentionBytes: --cdc-retention-bytes
	// auto is a quarter of the file system within these limits.
	minAutoCDCRetentionBytes = 1 << 30
	maxAutoCDCRetentionBytes = 32 << 30
)

// cdcRetention resolves what registered consumers may hold back: the time
// bound (0: none) and the byte bound (0: none).
func cdcRetention(cfg Config, fs vfs.FS, log *slog.Logger) (time.Duration, int64) {
	return retentionBounds(retentionSpec{
		dur: cfg.CDCRetention, defDur: 24 * time.Hour, bytes: cfg.CDCRetentionBytes,
		diskShare: 4, minBytes: minAutoCDCRetentionBytes, maxBytes: maxAutoCDCRetentionBytes,
		what: "change-feed retention", durKey: "cdc_retention", bytesKey: "cdc_retention_bytes",
	}, cfg.DataDir, fs, log)
}

// cdcRequest answers CDC_POLL, CDC_CHECKPOINT and CDC_CONSUMER.
func (s *Server) cdcRequest(ctx context.Context, op wire.Opcode, p []byte) (wire.Status, []byte) {
	switch op {
	case wire.OpCDCPoll:
		req, err := wire.DecodeCDCPoll(p)
		if err != nil {
			return invalid(err)
		}
		if msg := wire.ValidCDCConsumer(req.Consumer); msg != "" {
			return wire.StatusInvalidArgument, wire.AppendError(nil, msg)
		}
		changes, err := s.cdc.Poll(ctx, consumerName(ctx, req.Consumer), req.FromSeq, req.Limit, readMatch(ctx)) // authz.go
		if err != nil {
			return s.cdcReply(err, nil)
		}
		evs := make([]wire.CDCEvent, len(changes))
		for i, c := range changes {
			evs[i] = wire.CDCEvent{Seq: c.Rev, Op: wire.CDCOp(c.Op), Key: c.Key, Value: c.Value}
		}
		out := wire.AppendCDCPollReply(nil, evs)
		if len(out)+2 > wire.MaxFrameSize {
			// One commit larger than a frame (a commit is never split).
			return wire.StatusError, wire.AppendError(nil, fmt.Sprintf("cdc: the commit at seq %d holds %d bytes of changes, more than a reply frame carries (%d); it cannot be polled", changes[0].Rev, len(out), wire.MaxFrameSize))
		}
		return wire.StatusOK, out
	case wire.OpCDCCheckpoint:
		consumer, seq, hasSeq, err := wire.DecodeCDCCheckpointAt(p)
		if err != nil {
			return invalid(err)
		}
		if msg := wire.ValidCDCConsumer(consumer); msg != "" {
			return wire.StatusInvalidArgument, wire.AppendError(nil, msg)
		}
		_, err = s.cdc.Checkpoint(ctx, consumerName(ctx, consumer), seq, hasSeq)
		return s.cdcReply(err, nil)
	case wire.OpCDCConsumer:
		req, err := wire.DecodeCDCConsumer(p)
		if err != nil {
			return invalid(err)
		}
		if msg := wire.ValidCDCConsumer(req.Consumer); msg != "" {
			return wire.StatusInvalidArgument, wire.AppendError(nil, msg)
		}
		if req.Action == wire.CDCConsumerDelete {
			return s.cdcReply(s.cdc.Delete(ctx, consumerName(ctx, req.Consumer)), nil)
		}
		seq, err := s.cdc.Position(ctx, consumerName(ctx, req.Consumer))
		return s.cdcReply(err, wire.AppendSeq(nil, seq))
	}
	return wire.StatusError, wire.AppendError(nil, fmt.Sprintf(wire.MsgUnknownOpcode, uint8(op)))
}

// cdcReply maps the feed's errors (a compacted position is status 64).
func (s *Server) cdcReply(err error, ok []byte) (wire.Status, []byte) {
	var ce *feed.CompactedError
	if errors.As(err, &ce) {
		return wire.StatusCompacted, wire.AppendError(nil, ce.Error())
	}
	return s.reply(err, ok)
}

// connWatches are the watches of one client connection. Their frames go
// into the connection's reply queue (replies, client.go),
// each charged to the connection's reply bytes like a reply, so that a
// client that does not read stalls its watchers (which are then
// cancelled as slow), never the server.
type connWatches struct {
	s   *Server
	cc  *clientConn
	out *replies

	// gone is closed when the connection's reader ends; pushMu is held
	// shared by every push and exclusively by close, so that the reader
	// waits for the queue to drain only once no push can add to it.
	gone     chan struct{}
	goneOnce sync.Once
	pushMu   sync.RWMutex

	mu     sync.Mutex
	next   uint64
	open   map[uint64]*feed.Watcher
	closed bool
}

var closedDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (s *Server) newConnWatches(cc *clientConn, out *replies) *connWatches {
	return &connWatches{s: s, cc: cc, out: out, gone: make(chan struct{})}
}

// handles reports whether op is a watch request, answered by handle.
func (ws *connWatches) handles(op wire.Opcode) bool {
	return op == wire.OpWatchCreate || op == wire.OpWatchCancel
}

var errConnGone = errors.New("the client connection is gone")

// push queues one pushed frame behind the replies already queued.
func (ws *connWatches) push(ev *wire.WatchEvent) error {
	payload := wire.AppendWatchEvent(nil, ev)
	size := int64(frameOverhead + len(payload))
	ws.pushMu.RLock()
	defer ws.pushMu.RUnlock()
	select {
	case <-ws.gone:
		return errConnGone
	default:
	}
	if !ws.cc.admit(size, ws.gone) {
		return errConnGone
	}
	ws.s.clim.replyMem.force(size)
	cl := &call{done: closedDone, status: wire.StatusWatchEvent, payload: payload, op: wire.OpWatchCreate,
		push: true, conn: size, global: size, start: time.Now()}
	if ws.out.push(cl, ws.gone) {
		return nil
	}
	ws.cc.adjust(-size)
	ws.s.clim.replyMem.release(size)
	return errConnGone
}

// handle answers WATCH_CREATE and WATCH_CANCEL.
func (ws *connWatches) handle(ctx context.Context, op wire.Opcode, p []byte) (wire.Status, []byte) {
	s := ws.s
	if op == wire.OpWatchCancel {
		id, err := wire.DecodeWatchCancel(p)
		if err != nil {
			return invalid(err)
		}
		ws.mu.Lock()
		w, ok := ws.open[id]
		ws.mu.Unlock()
		if !ok {
			return wire.StatusInvalidArgument, wire.AppendError(nil, fmt.Sprintf("watch %d is not open on this connection", id))
		}
		w.Cancel() // its end callback forgets it
		return wire.StatusOK, nil
	}
	req, err := wire.DecodeWatchCreate(p)
	if err != nil {
		return invalid(err)
	}
	if len(req.Key) > 0 && req.Key[0] == kv.SystemPrefix {
		return wire.StatusInvalidArgument, wire.AppendError(nil, kv.ErrReservedKey.Error())
	}
	ws.mu.Lock()
	if ws.closed {
		ws.mu.Unlock()
		return wire.StatusError, wire.AppendError(nil, "watch: the connection is closing")
	}
	if len(ws.open) >= maxWatchesPerConn {
		ws.mu.Unlock()
		return wire.StatusInvalidArgument, wire.AppendError(nil, fmt.Sprintf("watch: this connection holds %d watches, the most allowed; cancel some or open another connection", maxWatchesPerConn))
	}
	ws.next++
	id := ws.next
	ws.mu.Unlock()
	if req.StartRevision == 0 && s.node.IsLeader() {
		// "Now" on the leader includes every write acknowledged before.
		if err := s.store.Barrier(ctx); err != nil && !errors.Is(err, kv.ErrNotLeader) {
			return s.reply(err, nil)
		}
	}
	o := feed.WatchOptions{Prefix: req.Kind == wire.WatchPrefix, Key: req.Key, Start: req.StartRevision,
		Progress: time.Duration(req.ProgressMs) * time.Millisecond, Allow: readMatch(ctx)} // authz.go: a watcher sees only what it may read
	o.OnEnd = func() { ws.forget(id) }
	ws.mu.Lock() // held across Watch: the end callback must find it
	w, start, err := s.hub.Watch(id, o, ws.push)
	if err != nil {
		ws.mu.Unlock()
		var ce *kv.CompactedError
		if errors.As(err, &ce) {
			return wire.StatusCompacted, wire.AppendError(nil, fmt.Sprintf(wire.MsgWatchCompacted, ce.Revision, ce.Oldest+1))
		}
		return wire.StatusError, wire.AppendError(nil, err.Error())
	}
	if ws.open == nil {
		ws.open = map[uint64]*feed.Watcher{}
	}
	ws.open[id] = w
	ws.cc.hold(1) // a connection with a watch is not idle
	closed := ws.closed
	ws.mu.Unlock()
	if closed {
		w.Close()
	}
	return wire.StatusOK, wire.AppendWatchCreated(nil, wire.WatchCreated{ID: id, StartRevision: start})
}

// forget drops an ended watch.
func (ws *connWatches) forget(id uint64) {
	ws.mu.Lock()
	if _, ok := ws.open[id]; ok {
		delete(ws.open, id)
		ws.cc.hold(-1)
	}
	ws.mu.Unlock()
}

// close ends every watch of the connection and returns once no push can
// reach its queue (called by the reader before it waits for the queue to
// drain).
func (ws *connWatches) close() {
	ws.goneOnce.Do(func() { close(ws.gone) })
	ws.mu.Lock()
	ws.closed = true
	open := make([]*feed.Watcher, 0, len(ws.open))
	for _, w := range ws.open {
		open = append(open, w)
	}
	ws.mu.Unlock()
	for _, w := range open {
		w.Close()
	}
	ws.pushMu.Lock()
	ws.pushMu.Unlock() //nolint:staticcheck // a barrier: every push has left
}

// hold counts an open watch as pending work, so that the idle timeout
// leaves a watching connection alone.
func (cc *clientConn) hold(n int) {
	cc.mu.Lock()
	cc.pending += n
	cc.last = time.Now()
	cc.mu.Unlock()
}

// pushed releases a pushed frame that was written (or dropped).
func (cc *clientConn) pushed(cl *call) {
	cc.mu.Lock()
	cc.charged -= cl.conn
	cc.last = time.Now()
	cc.wakeLocked()
	cc.mu.Unlock()
}

// cdcStats is STATS "cdc".
func (s *Server) cdcStats() map[string]any {
	n, err := s.cdc.Count()
	m := map[string]any{"watches": s.hub.Watches(), "consumers": n}
	if err != nil {
		m["consumers_error"] = err.Error()
	}
	return m
}

// evaluators joins the custom commands of the components (their ops must
// not collide: a collision is a programming error caught at start).
func evaluators(sets ...map[byte]kv.Evaluator) map[byte]kv.Evaluator {
	out := map[byte]kv.Evaluator{}
	for _, set := range sets {
		for op, ev := range set {
			if _, dup := out[op]; dup {
				panic(fmt.Sprintf("server: two components register the custom command op %d", op))
			}
			out[op] = ev
		}
	}
	return out
}
