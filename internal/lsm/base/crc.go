package base

import "github.com/kayadb/kayadb/internal/crc"

// The masked CRC-32C lives in the neutral package crc, which the raft side
// shares; these are the same type and functions under their LSM names.

// CRC is a running CRC-32C (Castagnoli) value (crc.CRC).
type CRC = crc.CRC

// NewCRC returns the CRC-32C of b.
func NewCRC(b []byte) CRC { return crc.New(b) }

// MaskedCRC is shorthand for NewCRC(b).Value().
func MaskedCRC(b []byte) uint32 { return crc.Masked(b) }
