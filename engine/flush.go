package engine

import (
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/manifest"
	"github.com/kayadb/kayadb/internal/lsm/sstable"
	"github.com/kayadb/kayadb/internal/vfs"
)

// maybeScheduleFlushLocked wakes the flusher. Called with mu held.
func (d *DB) maybeScheduleFlushLocked() {
	select {
	case d.flushCh <- struct{}{}:
	default:
	}
}

// maybeScheduleCompactionLocked wakes the compactor. Called with mu held.
func (d *DB) maybeScheduleCompactionLocked() {
	select {
	case d.workCh <- struct{}{}:
	default:
	}
}

func (d *DB) flushLoop() {
	defer d.bgWG.Done()
	retry := time.NewTimer(backoffMax)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-d.closing:
			return
		case <-d.flushCh:
		case <-retry.C:
		}
		for d.flushOne() {
		}
		// After a failure for lack of space, try again when the back-off
		// ends (sooner if Resume expires it).
		d.mu.Lock()
		wait := d.mu.flushRetry.delay(time.Now())
		d.mu.Unlock()
		if wait > 0 {
			retry.Reset(wait)
		}
	}
}

// flushOne writes the oldest immutable memtable to an L0 table and installs
// it. It reports whether it did any work.
func (d *DB) flushOne() bool {
	d.mu.Lock()
	if d.mu.closed || d.mu.bgErr != nil || len(d.mu.imm) == 0 || d.mu.flushRetry.waiting(time.Now()) {
		d.mu.Unlock()
		return false
	}
	mem := d.mu.imm[0]
	nextLog := d.mu.mem.logNum
	if len(d.mu.imm) > 1 {
		nextLog = d.mu.imm[1].logNum
	}
	snapshots := d.mu.snapshots.seqs()
	d.mu.flushing = true
	d.mu.Unlock()

	start := time.Now()
	entries := mem.t.Count()
	edit := &manifest.VersionEdit{LogNumber: nextLog, HasLogNumber: true}
	if seq := base.SeqNum(mem.largestSeq.Load()); seq > 0 {
		edit.LastSeq, edit.HasLastSeq = seq, true
	}
	var err error
	var metas []*manifest.FileMetadata
	if !mem.t.Empty() {
		metas, err = d.writeTables([]base.InternalIterator{mem.t.NewIter()}, snapshots, false, 0, 1<<62, nil, nil, nil)
		for _, m := range metas {
			edit.NewFiles = append(edit.NewFiles, manifest.NewFile{Level: 0, Meta: m})
		}
	}
	if err == nil {
		if err = d.vs.LogAndApply(edit); err != nil {
			d.removeTables(metas)
		}
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	d.mu.flushing = false
	if err != nil {
		err = fmt.Errorf("engine: flush failed: %w", err)
		d.backgroundFailedLocked(&d.mu.flushRetry, &d.m.flushNoSpace, err)
		return false
	}
	d.mu.flushRetry.succeed()
	for _, m := range metas {
		d.m.flushBytes.Add(m.Size)
		d.m.levelBytesIn[0].Add(m.Size)
	}
	d.mu.imm = d.mu.imm[1:]
	d.mu.flushed++
	// After this the memtable may be recycled: do not touch mem.t again.
	d.updateReadStateLocked(nil)
	d.addObsoleteLog(mem.logNum)
	d.m.flushes.Add(1)
	d.m.flushDuration.record(time.Since(start))
	d.opts.Logger.Debug("flushed memtable", "entries", entries, "tables", len(edit.NewFiles), "duration", time.Since(start))
	d.mu.cond.Broadcast()
	d.maybeScheduleCompactionLocked()
	return true
}

// tableOutput is one SSTable being written by a flush or compaction.
type tableOutput struct {
	fileNum base.FileNum
	f       vfs.File
	w       *sstable.Writer
	path    string
}

func (d *DB) newTableOutput(level int) (*tableOutput, error) {
	num := d.vs.NewFileNum()
	path := d.path(base.FileTypeTable, num)
	f, err := d.fs.Create(path)
	if err != nil {
		return nil, fmt.Errorf("engine: creating table %s: %w", path, err)
	}
	return &tableOutput{fileNum: num, f: f, w: sstable.NewWriter(f, d.opts.writerOptions(level)), path: path}, nil
}

// finish completes the table, syncs and closes it, and returns its metadata.
func (o *tableOutput) finish() (*manifest.FileMetadata, error) {
	err := o.w.Close()
	if err == nil {
		err = o.f.Sync()
	}
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("engine: writing table %s: %w", o.path, err)
	}
	md := o.w.Metadata()
	return &manifest.FileMetadata{
		FileNum:     o.fileNum,
		Size:        md.Size,
		Smallest:    md.Smallest,
		Largest:     md.Largest,
		SmallestSeq: md.SmallestSeq,
		LargestSeq:  md.LargestSeq,
		Encrypted:   md.Encrypted,
		KeyID:       md.KeyID,
	}, nil
}

func (o *tableOutput) abandon(fs vfs.FS) {
	_ = o.f.Close()
	_ = fs.Remove(o.path)
}

// removeTables deletes tables whose edit failed to install. It keeps them
// when the MANIFEST stopped (a failed fsync): the edit naming them may have
// reached the disk, and recovery would then need them (it removes them
// otherwise).
func (d *DB) removeTables(metas []*manifest.FileMetadata) {
	if d.vs.Err() != nil {
		return
	}
	for _, m := range metas {
		_ = d.fs.Remove(d.path(base.FileTypeTable, m.FileNum))
	}
}

// backgroundFailedLocked handles a failed flush or compaction, whose
// partial outputs are already deleted: a lack of space (with the MANIFEST
// still usable) is counted and retried after the job's back-off; anything
// else is fatal. Called with mu held.
func (d *DB) backgroundFailedLocked(b *backoff, counter *atomic.Uint64, err error) {
	defer d.mu.cond.Broadcast()
	if d.mu.closed {
		return
	}
	if vfs.IsNoSpace(err) && d.vs.Err() == nil {
		counter.Add(1)
		b.fail(err)
		d.opts.Logger.Warn("no space for a flush or compaction; retrying later", "err", err,
			"retry_in", b.delay(time.Now()), "consecutive_failures", b.failures)
		return
	}
	if d.mu.bgErr == nil {
		d.mu.bgErr = fatalError(err)
		d.opts.Logger.Error("engine stopped accepting writes after a failure", "err", err)
	}
}

// writeTables merges iters through the compaction rules and writes the
// result as tables for outputLevel, split at targetSize (only between user
// keys) and where overlap with grandparents would exceed its limit. On
// success the tables are synced and so is the directory; on failure they are
// removed. filter is the compaction filter (nil for flushes); *filtered, if
// not nil, receives the number of entries it dropped.
func (d *DB) writeTables(iters []base.InternalIterator, snapshots []base.SeqNum, bottommost bool,
	outputLevel int, targetSize int64, grandparents []*manifest.FileMetadata, filter CompactionFilter, filtered *uint64) ([]*manifest.FileMetadata, error) {
	in := newMergingIter(iters)
	ci := newCompactionIter(in, snapshots, bottommost, d.m, filter)
	var (
		metas   []*manifest.FileMetadata
		out     *tableOutput
		lastKey []byte
		gp      = newGrandparentTracker(grandparents, grandparentLimit(targetSize))
		err     error
	)
	cleanup := func() {
		if out != nil {
			out.abandon(d.fs)
		}
		for _, m := range metas {
			_ = d.fs.Remove(d.path(base.FileTypeTable, m.FileNum))
		}
	}
	for ok := ci.First(); ok; ok = ci.Next() {
		k := ci.Key()
		newUserKey := out == nil || string(k.UserKey) != string(lastKey)
		if out != nil && newUserKey {
			split := int64(out.w.EstimatedSize()) >= targetSize
			if gp.shouldSplit(k.UserKey) {
				split = true
			}
			if split {
				var m *manifest.FileMetadata
				m, err = out.finish()
				out = nil
				if err != nil {
					cleanup()
					_ = ci.Close()
					return nil, err
				}
				metas = append(metas, m)
				gp.reset()
			}
		}
		if out == nil {
			out, err = d.newTableOutput(outputLevel)
			if err != nil {
				cleanup()
				_ = ci.Close()
				return nil, err
			}
		}
		if newUserKey {
			lastKey = append(lastKey[:0], k.UserKey...)
		}
		if err = out.w.Add(k, ci.Value()); err != nil {
			cleanup()
			_ = ci.Close()
			return nil, fmt.Errorf("engine: adding %s to table %s: %w", k, out.path, err)
		}
	}
	if err = ci.Close(); err != nil {
		cleanup()
		return nil, err
	}
	if filtered != nil {
		*filtered = ci.filtered
	}
	if out != nil {
		m, err := out.finish()
		out = nil
		if err != nil {
			cleanup()
			return nil, err
		}
		metas = append(metas, m)
	}
	if len(metas) > 0 {
		if err := vfs.SyncDir(d.fs, d.dir); err != nil {
			cleanup()
			return nil, fmt.Errorf("engine: syncing directory %s: %w", d.dir, err)
		}
	}
	return metas, nil
}

// grandparentTracker measures how many bytes of the level below the output
// level an output table overlaps, so outputs can be cut before a future
// compaction of that table would have to rewrite too much.
type grandparentTracker struct {
	files   []*manifest.FileMetadata
	limit   int64
	index   int
	overlap int64
	seen    bool
}

func newGrandparentTracker(files []*manifest.FileMetadata, limit int64) *grandparentTracker {
	return &grandparentTracker{files: files, limit: limit}
}

// shouldSplit advances over grandparents that end before key and reports
// whether the current output already overlaps more than the limit.
func (g *grandparentTracker) shouldSplit(key []byte) bool {
	for g.index < len(g.files) && string(g.files[g.index].Largest.UserKey) < string(key) {
		if g.seen {
			g.overlap += int64(g.files[g.index].Size)
		}
		g.index++
	}
	g.seen = true
	return g.overlap > g.limit
}

func (g *grandparentTracker) reset() { g.overlap = 0 }

// grandparentLimit is the most bytes of the grandparent level one output
// table may overlap: ten target-sized tables.
func grandparentLimit(targetSize int64) int64 {
	if targetSize > math.MaxInt64/10 {
		return math.MaxInt64
	}
	return 10 * targetSize
}
