package manifest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/record"
	"github.com/kayadb/kayadb/internal/vfs"
)

// Options configures a VersionSet.
type Options struct {
	FS  vfs.FS
	Dir string
	// MaxManifestBytes: when the MANIFEST grows past this size, the next
	// edit starts a new MANIFEST holding a snapshot.
	MaxManifestBytes int64
	// OnObsolete receives tables that no Version references any more.
	OnObsolete func([]*FileMetadata)
	// Sealer, when set, seals every MANIFEST record written (under its
	// active key at the time of the write) and opens sealed records when
	// loading. Nil: records are written plain, and a sealed record fails
	// Load with an error naming the file, offset and key id.
	Sealer *crypt.Sealer
}

// VersionSet owns the current Version and the MANIFEST that records it.
//
// Locking: logMu serializes LogAndApply (it is held across the MANIFEST write
// and sync, which is its purpose); mu guards current and is never held
// across I/O. Lock order: logMu before mu.
type VersionSet struct {
	opts Options

	nextFileNum atomic.Uint64

	logMu          sync.Mutex
	manifest       vfs.File
	manifestW      *record.Writer
	manifestNum    base.FileNum
	logNum         base.FileNum
	lastSeq        base.SeqNum
	err            error // sticky: after a failed MANIFEST write the set refuses edits
	manifestWrites int64
	// unproven is true while the last record of the MANIFEST has no synced
	// record after it. See ProveDurable.
	unproven bool
	// keys counts the keys of the records of the MANIFEST being written
	// (after Load: of the one loaded, until the first edit replaces it).
	keys KeyUse

	mu struct {
		sync.Mutex
		current *Version
	}
}

// LoadReport describes what Load found.
type LoadReport struct {
	// Manifest is the MANIFEST file name CURRENT pointed to.
	Manifest string
	// Records is the number of edits replayed.
	Records int
	// TornTail is non-nil when the MANIFEST ended in a partial record (an
	// edit that was never acknowledged); the bytes are ignored.
	TornTail *record.TornTailError
	// Keys says which keys sealed the MANIFEST's records.
	Keys KeyUse
}

// KeyUse says which encryption keys a log file's records use.
type KeyUse struct {
	// Plain counts records written without encryption.
	Plain int
	// Sealed counts sealed records per key id.
	Sealed map[crypt.KeyID]int
}

// Add counts one record read by r.
func (u *KeyUse) Add(r *record.Reader) {
	id, sealed := r.LastKey()
	if !sealed {
		u.Plain++
		return
	}
	if u.Sealed == nil {
		u.Sealed = map[crypt.KeyID]int{}
	}
	u.Sealed[id]++
}

// Create initializes a VersionSet for an empty directory and writes its first
// MANIFEST and CURRENT.
func Create(opts Options) (*VersionSet, error) {
	vs := newVersionSet(opts)
	v, err := Apply(nil, opts.OnObsolete)
	if err != nil {
		return nil, err
	}
	vs.nextFileNum.Store(1)
	vs.install(v)
	if err := vs.LogAndApply(&VersionEdit{}); err != nil {
		return nil, err
	}
	return vs, nil
}

func newVersionSet(opts Options) *VersionSet {
	if opts.MaxManifestBytes <= 0 {
		opts.MaxManifestBytes = 64 << 20
	}
	return &VersionSet{opts: opts}
}

// ReadCurrent returns the MANIFEST file name that CURRENT names.
func ReadCurrent(fs vfs.FS, dir string) (string, error) {
	path := filepath.Join(dir, base.CurrentFileName)
	f, err := fs.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", fmt.Errorf("manifest: reading %s: %w", path, err)
	}
	s := string(b)
	if !strings.HasSuffix(s, "\n") {
		return "", base.CorruptionErrorf(path, 0, "CURRENT does not end with a newline (content %q)", s)
	}
	name := strings.TrimSuffix(s, "\n")
	if ft, _, ok := base.ParseFilename(name); !ok || ft != base.FileTypeManifest {
		return "", base.CorruptionErrorf(path, 0, "CURRENT names %q, which is not a MANIFEST file name", name)
	}
	return name, nil
}

// ReplayManifest reads every edit of a MANIFEST file, calling fn for each.
// A torn tail is returned in the report, not as an error. sealer opens
// sealed records (nil: a sealed record is an error naming its key id); keys,
// when not nil, counts the keys the records use.
func ReplayManifest(fs vfs.FS, path string, sealer *crypt.Sealer, keys *KeyUse, fn func(*VersionEdit) error) (records int, torn *record.TornTailError, err error) {
	_, num, ok := base.ParseFilename(filepath.Base(path))
	if !ok {
		num = 0
	}
	f, err := fs.Open(path)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	r := record.NewReader(f, uint64(num), path)
	r.SetSealer(sealer)
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return records, nil, nil
		}
		if errors.As(err, &torn) {
			return records, torn, nil
		}
		if err != nil {
			return records, nil, err
		}
		if keys != nil {
			keys.Add(r)
		}
		var e VersionEdit
		if err := e.Decode(rec); err != nil {
			return records, nil, base.WithFile(err, path, r.LastRecordOffset())
		}
		if err := fn(&e); err != nil {
			return records, nil, err
		}
		records++
	}
}

// Load reads CURRENT and replays the MANIFEST it names. The returned set has
// no MANIFEST open for writing: the first LogAndApply starts a new one, so a
// damaged tail of the old file is never appended to.
func Load(opts Options) (*VersionSet, *LoadReport, error) {
	vs := newVersionSet(opts)
	name, err := ReadCurrent(opts.FS, opts.Dir)
	if err != nil {
		return nil, nil, err
	}
	path := filepath.Join(opts.Dir, name)
	if _, err := opts.FS.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, nil, base.CorruptionErrorf(filepath.Join(opts.Dir, base.CurrentFileName), 0,
			"CURRENT names %s, which does not exist", name)
	}
	var (
		edits       []*VersionEdit
		haveLog     bool
		haveNext    bool
		nextFileNum base.FileNum
	)
	var keys KeyUse
	records, torn, err := ReplayManifest(opts.FS, path, opts.Sealer, &keys, func(e *VersionEdit) error {
		if e.Comparator != "" && e.Comparator != ComparatorName {
			return base.CorruptionErrorf(path, -1, "MANIFEST uses key ordering %q; this engine uses %q", e.Comparator, ComparatorName)
		}
		if e.HasLogNumber {
			vs.logNum, haveLog = e.LogNumber, true
		}
		if e.HasNextFileNum {
			nextFileNum, haveNext = e.NextFileNum, true
		}
		if e.HasLastSeq && e.LastSeq > vs.lastSeq {
			vs.lastSeq = e.LastSeq
		}
		edits = append(edits, e)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if !haveLog || !haveNext {
		return nil, nil, base.CorruptionErrorf(path, -1, "MANIFEST lacks a log number or next file number (%d records)", records)
	}
	v, err := Apply(nil, opts.OnObsolete, edits...)
	if err != nil {
		return nil, nil, base.CorruptionErrorf(path, -1, "replaying MANIFEST: %v", err)
	}
	for _, files := range v.Levels {
		for _, f := range files {
			if f.FileNum >= nextFileNum {
				return nil, nil, base.CorruptionErrorf(path, -1, "table %s is not below the next file number %d", f.FileNum, nextFileNum)
			}
			if f.LargestSeq > vs.lastSeq {
				vs.lastSeq = f.LargestSeq
			}
		}
	}
	_, vs.manifestNum, _ = base.ParseFilename(name)
	vs.keys = keys
	vs.nextFileNum.Store(uint64(nextFileNum))
	vs.install(v)
	return vs, &LoadReport{Manifest: name, Records: records, TornTail: torn, Keys: keys}, nil
}

// install makes v current. Called with logMu held (or before the set is
// shared).
func (vs *VersionSet) install(v *Version) {
	v.Ref()
	vs.mu.Lock()
	old := vs.mu.current
	vs.mu.current = v
	vs.mu.Unlock()
	if old != nil {
		old.Unref()
	}
}

// Current returns the current Version with a reference the caller must
// release with Unref.
func (vs *VersionSet) Current() *Version {
	vs.mu.Lock()
	v := vs.mu.current
	v.Ref()
	vs.mu.Unlock()
	return v
}

// NewFileNum allocates a file number.
func (vs *VersionSet) NewFileNum() base.FileNum {
	return base.FileNum(vs.nextFileNum.Add(1) - 1)
}

// MarkFileNumUsed makes sure n is never allocated again.
func (vs *VersionSet) MarkFileNumUsed(n base.FileNum) {
	for {
		cur := vs.nextFileNum.Load()
		if uint64(n) < cur || vs.nextFileNum.CompareAndSwap(cur, uint64(n)+1) {
			return
		}
	}
}

// NextFileNum returns the next file number that would be allocated.
func (vs *VersionSet) NextFileNum() base.FileNum { return base.FileNum(vs.nextFileNum.Load()) }

// LogNumber returns the oldest WAL that may hold unflushed data.
func (vs *VersionSet) LogNumber() base.FileNum {
	vs.logMu.Lock()
	defer vs.logMu.Unlock()
	return vs.logNum
}

// LastSeq returns the largest sequence number recorded in the MANIFEST.
func (vs *VersionSet) LastSeq() base.SeqNum {
	vs.logMu.Lock()
	defer vs.logMu.Unlock()
	return vs.lastSeq
}

// ManifestFileNum returns the number of the MANIFEST being written (0 before
// the first LogAndApply after Load).
func (vs *VersionSet) ManifestFileNum() base.FileNum {
	vs.logMu.Lock()
	defer vs.logMu.Unlock()
	return vs.manifestNum
}

// LogAndApply makes edit durable in the MANIFEST and then installs the
// resulting Version. The edit's next-file-number is filled in; its log number
// and last sequence are kept if set.
//
// A write that fails for lack of space (vfs.IsNoSpace) is undone: the
// partial record is cut off the MANIFEST (truncate, seek, rewind), or a new
// MANIFEST that could not be finished is removed before CURRENT names it;
// the edit is not applied and the error, still matching vfs.IsNoSpace, is
// returned, so the caller may retry once space is free. Any other failure
// (an I/O error, a failed fsync, a cut that fails, a CURRENT whose rename
// may or may not be durable) is sticky: the set refuses every later edit,
// because the durable state is no longer known (the engine must be
// reopened).
func (vs *VersionSet) LogAndApply(edit *VersionEdit) error {
	vs.logMu.Lock()
	defer vs.logMu.Unlock()
	if vs.err != nil {
		return vs.err
	}
	vs.mu.Lock()
	cur := vs.mu.current
	vs.mu.Unlock()
	nv, err := Apply(cur, vs.opts.OnObsolete, edit)
	if err != nil {
		return fmt.Errorf("manifest: invalid edit: %w", err)
	}
	if edit.HasLogNumber && edit.LogNumber < vs.logNum {
		return fmt.Errorf("manifest: invalid edit: log number %d goes back from %d", edit.LogNumber, vs.logNum)
	}
	edit.NextFileNum = vs.NextFileNum()
	edit.HasNextFileNum = true
	logNum, lastSeq := vs.logNum, vs.lastSeq
	if edit.HasLogNumber {
		logNum = edit.LogNumber
	}
	if edit.HasLastSeq && edit.LastSeq > lastSeq {
		lastSeq = edit.LastSeq
	}
	if vs.manifestW == nil || vs.manifestW.Size() >= vs.opts.MaxManifestBytes {
		if err := vs.rotate(nv, logNum, lastSeq); err != nil {
			vs.releaseUninstalled(nv)
			var undone *undoneError
			if !errors.As(err, &undone) {
				vs.err = err
			}
			return err
		}
		// The first record of a MANIFEST is durable before CURRENT names
		// the file, and damage to it is always reported as corruption.
		vs.unproven = false
	} else {
		vs.unproven = true
		if err := vs.appendRecord(edit.Encode(nil)); err != nil {
			vs.releaseUninstalled(nv)
			return err
		}
	}
	vs.manifestWrites++
	vs.logNum, vs.lastSeq = logNum, lastSeq
	vs.install(nv)
	return nil
}

// ProveDurable makes sure the last MANIFEST record is followed by a synced
// record (an empty edit, if needed). A reader that meets damage in a record
// and finds a later valid record with a higher sync offset reports
// corruption; damage in the very last record is indistinguishable from a
// write cut short by a crash and is dropped as a torn tail. So the engine
// deletes files made obsolete by an edit only after ProveDurable: if that
// edit is ever lost, the files it replaced are still there.
func (vs *VersionSet) ProveDurable() error {
	vs.logMu.Lock()
	defer vs.logMu.Unlock()
	if vs.err != nil {
		return vs.err
	}
	if !vs.unproven || vs.manifestW == nil {
		return nil
	}
	if err := vs.appendRecord((&VersionEdit{}).Encode(nil)); err != nil {
		return err
	}
	vs.unproven = false
	return nil
}

// ManifestKeys returns the name of the current MANIFEST and the keys its
// records use; ok is false when there is none (a closed set).
func (vs *VersionSet) ManifestKeys() (name string, keys KeyUse, ok bool) {
	vs.logMu.Lock()
	defer vs.logMu.Unlock()
	if vs.manifestNum == 0 {
		return "", KeyUse{}, false
	}
	keys = KeyUse{Plain: vs.keys.Plain, Sealed: map[crypt.KeyID]int{}}
	for id, n := range vs.keys.Sealed {
		keys.Sealed[id] = n
	}
	return base.MakeFilename(base.FileTypeManifest, vs.manifestNum), keys, true
}

// noteRecord counts a record just written to the MANIFEST (an
// approximation under a concurrent rotation: the key active right after the
// write). Called with logMu.
func (vs *VersionSet) noteRecord() {
	if vs.opts.Sealer == nil {
		vs.keys.Plain++
		return
	}
	if vs.keys.Sealed == nil {
		vs.keys.Sealed = map[crypt.KeyID]int{}
	}
	vs.keys.Sealed[vs.opts.Sealer.ActiveKey()]++
}

// undoneError wraps a no-space failure that left the MANIFEST as it was.
type undoneError struct{ err error }

func (e *undoneError) Error() string {
	return e.err.Error() + " (undone: the MANIFEST is as before; retry once space is free)"
}
func (e *undoneError) Unwrap() error { return e.err }

// appendRecord writes one record to the current MANIFEST and syncs it. A
// write that fails for lack of space is cut off (see LogAndApply) and
// returned as an *undoneError; every other failure is made sticky. Called
// with logMu.
func (vs *VersionSet) appendRecord(payload []byte) error {
	before := vs.manifestW.Size()
	err := vs.manifestW.WriteRecord(payload)
	if err == nil {
		err = vs.manifestW.Flush()
	}
	if err != nil {
		err = fmt.Errorf("manifest: writing %s: %w", vs.manifestName(), err)
		if vfs.IsNoSpace(err) {
			cerr := vs.manifest.Truncate(before)
			if cerr == nil {
				_, cerr = vs.manifest.Seek(before, io.SeekStart)
			}
			if cerr == nil {
				vs.manifestW.Rewind(before)
				return &undoneError{err}
			}
			err = fmt.Errorf("%w; cutting the failed write off at offset %d failed: %v", err, before, cerr)
		}
		vs.err = err
		return err
	}
	if err := vs.manifest.Sync(); err != nil {
		// After a failed fsync the kernel may have dropped the pages it
		// could not write; an fsync is never retried.
		vs.err = fmt.Errorf("manifest: syncing %s: %w", vs.manifestName(), err)
		return vs.err
	}
	vs.noteRecord()
	return nil
}

// releaseUninstalled drops the table references of a Version that never
// became current, without reporting its tables as obsolete (they may be
// live in the current Version, or orphans that recovery will remove).
func (vs *VersionSet) releaseUninstalled(v *Version) {
	for _, files := range v.Levels {
		for _, f := range files {
			f.refs.Add(-1)
		}
	}
}

func (vs *VersionSet) manifestName() string {
	return filepath.Join(vs.opts.Dir, base.MakeFilename(base.FileTypeManifest, vs.manifestNum))
}

// SnapshotEdit returns an edit that recreates v with the given counters.
func SnapshotEdit(v *Version, logNum base.FileNum, nextFileNum base.FileNum, lastSeq base.SeqNum) *VersionEdit {
	e := &VersionEdit{
		Comparator: ComparatorName,
		LogNumber:  logNum, HasLogNumber: true,
		NextFileNum: nextFileNum, HasNextFileNum: true,
		LastSeq: lastSeq, HasLastSeq: true,
	}
	for level, files := range v.Levels {
		for _, f := range files {
			e.NewFiles = append(e.NewFiles, NewFile{Level: level, Meta: f})
		}
	}
	return e
}

// WriteManifest creates MANIFEST-<num> in dir holding a snapshot of v, sealed
// with sealer when it is not nil, syncs
// it and the directory, then points CURRENT at it (temp file + fsync + rename
// + directory fsync). It returns the open file and writer, positioned for
// more edits; the caller owns them.
//
// If it fails before CURRENT was renamed, it removes the new MANIFEST (and
// the temporary CURRENT) again, leaving dir as it was, and the error is an
// *undoneError when the cause was a lack of space.
func WriteManifest(fs vfs.FS, dir string, num base.FileNum, snap *VersionEdit, sealer *crypt.Sealer) (vfs.File, *record.Writer, error) {
	name := base.MakeFilename(base.FileTypeManifest, num)
	path := filepath.Join(dir, name)
	f, err := fs.Create(path)
	if err != nil {
		err = fmt.Errorf("manifest: creating %s: %w", path, err)
		if vfs.IsNoSpace(err) {
			_ = fs.Remove(path)
			err = &undoneError{err}
		}
		return nil, nil, err
	}
	w := record.NewWriter(f, uint64(num))
	if sealer != nil {
		w.SetSealer(sealer)
	}
	err = w.WriteRecord(snap.Encode(nil))
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = vfs.SyncDir(fs, dir)
	}
	if err == nil {
		err = vfs.WriteFileSync(fs, dir, filepath.Join(dir, base.CurrentFileName), []byte(name+"\n"))
	}
	if err != nil {
		_ = f.Close()
		err = fmt.Errorf("manifest: writing %s: %w", path, err)
		// CURRENT still names another MANIFEST unless the rename happened
		// (and only its directory sync failed): then the new file stays.
		if cur, rerr := ReadCurrent(fs, dir); rerr == nil && cur != name || errors.Is(rerr, os.ErrNotExist) {
			if rmErr := fs.Remove(path); rmErr == nil || errors.Is(rmErr, os.ErrNotExist) {
				if vfs.IsNoSpace(err) {
					err = &undoneError{err}
				}
			}
		}
		return nil, nil, err
	}
	return f, w, nil
}

// rotate starts a new MANIFEST holding a snapshot of v. Called with logMu.
func (vs *VersionSet) rotate(v *Version, logNum base.FileNum, lastSeq base.SeqNum) error {
	num := vs.NewFileNum()
	snap := SnapshotEdit(v, logNum, vs.NextFileNum(), lastSeq)
	f, w, err := WriteManifest(vs.opts.FS, vs.opts.Dir, num, snap, vs.opts.Sealer)
	if err != nil {
		return err
	}
	oldNum, oldFile := vs.manifestNum, vs.manifest
	vs.manifest, vs.manifestW, vs.manifestNum = f, w, num
	vs.keys = KeyUse{}
	vs.noteRecord()
	if oldFile != nil {
		_ = oldFile.Close()
	}
	if oldNum != 0 && oldNum != num {
		// CURRENT no longer names the old MANIFEST, durably: it can go. A
		// failure here only leaves a stray file that the next open removes.
		_ = vs.opts.FS.Remove(filepath.Join(vs.opts.Dir, base.MakeFilename(base.FileTypeManifest, oldNum)))
	}
	return nil
}

// Close closes the MANIFEST file. The current Version stays referenced by
// the set; callers release theirs.
func (vs *VersionSet) Close() error {
	vs.logMu.Lock()
	defer vs.logMu.Unlock()
	var err error
	if vs.manifest != nil {
		err = vs.manifest.Close()
		vs.manifest, vs.manifestW = nil, nil
	}
	if vs.err == nil {
		vs.err = base.ErrClosed
	}
	return err
}

// Err returns the sticky error, if any.
func (vs *VersionSet) Err() error {
	vs.logMu.Lock()
	defer vs.logMu.Unlock()
	if vs.err == base.ErrClosed {
		return nil
	}
	return vs.err
}
