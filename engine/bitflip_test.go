package engine

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/vfs"
)

func readFile(t *testing.T, fs vfs.FS, path string) []byte {
	t.Helper()
	f, err := fs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, fs vfs.FS, path string, data []byte) {
	t.Helper()
	f, err := fs.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// findFile returns the single file in /db whose name has the suffix (or
// prefix for MANIFEST).
func findFile(t *testing.T, fs vfs.FS, match func(string) bool) string {
	t.Helper()
	names, err := fs.List("/db")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, n := range names {
		if match(n) {
			found = append(found, n)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one matching file, found %v", found)
	}
	return filepath.Join("/db", found[0])
}

func flipOpts(fs vfs.FS) *Options {
	return &Options{FS: fs, MemTableSize: 1 << 20, BlockSize: 512, CacheSize: -1}
}

type kv struct{ k, v string }

func flipData(n int) []kv {
	var out []kv
	for i := 0; i < n; i++ {
		out = append(out, kv{fmt.Sprintf("key%04d", i), fmt.Sprintf("value-%04d-%s", i, strings.Repeat("z", i%40))})
	}
	return out
}

// positions returns the byte offsets to damage: all of them for small files,
// otherwise a dense sample that includes the first and last 256 bytes.
func positions(size int) []int {
	var ps []int
	for p := 0; p < size; p++ {
		if size <= 4096 || p < 256 || p >= size-256 || p%13 == 0 {
			ps = append(ps, p)
		}
	}
	return ps
}

// TestBitFlipWAL damages every byte of a WAL. Open must either report
// corruption or recover a prefix of the writes that lacks at most the last
// batch (damage there looks exactly like a torn final write, and is reported
// in the recovery report).
func TestBitFlipWAL(t *testing.T) {
	orig := vfs.NewMem()
	db, err := Open("/db", flipOpts(orig))
	if err != nil {
		t.Fatal(err)
	}
	data := flipData(60)
	for _, e := range data {
		if err := db.Set([]byte(e.k), []byte(e.v), NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	walPath := findFile(t, orig, func(n string) bool { return strings.HasSuffix(n, ".log") })
	wal := readFile(t, orig, walPath)
	for _, p := range positions(len(wal)) {
		fs := orig.CrashClone(vfs.CrashCloneOptions{UnsyncedKeepProbability: 1})
		bad := append([]byte(nil), wal...)
		bad[p] ^= 0xff
		writeFile(t, fs, walPath, bad)
		db, err := Open("/db", flipOpts(fs))
		if err != nil {
			if !errors.Is(err, ErrCorruption) {
				t.Fatalf("flip at %d: error is not corruption: %v", p, err)
			}
			if !strings.Contains(err.Error(), walPath) {
				t.Fatalf("flip at %d: error does not name the WAL: %v", p, err)
			}
			continue
		}
		got := readAll(t, db)
		n := len(got)
		if n < len(data)-1 {
			t.Fatalf("flip at %d: open succeeded with %d of %d writes", p, n, len(data))
		}
		for _, e := range data[:n] {
			if got[e.k] != e.v {
				t.Fatalf("flip at %d: wrong value for %s", p, e.k)
			}
		}
		if n < len(data) && db.RecoveryReport().WALTruncatedBytes == 0 {
			t.Fatalf("flip at %d: a write was dropped without being reported", p)
		}
		_ = db.Close()
	}
}

// TestBitFlipSSTable damages bytes of a table. Reads either fail with a
// corruption error naming the table or return exactly the right data.
func TestBitFlipSSTable(t *testing.T) {
	orig := vfs.NewMem()
	db, err := Open("/db", flipOpts(orig))
	if err != nil {
		t.Fatal(err)
	}
	data := flipData(300)
	for _, e := range data {
		if err := db.Set([]byte(e.k), []byte(e.v), NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Compact(nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	sstPath := findFile(t, orig, func(n string) bool { return strings.HasSuffix(n, ".sst") })
	sst := readFile(t, orig, sstPath)
	corrupted := 0
	for _, p := range positions(len(sst)) {
		fs := orig.CrashClone(vfs.CrashCloneOptions{UnsyncedKeepProbability: 1})
		bad := append([]byte(nil), sst...)
		bad[p] ^= 0xff
		writeFile(t, fs, sstPath, bad)
		db, err := Open("/db", flipOpts(fs))
		if err != nil {
			t.Fatalf("flip at %d: open reads no table data and must succeed: %v", p, err)
		}
		sawErr := false
		checkErr := func(err error) {
			if !errors.Is(err, ErrCorruption) || !strings.Contains(err.Error(), sstPath) {
				t.Fatalf("flip at %d: want a corruption error naming %s, got %v", p, sstPath, err)
			}
			sawErr = true
		}
		for _, e := range data {
			v, err := db.Get([]byte(e.k))
			if err != nil {
				checkErr(err)
				continue
			}
			if string(v) != e.v {
				t.Fatalf("flip at %d: wrong value for %s", p, e.k)
			}
		}
		it, _ := db.NewIter(nil)
		i := 0
		for ok := it.First(); ok; ok = it.Next() {
			if i >= len(data) || string(it.Key()) != data[i].k || string(it.Value()) != data[i].v {
				t.Fatalf("flip at %d: iteration returned wrong data at %d: %q", p, i, it.Key())
			}
			i++
		}
		if err := it.Close(); err != nil {
			checkErr(err)
		} else if i != len(data) {
			t.Fatalf("flip at %d: iteration stopped early at %d without an error", p, i)
		}
		if sawErr {
			corrupted++
		}
		_ = db.Close()
	}
	if corrupted == 0 {
		t.Fatal("no flip was detected")
	}
}

// TestBitFlipManifest damages every byte of the MANIFEST and of CURRENT.
// Open either reports corruption, or recovers every write.
func TestBitFlipManifest(t *testing.T) {
	orig := vfs.NewMem()
	db, err := Open("/db", &Options{FS: orig, MemTableSize: 64 << 10, TargetFileSize: 4 << 10, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	data := flipData(800)
	for i, e := range data {
		if err := db.Set([]byte(e.k), []byte(e.v), NoSync); err != nil {
			t.Fatal(err)
		}
		if i%200 == 199 {
			if err := db.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := db.Compact([]byte("key0100"), []byte("key0300")); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"MANIFEST", base.CurrentFileName} {
		path := findFile(t, orig, func(n string) bool { return strings.HasPrefix(n, target) })
		content := readFile(t, orig, path)
		for _, p := range positions(len(content)) {
			fs := orig.CrashClone(vfs.CrashCloneOptions{UnsyncedKeepProbability: 1})
			bad := append([]byte(nil), content...)
			bad[p] ^= 0xff
			writeFile(t, fs, path, bad)
			db, err := Open("/db", flipOpts(fs))
			if err != nil {
				if !errors.Is(err, ErrCorruption) {
					t.Fatalf("%s flip at %d: error is not corruption: %v", target, p, err)
				}
				continue
			}
			got := readAll(t, db)
			if len(got) != len(data) {
				t.Fatalf("%s flip at %d: recovered %d of %d keys", target, p, len(got), len(data))
			}
			for _, e := range data {
				if got[e.k] != e.v {
					t.Fatalf("%s flip at %d: wrong value for %s", target, p, e.k)
				}
			}
			_ = db.Close()
		}
	}
}
