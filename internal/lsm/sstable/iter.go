package sstable

import (
	"bytes"
	"encoding/binary"
	"sync"

	"github.com/kayadb/kayadb/internal/lsm/base"
)

// IterOptions configures an Iter.
type IterOptions struct {
	// Lower and Upper bound the user keys the iterator returns: Lower is
	// inclusive, Upper exclusive; nil means unbounded. The iterator keeps
	// the slices: they must not change while it is in use.
	Lower, Upper []byte
	// FillCache makes blocks read from the file enter the block cache.
	// Compactions set it to false so as not to evict hot blocks; blocks
	// already in the cache are used either way.
	FillCache bool
	// Sequential announces a forward scan of much of the table (a
	// compaction): blocks missing from the cache are then read 256 KiB at a
	// time.
	Sequential bool
}

type iterPos int8

const (
	posUnpositioned iterPos = iota
	posValid
	posBeforeStart
	posAfterEnd
	posError
)

// Iter iterates over a table's entries in internal-key order. It implements
// base.InternalIterator. Key and Value are valid until the next positioning
// call. An Iter is not safe for concurrent use; it must be closed, and must
// not be used after Close.
//
// Iteration respects IterOptions.Lower and Upper, and does not load data
// blocks that lie wholly outside them. After Next has run off the end, Prev
// moves to the last entry; after Prev has run off the start, Next moves to
// the first entry. Errors are sticky: after one, every positioning call
// returns false.
type Iter struct {
	r    *Reader
	opts IterOptions
	idx  int // index of the data block loaded in blk, or -1
	blk  blockIter
	bufs readBufs
	pos  iterPos
	err  error

	// withinUpper (withinLower) is true when every key of the loaded block
	// is below Upper (at or above Lower), so per-key checks can be skipped.
	withinUpper, withinLower bool
}

var _ base.InternalIterator = (*Iter)(nil)

var iterPool = sync.Pool{New: func() any { return new(Iter) }}

// NewIter returns an unpositioned iterator over the table.
func (r *Reader) NewIter(opts IterOptions) *Iter {
	i := iterPool.Get().(*Iter)
	i.r = r
	i.opts = opts
	i.idx = -1
	i.pos = posUnpositioned
	i.err = nil
	i.bufs.raLen = 0
	return i
}

func (i *Iter) fail(err error) bool {
	if i.err == nil {
		i.err = err
	}
	i.pos = posError
	return false
}

// loadBlock makes data block idx the current block.
func (i *Iter) loadBlock(idx int) bool {
	if i.idx == idx {
		return true
	}
	i.idx = -1
	data, err := i.r.readDataBlock(idx, i.opts.FillCache, i.opts.Sequential, &i.bufs)
	if err != nil {
		return i.fail(err)
	}
	x := &i.r.index
	if err := i.blk.init(data, true, i.r.opts.FileName, int64(x.handles[idx].offset)); err != nil {
		return i.fail(err)
	}
	i.idx = idx
	i.withinUpper = i.opts.Upper == nil || bytes.Compare(x.userKey(idx), i.opts.Upper) < 0
	i.withinLower = i.opts.Lower == nil || (idx > 0 && bytes.Compare(x.userKey(idx-1), i.opts.Lower) >= 0)
	return true
}

// userKey returns the current entry's user key.
func (i *Iter) userKey() []byte {
	k := i.blk.key
	return k[:len(k)-8]
}

// checkUpper finishes a forward positioning at a block entry.
func (i *Iter) checkUpper() bool {
	if !i.withinUpper && bytes.Compare(i.userKey(), i.opts.Upper) >= 0 {
		i.pos = posAfterEnd
		return false
	}
	i.pos = posValid
	return true
}

// checkLower finishes a backward positioning at a block entry.
func (i *Iter) checkLower() bool {
	if !i.withinLower && bytes.Compare(i.userKey(), i.opts.Lower) < 0 {
		i.pos = posBeforeStart
		return false
	}
	i.pos = posValid
	return true
}

// skipForward moves to the first entry of the blocks after the current one.
//
// Crossing a block boundary checks the keys on both sides against the
// separator between them (last key of a block <= separator < first key of
// the next block), so that scans return keys in order even if blocks of a
// damaged file were swapped.
func (i *Iter) skipForward() bool {
	x := &i.r.index
	if i.blk.hasPrev && base.CompareEncoded(i.blk.key, x.key(i.idx)) > 0 {
		return i.separatorError(i.idx)
	}
	for idx := i.idx + 1; idx < x.len(); idx++ {
		// Block idx holds keys > separator idx-1.
		if i.opts.Upper != nil && bytes.Compare(x.userKey(idx-1), i.opts.Upper) >= 0 {
			break
		}
		if !i.loadBlock(idx) {
			return false
		}
		if i.blk.first() {
			if base.CompareEncoded(i.blk.key, x.key(idx-1)) <= 0 {
				return i.separatorError(idx)
			}
			return i.checkUpper()
		}
		if i.blk.err != nil {
			return i.fail(i.blk.err)
		}
	}
	i.pos = posAfterEnd
	return false
}

// skipBackward moves to the last entry of the blocks before the current one.
func (i *Iter) skipBackward() bool {
	x := &i.r.index
	if i.blk.hasPrev && i.idx > 0 && base.CompareEncoded(i.blk.key, x.key(i.idx-1)) <= 0 {
		return i.separatorError(i.idx)
	}
	for idx := i.idx - 1; idx >= 0; idx-- {
		// Block idx holds keys <= separator idx.
		if i.opts.Lower != nil && bytes.Compare(x.userKey(idx), i.opts.Lower) < 0 {
			break
		}
		if !i.loadBlock(idx) {
			return false
		}
		if i.blk.last() {
			if base.CompareEncoded(i.blk.key, x.key(idx)) > 0 {
				return i.separatorError(idx)
			}
			return i.checkLower()
		}
		if i.blk.err != nil {
			return i.fail(i.blk.err)
		}
	}
	i.pos = posBeforeStart
	return false
}

func (i *Iter) separatorError(idx int) bool {
	return i.fail(base.CorruptionErrorf(i.r.opts.FileName, int64(i.r.index.handles[idx].offset),
		"keys of data block %d are not ordered with respect to the index separators", idx))
}

// SeekGE moves to the first entry whose user key is >= key (and >= Lower).
func (i *Iter) SeekGE(key []byte) bool {
	if i.err != nil {
		return false
	}
	if lo := i.opts.Lower; lo != nil && bytes.Compare(key, lo) < 0 {
		key = lo
	}
	if up := i.opts.Upper; up != nil && bytes.Compare(key, up) >= 0 {
		i.pos = posAfterEnd
		return false
	}
	x := &i.r.index
	idx := x.search(key, maxTrailer)
	if idx >= x.len() {
		i.pos = posAfterEnd
		return false
	}
	if idx > 0 && i.opts.Upper != nil && bytes.Compare(x.userKey(idx-1), i.opts.Upper) >= 0 {
		i.pos = posAfterEnd
		return false
	}
	if !i.loadBlock(idx) {
		return false
	}
	if i.blk.seekGE(key, maxTrailer) {
		return i.checkUpper()
	}
	if i.blk.err != nil {
		return i.fail(i.blk.err)
	}
	return i.skipForward()
}

// SeekLT moves to the last entry whose user key is < key (and < Upper).
func (i *Iter) SeekLT(key []byte) bool {
	if i.err != nil {
		return false
	}
	if up := i.opts.Upper; up != nil && bytes.Compare(key, up) > 0 {
		key = up
	}
	if lo := i.opts.Lower; lo != nil && bytes.Compare(key, lo) <= 0 {
		i.pos = posBeforeStart
		return false
	}
	x := &i.r.index
	idx := x.search(key, maxTrailer)
	if idx >= x.len() {
		idx = x.len() - 1
	}
	if i.opts.Lower != nil && bytes.Compare(x.userKey(idx), i.opts.Lower) < 0 {
		i.pos = posBeforeStart
		return false
	}
	if !i.loadBlock(idx) {
		return false
	}
	if i.blk.seekLT(key, maxTrailer) {
		return i.checkLower()
	}
	if i.blk.err != nil {
		return i.fail(i.blk.err)
	}
	return i.skipBackward()
}

// First moves to the first entry (at or above Lower).
func (i *Iter) First() bool {
	if i.err != nil {
		return false
	}
	if i.opts.Lower != nil {
		return i.SeekGE(i.opts.Lower)
	}
	if !i.loadBlock(0) {
		return false
	}
	if i.blk.first() {
		return i.checkUpper()
	}
	if i.blk.err != nil {
		return i.fail(i.blk.err)
	}
	return i.skipForward()
}

// Last moves to the last entry (below Upper).
func (i *Iter) Last() bool {
	if i.err != nil {
		return false
	}
	if i.opts.Upper != nil {
		return i.SeekLT(i.opts.Upper)
	}
	if !i.loadBlock(i.r.index.len() - 1) {
		return false
	}
	if i.blk.last() {
		return i.checkLower()
	}
	if i.blk.err != nil {
		return i.fail(i.blk.err)
	}
	return i.skipBackward()
}

// Next moves to the next entry.
func (i *Iter) Next() bool {
	switch i.pos {
	case posValid:
		if i.blk.next() {
			return i.checkUpper()
		}
		if i.blk.err != nil {
			return i.fail(i.blk.err)
		}
		return i.skipForward()
	case posBeforeStart, posUnpositioned:
		return i.First()
	}
	return false
}

// Prev moves to the previous entry.
func (i *Iter) Prev() bool {
	switch i.pos {
	case posValid:
		if i.blk.prev() {
			return i.checkLower()
		}
		if i.blk.err != nil {
			return i.fail(i.blk.err)
		}
		return i.skipBackward()
	case posAfterEnd, posUnpositioned:
		return i.Last()
	}
	return false
}

// Valid reports whether the iterator is at an entry.
func (i *Iter) Valid() bool { return i.pos == posValid }

// Key returns the current key; the zero key when the iterator is not at an
// entry. Its bytes are valid until the next positioning call.
func (i *Iter) Key() base.InternalKey {
	if i.pos != posValid {
		return base.InternalKey{}
	}
	k := i.blk.key
	n := len(k) - 8
	return base.InternalKey{UserKey: k[:n:n], Trailer: binary.LittleEndian.Uint64(k[n:])}
}

// Value returns the current value; nil when the iterator is not at an
// entry. Its bytes are valid until the next positioning call and must not
// be modified.
func (i *Iter) Value() []byte {
	if i.pos != posValid {
		return nil
	}
	return i.blk.val
}

// Error returns the first error met, if any.
func (i *Iter) Error() error { return i.err }

// Close releases the iterator and returns its error, if any.
func (i *Iter) Close() error {
	err := i.err
	i.r = nil
	i.opts = IterOptions{}
	i.err = nil
	i.idx = -1
	i.pos = posUnpositioned
	i.blk.data, i.blk.key, i.blk.val = nil, nil, nil
	const keep = 1 << 20 // do not let the pool pin huge buffers
	if cap(i.bufs.raw) > keep || cap(i.bufs.dec) > keep {
		i.bufs.raw, i.bufs.dec = nil, nil
	}
	iterPool.Put(i)
	return err
}
