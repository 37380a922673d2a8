// Package record implements the chunked, checksummed log format shared by the
// engine's write-ahead log (WAL) and MANIFEST and by the raft log's segments
// (internal/raftlog).
//
// It sits below both (it imports only the neutral leaves crc and errs), so
// that the raft side uses it without importing the LSM packages.
//
// It owns the byte framing only: it never opens files, never syncs, and never
// interprets payloads. It must never return a payload whose checksum failed,
// and never panic on input bytes.
//
// # Format
//
// A log is a sequence of 32 KiB blocks. A record (one payload) is stored as
// one or more chunks; a chunk never crosses a block boundary. When fewer than
// HeaderSize bytes remain in a block, they are zero-filled and the next chunk
// starts in the next block. A chunk:
//
//	+---------+---------+---------+------------+----------------+---------+
//	| CRC (4) | Len (2) | Type (1)| LogNum (4) | SyncOffset (8) | Payload |
//	+---------+---------+---------+------------+----------------+---------+
//	 0         4         6         7            11               19
//
// The fields, all little-endian:
//
//   - CRC: masked CRC-32C (crc.Masked) of bytes 6..19 and the payload.
//   - Len: payload length in this chunk.
//   - Type: 1 FULL (the whole record), 2 FIRST, 3 MIDDLE, 4 LAST.
//   - LogNum: low 32 bits of the log's file number. A chunk whose LogNum does
//     not match belongs to an earlier incarnation of a reused file.
//   - SyncOffset: the log offset up to which the writer knew the log to be
//     durable (synced) when it wrote this chunk.
//
// # Encrypted records
//
// With a crypt.Sealer (SetSealer) a record's payload is sealed as a whole
// (crypt's envelope: key id, nonce, ciphertext, GCM tag) and the envelope
// is chunked like any payload, with the chunk types 0x11 FULL, 0x12 FIRST,
// 0x13 MIDDLE and 0x14 LAST (bit 0x10 set), so that plain and encrypted
// records can share a log and plain logs stay readable. The additional
// data binds the envelope to its log and place:
//
//	"kayadb record v1\x00" | LogNum (u64 LE) | offset of the record's first chunk (u64 LE)
//
// The CRC covers the envelope: a torn tail is told apart from corruption
// without the key. A record whose chunks check out but whose envelope does
// not open (a wrong key, a changed byte, a key missing from the keyring)
// is an error naming the file, the offset and the key id; it is never
// taken for a torn tail, which would drop durable data silently.
//
// # Tails
//
// After a crash the end of the newest log may hold a partially written
// chunk, zeros, or garbage. SyncOffset tells such a torn tail apart from real
// corruption: when the reader meets an invalid chunk at offset X it scans the
// rest of the file for valid chunks of the same log; if one of them claims
// SyncOffset > X, bytes at X were once durable, so the damage is corruption.
// Otherwise the log ends at X and the reader reports a torn tail.
package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/kayadb/kayadb/internal/crc"
	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/errs"
)

const (
	// BlockSize is the size of a log block.
	BlockSize = 32 << 10
	// HeaderSize is the size of a chunk header.
	HeaderSize = 19
	// MaxRecordSize bounds a reassembled record so that damaged input can
	// never make the reader allocate without limit.
	MaxRecordSize = 1 << 30
)

// Chunk types.
const (
	chunkFull   = 1
	chunkFirst  = 2
	chunkMiddle = 3
	chunkLast   = 4
	// chunkSealed marks the chunks of an encrypted record.
	chunkSealed = 0x10
	// chunkGroup marks the chunks of a group record: its (opened) payload
	// holds several records, each framed as uvarint length | bytes.
	chunkGroup = 0x20
	// chunkFlags are the flag bits of a chunk type.
	chunkFlags = chunkSealed | chunkGroup
)

// aadPrefix starts the additional data of a sealed record.
const aadPrefix = "kayadb record v1\x00"

// recordAAD returns the additional data of the record of log logNum whose
// first chunk is at off.
func recordAAD(dst []byte, logNum uint32, off int64) []byte {
	dst = append(dst[:0], aadPrefix...)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(logNum))
	return binary.LittleEndian.AppendUint64(dst, uint64(off))
}

// Encoder lays out records as chunks for a log whose next byte is at a known
// offset. It does no I/O: the caller decides when appended bytes reach the
// file. It is not safe for concurrent use.
type Encoder struct {
	logNum uint32
	offset int64
	sealer *crypt.Sealer // nil: plain records
	sealed []byte        // scratch: the envelope of the record being encoded
	aad    []byte        // scratch
}

// SetSealer makes the encoder seal every record it encodes from now on
// (nil: plain records). A rotated keyring swapped into s applies to the
// next record.
func (e *Encoder) SetSealer(s *crypt.Sealer) { e.sealer = s }

// NewEncoder returns an encoder for log logNum whose next byte goes at offset.
func NewEncoder(logNum uint64, offset int64) *Encoder {
	return &Encoder{logNum: uint32(logNum), offset: offset}
}

// Offset returns the log offset just past everything encoded so far.
func (e *Encoder) Offset() int64 { return e.offset }

// Rewind makes the encoder lay out the next record at offset, forgetting
// what was encoded after it. A writer whose write failed calls it after
// cutting the log back to offset, which must be the end of a complete
// record (an offset Offset returned earlier), so that the next record
// continues the log exactly there.
func (e *Encoder) Rewind(offset int64) { e.offset = offset }

// Append encodes payload as one record and appends its chunks (and any block
// padding in front of them) to dst. syncOffset is stamped in every chunk.
// With a sealer, the record is sealed first.
func (e *Encoder) Append(dst []byte, payload []byte, syncOffset int64) []byte {
	var flag byte
	if e.sealer != nil {
		payload, flag = e.seal(payload), chunkSealed
	}
	return e.appendChunks(dst, payload, syncOffset, flag)
}

// seal returns payload sealed as the envelope of the record about to be
// laid out (its additional data names the offset of the record's first
// chunk, past any block padding). The result is valid until the next seal.
func (e *Encoder) seal(payload []byte) []byte {
	start := e.offset
	if left := BlockSize - int(e.offset%BlockSize); left < HeaderSize {
		start += int64(left)
	}
	e.aad = recordAAD(e.aad, e.logNum, start)
	e.sealed = e.sealer.Seal(e.sealed[:0], payload, e.aad)
	return e.sealed
}

// AppendGroupItem frames payload as one record of a group (uvarint length,
// then the bytes) and appends it to group, the framed records of a group
// being built for AppendGroup.
func AppendGroupItem(group, payload []byte) []byte {
	group = binary.AppendUvarint(group, uint64(len(payload)))
	return append(group, payload...)
}

// AppendGroup encodes group, one or more records framed by AppendGroupItem,
// as one group record and appends its chunks to dst. With a sealer the group
// is sealed once, which is what makes it worth having: an AES-GCM seal has a
// fixed cost that dominates for small records, and a writer that collects
// the records of one write into a group pays it once per write. A reader
// returns the group's records one by one; they stand or fall together (a
// torn group loses all of them, so only records never reported durable
// should share a group).
func (e *Encoder) AppendGroup(dst []byte, group []byte, syncOffset int64) []byte {
	flag := byte(chunkGroup)
	if e.sealer != nil {
		group, flag = e.seal(group), chunkGroup|chunkSealed
	}
	return e.appendChunks(dst, group, syncOffset, flag)
}

func (e *Encoder) appendChunks(dst []byte, payload []byte, syncOffset int64, flag byte) []byte {
	first := true
	for {
		left := BlockSize - int(e.offset%BlockSize)
		if left < HeaderSize {
			// Pad the block's tail with zeros.
			dst = append(dst, zeros[:left]...)
			e.offset += int64(left)
			left = BlockSize
		}
		avail := left - HeaderSize
		n := len(payload)
		last := n <= avail
		if !last {
			n = avail
		}
		var typ byte
		switch {
		case first && last:
			typ = chunkFull
		case first:
			typ = chunkFirst
		case last:
			typ = chunkLast
		default:
			typ = chunkMiddle
		}
		start := len(dst)
		dst = append(dst, make([]byte, HeaderSize)...)
		h := dst[start : start+HeaderSize]
		binary.LittleEndian.PutUint16(h[4:6], uint16(n))
		h[6] = typ | flag
		binary.LittleEndian.PutUint32(h[7:11], e.logNum)
		binary.LittleEndian.PutUint64(h[11:19], uint64(syncOffset))
		crc := crc.New(h[6:19]).Update(payload[:n]).Value()
		binary.LittleEndian.PutUint32(h[0:4], crc)
		dst = append(dst, payload[:n]...)
		e.offset += int64(HeaderSize + n)
		payload = payload[n:]
		first = false
		if last {
			return dst
		}
	}
}

var zeros [HeaderSize]byte

// Writer writes records to an io.Writer, buffering them until Flush. It is
// the simple writer used for the MANIFEST; the WAL uses Encoder directly. It
// is not safe for concurrent use.
type Writer struct {
	w   io.Writer
	enc *Encoder
	buf []byte
	err error
}

// NewWriter returns a Writer for log logNum starting at offset 0.
func NewWriter(w io.Writer, logNum uint64) *Writer {
	return &Writer{w: w, enc: NewEncoder(logNum, 0)}
}

// SetSealer makes the writer seal the records it writes from now on (nil:
// plain).
func (w *Writer) SetSealer(s *crypt.Sealer) { w.enc.SetSealer(s) }

// WriteRecord buffers one record. Everything before the record is assumed
// to be durable once the caller syncs after each Flush, so the record's
// SyncOffset is the offset at which the record starts.
func (w *Writer) WriteRecord(payload []byte) error {
	if w.err != nil {
		return w.err
	}
	if len(payload) > MaxRecordSize {
		return fmt.Errorf("record: payload of %d bytes exceeds the %d-byte limit", len(payload), MaxRecordSize)
	}
	w.buf = w.enc.Append(w.buf, payload, w.enc.Offset())
	return nil
}

// Flush writes buffered records to the underlying writer. An error is sticky.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.w.Write(w.buf)
	w.buf = w.buf[:0]
	if err != nil {
		w.err = err
	}
	return err
}

// Size returns the log size including buffered bytes.
func (w *Writer) Size() int64 { return w.enc.Offset() }

// Rewind drops the buffered records and the sticky error and makes the next
// record start at offset, the end of a complete record (a Size returned
// earlier). A caller whose Flush failed calls it after cutting the file
// back to offset (truncate and seek), so that the log goes on without the
// failed bytes.
func (w *Writer) Rewind(offset int64) {
	w.buf = w.buf[:0]
	w.err = nil
	w.enc.Rewind(offset)
}

// TornTailError reports that a log ends in a partially written region: from
// Offset on, the file holds no valid record that was ever durable. It is the
// expected state of the newest log after a crash; in any older log it means
// corruption.
type TornTailError struct {
	// File names the log.
	File string
	// Offset is where the last complete record ends.
	Offset int64
	// Size is the file size the reader saw; Size-Offset bytes are dropped.
	Size int64
	// Reason says what was found at Offset.
	Reason string
	// Zeroed reports that every byte from Offset to Size is zero: space a
	// writer zero-filled ahead of its records (the raft log's segments do)
	// or allocated but never written. No record was torn.
	Zeroed bool
}

// Error implements error.
func (e *TornTailError) Error() string {
	if e.Zeroed {
		return fmt.Sprintf("log %s ends at offset %d, followed by %d bytes of zeros (preallocated space; nothing torn)", e.File, e.Offset, e.Size-e.Offset)
	}
	return fmt.Sprintf("torn tail in %s at offset %d (%d bytes dropped): %s", e.File, e.Offset, e.Size-e.Offset, e.Reason)
}

// ErrTornTail matches every *TornTailError with errors.Is.
var ErrTornTail = errors.New("record: torn tail")

// Is makes errors.Is(err, ErrTornTail) true.
func (e *TornTailError) Is(target error) bool { return target == ErrTornTail }

// Reader reads records from a log. It is not safe for concurrent use.
type Reader struct {
	r        io.Reader
	fileName string
	logNum   uint32

	block    [BlockSize]byte
	blockLen int   // valid bytes in block
	blockOff int64 // file offset of block[0]
	pos      int   // read position inside block
	eof      bool  // r returned EOF; block is the last one

	rec       []byte
	recStart  int64 // offset of the current record's first chunk
	lastEnd   int64 // offset just past the last complete record
	err       error
	maxRecord int

	sealer  *crypt.Sealer // opens sealed records; nil: a sealed record is an error
	plain   []byte        // the opened payload of the last sealed record
	aad     []byte        // scratch
	lastKey crypt.KeyID   // key of the last record returned, when lastSealed
	sealedR bool          // the last record returned was sealed

	group []byte // the records of the current group not yet returned
}

// SetSealer gives the reader the keys that open sealed records.
func (r *Reader) SetSealer(s *crypt.Sealer) { r.sealer = s }

// LastKey returns the key id of the last record returned, and whether it
// was sealed at all.
func (r *Reader) LastKey() (crypt.KeyID, bool) { return r.lastKey, r.sealedR }

// NewReader returns a reader for log logNum. fileName appears in errors.
func NewReader(r io.Reader, logNum uint64, fileName string) *Reader {
	return &Reader{r: r, fileName: fileName, logNum: uint32(logNum), maxRecord: MaxRecordSize}
}

// Offset returns the offset just past the last record returned.
func (r *Reader) Offset() int64 { return r.lastEnd }

// LastRecordOffset returns the offset of the first chunk of the last record
// returned.
func (r *Reader) LastRecordOffset() int64 { return r.recStart }

// Next returns the next record's payload. The slice is valid until the next
// call. At the clean end of the log it returns io.EOF; at a torn tail it
// returns a *TornTailError; damaged data before the tail is a
// *errs.CorruptionError. Errors are sticky.
func (r *Reader) Next() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	rec, err := r.next()
	if err != nil {
		r.err = err
		return nil, err
	}
	return rec, nil
}

func (r *Reader) next() ([]byte, error) {
	if len(r.group) > 0 {
		return r.nextInGroup(), nil
	}
	rec, flags, err := r.nextChunked()
	if err != nil {
		return nil, err
	}
	r.sealedR = false
	if flags&chunkSealed != 0 {
		if rec, err = r.open(rec); err != nil {
			return nil, err
		}
	}
	if flags&chunkGroup == 0 {
		return rec, nil
	}
	if err := r.checkGroup(rec); err != nil {
		return nil, err
	}
	r.group = rec
	return r.nextInGroup(), nil
}

// checkGroup validates the framing of a whole group before any of its
// records is returned, so that a caller never applies part of a damaged
// group.
func (r *Reader) checkGroup(g []byte) error {
	if len(g) == 0 {
		return r.corrupt(r.recStart, "group record holds no records")
	}
	for i := 0; len(g) > 0; i++ {
		n, k := binary.Uvarint(g)
		if k <= 0 || n > uint64(len(g)-k) {
			return r.corrupt(r.recStart, fmt.Sprintf("group record: record %d has a bad length", i))
		}
		g = g[k+int(n):]
	}
	return nil
}

// nextInGroup returns the next record of the current (validated) group.
func (r *Reader) nextInGroup() []byte {
	n, k := binary.Uvarint(r.group)
	rec := r.group[k : k+int(n) : k+int(n)]
	r.group = r.group[k+int(n):]
	return rec
}

// open opens the envelope of a sealed record.
func (r *Reader) open(rec []byte) ([]byte, error) {
	r.sealedR = true
	id, err := crypt.EnvelopeKey(rec)
	if err != nil {
		return nil, r.corrupt(r.recStart, fmt.Sprintf("sealed record of %d bytes, shorter than an envelope", len(rec)))
	}
	r.lastKey = id
	if r.sealer == nil {
		return nil, fmt.Errorf("%s at offset %d: the record is encrypted (key id %d) and the node has no encryption key: start it with --encryption-keyring-file (or --encryption-key-file) holding that key: %w",
			r.fileName, r.recStart, id, &crypt.KeyError{ID: id, Err: crypt.ErrUnknownKey})
	}
	r.aad = recordAAD(r.aad, r.logNum, r.recStart)
	plain, err := r.sealer.Open(r.plain[:0], rec, r.aad)
	if err != nil {
		return nil, fmt.Errorf("%s at offset %d: %w", r.fileName, r.recStart, err)
	}
	r.plain = plain
	return plain, nil
}

// nextChunked reassembles the next record's chunks; flags are the flag bits
// (chunkSealed, chunkGroup) its chunks share.
func (r *Reader) nextChunked() (rec []byte, flags byte, err error) {
	r.rec = r.rec[:0]
	inRecord := false
	for {
		if r.pos >= r.blockLen || BlockSize-r.pos < HeaderSize {
			if !r.eof {
				if err := r.readBlock(); err != nil {
					return nil, 0, err
				}
				continue
			}
			// End of the file.
			if r.pos < r.blockLen && r.blockLen < BlockSize {
				return nil, 0, r.badChunk(r.blockOff+int64(r.pos), "partial chunk header at end of log")
			}
			if inRecord {
				return nil, 0, r.badChunk(r.blockOff+int64(r.blockLen), "log ends inside a record")
			}
			return nil, 0, io.EOF
		}
		off := r.blockOff + int64(r.pos)
		h := r.block[r.pos:]
		if r.blockLen-r.pos < HeaderSize {
			return nil, 0, r.badChunk(off, "partial chunk header at end of log")
		}
		n := int(binary.LittleEndian.Uint16(h[4:6]))
		typ := h[6]
		if r.pos+HeaderSize+n > r.blockLen {
			if r.pos+HeaderSize+n > BlockSize {
				return nil, 0, r.badChunk(off, fmt.Sprintf("chunk length %d crosses the block boundary", n))
			}
			return nil, 0, r.badChunk(off, "log ends inside a chunk")
		}
		want := binary.LittleEndian.Uint32(h[0:4])
		got := crc.New(h[6:HeaderSize]).Update(h[HeaderSize : HeaderSize+n]).Value()
		if want != got {
			if want == 0 && n == 0 && typ == 0 {
				return nil, 0, r.badChunk(off, "zeroed chunk header")
			}
			return nil, 0, r.badChunk(off, fmt.Sprintf("chunk checksum mismatch: stored %#08x, computed %#08x", want, got))
		}
		if ln := binary.LittleEndian.Uint32(h[7:11]); ln != r.logNum {
			// A valid chunk of an older incarnation of this file: the log
			// ends here.
			if inRecord {
				return nil, 0, r.badChunk(off, "log ends inside a record")
			}
			return nil, 0, io.EOF
		}
		payload := h[HeaderSize : HeaderSize+n]
		r.pos += HeaderSize + n
		chunkFlagBits := typ & chunkFlags
		typ &^= chunkFlags
		switch typ {
		case chunkFull:
			if inRecord {
				return nil, 0, r.corrupt(off, "FULL chunk inside a record")
			}
			r.recStart = off
			r.lastEnd = r.blockOff + int64(r.pos)
			return payload, chunkFlagBits, nil
		case chunkFirst:
			if inRecord {
				return nil, 0, r.corrupt(off, "FIRST chunk inside a record")
			}
			inRecord = true
			flags = chunkFlagBits
			r.recStart = off
			r.rec = append(r.rec, payload...)
		case chunkMiddle, chunkLast:
			if !inRecord {
				return nil, 0, r.corrupt(off, "MIDDLE or LAST chunk without a FIRST chunk")
			}
			if chunkFlagBits != flags {
				return nil, 0, r.corrupt(off, "a record mixes chunk kinds (sealed and plain, or group and single)")
			}
			if len(r.rec)+n > r.maxRecord+crypt.Overhead {
				return nil, 0, r.corrupt(off, fmt.Sprintf("record exceeds %d bytes", r.maxRecord))
			}
			r.rec = append(r.rec, payload...)
			if typ == chunkLast {
				r.lastEnd = r.blockOff + int64(r.pos)
				return r.rec, flags, nil
			}
		default:
			return nil, 0, r.corrupt(off, fmt.Sprintf("unknown chunk type %d", h[6]))
		}
	}
}

func (r *Reader) readBlock() error {
	r.blockOff += int64(r.blockLen)
	r.pos = 0
	n, err := io.ReadFull(r.r, r.block[:])
	r.blockLen = n
	switch err {
	case nil:
	case io.EOF, io.ErrUnexpectedEOF:
		r.eof = true
	default:
		return fmt.Errorf("record: reading %s at offset %d: %w", r.fileName, r.blockOff, err)
	}
	return nil
}

func (r *Reader) corrupt(off int64, msg string) error {
	return errs.CorruptionErrorf(r.fileName, off, "%s", msg)
}

// badChunk decides whether an invalid chunk at off is a torn tail or
// corruption, by looking for later valid chunks of this log that claim the
// bytes at off were durable. The record being assembled starts at
// recordStart; the tail begins there.
func (r *Reader) badChunk(off int64, reason string) error {
	tail := r.lastEnd
	// Scan from the bad chunk to the end of the file.
	size, evidence, zeroed, err := r.scanRest(off, tail)
	if err != nil {
		return err
	}
	if evidence >= 0 {
		return errs.CorruptionErrorf(r.fileName, off,
			"%s (the chunk at offset %d was written after offset %d had been synced)", reason, evidence, tail)
	}
	return &TornTailError{File: r.fileName, Offset: tail, Size: size, Reason: reason, Zeroed: zeroed && off == tail}
}

// scanRest reads the remainder of the file starting with the current block.
// It returns the file size, the offset of the first valid chunk of this log
// whose SyncOffset is greater than tail (or -1 if there is none), and
// whether every byte from from to the end is zero.
func (r *Reader) scanRest(from, tail int64) (size int64, evidence int64, zeroed bool, err error) {
	evidence = -1
	zeroed = true
	startPos := int(from - r.blockOff)
	for {
		blk := r.block[:r.blockLen]
		if zeroed {
			zeroed = allZero(blk[min(max(startPos, 0), len(blk)):])
		}
		if evidence < 0 {
			for p := max(startPos, 0); p+HeaderSize <= len(blk); p++ {
				h := blk[p:]
				if binary.LittleEndian.Uint32(h[7:11]) != r.logNum {
					continue
				}
				typ := h[6] &^ chunkFlags
				if typ < chunkFull || typ > chunkLast {
					continue
				}
				n := int(binary.LittleEndian.Uint16(h[4:6]))
				if p+HeaderSize+n > len(blk) {
					continue
				}
				if int64(binary.LittleEndian.Uint64(h[11:19])) <= tail {
					continue
				}
				if crc.New(h[6:HeaderSize]).Update(h[HeaderSize:HeaderSize+n]).Value() !=
					binary.LittleEndian.Uint32(h[0:4]) {
					continue
				}
				evidence = r.blockOff + int64(p)
				break
			}
		}
		startPos = 0
		if r.eof {
			return r.blockOff + int64(r.blockLen), evidence, zeroed, nil
		}
		if err := r.readBlock(); err != nil {
			return 0, -1, false, err
		}
	}
}

// allZero reports whether b holds only zero bytes.
func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
