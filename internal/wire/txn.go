package wire

import (
	"encoding/binary"
	"fmt"
)

// The codecs in this file belong to the original's transactions (opcodes
// 9–12) and change data capture (13, 14). The layouts are fixed by the
// protocol and the cross-language conformance vectors; a server answers an
// opcode whose feature has not landed with "unknown opcode".

// Error texts of the transaction opcodes, byte for byte as the original
// sends them (reference protocol-later.md §2.1), and the texts KayaDB adds.
// The ones with a verb are fmt formats. MsgTxnConflict (status 3) is in
// wire.go.
const (
	// MsgTxnUnknown (StatusInvalidArgument) answers TXN_OP, TXN_COMMIT or
	// TXN_ROLLBACK of a transaction the server does not know or that has
	// finished; the verb takes the txn id.
	MsgTxnUnknown = "invalid argument: unknown or finished transaction %d"
	// MsgTxnLost (StatusInvalidArgument, a KayaDB text) answers a request
	// for an open transaction that a previous leader held: open
	// transactions live in the leader's memory and are lost when leadership
	// moves. The verbs take the txn id and the term it began in. Clients
	// start the transaction again (ParseTxnLost tells the text apart).
	MsgTxnLost = "transaction %d was lost when leadership moved (term %d); start it again"
	// MsgTxnOpUnknownKind (StatusInvalidArgument) answers a TXN_OP whose op
	// is not 1–3; the verb takes the op.
	MsgTxnOpUnknownKind = "unknown TXN_OP kind: %d"
	// MsgACLDenied (StatusError) answers a request its token's ACL does not
	// allow.
	MsgACLDenied = "acl denied"
	// MsgTxnEmptyKey (StatusInvalidArgument) is the original's answer to a
	// TXN_OP put or delete of the empty key.
	MsgTxnEmptyKey = "invalid argument: empty keys are not supported in MVP"
	// MsgTxnKeyTooLong (StatusInvalidArgument): the verb takes the key
	// length; the limit is MaxKeySize.
	MsgTxnKeyTooLong = "invalid argument: key length %d exceeds max 4096"
	// MsgTxnValueTooLong (StatusInvalidArgument): the verb takes the value
	// length; the limit is MaxValueSize.
	MsgTxnValueTooLong = "invalid argument: value length %d exceeds max 16777216"
	// MsgRaftUnavailable and MsgReplyDropped (StatusError) are the
	// original's answers when a proposal cannot be made or its outcome is
	// lost.
	MsgRaftUnavailable = "raft loop unavailable"
	MsgReplyDropped    = "reply channel dropped"
)

// The original's decoding error texts (StatusInvalidArgument, raw, without
// an "invalid argument:" prefix). A TXN_OP put without its value gets
// fmt.Sprintf(MsgEOFU32, 0): its "TXN_OP put missing value" branch is dead
// code.
const (
	MsgEOFU8     = "unexpected EOF reading u8"
	MsgEOFU16    = "unexpected EOF reading u16 (have %d bytes)"
	MsgEOFU32    = "unexpected EOF reading u32 (have %d bytes)"
	MsgEOFU64    = "unexpected EOF reading u64 (have %d bytes)"
	MsgTruncated = "truncated data: need %d bytes, have %d"
)

// ParseTxnLost recovers the txn id and term of a MsgTxnLost text; ok is
// false for any other text.
func ParseTxnLost(msg string) (txnID, term uint64, ok bool) {
	return parse2(msg, MsgTxnLost)
}

// ParseTxnUnknown recovers the txn id of a MsgTxnUnknown text; ok is false
// for any other text.
func ParseTxnUnknown(msg string) (txnID uint64, ok bool) {
	if _, err := fmt.Sscanf(msg, MsgTxnUnknown, &txnID); err != nil {
		return 0, false
	}
	return txnID, fmt.Sprintf(MsgTxnUnknown, txnID) == msg
}

// TxnOpKind is the kind of a TXN_OP request.
type TxnOpKind uint8

// TXN_OP kinds.
const (
	TxnOpGet    TxnOpKind = 1
	TxnOpPut    TxnOpKind = 2
	TxnOpDelete TxnOpKind = 3
)

// TxnOp is a TXN_OP request.
type TxnOp struct {
	// TxnID is the transaction, from TXN_BEGIN.
	TxnID uint64
	// Kind is get, put or delete.
	Kind TxnOpKind
	// Key is the key operated on.
	Key []byte
	// Value is the value of a put; it is neither encoded nor decoded for
	// the other kinds.
	Value []byte
}

// AppendTxnBeginReply appends a TXN_BEGIN OK payload: txn_id u64 ·
// snapshot_ts u64.
func AppendTxnBeginReply(dst []byte, txnID, snapshotTS uint64) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, txnID)
	return binary.LittleEndian.AppendUint64(dst, snapshotTS)
}

// DecodeTxnBeginReply decodes a TXN_BEGIN OK payload.
func DecodeTxnBeginReply(p []byte) (txnID, snapshotTS uint64, err error) {
	d := decoder{msg: "TXN_BEGIN reply", p: p}
	if txnID, err = d.u64("txn_id"); err != nil {
		return 0, 0, err
	}
	if snapshotTS, err = d.u64("snapshot_ts"); err != nil {
		return 0, 0, err
	}
	return txnID, snapshotTS, nil
}

// AppendTxnOp appends a TXN_OP request payload: txn_id u64 · op u8 ·
// bytes32 key · [bytes32 value, for TxnOpPut only].
func AppendTxnOp(dst []byte, op TxnOp) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, op.TxnID)
	dst = append(dst, byte(op.Kind))
	dst = appendBytes32(dst, op.Key)
	if op.Kind == TxnOpPut {
		dst = appendBytes32(dst, op.Value)
	}
	return dst
}

// DecodeTxnOp decodes a TXN_OP request payload. A kind other than 1–3 is
// an error.
func DecodeTxnOp(p []byte) (TxnOp, error) {
	d := decoder{msg: "TXN_OP request", p: p}
	var op TxnOp
	var err error
	if op.TxnID, err = d.u64("txn_id"); err != nil {
		return TxnOp{}, err
	}
	kind, err := d.u8("op")
	if err != nil {
		return TxnOp{}, err
	}
	op.Kind = TxnOpKind(kind)
	if op.Kind < TxnOpGet || op.Kind > TxnOpDelete {
		return TxnOp{}, fmt.Errorf("%w: TXN_OP request: unknown op %d", ErrMalformed, kind)
	}
	if op.Key, err = d.bytes32("key"); err != nil {
		return TxnOp{}, err
	}
	if op.Kind == TxnOpPut {
		if op.Value, err = d.bytes32("value"); err != nil {
			return TxnOp{}, err
		}
	}
	return op, nil
}

// AppendTxnID appends a txn_id u64: the request payload of TXN_COMMIT and
// TXN_ROLLBACK.
func AppendTxnID(dst []byte, txnID uint64) []byte {
	return binary.LittleEndian.AppendUint64(dst, txnID)
}

// DecodeTxnID decodes a TXN_COMMIT or TXN_ROLLBACK request payload.
func DecodeTxnID(p []byte) (uint64, error) {
	d := decoder{msg: "txn id payload", p: p}
	return d.u64("txn_id")
}

// AppendTxnCommitReply appends a TXN_COMMIT OK payload: commit_ts u64.
func AppendTxnCommitReply(dst []byte, commitTS uint64) []byte {
	return binary.LittleEndian.AppendUint64(dst, commitTS)
}

// DecodeTxnCommitReply decodes a TXN_COMMIT OK payload.
func DecodeTxnCommitReply(p []byte) (uint64, error) {
	d := decoder{msg: "TXN_COMMIT reply", p: p}
	return d.u64("commit_ts")
}

// CDCOp is the kind of a change event.
type CDCOp uint8

// CDC event kinds.
const (
	CDCOpPut    CDCOp = 1
	CDCOpDelete CDCOp = 2
)

// CDCPoll is a CDC_POLL request.
type CDCPoll struct {
	// Consumer names the cursor (at most MaxTokenSize bytes of UTF-8).
	Consumer string
	// FromSeq is the first sequence number wanted.
	FromSeq uint64
	// Limit is the most events wanted.
	Limit uint32
}

// CDCEvent is one change event of a CDC_POLL reply.
type CDCEvent struct {
	// Seq is the event's sequence number.
	Seq uint64
	// Op is put or delete.
	Op CDCOp
	// Key is the key changed.
	Key []byte
	// Value is the value put; it is neither encoded nor decoded for a
	// delete.
	Value []byte
}

// AppendCDCPoll appends a CDC_POLL request payload: bytes16 consumer ·
// from_seq u64 · limit u32. A consumer longer than MaxTokenSize is cut.
func AppendCDCPoll(dst []byte, req CDCPoll) []byte {
	dst = appendString16(dst, req.Consumer)
	dst = binary.LittleEndian.AppendUint64(dst, req.FromSeq)
	return binary.LittleEndian.AppendUint32(dst, req.Limit)
}

// DecodeCDCPoll decodes a CDC_POLL request payload. A consumer name that
// is not valid UTF-8 is an error.
func DecodeCDCPoll(p []byte) (CDCPoll, error) {
	d := decoder{msg: "CDC_POLL request", p: p}
	var req CDCPoll
	var err error
	if req.Consumer, err = d.text16("consumer"); err != nil {
		return CDCPoll{}, err
	}
	if req.FromSeq, err = d.u64("from_seq"); err != nil {
		return CDCPoll{}, err
	}
	if req.Limit, err = d.u32("limit"); err != nil {
		return CDCPoll{}, err
	}
	return req, nil
}

// AppendCDCPollReply appends a CDC_POLL OK payload: count u32 · (seq u64 ·
// op u8 · bytes32 key · [bytes32 value, for CDCOpPut only])*.
func AppendCDCPollReply(dst []byte, events []CDCEvent) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(events)))
	for _, e := range events {
		dst = binary.LittleEndian.AppendUint64(dst, e.Seq)
		dst = append(dst, byte(e.Op))
		dst = appendBytes32(dst, e.Key)
		if e.Op == CDCOpPut {
			dst = appendBytes32(dst, e.Value)
		}
	}
	return dst
}

// cdcEventMin is the smallest encoded event: seq, op and an empty key.
const cdcEventMin = 8 + 1 + 4

// DecodeCDCPollReply decodes a CDC_POLL OK payload. An op other than put
// or delete is an error. The result never reserves more events than the
// payload can hold.
func DecodeCDCPollReply(p []byte) ([]CDCEvent, error) {
	d := decoder{msg: "CDC_POLL reply", p: p}
	count, err := d.u32("count")
	if err != nil {
		return nil, err
	}
	events := make([]CDCEvent, 0, min(uint64(count), uint64(d.rest()/cdcEventMin)))
	for i := range count {
		var e CDCEvent
		if e.Seq, err = d.u64("seq"); err != nil {
			return nil, fmt.Errorf("%w (event %d of %d)", err, i, count)
		}
		op, err := d.u8("op")
		if err != nil {
			return nil, fmt.Errorf("%w (event %d of %d)", err, i, count)
		}
		e.Op = CDCOp(op)
		if e.Op != CDCOpPut && e.Op != CDCOpDelete {
			return nil, fmt.Errorf("%w: CDC_POLL reply: unknown event op %d (event %d of %d)", ErrMalformed, op, i, count)
		}
		if e.Key, err = d.bytes32("key"); err != nil {
			return nil, fmt.Errorf("%w (event %d of %d)", err, i, count)
		}
		if e.Op == CDCOpPut {
			if e.Value, err = d.bytes32("value"); err != nil {
				return nil, fmt.Errorf("%w (event %d of %d)", err, i, count)
			}
		}
		events = append(events, e)
	}
	return events, nil
}

// AppendCDCCheckpoint appends a CDC_CHECKPOINT request payload: bytes16
// consumer. A consumer longer than MaxTokenSize is cut.
func AppendCDCCheckpoint(dst []byte, consumer string) []byte {
	return appendString16(dst, consumer)
}

// DecodeCDCCheckpoint decodes a CDC_CHECKPOINT request payload. A consumer
// name that is not valid UTF-8 is an error.
func DecodeCDCCheckpoint(p []byte) (string, error) {
	d := decoder{msg: "CDC_CHECKPOINT request", p: p}
	return d.text16("consumer")
}
