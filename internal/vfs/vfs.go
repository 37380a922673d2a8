// Package vfs is the only seam between KayaDB's storage code and the
// operating system's file system.
//
// It owns three implementations of FS:
//
//   - Default: the OS file system. Sync is fdatasync(2) on Linux, directory
//     syncs are fsync(2) on the directory, Preallocate is
//     fallocate(FALLOC_FL_KEEP_SIZE), Lock is flock(LOCK_EX|LOCK_NB). New
//     files are created 0600 and directories 0700.
//   - MemFS: an in-memory file system that remembers what has been synced.
//     CrashClone returns the file system as it could look after a power cut
//     at that instant: only synced file data and synced directory entries
//     survive (optionally plus a random part of the unsynced data).
//     SetCapacity makes it a small disk that fills up: writes past the
//     capacity fail with ErrNoSpace, a partial write keeping what fit.
//   - errorfs (NewErrorFS): a wrapper that calls an Injector before every
//     operation so tests can fail or "crash" at a chosen operation (or make
//     a write stop part way, PartialWrite).
//
// DiskUsage reports a file system's size and free space (statfs on Linux)
// for the FSs that implement DiskUsageFS; IsNoSpace recognises a full disk
// wherever the error surfaces.
//
// The package must never import other packages of this module, and must
// never hide an error: every failed system call surfaces to the caller.
package vfs

import (
	"io"
	"os"
	"path/filepath"
)

// File is an open file. Implementations are safe for concurrent ReadAt calls;
// other methods must not race with each other.
type File interface {
	io.Reader
	io.ReaderAt
	io.Writer
	io.Closer
	// Seek sets the offset of the next Read or Write (io.Seeker). Writers
	// use it to continue at the end of what they keep after cutting a
	// failed write off with Truncate.
	io.Seeker
	// Sync makes the file's data durable (fdatasync). On a directory handle
	// it makes the directory's entries durable.
	Sync() error
	// Stat returns the file's metadata.
	Stat() (os.FileInfo, error)
	// Preallocate reserves space for [offset, offset+length) without
	// changing the file size. It is a hint: implementations may do nothing.
	Preallocate(offset, length int64) error
	// Truncate changes the file's size.
	Truncate(size int64) error
}

// FS is a file system.
type FS interface {
	// Create creates (or truncates) a file for reading and writing.
	Create(name string) (File, error)
	// Open opens an existing file for reading.
	Open(name string) (File, error)
	// OpenReadWrite opens an existing file for reading and writing, with the
	// write offset at the start of the file.
	OpenReadWrite(name string) (File, error)
	// OpenDir opens a directory so it can be synced.
	OpenDir(name string) (File, error)
	// Remove removes a file or an empty directory.
	Remove(name string) error
	// RemoveAll removes a path and everything under it.
	RemoveAll(name string) error
	// Rename atomically renames oldname to newname, replacing newname if it
	// exists. The change is durable only after the directory is synced.
	Rename(oldname, newname string) error
	// Link creates newname as a hard link to oldname.
	Link(oldname, newname string) error
	// MkdirAll creates a directory and its parents.
	MkdirAll(dir string, perm os.FileMode) error
	// List returns the names of a directory's entries (not sorted).
	List(dir string) ([]string, error)
	// Stat returns a path's metadata.
	Stat(name string) (os.FileInfo, error)
	// Lock takes an exclusive lock on the named file, creating it if needed.
	// It fails at once (it never waits) if the lock is held, with an error
	// matching ErrLocked. Closing the returned Closer releases the lock.
	Lock(name string) (io.Closer, error)
}

// ErrLocked is returned (wrapped) by FS.Lock when another holder has the lock.
var ErrLocked = errLocked{}

type errLocked struct{}

func (errLocked) Error() string { return "file is locked by another process" }

// SyncDir opens dir, syncs it and closes it.
func SyncDir(fs FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		_ = d.Close()
		return err
	}
	return d.Close()
}

// WriteFileSync writes data to the file at path name (a full path inside
// dir) through a temporary file, syncs it, renames it into place and syncs
// dir, so that after a crash name holds either its old content or data,
// never a mix. If it fails before the rename, it removes the temporary file
// (a full disk keeps no half-written leftovers) and name is untouched.
func WriteFileSync(fs FS, dir, name string, data []byte) error {
	tmp := name + ".tmp"
	f, err := fs.Create(tmp)
	if err != nil {
		return err
	}
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fs.Rename(tmp, name)
	}
	if err != nil {
		_ = fs.Remove(tmp)
		return err
	}
	return SyncDir(fs, dir)
}

// MkdirAllSync creates dir and any missing parents like MkdirAll, and makes
// every directory it created durable by syncing its parent. Without that a
// power cut can lose a new directory (and everything synced inside it).
//
// It syncs dir's parent even when dir exists, because an earlier call may
// have created dir and then failed to sync its parent; a caller that
// retries after a failure thus still gets a durable dir (parents above dir
// created by the failed call are synced only if still missing).
func MkdirAllSync(fs FS, dir string, perm os.FileMode) error {
	dir = filepath.Clean(dir)
	missing := []string{dir}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := fs.Stat(d); err == nil {
			break
		}
		if d != dir {
			missing = append(missing, d)
		}
		if parent := filepath.Dir(d); parent == d {
			break
		}
	}
	if err := fs.MkdirAll(dir, perm); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := SyncDir(fs, filepath.Dir(missing[i])); err != nil {
			return err
		}
	}
	return nil
}
