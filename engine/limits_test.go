package engine

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/internal/lsm/cache"
	"github.com/kayadb/kayadb/internal/vfs"
)

func TestLimits(t *testing.T) {
	db, err := Open("/db", memOpts(vfs.NewMem()))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	bigKey := make([]byte, MaxKeySize+1)
	bigVal := make([]byte, MaxValueSize+1)
	if err := db.Set(bigKey, nil, NoSync); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("oversized key: %v", err)
	}
	if err := db.Set([]byte("k"), bigVal, NoSync); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("oversized value: %v", err)
	}
	if err := db.Delete(bigKey, NoSync); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("oversized delete key: %v", err)
	}
	if _, err := db.Get(bigKey); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("oversized get key: %v", err)
	}
	// A batch with one bad write is refused whole.
	b := db.NewBatch()
	_ = b.Set([]byte("good"), []byte("v"))
	_ = b.Set(bigKey, nil)
	if err := b.Commit(NoSync); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("batch with a bad write: %v", err)
	}
	if _, err := db.Get([]byte("good")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("part of a refused batch was applied: %v", err)
	}
	// The largest allowed key and value work, including through a memtable
	// much smaller than the value.
	maxKey := []byte(strings.Repeat("k", MaxKeySize))
	maxVal := make([]byte, MaxValueSize)
	maxVal[MaxValueSize-1] = 7
	if err := db.Set(maxKey, maxVal, Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	v, err := db.Get(maxKey)
	if err != nil || len(v) != MaxValueSize || v[MaxValueSize-1] != 7 {
		t.Fatalf("max-size value: %d bytes, %v", len(v), err)
	}
}

func TestOptionsValidate(t *testing.T) {
	bad := []*Options{
		{MemTableSize: 1000},
		{MemTableStopWritesThreshold: 1},
		{L0CompactionThreshold: 8, L0StopWritesThreshold: 4},
		{LevelMultiplier: 1},
		{BlockSize: 2 << 20},
		{MaxOpenFiles: 3},
		{ErrorIfExists: true, ErrorIfNotExists: true},
	}
	for i, o := range bad {
		o.FS = vfs.NewMem()
		if _, err := Open("/db", o); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("options %d: got %v", i, err)
		}
	}
	fs := vfs.NewMem()
	if _, err := Open("/db", &Options{FS: fs, ErrorIfNotExists: true}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ErrorIfNotExists: %v", err)
	}
	db, err := Open("/db", &Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	if _, err := Open("/db", &Options{FS: fs, ErrorIfExists: true}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("ErrorIfExists: %v", err)
	}
}

// TestDirectoryLock: a second Open of the same directory fails with a clear
// error while the first is open (flock on the real file system), and works
// after Close.
func TestDirectoryLock(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, nil)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second open: %v", err)
	}
	if _, err := CheckRecovery(dir, nil); !errors.Is(err, ErrLocked) {
		t.Fatalf("CheckRecovery on an open DB: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
}

// TestIteratorPinsFiles: compaction replaces the tables an open iterator
// reads, but the iterator keeps reading them correctly and they are deleted
// only after it closes.
func TestIteratorPinsFiles(t *testing.T) {
	fs := vfs.NewMem()
	db, err := Open("/db", memOpts(fs))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := 0; i < 2000; i++ {
		_ = db.Set([]byte(fmt.Sprintf("k%05d", i)), []byte(fmt.Sprintf("v%05d", i)), NoSync)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	tables := func() map[string]bool {
		names, _ := fs.List("/db")
		m := map[string]bool{}
		for _, n := range names {
			if strings.HasSuffix(n, ".sst") {
				m[n] = true
			}
		}
		return m
	}
	before := tables()
	it, err := db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !it.First() {
		t.Fatal("empty")
	}
	// Overwrite everything and compact: the old tables are obsolete now.
	for i := 0; i < 2000; i++ {
		_ = db.Set([]byte(fmt.Sprintf("k%05d", i)), []byte("new"), NoSync)
	}
	if err := db.Compact(nil, nil); err != nil {
		t.Fatal(err)
	}
	db.deleteObsoleteFiles()
	during := tables()
	for n := range before {
		if !during[n] {
			t.Fatalf("table %s was deleted while an iterator still reads it", n)
		}
	}
	n := 1
	for it.Next() {
		n++
		if !strings.HasPrefix(string(it.Value()), "v") {
			t.Fatalf("iterator sees a later write: %q=%q", it.Key(), it.Value())
		}
	}
	if err := it.Close(); err != nil || n != 2000 {
		t.Fatalf("iterated %d, err %v", n, err)
	}
	db.deleteObsoleteFiles()
	after := tables()
	for n := range before {
		if after[n] {
			t.Fatalf("obsolete table %s survived the iterator's Close", n)
		}
	}
}

// TestSharedCache: two DBs share one block cache without mixing blocks.
func TestSharedCache(t *testing.T) {
	c := cache.New(1 << 20)
	fs := vfs.NewMem()
	a, err := Open("/a", &Options{FS: fs, Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open("/b", &Options{FS: fs, Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i := 0; i < 500; i++ {
		k := []byte(fmt.Sprintf("k%04d", i))
		_ = a.Set(k, []byte("from-a"), NoSync)
		_ = b.Set(k, []byte("from-b"), NoSync)
	}
	_ = a.Flush()
	_ = b.Flush()
	for round := 0; round < 2; round++ {
		for i := 0; i < 500; i++ {
			k := []byte(fmt.Sprintf("k%04d", i))
			va, _ := a.Get(k)
			vb, _ := b.Get(k)
			if string(va) != "from-a" || string(vb) != "from-b" {
				t.Fatalf("shared cache mixed values: %q %q", va, vb)
			}
		}
	}
	if m := c.Metrics(); m.Hits == 0 || m.Size > m.Capacity {
		t.Fatalf("cache metrics: %+v", m)
	}
}

// TestReadOnly: a read-only open sees everything (including unflushed WAL
// data), refuses writes, and leaves the directory byte-for-byte unchanged.
func TestReadOnly(t *testing.T) {
	fs := vfs.NewMem()
	db, err := Open("/db", memOpts(fs))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3000; i++ {
		_ = db.Set([]byte(fmt.Sprintf("k%05d", i)), []byte(fmt.Sprintf("v%05d", i)), NoSync)
	}
	_ = db.Close()
	snapshot := func() map[string]string {
		names, _ := fs.List("/db")
		m := map[string]string{}
		for _, n := range names {
			f, err := fs.Open("/db/" + n)
			if err != nil {
				t.Fatal(err)
			}
			st, _ := f.Stat()
			b := make([]byte, st.Size())
			_, _ = f.ReadAt(b, 0)
			_ = f.Close()
			m[n] = string(b)
		}
		return m
	}
	before := snapshot()
	ro, err := Open("/db", &Options{FS: fs, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3000; i += 37 {
		v, err := ro.Get([]byte(fmt.Sprintf("k%05d", i)))
		if err != nil || string(v) != fmt.Sprintf("v%05d", i) {
			t.Fatalf("read-only get %d: %q %v", i, v, err)
		}
	}
	if err := ro.Set([]byte("x"), nil, Sync); !errors.Is(err, ErrReadOnly) || !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("write on read-only: %v", err)
	}
	for name, err := range map[string]error{"flush": ro.Flush(), "compact": ro.Compact(nil, nil), "checkpoint": ro.Checkpoint("/c")} {
		if !errors.Is(err, ErrReadOnly) {
			t.Fatalf("%s on read-only: %v", name, err)
		}
	}
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	after := snapshot()
	if len(before) != len(after) {
		t.Fatalf("files changed: %d before, %d after", len(before), len(after))
	}
	for n, c := range before {
		if after[n] != c {
			t.Fatalf("file %s changed", n)
		}
	}
	// Neither a read-only open nor ErrorIfNotExists creates anything.
	for _, o := range []*Options{{FS: fs, ReadOnly: true}, {FS: fs, ErrorIfNotExists: true}} {
		if _, err := Open("/nothing", o); !errors.Is(err, ErrNotFound) {
			t.Fatalf("open of a missing db: %v", err)
		}
		if _, err := fs.Stat("/nothing"); err == nil {
			t.Fatal("a failed open created the directory")
		}
	}
}
