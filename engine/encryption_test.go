package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

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

// ring returns a keyring over testKeyring's fixed keys with the given ids,
// the last one active.
func ring(t *testing.T, ids ...crypt.KeyID) *Keyring { return testKeyring(t, ids...) }

// tablesUnder writes n values in batches of 100 with a flush after each.
func writeTables(t *testing.T, db *DB, from, n int) {
	t.Helper()
	for i := from; i < from+n; i += 100 {
		put(t, db, i, min(i+100, from+n))
		if err := db.Flush(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpenChecksTableKeys: a directory whose tables use a key the keyring
// lacks, or a different key under their id, does not open; the error names
// the table and the key id. Here the MANIFEST and WAL use a key that is
// present, so only the tables are at fault.
func TestOpenChecksTableKeys(t *testing.T) {
	mem := vfs.NewMem()
	o := encOpts(mem, NewSealer(ring(t, 1)))
	o.DisableAutomaticCompactions = true // keep the key-1 tables as they are
	db := mustOpen(t, o)
	writeTables(t, db, 0, 300)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// Rewrite the MANIFEST under key 2 (tables stay under key 1).
	o.Encryption = NewSealer(ring(t, 1, 2))
	db = mustOpen(t, o)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	wrong1, err := crypt.New(map[crypt.KeyID][]byte{1: bytes.Repeat([]byte{0xaa}, 32), 2: bytes.Repeat([]byte{3}, 32)}, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		r    *Keyring
		want error
	}{
		{"key 1 missing", ring(t, 2), crypt.ErrUnknownKey},
		{"wrong key 1", wrong1, crypt.ErrDecrypt},
	} {
		t.Run(c.name, func(t *testing.T) {
			o2 := *o
			o2.Encryption = NewSealer(c.r)
			_, err := Open("/db", &o2)
			if !errors.Is(err, c.want) {
				t.Fatalf("open: %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), ".sst") || !strings.Contains(err.Error(), "key id 1") {
				t.Fatalf("error %q does not name the table and key id 1", err)
			}
			if _, err := CheckRecovery("/db", &o2); !errors.Is(err, c.want) {
				t.Fatalf("CheckRecovery: %v", err)
			}
		})
	}
	db = mustOpen(t, o)
	checkValues(t, db, 0, 300)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// waitNoStaleTables waits until the background rewrite has left no table
// under an old key (or the DB failed); it fails the test after a minute.
func waitNoStaleTables(t *testing.T, db *DB) {
	t.Helper()
	// The compaction loop broadcasts after every compaction; a ticker
	// broadcasts too, so that a rewrite that finished between the check
	// and the wait (a wake-up the waiter missed) is seen within 50 ms
	// rather than never.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	stopTick := make(chan struct{})
	defer close(stopTick)
	go func() {
		for {
			select {
			case <-tick.C:
				db.mu.Lock()
				db.mu.cond.Broadcast()
				db.mu.Unlock()
			case <-stopTick:
				return
			}
		}
	}()
	deadline := time.Now().Add(time.Minute)
	for db.Metrics().Encryption.StaleTables > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("tables still under old keys after a minute: %+v", db.EncryptionStatus())
		}
		db.mu.Lock()
		if db.mu.bgErr != nil {
			db.mu.Unlock()
			t.Fatalf("background error: %v", db.mu.bgErr)
		}
		if !db.mu.compacting {
			db.maybeScheduleCompactionLocked()
		}
		db.mu.cond.Wait()
		db.mu.Unlock()
	}
}

// TestRotationUnderLoad rotates the keyring while a writer runs, lets the
// background rewrite finish and checks that every live file uses the new
// key and that every key reads back its last written value (a model).
func TestRotationUnderLoad(t *testing.T) {
	mem := vfs.NewMem()
	s := NewSealer(ring(t, 1))
	o := crashOptions(mem)
	o.Encryption = s
	db := mustOpen(t, o)
	// Start from a plain-free, key-1 state with tables on several levels.
	writeTables(t, db, 0, 600)

	model := map[string]string{}
	var mu sync.Mutex
	stop := make(chan struct{})
	done := make(chan error, 1)
	written := make(chan struct{}, 1)
	go func() {
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			k := fmt.Sprintf("w%05d", rng.IntN(3000))
			v := fmt.Sprintf("%s-%d-%s", k, i, strings.Repeat("x", rng.IntN(300)))
			if err := db.Set([]byte(k), []byte(v), NoSync); err != nil {
				done <- err
				return
			}
			mu.Lock()
			model[k] = v
			mu.Unlock()
			if i == 2000 {
				written <- struct{}{}
			}
		}
	}()
	<-written // the writer is well under way
	if err := db.SetKeyring(ring(t, 1, 2)); err != nil {
		t.Fatal(err)
	}
	// Refused: a keyring without key 1 while tables use it.
	if err := db.SetKeyring(ring(t, 2)); err == nil || !strings.Contains(err.Error(), "key id 1") {
		t.Fatalf("dropping a key in use: %v", err)
	}
	writeTables(t, db, 600, 300) // more tables, now under key 2
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	waitNoStaleTables(t, db)
	st := db.EncryptionStatus()
	if st.ActiveKey != 2 || st.StaleTables != 0 || st.TablesByKey["1"] != 0 || st.TablesByKey["2"] == 0 {
		t.Fatalf("status after the rewrite: %+v", st)
	}
	if db.Metrics().Encryption.Rewrites == 0 {
		t.Fatal("no rewrite compaction ran")
	}
	for _, f := range st.Files {
		if f.Kind == FileKindTable && (f.Plain || len(f.Keys) != 1 || f.Keys[0] != 2) {
			t.Fatalf("table %+v is not under key 2", f)
		}
	}
	check := func(db *DB) {
		t.Helper()
		checkValues(t, db, 0, 900)
		for k, v := range model {
			got, err := db.Get([]byte(k))
			if err != nil || string(got) != v {
				t.Fatalf("get %s: %.20q, %v; want %.20q", k, got, err, v)
			}
		}
	}
	check(db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// Nothing needs key 1 any more: the tables were rewritten, and the
	// MANIFEST and WAL were written under key 2 since the rotation.
	o.Encryption = NewSealer(ring(t, 2))
	db = mustOpen(t, o)
	check(db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestEncryptionStatusAndVerify: the running DB's report and the offline
// check list the MANIFEST, the WAL and the tables with their keys
// ("plain" included), and the offline check fails naming the file when a
// key is missing.
func TestEncryptionStatusAndVerify(t *testing.T) {
	mem := vfs.NewMem()
	o := encOpts(mem, nil)
	o.DisableAutomaticCompactions = true
	db := mustOpen(t, o)
	writeTables(t, db, 0, 100) // one plain table
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	o.Encryption = NewSealer(ring(t, 3))
	db = mustOpen(t, o)
	writeTables(t, db, 100, 100) // one table under key 3
	put(t, db, 200, 210)         // WAL records under key 3
	st := db.EncryptionStatus()
	kinds := map[string]int{}
	for _, f := range st.Files {
		kinds[f.Kind]++
		if f.Kind != FileKindTable && (f.Plain || !slices.Equal(f.Keys, []uint32{3})) {
			t.Fatalf("%+v: want key 3 only", f)
		}
	}
	if kinds[FileKindManifest] != 1 || kinds[FileKindWAL] != 1 || kinds[FileKindTable] != 2 {
		t.Fatalf("files %+v", st.Files)
	}
	if st.TablesByKey["plain"] != 1 || st.TablesByKey["3"] != 1 || st.StaleTables != 1 || !st.Enabled || st.ActiveKey != 3 {
		t.Fatalf("status %+v", st)
	}
	if _, err := VerifyEncryption("/db", o); !errors.Is(err, ErrLocked) {
		t.Fatalf("verify of an open DB: %v", err)
	}
	crashed := mem.CrashClone(vfs.CrashCloneOptions{})
	_ = db.Close()

	o2 := *o
	o2.FS = crashed
	vst, err := VerifyEncryption("/db", &o2)
	if err != nil {
		t.Fatal(err)
	}
	if len(vst.Files) != len(st.Files) {
		t.Fatalf("verify lists %+v, the DB listed %+v", vst.Files, st.Files)
	}
	for i := range vst.Files {
		a, b := vst.Files[i], st.Files[i]
		if a.File != b.File || a.Kind != b.Kind || a.Plain != b.Plain || !slices.Equal(a.Keys, b.Keys) || a.Error != "" {
			t.Fatalf("verify: %+v, DB: %+v", a, b)
		}
	}
	o2.Encryption = NewSealer(ring(t, 4))
	_, err = VerifyEncryption("/db", &o2)
	if !errors.Is(err, crypt.ErrUnknownKey) || !strings.Contains(err.Error(), "MANIFEST-") || !strings.Contains(err.Error(), "key id 3") {
		t.Fatalf("verify with the wrong keyring: %v", err)
	}
}
