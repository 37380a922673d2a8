package kv

import (
	"log/slog"
	"sync/atomic"
	"time"
)

// Timestamps (docs/design/mvcc-and-transactions.md §2)
//
// A timestamp is a u64: physical milliseconds since the Unix epoch in the
// top 48 bits, a logical counter in the low 16 (the original KayaDB's
// packing). Commit timestamps are decided in the raft apply:
// ts = max(proposed, lastApplied+1), where proposed is the proposer's
// Clock.Now() carried in the entry. Timestamps therefore grow strictly in
// log order on every replica alike; a revision is a commit timestamp.

// LogicalBits is the width of a timestamp's logical counter.
const LogicalBits = 16

// TSFromTime returns the smallest timestamp of the millisecond t falls in.
func TSFromTime(t time.Time) uint64 {
	ms := t.UnixMilli()
	if ms < 0 {
		return 0
	}
	return uint64(ms) << LogicalBits
}

// TSTime returns the wall-clock time of a timestamp's physical part.
func TSTime(ts uint64) time.Time { return time.UnixMilli(int64(ts >> LogicalBits)) }

// DefaultMaxClockOffset is the default --max-clock-offset (CockroachDB's
// default).
const DefaultMaxClockOffset = 500 * time.Millisecond

// Clock is a hybrid logical clock: Now never goes backwards and stays
// ahead of every timestamp Update has seen, even when the wall clock
// steps back. It is safe for concurrent use.
type Clock struct {
	wall      func() time.Time
	maxOffset time.Duration
	log       *slog.Logger

	last     atomic.Uint64
	exceeded atomic.Uint64
	// lastWarn is the wall time (Unix ns) of the last offset warning: one
	// per warnEvery at most, a bad clock must not flood the log.
	lastWarn atomic.Int64
}

// warnEvery bounds how often a clock-offset warning is logged.
const warnEvery = 10 * time.Second

// NewClock returns a clock reading wall (time.Now when nil). A timestamp
// seen by Update that lies more than maxOffset ahead of the wall clock is
// counted and logged (0: DefaultMaxClockOffset).
func NewClock(wall func() time.Time, maxOffset time.Duration, log *slog.Logger) *Clock {
	if wall == nil {
		wall = time.Now
	}
	if maxOffset <= 0 {
		maxOffset = DefaultMaxClockOffset
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Clock{wall: wall, maxOffset: maxOffset, log: log}
}

// Now returns a timestamp greater than every one Now returned or Update
// saw before: max(wall, last+1).
func (c *Clock) Now() uint64 {
	w := TSFromTime(c.wall())
	for {
		l := c.last.Load()
		n := max(w, l+1)
		if c.last.CompareAndSwap(l, n) {
			return n
		}
	}
}

// Update raises the clock to a timestamp seen elsewhere (an applied commit
// timestamp). One further ahead of the wall clock than the maximum offset
// is counted (OffsetExceeded) and logged: with one raft group it only
// diagnoses a bad clock; with ranges, reads will rely on the bound.
func (c *Clock) Update(ts uint64) {
	for {
		l := c.last.Load()
		if ts <= l || c.last.CompareAndSwap(l, ts) {
			break
		}
	}
	now := c.wall()
	if ahead := TSTime(ts).Sub(now); ahead > c.maxOffset {
		c.exceeded.Add(1)
		prev := c.lastWarn.Load()
		if now.UnixNano()-prev >= int64(warnEvery) && c.lastWarn.CompareAndSwap(prev, now.UnixNano()) {
			c.log.Warn("a commit timestamp is ahead of this node's clock by more than --max-clock-offset; check the clocks (NTP) of the nodes",
				"ahead", ahead, "max_clock_offset", c.maxOffset, "ts", ts)
		}
	}
}

// Last returns the highest timestamp handed out or seen.
func (c *Clock) Last() uint64 { return c.last.Load() }

// OffsetExceeded counts the timestamps Update saw beyond the maximum
// offset.
func (c *Clock) OffsetExceeded() uint64 { return c.exceeded.Load() }

// MaxOffset returns the configured maximum clock offset.
func (c *Clock) MaxOffset() time.Duration { return c.maxOffset }
