//go:build linux

package vfs

import (
	"os"
	"syscall"
)

// DiskUsage reports the space of the file system holding path with
// statfs(2). The block counts are in units of the fragment size f_frsize,
// as statvfs(3) and df(1) count them (f_bsize, if the kernel reports no
// fragment size).
func (defaultFS) DiskUsage(path string) (Usage, error) {
	var st syscall.Statfs_t
	for {
		err := syscall.Statfs(path, &st)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return Usage{}, &os.PathError{Op: "statfs", Path: path, Err: err}
		}
		break
	}
	unit := uint64(st.Frsize)
	if st.Frsize <= 0 {
		unit = uint64(st.Bsize)
	}
	return Usage{TotalBytes: st.Blocks * unit, AvailBytes: st.Bavail * unit}, nil
}
