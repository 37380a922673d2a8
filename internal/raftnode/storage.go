package raftnode

import (
	"fmt"
	"runtime"
	"sync"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/internal/vfs"
)

// The storage goroutine (asynchronous log writes, raft's
// AsyncStorageWrites; docs/design/latency.md §8).
//
// With Config.SyncStorageWrites unset, raft does not wait for the log to be
// written before it hands out the next Ready. Each Ready carries, besides
// the messages to peers, a MsgStorageAppend (its entries, hard state and
// snapshot) and a MsgStorageApply (its committed entries). The loop sends
// the peer messages at once, leader or follower: raft keeps every message
// that may only leave once the log is durable (a follower's MsgAppResp, a
// vote) among the Responses of the MsgStorageAppend. The loop queues the
// MsgStorageAppend for the storage goroutine and goes on: it steps
// proposals and messages and hands out further Readys while the log is
// being fsynced.
//
// The storage goroutine writes everything queued in log order, with one
// fsync for the lot (a group commit across Readys), and only then delivers
// the Responses: those for peers through the transport, those for this
// node (its own MsgAppResp as leader, MsgStorageAppendResp) to the loop,
// which steps them into raft. So the durability rules hold as in the
// synchronous loop:
//
//   - a leader counts its own entries towards a quorum only once they are
//     durable here (its MsgAppResp to itself comes back after the fsync);
//   - a follower acknowledges, and a voter votes, only after the fsync;
//   - raft hands out committed entries for applying only once they are
//     durable here (raft's nextCommittedEnts stops at the stable index in
//     this mode), so nothing is applied before it is durable locally.
//
// The queue is bounded (maxStorageInflight Readys): beyond it the loop
// takes no new Ready until the storage goroutine catches up, which bounds
// memory when the disk is slow or full, exactly as the synchronous loop's
// kept Ready does. A Save that fails on a full disk is retried with the
// loop's back-off in ticks, like the apply goroutine's runs (Stalled,
// Config.OnStall); any other error stops the node.
//
// The only voter writes on the loop itself when nothing is queued
// (writeInline): it cannot commit before its own fsync anyway, and the two
// hand-offs to the storage goroutine and back cost a single client about
// 6% of its puts on one node.
//
// A received snapshot is installed on the loop once the storage goroutine
// and the apply goroutine are idle (the Ready waits, the loop does not
// block); the entries and hard state of its MsgStorageAppend are queued
// after it. The log's other writers (a local snapshot's CreateSnapshot and
// Compact) run on the loop; raftlog serializes them with Save.

// maxStorageInflight bounds the MsgStorageAppends queued for the storage
// goroutine or being written.
const maxStorageInflight = 64

// storageQueue holds the MsgStorageAppends the storage goroutine has not
// written yet.
type storageQueue struct {
	mu       sync.Mutex
	items    []*pb.Message
	inflight int // queued or being written
}

func (q *storageQueue) push(m *pb.Message) {
	q.mu.Lock()
	q.items = append(q.items, m)
	q.inflight++
	q.mu.Unlock()
}

// take moves every queued message to dst (they stay in flight until done).
func (q *storageQueue) take(dst []*pb.Message) []*pb.Message {
	q.mu.Lock()
	dst = append(dst, q.items...)
	clear(q.items)
	q.items = q.items[:0]
	q.mu.Unlock()
	return dst
}

func (q *storageQueue) done(k int) {
	q.mu.Lock()
	q.inflight -= k
	q.mu.Unlock()
}

func (q *storageQueue) full() bool { return q.count() >= maxStorageInflight }

func (q *storageQueue) count() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.inflight
}

// storageEvent is what the storage goroutine reports to the loop: the
// responses to step after a batch was written (with, for the stage
// timings, the last entry it wrote and when it was durable), a stall on a
// full disk, its end, or a fatal error.
type storageEvent struct {
	resps        []*pb.Message
	lastIndex    uint64
	savedAt      int64
	stall, fatal error
	resumed      bool
}

// storageLoop is the storage goroutine. It ends when the loop does; what
// it had not written is lost with the process, as an unsynced Ready is.
func (n *Node) storageLoop() {
	defer n.storageWG.Done()
	var batch []*pb.Message
	for {
		select {
		case <-n.storageWake:
		case <-n.loopExit:
			return
		}
		if n.peersFirst.Swap(false) {
			// The loop readied the peers' writer goroutines before this
			// one, which runs first on its P and would hold it through the
			// fsync while they wait for the other vCPU. The leader's own
			// write is rarely the one a commit waits for; the followers'
			// are: let the appends leave first.
			runtime.Gosched()
		}
		for {
			clear(batch)
			batch = n.sq.take(batch[:0])
			if len(batch) == 0 {
				break
			}
			if !n.writeBatch(batch) {
				return
			}
		}
	}
}

// writeBatch writes batch in order with one fsync, then hands on its
// responses. It returns false when the goroutine must end (a fatal error,
// or the loop ended during a stall).
func (n *Node) writeBatch(batch []*pb.Message) bool {
	// The fsync goes with the last message that needs one: one with
	// entries, or a new term or vote. A commit index alone need not be
	// durable (raft's MustSync), and the messages after the last fsync
	// carry only that.
	syncAt := -1
	term, vote := n.stTerm, n.stVote
	var lastIndex uint64
	for i, m := range batch {
		if k := len(m.GetEntries()); k > 0 {
			syncAt = i
			lastIndex = m.GetEntries()[k-1].GetIndex()
		}
		if m.Term != nil {
			if m.GetTerm() != term || m.GetVote() != vote {
				syncAt = i
			}
			term, vote = m.GetTerm(), m.GetVote()
		}
	}
	var t0 int64
	if n.stages != nil && syncAt >= 0 {
		t0 = Now()
	}
	stalled := false
	for i := 0; i < len(batch); {
		m := batch[i]
		hs := hardStateOf(m)
		err := n.cfg.Log.Save(hs, m.GetEntries(), i == syncAt)
		if err == nil {
			if hs != nil {
				n.stTerm, n.stVote = hs.GetTerm(), hs.GetVote()
			}
			i++
			continue
		}
		err = fmt.Errorf("raftnode: persisting raft state: %w", err)
		if !vfs.IsNoSpace(err) {
			n.reportStorage(storageEvent{fatal: err})
			return false
		}
		// Save changed nothing: the same message is written again once
		// the loop's back-off has passed.
		stalled = true
		n.reportStorage(storageEvent{stall: err})
		select {
		case <-n.storageRetry:
		case <-n.loopExit:
			return false
		}
	}
	ev := storageEvent{resumed: stalled, lastIndex: lastIndex}
	if t0 != 0 {
		ev.savedAt = n.stages.Since(StageLogFsync, t0)
	}
	ev.resps = n.sendResponses(batch, nil)
	// Reported before the queue shrinks: a node seen with nothing in
	// flight has no report pending that it has not seen (Node.busy).
	n.reportStorage(ev)
	n.sq.done(len(batch))
	if n.awaitStorage.Swap(false) {
		wake(n.loopWake)
	}
	n.prepareLog()
	return true
}

// hardStateOf is the hard state a MsgStorageAppend carries, or nil: raft
// sets its Term, Vote and Commit fields only when the hard state changed.
func hardStateOf(m *pb.Message) *pb.HardState {
	if m.Term == nil {
		return nil
	}
	return &pb.HardState{Term: m.Term, Vote: m.Vote, Commit: m.Commit}
}

// writeInline writes m on the loop, when nothing is queued for the storage
// goroutine (so the log order holds), and steps its responses at once. A
// failure is returned as a synchronous Ready's Save failure is: a full disk
// stalls the Ready, which retries this step. t0 is when the step began (0
// without stage timing).
func (n *Node) writeInline(m *pb.Message, t0 int64) error {
	hs := hardStateOf(m)
	sync := len(m.GetEntries()) > 0 || (hs != nil && (hs.GetTerm() != n.stTerm || hs.GetVote() != n.stVote))
	if err := n.cfg.Log.Save(hs, m.GetEntries(), sync); err != nil {
		return fmt.Errorf("raftnode: persisting raft state: %w", err)
	}
	if hs != nil {
		n.stTerm, n.stVote = hs.GetTerm(), hs.GetVote()
	}
	n.prepareDue = true
	if t0 != 0 && sync {
		saved := n.stages.Since(StageLogFsync, t0)
		if k := len(m.GetEntries()); k > 0 {
			n.savedAppend(m.GetEntries()[k-1].GetIndex(), saved)
		}
	}
	self := n.sendResponses([]*pb.Message{m}, nil)
	n.stepLocal(self)
	return nil
}

// sendResponses sends the responses of written MsgStorageAppends that are
// for peers, and appends those for this node to self.
func (n *Node) sendResponses(written []*pb.Message, self []*pb.Message) []*pb.Message {
	var peers []*pb.Message
	for _, m := range written {
		for _, r := range m.GetResponses() {
			if r.GetTo() == n.cfg.ID {
				self = append(self, r)
			} else {
				peers = append(peers, r)
			}
		}
	}
	if len(peers) > 0 {
		n.t.Send(peers)
	}
	return self
}

// reportStorage hands ev to the loop and wakes it.
func (n *Node) reportStorage(ev storageEvent) {
	n.evMu.Lock()
	n.sevents = append(n.sevents, ev)
	n.evMu.Unlock()
	wake(n.loopWake)
}

// queueAppend hands a MsgStorageAppend to the storage goroutine.
func (n *Node) queueAppend(m *pb.Message) {
	n.sq.push(m)
	wake(n.storageWake)
}

// storageFull reports, on the loop, whether the storage queue is full; then
// the storage goroutine wakes the loop once it has written a batch.
func (n *Node) storageFull() bool {
	if n.sq.count() < maxStorageInflight {
		return false
	}
	n.awaitStorage.Store(true)
	return n.sq.count() >= maxStorageInflight
}

// storageIdle reports whether everything queued is written; when not, the
// storage goroutine wakes the loop once it has written a batch.
func (n *Node) storageIdle() bool {
	if n.sq.count() == 0 {
		return true
	}
	n.awaitStorage.Store(true)
	return n.sq.count() == 0
}

// storageEvents handles what the storage goroutine reported: the responses
// to this node are stepped into raft, a full disk stalls the node until a
// retry succeeds, and a fatal error is returned.
func (n *Node) storageEvents() error {
	n.evMu.Lock()
	evs := n.sevents
	n.sevents = nil
	n.evMu.Unlock()
	for _, ev := range evs {
		switch {
		case ev.fatal != nil:
			return ev.fatal
		case ev.stall != nil:
			n.stalled(&n.sstall, ev.stall, "raft stalled: the disk is full; retrying, and still following the leader meanwhile")
			continue
		}
		if ev.resumed {
			n.sstall = nil
			n.stallEnd()
		}
		n.savedAppend(ev.lastIndex, ev.savedAt)
		n.stepLocal(ev.resps)
	}
	return nil
}

// storageTick counts one tick of a stalled storage goroutine's back-off.
func (n *Node) storageTick() { n.sstall.tick(n.storageRetry) }

// storageBusy reports whether the storage goroutine has work it will do
// without the loop: messages to write, or a report the loop has not
// handled. A stalled one waiting for its back-off is not busy.
func (n *Node) storageBusy() bool {
	if !n.async {
		return false
	}
	// The queue before the reports: the goroutine reports a batch before
	// it leaves the queue, so a batch seen gone has its report seen.
	inflight := n.sq.count()
	n.evMu.Lock()
	evs := len(n.sevents)
	n.evMu.Unlock()
	if evs > 0 {
		return true
	}
	if n.sstall != nil {
		return n.sstall.retrying
	}
	return inflight > 0
}

// splitLocal separates the messages of an asynchronous Ready: those for
// peers, and the MsgStorageAppend and MsgStorageApply for the local
// threads (raft never addresses a message in Ready.Messages to this node
// itself: those wait among the MsgStorageAppend's Responses).
func (n *Node) splitLocal(msgs []*pb.Message) (peers []*pb.Message, app, apply *pb.Message) {
	j := 0
	for _, m := range msgs {
		switch m.GetTo() {
		case raft.LocalAppendThread:
			app = m
			continue
		case raft.LocalApplyThread:
			apply = m
			continue
		}
		msgs[j] = m
		j++
	}
	return msgs[:j], app, apply
}
