package engine

import (
	"bytes"

	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/manifest"
	"github.com/kayadb/kayadb/internal/lsm/sstable"
)

// levelIter iterates over the tables of one level (L1 and below, where
// tables are sorted and disjoint), opening one table at a time.
type levelIter struct {
	tc        *tableCache
	files     []*manifest.FileMetadata
	lower     []byte
	upper     []byte
	opts      sstable.IterOptions
	index     int // current file; -1 or len(files) when off the level
	handle    *tableHandle
	iter      *sstable.Iter
	err       error
	bytesRead *uint64 // optional: count table sizes opened (compactions)
}

func newLevelIter(tc *tableCache, files []*manifest.FileMetadata, lower, upper []byte, opts sstable.IterOptions) *levelIter {
	opts.Lower, opts.Upper = lower, upper
	return &levelIter{tc: tc, files: files, lower: lower, upper: upper, opts: opts, index: -1}
}

// open positions the level at file i (closing the previous table). It
// returns false if i is out of range, outside the bounds, or on error.
func (l *levelIter) open(i int) bool {
	if l.iter != nil && l.index == i {
		return true
	}
	l.closeTable()
	l.index = i
	if i < 0 || i >= len(l.files) {
		return false
	}
	f := l.files[i]
	if l.upper != nil && bytes.Compare(f.Smallest.UserKey, l.upper) >= 0 {
		return false
	}
	if l.lower != nil && bytes.Compare(f.Largest.UserKey, l.lower) < 0 {
		return false
	}
	h, err := l.tc.get(f.FileNum, f.Size)
	if err != nil {
		l.err = err
		return false
	}
	l.handle = h
	l.iter = h.r.NewIter(l.opts)
	return true
}

func (l *levelIter) closeTable() {
	if l.iter != nil {
		if err := l.iter.Close(); err != nil && l.err == nil {
			l.err = err
		}
		l.iter = nil
	}
	if l.handle != nil {
		l.handle.release()
		l.handle = nil
	}
}

// settle moves forward across files until a valid entry or the end.
func (l *levelIter) forwardFrom(ok bool) bool {
	for !ok {
		if l.err != nil {
			return false
		}
		if l.iter != nil {
			if err := l.iter.Error(); err != nil {
				l.err = err
				return false
			}
		}
		if !l.open(l.index + 1) {
			return false
		}
		ok = l.iter.First()
	}
	return true
}

func (l *levelIter) backwardFrom(ok bool) bool {
	for !ok {
		if l.err != nil {
			return false
		}
		if l.iter != nil {
			if err := l.iter.Error(); err != nil {
				l.err = err
				return false
			}
		}
		if !l.open(l.index - 1) {
			return false
		}
		ok = l.iter.Last()
	}
	return true
}

func (l *levelIter) SeekGE(key []byte) bool {
	l.err = nil
	if l.lower != nil && bytes.Compare(key, l.lower) < 0 {
		key = l.lower
	}
	i := manifest.FindFile(l.files, key)
	if !l.open(i) {
		return false
	}
	return l.forwardFrom(l.iter.SeekGE(key))
}

func (l *levelIter) SeekLT(key []byte) bool {
	l.err = nil
	if l.upper != nil && bytes.Compare(key, l.upper) > 0 {
		key = l.upper
	}
	// The last file whose smallest key is < key.
	i := manifest.FindFile(l.files, key)
	if i == len(l.files) || bytes.Compare(l.files[i].Smallest.UserKey, key) >= 0 {
		i--
	}
	if !l.open(i) {
		return false
	}
	return l.backwardFrom(l.iter.SeekLT(key))
}

func (l *levelIter) First() bool {
	l.err = nil
	if l.lower != nil {
		return l.SeekGE(l.lower)
	}
	if !l.open(0) {
		return false
	}
	return l.forwardFrom(l.iter.First())
}

func (l *levelIter) Last() bool {
	l.err = nil
	if l.upper != nil {
		return l.SeekLT(l.upper)
	}
	if !l.open(len(l.files) - 1) {
		return false
	}
	return l.backwardFrom(l.iter.Last())
}

func (l *levelIter) Next() bool {
	if l.iter == nil {
		return false
	}
	return l.forwardFrom(l.iter.Next())
}

func (l *levelIter) Prev() bool {
	if l.iter == nil {
		if l.index >= len(l.files) && l.err == nil {
			// Stepping back from past-the-end.
			return l.Last()
		}
		return false
	}
	return l.backwardFrom(l.iter.Prev())
}

func (l *levelIter) Key() base.InternalKey { return l.iter.Key() }
func (l *levelIter) Value() []byte         { return l.iter.Value() }
func (l *levelIter) Error() error          { return l.err }

func (l *levelIter) Close() error {
	l.closeTable()
	return l.err
}
