package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// workloadNames lists the workloads in their default (and printing) order.
var workloadNames = []string{"fillseq", "fillrandom", "readrandom", "seekrandom", "scan", "sync1", "sync16", "sync64", "fillsync32"}

// syncWriters maps each sync workload to its number of writer goroutines.
var syncWriters = map[string]int{"sync1": 1, "sync16": 16, "sync64": 64, "fillsync32": 32}

// settleMaxWait bounds how long Settle waits for background work after an
// untimed load or after fillrandom.
const settleMaxWait = 3 * time.Minute

// keyspace makes the benchmark's keys and values. Key i is the decimal i,
// zero-padded to keySize bytes (%016d by default), so byte order equals
// numeric order. Value i is a deterministic slice of a 1 MiB pool built like
// LevelDB's db_bench RandomGenerator: 100-byte pieces, each 50 random
// printable bytes repeated to fill the piece, so values compress to about
// half. Because value i is a pure function of i, reads verify every byte.
type keyspace struct {
	keySize, valueSize int
	pool               []byte
}

// newKeyspace builds the value pool with a fixed seed (identical for every
// engine and run).
func newKeyspace(keySize, valueSize int) *keyspace {
	const piece = 100
	rng := rand.New(rand.NewPCG(301, 301))
	n := 1<<20 + valueSize
	pool := make([]byte, 0, n+piece)
	for len(pool) < n {
		raw := make([]byte, piece/2) // compression ratio 0.5
		for i := range raw {
			raw[i] = byte(' ' + rng.IntN(95))
		}
		for j := 0; j < piece; j++ {
			pool = append(pool, raw[j%len(raw)])
		}
	}
	return &keyspace{keySize: keySize, valueSize: valueSize, pool: pool}
}

// key formats key i into buf (len >= keySize) and returns it.
func (ks *keyspace) key(buf []byte, i int) []byte {
	b := buf[:ks.keySize]
	for j := len(b) - 1; j >= 0; j-- {
		b[j] = byte('0' + i%10)
		i /= 10
	}
	return b
}

// value returns the value of key i. It aliases the pool: do not modify it.
func (ks *keyspace) value(i int) []byte {
	off := (i * ks.valueSize) % (len(ks.pool) - ks.valueSize)
	return ks.pool[off : off+ks.valueSize]
}

// measurement is the raw outcome of a timed phase.
type measurement struct {
	ops     int           // operations completed
	elapsed time.Duration // wall time of the timed phase
	lat     []int64       // per-op latencies in ns (len == ops)
	capped  bool          // stopped early by -duration-cap
}

// timedLoop runs op(i) for i in [0, n) and records each op's latency in lat.
// It reads the clock once per op: op i's latency runs from the end of op i-1
// (or the start) to the end of op i, so it includes the loop's few
// nanoseconds of overhead (key formatting, verification), the same for all
// engines. It stops early once deadline (if non-zero) has passed.
func timedLoop(n int, deadline time.Time, lat []int64, op func(i int) error) (measurement, error) {
	start := time.Now()
	prev := start
	for i := 0; i < n; i++ {
		if err := op(i); err != nil {
			return measurement{ops: i, elapsed: prev.Sub(start), lat: lat[:i]}, err
		}
		now := time.Now()
		lat[i] = int64(now.Sub(prev))
		prev = now
		if i&1023 == 1023 && !deadline.IsZero() && now.After(deadline) {
			return measurement{ops: i + 1, elapsed: now.Sub(start), lat: lat[:i+1], capped: true}, nil
		}
	}
	return measurement{ops: n, elapsed: prev.Sub(start), lat: lat[:n]}, nil
}

// runner carries what one workload run needs.
type runner struct {
	cfg *config
	ks  *keyspace
	s   store
	// notes collects remarks (settle timeouts, caps) for the result.
	notes []string
}

// deadline returns the -duration-cap deadline for a phase starting now.
func (r *runner) deadline() time.Time {
	if r.cfg.DurationCap <= 0 {
		return time.Time{}
	}
	return time.Now().Add(r.cfg.DurationCap)
}

// permutation returns the seeded random insertion order used by fillrandom
// and by the untimed loads of readrandom and scan.
func (r *runner) permutation() []int {
	return rand.New(rand.NewPCG(r.cfg.Seed, 1)).Perm(r.cfg.Num)
}

// fill inserts key order[i] (or i when order is nil) for i in [0, Num) with
// NoSync writes, one Set per key, timed.
func (r *runner) fill(order []int) (measurement, error) {
	kbuf := make([]byte, r.cfg.KeySize)
	lat := make([]int64, r.cfg.Num)
	return timedLoop(r.cfg.Num, r.deadline(), lat, func(i int) error {
		if order != nil {
			i = order[i]
		}
		return r.s.Set(r.ks.key(kbuf, i), r.ks.value(i), false)
	})
}

// settle waits for the store to become quiescent and notes a timeout.
func (r *runner) settle() (time.Duration, error) {
	t0 := time.Now()
	idle, err := r.s.Settle(settleMaxWait)
	if err != nil {
		return 0, fmt.Errorf("settle: %w", err)
	}
	if !idle {
		r.notes = append(r.notes, fmt.Sprintf("store not idle after %v", settleMaxWait))
	}
	return time.Since(t0), nil
}

// load fills the store with the fillrandom data set (untimed) and settles
// it: the starting state of readrandom and scan.
func (r *runner) load() error {
	m, err := r.fill(r.permutation())
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	if m.capped {
		return fmt.Errorf("load: unexpectedly capped")
	}
	_, err = r.settle()
	return err
}

// readPass reads n keys chosen by pick and verifies every value byte. It
// counts missing keys and wrong values instead of stopping, and returns an
// error at the end if there were any.
func (r *runner) readPass(n int, pick func(i int) int, deadline time.Time, lat []int64) (measurement, error) {
	kbuf := make([]byte, r.cfg.KeySize)
	var want []byte
	var misses, wrong int
	check := func(v []byte) error {
		if !bytes.Equal(v, want) {
			wrong++
		}
		return nil
	}
	m, err := timedLoop(n, deadline, lat, func(i int) error {
		k := pick(i)
		want = r.ks.value(k)
		found, err := r.s.Get(r.ks.key(kbuf, k), check)
		if err != nil {
			return fmt.Errorf("get %q: %w", r.ks.key(kbuf, k), err)
		}
		if !found {
			misses++
		}
		return nil
	})
	if err == nil && (misses > 0 || wrong > 0) {
		err = fmt.Errorf("VERIFY FAILED: %d of %d reads missed an existing key, %d returned a wrong value", misses, m.ops, wrong)
	}
	return m, err
}

// readRandom: load, warm the cache by reading every key once (untimed), then
// time ReadOps uniformly random Gets of existing keys.
func (r *runner) readRandom() (measurement, error) {
	if err := r.load(); err != nil {
		return measurement{}, err
	}
	n := r.cfg.Num
	lat := make([]int64, max(n, r.cfg.ReadOps))
	if _, err := r.readPass(n, func(i int) int { return i }, time.Time{}, lat); err != nil {
		return measurement{}, fmt.Errorf("warm-up: %w", err)
	}
	rng := rand.New(rand.NewPCG(r.cfg.Seed, 2))
	return r.readPass(r.cfg.ReadOps, func(int) int { return rng.IntN(n) }, r.deadline(), lat)
}

// seekRandom: load, warm the cache with a full scan (untimed), then time
// ReadOps iterator seeks to uniformly random existing keys, each verifying
// the key and value it lands on (db_bench's seekrandom with one read).
func (r *runner) seekRandom() (measurement, error) {
	if err := r.load(); err != nil {
		return measurement{}, err
	}
	if _, err := r.scanPass(time.Time{}, make([]int64, r.cfg.Num)); err != nil {
		return measurement{}, fmt.Errorf("warm-up: %w", err)
	}
	it, err := r.s.NewIter()
	if err != nil {
		return measurement{}, err
	}
	n := r.cfg.Num
	rng := rand.New(rand.NewPCG(r.cfg.Seed, 3))
	kbuf := make([]byte, r.cfg.KeySize)
	m, err := timedLoop(r.cfg.ReadOps, r.deadline(), make([]int64, r.cfg.ReadOps), func(int) error {
		k := rng.IntN(n)
		key := r.ks.key(kbuf, k)
		if !it.SeekGE(key) || !bytes.Equal(it.Key(), key) || !bytes.Equal(it.Value(), r.ks.value(k)) {
			return fmt.Errorf("VERIFY FAILED: seek to %q", key)
		}
		return nil
	})
	if cerr := it.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("iterator: %w", cerr)
	}
	return m, err
}

// scanPass iterates over the whole store once, timing each step, and
// verifies that it yields exactly keys 0..Num-1 in order with their values.
func (r *runner) scanPass(deadline time.Time, lat []int64) (measurement, error) {
	it, err := r.s.NewIter()
	if err != nil {
		return measurement{}, err
	}
	kbuf := make([]byte, r.cfg.KeySize)
	m, err := timedLoop(r.cfg.Num, deadline, lat, func(i int) error {
		var ok bool
		if i == 0 {
			ok = it.First()
		} else {
			ok = it.Next()
		}
		if !ok {
			return fmt.Errorf("VERIFY FAILED: iterator stopped after %d keys, want %d", i, r.cfg.Num)
		}
		if !bytes.Equal(it.Key(), r.ks.key(kbuf, i)) || !bytes.Equal(it.Value(), r.ks.value(i)) {
			return fmt.Errorf("VERIFY FAILED: entry %d is %q (value %d bytes), want %q", i, it.Key(), len(it.Value()), r.ks.key(kbuf, i))
		}
		return nil
	})
	if err == nil && !m.capped && it.Next() {
		err = fmt.Errorf("VERIFY FAILED: iterator has extra key %q after %d keys", it.Key(), r.cfg.Num)
	}
	if cerr := it.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("iterator: %w", cerr)
	}
	return m, err
}

// scan: load, one untimed full iteration to warm the cache, then a timed one.
func (r *runner) scan() (measurement, error) {
	if err := r.load(); err != nil {
		return measurement{}, err
	}
	lat := make([]int64, r.cfg.Num)
	if _, err := r.scanPass(time.Time{}, lat); err != nil {
		return measurement{}, fmt.Errorf("warm-up: %w", err)
	}
	return r.scanPass(r.deadline(), lat)
}

// syncWrites: writers goroutines each do their share of SyncOps Sets of
// random keys with Sync=true on the (fresh, empty) store. The elapsed time
// runs from releasing all writers at once until the last one finishes.
func (r *runner) syncWrites(writers int) (measurement, error) {
	total := r.cfg.SyncOps
	lat := make([]int64, total)
	parts := make([]measurement, writers)
	errs := make([]error, writers)
	deadline := r.deadline()
	gate := make(chan struct{})
	var wg sync.WaitGroup
	lo := 0
	for g := 0; g < writers; g++ {
		n := total / writers
		if g < total%writers {
			n++
		}
		seg := lat[lo : lo+n]
		lo += n
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(r.cfg.Seed, uint64(100+g)))
			kbuf := make([]byte, r.cfg.KeySize)
			<-gate
			parts[g], errs[g] = timedLoop(n, deadline, seg, func(int) error {
				k := rng.IntN(r.cfg.Num)
				return r.s.Set(r.ks.key(kbuf, k), r.ks.value(k), true)
			})
		}()
	}
	t0 := time.Now()
	close(gate)
	wg.Wait()
	m := measurement{elapsed: time.Since(t0)}
	for g := range parts {
		if errs[g] != nil {
			return m, fmt.Errorf("writer %d: %w", g, errs[g])
		}
		m.ops += parts[g].ops
		m.lat = append(m.lat, parts[g].lat...)
		m.capped = m.capped || parts[g].capped
	}
	return m, nil
}
