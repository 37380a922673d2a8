package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/kayadb/kayadb/internal/vfs"
)

// ErrDiskFull matches the errors of writes refused or failed because the
// disk is full. Such an error also matches vfs.IsNoSpace, and wraps the
// failure that caused it. See DB.Resume.
var ErrDiskFull = errors.New("engine: disk full")

// diskFullError returns the error writers get while the engine is short of
// space because of cause, which matches vfs.IsNoSpace.
func diskFullError(cause error, what string) error {
	return fmt.Errorf("%w: %s (%w)", ErrDiskFull, what, cause)
}

// whatResume and whatStall say what a writer that got ErrDiskFull must do.
const (
	whatResume = "writes are refused until space is freed and DB.Resume succeeds"
	whatStall  = "the memtables or L0 are full and cannot be flushed or compacted for lack of space; " +
		"writes go on once space is freed (flushes and compactions are retried, and DB.Resume retries them at once)"
)

// Back-off of a flush or compaction that failed for lack of space: the
// first retry comes after backoffMin, each further one after twice the
// previous delay, at most backoffMax. The bounds keep a full disk from
// turning into a busy loop of doomed table writes while still noticing,
// within seconds, that space came back (Resume retries at once).
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 10 * time.Second
)

// backoff is the retry state of one background job (flush or compaction)
// after failures for lack of space. Guarded by DB.mu.
type backoff struct {
	// err is the last no-space failure, nil after a success.
	err error
	// failures counts the failures since the last success; total counts
	// them all (Resume and Flush wait for it to change).
	failures int
	total    uint64
	until    time.Time
}

func (b *backoff) fail(err error) {
	b.err = err
	b.failures++
	b.total++
	b.until = time.Now().Add(min(backoffMin<<min(b.failures-1, 20), backoffMax))
}

// succeed clears the failure.
func (b *backoff) succeed() {
	b.err, b.failures, b.until = nil, 0, time.Time{}
}

// expire makes the next attempt run at once (the failure is kept).
func (b *backoff) expire() { b.until = time.Time{} }

// waiting reports whether the job must not run yet.
func (b *backoff) waiting(now time.Time) bool { return now.Before(b.until) }

// delay is how long until the job may run again (0: now).
func (b *backoff) delay(now time.Time) time.Duration { return max(b.until.Sub(now), 0) }

// DiskFull returns nil while the engine has the space it needs, and
// otherwise an error matching ErrDiskFull (and vfs.IsNoSpace) that says
// why: either a WAL write failed for lack of space, and writes are refused
// until Resume succeeds, or flushes or compactions are failing for lack of
// space (they are retried with back-off, and writes go on until the
// memtables or L0 are full).
func (d *DB) DiskFull() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.mu.diskFull != nil:
		return diskFullError(d.mu.diskFull, whatResume)
	case d.mu.flushRetry.err != nil:
		return diskFullError(d.mu.flushRetry.err, "flushes fail for lack of space and are retried")
	case d.mu.compactRetry.err != nil:
		return diskFullError(d.mu.compactRetry.err, "compactions fail for lack of space and are retried")
	}
	return nil
}

// Resume brings the engine back after it ran out of space, once the owner
// has freed some. It is cheap and does nothing when the engine is not short
// of space, so an owner may call it whenever space comes back.
//
// After a WAL write failed for lack of space (DiskFull reports it, writes
// fail with ErrDiskFull), the WAL may end in a partial record, and the
// writes of its memtable that never reached it are only in memory. Resume
// therefore: makes every memtable durable by flushing it to L0 tables,
// including the current one, and records in the MANIFEST that the failed
// WAL is no longer needed (it is then deleted); only then creates a new WAL
// and accepts writes again. So no later write can ever survive a crash
// while an earlier acknowledged one is lost, and the failed WAL is never
// written to again (no record or sync marker after the failed write).
// Writes wait for Resume; reads go on.
//
// Resume also retries at once the flushes and compactions waiting after a
// failure for lack of space. If space is still short, it returns an error
// matching vfs.IsNoSpace (and ErrDiskFull) and the engine stays as it was;
// Resume may be called again. A failure other than a lack of space (an I/O
// error, a failed fsync) is fatal as before: Resume returns it.
func (d *DB) Resume() error {
	if d.opts.ReadOnly {
		return ErrReadOnly
	}
	d.commitMu.Lock()
	defer d.commitMu.Unlock()
	d.mu.Lock()
	if err := d.usableLocked(); err != nil {
		d.mu.Unlock()
		return err
	}
	d.mu.compactRetry.expire()
	d.maybeScheduleCompactionLocked()
	d.scheduleCleaner()
	if d.mu.diskFull == nil && d.mu.flushRetry.err == nil {
		d.mu.Unlock()
		return nil
	}
	d.m.resumes.Add(1)
	walFailed := d.mu.diskFull != nil
	if walFailed && d.mu.mem.logNum == d.wal.logNum {
		// The current memtable's writes may be missing from its WAL: it
		// is flushed like the others, and the next memtable belongs to a
		// WAL that does not exist yet. Flushing the last of them records
		// that WAL's number in the MANIFEST, so recovery no longer reads
		// the failed one.
		d.mu.imm = append(d.mu.imm, d.mu.mem)
		d.mu.mem = newMemTable(d.mu.memSize, d.vs.NewFileNum())
		d.updateReadStateLocked(nil)
	}
	err := d.waitFlushedLocked()
	next := d.mu.mem.logNum
	d.mu.Unlock()
	if err != nil {
		return err
	}
	if !walFailed {
		return nil
	}
	// The failed WAL is dead (closing it writes nothing); its memtable is
	// durable in tables. Start the new one.
	_ = d.wal.close()
	w, err := d.createWAL(next)
	if err != nil {
		if vfs.IsNoSpace(err) {
			return diskFullError(err, "creating the new WAL failed; "+whatResume)
		}
		d.setBackgroundError(err)
		return err
	}
	d.wal = w
	d.mu.Lock()
	cause := d.mu.diskFull
	d.mu.diskFull = nil
	d.mu.cond.Broadcast()
	d.mu.Unlock()
	d.opts.Logger.Info("resumed writes after the disk was full", "cause", cause, "wal", w.name)
	return nil
}

// usableLocked returns the error of a closed DB or of a fatal failure.
// Called with mu held.
func (d *DB) usableLocked() error {
	if d.mu.closed {
		return ErrClosed
	}
	return d.mu.bgErr
}

// waitFlushedLocked runs the flusher at once and waits until every
// immutable memtable is flushed, or a flush fails. Called with mu held
// (and commitMu, so no memtable is added meanwhile).
func (d *DB) waitFlushedLocked() error {
	failures := d.mu.flushRetry.total
	d.mu.flushRetry.expire()
	d.maybeScheduleFlushLocked()
	for len(d.mu.imm) > 0 {
		if err := d.usableLocked(); err != nil {
			return err
		}
		if d.mu.flushRetry.total != failures {
			return diskFullError(d.mu.flushRetry.err, "flushing the memtables failed: space is still short")
		}
		d.mu.cond.Wait()
	}
	return nil
}

// noteNoSpaceLocked puts the engine in the disk-full state after a WAL
// write failed for lack of space. Called with mu held.
func (d *DB) noteDiskFullLocked(err error) {
	if d.mu.diskFull != nil || d.mu.bgErr != nil {
		return
	}
	d.mu.diskFull = err
	d.m.diskFullEvents.Add(1)
	d.opts.Logger.Error("disk full: the WAL could not be written; writes are refused until space is freed and DB.Resume succeeds",
		"err", err)
	d.mu.cond.Broadcast()
}
