package kv

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"testing"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
)

// openMemStore opens an engine at dir on fs and a store on it with opts
// (opts.DB is set); the test's cleanup closes the engine.
func openMemStore(t *testing.T, fs vfs.FS, dir string, opts Options) *Store {
	t.Helper()
	db, err := engine.Open(dir, &engine.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	opts.DB = db
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestVersionCacheFollowsReplaceDB: after a snapshot's engine replaces the
// store's, the apply moves to history the version that engine holds, not
// one the cache remembered from the engine it replaced.
func TestVersionCacheFollowsReplaceDB(t *testing.T) {
	fs := vfs.NewMem()
	s := openMemStore(t, fs, "/db", Options{NodeID: 1})
	if err := s.Apply([]*pb.Entry{putEntry(1, "k", "one"), putEntry(2, "k", "two")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Checkpoint("/ckpt"); err != nil {
		t.Fatal(err)
	}

	s2 := openMemStore(t, fs, "/other", Options{NodeID: 2})
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
	const opRead = OpCustomMin + 1
	var read []byte
	s := openMemStore(t, vfs.NewMem(), "/db", Options{NodeID: 1, Evaluators: map[byte]Evaluator{
		opRead: func(tx *ApplyTx, body []byte) ([]byte, error) {
			v, err := tx.Get(body)
			read = v.Value
			return v.Value, err
		},
	}})
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

// TestVersionCacheGrowsAndRotates drives the cache alone through the
// growth of its first generation and two rotations: it keeps to its bound, it
// answers the newest version of every key it still holds, the keys of
// the last generation are all there, and a value handed out before all
// that still reads the same.
func TestVersionCacheGrowsAndRotates(t *testing.T) {
	const limit = 8 << 20 // generations of four 1 MiB chunks
	c := newVersionCache(limit)
	value := func(k, ts int) []byte {
		v := make([]byte, 300)
		for i := range v {
			v[i] = byte(k*31 + ts + i)
		}
		return v
	}
	key := func(k int) []byte { return fmt.Appendf(nil, "key-%05d", k) }
	c.set(key(0), 1, value(0, 1))
	_, _, first, ok := c.get(key(0))
	if !ok {
		t.Fatal("a key just set is not in the cache")
	}
	want0 := bytes.Clone(first)
	newest := map[int]int{}
	const keys, writes = 5000, 40000 // 12 MB of entries: two rotations
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < writes; i++ {
		k := 1 + rng.IntN(keys)
		ts := i + 2
		c.set(key(k), uint64(ts), value(k, ts))
		newest[k] = ts
		if c.bytes() > limit {
			t.Fatalf("after %d writes the cache holds %d bytes, over its bound of %d", i, c.bytes(), limit)
		}
	}
	if !bytes.Equal(first, want0) {
		t.Fatal("a value handed out changed when the cache grew and rotated")
	}
	if len(c.gens[1].chunks) != 4 || c.bytes() <= limit/2 {
		t.Fatalf("an older generation of %d chunks, %d bytes in all: the cache did not grow to its bound and rotate", len(c.gens[1].chunks), c.bytes())
	}
	held := 0
	for k, ts := range newest {
		gk, gts, v, ok := c.get(key(k))
		if !ok {
			continue
		}
		if !bytes.Equal(gk, key(k)) {
			t.Fatalf("key %d: the cache answers for %q", k, gk)
		}
		held++
		if gts != uint64(ts) || !bytes.Equal(v, value(k, ts)) {
			t.Fatalf("key %d: the cache answers version %d, the newest is %d", k, gts, ts)
		}
	}
	if held < len(c.gens[0].m) || held == 0 {
		t.Fatalf("the cache answered %d keys, its newer generation alone holds %d", held, len(c.gens[0].m))
	}
	c.del(key(7))
	if _, _, _, ok := c.get(key(7)); ok {
		t.Fatal("a deleted key is still in the cache")
	}
}

// TestVersionCacheHashCollision: two keys with one hash (forced here: the
// hash is put's argument) take each other's place, and a key that lost
// its place in the newer generation is not answered from an older
// version in the older one.
func TestVersionCacheHashCollision(t *testing.T) {
	c := newVersionCache(8 << 20)
	a, b := []byte("key-a"), []byte("key-b")
	h := maphash.Bytes(c.seed, a)
	c.put(h, a, 1, []byte("a-one"))
	c.gens[1], c.gens[0] = c.gens[0], cacheGen{} // a rotation: a@1 is in the older generation
	c.put(h, a, 2, []byte("a-two"))
	if _, ts, v, ok := c.get(a); !ok || ts != 2 || string(v) != "a-two" {
		t.Fatalf("a: %d %q %v, want a-two@2", ts, v, ok)
	}
	c.put(h, b, 3, []byte("b-three")) // b takes a's place
	if _, ts, v, ok := c.get(a); ok {
		t.Fatalf("a after b took its hash's place: the cache answers %q@%d, an older version", v, ts)
	}
	// (b is filed under a's hash, not its own: look it up there.)
	if e, ok := c.gens[0].find(h, b); !ok || e.ts != 3 || string(c.gens[0].value(e)) != "b-three" {
		t.Fatalf("b: %+v %v, want b-three@3", e, ok)
	}
}
