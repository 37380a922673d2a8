package engine

import (
	"bytes"
	"sort"

	"github.com/kayadb/kayadb/internal/lsm/base"
)

// compactionIter filters a merged stream of internal keys for output by a
// flush or compaction. It keeps, for each user key, the newest entry in each
// snapshot stripe and drops the rest: an entry is needed only if some reader
// can see it, and a reader at sequence S sees the newest entry with seq <= S.
//
// Stripes are delimited by the open snapshots' sequence numbers s1 < s2 <
// ... : stripe i holds seqs in (s_{i-1}, s_i], the last stripe everything
// newer than every snapshot. A tombstone is dropped only when the output is
// the bottom of the tree for its key range (nothing older exists below) and
// it lies in the oldest stripe (no snapshot can see an older version).
type compactionIter struct {
	in         base.InternalIterator
	snapshots  []base.SeqNum
	bottommost bool
	m          *metrics

	curUser   []byte
	hasCur    bool
	curStripe int
	err       error
}

func newCompactionIter(in base.InternalIterator, snapshots []base.SeqNum, bottommost bool, m *metrics) *compactionIter {
	return &compactionIter{in: in, snapshots: snapshots, bottommost: bottommost, m: m}
}

func (c *compactionIter) stripe(seq base.SeqNum) int {
	return sort.Search(len(c.snapshots), func(i int) bool { return c.snapshots[i] >= seq })
}

func (c *compactionIter) First() bool { return c.settle(c.in.First()) }
func (c *compactionIter) Next() bool  { return c.settle(c.in.Next()) }

func (c *compactionIter) settle(ok bool) bool {
	for ; ok; ok = c.in.Next() {
		k := c.in.Key()
		stripe := c.stripe(k.Seq())
		same := c.hasCur && bytes.Equal(k.UserKey, c.curUser)
		if same && stripe == c.curStripe {
			// Shadowed by a newer entry of the same stripe.
			c.m.compactionEntriesDropped.Add(1)
			continue
		}
		if !same {
			c.curUser = append(c.curUser[:0], k.UserKey...)
			c.hasCur = true
		}
		c.curStripe = stripe
		if k.Kind() == base.KindDelete && c.bottommost && stripe == 0 {
			c.m.compactionTombstonesDropped.Add(1)
			continue
		}
		return true
	}
	c.err = c.in.Error()
	return false
}

func (c *compactionIter) Key() base.InternalKey { return c.in.Key() }
func (c *compactionIter) Value() []byte         { return c.in.Value() }

func (c *compactionIter) Close() error {
	err := c.in.Close()
	if c.err != nil {
		return c.err
	}
	return err
}
