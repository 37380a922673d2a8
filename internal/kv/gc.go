package kv

import (
	"context"
	"encoding/binary"
	"errors"
	"math/bits"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kayadb/kayadb/engine"
)

// Garbage collection (docs/design/mvcc-and-transactions.md §4)
//
// The horizon H is the oldest timestamp that may be read. It is replicated:
// the leader proposes it (opHorizon) and every replica applies the same
// value at the same log position, so that reads, and the validation of
// transactions in the apply, agree on every replica. The leader aims at
// max(now − Retention, the timestamp that keeps the collectible bytes
// under RetentionBytes), never past the last applied timestamp, and
// proposes it only when something would be collected.
//
// Collection happens in engine compactions, through the Collector's
// filter: a history entry whose end ≤ H, a revision-log entry or an
// outcome record whose timestamp ≤ H is dropped. The filter uses the
// horizon only once it is durable in the engine (the entry that set it is
// applied with an fsync before the Collector learns it) and never while a
// checkpoint is being taken: after a crash, or on a follower that installs
// a checkpoint, the engine's data never lacks anything the entries it
// replays could read (they carry horizons at least as old).
//
// Byte accounting: every commit's history, revision-log and outcome bytes
// are counted in buckets of timestamps, persisted in the same batch
// (0x00 "mvcc/bytes/" | last ts of the bucket → total), and dropped when
// the horizon passes a bucket. Their sum is what garbage collection can
// reclaim: the retained history.

// Collector is the engine's compaction filter for versioned data. Create
// it before the engine (Options.CompactionFilter = c.Filter), pass it to
// the Store, and keep it across engine replacements. It is safe for
// concurrent use.
type Collector struct {
	h atomic.Uint64
}

// NewCollector returns a collector that drops nothing until a Store
// publishes a horizon.
func NewCollector() *Collector { return &Collector{} }

// Horizon returns the horizon the filter applies.
func (c *Collector) Horizon() uint64 { return c.h.Load() }

func (c *Collector) publish(h uint64) {
	for {
		cur := c.h.Load()
		if h <= cur || c.h.CompareAndSwap(cur, h) {
			return
		}
	}
}

// Filter is an engine.CompactionFilter: it drops history entries,
// revision-log entries and outcome records at or below the horizon.
// Everything else (user keys, system keys) is kept.
func (c *Collector) Filter(key, value []byte) bool {
	if len(key) < 2 || key[0] != SystemPrefix {
		return false
	}
	h := c.h.Load()
	switch key[1] {
	case 'h':
		return len(value) >= 8 && binary.BigEndian.Uint64(value) <= h
	case 'l':
		return len(key) >= 10 && binary.BigEndian.Uint64(key[2:10]) <= h
	case 'o':
		return len(value) >= 8 && binary.BigEndian.Uint64(value) <= h
	}
	return false
}

// minBucketShift: a bucket spans at least 2^26 timestamps (about one
// second); maxBuckets bounds how many a retention window holds (about the
// memory and startup cost of the accounting).
const (
	minBucketShift = 26
	maxBuckets     = 1024
)

// gcState is a Store's garbage-collection state.
type gcState struct {
	retention      time.Duration
	retentionBytes int64
	// holdRetention and holdBytes bound what change-feed consumers may
	// hold back (Options.HoldRetention, HoldRetentionBytes).
	holdRetention time.Duration
	holdBytes     int64
	interval      time.Duration
	bucketMask    uint64

	mu sync.Mutex
	// buckets maps a bucket's last timestamp to the bytes counted in it.
	buckets map[uint64]int64
	total   int64
}

func newGCState(o *Options) *gcState {
	g := &gcState{retention: o.Retention, retentionBytes: o.RetentionBytes, interval: o.GCInterval, buckets: map[uint64]int64{},
		holdRetention: o.HoldRetention, holdBytes: o.HoldRetentionBytes}
	shift := minBucketShift
	if o.Retention > 0 {
		span := uint64(o.Retention.Milliseconds()) << LogicalBits / maxBuckets
		shift = max(shift, bits.Len64(span))
	}
	g.bucketMask = 1<<shift - 1
	return g
}

func bucketKey(last uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), bucketPrefix...), last)
}

// load reads the persisted buckets.
func (g *gcState) load(db *engine.DB) error {
	it, err := db.NewIter(&engine.IterOptions{LowerBound: bucketPrefix, UpperBound: prefixEnd(bucketPrefix)})
	if err != nil {
		return err
	}
	g.mu.Lock()
	clear(g.buckets)
	g.total = 0
	for ok := it.First(); ok; ok = it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != len(bucketPrefix)+8 || len(v) != 8 {
			continue
		}
		n := int64(binary.BigEndian.Uint64(v))
		g.buckets[binary.BigEndian.Uint64(k[len(bucketPrefix):])] = n
		g.total += n
	}
	g.mu.Unlock()
	return it.Close()
}

// account counts n collectible bytes written by the commit at ts in the
// run's pending bucket totals and writes the new total.
func (g *gcState) account(a *applier, ts uint64, n int) {
	b := ts | g.bucketMask
	cur, ok := a.buckets[b]
	switch {
	case !ok:
		g.mu.Lock()
		cur = g.buckets[b]
		g.mu.Unlock()
	case cur < 0:
		// Collected earlier in the run (cannot happen: a horizon never
		// passes a later commit's bucket); start it again.
		cur = 0
	}
	a.buckets[b] = cur + int64(n)
}

// collectBuckets deletes the buckets wholly at or below horizon h.
func (g *gcState) collectBuckets(a *applier, h uint64) error {
	g.mu.Lock()
	var gone []uint64
	for b := range g.buckets {
		if b <= h {
			gone = append(gone, b)
		}
	}
	g.mu.Unlock()
	for b := range a.buckets {
		if b <= h {
			gone = append(gone, b)
		}
	}
	for _, b := range gone {
		a.buckets[b] = -1
	}
	return nil
}

// flush writes the run's bucket changes into its batch.
func (g *gcState) flush(a *applier) error {
	for b, n := range a.buckets {
		var err error
		if n < 0 {
			err = a.b.Delete(bucketKey(b))
		} else {
			var v [8]byte
			binary.BigEndian.PutUint64(v[:], uint64(n))
			err = a.b.Set(bucketKey(b), v[:])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// commit makes the run's bucket changes current (after the batch
// committed).
func (g *gcState) commit(a *applier) {
	if len(a.buckets) == 0 {
		return
	}
	g.mu.Lock()
	for b, n := range a.buckets {
		g.total -= g.buckets[b]
		if n < 0 {
			delete(g.buckets, b)
			continue
		}
		g.buckets[b] = n
		g.total += n
	}
	g.mu.Unlock()
}

// historyBytes returns the collectible bytes counted.
func (g *gcState) historyBytes() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.total
}

// bound is the horizon that a time bound (now − retention) and a byte
// bound (the newest buckets that fit in retentionBytes are kept) ask for;
// 0 for no bound. Called with mu.
func (g *gcState) bound(now time.Time, retention time.Duration, retentionBytes int64) uint64 {
	var h uint64
	if retention > 0 {
		h = TSFromTime(now.Add(-retention))
	}
	if retentionBytes > 0 && g.total > retentionBytes {
		lasts := make([]uint64, 0, len(g.buckets))
		for b := range g.buckets {
			lasts = append(lasts, b)
		}
		sort.Slice(lasts, func(i, j int) bool { return lasts[i] > lasts[j] })
		// Keep the newest buckets while they fit; collect the rest.
		var kept int64
		for _, b := range lasts {
			if kept+g.buckets[b] > retentionBytes {
				h = max(h, b)
				break
			}
			kept += g.buckets[b]
		}
	}
	return h
}

// target computes the horizon the leader should propose: the later of the
// time bound and the byte bound, held back at hold (the oldest revision a
// change-feed consumer needs, when hasHold) unless the consumers' own
// bounds let it pass, never past applied, and ok only when some counted
// bytes would become collectible.
func (g *gcState) target(now time.Time, applied, current, hold uint64, hasHold bool) (uint64, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	h := g.bound(now, g.retention, g.retentionBytes)
	if hasHold && hold < h {
		h = min(h, max(hold, g.bound(now, g.holdRetention, g.holdBytes)))
	}
	h = min(h, applied)
	if h <= current {
		return 0, false
	}
	for b := range g.buckets {
		if b&^g.bucketMask <= h && g.buckets[b] > 0 {
			return h, true // the bucket holds timestamps at or below h
		}
	}
	return 0, false
}

// gcLoop proposes horizons while this node leads.
func (s *Store) gcLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.gc.interval)
	defer t.Stop()
	for {
		select {
		case <-s.stopc:
			return
		case <-t.C:
		}
		if !s.node.IsLeader() {
			continue
		}
		var hold uint64
		hasHold := false
		if s.opts.HoldHistory != nil {
			hold, hasHold = s.opts.HoldHistory()
		}
		h, ok := s.gc.target(s.clock.wall(), s.appliedTS.Load(), s.horizon.Load(), hold, hasHold)
		if !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.RequestTimeout)
		_, err := s.proposeHorizon(ctx, h)
		cancel()
		if err != nil && !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrStopped) {
			s.log.Warn("proposing a garbage-collection horizon failed; will retry", "horizon", h, "err", err)
		}
	}
}

// proposeHorizon replicates a new GC horizon (the apply never lets it go
// backwards or past the last applied timestamp).
func (s *Store) proposeHorizon(ctx context.Context, h uint64) (Result, error) {
	var body [8]byte
	binary.LittleEndian.PutUint64(body[:], h)
	wait, err := s.start(ctx, opHorizon, nil, body[:])
	if err != nil {
		return Result{}, err
	}
	return wait(ctx)
}

// readHorizon returns the horizon recorded in db (0 when none).
func readHorizon(db Getter) (uint64, error) {
	v, err := db.Get(horizonKey)
	if errors.Is(err, engine.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, corruptf("the GC horizon record is %d bytes, want 8", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// Horizon returns the applied GC horizon: the oldest readable revision.
func (s *Store) Horizon() uint64 { return s.horizon.Load() }

// HistoryBytes returns the bytes of history, revision log and outcome
// records that garbage collection has not yet been allowed to reclaim.
func (s *Store) HistoryBytes() int64 { return s.gc.historyBytes() }

// Retention returns the configured history bounds (0: none).
func (s *Store) Retention() (time.Duration, int64) {
	return s.gc.retention, s.gc.retentionBytes
}

// gcBuckets is for tests: the bucket totals.
func (s *Store) gcBuckets() map[uint64]int64 {
	s.gc.mu.Lock()
	defer s.gc.mu.Unlock()
	out := make(map[uint64]int64, len(s.gc.buckets))
	for k, v := range s.gc.buckets {
		out[k] = v
	}
	return out
}
