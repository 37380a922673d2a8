package clustertest

import (
	"sync"
	"time"
)

// Clock is the raft clock of every node of a Harness: each incarnation of
// a node gets its own Ticker from it. The clock runs in one of two modes,
// and a test may switch between them at any time (SetFree):
//
//   - manual: a node's clock moves only when the test calls Harness.Tick
//     (or Ticker.Tick). A tick is taken by the node's loop before Tick
//     returns, so elections and heartbeats happen exactly when the test
//     says, and a wait that needs time moves the clock instead of sleeping;
//   - free-running: every ticker fires once per Interval of real time, as
//     a production node's time.Ticker does (for tests whose subject is
//     wall-clock behaviour: load, timeouts, leadership moves under real
//     delays).
type Clock struct {
	interval time.Duration

	mu      sync.Mutex
	free    bool
	tickers map[*Ticker]struct{}
}

// NewClock returns a clock whose ticks stand for interval of real time
// (and come that often when it runs freely).
func NewClock(interval time.Duration, free bool) *Clock {
	return &Clock{interval: interval, free: free, tickers: map[*Ticker]struct{}{}}
}

// Interval is the length of a tick.
func (c *Clock) Interval() time.Duration { return c.interval }

// Free reports whether the clock runs in real time.
func (c *Clock) Free() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.free
}

// SetFree makes the clock run in real time (true) or only when ticked
// (false), for every ticker now and later.
func (c *Clock) SetFree(free bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.free == free {
		return
	}
	c.free = free
	for t := range c.tickers {
		if free {
			t.startPump(c.interval)
		} else {
			t.stopPump()
		}
	}
}

// NewTicker returns a ticker of this clock for one node incarnation (a
// raftnode.Ticker); the node stops it when it stops.
func (c *Clock) NewTicker() *Ticker {
	t := &Ticker{clock: c, c: make(chan time.Time), stop: make(chan struct{})}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tickers[t] = struct{}{}
	if c.free {
		t.startPump(c.interval)
	}
	return t
}

// Ticker is one node's tick source (raftnode.Ticker). Its channel is
// unbuffered: a manual tick is handed to the loop itself, and a
// free-running one waits for the loop at most until the next is due (a
// busy loop sees one late tick, not a burst, like a time.Ticker's).
type Ticker struct {
	clock    *Clock
	c        chan time.Time
	stop     chan struct{} // closed by Stop
	stopOnce sync.Once

	// The pump of free-running mode; guarded by clock.mu.
	pumpQuit, pumpDone chan struct{}
}

// C implements raftnode.Ticker.
func (t *Ticker) C() <-chan time.Time { return t.c }

// Stop implements raftnode.Ticker: the ticker leaves its clock.
func (t *Ticker) Stop() {
	t.stopOnce.Do(func() {
		close(t.stop)
		t.clock.mu.Lock()
		defer t.clock.mu.Unlock()
		delete(t.clock.tickers, t)
		t.stopPump()
	})
}

// Tick hands one tick to the node's loop and returns once the loop took
// it; false if done closed (the node stopped) or the ticker was stopped
// first.
func (t *Ticker) Tick(done <-chan struct{}) bool {
	select {
	case t.c <- time.Now():
		return true
	case <-done:
		return false
	case <-t.stop:
		return false
	}
}

// startPump starts the free-running goroutine. The caller holds clock.mu.
func (t *Ticker) startPump(every time.Duration) {
	if t.pumpQuit != nil {
		return
	}
	quit, done := make(chan struct{}), make(chan struct{})
	t.pumpQuit, t.pumpDone = quit, done
	go func() {
		defer close(done)
		tt := time.NewTicker(every)
		defer tt.Stop()
		for {
			select {
			case <-quit:
				return
			case now := <-tt.C:
				select {
				case t.c <- now:
				case <-quit:
					return
				}
			}
		}
	}()
}

// stopPump stops the free-running goroutine and waits for it. The caller
// holds clock.mu (the pump never takes it).
func (t *Ticker) stopPump() {
	if t.pumpQuit == nil {
		return
	}
	close(t.pumpQuit)
	<-t.pumpDone
	t.pumpQuit, t.pumpDone = nil, nil
}
