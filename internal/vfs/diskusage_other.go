//go:build !linux

package vfs

import (
	"errors"
	"os"
	"runtime"
)

// DiskUsage is not implemented outside Linux: it returns an error that
// says so, and callers treat free space as unknown.
func (defaultFS) DiskUsage(path string) (Usage, error) {
	return Usage{}, &os.PathError{Op: "statfs", Path: path,
		Err: errors.New("disk usage is not supported on " + runtime.GOOS)}
}
