package sstable

import (
	"bytes"
	"encoding/binary"
	"math"

	"github.com/kayadb/kayadb/internal/lsm/base"
)

// blockWriter builds one row block (see the package documentation).
type blockWriter struct {
	restartInterval int
	buf             []byte
	restarts        []uint32
	counter         int // entries since the last restart point
	nEntries        int
	lastKey         []byte
}

func (w *blockWriter) reset() {
	w.buf = w.buf[:0]
	w.restarts = w.restarts[:0]
	w.counter = 0
	w.nEntries = 0
	w.lastKey = w.lastKey[:0]
}

// add appends an entry. Keys must be added in increasing order; the caller
// checks that.
func (w *blockWriter) add(key, value []byte) {
	shared := 0
	if w.counter < w.restartInterval && w.nEntries > 0 {
		n := min(len(key), len(w.lastKey))
		for shared < n && key[shared] == w.lastKey[shared] {
			shared++
		}
	} else {
		w.restarts = append(w.restarts, uint32(len(w.buf)))
		w.counter = 0
	}
	w.buf = binary.AppendUvarint(w.buf, uint64(shared))
	w.buf = binary.AppendUvarint(w.buf, uint64(len(key)-shared))
	w.buf = binary.AppendUvarint(w.buf, uint64(len(value)))
	w.buf = append(w.buf, key[shared:]...)
	w.buf = append(w.buf, value...)
	w.lastKey = append(w.lastKey[:shared], key[shared:]...)
	w.counter++
	w.nEntries++
}

// estimatedSize is the size of the block if it were finished now.
func (w *blockWriter) estimatedSize() int {
	return len(w.buf) + 4*len(w.restarts) + 4
}

// finish appends the restart array and returns the block. The returned
// slice is valid until the next reset.
func (w *blockWriter) finish() []byte {
	if len(w.restarts) == 0 {
		w.restarts = append(w.restarts, 0)
	}
	for _, r := range w.restarts {
		w.buf = binary.LittleEndian.AppendUint32(w.buf, r)
	}
	w.buf = binary.LittleEndian.AppendUint32(w.buf, uint32(len(w.restarts)))
	return w.buf
}

// cacheEntry records one decoded entry of blockIter's reverse-iteration
// cache: the key lives in blockIter.cacheBuf, the value in the block.
type cacheEntry struct {
	offset, nextOffset int32
	keyStart, keyEnd   int32
	valStart           int32
}

// blockIter iterates over one row block. It validates everything it reads:
// no block content can make it panic or loop; problems are reported through
// err as base.CorruptionErrors naming file and blockOff.
//
// Keys are materialized into one of two alternating key buffers when they
// share a prefix with the previous key, or aliased into the block when they
// do not. Reverse iteration decodes a whole restart interval into cache at
// once, so repeated Prev calls cost O(1) each.
type blockIter struct {
	data        []byte
	restartsOff int // end of the entries, start of the restart array
	numRestarts int
	internal    bool // keys are encoded internal keys

	file     string
	blockOff int64

	// Current entry. When valid is false, key may still hold the previous
	// key for decoding (hasPrev tells).
	offset, nextOffset int
	key, val           []byte
	valid              bool
	hasPrev            bool

	keyBufs [2][]byte
	kb      int // index of the key buffer that holds key, if it is in one

	cache    []cacheEntry
	cacheBuf []byte
	cacheIdx int // position in cache, -1 when not positioned from the cache

	err error
}

// init points the iterator at a new block and checks its restart array
// header. The iterator is left unpositioned.
func (i *blockIter) init(data []byte, internal bool, file string, blockOff int64) error {
	i.data = data
	i.internal = internal
	i.file = file
	i.blockOff = blockOff
	i.offset, i.nextOffset = 0, 0
	i.key, i.val = nil, nil
	i.valid, i.hasPrev = false, false
	i.cache = i.cache[:0]
	i.cacheBuf = i.cacheBuf[:0]
	i.cacheIdx = -1
	i.err = nil
	i.restartsOff, i.numRestarts = 0, 0
	if len(data) < 8 || len(data) > math.MaxInt32 {
		i.err = base.CorruptionErrorf(file, blockOff, "block of %d bytes is too short for a restart array or too large", len(data))
		i.data = nil
		return i.err
	}
	n := binary.LittleEndian.Uint32(data[len(data)-4:])
	if n == 0 || uint64(n) > uint64(len(data)-4)/4 {
		i.err = base.CorruptionErrorf(file, blockOff, "bad restart count %d for a block of %d bytes", n, len(data))
		i.data = nil
		return i.err
	}
	i.numRestarts = int(n)
	i.restartsOff = len(data) - 4 - 4*int(n)
	if binary.LittleEndian.Uint32(data[i.restartsOff:]) != 0 {
		i.err = base.CorruptionErrorf(file, blockOff, "first restart point is not 0")
		i.data = nil
		return i.err
	}
	return nil
}

// corrupt records a corruption error at the block (offset within the block
// p is named in the message) and invalidates the iterator.
func (i *blockIter) corrupt(p int, format string, args ...any) bool {
	if i.err == nil {
		args = append(args, p)
		i.err = base.CorruptionErrorf(i.file, i.blockOff, format+" (at byte %d of the block)", args...)
	}
	i.valid = false
	return false
}

// restart returns the offset of restart point j.
func (i *blockIter) restart(j int) int {
	return int(binary.LittleEndian.Uint32(i.data[i.restartsOff+4*j:]))
}

// decodeEntry parses the entry header at p (p < restartsOff). It returns
// the shared prefix length, the suffix bounds and the value end.
func (i *blockIter) decodeEntry(p int) (shared uint64, ks, ke, ve int, ok bool) {
	d := i.data[:i.restartsOff]
	var unshared, vlen uint64
	if p+3 <= len(d) && (d[p]|d[p+1]|d[p+2])&0x80 == 0 {
		shared, unshared, vlen = uint64(d[p]), uint64(d[p+1]), uint64(d[p+2])
		p += 3
	} else {
		var n int
		if shared, n = binary.Uvarint(d[p:]); n <= 0 {
			return
		}
		p += n
		if unshared, n = binary.Uvarint(d[p:]); n <= 0 {
			return
		}
		p += n
		if vlen, n = binary.Uvarint(d[p:]); n <= 0 {
			return
		}
		p += n
	}
	if unshared > uint64(len(d)-p) {
		return
	}
	ke = p + int(unshared)
	if vlen > uint64(len(d)-ke) {
		return
	}
	return shared, p, ke, ke + int(vlen), true
}

// compare orders two keys of this block.
func (i *blockIter) compare(a, b []byte) int {
	if i.internal {
		return base.CompareEncoded(a, b)
	}
	return bytes.Compare(a, b)
}

// checkKey validates a freshly decoded key k against the previous key
// prev, with which it shares its first shared bytes.
func (i *blockIter) checkKey(p int, prev, k []byte, shared int, hasPrev bool) bool {
	if i.internal {
		if len(k) < 8 {
			return i.corrupt(p, "key of %d bytes is shorter than an internal key trailer", len(k))
		}
		if kind := base.Kind(k[len(k)-8]); !kind.Valid() {
			return i.corrupt(p, "unknown key kind %d", uint8(kind))
		}
		if !hasPrev {
			return true
		}
		// Fast path: the keys share exactly shared bytes and both user
		// keys extend past them, so the byte after the shared prefix
		// decides. (prev is at least 8 bytes: it passed this check.)
		if shared < len(prev)-8 && shared < len(k)-8 && k[shared] != prev[shared] {
			if k[shared] < prev[shared] {
				return i.corrupt(p, "keys out of order")
			}
			return true
		}
	} else if !hasPrev {
		return true
	}
	if i.compare(prev, k) >= 0 {
		return i.corrupt(p, "keys out of order")
	}
	return true
}

// readAt decodes the entry at p, using i.key as the previous key when
// i.hasPrev, and makes it current. At the end of the entries it returns
// false with i.valid false and no error.
func (i *blockIter) readAt(p int) bool {
	if p >= i.restartsOff {
		i.valid = false
		i.offset = i.restartsOff
		return false
	}
	shared, ks, ke, ve, ok := i.decodeEntry(p)
	if !ok {
		return i.corrupt(p, "bad entry header")
	}
	prev := i.key
	if !i.hasPrev {
		prev = nil
	}
	var k []byte
	if shared == 0 {
		k = i.data[ks:ke:ke]
	} else {
		if shared > uint64(len(prev)) {
			return i.corrupt(p, "shared prefix of %d bytes is longer than the previous key (%d bytes)", shared, len(prev))
		}
		nb := i.kb ^ 1
		buf := append(i.keyBufs[nb][:0], prev[:shared]...)
		buf = append(buf, i.data[ks:ke]...)
		i.keyBufs[nb] = buf
		i.kb = nb
		k = buf
	}
	if !i.checkKey(p, prev, k, int(shared), i.hasPrev) {
		return false
	}
	i.offset, i.nextOffset = p, ve
	i.key = k
	i.val = i.data[ke:ve:ve]
	i.valid, i.hasPrev = true, true
	return true
}

// first moves to the first entry.
func (i *blockIter) first() bool {
	if i.data == nil {
		return false
	}
	i.cacheIdx = -1
	i.hasPrev = false
	return i.readAt(0)
}

// next moves to the following entry.
func (i *blockIter) next() bool {
	if !i.valid {
		return false
	}
	if i.cacheIdx >= 0 {
		if i.cacheIdx+1 < len(i.cache) {
			i.cacheIdx++
			i.setCached()
			return true
		}
		i.cacheIdx = -1
	}
	return i.readAt(i.nextOffset)
}

// setCached makes cache[cacheIdx] current.
func (i *blockIter) setCached() {
	e := &i.cache[i.cacheIdx]
	i.offset, i.nextOffset = int(e.offset), int(e.nextOffset)
	i.key = i.cacheBuf[e.keyStart:e.keyEnd:e.keyEnd]
	i.val = i.data[e.valStart:e.nextOffset:e.nextOffset]
	i.valid, i.hasPrev = true, true
}

// restartKey returns the key of restart point j, which must be stored whole.
func (i *blockIter) restartKey(j int) ([]byte, bool) {
	p := i.restart(j)
	if p >= i.restartsOff {
		return nil, i.corrupt(p, "restart point %d at %d is past the entries", j, p)
	}
	shared, ks, ke, _, ok := i.decodeEntry(p)
	if !ok {
		return nil, i.corrupt(p, "bad entry header")
	}
	if shared != 0 {
		return nil, i.corrupt(p, "restart point entry has a shared prefix of %d bytes", shared)
	}
	if ke-ks < 8 {
		return nil, i.corrupt(p, "key of %d bytes is shorter than an internal key trailer", ke-ks)
	}
	return i.data[ks:ke], true
}

// searchRestarts returns the index of the first restart point whose key is
// >= (uk, trailer), or numRestarts if there is none. ok is false on
// corruption.
func (i *blockIter) searchRestarts(uk []byte, trailer uint64) (int, bool) {
	lo, hi := 0, i.numRestarts
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		k, ok := i.restartKey(mid)
		if !ok {
			return 0, false
		}
		if compareSearch(k, uk, trailer) < 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, true
}

// compareSearch orders the encoded internal key k (at least 8 bytes) against
// the internal key (uk, trailer).
func compareSearch(k, uk []byte, trailer uint64) int {
	n := len(k) - 8
	if c := compareBytes(k[:n], uk); c != 0 {
		return c
	}
	t := binary.LittleEndian.Uint64(k[n:])
	switch {
	case t > trailer:
		return -1
	case t < trailer:
		return 1
	}
	return 0
}

// seekGE moves to the first entry >= (uk, trailer). Only for internal-key
// blocks.
func (i *blockIter) seekGE(uk []byte, trailer uint64) bool {
	if i.data == nil {
		return false
	}
	i.cacheIdx = -1
	j, ok := i.searchRestarts(uk, trailer)
	if !ok {
		return false
	}
	p := 0
	if j > 0 {
		p = i.restart(j - 1)
	}
	// Scan forward, rebuilding each key in place in one buffer. Key order
	// is not checked here: the entry returned is the first one (in file
	// order) that is >= the target, all entries before it are < the
	// target, and the following Next checks order from there on.
	d := i.data[:i.restartsOff]
	buf := i.keyBufs[i.kb][:0]
	for p < len(d) {
		shared, ks, ke, ve, ok := i.decodeEntry(p)
		if !ok {
			i.keyBufs[i.kb] = buf
			return i.corrupt(p, "bad entry header")
		}
		if shared > uint64(len(buf)) {
			i.keyBufs[i.kb] = buf
			return i.corrupt(p, "shared prefix of %d bytes is longer than the previous key (%d bytes)", shared, len(buf))
		}
		buf = append(buf[:shared], d[ks:ke]...)
		if len(buf) < 8 || !base.Kind(buf[len(buf)-8]).Valid() {
			i.keyBufs[i.kb] = buf
			return i.checkKey(p, nil, buf, 0, false)
		}
		if compareSearch(buf, uk, trailer) >= 0 {
			i.keyBufs[i.kb] = buf
			i.offset, i.nextOffset = p, ve
			i.key = buf
			i.val = i.data[ke:ve:ve]
			i.valid, i.hasPrev = true, true
			return true
		}
		p = ve
	}
	i.keyBufs[i.kb] = buf
	i.key = buf
	i.hasPrev = len(buf) > 0 || p > 0
	i.valid = false
	i.offset = i.restartsOff
	return false
}

// fillCache decodes consecutive entries starting at start (a restart point)
// into the reverse-iteration cache, stopping before limit, or, when uk is
// non-nil, before the first entry >= (uk, trailer). It returns false on
// corruption.
func (i *blockIter) fillCache(start, limit int, uk []byte, trailer uint64, useTarget bool) bool {
	i.cache = i.cache[:0]
	i.cacheBuf = i.cacheBuf[:0]
	i.cacheIdx = -1
	p := start
	prevStart, prevEnd := 0, 0
	for p < limit && p < i.restartsOff {
		shared, ks, ke, ve, ok := i.decodeEntry(p)
		if !ok {
			return i.corrupt(p, "bad entry header")
		}
		hasPrev := len(i.cache) > 0
		if !hasPrev {
			prevStart, prevEnd = 0, 0
		}
		if shared > uint64(prevEnd-prevStart) {
			return i.corrupt(p, "shared prefix of %d bytes is longer than the previous key (%d bytes)", shared, prevEnd-prevStart)
		}
		kStart := len(i.cacheBuf)
		i.cacheBuf = append(i.cacheBuf, i.cacheBuf[prevStart:prevStart+int(shared)]...)
		i.cacheBuf = append(i.cacheBuf, i.data[ks:ke]...)
		kEnd := len(i.cacheBuf)
		k := i.cacheBuf[kStart:kEnd]
		if !i.checkKey(p, i.cacheBuf[prevStart:prevEnd], k, int(shared), hasPrev) {
			return false
		}
		if useTarget && compareSearch(k, uk, trailer) >= 0 {
			i.cacheBuf = i.cacheBuf[:kStart]
			return true
		}
		i.cache = append(i.cache, cacheEntry{
			offset: int32(p), nextOffset: int32(ve),
			keyStart: int32(kStart), keyEnd: int32(kEnd),
			valStart: int32(ke),
		})
		prevStart, prevEnd = kStart, kEnd
		p = ve
	}
	if !useTarget && p != limit && limit <= i.restartsOff {
		return i.corrupt(p, "entries do not end at offset %d", limit)
	}
	return true
}

// positionAtCacheEnd makes the last cached entry current.
func (i *blockIter) positionAtCacheEnd() bool {
	if len(i.cache) == 0 {
		i.valid = false
		return false
	}
	i.cacheIdx = len(i.cache) - 1
	i.setCached()
	return true
}

// last moves to the last entry.
func (i *blockIter) last() bool {
	if i.data == nil {
		return false
	}
	start := i.restart(i.numRestarts - 1)
	if start > i.restartsOff || (start == i.restartsOff && start > 0) {
		return i.corrupt(start, "restart point %d at %d is past the entries", i.numRestarts-1, start)
	}
	if !i.fillCache(start, i.restartsOff, nil, 0, false) {
		return false
	}
	return i.positionAtCacheEnd()
}

// seekLT moves to the last entry < (uk, trailer). Only for internal-key
// blocks.
func (i *blockIter) seekLT(uk []byte, trailer uint64) bool {
	if i.data == nil {
		return false
	}
	j, ok := i.searchRestarts(uk, trailer)
	if !ok {
		return false
	}
	if j == 0 {
		i.cacheIdx = -1
		i.valid = false
		return false
	}
	if !i.fillCache(i.restart(j-1), i.restartsOff, uk, trailer, true) {
		return false
	}
	return i.positionAtCacheEnd()
}

// prev moves to the previous entry.
func (i *blockIter) prev() bool {
	if !i.valid {
		return false
	}
	if i.cacheIdx > 0 {
		i.cacheIdx--
		i.setCached()
		return true
	}
	if i.cacheIdx < 0 && len(i.cache) > 0 && int(i.cache[len(i.cache)-1].nextOffset) == i.offset {
		// The cached interval ends just before the current entry.
		i.cacheIdx = len(i.cache) - 1
		i.setCached()
		return true
	}
	target := i.offset
	if target == 0 {
		i.cacheIdx = -1
		i.valid = false
		return false
	}
	// Find the last restart point before target.
	lo, hi := 0, i.numRestarts
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if i.restart(mid) < target {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	// lo >= 1 because restart 0 is offset 0 < target.
	start := i.restart(lo - 1)
	// Keep the current key: fillCache may overwrite cacheBuf, which it may
	// alias.
	cur := append(i.keyBufs[i.kb^1][:0], i.key...)
	i.keyBufs[i.kb^1] = cur
	if !i.fillCache(start, target, nil, 0, false) {
		return false
	}
	if len(i.cache) == 0 {
		return i.corrupt(target, "no entry before this one")
	}
	e := i.cache[len(i.cache)-1]
	if i.compare(i.cacheBuf[e.keyStart:e.keyEnd], cur) >= 0 {
		return i.corrupt(target, "keys out of order")
	}
	return i.positionAtCacheEnd()
}

// compareBytes is bytes.Compare, faster for the short keys typical of
// tables: it compares 8 bytes at a time inline and calls bytes.Compare only
// for long inputs.
func compareBytes(a, b []byte) int {
	n := min(len(a), len(b))
	if n > 32 {
		return bytes.Compare(a, b)
	}
	j := 0
	for ; j+8 <= n; j += 8 {
		x, y := binary.BigEndian.Uint64(a[j:]), binary.BigEndian.Uint64(b[j:])
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	for ; j < n; j++ {
		if a[j] != b[j] {
			if a[j] < b[j] {
				return -1
			}
			return 1
		}
	}
	switch {
	case len(a) < len(b):
		return -1
	case len(a) > len(b):
		return 1
	}
	return 0
}
