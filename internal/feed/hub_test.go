package feed

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/vfs"
	"github.com/kayadb/kayadb/internal/wire"
)

// testStore is a state machine applied directly (no raft): entries are
// made here in the kv entry format (version 2, one command).
type testStore struct {
	t     *testing.T
	s     *kv.Store
	index uint64
}

func newTestStore(t *testing.T) *testStore {
	t.Helper()
	db, err := engine.Open("/db", &engine.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	s, err := kv.Open(kv.Options{NodeID: 1, DB: db, Evaluators: Evaluators()})
	if err != nil {
		t.Fatal(err)
	}
	return &testStore{t: t, s: s}
}

func (ts *testStore) entry(op byte, key, value string) *pb.Entry {
	ts.index++
	d := []byte{2}
	d = binary.LittleEndian.AppendUint64(d, 0)
	d = append(d, 1, op)
	d = binary.LittleEndian.AppendUint64(d, ts.index)
	d = binary.AppendUvarint(d, uint64(len(key)))
	d = append(d, key...)
	if op == 1 {
		d = binary.AppendUvarint(d, uint64(len(value)))
		d = append(d, value...)
	}
	idx, term, typ := ts.index, uint64(1), pb.EntryNormal
	return &pb.Entry{Index: &idx, Term: &term, Type: &typ, Data: d}
}

// apply applies a run of puts (value "") is a delete.
func (ts *testStore) apply(kvs ...string) {
	ts.t.Helper()
	var ents []*pb.Entry
	for i := 0; i < len(kvs); i += 2 {
		if kvs[i+1] == "" {
			ents = append(ents, ts.entry(2, kvs[i], ""))
		} else {
			ents = append(ents, ts.entry(1, kvs[i], kvs[i+1]))
		}
	}
	if err := ts.s.Apply(ents); err != nil {
		ts.t.Fatal(err)
	}
}

// recorder is a sink that records frames; block makes it stall.
type recorder struct {
	mu     sync.Mutex
	frames []wire.WatchEvent
	block  chan struct{}
}

func (r *recorder) sink(ev *wire.WatchEvent) error {
	if r.block != nil {
		<-r.block
	}
	r.mu.Lock()
	r.frames = append(r.frames, *ev)
	r.mu.Unlock()
	return nil
}

func (r *recorder) events() (string, *wire.WatchEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	var last *wire.WatchEvent
	for i, f := range r.frames {
		if f.Kind == wire.WatchCanceled {
			last = &r.frames[i]
		}
		for _, e := range f.Events {
			fmt.Fprintf(&b, "%d %d %s=%s\n", e.Seq, e.Op, e.Key, e.Value)
		}
	}
	return b.String(), last
}

func history(t *testing.T, s *kv.Store, after uint64, match func([]byte) bool) string {
	t.Helper()
	cs, _, err := s.ReadChanges(after, 0, match, kv.ChangeBounds{MaxChanges: 1 << 20, MaxBytes: 1 << 30, MaxScanned: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "%d %d %s=%s\n", c.Rev, c.Op, c.Key, c.Value)
	}
	return b.String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHubFanOut: watchers on a prefix, a key and another prefix, one of
// them starting in the past (it catches up from the log, then joins the
// hub), each receive exactly their keys' changes, in revision order, as
// the history has them, whatever runs the entries come in.
func TestHubFanOut(t *testing.T) {
	ts := newTestStore(t)
	h := NewHub(ts.s, nil)
	h.Start()
	defer h.Stop()
	ts.apply("a/1", "x", "b/1", "y")
	early := ts.s.AppliedTS()
	for i := 0; i < 300; i++ {
		ts.apply(fmt.Sprintf("a/%d", i%7), fmt.Sprint(i), "b/x", fmt.Sprint(i), "c", "z")
	}
	type watch struct {
		o     WatchOptions
		r     *recorder
		match func([]byte) bool
		after uint64
	}
	var ws []*watch
	add := func(o WatchOptions, match func([]byte) bool) {
		w := &watch{o: o, r: &recorder{}, match: match}
		_, start, err := h.Watch(uint64(len(ws)+1), o, w.r.sink)
		if err != nil {
			t.Fatal(err)
		}
		w.after = start - 1
		ws = append(ws, w)
	}
	add(WatchOptions{Prefix: true, Key: []byte("a/")}, func(k []byte) bool { return strings.HasPrefix(string(k), "a/") })
	add(WatchOptions{Key: []byte("a/3")}, func(k []byte) bool { return string(k) == "a/3" })
	add(WatchOptions{Prefix: true, Key: []byte("b/"), Start: early}, func(k []byte) bool { return strings.HasPrefix(string(k), "b/") })
	for i := 0; i < 300; i++ {
		if i%50 == 0 {
			ts.apply("a/3", "", "b/x", "")
			continue
		}
		ts.apply(fmt.Sprintf("a/%d", i%5), fmt.Sprint(i), fmt.Sprintf("b/%d", i%3), fmt.Sprint(i))
	}
	for i, w := range ws {
		want := history(t, ts.s, w.after, w.match)
		waitFor(t, fmt.Sprintf("watcher %d", i+1), func() bool { got, _ := w.r.events(); return got == want })
	}
	if got, _ := ws[2].r.events(); !strings.HasPrefix(got, fmt.Sprintf("%d 1 b/1=y\n", early)) {
		t.Fatalf("the watcher from the past does not start at %d:\n%.200s", early, got)
	}
}

// TestSlowWatcherDoesNotBlockTheHub: a watcher whose sink never returns is
// cancelled as slow once its buffer is full; the hub and another watcher
// go on.
func TestSlowWatcherDoesNotBlockTheHub(t *testing.T) {
	ts := newTestStore(t)
	h := NewHub(ts.s, nil)
	h.Start()
	slow := &recorder{block: make(chan struct{})}
	fast := &recorder{}
	if _, _, err := h.Watch(1, WatchOptions{Prefix: true}, slow.sink); err != nil {
		t.Fatal(err)
	}
	_, start, err := h.Watch(2, WatchOptions{Prefix: true}, fast.sink)
	if err != nil {
		t.Fatal(err)
	}
	// Both receive from the hub (a watcher still catching up pulls at its
	// sink's pace instead: it is never cancelled for it).
	waitFor(t, "both watchers to join the hub", func() bool { return h.syncedWatches() == 2 })
	// More than the buffer and the frame being written, in steps the fast
	// watcher takes before the next (a burst of more than a buffer at
	// once, from a hub that fell behind on a loaded machine, would
	// overflow any watcher's buffer: that is what the bound is for).
	total := MaxBufferedCommits + maxFrameCommits + 100
	for i := 0; i < total; i++ {
		ts.apply(fmt.Sprintf("k%d", i), "v")
		if i%200 == 199 || i == total-1 {
			want := history(t, ts.s, start-1, nil)
			waitFor(t, "the fast watcher", func() bool { got, _ := fast.events(); return got == want })
		}
	}
	want := history(t, ts.s, start-1, nil)
	waitFor(t, "the fast watcher", func() bool { got, _ := fast.events(); return got == want })
	close(slow.block) // the sink returns: the cancellation is its last frame
	waitFor(t, "the slow watcher to end", func() bool { return h.Watches() == 1 })
	_, cancel := slow.events()
	if cancel == nil || cancel.Reason != wire.CancelSlow {
		t.Fatalf("the slow watcher ended with %+v", cancel)
	}
	h.Stop()
	_, stop := fast.events()
	if stop == nil || stop.Reason != wire.CancelStopping {
		t.Fatalf("Stop ended the fast watcher with %+v", stop)
	}
}

// TestWatchCompactedStart: a start at or below the horizon is refused
// with the oldest start available.
func TestWatchCompactedStart(t *testing.T) {
	ts := newTestStore(t)
	h := NewHub(ts.s, nil)
	h.Start()
	defer h.Stop()
	ts.apply("a", "1", "a", "2")
	// A horizon entry (op 3).
	ts.index++
	d := []byte{2}
	d = binary.LittleEndian.AppendUint64(d, 0)
	d = append(d, 1, 3)
	d = binary.LittleEndian.AppendUint64(d, ts.index)
	d = binary.LittleEndian.AppendUint64(d, ts.s.AppliedTS())
	idx, term, typ := ts.index, uint64(1), pb.EntryNormal
	if err := ts.s.Apply([]*pb.Entry{{Index: &idx, Term: &term, Type: &typ, Data: d}}); err != nil {
		t.Fatal(err)
	}
	hz := ts.s.Horizon()
	if hz == 0 {
		t.Fatal("no horizon")
	}
	_, _, err := h.Watch(1, WatchOptions{Key: []byte("a"), Start: hz}, (&recorder{}).sink)
	var ce *kv.CompactedError
	if !errors.As(err, &ce) || ce.Oldest != hz {
		t.Fatalf("a start at the horizon: %v", err)
	}
	if _, _, err := h.Watch(2, WatchOptions{Key: []byte("a"), Start: hz + 1}, (&recorder{}).sink); err != nil {
		t.Fatalf("a start just above the horizon: %v", err)
	}
}

// TestIdleWatchersCostNoReads: changes no watcher wants are not read back
// (the store tells the hub they touched no watched key); the first change
// a watcher wants is.
func TestIdleWatchersCostNoReads(t *testing.T) {
	ts := newTestStore(t)
	h := NewHub(ts.s, nil)
	h.Start()
	defer h.Stop()
	r := &recorder{}
	if _, _, err := h.Watch(1, WatchOptions{Prefix: true, Key: []byte("idle/")}, r.sink); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the watcher to join the hub", func() bool { return h.syncedWatches() == 1 })
	ts.apply("warm", "up") // the hub installs its filter by this run at the latest
	waitFor(t, "the hub to pass the warm-up", func() bool { h.mu.Lock(); defer h.mu.Unlock(); return h.pos == ts.s.AppliedTS() })
	before := h.reads.Load()
	for i := 0; i < 200; i++ {
		ts.apply(fmt.Sprintf("busy/%d", i), "v")
	}
	waitFor(t, "the hub to follow", func() bool { h.mu.Lock(); defer h.mu.Unlock(); return h.pos == ts.s.AppliedTS() })
	if n := h.reads.Load() - before; n != 0 {
		t.Fatalf("the hub read the history back %d times for changes no watcher wants", n)
	}
	ts.apply("busy/x", "v", "idle/1", "wanted")
	waitFor(t, "the wanted change", func() bool { got, _ := r.events(); return strings.Contains(got, "idle/1=wanted") })
	if h.reads.Load() == before {
		t.Fatal("the wanted change was delivered without a read (the counter proves nothing)")
	}
	if got, _ := r.events(); strings.Contains(got, "busy/") {
		t.Fatalf("the watcher got changes of other keys:\n%s", got)
	}
}

// TestWatchersJoiningUnderLoad: watchers join (some from the past, some
// from now) while writes go on; each receives exactly its keys' changes
// from its start, although the hub filters and skips what no watcher had
// wanted when it read.
func TestWatchersJoiningUnderLoad(t *testing.T) {
	ts := newTestStore(t)
	h := NewHub(ts.s, nil)
	h.Start()
	defer h.Stop()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ts.apply(fmt.Sprintf("p%d/%d", i%10, i%13), fmt.Sprint(i), fmt.Sprintf("other/%d", i), "o")
		}
	}()
	type watch struct {
		r      *recorder
		prefix string
		after  uint64
	}
	var ws []*watch
	for i := 0; i < 40; i++ {
		time.Sleep(2 * time.Millisecond)
		w := &watch{r: &recorder{}, prefix: fmt.Sprintf("p%d/", i%10)}
		o := WatchOptions{Prefix: true, Key: []byte(w.prefix)}
		if i%3 == 0 {
			o.Start = max(ts.s.AppliedTS(), 50) - 40
		}
		_, start, err := h.Watch(uint64(i+1), o, w.r.sink)
		if err != nil {
			t.Fatal(err)
		}
		w.after = start - 1
		ws = append(ws, w)
	}
	time.Sleep(20 * time.Millisecond)
	close(stop)
	<-done
	for i, w := range ws {
		want := history(t, ts.s, w.after, func(k []byte) bool { return strings.HasPrefix(string(k), w.prefix) })
		waitFor(t, fmt.Sprintf("watcher %d on %s from %d", i+1, w.prefix, w.after+1), func() bool { got, _ := w.r.events(); return got == want })
	}
}
