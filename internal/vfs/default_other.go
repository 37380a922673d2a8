//go:build !linux

package vfs

import (
	"os"
	"syscall"
)

// Sync makes the file durable with the platform's fsync (os.File.Sync).
func (f *osFile) Sync() error {
	if f.fd < 0 {
		return f.closedErr("sync")
	}
	return f.File.Sync()
}

// Preallocate is a no-op outside Linux: preallocation is only a hint.
func (f *osFile) Preallocate(offset, length int64) error {
	if f.fd < 0 {
		return f.closedErr("fallocate")
	}
	return nil
}

// openDir opens name and checks that it is a directory.
func openDir(name string) (*os.File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	if !fi.IsDir() {
		_ = f.Close()
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.ENOTDIR}
	}
	return f, nil
}
