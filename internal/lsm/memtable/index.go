package memtable

import (
	"bytes"
	"hash/maphash"
	"math"
	"sync/atomic"
	"unsafe"
)

// The point index.
//
// A point lookup in the skiplist descends through every level: about two
// nodes per level, each a cache miss, some 35 misses in a full 64 MiB
// table of 300-byte entries (1.9 µs on the development VM, the largest
// single cost of a get served from memory). The index maps each user key
// to its newest node, so that Get costs a hash, a slot and the node, as a
// hash table's lookup does; the skiplist stays the order that iterators
// and flushes read.
//
// Layout: an open-addressing table of 64-bit slots, linear probing, a
// power of two in size. A slot is 0 (empty) or tag<<32 | offset, where the
// tag is the high half of the key's hash (a probe compares a node's key
// only when the tags match) and offset the key's newest node (never 0:
// offset 0 is the nil node).
//
// Concurrency, with the one writer and lock-free readers of the skiplist:
//
//   - A slot goes from empty to a key, and from one node of that key to a
//     newer one; it never empties and never changes key, so a reader's
//     probe that reaches an empty slot has passed every slot its key could
//     be in.
//   - The writer sets a slot after the node is linked at level 0. A node
//     the slot names is therefore reachable in the skiplist, and its older
//     versions follow it at level 0 (equal user keys sort newest first).
//     A reader that wants an older sequence number walks level 0 from the
//     slot's node; one that reads a slot just before the writer moves it to
//     a newer node finds the older one, which is what it would have found
//     in the skiplist too: the engine publishes a sequence number as
//     visible only after its inserts have returned.
//   - The index holds a key only while it has room (a load of one half).
//     Beyond that, a new key is not indexed and the index is marked
//     incomplete before the node is published: a reader that finds no slot
//     for its key then searches the skiplist, where as long as the index
//     is complete no slot means no entry in this table.
//
// Size: one slot per 64 arena bytes (8 MiB for a 64 MiB table, an eighth
// of the arena), so entries of 128 bytes and more on average (a node's
// header, key and value) never fill it.

// indexBytesPerSlot is the arena bytes per index slot.
const indexBytesPerSlot = 64

type pointIndex struct {
	slots []uint64 // accessed atomically
	mask  uint64
	seed  maphash.Seed
	// used counts the occupied slots (writer only); at half the slots the
	// index takes no new key.
	used int
	// incomplete is set once a key was left out: a miss is then no
	// answer.
	incomplete atomic.Bool
}

func newPointIndex(capacity int) *pointIndex {
	n := 64
	for n < capacity/indexBytesPerSlot {
		n <<= 1
	}
	ix := &pointIndex{slots: make([]uint64, n), mask: uint64(n - 1), seed: maphash.MakeSeed()}
	adviseHugePages(unsafe.Slice((*byte)(unsafe.Pointer(&ix.slots[0])), 8*n))
	return ix
}

// reset empties the index (the table is being reused; no reader is left).
func (ix *pointIndex) reset() {
	clear(ix.slots)
	ix.used = 0
	ix.incomplete.Store(false)
}

// probe looks for key, whose hash is h, from its first slot, whose
// content is first: it returns the slot that holds key with its content,
// or the empty slot where the probe ended with content 0.
func (ix *pointIndex) probe(t *Table, key []byte, h, first uint64) (slot, content uint64) {
	tag := h >> 32
	s := first
	for i := h; ; i++ {
		slot = i & ix.mask
		if i != h {
			s = atomic.LoadUint64(&ix.slots[slot])
		}
		if s == 0 {
			return slot, 0
		}
		if s>>32 == tag {
			if off := uint32(s); bytes.Equal(t.key(t.node(off), off), key) {
				return slot, s
			}
		}
	}
}

// find returns the offset of key's newest node, or 0 when the index holds
// no slot for it.
func (ix *pointIndex) find(t *Table, key []byte) uint32 {
	h := maphash.Bytes(ix.seed, key)
	_, s := ix.probe(t, key, h, atomic.LoadUint64(&ix.slots[h&ix.mask]))
	return uint32(s)
}

// prepare is called by the writer before it links a node of key whose
// trailer is trailer; h and first are touch's results for key. It returns
// the slot to point at the node once it is linked (publish) and the tag
// to store with it, or slot -1 when the slot stays as it is: it names a
// newer version of key already (an older one inserted late), or the index
// is full and key is left out, in which case the index is now marked
// incomplete.
func (ix *pointIndex) prepare(t *Table, key []byte, trailer, h, first uint64) (slot int, tagged uint64) {
	j, s := ix.probe(t, key, h, first)
	if s != 0 {
		if t.node(uint32(s)).trailer > trailer {
			return -1, 0
		}
		return int(j), h &^ math.MaxUint32
	}
	if 2*(ix.used+1) > len(ix.slots) {
		ix.incomplete.Store(true)
		return -1, 0
	}
	ix.used++
	return int(j), h &^ math.MaxUint32
}

// touch hashes key for prepare and loads its first slot, so that the
// slot's cache line is on its way while the writer descends the skiplist.
func (ix *pointIndex) touch(key []byte) (h uint64, first uint64) {
	h = maphash.Bytes(ix.seed, key)
	return h, ix.slots[h&ix.mask]
}

// publish points slot at the node at off.
func (ix *pointIndex) publish(slot int, tagged uint64, off uint32) {
	atomic.StoreUint64(&ix.slots[slot], tagged|uint64(off))
}
