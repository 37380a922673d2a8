package engine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/manifest"
	"github.com/kayadb/kayadb/internal/vfs"
)

// Checkpoint writes a consistent, openable copy of the database to destDir,
// which must not exist. Tables are hard-linked (copied when linking is not
// possible), so a checkpoint costs little space until compactions replace
// the shared tables. The copy holds every write committed before the call
// (and possibly some later ones), always a prefix of the commit order.
//
// Checkpoint flushes the memtables first, so the copy needs no WAL. The
// tables it links stay pinned (they cannot be deleted) until it is done. A
// Checkpoint that fails (on a full disk, say) removes destDir again.
func (d *DB) Checkpoint(destDir string) (retErr error) {
	if d.opts.ReadOnly {
		return ErrReadOnly
	}
	fs := d.fs
	if _, err := fs.Stat(destDir); err == nil {
		return base.InvalidArgumentf("checkpoint destination %s already exists; choose a new directory", destDir)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("engine: checking %s: %w", destDir, err)
	}
	if err := d.Flush(); err != nil {
		return err
	}
	// Pin the current tables: a referenced Version keeps them on disk.
	v := d.vs.Current()
	defer v.Unref()

	if err := fs.MkdirAll(destDir, 0o700); err != nil {
		return fmt.Errorf("engine: creating %s: %w", destDir, err)
	}
	defer func() {
		if retErr != nil {
			_ = fs.RemoveAll(destDir)
		}
	}()
	var lastSeq base.SeqNum
	var maxNum base.FileNum
	for _, files := range v.Levels {
		for _, f := range files {
			name := base.MakeFilename(base.FileTypeTable, f.FileNum)
			if err := linkOrCopy(fs, filepath.Join(d.dir, name), filepath.Join(destDir, name)); err != nil {
				return err
			}
			lastSeq = max(lastSeq, f.LargestSeq)
			maxNum = max(maxNum, f.FileNum)
		}
	}
	// A fresh MANIFEST describing exactly v. Its log number points past
	// every file so the copy replays no WAL.
	manNum := maxNum + 1
	snap := manifest.SnapshotEdit(v, manNum+1, manNum+2, lastSeq)
	f, _, err := manifest.WriteManifest(fs, destDir, manNum, snap, d.opts.Encryption)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("engine: closing checkpoint manifest: %w", err)
	}
	return syncParent(fs, destDir)
}

// linkOrCopy hard-links src to dst, or copies it (and syncs the copy) when
// the file system refuses the link.
func linkOrCopy(fs vfs.FS, src, dst string) error {
	if err := fs.Link(src, dst); err == nil {
		return nil
	}
	in, err := fs.Open(src)
	if err != nil {
		return fmt.Errorf("engine: checkpoint: opening %s: %w", src, err)
	}
	defer in.Close()
	out, err := fs.Create(dst)
	if err != nil {
		return fmt.Errorf("engine: checkpoint: creating %s: %w", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return fmt.Errorf("engine: checkpoint: copying %s: %w", src, err)
	}
	if err := out.Sync(); err != nil {
		_ = out.Close()
		return fmt.Errorf("engine: checkpoint: syncing %s: %w", dst, err)
	}
	return out.Close()
}
