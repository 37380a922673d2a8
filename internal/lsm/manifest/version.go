package manifest

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/lsm/base"
)

// FileMetadata describes one SSTable. The fields set at creation never change;
// a table is shared by every Version that lists it.
type FileMetadata struct {
	FileNum     base.FileNum
	Size        uint64
	Smallest    base.InternalKey
	Largest     base.InternalKey
	SmallestSeq base.SeqNum
	LargestSeq  base.SeqNum

	// refs counts the Versions that list this table. When it drops to zero
	// the table is obsolete.
	refs atomic.Int32

	// Compacting is true while a compaction has this table as an input. It
	// is guarded by the engine's mutex, not by this package.
	Compacting bool

	// Encrypted and KeyID say which key sealed the table. They are not
	// recorded in the MANIFEST (the table's footer holds them): the engine
	// sets them when it writes the table, and at open from the footer,
	// before the table is shared.
	Encrypted bool
	KeyID     crypt.KeyID
}

// Refs returns the number of Versions that list the table.
func (m *FileMetadata) Refs() int32 { return m.refs.Load() }

// String formats the table as "NNNNNN:[smallest-largest]".
func (m *FileMetadata) String() string {
	return fmt.Sprintf("%s:[%s-%s]", m.FileNum, m.Smallest, m.Largest)
}

// overlapsUser reports whether the table's user-key range intersects
// [smallest, largest] (both inclusive; nil means unbounded).
func (m *FileMetadata) overlapsUser(smallest, largest []byte) bool {
	if largest != nil && bytes.Compare(m.Smallest.UserKey, largest) > 0 {
		return false
	}
	if smallest != nil && bytes.Compare(m.Largest.UserKey, smallest) < 0 {
		return false
	}
	return true
}

// Version is an immutable set of tables per level. L0 tables may overlap and
// are ordered from oldest to newest; tables at L1 and below are sorted by key
// and never share a user key with a neighbour.
type Version struct {
	Levels [NumLevels][]*FileMetadata

	refs atomic.Int32
	// onObsolete is called with the tables whose last reference this
	// Version held, when the Version itself is released.
	onObsolete func([]*FileMetadata)
}

// Ref adds a reference.
func (v *Version) Ref() { v.refs.Add(1) }

// Unref drops a reference; the last one releases the Version's tables.
func (v *Version) Unref() {
	switch n := v.refs.Add(-1); {
	case n > 0:
		return
	case n < 0:
		panic("manifest: Version released more often than referenced")
	}
	var obsolete []*FileMetadata
	for _, files := range v.Levels {
		for _, f := range files {
			switch n := f.refs.Add(-1); {
			case n == 0:
				obsolete = append(obsolete, f)
			case n < 0:
				panic(fmt.Sprintf("manifest: table %s released more often than referenced", f.FileNum))
			}
		}
	}
	if len(obsolete) > 0 && v.onObsolete != nil {
		v.onObsolete(obsolete)
	}
}

// Refs returns the reference count (for tests and metrics).
func (v *Version) Refs() int32 { return v.refs.Load() }

// NumFiles returns the number of tables at a level.
func (v *Version) NumFiles(level int) int { return len(v.Levels[level]) }

// LevelSize returns the bytes of all tables at a level.
func (v *Version) LevelSize(level int) uint64 {
	var s uint64
	for _, f := range v.Levels[level] {
		s += f.Size
	}
	return s
}

// TotalSize returns the bytes of all tables.
func (v *Version) TotalSize() uint64 {
	var s uint64
	for l := range v.Levels {
		s += v.LevelSize(l)
	}
	return s
}

// Overlaps returns the tables at level whose user-key range intersects
// [smallest, largest] (inclusive; nil = unbounded). For L0 the range is
// not widened; callers that need the transitive closure do that themselves.
func (v *Version) Overlaps(level int, smallest, largest []byte) []*FileMetadata {
	files := v.Levels[level]
	if level == 0 {
		var out []*FileMetadata
		for _, f := range files {
			if f.overlapsUser(smallest, largest) {
				out = append(out, f)
			}
		}
		return out
	}
	lo := 0
	if smallest != nil {
		lo = sort.Search(len(files), func(i int) bool {
			return bytes.Compare(files[i].Largest.UserKey, smallest) >= 0
		})
	}
	hi := lo
	for hi < len(files) && files[hi].overlapsUser(smallest, largest) {
		hi++
	}
	return files[lo:hi:hi]
}

// FindFile returns the index of the first table at level (>= 1) whose
// largest user key is >= key, or len(files).
func FindFile(files []*FileMetadata, key []byte) int {
	return sort.Search(len(files), func(i int) bool {
		return bytes.Compare(files[i].Largest.UserKey, key) >= 0
	})
}

// CheckOrdering verifies the level invariants: every table's smallest key is
// <= its largest; L0 tables are ordered by sequence numbers; L1+ tables are
// sorted and do not share user keys. It returns a description of the first
// violation.
func (v *Version) CheckOrdering() error {
	for level, files := range v.Levels {
		for i, f := range files {
			if base.CompareInternal(f.Smallest, f.Largest) > 0 {
				return fmt.Errorf("L%d table %s: smallest %s > largest %s", level, f.FileNum, f.Smallest, f.Largest)
			}
			if i == 0 {
				continue
			}
			prev := files[i-1]
			if level == 0 {
				if prev.LargestSeq > f.LargestSeq || (prev.LargestSeq == f.LargestSeq && prev.FileNum > f.FileNum) {
					return fmt.Errorf("L0 tables out of order: %s (seqs %d-%d) before %s (seqs %d-%d)",
						prev.FileNum, prev.SmallestSeq, prev.LargestSeq, f.FileNum, f.SmallestSeq, f.LargestSeq)
				}
				continue
			}
			if bytes.Compare(prev.Largest.UserKey, f.Smallest.UserKey) >= 0 {
				return fmt.Errorf("L%d tables overlap: %s and %s", level, prev, f)
			}
		}
	}
	return nil
}

// String lists the tables per level.
func (v *Version) String() string {
	var sb strings.Builder
	for level, files := range v.Levels {
		if len(files) == 0 {
			continue
		}
		fmt.Fprintf(&sb, "L%d:\n", level)
		for _, f := range files {
			fmt.Fprintf(&sb, "  %s size=%d seqs=[%d,%d]\n", f, f.Size, f.SmallestSeq, f.LargestSeq)
		}
	}
	return sb.String()
}

// sortLevel orders a level's tables per the Version invariants.
func sortLevel(level int, files []*FileMetadata) {
	if level == 0 {
		sort.Slice(files, func(i, j int) bool {
			a, b := files[i], files[j]
			if a.LargestSeq != b.LargestSeq {
				return a.LargestSeq < b.LargestSeq
			}
			return a.FileNum < b.FileNum
		})
		return
	}
	sort.Slice(files, func(i, j int) bool {
		return base.CompareInternal(files[i].Smallest, files[j].Smallest) < 0
	})
}

// Apply builds the Version that results from applying edits to v (v may be
// nil for an empty start). It checks that deleted tables exist, added tables
// are new, and the result satisfies CheckOrdering. The result has no
// references yet; the tables it lists gain one.
func Apply(v *Version, onObsolete func([]*FileMetadata), edits ...*VersionEdit) (*Version, error) {
	var levels [NumLevels]map[base.FileNum]*FileMetadata
	for l := range levels {
		levels[l] = make(map[base.FileNum]*FileMetadata)
		if v != nil {
			for _, f := range v.Levels[l] {
				levels[l][f.FileNum] = f
			}
		}
	}
	for _, e := range edits {
		for _, d := range e.DeletedFiles {
			if _, ok := levels[d.Level][d.FileNum]; !ok {
				return nil, fmt.Errorf("edit deletes table %s from L%d, which does not hold it", d.FileNum, d.Level)
			}
			delete(levels[d.Level], d.FileNum)
		}
		for _, n := range e.NewFiles {
			for l := range levels {
				if _, ok := levels[l][n.Meta.FileNum]; ok {
					return nil, fmt.Errorf("edit adds table %s to L%d, but L%d already holds it", n.Meta.FileNum, n.Level, l)
				}
			}
			levels[n.Level][n.Meta.FileNum] = n.Meta
		}
	}
	nv := &Version{onObsolete: onObsolete}
	for l := range levels {
		files := make([]*FileMetadata, 0, len(levels[l]))
		for _, f := range levels[l] {
			files = append(files, f)
		}
		sortLevel(l, files)
		nv.Levels[l] = files
	}
	if err := nv.CheckOrdering(); err != nil {
		return nil, err
	}
	for _, files := range nv.Levels {
		for _, f := range files {
			f.refs.Add(1)
		}
	}
	return nv, nil
}
