package engine

import (
	"fmt"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/lsm/memtable"
	"github.com/kayadb/kayadb/internal/vfs"
)

// TestMemtableArenaPreparedBeforeRotation: once the current memtable is
// half full, the next one's arena is allocated in the background, and the
// rotation takes that arena instead of allocating on the commit path —
// during the first rotations (whose sizes double) as at the standard size.
func TestMemtableArenaPreparedBeforeRotation(t *testing.T) {
	db, err := Open("/db", &Options{FS: vfs.NewMem(), MemTableSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	value := make([]byte, 1000)
	i := 0
	put := func() {
		t.Helper()
		if err := db.Set(fmt.Appendf(nil, "key%08d", i), value, NoSync); err != nil {
			t.Fatal(err)
		}
		i++
	}
	current := func() *memtable.Table {
		db.mu.Lock()
		defer db.mu.Unlock()
		return db.mu.mem.t
	}
	for _, size := range []int{initialMemTableSize, 512 << 10, 1 << 20, 1 << 20} {
		mem := current()
		if mem.Capacity() != size {
			t.Fatalf("memtable of %d bytes, want %d", mem.Capacity(), size)
		}
		// Not prepared before the memtable is half full. (At the standard
		// size the spare may be a recycled arena already.)
		if size < 1<<20 && db.memPool.spareSize() == 2*size {
			t.Fatalf("a spare of %d bytes before the memtable of %d bytes is half full", 2*size, size)
		}
		for mem.Size() < mem.Capacity()/2 {
			put()
		}
		next := min(2*size, 1<<20)
		deadline := time.Now().Add(10 * time.Second)
		for db.memPool.spareSize() != next {
			if time.Now().After(deadline) {
				t.Fatalf("no spare of %d bytes prepared once the memtable of %d bytes was half full (spare: %d)", next, size, db.memPool.spareSize())
			}
			time.Sleep(time.Millisecond)
		}
		db.memPool.mu.Lock()
		spare := db.memPool.spare
		db.memPool.mu.Unlock()
		for current() == mem {
			put()
		}
		if got := current(); got != spare {
			t.Fatalf("the rotation after the memtable of %d bytes allocated a new arena instead of taking the prepared one", size)
		}
	}
}
