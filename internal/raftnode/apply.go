package raftnode

import (
	"fmt"
	"sync"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/internal/vfs"
)

// The apply goroutine.
//
// The raft loop hands runs of committed normal entries to one apply
// goroutine, in log order, and advances raft without waiting for them to
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
// applied.
type applyQueue struct {
	mu    sync.Mutex
	runs  [][]*pb.Entry
	bytes int // entry data of runs, including the one being applied
	count int // runs, including the ones being applied
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

// push queues a run, or reports false when the queue is full.
func (q *applyQueue) push(ents []*pb.Entry) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.roomLocked() {
		return false
	}
	q.runs = append(q.runs, ents)
	q.bytes += runBytes(ents)
	q.count++
	return true
}

// take returns every queued run as one (nil when none is queued), with
// the number of runs and bytes it holds; they still count as queued until
// done. The apply goroutine calls done before it takes again, so what is
// queued then is exactly what it takes.
func (q *applyQueue) take() (ents []*pb.Entry, runs, bytes int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch len(q.runs) {
	case 0:
		return nil, 0, 0
	case 1:
		ents = q.runs[0]
	default:
		k := 0
		for _, r := range q.runs {
			k += len(r)
		}
		ents = make([]*pb.Entry, 0, k)
		for _, r := range q.runs {
			ents = append(ents, r...)
		}
	}
	clear(q.runs)
	q.runs = q.runs[:0]
	return ents, q.count, q.bytes
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
			ents, runs, bytes := n.aq.take()
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
	if !n.aq.push(ents) {
		// Asked before the second try, so that a run taken in between
		// still wakes the loop.
		n.awaitApply.Store(true)
		if !n.aq.push(ents) {
			return false
		}
	}
	n.queued = ents[len(ents)-1].GetIndex()
	wake(n.applyWake)
	return true
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
			s := n.astall
			if s == nil {
				s = &applyStall{}
				n.astall = s
				n.stallBegin(ev.stall, "raft stalled: the disk is full while applying committed entries; retrying, and still following the leader meanwhile")
			} else {
				n.stallRetries.Add(1)
			}
			s.backoff = min(max(2*s.backoff, 1), n.cfg.StallRetryMaxTicks)
			s.wait = s.backoff
			s.retrying = false
		case ev.resumed:
			n.astall = nil
			n.stallEnd()
		}
	}
	return nil
}

// applyTick counts one tick of a stalled apply goroutine's back-off and
// signals its retry when the back-off has passed.
func (n *Node) applyTick() {
	s := n.astall
	if s == nil || s.retrying {
		return
	}
	if s.wait > 0 {
		s.wait--
	}
	if s.wait == 0 {
		s.retrying = true
		wake(n.applyRetry)
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
