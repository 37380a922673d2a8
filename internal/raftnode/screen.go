package raftnode

import (
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/confchange"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"
)

// Screening
//
// The raft library trusts its messages: it was written for peers that run
// the same code, and several malformed messages make it panic (it calls
// Panicf on broken invariants) or corrupt its bookkeeping. The transport
// checks who may connect; the node checks what arrives, on the loop, just
// before RawNode.Step, against the node's own log and configuration. A
// message that fails a check is dropped (raft tolerates lost messages) and
// counted by reason; the first of each reason in a minute is logged.
//
// Each reason below names the raft code path it protects (go.etcd.io/raft
// v3.7.0).

// ScreenReason is why a message from the network was dropped before raft.
type ScreenReason int

// The reasons. Their String is the metric label.
const (
	screenOK ScreenReason = iota
	// ScreenUnknownType: a message type raft does not define. No peer
	// sends one; raft would silently ignore it.
	ScreenUnknownType
	// ScreenLocalType: a type raft uses only inside one node (MsgHup,
	// MsgBeat, MsgUnreachable, MsgSnapStatus, MsgCheckQuorum, the storage
	// messages). RawNode.Step refuses them unless From is one of raft's
	// local thread ids (math.MaxUint64, math.MaxUint64-1), which lets a
	// forged MsgStorageApplyResp reach raftLog.appliedTo and panic there
	// ("applied(i) is out of range"), or a MsgHup start elections at will.
	ScreenLocalType
	// ScreenBadSender: From is 0 or this node, or To is not this node. A
	// MsgReadIndex "from" 0 is taken for a local read and raft indexes its
	// missing request context (responseToReadIndexReq: index out of
	// range); a MsgAppResp "from" the leader itself moves its own progress.
	ScreenBadSender
	// ScreenNotMember: From is not in raft's configuration (once this node
	// has one). Raft ignores most such messages, but votes and appends from
	// a non-member are never sent by a correct peer.
	ScreenNotMember
	// ScreenZeroTerm: a message that raft always sends with a term carries
	// none. Raft treats term 0 as a local message and skips its term checks
	// (raft.Step): a MsgApp at term 0 would be taken as from the current
	// leader.
	ScreenZeroTerm
	// ScreenAckBeyondLog: a MsgAppResp acknowledging (or naming, in a
	// rejection) an index past this node's last index. The leader moves the
	// follower's Match and Next there (Progress.MaybeUpdate), then finds no
	// entries to send and falls back to a snapshot: "need non-empty
	// snapshot" panics when there is none (maybeSendSnapshot), and with two
	// such acknowledgements raftLog.commitTo panics ("tocommit(i) is out of
	// range [lastIndex(j)]").
	ScreenAckBeyondLog
	// ScreenCommitBeyondLog: a MsgHeartbeat whose commit index is past
	// this node's last index: raftLog.commitTo panics (handleHeartbeat). A
	// leader sends at most the follower's acknowledged index.
	ScreenCommitBeyondLog
	// ScreenBadHeartbeatContext: a heartbeat (or its response) whose
	// context is neither empty nor the 8 bytes raft writes: the leader
	// decodes it with binary.LittleEndian.Uint64 (readOnly.recvAck) and
	// panics on a shorter one; a follower echoes it to the leader.
	ScreenBadHeartbeatContext
	// ScreenBadAppend: a MsgApp whose entries do not follow its Index one
	// by one, whose terms go down, fall below LogTerm or exceed the
	// message's term, or whose entry type is unknown. raftLog.maybeAppend
	// panics on such slices ("entry i conflict with committed entry",
	// "index, i, is out of range"), or appends a log no leader wrote.
	ScreenBadAppend
	// ScreenSnapshotOutsideStream: a MsgSnap that came as a message frame,
	// not at the end of a checked snapshot stream. Raft would accept it and
	// the node would try to install files it never received.
	ScreenSnapshotOutsideStream
	// ScreenBadSnapshot: a MsgSnap without a snapshot, with index or term
	// 0, a term past the message's, or a configuration that raft cannot
	// restore: raft.restore panics ("unable to restore config", or "ConfStates
	// not equivalent" for an id that is both voter and learner).
	ScreenBadSnapshot
	// ScreenBadProposal: a forwarded MsgProp without entries (the leader
	// panics: "stepped empty MsgProp") or with a configuration change that
	// does not decode (stepLeader panics on the unmarshal error).
	ScreenBadProposal
	// ScreenBadForward: a message a follower forwards to its leader
	// (MsgProp, MsgReadIndex, MsgTransferLeader) that raft would forward
	// with a term set: raft.send panics ("term should not be set when
	// sending MsgProp"). Correct peers send MsgProp and MsgReadIndex without
	// a term; a forwarded MsgTransferLeader carries the term and is only
	// useful to the leader of that term.
	ScreenBadForward
	numScreenReasons
)

var screenNames = [numScreenReasons]string{
	screenOK:                    "ok",
	ScreenUnknownType:           "unknown_type",
	ScreenLocalType:             "local_type",
	ScreenBadSender:             "bad_sender",
	ScreenNotMember:             "not_member",
	ScreenZeroTerm:              "zero_term",
	ScreenAckBeyondLog:          "ack_beyond_log",
	ScreenCommitBeyondLog:       "commit_beyond_log",
	ScreenBadHeartbeatContext:   "bad_heartbeat_context",
	ScreenBadAppend:             "bad_append",
	ScreenSnapshotOutsideStream: "snapshot_outside_stream",
	ScreenBadSnapshot:           "bad_snapshot",
	ScreenBadProposal:           "bad_proposal",
	ScreenBadForward:            "bad_forward",
}

// String returns the reason's metric label.
func (r ScreenReason) String() string {
	if r >= 0 && r < numScreenReasons {
		return screenNames[r]
	}
	return "unknown"
}

// ScreenReasons lists every reason (for metrics with all labels present).
func ScreenReasons() []ScreenReason {
	out := make([]ScreenReason, 0, numScreenReasons-1)
	for r := screenOK + 1; r < numScreenReasons; r++ {
		out = append(out, r)
	}
	return out
}

// ScreenStats returns how many messages were dropped before raft, by
// reason, since the node started. Every reason is present.
func (n *Node) ScreenStats() map[ScreenReason]uint64 {
	m := make(map[ScreenReason]uint64, numScreenReasons-1)
	for r := screenOK + 1; r < numScreenReasons; r++ {
		m[r] = n.screened[r].Load()
	}
	return m
}

// screenLogEvery bounds the log lines about dropped messages: one per
// reason per minute, so that a flood costs counters, not disk.
const screenLogEvery = time.Minute

func (n *Node) dropped(r ScreenReason, m *pb.Message) {
	n.screened[r].Add(1)
	now := time.Now()
	if now.Sub(n.screenLogs[r]) < screenLogEvery {
		return
	}
	n.screenLogs[r] = now
	n.log.Warn("dropped a raft message that no correct peer sends (further ones of this kind are counted, and logged at most once a minute)",
		"reason", r.String(), "type", m.GetType().String(), "from", m.GetFrom(), "to", m.GetTo(),
		"msg_term", m.GetTerm(), "index", m.GetIndex(), "commit", m.GetCommit(), "entries", len(m.GetEntries()))
}

// refreshMembers reloads the ids of raft's configuration (loop only, and
// New).
func (n *Node) refreshMembers() {
	cfg := n.rn.Status().Config
	m := map[uint64]bool{}
	for id := range cfg.Voters.IDs() {
		m[id] = true
	}
	for id := range cfg.Learners {
		m[id] = true
	}
	for id := range cfg.LearnersNext {
		m[id] = true
	}
	n.members = m
}

// lastIndex is the last index of this node's log as far as peers can know
// it: the stored log, or the entries (or snapshot) of a Ready kept by a
// stall, which a leader has already sent. It never exceeds raft's own last
// index, so what passes the checks against it is safe for raft.
//
// With asynchronous storage writes it is the last index of the newest Ready
// taken (sentLast): its entries may have been sent before they are stored.
// Raft's own last index moves with every Ready (down too, when a follower
// replaces a conflicting tail), so the two differ only between stepping a
// message and taking the Ready it causes.
func (n *Node) lastIndex() uint64 {
	if n.async {
		return n.sentLast
	}
	if p := n.pend; p != nil {
		if k := len(p.rd.Entries); k > 0 {
			return p.rd.Entries[k-1].GetIndex()
		}
		if !raft.IsEmptySnap(p.rd.Snapshot) && !p.snapDone {
			return p.rd.Snapshot.GetMetadata().GetIndex()
		}
	}
	li, err := n.cfg.Log.LastIndex()
	if err != nil {
		return 0
	}
	return li
}

// screen checks a message from the network (fromStream: a MsgSnap handed
// on at the end of a received snapshot stream).
func (n *Node) screen(m *pb.Message, fromStream bool) ScreenReason {
	t := m.GetType()
	if _, ok := pb.MessageType_name[int32(t)]; !ok {
		return ScreenUnknownType
	}
	if raft.IsLocalMsg(t) {
		return ScreenLocalType
	}
	if m.GetFrom() == 0 || m.GetFrom() == n.cfg.ID || m.GetTo() != n.cfg.ID {
		return ScreenBadSender
	}
	if len(n.members) > 0 && !n.members[m.GetFrom()] {
		// A node outside any configuration (a joiner before its snapshot)
		// relies on the transport's roster alone.
		return ScreenNotMember
	}
	switch t {
	case pb.MsgProp, pb.MsgReadIndex:
		if m.GetTerm() != 0 {
			return ScreenBadForward
		}
	case pb.MsgTransferLeader:
		st := n.rn.BasicStatus()
		if st.RaftState != raft.StateLeader || m.GetTerm() != st.GetTerm() {
			return ScreenBadForward
		}
	default:
		if m.GetTerm() == 0 {
			return ScreenZeroTerm
		}
	}
	switch t {
	case pb.MsgAppResp:
		last := n.lastIndex()
		if m.GetIndex() > last || (m.GetReject() && m.GetRejectHint() > last) {
			return ScreenAckBeyondLog
		}
	case pb.MsgHeartbeatResp:
		if !heartbeatContextOK(m.GetContext()) {
			return ScreenBadHeartbeatContext
		}
	case pb.MsgHeartbeat:
		if !heartbeatContextOK(m.GetContext()) {
			return ScreenBadHeartbeatContext
		}
		if m.GetCommit() > n.lastIndex() {
			return ScreenCommitBeyondLog
		}
	case pb.MsgApp:
		if !appendOK(m) {
			return ScreenBadAppend
		}
	case pb.MsgSnap:
		if !fromStream {
			return ScreenSnapshotOutsideStream
		}
		if !snapshotOK(m) {
			return ScreenBadSnapshot
		}
	case pb.MsgProp:
		if !proposalOK(m) {
			return ScreenBadProposal
		}
	}
	return screenOK
}

// heartbeatContextOK: raft's heartbeat context is empty or one uint64.
func heartbeatContextOK(ctx []byte) bool { return len(ctx) == 0 || len(ctx) == 8 }

func entryTypeOK(t pb.EntryType) bool {
	return t == pb.EntryNormal || t == pb.EntryConfChange || t == pb.EntryConfChangeV2
}

// appendOK checks that a MsgApp's entries are the slice a leader sends:
// indexes Index+1, Index+2, ... (without overflow), terms not below LogTerm,
// never decreasing and not above the message's term.
func appendOK(m *pb.Message) bool {
	prev, term := m.GetIndex(), m.GetLogTerm()
	if term > m.GetTerm() {
		return false
	}
	for _, e := range m.GetEntries() {
		if prev+1 == 0 || e.GetIndex() != prev+1 || e.GetTerm() < term || e.GetTerm() > m.GetTerm() || !entryTypeOK(e.GetType()) {
			return false
		}
		prev, term = e.GetIndex(), e.GetTerm()
	}
	return true
}

// snapshotOK checks a MsgSnap's metadata, and its configuration with the
// same code raft restores it with (confchange.Restore, on a scratch
// tracker).
func snapshotOK(m *pb.Message) bool {
	s := m.GetSnapshot()
	meta := s.GetMetadata()
	if s == nil || meta.GetIndex() == 0 || meta.GetTerm() == 0 || meta.GetTerm() > m.GetTerm() {
		return false
	}
	cs := meta.GetConfState()
	if cs == nil || len(cs.GetVoters()) == 0 {
		return false
	}
	for _, set := range [][]uint64{cs.GetVoters(), cs.GetLearners(), cs.GetVotersOutgoing(), cs.GetLearnersNext()} {
		for _, id := range set {
			if id == 0 {
				return false
			}
		}
	}
	cfg, prs, err := confchange.Restore(confchange.Changer{
		Tracker:   tracker.MakeProgressTracker(1, 0),
		LastIndex: meta.GetIndex(),
	}, cs)
	if err != nil {
		return false
	}
	// Raft then asserts that the configuration it built is the one the
	// snapshot describes (assertConfStatesEquivalent panics otherwise: an
	// id listed as both voter and learner is restored as a learner).
	trk := tracker.MakeProgressTracker(1, 0)
	trk.Config, trk.Progress = cfg, prs
	return trk.ConfState().Equivalent(cs) == nil
}

// proposalOK checks a forwarded proposal: at least one entry, known entry
// types, configuration changes that decode.
func proposalOK(m *pb.Message) bool {
	if len(m.GetEntries()) == 0 {
		return false
	}
	for _, e := range m.GetEntries() {
		var err error
		switch e.GetType() {
		case pb.EntryNormal:
		case pb.EntryConfChange:
			err = proto.Unmarshal(e.GetData(), &pb.ConfChange{})
		case pb.EntryConfChangeV2:
			err = proto.Unmarshal(e.GetData(), &pb.ConfChangeV2{})
		default:
			return false
		}
		if err != nil {
			return false
		}
	}
	return true
}
