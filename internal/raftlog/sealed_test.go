package raftlog

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/vfs"
)

// testSealer returns a Sealer over a keyring of one fresh key, id.
func testSealer(t *testing.T, id crypt.KeyID) *crypt.Sealer {
	t.Helper()
	raw := make([]byte, crypt.KeySize)
	_, _ = rand.Read(raw)
	r, err := crypt.New(map[crypt.KeyID][]byte{id: raw}, id)
	if err != nil {
		t.Fatal(err)
	}
	return crypt.NewSealer(r)
}

// fileContents returns every file under dir, by name.
func fileContents(t *testing.T, fs vfs.FS, dir string) map[string][]byte {
	t.Helper()
	names, err := fs.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, n := range names {
		f, err := fs.Open(dir + "/" + n)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(f)
		_ = f.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[n] = b
	}
	return out
}

// TestSealedLogHoldsNoPlaintext: with a Sealer, entries and hard state
// survive a reopen, and no segment holds an entry's bytes in the clear.
func TestSealedLogHoldsNoPlaintext(t *testing.T) {
	fs := vfs.NewMem()
	s := testSealer(t, 3)
	opts := Options{FS: fs, Dir: "/wal", NodeID: 1, SegmentBytes: 4096, Sealer: s}
	l, _, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	marker := "MARKER-7f3a9c-"
	for i := uint64(1); i <= 100; i++ {
		if err := l.Save(hs(1, 1, i-1), []*pb.Entry{ent(1, i, fmt.Sprintf("%s%03d", marker, i))}, i%5 == 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files := fileContents(t, fs, "/wal")
	if len(files) < 2 {
		t.Fatalf("want several segments, got %d", len(files))
	}
	for name, b := range files {
		if bytes.Contains(b, []byte(marker)) {
			t.Fatalf("%s holds an entry in plaintext", name)
		}
	}
	l, rep, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := entries(t, l)
	if len(got) != 100 || got[99] != "100/1:"+marker+"100" || rep.HardState.GetCommit() != 99 {
		t.Fatalf("reopened %d entries (last %q), hard state %v", len(got), got[len(got)-1], rep.HardState)
	}
	for _, sk := range l.KeyUsage() {
		if !slices.Equal(sk.Keys, []crypt.KeyID{3}) || sk.Plain {
			t.Fatalf("%s: keys %v plain %v, want key 3 only", sk.File, sk.Keys, sk.Plain)
		}
	}
}

// TestSealedLogWithoutTheKey: a sealed log opened with no key, with a
// keyring that lacks its key id, or with another key under the same id
// fails naming the segment file and the key id; nothing is cut off as a
// torn tail (the data is intact on a later open with the right key).
func TestSealedLogWithoutTheKey(t *testing.T) {
	fs := vfs.NewMem()
	s := testSealer(t, 2)
	l, _, err := Open(Options{FS: fs, Dir: "/wal", NodeID: 1, Sealer: s})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 10; i++ {
		if err := l.Save(hs(1, 1, i-1), []*pb.Entry{ent(1, i, "v")}, true); err != nil {
			t.Fatal(err)
		}
	}
	_ = l.Close()
	before := fileContents(t, fs, "/wal")
	for _, c := range []struct {
		name   string
		sealer *crypt.Sealer
		want   string
	}{
		{"no key", nil, "no encryption key"},
		{"other key id", testSealer(t, 1), "key id 2, which the keyring lacks"},
		{"wrong key", testSealer(t, 2), "cannot decrypt with key id 2"},
	} {
		_, _, err := Open(Options{FS: fs, Dir: "/wal", NodeID: 1, Sealer: c.sealer})
		if err == nil {
			t.Fatalf("%s: opened", c.name)
		}
		msg := err.Error()
		if !strings.Contains(msg, c.want) || !strings.Contains(msg, "0000000000000001-0000000000000001.wal") || !strings.Contains(msg, "key id 2") {
			t.Fatalf("%s: %v", c.name, err)
		}
		var ke *crypt.KeyError
		if !errors.As(err, &ke) || ke.ID != 2 {
			t.Fatalf("%s: not a KeyError for key 2: %v", c.name, err)
		}
		for name, b := range fileContents(t, fs, "/wal") {
			if !bytes.Equal(b, before[name]) {
				t.Fatalf("%s: a failed open changed %s", c.name, name)
			}
		}
	}
	l, rep, err := Open(Options{FS: fs, Dir: "/wal", NodeID: 1, Sealer: s})
	if err != nil || rep.LastIndex != 10 {
		t.Fatalf("with the right key: %v, last %d", err, rep.LastIndex)
	}
	_ = l.Close()
}

// TestRotationAndKeyUsage: a plain log opened with a key keeps its plain
// records readable and seals new ones; a rotated keyring applies to the
// next record; KeyUsage (live) and ScanKeys (offline, reopened) agree on
// the keys of every segment.
func TestRotationAndKeyUsage(t *testing.T) {
	fs := vfs.NewMem()
	l, _, err := Open(Options{FS: fs, Dir: "/wal", NodeID: 1, SegmentBytes: 2048})
	if err != nil {
		t.Fatal(err)
	}
	idx := uint64(0)
	save := func(l *Log, n int) {
		for range n {
			idx++
			if err := l.Save(hs(1, 1, idx-1), []*pb.Entry{ent(1, idx, strings.Repeat("p", 100))}, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	save(l, 30)
	_ = l.Close()

	raw1, raw2 := make([]byte, 32), make([]byte, 32)
	_, _ = rand.Read(raw1)
	_, _ = rand.Read(raw2)
	r1, _ := crypt.New(map[crypt.KeyID][]byte{1: raw1}, 1)
	s := crypt.NewSealer(r1)
	l, _, err = Open(Options{FS: fs, Dir: "/wal", NodeID: 1, SegmentBytes: 2048, Sealer: s})
	if err != nil {
		t.Fatal(err)
	}
	save(l, 30)
	r2, _ := crypt.New(map[crypt.KeyID][]byte{1: raw1, 2: raw2}, 2)
	s.SetKeyring(r2)
	save(l, 30)
	live := l.KeyUsage()
	_ = l.Close()

	used := func(sks []SegmentKeys) (keys map[crypt.KeyID]bool, plain bool) {
		keys = map[crypt.KeyID]bool{}
		for _, sk := range sks {
			if sk.Err != nil {
				t.Fatalf("%s: %v", sk.File, sk.Err)
			}
			for _, k := range sk.Keys {
				keys[k] = true
			}
			plain = plain || sk.Plain
		}
		return keys, plain
	}
	keys, plain := used(live)
	if !keys[1] || !keys[2] || !plain {
		t.Fatalf("live key usage %v plain %v", keys, plain)
	}
	last := live[len(live)-1]
	if !slices.Equal(last.Keys, []crypt.KeyID{2}) || last.Plain {
		t.Fatalf("the newest segment %s uses %v (plain %v), want key 2 only", last.File, last.Keys, last.Plain)
	}

	scanned, err := ScanKeys(fs, "/wal", s)
	if err != nil {
		t.Fatal(err)
	}
	for i := range scanned {
		if scanned[i].File != live[i].File || !slices.Equal(scanned[i].Keys, live[i].Keys) || scanned[i].Plain != live[i].Plain {
			t.Fatalf("segment %d: scanned %+v, live %+v", i, scanned[i], live[i])
		}
	}
	// Reopened, replay reports the same.
	l, rep, err := Open(Options{FS: fs, Dir: "/wal", NodeID: 1, SegmentBytes: 2048, Sealer: s})
	if err != nil || rep.LastIndex != 90 {
		t.Fatalf("reopen: %v (last %d)", err, rep.LastIndex)
	}
	reopened := l.KeyUsage()
	_ = l.Close()
	for i := range live {
		if !slices.Equal(reopened[i].Keys, live[i].Keys) || reopened[i].Plain != live[i].Plain {
			t.Fatalf("segment %d after reopen: %+v, before %+v", i, reopened[i], live[i])
		}
	}
	// Offline with a keyring that lacks key 1: the segments sealed with it
	// are named.
	only2, _ := crypt.New(map[crypt.KeyID][]byte{2: raw2}, 2)
	scanned, err = ScanKeys(fs, "/wal", crypt.NewSealer(only2))
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for _, sk := range scanned {
		if sk.Err != nil {
			var ke *crypt.KeyError
			if !errors.As(sk.Err, &ke) || ke.ID != 1 {
				t.Fatalf("%s: %v", sk.File, sk.Err)
			}
			bad++
		}
	}
	if bad == 0 {
		t.Fatal("no segment reported for the missing key 1")
	}
}
