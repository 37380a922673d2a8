package engine

import "time"

// LatencyBuckets are the raw counts behind a LatencySummary: Counts[i] is
// the number of durations in [2^(i-1), 2^i) µs (Counts[0]: under 1 µs; the
// last bucket also holds longer ones), Sum their total. The counts are
// read one by one without a lock, so a concurrent record may show in Sum
// and not yet in its bucket (or the reverse).
type LatencyBuckets struct {
	Counts [32]uint64
	Sum    time.Duration
}

func (h *histogram) raw() LatencyBuckets {
	var b LatencyBuckets
	for i := range b.Counts {
		b.Counts[i] = h.buckets[i].Load()
	}
	b.Sum = time.Duration(h.sumNs.Load())
	return b
}

// LatencyHistograms returns the engine's latency histograms (WAL fsyncs,
// flushes, compactions) with their buckets, for exporters that need more
// than Metrics' summaries.
func (d *DB) LatencyHistograms() (walSync, flush, compaction LatencyBuckets) {
	return d.m.walSyncLatency.raw(), d.m.flushDuration.raw(), d.m.compactDuration.raw()
}
