// Package cache is KayaDB's block cache: a sharded, byte-budgeted,
// in-memory cache of SSTable data blocks that have already been read,
// checksum-verified and decompressed. One Cache may be shared by several DB
// instances; each DB takes an ID from NewID so that equal file numbers of
// different DBs never collide.
//
// # What it owns
//
// The cache owns its index (which key maps to which block), its size
// accounting and its eviction state. It does not own the blocks' memory:
// blocks are ordinary []byte values managed by the Go garbage collector. The
// cache only holds a reference to a block, drops that reference on eviction,
// and never reuses, recycles, pools or writes to a block's bytes. A reader
// that obtained a block from Get may therefore keep using it for as long as
// it likes, even after the block was evicted or its file was deleted; no
// reference counting is needed.
//
// # What it must never do
//
//   - Never hand out a block that may be modified later. Callers of Set hand
//     the block over for good and must never modify it afterwards; the cache
//     itself never writes to a block.
//   - Never block on I/O or call back into callers. Every operation takes at
//     most one shard mutex at a time, does bounded in-memory work under it,
//     and never allocates on the Get path.
//   - Never return a block for a key other than the one it was Set under,
//     and never return a block that was replaced by a later Set of the same
//     key, evicted with EvictFile, or rejected by Set.
//
// # Design
//
// Keys are (cache ID, file number, offset). A key's hash picks one of a
// power-of-two number of shards; each shard has its own mutex and an equal
// share of the byte budget, and evicts independently. Within a shard, entries
// live in one slice and link to each other by int32 indices, and the index is
// a map from a pointer-free key struct to an int32 slot number. The block
// slice is the only pointer per entry, so a large cache costs the garbage
// collector little.
//
// Eviction is CLOCK (second chance): a Get hit only sets a reference bit,
// which is cheaper than moving an entry to the front of an LRU list. New
// entries are inserted just behind the clock hand with the bit clear, so a
// block read once is evicted before blocks that were read again.
//
// Each shard also keeps a per-file index (a doubly linked list of the file's
// entries, with its head in a map keyed by (cache ID, file number)), so
// EvictFile costs time proportional to the number of shards plus the number
// of the file's cached blocks, not to the cache size.
package cache

import (
	"math"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/kayadb/kayadb/internal/lsm/base"
)

// EntryOverhead is the fixed number of bytes charged per cached block on top
// of len(block). It approximates the cache's own bookkeeping for one entry:
// its slot in the shard's entry slice (72 bytes) plus its share of the index
// map (key, slot number, control byte and load-factor slack; roughly 40-56
// bytes).
const EntryOverhead = 128

// minShardCapacity is the smallest byte budget New gives a shard when it can
// choose: small caches get fewer shards rather than shards too small to hold
// large blocks or to evict sensibly.
const minShardCapacity = 1 << 20

// maxShardCapacity bounds a shard's budget so that its entry count always
// fits the int32 slot numbers.
const maxShardCapacity = int64(math.MaxInt32-1) * EntryOverhead

// Metrics is a snapshot of a cache's state and counters.
type Metrics struct {
	// Capacity is the byte budget the cache was created with.
	Capacity int64
	// Size is the number of bytes charged: the sum over cached blocks of
	// len(block) + EntryOverhead.
	Size int64
	// Count is the number of cached blocks.
	Count int64
	// Hits and Misses count Get calls that found, or did not find, a block.
	Hits, Misses int64
}

// nextID hands out process-unique cache IDs.
var nextID atomic.Uint64

// Cache is a sharded block cache with a byte budget. It is safe for
// concurrent use. A nil *Cache behaves like a cache of capacity 0.
type Cache struct {
	capacity int64
	shift    uint // 64 - log2(len(shards))
	shards   []shard
}

// New returns a cache that holds at most capacityBytes of block data,
// counting len(block) + EntryOverhead per block. A capacity of 0 (or less)
// disables caching: Get always misses and Set is a no-op.
//
// The cache has 4×GOMAXPROCS shards rounded up to a power of two, but fewer
// when that would leave a shard with less than 1 MiB.
func New(capacityBytes int64) *Cache {
	n := 4 * runtime.GOMAXPROCS(0)
	if n < 1 {
		n = 1
	}
	n = 1 << bits.Len(uint(n-1)) // round up to a power of two
	for n > 1 && capacityBytes/int64(n) < minShardCapacity {
		n /= 2
	}
	for n < 1<<20 && capacityBytes/int64(n) > maxShardCapacity {
		n *= 2
	}
	return newCache(capacityBytes, n)
}

// newCache builds a cache with exactly nShards shards, which must be a power
// of two. Tests use it to get deterministic single-shard behavior.
func newCache(capacityBytes int64, nShards int) *Cache {
	if nShards < 1 || nShards&(nShards-1) != 0 {
		panic("cache: shard count must be a power of two")
	}
	if capacityBytes < 0 {
		capacityBytes = 0
	}
	c := &Cache{
		capacity: capacityBytes,
		shift:    uint(64 - bits.TrailingZeros(uint(nShards))),
		shards:   make([]shard, nShards),
	}
	per := capacityBytes / int64(nShards)
	rem := capacityBytes % int64(nShards)
	for i := range c.shards {
		cp := per
		if int64(i) < rem {
			cp++
		}
		c.shards[i].init(cp)
	}
	return c
}

// NewID returns a process-unique, non-zero ID. Each DB sharing a cache takes
// one and passes it to Get, Set and EvictFile.
func (c *Cache) NewID() uint64 { return nextID.Add(1) }

// Get returns the block cached under (id, fileNum, offset), or nil. The
// returned block must not be modified. Get does not allocate.
func (c *Cache) Get(id uint64, fileNum base.FileNum, offset uint64) []byte {
	if c == nil {
		return nil
	}
	k := key{id: id, fileNum: fileNum, offset: offset}
	return c.shardFor(k).get(k)
}

// Set inserts or replaces the block cached under (id, fileNum, offset),
// evicting other blocks of the same shard as needed. The cache keeps a
// reference to block: the caller must never modify it afterwards. A nil
// block, or one whose charge exceeds the shard's capacity, is not cached;
// any block previously cached under the key is dropped.
func (c *Cache) Set(id uint64, fileNum base.FileNum, offset uint64, block []byte) {
	if c == nil {
		return
	}
	k := key{id: id, fileNum: fileNum, offset: offset}
	c.shardFor(k).set(k, block)
}

// EvictFile drops every cached block of file fileNum of the DB with the given
// ID. Its cost is proportional to the number of shards plus the number of
// the file's cached blocks.
func (c *Cache) EvictFile(id uint64, fileNum base.FileNum) {
	if c == nil {
		return
	}
	fk := fileKey{id: id, fileNum: fileNum}
	for i := range c.shards {
		c.shards[i].evictFile(fk)
	}
}

// Metrics returns a snapshot of the cache's size and counters. Shards are
// read one at a time, so under concurrent use the snapshot is not atomic
// across shards.
func (c *Cache) Metrics() Metrics {
	if c == nil {
		return Metrics{}
	}
	m := Metrics{Capacity: c.capacity}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		m.Size += s.size
		m.Count += int64(len(s.index))
		m.Hits += s.hits
		m.Misses += s.misses
		s.mu.Unlock()
	}
	return m
}

func (c *Cache) shardFor(k key) *shard {
	return &c.shards[k.hash()>>c.shift]
}

// key identifies a block. It holds no pointers, so the index maps it lives
// in are not scanned by the garbage collector.
type key struct {
	id      uint64
	fileNum base.FileNum
	offset  uint64
}

// fileKey identifies a file of one DB.
type fileKey struct {
	id      uint64
	fileNum base.FileNum
}

func (k key) file() fileKey { return fileKey{id: k.id, fileNum: k.fileNum} }

// hash mixes all key fields; the top bits choose the shard.
func (k key) hash() uint64 {
	h := k.offset*0x9e3779b97f4a7c15 ^ uint64(k.fileNum)
	h = bits.RotateLeft64(h, 31)*0xc2b2ae3d27d4eb4f ^ k.id
	// MurmurHash3 64-bit finalizer.
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// nilIdx terminates int32 lists.
const nilIdx int32 = -1

// entry is one slot of a shard's entry slice. A live entry is on the clock
// ring (clockPrev/clockNext, circular) and on its file's list
// (filePrev/fileNext, nilIdx-terminated). A free slot has a nil block and is
// on the shard's free list through clockNext.
type entry struct {
	block      []byte
	key        key
	clockPrev  int32
	clockNext  int32
	filePrev   int32
	fileNext   int32
	referenced bool
}

func charge(block []byte) int64 { return int64(len(block)) + EntryOverhead }

// shard is an independently locked, independently evicting part of a cache.
type shard struct {
	mu       sync.Mutex
	capacity int64
	size     int64
	hits     int64
	misses   int64
	index    map[key]int32     // key -> slot in entries
	files    map[fileKey]int32 // file -> slot of the head of its list
	entries  []entry
	free     int32 // head of the free-slot list
	hand     int32 // clock hand; nilIdx when the shard is empty

	_ [64]byte // keep neighboring shards' hot fields off shared cache lines
}

func (s *shard) init(capacity int64) {
	s.capacity = capacity
	s.free = nilIdx
	s.hand = nilIdx
	if capacity > 0 {
		s.index = make(map[key]int32)
		s.files = make(map[fileKey]int32)
	}
}

func (s *shard) get(k key) []byte {
	s.mu.Lock()
	i, ok := s.index[k]
	if !ok {
		s.misses++
		s.mu.Unlock()
		return nil
	}
	e := &s.entries[i]
	e.referenced = true
	b := e.block
	s.hits++
	s.mu.Unlock()
	return b
}

func (s *shard) set(k key, block []byte) {
	need := charge(block)
	s.mu.Lock()
	defer s.mu.Unlock()
	referenced := false
	if i, exists := s.index[k]; exists {
		// Replace: drop the old block first, so that a rejected replacement
		// does not leave it behind and an accepted one cannot be evicted
		// to make room for itself. The new block is inserted as a fresh
		// entry that inherits the old one's reference bit.
		referenced = s.entries[i].referenced
		s.remove(i)
	}
	if block == nil || need > s.capacity {
		return
	}
	for s.size+need > s.capacity {
		s.evictOne()
	}
	i := s.alloc()
	e := &s.entries[i]
	e.block = block
	e.key = k
	e.referenced = referenced
	s.size += need
	s.index[k] = i

	// Insert just behind the hand, so that it is examined last.
	if s.hand == nilIdx {
		e.clockPrev, e.clockNext = i, i
		s.hand = i
	} else {
		h := s.hand
		p := s.entries[h].clockPrev
		e.clockPrev, e.clockNext = p, h
		s.entries[p].clockNext = i
		s.entries[h].clockPrev = i
	}

	// Push onto the front of the file's list.
	fk := k.file()
	e.filePrev = nilIdx
	if head, ok := s.files[fk]; ok {
		e.fileNext = head
		s.entries[head].filePrev = i
	} else {
		e.fileNext = nilIdx
	}
	s.files[fk] = i
}

// evictOne advances the clock hand, clearing reference bits, until it finds
// an unreferenced entry, and removes it. The shard must not be empty.
func (s *shard) evictOne() {
	for {
		h := s.hand
		e := &s.entries[h]
		if !e.referenced {
			s.remove(h)
			return
		}
		e.referenced = false
		s.hand = e.clockNext
	}
}

// alloc returns a free slot, growing the entry slice if none is free.
func (s *shard) alloc() int32 {
	if i := s.free; i != nilIdx {
		s.free = s.entries[i].clockNext
		return i
	}
	s.entries = append(s.entries, entry{})
	return int32(len(s.entries) - 1)
}

// remove unlinks live entry i from the index, the clock ring and its file
// list, and puts its slot on the free list.
func (s *shard) remove(i int32) { s.removeEntry(i, true) }

// removeEntry is remove; with unlinkFile false it leaves the file list alone
// (EvictFile drops a whole list at once).
func (s *shard) removeEntry(i int32, unlinkFile bool) {
	e := &s.entries[i]
	s.size -= charge(e.block)
	delete(s.index, e.key)

	// Clock ring.
	if e.clockNext == i {
		s.hand = nilIdx
	} else {
		if s.hand == i {
			s.hand = e.clockNext
		}
		s.entries[e.clockPrev].clockNext = e.clockNext
		s.entries[e.clockNext].clockPrev = e.clockPrev
	}

	// File list.
	if unlinkFile {
		if e.fileNext != nilIdx {
			s.entries[e.fileNext].filePrev = e.filePrev
		}
		switch {
		case e.filePrev != nilIdx:
			s.entries[e.filePrev].fileNext = e.fileNext
		case e.fileNext != nilIdx:
			s.files[e.key.file()] = e.fileNext
		default:
			delete(s.files, e.key.file())
		}
	}

	// Free the slot; dropping the block lets the GC reclaim it once no
	// reader holds it.
	*e = entry{clockNext: s.free, clockPrev: nilIdx, filePrev: nilIdx, fileNext: nilIdx}
	s.free = i
}

func (s *shard) evictFile(fk fileKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	head, ok := s.files[fk]
	if !ok {
		return
	}
	delete(s.files, fk)
	for i := head; i != nilIdx; {
		next := s.entries[i].fileNext
		s.removeEntry(i, false)
		i = next
	}
}
