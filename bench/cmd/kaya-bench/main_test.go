package main

import (
	"bytes"
	"testing"
	"time"
)

func TestKeyspace(t *testing.T) {
	ks := newKeyspace(16, 100)
	buf := make([]byte, 16)
	if got := string(ks.key(buf, 42)); got != "0000000000000042" {
		t.Fatalf("key(42) = %q", got)
	}
	v := ks.value(7)
	if len(v) != 100 || !bytes.Equal(v, ks.value(7)) {
		t.Fatalf("value(7) not deterministic or wrong length %d", len(v))
	}
	// db_bench-style compressible piece: the second half repeats the first.
	if !bytes.Equal(v[:50], v[50:]) {
		t.Fatalf("value(7) is not 50%% compressible: %q", v)
	}
	if bytes.Equal(ks.value(1), ks.value(2)) {
		t.Fatalf("adjacent values are identical")
	}
}

func TestPercentiles(t *testing.T) {
	lat := make([]int64, 100)
	for i := range lat {
		lat[i] = int64(100 - i) // 100..1, unsorted
	}
	var r runResult
	r.fill(measurement{ops: 100, elapsed: time.Second, lat: lat})
	if r.P50 != 50 || r.P99 != 99 || r.Max != 100 || r.OpsPerSec != 100 {
		t.Fatalf("got p50 %d p99 %d max %d ops/s %v", r.P50, r.P99, r.Max, r.OpsPerSec)
	}
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Fatalf("median = %v", m)
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/mnt/my\040disk`); got != "/mnt/my disk" {
		t.Fatalf("got %q", got)
	}
}

// TestEnginesSmoke runs every workload on every engine at a tiny size with a
// small memtable (so flushes and compactions happen) and checks that each
// run completes and verifies.
func TestEnginesSmoke(t *testing.T) {
	for _, comp := range []string{"snappy", "none"} {
		c := &config{
			Engines: []string{"kaya", "pebble", "goleveldb"}, Workloads: workloadNames,
			Num: 5000, KeySize: 16, ValueSize: 100, cacheSize: 8 << 20, memtableSize: 128 << 10,
			bloomBits: 10, compression: comp, blockSize: 4096, Reps: 1, SyncOps: 64, ReadOps: 5000, Seed: 1,
		}
		ks := newKeyspace(c.KeySize, c.ValueSize)
		root := t.TempDir()
		for _, w := range c.Workloads {
			for _, e := range c.Engines {
				res := runOne(c, ks, allEngines[e], w, 0, root)
				if res.Err != "" {
					t.Errorf("%s %s %s: %s", comp, w, e, res.Err)
					continue
				}
				want := c.Num
				switch w {
				case "readrandom":
					want = c.ReadOps
				case "sync1", "sync16", "sync64", "fillsync32":
					want = c.SyncOps
				}
				if res.Ops != want || res.OpsPerSec <= 0 || res.P99 <= 0 {
					t.Errorf("%s %s %s: ops %d (want %d), ops/s %v, p99 %v", comp, w, e, res.Ops, want, res.OpsPerSec, res.P99)
				}
			}
		}
	}
}

// lossyStore hides one key and corrupts another, to prove that readrandom's
// verification fails loudly instead of reporting a fast broken engine.
type lossyStore struct{ store }

func (s lossyStore) Get(k []byte, check func([]byte) error) (bool, error) {
	switch string(k) {
	case "0000000000000007":
		return false, nil
	case "0000000000000008":
		return true, check([]byte("wrong"))
	}
	return s.store.Get(k, check)
}

func TestReadVerificationFails(t *testing.T) {
	c := &config{Num: 100, KeySize: 16, ValueSize: 100, cacheSize: 1 << 20, memtableSize: 1 << 20,
		bloomBits: 10, compression: "snappy", blockSize: 4096, ReadOps: 100, Seed: 1}
	s, err := openKaya(t.TempDir(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := &runner{cfg: c, ks: newKeyspace(16, 100), s: lossyStore{s}}
	_, err = r.readRandom()
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("VERIFY FAILED: 1 of 100 reads missed an existing key, 1 returned a wrong value")) {
		t.Fatalf("readRandom error = %v, want a verification failure", err)
	}
}
