// Package wiretest is an in-memory model of a KayaDB leader's data
// opcodes, for testing clients without a cluster: PUT, GET, DELETE, SCAN,
// the interactive transactions (TXN_BEGIN, TXN_OP, TXN_COMMIT,
// TXN_ROLLBACK) and the versioned-data opcodes (KAYA_TXN, GET_AT, SCAN_AT),
// over a history of versions per key.
//
// It models the semantics of docs/design/mvcc-and-transactions.md as a
// client sees them: every write gets the next revision; transactions take
// their snapshot at BEGIN, see their own writes, conflict early on a key
// another open transaction wrote or that changed after the snapshot, and
// are validated at commit (the read set too, under serializable
// isolation, the default); a retried TXN_COMMIT answers the first
// outcome; ids are term<<32|counter, and LoseTxns models a leadership
// change. It is a model, not a server: one mutex, no raft, no disk, no
// authentication (callers strip the auth prefixes), and nothing here may be
// used outside tests.
package wiretest

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/kayadb/kayadb/internal/wire"
)

// version is one value a key held from rev on (deleted: it was absent).
type version struct {
	rev     uint64
	value   []byte
	deleted bool
}

// txn is an open transaction.
type txn struct {
	snapshot uint64
	reads    map[string]bool
	writes   map[string]*version // value, or deleted
	order    []string            // write order of the keys in writes
	// refused: a write of it was refused, so it cannot commit (as the
	// server's txn.Manager: a client may pipeline writes with COMMIT).
	refused         bool
	refusedConflict bool
}

// outcome is how a transaction that reached TXN_COMMIT ended.
type outcome struct {
	rev      uint64 // commit revision (0: conflict)
	conflict bool
}

// Model is the in-memory state of one leader. The zero value is not
// usable; call New.
type Model struct {
	mu struct {
		sync.Mutex
		rev      uint64
		oldest   uint64 // the oldest readable revision (Compact)
		keys     map[string][]version
		term     uint64
		counter  uint64
		txns     map[uint64]*txn
		outcomes map[uint64]outcome
		snapshot bool // snapshot isolation instead of serializable
		scanCap  int
	}
}

// New returns an empty model at revision 0, term 1.
func New() *Model {
	m := &Model{}
	m.mu.keys = map[string][]version{}
	m.mu.txns = map[uint64]*txn{}
	m.mu.outcomes = map[uint64]outcome{}
	m.mu.term = 1
	m.mu.scanCap = wire.MaxScanItems
	return m
}

// SetSnapshotIsolation makes commits validate only the write set (the
// original's snapshot isolation) instead of the read set too.
func (m *Model) SetSnapshotIsolation(on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mu.snapshot = on
}

// SetScanCap sets the most items one SCAN or SCAN_AT answers (the
// server's cap; default wire.MaxScanItems).
func (m *Model) SetScanCap(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mu.scanCap = n
}

// Revision returns the newest revision.
func (m *Model) Revision() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mu.rev
}

// Compact makes revisions below rev unreadable.
func (m *Model) Compact(rev uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mu.oldest = max(m.mu.oldest, rev)
}

// LoseTxns models a leadership change: the term moves on and every open
// transaction is lost (requests for it answer wire.MsgTxnLost); outcomes
// of commits survive.
func (m *Model) LoseTxns() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mu.term++
	m.mu.counter = 0
	clear(m.mu.txns)
}

// OpenTxns returns the number of open transactions.
func (m *Model) OpenTxns() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.mu.txns)
}

// Put writes key=value at the next revision and returns it (test setup).
func (m *Model) Put(key, value []byte) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mu.rev++
	m.write(string(key), version{rev: m.mu.rev, value: slices.Clone(value)})
	return m.mu.rev
}

func (m *Model) write(key string, v version) {
	m.mu.keys[key] = append(m.mu.keys[key], v)
}

// at returns key's version at rev (ok false: absent then).
func (m *Model) at(key string, rev uint64) (version, bool) {
	vs := m.mu.keys[key]
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].rev <= rev {
			return vs[i], !vs[i].deleted
		}
	}
	return version{}, false
}

// lastMod returns the revision of key's last change (put or delete), 0
// when it never changed.
func (m *Model) lastMod(key string) uint64 {
	vs := m.mu.keys[key]
	if len(vs) == 0 {
		return 0
	}
	return vs[len(vs)-1].rev
}

func errReply(st wire.Status, format string, args ...any) (wire.Status, []byte) {
	return st, wire.AppendError(nil, fmt.Sprintf(format, args...))
}

func invalid(err error) (wire.Status, []byte) {
	return errReply(wire.StatusInvalidArgument, "%v", err)
}

// checkKey applies the server's key rules.
func checkKey(key []byte) error {
	if len(key) > wire.MaxKeySize {
		return fmt.Errorf("key of %d bytes exceeds the %d-byte limit", len(key), wire.MaxKeySize)
	}
	if len(key) > 0 && key[0] == 0 {
		return fmt.Errorf("keys beginning with byte 0x00 are reserved for the system")
	}
	return nil
}

// Handle answers one request whose payload carries no auth prefix, as a
// leader would; opcodes it does not model answer "unknown opcode".
func (m *Model) Handle(op wire.Opcode, p []byte) (wire.Status, []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch op {
	case wire.OpPut:
		k, v, err := wire.DecodePut(p)
		if err != nil {
			return invalid(err)
		}
		if err := checkKey(k); err != nil {
			return invalid(err)
		}
		m.mu.rev++
		m.write(string(k), version{rev: m.mu.rev, value: slices.Clone(v)})
		return wire.StatusOK, nil
	case wire.OpDelete:
		k, err := wire.DecodeKey(p)
		if err != nil {
			return invalid(err)
		}
		if err := checkKey(k); err != nil {
			return invalid(err)
		}
		if _, ok := m.at(string(k), m.mu.rev); ok {
			m.mu.rev++
			m.write(string(k), version{rev: m.mu.rev, deleted: true})
		}
		return wire.StatusOK, nil
	case wire.OpGet:
		k, err := wire.DecodeKey(p)
		if err != nil {
			return invalid(err)
		}
		v, ok := m.at(string(k), m.mu.rev)
		if !ok {
			return wire.StatusNotFound, nil
		}
		return wire.StatusOK, wire.AppendValue(nil, v.value)
	case wire.OpScan:
		prefix, err := wire.DecodeKey(p)
		if err != nil {
			return invalid(err)
		}
		var items []wire.KV
		for _, it := range m.scan(prefix, nil, m.mu.rev, m.mu.scanCap) {
			items = append(items, wire.KV{Key: it.Key, Value: it.Value})
		}
		return wire.StatusOK, wire.AppendScanResult(nil, items)
	case wire.OpGetAt:
		ts, k, err := wire.DecodeGetAt(p)
		if err != nil {
			return invalid(err)
		}
		if ts == wire.ReadTSLocal {
			ts = 0 // the model has one node: its applied state is the latest
		}
		rev, st, reply := m.readRev(ts)
		if st != wire.StatusOK {
			return st, reply
		}
		v, ok := m.at(string(k), rev)
		if !ok {
			return wire.StatusNotFound, nil
		}
		return wire.StatusOK, wire.AppendGetAtReply(nil, v.value, v.rev)
	case wire.OpScanAt:
		s, err := wire.DecodeScanAt(p)
		if err != nil {
			return invalid(err)
		}
		if len(s.Start) > 0 && !bytes.HasPrefix(s.Start, s.Prefix) {
			return errReply(wire.StatusInvalidArgument, "SCAN_AT start %q does not begin with the prefix %q", s.Start, s.Prefix)
		}
		rev, st, reply := m.readRev(s.ReadTS)
		if st != wire.StatusOK {
			return st, reply
		}
		limit := m.mu.scanCap
		if s.Limit > 0 && int(s.Limit) < limit {
			limit = int(s.Limit)
		}
		items := m.scan(s.Prefix, s.Start, rev, limit+1)
		r := &wire.ScanAtReply{ReadRev: rev, Items: items}
		if len(items) > limit {
			r.Items, r.More = items[:limit], true
		}
		return wire.StatusOK, wire.AppendScanAtReply(nil, r)
	case wire.OpKayaTxn:
		t, err := wire.DecodeCondTxn(p)
		if err != nil {
			return invalid(err)
		}
		return m.condTxn(t)
	case wire.OpTxnBegin:
		m.mu.counter++
		id := m.mu.term<<32 | m.mu.counter
		m.mu.txns[id] = &txn{snapshot: m.mu.rev, reads: map[string]bool{}, writes: map[string]*version{}}
		return wire.StatusOK, wire.AppendTxnBeginReply(nil, id, m.mu.rev)
	case wire.OpTxnOp:
		o, err := wire.DecodeTxnOp(p)
		if err != nil {
			return invalid(err)
		}
		return m.txnOp(o)
	case wire.OpTxnCommit:
		id, err := wire.DecodeTxnID(p)
		if err != nil {
			return invalid(err)
		}
		return m.commit(id)
	case wire.OpTxnRollback:
		id, err := wire.DecodeTxnID(p)
		if err != nil {
			return invalid(err)
		}
		if _, ok := m.mu.txns[id]; !ok {
			return m.unknownTxn(id)
		}
		delete(m.mu.txns, id)
		return wire.StatusOK, nil
	}
	return errReply(wire.StatusError, wire.MsgUnknownOpcode, op)
}

// readRev resolves a read_ts: 0 is the newest revision; below the oldest
// readable one is COMPACTED; above the newest, INVALID_ARGUMENT.
func (m *Model) readRev(ts uint64) (uint64, wire.Status, []byte) {
	switch {
	case ts == 0:
		return m.mu.rev, wire.StatusOK, nil
	case ts < m.mu.oldest:
		return 0, wire.StatusCompacted, wire.AppendCompacted(nil, ts, m.mu.oldest)
	case ts > m.mu.rev:
		st, reply := errReply(wire.StatusInvalidArgument, wire.MsgFutureRevision, ts, m.mu.rev)
		return 0, st, reply
	}
	return ts, wire.StatusOK, nil
}

// scan returns up to limit keys under prefix from start, at rev.
func (m *Model) scan(prefix, start []byte, rev uint64, limit int) []wire.VersionedKV {
	var keys []string
	for k := range m.mu.keys {
		if strings.HasPrefix(k, string(prefix)) && k >= string(start) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var out []wire.VersionedKV
	for _, k := range keys {
		if len(out) == limit {
			break
		}
		if v, ok := m.at(k, rev); ok {
			out = append(out, wire.VersionedKV{Key: []byte(k), Value: v.value, ModRev: v.rev})
		}
	}
	return out
}

func (m *Model) unknownTxn(id uint64) (wire.Status, []byte) {
	if id>>32 < m.mu.term {
		return errReply(wire.StatusInvalidArgument, wire.MsgTxnLost, id, id>>32)
	}
	return errReply(wire.StatusInvalidArgument, wire.MsgTxnUnknown, id)
}

func (m *Model) txnOp(o wire.TxnOp) (wire.Status, []byte) {
	t, ok := m.mu.txns[o.TxnID]
	if !ok {
		return m.unknownTxn(o.TxnID)
	}
	k := string(o.Key)
	if err := checkKey(o.Key); err != nil {
		t.refused = t.refused || o.Kind != wire.TxnOpGet
		return invalid(err)
	}
	if o.Kind == wire.TxnOpGet {
		if w, ok := t.writes[k]; ok {
			if w.deleted {
				return wire.StatusNotFound, nil
			}
			return wire.StatusOK, wire.AppendValue(nil, w.value)
		}
		if t.snapshot < m.mu.oldest {
			return wire.StatusCompacted, wire.AppendCompacted(nil, t.snapshot, m.mu.oldest)
		}
		t.reads[k] = true
		v, ok := m.at(k, t.snapshot)
		if !ok {
			return wire.StatusNotFound, nil
		}
		return wire.StatusOK, wire.AppendValue(nil, v.value)
	}
	// An early conflict: another open transaction wrote the key, or it
	// changed after the snapshot.
	for id, other := range m.mu.txns {
		if _, ok := other.writes[k]; ok && id != o.TxnID {
			t.refused, t.refusedConflict = true, true
			return errReply(wire.StatusTxnConflict, wire.MsgTxnConflict)
		}
	}
	if m.lastMod(k) > t.snapshot {
		t.refused, t.refusedConflict = true, true
		return errReply(wire.StatusTxnConflict, wire.MsgTxnConflict)
	}
	if _, ok := t.writes[k]; !ok {
		t.order = append(t.order, k)
	}
	t.writes[k] = &version{value: slices.Clone(o.Value), deleted: o.Kind == wire.TxnOpDelete}
	return wire.StatusOK, nil
}

func (m *Model) commit(id uint64) (wire.Status, []byte) {
	if out, ok := m.mu.outcomes[id]; ok {
		if out.conflict {
			return errReply(wire.StatusTxnConflict, wire.MsgTxnConflict)
		}
		return wire.StatusOK, wire.AppendTxnCommitReply(nil, out.rev)
	}
	t, ok := m.mu.txns[id]
	if !ok {
		return m.unknownTxn(id)
	}
	delete(m.mu.txns, id) // released on every outcome
	if t.refused {
		if t.refusedConflict {
			return errReply(wire.StatusTxnConflict, wire.MsgTxnConflict)
		}
		return errReply(wire.StatusInvalidArgument, "invalid argument: transaction %d was not committed: one of its writes was refused; it is over, start it again", id)
	}
	if len(t.writes) == 0 {
		return wire.StatusOK, wire.AppendTxnCommitReply(nil, t.snapshot)
	}
	check := slices.Clone(t.order)
	if !m.mu.snapshot {
		for k := range t.reads {
			check = append(check, k)
		}
	}
	for _, k := range check {
		if m.lastMod(k) > t.snapshot {
			m.mu.outcomes[id] = outcome{conflict: true}
			return errReply(wire.StatusTxnConflict, wire.MsgTxnConflict)
		}
	}
	m.mu.rev++
	for _, k := range t.order {
		w := t.writes[k]
		if _, exists := m.at(k, m.mu.rev); w.deleted && !exists {
			continue
		}
		m.write(k, version{rev: m.mu.rev, value: w.value, deleted: w.deleted})
	}
	m.mu.outcomes[id] = outcome{rev: m.mu.rev}
	return wire.StatusOK, wire.AppendTxnCommitReply(nil, m.mu.rev)
}

func (m *Model) condTxn(t *wire.CondTxn) (wire.Status, []byte) {
	for _, c := range t.Compares {
		if err := checkKey(c.Key); err != nil {
			return invalid(err)
		}
	}
	for _, op := range append(slices.Clone(t.Then), t.Else...) {
		if err := checkKey(op.Key); err != nil {
			return invalid(err)
		}
	}
	ok := true
	for _, c := range t.Compares {
		v, exists := m.at(string(c.Key), m.mu.rev)
		if !c.Holds(exists, v.value, v.rev) {
			ok = false
			break
		}
	}
	ops := t.Then
	if !ok {
		ops = t.Else
	}
	r := &wire.CondTxnReply{Succeeded: ok}
	rev := m.mu.rev + 1
	for _, op := range ops {
		k := string(op.Key)
		cur, exists := m.at(k, rev)
		res := wire.CondResult{Kind: op.Kind}
		switch op.Kind {
		case wire.TxnOpGet:
			if exists {
				res.Found, res.Value, res.ModRev = true, cur.value, cur.rev
			}
		case wire.TxnOpPut:
			m.write(k, version{rev: rev, value: slices.Clone(op.Value)})
			r.Revision = rev
		case wire.TxnOpDelete:
			if exists {
				res.Found = true
				m.write(k, version{rev: rev, deleted: true})
				r.Revision = rev
			}
		}
		r.Results = append(r.Results, res)
	}
	if r.Revision != 0 {
		m.mu.rev = rev
	}
	return wire.StatusOK, wire.AppendCondTxnReply(nil, r)
}
