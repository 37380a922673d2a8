package txn

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/wire"
)

// The commands this package adds to the raft log (kv custom ops, run by
// an Evaluator in the apply on every replica):
//
//	op 16 TxnCommit:  version u8 (1) · txn_id u64 LE · snapshot_ts u64 LE ·
//	                  isolation u8 (1 serializable, 2 snapshot) ·
//	                  uvarint n_reads · (uvarint len · key){n_reads} ·
//	                  uvarint n_writes · (kind u8 (2 put, 3 delete) · uvarint len · key ·
//	                                      [uvarint len · value, put only]){n_writes}
//	    result: code u8 (Outcome*)
//	op 17 CondTxn:    the KAYA_TXN request payload (wire.AppendCondTxn)
//	    result: the KAYA_TXN OK payload (wire.AppendCondTxnReply)
//
// Both evaluators are pure functions of the body and of what the apply
// reads: every replica decides alike (kv.Evaluator's contract).
const (
	OpTxnCommit byte = kv.OpCustomMin
	OpCondTxn   byte = kv.OpCustomMin + 1
)

// commitVersion is the TxnCommit body format.
const commitVersion = 1

// Outcome codes, recorded by RecordOutcome and returned as the TxnCommit
// result.
const (
	// OutcomeCommitted: the writes were applied at the entry's commit
	// timestamp.
	OutcomeCommitted uint8 = 1
	// OutcomeConflict: something the transaction read (serializable) or
	// wrote changed after its snapshot; nothing was written.
	OutcomeConflict uint8 = 2
	// OutcomeCompacted: the snapshot is older than the GC horizon at the
	// entry's position, where the last modification of a key is no longer
	// exact: the transaction is refused (it must start again with a new
	// snapshot); nothing was written.
	OutcomeCompacted uint8 = 3
	// OutcomeLost: the commit entry was appended in a later raft term
	// than the one the transaction began in (txn_id>>32): its proposer
	// lost leadership with the proposal queued, and raft forwarded it to
	// the new leader. Open transactions do not survive a leadership
	// change (their locks and early conflicts lived on the old leader),
	// and the new leader may already have told a retried TXN_COMMIT that
	// the transaction is lost, so it must not commit; nothing was written.
	OutcomeLost uint8 = 4
)

// Isolation is a transaction's isolation level.
type Isolation uint8

// Isolation levels.
const (
	// Serializable validates the read set and the write set at commit
	// (the default).
	Serializable Isolation = 1
	// SnapshotIsolation validates the write set only (first committer
	// wins; write skew is possible): the original KayaDB's level.
	SnapshotIsolation Isolation = 2
)

func (i Isolation) String() string {
	switch i {
	case Serializable:
		return "serializable"
	case SnapshotIsolation:
		return "snapshot"
	}
	return fmt.Sprintf("Isolation(%d)", uint8(i))
}

// ParseIsolation parses the --txn-isolation values.
func ParseIsolation(s string) (Isolation, error) {
	switch s {
	case "serializable":
		return Serializable, nil
	case "snapshot":
		return SnapshotIsolation, nil
	}
	return 0, fmt.Errorf("unknown isolation level %q (want serializable or snapshot)", s)
}

// write is one buffered write of a transaction.
type write struct {
	kind  wire.TxnOpKind // TxnOpPut or TxnOpDelete
	key   []byte
	value []byte
}

// commitCmd is a decoded TxnCommit body.
type commitCmd struct {
	txnID, snapshot uint64
	isolation       Isolation
	reads           [][]byte
	writes          []write
}

func appendUvarintBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// encodeCommit encodes a TxnCommit body.
func encodeCommit(c *commitCmd) []byte {
	n := 1 + 8 + 8 + 1 + 2*binary.MaxVarintLen32
	for _, k := range c.reads {
		n += binary.MaxVarintLen32 + len(k)
	}
	for _, w := range c.writes {
		n += 1 + 2*binary.MaxVarintLen32 + len(w.key) + len(w.value)
	}
	b := make([]byte, 0, n)
	b = append(b, commitVersion)
	b = binary.LittleEndian.AppendUint64(b, c.txnID)
	b = binary.LittleEndian.AppendUint64(b, c.snapshot)
	b = append(b, byte(c.isolation))
	b = binary.AppendUvarint(b, uint64(len(c.reads)))
	for _, k := range c.reads {
		b = appendUvarintBytes(b, k)
	}
	b = binary.AppendUvarint(b, uint64(len(c.writes)))
	for _, w := range c.writes {
		b = append(b, byte(w.kind))
		b = appendUvarintBytes(b, w.key)
		if w.kind == wire.TxnOpPut {
			b = appendUvarintBytes(b, w.value)
		}
	}
	return b
}

var errBadCommit = errors.New("malformed TxnCommit command")

// minimalUvarint is binary.Uvarint that also refuses a non-minimal
// encoding (0x80 0x00 for 0, say): a command has one encoding, so that
// decoding and encoding it again gives the bytes that were replicated.
func minimalUvarint(p []byte) (uint64, int) {
	n, w := binary.Uvarint(p)
	if w > 1 && p[w-1] == 0 {
		return 0, 0 // a final byte of zero adds nothing: not minimal
	}
	return n, w
}

func takeUvarintBytes(p []byte) (b, rest []byte, ok bool) {
	n, w := minimalUvarint(p)
	if w <= 0 || n > uint64(len(p)-w) {
		return nil, nil, false
	}
	return p[w : w+int(n)], p[w+int(n):], true
}

// decodeCommit decodes a TxnCommit body; counts are checked against the
// bytes that remain before anything is allocated for them.
func decodeCommit(p []byte) (*commitCmd, error) {
	if len(p) < 1+8+8+1 || p[0] != commitVersion {
		return nil, fmt.Errorf("%w: %d bytes, version %v", errBadCommit, len(p), p[:min(len(p), 1)])
	}
	c := &commitCmd{
		txnID:     binary.LittleEndian.Uint64(p[1:]),
		snapshot:  binary.LittleEndian.Uint64(p[9:]),
		isolation: Isolation(p[17]),
	}
	if c.isolation != Serializable && c.isolation != SnapshotIsolation {
		return nil, fmt.Errorf("%w: isolation %d", errBadCommit, p[17])
	}
	p = p[18:]
	n, w := minimalUvarint(p)
	if w <= 0 || n > uint64(len(p)-w) {
		return nil, fmt.Errorf("%w: read count", errBadCommit)
	}
	p = p[w:]
	c.reads = make([][]byte, 0, n)
	for i := uint64(0); i < n; i++ {
		k, rest, ok := takeUvarintBytes(p)
		if !ok {
			return nil, fmt.Errorf("%w: read key %d", errBadCommit, i)
		}
		c.reads, p = append(c.reads, k), rest
	}
	n, w = minimalUvarint(p)
	if w <= 0 || n > uint64(len(p)-w)/2 {
		return nil, fmt.Errorf("%w: write count", errBadCommit)
	}
	p = p[w:]
	c.writes = make([]write, 0, n)
	for i := uint64(0); i < n; i++ {
		if len(p) < 1 {
			return nil, fmt.Errorf("%w: write %d", errBadCommit, i)
		}
		wr := write{kind: wire.TxnOpKind(p[0])}
		if wr.kind != wire.TxnOpPut && wr.kind != wire.TxnOpDelete {
			return nil, fmt.Errorf("%w: write %d has kind %d", errBadCommit, i, p[0])
		}
		k, rest, ok := takeUvarintBytes(p[1:])
		if !ok {
			return nil, fmt.Errorf("%w: write key %d", errBadCommit, i)
		}
		wr.key, p = k, rest
		if wr.kind == wire.TxnOpPut {
			v, rest, ok := takeUvarintBytes(p)
			if !ok {
				return nil, fmt.Errorf("%w: write value %d", errBadCommit, i)
			}
			wr.value, p = v, rest
		}
		c.writes = append(c.writes, wr)
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errBadCommit, len(p))
	}
	return c, nil
}

// Evaluators returns the commands of this package, for kv.Options: every
// node must register them.
func Evaluators() map[byte]kv.Evaluator {
	return map[byte]kv.Evaluator{OpTxnCommit: evalCommit, OpCondTxn: evalCond}
}

// evalCommit validates a transaction and applies its writes, atomically,
// in the apply (docs/design/mvcc-and-transactions.md §5): nothing can
// change between the validation and the writes, and every replica, reading
// the same state, decides alike. The outcome is recorded either way, so a
// retried TXN_COMMIT learns it on any node.
func evalCommit(tx *kv.ApplyTx, body []byte) ([]byte, error) {
	c, err := decodeCommit(body)
	if err != nil {
		return nil, err
	}
	if tx.Term() != c.txnID>>32 {
		tx.RecordOutcome(c.txnID, OutcomeLost)
		return []byte{OutcomeLost}, nil
	}
	code, err := validate(tx, c)
	if err != nil {
		// An engine read error (corruption, I/O) is no decision: the
		// entry is refused whole and logged as such on this node.
		return nil, err
	}
	if code == OutcomeCommitted {
		for _, w := range c.writes {
			if w.kind == wire.TxnOpPut {
				err = tx.Put(w.key, w.value)
			} else {
				err = tx.Delete(w.key)
			}
			if err != nil {
				// The proposer validated every key and value: a bad one
				// here is a forged entry, refused whole.
				return nil, err
			}
		}
	}
	tx.RecordOutcome(c.txnID, code)
	return []byte{code}, nil
}

// validate decides a transaction's outcome at the entry's position.
func validate(tx *kv.ApplyTx, c *commitCmd) (uint8, error) {
	// LastModified is exact only above the horizon: a snapshot older
	// than it cannot be validated (a change between the snapshot and the
	// horizon may read as 0), so it is refused, on every replica alike
	// (the horizon is replicated).
	if c.snapshot < tx.Horizon() {
		return OutcomeCompacted, nil
	}
	check := func(keys func(yield func([]byte) bool)) (bool, error) {
		for k := range keys {
			ts, err := tx.LastModified(k)
			if err != nil {
				return false, err
			}
			if ts > c.snapshot {
				return true, nil
			}
		}
		return false, nil
	}
	changed, err := check(func(yield func([]byte) bool) {
		for _, w := range c.writes {
			if !yield(w.key) {
				return
			}
		}
	})
	if err != nil || changed {
		return OutcomeConflict, err
	}
	if c.isolation == Serializable && !plantedSkipReadValidation {
		changed, err = check(func(yield func([]byte) bool) {
			for _, k := range c.reads {
				if !yield(k) {
					return
				}
			}
		})
		if err != nil || changed {
			return OutcomeConflict, err
		}
	}
	return OutcomeCommitted, nil
}

// evalCond runs a KAYA_TXN conditional write against the latest state:
// the compares, then the branch they select, in order
// (wire.Compare.Holds is the normative definition).
func evalCond(tx *kv.ApplyTx, body []byte) ([]byte, error) {
	t, err := wire.DecodeCondTxn(body)
	if err != nil {
		return nil, err
	}
	if err := checkCond(t, 0); err != nil {
		return nil, err
	}
	ok := true
	for _, c := range t.Compares {
		v, err := tx.Get(c.Key)
		exists := err == nil
		if err != nil && !errors.Is(err, engine.ErrNotFound) {
			return nil, err
		}
		if !c.Holds(exists, v.Value, v.TS) {
			ok = false
			break
		}
	}
	ops := t.Then
	if !ok {
		ops = t.Else
	}
	r := &wire.CondTxnReply{Succeeded: ok, Results: make([]wire.CondResult, 0, len(ops))}
	for _, op := range ops {
		res := wire.CondResult{Kind: op.Kind}
		switch op.Kind {
		case wire.TxnOpGet:
			v, err := tx.Get(op.Key)
			switch {
			case err == nil:
				res.Found, res.Value, res.ModRev = true, v.Value, v.TS
			case !errors.Is(err, engine.ErrNotFound):
				return nil, err
			}
		case wire.TxnOpPut:
			if err := tx.Put(op.Key, op.Value); err != nil {
				return nil, err
			}
			r.Revision = tx.TS()
		case wire.TxnOpDelete:
			_, err := tx.Get(op.Key)
			switch {
			case err == nil:
				if err := tx.Delete(op.Key); err != nil {
					return nil, err
				}
				res.Found, r.Revision = true, tx.TS()
			case !errors.Is(err, engine.ErrNotFound):
				return nil, err
			}
		}
		r.Results = append(r.Results, res)
	}
	return wire.AppendCondTxnReply(nil, r), nil
}

// checkCond validates a conditional write's keys and values (before it is
// proposed, and again in the apply against forged entries). maxBytes > 0
// bounds the keys and values together.
func checkCond(t *wire.CondTxn, maxBytes int64) error {
	var total int64
	for _, c := range t.Compares {
		if err := kv.ValidateKey(c.Key); err != nil {
			return err
		}
		total += int64(len(c.Key) + len(c.Value))
	}
	for _, ops := range [][]wire.CondOp{t.Then, t.Else} {
		for _, op := range ops {
			if err := kv.ValidateKey(op.Key); err != nil {
				return err
			}
			if len(op.Value) > engine.MaxValueSize {
				return fmt.Errorf("%w: value of %d bytes exceeds the %d-byte limit", engine.ErrInvalidArgument, len(op.Value), engine.MaxValueSize)
			}
			total += int64(len(op.Key) + len(op.Value))
		}
	}
	if maxBytes > 0 && total > maxBytes {
		return fmt.Errorf("%w: %w: the conditional write carries %d bytes of keys and values, more than the %d bytes one transaction may hold (--max-txn-bytes)", engine.ErrInvalidArgument, ErrTooLarge, total, maxBytes)
	}
	return nil
}
