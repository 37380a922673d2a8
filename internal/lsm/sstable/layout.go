package sstable

import (
	"fmt"
	"strings"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/lsm/base"
)

// BlockInfo describes one block of a table file.
type BlockInfo struct {
	// Kind is "data", "filter", "properties", "index", "metaindex" or
	// "footer".
	Kind string
	// Offset is where the block starts in the file.
	Offset uint64
	// Length is the stored length, without the 5-byte trailer (the footer's
	// length is 57).
	Length uint64
	// Compression is the block's compression (from its trailer).
	Compression Compression
	// KeyID is the key that sealed the block, when Encrypted.
	KeyID     crypt.KeyID
	Encrypted bool
}

// Layout lists a table's blocks in file order.
type Layout struct {
	// FileSize is the table's size.
	FileSize uint64
	// Blocks are the blocks in file order, ending with the footer.
	Blocks []BlockInfo
}

// String renders the layout one block per line.
func (l Layout) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "file size %d\n", l.FileSize)
	for _, b := range l.Blocks {
		fmt.Fprintf(&sb, "%10d %-10s length %d compression %s", b.Offset, b.Kind, b.Length, b.Compression)
		if b.Encrypted {
			fmt.Fprintf(&sb, " encrypted key %d", b.KeyID)
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}

// Layout returns the table's blocks (for inspection tools). It reads each
// block's trailer to learn its compression.
func (r *Reader) Layout() (Layout, error) {
	l := Layout{FileSize: uint64(r.size)}
	add := func(kind string, h blockHandle) error {
		var tr [blockTrailerLen]byte
		if err := r.readAt(tr[:], int64(h.offset+h.length)); err != nil {
			return err
		}
		l.Blocks = append(l.Blocks, BlockInfo{Kind: kind, Offset: h.offset, Length: h.length, Compression: Compression(tr[0]),
			KeyID: r.footer.keyID, Encrypted: r.footer.encrypted()})
		return nil
	}
	for _, h := range r.index.handles {
		if err := add("data", h); err != nil {
			return Layout{}, err
		}
	}
	if r.hasFilter {
		if err := add("filter", r.filterBH); err != nil {
			return Layout{}, err
		}
	}
	for _, b := range []struct {
		kind string
		h    blockHandle
	}{{"properties", r.propsBH}, {"index", r.footer.index}, {"metaindex", r.footer.metaindex}} {
		if err := add(b.kind, b.h); err != nil {
			return Layout{}, err
		}
	}
	fl := r.footer.size()
	l.Blocks = append(l.Blocks, BlockInfo{Kind: "footer", Offset: uint64(r.size - int64(fl)), Length: uint64(fl), KeyID: r.footer.keyID, Encrypted: r.footer.encrypted()})
	return l, nil
}

// ValidateChecksums reads every block of the table from the file (bypassing
// the cache), verifies its checksum and decodes it, checking the structure
// of every data block: entry encoding, restart points, key order, and that
// each block's keys lie between the neighbouring index separators.
func (r *Reader) ValidateChecksums() error {
	file := r.opts.FileName
	if _, _, err := r.readFooter(); err != nil {
		return err
	}
	type meta struct {
		h        blockHandle
		compress bool
		kind     blockKind
	}
	metas := []meta{{r.footer.metaindex, false, kindMetaindex}, {r.footer.index, true, kindIndex}, {r.propsBH, false, kindProperties}}
	if r.hasFilter {
		metas = append(metas, meta{r.filterBH, false, kindFilter})
	}
	for _, m := range metas {
		if _, err := r.readMetaBlock(m.h, m.compress, m.kind); err != nil {
			return err
		}
	}
	var it blockIter
	var bufs readBufs
	x := &r.index
	var entries uint64
	for bi, h := range x.handles {
		data, err := r.readDataBlockFrom(bi, false, false, true, &bufs)
		if err != nil {
			return err
		}
		off := int64(h.offset)
		if err := it.init(data, true, file, off); err != nil {
			return err
		}
		n, first, last, err := it.validate()
		if err != nil {
			return err
		}
		if n == 0 {
			return base.CorruptionErrorf(file, off, "empty data block %d", bi)
		}
		if bi > 0 && base.CompareEncoded(first, x.key(bi-1)) <= 0 {
			return base.CorruptionErrorf(file, off, "first key of data block %d is not above the previous separator", bi)
		}
		if base.CompareEncoded(last, x.key(bi)) > 0 {
			return base.CorruptionErrorf(file, off, "last key of data block %d is above its separator", bi)
		}
		entries += uint64(n)
	}
	if entries != r.props.NumEntries {
		return base.CorruptionErrorf(file, int64(r.propsBH.offset), "num_entries %d but the data blocks hold %d entries", r.props.NumEntries, entries)
	}
	return nil
}

// validate checks the whole structure of an initialized internal-key block:
// restart points strictly increasing, each at an entry boundary and holding
// a whole key, and every entry well formed and in order. It returns the
// number of entries and copies of the first and last keys.
func (i *blockIter) validate() (n int, first, last []byte, err error) {
	if i.err != nil {
		return 0, nil, nil, i.err
	}
	for j := 0; j < i.numRestarts; j++ {
		if j > 0 && i.restart(j) <= i.restart(j-1) {
			return 0, nil, nil, base.CorruptionErrorf(i.file, i.blockOff, "restart points not increasing at %d", j)
		}
		if _, ok := i.restartKey(j); !ok {
			return 0, nil, nil, i.err
		}
	}
	rj := 0
	for ok := i.first(); ok; ok = i.next() {
		if rj < i.numRestarts {
			if r := i.restart(rj); i.offset == r {
				rj++
			} else if i.offset > r {
				return 0, nil, nil, base.CorruptionErrorf(i.file, i.blockOff, "restart point %d (offset %d) is not at an entry boundary", rj, r)
			}
		}
		if n == 0 {
			first = append([]byte(nil), i.key...)
		}
		n++
	}
	if i.err != nil {
		return 0, nil, nil, i.err
	}
	if rj != i.numRestarts && !(n == 0 && i.numRestarts == 1) {
		return 0, nil, nil, base.CorruptionErrorf(i.file, i.blockOff, "restart point %d does not start an entry", rj)
	}
	if n > 0 {
		last = append([]byte(nil), i.key...)
	}
	return n, first, last, nil
}
