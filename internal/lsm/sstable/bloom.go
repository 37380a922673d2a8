package sstable

import (
	"encoding/binary"
	"fmt"
)

const (
	bloomLineBytes   = 64
	bloomLineBits    = bloomLineBytes * 8
	bloomTrailerLen  = 5
	bloomHashSeed    = 0xbc9f1d34
	maxBloomBitsKey  = 100 // larger BloomBitsPerKey values are clamped
	maxBloomProbes   = 30
	bloomHashMul     = 0xc6a4a793
	bloomHashTailRot = 24
)

// bloomHash is LevelDB's Hash(data, n, 0xbc9f1d34), with bytes treated as
// unsigned.
func bloomHash(b []byte) uint32 {
	h := uint32(bloomHashSeed) ^ uint32(len(b))*bloomHashMul
	for ; len(b) >= 4; b = b[4:] {
		h += binary.LittleEndian.Uint32(b)
		h *= bloomHashMul
		h ^= h >> 16
	}
	switch len(b) {
	case 3:
		h += uint32(b[2]) << 16
		fallthrough
	case 2:
		h += uint32(b[1]) << 8
		fallthrough
	case 1:
		h += uint32(b[0])
		h *= bloomHashMul
		h ^= h >> bloomHashTailRot
	}
	return h
}

// bloomProbes returns the number of probes for bitsPerKey bits per key.
func bloomProbes(bitsPerKey int) int {
	p := bitsPerKey * 69 / 100
	return max(1, min(p, maxBloomProbes))
}

// bloomWriter accumulates key hashes and builds a filter block.
type bloomWriter struct {
	bitsPerKey int
	hashes     []uint32
}

func (w *bloomWriter) add(userKey []byte) {
	w.hashes = append(w.hashes, bloomHash(userKey))
}

// finish builds the filter block (bits + trailer).
func (w *bloomWriter) finish() []byte {
	nBits := uint64(len(w.hashes)) * uint64(w.bitsPerKey)
	nLines := (nBits + bloomLineBits - 1) / bloomLineBits
	if nLines%2 == 0 {
		nLines++
	}
	if nLines > 1<<31-1 {
		nLines = 1<<31 - 1 // odd; far beyond any real table
	}
	nBytes := nLines * bloomLineBytes
	filter := make([]byte, nBytes+bloomTrailerLen)
	probes := bloomProbes(w.bitsPerKey)
	lines := uint32(nLines)
	for _, h := range w.hashes {
		delta := h>>17 | h<<15
		lineBit := int(h%lines) * bloomLineBits
		for j := 0; j < probes; j++ {
			bit := lineBit + int(h%bloomLineBits)
			filter[bit>>3] |= 1 << (bit & 7)
			h += delta
		}
	}
	filter[nBytes] = byte(probes)
	binary.LittleEndian.PutUint32(filter[nBytes+1:], lines)
	return filter
}

// bloomFilter is a decoded filter block.
type bloomFilter struct {
	bits   []byte
	lines  uint32
	probes int
}

// decodeBloomFilter validates a filter block.
func decodeBloomFilter(b []byte) (bloomFilter, error) {
	if len(b) < bloomTrailerLen {
		return bloomFilter{}, fmt.Errorf("filter block of %d bytes is too short", len(b))
	}
	n := len(b) - bloomTrailerLen
	probes := int(b[n])
	lines := binary.LittleEndian.Uint32(b[n+1:])
	if probes < 1 || probes > maxBloomProbes {
		return bloomFilter{}, fmt.Errorf("bad filter probe count %d", probes)
	}
	if lines == 0 || uint64(lines)*bloomLineBytes != uint64(n) {
		return bloomFilter{}, fmt.Errorf("filter of %d bytes does not hold %d lines", n, lines)
	}
	return bloomFilter{bits: b[:n], lines: lines, probes: probes}, nil
}

// mayContain reports whether userKey may have been added. A zero
// bloomFilter (no filter) always answers true.
func (f *bloomFilter) mayContain(userKey []byte) bool {
	if f.lines == 0 {
		return true
	}
	h := bloomHash(userKey)
	delta := h>>17 | h<<15
	lineBit := int(h%f.lines) * bloomLineBits
	line := f.bits[lineBit>>3 : lineBit>>3+bloomLineBytes]
	for j := 0; j < f.probes; j++ {
		bit := h % bloomLineBits
		if line[bit>>3]&(1<<(bit&7)) == 0 {
			return false
		}
		h += delta
	}
	return true
}
