package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/kayadb/kayadb/engine"
)

// Applying versioned writes
//
// Apply turns a run of committed entries into one engine batch. Each entry
// gets its commit timestamp, ts = max(proposed, lastApplied+1), and its
// commands run in two phases:
//
//  1. evaluation: plain puts and deletes are queued as they are; a custom
//     command (op ≥ OpCustomMin) runs its Evaluator, which reads the latest
//     state (including what earlier entries of the run wrote) and queues
//     writes and outcome records. An evaluator's error rejects the whole
//     entry: nothing of it is written, on every replica alike.
//  2. writing: each queued write reads the key's current version (the
//     run's overlay of keys written so far, else one engine Get), moves it
//     to the history keyspace if it is older than ts, writes the new
//     current version (or deletes the key), and appends to the revision
//     log.
//
// The engine batch is not visible until it commits, so the overlay stands
// for it: every key written in the run maps to its current version. It
// lives only for one Apply call.

// OpCustomMin is the smallest command op available to Evaluators: 1 to 15
// are the state machine's own (1 put, 2 delete, 3 set the GC horizon).
// The transaction manager registers TxnCommit and conditional writes above
// it (docs/design/mvcc-and-transactions.md §5, §6).
const OpCustomMin = 16

// MaxCommandBody bounds a custom command's body: a raft entry must stay
// well under raftnode's uncommitted-bytes limit (64 MiB), and the design
// bounds one transaction's write set at 16 MiB.
const MaxCommandBody = 32 << 20

// An Evaluator runs a custom command inside the raft apply, on every
// replica, in log order, atomically with the other commands of its entry.
// It must be deterministic: a function of body and of what tx reads only
// (no clock, no randomness, no local state such as this node's open
// transactions). It returns a result for the proposer (Result.Data), or an
// error, which rejects the whole entry (the proposer gets it wrapped in
// ErrRejectedEntry). A refusal the proposer must learn about, such as a
// transaction conflict, is a result, not an error.
type Evaluator func(tx *ApplyTx, body []byte) (result []byte, err error)

// Outcome is a recorded outcome of a transaction.
type Outcome struct {
	// TS is the commit timestamp of the entry that recorded it.
	TS uint64
	// Code is the caller's outcome code (committed, conflict, ...).
	Code uint8
}

// curVersion is a key's current version during an apply run, and what
// the engine will say about it once the run's batch is committed: the
// overlay must answer exactly as the engine would, whatever runs raft
// groups the entries into.
type curVersion struct {
	exists bool
	ts     uint64 // of the current version when exists
	value  []byte
	// histEnd is the end of the key's newest history entry, when
	// histKnown (else the engine's history, untouched by the run, says).
	histEnd   uint64
	histKnown bool
}

// overlay maps the keys an apply run wrote or read to their current version. A
// run is usually a few dozen entries: a slice searched from the end, with
// a map index once it grows past overlayLinear (a catch-up run of
// thousands). Keys alias the entries' data (or an Evaluator's slices),
// which live as long as the Apply call.
type overlay struct {
	keys []keyedVersion
	idx  map[string]int
}

type keyedVersion struct {
	key []byte
	v   curVersion
}

const overlayLinear = 32

func (o *overlay) reset() {
	clear(o.keys) // drop the references to the last run's data
	o.keys = o.keys[:0]
	o.idx = nil
}

func (o *overlay) find(key []byte) int {
	if o.idx != nil {
		if i, ok := o.idx[string(key)]; ok {
			return i
		}
		return -1
	}
	for i := len(o.keys) - 1; i >= 0; i-- {
		if bytes.Equal(o.keys[i].key, key) {
			return i
		}
	}
	return -1
}

func (o *overlay) get(key []byte) (curVersion, bool) {
	if i := o.find(key); i >= 0 {
		return o.keys[i].v, true
	}
	return curVersion{}, false
}

func (o *overlay) set(key []byte, v curVersion) {
	if i := o.find(key); i >= 0 {
		o.keys[i].v = v
		return
	}
	o.keys = append(o.keys, keyedVersion{key, v})
	switch {
	case o.idx != nil:
		o.idx[string(key)] = len(o.keys) - 1
	case len(o.keys) > overlayLinear:
		o.idx = make(map[string]int, 2*len(o.keys))
		for i, kv := range o.keys {
			o.idx[string(kv.key)] = i
		}
	}
}

// pendingOp is a write queued by an entry's evaluation phase.
type pendingOp struct {
	kind  byte // opPut, opDelete, pendingOutcome, pendingSysPut or pendingSysDelete
	key   []byte
	value []byte
	txnID uint64
	code  uint8
}

const (
	pendingOutcome   = 0xff
	pendingSysPut    = 0xfe // ApplyTx.PutSystem: key under ExtPrefix, unversioned
	pendingSysDelete = 0xfd
)

// applier is the state of one Apply call.
type applier struct {
	s       *Store
	db      *engine.DB
	b       *engine.Batch
	overlay overlay
	// lastTS is the commit timestamp of the last entry applied so far.
	lastTS uint64
	// horizon is the GC horizon as of the entries applied so far;
	// horizonSet says an entry of the run moved it.
	horizon    uint64
	horizonSet bool
	// buckets holds the byte-accounting changes of the run (gc.go):
	// bucket → new total; a deleted bucket maps to -1.
	buckets map[uint64]int64
	keyBuf  []byte
	valBuf  []byte
	tx      ApplyTx
	// decoded holds the run's entries, decoded (Store.Apply).
	decoded []decodedEntry
	// The interest filter as of the run's start (Store.SetInterest), and
	// whether a change of the run matched it.
	interestGen   uint64
	interestMatch func(key []byte) bool
	interestHit   bool
}

func (a *applier) reset(s *Store, db *engine.DB, b *engine.Batch) {
	a.s, a.db, a.b = s, db, b
	if a.buckets == nil {
		a.buckets = map[uint64]int64{}
	}
	a.overlay.reset()
	clear(a.buckets)
	a.lastTS = s.appliedTS.Load()
	a.horizon = s.horizon.Load()
	a.horizonSet = false
	a.interestGen, a.interestMatch = s.interest.current()
	a.interestHit = a.interestMatch == nil
}

// current returns key's current version as of the writes so far.
func (a *applier) current(key []byte) (curVersion, error) {
	if c, ok := a.overlay.get(key); ok {
		return c, nil
	}
	if k, ts, value, ok := a.s.vc.get(key); ok {
		// The cache's copy of the key outlives the run: no clone.
		c := curVersion{exists: true, ts: ts, value: value}
		a.overlay.set(k, c)
		return c, nil
	}
	v, err := a.db.Get(key)
	if errors.Is(err, engine.ErrNotFound) {
		a.overlay.set(bytes.Clone(key), curVersion{})
		return curVersion{}, nil
	}
	if err != nil {
		return curVersion{}, err
	}
	val, ts, err := DecodeValue(v)
	if err != nil {
		return curVersion{}, fmt.Errorf("key %q: %w", key, err)
	}
	// The engine does not change during the run (its batch commits at the
	// end), so what it said is kept with the run's writes: a KAYA_TXN's
	// compare and its write of the same key, or several entries of the run
	// on one key, look it up once. (The key is copied: the caller's may
	// not outlive the run.)
	c := curVersion{exists: true, ts: ts, value: val}
	a.overlay.set(bytes.Clone(key), c)
	return c, nil
}

// lastModified is lastModified with the run's overlay.
func (a *applier) lastModified(key []byte) (uint64, error) {
	c, ok := a.overlay.get(key)
	switch {
	case !ok:
		if _, ts, _, ok := a.s.vc.get(key); ok {
			return ts, nil
		}
		return lastModified(a.db, a.db, key)
	case c.exists:
		return c.ts, nil
	case c.histKnown:
		return c.histEnd, nil
	}
	return historyEnd(a.db, key)
}

// write applies one queued operation at ts, as the n-th change of its
// commit, and returns the bytes it added outside the current keyspace
// (history, revision log, outcomes: what garbage collection reclaims).
func (a *applier) write(op *pendingOp, ts uint64, n *uint32) (int, error) {
	switch op.kind {
	case pendingSysPut:
		return 0, a.b.Set(op.key, op.value)
	case pendingSysDelete:
		return 0, a.b.Delete(op.key)
	}
	if op.kind == pendingOutcome {
		k := outcomeKey(op.txnID)
		v := binary.BigEndian.AppendUint64(a.valBuf[:0], ts)
		v = append(v, op.code)
		a.valBuf = v
		return len(k) + len(v), a.b.Set(k, v)
	}
	cur, err := a.current(op.key)
	if err != nil {
		return 0, err
	}
	if op.kind == opDelete && !cur.exists {
		return 0, nil // nothing to delete: no change, no revision
	}
	added := 0
	next := curVersion{histEnd: cur.histEnd, histKnown: cur.histKnown}
	if cur.exists && cur.ts < ts {
		// The current version ends now: it moves to history. (A version
		// written earlier by the same commit was never visible and is
		// simply replaced.)
		a.keyBuf = historyKey(a.keyBuf[:0], op.key, cur.ts)
		a.valBuf = appendHistoryValue(a.valBuf[:0], ts, cur.value)
		if err := a.b.Set(a.keyBuf, a.valBuf); err != nil {
			return 0, err
		}
		added += len(a.keyBuf) + len(a.valBuf)
		next.histEnd, next.histKnown = ts, true
	}
	rev := byte(revPut)
	if op.kind == opPut {
		a.valBuf = appendHeader(a.valBuf[:0], ts)
		a.valBuf = append(a.valBuf, op.value...)
		if err := a.b.Set(op.key, a.valBuf); err != nil {
			return 0, err
		}
		next.exists, next.ts, next.value = true, ts, op.value
	} else {
		rev = revDelete
		if err := a.b.Delete(op.key); err != nil {
			return 0, err
		}
	}
	a.overlay.set(op.key, next)
	if !a.interestHit && a.interestMatch(op.key) {
		a.interestHit = true
	}
	a.keyBuf = revlogKey(a.keyBuf[:0], ts, *n)
	*n++
	a.valBuf = append(append(a.valBuf[:0], rev), op.key...)
	if err := a.b.Set(a.keyBuf, a.valBuf); err != nil {
		return 0, err
	}
	added += len(a.keyBuf) + len(a.valBuf)
	return added, nil
}

// ApplyTx is what an Evaluator sees of the state machine while its entry
// is applied: reads of the latest state (including the writes of earlier
// entries in the same apply run, and its own queued writes), and writes,
// queued and made at the entry's commit timestamp if the entry succeeds.
// It is valid only during the Evaluator call.
type ApplyTx struct {
	a       *applier
	ts      uint64
	term    uint64
	pending []pendingOp
}

// TS returns the commit timestamp of the entry being applied.
func (tx *ApplyTx) TS() uint64 { return tx.ts }

// Term returns the raft term in which the entry being applied was appended
// to the log (the same on every replica). A command proposed by a leader of
// an earlier term can still be appended in a later one (a proposal a
// deposed leader had queued is forwarded to the new leader): an evaluator
// whose command is valid only within its proposer's term checks it here.
func (tx *ApplyTx) Term() uint64 { return tx.term }

// Horizon returns the GC horizon as of this entry. LastModified is exact
// only for changes after it (a change at or before it may read as 0, and
// replicas may differ there, as each collects at its own pace): an
// evaluator must compare it only with timestamps at or after the horizon,
// and refuse (deterministically) a transaction whose snapshot is older.
func (tx *ApplyTx) Horizon() uint64 { return tx.a.horizon }

// ownWrite returns the last write this entry queued for key.
func (tx *ApplyTx) ownWrite(key []byte) (*pendingOp, bool) {
	for i := len(tx.pending) - 1; i >= 0; i-- {
		p := &tx.pending[i]
		if (p.kind == opPut || p.kind == opDelete) && string(p.key) == string(key) {
			return p, true
		}
	}
	return nil, false
}

// Get returns key's latest value and its commit timestamp (the entry's
// own timestamp for a value it wrote itself), or engine.ErrNotFound.
func (tx *ApplyTx) Get(key []byte) (Version, error) {
	if p, ok := tx.ownWrite(key); ok {
		if p.kind == opDelete {
			return Version{}, engine.ErrNotFound
		}
		return Version{Value: p.value, TS: tx.ts}, nil
	}
	c, err := tx.a.current(key)
	if err != nil {
		return Version{}, err
	}
	if !c.exists {
		return Version{}, engine.ErrNotFound
	}
	return Version{Value: c.value, TS: c.ts}, nil
}

// LastModified returns the commit timestamp of key's last change (a put or
// a delete) before this entry, 0 if none is known (see Horizon).
func (tx *ApplyTx) LastModified(key []byte) (uint64, error) {
	return tx.a.lastModified(key)
}

// Put queues a write of value under key.
func (tx *ApplyTx) Put(key, value []byte) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if len(value) > engine.MaxValueSize {
		return fmt.Errorf("%w: value of %d bytes exceeds the %d-byte limit", engine.ErrInvalidArgument, len(value), engine.MaxValueSize)
	}
	tx.pending = append(tx.pending, pendingOp{kind: opPut, key: key, value: value})
	return nil
}

// Delete queues a deletion of key.
func (tx *ApplyTx) Delete(key []byte) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	tx.pending = append(tx.pending, pendingOp{kind: opDelete, key: key})
	return nil
}

// RecordOutcome queues the outcome of transaction txnID, recorded with
// the entry's commit timestamp; LookupOutcome finds it until garbage
// collection passes that timestamp.
func (tx *ApplyTx) RecordOutcome(txnID uint64, code uint8) {
	tx.pending = append(tx.pending, pendingOp{kind: pendingOutcome, txnID: txnID, code: code})
}

// PutSystem queues a write of an unversioned system key under ExtPrefix
// (a component's replicated state, such as a change-feed consumer's
// position): no history, no revision-log entry, not visible to user reads.
func (tx *ApplyTx) PutSystem(key, value []byte) error {
	if err := checkExtKey(key); err != nil {
		return err
	}
	tx.pending = append(tx.pending, pendingOp{kind: pendingSysPut, key: key, value: value})
	return nil
}

// DeleteSystem queues the deletion of a system key under ExtPrefix.
func (tx *ApplyTx) DeleteSystem(key []byte) error {
	if err := checkExtKey(key); err != nil {
		return err
	}
	tx.pending = append(tx.pending, pendingOp{kind: pendingSysDelete, key: key})
	return nil
}

// applyEntry runs one decoded entry at ts. It returns the results for the
// commands' proposers, or an error that rejects the entry (nothing of it
// was written). An error of the engine batch is returned as fatal.
func (a *applier) applyEntry(cmds []command, ts, term uint64) (results [][]byte, reject, fatal error) {
	tx := &a.tx
	*tx = ApplyTx{a: a, ts: ts, term: term, pending: tx.pending[:0]}
	horizon, horizonSet := a.horizon, false
	for i := range cmds {
		c := &cmds[i]
		switch {
		case c.op == opPut:
			tx.pending = append(tx.pending, pendingOp{kind: opPut, key: c.key, value: c.value})
		case c.op == opDelete:
			tx.pending = append(tx.pending, pendingOp{kind: opDelete, key: c.key})
		case c.op == opHorizon:
			// Never past what was applied before this entry (a read at the
			// last applied timestamp must always work), never backwards.
			if h := min(c.horizon, a.lastTS); h > horizon {
				horizon, horizonSet = h, true
			}
		default:
			eval := a.s.opts.Evaluators[c.op]
			res, err := eval(tx, c.value)
			if err != nil {
				return nil, fmt.Errorf("command %d (op %d): %w", i, c.op, err), nil
			}
			if results == nil {
				results = make([][]byte, len(cmds))
			}
			results[i] = res
		}
	}
	var n uint32
	added := 0
	for i := range tx.pending {
		k, err := a.write(&tx.pending[i], ts, &n)
		if err != nil {
			return nil, nil, err
		}
		added += k
	}
	a.lastTS = ts
	if added > 0 {
		a.s.gc.account(a, ts, added)
	}
	if horizonSet {
		a.horizon, a.horizonSet = horizon, true
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], horizon)
		if err := a.b.Set(horizonKey, v[:]); err != nil {
			return nil, nil, err
		}
		if err := a.s.gc.collectBuckets(a, horizon); err != nil {
			return nil, nil, err
		}
	}
	return results, nil, nil
}
