// Package engine is KayaDB's embeddable storage engine: a durable,
// log-structured merge tree with a write-ahead log, an arena-skiplist
// memtable, checksummed SSTables with bloom filters, a MANIFEST of version
// edits, and leveled compaction in the background.
//
// Open a database with Open, write with Set, Delete or a Batch, read with Get,
// NewIter or a Snapshot, copy it with Checkpoint, and Close it when done:
//
//	db, err := engine.Open("/var/lib/app/db", nil)
//	if err != nil { ... }
//	defer db.Close()
//	err = db.Set([]byte("k"), []byte("v"), engine.Sync)
//	v, err := db.Get([]byte("k"))
//
// # Guarantees
//
//   - A write made with Sync is durable when the call returns; concurrent
//     sync writes share one fdatasync (group commit). A NoSync write can be
//     lost in a crash, but only together with every later write: the state
//     after recovery is always a prefix of the commit order, and a batch is
//     applied entirely or not at all.
//   - A write is visible to readers as soon as it is committed, which may be
//     before its fdatasync has completed.
//   - Reads never return data that failed a checksum: damaged files surface
//     as errors matching ErrCorruption that name the file and offset.
//   - A directory is used by one process at a time (a LOCK file with
//     flock); a second Open fails with an error matching ErrLocked.
//
// # What happens on a failed write
//
// The rule: a failed write never leaves bytes that recovery misreads, and a
// full disk stops writes without losing or reordering acknowledged ones.
//
//   - WAL. A write or fsync that fails is sticky for that WAL file: nothing
//     more is written to it, not even the sync marker at close, so a
//     partial record can only be its last bytes, and it stays the newest
//     WAL (a new one is only created after it was closed cleanly, or after
//     it stopped mattering, see Resume). Recovery drops such a tail.
//   - If the failure is a lack of space (vfs.IsNoSpace), the DB enters the
//     disk-full state: writes fail with an error matching ErrDiskFull (and
//     vfs.IsNoSpace), reads go on, and DB.DiskFull reports it. Once space
//     is freed, DB.Resume flushes every memtable to tables (the writes that
//     never reached the WAL are in them), records in the MANIFEST that the
//     failed WAL is obsolete, starts a new WAL and accepts writes again. A
//     write that failed may or may not be applied (it may already be
//     visible, and Resume makes it durable), as with any failed write.
//   - Any other failure (an I/O error, a failed fsync that did not report
//     a lack of space) is fatal: writes fail with it until the DB is
//     reopened. An fsync is never retried: after a failure the kernel may
//     have dropped the pages it could not write.
//   - MANIFEST. A record that cannot be written for lack of space is cut
//     off (truncate, seek, rewind) and the edit not applied; a new MANIFEST
//     that cannot be finished is removed before CURRENT names it. A failed
//     MANIFEST fsync is fatal.
//   - Flushes and compactions that fail for lack of space delete their
//     partial tables, are counted (Metrics.DiskFull) and retried after a
//     back-off (0.1 s doubling to 10 s; Resume retries at once). Meanwhile
//     writes go on; a write that would have to wait for a flush (the
//     memtables are full) fails at once with ErrDiskFull instead of
//     stalling until an operator frees space. While compactions fail, L0
//     may grow past L0StopWritesThreshold up to twice it (flushes that fit
//     keep the DB writable); a write beyond that fails with ErrDiskFull.
//
// # Encryption at rest
//
// With Options.Encryption (a Sealer over a keyring, see LoadKeyring) the
// engine seals every WAL record, MANIFEST record and SSTable block with
// AES-256-GCM (docs/formats.md); files written without it stay readable, so
// a plain directory opened with a key turns encrypted as its files are
// rewritten. The API is small:
//
//   - Open checks that every live file opens with the keyring: the
//     MANIFEST and the WALs as it reads them, and for the tables every
//     footer's key id plus one table opened per distinct key. A missing or
//     wrong key fails Open with an error naming the file and the key id
//     (matching crypt.ErrUnknownKey or crypt.ErrDecrypt), never a torn-tail
//     truncation.
//   - (*DB).SetKeyring rotates online: new records and tables use the new
//     active key at once, and a background rewrite (the lowest-priority
//     compaction, one table at a time) moves tables under other keys to it.
//     It refuses a keyring that lacks a key a live file still uses. Drop a
//     key only once EncryptionStatus shows no file using it.
//   - (*DB).EncryptionStatus lists the live files with their keys;
//     Metrics().Encryption counts tables per key (TablesByKey), the ones
//     left to rewrite and the rewrites done.
//   - VerifyEncryption checks a directory no process has open (for
//     `kayactl encryption verify --data DIR`), listing every file's keys
//     and failing naming the file whose key is missing or wrong.
//
// # Concurrency
//
// A DB is safe for concurrent use. Iterators, Snapshots and Batches are not:
// use each from one goroutine at a time.
package engine

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/cache"
	"github.com/kayadb/kayadb/internal/lsm/manifest"
	"github.com/kayadb/kayadb/internal/vfs"
)

// Errors returned by the engine. Test with errors.Is.
var (
	// ErrNotFound: the key does not exist.
	ErrNotFound = base.ErrNotFound
	// ErrCorruption: stored data failed a checksum or structural check.
	ErrCorruption = base.ErrCorruption
	// ErrInvalidArgument: a key, value, batch or option was refused.
	ErrInvalidArgument = base.ErrInvalidArgument
	// ErrClosed: the DB (or iterator, snapshot) was used after Close.
	ErrClosed = base.ErrClosed
	// ErrLocked: another process has the directory open.
	ErrLocked = base.ErrLocked
	// ErrReadOnly: a write or maintenance call on a DB opened with
	// Options.ReadOnly. It also matches ErrInvalidArgument.
	ErrReadOnly = fmt.Errorf("%w: the database is open read-only", base.ErrInvalidArgument)
)

// Limits on keys and values.
const (
	MaxKeySize   = base.MaxKeySize
	MaxValueSize = base.MaxValueSize
)

// DB is an open database.
//
// Locking: commitMu serializes the commit pipeline (sequence numbers, WAL
// order, memtable inserts, memtable rotation). mu guards the memtable list,
// snapshots and background state. Lock order: commitMu, then filterMu, then
// mu, then the VersionSet's internal locks. mu is never held across disk I/O; commitMu is
// held across WAL rotation (creating the next WAL) and Resume, during which
// writes cannot proceed anyway. A WAL reports its failure (onErr) holding
// none of its locks, and nothing waits for a WAL holding mu.
type DB struct {
	dir     string
	opts    *Options
	fs      vfs.FS
	lock    io.Closer
	vs      *manifest.VersionSet
	cache   *cache.Cache
	cacheID uint64
	tables  *tableCache
	m       *metrics
	memPool *memPool
	walKeys walKeys // the keys of the live WALs' records
	// rotateMu serializes SetKeyring (its check of the keys in use and
	// the swap).
	rotateMu sync.Mutex

	// visibleSeq: every write with a sequence number <= visibleSeq is
	// applied to a memtable and may be read.
	visibleSeq atomic.Uint64

	commitMu sync.Mutex
	// Guarded by commitMu:
	lastSeq base.SeqNum
	wal     *walWriter

	rsMu sync.RWMutex
	rs   *readState // guarded by rsMu; swapped under mu

	mu struct {
		sync.Mutex
		mem       *memTable
		imm       []*memTable // oldest first
		snapshots snapshotList
		// bgErr is the first fatal failure (an I/O error or failed fsync of
		// the WAL, a table or the MANIFEST). Once set, writes fail with it:
		// the durable state is uncertain.
		bgErr error
		// diskFull is the WAL write that failed for lack of space; while
		// set, writes fail with ErrDiskFull until Resume (see diskfull.go).
		diskFull error
		// flushRetry and compactRetry hold the back-off of flushes and
		// compactions that failed for lack of space.
		flushRetry, compactRetry backoff
		closed                   bool
		flushing                 bool
		compacting               bool
		// manual compactions waiting for the compactor.
		manual []*manualCompaction
		// snapshotGen counts the snapshots ever opened; skipFilter makes
		// the next compaction run without the compaction filter (see
		// compactionIter).
		snapshotGen uint64
		skipFilter  bool
		// flushed counts memtables flushed since Open (Flush waits on it).
		flushed uint64
		// memSize is the arena size of the current memtable generation; it
		// doubles at each rotation up to Options.MemTableSize.
		memSize int
		// cond is broadcast when a flush or compaction finishes, a stall
		// clears, or the DB closes.
		cond sync.Cond
	}

	// filterMu is held exclusively while a compaction that dropped entries
	// through Options.CompactionFilter checks the open snapshots and
	// installs its output, and shared by NewSnapshot (when a filter is
	// set), so that no snapshot opens in between. It is taken before mu.
	filterMu sync.RWMutex

	// obsoleteMu guards the files waiting for deletion. It is a leaf lock:
	// Version releases (which may happen under mu) queue files here.
	obsoleteMu     sync.Mutex
	obsoleteTables []*manifest.FileMetadata
	obsoleteLogs   []base.FileNum

	bgWG    sync.WaitGroup
	workCh  chan struct{} // wakes the compactor
	flushCh chan struct{} // wakes the flusher
	cleanCh chan struct{} // wakes the file cleaner
	closing chan struct{}

	recovery RecoveryReport
}

func (d *DB) path(ft base.FileType, n base.FileNum) string {
	return filepath.Join(d.dir, base.MakeFilename(ft, n))
}

func validateKey(key []byte) error {
	if len(key) > MaxKeySize {
		return base.InvalidArgumentf("key of %d bytes exceeds the %d-byte limit", len(key), MaxKeySize)
	}
	return nil
}

func validateValue(value []byte) error {
	if len(value) > MaxValueSize {
		return base.InvalidArgumentf("value of %d bytes exceeds the %d-byte limit", len(value), MaxValueSize)
	}
	return nil
}

// Get returns a copy of the value stored for key, or an error matching
// ErrNotFound.
func (d *DB) Get(key []byte) ([]byte, error) {
	return d.getAt(key, base.SeqNum(d.visibleSeq.Load()))
}

func (d *DB) getAt(key []byte, seq base.SeqNum) ([]byte, error) {
	if err := validateKey(key); err != nil {
		return nil, err
	}
	rs := d.loadReadState()
	if rs == nil {
		return nil, ErrClosed
	}
	defer rs.unref()
	d.m.gets.Add(1)
	for _, m := range rs.mems {
		if v, kind, ok := m.t.Get(key, seq); ok {
			if kind == base.KindDelete {
				return nil, ErrNotFound
			}
			return append([]byte(nil), v...), nil
		}
	}
	v := rs.version
	for i := len(v.Levels[0]) - 1; i >= 0; i-- {
		f := v.Levels[0][i]
		if !overlapsKey(f, key) {
			continue
		}
		val, kind, ok, err := d.tableGet(f, key, seq)
		if err != nil {
			return nil, err
		}
		if ok {
			if kind == base.KindDelete {
				return nil, ErrNotFound
			}
			return val, nil
		}
	}
	for level := 1; level < manifest.NumLevels; level++ {
		files := v.Levels[level]
		i := manifest.FindFile(files, key)
		if i == len(files) || !overlapsKey(files[i], key) {
			continue
		}
		val, kind, ok, err := d.tableGet(files[i], key, seq)
		if err != nil {
			return nil, err
		}
		if ok {
			if kind == base.KindDelete {
				return nil, ErrNotFound
			}
			return val, nil
		}
	}
	return nil, ErrNotFound
}

func overlapsKey(f *manifest.FileMetadata, key []byte) bool {
	return string(f.Smallest.UserKey) <= string(key) && string(key) <= string(f.Largest.UserKey)
}

// tableGet looks key up in one table and returns a copy of the value.
func (d *DB) tableGet(f *manifest.FileMetadata, key []byte, seq base.SeqNum) ([]byte, base.Kind, bool, error) {
	h, err := d.tables.get(f.FileNum, f.Size)
	if err != nil {
		return nil, 0, false, err
	}
	v, kind, ok, err := h.r.Get(key, seq)
	if ok && err == nil {
		v = append([]byte(nil), v...)
	}
	h.release()
	if err != nil {
		return nil, 0, false, err
	}
	return v, kind, ok, nil
}

// Set stores value under key. A nil opts means Sync.
func (d *DB) Set(key, value []byte, opts *WriteOptions) error {
	b := getBatch()
	defer putBatch(b)
	if err := b.Set(key, value); err != nil {
		return err
	}
	return d.Apply(b, opts)
}

// Put is Set.
func (d *DB) Put(key, value []byte, opts *WriteOptions) error { return d.Set(key, value, opts) }

// Delete removes key (deleting a missing key is not an error). A nil opts
// means Sync.
func (d *DB) Delete(key []byte, opts *WriteOptions) error {
	b := getBatch()
	defer putBatch(b)
	if err := b.Delete(key); err != nil {
		return err
	}
	return d.Apply(b, opts)
}

var batchPool = sync.Pool{New: func() any { return &Batch{} }}

func getBatch() *Batch { return batchPool.Get().(*Batch) }

func putBatch(b *Batch) {
	if b.b.Len() > 64<<10 {
		return
	}
	b.Reset()
	batchPool.Put(b)
}

// Apply commits a batch atomically. A nil opts means Sync. The batch may be
// reused after Apply returns.
func (d *DB) Apply(b *Batch, opts *WriteOptions) error {
	if b.err != nil {
		return b.err
	}
	if b.b.Empty() {
		return nil
	}
	sync := opts == nil || opts.Sync
	repr := b.b.Repr()
	if len(repr) > maxBatchSize {
		return base.InvalidArgumentf("batch of %d bytes exceeds the %d-byte limit", len(repr), maxBatchSize)
	}
	count := b.b.Count()

	d.commitMu.Lock()
	mem, err := d.makeRoomForWrite(batchArenaBytes(repr, count))
	if err != nil {
		d.commitMu.Unlock()
		return err
	}
	seq := d.lastSeq + 1
	b.b.SetSeqNum(seq)
	w := d.wal
	end, err := w.append(repr, sync)
	if err != nil {
		d.commitMu.Unlock()
		d.setBackgroundError(err)
		return writeError(err)
	}
	if err := mem.apply(repr, seq); err != nil {
		// The record is in the WAL but not the memtable: the in-memory state
		// no longer matches the log. Refuse further writes.
		d.commitMu.Unlock()
		err = fmt.Errorf("engine: %w", err)
		d.setBackgroundError(err)
		return err
	}
	d.lastSeq += base.SeqNum(count)
	d.visibleSeq.Store(uint64(d.lastSeq))
	if !mem.spareAsked && mem.t.Size() >= mem.t.Capacity()/2 {
		// Half full: have the next memtable's arena ready before the
		// rotation needs it (memPool). d.mu.memSize changes only under
		// commitMu, which is held.
		mem.spareAsked = true
		d.memPool.prepare(min(2*d.mu.memSize, d.opts.MemTableSize))
	}
	d.commitMu.Unlock()

	d.m.writes.Add(uint64(count))
	d.m.batches.Add(1)
	d.m.bytesIn.Add(uint64(len(repr)))
	if sync {
		if err := w.waitSynced(end); err != nil {
			d.setBackgroundError(err)
			return writeError(err)
		}
	}
	return nil
}

// makeRoomForWrite returns the memtable to insert into, rotating it (and the
// WAL) when the batch does not fit, and stalling while too many memtables
// wait for flushing or L0 holds too many tables. Called with commitMu.
func (d *DB) makeRoomForWrite(need int) (*memTable, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var stallStart time.Time
	defer func() {
		if !stallStart.IsZero() {
			d.m.stallDuration.Add(uint64(time.Since(stallStart)))
		}
	}()
	for {
		if d.mu.closed {
			return nil, ErrClosed
		}
		if d.opts.ReadOnly {
			return nil, ErrReadOnly
		}
		if d.mu.bgErr != nil {
			return nil, d.mu.bgErr
		}
		if d.mu.diskFull != nil {
			return nil, diskFullError(d.mu.diskFull, whatResume)
		}
		mem := d.mu.mem
		if mem.t.Available() >= need {
			return mem, nil
		}
		// The memtable must rotate. Stall at the hard limits.
		if len(d.mu.imm)+1 >= d.opts.MemTableStopWritesThreshold {
			if err := d.mu.flushRetry.err; err != nil {
				// Flushes fail for lack of space: waiting could last until
				// an operator frees space; fail the write instead.
				return nil, diskFullError(err, whatStall)
			}
			if stallStart.IsZero() {
				stallStart = time.Now()
				d.m.stallsMemtable.Add(1)
				d.opts.Logger.Warn("write stall: too many memtables waiting for flush", "memtables", len(d.mu.imm)+1)
			}
			d.mu.cond.Wait()
			continue
		}
		if l0 := d.l0Count(); l0 >= d.opts.L0StopWritesThreshold && !d.opts.DisableAutomaticCompactions {
			if err := d.mu.compactRetry.err; err != nil {
				// Compactions fail for lack of space: L0 cannot shrink
				// until an operator frees space. Flushes that still fit
				// keep the DB writable meanwhile (a replicated state
				// machine must go on applying the few entries it gets
				// while its clients' writes are refused), with L0 up to
				// twice its stop threshold (reads slow down, and no
				// further: past that the write fails). The memtables
				// queued for flushing count: each becomes an L0 table.
				if l0+len(d.mu.imm) >= 2*d.opts.L0StopWritesThreshold {
					return nil, diskFullError(err, whatStall)
				}
				if err := d.rotateLocked(need); err != nil {
					return nil, err
				}
				continue
			}
			if stallStart.IsZero() {
				stallStart = time.Now()
				d.m.stallsL0.Add(1)
				d.opts.Logger.Warn("write stall: too many L0 tables", "l0_tables", l0)
			}
			d.maybeScheduleCompactionLocked()
			d.mu.cond.Wait()
			continue
		}
		if mem.t.Empty() {
			// An empty memtable that is too small for this batch: replace it
			// with a larger one on the same WAL.
			d.mu.mem = newMemTable(max(d.mu.memSize, need), mem.logNum)
			d.updateReadStateLocked(nil)
			continue
		}
		if err := d.rotateLocked(need); err != nil {
			return nil, err
		}
	}
}

// rotateLocked switches to a new WAL and memtable (with room for at least
// need bytes) and queues the old memtable for flushing. Called with commitMu
// and mu held; it releases mu while creating the WAL file.
//
// Memtables start small and double at each rotation up to MemTableSize, as
// Pebble's do: a small database uses little memory, and the first flushes
// of a bulk load come from small, cache-friendly skiplists.
func (d *DB) rotateLocked(need int) error {
	d.mu.memSize = min(2*d.mu.memSize, d.opts.MemTableSize)
	memSize := max(d.mu.memSize, need)
	num := d.vs.NewFileNum()
	d.mu.Unlock()
	// The old WAL must be completely durable before the next one exists:
	// recovery treats a torn tail in any WAL but the newest as corruption,
	// and a crash must never keep a later write while losing an earlier one.
	err := d.wal.close()
	var newWAL *walWriter
	if err == nil {
		newWAL, err = d.createWAL(num)
	}
	d.mu.Lock()
	if err != nil {
		// Writes cannot continue without a WAL: a lack of space waits for
		// Resume, anything else is fatal.
		d.noteFailureLocked(err)
		if vfs.IsNoSpace(err) {
			return diskFullError(err, whatResume)
		}
		return err
	}
	d.wal = newWAL
	d.mu.imm = append(d.mu.imm, d.mu.mem)
	d.mu.mem = d.memPool.get(num, memSize)
	d.updateReadStateLocked(nil)
	d.m.memtableRotations.Add(1)
	d.maybeScheduleFlushLocked()
	return nil
}

// createWAL creates WAL file num, reserves space for it and makes its
// directory entry durable.
func (d *DB) createWAL(num base.FileNum) (*walWriter, error) {
	name := d.path(base.FileTypeLog, num)
	f, err := d.fs.Create(name)
	if err != nil {
		_ = d.fs.Remove(name)
		return nil, fmt.Errorf("engine: creating WAL %s: %w", name, err)
	}
	if d.opts.WALPreallocateBytes > 0 {
		_ = f.Preallocate(0, d.opts.WALPreallocateBytes) // a hint; fails on a full disk
	}
	if err := vfs.SyncDir(d.fs, d.dir); err != nil {
		// The WAL was never written: removing it (and the space it
		// reserved) is safe, and if the removal is lost in a crash
		// recovery finds an empty newest WAL.
		_ = f.Close()
		_ = d.fs.Remove(name)
		return nil, fmt.Errorf("engine: syncing directory %s after creating %s: %w", d.dir, name, err)
	}
	return newWALWriter(f, name, num, d.m, d.setBackgroundError, d.opts.Encryption, d.walKeys.tracker(num)), nil
}

func (d *DB) l0Count() int {
	return d.rs.version.NumFiles(0)
}

// loadReadState returns the current read state with a reference, or nil
// after Close.
func (d *DB) loadReadState() *readState {
	d.rsMu.RLock()
	rs := d.rs
	if rs != nil {
		rs.ref()
	}
	d.rsMu.RUnlock()
	return rs
}

// updateReadStateLocked publishes a new read state from the memtables and v
// (or the VersionSet's current Version when v is nil). Called with mu held.
func (d *DB) updateReadStateLocked(v *manifest.Version) {
	if v == nil {
		v = d.vs.Current()
	}
	rs := &readState{version: v}
	rs.refs.Store(1)
	rs.mems = make([]*memTable, 0, len(d.mu.imm)+1)
	rs.mems = append(rs.mems, d.mu.mem)
	for i := len(d.mu.imm) - 1; i >= 0; i-- {
		rs.mems = append(rs.mems, d.mu.imm[i])
	}
	for _, m := range rs.mems {
		m.ref()
	}
	d.rsMu.Lock()
	old := d.rs
	d.rs = rs
	d.rsMu.Unlock()
	if old != nil {
		old.unref()
	}
}

// setBackgroundError records a failure of the WAL or of the commit
// pipeline: a lack of space puts the engine in the disk-full state (writes
// fail with ErrDiskFull until Resume); any other failure is fatal, and
// later writes fail with it.
func (d *DB) setBackgroundError(err error) {
	if err == nil || errors.Is(err, ErrClosed) {
		return
	}
	d.mu.Lock()
	d.noteFailureLocked(err)
	d.mu.Unlock()
}

// noteFailureLocked is setBackgroundError with mu held.
func (d *DB) noteFailureLocked(err error) {
	switch {
	case errors.Is(err, ErrDiskFull):
		// Already recorded when it was made.
	case vfs.IsNoSpace(err):
		d.noteDiskFullLocked(err)
	case d.mu.bgErr == nil:
		d.mu.bgErr = fatalError(err)
		d.opts.Logger.Error("engine stopped accepting writes after a failure", "err", err)
	}
	d.mu.cond.Broadcast()
}

// fatalError is err as the sticky error of a failure that freeing space
// does not undo: if err says the disk was full (an fsync that reported
// ENOSPC), the result no longer matches vfs.IsNoSpace, so that an owner
// does not wait for space and call Resume in vain.
func fatalError(err error) error {
	if vfs.IsNoSpace(err) {
		return fmt.Errorf("%v; this cannot be undone by freeing space: reopen the database", err)
	}
	return err
}

// writeError is the error of a write whose WAL record failed: ErrDiskFull
// for a lack of space.
func writeError(err error) error {
	if vfs.IsNoSpace(err) && !errors.Is(err, ErrDiskFull) {
		return diskFullError(err, whatResume)
	}
	return err
}

// Close flushes nothing (the WAL holds unflushed writes), waits for
// background work to stop, syncs and closes the WAL, and releases the
// directory lock. Iterators and snapshots must be closed first; using them
// afterwards is an error.
func (d *DB) Close() error {
	// Mark closed first so that a writer stalled inside makeRoomForWrite
	// (holding commitMu) wakes up and leaves.
	d.mu.Lock()
	if d.mu.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	d.mu.closed = true
	for _, mc := range d.mu.manual {
		mc.done <- ErrClosed
	}
	d.mu.manual = nil
	d.mu.cond.Broadcast()
	d.mu.Unlock()
	d.commitMu.Lock()
	defer d.commitMu.Unlock()
	close(d.closing)
	d.bgWG.Wait()
	d.memPool.wg.Wait() // a spare being prepared

	var err error
	if d.wal != nil {
		err = d.wal.close()
	}
	d.mu.Lock()
	bgErr := d.mu.bgErr
	if bgErr == nil && d.mu.diskFull != nil {
		bgErr = diskFullError(d.mu.diskFull, "the last writes before the disk filled are not durable")
	}
	d.mu.Unlock()
	d.rsMu.Lock()
	rs := d.rs
	d.rs = nil
	d.rsMu.Unlock()
	if rs != nil {
		rs.unref()
	}
	// Delete what became obsolete while shutting down.
	if !d.opts.ReadOnly {
		d.deleteObsoleteFiles()
	}
	if cerr := d.vs.Close(); err == nil {
		err = cerr
	}
	d.tables.close()
	if lerr := d.lock.Close(); err == nil {
		err = lerr
	}
	if err == nil && bgErr != nil {
		err = bgErr
	}
	return err
}

// Options returns a copy of the options the DB runs with (defaults filled
// in).
func (d *DB) Options() *Options {
	o := *d.opts
	return &o
}

// Dir returns the directory the DB was opened in.
func (d *DB) Dir() string { return d.dir }
