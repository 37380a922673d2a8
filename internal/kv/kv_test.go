package kv

import (
	"encoding/binary"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/vfs"
)

func putEntry(index uint64, key, value string) *pb.Entry {
	data := []byte{1, 1, opPut}
	data = binary.LittleEndian.AppendUint64(data, index)
	data = binary.AppendUvarint(data, uint64(len(key)))
	data = append(data, key...)
	data = binary.AppendUvarint(data, uint64(len(value)))
	data = append(data, value...)
	return &pb.Entry{Index: new(index), Term: new(uint64(1)), Type: new(pb.EntryNormal), Data: data}
}

// TestNoReapplyAfterRestart: entries at or below the recorded applied index
// are skipped when raft hands them out again after a restart, so an older
// write can never overwrite a newer one.
func TestNoReapplyAfterRestart(t *testing.T) {
	fs := vfs.NewMem()
	db, err := engine.Open("/db", &engine.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{NodeID: 1, DB: db})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply([]*pb.Entry{putEntry(5, "k", "old"), putEntry(6, "k", "new")}); err != nil {
		t.Fatal(err)
	}
	if s.AppliedIndex() != 6 {
		t.Fatalf("applied %d", s.AppliedIndex())
	}
	_ = db.Close()
	db, err = engine.Open("/db", &engine.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err = Open(Options{NodeID: 1, DB: db})
	if err != nil {
		t.Fatal(err)
	}
	if s.AppliedIndex() != 6 {
		t.Fatalf("applied index after restart: %d", s.AppliedIndex())
	}
	// Raft re-delivers 5 and 6 (and then 7).
	if err := s.Apply([]*pb.Entry{putEntry(5, "k", "old"), putEntry(6, "k", "new"), putEntry(7, "j", "x")}); err != nil {
		t.Fatal(err)
	}
	if v, _ := db.Get([]byte("k")); string(v) != "new" {
		t.Fatalf("re-applied an old entry: k=%q", v)
	}
	if v, _ := db.Get([]byte("j")); string(v) != "x" || s.AppliedIndex() != 7 {
		t.Fatalf("new entry not applied: j=%q applied=%d", v, s.AppliedIndex())
	}
	// Entries wholly at or below the applied index change nothing.
	if err := s.Apply([]*pb.Entry{putEntry(3, "k", "ancient")}); err != nil {
		t.Fatal(err)
	}
	if v, _ := db.Get([]byte("k")); string(v) != "new" {
		t.Fatalf("k=%q", v)
	}
}

func TestValidateKeyAndCorruptEntry(t *testing.T) {
	if err := ValidateKey([]byte{0, 'a'}); err == nil {
		t.Fatal("reserved key accepted")
	}
	if err := ValidateKey(make([]byte, engine.MaxKeySize+1)); err == nil {
		t.Fatal("oversized key accepted")
	}
	db, err := engine.Open("/db", &engine.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, _ := Open(Options{NodeID: 1, DB: db})
	bad := putEntry(1, "k", "v")
	bad.Data = bad.Data[:len(bad.Data)-2]
	if err := s.Apply([]*pb.Entry{bad}); err == nil {
		t.Fatal("a truncated command applied without error")
	}
	if _, err := db.Get([]byte("k")); err == nil {
		t.Fatal("part of a bad entry was applied")
	}
}

func TestPrefixEnd(t *testing.T) {
	cases := map[string]string{"": "", "a": "b", "a\xff": "b", "\xff\xff": "", "ab": "ac"}
	for in, want := range cases {
		if got := string(prefixEnd([]byte(in))); got != want {
			t.Errorf("prefixEnd(%q) = %q, want %q", in, got, want)
		}
	}
}
