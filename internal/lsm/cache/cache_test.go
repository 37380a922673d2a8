package cache

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"unsafe"

	"github.com/kayadb/kayadb/internal/lsm/base"
)

// checkInvariants recomputes every shard's accounting from its entries and
// verifies the index, the clock ring, the free list and the per-file lists
// against each other.
func checkInvariants(t *testing.T, c *Cache) {
	t.Helper()
	var total int64
	for si := range c.shards {
		s := &c.shards[si]
		s.mu.Lock()
		if err := s.check(); err != nil {
			s.mu.Unlock()
			t.Fatalf("shard %d: %v", si, err)
		}
		total += s.size
		s.mu.Unlock()
	}
	if m := c.Metrics(); m.Size != total {
		t.Fatalf("Metrics().Size = %d, shards sum to %d", m.Size, total)
	}
}

// check verifies one shard; s.mu must be held.
func (s *shard) check() error {
	if s.size > s.capacity {
		return fmt.Errorf("size %d > capacity %d", s.size, s.capacity)
	}
	var size int64
	for k, i := range s.index {
		if i < 0 || int(i) >= len(s.entries) {
			return fmt.Errorf("index slot %d out of range", i)
		}
		e := &s.entries[i]
		if e.key != k {
			return fmt.Errorf("slot %d holds key %v, index says %v", i, e.key, k)
		}
		if e.block == nil {
			return fmt.Errorf("live slot %d has nil block", i)
		}
		size += charge(e.block)
	}
	if size != s.size {
		return fmt.Errorf("recomputed size %d != reported size %d", size, s.size)
	}

	// Clock ring: a cycle through exactly the live entries.
	n := 0
	if s.hand == nilIdx {
		if len(s.index) != 0 {
			return fmt.Errorf("no hand but %d entries", len(s.index))
		}
	} else {
		i := s.hand
		for {
			e := &s.entries[i]
			if j, ok := s.index[e.key]; !ok || j != i {
				return fmt.Errorf("ring slot %d not live", i)
			}
			if s.entries[e.clockNext].clockPrev != i {
				return fmt.Errorf("ring link broken at %d", i)
			}
			n++
			if n > len(s.index) {
				return fmt.Errorf("ring longer than index (%d)", len(s.index))
			}
			i = e.clockNext
			if i == s.hand {
				break
			}
		}
		if n != len(s.index) {
			return fmt.Errorf("ring has %d entries, index %d", n, len(s.index))
		}
	}

	// Free list covers the remaining slots.
	free := 0
	for i := s.free; i != nilIdx; i = s.entries[i].clockNext {
		if s.entries[i].block != nil {
			return fmt.Errorf("free slot %d holds a block", i)
		}
		free++
		if free > len(s.entries) {
			return fmt.Errorf("free list cycles")
		}
	}
	if free+len(s.index) != len(s.entries) {
		return fmt.Errorf("free %d + live %d != slots %d", free, len(s.index), len(s.entries))
	}

	// Per-file lists partition the live entries by file.
	inFiles := 0
	for fk, head := range s.files {
		if s.entries[head].filePrev != nilIdx {
			return fmt.Errorf("file %v: head %d has a predecessor", fk, head)
		}
		prev := nilIdx
		for i := head; i != nilIdx; i = s.entries[i].fileNext {
			e := &s.entries[i]
			if j, ok := s.index[e.key]; !ok || j != i {
				return fmt.Errorf("file %v: slot %d not live", fk, i)
			}
			if e.key.file() != fk {
				return fmt.Errorf("file %v: slot %d belongs to %v", fk, i, e.key.file())
			}
			if e.filePrev != prev {
				return fmt.Errorf("file %v: back link broken at %d", fk, i)
			}
			prev = i
			inFiles++
			if inFiles > len(s.index) {
				return fmt.Errorf("file lists longer than index")
			}
		}
	}
	if inFiles != len(s.index) {
		return fmt.Errorf("file lists hold %d entries, index %d", inFiles, len(s.index))
	}
	return nil
}

// peek reports whether a key is cached without touching its reference bit
// or the counters.
func peek(c *Cache, id uint64, fn base.FileNum, off uint64) bool {
	k := key{id: id, fileNum: fn, offset: off}
	s := c.shardFor(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.index[k]
	return ok
}

func sameBlock(a, b []byte) bool {
	return len(a) == len(b) && cap(a) == cap(b) && unsafe.SliceData(a) == unsafe.SliceData(b)
}

func TestGetAfterSet(t *testing.T) {
	c := New(1 << 20)
	id := c.NewID()
	b := []byte("hello block")
	c.Set(id, 1, 0, b)
	if got := c.Get(id, 1, 0); !sameBlock(got, b) {
		t.Fatalf("Get = %q, want the block that was Set", got)
	}
	if got := c.Get(id, 1, 4096); got != nil {
		t.Fatalf("Get of other offset = %q, want nil", got)
	}
	if got := c.Get(id, 2, 0); got != nil {
		t.Fatalf("Get of other file = %q, want nil", got)
	}
	if got := c.Get(c.NewID(), 1, 0); got != nil {
		t.Fatalf("Get of other id = %q, want nil", got)
	}
	m := c.Metrics()
	if m.Count != 1 || m.Size != int64(len(b))+EntryOverhead || m.Capacity != 1<<20 {
		t.Fatalf("Metrics = %+v", m)
	}
	checkInvariants(t, c)
}

func TestMissCounting(t *testing.T) {
	c := New(1 << 20)
	id := c.NewID()
	for i := range 5 {
		c.Get(id, 1, uint64(i))
	}
	c.Set(id, 1, 0, make([]byte, 10))
	for range 3 {
		c.Get(id, 1, 0)
	}
	m := c.Metrics()
	if m.Hits != 3 || m.Misses != 5 {
		t.Fatalf("hits=%d misses=%d, want 3 and 5", m.Hits, m.Misses)
	}
}

func TestCapacityRespected(t *testing.T) {
	for _, shards := range []int{1, 4, 16} {
		t.Run(fmt.Sprint(shards), func(t *testing.T) {
			const capacity = 256 << 10
			c := newCache(capacity, shards)
			id := c.NewID()
			rng := rand.New(rand.NewPCG(1, uint64(shards)))
			for i := range 20000 {
				n := rng.IntN(8 << 10)
				c.Set(id, base.FileNum(rng.IntN(20)), uint64(rng.IntN(500)), make([]byte, n))
				if m := c.Metrics(); m.Size > capacity {
					t.Fatalf("after %d sets: size %d > capacity %d", i, m.Size, capacity)
				}
				if i%1000 == 0 {
					checkInvariants(t, c)
				}
			}
			checkInvariants(t, c)
			if m := c.Metrics(); m.Size < capacity/2 {
				t.Fatalf("cache underfilled: %+v", m)
			}
		})
	}
}

func TestClockEvictionOrder(t *testing.T) {
	const blk = 100
	c := newCache(3*(blk+EntryOverhead), 1)
	id := c.NewID()
	set := func(off uint64) { c.Set(id, 1, off, make([]byte, blk)) }
	want := func(present ...uint64) {
		t.Helper()
		in := map[uint64]bool{}
		for _, o := range present {
			in[o] = true
		}
		for o := uint64(1); o <= 6; o++ {
			if got := peek(c, id, 1, o); got != in[o] {
				t.Fatalf("offset %d cached=%v, want %v (want set %v)", o, got, in[o], present)
			}
		}
		checkInvariants(t, c)
	}
	set(1)
	set(2)
	set(3)
	want(1, 2, 3)
	c.Get(id, 1, 1) // 1 gets a second chance
	set(4)          // evicts 2, the oldest unreferenced block
	want(1, 3, 4)
	set(5) // evicts 3
	want(1, 4, 5)
	set(6) // 1's bit was cleared when the hand passed it: evicts 1
	want(4, 5, 6)
	c.Get(id, 1, 4)
	c.Get(id, 1, 5)
	c.Get(id, 1, 6)
	set(1) // all referenced: a full sweep clears them, then 4 goes
	want(5, 6, 1)
}

func TestReplaceUpdatesSize(t *testing.T) {
	c := newCache(1<<20, 1)
	id := c.NewID()
	c.Set(id, 7, 0, make([]byte, 1000))
	c.Set(id, 7, 100, make([]byte, 50))
	b := make([]byte, 300)
	c.Set(id, 7, 0, b)
	m := c.Metrics()
	if want := int64(300+50) + 2*EntryOverhead; m.Size != want || m.Count != 2 {
		t.Fatalf("after replace: %+v, want size %d count 2", m, want)
	}
	if got := c.Get(id, 7, 0); !sameBlock(got, b) {
		t.Fatalf("Get after replace did not return the new block")
	}
	checkInvariants(t, c)

	// Replacing with a larger block that forces evictions of others.
	c2 := newCache(3*(100+EntryOverhead), 1)
	c2.Set(id, 1, 1, make([]byte, 100))
	c2.Set(id, 1, 2, make([]byte, 100))
	c2.Set(id, 1, 3, make([]byte, 100))
	big := make([]byte, 250)
	c2.Set(id, 1, 2, big)
	if got := c2.Get(id, 1, 2); !sameBlock(got, big) {
		t.Fatalf("replaced block missing")
	}
	checkInvariants(t, c2)
	if m := c2.Metrics(); m.Size > m.Capacity || m.Count != 2 {
		t.Fatalf("after growing replace: %+v", m)
	}
}

func TestEvictFile(t *testing.T) {
	c := newCache(64<<20, 8)
	a, b := c.NewID(), c.NewID()
	const perFile = 200
	for _, id := range []uint64{a, b} {
		for fn := base.FileNum(1); fn <= 3; fn++ {
			for off := range uint64(perFile) {
				c.Set(id, fn, off*4096, make([]byte, 64))
			}
		}
	}
	before := c.Metrics()
	c.EvictFile(a, 2)
	checkInvariants(t, c)
	after := c.Metrics()
	if before.Count-after.Count != perFile {
		t.Fatalf("EvictFile dropped %d entries, want %d", before.Count-after.Count, perFile)
	}
	if before.Size-after.Size != perFile*(64+EntryOverhead) {
		t.Fatalf("EvictFile freed %d bytes, want %d", before.Size-after.Size, perFile*(64+EntryOverhead))
	}
	for _, id := range []uint64{a, b} {
		for fn := base.FileNum(1); fn <= 3; fn++ {
			for off := range uint64(perFile) {
				got := peek(c, id, fn, off*4096)
				if want := !(id == a && fn == 2); got != want {
					t.Fatalf("id %d file %d off %d: cached=%v want %v", id, fn, off, got, want)
				}
			}
		}
	}
	c.EvictFile(a, 2)  // again: no-op
	c.EvictFile(a, 99) // unknown file: no-op
	if m := c.Metrics(); m.Count != after.Count {
		t.Fatalf("repeated EvictFile changed count")
	}
	// The file's blocks can be cached again.
	c.Set(a, 2, 0, make([]byte, 1))
	if c.Get(a, 2, 0) == nil {
		t.Fatalf("re-Set after EvictFile missing")
	}
	checkInvariants(t, c)
}

func TestDisabled(t *testing.T) {
	for _, c := range []*Cache{New(0), New(-5), nil} {
		id := c.NewID()
		c.Set(id, 1, 0, []byte("x"))
		if got := c.Get(id, 1, 0); got != nil {
			t.Fatalf("disabled cache returned %q", got)
		}
		c.EvictFile(id, 1)
		m := c.Metrics()
		if m.Size != 0 || m.Count != 0 || m.Capacity != 0 || m.Hits != 0 {
			t.Fatalf("disabled cache metrics %+v", m)
		}
		if c != nil && m.Misses != 1 {
			t.Fatalf("disabled cache misses = %d, want 1", m.Misses)
		}
	}
}

func TestOversizedRejected(t *testing.T) {
	c := newCache(4096, 4) // 1024 bytes per shard
	id := c.NewID()
	small := make([]byte, 1024-EntryOverhead)
	c.Set(id, 1, 0, small)
	if c.Get(id, 1, 0) == nil {
		t.Fatalf("block of exactly shard capacity was not cached")
	}
	c.Set(id, 1, 8, make([]byte, 1024-EntryOverhead+1))
	if c.Get(id, 1, 8) != nil {
		t.Fatalf("block larger than shard capacity was cached")
	}
	// Replacing a cached block with an oversized one drops the old block
	// rather than leaving a stale one.
	c.Set(id, 1, 0, make([]byte, 5000))
	if c.Get(id, 1, 0) != nil {
		t.Fatalf("stale block survived an oversized replace")
	}
	// A nil block is never cached.
	c.Set(id, 1, 16, nil)
	if m := c.Metrics(); m.Count != 0 || m.Size != 0 {
		t.Fatalf("metrics after rejections: %+v", m)
	}
	checkInvariants(t, c)
}

func TestShardCount(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	if n := len(New(1 << 40).shards); n < 4*procs || n&(n-1) != 0 {
		t.Fatalf("large cache has %d shards, want a power of two >= %d", n, 4*procs)
	}
	if n := len(New(100).shards); n != 1 {
		t.Fatalf("tiny cache has %d shards, want 1", n)
	}
	c := New(3<<20 + 7)
	var sum int64
	for i := range c.shards {
		sum += c.shards[i].capacity
	}
	if sum != 3<<20+7 {
		t.Fatalf("shard capacities sum to %d", sum)
	}
}

func TestNewIDUnique(t *testing.T) {
	c1, c2 := New(1<<20), New(0)
	seen := map[uint64]bool{}
	for range 100 {
		for _, id := range []uint64{c1.NewID(), c2.NewID()} {
			if id == 0 || seen[id] {
				t.Fatalf("duplicate or zero id %d", id)
			}
			seen[id] = true
		}
	}
}

func TestConcurrent(t *testing.T) {
	c := newCache(512<<10, 8)
	ids := []uint64{c.NewID(), c.NewID(), c.NewID()}
	var wg sync.WaitGroup
	workers := 4 * runtime.GOMAXPROCS(0)
	if workers < 8 {
		workers = 8
	}
	iters := 20000
	if testing.Short() {
		iters = 2000
	}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for range iters {
				id := ids[rng.IntN(len(ids))]
				fn := base.FileNum(rng.IntN(16))
				off := uint64(rng.IntN(64))
				switch r := rng.IntN(100); {
				case r < 60:
					if b := c.Get(id, fn, off); b != nil {
						// Blocks carry their own key; a foreign block is a bug.
						if b[0] != byte(id) || b[1] != byte(fn) || b[2] != byte(off) {
							t.Errorf("Get(%d,%d,%d) returned block of (%d,%d,%d)", id, fn, off, b[0], b[1], b[2])
							return
						}
					}
				case r < 98:
					b := make([]byte, 3+rng.IntN(4096))
					b[0], b[1], b[2] = byte(id), byte(fn), byte(off)
					c.Set(id, fn, off, b)
				default:
					c.EvictFile(id, fn)
				}
			}
		}()
	}
	// Metrics concurrently with the workers.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 100 {
			if m := c.Metrics(); m.Size > m.Capacity {
				t.Errorf("size %d > capacity %d", m.Size, m.Capacity)
			}
			runtime.Gosched()
		}
	}()
	wg.Wait()
	<-done
	checkInvariants(t, c)
	m := c.Metrics()
	if m.Hits+m.Misses == 0 || m.Count == 0 {
		t.Fatalf("suspicious metrics after concurrent run: %+v", m)
	}
}

// TestRandomizedModel drives the cache with random operations and checks
// every Get against a model of the last block Set under each key: the cache
// may forget a block (eviction) but must never return a stale or foreign one.
func TestRandomizedModel(t *testing.T) {
	for seed := range uint64(5) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			shards := 1 << rng.IntN(4)
			c := newCache(int64(shards)*(16<<10), shards)
			ids := []uint64{c.NewID(), c.NewID()}
			model := map[key][]byte{}
			var hits, misses int64
			ops := 50000
			if testing.Short() {
				ops = 5000
			}
			for op := range ops {
				k := key{
					id:      ids[rng.IntN(len(ids))],
					fileNum: base.FileNum(rng.IntN(8)),
					offset:  uint64(rng.IntN(32)),
				}
				switch r := rng.IntN(100); {
				case r < 50:
					got := c.Get(k.id, k.fileNum, k.offset)
					if got == nil {
						misses++
						break
					}
					hits++
					want, ok := model[k]
					if !ok || !sameBlock(got, want) {
						t.Fatalf("op %d: Get(%v) returned a block that is not the last one Set", op, k)
					}
				case r < 95:
					var b []byte
					if rng.IntN(50) == 0 {
						b = make([]byte, 20<<10) // oversized: rejected
					} else {
						b = make([]byte, rng.IntN(3000))
					}
					c.Set(k.id, k.fileNum, k.offset, b)
					if charge(b) > c.shardFor(k).capacity {
						delete(model, k)
						if c.Get(k.id, k.fileNum, k.offset) != nil {
							t.Fatalf("op %d: oversized block cached", op)
						}
						misses++
					} else {
						model[k] = b
						if got := c.Get(k.id, k.fileNum, k.offset); !sameBlock(got, b) {
							t.Fatalf("op %d: block not cached right after Set", op)
						}
						hits++
					}
				default:
					c.EvictFile(k.id, k.fileNum)
					for mk := range model {
						if mk.file() == k.file() {
							delete(model, mk)
						}
					}
				}
				if op%2500 == 0 {
					checkInvariants(t, c)
				}
			}
			checkInvariants(t, c)
			// Everything still cached agrees with the model.
			for si := range c.shards {
				s := &c.shards[si]
				for k, i := range s.index {
					if want, ok := model[k]; !ok || !sameBlock(s.entries[i].block, want) {
						t.Fatalf("cached %v disagrees with model", k)
					}
				}
			}
			if m := c.Metrics(); m.Hits != hits || m.Misses != misses {
				t.Fatalf("metrics hits=%d misses=%d, counted %d and %d", m.Hits, m.Misses, hits, misses)
			}
		})
	}
}

func TestGetDoesNotAllocate(t *testing.T) {
	c := New(1 << 20)
	id := c.NewID()
	c.Set(id, 1, 0, make([]byte, 100))
	allocs := testing.AllocsPerRun(1000, func() {
		c.Get(id, 1, 0)
		c.Get(id, 1, 1)
	})
	if allocs != 0 {
		t.Fatalf("Get allocates %.1f times per call", allocs)
	}
}

const benchBlocks = 1 << 14

func benchCache(b *testing.B) (*Cache, uint64) {
	c := New(int64(benchBlocks) * (4096 + EntryOverhead) * 2)
	id := c.NewID()
	for i := range uint64(benchBlocks) {
		c.Set(id, base.FileNum(i%64), i*4096, make([]byte, 4096))
	}
	return c, id
}

func BenchmarkGetHit(b *testing.B) {
	c, id := benchCache(b)
	b.ReportAllocs()
	var i uint64
	for b.Loop() {
		j := i & (benchBlocks - 1)
		if c.Get(id, base.FileNum(j%64), j*4096) == nil {
			b.Fatal("miss")
		}
		i++
	}
}

func BenchmarkParallelGetHit(b *testing.B) {
	c, id := benchCache(b)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := rand.Uint64()
		for pb.Next() {
			j := i & (benchBlocks - 1)
			if c.Get(id, base.FileNum(j%64), j*4096) == nil {
				b.Fatal("miss")
			}
			i++
		}
	})
}

func BenchmarkSet(b *testing.B) {
	// A cache holding a quarter of the working set, so most Sets evict.
	c := New(int64(benchBlocks) * (4096 + EntryOverhead) / 4)
	id := c.NewID()
	blocks := make([][]byte, 64)
	for i := range blocks {
		blocks[i] = make([]byte, 4096)
	}
	b.ReportAllocs()
	var i uint64
	for b.Loop() {
		j := i & (benchBlocks - 1)
		c.Set(id, base.FileNum(j%64), j*4096, blocks[j%64])
		i++
	}
}

func TestEntryOverheadCoversSlot(t *testing.T) {
	// The constant must at least cover the slot itself; the rest is the
	// index map's share.
	if sz := unsafe.Sizeof(entry{}); sz >= EntryOverhead {
		t.Fatalf("entry slot is %d bytes, EntryOverhead only %d", sz, EntryOverhead)
	}
}
