// Package crc is the masked CRC-32C (Castagnoli) that every on-disk format
// and the raft transport's frames carry: LevelDB's checksum, masked so that
// a CRC stored next to the data it covers does not look like valid data to
// a CRC over a larger region.
//
// It is a leaf: it imports the standard library only, so that the storage
// engine, the raft log, the snapshot store and the transport share it
// without importing each other. Changing a value it computes breaks every
// file format; the golden tests of those formats would say so.
package crc

import "hash/crc32"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// maskDelta is LevelDB's mask constant.
const maskDelta = 0xa282ead8

// CRC is a running CRC-32C (Castagnoli) value.
type CRC uint32

// New returns the CRC-32C of b.
func New(b []byte) CRC { return CRC(crc32.Update(0, castagnoli, b)) }

// Update extends the CRC with more bytes.
func (c CRC) Update(b []byte) CRC { return CRC(crc32.Update(uint32(c), castagnoli, b)) }

// Value returns the masked form that is stored on disk.
func (c CRC) Value() uint32 {
	return uint32(c>>15|c<<17) + maskDelta
}

// Masked is shorthand for New(b).Value().
func Masked(b []byte) uint32 { return New(b).Value() }
