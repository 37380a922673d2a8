package kv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"sync/atomic"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/vfs"
)

// crashWorkload is a fixed list of entries (built once from a seeded
// generator and a model) grouped into apply runs.
type crashWorkload struct {
	ents    []*pb.Entry // ents[i] has index i+1
	specs   [][]cmdSpec
	props   []uint64
	runs    [][2]int // [from, to) into ents
	maxTxn  uint64
	history int
}

func newApplyCrashWorkload(seed uint64, n int) *crashWorkload {
	r := &versionedRun{rng: rand.New(rand.NewPCG(seed, 11)), m: newVModel()}
	w := &crashWorkload{}
	for len(w.ents) < n {
		from := len(w.ents)
		for j := 0; j < 1+r.rng.IntN(4); j++ {
			idx := uint64(len(w.ents) + 1)
			proposed, cmds := r.randomEntry()
			if r.rng.IntN(8) == 0 {
				// Horizons often, so that collection runs during the
				// workload.
				h := r.m.lastTS - min(r.m.lastTS, uint64(r.rng.IntN(20)))
				cmds = []cmdSpec{{op: opHorizon, horizon: h}}
			}
			r.m.apply(proposed, cmds)
			w.ents = append(w.ents, entryV2(idx, proposed, cmds...))
			w.specs = append(w.specs, cmds)
			w.props = append(w.props, proposed)
		}
		w.runs = append(w.runs, [2]int{from, len(w.ents)})
	}
	w.maxTxn = r.nextID
	return w
}

// modelAfter returns the model after the first n entries.
func (w *crashWorkload) modelAfter(n int) *vmodel {
	m := newVModel()
	for i := 0; i < n; i++ {
		m.apply(w.props[i], w.specs[i])
	}
	return m
}

func crashEngineOptions(fs vfs.FS, coll *Collector) *engine.Options {
	o := testEngineOptions(fs, coll)
	o.WALPreallocateBytes = -1
	o.MaxManifestBytes = 4 << 10
	return o
}

// run applies the workload's runs to a store on fs.
func (w *crashWorkload) run(fs vfs.FS) error {
	coll := NewCollector()
	db, err := engine.Open("/db", crashEngineOptions(fs, coll))
	if err != nil {
		return err
	}
	s, err := Open(testStoreOptions(db, coll))
	if err != nil {
		_ = db.Close()
		return err
	}
	for i, r := range w.runs {
		if err := s.Apply(w.ents[r[0]:r[1]]); err != nil {
			_ = db.Close()
			return fmt.Errorf("run %d: %w", i, err)
		}
		switch {
		case i%15 == 14:
			if err := db.Compact(nil, nil); err != nil {
				_ = db.Close()
				return err
			}
		case i%4 == 3:
			// Tables (durable) while later entries, horizons included,
			// are not: background compactions then collect by a horizon
			// a crash may take back, unless it was synced first.
			if err := db.Flush(); err != nil {
				_ = db.Close()
				return err
			}
		}
	}
	return db.Close()
}

// checkState compares a store with the model exactly (above the horizon):
// every key at every revision where it changed (and next to them), scans
// at those revisions, LastModified, outcomes and the revision log.
func checkState(t *testing.T, s *Store, db *engine.DB, m *vmodel, maxTxn uint64, what string) {
	checkStateAt(t, s, db, m, what, 1<<30)
}

// checkStateAt is checkState at no more than maxChecked revisions.
func checkStateAt(t *testing.T, s *Store, db *engine.DB, m *vmodel, what string, maxChecked int) {
	t.Helper()
	r := &versionedRun{t: t, s: s, db: db, m: m, coll: s.coll}
	if s.AppliedTS() != m.lastTS || s.Horizon() != m.horizon {
		t.Fatalf("%s: applied ts %d horizon %d, want %d %d", what, s.AppliedTS(), s.Horizon(), m.lastTS, m.horizon)
	}
	tss := map[uint64]bool{m.lastTS: true, m.horizon: true}
	for _, vs := range m.vers {
		for _, v := range vs {
			for _, ts := range []uint64{v.start - 1, v.start, v.start + 1, v.end - 1, v.end} {
				if ts >= m.horizon && ts <= m.lastTS && ts > 0 {
					tss[ts] = true
				}
			}
		}
	}
	var sorted []uint64
	for ts := range tss {
		sorted = append(sorted, ts)
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	if len(sorted) > maxChecked {
		// An even sample, the horizon and the last revision included.
		var sample []uint64
		for i := 0; i < maxChecked; i++ {
			sample = append(sample, sorted[i*(len(sorted)-1)/(maxChecked-1)])
		}
		sorted = sample
	}
	keys := append([]string(nil), testKeys...)
	for i := 0; i < 40; i++ {
		keys = append(keys, fmt.Sprintf("k%02d", i))
	}
	for _, ts := range sorted {
		if ts == 0 {
			continue
		}
		for _, k := range keys {
			v, err := s.ReadAt([]byte(k), ts)
			want, ok := m.at(k, ts)
			switch {
			case !ok && !errors.Is(err, engine.ErrNotFound):
				t.Fatalf("%s: %q at %d: want not found, got %.10q@%d %v", what, k, ts, v.Value, v.TS, err)
			case ok && (err != nil || string(v.Value) != want.value || v.TS != want.start):
				t.Fatalf("%s: %q at %d: got %.10q@%d %v, want %.10q@%d", what, k, ts, v.Value, v.TS, err, want.value, want.start)
			}
		}
		got, err := s.ReadScanAt(nil, ts, 1<<20, 1<<30)
		if err != nil {
			t.Fatalf("%s: scan at %d: %v", what, ts, err)
		}
		n := 0
		for k := range m.vers {
			if _, ok := m.at(k, ts); ok {
				n++
			}
		}
		if len(got) != n {
			t.Fatalf("%s: scan at %d: %d keys, want %d", what, ts, len(got), n)
		}
	}
	r.checkMeta()
}

// TestCrashDuringApply cuts power at every write operation while a store
// applies versioned entries (puts, deletes, transactions with outcomes,
// horizons that sync and let compactions collect), then opens the
// simulated disk: the applied index, the current versions, the history,
// the revision log and the outcomes agree with the model after exactly
// that many entries; replaying the rest (as raft does) then gives the full
// model. Once with only synced data, once (at every other operation) with
// a random half of the rest.
// KAYA_CRASH_STRIDE=N tests every N-th operation only.
func TestCrashDuringApply(t *testing.T) {
	n := 150
	if testing.Short() {
		n = 120
	}
	w := newApplyCrashWorkload(5, n)
	var total atomic.Int64
	count := vfs.NewErrorFS(vfs.NewMem(), vfs.InjectorFunc(func(op vfs.Op) error {
		if op.Kind.IsWrite() {
			total.Add(1)
		}
		return nil
	}))
	if err := w.run(count); err != nil {
		t.Fatal(err)
	}
	full := w.modelAfter(len(w.ents))
	stride := int64(1)
	if s := os.Getenv("KAYA_CRASH_STRIDE"); s != "" {
		fmt.Sscan(s, &stride)
	} else if testing.Short() {
		stride = 4
	}
	t.Logf("%d entries in %d runs, about %d write operations; crashing at every %d", len(w.ents), len(w.runs), total.Load(), stride)
	collected := false
	for _, keep := range []float64{0, 0.5} {
		step := stride
		if keep > 0 {
			step = 2 * stride // a sample of the random write-backs
		}
		for k := int64(1); k <= total.Load()+5; k += step {
			mem := vfs.NewMem()
			var ops atomic.Int64
			var clone *vfs.MemFS
			rng := rand.New(rand.NewPCG(uint64(k), 9))
			fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
				if op.Kind.IsWrite() && ops.Add(1) == k {
					clone = mem.CrashClone(vfs.CrashCloneOptions{UnsyncedKeepProbability: keep, Rand: rng})
				}
				return nil
			}))
			if err := w.run(fs); err != nil {
				t.Fatal(err)
			}
			if clone == nil {
				continue
			}
			what := fmt.Sprintf("crash at write op %d (keep %.1f)", k, keep)
			coll := NewCollector()
			db, err := engine.Open("/db", crashEngineOptions(clone, coll))
			if err != nil {
				t.Fatalf("%s: reopen: %v", what, err)
			}
			s, err := Open(testStoreOptions(db, coll))
			if err != nil {
				t.Fatalf("%s: store: %v", what, err)
			}
			idx := int(s.AppliedIndex())
			checkStateAt(t, s, db, w.modelAfter(idx), fmt.Sprintf("%s, recovered at index %d", what, idx), 25)
			// Raft delivers everything after the snapshot again; the
			// store skips what it has.
			for _, r := range w.runs {
				if r[1] <= idx {
					continue
				}
				if err := s.Apply(w.ents[r[0]:r[1]]); err != nil {
					t.Fatalf("%s: replay: %v", what, err)
				}
			}
			if err := db.Compact(nil, nil); err != nil {
				t.Fatal(err)
			}
			if db.Metrics().Compaction.FilterDropped > 0 {
				collected = true
			}
			checkStateAt(t, s, db, full, what+", after the replay", 25)
			_ = db.Close()
		}
	}
	if !collected {
		t.Fatal("no garbage was ever collected: the test does not cover collection")
	}
}

// TestMigrationFromUnversioned: an engine written before versions (raw
// values, a 16-byte applied record, no format marker) is converted at the
// first open: every value becomes version 0, reads at the latest revision
// and at 0 return it, the log's version-1 entries then apply after it. A
// power cut at every write operation of the migration leaves an engine
// that the next open finishes converting, never adding a second header.
func TestMigrationFromUnversioned(t *testing.T) {
	defer func(n int) { migrateBatchBytes = n }(migrateBatchBytes)
	migrateBatchBytes = 2 << 10 // many batches
	base := vfs.NewMem()
	db, err := engine.Open("/db", &engine.Options{FS: base})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := 0; i < 300; i++ {
		k, v := fmt.Sprintf("key%03d", i), fmt.Sprintf("value-%d-%s", i, make([]byte, i%50))
		if i%7 == 0 {
			v = "\x01\x00\x00\x00\x00\x00\x00\x00\x00looks like a header"
		}
		want[k] = v
		if err := db.Set([]byte(k), []byte(v), engine.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	old := make([]byte, 16)
	binary.LittleEndian.PutUint64(old, 42)
	binary.LittleEndian.PutUint64(old[8:], 3)
	if err := db.Set(appliedKey, old, engine.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	check := func(fs vfs.FS, what string) {
		t.Helper()
		db, err := engine.Open("/db", &engine.Options{FS: fs})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		defer db.Close()
		s, err := Open(Options{NodeID: 1, DB: db})
		if err != nil {
			t.Fatalf("%s: open: %v", what, err)
		}
		if s.AppliedIndex() != 42 || s.AppliedTS() != 0 {
			t.Fatalf("%s: applied %d ts %d", what, s.AppliedIndex(), s.AppliedTS())
		}
		items, err := s.ReadScanAt(nil, 0, 1000, 1<<30)
		if err != nil || len(items) != len(want) {
			t.Fatalf("%s: scan: %d items, %v", what, len(items), err)
		}
		for _, it := range items {
			if want[string(it.Key)] != string(it.Value) || it.TS != 0 {
				t.Fatalf("%s: %q = %q@%d, want %q@0", what, it.Key, it.Value, it.TS, want[string(it.Key)])
			}
		}
		// The old log goes on: a version-1 entry after the applied index.
		if err := s.Apply([]*pb.Entry{putEntry(43, "key000", "new")}); err != nil {
			t.Fatal(err)
		}
		if v, err := s.ReadAt([]byte("key000"), 0); err != nil || string(v.Value) != "new" || v.TS != 1 {
			t.Fatalf("%s: after a version-1 entry: %q@%d %v", what, v.Value, v.TS, err)
		}
		if v, err := s.ReadAt([]byte("key000"), 0); err != nil || v.TS != 1 {
			t.Fatalf("%s: %v", what, err)
		}
		if n, err := Migrate(db, nil); err != nil || n != 0 {
			t.Fatalf("%s: a second migration rewrote %d values: %v", what, n, err)
		}
	}
	check(base.CrashClone(vfs.CrashCloneOptions{UnsyncedKeepProbability: 1}), "clean")

	var total atomic.Int64
	fs := vfs.NewErrorFS(base.CrashClone(vfs.CrashCloneOptions{UnsyncedKeepProbability: 1}), vfs.InjectorFunc(func(op vfs.Op) error {
		if op.Kind.IsWrite() {
			total.Add(1)
		}
		return nil
	}))
	mdb, err := engine.Open("/db", &engine.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := Migrate(mdb, nil); err != nil || n != len(want) {
		t.Fatalf("migrated %d values, %v", n, err)
	}
	_ = mdb.Close()
	for k := int64(1); k <= total.Load(); k++ {
		disk := base.CrashClone(vfs.CrashCloneOptions{UnsyncedKeepProbability: 1})
		var ops atomic.Int64
		var clone *vfs.MemFS
		fs := vfs.NewErrorFS(disk, vfs.InjectorFunc(func(op vfs.Op) error {
			if op.Kind.IsWrite() && ops.Add(1) == k {
				clone = disk.CrashClone(vfs.CrashCloneOptions{UnsyncedKeepProbability: 0.5, Rand: rand.New(rand.NewPCG(uint64(k), 1))})
			}
			return nil
		}))
		mdb, err := engine.Open("/db", &engine.Options{FS: fs})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Migrate(mdb, nil); err != nil {
			t.Fatal(err)
		}
		_ = mdb.Close()
		if clone != nil {
			check(clone, fmt.Sprintf("crash at migration write op %d", k))
		}
	}
}
