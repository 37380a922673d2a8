package engine

import (
	"fmt"
	"math"
	"math/bits"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kayadb/kayadb/internal/lsm/manifest"
)

// metrics are the engine's internal counters. All fields are atomics updated
// on the hot paths without locks.
type metrics struct {
	writes, batches, gets, bytesIn atomic.Uint64
	walBytes, walWrites, walSyncs  atomic.Uint64
	walBackpressure                atomic.Uint64
	walSyncLatency                 histogram
	memtableRotations              atomic.Uint64
	flushes, flushBytes            atomic.Uint64
	compactions, moves             atomic.Uint64
	encryptionRewrites             atomic.Uint64
	compactionBytesRead            atomic.Uint64
	compactionBytesWritten         atomic.Uint64
	levelBytesIn                   [manifest.NumLevels]atomic.Uint64
	stallsMemtable, stallsL0       atomic.Uint64
	stallDuration                  atomic.Uint64 // nanoseconds
	tableOpens                     atomic.Uint64
	obsoleteDeleted                atomic.Uint64
	flushDuration, compactDuration histogram
	compactionEntriesDropped       atomic.Uint64
	compactionTombstonesDropped    atomic.Uint64
	compactionFilterDropped        atomic.Uint64
	compactionFilterDiscarded      atomic.Uint64
	// Lack of space: WAL failures that stopped writes, flushes and
	// compactions that failed and were retried, calls of Resume that had
	// work to do.
	diskFullEvents, resumes      atomic.Uint64
	flushNoSpace, compactNoSpace atomic.Uint64
}

// histogram is a lock-free latency histogram with power-of-two microsecond
// buckets (bucket i counts durations in [2^(i-1), 2^i) µs).
type histogram struct {
	buckets [32]atomic.Uint64
	count   atomic.Uint64
	sumNs   atomic.Uint64
}

func (h *histogram) record(d time.Duration) {
	us := uint64(d / time.Microsecond)
	i := bits.Len64(us)
	if i >= len(h.buckets) {
		i = len(h.buckets) - 1
	}
	h.buckets[i].Add(1)
	h.count.Add(1)
	h.sumNs.Add(uint64(d))
}

// LatencySummary summarizes a latency histogram.
type LatencySummary struct {
	Count uint64        `json:"count"`
	Mean  time.Duration `json:"mean_ns"`
	P50   time.Duration `json:"p50_ns"`
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_bucket_ns"`
}

func (h *histogram) summary() LatencySummary {
	var counts [32]uint64
	var total uint64
	for i := range counts {
		counts[i] = h.buckets[i].Load()
		total += counts[i]
	}
	s := LatencySummary{Count: total}
	if total == 0 {
		return s
	}
	s.Mean = time.Duration(h.sumNs.Load() / max(h.count.Load(), 1))
	upper := func(i int) time.Duration {
		if i == 0 {
			return time.Microsecond
		}
		return time.Duration(uint64(1)<<uint(i)) * time.Microsecond
	}
	quantile := func(q float64) time.Duration {
		rank := uint64(math.Ceil(q * float64(total)))
		var c uint64
		for i, n := range counts {
			c += n
			if c >= rank {
				return upper(i)
			}
		}
		return upper(len(counts) - 1)
	}
	s.P50, s.P99 = quantile(0.5), quantile(0.99)
	for i := len(counts) - 1; i >= 0; i-- {
		if counts[i] > 0 {
			s.Max = upper(i)
			break
		}
	}
	return s
}

// LevelMetrics describe one LSM level.
type LevelMetrics struct {
	NumFiles int    `json:"num_files"`
	Size     uint64 `json:"size_bytes"`
	// Score is the compaction score: >= 1 means the level is due.
	Score float64 `json:"score"`
	// TargetSize is the level's size target (0 for L0 and unused levels).
	TargetSize uint64 `json:"target_size_bytes"`
	// BytesIn is the number of bytes written into this level by flushes
	// (L0) and compactions.
	BytesIn uint64 `json:"bytes_in"`
}

// Metrics is a snapshot of the engine's counters and shape. Field names in
// JSON are stable.
type Metrics struct {
	Levels [manifest.NumLevels]LevelMetrics `json:"levels"`

	MemTable struct {
		Count   int    `json:"count"`
		Size    uint64 `json:"size_bytes"`
		Entries uint64 `json:"entries"`
	} `json:"memtable"`

	WAL struct {
		Files        int            `json:"files"`
		BytesWritten uint64         `json:"bytes_written"`
		Writes       uint64         `json:"writes"`
		Syncs        uint64         `json:"syncs"`
		SyncLatency  LatencySummary `json:"sync_latency"`
		Backpressure uint64         `json:"backpressure_waits"`
	} `json:"wal"`

	Flush struct {
		Count        uint64         `json:"count"`
		BytesWritten uint64         `json:"bytes_written"`
		Duration     LatencySummary `json:"duration"`
		InProgress   bool           `json:"in_progress"`
	} `json:"flush"`

	// Encryption describes encryption at rest (Options.Encryption).
	Encryption struct {
		// TablesByKey counts live tables per key id (decimal), "plain"
		// for unencrypted tables.
		TablesByKey map[string]int `json:"tables_by_key"`
		// StaleTables counts live tables not sealed with the active key
		// (with encryption on): the background rewrite's work left.
		StaleTables int `json:"stale_tables"`
		// Rewrites counts the compactions that rewrote tables sealed with
		// an older key (or plain) under the active key.
		Rewrites uint64 `json:"rewrites"`
	} `json:"encryption"`

	Compaction struct {
		Count             uint64 `json:"count"`
		MoveCount         uint64 `json:"move_count"`
		BytesRead         uint64 `json:"bytes_read"`
		BytesWritten      uint64 `json:"bytes_written"`
		EntriesDropped    uint64 `json:"entries_dropped"`
		TombstonesDropped uint64 `json:"tombstones_dropped"`
		// FilterDropped counts entries Options.CompactionFilter dropped
		// (removed outright or written as tombstones).
		FilterDropped uint64 `json:"filter_dropped"`
		// FilterDiscarded counts filtering compactions whose output was
		// thrown away because a snapshot opened while they ran (the next
		// compaction then runs without the filter).
		FilterDiscarded uint64         `json:"filter_discarded"`
		EstimatedDebt   uint64         `json:"estimated_debt_bytes"`
		InProgress      bool           `json:"in_progress"`
		Duration        LatencySummary `json:"duration"`
	} `json:"compaction"`

	Stalls struct {
		MemTable uint64        `json:"memtable"`
		L0       uint64        `json:"l0"`
		Duration time.Duration `json:"duration_ns"`
	} `json:"stalls"`

	BlockCache struct {
		Capacity int64   `json:"capacity_bytes"`
		Size     int64   `json:"size_bytes"`
		Count    int64   `json:"count"`
		Hits     int64   `json:"hits"`
		Misses   int64   `json:"misses"`
		HitRatio float64 `json:"hit_ratio"`
	} `json:"block_cache"`

	TableCache struct {
		Open  int    `json:"open"`
		Opens uint64 `json:"opens"`
	} `json:"table_cache"`

	Snapshots struct {
		Count     int    `json:"count"`
		OldestSeq uint64 `json:"oldest_seq"`
	} `json:"snapshots"`

	// DiskFull describes running out of space (see DB.DiskFull, DB.Resume).
	DiskFull struct {
		// Active: a WAL write failed for lack of space and writes are
		// refused until Resume succeeds.
		Active bool `json:"active"`
		// Events counts the times writes were stopped that way.
		Events uint64 `json:"events"`
		// FlushFailures and CompactionFailures count flushes and
		// compactions that failed for lack of space (and were retried).
		FlushFailures      uint64 `json:"flush_failures"`
		CompactionFailures uint64 `json:"compaction_failures"`
		// Resumes counts the calls of Resume that had something to do.
		Resumes uint64 `json:"resumes"`
	} `json:"disk_full"`

	Writes      uint64 `json:"writes"`
	Batches     uint64 `json:"batches"`
	Gets        uint64 `json:"gets"`
	BytesIn     uint64 `json:"bytes_in"`
	VisibleSeq  uint64 `json:"visible_seq"`
	DiskSize    uint64 `json:"table_bytes"`
	ObsoleteDel uint64 `json:"obsolete_files_deleted"`
	// WriteAmp is (bytes flushed + bytes compacted) / WAL bytes.
	WriteAmp float64 `json:"write_amp"`
}

// Metrics returns a snapshot of the engine's metrics.
func (d *DB) Metrics() *Metrics {
	mt := &Metrics{}
	m := d.m
	d.mu.Lock()
	memCount := len(d.mu.imm) + 1
	var memSize, memEntries uint64
	for _, mm := range append([]*memTable{d.mu.mem}, d.mu.imm...) {
		memSize += uint64(mm.t.Size())
		memEntries += mm.t.Count()
	}
	mt.Flush.InProgress = d.mu.flushing
	mt.Compaction.InProgress = d.mu.compacting
	mt.Snapshots.Count = d.mu.snapshots.count()
	mt.Snapshots.OldestSeq = uint64(d.mu.snapshots.oldest())
	mt.DiskFull.Active = d.mu.diskFull != nil
	walFiles := len(d.mu.imm) + 1
	d.mu.Unlock()
	mt.MemTable.Count, mt.MemTable.Size, mt.MemTable.Entries = memCount, memSize, memEntries

	v := d.vs.Current()
	info := d.levelInfo(v)
	for l := range mt.Levels {
		lm := &mt.Levels[l]
		lm.NumFiles = v.NumFiles(l)
		lm.Size = v.LevelSize(l)
		lm.Score = info.score[l]
		lm.TargetSize = uint64(info.maxBytes[l])
		lm.BytesIn = m.levelBytesIn[l].Load()
		mt.DiskSize += lm.Size
	}
	mt.Compaction.EstimatedDebt = info.debt
	mt.Encryption.TablesByKey = map[string]int{}
	for _, lf := range v.Levels {
		for _, f := range lf {
			mt.Encryption.TablesByKey[keyName(f)]++
			if stale(f, d.opts.Encryption) {
				mt.Encryption.StaleTables++
			}
		}
	}
	mt.Encryption.Rewrites = m.encryptionRewrites.Load()
	v.Unref()

	mt.WAL.Files = walFiles
	mt.WAL.BytesWritten = m.walBytes.Load()
	mt.WAL.Writes = m.walWrites.Load()
	mt.WAL.Syncs = m.walSyncs.Load()
	mt.WAL.SyncLatency = m.walSyncLatency.summary()
	mt.WAL.Backpressure = m.walBackpressure.Load()
	mt.Flush.Count = m.flushes.Load()
	mt.Flush.BytesWritten = m.flushBytes.Load()
	mt.Flush.Duration = m.flushDuration.summary()
	mt.Compaction.Count = m.compactions.Load()
	mt.Compaction.MoveCount = m.moves.Load()
	mt.Compaction.BytesRead = m.compactionBytesRead.Load()
	mt.Compaction.BytesWritten = m.compactionBytesWritten.Load()
	mt.Compaction.EntriesDropped = m.compactionEntriesDropped.Load()
	mt.Compaction.TombstonesDropped = m.compactionTombstonesDropped.Load()
	mt.Compaction.FilterDropped = m.compactionFilterDropped.Load()
	mt.Compaction.FilterDiscarded = m.compactionFilterDiscarded.Load()
	mt.Compaction.Duration = m.compactDuration.summary()
	mt.Stalls.MemTable = m.stallsMemtable.Load()
	mt.Stalls.L0 = m.stallsL0.Load()
	mt.Stalls.Duration = time.Duration(m.stallDuration.Load())
	cm := d.cache.Metrics()
	mt.BlockCache.Capacity, mt.BlockCache.Size, mt.BlockCache.Count = cm.Capacity, cm.Size, cm.Count
	mt.BlockCache.Hits, mt.BlockCache.Misses = cm.Hits, cm.Misses
	if cm.Hits+cm.Misses > 0 {
		mt.BlockCache.HitRatio = float64(cm.Hits) / float64(cm.Hits+cm.Misses)
	}
	mt.TableCache.Open = d.tables.openCount()
	mt.TableCache.Opens = m.tableOpens.Load()
	mt.Writes = m.writes.Load()
	mt.Batches = m.batches.Load()
	mt.Gets = m.gets.Load()
	mt.BytesIn = m.bytesIn.Load()
	mt.VisibleSeq = d.visibleSeq.Load()
	mt.ObsoleteDel = m.obsoleteDeleted.Load()
	mt.DiskFull.Events = m.diskFullEvents.Load()
	mt.DiskFull.FlushFailures = m.flushNoSpace.Load()
	mt.DiskFull.CompactionFailures = m.compactNoSpace.Load()
	mt.DiskFull.Resumes = m.resumes.Load()
	if wal := mt.WAL.BytesWritten; wal > 0 {
		mt.WriteAmp = float64(mt.Flush.BytesWritten+mt.Compaction.BytesWritten) / float64(wal)
	}
	return mt
}

// String formats the metrics as a table for humans.
func (mt *Metrics) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "level  files        size   score      target     bytes-in\n")
	for l, lm := range mt.Levels {
		fmt.Fprintf(&sb, "L%d   %7d  %10s  %6.2f  %10s  %11s\n", l, lm.NumFiles, humanBytes(lm.Size), lm.Score,
			humanBytes(lm.TargetSize), humanBytes(lm.BytesIn))
	}
	fmt.Fprintf(&sb, "memtables: %d (%s, %d entries)\n", mt.MemTable.Count, humanBytes(mt.MemTable.Size), mt.MemTable.Entries)
	fmt.Fprintf(&sb, "wal: %d files, %s written in %d writes, %d syncs (p50 %v, p99 %v)\n", mt.WAL.Files,
		humanBytes(mt.WAL.BytesWritten), mt.WAL.Writes, mt.WAL.Syncs, mt.WAL.SyncLatency.P50, mt.WAL.SyncLatency.P99)
	fmt.Fprintf(&sb, "flushes: %d (%s)\n", mt.Flush.Count, humanBytes(mt.Flush.BytesWritten))
	fmt.Fprintf(&sb, "compactions: %d (+%d moves), read %s, wrote %s, debt %s, dropped %d entries (%d tombstones)\n",
		mt.Compaction.Count, mt.Compaction.MoveCount, humanBytes(mt.Compaction.BytesRead),
		humanBytes(mt.Compaction.BytesWritten), humanBytes(mt.Compaction.EstimatedDebt),
		mt.Compaction.EntriesDropped, mt.Compaction.TombstonesDropped)
	fmt.Fprintf(&sb, "stalls: %d memtable, %d L0, %v total\n", mt.Stalls.MemTable, mt.Stalls.L0, mt.Stalls.Duration)
	if df := mt.DiskFull; df.Active || df.Events+df.FlushFailures+df.CompactionFailures > 0 {
		fmt.Fprintf(&sb, "disk full: active %v, %d times; %d flushes and %d compactions failed for lack of space; %d resumes\n",
			df.Active, df.Events, df.FlushFailures, df.CompactionFailures, df.Resumes)
	}
	fmt.Fprintf(&sb, "block cache: %s of %s, %d blocks, hit ratio %.3f\n", humanBytes(uint64(mt.BlockCache.Size)),
		humanBytes(uint64(mt.BlockCache.Capacity)), mt.BlockCache.Count, mt.BlockCache.HitRatio)
	fmt.Fprintf(&sb, "tables: %s on disk, %d readers open; snapshots: %d; write amp %.2f\n",
		humanBytes(mt.DiskSize), mt.TableCache.Open, mt.Snapshots.Count, mt.WriteAmp)
	return sb.String()
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
