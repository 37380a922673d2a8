package base

import "hash/crc32"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crcMaskDelta is LevelDB's mask constant. Masking keeps a CRC stored next to
// the data it covers from looking like valid data to a CRC over a larger
// region (the CRC of a string that embeds its own CRC is not random).
const crcMaskDelta = 0xa282ead8

// CRC is a running CRC-32C (Castagnoli) value.
type CRC uint32

// NewCRC returns the CRC-32C of b.
func NewCRC(b []byte) CRC { return CRC(crc32.Update(0, castagnoli, b)) }

// Update extends the CRC with more bytes.
func (c CRC) Update(b []byte) CRC { return CRC(crc32.Update(uint32(c), castagnoli, b)) }

// Value returns the masked form that is stored on disk.
func (c CRC) Value() uint32 {
	return uint32(c>>15|c<<17) + crcMaskDelta
}

// MaskedCRC is shorthand for NewCRC(b).Value().
func MaskedCRC(b []byte) uint32 { return NewCRC(b).Value() }
