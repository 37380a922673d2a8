package engine

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/vfs"
)

// expectDiskFull fails unless err is a disk-full error: ErrDiskFull and a
// no-space error both match.
func expectDiskFull(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrDiskFull) || !vfs.IsNoSpace(err) {
		t.Fatalf("%s: %v, want an error matching ErrDiskFull and vfs.IsNoSpace", what, err)
	}
}

// usedBytes is how much of mem's capacity the DB occupies.
func usedBytes(t *testing.T, mem *vfs.MemFS) int64 {
	t.Helper()
	u, err := vfs.DiskUsage(mem, "/")
	if err != nil {
		t.Fatal(err)
	}
	return int64(u.TotalBytes - u.AvailBytes)
}

// TestDiskFullFillAndResume fills a small disk until writes fail with
// ErrDiskFull, checks that reads go on and that Resume refuses while space
// is short, frees space, resumes, and goes on writing, three times. Every
// acknowledged write must then be readable, before and after a reopen and
// after a crash; a write that failed may or may not be there.
func TestDiskFullFillAndResume(t *testing.T) {
	mem := vfs.NewMem()
	db, err := Open("/db", crashOptions(mem))
	if err != nil {
		t.Fatal(err)
	}
	value := func(i int) []byte { return []byte(fmt.Sprintf("v%06d-%s", i, strings.Repeat("x", 700))) }
	key := func(i int) []byte { return []byte(fmt.Sprintf("k%06d", i)) }
	acked := map[int]bool{}
	failed := map[int]bool{}
	lastSynced := -1
	i := 0
	for round := 0; round < 3; round++ {
		mem.SetCapacity(usedBytes(t, mem) + 256<<10)
		var werr error
		for ; werr == nil; i++ {
			opts := NoSync
			if i%3 == 0 {
				opts = Sync
			}
			if werr = db.Set(key(i), value(i), opts); werr == nil {
				acked[i] = true
				if opts == Sync {
					lastSynced = i
				}
			} else {
				failed[i] = true
			}
			if i > 100000 {
				t.Fatal("the disk never filled")
			}
		}
		expectDiskFull(t, fmt.Sprintf("round %d: write %d", round, i-1), werr)
		if err := db.DiskFull(); !errors.Is(err, ErrDiskFull) {
			t.Fatalf("round %d: DiskFull() = %v after a write failed for lack of space", round, err)
		}
		// Reads go on.
		if v, err := db.Get(key(lastSynced)); err != nil || string(v) != string(value(lastSynced)) {
			t.Fatalf("round %d: reading an acknowledged key on the full disk: %q, %v", round, v, err)
		}
		// More writes fail at once; a checkpoint fails and leaves nothing.
		if err := db.Set([]byte("more"), []byte("x"), NoSync); err == nil {
			t.Logf("round %d: a write after the failure went through (the failure was a flush stall)", round)
		}
		if err := db.Checkpoint("/ckpt"); err == nil {
			t.Fatalf("round %d: checkpoint succeeded on a full disk", round)
		}
		if _, err := mem.Stat("/ckpt"); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("round %d: a failed checkpoint left /ckpt behind: %v", round, err)
		}
		// Still no space: Resume fails and changes nothing.
		if err := db.Resume(); err != nil {
			expectDiskFull(t, "Resume without space", err)
		}
		// Space comes back.
		mem.SetCapacity(usedBytes(t, mem) + 4<<20)
		if err := db.Resume(); err != nil {
			t.Fatalf("round %d: Resume after freeing space: %v", round, err)
		}
		// Resume retries the compactions that failed at once, without
		// waiting for them; they clear the state when they succeed.
		deadline := time.Now().Add(10 * time.Second)
		for err := db.DiskFull(); err != nil; err = db.DiskFull() {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: DiskFull() after Resume = %v", round, err)
			}
			time.Sleep(time.Millisecond)
		}
	}
	check := func(db *DB, what string, upTo int) {
		t.Helper()
		for j := 0; j < i; j++ {
			v, err := db.Get(key(j))
			switch {
			case acked[j] && j <= upTo:
				if err != nil || string(v) != string(value(j)) {
					t.Fatalf("%s: acknowledged key %d: %q, %v", what, j, v, err)
				}
			case err == nil && string(v) != string(value(j)):
				t.Fatalf("%s: key %d holds %q", what, j, v)
			case err != nil && !errors.Is(err, ErrNotFound):
				t.Fatalf("%s: key %d: %v", what, j, err)
			}
		}
	}
	check(db, "after the last Resume", i)
	m := db.Metrics()
	if !(m.DiskFull.Events+m.DiskFull.FlushFailures > 0) || m.DiskFull.Resumes == 0 || m.DiskFull.Active {
		t.Fatalf("metrics %+v", m.DiskFull)
	}
	crashed := mem.CrashClone(vfs.CrashCloneOptions{})
	crashed.SetCapacity(0)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		fs   *vfs.MemFS
		what string
		upTo int
	}{{mem, "after Close and Open", i}, {crashed, "after a crash", lastSynced}} {
		db, err := Open("/db", crashOptions(c.fs))
		if err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		check(db, c.what, c.upTo)
		if err := db.checkInvariants(); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestResumeKeepsAcknowledgedNoSyncWrites: NoSync writes are acknowledged
// before they reach the WAL. When the WAL write carrying them fails, Resume
// must make them durable before any later write can be: a Sync write after
// Resume that survives a crash implies that they survive too.
func TestResumeKeepsAcknowledgedNoSyncWrites(t *testing.T) {
	mem := vfs.NewMem()
	var failWAL atomic.Bool
	fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
		if op.Kind == vfs.OpFileWrite && strings.HasSuffix(op.Path, ".log") && failWAL.CompareAndSwap(true, false) {
			return vfs.PartialWrite(op.Len/2, vfs.ErrNoSpace)
		}
		return nil
	}))
	db, err := Open("/db", crashOptions(fs))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set([]byte("before"), []byte("1"), Sync); err != nil {
		t.Fatal(err)
	}
	failWAL.Store(true)
	// The first WAL write from now on fails part way: the background
	// flusher's (then the NoSync writes that follow fail with ErrDiskFull)
	// or the Sync write's own.
	acked := 0
	for ; acked < 20; acked++ {
		if err := db.Set([]byte(fmt.Sprintf("nosync%02d", acked)), []byte("2"), NoSync); err != nil {
			expectDiskFull(t, fmt.Sprintf("NoSync write %d", acked), err)
			break
		}
	}
	err = db.Set([]byte("sync"), []byte("3"), Sync)
	expectDiskFull(t, "Sync write after or at the failed WAL write", err)
	if failWAL.Load() {
		t.Fatal("the WAL was never written")
	}
	if acked == 0 {
		t.Fatal("no NoSync write was acknowledged")
	}
	if err := db.DiskFull(); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("DiskFull() = %v", err)
	}
	if err := db.Set([]byte("refused"), []byte("4"), Sync); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("write in the disk-full state: %v", err)
	}
	if err := db.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := db.Set([]byte("after"), []byte("5"), Sync); err != nil {
		t.Fatal(err)
	}
	crashed := mem.CrashClone(vfs.CrashCloneOptions{})
	_ = db.Close()
	db, err = Open("/db", crashOptions(crashed))
	if err != nil {
		t.Fatalf("open after the crash: %v\n%s", err, crashed)
	}
	defer db.Close()
	if _, err := db.Get([]byte("after")); err != nil {
		t.Fatalf("the Sync write after Resume: %v", err)
	}
	for i := 0; i < acked; i++ {
		if _, err := db.Get([]byte(fmt.Sprintf("nosync%02d", i))); err != nil {
			t.Fatalf("acknowledged NoSync write %d (of %d) lost while a later Sync write survived: %v", i, acked, err)
		}
	}
}

// TestResumeWithoutTrouble: Resume on a healthy DB does nothing, and on a
// DB stopped by an I/O error returns that error.
func TestResumeWithoutTrouble(t *testing.T) {
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
	defer db.Close()
	if err := db.Resume(); err != nil {
		t.Fatalf("Resume on a healthy DB: %v", err)
	}
	if err := db.DiskFull(); err != nil {
		t.Fatalf("DiskFull() on a healthy DB: %v", err)
	}
	fail.Store(true)
	if err := db.Set([]byte("a"), []byte("1"), Sync); !errors.Is(err, vfs.ErrInjected) || errors.Is(err, ErrDiskFull) {
		t.Fatalf("write with a failing fsync: %v", err)
	}
	fail.Store(false)
	if err := db.Resume(); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("Resume after a failed fsync = %v, want the fsync's error", err)
	}
	if err := db.Set([]byte("b"), []byte("2"), Sync); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("write after a failed fsync and Resume: %v", err)
	}
}

// TestNoSpaceAtEveryWriteOp fails each write operation of the crash
// workload (batches with Sync and NoSync, WAL and memtable rotation,
// flushes, compactions, MANIFEST rotation) for lack of space, entirely or
// part way. The workload handles the failure as an owner does: it calls
// Resume (space is back: the fault happens once) and retries what failed.
// Crashes right after the failure, at several operations after it (during
// Resume and the retries), and at the end must each recover a state after
// some prefix of the batches that holds every batch acknowledged with
// Sync; and the DB, closed cleanly, must hold all the batches. Only a
// failed fsync of the MANIFEST may stop the DB for good (an fsync is never
// retried); then the workload ends there, and recovery must still hold
// every acknowledged batch.
// KAYA_CRASH_STRIDE=N tests every N-th operation only.
func TestNoSpaceAtEveryWriteOp(t *testing.T) { bothEncryptions(t, testNoSpaceAtEveryWriteOp) }

func testNoSpaceAtEveryWriteOp(t *testing.T) {
	batches := 120
	if testing.Short() {
		batches = 60
	}
	w := newCrashWorkload(3, batches)
	var total atomic.Int64
	{
		fs := vfs.NewErrorFS(vfs.NewMem(), vfs.InjectorFunc(func(op vfs.Op) error {
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
	}
	n := total.Load()
	stride := int64(1)
	if s := os.Getenv("KAYA_CRASH_STRIDE"); s != "" {
		fmt.Sscan(s, &stride)
	} else if testing.Short() {
		stride = 3
	}
	t.Logf("workload performs about %d write operations; failing every %d", n, stride)
	first := int64(1)
	if s := os.Getenv("KAYA_NOSPACE_OP"); s != "" {
		fmt.Sscan(s, &first)
		n = first
	}
	for _, partial := range []bool{false, true} {
		for k := first; k <= n; k += stride {
			runNoSpaceFault(t, w, k, partial)
		}
	}
}

// crashesAfterFault are the write operations, counted from the failed one,
// at which TestNoSpaceAtEveryWriteOp also cuts power.
var crashesAfterFault = []int64{1, 2, 4, 8, 16}

func runNoSpaceFault(t *testing.T, w *crashWorkload, k int64, partial bool) {
	what := fmt.Sprintf("no space at write op %d (partial %v)", k, partial)
	mem := vfs.NewMem()
	var count, acked atomic.Int64
	var failed atomic.Pointer[vfs.Op] // set by the goroutine whose op fails
	failedOp := func() vfs.Op {
		if op := failed.Load(); op != nil {
			return *op
		}
		return vfs.Op{}
	}
	type crash struct {
		fs    *vfs.MemFS
		acked int
		what  string
	}
	var (
		crashMu sync.Mutex // background goroutines crash too
		crashes []crash
	)
	// cut takes a crash clone. It reads the acknowledgements first: a
	// write acknowledged by then was durable by then.
	cut := func(what string) {
		a := int(acked.Load())
		c := mem.CrashClone(vfs.CrashCloneOptions{})
		crashMu.Lock()
		crashes = append(crashes, crash{c, a, what})
		crashMu.Unlock()
	}
	fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
		if !op.Kind.IsWrite() {
			return nil
		}
		c := count.Add(1)
		for _, after := range crashesAfterFault {
			if c == k+after {
				cut(fmt.Sprintf("%s, crash %d ops later", what, after))
			}
		}
		if c != k {
			return nil
		}
		failed.Store(&op)
		if partial && op.Kind == vfs.OpFileWrite {
			return vfs.PartialWrite(op.Len/2, vfs.ErrNoSpace)
		}
		return vfs.ErrNoSpace
	}))
	db, err := Open("/db", crashOptions(fs))
	if err != nil {
		// The fault hit Open: a restart succeeds.
		if !vfs.IsNoSpace(err) {
			t.Fatalf("%s: Open: %v", what, err)
		}
		if db, err = Open("/db", crashOptions(fs)); err != nil {
			t.Fatalf("%s: second Open: %v\n%s", what, err, mem)
		}
	}
	// handle deals with a failed step: it must be a lack of space; reads
	// go on; a crash now must recover; then Resume and retry. It reports
	// false if the DB stopped for good, which only a failed MANIFEST fsync
	// may do — or a failed sync of the directory while a new MANIFEST is
	// installed (CURRENT renamed to it: whether the rename is durable is
	// unknown, as after a failed fsync). Manifest rotations happen within
	// the workload when records are larger (the encrypted run).
	handle := func(step string, err error, retry func() error) bool {
		t.Helper()
		op := failedOp()
		manifestSync := op.Kind == vfs.OpFileSync && (strings.Contains(op.Path, "MANIFEST") ||
			(op.Path == "/db" && strings.Contains(err.Error(), "MANIFEST")))
		if !vfs.IsNoSpace(err) {
			if manifestSync {
				return false
			}
			t.Fatalf("%s: %s (failed op %v): %v", what, step, failedOp(), err)
		}
		if _, err := db.Get([]byte(markerKey)); err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: read after %s failed: %v", what, step, err)
		}
		cut(what + ", crash before Resume")
		if err := db.Resume(); err != nil {
			if vfs.IsNoSpace(err) || !manifestSync {
				t.Fatalf("%s: Resume after %s (failed op %v): %v", what, step, failedOp(), err)
			}
			return false
		}
		if err := retry(); err != nil {
			t.Fatalf("%s: %s retried after Resume: %v", what, step, err)
		}
		return true
	}
	stopped := false
	for i, ops := range w.batches {
		if stopped {
			break
		}
		commit := func() error {
			b := db.NewBatch()
			for _, op := range ops {
				if op.del {
					_ = b.Delete([]byte(op.key))
				} else {
					_ = b.Set([]byte(op.key), []byte(op.value))
				}
			}
			_ = b.Set([]byte(markerKey), []byte(fmt.Sprint(i)))
			return b.Commit(&WriteOptions{Sync: w.sync[i]})
		}
		if err := commit(); err != nil && !handle(fmt.Sprintf("batch %d", i), err, commit) {
			stopped = true
			break
		}
		if w.sync[i] {
			acked.Store(int64(i + 1))
		}
		var maint func() error
		switch w.after[i] {
		case "flush":
			maint = db.Flush
		case "compact":
			maint = func() error { return db.Compact(nil, nil) }
		}
		if maint != nil {
			if err := maint(); err != nil && !handle(fmt.Sprintf("%s after batch %d", w.after[i], i), err, maint) {
				stopped = true
			}
		}
	}
	cut(what + ", crash at the end")
	// Close fails if the fault hits its final WAL writes; then NoSync
	// writes may be lost as in a crash.
	closeErr := db.Close()
	if closeErr != nil && !stopped && !vfs.IsNoSpace(closeErr) {
		t.Fatalf("%s: Close: %v", what, closeErr)
	}
	crashMu.Lock()
	defer crashMu.Unlock()
	for _, c := range crashes {
		verifyRecovered(t, c.fs, w, c.acked, c.what)
	}
	all := len(w.batches)
	if stopped || closeErr != nil {
		all = int(acked.Load())
	}
	verifyRecovered(t, mem, w, all, what+", after Close")
}

// TestL0GrowsWhileCompactionsLackSpace: when compactions fail for lack of
// space but flushes fit, writes go on past L0StopWritesThreshold (a
// replicated state machine must keep applying while its clients' writes are
// refused), up to twice it; then they fail with ErrDiskFull.
func TestL0GrowsWhileCompactionsLackSpace(t *testing.T) {
	mem := vfs.NewMem()
	// A table that grows past 96 KiB fails for lack of space: a flush of
	// a 64 KiB memtable fits, a compaction of several tables does not.
	fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
		if op.Kind == vfs.OpFileWrite && strings.HasSuffix(op.Path, ".sst") && op.Offset+int64(op.Len) > 96<<10 {
			return vfs.ErrNoSpace
		}
		return nil
	}))
	opts := crashOptions(mem)
	opts.FS = fs
	opts.MemTableSize = 64 << 10
	opts.L0CompactionThreshold = 2
	opts.L0StopWritesThreshold = 4
	opts.TargetFileSize = 1 << 20 // one table per flush
	opts.LBaseMaxBytes = 4 << 20
	db, err := Open("/db", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r := rand.New(rand.NewPCG(1, 2))
	val := make([]byte, 1000) // incompressible
	wrote := 0
	var werr error
	for i := 0; werr == nil && i < 10000; i++ {
		for j := range val {
			val[j] = byte(r.Uint32())
		}
		werr = db.Set([]byte(fmt.Sprintf("k%06d", r.IntN(100000))), val, NoSync) // overlapping tables: no trivial moves
		if werr == nil {
			wrote++
		}
	}
	l0 := db.l0Count()
	if l0 <= opts.L0StopWritesThreshold {
		t.Fatalf("L0 holds %d tables (stop threshold %d) after %d writes: writes stopped at the threshold although flushes fit (%v)", l0, opts.L0StopWritesThreshold, wrote, werr)
	}
	if werr == nil {
		t.Fatalf("%d writes went through with L0 at %d tables: L0 grows without bound while compactions fail", wrote, l0)
	}
	expectDiskFull(t, "a write with L0 at twice its stop threshold", werr)
	if l0 > 2*opts.L0StopWritesThreshold {
		t.Fatalf("L0 grew to %d tables, more than twice its stop threshold %d", l0, opts.L0StopWritesThreshold)
	}
}
