package raftnode

import (
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// Commit notices held back
//
// When an acknowledgement moves a leader's commit index, raft sends every
// follower an append at once (bcastAppend). With the followers' logs up
// to date it carries no entries, only the new commit index: a commit
// notice. Each one costs a frame on the wire, a step and a Ready on the
// follower (its hard state written, its apply goroutine woken) and an
// acknowledgement back, which the leader steps too: about half of the
// messages of a replicated write, all of them in the window where the
// leader applies the write and answers its client, on the same CPUs.
//
// A notice is not needed for anything to commit: only the followers'
// state machines wait for it. And every append carries the leader's
// current commit index, so the next one to a follower makes a notice for
// it redundant. So a leader holds each notice back (the newest one per
// follower) for at most Config.CommitNoticeDelay: an append with entries
// to that follower sent meanwhile replaces it, and the ones still held
// when the delay ends are sent then, from the loop. Under a steady stream
// of writes almost every notice is replaced by the next write's append;
// an idle cluster's followers learn a commit that much later (a
// heartbeat carries it too).
//
// Nothing here touches safety: raft tolerates any message being delayed
// or lost, and a held notice is either sent or made redundant by a later
// append to the same follower, which serves every purpose an empty one
// does (the commit index, and the probe of a follower whose progress
// waits for an answer). Only appends without entries are held, and only
// on a leader; votes, heartbeats, snapshots and appends with entries go
// out at once, as before.

// holdNotices reports whether the loop holds commit notices back now.
func (n *Node) holdNotices() bool {
	return n.cfg.CommitNoticeDelay > 0 && raft.StateType(n.role.Load()) == raft.StateLeader
}

// isNotice reports whether m is a commit notice: an append without
// entries.
func isNotice(m *pb.Message) bool {
	return m.GetType() == pb.MsgApp && len(m.GetEntries()) == 0
}

// hold keeps notice m for its follower (send has dropped an older one
// through replaceHeld). The first notice held starts the timer that sends
// what is held; later ones go out with it, sooner than their own delay.
// (If replacements emptied the list meanwhile, the timer is started again:
// a notice never waits longer than the delay.)
func (n *Node) hold(m *pb.Message) {
	n.held = append(n.held, m)
	if len(n.held) == 1 {
		n.holdTimer.Reset(n.cfg.CommitNoticeDelay)
	}
}

// replaceHeld drops the notice held for to, if any: an append to it is
// being sent (with entries, or a newer notice), which carries a commit
// index at least as new.
func (n *Node) replaceHeld(to uint64) {
	for i, h := range n.held {
		if h.GetTo() == to {
			last := len(n.held) - 1
			n.held[i] = n.held[last]
			n.held[last] = nil
			n.held = n.held[:last]
			n.noticesReplaced.Add(1)
			return
		}
	}
}

// sendHeld sends the notices still held when the timer fires (none, when
// replacements emptied the list since it was started).
func (n *Node) sendHeld() {
	if len(n.held) == 0 {
		return
	}
	n.noticesSent.Add(uint64(len(n.held)))
	n.t.Send(n.held) // the transports keep the messages, not the slice
	clear(n.held)
	n.held = n.held[:0]
}

// CommitNoticeCounts returns how many commit notices this node, as a
// leader, sent after holding them and how many a later message made
// redundant (see "Commit notices held back").
func (n *Node) CommitNoticeCounts() (sent, replaced uint64) {
	return n.noticesSent.Load(), n.noticesReplaced.Load()
}

// newStoppedTimer returns a timer that has not been started.
func newStoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}
