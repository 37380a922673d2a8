package server

import (
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/record"
	"github.com/kayadb/kayadb/internal/vfs"
)

// Encryption at rest (docs/design/security-controls.md §3)
//
// One crypt.Sealer per node seals everything the node writes that holds
// user data: the engine's WAL, MANIFEST and tables (engine.Options.
// Encryption) and the raft log's records (raftlog.Options.Sealer).
// Snapshot checkpoints and backups are engine files, so they are sealed
// as the engine sealed them.
//
// SIGHUP reloads the keyring file (ReloadEncryption): the new file is
// parsed and checked first; a keyring that lacks (or changed) a key still
// used by a live file — a raft log segment, the engine's files, a
// snapshot checkpoint — or the key being written with right now is
// refused: the node keeps its keyring, logs the files, and counts
// kayadb_config_reload_failures_total{file="encryption"}. Otherwise it is
// swapped into the Sealer, and every record, block and table written from
// then on uses the new active key.

// reloadFileEncryption is the file label of the reload failures counter
// for the encryption key file or keyring.
const reloadFileEncryption = "encryption"

// maxNamedFiles bounds the files a refused reload names per missing key
// (in the log line and the error): enough to find them, and a node with
// thousands of tables does not log a megabyte.
const maxNamedFiles = 5

// loadKeyring reads the configured key file or keyring; nil without one.
func (c *Config) loadKeyring() (*crypt.Keyring, error) {
	switch {
	case c.EncryptionKeyFile != "" && c.EncryptionKeyringFile != "":
		return nil, errors.New("--encryption-key-file and --encryption-keyring-file are both set (or KAYA_ENCRYPTION_KEY_FILE and KAYA_ENCRYPTION_KEYRING_FILE); give one: a keyring holds several keys, a key file one")
	case c.EncryptionKeyringFile != "":
		return crypt.LoadFile(c.EncryptionKeyringFile, true)
	case c.EncryptionKeyFile != "":
		return crypt.LoadFile(c.EncryptionKeyFile, false)
	}
	return nil, nil
}

// encryptionFile is the configured key file or keyring, and its flag.
func (c *Config) encryptionFile() (path, flag string) {
	if c.EncryptionKeyringFile != "" {
		return c.EncryptionKeyringFile, "--encryption-keyring-file"
	}
	return c.EncryptionKeyFile, "--encryption-key-file"
}

// setupEncryption builds the node's Sealer from the configured file (or
// takes the one the engine options carry: tests), before anything is
// opened. A file that does not load is a configuration error.
func (s *Server) setupEncryption() error {
	ring, err := s.cfg.loadKeyring()
	if err != nil {
		return err
	}
	switch {
	case ring != nil:
		s.sealer = crypt.NewSealer(ring)
	case s.cfg.EngineOptions != nil && s.cfg.EngineOptions.Encryption != nil:
		s.sealer = s.cfg.EngineOptions.Encryption
	}
	if s.sealer != nil {
		r := s.sealer.Keyring()
		s.log.Info("encryption at rest on", "active_key", r.Active(), "fingerprint", r.Fingerprint(r.Active()), "keys", len(r.IDs()))
	}
	return nil
}

// fileKeys says which keys one file uses.
type fileKeys struct {
	File  string
	Keys  []crypt.KeyID
	Plain bool
}

// keysInUse lists the live files and the keys they use: the raft log's
// segments, the engine's files (when the engine reports them) and the
// files of snapshot checkpoints.
func (s *Server) keysInUse() ([]fileKeys, error) {
	var out []fileKeys
	for _, sk := range s.rlog.KeyUsage() {
		out = append(out, fileKeys{File: sk.File, Keys: sk.Keys, Plain: sk.Plain})
	}
	eng, err := s.engineKeys()
	if err != nil {
		return nil, err
	}
	return append(out, eng...), nil
}

// checkKeyringSwap reports why next cannot replace cur: a key a live file
// uses (or cur's active key, which writes in progress use) that next lacks
// or holds with other bytes. It names the files (at most maxNamedFiles per
// key).
func checkKeyringSwap(cur, next *crypt.Keyring, files []fileKeys) error {
	users := map[crypt.KeyID][]string{cur.Active(): {"(the key being written with now)"}}
	for _, f := range files {
		for _, id := range f.Keys {
			users[id] = append(users[id], f.File)
		}
	}
	var problems []string
	for _, id := range slices.Sorted(maps.Keys(users)) {
		var why string
		switch {
		case !next.Has(id):
			why = fmt.Sprintf("lacks key %d", id)
		case cur.Has(id) && next.Fingerprint(id) != cur.Fingerprint(id):
			why = fmt.Sprintf("holds other bytes under key id %d (fingerprint %s, was %s)", id, next.Fingerprint(id), cur.Fingerprint(id))
		default:
			continue
		}
		files := users[id]
		named := files[:min(len(files), maxNamedFiles)]
		more := ""
		if len(files) > len(named) {
			more = fmt.Sprintf(" and %d more", len(files)-len(named))
		}
		problems = append(problems, fmt.Sprintf("%s, which %d live file(s) use: %s%s", why, len(files), strings.Join(named, ", "), more))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// ReloadEncryption re-reads the key file or keyring (SIGHUP). The new
// keyring is swapped in only when it still holds every key a live file
// uses; otherwise the node keeps its keyring, and the error (also logged
// and counted) names the missing keys and the files. Without encryption
// configured it does nothing.
func (s *Server) ReloadEncryption() error {
	if s.sealer == nil || (s.cfg.EncryptionKeyFile == "" && s.cfg.EncryptionKeyringFile == "") {
		return nil
	}
	s.encMu.Lock()
	defer s.encMu.Unlock()
	path, flag := s.cfg.encryptionFile()
	log := s.log.With("component", "encryption", "file", path)
	fail := func(err error) error {
		s.reloadFailures.WithLabelValues(reloadFileEncryption).Inc()
		log.Error("keyring reload refused; the node keeps its keys", "err", err)
		return err
	}
	next, err := s.cfg.loadKeyring()
	if err != nil {
		return fail(err)
	}
	cur := s.sealer.Keyring()
	if next.Equal(cur) {
		log.Info("keyring reloaded: unchanged", "active_key", cur.Active())
		return nil
	}
	files, err := s.keysInUse()
	if err != nil {
		return fail(fmt.Errorf("listing the keys live files use: %w", err))
	}
	if err := checkKeyringSwap(cur, next, files); err != nil {
		return fail(fmt.Errorf("%s %s %w; put the key back (see docs/runbooks/key-rotation.md)", flag, path, err))
	}
	// The engine swaps the keyring into the Sealer the raft log shares, and
	// wakes its background rewrite of tables sealed with older keys.
	if err := s.store.DB(func(d *engine.DB) error { return d.SetKeyring(next) }); err != nil {
		return fail(fmt.Errorf("%s %s: %w", flag, path, err))
	}
	log.Info("keyring reloaded: new writes use the active key", "active_key", next.Active(),
		"fingerprint", next.Fingerprint(next.Active()), "previous_active_key", cur.Active(), "keys", len(next.IDs()))
	return nil
}

// newReloadFailures is the counter of refused reloads of configuration
// files (SIGHUP), by file.
func newReloadFailures() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kayadb_config_reload_failures_total",
		Help: "Reloads of configuration files (SIGHUP) that were refused, the node keeping the old configuration, by file: policy (--acl-file, --tenant-file, --identity-file), tls, encryption (the key file or keyring).",
	}, []string{"file"})
}

// engineKeys lists the engine's live files (its WALs, MANIFEST and
// tables, from the engine's own report) and those of the current snapshot
// checkpoint (read with the node's keys: its tables may have left the
// engine since, and a peer that needs the snapshot gets them as they are),
// with the keys each uses.
func (s *Server) engineKeys() ([]fileKeys, error) {
	var out []fileKeys
	add := func(st *engine.EncryptionStatus, dir string) {
		for _, f := range st.Files {
			fk := fileKeys{File: filepath.Join(dir, f.File), Plain: f.Plain}
			for _, id := range f.Keys {
				fk.Keys = append(fk.Keys, crypt.KeyID(id))
			}
			out = append(out, fk)
		}
	}
	if err := s.store.DB(func(d *engine.DB) error {
		st := d.EncryptionStatus()
		add(&st, s.enginePath())
		return nil
	}); err != nil {
		return nil, err
	}
	if cur := s.snaps.Current(); cur != nil && cur.Dir != "" {
		dir := s.snaps.Path(cur.Dir)
		st, err := engine.VerifyEncryption(dir, &engine.Options{FS: s.fs, Encryption: s.sealer})
		if err != nil && st == nil {
			return nil, fmt.Errorf("reading the keys of snapshot checkpoint %s: %w", dir, err)
		}
		add(st, dir)
	}
	return out, nil
}

// scanEngineLogs reads the WALs and MANIFESTs of the engine directory dir
// with sealer and reports the keys of each. A file that vanishes meanwhile
// (a live engine deletes obsolete logs) is skipped; a torn tail ends a
// file. The error is the first record that does not open (a
// *crypt.KeyError inside: a key sealer lacks, or a wrong key), naming the
// file; the files read so far are returned with it.
func scanEngineLogs(fs vfs.FS, dir string, sealer *crypt.Sealer) ([]fileKeys, error) {
	names, err := fs.List(dir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	var out []fileKeys
	for _, n := range names {
		num, ok := engineLogNumber(n)
		if !ok {
			continue
		}
		path := filepath.Join(dir, n)
		fk, err := scanRecordLog(fs, path, uint64(num), sealer)
		if errors.Is(err, iofs.ErrNotExist) {
			continue
		}
		if err != nil {
			return out, err
		}
		out = append(out, fk)
	}
	return out, nil
}

// engineLogNumber parses an engine WAL (NNNNNN.log) or MANIFEST
// (MANIFEST-NNNNNN) file name (docs/formats.md, "The engine directory").
func engineLogNumber(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, ".log")
	if !ok {
		digits, ok = strings.CutPrefix(name, "MANIFEST-")
	}
	if !ok || digits == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	return n, err == nil
}

func scanRecordLog(fs vfs.FS, path string, num uint64, sealer *crypt.Sealer) (fileKeys, error) {
	fk := fileKeys{File: path}
	f, err := fs.Open(path)
	if err != nil {
		return fk, err
	}
	defer f.Close()
	r := record.NewReader(f, num, path)
	r.SetSealer(sealer)
	seen := map[crypt.KeyID]bool{}
	for {
		_, err := r.Next()
		if err == io.EOF || errors.Is(err, record.ErrTornTail) {
			break
		}
		if err != nil {
			return fk, err
		}
		if id, sealed := r.LastKey(); sealed {
			seen[id] = true
		} else {
			fk.Plain = true
		}
	}
	fk.Keys = slices.Sorted(maps.Keys(seen))
	return fk, nil
}

// checkCheckpointKeys refuses a received snapshot checkpoint whose files
// use a key this node's keyring lacks (or that do not decrypt with it):
// the checkpoint's files are the sender's as they are on disk, so every
// member needs every key the others seal with. The error names the file
// and the key id.
func (s *Server) checkCheckpointKeys(from uint64, dir string) error {
	// Its WALs, MANIFEST and tables (a table may be sealed with an older
	// key than the sender's active one).
	_, err := engine.VerifyEncryption(dir, &engine.Options{FS: s.fs, Encryption: s.sealer})
	var ke *crypt.KeyError
	if !errors.As(err, &ke) {
		return err
	}
	return fmt.Errorf("the snapshot from node %d holds files sealed with key id %d, which this node cannot open (%w): "+
		"every member needs every key the others use: add key %d to this node's --encryption-keyring-file and send it SIGHUP; raft retries the snapshot",
		from, ke.ID, err, ke.ID)
}
