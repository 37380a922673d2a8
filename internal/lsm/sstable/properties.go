package sstable

import (
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/kayadb/kayadb/internal/lsm/base"
)

// Properties describes a table. They are stored in the properties block.
type Properties struct {
	// NumEntries is the number of entries (of every kind).
	NumEntries uint64
	// NumDeletions is the number of KindDelete entries.
	NumDeletions uint64
	// NumDataBlocks is the number of data blocks.
	NumDataBlocks uint64
	// RawKeySize is the total size of the encoded internal keys (user key +
	// 8-byte trailer), before prefix compression.
	RawKeySize uint64
	// RawValueSize is the total size of the values.
	RawValueSize uint64
	// SmallestSeq and LargestSeq bound the entries' sequence numbers.
	SmallestSeq, LargestSeq base.SeqNum
	// IndexSize is the stored size of the index block (without trailer).
	IndexSize uint64
	// FilterSize is the size of the filter block (without trailer); 0 when
	// the table has no filter.
	FilterSize uint64
	// FilterBitsPerKey is the bloom filter's bits per key; 0 for no filter.
	FilterBitsPerKey uint64
	// Compression is the algorithm the writer was configured with. Blocks
	// that did not compress well enough are stored raw regardless.
	Compression Compression
	// FormatVersion is the table format version.
	FormatVersion uint32
}

// Property names, as stored.
const (
	propCompression      = "compression"
	propFilterBitsPerKey = "filter_bits_per_key"
	propFilterSize       = "filter_size"
	propFormatVersion    = "format_version"
	propIndexSize        = "index_size"
	propLargestSeq       = "largest_seq"
	propNumDataBlocks    = "num_data_blocks"
	propNumDeletions     = "num_deletions"
	propNumEntries       = "num_entries"
	propRawKeySize       = "raw_key_size"
	propRawValueSize     = "raw_value_size"
	propSmallestSeq      = "smallest_seq"
)

// encode builds the properties block.
func (p *Properties) encode() []byte {
	type kv struct {
		name string
		val  []byte
	}
	u := func(v uint64) []byte { return binary.AppendUvarint(nil, v) }
	props := []kv{
		{propCompression, []byte(p.Compression.String())},
		{propFilterBitsPerKey, u(p.FilterBitsPerKey)},
		{propFilterSize, u(p.FilterSize)},
		{propFormatVersion, u(uint64(p.FormatVersion))},
		{propIndexSize, u(p.IndexSize)},
		{propLargestSeq, u(uint64(p.LargestSeq))},
		{propNumDataBlocks, u(p.NumDataBlocks)},
		{propNumDeletions, u(p.NumDeletions)},
		{propNumEntries, u(p.NumEntries)},
		{propRawKeySize, u(p.RawKeySize)},
		{propRawValueSize, u(p.RawValueSize)},
		{propSmallestSeq, u(uint64(p.SmallestSeq))},
	}
	sort.Slice(props, func(i, j int) bool { return props[i].name < props[j].name })
	bw := blockWriter{restartInterval: 1}
	for _, kv := range props {
		bw.add([]byte(kv.name), kv.val)
	}
	return bw.finish()
}

// decodeProperties parses a properties block. Unknown names are ignored;
// every known name must be present.
func decodeProperties(data []byte, file string, off int64) (Properties, error) {
	var p Properties
	var it blockIter
	if err := it.init(data, false, file, off); err != nil {
		return p, err
	}
	const all = 1<<12 - 1
	seen := 0
	for ok := it.first(); ok; ok = it.next() {
		name, val := string(it.key), it.val
		var dst *uint64
		var bit int
		switch name {
		case propCompression:
			c, err := ParseCompression(string(val))
			if err != nil {
				return p, base.CorruptionErrorf(file, off, "bad compression property %q", val)
			}
			p.Compression = c
			seen |= 1 << 0
			continue
		case propFilterBitsPerKey:
			dst, bit = &p.FilterBitsPerKey, 1
		case propFilterSize:
			dst, bit = &p.FilterSize, 2
		case propFormatVersion:
			var v uint64
			dst, bit = &v, 3
			if err := decodeUvarintProp(val, dst); err != nil {
				return p, base.CorruptionErrorf(file, off, "property %s: %v", name, err)
			}
			if v > 1<<32-1 {
				return p, base.CorruptionErrorf(file, off, "property %s: %d out of range", name, v)
			}
			p.FormatVersion = uint32(v)
			seen |= 1 << bit
			continue
		case propIndexSize:
			dst, bit = &p.IndexSize, 4
		case propLargestSeq:
			dst, bit = (*uint64)(&p.LargestSeq), 5
		case propNumDataBlocks:
			dst, bit = &p.NumDataBlocks, 6
		case propNumDeletions:
			dst, bit = &p.NumDeletions, 7
		case propNumEntries:
			dst, bit = &p.NumEntries, 8
		case propRawKeySize:
			dst, bit = &p.RawKeySize, 9
		case propRawValueSize:
			dst, bit = &p.RawValueSize, 10
		case propSmallestSeq:
			dst, bit = (*uint64)(&p.SmallestSeq), 11
		default:
			continue
		}
		if err := decodeUvarintProp(val, dst); err != nil {
			return p, base.CorruptionErrorf(file, off, "property %s: %v", name, err)
		}
		seen |= 1 << bit
	}
	if it.err != nil {
		return p, it.err
	}
	if seen != all {
		return p, base.CorruptionErrorf(file, off, "properties block lacks required properties (found mask %#x)", seen)
	}
	if p.SmallestSeq > p.LargestSeq || p.LargestSeq > base.SeqNumMax {
		return p, base.CorruptionErrorf(file, off, "bad sequence number range [%d, %d]", p.SmallestSeq, p.LargestSeq)
	}
	if p.NumDeletions > p.NumEntries {
		return p, base.CorruptionErrorf(file, off, "num_deletions %d > num_entries %d", p.NumDeletions, p.NumEntries)
	}
	return p, nil
}

func decodeUvarintProp(val []byte, dst *uint64) error {
	v, n := binary.Uvarint(val)
	if n <= 0 || n != len(val) {
		return fmt.Errorf("bad uvarint %x", val)
	}
	*dst = v
	return nil
}
