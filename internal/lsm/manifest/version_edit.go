// Package manifest owns the engine's metadata: which SSTables exist at which
// level (a Version), the edits that change that (VersionEdit), and the
// MANIFEST log plus the CURRENT file that make those edits durable
// (VersionSet).
//
// Rules it must never break: a Version is immutable once built; an edit is
// installed only after it has been written and synced to the MANIFEST; a new
// MANIFEST becomes current only through CURRENT written as temp file + fsync +
// rename + directory fsync; a file is reported obsolete only when no Version
// references it.
//
// # VersionEdit encoding
//
// An edit is one MANIFEST record (see package record for the framing): a
// sequence of fields, each a uvarint tag followed by its value. Unknown tags
// are corruption.
//
//	tag 1  comparator      uvarint len | name
//	tag 2  log number      uvarint      (WALs below it are flushed)
//	tag 3  next file num   uvarint
//	tag 4  last sequence   uvarint
//	tag 6  deleted file    uvarint level | uvarint file number
//	tag 7  new file        uvarint level | uvarint file number | uvarint size |
//	                       uvarint len | smallest internal key |
//	                       uvarint len | largest internal key |
//	                       uvarint smallest seq | uvarint largest seq
//
// The first record of every MANIFEST is a full snapshot: comparator, log
// number, next file number, last sequence and a new-file entry for every live
// table.
package manifest

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"

	"github.com/kayadb/kayadb/internal/lsm/base"
)

// NumLevels is the number of LSM levels, L0..L6.
const NumLevels = 7

// ComparatorName identifies the key ordering; a MANIFEST written with another
// ordering is refused.
const ComparatorName = "kaya.bytewise.v1"

const (
	tagComparator  = 1
	tagLogNumber   = 2
	tagNextFileNum = 3
	tagLastSeq     = 4
	tagDeletedFile = 6
	tagNewFile     = 7
)

// DeletedFile names a table removed from a level.
type DeletedFile struct {
	Level   int
	FileNum base.FileNum
}

// NewFile is a table added to a level.
type NewFile struct {
	Level int
	Meta  *FileMetadata
}

// VersionEdit is a change to the set of live tables and counters.
type VersionEdit struct {
	Comparator     string
	LogNumber      base.FileNum
	NextFileNum    base.FileNum
	LastSeq        base.SeqNum
	HasLogNumber   bool
	HasNextFileNum bool
	HasLastSeq     bool
	DeletedFiles   []DeletedFile
	NewFiles       []NewFile
}

// Encode appends the edit's encoding to dst.
func (e *VersionEdit) Encode(dst []byte) []byte {
	if e.Comparator != "" {
		dst = binary.AppendUvarint(dst, tagComparator)
		dst = appendBytes(dst, []byte(e.Comparator))
	}
	if e.HasLogNumber {
		dst = binary.AppendUvarint(dst, tagLogNumber)
		dst = binary.AppendUvarint(dst, uint64(e.LogNumber))
	}
	if e.HasNextFileNum {
		dst = binary.AppendUvarint(dst, tagNextFileNum)
		dst = binary.AppendUvarint(dst, uint64(e.NextFileNum))
	}
	if e.HasLastSeq {
		dst = binary.AppendUvarint(dst, tagLastSeq)
		dst = binary.AppendUvarint(dst, uint64(e.LastSeq))
	}
	for _, d := range e.DeletedFiles {
		dst = binary.AppendUvarint(dst, tagDeletedFile)
		dst = binary.AppendUvarint(dst, uint64(d.Level))
		dst = binary.AppendUvarint(dst, uint64(d.FileNum))
	}
	for _, n := range e.NewFiles {
		m := n.Meta
		dst = binary.AppendUvarint(dst, tagNewFile)
		dst = binary.AppendUvarint(dst, uint64(n.Level))
		dst = binary.AppendUvarint(dst, uint64(m.FileNum))
		dst = binary.AppendUvarint(dst, m.Size)
		dst = binary.AppendUvarint(dst, uint64(m.Smallest.Size()))
		dst = m.Smallest.AppendEncoded(dst)
		dst = binary.AppendUvarint(dst, uint64(m.Largest.Size()))
		dst = m.Largest.AppendEncoded(dst)
		dst = binary.AppendUvarint(dst, uint64(m.SmallestSeq))
		dst = binary.AppendUvarint(dst, uint64(m.LargestSeq))
	}
	return dst
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = base.CorruptionErrorf("", int64(d.off), "version edit: "+format, args...)
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail("bad varint for %s", what)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) bytes(what string) []byte {
	n := d.uvarint(what + " length")
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)-d.off) {
		d.fail("%s length %d exceeds the %d bytes left", what, n, len(d.b)-d.off)
		return nil
	}
	b := append([]byte(nil), d.b[d.off:d.off+int(n)]...)
	d.off += int(n)
	return b
}

func (d *decoder) level() int {
	l := d.uvarint("level")
	if d.err == nil && l >= NumLevels {
		d.fail("level %d out of range", l)
	}
	return int(l)
}

func (d *decoder) internalKey(what string) base.InternalKey {
	b := d.bytes(what)
	if d.err != nil {
		return base.InternalKey{}
	}
	k, ok := base.DecodeInternalKey(b)
	if !ok {
		d.fail("%s of %d bytes is shorter than a key trailer", what, len(b))
	}
	return k
}

// Decode parses an encoded edit. Errors are base.CorruptionErrors with the
// offset inside the record.
func (e *VersionEdit) Decode(b []byte) error {
	*e = VersionEdit{}
	d := &decoder{b: b}
	for d.err == nil && d.off < len(b) {
		start := d.off
		tag := d.uvarint("tag")
		if d.err != nil {
			break
		}
		switch tag {
		case tagComparator:
			e.Comparator = string(d.bytes("comparator"))
		case tagLogNumber:
			e.LogNumber = base.FileNum(d.uvarint("log number"))
			e.HasLogNumber = true
		case tagNextFileNum:
			e.NextFileNum = base.FileNum(d.uvarint("next file number"))
			e.HasNextFileNum = true
		case tagLastSeq:
			e.LastSeq = base.SeqNum(d.uvarint("last sequence"))
			e.HasLastSeq = true
		case tagDeletedFile:
			level := d.level()
			fn := base.FileNum(d.uvarint("file number"))
			e.DeletedFiles = append(e.DeletedFiles, DeletedFile{Level: level, FileNum: fn})
		case tagNewFile:
			level := d.level()
			m := &FileMetadata{}
			m.FileNum = base.FileNum(d.uvarint("file number"))
			m.Size = d.uvarint("file size")
			m.Smallest = d.internalKey("smallest key")
			m.Largest = d.internalKey("largest key")
			m.SmallestSeq = base.SeqNum(d.uvarint("smallest seq"))
			m.LargestSeq = base.SeqNum(d.uvarint("largest seq"))
			if d.err == nil && base.CompareInternal(m.Smallest, m.Largest) > 0 {
				d.off = start
				d.fail("table %s has smallest key %s > largest key %s", m.FileNum, m.Smallest, m.Largest)
			}
			if d.err == nil && m.SmallestSeq > m.LargestSeq {
				d.off = start
				d.fail("table %s has smallest seq %d > largest seq %d", m.FileNum, m.SmallestSeq, m.LargestSeq)
			}
			e.NewFiles = append(e.NewFiles, NewFile{Level: level, Meta: m})
		default:
			d.off = start
			d.fail("unknown tag %d", tag)
		}
	}
	return d.err
}

// String formats the edit for inspection tools.
func (e *VersionEdit) String() string {
	var sb strings.Builder
	if e.Comparator != "" {
		fmt.Fprintf(&sb, "comparator: %s\n", e.Comparator)
	}
	if e.HasLogNumber {
		fmt.Fprintf(&sb, "log-number: %d\n", e.LogNumber)
	}
	if e.HasNextFileNum {
		fmt.Fprintf(&sb, "next-file-number: %d\n", e.NextFileNum)
	}
	if e.HasLastSeq {
		fmt.Fprintf(&sb, "last-sequence: %d\n", e.LastSeq)
	}
	dels := append([]DeletedFile(nil), e.DeletedFiles...)
	sort.Slice(dels, func(i, j int) bool { return dels[i].FileNum < dels[j].FileNum })
	for _, d := range dels {
		fmt.Fprintf(&sb, "deleted: L%d %s\n", d.Level, d.FileNum)
	}
	for _, n := range e.NewFiles {
		fmt.Fprintf(&sb, "added: L%d %s size=%d [%s, %s] seqs=[%d,%d]\n", n.Level, n.Meta.FileNum, n.Meta.Size,
			n.Meta.Smallest, n.Meta.Largest, n.Meta.SmallestSeq, n.Meta.LargestSeq)
	}
	return sb.String()
}
