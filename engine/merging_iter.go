package engine

import (
	"bytes"

	"github.com/kayadb/kayadb/internal/lsm/base"
)

// mergingIter merges several internal iterators into one stream in
// internal-key order. Forward iteration uses a min-heap, reverse a max-heap;
// switching direction repositions every child around the current key.
type mergingIter struct {
	children []base.InternalIterator
	// keys caches each positioned child's current key, so heap comparisons
	// need no interface calls.
	keys    []base.InternalKey
	heap    []int // indices into children
	reverse bool
	err     error
}

func newMergingIter(children []base.InternalIterator) *mergingIter {
	return &mergingIter{children: children, keys: make([]base.InternalKey, len(children)), heap: make([]int, 0, len(children))}
}

func (m *mergingIter) less(a, b int) bool {
	c := base.CompareInternal(m.keys[a], m.keys[b])
	if m.reverse {
		return c > 0
	}
	return c < 0
}

func (m *mergingIter) up(j int) {
	for {
		i := (j - 1) / 2
		if i == j || !m.less(m.heap[j], m.heap[i]) {
			break
		}
		m.heap[i], m.heap[j] = m.heap[j], m.heap[i]
		j = i
	}
}

func (m *mergingIter) down(i0 int) {
	n := len(m.heap)
	i := i0
	for {
		j1 := 2*i + 1
		if j1 >= n || j1 < 0 {
			break
		}
		j := j1
		if j2 := j1 + 1; j2 < n && m.less(m.heap[j2], m.heap[j1]) {
			j = j2
		}
		if !m.less(m.heap[j], m.heap[i]) {
			break
		}
		m.heap[i], m.heap[j] = m.heap[j], m.heap[i]
		i = j
	}
}

// build rebuilds the heap from the children's positions (valid[i] tells
// which are positioned).
func (m *mergingIter) build(valid func(i int) bool) bool {
	m.heap = m.heap[:0]
	for i, c := range m.children {
		if valid(i) {
			m.heap = append(m.heap, i)
			m.keys[i] = c.Key()
		} else if err := c.Error(); err != nil {
			m.err = err
		}
	}
	if m.err != nil {
		m.heap = m.heap[:0]
		return false
	}
	for i := len(m.heap)/2 - 1; i >= 0; i-- {
		m.down(i)
	}
	return len(m.heap) > 0
}

func (m *mergingIter) SeekGE(key []byte) bool {
	m.reverse, m.err = false, nil
	return m.build(func(i int) bool { return m.children[i].SeekGE(key) })
}

func (m *mergingIter) SeekLT(key []byte) bool {
	m.reverse, m.err = true, nil
	return m.build(func(i int) bool { return m.children[i].SeekLT(key) })
}

func (m *mergingIter) First() bool {
	m.reverse, m.err = false, nil
	return m.build(func(i int) bool { return m.children[i].First() })
}

func (m *mergingIter) Last() bool {
	m.reverse, m.err = true, nil
	return m.build(func(i int) bool { return m.children[i].Last() })
}

// advance moves the top child with step and restores the heap.
func (m *mergingIter) advance(step func(base.InternalIterator) bool) bool {
	if len(m.heap) == 0 {
		return false
	}
	top := m.heap[0]
	if c := m.children[top]; step(c) {
		m.keys[top] = c.Key()
		if len(m.heap) > 1 {
			m.down(0)
		}
	} else {
		if err := m.children[top].Error(); err != nil {
			m.err = err
			m.heap = m.heap[:0]
			return false
		}
		last := len(m.heap) - 1
		m.heap[0] = m.heap[last]
		m.heap = m.heap[:last]
		if last > 0 {
			m.down(0)
		}
	}
	return len(m.heap) > 0
}

func (m *mergingIter) Next() bool {
	if m.err != nil || len(m.heap) == 0 {
		return false
	}
	if m.reverse {
		m.switchToForward()
		if m.err != nil || len(m.heap) == 0 {
			return false
		}
	}
	return m.advance(base.InternalIterator.Next)
}

func (m *mergingIter) Prev() bool {
	if m.err != nil || len(m.heap) == 0 {
		return false
	}
	if !m.reverse {
		m.switchToReverse()
		if m.err != nil || len(m.heap) == 0 {
			return false
		}
	}
	return m.advance(base.InternalIterator.Prev)
}

// switchToForward positions every child other than the current one at its
// first entry after the current key, then flips the heap to forward order.
// The current child stays where it is (Next then steps it).
func (m *mergingIter) switchToForward() {
	cur := m.heap[0]
	key := m.children[cur].Key()
	key = base.InternalKey{UserKey: append([]byte(nil), key.UserKey...), Trailer: key.Trailer}
	m.reverse = false
	m.build(func(i int) bool {
		c := m.children[i]
		if i == cur {
			return true
		}
		ok := c.SeekGE(key.UserKey)
		for ok && base.CompareInternal(c.Key(), key) <= 0 {
			ok = c.Next()
		}
		return ok
	})
}

// switchToReverse positions every child other than the current one at its
// last entry before the current key.
func (m *mergingIter) switchToReverse() {
	cur := m.heap[0]
	key := m.children[cur].Key()
	key = base.InternalKey{UserKey: append([]byte(nil), key.UserKey...), Trailer: key.Trailer}
	m.reverse = true
	m.build(func(i int) bool {
		c := m.children[i]
		if i == cur {
			return true
		}
		// Last entry < key: seek to the first entry >= key.UserKey, skip
		// entries still below key (newer versions of the same user key),
		// then step back once.
		ok := c.SeekGE(key.UserKey)
		for ok && bytes.Equal(c.Key().UserKey, key.UserKey) && base.CompareInternal(c.Key(), key) < 0 {
			ok = c.Next()
		}
		if ok {
			return c.Prev()
		}
		if c.Error() != nil {
			return false
		}
		return c.Last()
	})
}

func (m *mergingIter) Key() base.InternalKey { return m.keys[m.heap[0]] }
func (m *mergingIter) Value() []byte         { return m.children[m.heap[0]].Value() }
func (m *mergingIter) Error() error          { return m.err }

func (m *mergingIter) Close() error {
	err := m.err
	for _, c := range m.children {
		if cerr := c.Close(); err == nil {
			err = cerr
		}
	}
	m.children = nil
	m.keys = nil
	m.heap = nil
	return err
}
