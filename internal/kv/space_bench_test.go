package kv

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/engine"
)

// BenchmarkSpaceAmplification measures what keeping history costs on
// disk: KAYA_SPACE_KEYS keys (default 100,000; BENCHMARKS.md uses
// 1,000,000) of 16-byte keys and 100-byte values are written, then
// overwritten KAYA_SPACE_ROUNDS-1 more times (default 10 writes of each
// key in all), each round in a new random order, through the state
// machine's apply (runs of 1,000 entries, as a busy raft loop hands them
// over) on an engine with the server's default options, on the real disk
// (os.TempDir). The leader's garbage-collection loop is emulated: every
// second of wall time the horizon target is computed and applied as a
// horizon entry, exactly as gcLoop proposes it. Reported:
//
//   - amp: the engine directory's size divided by the latest data's size
//     (keys + values of the current versions), after the writes (and a
//     flush); amp-compacted: the same after a full compaction;
//   - history-MiB: the collectible bytes counted (HistoryBytes);
//   - retained-s: the time between the horizon and the last revision.
//
// Run:
//
//	KAYA_SPACE_KEYS=1000000 go test ./internal/kv -run '^$' -bench SpaceAmplification -benchtime 1x -timeout 2h
func BenchmarkSpaceAmplification(b *testing.B) {
	keys := envInt("KAYA_SPACE_KEYS", 100_000)
	rounds := envInt("KAYA_SPACE_ROUNDS", 10)
	for _, cfg := range []struct {
		name  string
		bytes int64
	}{ // -bench 'SpaceAmplification/.*64MiB' runs the second only
		{"retention=1h", 0},
		{"retention=1h,retention-bytes=64MiB", 64 << 20},
	} {
		b.Run(cfg.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				spaceAmplification(b, keys, rounds, cfg.bytes)
			}
		})
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func dirSize(b *testing.B, dir string) int64 {
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // deleted by a compaction since the directory was read
		}
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

func spaceAmplification(b *testing.B, keys, rounds int, retentionBytes int64) {
	dir, err := os.MkdirTemp("", "kaya-space-*")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	coll := NewCollector()
	eo := (&engine.Options{}).EnsureDefaults()
	eo.CompactionFilter = coll.Filter
	db, err := engine.Open(dir, eo)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	s, err := Open(Options{NodeID: 1, DB: db, Collector: coll, Retention: time.Hour, RetentionBytes: retentionBytes})
	if err != nil {
		b.Fatal(err)
	}
	const keySize, valueSize, run = 16, 100, 1000
	rng := rand.New(rand.NewPCG(1, 2))
	value := make([]byte, valueSize)
	var index uint64
	var ents []*pb.Entry
	apply := func() {
		if err := s.Apply(ents); err != nil {
			b.Fatal(err)
		}
		ents = ents[:0]
	}
	nextGC := time.Now().Add(time.Second)
	start := time.Now()
	for r := 0; r < rounds; r++ {
		for _, k := range rng.Perm(keys) {
			for j := range value {
				value[j] = byte('a' + rng.IntN(26))
			}
			index++
			data := encodeEntry(s.clock.Now(), opPut, index, []byte(fmt.Sprintf("%0*d", keySize, k)), value)
			ents = append(ents, &pb.Entry{Index: new(index), Term: new(uint64(1)), Type: new(pb.EntryNormal), Data: data})
			if len(ents) == run {
				apply()
			}
			if now := time.Now(); now.After(nextGC) {
				nextGC = now.Add(time.Second)
				if h, ok := s.gc.target(now, s.AppliedTS(), s.Horizon(), 0, false); ok {
					index++
					var body [8]byte
					putLE(body[:], h)
					ents = append(ents, &pb.Entry{Index: new(index), Term: new(uint64(1)), Type: new(pb.EntryNormal),
						Data: encodeEntry(s.clock.Now(), opHorizon, 0, nil, body[:])})
					apply()
				}
			}
		}
	}
	apply()
	elapsed := time.Since(start)
	if err := db.Flush(); err != nil {
		b.Fatal(err)
	}
	latest := float64(keys * (keySize + valueSize))
	amp := float64(dirSize(b, dir)) / latest
	retained := 0.0
	if h := s.Horizon(); h > 0 {
		retained = TSTime(s.AppliedTS()).Sub(TSTime(h)).Seconds()
	}
	history := float64(s.HistoryBytes()) / (1 << 20)
	if err := db.Compact(nil, nil); err != nil {
		b.Fatal(err)
	}
	// The compaction's inputs are deleted in the background: measure once
	// the directory stops shrinking (unchanged for a second, at most 60 s).
	size := dirSize(b, dir)
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		time.Sleep(time.Second)
		next := dirSize(b, dir)
		if next == size {
			break
		}
		size = next
	}
	ampCompacted := float64(size) / latest
	b.ReportMetric(amp, "amp")
	b.ReportMetric(ampCompacted, "amp-compacted")
	b.ReportMetric(history, "history-MiB")
	b.ReportMetric(retained, "retained-s")
	b.ReportMetric(float64(index)/elapsed.Seconds(), "entries/s")
	b.Logf("%d keys × %d writes: latest data %.1f MiB; engine %.2f× after the writes, %.2f× after a full compaction; history counted %.1f MiB; horizon %.1f s behind; %d entries in %v; %d entries collected",
		keys, rounds, latest/(1<<20), amp, ampCompacted, history, retained, index, elapsed.Round(time.Second), db.Metrics().Compaction.FilterDropped)
}

func putLE(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (8 * i))
	}
}
