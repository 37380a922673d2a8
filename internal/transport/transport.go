// Package transport carries Raft messages between the nodes of a cluster.
//
// It owns the peer connections: one outbound TCP connection per peer for
// sending, any number of inbound connections for receiving. It must never
// block the Raft loop (Send enqueues into a bounded queue per peer and drops
// when it is full), never deliver a message that is not addressed to this
// node or that comes from a node outside the roster, and never let one
// malformed frame affect another connection.
//
// # Wire format
//
// A connection starts with a handshake, then carries either message frames
// (kind 0) or one snapshot stream (kind 1):
//
//	handshake: magic "KAYARAFT" (8) | version u16 LE (=2) | kind u8 | from u64 LE | to u64 LE
//	frame:     length u32 LE | CRC32C u32 LE (masked, over the payload) | payload
//	snapshot:  the stream of internal/snap, then the receiver answers one
//	           byte: 0 stored and handed to raft, 1 refused
//
// The payload of a message frame is a protobuf-encoded raftpb.Message. A
// frame longer than MaxFrameSize closes the connection before anything is
// allocated.
package transport

import (
	"io"
	"sync/atomic"

	pb "go.etcd.io/raft/v3/raftpb"
)

// MaxFrameSize bounds one frame (64 MiB).
const MaxFrameSize = 64 << 20

// Handler receives the messages addressed to this node.
type Handler interface {
	// Receive hands an incoming message to Raft. It must not block for long.
	Receive(m *pb.Message)
	// ReportUnreachable tells Raft that a message to id was dropped.
	ReportUnreachable(id uint64)
	// ReceiveSnapshot consumes a snapshot stream from peer from: it stores
	// the checkpoint durably and hands the MsgSnap to Raft. A nil error is
	// the receiver's acknowledgement.
	ReceiveSnapshot(from uint64, r io.Reader) error
}

// Transport sends Raft messages to peers.
type Transport interface {
	// Send enqueues messages for their destinations without blocking.
	// Messages to unknown peers, or that do not fit a peer's queue, are
	// dropped (and the peer reported unreachable).
	Send(msgs []*pb.Message)
	// SetPeers replaces the roster: the set of peers (id → raft address)
	// this node may talk to. Connections to removed peers are closed.
	SetPeers(peers map[uint64]string)
	// SendSnapshot streams a snapshot to peer to on its own connection, in
	// the background: write produces the stream; done reports the outcome
	// (nil once the receiver acknowledged it).
	SendSnapshot(to uint64, write func(w io.Writer) error, done func(error))
	// Stats returns counters.
	Stats() Stats
	// Close stops every goroutine and closes every connection.
	Close() error
}

// Stats are the transport's counters.
type Stats struct {
	Sent            uint64 // messages written to a connection
	Received        uint64 // messages delivered to the handler
	DroppedFull     uint64 // dropped because a peer's queue was full
	DroppedUnknown  uint64 // outgoing messages to ids outside the roster
	RejectedFrom    uint64 // incoming messages from ids outside the roster
	RejectedTo      uint64 // incoming messages addressed to another id
	BadFrames       uint64 // connections closed for a malformed frame
	Dials           uint64 // connection attempts
	DialFailures    uint64
	ConnectedPeers  int
	SnapshotsSent   uint64 // snapshot streams acknowledged by the receiver
	SnapshotsFailed uint64 // snapshot streams that failed (either side)
	SnapshotsRecv   uint64 // snapshot streams received and acknowledged
	RejectedTLS     uint64 // inbound connections whose TLS handshake failed
}

type counters struct {
	sent, received, droppedFull, droppedUnknown       atomic.Uint64
	rejectedFrom, rejectedTo, badFrames, dials, fails atomic.Uint64
	snapSent, snapFailed, snapRecv                    atomic.Uint64
	rejectedTLS                                       atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Sent: c.sent.Load(), Received: c.received.Load(),
		DroppedFull: c.droppedFull.Load(), DroppedUnknown: c.droppedUnknown.Load(),
		RejectedFrom: c.rejectedFrom.Load(), RejectedTo: c.rejectedTo.Load(),
		BadFrames: c.badFrames.Load(), Dials: c.dials.Load(), DialFailures: c.fails.Load(),
		SnapshotsSent: c.snapSent.Load(), SnapshotsFailed: c.snapFailed.Load(), SnapshotsRecv: c.snapRecv.Load(),
		RejectedTLS: c.rejectedTLS.Load(),
	}
}
