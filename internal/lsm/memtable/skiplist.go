// Package memtable implements the in-memory write buffer of the LSM engine:
// a skiplist whose nodes, keys and values all live in one fixed-size arena,
// so that inserting a key costs no heap allocation and the whole table is
// freed at once when it has been flushed. A hash index of each user key's
// newest node (index.go) serves point reads without the skiplist descent.
//
// Concurrency: one writer at a time (the engine's commit pipeline serializes
// inserts) and any number of concurrent readers and iterators without locks.
// Links are published with atomic stores after the node is fully written, so
// a reader either sees a node completely or not at all.
//
// The package must never modify a node after publishing it, and never reuse
// arena memory while the table is reachable: keys and values handed to
// readers alias the arena.
//
// # Node layout (in the arena, 8-byte aligned)
//
//	+-------------+-------------+---------------+----------+------------+-----------------+-----+-------+
//	| trailer (8) | keySize (4) | valueSize (4) | prev (4) | height (4) | next[height] ×4 | key | value |
//	+-------------+-------------+---------------+----------+------------+-----------------+-----+-------+
//
// Offsets are uint32 arena positions; 0 means "none". prev links only level
// 0, which is all reverse iteration needs with a single writer.
package memtable

import (
	"bytes"
	"errors"
	"math"
	"sync/atomic"
	"unsafe"

	"github.com/kayadb/kayadb/internal/lsm/base"
)

const (
	maxHeight = 20
	// pThreshold sets the probability that a node has one more level: 1/2.
	// Measured on random 16-byte keys in a 64 MiB table (BenchmarkAddRandom64MiB)
	// it beats 1/e and 1/4 by 8-15%: searches visit more nodes, but the
	// extra ones sit in the hot upper levels and the misses at the bottom
	// dominate. Towers average 2 links (8 bytes).
	pThreshold = uint64(1) << 63
	// nodeHeaderSize is the size of the fixed part of a node.
	nodeHeaderSize = 24
	// maxNodeHeaderSize is the header with a full tower; the arena keeps this
	// much slack after its last usable byte so that a *node view of any node
	// stays inside the allocation (checkptr requires it).
	maxNodeHeaderSize = nodeHeaderSize + 4*maxHeight
	align             = 8
)

// ErrFull is returned by Add when the arena has no room for the entry.
var ErrFull = errors.New("memtable: full")

// ErrExists is returned by Add when the same internal key is already present
// (sequence numbers are unique, so this is a caller bug).
var ErrExists = errors.New("memtable: internal key already present")

type node struct {
	trailer   uint64
	keySize   uint32
	valueSize uint32
	prev      atomic.Uint32
	height    uint32
	next      [maxHeight]atomic.Uint32
}

// Table is an arena skiplist of internal keys.
type Table struct {
	buf    []byte // arena; len(buf) = capacity + slack
	limit  uint32 // usable bytes
	used   atomic.Uint32
	head   uint32
	height atomic.Uint32 // current max tower height, >= 1
	count  atomic.Uint64
	rnd    uint64 // xorshift state, writer only
	ix     *pointIndex
}

// headSize is the arena space taken by the nil offset and the head node.
const headSize = align + maxNodeHeaderSize

// New returns an empty table whose arena has room for capacity bytes of
// entries (Available() == capacity). capacity is raised to MinCapacity and
// capped below 4 GiB.
func New(capacity int) *Table {
	if capacity < MinCapacity {
		capacity = MinCapacity
	}
	if capacity > math.MaxUint32-2*maxNodeHeaderSize-2*align {
		capacity = math.MaxUint32 - 2*maxNodeHeaderSize - 2*align
	}
	limit := capacity + headSize
	t := &Table{
		buf:   make([]byte, limit+maxNodeHeaderSize+align),
		limit: uint32(limit),
		rnd:   0x9E3779B97F4A7C15,
		ix:    newPointIndex(capacity),
	}
	adviseHugePages(t.buf)
	// Offset 0 is the nil node: start allocation at align.
	t.used.Store(align)
	head, _ := t.alloc(maxHeight, 0, 0)
	t.head = head
	t.node(head).height = maxHeight
	t.height.Store(1)
	return t
}

// Reset empties the table so its arena can be reused. The caller must make
// sure no reader still uses the table (or anything it returned): the arena is
// overwritten by later inserts. When poison is true the arena is first filled
// with a marker byte, so that a use after Reset reads garbage loudly (tests).
func (t *Table) Reset(poison bool) {
	if poison {
		for i := range t.buf {
			t.buf[i] = 0xdb
		}
	}
	t.used.Store(align)
	t.count.Store(0)
	t.height.Store(1)
	t.ix.reset()
	head, _ := t.alloc(maxHeight, 0, 0)
	n := t.node(head)
	n.trailer, n.keySize, n.valueSize = 0, 0, 0
	n.prev.Store(0)
	n.height = maxHeight
	for i := range n.next {
		n.next[i].Store(0)
	}
	t.head = head
}

// MinCapacity is the smallest arena New accepts.
const MinCapacity = 4 << 10

// MaxEntrySize returns the most arena bytes one entry can take.
func MaxEntrySize(keyLen, valueLen int) int {
	return maxNodeHeaderSize + keyLen + 8 + valueLen + align
}

// Size returns the number of arena bytes used by entries.
func (t *Table) Size() int { return int(t.used.Load()) - headSize }

// Capacity returns the arena bytes available for entries when empty.
func (t *Table) Capacity() int { return int(t.limit) - headSize }

// Available returns the free arena bytes.
func (t *Table) Available() int { return int(t.limit) - int(t.used.Load()) }

// Count returns the number of entries.
func (t *Table) Count() uint64 { return t.count.Load() }

// Empty reports whether the table has no entries.
func (t *Table) Empty() bool { return t.count.Load() == 0 }

func (t *Table) node(off uint32) *node {
	return (*node)(unsafe.Pointer(&t.buf[off]))
}

func (t *Table) alloc(height int, keyLen, valueLen int) (uint32, bool) {
	size := uint64(nodeHeaderSize + 4*height + keyLen + valueLen)
	size = (size + align - 1) &^ (align - 1)
	off := uint64(t.used.Load())
	if off+size > uint64(t.limit) {
		return 0, false
	}
	t.used.Store(uint32(off + size))
	return uint32(off), true
}

func (t *Table) key(n *node, off uint32) []byte {
	start := off + nodeHeaderSize + 4*n.height
	return t.buf[start : start+n.keySize : start+n.keySize]
}

func (t *Table) value(n *node, off uint32) []byte {
	start := off + nodeHeaderSize + 4*n.height + n.keySize
	return t.buf[start : start+n.valueSize : start+n.valueSize]
}

func (t *Table) randomHeight() int {
	h := 1
	for h < maxHeight {
		t.rnd ^= t.rnd << 13
		t.rnd ^= t.rnd >> 7
		t.rnd ^= t.rnd << 17
		if t.rnd >= pThreshold {
			break
		}
		h++
	}
	return h
}

// compare orders the node at off against (userKey, trailer).
func (t *Table) compare(off uint32, userKey []byte, trailer uint64) int {
	n := t.node(off)
	if c := bytes.Compare(t.key(n, off), userKey); c != 0 {
		return c
	}
	switch {
	case n.trailer > trailer:
		return -1
	case n.trailer < trailer:
		return 1
	}
	return 0
}

// Add inserts an entry. It must not be called concurrently with another Add.
func (t *Table) Add(key base.InternalKey, value []byte) error {
	var prev, next [maxHeight]uint32
	hash, first := t.ix.touch(key.UserKey)
	listHeight := int(t.height.Load())
	x := t.head
	for level := listHeight - 1; level >= 0; level-- {
		for {
			nxt := t.node(x).next[level].Load()
			if nxt == 0 || t.compare(nxt, key.UserKey, key.Trailer) >= 0 {
				next[level] = nxt
				break
			}
			x = nxt
		}
		prev[level] = x
	}
	if next[0] != 0 && t.compare(next[0], key.UserKey, key.Trailer) == 0 {
		return ErrExists
	}
	h := t.randomHeight()
	off, ok := t.alloc(h, len(key.UserKey), len(value))
	if !ok {
		return ErrFull
	}
	slot, tagged := t.ix.prepare(t, key.UserKey, key.Trailer, hash, first)
	n := t.node(off)
	n.trailer = key.Trailer
	n.keySize = uint32(len(key.UserKey))
	n.valueSize = uint32(len(value))
	n.height = uint32(h)
	copy(t.key(n, off), key.UserKey)
	copy(t.value(n, off), value)
	for level := listHeight; level < h; level++ {
		prev[level] = t.head
		next[level] = 0
	}
	for level := 0; level < h; level++ {
		n.next[level].Store(next[level])
	}
	n.prev.Store(prev[0])
	// Publish bottom-up: once level 0 links the node, readers can find it.
	for level := 0; level < h; level++ {
		t.node(prev[level]).next[level].Store(off)
	}
	if next[0] != 0 {
		t.node(next[0]).prev.Store(off)
	}
	if slot >= 0 {
		t.ix.publish(slot, tagged, off)
	}
	if h > listHeight {
		t.height.Store(uint32(h))
	}
	t.count.Add(1)
	return nil
}

// seekGE returns the first node >= (userKey, trailer), or 0.
func (t *Table) seekGE(userKey []byte, trailer uint64) uint32 {
	x := t.head
	for level := int(t.height.Load()) - 1; level >= 0; level-- {
		for {
			nxt := t.node(x).next[level].Load()
			if nxt == 0 || t.compare(nxt, userKey, trailer) >= 0 {
				if level == 0 {
					return nxt
				}
				break
			}
			x = nxt
		}
	}
	return 0
}

// seekLT returns the last node < (userKey, trailer), or 0.
func (t *Table) seekLT(userKey []byte, trailer uint64) uint32 {
	x := t.head
	for level := int(t.height.Load()) - 1; level >= 0; level-- {
		for {
			nxt := t.node(x).next[level].Load()
			if nxt == 0 || t.compare(nxt, userKey, trailer) >= 0 {
				break
			}
			x = nxt
		}
	}
	if x == t.head {
		return 0
	}
	return x
}

func (t *Table) last() uint32 {
	x := t.head
	for level := int(t.height.Load()) - 1; level >= 0; level-- {
		for {
			nxt := t.node(x).next[level].Load()
			if nxt == 0 {
				break
			}
			x = nxt
		}
	}
	if x == t.head {
		return 0
	}
	return x
}

// Get returns the newest entry for userKey whose sequence number is <=
// readSeq. The value aliases the arena.
func (t *Table) Get(userKey []byte, readSeq base.SeqNum) (value []byte, kind base.Kind, found bool) {
	target := base.MakeTrailer(readSeq, base.KindMax)
	if off := t.ix.find(t, userKey); off != 0 {
		// The key's newest node; older versions follow it at level 0.
		for {
			n := t.node(off)
			if n.trailer <= target {
				return t.value(n, off), base.TrailerKind(n.trailer), true
			}
			off = n.next[0].Load()
			if off == 0 || !bytes.Equal(t.key(t.node(off), off), userKey) {
				return nil, 0, false
			}
		}
	} else if !t.ix.incomplete.Load() {
		return nil, 0, false
	}
	off := t.seekGE(userKey, target)
	if off == 0 {
		return nil, 0, false
	}
	n := t.node(off)
	if !bytes.Equal(t.key(n, off), userKey) {
		return nil, 0, false
	}
	return t.value(n, off), base.TrailerKind(n.trailer), true
}

// Iter iterates over a Table. It implements base.InternalIterator. Entries
// added after the iterator was positioned may or may not be seen.
type Iter struct {
	t   *Table
	off uint32
}

var _ base.InternalIterator = (*Iter)(nil)

// NewIter returns an unpositioned iterator.
func (t *Table) NewIter() *Iter { return &Iter{t: t} }

// SeekGE implements base.InternalIterator.
func (it *Iter) SeekGE(key []byte) bool {
	it.off = it.t.seekGE(key, base.MakeTrailer(base.SeqNumMax, base.KindMax))
	return it.off != 0
}

// SeekLT implements base.InternalIterator.
func (it *Iter) SeekLT(key []byte) bool {
	it.off = it.t.seekLT(key, base.MakeTrailer(base.SeqNumMax, base.KindMax))
	return it.off != 0
}

// First implements base.InternalIterator.
func (it *Iter) First() bool {
	it.off = it.t.node(it.t.head).next[0].Load()
	return it.off != 0
}

// Last implements base.InternalIterator.
func (it *Iter) Last() bool {
	it.off = it.t.last()
	return it.off != 0
}

// Next implements base.InternalIterator.
func (it *Iter) Next() bool {
	if it.off == 0 {
		return false
	}
	it.off = it.t.node(it.off).next[0].Load()
	return it.off != 0
}

// Prev implements base.InternalIterator.
func (it *Iter) Prev() bool {
	if it.off == 0 {
		return false
	}
	p := it.t.node(it.off).prev.Load()
	if p == it.t.head {
		p = 0
	}
	it.off = p
	return it.off != 0
}

// Key implements base.InternalIterator.
func (it *Iter) Key() base.InternalKey {
	n := it.t.node(it.off)
	return base.InternalKey{UserKey: it.t.key(n, it.off), Trailer: n.trailer}
}

// Value implements base.InternalIterator.
func (it *Iter) Value() []byte {
	return it.t.value(it.t.node(it.off), it.off)
}

// Error implements base.InternalIterator; a memtable iterator never fails.
func (it *Iter) Error() error { return nil }

// Close implements base.InternalIterator.
func (it *Iter) Close() error { it.off = 0; return nil }
