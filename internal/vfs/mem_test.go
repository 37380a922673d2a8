package vfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// crash returns the exact synced state of fs.
func crash(fs *MemFS) *MemFS { return fs.CrashClone(CrashCloneOptions{}) }

func expectContent(t *testing.T, fs *MemFS, name, want string) {
	t.Helper()
	f, err := fs.Open(name)
	if err != nil {
		t.Fatalf("Open(%s): %v\n%s", name, err, fs)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	must(t, err)
	if string(got) != want {
		t.Fatalf("%s = %q, want %q\n%s", name, got, want, fs)
	}
}

func expectMissing(t *testing.T, fs *MemFS, name string) {
	t.Helper()
	if _, err := fs.Stat(name); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Stat(%s) = %v, want ErrNotExist\n%s", name, err, fs)
	}
}

func appendSync(t *testing.T, f File, s string, sync bool) {
	t.Helper()
	_, err := f.Write([]byte(s))
	must(t, err)
	if sync {
		must(t, f.Sync())
	}
}

func TestMemRelativePaths(t *testing.T) {
	fs := NewMem()
	must(t, fs.MkdirAll("a/b", 0o700))
	writeFile(t, fs, "a/b/../b/f", []byte("x"))
	expectContent(t, fs, "/a/b/f", "x")
	expectContent(t, fs, "a/b/f", "x")
	expectContent(t, fs, "/../a/./b/f", "x")
	names, err := fs.List("/")
	must(t, err)
	if !slices.Equal(names, []string{"a"}) {
		t.Fatalf("List(/) = %v", names)
	}
	fi, err := fs.Stat("/")
	must(t, err)
	if !fi.IsDir() {
		t.Fatal("root is not a directory")
	}
	if _, err := fs.Open(""); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open(\"\") = %v", err)
	}
	if err := fs.Remove("/"); err == nil {
		t.Fatal("Remove(/) succeeded")
	}
}

func TestMemModes(t *testing.T) {
	fs := NewMem()
	must(t, fs.MkdirAll("/a/b", 0o750))
	writeFile(t, fs, "/a/f", nil)
	for name, want := range map[string]os.FileMode{"/a": 0o750, "/a/b": 0o750, "/a/f": 0o600} {
		fi, err := fs.Stat(name)
		must(t, err)
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), want)
		}
	}
}

func TestMemCrashFileData(t *testing.T) {
	fs := NewMem()
	f, err := fs.Create("/f")
	must(t, err)
	must(t, SyncDir(fs, "/"))
	appendSync(t, f, "synced", true)
	appendSync(t, f, "+lost", false)
	c := crash(fs)
	expectContent(t, c, "/f", "synced")
	// The original is untouched by the clone.
	expectContent(t, fs, "/f", "synced+lost")

	// Overwriting synced data in place is also lost without a sync.
	f2, err := fs.OpenReadWrite("/f")
	must(t, err)
	appendSync(t, f2, "SY", false)
	expectContent(t, crash(fs), "/f", "synced")
	must(t, f2.Sync())
	expectContent(t, crash(fs), "/f", "SYnced+lost")

	// Truncation is not durable until synced.
	must(t, f.Truncate(2))
	expectContent(t, crash(fs), "/f", "SYnced+lost")
	must(t, f.Sync())
	expectContent(t, crash(fs), "/f", "SY")

	// Create truncating an existing file: the old content survives until
	// the new content is synced.
	g, err := fs.Create("/f")
	must(t, err)
	appendSync(t, g, "new", false)
	expectContent(t, crash(fs), "/f", "SY")
	must(t, g.Sync())
	expectContent(t, crash(fs), "/f", "new")
}

func TestMemCrashCreateNeedsDirSync(t *testing.T) {
	fs := NewMem()
	must(t, fs.MkdirAll("/db", 0o700))
	f, err := fs.Create("/db/f")
	must(t, err)
	appendSync(t, f, "data", true)
	// Neither /db nor /db/f is a synced entry yet.
	expectMissing(t, crash(fs), "/db")
	must(t, SyncDir(fs, "/"))
	c := crash(fs)
	expectMissing(t, c, "/db/f")
	if names, err := c.List("/db"); err != nil || len(names) != 0 {
		t.Fatalf("List(/db) after crash = %v, %v", names, err)
	}
	must(t, SyncDir(fs, "/db"))
	expectContent(t, crash(fs), "/db/f", "data")

	// Synced entry, unsynced data: the file survives, empty.
	h, err := fs.Create("/db/h")
	must(t, err)
	must(t, SyncDir(fs, "/db"))
	appendSync(t, h, "unsynced", false)
	expectContent(t, crash(fs), "/db/h", "")
}

func TestMemCrashMkdirAll(t *testing.T) {
	fs := NewMem()
	must(t, fs.MkdirAll("/a/b/c", 0o700))
	must(t, SyncDir(fs, "/a/b"))
	must(t, SyncDir(fs, "/a"))
	// The root entry "a" is not synced, so nothing survives, but the root
	// itself always exists.
	c := crash(fs)
	expectMissing(t, c, "/a")
	if _, err := c.Stat("/"); err != nil {
		t.Fatal(err)
	}
	must(t, SyncDir(fs, "/"))
	c = crash(fs)
	if _, err := c.Stat("/a/b/c"); err != nil {
		t.Fatalf("Stat after syncing all parents: %v\n%s", err, c)
	}
}

func TestMemCrashRemove(t *testing.T) {
	fs := NewMem()
	must(t, fs.MkdirAll("/d", 0o700))
	writeFile(t, fs, "/d/f", []byte("x"))
	f, err := fs.OpenReadWrite("/d/f")
	must(t, err)
	must(t, f.Sync())
	must(t, SyncDir(fs, "/d"))
	must(t, SyncDir(fs, "/"))
	must(t, fs.Remove("/d/f"))
	// The handle still works on the unlinked file.
	appendSync(t, f, "Y", true)
	expectContent(t, crash(fs), "/d/f", "Y")
	must(t, SyncDir(fs, "/d"))
	expectMissing(t, crash(fs), "/d/f")

	writeFile(t, fs, "/d/g", []byte("g"))
	must(t, SyncDir(fs, "/d"))
	must(t, fs.RemoveAll("/d"))
	expectMissing(t, fs, "/d")
	// RemoveAll is not durable until the parent is synced, and it empties
	// the directory in the same (unsynced) way.
	c := crash(fs)
	if names, err := c.List("/d"); err != nil || !slices.Equal(names, []string{"g"}) {
		t.Fatalf("List(/d) after crash = %v, %v\n%s", names, err, c)
	}
	must(t, SyncDir(fs, "/"))
	expectMissing(t, crash(fs), "/d")
}

func TestMemCrashRename(t *testing.T) {
	fs := NewMem()
	must(t, fs.MkdirAll("/db", 0o700))
	must(t, SyncDir(fs, "/"))
	must(t, WriteFileSync(fs, "/db", "/db/CURRENT", []byte("old")))
	expectContent(t, crash(fs), "/db/CURRENT", "old")

	f, err := fs.Create("/db/CURRENT.tmp")
	must(t, err)
	appendSync(t, f, "new", true)
	must(t, f.Close())
	must(t, fs.Rename("/db/CURRENT.tmp", "/db/CURRENT"))
	expectContent(t, fs, "/db/CURRENT", "new")

	// Before the directory sync the old name and content are back, and the
	// temporary file (never a synced entry) is gone.
	c := crash(fs)
	expectContent(t, c, "/db/CURRENT", "old")
	expectMissing(t, c, "/db/CURRENT.tmp")

	must(t, SyncDir(fs, "/db"))
	c = crash(fs)
	expectContent(t, c, "/db/CURRENT", "new")
	expectMissing(t, c, "/db/CURRENT.tmp")

	// Renaming across directories: each side is durable with its own
	// directory.
	must(t, fs.MkdirAll("/db/archive", 0o700))
	must(t, SyncDir(fs, "/db"))
	must(t, fs.Rename("/db/CURRENT", "/db/archive/C"))
	must(t, SyncDir(fs, "/db/archive"))
	c = crash(fs)
	expectContent(t, c, "/db/CURRENT", "new")
	expectContent(t, c, "/db/archive/C", "new")
	must(t, SyncDir(fs, "/db"))
	c = crash(fs)
	expectMissing(t, c, "/db/CURRENT")
	expectContent(t, c, "/db/archive/C", "new")
}

func TestMemCrashHardLinks(t *testing.T) {
	fs := NewMem()
	f, err := fs.Create("/a")
	must(t, err)
	appendSync(t, f, "one", true)
	must(t, SyncDir(fs, "/"))
	must(t, fs.Link("/a", "/b"))
	// The link is not durable yet.
	expectMissing(t, crash(fs), "/b")
	must(t, SyncDir(fs, "/"))
	// Data synced through one name is durable through both.
	appendSync(t, f, "+two", false)
	g, err := fs.Open("/b")
	must(t, err)
	must(t, g.Sync())
	c := crash(fs)
	expectContent(t, c, "/a", "one+two")
	expectContent(t, c, "/b", "one+two")
	// The clone keeps the two names linked.
	w, err := c.OpenReadWrite("/a")
	must(t, err)
	appendSync(t, w, "ONE", false)
	expectContent(t, c, "/b", "ONE+two")
	expectContent(t, fs, "/b", "one+two")

	// The typical "link then remove the old name" sequence.
	must(t, fs.Remove("/a"))
	must(t, SyncDir(fs, "/"))
	c = crash(fs)
	expectMissing(t, c, "/a")
	expectContent(t, c, "/b", "one+two")
}

func TestMemCrashCloneIndependent(t *testing.T) {
	fs := NewMem()
	f, err := fs.Create("/f")
	must(t, err)
	must(t, SyncDir(fs, "/"))
	appendSync(t, f, strings.Repeat("a", 100), true)
	c := crash(fs)
	// Append + sync on both sides: they may share the synced bytes, so
	// check that neither sees the other's appends.
	appendSync(t, f, "orig", true)
	cf, err := c.OpenReadWrite("/f")
	must(t, err)
	_, err = cf.ReadAt(make([]byte, 100), 0) // move nothing; just read
	must(t, err)
	buf := make([]byte, 100)
	_, err = io.ReadFull(cf, buf)
	must(t, err)
	appendSync(t, cf, "clone", true)
	c2 := crash(c)
	expectContent(t, crash(fs), "/f", strings.Repeat("a", 100)+"orig")
	expectContent(t, c2, "/f", strings.Repeat("a", 100)+"clone")
	// Overwrites in place too.
	f2, err := fs.OpenReadWrite("/f")
	must(t, err)
	appendSync(t, f2, "ZZ", true)
	expectContent(t, c, "/f", strings.Repeat("a", 100)+"clone")
	// Directory changes are independent.
	writeFile(t, c, "/new", nil)
	expectMissing(t, fs, "/new")
	must(t, fs.Remove("/f"))
	if _, err := c.Stat("/f"); err != nil {
		t.Fatal(err)
	}
	// Locks are not cloned.
	l, err := fs.Lock("/LOCK")
	must(t, err)
	must(t, SyncDir(fs, "/"))
	c3 := crash(fs)
	l2, err := c3.Lock("/LOCK")
	must(t, err)
	must(t, l2.Close())
	must(t, l.Close())
}

func TestMemCrashKeepAll(t *testing.T) {
	fs := NewMem()
	must(t, fs.MkdirAll("/d", 0o700))
	must(t, SyncDir(fs, "/"))
	f, err := fs.Create("/d/f")
	must(t, err)
	must(t, SyncDir(fs, "/d"))
	big := bytes.Repeat([]byte("0123456789abcdef"), 3000) // 48000 bytes
	appendSync(t, f, string(big[:10000]), true)
	appendSync(t, f, string(big[10000:]), false)
	g, err := fs.OpenReadWrite("/d/f")
	must(t, err)
	appendSync(t, g, "HEAD", false) // in-place change below the synced length
	// A file reachable only through an unsynced entry stays lost.
	writeFile(t, fs, "/d/unreachable", []byte("x"))

	c := fs.CrashClone(CrashCloneOptions{UnsyncedKeepProbability: 1})
	want := "HEAD" + string(big[4:])
	expectContent(t, c, "/d/f", want)
	expectMissing(t, c, "/d/unreachable")
	// After the crash everything in the clone is synced.
	expectContent(t, crash(c), "/d/f", want)

	// Kept pages never extend the file beyond its current length, and a
	// truncation is never "kept" (the synced length is a lower bound).
	must(t, f.Truncate(5000))
	c = fs.CrashClone(CrashCloneOptions{UnsyncedKeepProbability: 1})
	want = "HEAD" + string(big[4:10000])
	expectContent(t, c, "/d/f", want[:5000]+string(big[5000:10000]))
}

// TestMemCrashPartialPages checks, over many seeds, that with
// UnsyncedKeepProbability 0.5 every 4 KiB page of the crashed file is either
// the synced or the current content of that page, that both outcomes occur,
// and that the result is reproducible from the seed.
func TestMemCrashPartialPages(t *testing.T) {
	const page = crashPageSize
	fs := NewMem()
	f, err := fs.Create("/f")
	must(t, err)
	must(t, SyncDir(fs, "/"))
	rng := rand.New(rand.NewPCG(1, 2))
	synced := make([]byte, 5*page+100)
	for i := range synced {
		synced[i] = byte('a' + rng.IntN(26))
	}
	appendSync(t, f, string(synced), true)
	// Unsynced changes: overwrite parts of pages 1 and 3, and append
	// 4 pages and a bit.
	current := bytes.Clone(synced)
	overwrite := func(off int, s string) {
		w, err := fs.OpenReadWrite("/f")
		must(t, err)
		buf := make([]byte, off)
		_, err = io.ReadFull(w, buf)
		must(t, err)
		appendSync(t, w, s, false)
		must(t, w.Close())
		copy(current[off:], s)
	}
	overwrite(page+10, "PAGE-ONE")
	overwrite(3*page+page-4, "STRADDLES-3-AND-4")
	tail := bytes.Repeat([]byte("T"), 4*page+50)
	appendSync(t, f, string(tail), false)
	current = append(current, tail...)
	expectContent(t, fs, "/f", string(current))

	pageOf := func(b []byte, i int) []byte {
		lo, hi := i*page, (i+1)*page
		if lo >= len(b) {
			return nil
		}
		return b[lo:min(hi, len(b))]
	}
	sawSynced, sawCurrent := map[int]bool{}, map[int]bool{}
	for seed := range uint64(200) {
		opts := CrashCloneOptions{UnsyncedKeepProbability: 0.5, Rand: rand.New(rand.NewPCG(seed, 7))}
		c := fs.CrashClone(opts)
		got := readFile(t, c, "/f")
		again := readFile(t, fs.CrashClone(CrashCloneOptions{UnsyncedKeepProbability: 0.5, Rand: rand.New(rand.NewPCG(seed, 7))}), "/f")
		if !bytes.Equal(got, again) {
			t.Fatalf("seed %d: not reproducible", seed)
		}
		if len(got) < len(synced) || len(got) > len(current) {
			t.Fatalf("seed %d: length %d outside [%d, %d]", seed, len(got), len(synced), len(current))
		}
		if len(got) > len(synced) && len(got) != len(current) && len(got)%page != 0 {
			t.Fatalf("seed %d: length %d is neither synced, current nor a page end", seed, len(got))
		}
		for i := 0; i*page < len(got); i++ {
			g := pageOf(got, i)
			// The synced page, zero-padded where the synced file ends.
			s := make([]byte, len(g))
			copy(s, pageOf(synced, i))
			cur := pageOf(current, i)
			switch {
			case bytes.Equal(g, s):
				sawSynced[i] = true
			case bytes.Equal(g, cur):
				sawCurrent[i] = true
			default:
				t.Fatalf("seed %d: page %d is neither synced nor current:\n%q", seed, i, g)
			}
		}
		// Unchanged pages are always intact.
		for _, i := range []int{0, 2} {
			if !bytes.Equal(pageOf(got, i), pageOf(synced, i)) {
				t.Fatalf("seed %d: unchanged page %d differs", seed, i)
			}
		}
	}
	// Page 9 is the last one, so it exists in the clone only when kept.
	for _, i := range []int{1, 3, 4, 5, 6, 7, 8} {
		if !sawSynced[i] || !sawCurrent[i] {
			t.Errorf("page %d: saw synced=%v current=%v over all seeds", i, sawSynced[i], sawCurrent[i])
		}
	}
}

// TestMemSyncModel compares MemFS's crash state of one file against a
// simple model (synced = copy of data at each Sync) over random writes,
// truncates and syncs, to check the append-only fast path of Sync.
func TestMemSyncModel(t *testing.T) {
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 99))
		fs := NewMem()
		f, err := fs.Create("/f")
		must(t, err)
		must(t, SyncDir(fs, "/"))
		var data, synced []byte
		var off int64
		for step := range 200 {
			switch r := rng.IntN(10); {
			case r < 5: // write at the offset
				p := make([]byte, rng.IntN(3000))
				for i := range p {
					p[i] = byte(rng.Uint32())
				}
				_, err := f.Write(p)
				must(t, err)
				if end := int(off) + len(p); end > len(data) {
					data = append(data, make([]byte, end-len(data))...)
				}
				copy(data[off:], p)
				off += int64(len(p))
			case r < 6: // reopen to move the offset back to 0
				must(t, f.Close())
				f, err = fs.OpenReadWrite("/f")
				must(t, err)
				off = 0
			case r < 7:
				size := rng.IntN(len(data) + 5000)
				must(t, f.Truncate(int64(size)))
				if size < len(data) {
					data = data[:size]
				} else {
					data = append(data, make([]byte, size-len(data))...)
				}
			default:
				must(t, f.Sync())
				synced = bytes.Clone(data)
			}
			if rng.IntN(10) == 0 || step == 199 {
				got := readFile(t, crash(fs), "/f")
				if !bytes.Equal(got, synced) {
					t.Fatalf("seed %d step %d: crash content (%d bytes) != model (%d bytes)", seed, step, len(got), len(synced))
				}
				if cur := readFile(t, fs, "/f"); !bytes.Equal(cur, data) {
					t.Fatalf("seed %d step %d: current content differs from model", seed, step)
				}
				all := readFile(t, fs.CrashClone(CrashCloneOptions{UnsyncedKeepProbability: 1}), "/f")
				want := data
				if len(synced) > len(data) {
					want = append(bytes.Clone(data), synced[len(data):]...)
				}
				if !bytes.Equal(all, want) {
					t.Fatalf("seed %d step %d: keep-all crash content differs", seed, step)
				}
			}
		}
	}
}

// TestMemDirectoryCycle builds synced entries that would put a directory
// in two places (one inside the other) and checks CrashClone terminates
// and keeps the directory only once.
func TestMemDirectoryCycle(t *testing.T) {
	fs := NewMem()
	must(t, fs.MkdirAll("/a/b", 0o700))
	must(t, SyncDir(fs, "/a"))
	must(t, SyncDir(fs, "/"))
	must(t, fs.Rename("/a/b", "/b"))
	must(t, fs.Rename("/a", "/b/a"))
	must(t, SyncDir(fs, "/b"))
	// Synced: / -> a, a -> b, b -> a.
	c := crash(fs)
	if _, err := c.Stat("/a/b"); err != nil {
		t.Fatalf("%v\n%s", err, c)
	}
	if _, err := c.Stat("/a/b/a"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("directory appears twice: %v\n%s", err, c)
	}
	_ = c.String()
	must(t, c.RemoveAll("/a"))
}

func TestMemLockIndependentOfOpen(t *testing.T) {
	fs := NewMem()
	l, err := fs.Lock("LOCK")
	must(t, err)
	if _, err := fs.Lock("/LOCK"); !errors.Is(err, ErrLocked) {
		t.Fatalf("Lock via another spelling = %v", err)
	}
	// The lock file is an ordinary file otherwise.
	writeFile(t, fs, "/LOCK", []byte("pid"))
	must(t, l.Close())
	if err := l.Close(); err == nil {
		t.Fatal("double Close succeeded")
	}
}

func TestMemString(t *testing.T) {
	fs := NewMem()
	must(t, fs.MkdirAll("/db", 0o700))
	must(t, SyncDir(fs, "/"))
	f, err := fs.Create("/db/000001.log")
	must(t, err)
	appendSync(t, f, "abc", true)
	appendSync(t, f, "de", false)
	s := fs.String()
	for _, want := range []string{"/db/\n", "/db/000001.log size=5 synced=3 [data not synced] [entry not synced]"} {
		if !strings.Contains(s, want) {
			t.Errorf("String() = %q, missing %q", s, want)
		}
	}
}

// TestMemConcurrent runs mixed operations from several goroutines (run with
// -race).
func TestMemConcurrent(t *testing.T) {
	fs := NewMem()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			dir := fmt.Sprintf("/d%d", g%3)
			if err := fs.MkdirAll(dir, 0o700); err != nil {
				t.Error(err)
				return
			}
			for i := range 50 {
				name := filepath.Join(dir, fmt.Sprintf("f%d-%d", g, i))
				f, err := fs.Create(name)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = f.Write([]byte(name))
				_ = f.Sync()
				_ = SyncDir(fs, dir)
				_, _ = f.ReadAt(make([]byte, 2), 0)
				_ = f.Close()
				if i%10 == 0 {
					_ = fs.CrashClone(CrashCloneOptions{UnsyncedKeepProbability: 0.5})
					_, _ = fs.List(dir)
				}
				if i%3 == 0 {
					_ = fs.Rename(name, name+".old")
				}
			}
		})
	}
	wg.Wait()
}

// TestMemMatchesDefault applies the same random operations to Default and
// MemFS and compares the resulting trees.
func TestMemMatchesDefault(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 3))
		osDir := t.TempDir()
		mem := NewMem()
		type pair struct{ os, mem File }
		var handles []pair
		names := []string{"a", "b", "c", "d"}
		for step := range 300 {
			name := names[rng.IntN(len(names))]
			other := names[rng.IntN(len(names))]
			var errOS, errMem error
			switch rng.IntN(9) {
			case 0:
				var fo, fm File
				fo, errOS = Default.Create(filepath.Join(osDir, name))
				fm, errMem = mem.Create(name)
				if errOS == nil && errMem == nil {
					handles = append(handles, pair{fo, fm})
				}
			case 1:
				var fo, fm File
				fo, errOS = Default.OpenReadWrite(filepath.Join(osDir, name))
				fm, errMem = mem.OpenReadWrite(name)
				if errOS == nil && errMem == nil {
					handles = append(handles, pair{fo, fm})
				}
			case 2, 3, 4:
				if len(handles) == 0 {
					continue
				}
				h := handles[rng.IntN(len(handles))]
				p := make([]byte, rng.IntN(100))
				for i := range p {
					p[i] = byte('a' + rng.IntN(26))
				}
				_, errOS = h.os.Write(p)
				_, errMem = h.mem.Write(p)
			case 5:
				if len(handles) == 0 {
					continue
				}
				h := handles[rng.IntN(len(handles))]
				size := int64(rng.IntN(300))
				errOS = h.os.Truncate(size)
				errMem = h.mem.Truncate(size)
			case 6:
				errOS = Default.Rename(filepath.Join(osDir, name), filepath.Join(osDir, other))
				errMem = mem.Rename(name, other)
			case 7:
				errOS = Default.Remove(filepath.Join(osDir, name))
				errMem = mem.Remove(name)
			case 8:
				errOS = Default.Link(filepath.Join(osDir, name), filepath.Join(osDir, other))
				errMem = mem.Link(name, other)
			}
			if (errOS == nil) != (errMem == nil) {
				t.Fatalf("seed %d step %d: os err %v, mem err %v", seed, step, errOS, errMem)
			}
		}
		for _, n := range names {
			_, errOS := Default.Stat(filepath.Join(osDir, n))
			_, errMem := mem.Stat(n)
			if (errOS == nil) != (errMem == nil) {
				t.Fatalf("seed %d: Stat(%s): os %v, mem %v", seed, n, errOS, errMem)
			}
			if errOS != nil {
				continue
			}
			if a, b := readFile(t, Default, filepath.Join(osDir, n)), readFile(t, mem, n); !bytes.Equal(a, b) {
				t.Fatalf("seed %d: %s differs:\nos  %q\nmem %q", seed, n, a, b)
			}
		}
		for _, h := range handles {
			must(t, h.os.Close())
			must(t, h.mem.Close())
		}
	}
}

func BenchmarkMemAppendSync(b *testing.B) {
	fs := NewMem()
	f, err := fs.Create("/wal")
	if err != nil {
		b.Fatal(err)
	}
	p := make([]byte, 256)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if _, err := f.Write(p); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDefaultAppend(b *testing.B) {
	f, err := Default.Create(filepath.Join(b.TempDir(), "wal"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, 4096)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if _, err := f.Write(p); err != nil {
			b.Fatal(err)
		}
	}
}

// TestMkdirAllSyncRetry: a MkdirAllSync that created the directory but
// failed to sync its parent, called again, makes the directory durable.
func TestMkdirAllSyncRetry(t *testing.T) {
	mem := NewMem()
	fs := NewErrorFS(mem, OnIndex(0, func(op Op) bool { return op.Kind == OpFileSync }))
	if err := MkdirAllSync(fs, "/d", 0o700); err != ErrInjected {
		t.Fatalf("first MkdirAllSync = %v", err)
	}
	must(t, MkdirAllSync(fs, "/d", 0o700))
	if _, err := crash(mem).Stat("/d"); err != nil {
		t.Fatalf("after a retried MkdirAllSync and a crash: %v", err)
	}
}

// TestWriteFileSyncFailureLeavesNoTemp: on a full disk WriteFileSync fails
// before the rename, leaves the old content and removes its temporary
// file, so that nothing half-written keeps occupying the space.
func TestWriteFileSyncFailureLeavesNoTemp(t *testing.T) {
	mem := NewMem()
	must(t, WriteFileSync(mem, "/", "/f", []byte("old")))
	mem.SetCapacity(10)
	if err := WriteFileSync(mem, "/", "/f", []byte("a much longer new content")); !IsNoSpace(err) {
		t.Fatalf("WriteFileSync on a full disk = %v", err)
	}
	expectContent(t, mem, "/f", "old")
	expectMissing(t, mem, "/f.tmp")
}
