package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/kayadb/kayadb/internal/wire"
)

// fakeBackup makes a fakeServer hold one backup with the given files.
// corrupt, when set, may change the bytes of a READ reply.
type fakeBackup struct {
	files   map[string][]byte
	list    []wire.BackupFile // as announced (names may be changed by a test)
	corrupt func(name string, off uint64, data []byte) []byte

	mu    sync.Mutex
	ended []string
}

func (fb *fakeBackup) endedIDs() []string {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	return slices.Clone(fb.ended)
}

const fakeBackupID = "00112233445566aa"

func newFakeBackup(files map[string][]byte) *fakeBackup {
	fb := &fakeBackup{files: files}
	for _, n := range []string{"000005.sst", "CURRENT", "MANIFEST-000007"} {
		if b, ok := files[n]; ok {
			fb.list = append(fb.list, wire.BackupFile{Name: n, Size: uint64(len(b)), SHA256: sha256.Sum256(b)})
		}
	}
	return fb
}

func (fb *fakeBackup) info(ready bool) []byte {
	bi := &wire.BackupInfo{ID: fakeBackupID, NodeID: 1, AppliedIndex: 42, AppliedTerm: 3, CreatedUnixMs: 1700000000000, Ready: ready}
	if ready {
		bi.Files = fb.list
	}
	return wire.AppendBackupInfo(nil, bi)
}

// handler answers the backup opcodes (after the fake server's default
// token check has been skipped: tests that need tokens check them here).
func (fb *fakeBackup) handler(token string) func(r *fakeReq) (fakeAction, bool) {
	return func(r *fakeReq) (fakeAction, bool) {
		if !wire.IsAdmin(r.op) {
			return fakeAction{}, false
		}
		p := r.payload
		if token != "" {
			tok, prefixed, inner, err := wire.SplitAdmin(r.op, p)
			if err != nil || !prefixed || tok != token {
				return errAction(wire.StatusError, wire.MsgOperatorCredential), true
			}
			p = inner
		}
		switch r.op {
		case wire.OpBackupBegin:
			return fakeAction{payload: fb.info(false)}, true // not ready: the client asks STATUS
		case wire.OpBackupStatus:
			return fakeAction{payload: fb.info(true)}, true
		case wire.OpBackupRead:
			rd, err := wire.DecodeBackupRead(p)
			if err != nil || rd.ID != fakeBackupID {
				return errAction(wire.StatusInvalidArgument, "bad read"), true
			}
			b := fb.files[rd.File]
			if rd.Offset > uint64(len(b)) || rd.Length == 0 || rd.Length > wire.MaxBackupChunk {
				return errAction(wire.StatusInvalidArgument, "bad range"), true
			}
			data := bytes.Clone(b[rd.Offset:min(uint64(len(b)), rd.Offset+uint64(rd.Length))])
			if fb.corrupt != nil {
				data = fb.corrupt(rd.File, rd.Offset, data)
			}
			return fakeAction{payload: wire.AppendBackupData(nil, data)}, true
		case wire.OpBackupEnd:
			id, _ := wire.DecodeBackupID(p)
			fb.mu.Lock()
			fb.ended = append(fb.ended, id)
			fb.mu.Unlock()
			return fakeAction{}, true
		}
		return fakeAction{}, false
	}
}

func backupFiles() map[string][]byte {
	big := make([]byte, wire.MaxBackupChunk+12345) // two chunks
	r := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	return map[string][]byte{"000005.sst": big, "CURRENT": []byte("MANIFEST-000007\n"), "MANIFEST-000007": {}}
}

// TestBackupWritesVerifiedFiles: Backup polls STATUS until the checksums are
// ready, reads every file in chunks with the operator token, writes the
// files and MANIFEST.json, reports progress and ends the backup.
func TestBackupWritesVerifiedFiles(t *testing.T) {
	const tok = "operator-token-0123456789"
	fs := newFakeServer(t)
	files := backupFiles()
	fb := newFakeBackup(files)
	fs.setHandler(fb.handler(tok))
	c, err := New([]string{fs.addr}, &Options{OperatorToken: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out := filepath.Join(t.TempDir(), "b", "c")
	var calls [][2]int64
	m, err := c.Backup(context.Background(), out, func(done, total int64) { calls = append(calls, [2]int64{done, total}) })
	if err != nil {
		t.Fatal(err)
	}
	total := int64(len(files["000005.sst"]) + len(files["CURRENT"]))
	if m.Format != BackupFormat || m.NodeID != 1 || m.AppliedIndex != 42 || m.Term != 3 || m.BackupID != fakeBackupID ||
		m.TotalBytes != total || len(m.Files) != 3 || m.Created.UnixMilli() != 1700000000000 {
		t.Fatalf("manifest %+v", m)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: %d bytes, %v", name, len(got), err)
		}
	}
	// MANIFEST.json says the same, and VerifyBackup accepts the directory.
	vm, err := VerifyBackup(out, nil)
	if err != nil || vm.AppliedIndex != 42 || len(vm.Files) != 3 || vm.Files[0].SHA256 != hex.EncodeToString(fb.list[0].SHA256[:]) {
		t.Fatalf("VerifyBackup: %+v %v", vm, err)
	}
	if len(calls) < 3 || calls[0] != [2]int64{0, total} || calls[len(calls)-1] != [2]int64{total, total} {
		t.Fatalf("progress calls: %v", calls)
	}
	for i := 1; i < len(calls); i++ {
		if calls[i][0] < calls[i-1][0] {
			t.Fatalf("progress went back: %v", calls)
		}
	}
	// Two chunks of the large file, one of CURRENT, none of the empty file.
	if ended := fb.endedIDs(); fs.count(wire.OpBackupStatus) == 0 || fs.count(wire.OpBackupRead) != 3 || len(ended) != 1 || ended[0] != fakeBackupID {
		t.Fatalf("STATUS %d, READ %d, ended %v", fs.count(wire.OpBackupStatus), fs.count(wire.OpBackupRead), ended)
	}
	for _, r := range fs.requests(wire.OpBackupRead) {
		if !wire.HasAdminPrefix(r.payload) {
			t.Fatal("BACKUP_READ without the ADMIN prefix")
		}
	}
	// The directory is not empty any more: a second backup into it is refused
	// before anything is sent.
	begins := fs.count(wire.OpBackupBegin)
	if _, err := c.Backup(context.Background(), out, nil); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("backup into a non-empty directory: %v", err)
	}
	if fs.count(wire.OpBackupBegin) != begins {
		t.Fatal("BEGIN sent for a non-empty directory")
	}
}

// TestBackupRefusesBadData: data that does not match the server's checksum,
// a short reply and a file name with a directory part fail the backup,
// leave nothing behind and end the backup on the server.
func TestBackupRefusesBadData(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(fb *fakeBackup)
		wantErr error
		want    string
	}{
		{"flipped byte in the second chunk", func(fb *fakeBackup) {
			fb.corrupt = func(name string, off uint64, data []byte) []byte {
				if name == "000005.sst" && off > 0 {
					data[7] ^= 1
				}
				return data
			}
		}, ErrBackupInvalid, "000005.sst"},
		{"empty reply before the end", func(fb *fakeBackup) {
			fb.corrupt = func(name string, off uint64, data []byte) []byte {
				if off > 0 {
					return nil
				}
				return data
			}
		}, ErrProtocol, "000005.sst"},
		{"path in a file name", func(fb *fakeBackup) {
			fb.list[1].Name = "../CURRENT"
		}, ErrProtocol, `"../CURRENT"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFakeServer(t)
			fb := newFakeBackup(backupFiles())
			tc.setup(fb)
			fs.setHandler(fb.handler(""))
			c, err := New([]string{fs.addr}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			parent := t.TempDir()
			out := filepath.Join(parent, "backup")
			_, err = c.Backup(context.Background(), out, nil)
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %v naming %s", err, tc.wantErr, tc.want)
			}
			if ents, _ := os.ReadDir(parent); len(ents) != 0 {
				t.Fatalf("left behind: %v", ents)
			}
			if ended := fb.endedIDs(); len(ended) != 1 {
				t.Fatalf("the backup was not ended on the server: %v", ended)
			}
		})
	}
}

// TestVerifyBackupNamesDamagedFiles checks VerifyBackup and
// ReadBackupManifest on damaged copies of a backup.
func TestVerifyBackupNamesDamagedFiles(t *testing.T) {
	fs := newFakeServer(t)
	fb := newFakeBackup(backupFiles())
	fs.setHandler(fb.handler(""))
	c, err := New([]string{fs.addr}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	good := filepath.Join(t.TempDir(), "good")
	if _, err := c.Backup(context.Background(), good, nil); err != nil {
		t.Fatal(err)
	}
	damage := func(t *testing.T, f func(dir string)) string {
		dir := filepath.Join(t.TempDir(), "copy")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		ents, _ := os.ReadDir(good)
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(good, e.Name()))
			if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		f(dir)
		return dir
	}
	editManifest := func(old, new string) func(dir string) {
		return func(dir string) {
			p := filepath.Join(dir, BackupManifestName)
			b, _ := os.ReadFile(p)
			if !bytes.Contains(b, []byte(old)) {
				t.Fatalf("manifest lacks %q", old)
			}
			_ = os.WriteFile(p, bytes.Replace(b, []byte(old), []byte(new), 1), 0o600)
		}
	}
	sst := filepath.Join("%s", "000005.sst")
	for _, tc := range []struct {
		name     string
		f        func(dir string)
		notExist bool
		want     string // a format: %s is the directory
	}{
		{"flipped byte", func(dir string) {
			p := filepath.Join(dir, "000005.sst")
			b, _ := os.ReadFile(p)
			b[len(b)/2] ^= 0x40
			_ = os.WriteFile(p, b, 0o600)
		}, false, sst + " does not match its checksum"},
		{"truncated", func(dir string) { _ = os.Truncate(filepath.Join(dir, "000005.sst"), 100) }, false, sst + " is truncated"},
		{"missing file", func(dir string) { _ = os.Remove(filepath.Join(dir, "CURRENT")) }, true, filepath.Join("%s", "CURRENT") + " is missing"},
		{"missing manifest", func(dir string) { _ = os.Remove(filepath.Join(dir, BackupManifestName)) }, true, filepath.Join("%s", BackupManifestName) + " is missing"},
		{"wrong checksum", editManifest(hex.EncodeToString(fb.list[1].SHA256[:]), strings.Repeat("0", 64)), false, filepath.Join("%s", "CURRENT") + " does not match its checksum"},
		{"path in a name", editManifest(`"name": "CURRENT"`, `"name": "../CURRENT"`), false, `bad file name "../CURRENT"`},
		{"not JSON", func(dir string) { _ = os.WriteFile(filepath.Join(dir, BackupManifestName), []byte("{"), 0o600) }, false, "does not decode"},
		{"other format", editManifest(BackupFormat, "kayadb-backup-v9"), false, `format "kayadb-backup-v9"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := damage(t, tc.f)
			_, err := VerifyBackup(dir, nil)
			want := tc.want
			if strings.Contains(want, "%s") {
				want = strings.ReplaceAll(want, "%s", dir)
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v, want one naming %q", err, want)
			}
			if errors.Is(err, os.ErrNotExist) != tc.notExist {
				t.Fatalf("err = %v: matches os.ErrNotExist %v", err, !tc.notExist)
			}
			if tc.name != "missing manifest" && !errors.Is(err, ErrBackupInvalid) {
				t.Fatalf("err = %v does not match ErrBackupInvalid", err)
			}
		})
	}
}
