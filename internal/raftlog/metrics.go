package raftlog

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// latencyHistogram counts durations in power-of-two microsecond buckets:
// bucket i holds durations in [2^(i-1), 2^i) µs, bucket 0 those under 1 µs,
// the last one everything longer. It is the engine's layout.
type latencyHistogram struct {
	buckets [32]atomic.Uint64
	sumNs   atomic.Uint64
}

func (h *latencyHistogram) record(d time.Duration) {
	i := bits.Len64(uint64(d / time.Microsecond))
	if i >= len(h.buckets) {
		i = len(h.buckets) - 1
	}
	h.buckets[i].Add(1)
	h.sumNs.Add(uint64(d))
}

// SyncLatency returns the fsync latencies of Save since the log was opened:
// counts[i] is the number of fsyncs that took [2^(i-1), 2^i) µs (counts[0]:
// under 1 µs; the last bucket also holds longer ones), sum their total.
func (l *Log) SyncLatency() (counts [32]uint64, sum time.Duration) {
	for i := range counts {
		counts[i] = l.syncLatency.buckets[i].Load()
	}
	return counts, time.Duration(l.syncLatency.sumNs.Load())
}
