package server

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kayadb/kayadb/internal/vfs"
	"github.com/kayadb/kayadb/internal/wire"
)

// The disk guard: what a node does about a full disk
// (docs/design/hostile-input-and-resources.md §1).
//
// A node keeps a ballast file, DIR/RESERVE, of --disk-reserve bytes: space
// held back from everything, that the node gives to itself when the disk
// fills, so that it can still write its raft hard state, compact, delete
// and restart. The guard checks the data file system's free space every
// diskCheckInterval, and at once when any layer reports a write that failed
// for lack of space. Below the low-water mark (half the reserve, at most
// 32 MiB) or after such a failure the node is in disk-full mode: it
// deletes the ballast, refuses new client writes
// with an error that says so, reports it in /readyz, STATS and metrics, and
// keeps serving reads and raft traffic. It leaves the mode by itself when
// free space is back above 2 × reserve: the ballast is made again, a
// storage engine stopped by the full disk is resumed, and writes are
// accepted again.

// diskCheckInterval is how often free space is read (one statfs).
const diskCheckInterval = 500 * time.Millisecond

// Bounds of the default reserve: 1% of the file system, at least
// minDefaultReserve (room for a few memtable flushes and raft segments) and
// at most maxDefaultReserve (a large disk need not lose more than that).
const (
	minDefaultReserve = 32 << 20
	maxDefaultReserve = 1 << 30
)

// maxLowWater caps the free space below which the node enters disk-full
// mode: half the reserve, but no more than this, so that a node on a disk
// too full to hold its reserve still takes writes until the disk is really
// nearly full.
const maxLowWater = 32 << 20

// ballastName is the ballast file in the data directory.
const ballastName = "RESERVE"

// errDiskFull is matched by the refusal of a write in disk-full mode.
var errDiskFull = errors.New("disk full")

type diskGuard struct {
	fs      vfs.FS
	dir     string
	ballast string
	nodeID  uint64
	log     *slog.Logger
	// reserve is the ballast size in bytes; 0 when disabled.
	reserve int64
	// resumeEngine, when set, asks the storage engine to resume writing
	// if a write of its own failed for lack of space: stopped says whether
	// it had stopped, err whether it is still stopped. It runs at every
	// check, in disk-full mode too: with the ballast given back, the engine
	// can take raft's committed entries again (the node keeps applying and
	// serving reads) while client writes stay refused.
	resumeEngine func() (stopped bool, err error)

	noBallast bool // a warning that the reserve cannot be kept was logged

	full      atomic.Bool
	avail     atomic.Uint64
	total     atomic.Uint64
	events    atomic.Uint64 // times the node entered disk-full mode
	noSpace   atomic.Bool   // a write failed for lack of space since the last check
	reasonMu  sync.Mutex
	reason    string // why the node is in disk-full mode
	unchecked bool   // the file system cannot report free space

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
}

// newDiskGuard reads the file system's size, works out the reserve
// (configured: bytes, 0 default, negative disabled) and gives the ballast
// back at once when the disk is already full, so that the node can start.
func newDiskGuard(fs vfs.FS, dir string, nodeID uint64, configured int64, log *slog.Logger) *diskGuard {
	g := &diskGuard{fs: fs, dir: dir, ballast: filepath.Join(dir, ballastName), nodeID: nodeID, log: log,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	u, err := vfs.DiskUsage(fs, dir)
	if err != nil {
		g.unchecked = true
		log.Warn("cannot read the data file system's free space: no disk reserve, and a full disk is noticed only when a write fails", "dir", dir, "err", err)
	} else {
		g.avail.Store(u.AvailBytes)
		g.total.Store(u.TotalBytes)
	}
	switch {
	case configured < 0 || g.unchecked:
		g.reserve = 0
	case configured > 0:
		g.reserve = configured
	default:
		g.reserve = min(max(int64(u.TotalBytes/100), minDefaultReserve), maxDefaultReserve)
	}
	if g.reserve == 0 {
		// Without a reserve there is no ballast to keep: one left by an
		// earlier run with a reserve is space to give back.
		_ = fs.Remove(g.ballast)
	}
	g.check()
	return g
}

// start runs the periodic check until close.
func (g *diskGuard) start() {
	go func() {
		defer close(g.done)
		t := time.NewTicker(diskCheckInterval)
		defer t.Stop()
		for {
			select {
			case <-g.stop:
				return
			case <-t.C:
			case <-g.kick:
			}
			g.check()
		}
	}()
}

// close stops the periodic check (it is safe to call without start: the
// done channel is closed then).
func (g *diskGuard) close(started bool) {
	close(g.stop)
	if started {
		<-g.done
	}
}

// noteNoSpace records that a write failed for lack of space: the next check
// (run at once) enters disk-full mode whatever statfs says.
func (g *diskGuard) noteNoSpace(err error) {
	if !vfs.IsNoSpace(err) {
		return
	}
	g.noSpace.Store(true)
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

// check reads the free space and enters or leaves disk-full mode.
func (g *diskGuard) check() {
	failed := g.noSpace.Swap(false)
	var avail uint64
	if !g.unchecked {
		u, err := vfs.DiskUsage(g.fs, g.dir)
		if err != nil {
			g.log.Warn("reading the data file system's free space failed", "dir", g.dir, "err", err)
			return
		}
		avail = u.AvailBytes
		g.avail.Store(u.AvailBytes)
		g.total.Store(u.TotalBytes)
	}
	if !g.full.Load() {
		low := avail < g.lowWater()
		engineStopped := false
		if !failed && !low && g.resumeEngine != nil {
			engineStopped, _ = g.resumeEngine()
		}
		if !failed && !low && !engineStopped {
			g.ensureBallast(avail)
			return
		}
		why := "a write failed: no space left on the device"
		if low {
			why = fmt.Sprintf("%s free, below the %s low-water mark", humanBytes(avail), humanBytes(g.lowWater()))
		}
		g.enter(why)
	}
	// In disk-full mode: the ballast is given back; let the engine use it.
	engineErr := error(nil)
	if g.resumeEngine != nil {
		if stopped, err := g.resumeEngine(); stopped && err != nil {
			engineErr = err
		}
	}
	if failed || g.unchecked || avail < g.highWater() {
		return
	}
	if engineErr != nil {
		g.log.Warn("disk space is back but the storage engine cannot resume writing yet; will retry", "err", engineErr)
		return
	}
	g.full.Store(false)
	g.ensureBallast(avail)
	g.log.Info("disk space is back: writes are accepted again", "free", humanBytes(avail), "reserve", humanBytes(uint64(g.reserve)))
}

// lowWater is the free space below which the node enters disk-full mode:
// half the reserve, at most maxLowWater; 0 without a reserve (only a failed
// write enters the mode then).
func (g *diskGuard) lowWater() uint64 { return uint64(min(g.reserve/2, maxLowWater)) }

// highWater is the free space at which the node leaves disk-full mode:
// twice the reserve (room to make the ballast again and stay above the
// low-water mark), 1 MiB without a reserve.
func (g *diskGuard) highWater() uint64 {
	if g.reserve == 0 {
		return 1 << 20
	}
	return uint64(2 * g.reserve)
}

// enter switches to disk-full mode and gives the ballast back.
func (g *diskGuard) enter(why string) {
	g.reasonMu.Lock()
	g.reason = why
	g.reasonMu.Unlock()
	g.full.Store(true)
	g.events.Add(1)
	released := g.fs.Remove(g.ballast) == nil
	g.log.Error(fmt.Sprintf("disk full on node %d: %s; new writes are refused until space is freed (free space on %s or add capacity)", g.nodeID, why, g.dir),
		"reserve_released", released)
}

// ensureBallast makes the ballast file when it is missing and there is room
// for it with twice the low-water mark to spare.
func (g *diskGuard) ensureBallast(avail uint64) {
	if g.reserve == 0 {
		return
	}
	if _, err := g.fs.Stat(g.ballast); err == nil {
		return
	}
	if avail < uint64(g.reserve)+2*g.lowWater() {
		if !g.noBallast {
			g.noBallast = true
			g.log.Warn("the disk has too little free space to keep the disk reserve; running without it until there is room (free space, or lower --disk-reserve)",
				"free", humanBytes(avail), "reserve", humanBytes(uint64(g.reserve)))
		}
		return
	}
	if err := g.makeBallast(); err != nil {
		_ = g.fs.Remove(g.ballast)
		g.log.Warn("cannot create the disk reserve file; will retry", "file", g.ballast, "err", err)
		return
	}
	g.noBallast = false
}

// makeBallast makes the ballast file: its blocks allocated with fallocate
// (FALLOC_FL_KEEP_SIZE: the file stays empty, so making it costs no I/O,
// but its space is held), synced, renamed into place. On a file system
// without fallocate the file holds nothing: a marker, not a reserve.
func (g *diskGuard) makeBallast() error {
	tmp := g.ballast + ".tmp"
	f, err := g.fs.Create(tmp)
	if err != nil {
		return err
	}
	err = f.Preallocate(0, g.reserve)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = g.fs.Rename(tmp, g.ballast)
	}
	if err == nil {
		err = vfs.SyncDir(g.fs, g.dir)
	}
	if err != nil {
		_ = g.fs.Remove(tmp)
	}
	return err
}

// admit refuses a client write in disk-full mode.
func (g *diskGuard) admit() error {
	if g == nil || !g.full.Load() {
		return nil
	}
	g.reasonMu.Lock()
	why := g.reason
	g.reasonMu.Unlock()
	// The text is wire.MsgDiskFullPrefix ... wire.MsgDiskFullRefused: the Go
	// client recognizes it as a refusal before the proposal (ErrDiskFull,
	// not ErrAmbiguous). Nothing else on the client port may use it.
	return fmt.Errorf("%w on node %d: %s (%s free on %s)%s — free space or add capacity",
		errDiskFull, g.nodeID, why, humanBytes(g.avail.Load()), g.dir, wire.MsgDiskFullRefused)
}

// state returns whether the node is in disk-full mode and why.
func (g *diskGuard) state() (bool, string) {
	if g == nil || !g.full.Load() {
		return false, ""
	}
	g.reasonMu.Lock()
	defer g.reasonMu.Unlock()
	return true, g.reason
}

// humanBytes formats n with a binary unit (512 B, 3.5 MiB, 1.2 GiB).
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
