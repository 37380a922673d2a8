package transport

import pb "go.etcd.io/raft/v3/raftpb"

// Screening reasons (the reason label of
// kayadb_transport_messages_rejected_total).
const (
	screenLocal = "local_type"
	screenSnap  = "snapshot_outside_stream"
)

// peerTypes are the message types one node sends another in a message
// frame. Everything else raft uses only inside a node: MsgHup, MsgBeat,
// MsgUnreachable, MsgSnapStatus, MsgCheckQuorum, MsgForgetLeader and the
// storage messages (MsgStorageAppend, MsgStorageApply and their
// responses), and any type a later raft release adds until it is listed
// here. MsgSnap crosses the network, but only in a snapshot stream, whose
// receiver stores the snapshot before raft sees the message.
var peerTypes = map[pb.MessageType]bool{
	pb.MsgProp: true, // a follower forwards proposals to the leader
	pb.MsgApp:  true, pb.MsgAppResp: true,
	pb.MsgVote: true, pb.MsgVoteResp: true,
	pb.MsgPreVote: true, pb.MsgPreVoteResp: true,
	pb.MsgHeartbeat: true, pb.MsgHeartbeatResp: true,
	pb.MsgTransferLeader: true, // forwarded to the leader
	pb.MsgTimeoutNow:     true,
	pb.MsgReadIndex:      true, pb.MsgReadIndexResp: true,
}

// screen returns why a message that arrived in a message frame must not
// reach raft, or "" when it may. It looks at the type only: whether the
// message fits this node's state (an acknowledgement beyond its log, say)
// is for the raft node to judge.
func screen(m *pb.Message) string {
	t := m.GetType()
	switch {
	case peerTypes[t]:
		return ""
	case t == pb.MsgSnap:
		return screenSnap
	default:
		return screenLocal
	}
}
