package jepsen

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kayadb/kayadb/client"
)

// The watch workload (issue 15): workers put unique values under a few
// prefixes (watch/P/V, each key written once) and delete some of their
// keys again; watchers on every prefix (two each, from revision 1, each
// on its own client) and a CDC consumer that polls, checkpoints, and on
// every error resumes from its stored position (dropping what it got
// after it, as a consumer that lost its state would) record what they
// receive. After the run heals, a sentinel is written under every prefix
// and the run waits until every watcher and the consumer got theirs.
//
// The checker (checkWatch): every watcher and the consumer must have
// received every acknowledged change of their keys exactly once, in
// revision order, nothing that was not committed (no change of a write
// that failed, none twice, none the harness never made), revisions that
// follow real time (a write acknowledged before another began has the
// smaller revision), and the watchers of a prefix and the consumer the
// same sequence of changes with the same revisions.

// WorkloadWatch is the watch workload's name.
const WorkloadWatch = "watch"

// Op kinds of the watch workload.
const (
	KindWatchPut    = "watch-put"
	KindWatchDelete = "watch-delete"
)

const (
	watchPrefixes     = 3
	watchersPerPrefix = 2
	watchConsumer     = "jepsen"
)

func watchPrefix(p int) string { return fmt.Sprintf("watch/%d/", p) }

// watchOp is one operation of a worker in the watch workload.
func (w *worker) watchOp(ctx context.Context) {
	if len(w.watchOwned) > 0 && w.rng.IntN(4) == 0 {
		i := w.rng.IntN(len(w.watchOwned))
		key := w.watchOwned[i]
		w.watchOwned = append(w.watchOwned[:i], w.watchOwned[i+1:]...)
		op := Op{Client: w.id, Kind: KindWatchDelete, Key: key, Call: w.h.now()}
		c, cancel := w.opCtx(ctx)
		err := w.cl.Delete(c, []byte(key))
		cancel()
		op.Return, op.Status = w.h.now(), writeStatus(err)
		if err != nil {
			op.Error = err.Error()
		}
		w.h.add(op)
		return
	}
	v := w.nextValue()
	key := fmt.Sprintf("%s%d", watchPrefix(w.rng.IntN(watchPrefixes)), v)
	w.doPut(ctx, Op{Kind: KindWatchPut, Key: key, Value: v})
	w.watchOwned = append(w.watchOwned, key)
}

// watchEvent is one change a watcher or the consumer received.
type watchEvent struct {
	Rev   uint64
	Del   bool
	Key   string
	Value string
}

func (e watchEvent) String() string {
	if e.Del {
		return fmt.Sprintf("%d delete %s", e.Rev, e.Key)
	}
	return fmt.Sprintf("%d put %s=%s", e.Rev, e.Key, e.Value)
}

// watchRecorder is one watcher, or the consumer (prefix "watch/").
type watchRecorder struct {
	name     string
	prefix   string
	sentinel []string // keys whose arrival ends the wait

	mu     sync.Mutex
	events []watchEvent
	seen   map[string]bool
	errs   []string
	resets int // consumer: resumptions from the stored position
}

func (r *watchRecorder) add(e watchEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	if r.seen == nil {
		r.seen = map[string]bool{}
	}
	r.seen[e.Key] = true
}

func (r *watchRecorder) done() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range r.sentinel {
		if !r.seen[k] {
			return false
		}
	}
	return true
}

func (r *watchRecorder) snapshot() []watchEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]watchEvent(nil), r.events...)
}

// watchRun holds the watchers and the consumer of a run.
type watchRun struct {
	recs   []*watchRecorder
	cons   *watchRecorder
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func sentinelKey(p int) string { return watchPrefix(p) + "end" }

// startWatchers starts the watchers and the consumer, each with its own
// client of addrs.
func startWatchers(ctx context.Context, addrs []string, logf func(string, ...any)) (*watchRun, error) {
	ctx, cancel := context.WithCancel(ctx)
	wr := &watchRun{cancel: cancel}
	n := 0
	for p := 0; p < watchPrefixes; p++ {
		for i := 0; i < watchersPerPrefix; i++ {
			// Each watcher starts on another node: the leader serves some,
			// followers the others.
			n++
			rot := append(append([]string(nil), addrs[n%len(addrs):]...), addrs[:n%len(addrs)]...)
			cl, err := client.New(rot, &client.Options{RequestTimeout: 2 * time.Second, DialTimeout: 500 * time.Millisecond})
			if err != nil {
				cancel()
				return nil, err
			}
			r := &watchRecorder{name: fmt.Sprintf("watcher %d of %s", i, watchPrefix(p)), prefix: watchPrefix(p), sentinel: []string{sentinelKey(p)}}
			wr.recs = append(wr.recs, r)
			ch := cl.Watch(ctx, []byte(r.prefix), client.WithStartRevision(1), client.WithWatchBuffer(1024))
			wr.wg.Add(1)
			go func() {
				defer wr.wg.Done()
				defer cl.Close()
				for resp := range ch {
					if resp.Err != nil {
						if ctx.Err() == nil {
							r.mu.Lock()
							r.errs = append(r.errs, resp.Err.Error())
							r.mu.Unlock()
						}
						continue
					}
					for _, e := range resp.Events {
						r.add(watchEvent{Rev: e.Revision, Del: e.Type == client.EventDelete, Key: string(e.Key), Value: string(e.Value)})
					}
				}
			}()
		}
	}
	cl, err := client.New(addrs, &client.Options{RequestTimeout: 2 * time.Second, DialTimeout: 500 * time.Millisecond})
	if err != nil {
		cancel()
		return nil, err
	}
	wr.cons = &watchRecorder{name: "cdc consumer " + watchConsumer, prefix: "watch/"}
	for p := 0; p < watchPrefixes; p++ {
		wr.cons.sentinel = append(wr.cons.sentinel, sentinelKey(p))
	}
	wr.wg.Add(1)
	go func() {
		defer wr.wg.Done()
		defer cl.Close()
		runConsumer(ctx, cl, wr.cons, logf)
	}()
	return wr, nil
}

// runConsumer polls and checkpoints; after an error it resumes from the
// stored position, dropping what it recorded after it.
func runConsumer(ctx context.Context, cl *client.Client, r *watchRecorder, logf func(string, ...any)) {
	var pos uint64
	polls := 0
	resume := false
	for ctx.Err() == nil {
		if resume {
			stored, err := cl.CDCPosition(ctx, watchConsumer)
			switch {
			case errors.Is(err, client.ErrNotFound):
				stored = 0
			case err != nil:
				time.Sleep(100 * time.Millisecond)
				continue
			}
			r.mu.Lock()
			n := 0
			for _, e := range r.events {
				if e.Rev <= stored {
					r.events[n] = e
					n++
				}
			}
			r.events = r.events[:n]
			r.seen = map[string]bool{}
			for _, e := range r.events {
				r.seen[e.Key] = true
			}
			r.resets++
			r.mu.Unlock()
			pos, resume = stored, false
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		evs, err := cl.CDCPoll(pctx, watchConsumer, pos, 200)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				var ce *client.CompactedError
				if errors.As(err, &ce) {
					r.mu.Lock()
					r.errs = append(r.errs, err.Error())
					r.mu.Unlock()
				}
				resume = true
				time.Sleep(50 * time.Millisecond)
			}
			continue
		}
		for _, e := range evs {
			if strings.HasPrefix(string(e.Key), "watch/") {
				r.add(watchEvent{Rev: e.Seq, Del: e.Type == client.EventDelete, Key: string(e.Key), Value: string(e.Value)})
			}
			pos = e.Seq
		}
		polls++
		if len(evs) > 0 && polls%5 == 0 {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if err := cl.CDCCheckpoint(cctx, watchConsumer, pos); err != nil {
				resume = ctx.Err() == nil
			}
			cancel()
		}
		if len(evs) == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// finish writes the sentinels, waits for everyone to receive them, and
// stops the watchers and the consumer.
func (wr *watchRun) finish(ctx context.Context, admin *client.Client, budget time.Duration) error {
	defer func() {
		wr.cancel()
		wr.wg.Wait()
	}()
	deadline := time.Now().Add(budget)
	for p := 0; p < watchPrefixes; p++ {
		for {
			c, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := admin.Put(c, []byte(sentinelKey(p)), []byte("end"))
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("writing the watch sentinels: %w", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, r := range append(append([]*watchRecorder(nil), wr.recs...), wr.cons) {
		for !r.done() {
			if time.Now().After(deadline) {
				return fmt.Errorf("%s did not receive the sentinels within %s", r.name, budget)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// checkWatch checks what the watchers and the consumer received against
// the history of the watch workload's writes.
func checkWatch(ops []Op, wr *watchRun) Verdict {
	v := Verdict{Checker: "watch", Result: "ok"}
	type write struct {
		op  *Op
		rev uint64
	}
	puts := map[string]*Op{}
	dels := map[string]*Op{}
	for i := range ops {
		op := &ops[i]
		switch op.Kind {
		case KindWatchPut:
			puts[op.Key] = op
			v.Ops++
		case KindWatchDelete:
			dels[op.Key] = op
			v.Ops++
		}
	}
	var problems []string
	bad := func(format string, args ...any) {
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	sequences := map[string][]watchEvent{} // prefix → the first watcher's events
	revOf := map[string]uint64{}           // "put key" / "delete key" → revision
	check := func(r *watchRecorder) {
		evs := r.snapshot()
		for _, e := range r.errs {
			bad("%s: the watch ended with an error: %s", r.name, e)
		}
		seen := map[string]bool{}
		var last uint64
		for _, e := range evs {
			if e.Rev <= last {
				bad("%s: revision %d after %d (%s): out of order or repeated", r.name, e.Rev, last, e)
			}
			last = e.Rev
			if !strings.HasPrefix(e.Key, r.prefix) {
				bad("%s: %s is not under its prefix", r.name, e)
				continue
			}
			if strings.HasSuffix(e.Key, "/end") {
				continue
			}
			id := "put " + e.Key
			if e.Del {
				id = "delete " + e.Key
			}
			if seen[id] {
				bad("%s: %s delivered twice", r.name, e)
			}
			seen[id] = true
			var op *Op
			if e.Del {
				op = dels[e.Key]
			} else {
				op = puts[e.Key]
				if op != nil && e.Value != fmt.Sprint(op.Value) {
					bad("%s: %s has a value the harness never wrote there (%d)", r.name, e, op.Value)
				}
			}
			switch {
			case op == nil:
				bad("%s: %s: the harness made no such write", r.name, e)
			case op.Status == StatusFail:
				bad("%s: %s: a write that failed (was never committed) was delivered", r.name, e)
			}
			if prev, ok := revOf[id]; ok && prev != e.Rev {
				bad("%s: %s, elsewhere at revision %d", r.name, e, prev)
			}
			revOf[id] = e.Rev
		}
		// Every acknowledged change under the prefix arrived.
		for k, op := range puts {
			if strings.HasPrefix(k, r.prefix) && op.Status == StatusOK && !seen["put "+k] {
				bad("%s: the acknowledged put of %s=%d never arrived", r.name, k, op.Value)
			}
		}
		for k, op := range dels {
			if p := puts[k]; strings.HasPrefix(k, r.prefix) && op.Status == StatusOK && p != nil && p.Status == StatusOK && !seen["delete "+k] {
				bad("%s: the acknowledged delete of %s never arrived", r.name, k)
			}
		}
	}
	for _, r := range wr.recs {
		check(r)
		evs := r.snapshot()
		if first, ok := sequences[r.prefix]; !ok {
			sequences[r.prefix] = evs
		} else if d := firstDifference(first, evs); d != "" {
			bad("%s differs from the other watcher of %s: %s", r.name, r.prefix, d)
		}
	}
	check(wr.cons)
	cons := wr.cons.snapshot()
	for p := 0; p < watchPrefixes; p++ {
		var mine []watchEvent
		for _, e := range cons {
			if strings.HasPrefix(e.Key, watchPrefix(p)) {
				mine = append(mine, e)
			}
		}
		if d := firstDifference(sequences[watchPrefix(p)], mine); d != "" {
			bad("the cdc consumer's changes of %s differ from its watchers': %s", watchPrefix(p), d)
		}
	}
	// Revisions follow real time: a write acknowledged before another was
	// invoked has the smaller revision.
	var ws []write
	for id, rev := range revOf {
		kind, key, _ := strings.Cut(id, " ")
		op := puts[key]
		if kind == "delete" {
			op = dels[key]
		}
		if op != nil && op.Status == StatusOK {
			ws = append(ws, write{op, rev})
		}
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].rev > ws[j].rev })
	minReturn, minOp := int64(1<<62), (*Op)(nil)
	for _, w := range ws {
		if w.op.Call > minReturn {
			bad("real-time order: %s %s (revision %d) was invoked after %s %s returned, which has a later revision", w.op.Kind, w.op.Key, w.rev, minOp.Kind, minOp.Key)
		}
		if w.op.Return < minReturn {
			minReturn, minOp = w.op.Return, w.op
		}
	}
	total := 0
	for _, r := range wr.recs {
		total += len(r.snapshot())
	}
	v.Detail = fmt.Sprintf("%d watchers received %d changes; the consumer %d changes (%d resumptions from its stored position)",
		len(wr.recs), total, len(cons), wr.cons.resets)
	if len(problems) > 0 {
		v.Result = "violation"
		v.Detail += "; " + strings.Join(problems, "; ")
	}
	return v
}

// firstDifference describes where two sequences of changes first differ.
func firstDifference(a, b []watchEvent) string {
	for i := 0; i < len(a) || i < len(b); i++ {
		switch {
		case i >= len(a):
			return fmt.Sprintf("change %d: %s is extra", i, b[i])
		case i >= len(b):
			return fmt.Sprintf("change %d: %s is missing", i, a[i])
		case a[i] != b[i]:
			return fmt.Sprintf("change %d: %s, not %s", i, b[i], a[i])
		}
	}
	return ""
}
