package engine

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/lsm/manifest"
	"github.com/kayadb/kayadb/internal/vfs"
)

// TestTrivialMove: tables whose key ranges overlap nothing below move down
// without being rewritten.
func TestTrivialMove(t *testing.T) {
	db, err := Open("/db", &Options{FS: vfs.NewMem(), MemTableSize: 64 << 10, L0CompactionThreshold: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Sequential keys: each flush makes an L0 table disjoint from the others.
	for i := 0; i < 6000; i++ {
		_ = db.Set([]byte(fmt.Sprintf("k%06d", i)), make([]byte, 50), NoSync)
		if i%1000 == 999 {
			if err := db.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor(t, func() bool { m := db.Metrics(); return m.Levels[0].NumFiles < 2 })
	m := db.Metrics()
	if m.Compaction.MoveCount == 0 {
		t.Fatalf("no trivial move happened:\n%s", m)
	}
	if err := db.checkInvariants(); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for background work")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTombstonesDroppedOnlyAtBottom: compacting to the bottom drops
// deletions and the values they hide, unless a snapshot can still see the
// old values.
func TestTombstonesDroppedOnlyAtBottom(t *testing.T) {
	db, err := Open("/db", &Options{FS: vfs.NewMem(), DisableAutomaticCompactions: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := 0; i < 100; i++ {
		_ = db.Set([]byte(fmt.Sprintf("k%03d", i)), []byte("old"), NoSync)
	}
	if err := db.Compact(nil, nil); err != nil {
		t.Fatal(err)
	}
	snap := db.NewSnapshot()
	for i := 0; i < 100; i += 2 {
		_ = db.Delete([]byte(fmt.Sprintf("k%03d", i)), NoSync)
	}
	// With the snapshot open the tombstones must survive a full compaction.
	if err := db.Compact(nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := db.Metrics().Compaction.TombstonesDropped; n != 0 {
		t.Fatalf("%d tombstones dropped while a snapshot needs them", n)
	}
	if v, err := snap.Get([]byte("k000")); err != nil || string(v) != "old" {
		t.Fatalf("snapshot read after compaction: %q %v", v, err)
	}
	if _, err := db.Get([]byte("k000")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted key visible: %v", err)
	}
	_ = snap.Close()
	if err := db.Compact(nil, nil); err != nil {
		t.Fatal(err)
	}
	m := db.Metrics()
	if m.Compaction.TombstonesDropped != 50 {
		t.Fatalf("tombstones dropped: %d, want 50\n%s", m.Compaction.TombstonesDropped, m)
	}
	v := db.vs.Current()
	defer v.Unref()
	for l := 0; l < manifest.NumLevels-1; l++ {
		if v.NumFiles(l) != 0 {
			t.Fatalf("data left above the bottom level:\n%s", v)
		}
	}
	it, _ := db.NewIter(nil)
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	_ = it.Close()
	if n != 50 {
		t.Fatalf("%d keys after compaction, want 50", n)
	}
}

// TestWriteStallCounted: when flushes cannot keep up, writes stall at the
// memtable limit (not before), the stall is counted, and writes resume.
func TestWriteStallCounted(t *testing.T) {
	mem := vfs.NewMem()
	slow := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
		if op.Kind == vfs.OpFileSync && strings.HasSuffix(op.Path, ".sst") {
			time.Sleep(30 * time.Millisecond) // a slow disk for table writes
		}
		return nil
	}))
	db, err := Open("/db", &Options{FS: slow, MemTableSize: 64 << 10, MemTableStopWritesThreshold: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := 0; i < 20000; i++ {
		if err := db.Set([]byte(fmt.Sprintf("k%06d", i)), make([]byte, 100), NoSync); err != nil {
			t.Fatal(err)
		}
	}
	m := db.Metrics()
	if m.Stalls.MemTable == 0 || m.Stalls.Duration == 0 {
		t.Fatalf("no stall recorded:\n%s", m)
	}
	if m.MemTable.Count > 2 {
		t.Fatalf("%d memtables exceed the stop threshold of 2", m.MemTable.Count)
	}
}
