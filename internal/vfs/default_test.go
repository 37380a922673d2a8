package vfs

import (
	"errors"
	"path/filepath"
	"runtime"
	"testing"
)

func TestDefaultModes(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "f")
	f, err := Default.Create(name)
	must(t, err)
	must(t, f.Close())
	fi, err := Default.Stat(name)
	must(t, err)
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("created file mode %v, want 0600", got)
	}
	d := filepath.Join(dir, "a", "b")
	must(t, Default.MkdirAll(d, 0o700))
	for _, p := range []string{d, filepath.Join(dir, "a")} {
		fi, err := Default.Stat(p)
		must(t, err)
		if got := fi.Mode().Perm(); got != 0o700 {
			t.Errorf("%s mode %v, want 0700", p, got)
		}
	}
	lockName := filepath.Join(dir, "LOCK")
	l, err := Default.Lock(lockName)
	must(t, err)
	must(t, l.Close())
	fi, err = Default.Stat(lockName)
	must(t, err)
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("lock file mode %v, want 0600", got)
	}
}

func TestDefaultPreallocate(t *testing.T) {
	name := filepath.Join(t.TempDir(), "f")
	f, err := Default.Create(name)
	must(t, err)
	defer f.Close()
	_, err = f.Write([]byte("abc"))
	must(t, err)
	must(t, f.Preallocate(0, 1<<20))
	must(t, f.Preallocate(1<<20, 0))
	fi, err := f.Stat()
	must(t, err)
	if fi.Size() != 3 {
		t.Fatalf("size after Preallocate = %d, want 3", fi.Size())
	}
	if runtime.GOOS == "linux" {
		if err := f.Preallocate(-1, 10); err == nil {
			t.Fatal("Preallocate(-1) succeeded")
		}
	}
	must(t, f.Sync())
}

// TestDefaultLockSameProcess checks that two Locks of one file conflict
// even inside one process (flock locks belong to the open file
// description), and that the error names the path.
func TestDefaultLockSameProcess(t *testing.T) {
	name := filepath.Join(t.TempDir(), "LOCK")
	l1, err := Default.Lock(name)
	must(t, err)
	for range 3 {
		_, err := Default.Lock(name)
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("second Lock = %v, want ErrLocked", err)
		}
	}
	must(t, l1.Close())
	l2, err := Default.Lock(name)
	must(t, err)
	must(t, l2.Close())
	if err := l2.Close(); err == nil {
		t.Fatal("double Close of a lock succeeded")
	}
}

func TestDefaultDirSyncIsDirectory(t *testing.T) {
	dir := t.TempDir()
	d, err := Default.OpenDir(dir)
	must(t, err)
	must(t, d.Sync())
	if _, err := d.Write([]byte("x")); err == nil {
		t.Fatal("Write on a directory handle succeeded")
	}
	must(t, d.Close())
}
