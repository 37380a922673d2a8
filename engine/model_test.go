package engine

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/kayadb/kayadb/internal/vfs"
)

var modelSeed = flag.Uint64("model.seed", 0, "run TestRandomizedModel with only this seed")
var modelOps = flag.Int("model.ops", 0, "operations per TestRandomizedModel run (default 3000, 800 with -short)")

// model is the reference: a plain map.
type model map[string]string

func (m model) clone() model {
	c := make(model, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// sortedKeys returns the model's keys within [lower, upper) in order.
func (m model) sortedKeys(lower, upper []byte) []string {
	var ks []string
	for k := range m {
		if lower != nil && k < string(lower) {
			continue
		}
		if upper != nil && k >= string(upper) {
			continue
		}
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

type optionSet struct {
	name string
	opts func(fs vfs.FS) *Options
}

func modelOptionSets() []optionSet {
	return []optionSet{
		{"tiny-snappy", func(fs vfs.FS) *Options {
			return &Options{FS: fs, MemTableSize: 64 << 10, TargetFileSize: 8 << 10, LBaseMaxBytes: 32 << 10,
				L0CompactionThreshold: 2, L0StopWritesThreshold: 6, BlockSize: 256, CacheSize: 64 << 10, MaxManifestBytes: 4 << 10}
		}},
		{"tiny-nocompress-nobloom", func(fs vfs.FS) *Options {
			return &Options{FS: fs, MemTableSize: 64 << 10, TargetFileSize: 4 << 10, LBaseMaxBytes: 16 << 10,
				BlockSize: 128, BlockRestartInterval: 2, BloomBitsPerKey: -1, NoCompressionSet: true, CacheSize: -1}
		}},
		{"small-zstd", func(fs vfs.FS) *Options {
			return &Options{FS: fs, MemTableSize: 256 << 10, TargetFileSize: 32 << 10, LBaseMaxBytes: 128 << 10,
				Compression: ZstdCompression, LevelMultiplier: 4, MaxOpenFiles: 16}
		}},
		{"defaults", func(fs vfs.FS) *Options { return &Options{FS: fs, MemTableSize: 1 << 20} }},
	}
}

// modelRun drives random operations against the DB and the model and checks
// every read.
type modelRun struct {
	t     *testing.T
	rng   *rand.Rand
	seed  uint64
	fs    *vfs.MemFS
	opts  func(vfs.FS) *Options
	db    *DB
	m     model
	snaps []*modelSnap
	log   []string
}

type modelSnap struct {
	s *Snapshot
	m model
}

func (r *modelRun) fatalf(format string, args ...any) {
	r.t.Helper()
	tail := r.log
	if len(tail) > 30 {
		tail = tail[len(tail)-30:]
	}
	r.t.Fatalf("seed %d: %s\nlast operations:\n  %s", r.seed, fmt.Sprintf(format, args...), joinLines(tail))
}

func joinLines(s []string) string {
	var b bytes.Buffer
	for i, l := range s {
		if i > 0 {
			b.WriteString("\n  ")
		}
		b.WriteString(l)
	}
	return b.String()
}

func (r *modelRun) key() []byte {
	n := r.rng.IntN(400)
	switch r.rng.IntN(10) {
	case 0:
		return []byte(fmt.Sprintf("k%04d-%s", n, bytes.Repeat([]byte("x"), r.rng.IntN(40))))
	case 1:
		return []byte(fmt.Sprintf("k%03d", n%100))
	}
	return []byte(fmt.Sprintf("k%04d", n))
}

func (r *modelRun) value() []byte {
	n := r.rng.IntN(120)
	if r.rng.IntN(50) == 0 {
		n = 5000 + r.rng.IntN(20000)
	}
	v := make([]byte, n)
	for i := range v {
		v[i] = byte('a' + r.rng.IntN(26))
	}
	return v
}

func (r *modelRun) open() {
	db, err := Open("/db", r.opts(r.fs))
	if err != nil {
		r.fatalf("open: %v", err)
	}
	r.db = db
}

func (r *modelRun) closeDB() {
	for _, s := range r.snaps {
		_ = s.s.Close()
	}
	r.snaps = nil
	if err := r.db.Close(); err != nil {
		r.fatalf("close: %v", err)
	}
}

func (r *modelRun) checkGet(get func([]byte) ([]byte, error), m model, key []byte, what string) {
	r.t.Helper()
	v, err := get(key)
	want, ok := m[string(key)]
	switch {
	case !ok && !errors.Is(err, ErrNotFound):
		r.fatalf("%s get %q: want not found, got %q, %v", what, key, v, err)
	case ok && err != nil:
		r.fatalf("%s get %q: %v", what, key, err)
	case ok && string(v) != want:
		r.fatalf("%s get %q: got %d bytes, want %d", what, key, len(v), len(want))
	}
}

// checkIter walks an iterator randomly and compares each position with the
// model.
func (r *modelRun) checkIter(newIter func(*IterOptions) (*Iterator, error), m model, what string) {
	r.t.Helper()
	var lower, upper []byte
	if r.rng.IntN(2) == 0 {
		lower = r.key()
	}
	if r.rng.IntN(2) == 0 {
		upper = r.key()
		if lower != nil && bytes.Compare(upper, lower) < 0 {
			lower, upper = upper, lower
		}
	}
	it, err := newIter(&IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		r.fatalf("%s new iter: %v", what, err)
	}
	keys := m.sortedKeys(lower, upper)
	pos := -1 // index into keys; -1 or len(keys) means invalid
	var ok bool
	desc := fmt.Sprintf("%s iter [%q,%q)", what, lower, upper)
	switch r.rng.IntN(4) {
	case 0:
		ok = it.First()
		pos = 0
		desc += " First"
	case 1:
		ok = it.Last()
		pos = len(keys) - 1
		desc += " Last"
	case 2:
		k := r.key()
		ok = it.SeekGE(k)
		pos = sort.SearchStrings(keys, string(k))
		desc += fmt.Sprintf(" SeekGE(%q)", k)
	case 3:
		k := r.key()
		ok = it.SeekLT(k)
		pos = sort.SearchStrings(keys, string(k)) - 1
		desc += fmt.Sprintf(" SeekLT(%q)", k)
	}
	steps := r.rng.IntN(40)
	for i := 0; ; i++ {
		valid := pos >= 0 && pos < len(keys)
		if ok != valid {
			r.fatalf("%s: valid=%v, model position %d of %d (err %v)", desc, ok, pos, len(keys), it.Error())
		}
		if ok {
			if string(it.Key()) != keys[pos] {
				r.fatalf("%s: key %q, want %q", desc, it.Key(), keys[pos])
			}
			if string(it.Value()) != m[keys[pos]] {
				r.fatalf("%s: value of %q differs", desc, keys[pos])
			}
		}
		if i == steps || !ok {
			break
		}
		if r.rng.IntN(3) == 0 {
			ok = it.Prev()
			pos--
			desc += " Prev"
		} else {
			ok = it.Next()
			pos++
			desc += " Next"
		}
	}
	if err := it.Close(); err != nil {
		r.fatalf("%s close: %v", desc, err)
	}
}

func (r *modelRun) step() {
	op := r.rng.IntN(100)
	switch {
	case op < 40:
		k, v := r.key(), r.value()
		r.log = append(r.log, fmt.Sprintf("set %q (%d bytes)", k, len(v)))
		if err := r.db.Set(k, v, &WriteOptions{Sync: r.rng.IntN(10) == 0}); err != nil {
			r.fatalf("set: %v", err)
		}
		r.m[string(k)] = string(v)
	case op < 50:
		k := r.key()
		r.log = append(r.log, fmt.Sprintf("delete %q", k))
		if err := r.db.Delete(k, NoSync); err != nil {
			r.fatalf("delete: %v", err)
		}
		delete(r.m, string(k))
	case op < 55:
		b := r.db.NewBatch()
		n := 1 + r.rng.IntN(20)
		for i := 0; i < n; i++ {
			k := r.key()
			if r.rng.IntN(4) == 0 {
				_ = b.Delete(k)
				delete(r.m, string(k))
			} else {
				v := r.value()
				_ = b.Set(k, v)
				r.m[string(k)] = string(v)
			}
		}
		r.log = append(r.log, fmt.Sprintf("batch of %d", n))
		if err := b.Commit(NoSync); err != nil {
			r.fatalf("batch: %v", err)
		}
	case op < 70:
		k := r.key()
		r.checkGet(r.db.Get, r.m, k, "db")
	case op < 80:
		r.checkIter(r.db.NewIter, r.m, "db")
	case op < 83:
		r.log = append(r.log, "snapshot")
		r.snaps = append(r.snaps, &modelSnap{s: r.db.NewSnapshot(), m: r.m.clone()})
	case op < 88:
		if len(r.snaps) == 0 {
			return
		}
		s := r.snaps[r.rng.IntN(len(r.snaps))]
		if r.rng.IntN(2) == 0 {
			r.checkGet(s.s.Get, s.m, r.key(), "snapshot")
		} else {
			r.checkIter(s.s.NewIter, s.m, "snapshot")
		}
	case op < 90:
		if len(r.snaps) == 0 {
			return
		}
		i := r.rng.IntN(len(r.snaps))
		r.log = append(r.log, "close snapshot")
		_ = r.snaps[i].s.Close()
		r.snaps = append(r.snaps[:i], r.snaps[i+1:]...)
	case op < 93:
		r.log = append(r.log, "flush")
		if err := r.db.Flush(); err != nil {
			r.fatalf("flush: %v", err)
		}
	case op < 95:
		a, b := r.key(), r.key()
		if bytes.Compare(a, b) > 0 {
			a, b = b, a
		}
		if r.rng.IntN(3) == 0 {
			a, b = nil, nil
		}
		r.log = append(r.log, fmt.Sprintf("compact [%q,%q]", a, b))
		if err := r.db.Compact(a, b); err != nil {
			r.fatalf("compact: %v", err)
		}
	case op < 97:
		r.log = append(r.log, "reopen")
		r.closeDB()
		r.open()
	case op < 98:
		dir := fmt.Sprintf("/ckpt-%d", len(r.log))
		r.log = append(r.log, "checkpoint "+dir)
		if err := r.db.Checkpoint(dir); err != nil {
			r.fatalf("checkpoint: %v", err)
		}
		c, err := Open(dir, r.opts(r.fs))
		if err != nil {
			r.fatalf("open checkpoint: %v", err)
		}
		r.checkIter(c.NewIter, r.m, "checkpoint")
		for i := 0; i < 20; i++ {
			r.checkGet(c.Get, r.m, r.key(), "checkpoint")
		}
		if err := c.Close(); err != nil {
			r.fatalf("close checkpoint: %v", err)
		}
		_ = r.fs.RemoveAll(dir)
	default:
		// A full scan against the model, plus the LSM invariants.
		r.checkFull()
	}
}

func (r *modelRun) checkFull() {
	it, err := r.db.NewIter(nil)
	if err != nil {
		r.fatalf("iter: %v", err)
	}
	keys := r.m.sortedKeys(nil, nil)
	i := 0
	for ok := it.First(); ok; ok = it.Next() {
		if i >= len(keys) || string(it.Key()) != keys[i] || string(it.Value()) != r.m[keys[i]] {
			r.fatalf("full scan: position %d: got %q", i, it.Key())
		}
		i++
	}
	if err := it.Close(); err != nil {
		r.fatalf("full scan: %v", err)
	}
	if i != len(keys) {
		r.fatalf("full scan saw %d keys, model has %d", i, len(keys))
	}
	if err := r.db.checkInvariants(); err != nil {
		r.fatalf("invariants: %v", err)
	}
}

// TestRandomizedModel runs random operations (writes, batches, gets,
// bounded forward and reverse iteration, snapshots, flushes, compactions,
// reopens and checkpoints) against the engine and a map, under several option
// sets. On failure it prints the seed; rerun with -model.seed=N.
func TestRandomizedModel(t *testing.T) {
	ops := *modelOps
	if ops == 0 {
		ops = 3000
		if testing.Short() {
			ops = 800
		}
	}
	seeds := []uint64{1, 2, 3}
	if *modelSeed != 0 {
		seeds = []uint64{*modelSeed}
	}
	for _, os := range modelOptionSets() {
		for _, seed := range seeds {
			t.Run(fmt.Sprintf("%s/seed=%d", os.name, seed), func(t *testing.T) {
				r := &modelRun{t: t, rng: rand.New(rand.NewPCG(seed, 0x4b415941)), seed: seed, fs: vfs.NewMem(), opts: os.opts, m: model{}}
				r.open()
				for i := 0; i < ops; i++ {
					r.step()
				}
				r.checkFull()
				r.closeDB()
			})
		}
	}
}
