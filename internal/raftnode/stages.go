package raftnode

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Stage is one step of a client request's path through a node; Stages
// times each. They live here because the raft loop is the lowest layer
// that times one (kv and the server, which time the others, import this
// package). docs/design/latency.md explains what each covers for a put and
// for a get, on one node and on three.
type Stage uint8

// The stages, in the order a put passes them.
const (
	// StageRead: reading a request frame off the client connection, from
	// its first byte to its last.
	StageRead Stage = iota
	// StageDecode: from the frame read to the proposal queued (a write:
	// credentials, decoding, validation, the entry's encoding) or to the
	// store called (a read: includes starting the request's goroutine).
	StageDecode
	// StageQueue: a proposal waiting for the raft loop to take it; for a
	// read, its ReadIndex waiting to reach the raft loop.
	StageQueue
	// StageRaftReady: the raft loop, from waking up to writing the log (a
	// Ready that holds entries) or handing out read states: taking what
	// else is queued, building the Ready, a leader's sends.
	StageRaftReady
	// StageLogFsync: writing and fsyncing the raft log for a Ready that
	// must be durable.
	StageLogFsync
	// StageReplicate: a leader's entries from durable on its own disk to
	// committed (one node: raft's own acknowledgement, one more loop
	// step; three: a follower's receive, fsync and reply); for a read,
	// the ReadIndex round (a quorum of heartbeat replies).
	StageReplicate
	// StageApply: applying committed entries to the engine; for a read,
	// waiting for the applied index to reach the read index.
	StageApply
	// StageWake: from the raft loop (or the read loop) finishing a
	// request's part to the request's goroutine running again (a put or
	// delete from a client connection: to its reply callback, which runs
	// on the apply goroutine; the hop to the goroutine that writes the
	// reply then counts in StageReply).
	StageWake
	// StageEngine: a read's lookup in the engine.
	StageEngine
	// StageReply: from the reply ready to it written to the connection.
	StageReply
	// NumStages is the number of stages.
	NumStages
)

var stageNames = [NumStages]string{"read", "decode", "queue", "raft_ready", "log_fsync", "replicate", "apply", "wake", "engine", "reply"}

// String is the stage's metric label.
func (s Stage) String() string {
	if s < NumStages {
		return stageNames[s]
	}
	return "unknown"
}

// StageBuckets is the number of buckets of a stage histogram: bucket i
// holds durations in [2^(i-1), 2^i) µs, bucket 0 those under 1 µs, the last
// one everything longer (the layout of the raft log's and the engine's
// latency histograms).
const StageBuckets = 32

// Stages counts the duration of every stage in power-of-two microsecond
// buckets. Observe takes no lock and allocates nothing: a few atomic adds
// per stage per request. A nil *Stages records nothing.
type Stages struct {
	h [NumStages]stageHist
}

type stageHist struct {
	buckets [StageBuckets]atomic.Uint64
	sumNs   atomic.Uint64
}

// epoch is the origin of Now: a monotonic clock reading in nanoseconds
// that fits a struct field of 8 bytes (a time.Time takes 24).
var epoch = time.Now()

// Now returns the monotonic time in nanoseconds since the process started,
// the timestamp the stages are measured with.
func Now() int64 { return int64(time.Since(epoch)) }

// Observe records d for stage s.
func (st *Stages) Observe(s Stage, d time.Duration) {
	if st == nil || s >= NumStages {
		return
	}
	if d < 0 {
		d = 0
	}
	i := bits.Len64(uint64(d / time.Microsecond))
	if i >= StageBuckets {
		i = StageBuckets - 1
	}
	h := &st.h[s]
	h.buckets[i].Add(1)
	h.sumNs.Add(uint64(d))
}

// Since records the time from start (a Now reading; 0: not taken, nothing
// recorded) to now for stage s, and returns now.
func (st *Stages) Since(s Stage, start int64) int64 {
	if st == nil {
		return 0
	}
	now := Now()
	if start > 0 {
		st.Observe(s, time.Duration(now-start))
	}
	return now
}

// Histogram returns stage s's counts (see StageBuckets) and their sum.
func (st *Stages) Histogram(s Stage) (counts [StageBuckets]uint64, sum time.Duration) {
	if st == nil || s >= NumStages {
		return counts, 0
	}
	h := &st.h[s]
	for i := range counts {
		counts[i] = h.buckets[i].Load()
	}
	return counts, time.Duration(h.sumNs.Load())
}

// Count returns how many durations stage s recorded.
func (st *Stages) Count(s Stage) uint64 {
	c, _ := st.Histogram(s)
	var n uint64
	for _, v := range c {
		n += v
	}
	return n
}

// appendRing remembers, on the leader, when its newest appends became
// durable, so that the replicate stage (durable here → committed) can be
// timed when their commit arrives. It is bounded: 64 Readys' worth of
// appends is far more than are ever in flight at once with one fsync each
// (a busy leader batches many proposals into one Ready); when full, the
// oldest is forgotten and simply not timed.
type appendRing struct {
	idx        [64]uint64
	at         [64]int64
	head, size int
}

func (r *appendRing) push(index uint64, at int64) {
	if r.size == len(r.idx) {
		r.head = (r.head + 1) % len(r.idx)
		r.size--
	}
	i := (r.head + r.size) % len(r.idx)
	r.idx[i], r.at[i] = index, at
	r.size++
}

// commit times every remembered append at or below index.
func (r *appendRing) commit(st *Stages, index uint64) {
	if r.size == 0 || r.idx[r.head] > index {
		return
	}
	now := Now()
	for r.size > 0 && r.idx[r.head] <= index {
		st.Observe(StageReplicate, time.Duration(now-r.at[r.head]))
		r.head = (r.head + 1) % len(r.idx)
		r.size--
	}
}

func (r *appendRing) reset() { r.head, r.size = 0, 0 }
