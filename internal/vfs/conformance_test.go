package vfs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// fsUnderTest returns the file systems that must pass the conformance
// tests, each with a root directory to work in.
func fsUnderTest(t *testing.T) map[string]func(t *testing.T) (FS, string) {
	return map[string]func(t *testing.T) (FS, string){
		"Default": func(t *testing.T) (FS, string) { return Default, t.TempDir() },
		"MemFS": func(t *testing.T) (FS, string) {
			fs := NewMem()
			if err := fs.MkdirAll("/work/dir", 0o700); err != nil {
				t.Fatal(err)
			}
			return fs, "/work/dir"
		},
		"ErrorFS(MemFS)": func(t *testing.T) (FS, string) {
			fs := NewErrorFS(NewMem(), nil)
			if err := fs.MkdirAll("/db", 0o700); err != nil {
				t.Fatal(err)
			}
			return fs, "/db"
		},
		"ErrorFS(Default)": func(t *testing.T) (FS, string) {
			return NewErrorFS(Default, OnIndex(-1, nil)), t.TempDir()
		},
	}
}

func TestConformance(t *testing.T) {
	tests := []struct {
		name string
		fn   func(t *testing.T, fs FS, dir string)
	}{
		{"CreateWriteRead", testCreateWriteRead},
		{"ReadAt", testReadAt},
		{"Offsets", testOffsets},
		{"OpenReadWrite", testOpenReadWrite},
		{"ReadOnlyHandle", testReadOnlyHandle},
		{"CreateTruncates", testCreateTruncates},
		{"Rename", testRename},
		{"Link", testLink},
		{"ListRemove", testListRemove},
		{"MkdirAll", testMkdirAll},
		{"StatTruncate", testStatTruncate},
		{"Lock", testLock},
		{"NotExist", testNotExist},
		{"WriteFileSync", testWriteFileSync},
		{"DirSync", testDirSync},
		{"ClosedHandle", testClosedHandle},
		{"ConcurrentReadAt", testConcurrentReadAt},
		{"SeekAfterTruncate", testSeekAfterTruncate},
	}
	for fsName, mk := range fsUnderTest(t) {
		t.Run(fsName, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					fs, dir := mk(t)
					tc.fn(t, fs, dir)
				})
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, fs FS, name string, data []byte) {
	t.Helper()
	f, err := fs.Create(name)
	must(t, err)
	if n, err := f.Write(data); err != nil || n != len(data) {
		t.Fatalf("Write(%s) = %d, %v", name, n, err)
	}
	must(t, f.Close())
}

func readFile(t *testing.T, fs FS, name string) []byte {
	t.Helper()
	f, err := fs.Open(name)
	must(t, err)
	defer f.Close()
	data, err := io.ReadAll(f)
	must(t, err)
	return data
}

func fileSize(t *testing.T, fs FS, name string) int64 {
	t.Helper()
	fi, err := fs.Stat(name)
	must(t, err)
	return fi.Size()
}

func testCreateWriteRead(t *testing.T, fs FS, dir string) {
	name := filepath.Join(dir, "a")
	writeFile(t, fs, name, []byte("hello world"))
	if got := readFile(t, fs, name); string(got) != "hello world" {
		t.Fatalf("read %q", got)
	}
	// Read on a fresh handle continues from its own offset.
	f, err := fs.Open(name)
	must(t, err)
	defer f.Close()
	buf := make([]byte, 6)
	if n, err := f.Read(buf[:5]); n != 5 || err != nil || string(buf[:5]) != "hello" {
		t.Fatalf("Read = %d, %v, %q", n, err, buf)
	}
	if n, err := io.ReadFull(f, buf[:6]); n != 6 || err != nil || string(buf[:6]) != " world" {
		t.Fatalf("ReadFull = %d, %v, %q", n, err, buf[:6])
	}
	if n, err := f.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read at EOF = %d, %v", n, err)
	}
	if n, err := f.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty Read = %d, %v", n, err)
	}
}

func testReadAt(t *testing.T, fs FS, dir string) {
	name := filepath.Join(dir, "a")
	writeFile(t, fs, name, []byte("0123456789"))
	f, err := fs.Open(name)
	must(t, err)
	defer f.Close()
	buf := make([]byte, 4)
	if n, err := f.ReadAt(buf, 3); n != 4 || err != nil || string(buf) != "3456" {
		t.Fatalf("ReadAt = %d, %v, %q", n, err, buf)
	}
	if n, err := f.ReadAt(buf, 8); n != 2 || err != io.EOF || string(buf[:2]) != "89" {
		t.Fatalf("ReadAt short = %d, %v, %q", n, err, buf[:n])
	}
	if n, err := f.ReadAt(buf, 10); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt at EOF = %d, %v", n, err)
	}
	if _, err := f.ReadAt(buf, -1); err == nil {
		t.Fatal("ReadAt(-1) succeeded")
	}
	// ReadAt does not move the offset.
	if n, err := f.Read(buf); n != 4 || err != nil || string(buf) != "0123" {
		t.Fatalf("Read after ReadAt = %d, %v, %q", n, err, buf)
	}
}

func testOffsets(t *testing.T, fs FS, dir string) {
	name := filepath.Join(dir, "a")
	f, err := fs.Create(name)
	must(t, err)
	for _, s := range []string{"ab", "cd", "ef"} {
		if _, err := f.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	// Reads on the same handle continue from the write offset (EOF).
	if n, err := f.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("Read at write offset = %d, %v", n, err)
	}
	// ReadAt on a writable handle sees the writes.
	buf := make([]byte, 6)
	if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != "abcdef" {
		t.Fatalf("ReadAt = %v, %q", err, buf)
	}
	// Two handles have independent offsets.
	g, err := fs.Open(name)
	must(t, err)
	h, err := fs.Open(name)
	must(t, err)
	b1, b2 := make([]byte, 2), make([]byte, 3)
	if _, err := io.ReadFull(g, b1); err != nil || string(b1) != "ab" {
		t.Fatalf("g: %v %q", err, b1)
	}
	if _, err := io.ReadFull(h, b2); err != nil || string(b2) != "abc" {
		t.Fatalf("h: %v %q", err, b2)
	}
	if _, err := io.ReadFull(g, b1); err != nil || string(b1) != "cd" {
		t.Fatalf("g: %v %q", err, b1)
	}
	// A reader sees data appended after it was opened.
	if _, err := f.Write([]byte("gh")); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(h)
	must(t, err)
	if string(rest) != "defgh" {
		t.Fatalf("h rest = %q", rest)
	}
	must(t, g.Close())
	must(t, h.Close())
	must(t, f.Close())
}

func testOpenReadWrite(t *testing.T, fs FS, dir string) {
	name := filepath.Join(dir, "a")
	writeFile(t, fs, name, []byte("0123456789"))
	f, err := fs.OpenReadWrite(name)
	must(t, err)
	if _, err := f.Write([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	// The shared offset is now 2.
	if _, err := io.ReadFull(f, buf); err != nil || string(buf) != "234" {
		t.Fatalf("Read = %v, %q", err, buf)
	}
	if _, err := f.Write([]byte("XYZWVUT")); err != nil {
		t.Fatal(err)
	}
	must(t, f.Sync())
	must(t, f.Close())
	if got := readFile(t, fs, name); string(got) != "ab234XYZWVUT" {
		t.Fatalf("content %q", got)
	}
	if _, err := fs.OpenReadWrite(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("OpenReadWrite(missing) = %v", err)
	}
}

func testReadOnlyHandle(t *testing.T, fs FS, dir string) {
	name := filepath.Join(dir, "a")
	writeFile(t, fs, name, []byte("abc"))
	f, err := fs.Open(name)
	must(t, err)
	defer f.Close()
	if _, err := f.Write([]byte("x")); err == nil {
		t.Fatal("Write on Open'd handle succeeded")
	}
	if err := f.Truncate(0); err == nil {
		t.Fatal("Truncate on Open'd handle succeeded")
	}
	if got := readFile(t, fs, name); string(got) != "abc" {
		t.Fatalf("content %q", got)
	}
}

func testCreateTruncates(t *testing.T, fs FS, dir string) {
	name := filepath.Join(dir, "a")
	writeFile(t, fs, name, []byte("long content"))
	writeFile(t, fs, name, []byte("new"))
	if got := readFile(t, fs, name); string(got) != "new" {
		t.Fatalf("content %q", got)
	}
	if err := fs.MkdirAll(filepath.Join(dir, "d"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Create(filepath.Join(dir, "d")); err == nil {
		t.Fatal("Create on a directory succeeded")
	}
}

func testRename(t *testing.T, fs FS, dir string) {
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeFile(t, fs, a, []byte("A"))
	writeFile(t, fs, b, []byte("BB"))
	must(t, fs.Rename(a, b))
	if got := readFile(t, fs, b); string(got) != "A" {
		t.Fatalf("b = %q", got)
	}
	if _, err := fs.Stat(a); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Stat(a) after rename = %v", err)
	}
	if err := fs.Rename(a, b); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Rename(missing) = %v", err)
	}
	// Directories can be renamed too, with their contents.
	d1, d2 := filepath.Join(dir, "d1"), filepath.Join(dir, "d2")
	must(t, fs.MkdirAll(d1, 0o700))
	writeFile(t, fs, filepath.Join(d1, "f"), []byte("F"))
	must(t, fs.Rename(d1, d2))
	if got := readFile(t, fs, filepath.Join(d2, "f")); string(got) != "F" {
		t.Fatalf("d2/f = %q", got)
	}
	// A directory cannot move below itself.
	if err := fs.Rename(d2, filepath.Join(d2, "sub")); err == nil {
		t.Fatal("rename into own subdirectory succeeded")
	}
	// A file cannot replace a directory.
	if err := fs.Rename(b, d2); err == nil {
		t.Fatal("rename file over directory succeeded")
	}
}

func testLink(t *testing.T, fs FS, dir string) {
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeFile(t, fs, a, []byte("shared"))
	must(t, fs.Link(a, b))
	if got := readFile(t, fs, b); string(got) != "shared" {
		t.Fatalf("b = %q", got)
	}
	// Writes through one name are visible through the other.
	f, err := fs.OpenReadWrite(b)
	must(t, err)
	_, err = f.Write([]byte("SH"))
	must(t, err)
	must(t, f.Close())
	if got := readFile(t, fs, a); string(got) != "SHared" {
		t.Fatalf("a = %q", got)
	}
	// Removing one name keeps the other.
	must(t, fs.Remove(a))
	if got := readFile(t, fs, b); string(got) != "SHared" {
		t.Fatalf("b after removing a = %q", got)
	}
	// Link fails if the new name exists or the old one does not.
	writeFile(t, fs, a, nil)
	if err := fs.Link(a, b); !errors.Is(err, os.ErrExist) {
		t.Fatalf("Link onto existing = %v", err)
	}
	if err := fs.Link(filepath.Join(dir, "missing"), filepath.Join(dir, "c")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Link(missing) = %v", err)
	}
}

func testListRemove(t *testing.T, fs FS, dir string) {
	for _, n := range []string{"x", "y", "z"} {
		writeFile(t, fs, filepath.Join(dir, n), []byte(n))
	}
	must(t, fs.MkdirAll(filepath.Join(dir, "sub", "deeper"), 0o700))
	writeFile(t, fs, filepath.Join(dir, "sub", "deeper", "f"), []byte("f"))
	names, err := fs.List(dir)
	must(t, err)
	slices.Sort(names)
	if want := []string{"sub", "x", "y", "z"}; !slices.Equal(names, want) {
		t.Fatalf("List = %v, want %v", names, want)
	}
	must(t, fs.Remove(filepath.Join(dir, "y")))
	if err := fs.Remove(filepath.Join(dir, "y")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("second Remove = %v", err)
	}
	if err := fs.Remove(filepath.Join(dir, "sub")); err == nil {
		t.Fatal("Remove of a non-empty directory succeeded")
	}
	must(t, fs.RemoveAll(filepath.Join(dir, "sub")))
	must(t, fs.RemoveAll(filepath.Join(dir, "sub"))) // missing is fine
	names, err = fs.List(dir)
	must(t, err)
	slices.Sort(names)
	if want := []string{"x", "z"}; !slices.Equal(names, want) {
		t.Fatalf("List = %v, want %v", names, want)
	}
	must(t, fs.MkdirAll(filepath.Join(dir, "empty"), 0o700))
	must(t, fs.Remove(filepath.Join(dir, "empty")))
	if _, err := fs.List(filepath.Join(dir, "x")); err == nil {
		t.Fatal("List of a file succeeded")
	}
}

func testMkdirAll(t *testing.T, fs FS, dir string) {
	d := filepath.Join(dir, "a", "b", "c")
	must(t, fs.MkdirAll(d, 0o700))
	must(t, fs.MkdirAll(d, 0o700)) // idempotent
	fi, err := fs.Stat(d)
	must(t, err)
	if !fi.IsDir() || fi.Name() != "c" || !fi.Mode().IsDir() {
		t.Fatalf("Stat(dir) = %v %v %v", fi.IsDir(), fi.Name(), fi.Mode())
	}
	writeFile(t, fs, filepath.Join(dir, "file"), nil)
	if err := fs.MkdirAll(filepath.Join(dir, "file", "sub"), 0o700); err == nil {
		t.Fatal("MkdirAll through a file succeeded")
	}
	if err := fs.MkdirAll(filepath.Join(dir, "file"), 0o700); err == nil {
		t.Fatal("MkdirAll on a file succeeded")
	}
}

func testStatTruncate(t *testing.T, fs FS, dir string) {
	name := filepath.Join(dir, "a")
	f, err := fs.Create(name)
	must(t, err)
	defer f.Close()
	_, err = f.Write(bytes.Repeat([]byte("x"), 100))
	must(t, err)
	if got := fileSize(t, fs, name); got != 100 {
		t.Fatalf("size %d", got)
	}
	fi, err := f.Stat()
	must(t, err)
	if fi.Size() != 100 || fi.Name() != "a" || fi.IsDir() || !fi.Mode().IsRegular() {
		t.Fatalf("File.Stat = %d %q %v %v", fi.Size(), fi.Name(), fi.IsDir(), fi.Mode())
	}
	if fi.ModTime().IsZero() {
		t.Fatal("zero ModTime")
	}
	must(t, f.Truncate(10))
	if got := fileSize(t, fs, name); got != 10 {
		t.Fatalf("size after shrink %d", got)
	}
	must(t, f.Truncate(20))
	got := readFile(t, fs, name)
	if want := append(bytes.Repeat([]byte("x"), 10), make([]byte, 10)...); !bytes.Equal(got, want) {
		t.Fatalf("content after grow %q", got)
	}
	// Truncate does not move the offset (100): writing leaves a hole.
	_, err = f.Write([]byte("y"))
	must(t, err)
	if got := fileSize(t, fs, name); got != 101 {
		t.Fatalf("size after write past truncate %d", got)
	}
	if got := readFile(t, fs, name); !bytes.Equal(got[20:100], make([]byte, 80)) {
		t.Fatalf("hole is not zero: %q", got[20:100])
	}
	must(t, f.Preallocate(0, 1<<16))
	if got := fileSize(t, fs, name); got != 101 {
		t.Fatalf("size after Preallocate %d", got)
	}
}

func testLock(t *testing.T, fs FS, dir string) {
	name := filepath.Join(dir, "LOCK")
	l1, err := fs.Lock(name)
	must(t, err)
	if _, err := fs.Stat(name); err != nil {
		t.Fatalf("lock file not created: %v", err)
	}
	l2, err := fs.Lock(name)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Lock = %v, %v; want ErrLocked", l2, err)
	}
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte(name)) {
		t.Fatalf("error %v does not name %s", err, name)
	}
	// Another path is independent.
	l3, err := fs.Lock(filepath.Join(dir, "OTHER"))
	must(t, err)
	must(t, l3.Close())
	must(t, l1.Close())
	l2, err = fs.Lock(name)
	must(t, err)
	must(t, l2.Close())
	if _, err := fs.Lock(filepath.Join(dir, "missing", "LOCK")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Lock in missing dir = %v", err)
	}
}

func testNotExist(t *testing.T, fs FS, dir string) {
	missing := filepath.Join(dir, "missing")
	checks := map[string]error{}
	_, checks["Open"] = fs.Open(missing)
	_, checks["OpenReadWrite"] = fs.OpenReadWrite(missing)
	_, checks["OpenDir"] = fs.OpenDir(missing)
	_, checks["Stat"] = fs.Stat(missing)
	_, checks["List"] = fs.List(missing)
	checks["Remove"] = fs.Remove(missing)
	checks["Rename"] = fs.Rename(missing, filepath.Join(dir, "x"))
	_, checks["Create in missing dir"] = fs.Create(filepath.Join(missing, "f"))
	for op, err := range checks {
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: err = %v, want ErrNotExist", op, err)
		}
	}
	// The failed Create made nothing.
	if _, err := fs.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Stat after failed Create = %v", err)
	}
}

func testWriteFileSync(t *testing.T, fs FS, dir string) {
	name := filepath.Join(dir, "CURRENT")
	must(t, WriteFileSync(fs, dir, name, []byte("v1")))
	must(t, WriteFileSync(fs, dir, name, []byte("version 2")))
	if got := readFile(t, fs, name); string(got) != "version 2" {
		t.Fatalf("content %q", got)
	}
	names, err := fs.List(dir)
	must(t, err)
	if !slices.Equal(names, []string{"CURRENT"}) {
		t.Fatalf("List = %v", names)
	}
}

func testDirSync(t *testing.T, fs FS, dir string) {
	writeFile(t, fs, filepath.Join(dir, "f"), []byte("x"))
	d, err := fs.OpenDir(dir)
	must(t, err)
	must(t, d.Sync())
	fi, err := d.Stat()
	must(t, err)
	if !fi.IsDir() {
		t.Fatal("OpenDir handle is not a directory")
	}
	must(t, d.Close())
	must(t, SyncDir(fs, dir))
	if _, err := fs.OpenDir(filepath.Join(dir, "f")); err == nil {
		t.Fatal("OpenDir on a file succeeded")
	}
}

func testClosedHandle(t *testing.T, fs FS, dir string) {
	f, err := fs.Create(filepath.Join(dir, "f"))
	must(t, err)
	must(t, f.Close())
	if err := f.Close(); err == nil {
		t.Error("second Close succeeded")
	}
	if _, err := f.Write([]byte("x")); err == nil {
		t.Error("Write after Close succeeded")
	}
	if _, err := f.ReadAt(make([]byte, 1), 0); err == nil {
		t.Error("ReadAt after Close succeeded")
	}
	if err := f.Sync(); err == nil {
		t.Error("Sync after Close succeeded")
	}
	if err := f.Preallocate(0, 10); err == nil {
		t.Error("Preallocate after Close succeeded")
	}
}

// testConcurrentReadAt runs ReadAt from several goroutines while another
// handle appends (run with -race).
func testConcurrentReadAt(t *testing.T, fs FS, dir string) {
	name := filepath.Join(dir, "f")
	w, err := fs.Create(name)
	must(t, err)
	defer w.Close()
	chunk := bytes.Repeat([]byte("k"), 512)
	_, err = w.Write(chunk)
	must(t, err)
	r, err := fs.Open(name)
	must(t, err)
	defer r.Close()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			buf := make([]byte, len(chunk))
			for range 200 {
				if _, err := r.ReadAt(buf, 0); err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(buf, chunk) {
					t.Error("ReadAt saw wrong data")
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 200 {
			if _, err := w.Write(chunk); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Wait()
}

// testSeekAfterTruncate is what a log writer does after a failed write: cut
// the file back and continue writing at the cut.
func testSeekAfterTruncate(t *testing.T, fs FS, dir string) {
	name := filepath.Join(dir, "f")
	f, err := fs.Create(name)
	must(t, err)
	_, err = f.Write([]byte("goodPARTIAL"))
	must(t, err)
	must(t, f.Truncate(4))
	off, err := f.Seek(4, io.SeekStart)
	must(t, err)
	if off != 4 {
		t.Fatalf("Seek = %d", off)
	}
	_, err = f.Write([]byte("next"))
	must(t, err)
	if off, err := f.Seek(0, io.SeekCurrent); err != nil || off != 8 {
		t.Fatalf("Seek(0, current) = %d, %v", off, err)
	}
	if off, err := f.Seek(-2, io.SeekEnd); err != nil || off != 6 {
		t.Fatalf("Seek(-2, end) = %d, %v", off, err)
	}
	if _, err := f.Seek(-1, io.SeekStart); err == nil {
		t.Fatal("Seek to a negative offset succeeded")
	}
	must(t, f.Close())
	got := readFile(t, fs, name)
	if string(got) != "goodnext" {
		t.Fatalf("content %q", got)
	}
}
