package authz

import (
	"bytes"
	"sort"
)

// Range is the keys k with Start <= k < End; a nil End is unbounded.
type Range struct {
	Start, End []byte
}

// Contains reports whether key is in r.
func (r Range) Contains(key []byte) bool {
	return bytes.Compare(key, r.Start) >= 0 && (r.End == nil || bytes.Compare(key, r.End) < 0)
}

// RangeSet is a set of keys as sorted, disjoint, non-adjacent ranges.
// The zero value is empty.
type RangeSet []Range

// PrefixRange is the range of the keys that start with prefix.
func PrefixRange(prefix []byte) Range {
	return Range{Start: bytes.Clone(prefix), End: PrefixEnd(prefix)}
}

// PrefixEnd returns the smallest key greater than every key with the
// prefix, or nil when there is none (the prefix is empty or all 0xff).
func PrefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for len(end) > 0 {
		if end[len(end)-1] < 0xff {
			end[len(end)-1]++
			return end
		}
		end = end[:len(end)-1]
	}
	return nil
}

// endLess orders range ends, nil (unbounded) last.
func endLess(a, b []byte) bool {
	if b == nil {
		return a != nil
	}
	if a == nil {
		return false
	}
	return bytes.Compare(a, b) < 0
}

// empty reports whether r holds no key.
func (r Range) empty() bool { return r.End != nil && bytes.Compare(r.Start, r.End) >= 0 }

// normalize sorts ranges and merges the overlapping and adjacent ones.
func normalize(rs []Range) RangeSet {
	var in []Range
	for _, r := range rs {
		if !r.empty() {
			in = append(in, r)
		}
	}
	sort.Slice(in, func(i, j int) bool { return bytes.Compare(in[i].Start, in[j].Start) < 0 })
	var out RangeSet
	for _, r := range in {
		if n := len(out); n > 0 && (out[n-1].End == nil || bytes.Compare(r.Start, out[n-1].End) <= 0) {
			if endLess(out[n-1].End, r.End) {
				out[n-1].End = r.End
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// Union returns the keys in any of the sets.
func Union(sets ...RangeSet) RangeSet {
	var all []Range
	for _, s := range sets {
		all = append(all, s...)
	}
	return normalize(all)
}

// Intersect returns the keys in both a and b.
func (a RangeSet) Intersect(b RangeSet) RangeSet {
	var out []Range
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		start := a[i].Start
		if bytes.Compare(b[j].Start, start) > 0 {
			start = b[j].Start
		}
		end := a[i].End
		if endLess(b[j].End, end) {
			end = b[j].End
		}
		if r := (Range{Start: start, End: end}); !r.empty() {
			out = append(out, r)
		}
		if endLess(a[i].End, b[j].End) {
			i++
		} else {
			j++
		}
	}
	return normalize(out)
}

// Subtract returns the keys of a that are not in b.
func (a RangeSet) Subtract(b RangeSet) RangeSet {
	return a.Intersect(b.complement())
}

// complement returns every key not in s.
func (s RangeSet) complement() RangeSet {
	var out []Range
	start := []byte{}
	for _, r := range s {
		if bytes.Compare(start, r.Start) < 0 {
			out = append(out, Range{Start: start, End: r.Start})
		}
		if r.End == nil {
			return out
		}
		start = r.End
	}
	return append(out, Range{Start: start})
}

// Contains reports whether key is in the set (a binary search).
func (s RangeSet) Contains(key []byte) bool {
	i := sort.Search(len(s), func(i int) bool { return bytes.Compare(s[i].Start, key) > 0 })
	return i > 0 && s[i-1].Contains(key)
}

// Within returns the part of s inside the keys that start with prefix.
func (s RangeSet) Within(prefix []byte) RangeSet {
	return s.Intersect(RangeSet{PrefixRange(prefix)})
}

// all is every key.
var all = RangeSet{{Start: []byte{}}}
