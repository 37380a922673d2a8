package transport

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// MemNetwork is an in-memory network for tests: it connects the transports
// it creates and can partition them, drop or delay messages. Messages are
// copied (marshalled and unmarshalled) on the way, as on a real network.
type MemNetwork struct {
	mu      sync.Mutex
	nodes   map[uint64]*MemTransport
	blocked map[[2]uint64]bool // [from, to] links that drop everything
	drop    float64
	delay   time.Duration
	rng     *rand.Rand
	// snapFilter, when set, wraps the writer of every snapshot stream
	// (tests cut or slow transfers with it).
	snapFilter func(from, to uint64, w io.Writer) io.Writer

	// inflight counts messages enqueued and not yet handed to (or refused
	// for) their handler; handled counts those handed over or refused.
	// Together they let a test tell when the network is quiet.
	inflight atomic.Int64
	handled  atomic.Uint64
}

// Traffic returns how many messages are on their way (enqueued, not yet
// handed to the destination's handler) and how many were handled so far.
// A test that sees the same count handled, nothing in flight and every
// node idle knows the network is quiet.
func (n *MemNetwork) Traffic() (inflight int64, handled uint64) {
	return n.inflight.Load(), n.handled.Load()
}

// SetSnapshotFilter makes every later snapshot stream from → to go through
// f(from, to, w): the writer f returns receives the stream, and an error it
// returns aborts the transfer on both sides. nil removes the filter.
func (n *MemNetwork) SetSnapshotFilter(f func(from, to uint64, w io.Writer) io.Writer) {
	n.mu.Lock()
	n.snapFilter = f
	n.mu.Unlock()
}

// NewMemNetwork returns an empty network.
func NewMemNetwork(seed uint64) *MemNetwork {
	return &MemNetwork{nodes: map[uint64]*MemTransport{}, blocked: map[[2]uint64]bool{}, rng: rand.New(rand.NewPCG(seed, 1))}
}

// Transport creates (or replaces) node id's endpoint.
func (n *MemNetwork) Transport(id uint64, h Handler) *MemTransport {
	t := &MemTransport{net: n, id: id, h: h, in: make(chan *pb.Message, 4096), quit: make(chan struct{}), done: make(chan struct{})}
	n.mu.Lock()
	n.nodes[id] = t
	n.mu.Unlock()
	go t.deliverLoop()
	return t
}

// Isolate cuts every link to and from id.
func (n *MemNetwork) Isolate(id uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for other := range n.nodes {
		if other != id {
			n.blocked[[2]uint64{id, other}] = true
			n.blocked[[2]uint64{other, id}] = true
		}
	}
}

// Partition splits the nodes into groups that cannot talk to each other.
func (n *MemNetwork) Partition(groups ...[]uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	group := map[uint64]int{}
	for i, g := range groups {
		for _, id := range g {
			group[id] = i
		}
	}
	for a := range n.nodes {
		for b := range n.nodes {
			if a != b && group[a] != group[b] {
				n.blocked[[2]uint64{a, b}] = true
			}
		}
	}
}

// BlockLink drops messages from one node to another (one direction).
func (n *MemNetwork) BlockLink(from, to uint64) {
	n.mu.Lock()
	n.blocked[[2]uint64{from, to}] = true
	n.mu.Unlock()
}

// Heal removes every partition and blocked link.
func (n *MemNetwork) Heal() {
	n.mu.Lock()
	n.blocked = map[[2]uint64]bool{}
	n.mu.Unlock()
}

// SetDropRate drops each message with probability p.
func (n *MemNetwork) SetDropRate(p float64) {
	n.mu.Lock()
	n.drop = p
	n.mu.Unlock()
}

// SetDelay delays every delivery by d.
func (n *MemNetwork) SetDelay(d time.Duration) {
	n.mu.Lock()
	n.delay = d
	n.mu.Unlock()
}

// MemTransport is one node's endpoint on a MemNetwork.
type MemTransport struct {
	net  *MemNetwork
	id   uint64
	h    Handler
	in   chan *pb.Message
	quit chan struct{}
	done chan struct{}
	once sync.Once
	c    counters

	inMu     sync.Mutex // enqueue against Close's drain of in
	inClosed bool

	mu     sync.Mutex
	roster map[uint64]bool
	closed bool
	snapWG sync.WaitGroup // snapshot streams this endpoint sends or receives
}

// track registers a snapshot goroutine; false once the endpoint is closed.
func (t *MemTransport) track() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.snapWG.Add(1)
	return true
}

// SetPeers implements Transport.
func (t *MemTransport) SetPeers(peers map[uint64]string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.roster = map[uint64]bool{}
	for id := range peers {
		if id != t.id {
			t.roster[id] = true
		}
	}
}

func (t *MemTransport) allowed(id uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.roster[id]
}

// Send implements Transport. After Close it drops everything.
func (t *MemTransport) Send(msgs []*pb.Message) {
	select {
	case <-t.quit:
		return
	default:
	}
	for _, m := range msgs {
		to := m.GetTo()
		if !t.allowed(to) {
			t.c.droppedUnknown.Add(1)
			continue
		}
		n := t.net
		n.mu.Lock()
		dst := n.nodes[to]
		lost := n.blocked[[2]uint64{t.id, to}] || (n.drop > 0 && n.rng.Float64() < n.drop)
		delay := n.delay
		n.mu.Unlock()
		if dst == nil || lost {
			t.c.droppedFull.Add(1)
			t.h.ReportUnreachable(to)
			continue
		}
		b, err := proto.Marshal(m)
		if err != nil {
			continue
		}
		cp := &pb.Message{}
		if err := proto.Unmarshal(b, cp); err != nil {
			continue
		}
		t.c.sent.Add(1)
		if delay > 0 {
			time.AfterFunc(delay, func() { dst.enqueue(cp, t) })
			continue
		}
		dst.enqueue(cp, t)
	}
}

// enqueue queues m for delivery. Under inMu, so that Close can account for
// every message it leaves undelivered: a message counted in flight is
// either handed to the handler or discounted, never left counted (the
// harness's Quiesce waits for the count to reach zero).
func (t *MemTransport) enqueue(m *pb.Message, from *MemTransport) {
	t.inMu.Lock()
	if t.inClosed {
		t.inMu.Unlock()
		return
	}
	t.net.inflight.Add(1)
	select {
	case t.in <- m:
		t.inMu.Unlock()
	default:
		t.net.inflight.Add(-1)
		t.inMu.Unlock()
		from.c.droppedFull.Add(1)
		from.h.ReportUnreachable(t.id)
	}
}

func (t *MemTransport) deliverLoop() {
	defer close(t.done)
	for {
		select {
		case <-t.quit:
			return
		case m := <-t.in:
			t.deliver(m)
			t.net.handled.Add(1)
			t.net.inflight.Add(-1)
		}
	}
}

func (t *MemTransport) deliver(m *pb.Message) {
	// Checks the real transport makes.
	if !t.allowed(m.GetFrom()) {
		t.c.rejectedFrom.Add(1)
		return
	}
	if m.GetTo() != t.id {
		t.c.rejectedTo.Add(1)
		return
	}
	t.c.received.Add(1)
	t.h.Receive(m)
}

// Inject delivers a raw message as if it came from the network (tests of
// the receive-side checks).
func (t *MemTransport) Inject(m *pb.Message) { t.enqueue(m, t) }

// Stats implements Transport.
func (t *MemTransport) Stats() Stats { return t.c.snapshot() }

// Close implements Transport. Snapshot streams in flight are aborted and
// waited for.
func (t *MemTransport) Close() error {
	t.once.Do(func() {
		t.mu.Lock()
		t.closed = true
		t.mu.Unlock()
		close(t.quit)
		<-t.done
		// The messages queued and not delivered are dropped: no longer in
		// flight.
		t.inMu.Lock()
		t.inClosed = true
		for drained := false; !drained; {
			select {
			case <-t.in:
				t.net.inflight.Add(-1)
			default:
				drained = true
			}
		}
		t.inMu.Unlock()
		t.net.mu.Lock()
		if t.net.nodes[t.id] == t {
			delete(t.net.nodes, t.id)
		}
		t.net.mu.Unlock()
		t.snapWG.Wait()
	})
	return nil
}

// SendSnapshot implements Transport: the stream goes through a pipe to the
// destination's handler, unless the link is blocked. Closing either end
// aborts it.
func (t *MemTransport) SendSnapshot(to uint64, write func(w io.Writer) error, done func(error)) {
	n := t.net
	n.mu.Lock()
	dst := n.nodes[to]
	blocked := n.blocked[[2]uint64{t.id, to}] || n.blocked[[2]uint64{to, t.id}]
	filter := n.snapFilter
	n.mu.Unlock()
	fail := func(err error) {
		t.c.snapFailed.Add(1)
		done(err)
	}
	if dst == nil || blocked || !t.allowed(to) {
		fail(fmt.Errorf("transport: peer %d unreachable", to))
		return
	}
	if !t.track() {
		fail(fmt.Errorf("transport: closed"))
		return
	}
	if !dst.track() {
		t.snapWG.Done()
		fail(fmt.Errorf("transport: peer %d unreachable", to))
		return
	}
	t.snapWG.Add(2) // three goroutines: the receiver (counted by track), the writer and the watcher
	pr, pw := io.Pipe()
	finished := make(chan struct{})
	go func() {
		defer t.snapWG.Done()
		// Abort when either endpoint closes.
		select {
		case <-t.quit:
		case <-dst.quit:
		case <-finished:
			return
		}
		err := errors.New("transport: endpoint closed during a snapshot transfer")
		_ = pr.CloseWithError(err)
		_ = pw.CloseWithError(err)
	}()
	written := make(chan error, 1)
	go func() {
		defer t.snapWG.Done()
		var w io.Writer = pw
		if filter != nil {
			w = filter(t.id, to, pw)
		}
		err := write(w)
		_ = pw.CloseWithError(err)
		written <- err
	}()
	go func() {
		defer t.snapWG.Done()
		defer dst.snapWG.Done()
		var err error
		if !dst.allowed(t.id) {
			dst.c.rejectedFrom.Add(1)
			err = fmt.Errorf("transport: peer %d does not accept snapshots from %d", to, t.id)
		} else {
			err = dst.h.ReceiveSnapshot(t.id, pr)
			if err != nil {
				dst.c.snapFailed.Add(1)
			} else {
				dst.c.snapRecv.Add(1)
			}
		}
		// The receiver reads no more: unblock the writer, and wait for it,
		// as the TCP transport does: done reports both sides' outcome, and
		// once it runs nothing reads the snapshot any more.
		_ = pr.CloseWithError(err)
		werr := <-written
		close(finished)
		if err == nil && werr != nil {
			err = fmt.Errorf("transport: streaming the snapshot: %w", werr)
		}
		if err != nil {
			t.c.snapFailed.Add(1)
		} else {
			t.c.snapSent.Add(1)
		}
		done(err)
	}()
}
