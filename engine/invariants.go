package engine

import (
	"fmt"

	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/manifest"
	"github.com/kayadb/kayadb/internal/lsm/sstable"
)

// checkInvariants verifies the LSM shape of the current Version: the level
// ordering rules (manifest.Version.CheckOrdering), that every table's
// entries lie within its recorded bounds and sequence range, and that for
// every user key sequence numbers decrease from newer to older tables (L0
// newest first, then L1 down to L6). It reads every table, so it is meant
// for tests and tools.
func (d *DB) checkInvariants() error {
	v := d.vs.Current()
	defer v.Unref()
	if err := v.CheckOrdering(); err != nil {
		return err
	}
	// minSeq[k] is the smallest seq seen for user key k in newer tables.
	minSeq := make(map[string]base.SeqNum)
	check := func(level int, f *manifest.FileMetadata, upper map[string]base.SeqNum, local map[string]base.SeqNum) error {
		h, err := d.tables.get(f.FileNum, f.Size)
		if err != nil {
			return err
		}
		defer h.release()
		it := h.r.NewIter(sstable.IterOptions{})
		defer it.Close()
		var prev base.InternalKey
		first := true
		for ok := it.First(); ok; ok = it.Next() {
			k := it.Key()
			if first && base.CompareInternal(k, f.Smallest) != 0 {
				return fmt.Errorf("L%d table %s: first key %s != recorded smallest %s", level, f.FileNum, k, f.Smallest)
			}
			if !first && base.CompareInternal(prev, k) >= 0 {
				return fmt.Errorf("L%d table %s: keys out of order: %s then %s", level, f.FileNum, prev, k)
			}
			if k.Seq() < f.SmallestSeq || k.Seq() > f.LargestSeq {
				return fmt.Errorf("L%d table %s: key %s outside recorded seqs [%d,%d]", level, f.FileNum, k, f.SmallestSeq, f.LargestSeq)
			}
			if s, ok := upper[string(k.UserKey)]; ok && k.Seq() >= s {
				return fmt.Errorf("L%d table %s: key %s is not older than a version in a newer table (seq %d)", level, f.FileNum, k, s)
			}
			if s, ok := local[string(k.UserKey)]; !ok || k.Seq() < s {
				local[string(k.UserKey)] = k.Seq()
			}
			prev = k.Clone()
			first = false
		}
		if err := it.Error(); err != nil {
			return err
		}
		if first {
			return fmt.Errorf("L%d table %s is empty", level, f.FileNum)
		}
		if base.CompareInternal(prev, f.Largest) != 0 {
			return fmt.Errorf("L%d table %s: last key %s != recorded largest %s", level, f.FileNum, prev, f.Largest)
		}
		return nil
	}
	merge := func(local map[string]base.SeqNum) {
		for k, s := range local {
			if cur, ok := minSeq[k]; !ok || s < cur {
				minSeq[k] = s
			}
		}
	}
	for i := len(v.Levels[0]) - 1; i >= 0; i-- {
		local := make(map[string]base.SeqNum)
		if err := check(0, v.Levels[0][i], minSeq, local); err != nil {
			return err
		}
		merge(local)
	}
	for level := 1; level < manifest.NumLevels; level++ {
		local := make(map[string]base.SeqNum)
		for _, f := range v.Levels[level] {
			if err := check(level, f, minSeq, local); err != nil {
				return err
			}
		}
		merge(local)
	}
	return nil
}
