package kv

import (
	"testing"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
)

// TestVersionCacheFollowsReplaceDB: after a snapshot's engine replaces the
// store's, the apply moves to history the version that engine holds, not
// one the cache remembered from the engine it replaced.
func TestVersionCacheFollowsReplaceDB(t *testing.T) {
	fs := vfs.NewMem()
	db, err := engine.Open("/db", &engine.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := Open(Options{NodeID: 1, DB: db})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply([]*pb.Entry{putEntry(1, "k", "one"), putEntry(2, "k", "two")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Checkpoint("/ckpt"); err != nil {
		t.Fatal(err)
	}

	other, err := engine.Open("/other", &engine.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := Open(Options{NodeID: 2, DB: other})
	if err != nil {
		t.Fatal(err)
	}
	// The cache of s2 learns k = stale@1.
	if err := s2.Apply([]*pb.Entry{putEntry(1, "k", "stale")}); err != nil {
		t.Fatal(err)
	}
	if err := s2.ReplaceDB(func(old *engine.DB) (*engine.DB, error) {
		if err := old.Close(); err != nil {
			return nil, err
		}
		return engine.Open("/ckpt", &engine.Options{FS: fs})
	}); err != nil {
		t.Fatal(err)
	}
	if err := s2.Apply([]*pb.Entry{putEntry(3, "k", "three")}); err != nil {
		t.Fatal(err)
	}
	v, err := s2.ReadAt([]byte("k"), 2)
	if err != nil || string(v.Value) != "two" || v.TS != 2 {
		t.Fatalf("k at 2 after the replacement: %q@%d %v, want \"two\"@2", v.Value, v.TS, err)
	}
	if v, err := s2.ReadAt([]byte("k"), 0); err != nil || string(v.Value) != "three" || v.TS != 3 {
		t.Fatalf("k now: %q@%d %v, want \"three\"@3", v.Value, v.TS, err)
	}
	_ = s2.DB(func(d *engine.DB) error { return d.Close() })
}

// TestVersionCacheValuesStayValid: a value an evaluator read from the cache
// (and may return as its result) is not changed by a later entry of the
// same run that writes the key: the cache stores a new copy and never
// writes over one it handed out.
func TestVersionCacheValuesStayValid(t *testing.T) {
	db, err := engine.Open("/db", &engine.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const opRead = OpCustomMin + 1
	var read []byte
	s, err := Open(Options{NodeID: 1, DB: db, Evaluators: map[byte]Evaluator{
		opRead: func(tx *ApplyTx, body []byte) ([]byte, error) {
			v, err := tx.Get(body)
			read = v.Value
			return v.Value, err
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply([]*pb.Entry{putEntry(1, "k", "old-value")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply([]*pb.Entry{putEntry(2, "k", "new-value")}); err != nil {
		t.Fatal(err)
	}
	if hits, _ := s.VersionCacheStats(); hits != 1 {
		t.Fatalf("the second write found its key's version in the cache %d times, want 1", hits)
	}
	// The read comes from the cache; the next entry writes the key again.
	ents := []*pb.Entry{entryV2(3, 3, cmdSpec{op: opRead, body: []byte("k")}), putEntry(4, "k", "NEWER-VAL")}
	if err := s.Apply(ents); err != nil {
		t.Fatal(err)
	}
	if hits, _ := s.VersionCacheStats(); hits != 2 {
		t.Fatalf("the read found its key's version in the cache %d times in all, want 2", hits)
	}
	if string(read) != "new-value" {
		t.Fatalf("the value the read returned is %q after the run, want \"new-value\"", read)
	}
	if v, err := s.ReadAt([]byte("k"), 0); err != nil || string(v.Value) != "NEWER-VAL" {
		t.Fatalf("k now: %q %v", v.Value, err)
	}
}
