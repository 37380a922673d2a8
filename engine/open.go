package engine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/batch"
	"github.com/kayadb/kayadb/internal/lsm/cache"
	"github.com/kayadb/kayadb/internal/lsm/manifest"
	"github.com/kayadb/kayadb/internal/record"
	"github.com/kayadb/kayadb/internal/vfs"
)

// RecoveryReport says what Open found and did (or, from CheckRecovery, what
// it would do). Field names in JSON are stable.
type RecoveryReport struct {
	// Created is true when Open created a new database.
	Created bool `json:"created"`
	// DryRun is true for reports from CheckRecovery: nothing was changed.
	DryRun bool `json:"dry_run"`
	// Manifest is the MANIFEST named by CURRENT.
	Manifest string `json:"manifest"`
	// ManifestRecords is the number of version edits replayed.
	ManifestRecords int `json:"manifest_records_replayed"`
	// ManifestTornTail describes an unfinished last MANIFEST record (an edit
	// that was never acknowledged), if any.
	ManifestTornTail *TailReport `json:"manifest_torn_tail,omitempty"`
	// LiveTables is the number of tables the MANIFEST lists.
	LiveTables int `json:"live_sstable_count"`
	// WALs lists the write-ahead logs replayed, oldest first.
	WALs []WALReport `json:"wals"`
	// RecordsReplayed is the number of batches replayed from WALs.
	RecordsReplayed int `json:"wal_records_replayed"`
	// WALTruncatedBytes is the size of the torn tail dropped from the newest
	// WAL (0 when it ended cleanly).
	WALTruncatedBytes int64 `json:"wal_truncated_bytes"`
	// LastSeq is the largest sequence number after recovery.
	LastSeq uint64 `json:"last_sequence"`
	// TablesFlushed is the number of L0 tables written from replayed WALs.
	TablesFlushed int `json:"tables_flushed"`
	// TempFilesRemoved lists unfinished files deleted (*.tmp).
	TempFilesRemoved []string `json:"tmp_files_removed"`
	// ObsoleteFilesRemoved lists files no longer referenced that were
	// deleted: flushed WALs, old MANIFESTs, tables left by an interrupted
	// flush or compaction.
	ObsoleteFilesRemoved []string `json:"obsolete_files_removed"`
	// Warnings are human-readable notes about anything unusual.
	Warnings []string `json:"warnings"`
}

// WALReport describes one replayed WAL.
type WALReport struct {
	File    string      `json:"file"`
	Records int         `json:"records"`
	Bytes   int64       `json:"bytes"`
	Torn    *TailReport `json:"torn_tail,omitempty"`
	keys    manifest.KeyUse
}

// TailReport describes a torn (unfinished) log tail.
type TailReport struct {
	// Offset is where the last complete record ends; the log is cut there.
	Offset int64 `json:"offset"`
	// DroppedBytes is the number of bytes after Offset.
	DroppedBytes int64 `json:"dropped_bytes"`
	// Reason says what was found at Offset.
	Reason string `json:"reason"`
}

// Open opens (creating if needed) the database in dir. A nil opts uses the
// defaults. After a crash, Open recovers: it replays the WALs, drops a torn
// tail of the newest WAL, removes unfinished files and reports what it did in
// RecoveryReport. Damaged data anywhere else fails Open with an error that
// matches ErrCorruption and names the file and offset.
func Open(dir string, opts *Options) (*DB, error) {
	o := opts.EnsureDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	d, err := open(dir, o)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// lockDir takes dir's LOCK, creating dir first when create is set.
func lockDir(fs vfs.FS, dir string, create bool) (io.Closer, error) {
	if create {
		if err := vfs.MkdirAllSync(fs, dir, 0o700); err != nil {
			return nil, fmt.Errorf("engine: creating directory %s: %w", dir, err)
		}
	}
	lock, err := fs.Lock(filepath.Join(dir, base.LockFileName))
	if err != nil {
		if errors.Is(err, vfs.ErrLocked) {
			return nil, fmt.Errorf("%w: %s is in use by another process (%v); stop that process or use another directory",
				ErrLocked, dir, err)
		}
		return nil, fmt.Errorf("engine: locking %s: %w", dir, err)
	}
	return lock, nil
}

func open(dir string, o *Options) (_ *DB, retErr error) {
	fs := o.FS
	// Decide whether a database exists before touching the directory, so
	// that an Open that must not create one leaves no trace.
	exists, err := dbExists(fs, dir)
	if err != nil {
		return nil, err
	}
	switch {
	case !exists && (o.ErrorIfNotExists || o.ReadOnly):
		return nil, fmt.Errorf("%w: no database in %s (CURRENT is missing)", base.ErrNotFound, dir)
	case exists && o.ErrorIfExists:
		return nil, base.InvalidArgumentf("a database already exists in %s", dir)
	}
	lock, err := lockDir(fs, dir, !o.ReadOnly)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			_ = lock.Close()
		}
	}()
	d := &DB{
		dir:     dir,
		opts:    o,
		fs:      fs,
		lock:    lock,
		m:       &metrics{},
		workCh:  make(chan struct{}, 1),
		flushCh: make(chan struct{}, 1),
		cleanCh: make(chan struct{}, 1),
		closing: make(chan struct{}),
	}
	d.mu.cond.L = &d.mu.Mutex
	d.memPool = &memPool{size: o.MemTableSize, poison: debugPoisonArenas.Load()}
	d.cache = o.Cache
	if d.cache == nil {
		d.cache = cache.New(max(o.CacheSize, 0))
	}
	d.cacheID = d.cache.NewID()
	d.tables = newTableCache(fs, dir, d.cache, d.cacheID, o.MaxOpenFiles, d.m, o.Encryption)
	mopts := manifest.Options{FS: fs, Dir: dir, MaxManifestBytes: o.MaxManifestBytes, OnObsolete: d.onObsoleteTables, Sealer: o.Encryption}

	// Re-check under the lock: another process may have created it.
	if exists, err = dbExists(fs, dir); err != nil {
		return nil, err
	}
	rep := &d.recovery
	rep.TempFilesRemoved, rep.ObsoleteFilesRemoved, rep.Warnings, rep.WALs = []string{}, []string{}, []string{}, []WALReport{}
	rep.DryRun = o.ReadOnly
	switch {
	case !exists && o.ReadOnly:
		return nil, fmt.Errorf("%w: no database in %s (CURRENT is missing)", base.ErrNotFound, dir)
	case !exists:
		if err := prepareNewDir(fs, dir); err != nil {
			return nil, err
		}
		if err := syncParent(fs, dir); err != nil {
			return nil, err
		}
		d.vs, err = manifest.Create(mopts)
		if err != nil {
			return nil, err
		}
		rep.Created = true
	default:
		var lr *manifest.LoadReport
		d.vs, lr, err = manifest.Load(mopts)
		if err != nil {
			return nil, err
		}
		rep.Manifest, rep.ManifestRecords = lr.Manifest, lr.Records
		if t := lr.TornTail; t != nil {
			rep.ManifestTornTail = &TailReport{Offset: t.Offset, DroppedBytes: t.Size - t.Offset, Reason: t.Reason}
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("MANIFEST %s ended in an unfinished edit (%d bytes ignored)", lr.Manifest, t.Size-t.Offset))
		}
	}
	defer func() {
		if retErr != nil {
			_ = d.vs.Close()
			d.tables.close()
		}
	}()

	plan, err := planRecovery(fs, dir, d.vs, rep)
	if err != nil {
		return nil, err
	}
	if err := checkKeys(fs, dir, d.vs, o.Encryption); err != nil {
		return nil, err
	}
	if o.ReadOnly {
		return d.openReadOnly(plan)
	}
	// Remove unfinished and unreferenced files before writing anything new.
	for _, p := range plan.remove {
		if err := fs.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("engine: removing %s: %w", p, err)
		}
	}

	lastSeq := d.vs.LastSeq()
	var newFiles []*manifest.FileMetadata
	mem := newMemTable(o.MemTableSize, 0)
	flushMem := func() error {
		if mem.t.Empty() {
			return nil
		}
		metas, err := d.writeTables([]base.InternalIterator{mem.t.NewIter()}, nil, false, 0, 1<<62, nil, nil, nil)
		if err != nil {
			return err
		}
		newFiles = append(newFiles, metas...)
		rep.TablesFlushed += len(metas)
		mem = newMemTable(o.MemTableSize, 0)
		return nil
	}
	lastSeq, err = replayWALs(fs, dir, plan, rep, lastSeq, "dropped", o.Encryption, func(repr []byte, seq base.SeqNum, count uint32) error {
		need := batchArenaBytes(repr, count)
		if mem.t.Available() < need {
			if err := flushMem(); err != nil {
				return err
			}
			if mem.t.Available() < need {
				mem = newMemTable(need+4096, 0)
			}
		}
		return mem.apply(repr, seq)
	})
	if err != nil {
		return nil, err
	}
	if err := flushMem(); err != nil {
		return nil, err
	}

	// Start a fresh WAL, then record the recovered tables and the new log
	// number in a fresh MANIFEST. Until that edit is durable the old WALs
	// stay authoritative, so a crash here just repeats recovery.
	logNum := d.vs.NewFileNum()
	d.wal, err = d.createWAL(logNum)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			_ = d.wal.close()
		}
	}()
	edit := &manifest.VersionEdit{LogNumber: logNum, HasLogNumber: true, LastSeq: lastSeq, HasLastSeq: true}
	for _, m := range newFiles {
		edit.NewFiles = append(edit.NewFiles, manifest.NewFile{Level: 0, Meta: m})
	}
	if err := d.vs.LogAndApply(edit); err != nil {
		return nil, err
	}
	if err := d.vs.ProveDurable(); err != nil {
		return nil, err
	}
	for _, num := range plan.logs {
		p := d.path(base.FileTypeLog, num)
		if err := fs.Remove(p); err == nil {
			rep.ObsoleteFilesRemoved = append(rep.ObsoleteFilesRemoved, filepath.Base(p))
		}
	}
	countLiveTables(d.vs, rep)

	d.lastSeq = lastSeq
	d.visibleSeq.Store(uint64(lastSeq))
	d.mu.memSize = min(initialMemTableSize, o.MemTableSize)
	d.mu.mem = d.memPool.get(logNum, d.mu.memSize)
	d.mu.Lock()
	d.updateReadStateLocked(nil)
	d.mu.Unlock()

	d.bgWG.Add(3)
	go d.flushLoop()
	go d.compactLoop()
	go d.cleanLoop()
	d.mu.Lock()
	d.maybeScheduleCompactionLocked()
	d.mu.Unlock()
	if len(rep.Warnings) > 0 {
		for _, w := range rep.Warnings {
			o.Logger.Warn("recovery", "note", w)
		}
	}
	o.Logger.Info("opened database", "dir", dir, "created", rep.Created, "wal_records_replayed", rep.RecordsReplayed,
		"live_tables", rep.LiveTables, "last_seq", rep.LastSeq)
	return d, nil
}

// dbExists reports whether dir holds a database (a CURRENT file).
func dbExists(fs vfs.FS, dir string) (bool, error) {
	_, err := fs.Stat(filepath.Join(dir, base.CurrentFileName))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("engine: checking %s: %w", dir, err)
}

// openReadOnly finishes an Open with ReadOnly set: WALs are replayed into
// memtables that stay in memory; nothing is written.
func (d *DB) openReadOnly(plan *recoveryPlan) (*DB, error) {
	rep := &d.recovery
	lastSeq := d.vs.LastSeq()
	var mems []*memTable
	mem := newMemTable(d.opts.MemTableSize, 0)
	walsBefore := len(rep.WALs)
	lastSeq, err := replayWALs(d.fs, d.dir, plan, rep, lastSeq, "not replayed", d.opts.Encryption, func(repr []byte, seq base.SeqNum, count uint32) error {
		need := batchArenaBytes(repr, count)
		if mem.t.Available() < need {
			if !mem.t.Empty() {
				mems = append(mems, mem)
			}
			mem = newMemTable(max(d.opts.MemTableSize, need), 0)
		}
		return mem.apply(repr, seq)
	})
	if err != nil {
		return nil, err
	}
	for i, wr := range rep.WALs[walsBefore:] {
		d.walKeys.set(plan.logs[i], wr.keys) // a read-only DB keeps its WALs
	}
	countLiveTables(d.vs, rep)
	d.lastSeq = lastSeq
	d.visibleSeq.Store(uint64(lastSeq))
	d.mu.Lock()
	d.mu.mem = mem
	d.mu.imm = mems
	d.updateReadStateLocked(nil)
	d.mu.Unlock()
	return d, nil
}

// prepareNewDir checks a directory without CURRENT before a database is
// created in it. Leftovers of an interrupted creation (MANIFEST files and
// temp files, written before CURRENT existed, so before any write could have
// been acknowledged) are removed. Any WAL or table means a database that
// lost its CURRENT file: that is damage, not a new database.
func prepareNewDir(fs vfs.FS, dir string) error {
	names, err := fs.List(dir)
	if err != nil {
		return fmt.Errorf("engine: listing %s: %w", dir, err)
	}
	var leftovers []string
	for _, n := range names {
		ft, _, ok := base.ParseFilename(n)
		if !ok || ft == base.FileTypeLock {
			continue
		}
		if ft == base.FileTypeManifest || ft == base.FileTypeTemp {
			leftovers = append(leftovers, n)
			continue
		}
		return base.CorruptionErrorf(filepath.Join(dir, base.CurrentFileName), -1,
			"CURRENT is missing but %s holds engine file %s; the database is damaged (restore it from a backup or checkpoint)", dir, n)
	}
	for _, n := range leftovers {
		if err := fs.Remove(filepath.Join(dir, n)); err != nil {
			return fmt.Errorf("engine: removing leftover %s of an interrupted creation: %w", n, err)
		}
	}
	return nil
}

// syncParent makes a newly created directory's entry durable.
func syncParent(fs vfs.FS, dir string) error {
	parent := filepath.Dir(filepath.Clean(dir))
	if err := vfs.SyncDir(fs, parent); err != nil {
		return fmt.Errorf("engine: syncing %s: %w", parent, err)
	}
	return nil
}

// recoveryPlan lists what recovery must replay and remove.
type recoveryPlan struct {
	logs   []base.FileNum // WALs to replay, ascending
	remove []string       // paths to delete before writing anything
}

// planRecovery classifies the directory's files against the loaded
// MANIFEST, verifies every live table is present with its recorded size, and
// fills in the report. It changes nothing.
func planRecovery(fs vfs.FS, dir string, vs *manifest.VersionSet, rep *RecoveryReport) (*recoveryPlan, error) {
	names, err := fs.List(dir)
	if err != nil {
		return nil, fmt.Errorf("engine: listing %s: %w", dir, err)
	}
	sort.Strings(names)
	v := vs.Current()
	defer v.Unref()
	live := make(map[base.FileNum]*manifest.FileMetadata)
	for _, files := range v.Levels {
		for _, f := range files {
			live[f.FileNum] = f
		}
	}
	plan := &recoveryPlan{}
	logNum := vs.LogNumber()
	current := rep.Manifest
	for _, n := range names {
		ft, num, ok := base.ParseFilename(n)
		if !ok {
			continue
		}
		p := filepath.Join(dir, n)
		switch ft {
		case base.FileTypeTemp:
			plan.remove = append(plan.remove, p)
			rep.TempFilesRemoved = append(rep.TempFilesRemoved, n)
		case base.FileTypeLog:
			vs.MarkFileNumUsed(num)
			if num >= logNum {
				plan.logs = append(plan.logs, num)
			} else {
				plan.remove = append(plan.remove, p)
				rep.ObsoleteFilesRemoved = append(rep.ObsoleteFilesRemoved, n)
			}
		case base.FileTypeTable:
			vs.MarkFileNumUsed(num)
			if _, ok := live[num]; !ok {
				plan.remove = append(plan.remove, p)
				rep.ObsoleteFilesRemoved = append(rep.ObsoleteFilesRemoved, n)
			}
		case base.FileTypeManifest:
			vs.MarkFileNumUsed(num)
			if n != current && current != "" {
				plan.remove = append(plan.remove, p)
				rep.ObsoleteFilesRemoved = append(rep.ObsoleteFilesRemoved, n)
			}
		}
	}
	sort.Slice(plan.logs, func(i, j int) bool { return plan.logs[i] < plan.logs[j] })
	nums := make([]base.FileNum, 0, len(live))
	for n := range live {
		nums = append(nums, n)
	}
	sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
	for _, n := range nums {
		f := live[n]
		p := filepath.Join(dir, base.MakeFilename(base.FileTypeTable, n))
		st, err := fs.Stat(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, base.CorruptionErrorf(p, -1, "table listed in MANIFEST %s is missing", current)
			}
			return nil, fmt.Errorf("engine: checking %s: %w", p, err)
		}
		if uint64(st.Size()) != f.Size {
			return nil, base.CorruptionErrorf(p, -1, "table is %d bytes but MANIFEST %s records %d", st.Size(), current, f.Size)
		}
	}
	return plan, nil
}

// replayWAL reads one WAL and calls apply for each batch. A torn tail is
// accepted (and reported) only in the newest WAL; anywhere else it is
// corruption, because older WALs were synced completely before the next one
// started.
func replayWAL(fs vfs.FS, path string, num base.FileNum, last bool, sealer *crypt.Sealer,
	apply func(repr []byte, seq base.SeqNum, count uint32) error) (WALReport, error) {
	rep := WALReport{File: filepath.Base(path)}
	f, err := fs.Open(path)
	if err != nil {
		return rep, fmt.Errorf("engine: opening WAL %s: %w", path, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil {
		rep.Bytes = st.Size()
	}
	r := record.NewReader(f, uint64(num), path)
	r.SetSealer(sealer)
	var prevEnd base.SeqNum
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return rep, nil
		}
		var torn *record.TornTailError
		if errors.As(err, &torn) {
			if !last {
				return rep, base.CorruptionErrorf(path, torn.Offset,
					"WAL is not the newest but ends in a torn record (%s); a later WAL depends on it", torn.Reason)
			}
			rep.Torn = &TailReport{Offset: torn.Offset, DroppedBytes: torn.Size - torn.Offset, Reason: torn.Reason}
			return rep, nil
		}
		if err != nil {
			return rep, err
		}
		if len(rec) == 0 {
			// A sync marker written when the WAL was closed.
			continue
		}
		seq, count, err := batch.Validate(rec)
		if err != nil {
			return rep, base.WithFile(err, path, r.LastRecordOffset())
		}
		if count == 0 {
			return rep, base.CorruptionErrorf(path, r.LastRecordOffset(), "empty batch in WAL")
		}
		if seq <= prevEnd {
			return rep, base.CorruptionErrorf(path, r.LastRecordOffset(),
				"batch sequence number %d does not follow the previous batch's last %d", seq, prevEnd)
		}
		rep.keys.Add(r)
		if apply != nil {
			if err := apply(rec, seq, count); err != nil {
				return rep, err
			}
		}
		prevEnd = seq + base.SeqNum(count) - 1
		rep.Records++
	}
}

// lockExisting takes the lock of the database in dir for a read-only
// check (CheckRecovery, VerifyEncryption): ErrNotFound when dir holds no
// database, ErrLocked when a process has it open.
func lockExisting(fs vfs.FS, dir string) (io.Closer, error) {
	if _, err := fs.Stat(filepath.Join(dir, base.CurrentFileName)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: no database in %s (CURRENT is missing)", base.ErrNotFound, dir)
		}
		return nil, err
	}
	return lockDir(fs, dir, false)
}

// CheckRecovery reports what Open would do to recover dir without changing
// anything: it reads CURRENT, the MANIFEST and every WAL, and checks that
// every live table is present. It takes the directory lock while it reads,
// so it fails with ErrLocked when a process has the database open.
func CheckRecovery(dir string, opts *Options) (*RecoveryReport, error) {
	o := opts.EnsureDefaults()
	fs := o.FS
	lock, err := lockExisting(fs, dir)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	rep := &RecoveryReport{DryRun: true, TempFilesRemoved: []string{}, ObsoleteFilesRemoved: []string{}, Warnings: []string{}, WALs: []WALReport{}}
	vs, lr, err := manifest.Load(manifest.Options{FS: fs, Dir: dir, Sealer: o.Encryption})
	if err != nil {
		return nil, err
	}
	rep.Manifest, rep.ManifestRecords = lr.Manifest, lr.Records
	if t := lr.TornTail; t != nil {
		rep.ManifestTornTail = &TailReport{Offset: t.Offset, DroppedBytes: t.Size - t.Offset, Reason: t.Reason}
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("MANIFEST %s ends in an unfinished edit (%d bytes would be ignored)", lr.Manifest, t.Size-t.Offset))
	}
	plan, err := planRecovery(fs, dir, vs, rep)
	if err != nil {
		return nil, err
	}
	if err := checkKeys(fs, dir, vs, o.Encryption); err != nil {
		return nil, err
	}
	if _, err := replayWALs(fs, dir, plan, rep, vs.LastSeq(), "would be dropped", o.Encryption, nil); err != nil {
		return nil, err
	}
	countLiveTables(vs, rep)
	return rep, nil
}

// replayWALs replays every WAL of the plan in order, calling apply for each
// batch, and records what it found in rep. verb describes what happens to a
// torn tail ("dropped", "not replayed", "would be dropped"). It returns the
// largest sequence number seen (at least start).
func replayWALs(fs vfs.FS, dir string, plan *recoveryPlan, rep *RecoveryReport, start base.SeqNum, verb string, sealer *crypt.Sealer,
	apply func(repr []byte, seq base.SeqNum, count uint32) error) (base.SeqNum, error) {
	lastSeq := start
	for i, num := range plan.logs {
		wr, err := replayWAL(fs, filepath.Join(dir, base.MakeFilename(base.FileTypeLog, num)), num, i == len(plan.logs)-1, sealer,
			func(repr []byte, seq base.SeqNum, count uint32) error {
				lastSeq = max(lastSeq, seq+base.SeqNum(count)-1)
				if apply == nil {
					return nil
				}
				return apply(repr, seq, count)
			})
		if err != nil {
			return 0, err
		}
		rep.WALs = append(rep.WALs, wr)
		rep.RecordsReplayed += wr.Records
		if wr.Torn != nil {
			rep.WALTruncatedBytes += wr.Torn.DroppedBytes
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("WAL %s ends in a torn write at offset %d: %d bytes %s (%s)",
				wr.File, wr.Torn.Offset, wr.Torn.DroppedBytes, verb, wr.Torn.Reason))
		}
	}
	rep.LastSeq = uint64(lastSeq)
	return lastSeq, nil
}

// checkKeys checks, at open, that every live table's key is in the keyring
// and opens (see checkTableKeys); the MANIFEST was opened by Load and the
// WALs are opened by their replay.
func checkKeys(fs vfs.FS, dir string, vs *manifest.VersionSet, sealer *crypt.Sealer) error {
	v := vs.Current()
	if sealer == nil {
		// Without a key nothing is read: an encrypted table implies a
		// sealed MANIFEST (every open with a key writes a new one), which
		// Load already refused; the tables are plain.
		defer v.Unref()
		for _, lf := range v.Levels {
			for _, f := range lf {
				f.Encrypted, f.KeyKnown = false, true
			}
		}
		return nil
	}
	defer v.Unref()
	_, err := checkTableKeys(fs, dir, v, sealer, false)
	return err
}

// countLiveTables records the number of tables of vs's current Version.
func countLiveTables(vs *manifest.VersionSet, rep *RecoveryReport) {
	v := vs.Current()
	for _, files := range v.Levels {
		rep.LiveTables += len(files)
	}
	v.Unref()
}

// RecoveryReport returns what Open found and did.
func (d *DB) RecoveryReport() RecoveryReport { return d.recovery }
