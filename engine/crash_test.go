package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/vfs"
)

// crashOp is one write of a crash-test batch.
type crashOp struct {
	key   string
	value string // "" with del
	del   bool
}

// crashWorkload is a deterministic list of batches plus maintenance calls.
// Every batch also sets markerKey to its index, so the recovered value of the
// marker tells how many batches survived.
type crashWorkload struct {
	batches [][]crashOp
	sync    []bool
	// after[i] is a maintenance action run after batch i: "flush",
	// "compact" or "".
	after []string
}

const markerKey = "\x00marker"

func newCrashWorkload(seed uint64, n int) *crashWorkload {
	rng := rand.New(rand.NewPCG(seed, 7))
	w := &crashWorkload{}
	for i := 0; i < n; i++ {
		var ops []crashOp
		for j := 0; j < 1+rng.IntN(4); j++ {
			k := fmt.Sprintf("key%03d", rng.IntN(120))
			if rng.IntN(5) == 0 {
				ops = append(ops, crashOp{key: k, del: true})
			} else {
				ops = append(ops, crashOp{key: k, value: fmt.Sprintf("%s-v%d-%s", k, i, string(make([]byte, rng.IntN(1200))))})
			}
		}
		w.batches = append(w.batches, ops)
		w.sync = append(w.sync, rng.IntN(3) == 0)
		act := ""
		switch rng.IntN(25) {
		case 0:
			act = "flush"
		case 1:
			act = "compact"
		}
		w.after = append(w.after, act)
	}
	return w
}

// stateAfter returns the expected contents after the first p batches.
func (w *crashWorkload) stateAfter(p int) map[string]string {
	m := map[string]string{}
	for i := 0; i < p; i++ {
		for _, op := range w.batches[i] {
			if op.del {
				delete(m, op.key)
			} else {
				m[op.key] = op.value
			}
		}
		m[markerKey] = fmt.Sprint(i)
	}
	return m
}

func crashOptions(fs vfs.FS) *Options {
	return &Options{
		FS: fs, MemTableSize: 64 << 10, TargetFileSize: 8 << 10, LBaseMaxBytes: 32 << 10,
		L0CompactionThreshold: 2, L0StopWritesThreshold: 8, BlockSize: 512, MaxManifestBytes: 2 << 10,
		WALPreallocateBytes: -1, Encryption: crashSealer,
	}
}

// crashSealer, when set, makes crashOptions encrypt everything: the crash
// tests run once plain and once encrypted (see bothEncryptions).
var crashSealer *Sealer

// testKeyring returns a keyring of fixed keys with the given ids (the last
// one active); key i is 32 bytes of value i+1.
func testKeyring(t testing.TB, ids ...crypt.KeyID) *Keyring {
	t.Helper()
	keys := map[crypt.KeyID][]byte{}
	for _, id := range ids {
		keys[id] = bytes.Repeat([]byte{byte(id) + 1}, crypt.KeySize)
	}
	r, err := crypt.New(keys, ids[len(ids)-1])
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// bothEncryptions runs test twice: as a subtest "plain" and as a subtest
// "encrypted" in which crashOptions seals every file.
func bothEncryptions(t *testing.T, test func(t *testing.T)) {
	t.Run("plain", test)
	t.Run("encrypted", func(t *testing.T) {
		crashSealer = NewSealer(testKeyring(t, 7))
		t.Cleanup(func() { crashSealer = nil })
		test(t)
	})
}

// run executes the workload. syncAcked is set to the number of batches known
// durable (every batch up to the last acknowledged sync batch).
func (w *crashWorkload) run(db *DB, syncAcked *atomic.Int64) error {
	for i, ops := range w.batches {
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
			return fmt.Errorf("batch %d: %w", i, err)
		}
		if w.sync[i] {
			syncAcked.Store(int64(i + 1))
		}
		switch w.after[i] {
		case "flush":
			if err := db.Flush(); err != nil {
				return fmt.Errorf("flush after batch %d: %w", i, err)
			}
		case "compact":
			if err := db.Compact(nil, nil); err != nil {
				return fmt.Errorf("compact after batch %d: %w", i, err)
			}
		}
	}
	return nil
}

// readAll returns every key/value of db.
func readAll(t *testing.T, db *DB) map[string]string {
	t.Helper()
	it, err := db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for ok := it.First(); ok; ok = it.Next() {
		m[string(it.Key())] = string(it.Value())
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return m
}

func diffStates(got, want map[string]string) string {
	var keys []string
	for k := range got {
		keys = append(keys, k)
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		g, gok := got[k]
		wv, wok := want[k]
		if gok != wok || g != wv {
			return fmt.Sprintf("key %q: got present=%v (%d bytes), want present=%v (%d bytes)", k, gok, len(g), wok, len(wv))
		}
	}
	return ""
}

// verifyRecovered opens a crash clone and checks the invariants: open
// succeeds; the state equals the state after some prefix p of the batches
// (no holes, batches all-or-nothing); p covers every acknowledged sync
// write; and the reopened DB accepts new writes that survive another
// reopen.
func verifyRecovered(t *testing.T, fs *vfs.MemFS, w *crashWorkload, acked int, what string) {
	t.Helper()
	db, err := Open("/db", crashOptions(fs))
	if err != nil {
		t.Fatalf("%s: reopen after crash failed: %v\nfiles:\n%s", what, err, fs)
	}
	got := readAll(t, db)
	p := 0
	if mk, ok := got[markerKey]; ok {
		fmt.Sscan(mk, &p)
		p++
	}
	if p < acked {
		t.Fatalf("%s: recovered %d batches, but %d were acknowledged as synced", what, p, acked)
	}
	if d := diffStates(got, w.stateAfter(p)); d != "" {
		t.Fatalf("%s: recovered state is not the state after batch %d: %s", what, p, d)
	}
	if err := db.checkInvariants(); err != nil {
		t.Fatalf("%s: LSM invariants: %v", what, err)
	}
	// New writes after recovery must not collide with recovered sequence
	// numbers and must survive a clean reopen.
	if err := db.Set([]byte("after-crash"), []byte("x"), Sync); err != nil {
		t.Fatalf("%s: write after recovery: %v", what, err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("%s: close: %v", what, err)
	}
	db, err = Open("/db", crashOptions(fs))
	if err != nil {
		t.Fatalf("%s: second reopen: %v", what, err)
	}
	got2 := readAll(t, db)
	want := w.stateAfter(p)
	want["after-crash"] = "x"
	if d := diffStates(got2, want); d != "" {
		t.Fatalf("%s: after write+reopen: %s", what, d)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCrashAtEveryWriteOp cuts power at every write operation (file create,
// write, sync, rename, link, remove, directory sync, ...) of a workload that
// exercises batches, sync and no-sync commits, WAL and memtable rotation,
// flushes, compactions and MANIFEST rotation, then reopens the simulated
// disk and checks the recovery invariants. It runs twice: once keeping only
// synced data, once also keeping a random half of the unsynced pages
// (out-of-order writeback). KAYA_CRASH_STRIDE=N tests every N-th operation
// only.
func TestCrashAtEveryWriteOp(t *testing.T) { bothEncryptions(t, testCrashAtEveryWriteOp) }

func testCrashAtEveryWriteOp(t *testing.T) {
	batches := 400
	if testing.Short() {
		batches = 150
	}
	w := newCrashWorkload(1, batches)

	// Count the write operations of a clean run.
	var total atomic.Int64
	{
		mem := vfs.NewMem()
		fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
			if op.Kind.IsWrite() {
				total.Add(1)
			}
			return nil
		}))
		db, err := Open("/db", crashOptions(fs))
		if err != nil {
			t.Fatal(err)
		}
		var acked atomic.Int64
		if err := w.run(db, &acked); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if crashSealer != nil {
			// Keys are "keyNNN", values "keyNNN-vI-...": none in the clear.
			if f := filesHolding(t, mem, "/db", "key0"); len(f) != 0 {
				t.Fatalf("encrypted run left plaintext in %v", f)
			}
		}
	}
	n := total.Load()
	stride := int64(1)
	if s := os.Getenv("KAYA_CRASH_STRIDE"); s != "" {
		fmt.Sscan(s, &stride)
	}
	t.Logf("workload performs about %d write operations; crashing at every %d", n, stride)
	for _, keep := range []float64{0, 0.5} {
		for k := int64(1); k <= n+5; k += stride {
			mem := vfs.NewMem()
			var count, acked atomic.Int64
			var clone *vfs.MemFS
			var ackedAtCrash int64
			rng := rand.New(rand.NewPCG(uint64(k), 3))
			fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
				if op.Kind.IsWrite() && count.Add(1) == k {
					// Read the acknowledgements before cutting power: a
					// write acknowledged by then was durable by then.
					ackedAtCrash = acked.Load()
					clone = mem.CrashClone(vfs.CrashCloneOptions{UnsyncedKeepProbability: keep, Rand: rng})
				}
				return nil
			}))
			db, err := Open("/db", crashOptions(fs))
			if err != nil {
				t.Fatal(err)
			}
			if err := w.run(db, &acked); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			if clone == nil {
				continue // fewer operations this run (background timing)
			}
			verifyRecovered(t, clone, w, int(ackedAtCrash), fmt.Sprintf("crash at write op %d (keep %.1f)", k, keep))
		}
	}
}

// TestCrashDuringRecovery crashes at every write operation of a recovery
// (replaying WALs into tables, writing the MANIFEST, deleting old logs) and
// checks that the next recovery still produces the right state.
func TestCrashDuringRecovery(t *testing.T) { bothEncryptions(t, testCrashDuringRecovery) }

func testCrashDuringRecovery(t *testing.T) {
	w := newCrashWorkload(2, 80)
	base := vfs.NewMem()
	db, err := Open("/db", crashOptions(base))
	if err != nil {
		t.Fatal(err)
	}
	var acked atomic.Int64
	if err := w.run(db, &acked); err != nil {
		t.Fatal(err)
	}
	// Crash without closing: only synced data survives.
	crashed := base.CrashClone(vfs.CrashCloneOptions{})
	_ = db.Close()
	for k := int64(1); ; k++ {
		disk := crashed.CrashClone(vfs.CrashCloneOptions{UnsyncedKeepProbability: 1})
		var count atomic.Int64
		var clone *vfs.MemFS
		fs := vfs.NewErrorFS(disk, vfs.InjectorFunc(func(op vfs.Op) error {
			if op.Kind.IsWrite() && count.Add(1) == k {
				clone = disk.CrashClone(vfs.CrashCloneOptions{})
			}
			return nil
		}))
		db, err := Open("/db", crashOptions(fs))
		if err != nil {
			t.Fatalf("recovery %d: %v", k, err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if clone == nil {
			t.Logf("recovery performs %d write operations", k-1)
			break
		}
		verifyRecovered(t, clone, w, int(acked.Load()), fmt.Sprintf("crash at recovery write op %d", k))
	}
}

// TestFailedSyncIsSticky checks that after a failed WAL fdatasync the DB
// refuses further writes instead of retrying and reporting success.
func TestFailedSyncIsSticky(t *testing.T) {
	mem := vfs.NewMem()
	var fail atomic.Bool
	fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
		if fail.Load() && op.Kind == vfs.OpFileSync {
			return vfs.ErrInjected
		}
		return nil
	}))
	db, err := Open("/db", crashOptions(fs))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set([]byte("a"), []byte("1"), Sync); err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	if err := db.Set([]byte("b"), []byte("2"), Sync); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("sync failure not reported: %v", err)
	}
	fail.Store(false)
	if err := db.Set([]byte("c"), []byte("3"), Sync); err == nil {
		t.Fatal("write after a failed sync must keep failing")
	}
	_ = db.Close()
	db, err = Open("/db", crashOptions(mem))
	if err != nil {
		t.Fatal(err)
	}
	if v, err := db.Get([]byte("a")); err != nil || string(v) != "1" {
		t.Fatalf("acknowledged write lost: %q %v", v, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestSyncWALMakesNoSyncWritesDurable: NoSync writes lost in a crash are
// kept once SyncWAL returns, across memtable rotations (small memtables),
// without a flush.
func TestSyncWALMakesNoSyncWritesDurable(t *testing.T) {
	bothEncryptions(t, testSyncWALMakesNoSyncWritesDurable)
}

func testSyncWALMakesNoSyncWritesDurable(t *testing.T) {
	mem := vfs.NewMem()
	opts := crashOptions(mem)
	opts.MemTableSize = 64 << 10
	db, err := Open("/db", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const n = 3000 // several memtables of 64 KiB
	val := bytes.Repeat([]byte("v"), 60)
	for i := 0; i < n; i++ {
		if err := db.Set([]byte(fmt.Sprintf("key%05d", i)), val, NoSync); err != nil {
			t.Fatal(err)
		}
	}
	flushesBefore := db.Metrics().Flush.Count
	if err := db.SyncWAL(); err != nil {
		t.Fatal(err)
	}
	// Unsynced writes after the call may be lost; the earlier ones not.
	if err := db.Set([]byte("after"), val, NoSync); err != nil {
		t.Fatal(err)
	}
	crashed := mem.CrashClone(vfs.CrashCloneOptions{})
	if got := db.Metrics().Flush.Count; got != flushesBefore {
		t.Logf("background flushes ran meanwhile (%d → %d); SyncWAL itself does not flush", flushesBefore, got)
	}
	db2, err := Open("/db", crashOptions(crashed))
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	for i := 0; i < n; i++ {
		if _, err := db2.Get([]byte(fmt.Sprintf("key%05d", i))); err != nil {
			t.Fatalf("key%05d, written before SyncWAL, lost in the crash: %v", i, err)
		}
	}
}

// TestSyncWALWithoutSyncLosesWrites is the control: the same NoSync writes
// without SyncWAL do not all survive the crash, so the test above can fail.
func TestSyncWALWithoutSyncLosesWrites(t *testing.T) {
	bothEncryptions(t, testSyncWALWithoutSyncLosesWrites)
}

func testSyncWALWithoutSyncLosesWrites(t *testing.T) {
	mem := vfs.NewMem()
	db, err := Open("/db", crashOptions(mem))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := 0; i < 100; i++ {
		if err := db.Set([]byte(fmt.Sprintf("key%05d", i)), []byte("v"), NoSync); err != nil {
			t.Fatal(err)
		}
	}
	db2, err := Open("/db", crashOptions(mem.CrashClone(vfs.CrashCloneOptions{})))
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if _, err := db2.Get([]byte("key00099")); err == nil {
		t.Fatal("an unsynced NoSync write survived a crash that drops unsynced data; the SyncWAL test proves nothing")
	}
}

// TestConcurrentSyncWritersSurviveACrash: sync and NoSync writers commit
// concurrently (so WAL writes carry several batches: one sealed group each
// when encrypted); after a crash that keeps only synced data, every
// acknowledged sync write is there, and recovery finds no corruption.
func TestConcurrentSyncWritersSurviveACrash(t *testing.T) {
	bothEncryptions(t, func(t *testing.T) {
		mem := vfs.NewMem()
		opts := crashOptions(mem)
		opts.MemTableSize = 256 << 10
		db, err := Open("/db", opts)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		const writers, each = 8, 300
		val := bytes.Repeat([]byte("w"), 40)
		var wg sync.WaitGroup
		for g := 0; g < writers; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					opt := Sync
					if g%2 == 1 {
						opt = NoSync
					}
					if err := db.Set([]byte(fmt.Sprintf("g%d-%04d", g, i)), val, opt); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		crashed := mem.CrashClone(vfs.CrashCloneOptions{})
		db2, err := Open("/db", crashOptions(crashed))
		if err != nil {
			t.Fatal(err)
		}
		defer db2.Close()
		for g := 0; g < writers; g += 2 {
			for i := 0; i < each; i++ {
				if _, err := db2.Get([]byte(fmt.Sprintf("g%d-%04d", g, i))); err != nil {
					t.Fatalf("g%d-%04d, acknowledged as synced, lost in the crash: %v", g, i, err)
				}
			}
		}
	})
}
