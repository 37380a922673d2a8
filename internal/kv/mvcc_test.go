package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/vfs"
)

var mvccSeed = flag.Uint64("mvcc.seed", 0, "run TestVersionedModel with only this seed")

// cmdSpec is one command of a test entry.
type cmdSpec struct {
	op         byte
	key, value string
	horizon    uint64
	body       []byte
}

// entryV2 builds a version-2 entry; command ids are index*100+i.
func entryV2(index, proposed uint64, cmds ...cmdSpec) *pb.Entry {
	data := []byte{2}
	data = binary.LittleEndian.AppendUint64(data, proposed)
	data = binary.AppendUvarint(data, uint64(len(cmds)))
	for i, c := range cmds {
		data = append(data, c.op)
		data = binary.LittleEndian.AppendUint64(data, index*100+uint64(i))
		switch c.op {
		case opPut, opDelete:
			data = binary.AppendUvarint(data, uint64(len(c.key)))
			data = append(data, c.key...)
			if c.op == opPut {
				data = binary.AppendUvarint(data, uint64(len(c.value)))
				data = append(data, c.value...)
			}
		case opHorizon:
			data = binary.LittleEndian.AppendUint64(data, c.horizon)
		default:
			data = binary.AppendUvarint(data, uint64(len(c.body)))
			data = append(data, c.body...)
		}
	}
	return &pb.Entry{Index: new(index), Term: new(uint64(1)), Type: new(pb.EntryNormal), Data: data}
}

// Outcome codes of the test evaluator.
const (
	outCommitted = 1
	outConflict  = 2
	outTooOld    = 3
)

// opTestTxn is a test evaluator in the shape of a transaction commit:
// body = txnID u64 | snapshot u64 | n u8 | n × (len u8 | key). Every key
// must be unmodified since the snapshot; then each gets "t<txnID>".
const opTestTxn = OpCustomMin

func testTxnBody(id, snap uint64, keys ...string) []byte {
	b := binary.LittleEndian.AppendUint64(nil, id)
	b = binary.LittleEndian.AppendUint64(b, snap)
	b = append(b, byte(len(keys)))
	for _, k := range keys {
		b = append(b, byte(len(k)))
		b = append(b, k...)
	}
	return b
}

func decodeTestTxn(body []byte) (id, snap uint64, keys [][]byte, err error) {
	if len(body) < 17 {
		return 0, 0, nil, errors.New("short body")
	}
	id, snap = binary.LittleEndian.Uint64(body), binary.LittleEndian.Uint64(body[8:])
	n := int(body[16])
	p := body[17:]
	for i := 0; i < n; i++ {
		if len(p) < 1 || len(p) < 1+int(p[0]) {
			return 0, 0, nil, errors.New("truncated key")
		}
		keys = append(keys, p[1:1+int(p[0])])
		p = p[1+int(p[0]):]
	}
	if len(p) != 0 {
		return 0, 0, nil, errors.New("trailing bytes")
	}
	return id, snap, keys, nil
}

func testTxnEvaluator(tx *ApplyTx, body []byte) ([]byte, error) {
	id, snap, keys, err := decodeTestTxn(body)
	if err != nil {
		return nil, err
	}
	if snap < tx.Horizon() {
		tx.RecordOutcome(id, outTooOld)
		return []byte("too old"), nil
	}
	for _, k := range keys {
		lm, err := tx.LastModified(k)
		if err != nil {
			return nil, err
		}
		if lm > snap {
			tx.RecordOutcome(id, outConflict)
			return []byte("conflict"), nil
		}
	}
	for _, k := range keys {
		if err := tx.Put(k, []byte(fmt.Sprintf("t%d", id))); err != nil {
			return nil, err
		}
	}
	tx.RecordOutcome(id, outCommitted)
	return []byte("ok"), nil
}

// vmodel is the reference: every key's full history.
type mver struct {
	start, end uint64 // end 0: current
	value      string
}

type mrev struct {
	ts  uint64
	n   uint32
	op  byte
	key string
}

type vmodel struct {
	vers     map[string][]mver
	lastTS   uint64
	horizon  uint64
	revs     []mrev
	outcomes map[uint64]Outcome
}

func newVModel() *vmodel {
	return &vmodel{vers: map[string][]mver{}, outcomes: map[uint64]Outcome{}}
}

func (m *vmodel) cur(key string) *mver {
	vs := m.vers[key]
	if len(vs) > 0 && vs[len(vs)-1].end == 0 {
		return &vs[len(vs)-1]
	}
	return nil
}

func (m *vmodel) at(key string, ts uint64) (mver, bool) {
	for _, v := range m.vers[key] {
		if v.start <= ts && (v.end == 0 || ts < v.end) {
			return v, true
		}
	}
	return mver{}, false
}

// lastMod is what LastModified must answer (exactly, above the horizon).
func (m *vmodel) lastMod(key string) uint64 {
	if c := m.cur(key); c != nil {
		return c.start
	}
	var end uint64
	for _, v := range m.vers[key] {
		end = max(end, v.end)
	}
	return end
}

func (m *vmodel) put(key, value string, ts uint64, n *uint32) {
	if c := m.cur(key); c != nil {
		if c.start == ts {
			c.value = value
		} else {
			c.end = ts
			m.vers[key] = append(m.vers[key], mver{start: ts, value: value})
		}
	} else {
		m.vers[key] = append(m.vers[key], mver{start: ts, value: value})
	}
	m.revs = append(m.revs, mrev{ts, *n, revPut, key})
	*n++
}

func (m *vmodel) del(key string, ts uint64, n *uint32) {
	c := m.cur(key)
	if c == nil {
		return
	}
	if c.start == ts {
		vs := m.vers[key]
		m.vers[key] = vs[:len(vs)-1] // never visible
	} else {
		c.end = ts
	}
	m.revs = append(m.revs, mrev{ts, *n, revDelete, key})
	*n++
}

// apply runs one entry on the model; false when the entry is rejected.
func (m *vmodel) apply(proposed uint64, cmds []cmdSpec) bool {
	for _, c := range cmds {
		if c.op == opTestTxn {
			if _, _, _, err := decodeTestTxn(c.body); err != nil {
				return false
			}
		}
	}
	ts := max(proposed, m.lastTS+1)
	var n uint32
	h := m.horizon
	for _, c := range cmds {
		switch c.op {
		case opPut:
			m.put(c.key, c.value, ts, &n)
		case opDelete:
			m.del(c.key, ts, &n)
		case opHorizon:
			h = max(h, min(c.horizon, m.lastTS))
		case opTestTxn:
			id, snap, keys, _ := decodeTestTxn(c.body)
			switch {
			case snap < m.horizon:
				m.outcomes[id] = Outcome{TS: ts, Code: outTooOld}
			default:
				ok := true
				for _, k := range keys {
					if m.lastMod(string(k)) > snap {
						ok = false
					}
				}
				if !ok {
					m.outcomes[id] = Outcome{TS: ts, Code: outConflict}
					break
				}
				for _, k := range keys {
					m.put(string(k), fmt.Sprintf("t%d", id), ts, &n)
				}
				m.outcomes[id] = Outcome{TS: ts, Code: outCommitted}
			}
		}
	}
	m.lastTS = ts
	m.horizon = h
	return true
}

// versionedRun drives a store and the model.
type versionedRun struct {
	t      *testing.T
	rng    *rand.Rand
	seed   uint64
	fs     *vfs.MemFS
	coll   *Collector
	db     *engine.DB
	s      *Store
	m      *vmodel
	index  uint64
	nextID uint64
	// twin applies the same entries, grouped into other runs, with no
	// garbage collection: the apply must not depend on the grouping.
	twin   *Store
	twinDB *engine.DB
	log    []string
	// dropped counts the entries collected by engines closed since.
	dropped uint64
}

func (r *versionedRun) fatalf(format string, args ...any) {
	r.t.Helper()
	tail := r.log
	if len(tail) > 25 {
		tail = tail[len(tail)-25:]
	}
	r.t.Fatalf("seed %d: %s\nlast operations:\n  %s", r.seed, fmt.Sprintf(format, args...), strings.Join(tail, "\n  "))
}

func testEngineOptions(fs vfs.FS, coll *Collector) *engine.Options {
	o := &engine.Options{FS: fs, MemTableSize: 64 << 10, TargetFileSize: 16 << 10, LBaseMaxBytes: 64 << 10, L0CompactionThreshold: 2}
	if coll != nil {
		o.CompactionFilter = coll.Filter
	}
	return o
}

func testStoreOptions(db *engine.DB, coll *Collector) Options {
	return Options{NodeID: 1, DB: db, Collector: coll, Evaluators: map[byte]Evaluator{opTestTxn: testTxnEvaluator}}
}

func (r *versionedRun) open() {
	r.coll = NewCollector()
	db, err := engine.Open("/db", testEngineOptions(r.fs, r.coll))
	if err != nil {
		r.fatalf("open engine: %v", err)
	}
	opts := testStoreOptions(db, r.coll)
	// A cache of current versions small enough to evict all the time;
	// the twin runs without one.
	opts.VersionCacheBytes = 1 << 10
	s, err := Open(opts)
	if err != nil {
		r.fatalf("open store: %v", err)
	}
	r.db, r.s = db, s
	if s.AppliedTS() != r.m.lastTS || s.Horizon() != r.m.horizon || s.AppliedIndex() != r.index {
		r.fatalf("after open: applied ts %d horizon %d index %d, want %d %d %d", s.AppliedTS(), s.Horizon(), s.AppliedIndex(), r.m.lastTS, r.m.horizon, r.index)
	}
}

var testKeys = []string{"a", "a\x00", "a\x00b", "a\x01", "ab", "abc", "b", "b\xff", "ba", "c", "c\x00\x00", "d", "user/1", "user/2", "user/10", "z\xff\xff"}

func (r *versionedRun) key() string {
	if r.rng.IntN(8) == 0 {
		return fmt.Sprintf("k%02d", r.rng.IntN(40))
	}
	return testKeys[r.rng.IntN(len(testKeys))]
}

func (r *versionedRun) value() string {
	n := r.rng.IntN(40)
	if r.rng.IntN(30) == 0 {
		n = 2000 + r.rng.IntN(3000)
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + r.rng.IntN(26))
	}
	return string(b)
}

func (r *versionedRun) randomEntry() (uint64, []cmdSpec) {
	var proposed uint64
	switch r.rng.IntN(6) {
	case 0: // behind the last commit (a new leader's slow clock)
		proposed = r.m.lastTS - min(r.m.lastTS, uint64(r.rng.IntN(5)))
	case 1: // a version-1-like entry: no proposal
		proposed = 0
	case 2: // a jump of some milliseconds
		proposed = r.m.lastTS + uint64(1+r.rng.IntN(50))<<LogicalBits
	default:
		proposed = r.m.lastTS + uint64(r.rng.IntN(4))
	}
	var cmds []cmdSpec
	switch k := r.rng.IntN(20); {
	case k == 0:
		h := r.m.lastTS - min(r.m.lastTS, uint64(r.rng.IntN(200))<<LogicalBits)
		if r.rng.IntN(3) == 0 {
			h = r.m.lastTS + 1000 // beyond what is applied: clamped
		}
		cmds = append(cmds, cmdSpec{op: opHorizon, horizon: h})
	case k < 4:
		r.nextID++
		snap := r.m.lastTS - min(r.m.lastTS, uint64(r.rng.IntN(30))<<LogicalBits)
		var keys []string
		for j := 0; j < 1+r.rng.IntN(3); j++ {
			keys = append(keys, r.key())
		}
		body := testTxnBody(r.nextID, snap, keys...)
		if r.rng.IntN(15) == 0 {
			body = body[:len(body)-1] // malformed: the entry is rejected
		}
		cmds = append(cmds, cmdSpec{op: opTestTxn, body: body})
	default:
		for j := 0; j < 1+r.rng.IntN(4); j++ {
			if r.rng.IntN(4) == 0 {
				cmds = append(cmds, cmdSpec{op: opDelete, key: r.key()})
			} else {
				cmds = append(cmds, cmdSpec{op: opPut, key: r.key(), value: r.value()})
			}
		}
	}
	return proposed, cmds
}

// applyRun applies a run of 1–5 random entries (plus an empty one now and
// then) to the store as one Apply, to the twin in random pieces, and to the
// model.
func (r *versionedRun) applyRun() {
	var ents []*pb.Entry
	for i := 0; i < 1+r.rng.IntN(5); i++ {
		r.index++
		if r.rng.IntN(10) == 0 {
			ents = append(ents, &pb.Entry{Index: new(r.index), Term: new(uint64(1)), Type: new(pb.EntryNormal)})
			continue
		}
		proposed, cmds := r.randomEntry()
		ents = append(ents, entryV2(r.index, proposed, cmds...))
		before := r.s.RejectedEntries()
		ok := r.m.apply(proposed, cmds)
		r.log = append(r.log, fmt.Sprintf("entry %d proposed %d: %s (ok %v)", r.index, proposed, describe(cmds), ok))
		_ = before
	}
	rejectedBefore := r.s.RejectedEntries()
	if err := r.s.Apply(ents); err != nil {
		r.fatalf("apply: %v", err)
	}
	for len(ents) > 0 {
		n := 1 + r.rng.IntN(len(ents))
		if err := r.twin.Apply(ents[:n]); err != nil {
			r.fatalf("twin apply: %v", err)
		}
		ents = ents[n:]
	}
	_ = rejectedBefore
	if r.s.AppliedTS() != r.m.lastTS || r.s.Horizon() != r.m.horizon || r.s.AppliedIndex() != r.index {
		r.fatalf("applied ts %d horizon %d index %d, want %d %d %d", r.s.AppliedTS(), r.s.Horizon(), r.s.AppliedIndex(), r.m.lastTS, r.m.horizon, r.index)
	}
	if r.twin.AppliedTS() != r.m.lastTS || r.twin.Horizon() != r.m.horizon {
		r.fatalf("twin: applied ts %d horizon %d, want %d %d", r.twin.AppliedTS(), r.twin.Horizon(), r.m.lastTS, r.m.horizon)
	}
}

func describe(cmds []cmdSpec) string {
	var parts []string
	for _, c := range cmds {
		switch c.op {
		case opPut:
			parts = append(parts, fmt.Sprintf("put %q=%.6q", c.key, c.value))
		case opDelete:
			parts = append(parts, fmt.Sprintf("del %q", c.key))
		case opHorizon:
			parts = append(parts, fmt.Sprintf("horizon %d", c.horizon))
		default:
			id, snap, keys, err := decodeTestTxn(c.body)
			parts = append(parts, fmt.Sprintf("txn %d snap %d keys %q err %v", id, snap, keys, err))
		}
	}
	return strings.Join(parts, "; ")
}

// readTS picks a revision to read at: often a recent one, sometimes below
// the horizon or beyond the last applied one.
func (r *versionedRun) readTS() uint64 {
	switch r.rng.IntN(10) {
	case 0:
		return r.m.horizon - min(r.m.horizon, uint64(1+r.rng.IntN(1000)))
	case 1:
		return r.m.lastTS + uint64(1+r.rng.IntN(3))
	case 2:
		return 0
	}
	lo := r.m.horizon
	return lo + r.rng.Uint64N(r.m.lastTS-lo+1)
}

// checkReadErr checks the error of a read at ts that the model says must
// fail, and reports whether it had to.
func (r *versionedRun) checkReadErr(ts uint64, err error, what string) bool {
	r.t.Helper()
	if ts == 0 {
		return false
	}
	switch {
	case ts < r.m.horizon:
		var ce *CompactedError
		if !errors.As(err, &ce) || !errors.Is(err, ErrCompacted) || ce.Oldest != r.m.horizon || ce.Revision != ts {
			r.fatalf("%s at %d below the horizon %d: %v", what, ts, r.m.horizon, err)
		}
		return true
	case ts > r.m.lastTS:
		var fe *FutureRevisionError
		if !errors.As(err, &fe) || !errors.Is(err, ErrFutureRevision) || fe.Newest != r.m.lastTS {
			r.fatalf("%s at %d beyond the last applied %d: %v", what, ts, r.m.lastTS, err)
		}
		return true
	}
	return false
}

func (r *versionedRun) checkGet() {
	key, ts := r.key(), r.readTS()
	v, err := r.s.ReadAt([]byte(key), ts)
	if r.checkReadErr(ts, err, fmt.Sprintf("get %q", key)) {
		return
	}
	at := ts
	if ts == 0 {
		at = r.m.lastTS
	}
	want, ok := r.m.at(key, at)
	switch {
	case !ok && !errors.Is(err, engine.ErrNotFound):
		r.fatalf("get %q at %d: want not found, got %.12q@%d, %v", key, ts, v.Value, v.TS, err)
	case ok && err != nil:
		r.fatalf("get %q at %d: %v (want %.12q@%d)", key, ts, err, want.value, want.start)
	case ok && (string(v.Value) != want.value || v.TS != want.start):
		r.fatalf("get %q at %d: got %.12q@%d, want %.12q@%d", key, ts, v.Value, v.TS, want.value, want.start)
	}
}

func (r *versionedRun) checkScan() {
	prefixes := []string{"", "a", "a\x00", "ab", "b", "user/", "k0", "k1", "z", "c\x00"}
	prefix := prefixes[r.rng.IntN(len(prefixes))]
	ts := r.readTS()
	maxItems, maxBytes := 1000, 1<<30
	if r.rng.IntN(3) == 0 {
		maxItems = 1 + r.rng.IntN(5)
	}
	if r.rng.IntN(3) == 0 {
		maxBytes = r.rng.IntN(200)
	}
	got, err := r.s.ReadScanAt([]byte(prefix), ts, maxItems, maxBytes)
	if r.checkReadErr(ts, err, fmt.Sprintf("scan %q", prefix)) {
		return
	}
	if err != nil {
		r.fatalf("scan %q at %d: %v", prefix, ts, err)
	}
	at := ts
	if ts == 0 {
		at = r.m.lastTS
	}
	var keys []string
	for k := range r.m.vers {
		if _, ok := r.m.at(k, at); ok && strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var want []KV
	size := 0
	for _, k := range keys {
		v, _ := r.m.at(k, at)
		n := len(k) + len(v.value)
		if len(want) >= maxItems || (len(want) > 0 && size+n > maxBytes) {
			break
		}
		size += n
		want = append(want, KV{Key: []byte(k), Value: []byte(v.value), TS: v.start})
	}
	if len(got) != len(want) {
		r.fatalf("scan %q at %d (max %d items, %d bytes): %d results, want %d: got %s want %s", prefix, ts, maxItems, maxBytes, len(got), len(want), kvKeys(got), kvKeys(want))
	}
	for i := range got {
		if !bytes.Equal(got[i].Key, want[i].Key) || !bytes.Equal(got[i].Value, want[i].Value) || got[i].TS != want[i].TS {
			r.fatalf("scan %q at %d: item %d is %q=%.12q@%d, want %q=%.12q@%d", prefix, ts, i, got[i].Key, got[i].Value, got[i].TS, want[i].Key, want[i].Value, want[i].TS)
		}
	}
}

func kvKeys(kvs []KV) string {
	var s []string
	for _, kv := range kvs {
		s = append(s, fmt.Sprintf("%q", kv.Key))
	}
	return "[" + strings.Join(s, " ") + "]"
}

// checkMeta checks LastModified, outcomes and the revision log: exact
// above the horizon; at or below it, what remains must be right.
func (r *versionedRun) checkMeta() {
	for _, k := range append(testKeys, "k00", "k01", "k17", "never") {
		got, err := r.s.LastModified([]byte(k))
		want := r.m.lastMod(k)
		if err != nil || (got != want && (want > r.m.horizon || got > r.m.horizon)) {
			r.fatalf("last modified %q: %d, %v; want %d (horizon %d)", k, got, err, want, r.m.horizon)
		}
	}
	for id, want := range r.m.outcomes {
		got, ok, err := r.s.LookupOutcome(id)
		switch {
		case err != nil:
			r.fatalf("outcome %d: %v", id, err)
		case ok && got != want:
			r.fatalf("outcome %d: %+v, want %+v", id, got, want)
		case !ok && want.TS > r.m.horizon:
			r.fatalf("outcome %d (%+v) is missing above the horizon %d", id, want, r.m.horizon)
		}
	}
	if _, ok, _ := r.s.LookupOutcome(1 << 60); ok {
		r.fatal("an outcome that was never recorded was found")
	}
	// The revision log: the engine's entries, in order, are the model's
	// with some of those at or below the horizon gone.
	it, err := r.db.NewIter(&engine.IterOptions{LowerBound: revlogPrefix, UpperBound: prefixEnd(revlogPrefix)})
	if err != nil {
		r.fatalf("%v", err)
	}
	j := 0
	for ok := it.First(); ok; ok = it.Next() {
		k, v := it.Key(), it.Value()
		got := mrev{ts: binary.BigEndian.Uint64(k[2:10]), n: binary.BigEndian.Uint32(k[10:14]), op: v[0], key: string(v[1:])}
		for j < len(r.m.revs) && r.m.revs[j] != got {
			if r.m.revs[j].ts > r.m.horizon {
				r.fatalf("revision log: %+v is missing (found %+v instead)", r.m.revs[j], got)
			}
			j++
		}
		if j == len(r.m.revs) {
			r.fatalf("revision log: unexpected entry %+v", got)
		}
		j++
	}
	_ = it.Close()
	for ; j < len(r.m.revs); j++ {
		if r.m.revs[j].ts > r.m.horizon {
			r.fatalf("revision log: %+v is missing at the end", r.m.revs[j])
		}
	}
}

func (r *versionedRun) fatal(msg string) { r.t.Helper(); r.fatalf("%s", msg) }

// checkTwin compares the store's engine with the twin's: the same current
// values, and the same history, revision log and outcomes above the
// horizon (the twin collects nothing).
func (r *versionedRun) checkTwin() {
	dump := func(db *engine.DB) map[string]string {
		it, err := db.NewIter(nil)
		if err != nil {
			r.fatalf("%v", err)
		}
		defer it.Close()
		m := map[string]string{}
		for ok := it.First(); ok; ok = it.Next() {
			k, v := it.Key(), it.Value()
			if bytes.HasPrefix(k, bucketPrefix) || bytes.Equal(k, horizonKey) {
				continue
			}
			if r.coll.Filter(k, v) {
				continue // collectible: may or may not be there
			}
			m[string(k)] = string(v)
		}
		return m
	}
	a, b := dump(r.db), dump(r.twinDB)
	if len(a) != len(b) {
		r.fatalf("the twin's engine holds %d live entries, the store's %d", len(b), len(a))
	}
	for k, v := range a {
		if b[k] != v {
			r.fatalf("entry %q differs between the store and its twin", k)
		}
	}
}

// checkVersionCache: every version the apply's cache holds is the key's
// current version in the engine (the newer generation's entry where both
// hold the key), and the cache keeps to its bound.
func (r *versionedRun) checkVersionCache() {
	c := r.s.vc
	if c.bytes() > c.limit {
		r.fatalf("the version cache holds %d bytes, over its %d-byte bound", c.bytes(), c.limit)
	}
	seen := map[string]bool{}
	for i := range c.gens {
		g := &c.gens[i]
		for h, e := range g.m {
			k := g.key(e)
			if maphash.Bytes(c.seed, k) != h {
				r.fatalf("the version cache files %q under another key's hash", k)
			}
			if seen[string(k)] {
				continue // shadowed by the newer generation
			}
			seen[string(k)] = true
			cur, err := getCurrent(r.db, k)
			if err != nil {
				r.fatalf("the version cache holds %q@%d, the engine: %v", k, e.ts, err)
			}
			if cur.TS != e.ts || !bytes.Equal(cur.Value, g.value(e)) {
				r.fatalf("the version cache holds %q = %.12q@%d, the engine %.12q@%d", k, g.value(e), e.ts, cur.Value, cur.TS)
			}
		}
	}
}

func (r *versionedRun) step() {
	switch op := r.rng.IntN(100); {
	case op < 35:
		r.applyRun()
	case op < 60:
		r.checkGet()
	case op < 75:
		r.checkScan()
	case op < 80:
		r.checkMeta()
	case op < 84:
		r.log = append(r.log, "compact")
		if err := r.db.Compact(nil, nil); err != nil {
			r.fatalf("compact: %v", err)
		}
	case op < 86:
		r.log = append(r.log, "reopen")
		r.dropped += r.db.Metrics().Compaction.FilterDropped
		if err := r.db.Close(); err != nil {
			r.fatalf("close: %v", err)
		}
		r.open()
	case op < 88:
		r.checkTwin()
		r.checkVersionCache()
	case op < 94:
		r.checkChanges()
	default:
		r.checkGet()
	}
}

// TestVersionedModel applies random runs of entries (puts, deletes,
// several commands per entry, transactions validated in the apply,
// horizons, rejected entries, proposed timestamps behind and ahead)
// directly to a store and checks reads at random revisions (GetAt,
// ScanAt), LastModified, outcomes and the revision log against a model of
// every key's full history, with garbage collection in compactions at
// random horizons: reads below the horizon must answer "compacted", above
// it exactly the model. A twin store applies the same entries grouped
// into other runs and must end up with the same data. The seed is printed
// on failure; rerun one with -mvcc.seed=N.
func TestVersionedModel(t *testing.T) {
	steps := 3000
	if testing.Short() {
		steps = 1000
	}
	seeds := []uint64{1, 2, 3, 4}
	if *mvccSeed != 0 {
		seeds = []uint64{*mvccSeed}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			r := &versionedRun{t: t, rng: rand.New(rand.NewPCG(seed, 0x4d564343)), seed: seed, fs: vfs.NewMem(), m: newVModel()}
			r.open()
			var err error
			if r.twinDB, err = engine.Open("/twin", testEngineOptions(r.fs, nil)); err != nil {
				t.Fatal(err)
			}
			twinOpts := testStoreOptions(r.twinDB, nil)
			twinOpts.VersionCacheBytes = -1
			if r.twin, err = Open(twinOpts); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < steps; i++ {
				r.step()
			}
			r.checkMeta()
			r.checkTwin()
			r.checkVersionCache()
			if hits, _ := r.s.VersionCacheStats(); hits == 0 {
				t.Fatalf("seed %d: the apply's cache of current versions was never used", seed)
			}
			if hits, misses := r.twin.VersionCacheStats(); hits+misses != 0 {
				t.Fatalf("seed %d: the twin's cache is off, yet it counted %d hits and %d misses", seed, hits, misses)
			}
			// Garbage collection happened, and what it dropped reads as
			// compacted.
			if err := r.db.Compact(nil, nil); err != nil {
				t.Fatal(err)
			}
			r.checkMeta()
			dropped := r.dropped + r.db.Metrics().Compaction.FilterDropped
			t.Logf("seed %d: %d entries, last ts %d, horizon %d, %d history entries collected, %d bytes of history counted",
				seed, r.index, r.m.lastTS, r.m.horizon, dropped, r.s.HistoryBytes())
			if r.m.horizon > 0 && dropped == 0 {
				t.Fatalf("seed %d: the horizon moved to %d but compactions collected nothing", seed, r.m.horizon)
			}
			// After a full compaction nothing collectible is left.
			it, err := r.db.NewIter(nil)
			if err != nil {
				t.Fatal(err)
			}
			for ok := it.First(); ok; ok = it.Next() {
				if r.coll.Filter(it.Key(), it.Value()) {
					t.Fatalf("seed %d: %q survived a full compaction below the horizon %d", seed, it.Key(), r.m.horizon)
				}
			}
			_ = it.Close()
			_ = r.twinDB.Close()
			_ = r.db.Close()
		})
	}
}

// TestEscapeOrder: esc() keeps the order of keys, so that history keys
// sort by user key, and unescape inverts it.
func TestEscapeOrder(t *testing.T) {
	keys := []string{"", "\x00", "\x00\x00", "\x00\x01", "\x00\xff", "\x01", "a", "a\x00", "a\x00\x00", "a\x00b", "a\x01", "a\xff", "ab", "b"}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 500; i++ {
		b := make([]byte, rng.IntN(5))
		for j := range b {
			b[j] = []byte{0, 1, 2, 0xfe, 0xff, 'a'}[rng.IntN(6)]
		}
		keys = append(keys, string(b))
	}
	for _, a := range keys {
		ea := appendEsc(nil, []byte(a))
		if back, ok := unescape(ea); !ok || string(back) != a {
			t.Fatalf("unescape(esc(%q)) = %q, %v", a, back, ok)
		}
		for _, b := range keys {
			eb := appendEsc(nil, []byte(b))
			if want, got := strings.Compare(a, b), bytes.Compare(ea, eb); want != got {
				t.Fatalf("compare(%q, %q) = %d, escaped %d", a, b, want, got)
			}
			// A key's whole history sorts before the next key's.
			ha, hb := historyKey(nil, []byte(a), 0), historyKey(nil, []byte(b), 1<<63)
			if a < b && bytes.Compare(ha, hb) >= 0 {
				t.Fatalf("history of %q does not sort before %q's", a, b)
			}
			if a < b && strings.HasPrefix(b, a) && bytes.HasPrefix(eb, ea) {
				t.Fatalf("esc(%q) is a prefix of esc(%q)", a, b)
			}
		}
	}
	for _, bad := range []string{"", "a", "a\x00", "a\x00\x02", "a\x00b\x00\x01"} {
		if _, ok := unescape([]byte(bad)); ok {
			t.Fatalf("unescape accepted %q", bad)
		}
	}
}

// TestHLC: Now is strictly increasing even when the wall clock goes back,
// follows the wall clock otherwise, stays above what Update saw, and a
// timestamp too far ahead of the wall clock is counted.
func TestHLC(t *testing.T) {
	wall := time.UnixMilli(1_700_000_000_000)
	c := NewClock(func() time.Time { return wall }, 100*time.Millisecond, nil)
	a := c.Now()
	if a != TSFromTime(wall) {
		t.Fatalf("Now = %d, want the wall clock %d", a, TSFromTime(wall))
	}
	b := c.Now()
	if b != a+1 {
		t.Fatalf("a second Now in the same millisecond: %d, want %d", b, a+1)
	}
	wall = wall.Add(-time.Second) // the clock steps back
	if n := c.Now(); n <= b {
		t.Fatalf("Now went back: %d after %d", n, b)
	}
	wall = wall.Add(2 * time.Second)
	if n := c.Now(); n != TSFromTime(wall) {
		t.Fatalf("Now = %d, want the wall clock %d again", n, TSFromTime(wall))
	}
	ahead := TSFromTime(wall.Add(50*time.Millisecond)) + 7
	c.Update(ahead)
	if c.OffsetExceeded() != 0 {
		t.Fatal("50 ms ahead counted as beyond a 100 ms offset")
	}
	if n := c.Now(); n != ahead+1 {
		t.Fatalf("Now after Update(%d) = %d", ahead, n)
	}
	c.Update(TSFromTime(wall.Add(time.Second)))
	if c.OffsetExceeded() != 1 {
		t.Fatalf("a timestamp 1 s ahead was not counted: %d", c.OffsetExceeded())
	}
	if TSTime(TSFromTime(wall)) != wall {
		t.Fatal("TSTime does not invert TSFromTime")
	}
}

// TestDecodeVersion1Entries: entries of the format before versions are
// still applied (a cluster upgraded in place replays its old log), with
// timestamps that follow the last applied one.
func TestDecodeVersion1Entries(t *testing.T) {
	s := openMemStore(t, vfs.NewMem(), "/db", Options{NodeID: 1})
	if err := s.Apply([]*pb.Entry{putEntry(1, "k", "one"), putEntry(2, "k", "two")}); err != nil {
		t.Fatal(err)
	}
	if s.AppliedTS() != 2 {
		t.Fatalf("applied ts %d, want 2", s.AppliedTS())
	}
	if v, err := s.ReadAt([]byte("k"), 1); err != nil || string(v.Value) != "one" || v.TS != 1 {
		t.Fatalf("k at 1: %q@%d %v", v.Value, v.TS, err)
	}
	// A version-2 entry proposing an older timestamp still goes forward.
	if err := s.Apply([]*pb.Entry{entryV2(3, 1, cmdSpec{op: opPut, key: "k", value: "three"})}); err != nil {
		t.Fatal(err)
	}
	if v, err := s.ReadAt([]byte("k"), 0); err != nil || string(v.Value) != "three" || v.TS != 3 {
		t.Fatalf("k at latest: %q@%d %v", v.Value, v.TS, err)
	}
	// Version 1 knew no horizon or custom ops.
	bad := []byte{1, 1, opHorizon}
	bad = binary.LittleEndian.AppendUint64(bad, 9)
	bad = binary.LittleEndian.AppendUint64(bad, 5)
	if err := s.Apply([]*pb.Entry{{Index: new(uint64(4)), Term: new(uint64(1)), Type: new(pb.EntryNormal), Data: bad}}); err != nil || s.RejectedEntries() != 1 {
		t.Fatalf("a version-1 horizon entry: %v, rejected %d", err, s.RejectedEntries())
	}
}

// TestGCTarget: the leader's horizon target follows the time bound, and
// the byte bound cuts deeper when the counted history exceeds it; no
// target past the applied revision, none behind the current horizon, none
// when nothing would be collected.
func TestGCTarget(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	sec := func(s int) uint64 { return TSFromTime(now.Add(time.Duration(s) * time.Second)) }
	g := newGCState(&Options{Retention: time.Minute, RetentionBytes: 1000})
	if g.bucketMask != 1<<minBucketShift-1 {
		t.Fatalf("a 1-minute retention should use the smallest buckets, mask %x", g.bucketMask)
	}
	if _, ok := g.target(now, sec(0), 0, 0, false); ok {
		t.Fatal("a target with nothing counted")
	}
	// 400 bytes at -120 s, -30 s, -20 s and -10 s.
	for _, s := range []int{-120, -30, -20, -10} {
		g.buckets[sec(s)|g.bucketMask] = 400
		g.total += 400
	}
	h, ok := g.target(now, sec(0), 0, 0, false)
	// The byte bound (1000) keeps the two newest buckets: the one at
	// -30 s goes too, beyond the 1-minute time bound.
	if !ok || h != sec(-30)|g.bucketMask {
		t.Fatalf("target %d (%v), want the end of the -30 s bucket %d", h, ok, sec(-30)|g.bucketMask)
	}
	if h, ok := g.target(now, sec(-100), 0, 0, false); !ok || h != sec(-100) {
		t.Fatalf("target %d (%v), want no further than the applied revision", h, ok)
	}
	if _, ok := g.target(now, sec(0), sec(-30)|g.bucketMask, 0, false); ok {
		t.Fatal("a target at the current horizon")
	}
	g.retentionBytes = 0
	if h, ok := g.target(now, sec(0), 0, 0, false); !ok || h != sec(-60) {
		t.Fatalf("time bound only: %d %v, want %d", h, ok, sec(-60))
	}
	if g := newGCState(&Options{Retention: 30 * 24 * time.Hour}); (g.bucketMask+1)*maxBuckets < uint64((30*24*time.Hour).Milliseconds())<<LogicalBits {
		t.Fatalf("a 30-day retention needs more than %d buckets of %d", maxBuckets, g.bucketMask+1)
	}
}
