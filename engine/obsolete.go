package engine

import (
	"errors"
	"os"

	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/manifest"
)

// onObsoleteTables is the VersionSet's callback for tables no Version
// references any more. It can run on any goroutine, including ones holding
// mu, so it only queues the work under its own lock.
func (d *DB) onObsoleteTables(files []*manifest.FileMetadata) {
	d.obsoleteMu.Lock()
	d.obsoleteTables = append(d.obsoleteTables, files...)
	d.obsoleteMu.Unlock()
	d.scheduleCleaner()
}

// addObsoleteLog queues a WAL whose memtable has been flushed durably.
func (d *DB) addObsoleteLog(num base.FileNum) {
	d.obsoleteMu.Lock()
	d.obsoleteLogs = append(d.obsoleteLogs, num)
	d.obsoleteMu.Unlock()
	d.scheduleCleaner()
}

func (d *DB) scheduleCleaner() {
	select {
	case d.cleanCh <- struct{}{}:
	default:
	}
}

func (d *DB) cleanLoop() {
	defer d.bgWG.Done()
	for {
		select {
		case <-d.closing:
			return
		case <-d.cleanCh:
		}
		d.deleteObsoleteFiles()
	}
}

// deleteObsoleteFiles removes queued obsolete tables and WALs. A table is
// queued only once its last Version reference is gone (so no reader or
// compaction can still use it), and only edits that are already durable can
// have released it; a WAL only after the edit recording its flush.
func (d *DB) deleteObsoleteFiles() {
	d.obsoleteMu.Lock()
	tables, logs := d.obsoleteTables, d.obsoleteLogs
	d.obsoleteTables, d.obsoleteLogs = nil, nil
	d.obsoleteMu.Unlock()
	if len(tables) == 0 && len(logs) == 0 {
		return
	}
	// Every edit that made these files obsolete is synced; make sure a later
	// record proves it, so that losing that edit to damage can never leave
	// the database without the files it replaced.
	if err := d.vs.ProveDurable(); err != nil {
		// Keep them queued: on a full disk these deletions are what frees
		// space, and the next cleaning (a flush, a compaction, Resume)
		// tries again.
		d.obsoleteMu.Lock()
		d.obsoleteTables = append(d.obsoleteTables, tables...)
		d.obsoleteLogs = append(d.obsoleteLogs, logs...)
		d.obsoleteMu.Unlock()
		d.opts.Logger.Error("not deleting obsolete files yet: MANIFEST write failed", "err", err)
		return
	}
	for _, f := range tables {
		d.tables.evict(f.FileNum)
		d.removeFile(d.path(base.FileTypeTable, f.FileNum))
	}
	for _, n := range logs {
		d.removeFile(d.path(base.FileTypeLog, n))
	}
}

func (d *DB) removeFile(path string) {
	if err := d.fs.Remove(path); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			d.opts.Logger.Warn("could not delete obsolete file; it will be retried at the next open", "file", path, "err", err)
		}
		return
	}
	d.m.obsoleteDeleted.Add(1)
}

// SyncWAL makes every write committed so far durable, NoSync ones
// included, with one fsync of the current WAL (earlier WALs were synced
// when they were closed). It is far cheaper than Flush: nothing is written
// but the WAL's unsynced tail.
func (d *DB) SyncWAL() error {
	if d.opts.ReadOnly {
		return ErrReadOnly
	}
	d.commitMu.Lock()
	d.mu.Lock()
	closed := d.mu.closed
	d.mu.Unlock()
	if closed {
		d.commitMu.Unlock()
		return ErrClosed
	}
	// Under commitMu nothing is appended and the WAL is not rotated, so
	// end covers every committed write; a rotation afterwards closes w,
	// which syncs it completely.
	w := d.wal
	end := w.offset()
	d.commitMu.Unlock()
	if err := w.waitSynced(end); err != nil {
		d.setBackgroundError(err)
		return writeError(err)
	}
	return nil
}

// Flush writes every memtable to L0 tables and waits until that is durable.
func (d *DB) Flush() error {
	if d.opts.ReadOnly {
		return ErrReadOnly
	}
	d.commitMu.Lock()
	d.mu.Lock()
	if d.mu.closed {
		d.mu.Unlock()
		d.commitMu.Unlock()
		return ErrClosed
	}
	if d.mu.diskFull != nil {
		// The current memtable's WAL failed: Resume flushes it.
		err := diskFullError(d.mu.diskFull, whatResume)
		d.mu.Unlock()
		d.commitMu.Unlock()
		return err
	}
	if !d.mu.mem.t.Empty() {
		if err := d.rotateLocked(0); err != nil {
			d.mu.Unlock()
			d.commitMu.Unlock()
			return err
		}
	}
	target := d.mu.flushed + uint64(len(d.mu.imm))
	failures := d.mu.flushRetry.total
	d.mu.flushRetry.expire()
	d.maybeScheduleFlushLocked()
	d.commitMu.Unlock()
	for d.mu.flushed < target {
		if d.mu.closed {
			d.mu.Unlock()
			return ErrClosed
		}
		if err := d.mu.bgErr; err != nil {
			d.mu.Unlock()
			return err
		}
		if d.mu.flushRetry.total != failures {
			// A flush failed for lack of space; it is retried in the
			// background, but this call does not wait for space.
			err := diskFullError(d.mu.flushRetry.err, "flushing failed for lack of space")
			d.mu.Unlock()
			return err
		}
		d.mu.cond.Wait()
	}
	d.mu.Unlock()
	return nil
}
