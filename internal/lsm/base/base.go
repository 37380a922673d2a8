// Package base holds the vocabulary every LSM package shares: internal keys
// and their ordering, sequence numbers, file numbers and names, the internal
// iterator interface, and, under their LSM names, the masked CRC32C used by
// every on-disk format and the error classes (corruption, not found,
// invalid argument), which live in the neutral leaves internal/crc and
// internal/errs so that the raft side shares them without importing this
// package.
//
// It owns no state and performs no I/O. It must never import another package
// of this module but those two leaves.
//
// # Internal keys
//
// An internal key is a user key plus an 8-byte trailer. The trailer packs a
// 56-bit sequence number and an 8-bit kind:
//
//	trailer = seqnum<<8 | kind
//
// Encoded on disk (in SSTables) the trailer follows the user key as a
// little-endian uint64:
//
//	+-----------------+------------------------+
//	| user key (n B)  | trailer (8 B, LE)      |
//	+-----------------+------------------------+
//
// Internal keys order by user key ascending, then by trailer descending, so
// the newest version of a user key comes first.
package base

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// SeqNum is a sequence number: every committed write gets a unique one, and
// a read view is defined by the largest sequence number it may see.
type SeqNum uint64

// SeqNumMax is the largest sequence number that fits in a trailer.
const SeqNumMax SeqNum = 1<<56 - 1

// Kind is the type of an internal key.
type Kind uint8

// Key kinds. The numeric values are part of the on-disk formats (WAL batches
// and SSTables) and must never change.
const (
	KindDelete Kind = 0
	KindSet    Kind = 1
	// KindMax is the largest valid kind; seeks use it so that a seek key
	// sorts before every real entry with the same user key and seqnum.
	KindMax = KindSet
)

// String implements fmt.Stringer.
func (k Kind) String() string {
	switch k {
	case KindDelete:
		return "DEL"
	case KindSet:
		return "SET"
	}
	return fmt.Sprintf("KIND(%d)", uint8(k))
}

// Valid reports whether k is a kind this version understands.
func (k Kind) Valid() bool { return k <= KindMax }

// MakeTrailer packs a sequence number and kind.
func MakeTrailer(seq SeqNum, kind Kind) uint64 { return uint64(seq)<<8 | uint64(kind) }

// TrailerSeq extracts the sequence number from a trailer.
func TrailerSeq(t uint64) SeqNum { return SeqNum(t >> 8) }

// TrailerKind extracts the kind from a trailer.
func TrailerKind(t uint64) Kind { return Kind(t & 0xff) }

// InternalKey is a user key with its trailer.
type InternalKey struct {
	UserKey []byte
	Trailer uint64
}

// MakeInternalKey builds an internal key.
func MakeInternalKey(userKey []byte, seq SeqNum, kind Kind) InternalKey {
	return InternalKey{UserKey: userKey, Trailer: MakeTrailer(seq, kind)}
}

// MakeSearchKey returns the smallest internal key with the given user key:
// it sorts before every stored version of userKey.
func MakeSearchKey(userKey []byte) InternalKey {
	return InternalKey{UserKey: userKey, Trailer: MakeTrailer(SeqNumMax, KindMax)}
}

// Seq returns the key's sequence number.
func (k InternalKey) Seq() SeqNum { return TrailerSeq(k.Trailer) }

// Kind returns the key's kind.
func (k InternalKey) Kind() Kind { return TrailerKind(k.Trailer) }

// Size is the encoded length of the key.
func (k InternalKey) Size() int { return len(k.UserKey) + 8 }

// Encode writes the encoded key into buf, which must have room for Size bytes.
func (k InternalKey) Encode(buf []byte) {
	n := copy(buf, k.UserKey)
	binary.LittleEndian.PutUint64(buf[n:], k.Trailer)
}

// AppendEncoded appends the encoded key to dst.
func (k InternalKey) AppendEncoded(dst []byte) []byte {
	dst = append(dst, k.UserKey...)
	return binary.LittleEndian.AppendUint64(dst, k.Trailer)
}

// Clone returns a deep copy of the key.
func (k InternalKey) Clone() InternalKey {
	if k.UserKey == nil {
		return k
	}
	return InternalKey{UserKey: append([]byte(nil), k.UserKey...), Trailer: k.Trailer}
}

// String formats the key for humans: "key#seq,KIND".
func (k InternalKey) String() string {
	return fmt.Sprintf("%q#%d,%s", k.UserKey, k.Seq(), k.Kind())
}

// DecodeInternalKey splits an encoded internal key. ok is false when the
// encoding is shorter than a trailer.
func DecodeInternalKey(b []byte) (k InternalKey, ok bool) {
	n := len(b) - 8
	if n < 0 {
		return InternalKey{}, false
	}
	return InternalKey{UserKey: b[:n:n], Trailer: binary.LittleEndian.Uint64(b[n:])}, true
}

// CompareInternal orders internal keys: user key ascending, trailer
// descending.
func CompareInternal(a, b InternalKey) int {
	if c := bytes.Compare(a.UserKey, b.UserKey); c != 0 {
		return c
	}
	switch {
	case a.Trailer > b.Trailer:
		return -1
	case a.Trailer < b.Trailer:
		return 1
	}
	return 0
}

// CompareEncoded orders two encoded internal keys. Both must be at least 8
// bytes long.
func CompareEncoded(a, b []byte) int {
	na, nb := len(a)-8, len(b)-8
	if c := bytes.Compare(a[:na], b[:nb]); c != 0 {
		return c
	}
	ta, tb := binary.LittleEndian.Uint64(a[na:]), binary.LittleEndian.Uint64(b[nb:])
	switch {
	case ta > tb:
		return -1
	case ta < tb:
		return 1
	}
	return 0
}

// Limits on user data. They bound memory use per operation and are enforced
// at the public API; inside the engine they are invariants.
const (
	// MaxKeySize is the largest user key, in bytes.
	MaxKeySize = 4 << 10
	// MaxValueSize is the largest value, in bytes.
	MaxValueSize = 16 << 20
)
