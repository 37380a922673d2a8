package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/kayadb/kayadb/internal/vfs"
)

// fileWriter is the file sink: lines appended to one file, rotated by
// size. size is the length of the whole lines the file holds: a write
// that fails part way is cut back to it, so that the retried lines are
// neither torn nor doubled.
type fileWriter struct {
	o         *Options
	fs        vfs.FS
	path, dir string
	f         vfs.File // nil after a failure that left the file in doubt: reopened by the next write
	size      int64
	dirty     bool // written since the last sync
	buf       []byte
}

// tornTailScan bounds how far back from the end of an existing file open
// looks for the end of the last whole line (a line is far shorter).
const tornTailScan = 64 << 10

func openFileWriter(o *Options) (*fileWriter, error) {
	w := &fileWriter{o: o, fs: o.FS, path: o.File, dir: filepath.Dir(o.File)}
	if err := vfs.MkdirAllSync(w.fs, w.dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit log %s: creating its directory: %w", w.path, err)
	}
	if err := w.open(-1); err != nil {
		return nil, fmt.Errorf("audit log %s: %w (check the path given to --audit-log-file and its directory's permissions)", w.path, err)
	}
	return w, nil
}

// open opens the file for appending, creating it (and syncing its
// directory) when missing. known is the length of the whole lines this
// writer knows the file holds (-1 on the first open): the file is cut back
// to it, or, at the first open, to the end of its last whole line (a torn
// write of a crash).
func (w *fileWriter) open(known int64) error {
	f, err := w.fs.OpenReadWrite(w.path)
	created := false
	if errors.Is(err, os.ErrNotExist) {
		f, err = w.fs.Create(w.path)
		created = true
	}
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return err
	}
	size := st.Size()
	keep := size
	if known >= 0 && known < size {
		keep = known
	} else if known < 0 && size > 0 {
		if keep, err = wholeLines(f, size); err != nil {
			_ = f.Close()
			return err
		}
		if keep < size {
			w.o.Logger.Warn("audit log ended in a torn line (a crash during a write); the unfinished line was cut off", "file", w.path, "offset", keep, "bytes", size-keep)
		}
	}
	if keep < size {
		if err := f.Truncate(keep); err != nil {
			_ = f.Close()
			return err
		}
	}
	if _, err := f.Seek(keep, io.SeekStart); err != nil {
		_ = f.Close()
		return err
	}
	if created {
		if err := vfs.SyncDir(w.fs, w.dir); err != nil {
			_ = f.Close()
			return err
		}
	}
	w.f, w.size = f, keep
	return nil
}

// wholeLines returns the length of the file's whole lines: up to its last
// '\n' within tornTailScan of the end (the whole file when it ends in one,
// or when no '\n' is near the end: then nothing is cut).
func wholeLines(f vfs.File, size int64) (int64, error) {
	n := min(size, tornTailScan)
	b := make([]byte, n)
	if _, err := f.ReadAt(b, size-n); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	if b[n-1] == '\n' {
		return size, nil
	}
	i := bytes.LastIndexByte(b, '\n')
	if i < 0 {
		if n == size {
			return 0, nil // one torn line and nothing else
		}
		return size, nil
	}
	return size - n + int64(i) + 1, nil
}

// write appends the batch, rotating first whenever the next lines would
// take the file past MaxFileBytes, and with FsyncAlways syncs before it
// returns. It returns how many entries it wrote (and synced, with
// FsyncAlways); on an error those stay written and the rest are retried.
func (w *fileWriter) write(batch []entry) (int, string, error) {
	done := 0
	for done < len(batch) {
		if w.f == nil {
			if err := w.open(w.size); err != nil {
				return done, "open", err
			}
		}
		// The lines that fit before the next rotation (at least one: a
		// file holds one line however long).
		w.buf = w.buf[:0]
		n := done
		for n < len(batch) && (n == done || w.size+int64(len(w.buf)+len(batch[n].line)) <= w.o.MaxFileBytes) {
			w.buf = append(w.buf, batch[n].line...)
			n++
		}
		if w.size > 0 && w.size+int64(len(w.buf)) > w.o.MaxFileBytes {
			if err := w.rotate(); err != nil {
				return done, "rotate", err
			}
			continue
		}
		if _, err := w.f.Write(w.buf); err != nil {
			w.cut()
			return done, "write", err
		}
		if w.o.Fsync == FsyncAlways {
			if err := w.f.Sync(); err != nil {
				// After a failed fdatasync the written pages may be gone:
				// cut them and write them again.
				w.cut()
				return done, "fsync", err
			}
		} else {
			w.dirty = true
		}
		w.size += int64(len(w.buf))
		done = n
	}
	return done, "", nil
}

// cut drops what a failed write or sync left past the whole lines; when
// that fails too, the file is closed and the next write reopens it (and
// cuts it then).
func (w *fileWriter) cut() {
	if err := w.f.Truncate(w.size); err == nil {
		if _, err := w.f.Seek(w.size, io.SeekStart); err == nil {
			return
		}
	}
	_ = w.f.Close()
	w.f = nil
}

// rotate syncs and closes the file, makes room for it as audit.jsonl.1 by
// shifting audit.jsonl.1 … up by one (the oldest beyond MaxFiles files
// removed), renames it, creates a new one and syncs the directory. Only
// the run of files from .1 up to the first gap is shifted (a rotation
// cut short by an error leaves a gap; the files above it are older and
// stay): no rename replaces a file, the order holds whatever step fails,
// and a failed rotation is simply retried.
func (w *fileWriter) rotate() error {
	if err := w.f.Sync(); err != nil {
		return err
	}
	w.dirty = false
	err := w.f.Close()
	w.f = nil
	if err != nil {
		return err
	}
	nums, err := w.rotated()
	if err != nil {
		return err
	}
	name := func(i int) string { return w.path + "." + strconv.Itoa(i) }
	for len(nums) >= w.o.MaxFiles { // the live file becomes one of them
		if err := w.fs.Remove(name(nums[len(nums)-1])); err != nil {
			return err
		}
		nums = nums[:len(nums)-1]
	}
	run := 0
	for run < len(nums) && nums[run] == run+1 {
		run++
	}
	for j := run; j >= 1; j-- {
		if err := w.fs.Rename(name(j), name(j+1)); err != nil {
			return err
		}
	}
	if err := w.fs.Rename(w.path, name(1)); err != nil {
		return err
	}
	f, err := w.fs.Create(w.path)
	if err != nil {
		return err
	}
	w.f, w.size = f, 0
	return vfs.SyncDir(w.fs, w.dir)
}

// rotated returns the numbers of the rotated files, ascending.
func (w *fileWriter) rotated() ([]int, error) {
	names, err := w.fs.List(w.dir)
	if err != nil {
		return nil, err
	}
	base := filepath.Base(w.path) + "."
	var nums []int
	for _, name := range names {
		if !strings.HasPrefix(name, base) {
			continue
		}
		if i, err := strconv.Atoi(name[len(base):]); err == nil && i > 0 && strconv.Itoa(i) == name[len(base):] {
			nums = append(nums, i)
		}
	}
	slices.Sort(nums)
	return nums, nil
}

// tick syncs what was written since the last sync (FsyncInterval).
func (w *fileWriter) tick() (string, error) {
	if !w.dirty || w.f == nil || w.o.Fsync == FsyncNever {
		return "", nil
	}
	if err := w.f.Sync(); err != nil {
		return "fsync", err
	}
	w.dirty = false
	return "", nil
}

// close syncs (whatever the mode) and closes the file.
func (w *fileWriter) close() error {
	if w.f == nil {
		return nil
	}
	err := w.f.Sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.f = nil
	return err
}
