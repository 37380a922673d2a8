package durable

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "MANIFEST.json")
	for _, content := range []string{"first\n", "second, longer\n"} {
		if err := WriteFile(dir, name, []byte(content)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(name)
		if err != nil || string(b) != content {
			t.Fatalf("read back %q %v, want %q", b, err, content)
		}
		fi, err := os.Stat(name)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("mode %v %v, want 0600", fi.Mode().Perm(), err)
		}
		if _, err := os.Stat(name + ".tmp"); !os.IsNotExist(err) {
			t.Fatalf("the temporary file is left: %v", err)
		}
	}
	// A directory that does not exist: an error, nothing written.
	missing := filepath.Join(dir, "missing")
	if err := WriteFile(missing, filepath.Join(missing, "x"), []byte("x")); err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
	if err := SyncDir(missing); err == nil {
		t.Fatal("syncing a missing directory succeeded")
	}
	if err := SyncDir(dir); err != nil {
		t.Fatal(err)
	}
}
