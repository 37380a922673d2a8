package server

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/vfs"
	"github.com/kayadb/kayadb/internal/wire"
)

// smallDisk is a small file system for the disk-full tests: a real tmpfs
// where this process may mount one (root), else an in-memory file system
// with a capacity. fill and free stand for another program filling the disk
// and an operator freeing it.
type smallDisk struct {
	fs   vfs.FS
	dir  string // the node's data directory on it
	real bool   // a tmpfs mount
	mem  *vfs.MemFS
}

// newSmallDisk makes a size-byte one; KAYA_TEST_NO_TMPFS=1 takes the
// in-memory file system even as root.
func newSmallDisk(t *testing.T, size int64) *smallDisk {
	t.Helper()
	if os.Geteuid() == 0 && os.Getenv("KAYA_TEST_NO_TMPFS") == "" {
		mnt := t.TempDir()
		if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err == nil {
			t.Cleanup(func() {
				if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
					t.Errorf("unmounting the test tmpfs %s: %v", mnt, err)
				}
			})
			t.Logf("data on a %d MiB tmpfs at %s", size>>20, mnt)
			return &smallDisk{fs: vfs.Default, dir: filepath.Join(mnt, "node"), real: true}
		} else {
			t.Logf("cannot mount a tmpfs (%v): using an in-memory file system with a capacity", err)
		}
	}
	mem := vfs.NewMem()
	mem.SetCapacity(size)
	return &smallDisk{fs: mem, dir: "/disk/node", mem: mem}
}

// filler is the path of the file that stands for another program's data.
func (d *smallDisk) filler() string { return filepath.Join(filepath.Dir(d.dir), "filler") }

// fill stands for another program writing as much as the file system had
// free when it started (the space the node gives itself afterwards, its
// reserve, is left alone), or less if a write fails first. It adds to the
// filler file.
func (d *smallDisk) fill(t *testing.T) {
	t.Helper()
	u, err := vfs.DiskUsage(d.fs, filepath.Dir(d.dir))
	if err != nil {
		t.Fatal(err)
	}
	f, err := d.fs.OpenReadWrite(d.filler())
	if errors.Is(err, os.ErrNotExist) {
		f, err = d.fs.Create(d.filler())
	}
	if err != nil {
		if vfs.IsNoSpace(err) {
			return
		}
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(io.Discard, f); err != nil { // append
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	for left := int64(u.AvailBytes); left > 0; {
		n, err := f.Write(buf[:min(int64(len(buf)), left)])
		left -= int64(n)
		if err != nil {
			if !vfs.IsNoSpace(err) {
				t.Fatalf("filling the disk: %v", err)
			}
			return
		}
	}
}

func (d *smallDisk) free(t *testing.T) {
	t.Helper()
	if err := d.fs.Remove(d.filler()); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
}

// startOn starts a single node whose data lives on d. Its clock runs
// freely: the raft loop counts its retries on a full disk in ticks.
func startOn(t *testing.T, d *smallDisk, reserve int64) *testCluster {
	t.Helper()
	c := newCluster(t, 1, clusterOpts{configure: func(_ uint64, cfg *Config) {
		cfg.DataDir, cfg.RequestTimeout = d.dir, time.Second
		cfg.SnapshotEntries, cfg.CatchUpEntries, cfg.DiskReserve = 500, 100, reserve
		cfg.EngineOptions = &engine.Options{FS: d.fs, MemTableSize: 256 << 10}
	}})
	c.WaitLeader()
	return c
}

// TestDiskFullUnderLoad fills the data file system under a write load, at
// several moments and for several durations, and frees it again: the node
// never stops, refuses writes while full with an error that says so, keeps
// serving reads, takes writes again by itself once space is back, restarts
// every time (also while the disk is full), and loses no acknowledged write.
func TestDiskFullUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a file system several times")
	}
	d := newSmallDisk(t, 48<<20)
	const reserve = 4 << 20
	c := startOn(t, d, reserve)
	s := c.node(1)
	defer func() {
		if c.Running(1) {
			_ = c.Detach(1).Close()
		}
	}()

	var (
		mu    sync.Mutex
		acked = map[string]string{}
		full  atomic.Int64 // writes refused with "disk full"
		other atomic.Int64 // writes that failed otherwise (timeouts: unknown outcome)
	)
	var addrV atomic.Pointer[string] // the node's client address (the harness keeps it across restarts)
	setAddr := func(a string) { addrV.Store(&a) }
	setAddr(s.ClientAddr())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			// w is this writer's number (a per-iteration variable).
			defer wg.Done()
			var cl *conn
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if cl == nil {
					c, err := net.DialTimeout("tcp", *addrV.Load(), time.Second)
					if err != nil {
						time.Sleep(10 * time.Millisecond)
						continue
					}
					cl = &conn{c: c, r: bufio.NewReader(c)}
				}
				k := fmt.Sprintf("w%d-%06d", w, i)
				v := valueFor(k, 2048)
				st, p, err := cl.put(k, v)
				switch {
				case err != nil:
					_ = cl.c.Close()
					cl = nil
					other.Add(1)
				case st == wire.StatusOK:
					mu.Lock()
					acked[k] = v
					mu.Unlock()
				case st == wire.StatusError && strings.Contains(errText(p), "disk full on node 1"):
					full.Add(1)
					time.Sleep(5 * time.Millisecond)
				default:
					other.Add(1)
				}
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	ackedNow := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			select {
			case <-s.Done():
				t.Fatalf("the node stopped while %s: %v", what, s.Err())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	someKey := func() string {
		mu.Lock()
		defer mu.Unlock()
		for k := range acked {
			return k
		}
		return ""
	}

	alive := func(what string) {
		t.Helper()
		select {
		case <-s.Done():
			t.Fatalf("the node stopped %s: %v", what, s.Err())
		default:
		}
	}
	for round, hold := range []time.Duration{0, 100 * time.Millisecond, 700 * time.Millisecond, 2 * time.Second, time.Second} {
		exhaust := round == 4
		before := ackedNow()
		waitFor("writes to be acknowledged", func() bool { return ackedNow() >= before+50 })
		// The node holds its reserve again (after a restart on a full
		// disk it makes it once there is room).
		waitFor("the disk reserve", func() bool { _, err := d.fs.Stat(filepath.Join(d.dir, ballastName)); return err == nil })
		refusedBefore := full.Load()
		d.fill(t)
		waitFor("the node to enter disk-full mode", func() bool { f, _ := s.disk.state(); return f })
		if exhaust {
			// The other program takes the reserve the node gave itself
			// too: nothing at all is left. The node cannot persist raft
			// state any more (so it cannot serve linearizable reads
			// either), but it must not stop, and it must recover.
			d.fill(t)
			time.Sleep(hold)
			alive("with not a byte free")
		} else if time.Sleep(hold); true {
			alive("with the disk full")
		}
		// Reads go on while the disk is full (and the reserve is there).
		if k := someKey(); k != "" && !exhaust {
			cl := dial(t, *addrV.Load())
			st, v, err := cl.get(k)
			if err != nil || st != wire.StatusOK {
				t.Fatalf("round %d: reading %s with the disk full: %v %v %q; %s", round, k, err, st, v, diskState(s, d))
			}
		}
		d.free(t)
		waitFor("writes to resume", func() bool { f, _ := s.disk.state(); return !f && ackedNow() > before+100 })
		if round > 0 && full.Load() == refusedBefore {
			t.Errorf("round %d: no write was refused with a disk-full error while the disk was full", round)
		}
		// Restart after each round; on the last, restart with the disk full.
		if round == 2 {
			d.fill(t)
		}
		if err := c.Detach(1).Close(); err != nil {
			t.Logf("round %d: closing: %v", round, err)
		}
		s = c.Start(1)
		c.WaitLeader()
		setAddr(s.ClientAddr())
		if round == 2 {
			// It started (its ballast given back first). Reads work
			// while the disk is still full.
			if k := someKey(); k != "" {
				if st, v, err := dial(t, *addrV.Load()).get(k); err != nil || st != wire.StatusOK {
					t.Fatalf("reading %s after a start on a full disk: %v %v %q", k, err, st, v)
				}
			}
			d.free(t)
		}
	}
	close(stop)
	wg.Wait()
	stop = make(chan struct{})
	// Every acknowledged write survived the fills, the frees and the
	// restarts.
	cl := dial(t, *addrV.Load())
	mu.Lock()
	defer mu.Unlock()
	for k, v := range acked {
		st, got, err := cl.get(k)
		if err != nil || st != wire.StatusOK || string(got) != v {
			t.Fatalf("acknowledged %s lost: %v %v (%d bytes)", k, err, st, len(got))
		}
	}
	t.Logf("%d writes acknowledged, %d refused as disk full, %d failed otherwise; disk-full events %d (tmpfs: %v)",
		len(acked), full.Load(), other.Load(), s.disk.events.Load(), d.real)
}

// diskState describes the node's disk for a failure message.
func diskState(s *Server, d *smallDisk) string {
	var eng error
	_ = s.store.DB(func(db *engine.DB) error { eng = db.DiskFull(); return nil })
	u, _ := vfs.DiskUsage(d.fs, d.dir)
	full, why := s.disk.state()
	_, berr := d.fs.Stat(filepath.Join(d.dir, ballastName))
	return fmt.Sprintf("raft stall: %v; engine: %v; %d bytes free; disk-full mode %v (%s); ballast: %v", s.node.Stalled(), eng, u.AvailBytes, full, why, berr == nil)
}
