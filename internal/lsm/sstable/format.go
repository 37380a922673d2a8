package sstable

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/lsm/base"
)

// Table format versions. FormatVersion (1) is the plain format;
// FormatVersionEncrypted (2) seals every block (see the package doc) and
// has a 61-byte footer that names the key. Both are read; a Writer writes
// version 2 when it has a Sealer and version 1 otherwise.
const (
	FormatVersion          = 1
	FormatVersionEncrypted = 2
)

const (
	// footerLen is the size of the footer at the end of a plain table.
	footerLen = 57
	// footerLenEncrypted is the size of the footer of an encrypted table:
	// the plain footer's fields plus the key id (u32) before the version.
	footerLenEncrypted = 61
	// footerTailLen is the size of the fields every footer ends with, at
	// the same distance from the end: version u32, CRC u32, magic (8).
	footerTailLen = 16
	// blockTrailerLen is the size of the trailer after every block.
	blockTrailerLen = 5
	// checksumCRC32C is the only checksum type (footer byte 0).
	checksumCRC32C = 1
	// tableMagic ends every table.
	tableMagic = "\x89KAYASST"

	footerHandlesEnd = 41 // handles + zero padding occupy [1, 41)
	footerVersionOff = 41 // in a plain footer; encrypted: the key id is here
	footerCRCOff     = 45 // in a plain footer
	footerMagicOff   = 49 // in a plain footer

	// maxVarint64Len is the longest uvarint encoding of a uint64.
	maxVarint64Len = binary.MaxVarintLen64
	// maxBlockHandleLen is the longest encoding of a block handle.
	maxBlockHandleLen = 2 * maxVarint64Len

	// maxDecodedBlockLen bounds the decoded size of any compressed block.
	maxDecodedBlockLen = 64 << 20
	// maxSnappyRatio bounds decoded/stored for snappy blocks; real snappy
	// streams cannot exceed about 22x.
	maxSnappyRatio = 64
	// maxBlockSize bounds WriterOptions.BlockSize so that a data block (the
	// target plus one entry of at most base.MaxKeySize+base.MaxValueSize)
	// always stays below maxDecodedBlockLen.
	maxBlockSize = 32 << 20

	// Names in the metaindex block.
	metaFilterName     = "kaya.filter"
	metaPropertiesName = "kaya.properties"
)

// maxTrailer is the largest trailer of a valid key: seeks use it to find the
// first entry of a user key.
const maxTrailer = uint64(base.SeqNumMax)<<8 | uint64(base.KindMax)

// Compression selects how data blocks (and the index block) are compressed.
type Compression uint8

// Compression algorithms. The values are stored in block trailers and must
// never change.
const (
	// NoCompression stores blocks raw.
	NoCompression Compression = 0
	// SnappyCompression compresses blocks with snappy.
	SnappyCompression Compression = 1
	// ZstdCompression compresses blocks with zstd (default level).
	ZstdCompression Compression = 2
)

// String returns "none", "snappy" or "zstd".
func (c Compression) String() string {
	switch c {
	case NoCompression:
		return "none"
	case SnappyCompression:
		return "snappy"
	case ZstdCompression:
		return "zstd"
	}
	return fmt.Sprintf("Compression(%d)", uint8(c))
}

// valid reports whether c is a known algorithm.
func (c Compression) valid() bool { return c <= ZstdCompression }

// ParseCompression parses the names String returns (case-insensitively).
// The error matches base.ErrInvalidArgument.
func ParseCompression(s string) (Compression, error) {
	switch strings.ToLower(s) {
	case "none":
		return NoCompression, nil
	case "snappy":
		return SnappyCompression, nil
	case "zstd":
		return ZstdCompression, nil
	}
	return 0, base.InvalidArgumentf("unknown compression %q (want none, snappy or zstd)", s)
}

// blockHandle locates a block: its offset and its length without trailer.
type blockHandle struct {
	offset, length uint64
}

// end returns the offset just past the block's trailer. Handles are
// validated (see Reader) before end is used, so it cannot overflow.
func (h blockHandle) end() uint64 { return h.offset + h.length + blockTrailerLen }

// appendBlockHandle appends the encoding of h to dst.
func appendBlockHandle(dst []byte, h blockHandle) []byte {
	dst = binary.AppendUvarint(dst, h.offset)
	return binary.AppendUvarint(dst, h.length)
}

// decodeBlockHandle decodes a handle from the front of b and returns the
// number of bytes used, or n <= 0 if b does not start with a valid handle.
func decodeBlockHandle(b []byte) (h blockHandle, n int) {
	off, n1 := binary.Uvarint(b)
	if n1 <= 0 {
		return blockHandle{}, 0
	}
	length, n2 := binary.Uvarint(b[n1:])
	if n2 <= 0 {
		return blockHandle{}, 0
	}
	return blockHandle{offset: off, length: length}, n1 + n2
}

// footer is the decoded table footer.
type footer struct {
	metaindex, index blockHandle
	version          uint32
	keyID            crypt.KeyID // the key of an encrypted table (version 2)
}

// size returns the encoded size of the footer.
func (f footer) size() int {
	if f.version == FormatVersionEncrypted {
		return footerLenEncrypted
	}
	return footerLen
}

// encrypted reports whether the table's blocks are sealed.
func (f footer) encrypted() bool { return f.version == FormatVersionEncrypted }

// encode returns the footer's bytes (57, or 61 for an encrypted table).
func (f footer) encode() []byte {
	b := make([]byte, f.size())
	b[0] = checksumCRC32C
	p := appendBlockHandle(b[1:1], f.metaindex)
	p = appendBlockHandle(p, f.index)
	_ = p // written in place; the rest up to byte 41 stays zero
	t := len(b) - footerTailLen
	if f.encrypted() {
		binary.LittleEndian.PutUint32(b[footerHandlesEnd:], uint32(f.keyID))
	}
	binary.LittleEndian.PutUint32(b[t:], f.version)
	binary.LittleEndian.PutUint32(b[t+4:], base.MaskedCRC(b[:t+4]))
	copy(b[t+8:], tableMagic)
	return b
}

// decodeFooter parses and verifies a footer at the end of tail, the last
// bytes of a file (at least the footer; at most footerLenEncrypted are
// needed) read at offset off of file. It checks the magic, format version,
// checksum type, checksum, handle encodings and the zero padding; it does
// not check the handles against the file size. The footer starts at
// off+len(tail)-footer.size().
func decodeFooter(tail []byte, file string, off int64) (footer, error) {
	if len(tail) < footerLen {
		return footer{}, base.CorruptionErrorf(file, off, "footer is %d bytes, want at least %d", len(tail), footerLen)
	}
	t := tail[len(tail)-footerTailLen:]
	if string(t[8:]) != tableMagic {
		return footer{}, base.CorruptionErrorf(file, off+int64(len(tail)-8), "bad table magic %q (not a KayaDB sstable)", t[8:])
	}
	version := binary.LittleEndian.Uint32(t)
	n := footerLen
	if version == FormatVersionEncrypted {
		n = footerLenEncrypted
		if len(tail) < n {
			return footer{}, base.CorruptionErrorf(file, off, "file of %d bytes is too small for the %d-byte encrypted table footer", len(tail), n)
		}
	}
	b := tail[len(tail)-n:]
	off += int64(len(tail) - n)
	stored := binary.LittleEndian.Uint32(t[4:])
	computed := base.MaskedCRC(b[:n-footerTailLen+4])
	if version != FormatVersion && version != FormatVersionEncrypted {
		msg := ""
		if stored != computed {
			msg = fmt.Sprintf(" (and the footer checksum does not match: expected %#08x, computed %#08x; the footer may be damaged)", stored, computed)
		}
		return footer{}, base.CorruptionErrorf(file, off, "unsupported table format version %d (this build supports versions %d and %d)%s", version, FormatVersion, FormatVersionEncrypted, msg)
	}
	if stored != computed {
		return footer{}, base.CorruptionErrorf(file, off, "footer checksum mismatch: expected %#08x, computed %#08x", stored, computed)
	}
	if b[0] != checksumCRC32C {
		return footer{}, base.CorruptionErrorf(file, off, "unknown checksum type %d (supported: %d = crc32c)", b[0], checksumCRC32C)
	}
	region := b[1:footerHandlesEnd]
	mh, n1 := decodeBlockHandle(region)
	if n1 <= 0 {
		return footer{}, base.CorruptionErrorf(file, off, "bad metaindex block handle in footer")
	}
	ih, n2 := decodeBlockHandle(region[n1:])
	if n2 <= 0 {
		return footer{}, base.CorruptionErrorf(file, off, "bad index block handle in footer")
	}
	for _, c := range region[n1+n2:] {
		if c != 0 {
			return footer{}, base.CorruptionErrorf(file, off, "non-zero footer padding")
		}
	}
	ft := footer{metaindex: mh, index: ih, version: version}
	if ft.encrypted() {
		ft.keyID = crypt.KeyID(binary.LittleEndian.Uint32(b[footerHandlesEnd:]))
	}
	return ft, nil
}

// blockKind names a block's role; sealed blocks are bound to it.
type blockKind byte

// Block kinds, stored in the additional data of sealed blocks: the values
// must never change.
const (
	kindData       blockKind = 1
	kindFilter     blockKind = 2
	kindProperties blockKind = 3
	kindIndex      blockKind = 4
	kindMetaindex  blockKind = 5
)

func (k blockKind) String() string {
	switch k {
	case kindData:
		return "data"
	case kindFilter:
		return "filter"
	case kindProperties:
		return "properties"
	case kindIndex:
		return "index"
	case kindMetaindex:
		return "metaindex"
	}
	return fmt.Sprintf("blockKind(%d)", byte(k))
}

// blockAADPrefix starts the additional data of a sealed block.
const blockAADPrefix = "kayadb sstable block v2\x00"

// blockAADLen is the length of a block's additional data.
const blockAADLen = len(blockAADPrefix) + 1 + 8

// blockAAD returns the additional data of the block of kind k at offset off:
// the prefix, the kind and the offset (u64 LE). It binds a sealed block to
// its place: moved to another offset or role, it does not open.
func blockAAD(dst *[blockAADLen]byte, k blockKind, off uint64) []byte {
	copy(dst[:], blockAADPrefix)
	dst[len(blockAADPrefix)] = byte(k)
	binary.LittleEndian.PutUint64(dst[len(blockAADPrefix)+1:], off)
	return dst[:]
}

// BlockKeyError is a sealed block that does not open: a wrong key under its
// id, bytes changed after sealing (with a recomputed CRC), or a key the
// keyring lacks. errors.Is matches crypt.ErrDecrypt or crypt.ErrUnknownKey,
// and, for ErrDecrypt, base.ErrCorruption (a changed byte is one reading).
type BlockKeyError struct {
	File   string
	Offset int64
	Kind   string
	KeyID  crypt.KeyID
	Err    error // a *crypt.KeyError
}

func (e *BlockKeyError) Error() string {
	return fmt.Sprintf("sstable %s: %s block at offset %d: %v", e.File, e.Kind, e.Offset, e.Err)
}

func (e *BlockKeyError) Unwrap() error { return e.Err }

// Is makes a block that fails authentication match base.ErrCorruption.
func (e *BlockKeyError) Is(target error) bool {
	return target == base.ErrCorruption && errors.Is(e.Err, crypt.ErrDecrypt)
}
