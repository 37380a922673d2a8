package client

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kayadb/kayadb/internal/wire"
)

// Defaults of Options.
const (
	DefaultDialTimeout      = 2 * time.Second
	DefaultRequestTimeout   = 5 * time.Second
	DefaultMaxRedirects     = 3
	DefaultMaxRetries       = 20
	DefaultConnsPerEndpoint = 2
	DefaultMaxPipeline      = 128
	DefaultMaxTxnAttempts   = 10
)

// Bounds that are not options.
const (
	// maxEndpoints bounds the endpoints a client learns (configured ones,
	// leader hints, and those named in Health/Status), so that a
	// misbehaving server cannot make it open pools without limit. Clusters
	// have a handful of members.
	maxEndpoints = 64
	// backoffBase and backoffCap shape the jittered exponential back-off
	// between retries.
	backoffBase = 50 * time.Millisecond
	backoffCap  = time.Second
	// leaderBackoff is the pause after a NOT_LEADER without a hint (an
	// election is probably under way), jittered by ±25%.
	leaderBackoff = 80 * time.Millisecond
)

// Options configures a Client. The zero value of every field means its
// default.
type Options struct {
	// DialTimeout bounds connecting to a server, including the TLS and
	// HELLO handshakes. Default 2s.
	DialTimeout time.Duration
	// RequestTimeout bounds every call, retries included; a context with
	// a sooner deadline wins. It also bounds how long a connection may wait
	// for a reply before it is considered stuck and closed. Default 5s.
	// The client keeps it without a timer per call: a call waiting for its
	// reply notices the deadline within a twentieth of RequestTimeout
	// (between 1 ms and 100 ms); a context's own deadline is kept exactly.
	RequestTimeout time.Duration
	// MaxRedirects is how many NOT_LEADER hints a call follows in a row
	// before it backs off (counting a retry) and starts over. Default 3;
	// negative: none.
	MaxRedirects int
	// MaxRetries is how many times a call is retried after a connection
	// failure that is safe to retry (see Client), with jittered
	// exponential back-off from 50 ms to 1 s. Default 20 (the deadline
	// usually ends retrying first); negative: none. Waiting for a leader
	// (NOT_LEADER without a usable hint: an election is under way) is not
	// counted: it goes on until the deadline.
	MaxRetries int
	// FailFast makes a call fail at once, with ErrUnavailable, when every
	// endpoint it may use refused the connection (ECONNREFUSED: nothing
	// listens there), instead of retrying until the deadline. Interactive
	// tools want this (kayactl sets it); a service that should ride out
	// its servers' restarts does not. Default false.
	FailFast bool
	// ConnsPerEndpoint is the size of the connection pool of each server.
	// Default 2. From 4 up, one connection in eight (at least one) is kept
	// for the requests a server answers without waiting for raft (an STM's
	// reads of the leader's applied state): a server answers a
	// connection's requests in order, so such a read never waits there
	// behind another caller's write. It is dialed only when used.
	ConnsPerEndpoint int
	// MaxPipeline is how many requests may be in flight on one connection.
	// Default 128.
	MaxPipeline int
	// TLS, when not nil, makes the client dial with TLS. When ServerName
	// is empty the host part of the endpoint is used.
	TLS *tls.Config
	// ClientToken, when not empty, is sent in the CLIENT prefix of every
	// data request (PUT, GET, DELETE, SCAN, STATS, the transactions'
	// requests, conditional writes and reads at a revision).
	ClientToken string
	// OperatorToken, when not empty, is sent in the ADMIN prefix of every
	// admin request (ADD_MEMBER, REMOVE_MEMBER, PROMOTE_LEARNER,
	// TRANSFER_LEADER, and the BACKUP_* requests of Backup).
	OperatorToken string
	// MaxTxnAttempts is how many times RunTxn runs a transaction that
	// conflicts or is lost before it gives up (the first run included).
	// Default 10; negative: 1 (no retries). The context's deadline may end
	// retrying first.
	MaxTxnAttempts int
}

// withDefaults returns o with defaults filled in, or an error naming the
// first invalid field.
func (o Options) withDefaults() (Options, error) {
	dur := func(name string, v *time.Duration, def time.Duration) error {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			return fmt.Errorf("%w: Options.%s is negative (%v)", ErrInvalidArgument, name, *v)
		}
		return nil
	}
	count := func(name string, v *int, def int, negativeMeansNone bool) error {
		switch {
		case *v == 0:
			*v = def
		case *v < 0 && negativeMeansNone:
			*v = 0
		case *v < 0:
			return fmt.Errorf("%w: Options.%s is negative (%d)", ErrInvalidArgument, name, *v)
		}
		return nil
	}
	if err := errors.Join(
		dur("DialTimeout", &o.DialTimeout, DefaultDialTimeout),
		dur("RequestTimeout", &o.RequestTimeout, DefaultRequestTimeout),
		count("MaxRedirects", &o.MaxRedirects, DefaultMaxRedirects, true),
		count("MaxRetries", &o.MaxRetries, DefaultMaxRetries, true),
		count("ConnsPerEndpoint", &o.ConnsPerEndpoint, DefaultConnsPerEndpoint, false),
		count("MaxPipeline", &o.MaxPipeline, DefaultMaxPipeline, false),
		count("MaxTxnAttempts", &o.MaxTxnAttempts, DefaultMaxTxnAttempts, true),
	); err != nil {
		return o, err
	}
	o.MaxTxnAttempts = max(o.MaxTxnAttempts, 1)
	if len(o.ClientToken) > wire.MaxTokenSize || len(o.OperatorToken) > wire.MaxTokenSize {
		return o, fmt.Errorf("%w: tokens are limited to %d bytes", ErrInvalidArgument, wire.MaxTokenSize)
	}
	if o.TLS != nil {
		o.TLS = o.TLS.Clone()
	}
	return o, nil
}

// KV is one key-value pair of a Scan.
type KV struct {
	Key   []byte
	Value []byte
	// ModRevision is the revision of the write that gave Key this value,
	// when the scan asked for revisions (WithReadAt, WithModRevisions,
	// ScanPage); 0 otherwise.
	ModRevision uint64
}

// Status is a server's STATS document.
type Status struct {
	// Role is "leader", "follower" or "candidate".
	Role string
	// Term is the current raft term.
	Term uint64
	// CommitIndex is the raft commit index.
	CommitIndex uint64
	// AppliedIndex is the index applied to the state machine.
	AppliedIndex uint64
	// PeerCount is the number of other members.
	PeerCount uint64
	// RaftGroups is the number of raft groups the server hosts.
	RaftGroups uint64
	// Engine holds the storage engine's numeric counters by their JSON
	// names ("put_count", "wal_fsync_max_us", …), including ones newer
	// than this client.
	Engine map[string]uint64
	// NodeID is the id of the node that answered. Servers that predate
	// membership changes do not report it: 0 (never a valid node id).
	NodeID uint64
	// LeaderID is the id of the leader as the node knows it; 0 when no
	// leader is known (or from an older server).
	LeaderID uint64
	// SnapshotIndex is the raft index of the node's latest snapshot; 0
	// when it has taken or installed none (or from an older server).
	SnapshotIndex uint64
	// Members is the cluster's membership as the node knows it, sorted by
	// ID; nil from an older server.
	Members []Member
	// Raw is the document as the server sent it. Members of the document
	// that the fields above do not cover (such as "snapshots_taken"), or
	// that have an unexpected type (the field is then left at its zero
	// value), are only here.
	Raw json.RawMessage
}

// Member is one node of the cluster, as a server's STATS reports it.
type Member struct {
	// ID is the node's id.
	ID uint64
	// RaftAddr is its peer (raft) address, "host:port".
	RaftAddr string
	// ClientAddr is its client address, "host:port".
	ClientAddr string
	// Role is "voter", "learner" (a member that replicates the log but
	// does not vote; see PromoteLearner) or "unknown" (in the node's
	// roster, but not in its raft configuration yet or any more).
	Role string
}

// Client is a connection to a KayaDB cluster. It is safe for concurrent
// use; create one per process and Close it when done.
//
// Requests that must reach the leader (Put, Get, Delete, Scan, AddMember,
// RemoveMember, PromoteLearner, TransferLeader) go to the last known
// leader, else round-robin over the known endpoints. A NOT_LEADER reply
// with a hint is followed (the hint, a client address, joins the known
// endpoints) up to Options.MaxRedirects times; one without a hint pauses
// about 80 ms and tries again, until the deadline (an election takes one
// to a few election timeouts; Options.MaxRetries does not cut it short).
//
// Retries never pass the deadline. Reads (Get, Scan, Health, Status) are
// retried after any connection failure or stuck connection. Writes (Put,
// Delete, AddMember, RemoveMember, PromoteLearner, TransferLeader) are
// retried only when the request provably did not reach a server (the
// connection could not be made, or the request was still queued when it
// broke) or the server answered NOT_LEADER; any other failure after
// sending is ErrAmbiguous.
type Client struct {
	opts     Options
	closedCh chan struct{} // closed by Close
	wg       sync.WaitGroup
	clock    *deadlineClock // wakes callers waiting for replies to check their deadlines (deadline.go)

	mu struct {
		sync.Mutex
		closed   bool
		pools    map[string]*pool
		rotation []string // endpoints requests are routed over: configured ones, then leader hints
		rr       int      // round-robin position in rotation
		leader   string   // last known leader's client address, "" if unknown
	}
}

// pool holds the connections to one server.
type pool struct {
	addr string
	mu   sync.Mutex
	// slots has ConnsPerEndpoint entries; each is empty, dialing, or holds
	// a connection (maybe broken, then replaced on next use).
	slots []slot
}

type slot struct {
	c       *conn
	dialing chan struct{} // closed when the dial into this slot ends
}

// New returns a client for the cluster reachable at endpoints, client
// addresses "host:port". It does no I/O: connections are made on first
// use. opts may be nil for the defaults.
func New(endpoints []string, opts *Options) (*Client, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if len(endpoints) == 0 {
		return nil, fmt.Errorf("%w: no endpoints", ErrInvalidArgument)
	}
	if len(endpoints) > maxEndpoints {
		return nil, fmt.Errorf("%w: %d endpoints, at most %d", ErrInvalidArgument, len(endpoints), maxEndpoints)
	}
	c := &Client{opts: o, closedCh: make(chan struct{}), clock: newDeadlineClock(clockPeriod(o.RequestTimeout))}
	c.mu.pools = make(map[string]*pool)
	for _, ep := range endpoints {
		if err := checkAddr(ep); err != nil {
			return nil, err
		}
		if _, dup := c.mu.pools[ep]; !dup {
			c.mu.pools[ep] = c.newPool(ep)
			c.mu.rotation = append(c.mu.rotation, ep)
		}
	}
	return c, nil
}

// checkAddr validates a "host:port" endpoint.
func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: endpoint %q: %w", ErrInvalidArgument, addr, err)
	}
	if host == "" {
		return fmt.Errorf("%w: endpoint %q has no host", ErrInvalidArgument, addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%w: endpoint %q: bad port %q", ErrInvalidArgument, addr, port)
	}
	return nil
}

func (c *Client) newPool(addr string) *pool {
	return &pool{addr: addr, slots: make([]slot, c.opts.ConnsPerEndpoint)}
}

// Leader returns the client address of the last known leader, or "" when
// none is known.
func (c *Client) Leader() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.leader
}

// Close closes every connection and waits for the client's goroutines to
// end. Calls in flight fail: reads with ErrClosed, writes already sent with
// ErrAmbiguous. Close is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		c.wg.Wait()
		return nil
	}
	c.mu.closed = true
	close(c.closedCh)
	c.clock.close()
	var conns []*conn
	for _, p := range c.mu.pools {
		p.mu.Lock()
		for _, s := range p.slots {
			if s.c != nil {
				conns = append(conns, s.c)
			}
		}
		p.mu.Unlock()
	}
	c.mu.Unlock()
	for _, cn := range conns {
		cn.fail(ErrClosed)
	}
	c.wg.Wait()
	return nil
}

func (c *Client) isClosed() bool {
	select {
	case <-c.closedCh:
		return true
	default:
		return false
	}
}

// route picks the endpoint for a leader-only request.
func (c *Client) route() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.leader != "" {
		return c.mu.leader
	}
	addr := c.mu.rotation[c.mu.rr%len(c.mu.rotation)]
	c.mu.rr++
	return addr
}

// learn makes addr a known endpoint (in the rotation when rotate is set)
// and, when leader is set, the known leader.
func (c *Client) learn(addr string, rotate, leader bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed {
		return ErrClosed
	}
	if _, ok := c.mu.pools[addr]; !ok {
		if len(c.mu.pools) >= maxEndpoints {
			return fmt.Errorf("%w: already %d endpoints known, not adding %s", ErrUnavailable, maxEndpoints, addr)
		}
		c.mu.pools[addr] = c.newPool(addr)
	}
	if rotate && !slices.Contains(c.mu.rotation, addr) {
		c.mu.rotation = append(c.mu.rotation, addr)
	}
	if leader {
		c.mu.leader = addr
	}
	return nil
}

// forgetLeader clears the known leader if it is addr.
func (c *Client) forgetLeader(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.leader == addr {
		c.mu.leader = ""
	}
}

func (c *Client) poolFor(addr string) (*pool, error) {
	c.mu.Lock()
	p := c.mu.pools[addr]
	c.mu.Unlock()
	if p != nil {
		return p, nil
	}
	if err := c.learn(addr, false, false); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.pools[addr], nil
}

// getConn returns a live connection to p's server with room in its
// pipeline if possible, dialing into an empty slot if needed. Any error
// means nothing was sent.
func (c *Client) getConn(ctx context.Context, p *pool) (*conn, error) {
	return c.getLaneConn(ctx, p, false)
}

// readLanes is how many of n pool slots are kept for immediate requests:
// none below 4 (a small pool is not split), else one in eight, at least
// one.
func readLanes(n int) int {
	if n < 4 {
		return 0
	}
	return max(1, n/8)
}

// getLaneConn is getConn on the slots of one lane: the read lane (the
// first readLanes slots) for immediate requests, the others for the rest.
// A pool too small to split has one lane.
func (c *Client) getLaneConn(ctx context.Context, p *pool, immediate bool) (*conn, error) {
	lo, hi := 0, len(p.slots)
	if k := readLanes(len(p.slots)); k > 0 {
		if immediate {
			hi = k
		} else {
			lo = k
		}
	}
	for {
		p.mu.Lock()
		var best *conn
		free := -1
		var wait chan struct{}
		for i := lo; i < hi; i++ {
			s := &p.slots[i]
			if s.c != nil && s.c.broken() {
				s.c = nil
			}
			switch {
			case s.c != nil:
				if best == nil || s.c.load() < best.load() {
					best = s.c
				}
			case s.dialing != nil:
				wait = s.dialing
			case free < 0:
				free = i
			}
		}
		// An idle connection is best; a busy one with room is next unless
		// a slot is free to spread the load; when all are full, queue on
		// the least loaded.
		if best != nil && (best.load() == 0 || free < 0) {
			if best.load() == 0 && !best.idleCheck() {
				p.mu.Unlock()
				continue // it broke while idle: the loop drops it
			}
			p.mu.Unlock()
			return best, nil
		}
		if free >= 0 {
			done := make(chan struct{})
			p.slots[free].dialing = done
			p.mu.Unlock()
			cn, err := c.dialInto(ctx, p, free)
			close(done)
			if err != nil && best != nil && !best.broken() && !errors.Is(err, ErrClosed) {
				// The server refused one more connection (a connection cap,
				// say) but one already works: use it.
				return best, nil
			}
			return cn, err
		}
		p.mu.Unlock()
		select { // every slot is dialing: wait for one
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.closedCh:
			return nil, ErrClosed
		}
	}
}

// dialInto dials p's server into slot i and starts the connection's
// goroutines, unless the client was closed meanwhile.
func (c *Client) dialInto(ctx context.Context, p *pool, i int) (*conn, error) {
	dctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	defer cancel()
	cn, err := dial(dctx, p.addr, c.opts.TLS, c.opts.RequestTimeout, c.opts.MaxPipeline)
	// Installing under c.mu makes it atomic with Close: a connection is
	// either seen (and closed) by Close, or never started.
	c.mu.Lock()
	closed := c.mu.closed
	p.mu.Lock()
	p.slots[i].dialing = nil
	if err == nil && !closed {
		p.slots[i].c = cn
		cn.start(&c.wg)
	}
	p.mu.Unlock()
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if closed {
		cn.nc.Close()
		return nil, ErrClosed
	}
	return cn, nil
}

// attempt is the outcome of sending one request to one endpoint.
type attempt struct {
	result
	// permanent marks a failure that retrying cannot fix (a server that
	// refuses HELLO or speaks another version, too many endpoints).
	permanent bool
}

// roundTrip sends frame to addr and waits for the reply or ctx.
func (c *Client) roundTrip(ctx context.Context, addr string, frame []byte) attempt {
	p, err := c.poolFor(addr)
	if err != nil {
		return attempt{result: result{err: err}, permanent: true}
	}
	cn, err := c.getConn(ctx, p)
	if err != nil {
		var de *dialError
		perm := !errors.As(err, &de) && ctx.Err() == nil && !errors.Is(err, ErrClosed)
		return attempt{result: result{err: err}, permanent: perm}
	}
	cl, err := cn.submit(ctx, frame)
	if err != nil {
		return attempt{result: result{err: err}} // not queued: not sent
	}
	return attempt{result: cl.wait(ctx)}
}

// request describes one logical call.
type request struct {
	op    wire.Opcode
	inner []byte // payload before any auth prefix
	// write marks an at-most-once request: never re-sent once it may have
	// reached a server.
	write bool
	// fixed is the endpoint to ask; "" routes the request.
	fixed string
	// leaderOnly requests follow NOT_LEADER and teach the client who leads.
	leaderOnly bool
	// immediate marks a request the server answers at once, without
	// waiting for raft or for the connection's earlier writes (a GET_AT at
	// wire.ReadTSLocal): it goes on a connection of the read lane (see
	// Options.ConnsPerEndpoint).
	immediate bool
}

// answer is a reply and the endpoint that gave it.
type answer struct {
	st      wire.Status
	payload []byte
	addr    string
}

// frame encodes req as a request frame, with the auth prefix the options
// call for.
func (c *Client) frame(req request) []byte {
	f := make([]byte, 5, 5+16+len(c.opts.OperatorToken)+len(c.opts.ClientToken)+len(req.inner))
	f[4] = byte(req.op)
	switch {
	case wire.IsAdmin(req.op) && c.opts.OperatorToken != "":
		f = wire.AppendAdmin(f, c.opts.OperatorToken, req.op, req.inner)
	case wire.IsData(req.op) && c.opts.ClientToken != "":
		f = wire.AppendClient(f, c.opts.ClientToken, req.inner)
	default:
		f = append(f, req.inner...)
	}
	binary.LittleEndian.PutUint32(f, uint32(len(f)-4))
	return f
}

// once sends req to addr once: no retries, no redirects (a transaction's
// requests, which must reach the node the transaction began on). When err
// is not nil, sent reports whether the request may have reached the
// server.
func (c *Client) once(ctx context.Context, addr string, req request) (a answer, sent bool, err error) {
	if c.isClosed() {
		return answer{}, false, ErrClosed
	}
	ctx, cancel := c.withRequestTimeout(ctx)
	defer cancel()
	frame := c.frame(req)
	if len(frame)-4 > wire.MaxFrameSize {
		return answer{}, false, fmt.Errorf("%w: request of %d bytes exceeds the frame limit", ErrInvalidArgument, len(frame)-4)
	}
	at := c.roundTrip(ctx, addr, frame)
	if at.err != nil {
		if c.isClosed() {
			return answer{}, at.sent, ErrClosed
		}
		return answer{}, at.sent, c.cause(ctx, at.err)
	}
	return answer{st: at.st, payload: at.payload, addr: addr}, true, nil
}

// withRequestTimeout bounds ctx by Options.RequestTimeout. A ctx that ends
// within it already is used as it is. Otherwise the call runs under a
// callCtx (deadline.go), which carries the deadline without starting a
// runtime timer per call: context.WithTimeout was a tenth of the client's
// CPU in a loop of small calls.
func (c *Client) withRequestTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	now := time.Now()
	dl, ok := ctx.Deadline()
	if ok && dl.Sub(now) <= c.opts.RequestTimeout {
		return ctx, func() {}
	}
	cc := &callCtx{Context: ctx, deadline: now.Add(c.opts.RequestTimeout), clock: c.clock}
	return cc, cc.stop
}

// do runs req with routing, redirects and retries within the deadline.
func (c *Client) do(ctx context.Context, req request) (answer, error) {
	if c.isClosed() {
		return answer{}, ErrClosed
	}
	ctx, cancel := c.withRequestTimeout(ctx)
	defer cancel()
	frame := c.frame(req)
	if len(frame)-4 > wire.MaxFrameSize {
		return answer{}, fmt.Errorf("%w: request of %d bytes exceeds the frame limit", ErrInvalidArgument, len(frame)-4)
	}
	var (
		next               string // redirect target
		redirects, retries int
		lastErr            error
		// failed holds the endpoints that could not be reached during this
		// call: a NOT_LEADER hint naming one of them is a stale leader (it
		// crashed, the others have not elected a new one yet).
		failed = map[string]bool{}
		// refused holds the endpoints that refused the connection during
		// this call (Options.FailFast).
		refused = map[string]bool{}
	)
	for {
		addr := req.fixed
		if addr == "" {
			addr = next
			if addr == "" {
				addr = c.route()
			}
		}
		next = ""
		a := c.roundTrip(ctx, addr, frame)
		if a.err != nil {
			switch {
			case req.write && a.sent:
				return answer{}, fmt.Errorf("%w: %s sent to %s: %w", ErrAmbiguous, req.op, addr, c.cause(ctx, a.err))
			case ctx.Err() != nil:
				return answer{}, c.cause(ctx, firstErr(lastErr, a.err))
			case c.isClosed():
				return answer{}, ErrClosed
			case a.permanent:
				return answer{}, a.err
			}
			c.forgetLeader(addr)
			failed[addr] = true
			lastErr = a.err
			if c.opts.FailFast && errors.Is(a.err, syscall.ECONNREFUSED) {
				refused[addr] = true
				if eps, all := c.allRefused(req.fixed, refused); all {
					return answer{}, fmt.Errorf("%w: nothing listening on %s (connection refused): %w",
						ErrUnavailable, strings.Join(eps, ", "), a.err)
				}
			}
			retries++
			if retries > c.opts.MaxRetries {
				return answer{}, fmt.Errorf("%w: %s failed after %d attempts: %w", ErrUnavailable, req.op, retries, lastErr)
			}
			if err := c.sleep(ctx, backoff(retries)); err != nil {
				return answer{}, sleepError(err, lastErr)
			}
			continue
		}
		if a.st == wire.StatusNotLeader && req.leaderOnly {
			hint, err := wire.DecodeNotLeader(a.payload)
			if err != nil || checkAddr(hint) != nil || failed[hint] {
				hint = "" // unusable or stale hint: treat as "no leader known"
			}
			if hint != "" && redirects >= c.opts.MaxRedirects {
				// Followed enough hints for now (the cluster may be in the
				// middle of an election): back off like "no leader known"
				// and start over, within the retry budget and deadline.
				// Unlike a plain "no leader known", a round of hints that
				// lead nowhere counts as a retry: nodes that keep naming
				// each other are not converging on their own.
				c.forgetLeader(addr)
				lastErr = &NotLeaderError{Leader: hint}
				retries++
				if retries > c.opts.MaxRetries {
					return answer{}, fmt.Errorf("%w: %s: redirected in a loop %d times: %w", ErrUnavailable, req.op, retries, lastErr)
				}
				d := leaderBackoff*3/4 + rand.N(leaderBackoff/2)
				if err := c.sleep(ctx, d); err != nil {
					return answer{}, sleepError(err, lastErr)
				}
				redirects = 0
				continue
			}
			if hint != "" {
				redirects++
				if err := c.learn(hint, true, true); err != nil {
					return answer{}, err
				}
				next = hint
				continue
			}
			// No leader known: an election is under way, or this node is
			// cut off from the majority. Ask again until the deadline (not
			// counted against MaxRetries: an election outlasts 20 short
			// pauses).
			c.forgetLeader(addr)
			lastErr = &NotLeaderError{}
			d := leaderBackoff*3/4 + rand.N(leaderBackoff/2)
			if err := c.sleep(ctx, d); err != nil {
				return answer{}, sleepError(err, lastErr)
			}
			continue
		}
		if req.leaderOnly && (a.st == wire.StatusOK || a.st == wire.StatusNotFound) {
			c.learn(addr, true, true) // only the leader serves these
		}
		return answer{st: a.st, payload: a.payload, addr: addr}, nil
	}
}

// allRefused reports whether every endpoint a call may use is in refused,
// and lists them: the fixed endpoint, else the rotation.
func (c *Client) allRefused(fixed string, refused map[string]bool) ([]string, bool) {
	if fixed != "" {
		return []string{fixed}, refused[fixed]
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ep := range c.mu.rotation {
		if !refused[ep] {
			return nil, false
		}
	}
	return slices.Clone(c.mu.rotation), true
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// cause explains a failure in terms of ctx: ErrTimeout when the deadline
// passed, context.Canceled when the caller cancelled, else err itself.
func (c *Client) cause(ctx context.Context, err error) error {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return timeoutError(err)
	case errors.Is(ctx.Err(), context.Canceled):
		return fmt.Errorf("kayadb: %w", context.Canceled)
	case c.isClosed():
		return ErrClosed
	}
	return err
}

// sleepError is the error of a call whose back-off was cut short.
func sleepError(err, last error) error {
	switch {
	case errors.Is(err, ErrClosed):
		return ErrClosed
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("kayadb: %w", context.Canceled)
	}
	return timeoutError(last)
}

// backoff is the pause before retry n (1-based): exponential from
// backoffBase, capped at backoffCap, with equal jitter.
func backoff(n int) time.Duration {
	d := backoffCap
	if n < 16 {
		d = min(backoffBase<<(n-1), backoffCap)
	}
	return d/2 + rand.N(d/2+1)
}

// sleep pauses for d. It returns early with an error when the pause would
// pass ctx's deadline (context.DeadlineExceeded, at once), ctx ends, or the
// client closes (ErrClosed).
func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return context.DeadlineExceeded // no time left for another attempt
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.closedCh:
		return ErrClosed
	}
}

// checkKey applies the protocol's key rules client-side.
func checkKey(what string, key []byte) error {
	if len(key) > wire.MaxKeySize {
		return fmt.Errorf("%w: %s is %d bytes, the limit is %d", ErrInvalidArgument, what, len(key), wire.MaxKeySize)
	}
	if len(key) > 0 && key[0] == 0x00 {
		return fmt.Errorf("%w: %s begins with 0x00, which is reserved for the system", ErrInvalidArgument, what)
	}
	return nil
}

// Put stores value under key. It returns when the write is committed by a
// majority and applied. On ErrAmbiguous the write may or may not have been
// applied.
func (c *Client) Put(ctx context.Context, key, value []byte) error {
	if err := checkKey("key", key); err != nil {
		return err
	}
	if len(value) > wire.MaxValueSize {
		return fmt.Errorf("%w: value is %d bytes, the limit is %d", ErrInvalidArgument, len(value), wire.MaxValueSize)
	}
	a, err := c.do(ctx, request{op: wire.OpPut, inner: wire.AppendPut(make([]byte, 0, 8+len(key)+len(value)), key, value), write: true, leaderOnly: true})
	if err != nil {
		return err
	}
	return writeOutcome(statusError(a.st, a.payload))
}

// writeOutcome marks a write's ERROR reply (status 9) as ErrAmbiguous as
// well: the server could not confirm the write (leadership lost after
// proposing, a timeout waiting for commit, a disk error), so it may or may
// not be applied. The *ServerError stays in the chain. A refused
// credential and a disk-full node's refusal (ErrDiskFull) are not
// ambiguous: the write was never proposed.
func writeOutcome(err error) error {
	if err == nil {
		return nil // no ServerError to look for (errors.As would allocate one)
	}
	var se *ServerError
	if errors.As(err, &se) && se.Status == uint16(wire.StatusError) &&
		se.Message != wire.MsgClientCredential && se.Message != wire.MsgOperatorCredential &&
		!errors.Is(se, ErrDiskFull) {
		return fmt.Errorf("%w: %w", ErrAmbiguous, err)
	}
	return err
}

// Get returns the value of key, linearizably (served by the leader), or an
// error matching ErrNotFound. With WithReadAt it returns the value key had
// at that revision (GET_AT).
func (c *Client) Get(ctx context.Context, key []byte, opts ...ReadOption) ([]byte, error) {
	if len(opts) > 0 {
		v, _, err := c.GetWithRevision(ctx, key, opts...)
		return v, err
	}
	if err := checkKey("key", key); err != nil {
		return nil, err
	}
	a, err := c.do(ctx, request{op: wire.OpGet, inner: wire.AppendKey(nil, key), leaderOnly: true})
	if err != nil {
		return nil, err
	}
	if err := statusError(a.st, a.payload); err != nil {
		return nil, err
	}
	v, err := wire.DecodeValue(a.payload)
	if err != nil {
		return nil, fmt.Errorf("%w: GET reply from %s: %w", ErrProtocol, a.addr, err)
	}
	return v, nil
}

// Delete removes key; deleting an absent key is not an error. On
// ErrAmbiguous the delete may or may not have been applied.
func (c *Client) Delete(ctx context.Context, key []byte) error {
	if err := checkKey("key", key); err != nil {
		return err
	}
	a, err := c.do(ctx, request{op: wire.OpDelete, inner: wire.AppendKey(nil, key), write: true, leaderOnly: true})
	if err != nil {
		return err
	}
	return writeOutcome(statusError(a.st, a.payload))
}

// Scan returns the pairs whose keys begin with prefix, in ascending key
// order, linearizably. The server caps a result at 100,000 items or 64 MiB
// (ScanPage reads past the cap). With WithReadAt it reads at that
// revision, and with WithReadAt or WithModRevisions every KV carries its
// ModRevision (SCAN_AT).
func (c *Client) Scan(ctx context.Context, prefix []byte, opts ...ReadOption) ([]KV, error) {
	if len(opts) > 0 {
		page, err := c.ScanPage(ctx, prefix, nil, 0, opts...)
		if err != nil {
			return nil, err
		}
		return page.KVs, nil
	}
	if err := checkKey("prefix", prefix); err != nil {
		return nil, err
	}
	a, err := c.do(ctx, request{op: wire.OpScan, inner: wire.AppendKey(nil, prefix), leaderOnly: true})
	if err != nil {
		return nil, err
	}
	if err := statusError(a.st, a.payload); err != nil {
		return nil, err
	}
	items, err := wire.DecodeScanResult(a.payload)
	if err != nil {
		return nil, fmt.Errorf("%w: SCAN reply from %s: %w", ErrProtocol, a.addr, err)
	}
	kvs := make([]KV, len(items))
	for i, it := range items {
		kvs[i] = KV{Key: it.Key, Value: it.Value}
	}
	return kvs, nil
}

// Health asks endpoint ("host:port"; "" = the known leader, else any
// known endpoint) for its role and returns the server's answer as is:
// "leader" or "follower".
func (c *Client) Health(ctx context.Context, endpoint string) (string, error) {
	if endpoint != "" {
		if err := checkAddr(endpoint); err != nil {
			return "", err
		}
	}
	a, err := c.do(ctx, request{op: wire.OpHealth, fixed: endpoint})
	if err != nil {
		return "", err
	}
	if err := statusError(a.st, a.payload); err != nil {
		return "", err
	}
	role, err := wire.DecodeHealth(a.payload)
	if err != nil {
		return "", fmt.Errorf("%w: HEALTH reply from %s: %w", ErrProtocol, a.addr, err)
	}
	if role == wire.HealthLeader && c.known(a.addr) {
		c.learn(a.addr, true, true)
	}
	return role, nil
}

// known reports whether addr is in the rotation.
func (c *Client) known(addr string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Contains(c.mu.rotation, addr)
}

// Status asks endpoint ("host:port"; "" = the known leader, else any
// known endpoint) for its STATS document.
func (c *Client) Status(ctx context.Context, endpoint string) (*Status, error) {
	if endpoint != "" {
		if err := checkAddr(endpoint); err != nil {
			return nil, err
		}
	}
	a, err := c.do(ctx, request{op: wire.OpStats, fixed: endpoint})
	if err != nil {
		return nil, err
	}
	if err := statusError(a.st, a.payload); err != nil {
		return nil, err
	}
	s, err := wire.DecodeStats(a.payload)
	if err != nil {
		return nil, fmt.Errorf("%w: STATS reply from %s: %w", ErrProtocol, a.addr, err)
	}
	st := &Status{
		Role:         s.Role,
		Term:         s.Term,
		CommitIndex:  s.CommitIndex,
		AppliedIndex: s.AppliedIndex,
		PeerCount:    s.PeerCount,
		RaftGroups:   s.RaftGroups,
		Engine:       map[string]uint64{},
		Raw:          json.RawMessage(a.payload),
	}
	var doc struct {
		Engine map[string]json.RawMessage `json:"engine"`
	}
	if json.Unmarshal(a.payload, &doc) == nil {
		for k, v := range doc.Engine {
			var n uint64
			if json.Unmarshal(v, &n) == nil {
				st.Engine[k] = n
			}
		}
	}
	// Members added to the document with membership changes; older servers
	// do not send them, and one of an unexpected type is left at zero.
	st.NodeID = extraUint(s.Extra, "node_id")
	st.LeaderID = extraUint(s.Extra, "leader_id")
	st.SnapshotIndex = extraUint(s.Extra, "snapshot_index")
	if raw, ok := s.Extra["members"]; ok {
		var ms []struct {
			ID         uint64 `json:"id"`
			RaftAddr   string `json:"raft_addr"`
			ClientAddr string `json:"client_addr"`
			Role       string `json:"role"`
		}
		if json.Unmarshal(raw, &ms) == nil {
			for _, m := range ms {
				st.Members = append(st.Members, Member(m))
			}
			slices.SortFunc(st.Members, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
		}
	}
	return st, nil
}

// extraUint returns the unsigned integer member name of a STATS document's
// extra members, or 0 when it is absent or not an unsigned integer.
func extraUint(extra map[string]json.RawMessage, name string) uint64 {
	var n uint64
	if raw, ok := extra[name]; !ok || json.Unmarshal(raw, &n) != nil {
		return 0
	}
	return n
}

// AddMember asks the leader to add node id (peer address raftAddr, client
// address clientAddr), as a learner when learner is set, and returns the
// server's message ("membership change proposed at index N"). A node that
// is already a member is ErrInvalidArgument. Like a write, it is never
// re-sent once it may have reached a server (ErrAmbiguous).
func (c *Client) AddMember(ctx context.Context, id uint64, raftAddr, clientAddr string, learner bool) (string, error) {
	inner := wire.AppendAddMember(nil, id, raftAddr, clientAddr, &learner)
	return c.admin(ctx, wire.OpAddMember, inner)
}

// RemoveMember asks the leader to remove node id and returns the server's
// message ("membership removal proposed at index N"). A removal the server
// refuses (not a member, itself, or below quorum) is ErrInvalidArgument.
// Like a write, it is never re-sent once it may have reached a server.
func (c *Client) RemoveMember(ctx context.Context, id uint64) (string, error) {
	return c.admin(ctx, wire.OpRemoveMember, wire.AppendRemoveMember(nil, id))
}

// PromoteLearner asks the leader to make learner id a voter and returns
// the server's message ("learner promote proposed at index N"). A node that
// is not a learner, or one that has not caught up with the leader's log yet
// (the server wants 90%; retry later), is ErrInvalidArgument. Like a write,
// it is never re-sent once it may have reached a server (ErrAmbiguous).
func (c *Client) PromoteLearner(ctx context.Context, id uint64) (string, error) {
	if id == 0 {
		return "", fmt.Errorf("%w: node id 0 is not valid (node ids are positive integers)", ErrInvalidArgument)
	}
	return c.admin(ctx, wire.OpPromoteLearner, wire.AppendPromoteLearner(nil, id))
}

// TransferLeader asks the leader to hand the leadership of the cluster
// (raft group 0) to node target, a voter, and returns once target leads.
// Naming the current leader succeeds at once. A target that is not a voter
// is ErrInvalidArgument; a transfer that does not complete within the
// server's request timeout (the target is behind or unreachable) is a
// *ServerError. Like a write, it is never re-sent once it may have reached
// a server (ErrAmbiguous: leadership may or may not have moved; Status
// tells, in LeaderID). Afterwards the client no longer assumes that the
// node it asked leads: the next leader-only call finds the new leader.
func (c *Client) TransferLeader(ctx context.Context, target uint64) error {
	if target == 0 {
		return fmt.Errorf("%w: node id 0 is not valid (node ids are positive integers)", ErrInvalidArgument)
	}
	a, err := c.do(ctx, request{op: wire.OpTransferLeader, inner: wire.AppendTransferLeader(nil, 0, target), write: true, leaderOnly: true})
	if err != nil {
		return err
	}
	if a.st == wire.StatusOK || a.st == wire.StatusError {
		// Leadership moved, or may still move.
		c.forgetLeader(a.addr)
	}
	return statusError(a.st, a.payload)
}

func (c *Client) admin(ctx context.Context, op wire.Opcode, inner []byte) (string, error) {
	a, err := c.do(ctx, request{op: op, inner: inner, write: true, leaderOnly: true})
	if err != nil {
		return "", err
	}
	if err := statusError(a.st, a.payload); err != nil {
		return "", err
	}
	msg, err := wire.DecodeText(a.payload)
	if err != nil {
		return "", fmt.Errorf("%w: %s reply from %s: %w", ErrProtocol, op, a.addr, err)
	}
	return msg, nil
}

// piped is the outcome of one request of a pipeline.
type piped struct {
	a    answer
	sent bool // the request may have reached the server
	err  error
}

// pipeline sends reqs to addr once each, in order, on one connection,
// without waiting for a reply before sending the next, and returns their
// outcomes (no retries, no redirects: a transaction's requests). The
// server answers a connection's requests in order and runs a
// transaction's requests in the order they arrived, so a TXN_COMMIT
// pipelined after a transaction's writes sees them.
//
// What reaches the server is always a prefix of reqs: calls abandoned at
// the deadline are abandoned from the last to the first, so a later
// request (a COMMIT) is never written after an earlier one (its writes)
// was dropped.
func (c *Client) pipeline(ctx context.Context, addr string, reqs []request) []piped {
	out := make([]piped, len(reqs))
	failFrom := func(i int, err error, sent bool) []piped {
		for j := i; j < len(out); j++ {
			out[j] = piped{err: err, sent: sent}
		}
		return out
	}
	if c.isClosed() {
		return failFrom(0, ErrClosed, false)
	}
	ctx, cancel := c.withRequestTimeout(ctx)
	defer cancel()
	frames := make([][]byte, len(reqs))
	for i, r := range reqs {
		frames[i] = c.frame(r)
		if len(frames[i])-4 > wire.MaxFrameSize {
			return failFrom(0, fmt.Errorf("%w: request of %d bytes exceeds the frame limit", ErrInvalidArgument, len(frames[i])-4), false)
		}
	}
	p, err := c.poolFor(addr)
	if err != nil {
		return failFrom(0, err, false)
	}
	immediate := true
	for _, r := range reqs {
		immediate = immediate && r.immediate
	}
	cn, err := c.getLaneConn(ctx, p, immediate)
	if err != nil {
		return failFrom(0, c.cause(ctx, err), false)
	}
	calls, err := cn.submitAll(ctx, frames)
	if err != nil {
		failFrom(len(calls), c.cause(ctx, err), false) // not queued: not sent
	}
	for i, cl := range calls {
		if r, ok := cl.await(ctx); ok {
			out[i] = c.piped(ctx, addr, r)
			continue
		}
		// The deadline: give up the unanswered calls, the last first.
		for j := len(calls) - 1; j >= i; j-- {
			select {
			case r := <-calls[j].res:
				out[j] = c.piped(ctx, addr, r)
				continue
			default:
			}
			sent := !calls[j].state.CompareAndSwap(callQueued, callAbandoned)
			out[j] = piped{err: c.cause(ctx, ctx.Err()), sent: sent}
		}
		break
	}
	return out
}

func (c *Client) piped(ctx context.Context, addr string, r result) piped {
	if r.err != nil {
		if c.isClosed() {
			return piped{err: ErrClosed, sent: r.sent}
		}
		return piped{err: c.cause(ctx, r.err), sent: r.sent}
	}
	return piped{a: answer{st: r.st, payload: r.payload, addr: addr}, sent: true}
}
