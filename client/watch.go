package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kayadb/kayadb/internal/wire"
)

// Change data capture and watches (docs/design/cdc-and-watch.md). A
// revision (a CDC seq) is a commit timestamp: the same on every node and
// after any failover, shared by the changes of one transaction.

// EventType is the kind of a change.
type EventType uint8

// Change kinds.
const (
	EventPut    EventType = 1
	EventDelete EventType = 2
)

func (t EventType) String() string {
	switch t {
	case EventPut:
		return "put"
	case EventDelete:
		return "delete"
	}
	return fmt.Sprintf("EventType(%d)", uint8(t))
}

// Event is one change: a put of Value, or a delete, at Revision.
type Event struct {
	Revision uint64
	Type     EventType
	Key      []byte
	Value    []byte // EventPut only
}

// WatchResponse is what a watch channel carries: the events of one or more
// whole commits, in revision order; or a progress notification (no events:
// every change up to Revision has been delivered); or, last before the
// channel closes, the error that ended the watch.
type WatchResponse struct {
	Events []Event
	// Revision: the newest revision delivered so far (with events, the
	// last event's; with a progress notification, the server's position).
	Revision uint64
	// Err ends the watch: a *CompactedError when the start is no longer
	// retained, the context's error, or ErrClosed.
	Err error
}

// WatchOption configures Watch.
type WatchOption func(*watchOptions)

type watchOptions struct {
	key      bool
	start    uint64
	progress time.Duration
	buffer   int
}

// WithKey watches exactly the given key instead of a prefix.
func WithKey() WatchOption { return func(o *watchOptions) { o.key = true } }

// WithStartRevision delivers the changes from revision rev on (0: from
// now). To resume after the last revision seen, pass it + 1.
func WithStartRevision(rev uint64) WatchOption { return func(o *watchOptions) { o.start = rev } }

// WithProgressNotify asks the server for a progress notification after
// every interval without events (at least 100 ms).
func WithProgressNotify(interval time.Duration) WatchOption {
	return func(o *watchOptions) { o.progress = interval }
}

// WithWatchBuffer sets the capacity of the returned channel (default 64).
func WithWatchBuffer(n int) WatchOption { return func(o *watchOptions) { o.buffer = n } }

// Watch watches the keys with prefix (or, WithKey, one key) and returns a
// channel of their changes, in revision order, each exactly once: across
// a lost connection, a server that stops, a leader change or a watch the
// server cancelled because this client read too slowly, it reconnects (to
// any endpoint: every node serves watches) and resumes after the last
// revision it delivered. The channel closes after a response with Err set:
// the context ended, the client was closed, or the start is below the
// server's retained history (a *CompactedError naming the oldest start).
// Read the channel promptly: the server cancels a watch that falls more
// than 1,024 commits behind, and the resumption replays from history.
//
// Each Watch uses its own connection. It needs a server with WATCH_CREATE
// (opcode 71); an older one ends the watch with ErrUnsupported.
func (c *Client) Watch(ctx context.Context, prefix []byte, opts ...WatchOption) <-chan WatchResponse {
	o := watchOptions{buffer: 64}
	for _, f := range opts {
		if f != nil {
			f(&o)
		}
	}
	ch := make(chan WatchResponse, max(o.buffer, 0))
	if err := checkKey("watch key", prefix); err != nil {
		ch <- WatchResponse{Err: err}
		close(ch)
		return ch
	}
	kind := wire.WatchPrefix
	if o.key {
		kind = wire.WatchKey
	}
	req := wire.WatchCreate{Kind: kind, StartRevision: o.start, Key: append([]byte(nil), prefix...)}
	if o.progress > 0 {
		req.ProgressMs = uint32(min(max(o.progress.Milliseconds(), wire.MinWatchProgressMs), wire.MaxWatchProgressMs))
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(ch)
		err := c.watchLoop(ctx, req, ch)
		select {
		case ch <- WatchResponse{Err: err}:
		case <-ctx.Done():
		case <-c.closedCh:
		}
	}()
	return ch
}

// watchLoop runs watch sessions until a permanent error.
func (c *Client) watchLoop(ctx context.Context, req wire.WatchCreate, ch chan<- WatchResponse) error {
	// next is the first revision not yet delivered (0 until the first
	// session said where "now" is).
	next := req.StartRevision
	failures := 0
	for {
		if c.isClosed() {
			return ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		r := req
		r.StartRevision = next
		progressed, err := c.watchSession(ctx, c.route(), r, ch, &next)
		var perm *permanentWatchError
		if errors.As(err, &perm) {
			return perm.err
		}
		if c.isClosed() {
			return ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if progressed {
			failures = 0
		}
		failures++
		if err := c.sleep(ctx, backoff(min(failures, 10))); err != nil {
			return err
		}
	}
}

// permanentWatchError ends a watch: no resumption can help.
type permanentWatchError struct{ err error }

func (e *permanentWatchError) Error() string { return e.err.Error() }

// watchSession runs one WATCH_CREATE on its own connection to addr and
// delivers its frames until it breaks; next moves past every revision
// delivered. progressed says whether it got as far as a created watch.
func (c *Client) watchSession(ctx context.Context, addr string, req wire.WatchCreate, ch chan<- WatchResponse, next *uint64) (progressed bool, err error) {
	dctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	cn, err := dial(dctx, addr, c.opts.TLS, c.opts.RequestTimeout, 1)
	cancel()
	if err != nil {
		c.forgetLeader(addr)
		return false, err
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-ctx.Done():
		case <-c.closedCh:
		case <-stop:
		}
		cn.nc.Close()
	}()
	frame := c.frame(request{op: wire.OpWatchCreate, inner: wire.AppendWatchCreate(nil, req)})
	cn.nc.SetWriteDeadline(time.Now().Add(c.opts.RequestTimeout))
	if _, err := cn.bw.Write(frame); err != nil {
		return false, err
	}
	if err := cn.bw.Flush(); err != nil {
		return false, err
	}
	cn.nc.SetReadDeadline(time.Now().Add(c.opts.RequestTimeout))
	st, p, _, err := wire.ReadResponse(cn.br, nil)
	if err != nil {
		return false, err
	}
	if st != wire.StatusOK {
		err := unsupported(wire.OpWatchCreate, statusError(st, p))
		var nl *NotLeaderError
		switch {
		case st == wire.StatusCompacted:
			msg, _ := wire.DecodeError(p)
			if start, oldest, ok := wire.ParseCDCCompacted(msg); ok {
				return false, &permanentWatchError{&CompactedError{Revision: start, Oldest: oldest}}
			}
			return false, &permanentWatchError{err}
		case errors.As(err, &nl), errors.Is(err, ErrServer) && !errors.Is(err, ErrUnsupported):
			return false, err // another node may serve it
		}
		return false, &permanentWatchError{err}
	}
	created, err := wire.DecodeWatchCreated(p)
	if err != nil {
		return false, &permanentWatchError{fmt.Errorf("%w: WATCH_CREATE reply from %s: %w", ErrProtocol, addr, err)}
	}
	if *next == 0 {
		*next = created.StartRevision
	}
	// Pushed frames may be minutes apart: no read deadline (the server
	// keeps a watching connection open; TCP keepalives find a dead peer).
	cn.nc.SetReadDeadline(time.Time{})
	for {
		st, p, _, err := wire.ReadResponse(cn.br, nil)
		if err != nil {
			return true, err
		}
		if st != wire.StatusWatchEvent {
			return true, fmt.Errorf("%w: %s sent status %s on a watch connection", ErrProtocol, addr, st)
		}
		ev, err := wire.DecodeWatchEvent(p)
		if err != nil || ev.ID != created.ID {
			return true, fmt.Errorf("%w: a WATCH_EVENT from %s: %v (watch %d)", ErrProtocol, addr, err, ev.ID)
		}
		switch ev.Kind {
		case wire.WatchEvents:
			out := make([]Event, 0, len(ev.Events))
			for _, e := range ev.Events {
				if e.Seq < *next {
					continue // delivered before (never expected: the start is after it)
				}
				out = append(out, Event{Revision: e.Seq, Type: EventType(e.Op), Key: e.Key, Value: e.Value})
			}
			if len(out) == 0 {
				continue
			}
			if !deliver(ctx, c.closedCh, ch, WatchResponse{Events: out, Revision: out[len(out)-1].Revision}) {
				return true, ctx.Err()
			}
			// Frames hold whole commits: everything up to this revision is
			// delivered.
			*next = out[len(out)-1].Revision + 1
		case wire.WatchProgress:
			if ev.Revision+1 > *next {
				*next = ev.Revision + 1
			}
			if !deliver(ctx, c.closedCh, ch, WatchResponse{Revision: ev.Revision}) {
				return true, ctx.Err()
			}
		case wire.WatchCanceled:
			if ev.Reason == wire.CancelCompacted {
				return true, &permanentWatchError{&CompactedError{Revision: *next, Oldest: ev.Revision}}
			}
			return true, fmt.Errorf("%w: %s", ErrServer, ev.Message) // resume
		}
	}
}

func deliver(ctx context.Context, closed <-chan struct{}, ch chan<- WatchResponse, r WatchResponse) bool {
	select {
	case ch <- r:
		return true
	case <-ctx.Done():
		return false
	case <-closed:
		return false
	}
}

// ChangeEvent is one event of a CDC poll: Seq is the commit revision.
type ChangeEvent struct {
	Seq   uint64
	Type  EventType
	Key   []byte
	Value []byte
}

// CDCPoll returns the changes after fromSeq (exclusive; 0: from the oldest
// retained), at most limit (the server caps a reply at 10,000 events and
// about 4 MiB, and never splits a commit: a transaction's changes come
// together, with one seq), on the leader. A position below the retained
// history is a *CompactedError naming the oldest available position.
func (c *Client) CDCPoll(ctx context.Context, consumer string, fromSeq uint64, limit uint32) ([]ChangeEvent, error) {
	a, err := c.do(ctx, request{op: wire.OpCDCPoll, inner: wire.AppendCDCPoll(nil, wire.CDCPoll{Consumer: consumer, FromSeq: fromSeq, Limit: limit}), leaderOnly: true})
	if err != nil {
		return nil, err
	}
	if err := cdcError(a); err != nil {
		return nil, unsupported(wire.OpCDCPoll, err)
	}
	evs, err := wire.DecodeCDCPollReply(a.payload)
	if err != nil {
		return nil, fmt.Errorf("%w: CDC_POLL reply from %s: %w", ErrProtocol, a.addr, err)
	}
	out := make([]ChangeEvent, len(evs))
	for i, e := range evs {
		out[i] = ChangeEvent{Seq: e.Seq, Type: EventType(e.Op), Key: e.Key, Value: e.Value}
	}
	return out, nil
}

// CDCCheckpoint stores consumer's position (replicated through raft): seq,
// the last seq it processed. The consumer then holds the history after it
// (within the server's --cdc-retention).
func (c *Client) CDCCheckpoint(ctx context.Context, consumer string, seq uint64) error {
	a, err := c.do(ctx, request{op: wire.OpCDCCheckpoint, inner: wire.AppendCDCCheckpointAt(nil, consumer, seq), leaderOnly: true})
	if err != nil {
		return err
	}
	return unsupported(wire.OpCDCCheckpoint, cdcError(a))
}

// CDCCheckpointLast stores the original's checkpoint: the last seq the
// leader sent this consumer in a poll (an error if it sent none since it
// was elected).
func (c *Client) CDCCheckpointLast(ctx context.Context, consumer string) error {
	a, err := c.do(ctx, request{op: wire.OpCDCCheckpoint, inner: wire.AppendCDCCheckpoint(nil, consumer), leaderOnly: true})
	if err != nil {
		return err
	}
	return unsupported(wire.OpCDCCheckpoint, cdcError(a))
}

// CDCPosition returns consumer's stored position (ErrNotFound when it has
// none).
func (c *Client) CDCPosition(ctx context.Context, consumer string) (uint64, error) {
	a, err := c.do(ctx, request{op: wire.OpCDCConsumer, inner: wire.AppendCDCConsumer(nil, wire.CDCConsumerRequest{Action: wire.CDCConsumerGet, Consumer: consumer}), leaderOnly: true})
	if err != nil {
		return 0, err
	}
	if err := cdcError(a); err != nil {
		return 0, unsupported(wire.OpCDCConsumer, err)
	}
	seq, err := wire.DecodeSeq(a.payload)
	if err != nil {
		return 0, fmt.Errorf("%w: CDC_CONSUMER reply from %s: %w", ErrProtocol, a.addr, err)
	}
	return seq, nil
}

// CDCDelete deletes consumer: its position no longer holds history.
func (c *Client) CDCDelete(ctx context.Context, consumer string) error {
	a, err := c.do(ctx, request{op: wire.OpCDCConsumer, inner: wire.AppendCDCConsumer(nil, wire.CDCConsumerRequest{Action: wire.CDCConsumerDelete, Consumer: consumer}), leaderOnly: true})
	if err != nil {
		return err
	}
	return unsupported(wire.OpCDCConsumer, cdcError(a))
}

// cdcError is statusError with the feed's COMPACTED texts.
func cdcError(a answer) error {
	if a.st == wire.StatusCompacted {
		if msg, err := wire.DecodeError(a.payload); err == nil {
			if pos, oldest, ok := wire.ParseCDCCompacted(msg); ok {
				return &CompactedError{Revision: pos, Oldest: oldest}
			}
		}
	}
	return statusError(a.st, a.payload)
}
