package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/lsm/base"
)

// encryptedFixture is a closed encrypted database (key file of 32 bytes,
// key id 0) with one table, a WAL and a MANIFEST, and its key file.
func encryptedFixture(t *testing.T) (fx fixture, keyFile string) {
	t.Helper()
	keyFile = filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, bytes.Repeat([]byte{0x42}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := engine.LoadKeyring(keyFile, false)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	db, err := engine.Open(dir, &engine.Options{DisableAutomaticCompactions: true, Encryption: engine.NewSealer(r)})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b", "c"} {
		if err := db.Set([]byte(k), []byte("secret-"+k), engine.Sync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Set([]byte("x"), []byte("secret-x"), engine.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return fixture{
		dir:      dir,
		wal:      newestFile(t, dir, base.FileTypeLog),
		sst:      newestFile(t, dir, base.FileTypeTable),
		manifest: newestFile(t, dir, base.FileTypeManifest),
	}, keyFile
}

// TestInspectEncrypted: without a key the inspectors say that the file is
// encrypted and which flag to pass; with the key they decode it and say
// which key sealed it. recover --dry-run too.
func TestInspectEncrypted(t *testing.T) {
	fx, keyFile := encryptedFixture(t)
	for _, c := range []struct{ kind, path, want string }{
		{"wal", fx.wal, "secret-x"},
		{"manifest", fx.manifest, "log number"},
		{"sstable", fx.sst, "secret-a"},
	} {
		r := inspect(t, c.kind, "--values", c.path)
		if c.kind == "manifest" {
			r = inspect(t, c.kind, c.path)
		}
		if r.code == ExitOK || !strings.Contains(r.stderr, "is encrypted (key id 0) and no key was given") ||
			!strings.Contains(r.stderr, "--encryption-key-file") {
			t.Fatalf("%s without a key:\n%s", c.kind, r)
		}
		args := []string{c.kind, "--encryption-key-file", keyFile, c.path}
		if c.kind != "manifest" {
			args = append(args, "--values")
		}
		r = inspect(t, args...)
		if r.code != ExitOK || !strings.Contains(r.stdout, c.want) || !strings.Contains(r.stdout, "key id") {
			t.Fatalf("%s with the key:\n%s", c.kind, r)
		}
	}
	// Both flags at once is a usage error.
	if r := inspect(t, "wal", "--encryption-key-file", keyFile, "--encryption-keyring-file", keyFile, fx.wal); r.code != ExitInvalidArgument {
		t.Fatalf("both flags:\n%s", r)
	}
	r := runEnv(t, nil, "--data", fx.dir, "recover", "--dry-run")
	if r.code == ExitOK || !strings.Contains(r.stderr, "no key was given") {
		t.Fatalf("recover --dry-run without a key:\n%s", r)
	}
	r = runEnv(t, nil, "--data", fx.dir, "recover", "--dry-run", "--encryption-key-file", keyFile)
	if r.code != ExitOK {
		t.Fatalf("recover --dry-run with the key:\n%s", r)
	}
}
