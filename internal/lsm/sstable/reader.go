package sstable

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/cache"
)

// ReaderOptions configures a Reader.
type ReaderOptions struct {
	// Cache caches decompressed data blocks under (CacheID, FileNum, block
	// offset). It may be nil: then every block read goes to the file.
	Cache *cache.Cache
	// CacheID is the cache namespace of the owning DB (Cache.NewID).
	CacheID uint64
	// FileNum is the table's file number, part of the cache key.
	FileNum base.FileNum
	// FileName names the file in error messages.
	FileName string
	// Sealer opens the blocks of an encrypted table. Nil: an encrypted
	// table fails Open with an error naming its key id (plain tables need
	// no Sealer).
	Sealer *crypt.Sealer
}

// ReadableFile is what a Reader reads from. ReadAt must be safe for
// concurrent use.
type ReadableFile interface {
	io.ReaderAt
	io.Closer
}

// Reader reads one table. It is safe for concurrent use; the index and the
// filter are kept decoded in memory, data blocks go through the cache.
type Reader struct {
	f    ReadableFile
	size int64
	opts ReaderOptions

	footer     footer
	props      Properties
	index      indexBlock
	filter     bloomFilter
	filterBH   blockHandle
	propsBH    blockHandle
	hasFilter  bool
	closed     atomic.Bool
	dataEnd    uint64 // end of the last data block's trailer
	ignoreCRC  bool   // testing only: lets fuzzers reach the decoders
	getterPool sync.Pool
}

// indexBlock is the decoded index: separator keys and data block handles.
//
// To make the binary search cheap and cache-friendly, it also keeps the
// length of the prefix shared by all separator user keys and, per
// separator, the next 8 bytes of its user key after that prefix as a
// big-endian integer (zero-padded). Comparing these heads decides most
// steps of a search with one integer comparison.
type indexBlock struct {
	keys      []byte   // concatenated separator keys
	offs      []uint32 // key i is keys[offs[i]:offs[i+1]]
	handles   []blockHandle
	prefixLen int
	heads     []uint64
}

// loadHead returns the first 8 bytes of b, zero-padded, as a big-endian
// integer. For byte strings a and b, loadHead(a) < loadHead(b) implies
// a < b.
func loadHead(b []byte) uint64 {
	if len(b) >= 8 {
		return binary.BigEndian.Uint64(b)
	}
	var t [8]byte
	copy(t[:], b)
	return binary.BigEndian.Uint64(t[:])
}

// initHeads computes prefixLen and heads.
func (x *indexBlock) initHeads() {
	n := len(x.handles)
	a, b := x.userKey(0), x.userKey(n-1)
	p := 0
	for p < len(a) && p < len(b) && a[p] == b[p] {
		p++
	}
	x.prefixLen = p
	x.heads = make([]uint64, n)
	for i := range x.heads {
		x.heads[i] = loadHead(x.userKey(i)[p:])
	}
}

func (x *indexBlock) len() int { return len(x.handles) }

func (x *indexBlock) key(i int) []byte { return x.keys[x.offs[i]:x.offs[i+1]] }

// userKey returns the user key of separator i.
func (x *indexBlock) userKey(i int) []byte {
	k := x.key(i)
	return k[:len(k)-8]
}

// search returns the first block whose separator is >= (uk, trailer), or
// len() if there is none. Only that block and the ones after it can hold
// entries >= (uk, trailer).
func (x *indexBlock) search(uk []byte, trailer uint64) int {
	n := len(x.handles)
	if p := x.keys[:x.prefixLen]; len(uk) < len(p) || !bytes.Equal(uk[:len(p)], p) {
		// Every separator user key starts with p.
		if bytes.Compare(uk, p) < 0 {
			return 0
		}
		return n
	}
	h := loadHead(uk[x.prefixLen:])
	heads := x.heads
	lo, hi := 0, n
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if heads[mid] < h {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == n || heads[lo] != h {
		return lo
	}
	// Separators [lo, hi) have the same head as uk: compare them fully.
	hi = n
	for l := lo; l < hi; {
		mid := int(uint(l+hi) >> 1)
		if heads[mid] <= h {
			l = mid + 1
		} else {
			hi = mid
		}
	}
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if compareSearch(x.keys[x.offs[mid]:x.offs[mid+1]], uk, trailer) < 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// decodeIndexBlock decodes an index block. It checks the block structure and
// separator order, and that every value is exactly one block handle; the
// handles themselves are checked by the caller.
func decodeIndexBlock(data []byte, file string, off int64) (indexBlock, error) {
	var x indexBlock
	var it blockIter
	if err := it.init(data, true, file, off); err != nil {
		return x, err
	}
	x.offs = append(x.offs, 0)
	for ok := it.first(); ok; ok = it.next() {
		h, n := decodeBlockHandle(it.val)
		if n <= 0 || n != len(it.val) {
			return indexBlock{}, base.CorruptionErrorf(file, off, "bad block handle in index entry %d", len(x.handles))
		}
		x.keys = append(x.keys, it.key...)
		if uint64(len(x.keys)) > 1<<32-1 {
			return indexBlock{}, base.CorruptionErrorf(file, off, "index block too large")
		}
		x.offs = append(x.offs, uint32(len(x.keys)))
		x.handles = append(x.handles, h)
	}
	if it.err != nil {
		return indexBlock{}, it.err
	}
	if len(x.handles) == 0 {
		return indexBlock{}, base.CorruptionErrorf(file, off, "empty index block")
	}
	x.initHeads()
	return x, nil
}

// Open opens a table of the given size. It reads and verifies the footer,
// the metaindex, properties and index blocks and the filter, and keeps the
// index and filter in memory. On error f is not closed. An encrypted table
// whose key is missing or wrong fails here (the meta blocks are opened),
// with an error naming the file, the block's offset and the key id.
func Open(f ReadableFile, size int64, opts ReaderOptions) (*Reader, error) {
	return open(f, size, opts, false)
}

func open(f ReadableFile, size int64, opts ReaderOptions, ignoreCRC bool) (*Reader, error) {
	r := &Reader{f: f, size: size, opts: opts, ignoreCRC: ignoreCRC}
	file := opts.FileName
	if size < footerLen {
		return nil, base.CorruptionErrorf(file, 0, "file of %d bytes is too small for the %d-byte table footer", size, footerLen)
	}
	ft, footOff, err := r.readFooter()
	if err != nil {
		return nil, err
	}
	r.footer = ft
	if ft.encrypted() {
		if opts.Sealer == nil {
			return nil, fmt.Errorf("sstable %s is encrypted (key id %d) and no encryption key was given: use --encryption-keyring-file (or --encryption-key-file) holding that key: %w",
				file, ft.keyID, &crypt.KeyError{ID: ft.keyID, Err: crypt.ErrUnknownKey})
		}
		if !opts.Sealer.Keyring().Has(ft.keyID) {
			return nil, fmt.Errorf("sstable %s: %w", file, &crypt.KeyError{ID: ft.keyID, Err: crypt.ErrUnknownKey})
		}
	}

	// The blocks tile the file: ... filter | properties | index | metaindex | footer.
	if err := r.checkHandle(ft.metaindex, uint64(footOff), "metaindex", footOff); err != nil {
		return nil, err
	}
	if ft.metaindex.end() != uint64(footOff) {
		return nil, base.CorruptionErrorf(file, footOff, "metaindex block %+v does not end at the footer", ft.metaindex)
	}
	if err := r.checkHandle(ft.index, ft.metaindex.offset, "index", footOff); err != nil {
		return nil, err
	}
	if ft.index.end() != ft.metaindex.offset {
		return nil, base.CorruptionErrorf(file, footOff, "index block %+v does not end at the metaindex block", ft.index)
	}

	metaData, err := r.readMetaBlock(ft.metaindex, false, kindMetaindex)
	if err != nil {
		return nil, err
	}
	if err := r.parseMetaindex(metaData); err != nil {
		return nil, err
	}

	propsData, err := r.readMetaBlock(r.propsBH, false, kindProperties)
	if err != nil {
		return nil, err
	}
	if r.props, err = decodeProperties(propsData, file, int64(r.propsBH.offset)); err != nil {
		return nil, err
	}

	indexData, err := r.readMetaBlock(ft.index, true, kindIndex)
	if err != nil {
		return nil, err
	}
	if r.index, err = decodeIndexBlock(indexData, file, int64(ft.index.offset)); err != nil {
		return nil, err
	}
	r.dataEnd = r.propsBH.offset
	if r.hasFilter {
		r.dataEnd = r.filterBH.offset
	}
	// Data blocks tile [0, dataEnd).
	next := uint64(0)
	for i, h := range r.index.handles {
		if h.offset != next || h.length > r.dataEnd-next || r.dataEnd-next-h.length < blockTrailerLen {
			return nil, base.CorruptionErrorf(file, int64(ft.index.offset), "index entry %d: bad data block handle %+v (expected offset %d, data ends at %d)", i, h, next, r.dataEnd)
		}
		next = h.end()
	}
	if next != r.dataEnd {
		return nil, base.CorruptionErrorf(file, int64(ft.index.offset), "data blocks end at %d, but the next block starts at %d", next, r.dataEnd)
	}

	p := &r.props
	switch {
	case p.FormatVersion != ft.version:
		err = fmt.Errorf("format_version %d disagrees with the footer's %d", p.FormatVersion, ft.version)
	case p.NumDataBlocks != uint64(r.index.len()):
		err = fmt.Errorf("num_data_blocks %d but the index has %d entries", p.NumDataBlocks, r.index.len())
	case p.IndexSize != ft.index.length:
		err = fmt.Errorf("index_size %d but the index block is %d bytes", p.IndexSize, ft.index.length)
	case p.FilterSize != r.filterBH.length:
		err = fmt.Errorf("filter_size %d but the filter block is %d bytes", p.FilterSize, r.filterBH.length)
	case (p.FilterBitsPerKey != 0) != r.hasFilter:
		err = fmt.Errorf("filter_bits_per_key %d disagrees with the presence of a filter", p.FilterBitsPerKey)
	case p.NumEntries < p.NumDataBlocks:
		err = fmt.Errorf("num_entries %d < num_data_blocks %d", p.NumEntries, p.NumDataBlocks)
	case !p.Compression.valid():
		err = fmt.Errorf("unknown compression %d", p.Compression)
	}
	if err != nil {
		return nil, base.CorruptionErrorf(file, int64(r.propsBH.offset), "properties: %v", err)
	}

	if r.hasFilter {
		fd, err := r.readMetaBlock(r.filterBH, false, kindFilter)
		if err != nil {
			return nil, err
		}
		if r.filter, err = decodeBloomFilter(fd); err != nil {
			return nil, base.CorruptionErrorf(file, int64(r.filterBH.offset), "%v", err)
		}
	}
	return r, nil
}

// readFooter reads and decodes the footer; it returns it with its offset.
func (r *Reader) readFooter() (footer, int64, error) {
	file, size := r.opts.FileName, r.size
	if size < footerLen {
		return footer{}, 0, base.CorruptionErrorf(file, 0, "file of %d bytes is too small for the %d-byte table footer", size, footerLen)
	}
	n := min(size, footerLenEncrypted)
	var fb [footerLenEncrypted]byte
	tail := fb[:n]
	if err := r.readAt(tail, size-n); err != nil {
		return footer{}, 0, err
	}
	if r.ignoreCRC && len(tail) >= footerLen {
		// Testing only: recompute the CRC of whichever footer the version
		// field selects.
		t := len(tail) - footerTailLen
		fl := footerLen
		if binary.LittleEndian.Uint32(tail[t:]) == FormatVersionEncrypted && len(tail) >= footerLenEncrypted {
			fl = footerLenEncrypted
		}
		binary.LittleEndian.PutUint32(tail[t+4:], base.MaskedCRC(tail[len(tail)-fl:t+4]))
	}
	ft, err := decodeFooter(tail, file, size-n)
	if err != nil {
		return footer{}, 0, err
	}
	return ft, size - int64(ft.size()), nil
}

// Encryption returns the key id of an encrypted table, and whether the
// table is encrypted at all.
func (r *Reader) Encryption() (crypt.KeyID, bool) { return r.footer.keyID, r.footer.encrypted() }

// TableEncryption reads only the footer of the table in f (of the given
// size) and returns its key id and whether it is encrypted: reporting
// tools use it without any key.
func TableEncryption(f io.ReaderAt, size int64, fileName string) (crypt.KeyID, bool, error) {
	r := &Reader{f: readerAtCloser{f}, size: size, opts: ReaderOptions{FileName: fileName}}
	ft, _, err := r.readFooter()
	if err != nil {
		return 0, false, err
	}
	return ft.keyID, ft.encrypted(), nil
}

type readerAtCloser struct{ io.ReaderAt }

func (readerAtCloser) Close() error { return nil }

// unseal opens the sealed stored bytes of the block of kind k at handle h
// into dst (which may be stored[crypt.KeyIDSize+crypt.NonceSize:][:0] to
// decrypt in place). In a plain table it returns stored unchanged.
func (r *Reader) unseal(stored []byte, h blockHandle, k blockKind, dst []byte) ([]byte, error) {
	if !r.footer.encrypted() {
		return stored, nil
	}
	id, err := crypt.EnvelopeKey(stored)
	if err != nil {
		return nil, base.CorruptionErrorf(r.opts.FileName, int64(h.offset), "sealed %s block of %d bytes is shorter than an envelope (%d)", k, len(stored), crypt.Overhead)
	}
	if id != r.footer.keyID {
		return nil, base.CorruptionErrorf(r.opts.FileName, int64(h.offset), "%s block sealed with key id %d in a table whose footer names key id %d", k, id, r.footer.keyID)
	}
	var aad [blockAADLen]byte
	plain, err := r.opts.Sealer.Open(dst, stored, blockAAD(&aad, k, h.offset))
	if err != nil {
		return nil, &BlockKeyError{File: r.opts.FileName, Offset: int64(h.offset), Kind: k.String(), KeyID: id, Err: err}
	}
	return plain, nil
}

// inPlace returns the destination that decrypts stored over itself.
func inPlace(stored []byte) []byte {
	if len(stored) < crypt.KeyIDSize+crypt.NonceSize {
		return nil
	}
	return stored[crypt.KeyIDSize+crypt.NonceSize : crypt.KeyIDSize+crypt.NonceSize]
}

// checkHandle checks that h's block and trailer lie in [0, limit).
func (r *Reader) checkHandle(h blockHandle, limit uint64, what string, errOff int64) error {
	if h.offset > limit || h.length > limit-h.offset || limit-h.offset-h.length < blockTrailerLen {
		return base.CorruptionErrorf(r.opts.FileName, errOff, "%s block handle (offset %d, length %d) lies outside [0, %d)", what, h.offset, h.length, limit)
	}
	return nil
}

// parseMetaindex finds the filter and properties handles and checks that
// they tile the space before the index block.
func (r *Reader) parseMetaindex(data []byte) error {
	file, off := r.opts.FileName, int64(r.footer.metaindex.offset)
	var it blockIter
	if err := it.init(data, false, file, off); err != nil {
		return err
	}
	hasProps := false
	for ok := it.first(); ok; ok = it.next() {
		var dst *blockHandle
		switch string(it.key) {
		case metaFilterName:
			dst, r.hasFilter = &r.filterBH, true
		case metaPropertiesName:
			dst, hasProps = &r.propsBH, true
		default:
			continue
		}
		h, n := decodeBlockHandle(it.val)
		if n <= 0 || n != len(it.val) {
			return base.CorruptionErrorf(file, off, "bad block handle for %q", it.key)
		}
		*dst = h
	}
	if it.err != nil {
		return it.err
	}
	if !hasProps {
		return base.CorruptionErrorf(file, off, "metaindex has no %q entry", metaPropertiesName)
	}
	if err := r.checkHandle(r.propsBH, r.footer.index.offset, "properties", off); err != nil {
		return err
	}
	if r.propsBH.end() != r.footer.index.offset {
		return base.CorruptionErrorf(file, off, "properties block %+v does not end at the index block", r.propsBH)
	}
	if r.hasFilter {
		if err := r.checkHandle(r.filterBH, r.propsBH.offset, "filter", off); err != nil {
			return err
		}
		if r.filterBH.end() != r.propsBH.offset {
			return base.CorruptionErrorf(file, off, "filter block %+v does not end at the properties block", r.filterBH)
		}
	}
	return nil
}

// readAt fills buf from offset off.
func (r *Reader) readAt(buf []byte, off int64) error {
	n, err := r.f.ReadAt(buf, off)
	if n == len(buf) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return base.CorruptionErrorf(r.opts.FileName, off, "short read: %d of %d bytes (file shorter than its declared size %d?)", n, len(buf), r.size)
	}
	return fmt.Errorf("sstable: reading %s at offset %d: %w", r.opts.FileName, off, err)
}

// verifyBlock checks the trailer of raw (stored bytes + 5-byte trailer) read
// for handle h and returns the stored bytes and compression.
func (r *Reader) verifyBlock(raw []byte, h blockHandle) ([]byte, Compression, error) {
	n := int(h.length)
	if !r.ignoreCRC {
		stored := binary.LittleEndian.Uint32(raw[n+1:])
		computed := base.NewCRC(raw[:n+1]).Value()
		if stored != computed {
			return nil, 0, base.CorruptionErrorf(r.opts.FileName, int64(h.offset), "block checksum mismatch: expected %#08x, computed %#08x (block length %d)", stored, computed, n)
		}
	}
	typ := Compression(raw[n])
	if !typ.valid() {
		return nil, 0, base.CorruptionErrorf(r.opts.FileName, int64(h.offset), "unknown block compression type %d", raw[n])
	}
	return raw[:n:n], typ, nil
}

// readMetaBlock reads, verifies and (if allowed) decompresses a block that
// is not cached. The handle must have been checked.
func (r *Reader) readMetaBlock(h blockHandle, allowCompression bool, k blockKind) ([]byte, error) {
	raw := make([]byte, h.length+blockTrailerLen)
	if err := r.readAt(raw, int64(h.offset)); err != nil {
		return nil, err
	}
	stored, typ, err := r.verifyBlock(raw, h)
	if err != nil {
		return nil, err
	}
	if stored, err = r.unseal(stored, h, k, inPlace(stored)); err != nil {
		return nil, err
	}
	if typ == NoCompression {
		return stored, nil
	}
	if !allowCompression {
		return nil, base.CorruptionErrorf(r.opts.FileName, int64(h.offset), "block must not be compressed (type %s)", typ)
	}
	out, err := decompress(typ, stored, nil)
	if err != nil {
		return nil, base.CorruptionErrorf(r.opts.FileName, int64(h.offset), "decompressing block: %v", err)
	}
	return out, nil
}

// readBufs holds per-iterator buffers for blocks that are not cached.
type readBufs struct {
	raw   []byte // raw (stored + trailer) reads
	dec   []byte // decompressed blocks
	plain []byte // opened blocks of an encrypted table read ahead
	ra    []byte // read-ahead window for sequential reads
	raOff uint64
	raLen int // valid bytes in ra
}

const readaheadSize = 256 << 10

// readDataBlock returns data block i, from the cache when possible.
//
// When bufs is nil or fillCache is true, the returned block is freshly
// allocated (or from the cache) and never modified afterwards. Otherwise it
// may live in bufs and is valid until the next call with the same bufs.
func (r *Reader) readDataBlock(i int, fillCache, sequential bool, bufs *readBufs) ([]byte, error) {
	return r.readDataBlockFrom(i, true, fillCache, sequential, bufs)
}

// readDataBlockFrom is readDataBlock; useCache false bypasses the cache.
func (r *Reader) readDataBlockFrom(i int, useCache, fillCache, sequential bool, bufs *readBufs) ([]byte, error) {
	h := r.index.handles[i]
	c := r.opts.Cache
	if !useCache {
		c = nil
	}
	if c != nil {
		if b := c.Get(r.opts.CacheID, r.opts.FileNum, h.offset); b != nil {
			return b, nil
		}
	} else {
		fillCache = false
	}
	fresh := bufs == nil || fillCache // the result must be a private, stable buffer
	need := int(h.length) + blockTrailerLen

	var raw []byte
	switch {
	case sequential && bufs != nil:
		if h.offset < bufs.raOff || h.offset+uint64(need) > bufs.raOff+uint64(bufs.raLen) {
			n := max(need, readaheadSize)
			n = int(min(uint64(n), r.dataEnd-h.offset))
			if cap(bufs.ra) < n {
				bufs.ra = make([]byte, n)
			}
			bufs.ra = bufs.ra[:n]
			bufs.raLen = 0
			if err := r.readAt(bufs.ra, int64(h.offset)); err != nil {
				return nil, err
			}
			bufs.raOff, bufs.raLen = h.offset, n
		}
		s := int(h.offset - bufs.raOff)
		raw = bufs.ra[s : s+need]
	case !fresh:
		if cap(bufs.raw) < need {
			bufs.raw = make([]byte, need)
		}
		raw = bufs.raw[:need]
		if err := r.readAt(raw, int64(h.offset)); err != nil {
			return nil, err
		}
	default:
		raw = make([]byte, need)
		if err := r.readAt(raw, int64(h.offset)); err != nil {
			return nil, err
		}
	}
	stored, typ, err := r.verifyBlock(raw, h)
	if err != nil {
		return nil, err
	}
	inReadahead := sequential && bufs != nil
	if r.footer.encrypted() {
		// Decrypt in place, except in the read-ahead buffer, whose bytes
		// a later read of the same block must find sealed.
		dst := inPlace(stored)
		if inReadahead {
			dst = nil
			if !fresh {
				dst = bufs.plain[:0]
			}
		}
		if stored, err = r.unseal(stored, h, kindData, dst); err != nil {
			return nil, err
		}
		if inReadahead && !fresh && cap(stored) > cap(bufs.plain) {
			bufs.plain = stored
		}
		inReadahead = false
	}
	var block []byte
	if typ == NoCompression {
		block = stored
		if fresh && inReadahead {
			block = append([]byte(nil), stored...) // the read-ahead buffer is reused
		}
	} else {
		var dst []byte
		if !fresh {
			dst = bufs.dec
		}
		block, err = decompress(typ, stored, dst)
		if err != nil {
			return nil, base.CorruptionErrorf(r.opts.FileName, int64(h.offset), "decompressing block: %v", err)
		}
		if !fresh && cap(block) > cap(bufs.dec) {
			bufs.dec = block
		}
	}
	if fillCache {
		c.Set(r.opts.CacheID, r.opts.FileNum, h.offset, block)
	}
	return block, nil
}

// Close closes the file. The Reader must not be used afterwards, and all its
// iterators must have been closed.
func (r *Reader) Close() error {
	if r.closed.Swap(true) {
		return base.ErrClosed
	}
	return r.f.Close()
}

// Properties returns the table's properties.
func (r *Reader) Properties() Properties { return r.props }

// MayContain reports whether the table may hold an entry for userKey, by
// the bloom filter. It returns true when the table has no filter.
func (r *Reader) MayContain(userKey []byte) bool {
	return r.filter.mayContain(userKey)
}

// getter is the per-call scratch space of Get, pooled.
type getter struct {
	it blockIter
}

// Get returns the newest entry for userKey with a sequence number <=
// readSeq; its kind may be KindDelete. found is false when there is none.
// The bloom filter is checked first. The returned value may alias a cached
// block: the caller must not modify it, and must copy it to keep it. On a
// cache hit Get does not allocate.
func (r *Reader) Get(userKey []byte, readSeq base.SeqNum) (value []byte, kind base.Kind, found bool, err error) {
	if !r.filter.mayContain(userKey) {
		return nil, 0, false, nil
	}
	readSeq = min(readSeq, base.SeqNumMax)
	trailer := base.MakeTrailer(readSeq, base.KindMax)
	idx := r.index.search(userKey, trailer)
	if idx >= r.index.len() {
		return nil, 0, false, nil
	}
	g, _ := r.getterPool.Get().(*getter)
	if g == nil {
		g = new(getter)
	}
	value, kind, found, err = r.get(g, idx, userKey, trailer)
	g.it.data, g.it.key, g.it.val = nil, nil, nil
	r.getterPool.Put(g)
	return value, kind, found, err
}

func (r *Reader) get(g *getter, idx int, userKey []byte, trailer uint64) ([]byte, base.Kind, bool, error) {
	it := &g.it
	for first := true; idx < r.index.len(); idx, first = idx+1, false {
		block, err := r.readDataBlock(idx, true, false, nil)
		if err != nil {
			return nil, 0, false, err
		}
		if err := it.init(block, true, r.opts.FileName, int64(r.index.handles[idx].offset)); err != nil {
			return nil, 0, false, err
		}
		var ok bool
		if first {
			ok = it.seekGE(userKey, trailer)
		} else {
			ok = it.first()
		}
		if ok {
			k := it.key
			n := len(k) - 8
			if !bytes.Equal(k[:n], userKey) {
				return nil, 0, false, nil
			}
			return it.val, base.Kind(k[n]), true, nil
		}
		if it.err != nil {
			return nil, 0, false, it.err
		}
		// Every entry of this block is < the search key: the answer, if
		// any, is the first entry of the next block.
	}
	return nil, 0, false, nil
}
