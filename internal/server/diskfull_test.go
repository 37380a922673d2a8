package server

import (
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/internal/vfs"
	"github.com/kayadb/kayadb/internal/wire"
)

// fillTo writes a filler file on fs so that about free bytes stay free.
func fillTo(t *testing.T, fs *vfs.MemFS, dir string, free int64) {
	t.Helper()
	u, err := vfs.DiskUsage(fs, dir)
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(dir, "filler")
	var have int64
	if fi, err := fs.Stat(name); err == nil {
		have = fi.Size()
	}
	want := have + int64(u.AvailBytes) - free
	f, err := fs.OpenReadWrite(name)
	if err != nil {
		f, err = fs.Create(name)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(max(want, 0)); err != nil {
		t.Fatalf("filling the disk: %v", err)
	}
}

func TestDiskGuardEntersAndLeavesDiskFullMode(t *testing.T) {
	fs := vfs.NewMem()
	fs.SetCapacity(64 << 20)
	dir := "/data"
	if err := fs.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	const reserve = 4 << 20
	g := newDiskGuard(fs, dir, 7, reserve, slog.New(slog.DiscardHandler))
	if u, _ := vfs.DiskUsage(fs, dir); u.AvailBytes > 64<<20-reserve {
		t.Fatalf("after start %d bytes free of %d: the ballast does not hold the %d-byte reserve", u.AvailBytes, 64<<20, reserve)
	}
	if err := g.admit(); err != nil {
		t.Fatalf("a disk with room refuses writes: %v", err)
	}

	// Another program fills the disk to below half the reserve.
	fillTo(t, fs, dir, reserve/4)
	g.check()
	err := g.admit()
	if err == nil {
		t.Fatal("writes are admitted with a full disk")
	}
	for _, want := range []string{"disk full on node 7", "free space or add capacity", dir} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	if !errors.Is(err, errDiskFull) {
		t.Errorf("refusal %v does not match errDiskFull", err)
	}
	if !wire.IsDiskFullRefusal(err.Error()) {
		t.Errorf("refusal %q is not what clients recognize as one (wire.IsDiskFullRefusal)", err)
	}
	if _, err := fs.Stat(filepath.Join(dir, ballastName)); err == nil {
		t.Error("the ballast is still there in disk-full mode: the node has no reserve to work with")
	}
	if full, why := g.state(); !full || why == "" {
		t.Errorf("state() = %v, %q", full, why)
	}
	if g.events.Load() != 1 {
		t.Errorf("events = %d, want 1", g.events.Load())
	}

	// Some space comes back, but not twice the reserve: still full.
	fillTo(t, fs, dir, reserve+reserve/2)
	g.check()
	if g.admit() == nil {
		t.Fatal("left disk-full mode with less than twice the reserve free")
	}

	// Enough space: the node resumes by itself and makes its ballast again.
	resumed := 0
	g.resumeEngine = func() (bool, error) { resumed++; return false, nil }
	if err := fs.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	g.check()
	if err := g.admit(); err != nil {
		t.Fatalf("still refusing writes with the disk freed: %v", err)
	}
	if resumed == 0 {
		t.Error("the engine was not asked to resume")
	}
	if _, err := fs.Stat(filepath.Join(dir, ballastName)); err != nil {
		t.Errorf("no ballast after resuming: %v", err)
	}
	if u, _ := vfs.DiskUsage(fs, dir); u.AvailBytes > 64<<20-reserve {
		t.Errorf("after resuming %d bytes free: the ballast holds no space", u.AvailBytes)
	}
}

func TestDiskGuardFailedWriteEntersModeAndResumeFailureKeepsIt(t *testing.T) {
	fs := vfs.NewMem()
	fs.SetCapacity(64 << 20)
	dir := "/data"
	_ = fs.MkdirAll(dir, 0o700)
	g := newDiskGuard(fs, dir, 1, 4<<20, slog.New(slog.DiscardHandler))
	g.noteNoSpace(errors.New("some other error"))
	g.check()
	if g.admit() != nil {
		t.Fatal("an error other than no-space entered disk-full mode")
	}
	// statfs says there is room, but a write failed: trust the failure.
	g.noteNoSpace(vfs.ErrNoSpace)
	g.check()
	if g.admit() == nil {
		t.Fatal("a write that failed with ENOSPC did not enter disk-full mode")
	}
	// Next check: no new failure and room, but the engine cannot resume yet.
	g.resumeEngine = func() (bool, error) { return true, vfs.ErrNoSpace }
	g.check()
	if g.admit() == nil {
		t.Fatal("left disk-full mode although the engine could not resume")
	}
	g.resumeEngine = func() (bool, error) { return true, nil }
	g.check()
	if err := g.admit(); err != nil {
		t.Fatalf("did not leave disk-full mode: %v", err)
	}
}

func TestDiskGuardGivesBallastBackAtStartOnAFullDisk(t *testing.T) {
	fs := vfs.NewMem()
	fs.SetCapacity(64 << 20)
	dir := "/data"
	_ = fs.MkdirAll(dir, 0o700)
	const reserve = 8 << 20
	newDiskGuard(fs, dir, 1, reserve, slog.New(slog.DiscardHandler))
	// The disk filled while the node was down.
	fillTo(t, fs, dir, 0)
	g := newDiskGuard(fs, dir, 1, reserve, slog.New(slog.DiscardHandler))
	if g.admit() == nil {
		t.Fatal("started with a full disk but admits writes")
	}
	u, _ := vfs.DiskUsage(fs, dir)
	if u.AvailBytes < reserve {
		t.Fatalf("after start %d bytes free: the ballast's %d bytes were not given back", u.AvailBytes, reserve)
	}
	// With the reserve disabled, a ballast left from before is given back.
	fs2 := vfs.NewMem()
	_ = fs2.MkdirAll(dir, 0o700)
	newDiskGuard(fs2, dir, 1, reserve, slog.New(slog.DiscardHandler))
	newDiskGuard(fs2, dir, 1, -1, slog.New(slog.DiscardHandler))
	if _, err := fs2.Stat(filepath.Join(dir, ballastName)); err == nil {
		t.Error("--disk-reserve 0 kept the ballast of an earlier run")
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 19: "1.5 MiB", 5 << 30: "5.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestDiskGuardWithoutRoomForTheReserve: a disk with less free space than
// the reserve needs still takes writes (the node runs without a ballast)
// until it is really nearly full.
func TestDiskGuardWithoutRoomForTheReserve(t *testing.T) {
	fs := vfs.NewMem()
	fs.SetCapacity(256 << 20)
	dir := "/data"
	_ = fs.MkdirAll(dir, 0o700)
	fillTo(t, fs, dir, 100<<20)
	g := newDiskGuard(fs, dir, 1, 1<<30, slog.New(slog.DiscardHandler))
	if err := g.admit(); err != nil {
		t.Fatalf("100 MiB free, a 1 GiB reserve that cannot be kept: writes refused: %v", err)
	}
	if _, err := fs.Stat(filepath.Join(dir, ballastName)); err == nil {
		t.Fatal("a ballast was made without room for it")
	}
	fillTo(t, fs, dir, maxLowWater-1)
	g.check()
	if g.admit() == nil {
		t.Fatal("below the low-water mark, writes are still admitted")
	}
}

// TestDiskGuardEngineStoppedEntersMode: a storage engine stopped by a full
// disk (another program took the space between two checks) puts the node in
// disk-full mode, which gives the ballast back, and the engine is asked to
// resume with it at once.
func TestDiskGuardEngineStoppedEntersMode(t *testing.T) {
	fs := vfs.NewMem()
	fs.SetCapacity(64 << 20)
	dir := "/data"
	_ = fs.MkdirAll(dir, 0o700)
	g := newDiskGuard(fs, dir, 1, 4<<20, slog.New(slog.DiscardHandler))
	fillTo(t, fs, dir, 3<<20) // above the low-water mark, below the high
	stopped, calls := true, 0
	g.resumeEngine = func() (bool, error) {
		calls++
		if !stopped {
			return false, nil
		}
		if _, err := fs.Stat(filepath.Join(dir, ballastName)); err == nil {
			return true, vfs.ErrNoSpace // no room until the ballast is gone
		}
		stopped = false
		return true, nil
	}
	g.check()
	if g.admit() == nil {
		t.Fatal("an engine stopped by a full disk did not put the node in disk-full mode")
	}
	if stopped {
		t.Fatalf("the engine was not resumed with the reserve (%d calls)", calls)
	}
}
