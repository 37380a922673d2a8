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
//
// # The compaction filter
//
// With a filter (compactions only, not flushes), the newest entry of a key
// that lies in the last stripe — newer than every open snapshot, so only
// readers of the current state see it — is offered to the filter when it
// is a Set. If the filter drops it, those readers must find the key
// deleted, not an older version, which may still exist:
//
//   - below the output level, when the compaction is not bottommost;
//   - in this compaction, in an older stripe kept for a snapshot.
//
// When neither can be (bottommost, and no snapshot open: the older entries
// of the key all lie in the same single stripe and are dropped as
// shadowed), the entry is dropped outright. Otherwise it is replaced by a
// tombstone with the same sequence number: it shadows exactly what the
// entry shadowed, snapshots (all older than it) do not see it, and the
// tombstone rule above removes it once it reaches the bottom in the
// oldest stripe. An entry older than some snapshot is never offered: that
// snapshot may read it.
//
// A snapshot taken while the compaction runs is not in its list, and it
// could see a filtered entry (every entry of the compaction is older than
// it). runCompaction therefore installs a filtering compaction only if no
// snapshot opened since it started is still open, with new snapshots held
// off meanwhile (DB.filterMu); otherwise it discards the output and the
// next compaction runs without the filter, so that a steady stream of
// snapshots cannot stall compactions.
type compactionIter struct {
	in         base.InternalIterator
	snapshots  []base.SeqNum
	bottommost bool
	m          *metrics
	filter     CompactionFilter

	curUser   []byte
	hasCur    bool
	curStripe int
	err       error
	// tombstone is set when the current entry is a filtered Set written
	// as a deletion.
	tombstone bool
	// filtered counts the entries the filter dropped (the caller adds them
	// to the metrics once the output is installed).
	filtered uint64
}

func newCompactionIter(in base.InternalIterator, snapshots []base.SeqNum, bottommost bool, m *metrics, filter CompactionFilter) *compactionIter {
	return &compactionIter{in: in, snapshots: snapshots, bottommost: bottommost, m: m, filter: filter}
}

func (c *compactionIter) stripe(seq base.SeqNum) int {
	return sort.Search(len(c.snapshots), func(i int) bool { return c.snapshots[i] >= seq })
}

func (c *compactionIter) First() bool { return c.settle(c.in.First()) }
func (c *compactionIter) Next() bool  { return c.settle(c.in.Next()) }

func (c *compactionIter) settle(ok bool) bool {
	c.tombstone = false
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
		if c.filter != nil && k.Kind() == base.KindSet && stripe == len(c.snapshots) && c.filter(k.UserKey, c.in.Value()) {
			c.filtered++
			if c.bottommost && stripe == 0 {
				continue
			}
			c.tombstone = true
		}
		return true
	}
	c.err = c.in.Error()
	return false
}

func (c *compactionIter) Key() base.InternalKey {
	k := c.in.Key()
	if c.tombstone {
		k.Trailer = base.MakeTrailer(k.Seq(), base.KindDelete)
	}
	return k
}

func (c *compactionIter) Value() []byte {
	if c.tombstone {
		return nil
	}
	return c.in.Value()
}

func (c *compactionIter) Close() error {
	err := c.in.Close()
	if c.err != nil {
		return c.err
	}
	return err
}
