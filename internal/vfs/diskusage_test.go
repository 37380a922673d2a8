package vfs

import (
	"bytes"
	"errors"
	"runtime"
	"strings"
	"testing"
)

func TestDiskUsageDefault(t *testing.T) {
	u, err := DiskUsage(Default, t.TempDir())
	if runtime.GOOS != "linux" {
		if err == nil || !strings.Contains(err.Error(), "not supported") {
			t.Fatalf("DiskUsage outside Linux = %v, %v; want an unsupported error", u, err)
		}
		return
	}
	must(t, err)
	if u.TotalBytes == 0 || u.AvailBytes > u.TotalBytes {
		t.Fatalf("DiskUsage = %+v", u)
	}
	if _, err := DiskUsage(Default, "/does/not/exist"); err == nil {
		t.Fatal("DiskUsage of a missing path succeeded")
	}
}

// plainFS hides the DiskUsage method of the FS it embeds.
type plainFS struct{ FS }

func TestDiskUsageUnsupportedFS(t *testing.T) {
	_, err := DiskUsage(plainFS{NewMem()}, "/")
	if err == nil || !strings.Contains(err.Error(), "does not report disk usage") {
		t.Fatalf("DiskUsage = %v", err)
	}
	// The error FS passes it through, so it is unsupported there too.
	if _, err := DiskUsage(NewErrorFS(plainFS{NewMem()}, nil), "/"); err == nil {
		t.Fatal("DiskUsage through the error FS of an FS without it succeeded")
	}
}

func expectUsage(t *testing.T, fs FS, total, avail uint64) {
	t.Helper()
	u, err := DiskUsage(fs, "/")
	must(t, err)
	if u.TotalBytes != total || u.AvailBytes != avail {
		t.Fatalf("DiskUsage = %+v, want total %d avail %d\n%v", u, total, avail, fs)
	}
}

func expectNoSpace(t *testing.T, what string, err error) {
	t.Helper()
	if !IsNoSpace(err) || !errors.Is(err, ErrNoSpace) {
		t.Fatalf("%s: err = %v, want a no-space error", what, err)
	}
}

func TestMemCapacity(t *testing.T) {
	mem := NewMem()
	expectUsage(t, mem, MemUnlimitedBytes, MemUnlimitedBytes)
	mem.SetCapacity(100)
	expectUsage(t, mem, 100, 100)

	f, err := mem.Create("/f")
	must(t, err)
	_, err = f.Write(bytes.Repeat([]byte("a"), 60))
	must(t, err)
	expectUsage(t, mem, 100, 40)

	// A write that does not fit writes what fits.
	n, err := f.Write(bytes.Repeat([]byte("b"), 60))
	expectNoSpace(t, "write", err)
	if n != 40 {
		t.Fatalf("partial write wrote %d bytes, want 40", n)
	}
	expectContent(t, mem, "/f", strings.Repeat("a", 60)+strings.Repeat("b", 40))
	expectUsage(t, mem, 100, 0)
	n, err = f.Write([]byte("c"))
	expectNoSpace(t, "write to a full disk", err)
	if n != 0 {
		t.Fatalf("write to a full disk wrote %d bytes", n)
	}
	expectNoSpace(t, "growing truncate", f.Truncate(101))
	expectNoSpace(t, "preallocate", f.Preallocate(0, 200))
	must(t, f.Preallocate(0, 100)) // already occupied
	must(t, f.Truncate(100))       // not growing

	// Overwriting occupied bytes needs no space.
	rw, err := mem.OpenReadWrite("/f")
	must(t, err)
	_, err = rw.Write([]byte("xyz"))
	must(t, err)
	must(t, rw.Close())

	// Truncating down frees space.
	must(t, f.Truncate(90))
	expectUsage(t, mem, 100, 10)
	g, err := mem.Create("/g")
	must(t, err)
	_, err = g.Write(make([]byte, 10))
	must(t, err)
	expectUsage(t, mem, 100, 0)

	// Removing an open file frees its space only at its last Close.
	must(t, mem.Remove("/g"))
	expectUsage(t, mem, 100, 0)
	must(t, g.Close())
	expectUsage(t, mem, 100, 10)

	// Hard links count once; the space is freed when the last name goes.
	must(t, f.Close())
	must(t, mem.Link("/f", "/f2"))
	expectUsage(t, mem, 100, 10)
	must(t, mem.Remove("/f"))
	expectUsage(t, mem, 100, 10)
	must(t, mem.RemoveAll("/f2"))
	expectUsage(t, mem, 100, 100)

	// Lowering the capacity below what is used fails every growth;
	// raising it again (more disk) lets writes through.
	h, err := mem.Create("/h")
	must(t, err)
	_, err = h.Write(make([]byte, 50))
	must(t, err)
	mem.SetCapacity(20)
	expectUsage(t, mem, 20, 0)
	_, err = h.Write([]byte("x"))
	expectNoSpace(t, "write above a lowered capacity", err)
	mem.SetCapacity(0)
	_, err = h.Write([]byte("x"))
	must(t, err)
	must(t, h.Close())
}

func TestMemCapacityPreallocate(t *testing.T) {
	mem := NewMem()
	mem.SetCapacity(100)
	f, err := mem.Create("/f")
	must(t, err)
	must(t, f.Preallocate(0, 80))
	expectUsage(t, mem, 100, 20)
	if fi, _ := f.Stat(); fi.Size() != 0 {
		t.Fatalf("Preallocate changed the size to %d", fi.Size())
	}
	// Another file gets only the rest.
	g, err := mem.Create("/g")
	must(t, err)
	n, err := g.Write(make([]byte, 30))
	expectNoSpace(t, "write beside a reservation", err)
	if n != 20 {
		t.Fatalf("wrote %d, want 20", n)
	}
	// Writes inside the reservation succeed on a full disk.
	_, err = f.Write(make([]byte, 80))
	must(t, err)
	_, err = f.Write([]byte("x"))
	expectNoSpace(t, "write past the reservation", err)
	// A failed Preallocate reserves nothing.
	must(t, f.Truncate(10))
	expectUsage(t, mem, 100, 70)
	expectNoSpace(t, "preallocate", f.Preallocate(0, 200))
	expectUsage(t, mem, 100, 70)
	// A shrinking truncate drops the reservation past the new size.
	must(t, f.Preallocate(0, 50))
	expectUsage(t, mem, 100, 30)
	must(t, f.Truncate(10))
	expectUsage(t, mem, 100, 70)
	// Create of an existing file (O_TRUNC) frees it too.
	must(t, f.Preallocate(0, 50))
	f2, err := mem.Create("/f")
	must(t, err)
	expectUsage(t, mem, 100, 80)
	must(t, f2.Close())
	must(t, f.Close())
	must(t, g.Close())
}

func TestMemCapacityCrashClone(t *testing.T) {
	mem := NewMem()
	mem.SetCapacity(100)
	f, err := mem.Create("/f")
	must(t, err)
	appendSync(t, f, strings.Repeat("s", 40), true)
	appendSync(t, f, strings.Repeat("u", 40), false)
	must(t, SyncDir(mem, "/"))
	c := crash(mem)
	// The clone is the same disk: same capacity, only the synced bytes.
	expectUsage(t, c, 100, 60)
	cf, err := c.OpenReadWrite("/f")
	must(t, err)
	_, err = cf.Write(make([]byte, 101))
	expectNoSpace(t, "write to the clone", err)
	must(t, cf.Close())
	must(t, f.Close())
}

func TestErrorFSDiskUsageAndPartialWrite(t *testing.T) {
	mem := NewMem()
	mem.SetCapacity(1000)
	inj := OnIndex(1, func(op Op) bool { return op.Kind == OpFileWrite })
	inj.Err = PartialWrite(2, ErrNoSpace)
	fs := NewErrorFS(mem, inj)
	f, err := fs.Create("/f")
	must(t, err)
	_, err = f.Write([]byte("abc"))
	must(t, err)
	n, err := f.Write([]byte("defg"))
	expectNoSpace(t, "injected partial write", err)
	if n != 2 {
		t.Fatalf("partial write wrote %d, want 2", n)
	}
	_, err = f.Write([]byte("h"))
	must(t, err)
	must(t, f.Close())
	expectContent(t, mem, "/f", "abcdeh")
	expectUsage(t, fs, 1000, 994)

	// A PartialWrite error for any other operation is its plain error.
	fs = NewErrorFS(mem, InjectorFunc(func(op Op) error {
		if op.Kind == OpFileSync {
			return PartialWrite(1, ErrNoSpace)
		}
		return nil
	}))
	f, err = fs.OpenReadWrite("/f")
	must(t, err)
	if err := f.Sync(); err != ErrNoSpace {
		t.Fatalf("Sync = %v, want ErrNoSpace itself", err)
	}
	must(t, f.Close())
}

// TestDiskUsageEveryFS checks that every FS of the conformance suite
// reports its space (on Linux, where Default can).
func TestDiskUsageEveryFS(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("statfs is implemented on Linux only")
	}
	for name, mk := range fsUnderTest(t) {
		t.Run(name, func(t *testing.T) {
			fs, dir := mk(t)
			u, err := DiskUsage(fs, dir)
			must(t, err)
			if u.TotalBytes == 0 || u.AvailBytes > u.TotalBytes {
				t.Fatalf("DiskUsage = %+v", u)
			}
		})
	}
}
