package raftnode

import (
	"fmt"
	"runtime"
	"sync"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/internal/vfs"
)

// The apply goroutine.
//
// The raft loop hands runs of committed normal entries to one apply
// goroutine, in log order (and the changes of leadership between them,
// deliverNote), and advances raft without waiting for them to
// be applied (etcd's apply goroutine): while the state machine applies one
// batch, the loop writes and fsyncs the next, sends, ticks and steps
// messages. What stays on the loop, and why:
//
//   - A configuration change is applied on the loop, to raft and then to
//     the state machine, once the apply goroutine has applied everything
//     before it (the Ready waits, the loop does not block). Raft is
//     advanced past it only then, so raft never campaigns or counts votes
//     with a configuration the state machine has not reached.
//   - A received snapshot is installed once the apply goroutine is idle:
//     it replaces the state machine.
//   - The loop never waits for the apply goroutine. A Ready whose entries
//     find the queue full (maxApplyBytes, maxApplyRuns), or that waits for
//     it to be idle, is kept (Node.pend) and resumed when it makes
//     progress; meanwhile the loop ticks and steps messages as it does for
//     a Ready stalled on a full disk.
//
// Entries are durable before they are queued (the Ready's Save precedes
// its apply step), so nothing is applied before it is durable. Node.Applied
// is the last index the apply goroutine (or the loop, for a configuration
// change or a snapshot) applied; everything that waits for an apply —
// proposers, ReadIndex reads, snapshots (Snapshotter.Take) — waits on the
// state machine's own applied index, which the apply moves.
//
// A run that fails because the disk is full is retried with the loop's
// back-off in ticks: the apply goroutine reports the failure, the loop
// counts it as a stall (Stalled, Config.OnStall) and signals the retry
// when the back-off has passed. Any other error stops the node.

const (
	// maxApplyBytes bounds the entry bytes queued for the apply goroutine
	// (a run is let in whatever its size when the queue is empty).
	maxApplyBytes = 64 << 20
	// maxApplyRuns bounds the runs queued for it.
	maxApplyRuns = 256
)

// applyQueue holds the runs handed to the apply goroutine and not yet
// applied, and the leadership changes to deliver after them.
type applyQueue struct {
	mu    sync.Mutex
	items []applyItem
	bytes int // entry data of runs, including the one being applied
	count int // runs, including the ones being applied
	notes int // leadership changes queued or being delivered
}

// applyItem is a run of committed entries, or a leadership change to
// deliver once the runs before it are applied.
type applyItem struct {
	ents  []*pb.Entry
	bytes int
	note  *leaderNote
}

// leaderNote is a change of role or leader seen in a Ready: the arguments
// of StateMachine.LeadershipChanged.
type leaderNote struct {
	leader, term uint64
	isLeader     bool
}

func runBytes(ents []*pb.Entry) int {
	n := 0
	for _, e := range ents {
		n += len(e.GetData())
	}
	return n
}

// room reports whether a run may be queued.
func (q *applyQueue) room() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.roomLocked()
}

func (q *applyQueue) roomLocked() bool {
	return q.count == 0 || (q.bytes < maxApplyBytes && q.count < maxApplyRuns)
}

// push queues a run, or reports ok false when the queue is full; alone
// reports that nothing else was queued or being applied.
func (q *applyQueue) push(ents []*pb.Entry) (ok, alone bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.roomLocked() {
		return false, false
	}
	b := runBytes(ents)
	q.items = append(q.items, applyItem{ents: ents, bytes: b})
	q.bytes += b
	q.count++
	return true, q.count == 1 && q.notes == 0
}

// pushNote queues a leadership change after the runs queued, unless
// nothing is queued or being applied or delivered: then it reports false
// and the caller delivers it at once (in order all the same).
func (q *applyQueue) pushNote(note leaderNote) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.count == 0 && q.notes == 0 {
		return false
	}
	q.items = append(q.items, applyItem{note: &note})
	q.notes++
	return true
}

// take returns the runs queued before the first leadership change as one
// run (nil when there are none), with the number of runs and bytes it
// holds; they still count as queued until done. When a leadership change
// is first, it returns that alone (noteDone once delivered).
func (q *applyQueue) take() (ents []*pb.Entry, note *leaderNote, runs, bytes int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return nil, nil, 0, 0
	}
	if note = q.items[0].note; note != nil {
		q.drop(1)
		return nil, note, 0, 0
	}
	k, size := 0, 0
	for k < len(q.items) && q.items[k].note == nil {
		size += len(q.items[k].ents)
		bytes += q.items[k].bytes
		k++
	}
	if k == 1 {
		ents = q.items[0].ents
	} else {
		ents = make([]*pb.Entry, 0, size)
		for _, it := range q.items[:k] {
			ents = append(ents, it.ents...)
		}
	}
	q.drop(k)
	return ents, nil, k, bytes
}

// drop removes the first k items. Called with mu.
func (q *applyQueue) drop(k int) {
	n := copy(q.items, q.items[k:])
	clear(q.items[n:])
	q.items = q.items[:n]
}

func (q *applyQueue) noteDone() {
	q.mu.Lock()
	q.notes--
	q.mu.Unlock()
}

func (q *applyQueue) done(runs, bytes int) {
	q.mu.Lock()
	q.count -= runs
	q.bytes -= bytes
	q.mu.Unlock()
}

// applyEvent is what the apply goroutine reports to the loop: a run failed
// on a full disk (stall), applied after such failures (resumed), or failed
// for good (fatal).
type applyEvent struct {
	stall, fatal error
	resumed      bool
}

// applyStall is the loop's state of a stalled apply goroutine.
type applyStall struct {
	backoff  int  // ticks of the current back-off
	wait     int  // ticks left before the retry is signalled
	retrying bool // signalled; its outcome is not reported yet
}

// applyLoop is the apply goroutine. It ends when the loop does, after the
// run it is applying (runs still queued are applied again from the log at
// the next start: the state machine records its applied index).
func (n *Node) applyLoop() {
	defer n.applyWG.Done()
	for {
		select {
		case <-n.applyWake:
		case <-n.loopExit:
			return
		}
		for {
			ents, note, runs, bytes := n.aq.take()
			if note != nil {
				n.cfg.SM.LeadershipChanged(note.leader, note.term, note.isLeader)
				n.aq.noteDone()
				continue
			}
			if ents == nil {
				break
			}
			stalled := false
			for {
				err := n.applyRun(ents)
				if err == nil {
					break
				}
				if !vfs.IsNoSpace(err) {
					n.report(applyEvent{fatal: err})
					return
				}
				stalled = true
				n.report(applyEvent{stall: err})
				select {
				case <-n.applyRetry:
				case <-n.loopExit:
					return
				}
			}
			n.applied.Store(ents[len(ents)-1].GetIndex())
			n.aq.done(runs, bytes)
			if stalled {
				n.report(applyEvent{resumed: true})
			} else if n.awaitApply.Swap(false) {
				wake(n.loopWake)
			}
		}
	}
}

func (n *Node) applyRun(ents []*pb.Entry) error {
	var t0 int64
	if n.stages != nil {
		t0 = Now()
	}
	if err := n.cfg.SM.Apply(ents); err != nil {
		return fmt.Errorf("raftnode: applying entries %d..%d: %w", ents[0].GetIndex(), ents[len(ents)-1].GetIndex(), err)
	}
	n.stages.Since(StageApply, t0)
	return nil
}

// report hands ev to the loop and wakes it.
func (n *Node) report(ev applyEvent) {
	n.evMu.Lock()
	n.events = append(n.events, ev)
	n.evMu.Unlock()
	n.awaitApply.Store(false)
	wake(n.loopWake)
}

// wake signals c (capacity 1) without blocking: a signal already pending
// covers this one.
func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// handOff queues a run for the apply goroutine, or reports false when the
// queue is full (the Ready waits; the apply goroutine wakes the loop).
func (n *Node) handOff(ents []*pb.Entry) bool {
	ok, alone := n.aq.push(ents)
	if !ok {
		// Asked before the second try, so that a run taken in between
		// still wakes the loop.
		n.awaitApply.Store(true)
		if ok, alone = n.aq.push(ents); !ok {
			return false
		}
	}
	n.queued = ents[len(ents)-1].GetIndex()
	wake(n.applyWake)
	if alone && raft.StateType(n.role.Load()) == raft.StateLeader {
		// The apply goroutine was idle. A leader's run holds writes whose
		// clients wait; readied last, the apply goroutine would run on
		// this P only after the rest of the loop's iteration. Let it (and
		// the replies it settles) go first; the loop resumes after it, or
		// on the other P. Paired runs: 1.05x puts and 1.08x STM
		// transactions from one client on three nodes (latency.md §17).
		runtime.Gosched()
	}
	return true
}

// deliverNote tells the state machine of a leadership change after the
// entries handed to the apply goroutine before it: a write committed
// before a leader stepped down completes with its result, not with "lost
// leadership". With nothing queued it is delivered at once, on the loop.
func (n *Node) deliverNote(note leaderNote) {
	if n.aq.pushNote(note) {
		wake(n.applyWake)
		return
	}
	n.cfg.SM.LeadershipChanged(note.leader, note.term, note.isLeader)
}

// applierIdle reports whether everything handed to the apply goroutine is
// applied; when not, the apply goroutine wakes the loop once it is.
func (n *Node) applierIdle() bool {
	if n.applied.Load() >= n.queued {
		return true
	}
	n.awaitApply.Store(true)
	return n.applied.Load() >= n.queued
}

// applyEvents handles what the apply goroutine reported: a full disk
// stalls the node (as a failed step of a Ready does) until a retry
// succeeds; a fatal error is returned.
func (n *Node) applyEvents() error {
	n.evMu.Lock()
	evs := n.events
	n.events = nil
	n.evMu.Unlock()
	for _, ev := range evs {
		switch {
		case ev.fatal != nil:
			return ev.fatal
		case ev.stall != nil:
			n.stalled(&n.astall, ev.stall, "raft stalled: the disk is full while applying committed entries; retrying, and still following the leader meanwhile")
		case ev.resumed:
			n.astall = nil
			n.stallEnd()
		}
	}
	return nil
}

// applyTick counts one tick of a stalled apply goroutine's back-off.
func (n *Node) applyTick() { n.astall.tick(n.applyRetry) }

// stalled records that a goroutine's step (the apply goroutine's run, the
// storage goroutine's Save; *sp is its stall state) failed on a full disk:
// the first failure begins a stall, a later one is a failed retry, and
// the back-off before the next retry doubles.
func (n *Node) stalled(sp **applyStall, err error, msg string) {
	s := *sp
	if s == nil {
		s = &applyStall{}
		*sp = s
		n.stallBegin(err, msg)
	} else {
		n.stallRetries.Add(1)
	}
	s.backoff = min(max(2*s.backoff, 1), n.cfg.StallRetryMaxTicks)
	s.wait = s.backoff
	s.retrying = false
}

// tick counts one tick of a stall's back-off (nothing when s is nil or its
// retry is under way) and signals retry when the back-off has passed.
func (s *applyStall) tick(retry chan struct{}) {
	if s == nil || s.retrying {
		return
	}
	if s.wait > 0 {
		s.wait--
	}
	if s.wait == 0 {
		s.retrying = true
		wake(retry)
	}
}

// applyBusy reports whether the apply goroutine has work it will do
// without the loop: runs to apply, or a report the loop has not handled.
// A stalled one waiting for its back-off is not busy.
func (n *Node) applyBusy() bool {
	n.evMu.Lock()
	evs := len(n.events)
	n.evMu.Unlock()
	if evs > 0 {
		return true
	}
	if n.astall != nil {
		return n.astall.retrying
	}
	return n.applied.Load() < n.queued
}
