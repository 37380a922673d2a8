package wire

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// KV is one key-value pair of a SCAN result.
type KV struct {
	Key   []byte
	Value []byte
}

// decoder reads the fields of one payload in order. Its methods never
// panic: a field that does not fit is an error naming the message and the
// field, matching ErrMalformed.
type decoder struct {
	msg string // message name for errors, e.g. "PUT request"
	p   []byte
	off int
}

func (d *decoder) short(field string, need int) error {
	return fmt.Errorf("%w: %s: %s needs %d bytes at offset %d, payload has %d",
		ErrMalformed, d.msg, field, need, d.off, len(d.p)-d.off)
}

func (d *decoder) rest() int { return len(d.p) - d.off }

func (d *decoder) u8(field string) (uint8, error) {
	if d.rest() < 1 {
		return 0, d.short(field, 1)
	}
	v := d.p[d.off]
	d.off++
	return v, nil
}

func (d *decoder) u16(field string) (uint16, error) {
	if d.rest() < 2 {
		return 0, d.short(field, 2)
	}
	v := binary.LittleEndian.Uint16(d.p[d.off:])
	d.off += 2
	return v, nil
}

func (d *decoder) u32(field string) (uint32, error) {
	if d.rest() < 4 {
		return 0, d.short(field, 4)
	}
	v := binary.LittleEndian.Uint32(d.p[d.off:])
	d.off += 4
	return v, nil
}

func (d *decoder) u64(field string) (uint64, error) {
	if d.rest() < 8 {
		return 0, d.short(field, 8)
	}
	v := binary.LittleEndian.Uint64(d.p[d.off:])
	d.off += 8
	return v, nil
}

// raw takes n bytes (n comes from a length field, so it is checked against
// what is left before slicing; nothing is allocated).
func (d *decoder) raw(field string, n uint64) ([]byte, error) {
	if uint64(d.rest()) < n {
		return nil, fmt.Errorf("%w: %s: %s announces %d bytes, payload has %d after offset %d",
			ErrMalformed, d.msg, field, n, d.rest(), d.off)
	}
	b := d.p[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	return b, nil
}

// bytes32 and bytes16 take a length-prefixed field. The length's name
// for an error ("<field> length") is built only when there is one: the
// apply of every conditional write decodes here.
func (d *decoder) bytes32(field string) ([]byte, error) {
	if d.rest() < 4 {
		return nil, d.short(field+" length", 4)
	}
	n := binary.LittleEndian.Uint32(d.p[d.off:])
	d.off += 4
	return d.raw(field, uint64(n))
}

func (d *decoder) bytes16(field string) ([]byte, error) {
	if d.rest() < 2 {
		return nil, d.short(field+" length", 2)
	}
	n := binary.LittleEndian.Uint16(d.p[d.off:])
	d.off += 2
	return d.raw(field, uint64(n))
}

func (d *decoder) text32(field string) (string, error) {
	b, err := d.bytes32(field)
	if err != nil {
		return "", err
	}
	return d.utf8(field, b)
}

func (d *decoder) text16(field string) (string, error) {
	b, err := d.bytes16(field)
	if err != nil {
		return "", err
	}
	return d.utf8(field, b)
}

func (d *decoder) utf8(field string, b []byte) (string, error) {
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%w: %s: %s is not valid UTF-8", ErrMalformed, d.msg, field)
	}
	return string(b), nil
}

func appendBytes32(dst, b []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}

func appendString32(dst []byte, s string) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(s)))
	return append(dst, s...)
}

// appendString16 appends a bytes16 field. s longer than MaxTokenSize is
// cut to MaxTokenSize bytes so that the output is always well formed;
// callers validate lengths before encoding (see MaxTokenSize).
func appendString16(dst []byte, s string) []byte {
	if len(s) > MaxTokenSize {
		s = s[:MaxTokenSize]
	}
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

// AppendHello appends a HELLO payload, request (client_version) or OK
// reply (server_version): version u16.
func AppendHello(dst []byte, version uint16) []byte {
	return binary.LittleEndian.AppendUint16(dst, version)
}

// DecodeHello decodes a HELLO request or OK reply payload.
func DecodeHello(p []byte) (uint16, error) {
	d := decoder{msg: "HELLO", p: p}
	return d.u16("version")
}

// AppendPut appends a PUT request payload: key_len u32 · value_len u32 ·
// key · value (both lengths first).
func AppendPut(dst, key, value []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(key)))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(value)))
	dst = append(dst, key...)
	return append(dst, value...)
}

// DecodePut decodes a PUT request payload. Size limits (MaxKeySize,
// MaxValueSize) are the caller's to check.
func DecodePut(p []byte) (key, value []byte, err error) {
	d := decoder{msg: "PUT request", p: p}
	kl, err := d.u32("key_len")
	if err != nil {
		return nil, nil, err
	}
	vl, err := d.u32("value_len")
	if err != nil {
		return nil, nil, err
	}
	if key, err = d.raw("key", uint64(kl)); err != nil {
		return nil, nil, err
	}
	if value, err = d.raw("value", uint64(vl)); err != nil {
		return nil, nil, err
	}
	return key, value, nil
}

// AppendKey appends a bytes32 key: the payload of GET and DELETE requests
// and of SCAN requests (the prefix).
func AppendKey(dst, key []byte) []byte { return appendBytes32(dst, key) }

// DecodeKey decodes a GET, DELETE or SCAN request payload.
func DecodeKey(p []byte) ([]byte, error) {
	d := decoder{msg: "key payload", p: p}
	return d.bytes32("key")
}

// AppendValue appends a bytes32 value: the OK payload of GET.
func AppendValue(dst, value []byte) []byte { return appendBytes32(dst, value) }

// DecodeValue decodes a GET OK payload.
func DecodeValue(p []byte) ([]byte, error) {
	d := decoder{msg: "GET reply", p: p}
	return d.bytes32("value")
}

// AppendScanResult appends a SCAN OK payload: count u32 · (bytes32 key ·
// bytes32 value)*. Capping the result (MaxScanItems, MaxScanBytes) is the
// caller's job.
func AppendScanResult(dst []byte, items []KV) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(items)))
	for _, kv := range items {
		dst = appendBytes32(dst, kv.Key)
		dst = appendBytes32(dst, kv.Value)
	}
	return dst
}

// DecodeScanResult decodes a SCAN OK payload. A count above
// MaxScanDecodeCount is refused before anything is allocated, and the
// result never reserves more items than the payload can hold (8 bytes
// each at least).
func DecodeScanResult(p []byte) ([]KV, error) {
	d := decoder{msg: "SCAN reply", p: p}
	count, err := d.u32("count")
	if err != nil {
		return nil, err
	}
	if count > MaxScanDecodeCount {
		return nil, fmt.Errorf("%w: SCAN reply: count %d exceeds %d", ErrMalformed, count, MaxScanDecodeCount)
	}
	items := make([]KV, 0, min(int(count), d.rest()/8))
	for i := range int(count) {
		k, err := d.bytes32("key")
		if err != nil {
			return nil, fmt.Errorf("%w (item %d of %d)", err, i, count)
		}
		v, err := d.bytes32("value")
		if err != nil {
			return nil, fmt.Errorf("%w (item %d of %d)", err, i, count)
		}
		items = append(items, KV{Key: k, Value: v})
	}
	return items, nil
}

// AppendError appends an error body (the payload of INVALID_ARGUMENT,
// TXN_CONFLICT and ERROR): bytes32 UTF-8 text.
func AppendError(dst []byte, msg string) []byte { return appendString32(dst, msg) }

// DecodeError decodes an error body. Text that is not valid UTF-8 is an
// error.
func DecodeError(p []byte) (string, error) {
	d := decoder{msg: "error body", p: p}
	return d.text32("message")
}

// AppendNotLeader appends a NOT_LEADER payload: the leader's client address
// ("host:port") as raw UTF-8 without a length; "" when no leader is known.
func AppendNotLeader(dst []byte, leaderAddr string) []byte { return append(dst, leaderAddr...) }

// DecodeNotLeader decodes a NOT_LEADER payload: the whole payload is the
// hint ("" = no leader known). Text that is not valid UTF-8 is an error.
func DecodeNotLeader(p []byte) (string, error) {
	d := decoder{msg: "NOT_LEADER reply", p: p}
	return d.utf8("leader address", p)
}

// Replies of HEALTH.
const (
	HealthLeader   = "leader"
	HealthFollower = "follower"
)

// AppendHealth appends a HEALTH OK payload: raw ASCII role, HealthLeader
// or HealthFollower, without a length.
func AppendHealth(dst []byte, role string) []byte { return append(dst, role...) }

// DecodeHealth decodes a HEALTH OK payload: the whole payload is the role.
// Any UTF-8 text is accepted (callers compare it with HealthLeader);
// invalid UTF-8 is an error.
func DecodeHealth(p []byte) (string, error) {
	d := decoder{msg: "HEALTH reply", p: p}
	return d.utf8("role", p)
}

// AppendText appends raw UTF-8 text without a length: the OK payload of
// ADD_MEMBER, REMOVE_MEMBER and PROMOTE_LEARNER (see MsgMembershipProposed).
func AppendText(dst []byte, text string) []byte { return append(dst, text...) }

// DecodeText decodes a raw-text OK payload (ADD_MEMBER, REMOVE_MEMBER,
// PROMOTE_LEARNER).
// Invalid UTF-8 is an error.
func DecodeText(p []byte) (string, error) {
	d := decoder{msg: "text reply", p: p}
	return d.utf8("text", p)
}

// AddMember is an ADD_MEMBER request.
type AddMember struct {
	// NodeID is the id of the node to add.
	NodeID uint64
	// RaftAddr is its peer (raft) address, "host:port".
	RaftAddr string
	// ClientAddr is its client address, "host:port".
	ClientAddr string
	// Learner is the optional is_learner flag: nil when the request ended
	// before it (old clients), else whether the node joins as a learner
	// (any non-zero byte means true).
	Learner *bool
}

// IsLearner reports whether the request asks for a learner; an absent flag
// means a voter.
func (m AddMember) IsLearner() bool { return m.Learner != nil && *m.Learner }

// AppendAddMember appends an ADD_MEMBER request payload: node_id u64 ·
// bytes32 raft_addr · bytes32 client_addr · [is_learner u8]. learner nil
// omits the flag (as old clients do); otherwise it is written as 0 or 1.
func AppendAddMember(dst []byte, id uint64, raftAddr, clientAddr string, learner *bool) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, id)
	dst = appendString32(dst, raftAddr)
	dst = appendString32(dst, clientAddr)
	if learner != nil {
		b := byte(0)
		if *learner {
			b = 1
		}
		dst = append(dst, b)
	}
	return dst
}

// DecodeAddMember decodes an ADD_MEMBER request payload. Addresses that
// are not valid UTF-8 are an error.
func DecodeAddMember(p []byte) (AddMember, error) {
	d := decoder{msg: "ADD_MEMBER request", p: p}
	var m AddMember
	var err error
	if m.NodeID, err = d.u64("node_id"); err != nil {
		return AddMember{}, err
	}
	if m.RaftAddr, err = d.text32("raft_addr"); err != nil {
		return AddMember{}, err
	}
	if m.ClientAddr, err = d.text32("client_addr"); err != nil {
		return AddMember{}, err
	}
	if d.rest() > 0 {
		b, _ := d.u8("is_learner")
		learner := b != 0
		m.Learner = &learner
	}
	return m, nil
}

// AppendRemoveMember appends a REMOVE_MEMBER request payload: node_id u64.
func AppendRemoveMember(dst []byte, id uint64) []byte {
	return binary.LittleEndian.AppendUint64(dst, id)
}

// DecodeRemoveMember decodes a REMOVE_MEMBER request payload.
func DecodeRemoveMember(p []byte) (uint64, error) {
	d := decoder{msg: "REMOVE_MEMBER request", p: p}
	return d.u64("node_id")
}

// AppendPromoteLearner appends a PROMOTE_LEARNER request payload: node_id
// u64 (the learner to make a voter).
func AppendPromoteLearner(dst []byte, id uint64) []byte {
	return binary.LittleEndian.AppendUint64(dst, id)
}

// DecodePromoteLearner decodes a PROMOTE_LEARNER request payload.
func DecodePromoteLearner(p []byte) (uint64, error) {
	d := decoder{msg: "PROMOTE_LEARNER request", p: p}
	return d.u64("node_id")
}

// AppendTransferLeader appends a TRANSFER_LEADER request payload: group_id
// u64 · target_node_id u64. Group 0 is the cluster's only raft group until
// range sharding lands. Its OK payload is empty.
func AppendTransferLeader(dst []byte, group, target uint64) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, group)
	return binary.LittleEndian.AppendUint64(dst, target)
}

// DecodeTransferLeader decodes a TRANSFER_LEADER request payload.
func DecodeTransferLeader(p []byte) (group, target uint64, err error) {
	d := decoder{msg: "TRANSFER_LEADER request", p: p}
	if group, err = d.u64("group_id"); err != nil {
		return 0, 0, err
	}
	if target, err = d.u64("target_node_id"); err != nil {
		return 0, 0, err
	}
	return group, target, nil
}
