package base

import "github.com/kayadb/kayadb/internal/errs"

// The error classes live in the neutral package errs, which the raft side
// shares; these are the same values and functions under their LSM names,
// so errors.Is(err, base.ErrCorruption) and errors.Is(err,
// errs.ErrCorruption) are the same test.
var (
	// ErrNotFound means a key does not exist.
	ErrNotFound = errs.ErrNotFound
	// ErrCorruption means stored bytes failed a checksum or a structural
	// check. Errors of this class name the file and offset.
	ErrCorruption = errs.ErrCorruption
	// ErrInvalidArgument means the caller passed something the engine
	// refuses (a key too large, options out of range, ...).
	ErrInvalidArgument = errs.ErrInvalidArgument
	// ErrClosed means the handle was used after Close.
	ErrClosed = errs.ErrClosed
	// ErrLocked means another process holds the data directory lock.
	ErrLocked = errs.ErrLocked
)

// CorruptionError describes damaged on-disk data (errs.CorruptionError).
type CorruptionError = errs.CorruptionError

// CorruptionErrorf builds a CorruptionError (errs.CorruptionErrorf).
func CorruptionErrorf(file string, offset int64, format string, args ...any) error {
	return errs.CorruptionErrorf(file, offset, format, args...)
}

// WithFile fills in the file name of a CorruptionError produced by a decoder
// that did not know it (errs.WithFile).
func WithFile(err error, file string, baseOffset int64) error {
	return errs.WithFile(err, file, baseOffset)
}

// InvalidArgumentf builds an error that matches ErrInvalidArgument.
func InvalidArgumentf(format string, args ...any) error {
	return errs.InvalidArgumentf(format, args...)
}
