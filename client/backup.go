package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kayadb/kayadb/internal/durable"
	"github.com/kayadb/kayadb/internal/wire"
)

// Backup files.
const (
	// BackupFormat is the format name in a backup's MANIFEST.json.
	BackupFormat = "kayadb-backup-v1"
	// BackupManifestName is the name of a backup's manifest, written last:
	// a directory without it holds no finished backup.
	BackupManifestName = "MANIFEST.json"
)

// ErrBackupInvalid matches every error of ReadBackupManifest and
// VerifyBackup that means the backup is damaged or incomplete (a file
// missing, truncated, or not matching its checksum; a manifest that does
// not decode). It also matches a backup the server sent that does not
// match its own checksums.
var ErrBackupInvalid = errors.New("kayadb: backup damaged or incomplete")

// BackupFile is one file of a backup, as MANIFEST.json lists it.
type BackupFile struct {
	// Name is a plain file name inside the backup directory.
	Name string `json:"name"`
	// Size is its length in bytes.
	Size int64 `json:"size"`
	// SHA256 is the SHA-256 of its contents, lowercase hex.
	SHA256 string `json:"sha256"`
}

// BackupManifest describes a backup: it is the content of MANIFEST.json.
type BackupManifest struct {
	// Format is BackupFormat.
	Format string `json:"format"`
	// Created is when the server took the checkpoint (its clock).
	Created time.Time `json:"created"`
	// NodeID is the node the backup was taken on (the leader).
	NodeID uint64 `json:"node_id"`
	// AppliedIndex and Term are the raft index and term of the last entry
	// the backup holds. Every write acknowledged before the backup began is
	// at or below AppliedIndex.
	AppliedIndex uint64 `json:"applied_index"`
	Term         uint64 `json:"term"`
	// BackupID is the server's id of the backup (for its logs).
	BackupID string `json:"backup_id"`
	// Server is the client address the backup was read from.
	Server string `json:"server"`
	// TotalBytes is the sum of the files' sizes.
	TotalBytes int64 `json:"total_bytes"`
	// Files are the engine checkpoint's files, sorted by name.
	Files []BackupFile `json:"files"`
}

// Backup takes an online, consistent backup of the cluster into outDir,
// which must be empty or not exist. The leader checkpoints its engine after
// a read barrier, so the backup holds every write acknowledged before Backup
// was called (and possibly later ones: a prefix of the raft log, up to
// AppliedIndex). The files are read from the leader in chunks of up to
// 4 MiB, each file's SHA-256 checked against the server's while it is
// written, every file and the directory fsynced, and MANIFEST.json written
// last. progress, when not nil, is called with the bytes written so far and
// the total, first with done = 0.
//
// Each request obeys Options.RequestTimeout; ctx bounds the whole backup.
// The backup requests are admin requests: they carry Options.OperatorToken.
// On failure, the files Backup wrote (and outDir, if Backup created it) are
// removed and the server is told to drop the backup.
func (c *Client) Backup(ctx context.Context, outDir string, progress func(done, total int64)) (_ *BackupManifest, retErr error) {
	if outDir == "" {
		return nil, fmt.Errorf("%w: no output directory", ErrInvalidArgument)
	}
	created, err := prepareOutDir(outDir)
	if err != nil {
		return nil, err
	}
	var written []string
	defer func() {
		if retErr == nil {
			return
		}
		for _, p := range written {
			_ = os.Remove(p)
		}
		if created {
			_ = os.Remove(outDir)
		}
	}()

	a, err := c.do(ctx, request{op: wire.OpBackupBegin, leaderOnly: true})
	if err != nil {
		return nil, err
	}
	if err := statusError(a.st, a.payload); err != nil {
		return nil, err
	}
	addr := a.addr // every later request goes to the node that holds the backup
	info, err := wire.DecodeBackupInfo(a.payload)
	if err != nil {
		return nil, fmt.Errorf("%w: BACKUP_BEGIN reply from %s: %w", ErrProtocol, addr, err)
	}
	id := info.ID
	defer func() {
		// Best effort: the server drops an abandoned backup by itself after
		// a few idle minutes.
		ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.RequestTimeout)
		defer cancel()
		_, _ = c.do(ectx, request{op: wire.OpBackupEnd, inner: wire.AppendBackupID(nil, id), fixed: addr})
	}()
	for !info.Ready {
		// The server is still computing checksums; each STATUS waits up to a
		// second for them.
		a, err := c.do(ctx, request{op: wire.OpBackupStatus, inner: wire.AppendBackupID(nil, id), fixed: addr})
		if err != nil {
			return nil, err
		}
		if err := statusError(a.st, a.payload); err != nil {
			return nil, err
		}
		if info, err = wire.DecodeBackupInfo(a.payload); err != nil {
			return nil, fmt.Errorf("%w: BACKUP_STATUS reply from %s: %w", ErrProtocol, addr, err)
		}
		if info.ID != id {
			return nil, fmt.Errorf("%w: BACKUP_STATUS reply from %s is about backup %q, not %q", ErrProtocol, addr, info.ID, id)
		}
	}

	m := &BackupManifest{
		Format: BackupFormat, Created: time.UnixMilli(int64(info.CreatedUnixMs)).UTC(),
		NodeID: info.NodeID, AppliedIndex: info.AppliedIndex, Term: info.AppliedTerm,
		BackupID: id, Server: addr, Files: []BackupFile{},
	}
	seen := map[string]bool{}
	for _, f := range info.Files {
		if !wire.ValidBackupFileName(f.Name) || f.Name == BackupManifestName || seen[f.Name] || f.Size > 1<<62 {
			return nil, fmt.Errorf("%w: %s lists a bad backup file %q (size %d)", ErrProtocol, addr, f.Name, f.Size)
		}
		seen[f.Name] = true
		m.TotalBytes += int64(f.Size)
		m.Files = append(m.Files, BackupFile{Name: f.Name, Size: int64(f.Size), SHA256: hex.EncodeToString(f.SHA256[:])})
	}
	var done int64
	if progress != nil {
		progress(0, m.TotalBytes)
	}
	for i, f := range info.Files {
		path := filepath.Join(outDir, f.Name)
		out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, err
		}
		written = append(written, path)
		err = c.readBackupFile(ctx, addr, id, f, out, func(n int) {
			done += int64(n)
			if progress != nil {
				progress(done, m.TotalBytes)
			}
		})
		if err == nil {
			err = out.Sync()
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("backup file %s (%d of %d): %w", f.Name, i+1, len(info.Files), err)
		}
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(outDir, BackupManifestName)
	written = append(written, path+".tmp", path)
	if err := durable.WriteFile(outDir, path, append(b, '\n')); err != nil {
		return nil, err
	}
	return m, nil
}

// readBackupFile copies one file of a backup into out, checking its size
// and SHA-256.
func (c *Client) readBackupFile(ctx context.Context, addr, id string, f wire.BackupFile, out io.Writer, advance func(int)) error {
	h := sha256.New()
	var off uint64
	for off < f.Size {
		n := uint32(min(f.Size-off, wire.MaxBackupChunk))
		a, err := c.do(ctx, request{op: wire.OpBackupRead, fixed: addr,
			inner: wire.AppendBackupRead(nil, wire.BackupRead{ID: id, File: f.Name, Offset: off, Length: n})})
		if err != nil {
			return err
		}
		if err := statusError(a.st, a.payload); err != nil {
			return err
		}
		data, err := wire.DecodeBackupData(a.payload)
		if err != nil {
			return fmt.Errorf("%w: BACKUP_READ reply from %s: %w", ErrProtocol, addr, err)
		}
		if len(data) == 0 || len(data) > int(n) {
			return fmt.Errorf("%w: %s sent %d bytes at offset %d, %d were asked for (the file has %d)", ErrProtocol, addr, len(data), off, n, f.Size)
		}
		h.Write(data)
		if _, err := out.Write(data); err != nil {
			return err
		}
		off += uint64(len(data))
		advance(len(data))
	}
	if got := h.Sum(nil); !bytes.Equal(got, f.SHA256[:]) {
		return fmt.Errorf("%w: the data received has SHA-256 %x, the server's checksum is %x", ErrBackupInvalid, got, f.SHA256)
	}
	return nil
}

// prepareOutDir makes sure dir exists and is empty; created reports that
// it was created (with its missing parents, made durable).
func prepareOutDir(dir string) (created bool, err error) {
	ents, err := os.ReadDir(dir)
	switch {
	case err == nil:
		if len(ents) > 0 {
			return false, fmt.Errorf("%w: backup directory %s is not empty (it holds %s); choose a new or empty directory", ErrInvalidArgument, dir, ents[0].Name())
		}
		return false, nil
	case !errors.Is(err, os.ErrNotExist):
		return false, fmt.Errorf("backup directory %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	return true, durable.SyncDir(filepath.Dir(filepath.Clean(dir)))
}

// ReadBackupManifest reads and checks dir/MANIFEST.json: the format, and
// that every file name is a plain name listed once. It does not read the
// files (VerifyBackup does). A missing manifest matches os.ErrNotExist; a
// bad one ErrBackupInvalid. Errors name the file.
func ReadBackupManifest(dir string) (*BackupManifest, error) {
	path := filepath.Join(dir, BackupManifestName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s is missing: %s holds no finished KayaDB backup: %w", path, dir, err)
	}
	if err != nil {
		return nil, err
	}
	var m BackupManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %s does not decode: %v", ErrBackupInvalid, path, err)
	}
	if m.Format != BackupFormat {
		return nil, fmt.Errorf("%w: %s: format %q, want %q", ErrBackupInvalid, path, m.Format, BackupFormat)
	}
	if len(m.Files) == 0 {
		return nil, fmt.Errorf("%w: %s lists no files", ErrBackupInvalid, path)
	}
	seen := map[string]bool{}
	var total int64
	for _, f := range m.Files {
		switch {
		case !wire.ValidBackupFileName(f.Name) || f.Name == BackupManifestName:
			return nil, fmt.Errorf("%w: %s lists a bad file name %q (not a plain file name)", ErrBackupInvalid, path, f.Name)
		case seen[f.Name]:
			return nil, fmt.Errorf("%w: %s lists %s twice", ErrBackupInvalid, path, f.Name)
		case f.Size < 0:
			return nil, fmt.Errorf("%w: %s: %s has a negative size", ErrBackupInvalid, path, f.Name)
		}
		if s, err := hex.DecodeString(f.SHA256); err != nil || len(s) != sha256.Size {
			return nil, fmt.Errorf("%w: %s: the sha256 of %s is not 64 hex digits", ErrBackupInvalid, path, f.Name)
		}
		seen[f.Name] = true
		total += f.Size
	}
	if total != m.TotalBytes {
		return nil, fmt.Errorf("%w: %s: total_bytes is %d, the files add up to %d", ErrBackupInvalid, path, m.TotalBytes, total)
	}
	return &m, nil
}

// VerifyBackup reads dir's manifest and checks every file it lists: present,
// of the listed size, with the listed SHA-256. progress, when not nil, is
// called with the bytes checked so far and the total. Errors name the file;
// damage matches ErrBackupInvalid, a missing file os.ErrNotExist too.
func VerifyBackup(dir string, progress func(done, total int64)) (*BackupManifest, error) {
	m, err := ReadBackupManifest(dir)
	if err != nil {
		return nil, err
	}
	var done int64
	for _, f := range m.Files {
		if err := CheckBackupFile(dir, f, nil, func(n int64) {
			done += n
			if progress != nil {
				progress(done, m.TotalBytes)
			}
		}); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// CheckBackupFile checks one file of a backup in dir against its manifest
// entry, copying its contents to copyTo (when not nil) as it reads them.
// advance (when not nil) is told how many bytes were read.
func CheckBackupFile(dir string, f BackupFile, copyTo io.Writer, advance func(int64)) error {
	path := filepath.Join(dir, f.Name)
	in, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %s is missing (listed in %s): %w", ErrBackupInvalid, path, BackupManifestName, err)
	}
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if st.Size() != f.Size {
		what := "truncated"
		if st.Size() > f.Size {
			what = "longer than listed"
		}
		return fmt.Errorf("%w: %s is %s: %d bytes, %s says %d", ErrBackupInvalid, path, what, st.Size(), BackupManifestName, f.Size)
	}
	h := sha256.New()
	w := io.Writer(h)
	if copyTo != nil {
		w = io.MultiWriter(h, copyTo)
	}
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := in.Read(buf)
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				return werr
			}
			n += int64(k)
			if advance != nil {
				advance(int64(k))
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
	}
	if n != f.Size {
		return fmt.Errorf("%w: %s changed while it was read: %d bytes, %s says %d", ErrBackupInvalid, path, n, BackupManifestName, f.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, f.SHA256) {
		return fmt.Errorf("%w: %s does not match its checksum: SHA-256 %s, %s says %s", ErrBackupInvalid, path, got, BackupManifestName, f.SHA256)
	}
	return nil
}
