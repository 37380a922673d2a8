package engine

import (
	"bytes"

	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/sstable"
)

// Iterator walks the live keys of a DB (or a Snapshot) in key order, forward
// or backward, within optional bounds. It reads a consistent view: the state
// when it was created. Key and Value are valid until the next positioning
// call; copy them to keep them. An Iterator pins the tables it reads until
// Close. It is not safe for concurrent use.
type Iterator struct {
	db    *DB
	rs    *readState
	iter  *mergingIter
	seq   base.SeqNum
	lower []byte
	upper []byte

	key    []byte
	value  []byte
	valBuf []byte
	valid  bool
	// dir is +1 after a forward move, -1 after a reverse move. Forward, the
	// merging iterator sits at the current key's newest visible entry. In
	// reverse it sits at the last entry before the current key's entries
	// (iterValid) or is exhausted.
	dir       int
	iterValid bool
	err       error
	closed    bool
}

// NewIter returns an iterator over the DB's current state.
func (d *DB) NewIter(o *IterOptions) (*Iterator, error) {
	return d.newIter(o, base.SeqNum(d.visibleSeq.Load()))
}

func (d *DB) newIter(o *IterOptions, seq base.SeqNum) (*Iterator, error) {
	rs := d.loadReadState()
	if rs == nil {
		return nil, ErrClosed
	}
	it := &Iterator{db: d, rs: rs, seq: seq}
	if o != nil {
		if o.LowerBound != nil {
			it.lower = append([]byte{}, o.LowerBound...)
		}
		if o.UpperBound != nil {
			it.upper = append([]byte{}, o.UpperBound...)
		}
	}
	it.iter = newMergingIter(d.internalIters(rs, it.lower, it.upper, sstable.IterOptions{FillCache: true}))
	return it, nil
}

// internalIters returns iterators over every memtable and table in rs,
// newest first.
func (d *DB) internalIters(rs *readState, lower, upper []byte, topts sstable.IterOptions) []base.InternalIterator {
	var iters []base.InternalIterator
	for _, m := range rs.mems {
		if !m.t.Empty() {
			iters = append(iters, m.t.NewIter())
		}
	}
	v := rs.version
	for i := len(v.Levels[0]) - 1; i >= 0; i-- {
		f := v.Levels[0][i]
		if upper != nil && bytes.Compare(f.Smallest.UserKey, upper) >= 0 {
			continue
		}
		if lower != nil && bytes.Compare(f.Largest.UserKey, lower) < 0 {
			continue
		}
		iters = append(iters, newLevelIter(d.tables, v.Levels[0][i:i+1], lower, upper, topts))
	}
	for level := 1; level < len(v.Levels); level++ {
		if len(v.Levels[level]) > 0 {
			iters = append(iters, newLevelIter(d.tables, v.Levels[level], lower, upper, topts))
		}
	}
	return iters
}

func (it *Iterator) visible(k base.InternalKey) bool { return k.Seq() <= it.seq }

// findNextEntry moves forward from the merging iterator's position to the
// first live key, skipping invisible entries, older versions and deleted
// keys. skip holds a user key whose remaining versions must be skipped.
func (it *Iterator) findNextEntry(ok bool, skip []byte, skipping bool) bool {
	for ok {
		k := it.iter.Key()
		if it.upper != nil && bytes.Compare(k.UserKey, it.upper) >= 0 {
			break
		}
		if it.visible(k) {
			if skipping && bytes.Equal(k.UserKey, skip) {
				// An older version of a key already decided.
			} else {
				switch k.Kind() {
				case base.KindDelete:
					skip = append(skip[:0], k.UserKey...)
					skipping = true
				default:
					it.key = append(it.key[:0], k.UserKey...)
					it.value = it.iter.Value()
					it.valid = true
					it.dir = 1
					return true
				}
			}
		}
		ok = it.iter.Next()
	}
	it.valid = false
	it.dir = 1
	it.err = it.iter.Error()
	return false
}

// findPrevEntry moves backward to the previous live key. When it returns
// true the merging iterator is positioned before every entry of that key.
func (it *Iterator) findPrevEntry(ok bool) bool {
	found := false // a live value for it.key is saved
	for ok {
		k := it.iter.Key()
		if it.lower != nil && bytes.Compare(k.UserKey, it.lower) < 0 {
			break
		}
		if it.visible(k) {
			if found && !bytes.Equal(k.UserKey, it.key) {
				// We moved past the key whose newest visible entry we hold.
				break
			}
			if k.Kind() == base.KindDelete {
				found = false
			} else {
				it.key = append(it.key[:0], k.UserKey...)
				it.valBuf = append(it.valBuf[:0], it.iter.Value()...)
				found = true
			}
		}
		ok = it.iter.Prev()
	}
	it.dir = -1
	it.iterValid = ok
	if !found {
		it.valid = false
		it.err = it.iter.Error()
		return false
	}
	if err := it.iter.Error(); err != nil {
		it.valid, it.err = false, err
		return false
	}
	it.value = it.valBuf
	it.valid = true
	return true
}

func (it *Iterator) check() bool {
	if it.closed {
		it.err = ErrClosed
		it.valid = false
		return false
	}
	it.err = nil
	return true
}

// First moves to the first key and reports whether there is one.
func (it *Iterator) First() bool {
	if !it.check() {
		return false
	}
	if it.lower != nil {
		return it.findNextEntry(it.iter.SeekGE(it.lower), nil, false)
	}
	return it.findNextEntry(it.iter.First(), nil, false)
}

// Last moves to the last key.
func (it *Iterator) Last() bool {
	if !it.check() {
		return false
	}
	if it.upper != nil {
		return it.findPrevEntry(it.iter.SeekLT(it.upper))
	}
	return it.findPrevEntry(it.iter.Last())
}

// SeekGE moves to the first key >= key.
func (it *Iterator) SeekGE(key []byte) bool {
	if !it.check() {
		return false
	}
	if it.lower != nil && bytes.Compare(key, it.lower) < 0 {
		key = it.lower
	}
	return it.findNextEntry(it.iter.SeekGE(key), nil, false)
}

// SeekLT moves to the last key < key.
func (it *Iterator) SeekLT(key []byte) bool {
	if !it.check() {
		return false
	}
	if it.upper != nil && bytes.Compare(key, it.upper) > 0 {
		key = it.upper
	}
	return it.findPrevEntry(it.iter.SeekLT(key))
}

// Next moves to the next key.
func (it *Iterator) Next() bool {
	if !it.check() || !it.valid {
		it.valid = false
		return false
	}
	if it.dir < 0 {
		// The merging iterator sits before the current key: step onto its
		// entries, which findNextEntry then skips.
		var ok bool
		if it.iterValid {
			ok = it.iter.Next()
		} else {
			ok = it.iter.First()
		}
		return it.findNextEntry(ok, it.key, true)
	}
	return it.findNextEntry(it.iter.Next(), it.key, true)
}

// Prev moves to the previous key.
func (it *Iterator) Prev() bool {
	if !it.check() || !it.valid {
		it.valid = false
		return false
	}
	if it.dir > 0 {
		// The merging iterator sits at the newest entry of the current key;
		// step back before all of its entries.
		cur := append([]byte(nil), it.key...)
		ok := it.iter.Prev()
		for ok && bytes.Equal(it.iter.Key().UserKey, cur) {
			ok = it.iter.Prev()
		}
		return it.findPrevEntry(ok)
	}
	// Already positioned at the previous key's last entry (or exhausted).
	return it.findPrevEntry(it.iterValid)
}

// Valid reports whether the iterator is at a key.
func (it *Iterator) Valid() bool { return it.valid }

// Key returns the current key.
func (it *Iterator) Key() []byte { return it.key }

// Value returns the current value.
func (it *Iterator) Value() []byte { return it.value }

// Error returns the error that stopped iteration, if any.
func (it *Iterator) Error() error { return it.err }

// Close releases the iterator's resources and returns its error, if any.
func (it *Iterator) Close() error {
	if it.closed {
		return ErrClosed
	}
	it.closed = true
	err := it.iter.Close()
	it.rs.unref()
	if it.err != nil {
		return it.err
	}
	return err
}
