// Package transport carries Raft messages between the nodes of a cluster.
//
// It owns the peer connections: one outbound TCP connection per peer for
// sending, any number of inbound connections for receiving. It must never
// block the Raft loop (Send enqueues into a bounded queue per peer and drops
// when it is full), never deliver a message that is not addressed to this
// node or that comes from a node outside the roster, never read a frame
// from a peer that has not proven it holds the cluster's peer token (when
// one is configured), and never let one malformed frame affect another
// connection.
//
// # Wire format
//
// A connection starts with a handshake, then carries either message frames
// (kind 0) or one snapshot stream (kind 1):
//
//	hello (dialer):    magic "KAYARAFT" (8) | version u16 LE (=3) | kind u8 | from u64 LE | to u64 LE
//	                   | auth u8 (0 none, 1 HMAC-SHA256) | nonce [32]
//	reply (acceptor):  status u8 (0 go on, 1 token required, 2 no token here) | auth u8 | nonce [32] | proof [32]
//	proof (dialer):    proof [32]                       (only when both sides use a token)
//	frame:             length u32 LE | CRC32C u32 LE (masked, over the payload) | payload
//	snapshot:          the stream of internal/snap, then the receiver answers one
//	                   byte: 0 stored and handed to raft, 1 refused
//
// The payload of a message frame is a protobuf-encoded raftpb.Message. A
// frame longer than MaxFrameSize closes the connection; a shorter one is
// read in chunks of at most 1 MiB, so memory follows the bytes that
// actually arrived, not the length a peer announced.
//
// # Peer authentication
//
// With a peer token (TCPOptions.PeerToken, a secret every member holds),
// the handshake is a mutual challenge-response. The dialer sends its hello
// with a fresh random nonce; the acceptor answers with its own nonce and
// its proof; the dialer checks that proof before it sends anything more,
// then sends its own; the acceptor checks it before it reads a frame. A
// proof is
//
//	HMAC-SHA256(token, "kaya-raft-v3" | role | kind | from u64 LE | to u64 LE | dialer nonce | acceptor nonce)
//
// with role 'A' for the acceptor and 'D' for the dialer. Both nonces come
// from crypto/rand for every connection, so a proof seen on one connection
// is worthless on another (replay); the role byte keeps an acceptor's
// proof, which anyone who dials in can obtain, from serving as a dialer's
// (reflection); and the dialer proves itself last, so an impostor at a
// member's address learns nothing it could use. Proofs are compared in
// constant time. The token authenticates connections, not bytes: it does
// not encrypt, and someone on the path between two nodes can still read or
// alter the traffic; TLS (which this package takes as a Dial function and
// a tls.Listener) is the answer to that.
//
// Before authentication an inbound connection may send only the
// fixed-size handshake, within TCPOptions.HandshakeTimeout; the number of
// inbound connections is capped in all and, while they are unauthenticated,
// per source address. Connections refused for any of these reasons are
// counted by reason, and log lines about one source are limited to one per
// minute for each reason.
//
// # Screening
//
// Raft uses some message types only inside a node (MsgHup, MsgBeat, the
// storage messages, ...), and MsgSnap travels only inside a snapshot
// stream. A frame carrying one of them is dropped and counted: no correct
// peer sends it.
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

	// Connections refused before any frame was read (reason label of
	// kayadb_transport_rejected_total).
	RejectedAuth        uint64 // peer token missing on one side, or a proof that does not check out (either direction)
	RejectedVersion     uint64 // inbound handshakes of another protocol version
	RejectedConnLimit   uint64 // inbound connections over MaxInboundConns
	RejectedSourceLimit uint64 // inbound connections over MaxUnauthenticatedPerSource
	InboundConns        int    // inbound connections open now

	// Messages dropped by screening (see the package doc).
	ScreenedLocal uint64 // message types used only inside a node
	ScreenedSnap  uint64 // MsgSnap in a message frame instead of a snapshot stream
}

type counters struct {
	sent, received, droppedFull, droppedUnknown       atomic.Uint64
	rejectedFrom, rejectedTo, badFrames, dials, fails atomic.Uint64
	snapSent, snapFailed, snapRecv                    atomic.Uint64
	rejectedTLS                                       atomic.Uint64
	rejectedAuth, rejectedVersion                     atomic.Uint64
	rejectedConnLimit, rejectedSourceLimit            atomic.Uint64
	screenedLocal, screenedSnap                       atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Sent: c.sent.Load(), Received: c.received.Load(),
		DroppedFull: c.droppedFull.Load(), DroppedUnknown: c.droppedUnknown.Load(),
		RejectedFrom: c.rejectedFrom.Load(), RejectedTo: c.rejectedTo.Load(),
		BadFrames: c.badFrames.Load(), Dials: c.dials.Load(), DialFailures: c.fails.Load(),
		SnapshotsSent: c.snapSent.Load(), SnapshotsFailed: c.snapFailed.Load(), SnapshotsRecv: c.snapRecv.Load(),
		RejectedTLS:  c.rejectedTLS.Load(),
		RejectedAuth: c.rejectedAuth.Load(), RejectedVersion: c.rejectedVersion.Load(),
		RejectedConnLimit: c.rejectedConnLimit.Load(), RejectedSourceLimit: c.rejectedSourceLimit.Load(),
		ScreenedLocal: c.screenedLocal.Load(), ScreenedSnap: c.screenedSnap.Load(),
	}
}
