// Package errs holds the error classes that every layer of a node shares:
// corruption (with the file and offset it was found at), not found,
// invalid argument, closed, and a data directory locked by another
// process. The storage engine, the raft log, the snapshot store, the server
// and kayactl return them, and callers test for them with errors.Is
// whatever layer the error came from: a damaged raft log segment and a
// damaged SSTable are both errors.Is(err, errs.ErrCorruption) (and
// engine.ErrCorruption, the same value).
//
// It is a leaf: it imports the standard library only, so that the layers
// share it without importing each other. It never does I/O.
package errs

import (
	"errors"
	"fmt"
)

// Error classes. Test for them with errors.Is; the engine package re-exports
// them under its own names.
var (
	// ErrNotFound means a key does not exist.
	ErrNotFound = errors.New("kayadb: not found")
	// ErrCorruption means stored bytes failed a checksum or a structural
	// check. Errors of this class name the file and offset.
	ErrCorruption = errors.New("kayadb: corruption")
	// ErrInvalidArgument means the caller passed something the engine
	// refuses (a key too large, options out of range, ...).
	ErrInvalidArgument = errors.New("kayadb: invalid argument")
	// ErrClosed means the handle was used after Close.
	ErrClosed = errors.New("kayadb: closed")
	// ErrLocked means another process holds the data directory lock.
	ErrLocked = errors.New("kayadb: directory locked")
)

// CorruptionError describes damaged on-disk data: which file, at which
// offset, and what was wrong. It matches ErrCorruption with errors.Is.
type CorruptionError struct {
	// File is the path (or name) of the damaged file.
	File string
	// Offset is the byte offset of the damaged record or block, or -1 when
	// the damage is not tied to one offset.
	Offset int64
	// Msg says what check failed.
	Msg string
}

// Error implements error.
func (e *CorruptionError) Error() string {
	if e.Offset >= 0 {
		return fmt.Sprintf("kayadb: corruption in %s at offset %d: %s", e.File, e.Offset, e.Msg)
	}
	return fmt.Sprintf("kayadb: corruption in %s: %s", e.File, e.Msg)
}

// Is makes errors.Is(err, ErrCorruption) true.
func (e *CorruptionError) Is(target error) bool { return target == ErrCorruption }

// CorruptionErrorf builds a CorruptionError.
func CorruptionErrorf(file string, offset int64, format string, args ...any) error {
	return &CorruptionError{File: file, Offset: offset, Msg: fmt.Sprintf(format, args...)}
}

// WithFile fills in the file name of a CorruptionError produced by a decoder
// that did not know it, and shifts its offset by base. Other errors are
// returned unchanged.
func WithFile(err error, file string, baseOffset int64) error {
	var ce *CorruptionError
	if errors.As(err, &ce) && ce.File == "" {
		off := ce.Offset
		if off >= 0 {
			off += baseOffset
		}
		return &CorruptionError{File: file, Offset: off, Msg: ce.Msg}
	}
	return err
}

// InvalidArgumentf builds an error that matches ErrInvalidArgument.
func InvalidArgumentf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidArgument, fmt.Sprintf(format, args...))
}
