package sstable

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/lsm/base"
)

const (
	defaultBlockSize       = 4096
	defaultRestartInterval = 16
	defaultBloomBitsPerKey = 10
	writeBufferSize        = 256 << 10
)

// WriterOptions configures a Writer. The zero value is valid: zero fields
// take their defaults, except BloomBitsPerKey, for which 0 means no filter.
type WriterOptions struct {
	// BlockSize is the target uncompressed size of a data block: a block is
	// finished as soon as it reaches this size. Default 4096; values above
	// 32 MiB are treated as 32 MiB.
	BlockSize int
	// BlockRestartInterval is the number of entries between restart points
	// in data blocks. Default 16.
	BlockRestartInterval int
	// BloomBitsPerKey is the bloom filter size per distinct user key; 0 (or
	// less) writes no filter. DefaultWriterOptions sets 10 (about 1% false
	// positives). Values above 100 are treated as 100.
	BloomBitsPerKey int
	// Compression is applied to data blocks and the index block. A
	// compressed block is kept only if it saves at least 12.5%; otherwise it
	// is stored raw.
	Compression Compression
	// Sealer, when set, seals every block (after compression) under the
	// key that is active when the Writer is created, and the table is
	// written in the encrypted format (version 2, its key id in the
	// footer). Nil: a plain table (version 1).
	Sealer *crypt.Sealer
}

// DefaultWriterOptions returns the defaults: 4 KiB blocks, restart interval
// 16, 10 bloom bits per key, no compression.
func DefaultWriterOptions() WriterOptions {
	return WriterOptions{
		BlockSize:            defaultBlockSize,
		BlockRestartInterval: defaultRestartInterval,
		BloomBitsPerKey:      defaultBloomBitsPerKey,
		Compression:          NoCompression,
	}
}

// Metadata describes a finished table. It is valid after Writer.Close.
type Metadata struct {
	// Size is the file size in bytes.
	Size uint64
	// NumEntries and NumDeletions count the table's entries.
	NumEntries, NumDeletions uint64
	// Smallest and Largest are the first and last keys (copies).
	Smallest, Largest base.InternalKey
	// SmallestSeq and LargestSeq bound the entries' sequence numbers.
	SmallestSeq, LargestSeq base.SeqNum
	// Encrypted says whether the table's blocks are sealed, and KeyID with
	// which key.
	Encrypted bool
	KeyID     crypt.KeyID
}

// Writer writes one table to an io.Writer, buffering writes (256 KiB) so
// that the destination sees large sequential writes. Entries must be added
// in strictly increasing internal-key order. A Writer is not safe for
// concurrent use.
type Writer struct {
	w      *bufio.Writer
	opts   WriterOptions
	offset uint64
	err    error
	closed bool

	data  blockWriter
	index blockWriter
	bloom *bloomWriter

	prevKey, curKey []byte // encoded internal keys; prevKey is the last added
	sepBuf          []byte
	compressBuf     []byte
	trailer         [blockTrailerLen]byte
	handleBuf       []byte

	pendingIndex  bool
	pendingHandle blockHandle

	sealer  *crypt.Sealer // nil: plain blocks
	ring    *crypt.Keyring
	sealBuf []byte
	aad     [blockAADLen]byte

	props    Properties
	smallest base.InternalKey
	meta     Metadata
}

// NewWriter returns a Writer that writes a table to w. It does not sync or
// close w. It panics if w is nil.
func NewWriter(w io.Writer, opts WriterOptions) *Writer {
	if w == nil {
		panic("sstable: NewWriter with a nil io.Writer")
	}
	if opts.BlockSize <= 0 {
		opts.BlockSize = defaultBlockSize
	}
	opts.BlockSize = min(opts.BlockSize, maxBlockSize)
	if opts.BlockRestartInterval <= 0 {
		opts.BlockRestartInterval = defaultRestartInterval
	}
	if opts.BloomBitsPerKey < 0 {
		opts.BloomBitsPerKey = 0
	}
	opts.BloomBitsPerKey = min(opts.BloomBitsPerKey, maxBloomBitsKey)
	wr := &Writer{
		w:     bufio.NewWriterSize(w, writeBufferSize),
		opts:  opts,
		data:  blockWriter{restartInterval: opts.BlockRestartInterval},
		index: blockWriter{restartInterval: 1},
	}
	if !opts.Compression.valid() {
		wr.err = base.InvalidArgumentf("sstable: unknown compression %d", uint8(opts.Compression))
	}
	if opts.BloomBitsPerKey > 0 {
		wr.bloom = &bloomWriter{bitsPerKey: opts.BloomBitsPerKey}
	}
	wr.props.Compression = opts.Compression
	wr.props.FilterBitsPerKey = uint64(opts.BloomBitsPerKey)
	wr.props.FormatVersion = FormatVersion
	if opts.Sealer != nil {
		wr.sealer, wr.ring = opts.Sealer, opts.Sealer.Keyring()
		wr.props.FormatVersion = FormatVersionEncrypted
	}
	return wr
}

var errWriterClosed = errors.New("sstable: writer is closed")

// Add appends an entry. key must be strictly greater (in internal order)
// than the previously added key, have a valid kind, and respect
// base.MaxKeySize and base.MaxValueSize; otherwise Add returns an error
// matching base.ErrInvalidArgument and the entry is not added. Errors from
// the underlying writer are sticky.
func (w *Writer) Add(key base.InternalKey, value []byte) error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errWriterClosed
	}
	if !key.Kind().Valid() {
		return base.InvalidArgumentf("sstable: key %s has an unknown kind", key)
	}
	if len(key.UserKey) > base.MaxKeySize {
		return base.InvalidArgumentf("sstable: key of %d bytes exceeds the %d-byte limit", len(key.UserKey), base.MaxKeySize)
	}
	if len(value) > base.MaxValueSize {
		return base.InvalidArgumentf("sstable: value of %d bytes exceeds the %d-byte limit", len(value), base.MaxValueSize)
	}
	w.curKey = key.AppendEncoded(w.curKey[:0])
	first := w.props.NumEntries == 0
	if !first && base.CompareEncoded(w.curKey, w.prevKey) <= 0 {
		prev, _ := base.DecodeInternalKey(w.prevKey)
		return base.InvalidArgumentf("sstable: keys must be added in strictly increasing order: %s after %s", key, prev)
	}
	if w.pendingIndex {
		w.sepBuf = appendSeparator(w.sepBuf[:0], w.prevKey, w.curKey)
		w.addIndexEntry(w.sepBuf)
	}
	if w.bloom != nil && (first || !bytes.Equal(key.UserKey, w.prevKey[:len(w.prevKey)-8])) {
		w.bloom.add(key.UserKey)
	}
	w.data.add(w.curKey, value)

	seq := key.Seq()
	if first {
		w.smallest = key.Clone()
		w.props.SmallestSeq, w.props.LargestSeq = seq, seq
	} else {
		w.props.SmallestSeq = min(w.props.SmallestSeq, seq)
		w.props.LargestSeq = max(w.props.LargestSeq, seq)
	}
	w.props.NumEntries++
	if key.Kind() == base.KindDelete {
		w.props.NumDeletions++
	}
	w.props.RawKeySize += uint64(len(w.curKey))
	w.props.RawValueSize += uint64(len(value))
	w.prevKey, w.curKey = w.curKey, w.prevKey

	if w.data.estimatedSize() >= w.opts.BlockSize {
		w.flushDataBlock()
	}
	return w.err
}

// addIndexEntry adds the pending data block's handle under sep.
func (w *Writer) addIndexEntry(sep []byte) {
	w.handleBuf = appendBlockHandle(w.handleBuf[:0], w.pendingHandle)
	w.index.add(sep, w.handleBuf)
	w.pendingIndex = false
}

// flushDataBlock finishes and writes the current data block.
func (w *Writer) flushDataBlock() {
	raw := w.data.finish()
	h, err := w.writeBlock(raw, w.opts.Compression, kindData)
	w.data.reset()
	if err != nil {
		w.err = err
		return
	}
	w.pendingHandle = h
	w.pendingIndex = true
	w.props.NumDataBlocks++
}

// storedForm returns the bytes to store for raw under compression c, and
// the compression byte for the trailer.
func (w *Writer) storedForm(raw []byte, c Compression) ([]byte, Compression, error) {
	if c == NoCompression {
		return raw, NoCompression, nil
	}
	out, err := compressBlock(c, w.compressBuf, raw)
	if err != nil {
		return nil, 0, err
	}
	if out == nil {
		return raw, NoCompression, nil
	}
	w.compressBuf = out
	return out, c, nil
}

// writeBlock writes raw (compressed with c if worthwhile) plus its trailer.
func (w *Writer) writeBlock(raw []byte, c Compression, k blockKind) (blockHandle, error) {
	stored, typ, err := w.storedForm(raw, c)
	if err != nil {
		return blockHandle{}, err
	}
	return w.writeStored(stored, typ, k)
}

// sealedLen returns the stored length of a block whose (compressed) form
// is n bytes.
func (w *Writer) sealedLen(n int) int {
	if w.sealer != nil {
		return crypt.SealedSize(n)
	}
	return n
}

// writeStored writes already-encoded block bytes (sealed first, in an
// encrypted table) and their trailer.
func (w *Writer) writeStored(stored []byte, typ Compression, k blockKind) (blockHandle, error) {
	if w.sealer != nil {
		w.sealBuf = w.sealer.SealWith(w.ring, w.sealBuf[:0], stored, blockAAD(&w.aad, k, w.offset))
		stored = w.sealBuf
	}
	w.trailer[0] = byte(typ)
	crc := base.NewCRC(stored).Update(w.trailer[:1]).Value()
	binary.LittleEndian.PutUint32(w.trailer[1:], crc)
	if _, err := w.w.Write(stored); err != nil {
		return blockHandle{}, fmt.Errorf("sstable: writing block: %w", err)
	}
	if _, err := w.w.Write(w.trailer[:]); err != nil {
		return blockHandle{}, fmt.Errorf("sstable: writing block trailer: %w", err)
	}
	h := blockHandle{offset: w.offset, length: uint64(len(stored))}
	w.offset += uint64(len(stored)) + blockTrailerLen
	return h, nil
}

// EstimatedSize returns the bytes written so far plus the size of the
// pending data block.
func (w *Writer) EstimatedSize() uint64 {
	return w.offset + uint64(w.data.estimatedSize())
}

// Close finishes the table: it writes the last data block, the filter,
// properties, index and metaindex blocks and the footer, and flushes its
// buffer. It does not sync or close the underlying writer. Closing a writer
// to which nothing was added is an error (tables are never empty).
func (w *Writer) Close() (err error) {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errWriterClosed
	}
	w.closed = true
	defer func() {
		if err != nil {
			w.err = err
		}
	}()
	if w.props.NumEntries == 0 {
		return base.InvalidArgumentf("sstable: cannot finish a table with no entries")
	}
	if w.data.nEntries > 0 {
		w.flushDataBlock()
		if w.err != nil {
			return w.err
		}
	}
	if w.pendingIndex {
		// The last block's separator is its last key: exact bounds let
		// iterators skip the per-key upper-bound check more often, and keep
		// the separators' common prefix long.
		w.addIndexEntry(w.prevKey)
	}

	// Filter block.
	var filterHandle blockHandle
	hasFilter := w.bloom != nil
	if hasFilter {
		filter := w.bloom.finish()
		if filterHandle, err = w.writeStored(filter, NoCompression, kindFilter); err != nil {
			return err
		}
		w.props.FilterSize = filterHandle.length
	}

	// The index block is encoded first so that its size can be recorded in
	// the properties, which precede it in the file.
	indexStored, indexType, err := w.storedForm(w.index.finish(), w.opts.Compression)
	if err != nil {
		return err
	}
	w.props.IndexSize = uint64(w.sealedLen(len(indexStored)))
	propsHandle, err := w.writeStored(w.props.encode(), NoCompression, kindProperties)
	if err != nil {
		return err
	}
	indexHandle, err := w.writeStored(indexStored, indexType, kindIndex)
	if err != nil {
		return err
	}

	// Metaindex block: names sorted.
	meta := blockWriter{restartInterval: 1}
	if hasFilter {
		meta.add([]byte(metaFilterName), appendBlockHandle(nil, filterHandle))
	}
	meta.add([]byte(metaPropertiesName), appendBlockHandle(nil, propsHandle))
	metaHandle, err := w.writeStored(meta.finish(), NoCompression, kindMetaindex)
	if err != nil {
		return err
	}

	ft := footer{metaindex: metaHandle, index: indexHandle, version: w.props.FormatVersion}
	if w.sealer != nil {
		ft.keyID = w.ring.Active()
	}
	fb := ft.encode()
	if _, err := w.w.Write(fb); err != nil {
		return fmt.Errorf("sstable: writing footer: %w", err)
	}
	w.offset += uint64(len(fb))
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("sstable: flushing: %w", err)
	}
	largest, _ := base.DecodeInternalKey(w.prevKey)
	w.meta = Metadata{
		Size:         w.offset,
		NumEntries:   w.props.NumEntries,
		NumDeletions: w.props.NumDeletions,
		Smallest:     w.smallest,
		Largest:      largest.Clone(),
		SmallestSeq:  w.props.SmallestSeq,
		LargestSeq:   w.props.LargestSeq,
		Encrypted:    ft.encrypted(),
		KeyID:        ft.keyID,
	}
	// Release the large buffers; the Writer is done.
	w.data, w.index, w.bloom = blockWriter{}, blockWriter{}, nil
	w.compressBuf, w.sealBuf = nil, nil
	return nil
}

// Metadata returns the finished table's description. It is valid only
// after Close returned nil.
func (w *Writer) Metadata() Metadata { return w.meta }

// appendSeparator appends to dst a short internal key S with
// a <= S < b (a < b, both encoded internal keys).
func appendSeparator(dst, a, b []byte) []byte {
	ua, ub := a[:len(a)-8], b[:len(b)-8]
	n := min(len(ua), len(ub))
	p := 0
	for p < n && ua[p] == ub[p] {
		p++
	}
	if p < n {
		// ua[p] < ub[p] because a < b and the user keys differ at p.
		if ua[p] < 0xff && ua[p]+1 < ub[p] {
			if p+1 < len(ua) {
				dst = append(dst, ua[:p+1]...)
				dst[len(dst)-1]++
				return binary.LittleEndian.AppendUint64(dst, maxTrailer)
			}
		} else {
			// Incrementing ua[p] would reach ub[p]; increment a later byte
			// of ua instead: the result still sorts below ub at position p.
			for j := p + 1; j < len(ua)-1; j++ {
				if ua[j] < 0xff {
					dst = append(dst, ua[:j+1]...)
					dst[len(dst)-1]++
					return binary.LittleEndian.AppendUint64(dst, maxTrailer)
				}
			}
		}
	}
	return append(dst, a...)
}
