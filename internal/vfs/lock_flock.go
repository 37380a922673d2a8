//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package vfs

import (
	"io"
	"os"
	"syscall"
)

// lockFile takes flock(LOCK_EX|LOCK_NB) on f and returns f as the lock's
// Closer: closing the descriptor releases the lock. Two opens of the same
// file conflict even within one process, because flock locks belong to the
// open file description.
func lockFile(f *os.File) (io.Closer, error) {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return f, nil
		case err == syscall.EINTR:
			continue
		case err == syscall.EWOULDBLOCK:
			return nil, lockedError(f.Name())
		default:
			return nil, &os.PathError{Op: "flock", Path: f.Name(), Err: err}
		}
	}
}
