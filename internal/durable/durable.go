// Package durable writes files on the operating system's file system so
// that they survive a power cut: a file replaced through a temporary file,
// fsynced, renamed into place and its directory fsynced, and a directory
// fsynced on its own.
//
// It is a leaf (standard library only) for code that must not depend on
// the storage layers — the public Go client writes backups with it. The
// storage code itself goes through internal/vfs (vfs.WriteFileSync,
// vfs.SyncDir: the same protocol over any vfs.FS, so that crash tests can
// run it on a simulated disk).
package durable

import "os"

// WriteFile writes data to the file name (a full path inside dir, mode
// 0600) through name+".tmp": written, fsynced, renamed into place, dir
// fsynced. After a crash name holds its old content or data, never a mix.
// If it fails before the rename, it removes the temporary file and name is
// untouched.
func WriteFile(dir, name string, data []byte) error {
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
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
		err = os.Rename(tmp, name)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory, making the creation, removal and renaming of
// its entries durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		_ = d.Close()
		return err
	}
	return d.Close()
}
