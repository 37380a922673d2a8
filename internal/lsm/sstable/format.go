package sstable

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/kayadb/kayadb/internal/lsm/base"
)

// FormatVersion is the table format version this package writes and reads.
const FormatVersion = 1

const (
	// footerLen is the fixed size of the footer at the end of every table.
	footerLen = 57
	// blockTrailerLen is the size of the trailer after every block.
	blockTrailerLen = 5
	// checksumCRC32C is the only checksum type (footer byte 0).
	checksumCRC32C = 1
	// tableMagic ends every table.
	tableMagic = "\x89KAYASST"

	footerHandlesEnd = 41 // handles + zero padding occupy [1, 41)
	footerVersionOff = 41
	footerCRCOff     = 45
	footerMagicOff   = 49

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
}

// encode returns the footer's 57 bytes.
func (f footer) encode() [footerLen]byte {
	var b [footerLen]byte
	b[0] = checksumCRC32C
	p := appendBlockHandle(b[1:1], f.metaindex)
	p = appendBlockHandle(p, f.index)
	_ = p // written in place; the rest up to byte 41 stays zero
	binary.LittleEndian.PutUint32(b[footerVersionOff:], f.version)
	binary.LittleEndian.PutUint32(b[footerCRCOff:], base.MaskedCRC(b[:footerCRCOff]))
	copy(b[footerMagicOff:], tableMagic)
	return b
}

// decodeFooter parses and verifies the footer bytes b, which were read at
// offset off of file. It checks the length, magic, format version, checksum
// type, checksum, handle encodings and the zero padding; it does not check
// the handles against the file size.
func decodeFooter(b []byte, file string, off int64) (footer, error) {
	if len(b) != footerLen {
		return footer{}, base.CorruptionErrorf(file, off, "footer is %d bytes, want %d", len(b), footerLen)
	}
	if string(b[footerMagicOff:]) != tableMagic {
		return footer{}, base.CorruptionErrorf(file, off, "bad table magic %q (not a KayaDB sstable)", b[footerMagicOff:])
	}
	stored := binary.LittleEndian.Uint32(b[footerCRCOff:])
	computed := base.MaskedCRC(b[:footerCRCOff])
	version := binary.LittleEndian.Uint32(b[footerVersionOff:])
	if version != FormatVersion {
		msg := ""
		if stored != computed {
			msg = fmt.Sprintf(" (and the footer checksum does not match: expected %#08x, computed %#08x; the footer may be damaged)", stored, computed)
		}
		return footer{}, base.CorruptionErrorf(file, off, "unsupported table format version %d (this build supports version %d)%s", version, FormatVersion, msg)
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
	return footer{metaindex: mh, index: ih, version: version}, nil
}
