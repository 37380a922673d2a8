package engine

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/vfs"
)

// encOpts returns small options over fs that encrypt with s (nil: plain).
// Tables stay in memtables unless flushed: the tests of WAL and MANIFEST
// sealing see no table.
func encOpts(fs vfs.FS, s *Sealer) *Options {
	return &Options{FS: fs, MemTableSize: 1 << 20, BlockSize: 512, CacheSize: -1, Encryption: s, WALPreallocateBytes: -1}
}

// secret is a value that must never appear in the clear in an encrypted
// directory.
func secret(i int) string { return fmt.Sprintf("s3cr3t-value-%04d", i) }

// filesHolding returns the files under dir that hold needle in the clear.
func filesHolding(t *testing.T, fs vfs.FS, dir string, needle string) []string {
	t.Helper()
	names, err := fs.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, n := range names {
		if n == base.LockFileName {
			continue
		}
		if bytes.Contains(readFile(t, fs, filepath.Join(dir, n)), []byte(needle)) {
			found = append(found, n)
		}
	}
	return found
}

func mustOpen(t *testing.T, o *Options) *DB {
	t.Helper()
	db, err := Open("/db", o)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return db
}

func checkValues(t *testing.T, db *DB, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		v, err := db.Get([]byte(fmt.Sprintf("k%04d", i)))
		if err != nil || string(v) != secret(i) {
			t.Fatalf("get k%04d: %q, %v; want %q", i, v, err, secret(i))
		}
	}
}

func put(t *testing.T, db *DB, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := db.Set([]byte(fmt.Sprintf("k%04d", i)), []byte(secret(i)), Sync); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEncryptedWALAndManifest: with a key, the WAL and the MANIFEST hold no
// plaintext key or value, and reopening replays them.
func TestEncryptedWALAndManifest(t *testing.T) {
	mem := vfs.NewMem()
	s := NewSealer(testKeyring(t, 3))
	db := mustOpen(t, encOpts(mem, s))
	put(t, db, 0, 50)
	// Crash (no close): recovery must replay the sealed WAL.
	crashed := mem.CrashClone(vfs.CrashCloneOptions{})
	_ = db.Close()
	if f := filesHolding(t, crashed, "/db", "s3cr3t"); len(f) != 0 {
		t.Fatalf("plaintext values in %v", f)
	}
	if f := filesHolding(t, crashed, "/db", "k0042"); len(f) != 0 {
		t.Fatalf("plaintext keys in %v", f)
	}
	db = mustOpen(t, encOpts(crashed, s))
	if got := db.RecoveryReport().RecordsReplayed; got != 50 {
		t.Fatalf("replayed %d records, want 50", got)
	}
	checkValues(t, db, 0, 50)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPlainDirectoryTurnsEncrypted: a plain directory opened with a key
// keeps reading its plain WAL and MANIFEST and writes sealed from then on.
func TestPlainDirectoryTurnsEncrypted(t *testing.T) {
	mem := vfs.NewMem()
	db := mustOpen(t, encOpts(mem, nil))
	put(t, db, 0, 20)
	crashed := mem.CrashClone(vfs.CrashCloneOptions{})
	_ = db.Close()
	if f := filesHolding(t, crashed, "/db", secret(3)); len(f) == 0 {
		t.Fatal("the plain WAL should hold the values in the clear")
	}

	s := NewSealer(testKeyring(t, 1))
	db = mustOpen(t, encOpts(crashed, s))
	checkValues(t, db, 0, 20)
	put(t, db, 20, 40)
	crashed2 := crashed.CrashClone(vfs.CrashCloneOptions{})
	_ = db.Close()
	// The values written with the key are sealed in the new WAL; the old
	// values went into a table at recovery (tables are step 2's subject).
	for i := 20; i < 40; i++ {
		for _, f := range filesHolding(t, crashed2, "/db", secret(i)) {
			if strings.HasSuffix(f, ".log") || strings.HasPrefix(f, "MANIFEST") {
				t.Fatalf("%s holds %s in the clear", f, secret(i))
			}
		}
	}
	db = mustOpen(t, encOpts(crashed2, s))
	checkValues(t, db, 0, 40)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestEncryptedOpenWithoutKeyFails: a directory whose WAL or MANIFEST is
// sealed does not open without the key, nor under a keyring that lacks the
// key or holds a different key under its id; the error names the file and
// the key id, and nothing is dropped as a torn tail.
func TestEncryptedOpenWithoutKeyFails(t *testing.T) {
	mem := vfs.NewMem()
	s := NewSealer(testKeyring(t, 5))
	db := mustOpen(t, encOpts(mem, s))
	put(t, db, 0, 10)
	crashed := mem.CrashClone(vfs.CrashCloneOptions{})
	_ = db.Close()

	wrong, err := crypt.New(map[crypt.KeyID][]byte{5: bytes.Repeat([]byte{0xee}, 32)}, 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		sealer *Sealer
		want   error
	}{
		{"no key", nil, crypt.ErrUnknownKey},
		{"other key id", NewSealer(testKeyring(t, 6)), crypt.ErrUnknownKey},
		{"wrong key under the id", NewSealer(wrong), crypt.ErrDecrypt},
	} {
		t.Run(c.name, func(t *testing.T) {
			disk := crashed.CrashClone(vfs.CrashCloneOptions{UnsyncedKeepProbability: 1})
			_, err := Open("/db", encOpts(disk, c.sealer))
			if err == nil {
				t.Fatal("open succeeded")
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v does not match %v", err, c.want)
			}
			if !strings.Contains(err.Error(), "MANIFEST-") || !strings.Contains(err.Error(), "key id 5") {
				t.Fatalf("error %q does not name the MANIFEST and key id 5", err)
			}
			// Nothing was changed: the right key still opens everything.
			db := mustOpen(t, encOpts(disk, s))
			checkValues(t, db, 0, 10)
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestEncryptedNoPlaintextInTables: after flushes and compactions with
// encryption on, no file of the directory holds a key or value in the
// clear, every table is sealed with the active key, and everything reads
// back after a reopen.
func TestEncryptedNoPlaintextInTables(t *testing.T) {
	mem := vfs.NewMem()
	s := NewSealer(testKeyring(t, 4))
	o := crashOptions(mem)
	o.Encryption = s
	db := mustOpen(t, o)
	for round := 0; round < 4; round++ {
		put(t, db, round*300, round*300+300)
		if err := db.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Compact(nil, nil); err != nil {
		t.Fatal(err)
	}
	tables := 0
	for _, l := range db.Metrics().Levels {
		tables += l.NumFiles
	}
	if tables == 0 {
		t.Fatal("no tables were written")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, needle := range []string{"s3cr3t", "k0042", "k1100"} {
		if f := filesHolding(t, mem, "/db", needle); len(f) != 0 {
			t.Fatalf("%q in the clear in %v", needle, f)
		}
	}
	db = mustOpen(t, o)
	checkValues(t, db, 0, 1200)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}
