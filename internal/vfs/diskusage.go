package vfs

import "fmt"

// Usage is the space of the file system holding a path.
type Usage struct {
	// TotalBytes is the file system's size.
	TotalBytes uint64
	// AvailBytes is the space an unprivileged writer can still use
	// (statfs f_bavail): it excludes the blocks reserved for root, so it is
	// what decides whether the database's next write gets ENOSPC.
	AvailBytes uint64
}

// DiskUsageFS is implemented by file systems that can report their free
// space. Default (on Linux), MemFS and the error FS implement it.
type DiskUsageFS interface {
	// DiskUsage reports the space of the file system holding path.
	DiskUsage(path string) (Usage, error)
}

// DiskUsage reports the space of the file system holding path, if fs can
// say (see DiskUsageFS); otherwise it returns an error saying that fs does
// not report disk usage.
func DiskUsage(fs FS, path string) (Usage, error) {
	du, ok := fs.(DiskUsageFS)
	if !ok {
		return Usage{}, fmt.Errorf("vfs: %T does not report disk usage", fs)
	}
	return du.DiskUsage(path)
}
