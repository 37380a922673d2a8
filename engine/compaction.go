package engine

import (
	"bytes"
	"fmt"
	"math"
	"time"

	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/manifest"
	"github.com/kayadb/kayadb/internal/lsm/sstable"
)

// levelInfo is the shape analysis the compaction picker works from.
type levelInfo struct {
	baseLevel int
	maxBytes  [manifest.NumLevels]int64
	score     [manifest.NumLevels]float64
	// debt estimates the bytes compactions must rewrite to bring every level
	// under its target.
	debt uint64
}

// levelInfo computes level targets the way Pebble does ("dynamic level
// sizes"): the bottom level is expected to hold about (1 - 1/multiplier) of
// the data; the base level (where L0 compacts to) is the deepest level whose
// target stays under LBaseMaxBytes; levels between grow by a smoothed
// multiplier. Sizing from the total data avoids inverted trees.
func (d *DB) levelInfo(v *manifest.Version) levelInfo {
	const bottom = manifest.NumLevels - 1
	var info levelInfo
	mult := float64(d.opts.LevelMultiplier)
	var dbSize uint64
	firstNonEmpty := -1
	for l := 0; l < manifest.NumLevels; l++ {
		s := v.LevelSize(l)
		dbSize += s
		if l > 0 && s > 0 && firstNonEmpty < 0 {
			firstNonEmpty = l
		}
	}
	lbase := float64(d.opts.LBaseMaxBytes)
	if firstNonEmpty < 0 {
		info.baseLevel = bottom
	} else {
		bottomSize := float64(dbSize) - float64(dbSize)/mult
		cur := bottomSize
		for l := bottom; l > firstNonEmpty; l-- {
			cur /= mult
		}
		info.baseLevel = firstNonEmpty
		for info.baseLevel > 1 && cur > lbase {
			info.baseLevel--
			cur /= mult
		}
		smoothed := 1.0
		if info.baseLevel < bottom && bottomSize > lbase {
			smoothed = math.Pow(bottomSize/lbase, 1/float64(bottom-info.baseLevel))
		}
		size := lbase
		for l := info.baseLevel; l < manifest.NumLevels; l++ {
			if l > info.baseLevel {
				size *= smoothed
			}
			info.maxBytes[l] = int64(math.Round(size))
		}
	}
	if info.baseLevel == bottom {
		info.maxBytes[bottom] = int64(lbase)
	}
	info.score[0] = float64(v.NumFiles(0)) / float64(d.opts.L0CompactionThreshold)
	if v.NumFiles(0) >= d.opts.L0CompactionThreshold {
		info.debt += v.LevelSize(0) + v.LevelSize(info.baseLevel)
	}
	for l := 1; l < bottom; l++ {
		s := v.LevelSize(l)
		if s == 0 {
			continue
		}
		if l < info.baseLevel || info.maxBytes[l] == 0 {
			// Data above the base level always moves down.
			info.score[l] = math.MaxFloat64 / 2
			info.debt += s
			continue
		}
		info.score[l] = float64(s) / float64(info.maxBytes[l])
		if excess := int64(s) - info.maxBytes[l]; excess > 0 {
			info.debt += uint64(excess) * uint64(d.opts.LevelMultiplier)
		}
	}
	return info
}

// compaction describes one unit of compaction work.
type compaction struct {
	startLevel   int
	outputLevel  int
	inputs       [2][]*manifest.FileMetadata // start level, output level
	grandparents []*manifest.FileMetadata
	bottommost   bool
	targetSize   int64
	manual       bool
	// rewrite: the compaction rewrites tables sealed with an older key (or
	// plain); it never moves a table unchanged.
	rewrite bool
}

func (c *compaction) allInputs() []*manifest.FileMetadata {
	return append(append([]*manifest.FileMetadata(nil), c.inputs[0]...), c.inputs[1]...)
}

func (c *compaction) inputBytes() uint64 {
	var n uint64
	for _, f := range c.allInputs() {
		n += f.Size
	}
	return n
}

// isMove reports whether the compaction can move its tables down without
// rewriting them: nothing in the output level overlaps, the moved tables do
// not overlap each other, and (for a single table) its future compaction
// would not have to rewrite too much of the level below.
func (c *compaction) isMove() bool {
	if c.rewrite || c.startLevel == c.outputLevel || len(c.inputs[1]) > 0 || len(c.inputs[0]) == 0 {
		return false
	}
	files := append([]*manifest.FileMetadata(nil), c.inputs[0]...)
	if c.startLevel == 0 {
		sortByKey(files)
		for i := 1; i < len(files); i++ {
			if bytes.Compare(files[i-1].Largest.UserKey, files[i].Smallest.UserKey) >= 0 {
				return false
			}
		}
	}
	var gp uint64
	for _, f := range c.grandparents {
		gp += f.Size
	}
	return int64(gp) <= 10*c.targetSize*int64(len(files))
}

func sortByKey(files []*manifest.FileMetadata) {
	for i := 1; i < len(files); i++ {
		for j := i; j > 0 && base.CompareInternal(files[j].Smallest, files[j-1].Smallest) < 0; j-- {
			files[j], files[j-1] = files[j-1], files[j]
		}
	}
}

func keyRange(files []*manifest.FileMetadata) (smallest, largest []byte) {
	for i, f := range files {
		if i == 0 || bytes.Compare(f.Smallest.UserKey, smallest) < 0 {
			smallest = f.Smallest.UserKey
		}
		if i == 0 || bytes.Compare(f.Largest.UserKey, largest) > 0 {
			largest = f.Largest.UserKey
		}
	}
	return smallest, largest
}

func anyCompacting(files []*manifest.FileMetadata) bool {
	for _, f := range files {
		if f.Compacting {
			return true
		}
	}
	return false
}

// newCompaction fills in the output-level inputs, grandparents and flags for
// a compaction whose start-level inputs are chosen. It returns nil if an
// input is already being compacted.
func (d *DB) newCompaction(v *manifest.Version, info levelInfo, start, output int, inputs []*manifest.FileMetadata) *compaction {
	c := &compaction{startLevel: start, outputLevel: output}
	c.inputs[0] = inputs
	smallest, largest := keyRange(inputs)
	if output != start {
		c.inputs[1] = v.Overlaps(output, smallest, largest)
	}
	if anyCompacting(c.allInputs()) {
		return nil
	}
	smallest, largest = keyRange(c.allInputs())
	if output+1 < manifest.NumLevels {
		c.grandparents = v.Overlaps(output+1, smallest, largest)
	}
	c.bottommost = true
	for l := output + 1; l < manifest.NumLevels; l++ {
		if len(v.Overlaps(l, smallest, largest)) > 0 {
			c.bottommost = false
			break
		}
	}
	c.targetSize = d.opts.TargetFileSize
	for l := info.baseLevel; l < output; l++ {
		c.targetSize *= 2
	}
	return c
}

// pickAutoLocked chooses the most urgent compaction, or nil. Called with mu.
func (d *DB) pickAutoLocked(v *manifest.Version) *compaction {
	info := d.levelInfo(v)
	best, bestScore := -1, 1.0
	for l := 0; l < manifest.NumLevels-1; l++ {
		if info.score[l] >= bestScore {
			best, bestScore = l, info.score[l]
		}
	}
	if best < 0 {
		return nil
	}
	if best == 0 {
		files := append([]*manifest.FileMetadata(nil), v.Levels[0]...)
		return d.newCompaction(v, info, 0, info.baseLevel, files)
	}
	// Pick the table whose compaction rewrites the fewest bytes of the next
	// level per byte moved (RocksDB's kMinOverlappingRatio).
	output := best + 1
	if best < info.baseLevel {
		output = info.baseLevel
	}
	var seed *manifest.FileMetadata
	bestRatio := math.MaxFloat64
	for _, f := range v.Levels[best] {
		if f.Compacting {
			continue
		}
		var overlap uint64
		for _, o := range v.Overlaps(output, f.Smallest.UserKey, f.Largest.UserKey) {
			overlap += o.Size
		}
		ratio := float64(overlap) / float64(max(f.Size, 1))
		if ratio < bestRatio {
			seed, bestRatio = f, ratio
		}
	}
	if seed == nil {
		return nil
	}
	return d.newCompaction(v, info, best, output, []*manifest.FileMetadata{seed})
}

// manualCompaction is a request from Compact for one level.
type manualCompaction struct {
	level      int
	start, end []byte
	done       chan error
}

// pickManualLocked builds the compaction for a manual request, or nil when
// the level holds nothing in range. Called with mu.
func (d *DB) pickManualLocked(v *manifest.Version, mc *manualCompaction) *compaction {
	files := v.Overlaps(mc.level, mc.start, mc.end)
	if mc.level == 0 {
		// L0 tables overlap each other: take them all so no older version
		// is left above a newer one.
		if len(files) > 0 {
			files = append([]*manifest.FileMetadata(nil), v.Levels[0]...)
		}
	}
	if len(files) == 0 {
		return nil
	}
	info := d.levelInfo(v)
	output := mc.level + 1
	switch {
	case mc.level == 0:
		output = info.baseLevel
	case mc.level == manifest.NumLevels-1:
		output = mc.level
	case mc.level < info.baseLevel:
		output = info.baseLevel
	}
	c := d.newCompaction(v, info, mc.level, output, append([]*manifest.FileMetadata(nil), files...))
	if c != nil {
		c.manual = true
	}
	return c
}

func (d *DB) compactLoop() {
	defer d.bgWG.Done()
	retry := time.NewTimer(backoffMax)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-d.closing:
			return
		case <-d.workCh:
		case <-retry.C:
		}
		for d.compactOne() {
		}
		// After a failure for lack of space, try again when the back-off
		// ends (sooner if Resume expires it).
		d.mu.Lock()
		wait := d.mu.compactRetry.delay(time.Now())
		d.mu.Unlock()
		if wait > 0 {
			retry.Reset(wait)
		}
	}
}

// compactOne runs one compaction (manual requests first). It reports
// whether it did any work.
func (d *DB) compactOne() bool {
	d.mu.Lock()
	if d.mu.closed || d.mu.bgErr != nil {
		// Answer the manual requests queued meanwhile, or their callers
		// would wait forever.
		for _, mc := range d.mu.manual {
			mc.done <- d.usableLocked()
		}
		d.mu.manual = nil
		d.mu.Unlock()
		return false
	}
	var mc *manualCompaction
	var c *compaction
	v := d.vs.Current()
	if len(d.mu.manual) > 0 {
		mc = d.mu.manual[0]
		d.mu.manual = d.mu.manual[1:]
		c = d.pickManualLocked(v, mc)
	} else if !d.opts.DisableAutomaticCompactions && !d.mu.compactRetry.waiting(time.Now()) {
		if c = d.pickAutoLocked(v); c == nil {
			// Nothing to do: no compaction is failing any more.
			d.mu.compactRetry.succeed()
			// The lowest priority: rewrite a table sealed with an
			// older key, one at a time.
			c = d.pickRewriteLocked(v)
		}
	}
	v.Unref()
	if c == nil {
		d.mu.Unlock()
		if mc != nil {
			mc.done <- nil
			return true
		}
		return false
	}
	inputs := c.allInputs()
	for _, f := range inputs {
		f.Compacting = true
	}
	d.mu.compacting = true
	snapshots := d.mu.snapshots.seqs()
	snapGen := d.mu.snapshotGen
	filter := d.opts.CompactionFilter
	if d.mu.skipFilter {
		// The last filtering compaction was discarded (a snapshot opened
		// while it ran): this one makes progress without the filter.
		filter, d.mu.skipFilter = nil, false
	}
	d.mu.Unlock()

	err := d.runCompaction(c, snapshots, snapGen, filter)

	d.mu.Lock()
	for _, f := range inputs {
		f.Compacting = false
	}
	d.mu.compacting = false
	if err != nil {
		err = fmt.Errorf("engine: compaction failed: %w", err)
		d.backgroundFailedLocked(&d.mu.compactRetry, &d.m.compactNoSpace, err)
	} else {
		d.mu.compactRetry.succeed()
		d.updateReadStateLocked(nil)
	}
	d.mu.cond.Broadcast()
	d.mu.Unlock()
	if mc != nil {
		mc.done <- err
	}
	return err == nil
}

// runCompaction performs c and installs its result. snapshots are the
// sequence numbers of the snapshots open when it started, snapGen the
// snapshot generation then, filter the compaction filter to apply (nil for
// none).
func (d *DB) runCompaction(c *compaction, snapshots []base.SeqNum, snapGen uint64, filter CompactionFilter) error {
	start := time.Now()
	edit := &manifest.VersionEdit{}
	for i, level := range []int{c.startLevel, c.outputLevel} {
		for _, f := range c.inputs[i] {
			edit.DeletedFiles = append(edit.DeletedFiles, manifest.DeletedFile{Level: level, FileNum: f.FileNum})
		}
	}
	if c.isMove() {
		for _, f := range c.inputs[0] {
			edit.NewFiles = append(edit.NewFiles, manifest.NewFile{Level: c.outputLevel, Meta: f})
		}
		if err := d.vs.LogAndApply(edit); err != nil {
			return err
		}
		d.m.moves.Add(1)
		d.opts.Logger.Debug("moved tables", "from", levelName(c.startLevel), "to", levelName(c.outputLevel), "tables", len(c.inputs[0]))
		return nil
	}

	var iters []base.InternalIterator
	topts := sstable.IterOptions{FillCache: false, Sequential: true}
	if c.startLevel == 0 {
		l0 := c.inputs[0]
		for i := len(l0) - 1; i >= 0; i-- {
			iters = append(iters, newLevelIter(d.tables, l0[i:i+1], nil, nil, topts))
		}
	} else {
		iters = append(iters, newLevelIter(d.tables, c.inputs[0], nil, nil, topts))
	}
	if len(c.inputs[1]) > 0 {
		iters = append(iters, newLevelIter(d.tables, c.inputs[1], nil, nil, topts))
	}
	var filtered uint64
	metas, err := d.writeTables(iters, snapshots, c.bottommost, c.outputLevel, c.targetSize, c.grandparents, filter, &filtered)
	if err != nil {
		return err
	}
	var written uint64
	for _, m := range metas {
		edit.NewFiles = append(edit.NewFiles, manifest.NewFile{Level: c.outputLevel, Meta: m})
		written += m.Size
	}
	if filtered > 0 {
		// No snapshot may open between the check and the new read state
		// (see compactionIter).
		d.filterMu.Lock()
		d.mu.Lock()
		conflict := d.mu.snapshots.openedSince(snapGen)
		if conflict {
			d.mu.skipFilter = true
		}
		d.mu.Unlock()
		if conflict {
			d.filterMu.Unlock()
			d.removeTables(metas)
			d.m.compactionFilterDiscarded.Add(1)
			d.opts.Logger.Debug("discarded a filtering compaction: a snapshot opened while it ran", "from", levelName(c.startLevel), "to", levelName(c.outputLevel))
			return nil
		}
		err := d.vs.LogAndApply(edit)
		if err == nil {
			d.mu.Lock()
			d.updateReadStateLocked(nil)
			d.mu.Unlock()
		}
		d.filterMu.Unlock()
		if err != nil {
			d.removeTables(metas)
			return err
		}
		d.m.compactionFilterDropped.Add(filtered)
	} else if err := d.vs.LogAndApply(edit); err != nil {
		d.removeTables(metas)
		return err
	}
	read := c.inputBytes()
	d.m.compactions.Add(1)
	if c.rewrite {
		d.m.encryptionRewrites.Add(1)
	}
	d.m.compactionBytesRead.Add(read)
	d.m.compactionBytesWritten.Add(written)
	d.m.levelBytesIn[c.outputLevel].Add(written)
	d.m.compactDuration.record(time.Since(start))
	d.opts.Logger.Debug("compacted", "from", levelName(c.startLevel), "to", levelName(c.outputLevel),
		"inputs", len(c.inputs[0])+len(c.inputs[1]), "outputs", len(metas), "read", read, "written", written,
		"duration", time.Since(start))
	return nil
}

// Compact compacts every table holding keys in [start, end] down to the
// bottom level, dropping overwritten versions and deletions no snapshot
// needs. nil bounds are open. It flushes the memtables first and returns when
// the work is done.
func (d *DB) Compact(start, end []byte) error {
	if d.opts.ReadOnly {
		return ErrReadOnly
	}
	if start != nil && end != nil && bytes.Compare(start, end) > 0 {
		return base.InvalidArgumentf("compaction range start %q is after end %q", start, end)
	}
	if err := d.Flush(); err != nil {
		return err
	}
	for level := 0; level < manifest.NumLevels; level++ {
		mc := &manualCompaction{level: level, start: start, end: end, done: make(chan error, 1)}
		d.mu.Lock()
		if d.mu.closed {
			d.mu.Unlock()
			return ErrClosed
		}
		if d.mu.bgErr != nil {
			err := d.mu.bgErr
			d.mu.Unlock()
			return err
		}
		d.mu.manual = append(d.mu.manual, mc)
		d.maybeScheduleCompactionLocked()
		d.mu.Unlock()
		if err := <-mc.done; err != nil {
			return err
		}
	}
	return nil
}
