package engine

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/manifest"
	"github.com/kayadb/kayadb/internal/lsm/sstable"
	"github.com/kayadb/kayadb/internal/record"
	"github.com/kayadb/kayadb/internal/vfs"
)

// Encryption at rest: the startup check of table keys, the status report
// of a running DB and of a directory (EncryptionStatus, VerifyEncryption),
// and the low-priority rewrite of tables sealed with an older key.

// File kinds in an EncryptionStatus.
const (
	FileKindWAL      = "wal"
	FileKindManifest = "manifest"
	FileKindTable    = "sstable"
)

// FileEncryption says which keys one live file of a data directory uses.
type FileEncryption struct {
	// File is the file's base name.
	File string `json:"file"`
	// Kind is FileKindWAL, FileKindManifest or FileKindTable.
	Kind string `json:"kind"`
	// Keys are the key ids that sealed its records or blocks, ascending.
	Keys []uint32 `json:"keys"`
	// Plain is true when the file holds unencrypted records (a table: the
	// whole table is plain).
	Plain bool `json:"plain"`
	// Error says why the file could not be read with the keyring (a key
	// missing, or one that does not open it); empty when it reads.
	Error string `json:"error,omitempty"`
}

// EncryptionStatus lists the live files of a data directory with the keys
// they use.
type EncryptionStatus struct {
	// Enabled is true when the DB (or the check) has a keyring.
	Enabled bool `json:"enabled"`
	// ActiveKey is the key new data is sealed with (when Enabled).
	ActiveKey uint32 `json:"active_key"`
	// Files are the live files: the MANIFEST, the WALs, the tables.
	Files []FileEncryption `json:"files"`
	// TablesByKey counts live tables per key id (decimal), "plain" for
	// unencrypted ones.
	TablesByKey map[string]int `json:"tables_by_key"`
	// StaleTables counts the tables not sealed with the active key (plain
	// ones included, when Enabled): the background rewrite's work left.
	StaleTables int `json:"stale_tables"`
}

// keyUse turns a manifest.KeyUse into FileEncryption fields.
func (fe *FileEncryption) setUse(u manifest.KeyUse) {
	fe.Plain = u.Plain > 0
	fe.Keys = []uint32{}
	for id := range u.Sealed {
		fe.Keys = append(fe.Keys, uint32(id))
	}
	slices.Sort(fe.Keys)
}

// keyTracker records the keys the records of one log use, as they are
// written. It is updated only when the active key changes, so the hot path
// costs one comparison.
type keyTracker struct {
	mu  sync.Mutex
	use manifest.KeyUse
	// last, any, plain: what note saw last; only note touches them, and
	// its callers are serialized (the WAL's mutex).
	last  crypt.KeyID
	any   bool
	plain bool
}

// note records a record written plain (sealer nil) or under key id.
func (k *keyTracker) note(sealer *crypt.Sealer, id crypt.KeyID) {
	if sealer == nil && k.plain || sealer != nil && k.any && id == k.last {
		return
	}
	k.plain = k.plain || sealer == nil
	k.mu.Lock()
	defer k.mu.Unlock()
	if sealer == nil {
		k.use.Plain = 1
	} else {
		if k.use.Sealed == nil {
			k.use.Sealed = map[crypt.KeyID]int{}
		}
		k.use.Sealed[id]++
	}
	k.last, k.any = id, sealer != nil
}

func (k *keyTracker) snapshot() manifest.KeyUse {
	k.mu.Lock()
	defer k.mu.Unlock()
	u := manifest.KeyUse{Plain: k.use.Plain, Sealed: map[crypt.KeyID]int{}}
	for id, n := range k.use.Sealed {
		u.Sealed[id] = n
	}
	return u
}

// walKeys maps the live WALs of a running DB to their trackers.
type walKeys struct {
	mu sync.Mutex
	m  map[base.FileNum]*keyTracker
}

func (w *walKeys) tracker(num base.FileNum) *keyTracker {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[base.FileNum]*keyTracker{}
	}
	t := w.m[num]
	if t == nil {
		t = &keyTracker{}
		w.m[num] = t
	}
	return t
}

// set records what replaying a WAL found (read-only opens keep their WALs).
func (w *walKeys) set(num base.FileNum, u manifest.KeyUse) {
	t := w.tracker(num)
	t.mu.Lock()
	t.use = u
	t.mu.Unlock()
}

// keyName is a key id in TablesByKey.
func keyName(f *manifest.FileMetadata) string {
	if !f.KeyKnown {
		return "unknown"
	}
	if !f.Encrypted {
		return "plain"
	}
	return strconv.FormatUint(uint64(f.KeyID), 10)
}

// stale reports whether table f is not sealed with the active key of s
// (false for a table whose key is not known: its footer was unreadable at
// open, and reads report that damage).
func stale(f *manifest.FileMetadata, s *crypt.Sealer) bool {
	return s != nil && f.KeyKnown && (!f.Encrypted || f.KeyID != s.ActiveKey())
}

// tableFileEncryption describes table f.
func tableFileEncryption(f *manifest.FileMetadata) FileEncryption {
	fe := FileEncryption{File: base.MakeFilename(base.FileTypeTable, f.FileNum), Kind: FileKindTable, Keys: []uint32{}, Plain: !f.Encrypted}
	if !f.KeyKnown {
		fe.Plain, fe.Error = false, "key not known: the footer could not be read when the DB was opened"
	}
	if f.Encrypted {
		fe.Keys = []uint32{uint32(f.KeyID)}
	}
	return fe
}

// checkTableKeys reads the footer of every live table of v, records its key
// in its FileMetadata, and opens one table per distinct key (plain
// included) with sealer, which authenticates its meta blocks: a key the
// keyring lacks, or a wrong key, fails with an error naming the table and
// the key id. It runs at open, before the tables are shared.
//
// At open (collect false) damage that is not about keys (a corrupt footer
// or meta block) is left for the reads to report, as for a plain
// directory, and another table under the same key is tried. With collect
// (VerifyEncryption) every problem is an error: it goes on after a failure
// and returns every table's entry (errors in them) and the first error.
func checkTableKeys(fs vfs.FS, dir string, v *manifest.Version, sealer *crypt.Sealer, collect bool) ([]FileEncryption, error) {
	var files []*manifest.FileMetadata
	for _, lf := range v.Levels {
		files = append(files, lf...)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].FileNum < files[j].FileNum })
	var out []FileEncryption
	var first error
	type checkedKey struct {
		table string
		err   error
	}
	checked := map[string]checkedKey{}
	for _, f := range files {
		p := filepath.Join(dir, base.MakeFilename(base.FileTypeTable, f.FileNum))
		err := func() error {
			file, err := fs.Open(p)
			if err != nil {
				return fmt.Errorf("engine: opening table %s: %w", p, err)
			}
			defer file.Close()
			id, enc, err := sstable.TableEncryption(file, int64(f.Size), p)
			if err != nil {
				return err
			}
			f.Encrypted, f.KeyID, f.KeyKnown = enc, id, true
			name := keyName(f)
			if c, done := checked[name]; done {
				if c.err != nil {
					return fmt.Errorf("engine: table %s (key %s) was not checked: table %s under the same key failed: %w", p, name, c.table, c.err)
				}
				return nil
			}
			// Open authenticates the table's meta blocks; the reader is
			// dropped (closing it would close file twice).
			_, err = sstable.Open(file, int64(f.Size), sstable.ReaderOptions{FileName: p, Sealer: sealer})
			if err != nil && !collect && !isKeyError(err) {
				return err // damage: try another table under this key
			}
			checked[name] = checkedKey{table: p, err: err}
			return err
		}()
		if err != nil && !collect && !isKeyError(err) {
			err = nil // damage is reported by the reads, as without encryption
		}
		fe := tableFileEncryption(f)
		if err != nil {
			fe.Error = err.Error()
			if first == nil {
				first = err
			}
			if !collect {
				return nil, err
			}
		}
		out = append(out, fe)
	}
	return out, first
}

// isKeyError reports whether err is about a key: missing from the keyring
// or not opening the data.
func isKeyError(err error) bool {
	var ke *crypt.KeyError
	return errors.As(err, &ke)
}

// EncryptionStatus lists the DB's live files (the MANIFEST, the WALs, the
// tables) with the keys they use. Tables and the MANIFEST are exact; a WAL
// lists the keys active when its records were appended.
func (d *DB) EncryptionStatus() EncryptionStatus {
	st := EncryptionStatus{Enabled: d.opts.Encryption != nil, Files: []FileEncryption{}, TablesByKey: map[string]int{}}
	if st.Enabled {
		st.ActiveKey = uint32(d.opts.Encryption.ActiveKey())
	}
	if name, u, ok := d.vs.ManifestKeys(); ok {
		fe := FileEncryption{File: name, Kind: FileKindManifest}
		fe.setUse(u)
		st.Files = append(st.Files, fe)
	}
	names, _ := d.fs.List(d.dir)
	sort.Strings(names)
	logNum := d.vs.LogNumber()
	for _, n := range names {
		ft, num, ok := base.ParseFilename(n)
		if !ok || ft != base.FileTypeLog || num < logNum {
			continue // older logs are flushed: obsolete, about to be removed
		}
		d.walKeys.mu.Lock()
		t := d.walKeys.m[num]
		d.walKeys.mu.Unlock()
		if t == nil {
			continue // obsolete, about to be removed
		}
		fe := FileEncryption{File: n, Kind: FileKindWAL}
		fe.setUse(t.snapshot())
		st.Files = append(st.Files, fe)
	}
	v := d.vs.Current()
	defer v.Unref()
	var tables []*manifest.FileMetadata
	for _, lf := range v.Levels {
		tables = append(tables, lf...)
	}
	sort.Slice(tables, func(i, j int) bool { return tables[i].FileNum < tables[j].FileNum })
	for _, f := range tables {
		st.Files = append(st.Files, tableFileEncryption(f))
		st.TablesByKey[keyName(f)]++
		if stale(f, d.opts.Encryption) {
			st.StaleTables++
		}
	}
	return st
}

// VerifyEncryption checks an engine directory that no process has open
// (it takes the directory lock, failing with ErrLocked otherwise) against
// opts.Encryption (nil: no keyring): it reads the MANIFEST and every WAL
// (which must open), reads every live table's footer and opens one table
// per distinct key. It returns the status of every file it could list and
// an error naming the first file whose key is missing or does not open it.
// It changes nothing. It backs `kayactl encryption verify --data DIR`.
func VerifyEncryption(dir string, opts *Options) (*EncryptionStatus, error) {
	o := opts.EnsureDefaults()
	fs := o.FS
	lock, err := lockExisting(fs, dir)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	st := &EncryptionStatus{Enabled: o.Encryption != nil, Files: []FileEncryption{}, TablesByKey: map[string]int{}}
	if st.Enabled {
		st.ActiveKey = uint32(o.Encryption.ActiveKey())
	}
	vs, lr, err := manifest.Load(manifest.Options{FS: fs, Dir: dir, Sealer: o.Encryption})
	if err != nil {
		name, _ := manifest.ReadCurrent(fs, dir)
		st.Files = append(st.Files, FileEncryption{File: name, Kind: FileKindManifest, Keys: []uint32{}, Error: err.Error()})
		return st, err
	}
	defer vs.Close()
	fe := FileEncryption{File: lr.Manifest, Kind: FileKindManifest}
	fe.setUse(lr.Keys)
	st.Files = append(st.Files, fe)

	var first error
	names, err := fs.List(dir)
	if err != nil {
		return st, fmt.Errorf("engine: listing %s: %w", dir, err)
	}
	sort.Strings(names)
	logNum := vs.LogNumber()
	for _, n := range names {
		ft, num, ok := base.ParseFilename(n)
		if !ok || ft != base.FileTypeLog || num < logNum {
			continue
		}
		fe := FileEncryption{File: n, Kind: FileKindWAL}
		u, err := walKeyUse(fs, filepath.Join(dir, n), num, o.Encryption)
		fe.setUse(u)
		if err != nil {
			fe.Error = err.Error()
			if first == nil {
				first = err
			}
		}
		st.Files = append(st.Files, fe)
	}
	v := vs.Current()
	defer v.Unref()
	tables, err := checkTableKeys(fs, dir, v, o.Encryption, true)
	if first == nil {
		first = err
	}
	st.Files = append(st.Files, tables...)
	for _, lf := range v.Levels {
		for _, f := range lf {
			st.TablesByKey[keyName(f)]++
			if stale(f, o.Encryption) {
				st.StaleTables++
			}
		}
	}
	return st, first
}

// walKeyUse reads a WAL to its end (a torn tail ends it) and counts the
// keys of its records.
func walKeyUse(fs vfs.FS, path string, num base.FileNum, sealer *crypt.Sealer) (manifest.KeyUse, error) {
	var u manifest.KeyUse
	f, err := fs.Open(path)
	if err != nil {
		return u, fmt.Errorf("engine: opening WAL %s: %w", path, err)
	}
	defer f.Close()
	r := record.NewReader(f, uint64(num), path)
	r.SetSealer(sealer)
	for {
		_, err := r.Next()
		if err == io.EOF || errors.Is(err, record.ErrTornTail) {
			return u, nil
		}
		if err != nil {
			return u, err
		}
		u.Add(r)
	}
}

// pickRewriteLocked returns a compaction that rewrites one table not sealed
// with the active key (or the L0 tables, which must move down together),
// or nil. It is the lowest priority: compactOne calls it only when no other
// compaction is due. Called with mu.
func (d *DB) pickRewriteLocked(v *manifest.Version) *compaction {
	s := d.opts.Encryption
	if s == nil {
		return nil
	}
	info := d.levelInfo(v)
	for l := 1; l < manifest.NumLevels; l++ {
		for _, f := range v.Levels[l] {
			if f.Compacting || !stale(f, s) {
				continue
			}
			if c := d.newCompaction(v, info, l, l, []*manifest.FileMetadata{f}); c != nil {
				c.rewrite = true
				return c
			}
		}
	}
	for _, f := range v.Levels[0] {
		if stale(f, s) && !f.Compacting {
			files := append([]*manifest.FileMetadata(nil), v.Levels[0]...)
			if c := d.newCompaction(v, info, 0, info.baseLevel, files); c != nil {
				c.rewrite = true
				return c
			}
			break
		}
	}
	return nil
}

// SetKeyring rotates the DB's keys online: it swaps r into
// Options.Encryption, so that new WAL records, MANIFEST records and tables
// are sealed with r's active key at once, and wakes the background rewrite
// of the tables sealed with other keys. It refuses (changing nothing) a
// keyring that lacks a key some live file still uses, naming the files; and
// it fails on a DB opened without encryption (restart it with a key to turn
// a directory encrypted).
func (d *DB) SetKeyring(r *Keyring) error {
	s := d.opts.Encryption
	if s == nil {
		return fmt.Errorf("engine: the DB was opened without encryption; open it with Options.Encryption to use a keyring")
	}
	if r == nil {
		return base.InvalidArgumentf("engine: SetKeyring with a nil keyring")
	}
	d.rotateMu.Lock()
	defer d.rotateMu.Unlock()
	var missing []string
	for _, f := range d.EncryptionStatus().Files {
		for _, id := range f.Keys {
			if !r.Has(crypt.KeyID(id)) {
				missing = append(missing, fmt.Sprintf("%s (key id %d)", f.File, id))
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("engine: the new keyring lacks keys that live files use: %v; keep those keys in the keyring until the files are rewritten (see EncryptionStatus)", missing)
	}
	s.SetKeyring(r)
	d.mu.Lock()
	d.maybeScheduleCompactionLocked()
	d.mu.Unlock()
	return nil
}
