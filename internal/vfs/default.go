package vfs

import (
	"io"
	"os"
)

// Default is the FS backed by the operating system's file system.
//
// Files are created with permission 0600 (before the umask) and MkdirAll
// passes its perm argument through to os.MkdirAll. File methods are thin
// wrappers around *os.File and direct system calls: they add no locking and
// no buffering. See default_linux.go for the Linux-specific Sync,
// Preallocate and Lock, and default_other.go for the portable fallbacks.
var Default FS = defaultFS{}

// defaultFS implements FS on top of package os.
type defaultFS struct{}

// osFile is a File backed by an *os.File. Read, ReadAt, Write, Seek, Stat
// and Truncate come straight from the embedded *os.File; Sync, Preallocate and
// Close are defined per platform or below.
type osFile struct {
	*os.File
	// fd is the descriptor, captured once at open time so that Sync and
	// Preallocate are single system calls. It is -1 after Close.
	fd int
	// dir reports whether the file was opened with OpenDir, in which case
	// Sync is a full fsync(2) of the directory.
	dir bool
}

var _ File = (*osFile)(nil)

func newOSFile(f *os.File, dir bool) *osFile {
	return &osFile{File: f, fd: int(f.Fd()), dir: dir}
}

// Close closes the file.
func (f *osFile) Close() error {
	f.fd = -1
	return f.File.Close()
}

// closedErr is the error returned by Sync and Preallocate after Close.
func (f *osFile) closedErr(op string) error {
	return &os.PathError{Op: op, Path: f.Name(), Err: os.ErrClosed}
}

// Create creates or truncates name with O_RDWR|O_CREATE|O_TRUNC and
// permission 0600.
func (defaultFS) Create(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	return newOSFile(f, false), nil
}

// Open opens name read-only.
func (defaultFS) Open(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	return newOSFile(f, false), nil
}

// OpenReadWrite opens the existing file name with O_RDWR.
func (defaultFS) OpenReadWrite(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return newOSFile(f, false), nil
}

// OpenDir opens the directory name so that it can be synced.
func (defaultFS) OpenDir(name string) (File, error) {
	f, err := openDir(name)
	if err != nil {
		return nil, err
	}
	return newOSFile(f, true), nil
}

// Remove removes a file or an empty directory.
func (defaultFS) Remove(name string) error { return os.Remove(name) }

// RemoveAll removes name and everything under it. It returns nil if name
// does not exist.
func (defaultFS) RemoveAll(name string) error { return os.RemoveAll(name) }

// Rename renames oldname to newname, replacing newname.
func (defaultFS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }

// Link creates newname as a hard link to oldname.
func (defaultFS) Link(oldname, newname string) error { return os.Link(oldname, newname) }

// MkdirAll creates dir and its missing parents with permission perm (before
// the umask).
func (defaultFS) MkdirAll(dir string, perm os.FileMode) error { return os.MkdirAll(dir, perm) }

// List returns the names of dir's entries in directory order.
func (defaultFS) List(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	names, err := f.Readdirnames(-1)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return names, nil
}

// Stat returns name's metadata, following symbolic links.
func (defaultFS) Stat(name string) (os.FileInfo, error) { return os.Stat(name) }

// Lock takes an exclusive, non-blocking lock on name, creating it with
// permission 0600 if needed.
func (defaultFS) Lock(name string) (io.Closer, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	l, err := lockFile(f)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return l, nil
}

// lockedError is the error returned by Lock when the lock is held.
func lockedError(name string) error {
	return &os.PathError{Op: "lock", Path: name, Err: ErrLocked}
}
