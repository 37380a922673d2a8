package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/kayadb/kayadb/internal/lsm/manifest"
	"github.com/kayadb/kayadb/internal/vfs"
)

// dropPrefixFilter drops every value that starts with "drop".
func dropPrefixFilter(calls *atomic.Int64) CompactionFilter {
	return func(key, value []byte) bool {
		if calls != nil {
			calls.Add(1)
		}
		return bytes.HasPrefix(value, []byte("drop"))
	}
}

// compactLevelTo compacts every table of level start into level output
// (which may skip levels): a compaction that is not bottommost when deeper
// levels hold data. Automatic compactions must be off.
func compactLevelTo(t *testing.T, d *DB, start, output int) {
	t.Helper()
	d.mu.Lock()
	v := d.vs.Current()
	c := d.newCompaction(v, d.levelInfo(v), start, output, append([]*manifest.FileMetadata(nil), v.Levels[start]...))
	v.Unref()
	if c == nil || c.isMove() {
		d.mu.Unlock()
		t.Fatalf("no rewriting compaction from L%d to L%d", start, output)
	}
	for _, f := range c.allInputs() {
		f.Compacting = true
	}
	snapshots, gen := d.mu.snapshots.seqs(), d.mu.snapshotGen
	d.mu.Unlock()
	err := d.runCompaction(c, snapshots, gen, d.opts.CompactionFilter)
	d.mu.Lock()
	for _, f := range c.allInputs() {
		f.Compacting = false
	}
	if err == nil {
		d.updateReadStateLocked(nil)
	}
	d.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if c.bottommost {
		t.Fatalf("the compaction from L%d to L%d is bottommost; the test needs data below", start, output)
	}
}

func mustGet(t *testing.T, get func([]byte) ([]byte, error), key, want string) {
	t.Helper()
	v, err := get([]byte(key))
	if want == "" {
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("get %q: want not found, got %q, %v", key, v, err)
		}
		return
	}
	if err != nil || string(v) != want {
		t.Fatalf("get %q: got %q, %v; want %q", key, v, err, want)
	}
}

// TestCompactionFilterDropsAtBottom: with no snapshot open, a bottommost
// compaction removes the entries the filter drops, and the older versions
// of their keys with them; the rest is untouched.
func TestCompactionFilterDropsAtBottom(t *testing.T) {
	var calls atomic.Int64
	db, err := Open("/db", &Options{FS: vfs.NewMem(), DisableAutomaticCompactions: true, CompactionFilter: dropPrefixFilter(&calls)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := 0; i < 100; i++ {
		_ = db.Set([]byte(fmt.Sprintf("k%03d", i)), []byte("keep-old"), NoSync)
	}
	for i := 0; i < 100; i += 2 {
		_ = db.Set([]byte(fmt.Sprintf("k%03d", i)), []byte("drop-me"), NoSync)
	}
	// A flush does not consult the filter.
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 0 {
		t.Fatalf("the filter was called %d times by a flush", calls.Load())
	}
	if err := db.Compact(nil, nil); err != nil {
		t.Fatal(err)
	}
	m := db.Metrics()
	if m.Compaction.FilterDropped != 50 {
		t.Fatalf("filter dropped %d entries, want 50\n%s", m.Compaction.FilterDropped, m)
	}
	// Only the newest version of each key was offered.
	if calls.Load() != 100 {
		t.Fatalf("the filter was called %d times, want 100 (once per key)", calls.Load())
	}
	for i := 0; i < 100; i++ {
		want := "keep-old"
		if i%2 == 0 {
			want = ""
		}
		mustGet(t, db.Get, fmt.Sprintf("k%03d", i), want)
	}
	// Dropped outright: no tombstone is left in the tree.
	if n := countInternalEntries(t, db); n != 50 {
		t.Fatalf("%d entries left in the tables, want 50", n)
	}
}

// countInternalEntries counts the entries (all kinds) in every table.
func countInternalEntries(t *testing.T, d *DB) int {
	t.Helper()
	rs := d.loadReadState()
	defer rs.unref()
	var n int
	for _, files := range rs.version.Levels {
		for _, f := range files {
			h, err := d.tables.get(f.FileNum, f.Size)
			if err != nil {
				t.Fatal(err)
			}
			n += int(h.r.Properties().NumEntries)
			h.release()
		}
	}
	return n
}

// TestCompactionFilterNeverResurfacesBelowOutput: the newest version of a
// key is dropped by a compaction that is not the bottom of the tree, while
// an older version lies below. The key must read as deleted, not as the
// older version (a naive drop would resurrect it).
func TestCompactionFilterNeverResurfacesBelowOutput(t *testing.T) {
	db, err := Open("/db", &Options{FS: vfs.NewMem(), DisableAutomaticCompactions: true, CompactionFilter: dropPrefixFilter(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.Set([]byte("k"), []byte("old"), NoSync)
	if err := db.Compact(nil, nil); err != nil { // "old" goes to L6
		t.Fatal(err)
	}
	_ = db.Set([]byte("k"), []byte("drop-new"), NoSync)
	_ = db.Set([]byte("z"), []byte("z"), NoSync)
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	_ = db.Set([]byte("a"), []byte("a"), NoSync)
	_ = db.Set([]byte("m"), []byte("m"), NoSync)
	if err := db.Flush(); err != nil { // a second, overlapping L0 table: no trivial move
		t.Fatal(err)
	}
	compactLevelTo(t, db, 0, manifest.NumLevels-2)
	if n := db.Metrics().Compaction.FilterDropped; n != 1 {
		t.Fatalf("filter dropped %d entries, want 1", n)
	}
	mustGet(t, db.Get, "k", "")
	it, _ := db.NewIter(nil)
	var keys []string
	for ok := it.First(); ok; ok = it.Next() {
		keys = append(keys, string(it.Key()))
	}
	_ = it.Close()
	if fmt.Sprint(keys) != "[a m z]" {
		t.Fatalf("iterator sees %v, want [a m z]", keys)
	}
	// The full compaction removes the tombstone and the old value.
	if err := db.Compact(nil, nil); err != nil {
		t.Fatal(err)
	}
	mustGet(t, db.Get, "k", "")
	if n := countInternalEntries(t, db); n != 3 {
		t.Fatalf("%d entries left, want 3 (a, m, z)", n)
	}
	if err := db.checkInvariants(); err != nil {
		t.Fatal(err)
	}
}

// TestCompactionFilterNeverResurfacesForSnapshot: an older version is kept
// in the same compaction for a snapshot. Dropping the newest one must not
// hand that older version to current readers; the snapshot still reads it.
func TestCompactionFilterNeverResurfacesForSnapshot(t *testing.T) {
	db, err := Open("/db", &Options{FS: vfs.NewMem(), DisableAutomaticCompactions: true, CompactionFilter: dropPrefixFilter(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.Set([]byte("k"), []byte("old"), NoSync)
	snap := db.NewSnapshot()
	_ = db.Set([]byte("k"), []byte("drop-new"), NoSync)
	if err := db.Compact(nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := db.Metrics().Compaction.FilterDropped; n != 1 {
		t.Fatalf("filter dropped %d entries, want 1", n)
	}
	mustGet(t, db.Get, "k", "")
	mustGet(t, snap.Get, "k", "old")
	_ = snap.Close()
	if err := db.Compact(nil, nil); err != nil {
		t.Fatal(err)
	}
	mustGet(t, db.Get, "k", "")
	if n := countInternalEntries(t, db); n != 0 {
		t.Fatalf("%d entries left, want 0", n)
	}
}

// TestCompactionFilterSparesWhatSnapshotsSee: an entry an open snapshot can
// read is never offered to the filter.
func TestCompactionFilterSparesWhatSnapshotsSee(t *testing.T) {
	var calls atomic.Int64
	db, err := Open("/db", &Options{FS: vfs.NewMem(), DisableAutomaticCompactions: true, CompactionFilter: dropPrefixFilter(&calls)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.Set([]byte("k"), []byte("drop-1"), NoSync)
	snap := db.NewSnapshot()
	if err := db.Compact(nil, nil); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 0 {
		t.Fatalf("the filter was offered an entry an open snapshot sees")
	}
	mustGet(t, snap.Get, "k", "drop-1")
	mustGet(t, db.Get, "k", "drop-1")
	_ = snap.Close()
	if err := db.Compact(nil, nil); err != nil {
		t.Fatal(err)
	}
	mustGet(t, db.Get, "k", "")
}

// horizonFilter drops values "~N…" with N below a horizon the test raises
// (a monotonic rule like MVCC garbage collection).
type horizonFilter struct {
	horizon atomic.Int64
	calls   atomic.Int64
}

func (h *horizonFilter) filter(key, value []byte) bool {
	h.calls.Add(1)
	n, ok := droppableAt(value)
	return ok && n < h.horizon.Load()
}

// droppableAt parses the N of a value "~N-…".
func droppableAt(v []byte) (int64, bool) {
	if len(v) < 2 || v[0] != '~' {
		return 0, false
	}
	end := bytes.IndexByte(v, '-')
	if end < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(v[1:end]), 10, 64)
	return n, err == nil
}

// TestRandomizedModelWithFilter runs the randomized model test with a
// compaction filter and automatic compactions. Each write's value may be
// droppable from a point in time on (a horizon the test raises). Current
// reads must return the model's value, or "not found" when that value is
// droppable by then, and never anything else (an older version that
// resurfaced); snapshot reads must be exact (the filter never drops what a
// snapshot sees). With -model.seed=N only that seed runs.
func TestRandomizedModelWithFilter(t *testing.T) {
	ops := *modelOps
	if ops == 0 {
		ops = 3000
		if testing.Short() {
			ops = 800
		}
	}
	seeds := []uint64{1, 2, 3}
	if *modelSeed != 0 {
		seeds = []uint64{*modelSeed}
	}
	for _, os := range modelOptionSets()[:3] {
		for _, seed := range seeds {
			t.Run(fmt.Sprintf("%s/seed=%d", os.name, seed), func(t *testing.T) {
				hf := &horizonFilter{}
				opts := func(fs vfs.FS) *Options {
					o := os.opts(fs)
					o.CompactionFilter = hf.filter
					return o
				}
				r := &modelRun{t: t, rng: rand.New(rand.NewPCG(seed, 0x46494c54)), seed: seed, fs: vfs.NewMem(), opts: opts, m: model{}}
				fr := &filterRun{modelRun: r, hf: hf}
				r.open()
				for i := 0; i < ops; i++ {
					fr.step(i)
				}
				fr.checkAll("end")
				if err := r.db.Compact(nil, nil); err != nil {
					r.fatalf("compact: %v", err)
				}
				fr.checkAll("after a full compaction")
				r.closeDB()
				t.Logf("seed %d: filter called %d times, dropped %d entries", seed, hf.calls.Load(), fr.dropped)
			})
		}
	}
}

type filterRun struct {
	*modelRun
	hf      *horizonFilter
	dropped uint64
}

// droppable reports whether the model's value may have been dropped.
func (f *filterRun) droppable(v string) bool {
	n, ok := droppableAt([]byte(v))
	return ok && n < f.hf.horizon.Load()
}

func (f *filterRun) value(i int) []byte {
	v := f.modelRun.value()
	if f.rng.IntN(2) == 0 {
		return append([]byte(fmt.Sprintf("~%d-", i)), v...)
	}
	return v
}

// checkGetTolerant reads key from the current state.
func (f *filterRun) checkGetTolerant(key []byte, what string) {
	f.t.Helper()
	v, err := f.db.Get(key)
	want, ok := f.m[string(key)]
	switch {
	case err != nil && !errors.Is(err, ErrNotFound):
		f.fatalf("%s get %q: %v", what, key, err)
	case err != nil && ok && !f.droppable(want):
		f.fatalf("%s get %q: not found, want %d bytes (not droppable)", what, key, len(want))
	case err == nil && (!ok || string(v) != want):
		f.fatalf("%s get %q: got %d bytes %.12q, want present=%v %.12q: an older version resurfaced", what, key, len(v), v, ok, want)
	}
}

// checkScanTolerant walks the current state forward and compares it with
// the model: every key seen must hold the model's value, every key not
// seen must be droppable.
func (f *filterRun) checkScanTolerant(newIter func(*IterOptions) (*Iterator, error), what string) {
	f.t.Helper()
	it, err := newIter(nil)
	if err != nil {
		f.fatalf("%s: %v", what, err)
	}
	seen := map[string]bool{}
	for ok := it.First(); ok; ok = it.Next() {
		k := string(it.Key())
		want, present := f.m[k]
		if !present || want != string(it.Value()) {
			f.fatalf("%s: key %q holds %.12q, want present=%v %.12q: an older version resurfaced", what, k, it.Value(), present, want)
		}
		seen[k] = true
	}
	if err := it.Close(); err != nil {
		f.fatalf("%s: %v", what, err)
	}
	for k, v := range f.m {
		if !seen[k] && !f.droppable(v) {
			f.fatalf("%s: key %q is missing and its value is not droppable", what, k)
		}
	}
}

func (f *filterRun) checkAll(what string) {
	f.checkScanTolerant(f.db.NewIter, what)
	n := 0
	for k := range f.m { // a random sample, in map order
		if n++; n > 50 {
			break
		}
		f.checkGetTolerant([]byte(k), what)
	}
	f.dropped = f.db.Metrics().Compaction.FilterDropped
	if err := f.db.checkInvariants(); err != nil {
		f.fatalf("%s: invariants: %v", what, err)
	}
}

func (f *filterRun) step(i int) {
	r := f.modelRun
	op := r.rng.IntN(100)
	switch {
	case op < 40:
		k, v := r.key(), f.value(i)
		r.log = append(r.log, fmt.Sprintf("set %q (%.8q)", k, v))
		if err := r.db.Set(k, v, NoSync); err != nil {
			r.fatalf("set: %v", err)
		}
		r.m[string(k)] = string(v)
	case op < 48:
		k := r.key()
		r.log = append(r.log, fmt.Sprintf("delete %q", k))
		if err := r.db.Delete(k, NoSync); err != nil {
			r.fatalf("delete: %v", err)
		}
		delete(r.m, string(k))
	case op < 52:
		b := r.db.NewBatch()
		n := 1 + r.rng.IntN(20)
		for j := 0; j < n; j++ {
			k := r.key()
			if r.rng.IntN(4) == 0 {
				_ = b.Delete(k)
				delete(r.m, string(k))
			} else {
				v := f.value(i)
				_ = b.Set(k, v)
				r.m[string(k)] = string(v)
			}
		}
		r.log = append(r.log, fmt.Sprintf("batch of %d", n))
		if err := b.Commit(NoSync); err != nil {
			r.fatalf("batch: %v", err)
		}
	case op < 62:
		f.checkGetTolerant(r.key(), "db")
	case op < 66:
		f.checkScanTolerant(r.db.NewIter, "db")
	case op < 70:
		// The horizon moves forward: writes made before some earlier
		// operation become droppable.
		h := int64(i - r.rng.IntN(200))
		if h > f.hf.horizon.Load() {
			f.hf.horizon.Store(h)
			r.log = append(r.log, fmt.Sprintf("horizon %d", h))
		}
	case op < 73:
		r.log = append(r.log, "snapshot")
		s := &modelSnap{s: r.db.NewSnapshot(), m: r.m.clone()}
		// Values droppable by now may already be gone; the snapshot
		// decides which (checking it sees nothing else), and from then
		// on must read exactly that.
		for k, v := range s.m {
			if !f.droppable(v) {
				continue
			}
			got, err := s.s.Get([]byte(k))
			switch {
			case errors.Is(err, ErrNotFound):
				delete(s.m, k)
			case err != nil || string(got) != v:
				r.fatalf("snapshot get %q: %.12q, %v; want %.12q or not found", k, got, err, v)
			}
		}
		r.snaps = append(r.snaps, s)
	case op < 80:
		if len(r.snaps) == 0 {
			return
		}
		s := r.snaps[r.rng.IntN(len(r.snaps))]
		// Exact: the filter never drops what a snapshot sees.
		if r.rng.IntN(2) == 0 {
			r.checkGet(s.s.Get, s.m, r.key(), "snapshot")
		} else {
			r.checkIter(s.s.NewIter, s.m, "snapshot")
		}
	case op < 83:
		if len(r.snaps) == 0 {
			return
		}
		j := r.rng.IntN(len(r.snaps))
		r.log = append(r.log, "close snapshot")
		_ = r.snaps[j].s.Close()
		r.snaps = append(r.snaps[:j], r.snaps[j+1:]...)
	case op < 88:
		r.log = append(r.log, "flush")
		if err := r.db.Flush(); err != nil {
			r.fatalf("flush: %v", err)
		}
	case op < 92:
		a, b := r.key(), r.key()
		if bytes.Compare(a, b) > 0 {
			a, b = b, a
		}
		if r.rng.IntN(3) == 0 {
			a, b = nil, nil
		}
		r.log = append(r.log, fmt.Sprintf("compact [%q,%q]", a, b))
		if err := r.db.Compact(a, b); err != nil {
			r.fatalf("compact: %v", err)
		}
	case op < 94:
		r.log = append(r.log, "reopen")
		r.closeDB()
		r.open()
	case op < 95:
		dir := fmt.Sprintf("/ckpt-%d", len(r.log))
		r.log = append(r.log, "checkpoint "+dir)
		if err := r.db.Checkpoint(dir); err != nil {
			r.fatalf("checkpoint: %v", err)
		}
		c, err := Open(dir, r.opts(r.fs))
		if err != nil {
			r.fatalf("open checkpoint: %v", err)
		}
		f.checkScanTolerant(c.NewIter, "checkpoint")
		if err := c.Close(); err != nil {
			r.fatalf("close checkpoint: %v", err)
		}
		_ = r.fs.RemoveAll(dir)
	default:
		f.checkAll("full check")
	}
}

// TestModelWithFilterThatDropsNothing: the plain randomized model test,
// exact reads everywhere, with a filter installed that is consulted but
// never drops: the filter's presence changes nothing that can be read.
func TestModelWithFilterThatDropsNothing(t *testing.T) {
	ops := 1500
	if testing.Short() {
		ops = 500
	}
	for _, os := range modelOptionSets()[:2] {
		t.Run(os.name, func(t *testing.T) {
			var calls atomic.Int64
			opts := func(fs vfs.FS) *Options {
				o := os.opts(fs)
				o.CompactionFilter = func(key, value []byte) bool { calls.Add(1); return false }
				return o
			}
			r := &modelRun{t: t, rng: rand.New(rand.NewPCG(7, 0x4b415941)), seed: 7, fs: vfs.NewMem(), opts: opts, m: model{}}
			r.open()
			for i := 0; i < ops; i++ {
				r.step()
			}
			r.checkFull()
			r.closeDB()
			if calls.Load() == 0 {
				t.Fatal("the filter was never consulted; the test proves nothing")
			}
		})
	}
}

// TestCrashWithCompactionFilter cuts power at every write operation of a
// workload whose compactions drop entries through a filter (values
// droppable once the workload has moved past them). The recovered state
// must be the state after a prefix of the batches, except that values
// droppable by then may be missing; an older version never resurfaces.
func TestCrashWithCompactionFilter(t *testing.T) {
	batches := 200
	if testing.Short() {
		batches = 80
	}
	w := newCrashWorkload(3, batches)
	// Half of the values become droppable 20 batches after they were
	// written.
	for i, ops := range w.batches {
		for j := range ops {
			if !ops[j].del && (i+j)%2 == 0 {
				ops[j].value = fmt.Sprintf("~%d-%s", i, ops[j].value)
			}
		}
	}
	run := func(db *DB, hf *horizonFilter, acked *atomic.Int64) error {
		for i, ops := range w.batches {
			hf.horizon.Store(int64(i - 20))
			b := db.NewBatch()
			for _, op := range ops {
				if op.del {
					_ = b.Delete([]byte(op.key))
				} else {
					_ = b.Set([]byte(op.key), []byte(op.value))
				}
			}
			_ = b.Set([]byte(markerKey), []byte(fmt.Sprint(i)))
			if err := b.Commit(&WriteOptions{Sync: w.sync[i]}); err != nil {
				return err
			}
			if w.sync[i] {
				acked.Store(int64(i + 1))
			}
			switch w.after[i] {
			case "flush":
				if err := db.Flush(); err != nil {
					return err
				}
			case "compact":
				if err := db.Compact(nil, nil); err != nil {
					return err
				}
			}
		}
		return nil
	}
	opts := func(fs vfs.FS, hf *horizonFilter) *Options {
		o := crashOptions(fs)
		o.CompactionFilter = hf.filter
		return o
	}
	var total atomic.Int64
	{
		hf := &horizonFilter{}
		fs := vfs.NewErrorFS(vfs.NewMem(), vfs.InjectorFunc(func(op vfs.Op) error {
			if op.Kind.IsWrite() {
				total.Add(1)
			}
			return nil
		}))
		db, err := Open("/db", opts(fs, hf))
		if err != nil {
			t.Fatal(err)
		}
		var acked atomic.Int64
		if err := run(db, hf, &acked); err != nil {
			t.Fatal(err)
		}
		if db.Metrics().Compaction.FilterDropped == 0 {
			t.Fatal("the workload's compactions dropped nothing; the test proves nothing")
		}
		_ = db.Close()
	}
	n := total.Load()
	stride := int64(1)
	if testing.Short() {
		stride = 3
	}
	for k := int64(1); k <= n+5; k += stride {
		mem := vfs.NewMem()
		hf := &horizonFilter{}
		var count, acked atomic.Int64
		var clone *vfs.MemFS
		var ackedAtCrash, horizonAtCrash int64
		fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
			if op.Kind.IsWrite() && count.Add(1) == k {
				ackedAtCrash = acked.Load()
				horizonAtCrash = hf.horizon.Load()
				clone = mem.CrashClone(vfs.CrashCloneOptions{})
			}
			return nil
		}))
		db, err := Open("/db", opts(fs, hf))
		if err != nil {
			t.Fatal(err)
		}
		if err := run(db, hf, &acked); err != nil {
			t.Fatal(err)
		}
		_ = db.Close()
		if clone == nil {
			continue
		}
		what := fmt.Sprintf("crash at write op %d", k)
		rhf := &horizonFilter{}
		rhf.horizon.Store(horizonAtCrash)
		db, err = Open("/db", opts(clone, rhf))
		if err != nil {
			t.Fatalf("%s: reopen: %v", what, err)
		}
		got := readAll(t, db)
		p := 0
		if mk, ok := got[markerKey]; ok {
			fmt.Sscan(mk, &p)
			p++
		}
		if p < int(ackedAtCrash) {
			t.Fatalf("%s: recovered %d batches, %d were acknowledged as synced", what, p, ackedAtCrash)
		}
		want := w.stateAfter(p)
		for k, v := range want {
			g, ok := got[k]
			n, droppable := droppableAt([]byte(v))
			switch {
			case ok && g != v:
				t.Fatalf("%s: key %q holds %.16q, want %.16q (state after batch %d)", what, k, g, v, p)
			case !ok && !(droppable && n < horizonAtCrash):
				t.Fatalf("%s: key %q missing, and %.16q is not droppable (state after batch %d)", what, k, v, p)
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				t.Fatalf("%s: key %q present, deleted in the state after batch %d: an older version resurfaced", what, k, p)
			}
		}
		if err := db.checkInvariants(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		_ = db.Close()
	}
}

// TestCompactionFilterDiscardedWhenSnapshotOpens: a snapshot that opens
// while a filtering compaction runs could see the entries it drops (they
// are all older than the snapshot). The compaction's output is discarded,
// the snapshot keeps reading them, and the next compaction runs without the
// filter so that compactions always make progress.
func TestCompactionFilterDiscardedWhenSnapshotOpens(t *testing.T) {
	var db *DB
	var snap *Snapshot
	filter := func(key, value []byte) bool {
		if snap == nil {
			snap = db.NewSnapshot() // opens mid-compaction
		}
		return bytes.HasPrefix(value, []byte("drop"))
	}
	var err error
	db, err = Open("/db", &Options{FS: vfs.NewMem(), DisableAutomaticCompactions: true, CompactionFilter: filter})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.Set([]byte("k"), []byte("drop-1"), NoSync)
	_ = db.Set([]byte("j"), []byte("keep"), NoSync)
	if err := db.Compact(nil, nil); err != nil {
		t.Fatal(err)
	}
	m := db.Metrics()
	if m.Compaction.FilterDiscarded != 1 || m.Compaction.FilterDropped != 0 {
		t.Fatalf("discarded %d, dropped %d; want 1 and 0", m.Compaction.FilterDiscarded, m.Compaction.FilterDropped)
	}
	mustGet(t, snap.Get, "k", "drop-1")
	mustGet(t, db.Get, "k", "drop-1")
	if !db.mu.skipFilter {
		t.Fatal("the next compaction is not told to run without the filter")
	}
	_ = snap.Close()
	// With the snapshot closed, a later filtering compaction drops it (a
	// new write into the range makes the compaction rewrite the table).
	snap = &Snapshot{} // non-nil: the filter opens no more snapshots
	_ = db.Set([]byte("a"), []byte("a"), NoSync)
	if err := db.Compact(nil, nil); err != nil {
		t.Fatal(err)
	}
	mustGet(t, db.Get, "k", "")
	mustGet(t, db.Get, "j", "keep")
	if n := db.Metrics().Compaction.FilterDropped; n != 1 {
		t.Fatalf("dropped %d, want 1", n)
	}
}
