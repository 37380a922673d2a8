package client

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// A call bounded by Options.RequestTimeout used to carry a
// context.WithTimeout: a runtime timer started and stopped per call, a
// cancelCtx and its channel allocated, the reader's context.AfterFunc
// registered. In a loop of small calls that was a tenth of the client's
// CPU. A callCtx carries the same deadline without a timer of its own:
//
//   - a caller waiting for its reply (call.await) wakes at the client's
//     deadlineClock, one timer for all waiting calls, and checks its own
//     deadline;
//   - the caller reading replies for its connection (conn.readResponses)
//     bounds its read by its own deadline through the socket's read
//     deadline, which the connection's watchdog sets anyway;
//   - every other wait (a pipeline slot, a dial, a back-off) calls Done,
//     which starts the timer-backed context then, for that call only.
//
// So the deadline is kept to within one tick of the clock (clockPeriod)
// where a caller waits for its reply, and exactly elsewhere.

// callCtx is the context of one call whose deadline is its start plus
// RequestTimeout (the caller's context has none, or a later one). It is
// valid until the call's cancel function runs.
type callCtx struct {
	context.Context // the caller's: its Done (maybe nil) and values
	deadline        time.Time
	clock           *deadlineClock

	once   sync.Once
	timed  atomic.Pointer[timedCtx] // set by the first Done
	cancel context.CancelFunc
}

type timedCtx struct{ context.Context }

// timedStarted counts the callCtxs that had to start a timer (tests).
var timedStarted atomic.Int64

// Deadline implements context.Context.
func (c *callCtx) Deadline() (time.Time, bool) { return c.deadline, true }

// Done implements context.Context: a channel closed at the deadline or
// when the caller's context ends. The first call starts a timer for it.
func (c *callCtx) Done() <-chan struct{} {
	return c.timedCtx().Done()
}

func (c *callCtx) timedCtx() *timedCtx {
	c.once.Do(func() {
		timedStarted.Add(1)
		t, cancel := context.WithDeadline(c.Context, c.deadline)
		c.cancel = cancel
		c.timed.Store(&timedCtx{t})
	})
	return c.timed.Load()
}

// Err implements context.Context. Once Done was called it is the
// timer-backed context's (so that Err is nil while Done is open);
// before, the caller's error or, past the deadline,
// context.DeadlineExceeded.
func (c *callCtx) Err() error {
	if t := c.timed.Load(); t != nil {
		return t.Err()
	}
	if err := c.Context.Err(); err != nil {
		return err
	}
	if c.expired() {
		return context.DeadlineExceeded
	}
	return nil
}

// expired reports whether the call's own deadline has passed.
func (c *callCtx) expired() bool { return !time.Now().Before(c.deadline) }

// stop releases the timer-backed context, if one was started. The call
// is over: from now on the context reads as cancelled.
func (c *callCtx) stop() {
	c.once.Do(func() { c.timed.Store(endedCtx) })
	if c.cancel != nil {
		c.cancel()
	}
}

// endedCtx is a stopped callCtx's: cancelled.
var endedCtx = func() *timedCtx {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return &timedCtx{ctx}
}()

// waitOn splits ctx for a wait that must end at its deadline: the
// channel that ends the wait early (the caller's Done for a callCtx,
// ctx.Done otherwise; nil for none) and, for a callCtx, the call itself,
// whose deadline the waiter checks at each tick of its clock.
func waitOn(ctx context.Context) (done <-chan struct{}, cc *callCtx) {
	if cc, ok := ctx.(*callCtx); ok && cc.timed.Load() == nil {
		return cc.Context.Done(), cc
	}
	return ctx.Done(), nil
}

// clockPeriod is the tick of a client's deadlineClock for a request
// timeout of rt: a twentieth of it, between 1 ms and 100 ms.
func clockPeriod(rt time.Duration) time.Duration {
	return min(max(rt/20, time.Millisecond), 100*time.Millisecond)
}

// deadlineClock wakes the callers waiting for replies every period while
// any wait, so that each can check its own deadline. It runs only while
// callers wait.
type deadlineClock struct {
	period  time.Duration
	waiters atomic.Int64
	armed   atomic.Bool
	tick    atomic.Pointer[chan struct{}] // closed at the next tick
	timer   *time.Timer
}

func newDeadlineClock(period time.Duration) *deadlineClock {
	k := &deadlineClock{period: period}
	ch := make(chan struct{})
	k.tick.Store(&ch)
	k.timer = time.AfterFunc(time.Hour, k.fire)
	k.timer.Stop()
	return k
}

// enter registers a waiter and returns the channel closed at the next
// tick; the waiter calls next after each tick it keeps waiting through,
// and leave when it stops waiting.
func (k *deadlineClock) enter() <-chan struct{} {
	k.waiters.Add(1)
	return k.next()
}

// next returns the channel closed at the next tick, arming the clock if
// it stopped. Called by a registered waiter.
func (k *deadlineClock) next() <-chan struct{} {
	if !k.armed.Load() && k.armed.CompareAndSwap(false, true) {
		k.timer.Reset(k.period)
	}
	return *k.tick.Load()
}

func (k *deadlineClock) leave() { k.waiters.Add(-1) }

func (k *deadlineClock) fire() {
	ch := make(chan struct{})
	close(*k.tick.Swap(&ch))
	// A waiter that entered after the swap holds the new channel; one that
	// enters after the store below arms the clock itself.
	k.armed.Store(false)
	if k.waiters.Load() > 0 && k.armed.CompareAndSwap(false, true) {
		k.timer.Reset(k.period)
	}
}

// close stops the clock; callers still waiting are ended by their
// connections failing (Client.Close).
func (k *deadlineClock) close() {
	k.timer.Stop()
}
