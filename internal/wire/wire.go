package wire

import (
	"errors"
	"strconv"
	"strings"
)

// ProtocolVersion is the protocol version this package speaks; HELLO
// carries it in both directions.
const ProtocolVersion uint16 = 1

// Limits of the protocol.
const (
	// MaxFrameSize is the largest frame_len a reader accepts: 64 MiB.
	MaxFrameSize = 64 << 20
	// MaxKeySize is the largest key, in bytes; larger is INVALID_ARGUMENT.
	MaxKeySize = 4096
	// MaxValueSize is the largest value, in bytes; larger is
	// INVALID_ARGUMENT.
	MaxValueSize = 16 << 20
	// MaxScanItems caps the items a server returns for one SCAN.
	MaxScanItems = 100000
	// MaxScanBytes caps the bytes of keys and values a server returns for
	// one SCAN (the first item is returned even when it alone is larger).
	MaxScanBytes = 64 << 20
	// MaxScanDecodeCount is the largest SCAN item count a decoder accepts;
	// a larger count is refused before anything is allocated.
	MaxScanDecodeCount = 1000000
	// MaxTokenSize is the longest token (or CDC consumer name) a bytes16
	// field can carry.
	MaxTokenSize = 1<<16 - 1
)

// Opcode is the first byte of a request frame's body.
type Opcode uint8

// Opcodes of protocol version 1. 9–22 are reserved for later features and,
// until a feature lands, answered with StatusError "unknown opcode: N".
// Project-specific additions take numbers from 64 upward.
const (
	OpHello          Opcode = 0
	OpPut            Opcode = 1
	OpGet            Opcode = 2
	OpDelete         Opcode = 3
	OpScan           Opcode = 4
	OpHealth         Opcode = 5
	OpStats          Opcode = 6
	OpAddMember      Opcode = 7
	OpRemoveMember   Opcode = 8
	OpTxnBegin       Opcode = 9
	OpTxnOp          Opcode = 10
	OpTxnCommit      Opcode = 11
	OpTxnRollback    Opcode = 12
	OpCDCPoll        Opcode = 13
	OpCDCCheckpoint  Opcode = 14
	OpListRanges     Opcode = 15
	OpSplitRange     Opcode = 16
	OpMergeRange     Opcode = 17
	OpTransferLeader Opcode = 18
	OpPromoteLearner Opcode = 19
	OpRebalancePlan  Opcode = 20
	OpMoveRange      Opcode = 21
	OpTxnForward     Opcode = 22

	// KayaDB additions (admin; see backup.go).
	OpBackupBegin  Opcode = 64
	OpBackupRead   Opcode = 65
	OpBackupEnd    Opcode = 66
	OpBackupStatus Opcode = 67

	// KayaDB additions for versioned data: OpKayaTxn (68), OpGetAt (69)
	// and OpScanAt (70), data opcodes; see mvcc.go. Change feeds and
	// watches: OpWatchCreate (71), OpWatchCancel (72), OpCDCConsumer
	// (73), data opcodes; see watch.go.
)

var opcodeNames = [...]string{
	OpHello:          "HELLO",
	OpPut:            "PUT",
	OpGet:            "GET",
	OpDelete:         "DELETE",
	OpScan:           "SCAN",
	OpHealth:         "HEALTH",
	OpStats:          "STATS",
	OpAddMember:      "ADD_MEMBER",
	OpRemoveMember:   "REMOVE_MEMBER",
	OpTxnBegin:       "TXN_BEGIN",
	OpTxnOp:          "TXN_OP",
	OpTxnCommit:      "TXN_COMMIT",
	OpTxnRollback:    "TXN_ROLLBACK",
	OpCDCPoll:        "CDC_POLL",
	OpCDCCheckpoint:  "CDC_CHECKPOINT",
	OpListRanges:     "LIST_RANGES",
	OpSplitRange:     "SPLIT_RANGE",
	OpMergeRange:     "MERGE_RANGE",
	OpTransferLeader: "TRANSFER_LEADER",
	OpPromoteLearner: "PROMOTE_LEARNER",
	OpRebalancePlan:  "REBALANCE_PLAN",
	OpMoveRange:      "MOVE_RANGE",
	OpTxnForward:     "TXN_FORWARD",
	OpBackupBegin:    "BACKUP_BEGIN",
	OpBackupRead:     "BACKUP_READ",
	OpBackupEnd:      "BACKUP_END",
	OpBackupStatus:   "BACKUP_STATUS",
	OpKayaTxn:        "KAYA_TXN",
	OpGetAt:          "GET_AT",
	OpScanAt:         "SCAN_AT",
	OpWatchCreate:    "WATCH_CREATE",
	OpWatchCancel:    "WATCH_CANCEL",
	OpCDCConsumer:    "CDC_CONSUMER",
}

// String returns the protocol name of op ("PUT"), or "OPCODE(N)" for a
// number the protocol does not define.
func (op Opcode) String() string {
	if int(op) < len(opcodeNames) && opcodeNames[op] != "" {
		return opcodeNames[op]
	}
	return "OPCODE(" + strconv.Itoa(int(op)) + ")"
}

// IsAdmin reports whether op is an admin opcode (7, 8, 18–22, and the
// backup opcodes 64–67): one that carries the ADMIN prefix when the server
// has an operator token.
func IsAdmin(op Opcode) bool {
	return op == OpAddMember || op == OpRemoveMember || (op >= OpTransferLeader && op <= OpTxnForward) ||
		(op >= OpBackupBegin && op <= OpBackupStatus)
}

// IsData reports whether op is a data opcode (1–4, 6, 9–17, the
// versioned-data opcodes 68–70 and the watch and feed opcodes 71–73): one
// that carries the CLIENT prefix when the server has a client token.
func IsData(op Opcode) bool {
	return (op >= OpPut && op <= OpScan) || op == OpStats || (op >= OpTxnBegin && op <= OpMergeRange) ||
		(op >= OpKayaTxn && op <= OpScanAt) || (op >= OpWatchCreate && op <= OpCDCConsumer)
}

// Status is the first field of a response frame's body.
type Status uint16

// Status codes. Clients treat any other code as StatusError.
const (
	// StatusOK: success; the payload depends on the opcode.
	StatusOK Status = 0
	// StatusInvalidArgument: the request was malformed or out of limits;
	// the payload is an error body.
	StatusInvalidArgument Status = 1
	// StatusNotFound: the key is absent; the payload is empty.
	StatusNotFound Status = 2
	// StatusTxnConflict: a transaction conflicted; the payload is an
	// error body.
	StatusTxnConflict Status = 3
	// StatusError: any other failure (I/O, consensus, credentials, unknown
	// opcode); the payload is an error body.
	StatusError Status = 9
	// StatusNotLeader: this node does not lead; the payload is the raw
	// client address of the leader, empty when no leader is known.
	StatusNotLeader Status = 10
	// StatusRangeMoved is reserved for range sharding.
	StatusRangeMoved Status = 11

	// StatusCompacted (64, a KayaDB addition) is in mvcc.go;
	// StatusWatchEvent (65, pushed, answers no request) in watch.go.
)

// String returns the protocol name of s ("NOT_LEADER"), or "STATUS(N)"
// for a code the protocol does not define.
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "OK"
	case StatusInvalidArgument:
		return "INVALID_ARGUMENT"
	case StatusNotFound:
		return "NOT_FOUND"
	case StatusTxnConflict:
		return "TXN_CONFLICT"
	case StatusError:
		return "ERROR"
	case StatusNotLeader:
		return "NOT_LEADER"
	case StatusRangeMoved:
		return "RANGE_MOVED"
	case StatusCompacted:
		return "COMPACTED"
	case StatusWatchEvent:
		return "WATCH_EVENT"
	}
	return "STATUS(" + strconv.Itoa(int(s)) + ")"
}

// Frame errors. Each means the byte stream is no longer trustworthy and the
// connection must be closed.
var (
	// ErrFrameEmpty is a frame whose frame_len is 0.
	ErrFrameEmpty = errors.New("wire: empty frame (frame_len 0)")
	// ErrFrameTooSmall is a response frame whose frame_len (1) cannot hold
	// the status.
	ErrFrameTooSmall = errors.New("wire: response frame shorter than its status")
	// ErrFrameTooLarge is a frame whose frame_len exceeds MaxFrameSize.
	ErrFrameTooLarge = errors.New("wire: frame exceeds 64 MiB")
)

// ErrMalformed matches every payload decoding error: a payload shorter than
// its fields, a length or count out of bounds, text that is not UTF-8, an
// unknown enumeration value or a missing prefix. A server answers it with
// StatusInvalidArgument.
var ErrMalformed = errors.New("wire: malformed payload")

// IsDiskFullRefusal reports whether msg, the text of an ERROR reply, is a
// disk-full node's refusal of a write (MsgDiskFullPrefix ...
// MsgDiskFullRefused), which it makes before proposing the write.
func IsDiskFullRefusal(msg string) bool {
	return strings.HasPrefix(msg, MsgDiskFullPrefix) && strings.Contains(msg, MsgDiskFullRefused)
}

// Error texts of the protocol, byte for byte. The ones with a verb are
// fmt formats.
const (
	// MsgAdminMismatch: the opcode inside an ADMIN prefix differs from the
	// frame's opcode (StatusInvalidArgument).
	MsgAdminMismatch = "admin opcode mismatch"
	// MsgOperatorCredential: an admin request's token is missing or wrong
	// (StatusError).
	MsgOperatorCredential = "operator credential required or invalid"
	// MsgClientCredential: a data request's token is missing or wrong
	// (StatusError).
	MsgClientCredential = "client credential required or invalid"
	// MsgDiskFullPrefix and MsgDiskFullRefused frame KayaDB's refusal of a
	// write by a node in disk-full mode (StatusError; not in the original
	// protocol): "disk full on node N: <why> (<free> free on <dir>); writes
	// are refused until space is freed — free space or add capacity". The
	// node refuses before it proposes anything, so a write answered so was
	// certainly not applied (IsDiskFullRefusal).
	MsgDiskFullPrefix  = "disk full on node "
	MsgDiskFullRefused = "; writes are refused until space is freed"
	// MsgUnknownOpcode formats the answer to an opcode the server does not
	// implement (StatusError); the verb takes the opcode number.
	MsgUnknownOpcode = "unknown opcode: %d"
	// MsgUnsupportedVersion formats the answer to a HELLO with a version
	// above 1 (StatusInvalidArgument); the verb takes the client version.
	MsgUnsupportedVersion = "unsupported protocol version %d (max 1)"
	// MsgAlreadyMember formats the ADD_MEMBER refusal for an existing
	// member (StatusInvalidArgument); the verb takes the node id.
	MsgAlreadyMember = "node %d is already a cluster member"
	// MsgCannotRemove formats the REMOVE_MEMBER refusal
	// (StatusInvalidArgument); the verb takes the node id.
	MsgCannotRemove = "cannot remove node %d (not a member, is self, or would shrink below quorum)"
	// MsgMembershipProposed formats the ADD_MEMBER OK payload; the verb
	// takes the raft log index of the proposal.
	MsgMembershipProposed = "membership change proposed at index %d"
	// MsgMembershipRemovalProposed formats the REMOVE_MEMBER OK payload;
	// the verb takes the raft log index of the proposal.
	MsgMembershipRemovalProposed = "membership removal proposed at index %d"
	// MsgLearnerPromoteProposed formats the PROMOTE_LEARNER OK payload; the
	// verb takes the raft log index of the proposal.
	MsgLearnerPromoteProposed = "learner promote proposed at index %d"
	// MsgTxnConflict is the error body of StatusTxnConflict.
	MsgTxnConflict = "txn conflict"
)
