//go:build linux

package vfs

import (
	"errors"
	"os"
	"runtime"
	"syscall"
)

// fallocKeepSize is FALLOC_FL_KEEP_SIZE from <linux/falloc.h>.
const fallocKeepSize = 0x1

// Sync makes the file's data durable with fdatasync(2). On a handle from
// OpenDir it makes the directory's entries durable with fsync(2).
func (f *osFile) Sync() error {
	if f.fd < 0 {
		return f.closedErr("sync")
	}
	if f.dir {
		return f.File.Sync()
	}
	for {
		err := syscall.Fdatasync(f.fd)
		// Keep f (and so its *os.File, whose finalizer closes fd) alive
		// until the system call returns.
		runtime.KeepAlive(f)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
		}
		return nil
	}
}

// Preallocate reserves [offset, offset+length) with
// fallocate(FALLOC_FL_KEEP_SIZE), so the file size does not change. File
// systems without fallocate support (EOPNOTSUPP, ENOSYS) are ignored
// because preallocation is only a hint; every other error is returned. A
// zero length is a no-op.
func (f *osFile) Preallocate(offset, length int64) error {
	if f.fd < 0 {
		return f.closedErr("fallocate")
	}
	if length == 0 {
		return nil
	}
	for {
		err := syscall.Fallocate(f.fd, fallocKeepSize, offset, length)
		runtime.KeepAlive(f)
		switch {
		case err == nil:
			return nil
		case err == syscall.EINTR:
			continue
		case errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.ENOSYS):
			return nil
		default:
			return &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
		}
	}
}

// openDir opens a directory with O_DIRECTORY, so it fails with ENOTDIR on
// anything else.
func openDir(name string) (*os.File, error) {
	return os.OpenFile(name, os.O_RDONLY|syscall.O_DIRECTORY, 0)
}
