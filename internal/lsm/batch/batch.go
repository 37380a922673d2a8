// Package batch owns the binary representation of a write batch. The same
// bytes are built in memory by the API, written as one WAL record, and
// replayed at recovery, so a batch is all-or-nothing by construction.
//
// It performs no I/O and holds no locks. Decoding never panics and never
// trusts a length field beyond the buffer it was given.
//
// # Format
//
//	+--------------+-------------+------------------------------------+
//	| seqnum (8 LE)| count (4 LE)| record × count                     |
//	+--------------+-------------+------------------------------------+
//
//	record: kind (1) | uvarint keyLen | key | [uvarint valueLen | value]
//
// The value is present for KindSet only. Record i gets sequence number
// seqnum+i.
package batch

import (
	"encoding/binary"
	"fmt"

	"github.com/kayadb/kayadb/internal/lsm/base"
)

// HeaderSize is the size of the batch header.
const HeaderSize = 12

// Batch accumulates writes. The zero value is an empty batch ready to use.
// It is not safe for concurrent use.
type Batch struct {
	data  []byte
	count uint32
}

func (b *Batch) init() {
	if len(b.data) < HeaderSize {
		b.data = append(b.data[:0], make([]byte, HeaderSize)...)
	}
}

// Grow makes room for n more bytes of records without reallocating.
func (b *Batch) Grow(n int) {
	b.init()
	if n > 0 && cap(b.data)-len(b.data) < n {
		b.data = append(make([]byte, 0, len(b.data)+n), b.data...)
	}
}

// Set adds a set of key to value.
func (b *Batch) Set(key, value []byte) {
	b.init()
	b.data = append(b.data, byte(base.KindSet))
	b.data = binary.AppendUvarint(b.data, uint64(len(key)))
	b.data = append(b.data, key...)
	b.data = binary.AppendUvarint(b.data, uint64(len(value)))
	b.data = append(b.data, value...)
	b.count++
}

// Delete adds a deletion of key.
func (b *Batch) Delete(key []byte) {
	b.init()
	b.data = append(b.data, byte(base.KindDelete))
	b.data = binary.AppendUvarint(b.data, uint64(len(key)))
	b.data = append(b.data, key...)
	b.count++
}

// Count returns the number of records.
func (b *Batch) Count() uint32 { return b.count }

// Empty reports whether the batch has no records.
func (b *Batch) Empty() bool { return b.count == 0 }

// Len returns the size of the representation in bytes.
func (b *Batch) Len() int {
	if len(b.data) < HeaderSize {
		return HeaderSize
	}
	return len(b.data)
}

// Reset empties the batch, keeping its buffer.
func (b *Batch) Reset() {
	b.data = b.data[:0]
	b.count = 0
}

// SetSeqNum stamps the sequence number of the first record.
func (b *Batch) SetSeqNum(seq base.SeqNum) {
	b.init()
	binary.LittleEndian.PutUint64(b.data[0:8], uint64(seq))
}

// SeqNum returns the stamped sequence number of the first record.
func (b *Batch) SeqNum() base.SeqNum {
	if len(b.data) < HeaderSize {
		return 0
	}
	return base.SeqNum(binary.LittleEndian.Uint64(b.data[0:8]))
}

// Repr returns the encoded batch with the count filled in. The slice aliases
// the batch's buffer.
func (b *Batch) Repr() []byte {
	b.init()
	binary.LittleEndian.PutUint32(b.data[8:12], b.count)
	return b.data
}

// SetRepr replaces the batch's contents with an encoded batch after
// validating it.
func (b *Batch) SetRepr(data []byte) error {
	_, count, err := Validate(data)
	if err != nil {
		return err
	}
	b.data = data
	b.count = count
	return nil
}

// Reader iterates over the records of an encoded batch.
type Reader struct {
	data []byte
	seq  base.SeqNum
	left uint32
	off  int
}

// NewReader validates the header of an encoded batch and returns a reader
// over its records. Records are validated as they are read.
func NewReader(data []byte) (*Reader, error) {
	r, err := MakeReader(data)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// MakeReader is NewReader returning a value, for callers on hot paths that
// keep the reader on the stack.
func MakeReader(data []byte) (Reader, error) {
	if len(data) < HeaderSize {
		return Reader{}, base.CorruptionErrorf("", 0, "batch of %d bytes is shorter than its %d-byte header", len(data), HeaderSize)
	}
	return Reader{
		data: data,
		seq:  base.SeqNum(binary.LittleEndian.Uint64(data[0:8])),
		left: binary.LittleEndian.Uint32(data[8:12]),
		off:  HeaderSize,
	}, nil
}

// SeqNum returns the batch's first sequence number.
func (r *Reader) SeqNum() base.SeqNum { return r.seq }

// Remaining returns the number of records not read yet.
func (r *Reader) Remaining() uint32 { return r.left }

// Next returns the next record. ok is false after the last record; err is
// non-nil when the batch is malformed (a corruption error whose offset is
// relative to the start of the batch).
func (r *Reader) Next() (kind base.Kind, key, value []byte, ok bool, err error) {
	if r.left == 0 {
		if r.off != len(r.data) {
			return 0, nil, nil, false, base.CorruptionErrorf("", int64(r.off), "%d trailing bytes after the last batch record", len(r.data)-r.off)
		}
		return 0, nil, nil, false, nil
	}
	start := r.off
	if r.off >= len(r.data) {
		return 0, nil, nil, false, base.CorruptionErrorf("", int64(start), "batch ends before its %d remaining records", r.left)
	}
	kind = base.Kind(r.data[r.off])
	r.off++
	if !kind.Valid() {
		return 0, nil, nil, false, base.CorruptionErrorf("", int64(start), "unknown record kind %d", kind)
	}
	key, err = r.bytes(start, "key")
	if err != nil {
		return 0, nil, nil, false, err
	}
	if kind == base.KindSet {
		value, err = r.bytes(start, "value")
		if err != nil {
			return 0, nil, nil, false, err
		}
	}
	r.left--
	return kind, key, value, true, nil
}

func (r *Reader) bytes(start int, what string) ([]byte, error) {
	n, w := binary.Uvarint(r.data[r.off:])
	if w <= 0 {
		return nil, base.CorruptionErrorf("", int64(start), "bad %s length varint", what)
	}
	r.off += w
	if n > uint64(len(r.data)-r.off) {
		return nil, base.CorruptionErrorf("", int64(start), "%s length %d exceeds the %d bytes left", what, n, len(r.data)-r.off)
	}
	b := r.data[r.off : r.off+int(n) : r.off+int(n)]
	r.off += int(n)
	return b, nil
}

// Validate checks an encoded batch completely and returns its first sequence
// number and record count.
func Validate(data []byte) (base.SeqNum, uint32, error) {
	r, err := NewReader(data)
	if err != nil {
		return 0, 0, err
	}
	count := r.left
	for {
		_, _, _, ok, err := r.Next()
		if err != nil {
			return 0, 0, err
		}
		if !ok {
			return r.seq, count, nil
		}
	}
}

// String formats a batch for debugging tools.
func String(data []byte) string {
	r, err := NewReader(data)
	if err != nil {
		return err.Error()
	}
	s := fmt.Sprintf("seq=%d count=%d", r.seq, r.left)
	for {
		k, key, val, ok, err := r.Next()
		if err != nil {
			return s + " " + err.Error()
		}
		if !ok {
			return s
		}
		if k == base.KindSet {
			s += fmt.Sprintf(" SET(%q,%d bytes)", key, len(val))
		} else {
			s += fmt.Sprintf(" DEL(%q)", key)
		}
	}
}
