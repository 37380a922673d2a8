package wire

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"strconv"
)

// Versioned data: KayaDB additions to the protocol (issue 13), all three
// data opcodes (they carry the CLIENT prefix when the server has a client
// token). Layouts, in the style of the rest of the protocol (little-endian,
// bytes32 = len u32 · bytes):
//
//	op  name      request payload                                    OK payload
//	68  KAYA_TXN  CondTxn                                            CondTxnReply
//	69  GET_AT    read_ts u64 · bytes32 key                          bytes32 value · mod_rev u64
//	70  SCAN_AT   read_ts u64 · bytes32 prefix · bytes32 start ·     ScanAtReply
//	              limit u32
//
//	CondTxn:      n_cmp u32 · Compare{n_cmp} · n_then u32 · CondOp{n_then} · n_else u32 · CondOp{n_else}
//	Compare:      target u8 · op u8 · bytes32 key · operand
//	              target 1 EXISTS  no operand; op 1 (=: the key exists) or 2 (!=: it does not)
//	              target 2 VALUE   operand bytes32 value; op 1–6, bytes compared lexicographically
//	              target 3 MOD     operand mod_rev u64; op 1–6
//	              op 1 =, 2 !=, 3 <, 4 >, 5 <=, 6 >=
//	CondOp:       kind u8 (1 get, 2 put, 3 delete: the TXN_OP kinds) · bytes32 key ·
//	              [bytes32 value, only when kind = 2 put]
//	CondTxnReply: succeeded u8 (1: the then-ops ran, 0: the else-ops) · revision u64 ·
//	              n u32 · CondResult{n}, one per op of the branch that ran, in order
//	CondResult:   kind u8 · get: found u8 · [bytes32 value · mod_rev u64, only when found = 1]
//	                        put: nothing
//	                        delete: found u8 (1: the key existed and was deleted)
//	ScanAtReply:  read_rev u64 · more u8 · count u32 · (bytes32 key · bytes32 value · mod_rev u64){count}
//
// Revisions are commit timestamps (docs/design/mvcc-and-transactions.md §2):
// a key's mod revision is the commit timestamp of the write that gave it
// its current value. A read_ts of 0 means "the latest": such a read is
// linearizable, like GET and SCAN. GET_AT of a key that had no value at
// read_ts answers NOT_FOUND with an empty payload.
//
// KAYA_TXN semantics (Compare.Holds is the normative definition): the
// compares are evaluated against the latest state, in the raft apply,
// atomically with the ops of the branch that runs; no compares means the
// then-branch runs. A key that does not exist has mod revision 0, and every
// VALUE compare on it is false (!= included: there is no value to differ,
// as in etcd). revision is the commit revision of the branch's writes, or 0
// when the branch wrote nothing (no put or delete). A branch may name a key
// more than once; its ops apply in order.
//
// SCAN_AT returns the keys that begin with prefix, from start (inclusive;
// empty = from the prefix itself; otherwise start must begin with prefix),
// in ascending order, at most limit of them (0 = the server's cap, the cap
// of SCAN: MaxScanItems items or MaxScanBytes). read_rev is the revision the
// scan read at (read_ts, or the latest revision when read_ts is 0); more is
// 1 when keys under the prefix remain after the last one returned. To read
// the next page at the same revision, send read_ts = read_rev and start =
// the last key returned followed by one 0x00 byte (so a start may be one
// byte longer than MaxKeySize).
//
// A read below the retained history (revision R older than the oldest
// readable revision H) answers StatusCompacted with the error body
// MsgCompacted; ParseCompacted recovers R and H. A read_ts above the newest
// revision answers StatusInvalidArgument with MsgFutureRevision.
//
// Decoders of these opcodes are strict: bytes after the last field are an
// error (ErrMalformed), so that a later extension can never be silently
// dropped by a server that does not know it. Counts are bounded
// (MaxCondCompares, MaxCondOps, MaxScanDecodeCount) and checked before
// anything is allocated.

// Opcodes of the versioned-data additions.
const (
	OpKayaTxn Opcode = 68
	OpGetAt   Opcode = 69
	OpScanAt  Opcode = 70
)

// StatusCompacted answers a read at a revision below the retained history;
// the payload is an error body, MsgCompacted. Old clients treat it as
// ERROR (any unknown status is), and only new clients send the requests
// that can get it.
const StatusCompacted Status = 64

// Error texts of versioned reads (fmt formats).
const (
	// MsgCompacted is the error body of StatusCompacted; the verbs take the
	// revision asked for and the oldest readable revision.
	MsgCompacted = "mvcc: revision %d is compacted; the oldest readable revision is %d"
	// MsgFutureRevision answers (StatusInvalidArgument) a read at a
	// revision above the newest one; the verbs take the revision asked for
	// and the newest revision.
	MsgFutureRevision = "mvcc: revision %d is in the future; the newest revision is %d"
)

// Bounds of KAYA_TXN. Both are etcd's default --max-txn-ops: a conditional
// write is one raft entry evaluated in the apply, so its work must stay
// small, and the bounds let a decoder refuse a count before allocating.
const (
	// MaxCondCompares is the most compares one KAYA_TXN may carry.
	MaxCondCompares = 128
	// MaxCondOps is the most ops each branch (then, else) may carry.
	MaxCondOps = 128
)

// CompareTarget is what a KAYA_TXN compare looks at.
type CompareTarget uint8

// Compare targets.
const (
	// CmpExists: whether the key exists (no operand; op = or !=).
	CmpExists CompareTarget = 1
	// CmpValue: the key's value, compared with Compare.Value as bytes.
	CmpValue CompareTarget = 2
	// CmpMod: the key's mod revision (0 when it does not exist), compared
	// with Compare.Rev.
	CmpMod CompareTarget = 3
)

// String returns "exists", "value" or "mod".
func (t CompareTarget) String() string {
	switch t {
	case CmpExists:
		return "exists"
	case CmpValue:
		return "value"
	case CmpMod:
		return "mod"
	}
	return "TARGET(" + strconv.Itoa(int(t)) + ")"
}

// CompareOp is the relation a compare tests.
type CompareOp uint8

// Compare relations. Every one has a negation among them (Negate).
const (
	CmpEqual        CompareOp = 1
	CmpNotEqual     CompareOp = 2
	CmpLess         CompareOp = 3
	CmpGreater      CompareOp = 4
	CmpLessEqual    CompareOp = 5
	CmpGreaterEqual CompareOp = 6
)

var compareOpNames = [...]string{"", "=", "!=", "<", ">", "<=", ">="}

// String returns the relation's symbol ("=", "!=", "<", ">", "<=", ">=").
func (op CompareOp) String() string {
	if op >= CmpEqual && op <= CmpGreaterEqual {
		return compareOpNames[op]
	}
	return "OP(" + strconv.Itoa(int(op)) + ")"
}

// Negate returns the relation that holds exactly when op does not.
func (op CompareOp) Negate() CompareOp {
	switch op {
	case CmpEqual:
		return CmpNotEqual
	case CmpNotEqual:
		return CmpEqual
	case CmpLess:
		return CmpGreaterEqual
	case CmpGreater:
		return CmpLessEqual
	case CmpLessEqual:
		return CmpGreater
	case CmpGreaterEqual:
		return CmpLess
	}
	return op
}

// holds reports whether the relation holds for a comparison result c
// (negative, zero, positive: as bytes.Compare and cmp.Compare return).
func (op CompareOp) holds(c int) bool {
	switch op {
	case CmpEqual:
		return c == 0
	case CmpNotEqual:
		return c != 0
	case CmpLess:
		return c < 0
	case CmpGreater:
		return c > 0
	case CmpLessEqual:
		return c <= 0
	case CmpGreaterEqual:
		return c >= 0
	}
	return false
}

// Compare is one condition of a KAYA_TXN.
type Compare struct {
	Target CompareTarget
	Op     CompareOp
	Key    []byte
	// Value is the operand of CmpValue (neither encoded nor decoded for
	// the other targets).
	Value []byte
	// Rev is the operand of CmpMod (neither encoded nor decoded for the
	// other targets).
	Rev uint64
}

// Holds evaluates c against the key's state: whether it exists, and if so
// its value and mod revision. It is the protocol's definition of a
// compare: a missing key has mod revision 0, and a CmpValue compare on a
// missing key is false whatever the relation. An ill-formed compare (one
// the decoder refuses) is false.
func (c Compare) Holds(exists bool, value []byte, modRev uint64) bool {
	switch c.Target {
	case CmpExists:
		switch c.Op {
		case CmpEqual:
			return exists
		case CmpNotEqual:
			return !exists
		}
	case CmpValue:
		return exists && c.Op.holds(bytes.Compare(value, c.Value))
	case CmpMod:
		if !exists {
			modRev = 0
		}
		return c.Op.holds(cmp.Compare(modRev, c.Rev))
	}
	return false
}

// check reports what is wrong with c's target and relation, or nil.
func (c Compare) check() error {
	switch c.Target {
	case CmpExists:
		if c.Op != CmpEqual && c.Op != CmpNotEqual {
			return fmt.Errorf("an exists compare takes = or !=, not relation %d", c.Op)
		}
	case CmpValue, CmpMod:
		if c.Op < CmpEqual || c.Op > CmpGreaterEqual {
			return fmt.Errorf("unknown compare relation %d (want 1–6)", c.Op)
		}
	default:
		return fmt.Errorf("unknown compare target %d (want 1 exists, 2 value, 3 mod)", c.Target)
	}
	return nil
}

// String renders c in kayactl's txn syntax: exists("k"), value("k") = "v",
// mod("k") < 42 (keys and values Go-quoted).
func (c Compare) String() string {
	switch c.Target {
	case CmpExists:
		if c.Op == CmpNotEqual {
			return fmt.Sprintf("!exists(%q)", c.Key)
		}
		return fmt.Sprintf("exists(%q)", c.Key)
	case CmpValue:
		return fmt.Sprintf("value(%q) %s %q", c.Key, c.Op, c.Value)
	}
	return fmt.Sprintf("%s(%q) %s %d", c.Target, c.Key, c.Op, c.Rev)
}

// CondOp is one operation of a KAYA_TXN branch.
type CondOp struct {
	// Kind is TxnOpGet, TxnOpPut or TxnOpDelete.
	Kind TxnOpKind
	Key  []byte
	// Value is the value of a put (neither encoded nor decoded for the
	// other kinds).
	Value []byte
}

// CondTxn is a KAYA_TXN request: if every compare holds, the then-ops run,
// else the else-ops.
type CondTxn struct {
	Compares []Compare
	Then     []CondOp
	Else     []CondOp
}

// Writes reports whether either branch has a put or a delete (a request
// that only reads may be sent again safely).
func (t *CondTxn) Writes() bool {
	for _, ops := range [][]CondOp{t.Then, t.Else} {
		for _, op := range ops {
			if op.Kind != TxnOpGet {
				return true
			}
		}
	}
	return false
}

// CondResult is the outcome of one op of the branch that ran.
type CondResult struct {
	// Kind is the op's kind.
	Kind TxnOpKind
	// Found is, for a get, whether the key exists; for a delete, whether
	// it existed (and so was deleted). Always false for a put.
	Found bool
	// Value and ModRev are a found get's value and mod revision.
	Value  []byte
	ModRev uint64
}

// CondTxnReply is the OK payload of KAYA_TXN.
type CondTxnReply struct {
	// Succeeded is true when every compare held and the then-ops ran.
	Succeeded bool
	// Revision is the commit revision of the branch's writes; 0 when it
	// wrote nothing.
	Revision uint64
	// Results has one entry per op of the branch that ran, in order.
	Results []CondResult
}

// end fails unless the payload has been read to its last byte (the strict
// decoders of the versioned-data opcodes).
func (d *decoder) end() error {
	if n := d.rest(); n > 0 {
		return fmt.Errorf("%w: %s: %d trailing bytes after the last field (offset %d)", ErrMalformed, d.msg, n, d.off)
	}
	return nil
}

// AppendCondTxn appends a KAYA_TXN request payload. The caller keeps the
// counts within MaxCondCompares and MaxCondOps (a decoder refuses more)
// and every compare well formed.
func AppendCondTxn(dst []byte, t *CondTxn) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(t.Compares)))
	for _, c := range t.Compares {
		dst = append(dst, byte(c.Target), byte(c.Op))
		dst = appendBytes32(dst, c.Key)
		switch c.Target {
		case CmpValue:
			dst = appendBytes32(dst, c.Value)
		case CmpMod:
			dst = binary.LittleEndian.AppendUint64(dst, c.Rev)
		}
	}
	dst = appendCondOps(dst, t.Then)
	return appendCondOps(dst, t.Else)
}

func appendCondOps(dst []byte, ops []CondOp) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(ops)))
	for _, op := range ops {
		dst = append(dst, byte(op.Kind))
		dst = appendBytes32(dst, op.Key)
		if op.Kind == TxnOpPut {
			dst = appendBytes32(dst, op.Value)
		}
	}
	return dst
}

// DecodeCondTxn decodes a KAYA_TXN request payload. Counts above the
// bounds, unknown targets, relations and kinds, and trailing bytes are
// errors matching ErrMalformed. Key and value sizes are the caller's to
// check (MaxKeySize, MaxValueSize).
func DecodeCondTxn(p []byte) (*CondTxn, error) {
	d := decoder{msg: "KAYA_TXN request", p: p}
	n, err := d.u32("compare count")
	if err != nil {
		return nil, err
	}
	if n > MaxCondCompares {
		return nil, fmt.Errorf("%w: KAYA_TXN request: %d compares, at most %d", ErrMalformed, n, MaxCondCompares)
	}
	t := &CondTxn{}
	if n > 0 {
		t.Compares = make([]Compare, 0, n)
	}
	for i := range n {
		var c Compare
		tg, err := d.u8("compare target")
		if err != nil {
			return nil, fmt.Errorf("%w (compare %d of %d)", err, i, n)
		}
		op, err := d.u8("compare relation")
		if err != nil {
			return nil, fmt.Errorf("%w (compare %d of %d)", err, i, n)
		}
		c.Target, c.Op = CompareTarget(tg), CompareOp(op)
		if err := c.check(); err != nil {
			return nil, fmt.Errorf("%w: KAYA_TXN request: %v (compare %d of %d)", ErrMalformed, err, i, n)
		}
		if c.Key, err = d.bytes32("compare key"); err != nil {
			return nil, fmt.Errorf("%w (compare %d of %d)", err, i, n)
		}
		switch c.Target {
		case CmpValue:
			c.Value, err = d.bytes32("compare value")
		case CmpMod:
			c.Rev, err = d.u64("compare mod_rev")
		}
		if err != nil {
			return nil, fmt.Errorf("%w (compare %d of %d)", err, i, n)
		}
		t.Compares = append(t.Compares, c)
	}
	if t.Then, err = d.condOps(&thenOps); err != nil {
		return nil, err
	}
	if t.Else, err = d.condOps(&elseOps); err != nil {
		return nil, err
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return t, nil
}

// condBranch names the fields of a KAYA_TXN op list in errors, built once
// rather than at every op decoded.
type condBranch struct{ name, count, kind, key, value string }

var (
	thenOps = condBranch{"then", "then op count", "then op kind", "then op key", "then op value"}
	elseOps = condBranch{"else", "else op count", "else op kind", "else op key", "else op value"}
)

func (d *decoder) condOps(b *condBranch) ([]CondOp, error) {
	n, err := d.u32(b.count)
	if err != nil {
		return nil, err
	}
	if n > MaxCondOps {
		return nil, fmt.Errorf("%w: %s: %d %s ops, at most %d", ErrMalformed, d.msg, n, b.name, MaxCondOps)
	}
	if n == 0 {
		return nil, nil
	}
	ops := make([]CondOp, 0, n)
	for i := range n {
		var op CondOp
		k, err := d.u8(b.kind)
		if err != nil {
			return nil, fmt.Errorf("%w (%s op %d of %d)", err, b.name, i, n)
		}
		op.Kind = TxnOpKind(k)
		if op.Kind < TxnOpGet || op.Kind > TxnOpDelete {
			return nil, fmt.Errorf("%w: %s: unknown op kind %d (%s op %d of %d; want 1 get, 2 put, 3 delete)", ErrMalformed, d.msg, k, b.name, i, n)
		}
		if op.Key, err = d.bytes32(b.key); err != nil {
			return nil, fmt.Errorf("%w (%s op %d of %d)", err, b.name, i, n)
		}
		if op.Kind == TxnOpPut {
			if op.Value, err = d.bytes32(b.value); err != nil {
				return nil, fmt.Errorf("%w (%s op %d of %d)", err, b.name, i, n)
			}
		}
		ops = append(ops, op)
	}
	return ops, nil
}

// AppendCondTxnReply appends a KAYA_TXN OK payload.
func AppendCondTxnReply(dst []byte, r *CondTxnReply) []byte {
	dst = append(dst, boolByte(r.Succeeded))
	dst = binary.LittleEndian.AppendUint64(dst, r.Revision)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(r.Results)))
	for _, res := range r.Results {
		dst = append(dst, byte(res.Kind))
		switch res.Kind {
		case TxnOpGet:
			dst = append(dst, boolByte(res.Found))
			if res.Found {
				dst = appendBytes32(dst, res.Value)
				dst = binary.LittleEndian.AppendUint64(dst, res.ModRev)
			}
		case TxnOpDelete:
			dst = append(dst, boolByte(res.Found))
		}
	}
	return dst
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// flag decodes a u8 that must be 0 or 1.
func (d *decoder) flag(field string) (bool, error) {
	b, err := d.u8(field)
	if err != nil {
		return false, err
	}
	switch b {
	case 0:
		return false, nil
	case 1:
		return true, nil
	}
	return false, fmt.Errorf("%w: %s: %s is %d, want 0 or 1", ErrMalformed, d.msg, field, b)
}

// DecodeCondTxnReply decodes a KAYA_TXN OK payload: strict, with at most
// MaxCondOps results.
func DecodeCondTxnReply(p []byte) (*CondTxnReply, error) {
	d := decoder{msg: "KAYA_TXN reply", p: p}
	r := &CondTxnReply{}
	var err error
	if r.Succeeded, err = d.flag("succeeded"); err != nil {
		return nil, err
	}
	if r.Revision, err = d.u64("revision"); err != nil {
		return nil, err
	}
	n, err := d.u32("result count")
	if err != nil {
		return nil, err
	}
	if n > MaxCondOps {
		return nil, fmt.Errorf("%w: KAYA_TXN reply: %d results, at most %d", ErrMalformed, n, MaxCondOps)
	}
	if n > 0 {
		r.Results = make([]CondResult, 0, n)
	}
	for i := range n {
		var res CondResult
		k, err := d.u8("result kind")
		if err != nil {
			return nil, fmt.Errorf("%w (result %d of %d)", err, i, n)
		}
		res.Kind = TxnOpKind(k)
		switch res.Kind {
		case TxnOpGet:
			if res.Found, err = d.flag("found"); err == nil && res.Found {
				if res.Value, err = d.bytes32("value"); err == nil {
					res.ModRev, err = d.u64("mod_rev")
				}
			}
		case TxnOpPut:
		case TxnOpDelete:
			res.Found, err = d.flag("deleted")
		default:
			err = fmt.Errorf("%w: KAYA_TXN reply: unknown result kind %d", ErrMalformed, k)
		}
		if err != nil {
			return nil, fmt.Errorf("%w (result %d of %d)", err, i, n)
		}
		r.Results = append(r.Results, res)
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return r, nil
}

// ReadTSLocal, as a GET_AT read_ts, asks for the serving node's latest
// applied state without a ReadIndex round: a serializable read that may
// miss the newest writes (its connection's earlier writes too: the server
// does not order it after them). It is for readers that validate what they read
// later, such as an optimistic transaction whose commit compares the mod
// revisions it read (client.RunSTM); read_ts 0 is the linearizable latest.
const ReadTSLocal = ^uint64(0)

// AppendGetAt appends a GET_AT request payload: read_ts u64 · bytes32 key.
func AppendGetAt(dst []byte, readTS uint64, key []byte) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, readTS)
	return appendBytes32(dst, key)
}

// DecodeGetAt decodes a GET_AT request payload (strict).
func DecodeGetAt(p []byte) (readTS uint64, key []byte, err error) {
	d := decoder{msg: "GET_AT request", p: p}
	if readTS, err = d.u64("read_ts"); err != nil {
		return 0, nil, err
	}
	if key, err = d.bytes32("key"); err != nil {
		return 0, nil, err
	}
	if err := d.end(); err != nil {
		return 0, nil, err
	}
	return readTS, key, nil
}

// AppendGetAtReply appends a GET_AT OK payload: bytes32 value · mod_rev
// u64.
func AppendGetAtReply(dst, value []byte, modRev uint64) []byte {
	dst = appendBytes32(dst, value)
	return binary.LittleEndian.AppendUint64(dst, modRev)
}

// DecodeGetAtReply decodes a GET_AT OK payload (strict).
func DecodeGetAtReply(p []byte) (value []byte, modRev uint64, err error) {
	d := decoder{msg: "GET_AT reply", p: p}
	if value, err = d.bytes32("value"); err != nil {
		return nil, 0, err
	}
	if modRev, err = d.u64("mod_rev"); err != nil {
		return nil, 0, err
	}
	if err := d.end(); err != nil {
		return nil, 0, err
	}
	return value, modRev, nil
}

// ScanAt is a SCAN_AT request.
type ScanAt struct {
	// ReadTS is the revision to read at; 0 = the latest (linearizable).
	ReadTS uint64
	// Prefix selects the keys.
	Prefix []byte
	// Start is the first key to return (inclusive); empty = from Prefix.
	// A non-empty Start must begin with Prefix.
	Start []byte
	// Limit is the most items wanted; 0 = the server's cap.
	Limit uint32
}

// AppendScanAt appends a SCAN_AT request payload: read_ts u64 · bytes32
// prefix · bytes32 start · limit u32.
func AppendScanAt(dst []byte, s ScanAt) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, s.ReadTS)
	dst = appendBytes32(dst, s.Prefix)
	dst = appendBytes32(dst, s.Start)
	return binary.LittleEndian.AppendUint32(dst, s.Limit)
}

// DecodeScanAt decodes a SCAN_AT request payload (strict). Whether Start
// begins with Prefix is the caller's to check.
func DecodeScanAt(p []byte) (ScanAt, error) {
	d := decoder{msg: "SCAN_AT request", p: p}
	var s ScanAt
	var err error
	if s.ReadTS, err = d.u64("read_ts"); err != nil {
		return ScanAt{}, err
	}
	if s.Prefix, err = d.bytes32("prefix"); err != nil {
		return ScanAt{}, err
	}
	if s.Start, err = d.bytes32("start"); err != nil {
		return ScanAt{}, err
	}
	if s.Limit, err = d.u32("limit"); err != nil {
		return ScanAt{}, err
	}
	if err := d.end(); err != nil {
		return ScanAt{}, err
	}
	return s, nil
}

// VersionedKV is one item of a SCAN_AT reply.
type VersionedKV struct {
	Key, Value []byte
	// ModRev is the revision of the write that gave Key this value.
	ModRev uint64
}

// ScanAtReply is the OK payload of SCAN_AT.
type ScanAtReply struct {
	// ReadRev is the revision the scan read at.
	ReadRev uint64
	// More is true when keys under the prefix remain after the last item.
	More  bool
	Items []VersionedKV
}

// versionedKVMin is the smallest encoded SCAN_AT item: two empty bytes32
// and the mod revision.
const versionedKVMin = 4 + 4 + 8

// AppendScanAtReply appends a SCAN_AT OK payload. Capping the result is
// the caller's job (as for SCAN).
func AppendScanAtReply(dst []byte, r *ScanAtReply) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, r.ReadRev)
	dst = append(dst, boolByte(r.More))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(r.Items)))
	for _, it := range r.Items {
		dst = appendBytes32(dst, it.Key)
		dst = appendBytes32(dst, it.Value)
		dst = binary.LittleEndian.AppendUint64(dst, it.ModRev)
	}
	return dst
}

// DecodeScanAtReply decodes a SCAN_AT OK payload (strict). A count above
// MaxScanDecodeCount is refused before anything is allocated, and the
// result never reserves more items than the payload can hold.
func DecodeScanAtReply(p []byte) (*ScanAtReply, error) {
	d := decoder{msg: "SCAN_AT reply", p: p}
	r := &ScanAtReply{}
	var err error
	if r.ReadRev, err = d.u64("read_rev"); err != nil {
		return nil, err
	}
	if r.More, err = d.flag("more"); err != nil {
		return nil, err
	}
	count, err := d.u32("count")
	if err != nil {
		return nil, err
	}
	if count > MaxScanDecodeCount {
		return nil, fmt.Errorf("%w: SCAN_AT reply: count %d exceeds %d", ErrMalformed, count, MaxScanDecodeCount)
	}
	r.Items = make([]VersionedKV, 0, min(int(count), d.rest()/versionedKVMin))
	for i := range int(count) {
		var it VersionedKV
		if it.Key, err = d.bytes32("key"); err == nil {
			if it.Value, err = d.bytes32("value"); err == nil {
				it.ModRev, err = d.u64("mod_rev")
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%w (item %d of %d)", err, i, count)
		}
		r.Items = append(r.Items, it)
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return r, nil
}

// AppendCompacted appends the error body of StatusCompacted: MsgCompacted
// with the revision asked for and the oldest readable one.
func AppendCompacted(dst []byte, rev, oldest uint64) []byte {
	return AppendError(dst, fmt.Sprintf(MsgCompacted, rev, oldest))
}

// ParseCompacted recovers the revisions of a MsgCompacted text; ok is
// false for any other text.
func ParseCompacted(msg string) (rev, oldest uint64, ok bool) {
	return parse2(msg, MsgCompacted)
}

// ParseFutureRevision recovers the revisions of a MsgFutureRevision text;
// ok is false for any other text.
func ParseFutureRevision(msg string) (rev, newest uint64, ok bool) {
	return parse2(msg, MsgFutureRevision)
}

// parse2 matches msg against a format with two %d verbs, exactly (the
// text must format back to itself).
func parse2(msg, format string) (a, b uint64, ok bool) {
	if _, err := fmt.Sscanf(msg, format, &a, &b); err != nil {
		return 0, 0, false
	}
	return a, b, fmt.Sprintf(format, a, b) == msg
}
