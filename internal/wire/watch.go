package wire

import (
	"encoding/binary"
	"fmt"
)

// Change feeds and watches (KayaDB additions, data opcodes; layouts in
// doc.go, semantics in docs/design/cdc-and-watch.md).
const (
	// OpWatchCreate opens a watch on the connection (WatchCreate); its OK
	// reply is WatchCreated, then StatusWatchEvent frames follow.
	OpWatchCreate Opcode = 71
	// OpWatchCancel closes a watch: watch_id u64.
	OpWatchCancel Opcode = 72
	// OpCDCConsumer reads or deletes a CDC consumer's stored position
	// (CDCConsumerRequest).
	OpCDCConsumer Opcode = 73
)

// StatusWatchEvent (65) marks a frame the server pushes on a connection
// that holds watches, between replies: it answers no request. Its payload
// is a WatchEvent. A client that never sends WATCH_CREATE never receives
// one.
const StatusWatchEvent Status = 65

// Watch kinds.
const (
	WatchKey    uint8 = 1
	WatchPrefix uint8 = 2
)

// WatchCreate is a WATCH_CREATE request.
type WatchCreate struct {
	// Kind is WatchKey (the exact key) or WatchPrefix (every key that
	// starts with Key; an empty prefix is every key).
	Kind uint8
	// StartRevision is the first revision wanted; 0 means "now" (after
	// the serving node's applied revision).
	StartRevision uint64
	// ProgressMs asks for a progress frame after that many milliseconds
	// without events (0: none).
	ProgressMs uint32
	Key        []byte
}

// MaxWatchProgressMs bounds ProgressMs (one hour); MinWatchProgressMs is
// the shortest interval a server honours (shorter ones are raised to it).
const (
	MaxWatchProgressMs = 3600_000
	MinWatchProgressMs = 100
)

// AppendWatchCreate appends a WATCH_CREATE request payload: kind u8 ·
// start_revision u64 · progress_ms u32 · bytes32 key.
func AppendWatchCreate(dst []byte, req WatchCreate) []byte {
	dst = append(dst, req.Kind)
	dst = binary.LittleEndian.AppendUint64(dst, req.StartRevision)
	dst = binary.LittleEndian.AppendUint32(dst, req.ProgressMs)
	return appendBytes32(dst, req.Key)
}

// DecodeWatchCreate decodes a WATCH_CREATE request payload (strict: an
// unknown kind, a key over MaxKeySize, a progress interval over
// MaxWatchProgressMs or trailing bytes are errors).
func DecodeWatchCreate(p []byte) (WatchCreate, error) {
	d := decoder{msg: "WATCH_CREATE request", p: p}
	var req WatchCreate
	var err error
	if req.Kind, err = d.u8("kind"); err != nil {
		return WatchCreate{}, err
	}
	if req.Kind != WatchKey && req.Kind != WatchPrefix {
		return WatchCreate{}, fmt.Errorf("%w: WATCH_CREATE request: unknown kind %d (1 key, 2 prefix)", ErrMalformed, req.Kind)
	}
	if req.StartRevision, err = d.u64("start_revision"); err != nil {
		return WatchCreate{}, err
	}
	if req.ProgressMs, err = d.u32("progress_ms"); err != nil {
		return WatchCreate{}, err
	}
	if req.ProgressMs > MaxWatchProgressMs {
		return WatchCreate{}, fmt.Errorf("%w: WATCH_CREATE request: progress_ms %d exceeds %d (one hour)", ErrMalformed, req.ProgressMs, MaxWatchProgressMs)
	}
	if req.Key, err = d.bytes32("key"); err != nil {
		return WatchCreate{}, err
	}
	if len(req.Key) > MaxKeySize {
		return WatchCreate{}, fmt.Errorf("%w: WATCH_CREATE request: key of %d bytes exceeds %d", ErrMalformed, len(req.Key), MaxKeySize)
	}
	return req, d.end()
}

// WatchCreated is WATCH_CREATE's OK reply: the watch's id on this
// connection and the first revision it delivers.
type WatchCreated struct {
	ID            uint64
	StartRevision uint64
}

// AppendWatchCreated appends a WATCH_CREATE OK payload: watch_id u64 ·
// start_revision u64.
func AppendWatchCreated(dst []byte, r WatchCreated) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, r.ID)
	return binary.LittleEndian.AppendUint64(dst, r.StartRevision)
}

// DecodeWatchCreated decodes a WATCH_CREATE OK payload (strict).
func DecodeWatchCreated(p []byte) (WatchCreated, error) {
	d := decoder{msg: "WATCH_CREATE reply", p: p}
	var r WatchCreated
	var err error
	if r.ID, err = d.u64("watch_id"); err != nil {
		return WatchCreated{}, err
	}
	if r.StartRevision, err = d.u64("start_revision"); err != nil {
		return WatchCreated{}, err
	}
	return r, d.end()
}

// AppendWatchCancel appends a WATCH_CANCEL request payload: watch_id u64.
func AppendWatchCancel(dst []byte, id uint64) []byte {
	return binary.LittleEndian.AppendUint64(dst, id)
}

// DecodeWatchCancel decodes a WATCH_CANCEL request payload (strict).
func DecodeWatchCancel(p []byte) (uint64, error) {
	d := decoder{msg: "WATCH_CANCEL request", p: p}
	id, err := d.u64("watch_id")
	if err != nil {
		return 0, err
	}
	return id, d.end()
}

// Kinds of a WatchEvent.
const (
	// WatchEvents carries changes: whole commits, in revision order.
	WatchEvents uint8 = 1
	// WatchProgress says every change up to Revision has been sent.
	WatchProgress uint8 = 2
	// WatchCanceled ends the watch, with a reason and a message.
	WatchCanceled uint8 = 3
)

// Reasons of a WatchCanceled frame.
const (
	// CancelCompacted: the start (or the hub's position) is below the
	// retained history; Revision is the oldest start revision available.
	CancelCompacted uint8 = 1
	// CancelSlow: the watch's buffer overflowed (the client read too
	// slowly); Revision is where to resume.
	CancelSlow uint8 = 2
	// CancelStopping: the server is stopping, or its data was replaced;
	// Revision is where to resume (elsewhere).
	CancelStopping uint8 = 3
)

// WatchEvent is the payload of a StatusWatchEvent frame.
type WatchEvent struct {
	ID   uint64
	Kind uint8
	// Revision: EVENTS, the newest revision in the frame; PROGRESS, the
	// revision up to which everything was sent; CANCELED, see the
	// reasons.
	Revision uint64
	// Events (EVENTS): the CDC event layout, whole commits.
	Events []CDCEvent
	// Reason and Message (CANCELED).
	Reason  uint8
	Message string
}

// AppendWatchEvent appends a WATCH_EVENT payload: watch_id u64 · kind u8 ·
// revision u64 · body, where body is, for EVENTS, count u32 · (revision
// u64 · op u8 · bytes32 key · [bytes32 value, op 1])*; for PROGRESS,
// nothing; for CANCELED, reason u8 · bytes32 message.
func AppendWatchEvent(dst []byte, ev *WatchEvent) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, ev.ID)
	dst = append(dst, ev.Kind)
	dst = binary.LittleEndian.AppendUint64(dst, ev.Revision)
	switch ev.Kind {
	case WatchEvents:
		dst = AppendCDCPollReply(dst, ev.Events)
	case WatchCanceled:
		dst = append(dst, ev.Reason)
		dst = appendString32(dst, ev.Message)
	}
	return dst
}

// WatchEventHeader is the size of a WATCH_EVENT payload before its body.
const WatchEventHeader = 8 + 1 + 8

// DecodeWatchEvent decodes a WATCH_EVENT payload (strict).
func DecodeWatchEvent(p []byte) (WatchEvent, error) {
	d := decoder{msg: "WATCH_EVENT", p: p}
	var ev WatchEvent
	var err error
	if ev.ID, err = d.u64("watch_id"); err != nil {
		return WatchEvent{}, err
	}
	if ev.Kind, err = d.u8("kind"); err != nil {
		return WatchEvent{}, err
	}
	if ev.Revision, err = d.u64("revision"); err != nil {
		return WatchEvent{}, err
	}
	switch ev.Kind {
	case WatchEvents:
		if ev.Events, err = DecodeCDCPollReply(p[d.off:]); err != nil {
			return WatchEvent{}, fmt.Errorf("%w (WATCH_EVENT)", err)
		}
		// DecodeCDCPollReply ignores trailing bytes; the re-encoding
		// tells how many it used.
		if n := len(AppendCDCPollReply(nil, ev.Events)); n != len(p)-d.off {
			return WatchEvent{}, fmt.Errorf("%w: WATCH_EVENT: %d trailing bytes after the events", ErrMalformed, len(p)-d.off-n)
		}
		return ev, nil
	case WatchProgress:
	case WatchCanceled:
		if ev.Reason, err = d.u8("reason"); err != nil {
			return WatchEvent{}, err
		}
		if ev.Message, err = d.text32("message"); err != nil {
			return WatchEvent{}, err
		}
	default:
		return WatchEvent{}, fmt.Errorf("%w: WATCH_EVENT: unknown kind %d", ErrMalformed, ev.Kind)
	}
	return ev, d.end()
}

// CDC_CHECKPOINT with a position (our extension): bytes16 consumer ·
// seq u64. The original's request is the consumer alone; its decoder
// ignores trailing bytes, so the extension is invisible to it.

// AppendCDCCheckpointAt appends a CDC_CHECKPOINT request payload that
// names the position to store.
func AppendCDCCheckpointAt(dst []byte, consumer string, seq uint64) []byte {
	return binary.LittleEndian.AppendUint64(appendString16(dst, consumer), seq)
}

// DecodeCDCCheckpointAt decodes a CDC_CHECKPOINT request payload with its
// optional position: hasSeq is false for the original's form (the
// consumer alone). Bytes after the position are ignored, as the
// original's decoders do.
func DecodeCDCCheckpointAt(p []byte) (consumer string, seq uint64, hasSeq bool, err error) {
	d := decoder{msg: "CDC_CHECKPOINT request", p: p}
	if consumer, err = d.text16("consumer"); err != nil {
		return "", 0, false, err
	}
	if d.rest() == 0 {
		return consumer, 0, false, nil
	}
	if seq, err = d.u64("seq"); err != nil {
		return "", 0, false, err
	}
	return consumer, seq, true, nil
}

// CDC_CONSUMER actions.
const (
	// CDCConsumerGet reads the stored position: OK seq u64, or
	// NOT_FOUND.
	CDCConsumerGet uint8 = 1
	// CDCConsumerDelete deletes the consumer (its position no longer
	// holds history): OK, empty.
	CDCConsumerDelete uint8 = 2
)

// CDCConsumerRequest is a CDC_CONSUMER request.
type CDCConsumerRequest struct {
	Action   uint8
	Consumer string
}

// AppendCDCConsumer appends a CDC_CONSUMER request payload: action u8 ·
// bytes16 consumer.
func AppendCDCConsumer(dst []byte, req CDCConsumerRequest) []byte {
	return appendString16(append(dst, req.Action), req.Consumer)
}

// DecodeCDCConsumer decodes a CDC_CONSUMER request payload (strict).
func DecodeCDCConsumer(p []byte) (CDCConsumerRequest, error) {
	d := decoder{msg: "CDC_CONSUMER request", p: p}
	var req CDCConsumerRequest
	var err error
	if req.Action, err = d.u8("action"); err != nil {
		return CDCConsumerRequest{}, err
	}
	if req.Action != CDCConsumerGet && req.Action != CDCConsumerDelete {
		return CDCConsumerRequest{}, fmt.Errorf("%w: CDC_CONSUMER request: unknown action %d (1 get, 2 delete)", ErrMalformed, req.Action)
	}
	if req.Consumer, err = d.text16("consumer"); err != nil {
		return CDCConsumerRequest{}, err
	}
	return req, d.end()
}

// AppendSeq appends a bare u64 payload (CDC_CONSUMER get's OK reply).
func AppendSeq(dst []byte, seq uint64) []byte { return binary.LittleEndian.AppendUint64(dst, seq) }

// DecodeSeq decodes a bare u64 payload (strict).
func DecodeSeq(p []byte) (uint64, error) {
	d := decoder{msg: "CDC_CONSUMER reply", p: p}
	v, err := d.u64("seq")
	if err != nil {
		return 0, err
	}
	return v, d.end()
}

// Error texts of the change feed. The consumer-name texts are the
// original's, byte for byte (status 1).
const (
	MsgCDCConsumerLength = "invalid argument: cdc consumer_id must be 1..=64 bytes"
	MsgCDCConsumerChars  = "invalid argument: cdc consumer_id must be ASCII alphanumeric, '_' or '-'"
	// MsgCDCCompacted is the StatusCompacted body of a CDC_POLL or
	// CDC_CHECKPOINT below the retained history; the verbs take the
	// position and the oldest available one.
	MsgCDCCompacted = "cdc: position %d is compacted; the oldest available position is %d"
	// MsgWatchCompacted is the StatusCompacted body of a WATCH_CREATE
	// below the retained history; the verbs take the start revision and
	// the oldest start revision available.
	MsgWatchCompacted = "watch: start revision %d is compacted; the oldest available start revision is %d"
)

// ParseCDCCompacted recovers the position and the oldest available one
// from a MsgCDCCompacted or MsgWatchCompacted text.
func ParseCDCCompacted(msg string) (pos, oldest uint64, ok bool) {
	if n, err := fmt.Sscanf(msg, MsgCDCCompacted, &pos, &oldest); err == nil && n == 2 {
		return pos, oldest, true
	}
	if n, err := fmt.Sscanf(msg, MsgWatchCompacted, &pos, &oldest); err == nil && n == 2 {
		return pos, oldest, true
	}
	return 0, 0, false
}

// ValidCDCConsumer checks a consumer name by the original's rules and
// returns its error text (status 1), or "".
func ValidCDCConsumer(name string) string {
	if len(name) < 1 || len(name) > 64 {
		return MsgCDCConsumerLength
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return MsgCDCConsumerChars
		}
	}
	return ""
}
