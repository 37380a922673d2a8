package raftnode

// ProposalsQueued returns how many proposals wait for the raft loop (queued,
// not yet handed to raft).
func (n *Node) ProposalsQueued() int { return len(n.propc) }

// ProposalsDropped returns how many proposals raft refused since the node
// started (no leader, a leadership transfer, or too much uncommitted data):
// they were not appended.
func (n *Node) ProposalsDropped() uint64 { return n.proposalsDropped.Load() }
