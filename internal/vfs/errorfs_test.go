package vfs

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
)

func TestOpKind(t *testing.T) {
	writes := map[OpKind]bool{
		OpCreate: true, OpRemove: true, OpRemoveAll: true, OpRename: true,
		OpLink: true, OpMkdirAll: true, OpFileWrite: true, OpFileSync: true,
		OpFilePreallocate: true, OpFileTruncate: true,
	}
	seen := map[string]bool{}
	for k := OpCreate; k <= OpFileClose; k++ {
		if got := k.IsWrite(); got != writes[k] {
			t.Errorf("%v.IsWrite() = %v", k, got)
		}
		if s := k.String(); s == "" || seen[s] || s[0] == 'O' && s != "Open" && s != "OpenReadWrite" && s != "OpenDir" {
			t.Errorf("bad or duplicate name %q for %d", s, int(k))
		} else {
			seen[s] = true
		}
	}
	if got := OpKind(99).String(); got != "OpKind(99)" {
		t.Errorf("String of unknown kind = %q", got)
	}
	if got := (Op{Kind: OpRename, Path: "a", NewPath: "b"}).String(); got != `Rename("a", "b")` {
		t.Errorf("Op.String = %s", got)
	}
}

// recorder is an Injector that records every op.
type recorder struct {
	mu  sync.Mutex
	ops []Op
}

func (r *recorder) MaybeError(op Op) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, op)
	return nil
}

func TestErrorFSSeesEveryOp(t *testing.T) {
	rec := &recorder{}
	fs := NewErrorFS(NewMem(), rec)
	must(t, fs.MkdirAll("/d", 0o700))
	f, err := fs.Create("/d/f")
	must(t, err)
	_, err = f.Write([]byte("abc"))
	must(t, err)
	_, err = f.Write([]byte("de"))
	must(t, err)
	_, err = f.ReadAt(make([]byte, 2), 1)
	must(t, err)
	must(t, f.Preallocate(0, 100))
	must(t, f.Truncate(4))
	_, err = f.Stat()
	must(t, err)
	must(t, f.Sync())
	must(t, f.Close())
	r, err := fs.Open("/d/f")
	must(t, err)
	_, err = r.Read(make([]byte, 3))
	must(t, err)
	_, err = r.Read(make([]byte, 3))
	must(t, err)
	must(t, r.Close())
	rw, err := fs.OpenReadWrite("/d/f")
	must(t, err)
	must(t, rw.Close())
	must(t, SyncDir(fs, "/d"))
	must(t, fs.Link("/d/f", "/d/g"))
	must(t, fs.Rename("/d/g", "/d/h"))
	_, err = fs.List("/d")
	must(t, err)
	_, err = fs.Stat("/d/h")
	must(t, err)
	l, err := fs.Lock("/d/LOCK")
	must(t, err)
	must(t, l.Close())
	must(t, fs.Remove("/d/h"))
	must(t, fs.RemoveAll("/d"))

	want := []Op{
		{Kind: OpMkdirAll, Path: "/d"},
		{Kind: OpCreate, Path: "/d/f"},
		{Kind: OpFileWrite, Path: "/d/f", Offset: 0, Len: 3},
		{Kind: OpFileWrite, Path: "/d/f", Offset: 3, Len: 2},
		{Kind: OpFileReadAt, Path: "/d/f", Offset: 1, Len: 2},
		{Kind: OpFilePreallocate, Path: "/d/f", Offset: 0, Len: 100},
		{Kind: OpFileTruncate, Path: "/d/f", Offset: 4},
		{Kind: OpFileStat, Path: "/d/f"},
		{Kind: OpFileSync, Path: "/d/f"},
		{Kind: OpFileClose, Path: "/d/f"},
		{Kind: OpOpen, Path: "/d/f"},
		{Kind: OpFileRead, Path: "/d/f", Offset: 0, Len: 3},
		{Kind: OpFileRead, Path: "/d/f", Offset: 3, Len: 3},
		{Kind: OpFileClose, Path: "/d/f"},
		{Kind: OpOpenReadWrite, Path: "/d/f"},
		{Kind: OpFileClose, Path: "/d/f"},
		{Kind: OpOpenDir, Path: "/d"},
		{Kind: OpFileSync, Path: "/d"},
		{Kind: OpFileClose, Path: "/d"},
		{Kind: OpLink, Path: "/d/f", NewPath: "/d/g"},
		{Kind: OpRename, Path: "/d/g", NewPath: "/d/h"},
		{Kind: OpList, Path: "/d"},
		{Kind: OpStat, Path: "/d/h"},
		{Kind: OpLock, Path: "/d/LOCK"},
		{Kind: OpRemove, Path: "/d/h"},
		{Kind: OpRemoveAll, Path: "/d"},
	}
	if len(rec.ops) != len(want) {
		t.Fatalf("got %d ops, want %d:\n%v", len(rec.ops), len(want), rec.ops)
	}
	for i := range want {
		if rec.ops[i] != want[i] {
			t.Errorf("op %d = %v, want %v", i, rec.ops[i], want[i])
		}
	}
}

func TestOnIndex(t *testing.T) {
	for _, sticky := range []bool{false, true} {
		mem := NewMem()
		inj := OnIndex(2, WriteOps)
		inj.Sticky = sticky
		fs := NewErrorFS(mem, inj)
		var errs []error
		f, err := fs.Create("/f") // write op 0
		must(t, err)
		for range 4 { // write ops 1..4
			_, err := f.Write([]byte("x"))
			errs = append(errs, err)
			// Reads do not count.
			_, _ = f.ReadAt(make([]byte, 1), 0)
		}
		for i, err := range errs {
			failed := i+1 == 2 || (sticky && i+1 > 2)
			if failed != errors.Is(err, ErrInjected) {
				t.Errorf("sticky=%v write %d: err = %v", sticky, i+1, err)
			}
			if failed && err != ErrInjected {
				t.Errorf("sticky=%v: err = %v, want ErrInjected itself", sticky, err)
			}
		}
		if got := inj.Count(); got != 5 {
			t.Errorf("Count = %d, want 5", got)
		}
		// Failed writes were not performed.
		wantLen := 3
		if sticky {
			wantLen = 1
		}
		if got := fileSize(t, mem, "/f"); got != int64(wantLen) {
			t.Errorf("sticky=%v: size %d, want %d", sticky, got, wantLen)
		}
	}
}

func TestOnIndexNilPredicate(t *testing.T) {
	inj := OnIndex(1, nil)
	fs := NewErrorFS(NewMem(), inj)
	if _, err := fs.Stat("/"); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Stat("/"); err != ErrInjected {
		t.Fatalf("second op err = %v", err)
	}
	if _, err := fs.Stat("/"); err != nil {
		t.Fatalf("third op err = %v", err)
	}
	if inj.Count() != 3 {
		t.Fatalf("Count = %d", inj.Count())
	}
}

func TestErrorFSFailedOpsNotPerformed(t *testing.T) {
	mem := NewMem()
	var failKind atomic.Int64
	failKind.Store(-1)
	fs := NewErrorFS(mem, InjectorFunc(func(op Op) error {
		if int64(op.Kind) == failKind.Load() {
			return ErrInjected
		}
		return nil
	}))
	fail := func(k OpKind) { failKind.Store(int64(k)) }

	fail(OpCreate)
	if _, err := fs.Create("/f"); err != ErrInjected {
		t.Fatalf("Create err = %v", err)
	}
	expectMissing(t, mem, "/f")

	fail(OpMkdirAll)
	if err := fs.MkdirAll("/d", 0o700); err != ErrInjected {
		t.Fatal(err)
	}
	expectMissing(t, mem, "/d")

	fail(-1)
	writeFile(t, fs, "/f", []byte("abc"))
	f, err := fs.OpenReadWrite("/f")
	must(t, err)

	fail(OpFileTruncate)
	if err := f.Truncate(0); err != ErrInjected {
		t.Fatal(err)
	}
	fail(OpFileSync)
	if err := f.Sync(); err != ErrInjected {
		t.Fatal(err)
	}
	expectContent(t, mem, "/f", "abc") // not truncated
	must(t, SyncDir(mem, "/"))
	expectContent(t, crash(mem), "/f", "") // data never synced

	fail(OpRename)
	if err := fs.Rename("/f", "/g"); err != ErrInjected {
		t.Fatal(err)
	}
	fail(OpLink)
	if err := fs.Link("/f", "/g"); err != ErrInjected {
		t.Fatal(err)
	}
	expectMissing(t, mem, "/g")
	fail(OpRemove)
	if err := fs.Remove("/f"); err != ErrInjected {
		t.Fatal(err)
	}
	fail(OpRemoveAll)
	if err := fs.RemoveAll("/f"); err != ErrInjected {
		t.Fatal(err)
	}
	expectContent(t, mem, "/f", "abc")

	fail(OpFileClose)
	if err := f.Close(); err != ErrInjected {
		t.Fatal(err)
	}
	fail(-1)
	// The failed Close was not performed, so the handle still works.
	_, err = f.Write([]byte("X"))
	must(t, err)
	must(t, f.Close())
	expectContent(t, mem, "/f", "Xbc")

	fail(OpLock)
	if _, err := fs.Lock("/LOCK"); err != ErrInjected {
		t.Fatal(err)
	}
	expectMissing(t, mem, "/LOCK")
}

func TestErrorFSPassesThroughErrors(t *testing.T) {
	fs := NewErrorFS(NewMem(), OnIndex(100, nil))
	if _, err := fs.Open("/missing"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open(missing) = %v", err)
	}
	l, err := fs.Lock("/LOCK")
	must(t, err)
	if _, err := fs.Lock("/LOCK"); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Lock = %v", err)
	}
	must(t, l.Close())
}

// TestErrorFSCrashCloneFromInjector is the typical crash test: at the k-th
// write op, take a crash clone of the underlying MemFS from inside the
// injector. It must not deadlock, and each clone must hold only durable
// state.
func TestErrorFSCrashCloneFromInjector(t *testing.T) {
	// A workload: maintain /db/CURRENT with WriteFileSync, appending to a
	// log in between.
	workload := func(fs FS) error {
		if err := fs.MkdirAll("/db", 0o700); err != nil {
			return err
		}
		if err := SyncDir(fs, "/"); err != nil {
			return err
		}
		log, err := fs.Create("/db/log")
		if err != nil {
			return err
		}
		if err := SyncDir(fs, "/db"); err != nil {
			return err
		}
		for _, v := range []string{"v1", "v2", "v3"} {
			if _, err := log.Write([]byte(v + ";")); err != nil {
				return err
			}
			if err := log.Sync(); err != nil {
				return err
			}
			if err := WriteFileSync(fs, "/db", "/db/CURRENT", []byte(v)); err != nil {
				return err
			}
		}
		return log.Close()
	}

	// First count the write ops.
	counter := OnIndex(-1, WriteOps)
	must(t, workload(NewErrorFS(NewMem(), counter)))
	total := counter.Count()
	if total < 10 {
		t.Fatalf("only %d write ops", total)
	}

	for k := range total {
		mem := NewMem()
		var n atomic.Int64
		var clone *MemFS
		fs := NewErrorFS(mem, InjectorFunc(func(op Op) error {
			if !op.Kind.IsWrite() {
				return nil
			}
			if n.Add(1)-1 == k {
				clone = mem.CrashClone(CrashCloneOptions{})
				// Also exercise an operation on the MemFS itself.
				_, _ = mem.Stat("/")
			}
			return nil
		}))
		must(t, workload(fs))
		if clone == nil {
			t.Fatalf("k=%d: no clone taken", k)
		}
		// Invariant: CURRENT, if present, names a version whose log entry is
		// durable, and is never torn.
		cur, err := clone.Open("/db/CURRENT")
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		must(t, err)
		_ = cur.Close()
		v := string(readFile(t, clone, "/db/CURRENT"))
		logData := string(readFile(t, clone, "/db/log"))
		switch v {
		case "v1", "v2", "v3":
		default:
			t.Fatalf("k=%d: torn CURRENT %q\n%s", k, v, clone)
		}
		if !containsStr(logData, v+";") {
			t.Fatalf("k=%d: CURRENT=%s but log=%q", k, v, logData)
		}
	}
}

func containsStr(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
