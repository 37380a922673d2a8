package sstable

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// The zstd encoder and decoder are shared by the whole process: EncodeAll
// and DecodeAll are safe for concurrent use and keep pools of per-goroutine
// state internally, so blocks are (de)compressed without per-call setup.
var (
	zstdOnce    sync.Once
	zstdEncoder *zstd.Encoder
	zstdDecoder *zstd.Decoder
	zstdInitErr error
)

func initZstd() {
	zstdOnce.Do(func() {
		procs := runtime.GOMAXPROCS(0)
		zstdEncoder, zstdInitErr = zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderConcurrency(procs),
			zstd.WithEncoderCRC(false), // blocks carry their own CRC32C
			zstd.WithZeroFrames(true),
		)
		if zstdInitErr != nil {
			return
		}
		zstdDecoder, zstdInitErr = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(procs),
			zstd.WithDecoderMaxMemory(maxDecodedBlockLen),
			zstd.WithDecodeAllCapLimit(true),
			zstd.IgnoreChecksum(true),
		)
	})
}

// compressBlock compresses raw with c, appending to dst[:0]. It returns nil
// when the compressed form does not save at least 12.5%, in which case the
// block must be stored raw.
func compressBlock(c Compression, dst, raw []byte) ([]byte, error) {
	var out []byte
	switch c {
	case SnappyCompression:
		n := s2.MaxEncodedLen(len(raw))
		if n < 0 {
			return nil, nil
		}
		if cap(dst) < n {
			dst = make([]byte, n)
		}
		out = s2.EncodeSnappy(dst[:n], raw)
	case ZstdCompression:
		initZstd()
		if zstdInitErr != nil {
			return nil, fmt.Errorf("sstable: zstd: %w", zstdInitErr)
		}
		out = binary.AppendUvarint(dst[:0], uint64(len(raw)))
		out = zstdEncoder.EncodeAll(raw, out)
	default:
		return nil, nil
	}
	if len(out) > len(raw)-len(raw)/8 {
		return nil, nil
	}
	return out, nil
}

var (
	errBadCompressedLen = errors.New("bad decoded length header")
	errCompressedTooBig = errors.New("decoded length too large")
)

// decompressedLen returns the decoded size of stored (compressed with
// algorithm typ) and the offset at which the compressed body starts (zstd),
// checking it against the sanity bounds.
func decompressedLen(typ Compression, stored []byte) (n, bodyOff int, err error) {
	switch typ {
	case SnappyCompression:
		d, err := s2.DecodedLen(stored)
		if err != nil {
			return 0, 0, fmt.Errorf("snappy: %w", err)
		}
		if d > maxDecodedBlockLen || uint64(d) > uint64(len(stored))*maxSnappyRatio {
			return 0, 0, fmt.Errorf("snappy: %w: %d bytes from %d", errCompressedTooBig, d, len(stored))
		}
		return d, 0, nil
	case ZstdCompression:
		d, k := binary.Uvarint(stored)
		if k <= 0 {
			return 0, 0, fmt.Errorf("zstd: %w", errBadCompressedLen)
		}
		if d > maxDecodedBlockLen {
			return 0, 0, fmt.Errorf("zstd: %w: %d bytes", errCompressedTooBig, d)
		}
		// The frame header must agree (EncodeAll records the content size
		// of every frame of 256 bytes or more), so that a damaged length
		// prefix cannot make the reader allocate a large buffer for a small
		// frame.
		var hdr zstd.Header
		if err := hdr.Decode(stored[k:]); err != nil {
			return 0, 0, fmt.Errorf("zstd: frame header: %w", err)
		}
		if (hdr.HasFCS && hdr.FrameContentSize != d) || (!hdr.HasFCS && d >= 256) {
			return 0, 0, fmt.Errorf("zstd: frame content size %d (known: %v) disagrees with the block's %d", hdr.FrameContentSize, hdr.HasFCS, d)
		}
		return int(d), k, nil
	}
	return 0, 0, fmt.Errorf("unknown compression type %d", uint8(typ))
}

// decompress decodes stored (compressed with typ) into buf if it is large
// enough, else into a new buffer of exactly the decoded size. The result has
// exactly the declared decoded length.
func decompress(typ Compression, stored, buf []byte) ([]byte, error) {
	n, bodyOff, err := decompressedLen(typ, stored)
	if err != nil {
		return nil, err
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n:n]
	switch typ {
	case SnappyCompression:
		out, err := s2.Decode(buf, stored)
		if err != nil {
			return nil, fmt.Errorf("snappy: %w", err)
		}
		if len(out) != n || (n > 0 && &out[0] != &buf[0]) {
			return nil, fmt.Errorf("snappy: decoded %d bytes, want %d", len(out), n)
		}
		return out, nil
	case ZstdCompression:
		initZstd()
		if zstdInitErr != nil {
			return nil, fmt.Errorf("zstd: %w", zstdInitErr)
		}
		out, err := zstdDecoder.DecodeAll(stored[bodyOff:], buf[:0])
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		if len(out) != n || (n > 0 && &out[0] != &buf[0]) {
			return nil, fmt.Errorf("zstd: decoded %d bytes, want %d", len(out), n)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown compression type %d", uint8(typ))
}
