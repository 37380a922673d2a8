package raftlog

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/internal/vfs"
)

// TestDiskFullThenSpaceBack is the scenario of issue 11: the disk fills
// during a Save (a partial write), space comes back a few seconds later,
// the node closes the log, and the next start must find every entry that
// was saved and no damage. Before the fix, Close wrote the failed record
// again after its partial bytes and then a seal marker that declared them
// durable, and Open refused with "damaged before its end".
func TestDiskFullThenSpaceBack(t *testing.T) {
	mem := vfs.NewMem()
	mem.SetCapacity(16 << 10)
	l, _ := open(t, mem, 1<<20) // the segment's preallocation does not fit: it is a hint
	var saved []string
	var failed error
	for i := uint64(1); i <= 1000; i++ {
		e := ent(1, i, strings.Repeat("v", 300))
		if err := l.Save(hs(1, 1, i-1), []*pb.Entry{e}, true); err != nil {
			failed = err
			break
		}
		saved = append(saved, fmt.Sprintf("%d/1:%s", i, e.GetData()))
	}
	if failed == nil {
		t.Fatal("the disk never filled")
	}
	if !vfs.IsNoSpace(failed) {
		t.Fatalf("Save on a full disk: %v, want a no-space error", failed)
	}
	mem.SetCapacity(0) // space is back
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, rep, err := Open(Options{FS: mem, Dir: "/wal", NodeID: 1, SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatalf("reopen after the disk was full: %v\n%s", err, mem)
	}
	defer l.Close()
	if rep.TornTail != nil {
		t.Errorf("torn tail after a clean Close: %v", rep.TornTail)
	}
	if got := entries(t, l); strings.Join(got, " ") != strings.Join(saved, " ") {
		t.Fatalf("reopened %d entries, saved %d", len(got), len(saved))
	}
}

// model is what the log must hold: the entries after the snapshot and the
// hard state, as the strings the checks compare.
type model struct {
	ents   []*pb.Entry
	hs     *pb.HardState
	snap   uint64
	states []string // the state after each successful Save or SaveSnapshot
	synced int      // states[synced] is the newest state a sync made durable
}

func (m *model) save(h *pb.HardState, ents []*pb.Entry) {
	for _, e := range ents {
		i := 0
		for i < len(m.ents) && m.ents[i].GetIndex() < e.GetIndex() {
			i++
		}
		m.ents = append(m.ents[:i], e)
	}
	if h != nil {
		m.hs = h
	}
}

func (m *model) snapshot(index uint64) {
	m.ents = nil
	m.snap = index
}

func (m *model) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "snap %d", m.snap)
	if m.hs != nil {
		fmt.Fprintf(&b, " hs %d/%d/%d", m.hs.GetTerm(), m.hs.GetVote(), max(m.hs.GetCommit(), m.snap))
	}
	for _, e := range m.ents {
		fmt.Fprintf(&b, " %d/%d:%s", e.GetIndex(), e.GetTerm(), e.GetData())
	}
	return b.String()
}

func (m *model) record(durable bool) {
	m.states = append(m.states, m.String())
	if durable {
		m.synced = len(m.states) - 1
	}
}

// logState renders what an opened log holds like model.String.
func logState(t *testing.T, l *Log, rep *OpenReport) string {
	var b strings.Builder
	fmt.Fprintf(&b, "snap %d", rep.Snapshot.GetIndex())
	if st, _, _ := l.InitialState(); st.GetTerm() != 0 || st.GetCommit() != 0 {
		fmt.Fprintf(&b, " hs %d/%d/%d", st.GetTerm(), st.GetVote(), st.GetCommit())
	}
	for _, e := range entries(t, l) {
		b.WriteString(" " + e)
	}
	return b.String()
}

// workload drives a log through Saves (synced and not, appends and
// overwrites), rotations (segments are small) and an installed snapshot.
// A call that fails with no space is retried at once, as the owner does
// once space is back (the injected faults are gone by then); any other
// failure ends the workload, which returns it. The model records the state
// after a failed call too, unsynced: the failed record may or may not be on
// disk.
func workload(l *Log, m *model) error {
	retry := func(f func() error) error {
		err := f()
		if vfs.IsNoSpace(err) {
			err = f()
		}
		return err
	}
	term, last := uint64(1), uint64(0)
	for i := 1; i <= 40; i++ {
		data := strings.Repeat(string(rune('a'+i%26)), 60+i*7%90)
		switch {
		case i == 22:
			snap := &pb.Snapshot{Metadata: snapMeta(last, term)}
			err := retry(func() error { return l.SaveSnapshot(snap) })
			m.snapshot(last)
			m.record(err == nil)
			if err != nil {
				return err
			}
			continue
		case i%9 == 0 && last >= 2 && i != 23:
			// A new leader overwrites the last two entries.
			term++
			last -= 2
		}
		var ents []*pb.Entry
		for range 1 + i%3 {
			last++
			ents = append(ents, ent(term, last, data))
		}
		h := hs(term, 1, last-1)
		sync := i%4 != 0
		err := retry(func() error { return l.Save(h, ents, sync) })
		m.save(h, ents)
		m.record(sync && err == nil)
		if err != nil {
			return err
		}
	}
	return nil
}

const faultSeg = 2048

func openFault(fs vfs.FS) (*Log, *OpenReport, error) {
	return Open(Options{FS: fs, Dir: "/wal", NodeID: 1, SegmentBytes: faultSeg})
}

// TestFaultAtEveryWrite fails each write operation of the workload in turn
// (a full disk, a write that stops part way, an I/O error, and a disk that
// stays full from that operation on), lets the workload retry or stop as
// its owner would, and then reopens the log twice: from a crash at the end,
// and after Close. Both opens must succeed (never "damaged before its
// end"), hold every Save that returned after a sync, and hold a state the
// model went through; after a clean Close, the latest one.
func TestFaultAtEveryWrite(t *testing.T) {
	counter := vfs.OnIndex(-1, vfs.WriteOps)
	{
		mem := vfs.NewMem()
		l, _, err := openFault(vfs.NewErrorFS(mem, counter))
		if err != nil {
			t.Fatal(err)
		}
		m := &model{}
		m.record(true)
		if err := workload(l, m); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if l.Stats().Segments < 4 {
			t.Fatalf("the workload rotated only to %d segments", l.Stats().Segments)
		}
	}
	total := counter.Count()
	faults := map[string]func(op vfs.Op) error{
		"nospace": func(vfs.Op) error { return vfs.ErrNoSpace },
		"partial": func(op vfs.Op) error { return vfs.PartialWrite(op.Len/2, vfs.ErrNoSpace) },
		"eio":     func(vfs.Op) error { return vfs.ErrInjected },
	}
	for name, fault := range faults {
		for _, sticky := range []bool{false, true} {
			for k := range total {
				runFault(t, fmt.Sprintf("%s sticky=%v op %d", name, sticky, k), k, sticky, fault)
			}
		}
	}
}

func runFault(t *testing.T, what string, k int64, sticky bool, fault func(vfs.Op) error) {
	mem := vfs.NewMem()
	var n int64
	var failedOp vfs.Op
	fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
		if !op.Kind.IsWrite() {
			return nil
		}
		i := n
		n++
		if i == k || (sticky && i > k) {
			if i == k {
				failedOp = op
			}
			return fault(op)
		}
		return nil
	}))
	m := &model{}
	m.record(true)
	var l *Log
	var err error
	for range 2 { // a node restarts when Open fails
		if l, _, err = openFault(fs); err == nil {
			break
		}
	}
	var werr error
	if err == nil {
		werr = workload(l, m)
	}
	what = fmt.Sprintf("%s (%v)", what, failedOp)
	if werr != nil && !sticky && !errors.Is(werr, ErrBroken) && !errors.Is(werr, vfs.ErrInjected) {
		t.Fatalf("%s: workload: %v", what, werr)
	}
	if errors.Is(werr, ErrBroken) {
		// A broken log refuses everything and writes nothing more.
		before := mem.String()
		if err := l.Save(hs(9, 1, 0), []*pb.Entry{ent(9, 1000, "x")}, true); !errors.Is(err, ErrBroken) {
			t.Fatalf("%s: Save on a broken log: %v", what, err)
		}
		if err := l.Close(); !errors.Is(err, ErrBroken) {
			t.Fatalf("%s: Close of a broken log: %v", what, err)
		}
		if after := mem.String(); after != before {
			t.Fatalf("%s: a broken log wrote on Close:\nbefore\n%s\nafter\n%s", what, before, after)
		}
	}
	crashed := mem.CrashClone(vfs.CrashCloneOptions{})
	var closeErr error
	if l != nil {
		closeErr = l.Close()
	}
	check := func(fs *vfs.MemFS, exact bool, how string) {
		l2, rep, err := openFault(fs)
		if err != nil {
			t.Fatalf("%s: open after %s: %v\n%s", what, how, err, fs)
		}
		defer l2.Close()
		got := logState(t, l2, rep)
		if exact {
			if want := m.states[len(m.states)-1]; got != want {
				t.Fatalf("%s: after %s the log holds\n%s\nwant\n%s", what, how, got, want)
			}
			return
		}
		for _, s := range m.states[m.synced:] {
			if got == s {
				return
			}
		}
		t.Fatalf("%s: after %s the log holds\n%s\nwhich is no state since the last synced one:\n%s",
			what, how, got, strings.Join(m.states[m.synced:], "\n"))
	}
	check(crashed, false, "a crash")
	check(mem, closeErr == nil && werr == nil && l != nil, "Close")
}

// TestFillAndFreeRepeatedly runs the log on a small disk that fills again
// and again: every Save that fails for lack of space is retried after a
// little space is freed, segments rotate (or fail to) on the full disk,
// and a crash at every failure, as well as a Close at the end, recovers
// the log without damage.
func TestFillAndFreeRepeatedly(t *testing.T) {
	mem := vfs.NewMem()
	capacity := int64(3000)
	mem.SetCapacity(capacity)
	l, _, err := Open(Options{FS: mem, Dir: "/wal", NodeID: 1, SegmentBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	m := &model{}
	m.record(true)
	fails := 0
	for i := uint64(1); i <= 300; i++ {
		h := hs(1, 1, i-1)
		ents := []*pb.Entry{ent(1, i, strings.Repeat("d", 50+int(i%7)*40))}
		sync := i%5 != 0
		for attempt := 0; ; attempt++ {
			err := l.Save(h, ents, sync)
			if err == nil {
				break
			}
			if !vfs.IsNoSpace(err) || attempt > 10 {
				t.Fatalf("save %d attempt %d: %v", i, attempt, err)
			}
			fails++
			// A crash while the disk is full loses nothing synced.
			c := mem.CrashClone(vfs.CrashCloneOptions{})
			c.SetCapacity(0)
			l2, rep, err := Open(Options{FS: c, Dir: "/wal", NodeID: 1, SegmentBytes: 4096})
			if err != nil {
				t.Fatalf("save %d: open after a crash on the full disk: %v\n%s", i, err, c)
			}
			got := logState(t, l2, rep)
			if !slices.Contains(m.states[m.synced:], got) {
				t.Fatalf("save %d: after a crash the log holds %q", i, got)
			}
			_ = l2.Close()
			capacity += 700 // free some space
			mem.SetCapacity(capacity)
		}
		m.save(h, ents)
		m.record(sync)
	}
	st := l.Stats()
	t.Logf("%d failed saves; stats %+v", fails, st)
	if fails == 0 || st.WriteFailures == 0 || st.RotationFailures == 0 || st.Broken {
		t.Fatalf("fails %d, stats %+v: the disk did not fill as planned", fails, st)
	}
	if err := l.Close(); err != nil && !vfs.IsNoSpace(err) {
		t.Fatal(err)
	}
	l, rep, err := Open(Options{FS: mem, Dir: "/wal", NodeID: 1, SegmentBytes: 4096})
	if err != nil {
		t.Fatalf("reopen: %v\n%s", err, mem)
	}
	defer l.Close()
	if got, want := logState(t, l, rep), m.states[len(m.states)-1]; got != want {
		t.Fatalf("reopened log holds\n%s\nwant\n%s", got, want)
	}
}

// TestBrokenLog: a failed fsync (even one reporting ENOSPC) and a failed
// write that cannot be cut off both break the log: the error matches
// ErrBroken and not vfs.IsNoSpace (freeing space does not help), every
// later call fails, Close writes nothing, and Open recovers what was saved.
func TestBrokenLog(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(op vfs.Op) error
	}{
		{"fsync", func(op vfs.Op) error {
			if op.Kind == vfs.OpFileSync && !strings.HasSuffix(op.Path, "/wal") {
				return vfs.ErrNoSpace
			}
			return nil
		}},
		{"uncut write", func(op vfs.Op) error {
			switch op.Kind {
			case vfs.OpFileWrite:
				return vfs.PartialWrite(op.Len/2, vfs.ErrNoSpace)
			case vfs.OpFileTruncate:
				return vfs.ErrInjected
			}
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := vfs.NewMem()
			var armed bool
			fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
				if !armed {
					return nil
				}
				return tc.fail(op)
			}))
			l, _ := open(t, fs, 0)
			if err := l.Save(hs(1, 1, 0), []*pb.Entry{ent(1, 1, "kept")}, true); err != nil {
				t.Fatal(err)
			}
			armed = true
			err := l.Save(hs(1, 1, 1), []*pb.Entry{ent(1, 2, "maybe")}, true)
			if !errors.Is(err, ErrBroken) || vfs.IsNoSpace(err) {
				t.Fatalf("Save = %v, want ErrBroken and not a no-space error", err)
			}
			armed = false // space is back: the log stays broken
			before := mem.String()
			if err := l.Save(hs(1, 1, 1), []*pb.Entry{ent(1, 2, "maybe")}, true); !errors.Is(err, ErrBroken) {
				t.Fatalf("Save after the log broke = %v", err)
			}
			if err := l.SaveSnapshot(&pb.Snapshot{Metadata: snapMeta(1, 1)}); !errors.Is(err, ErrBroken) {
				t.Fatalf("SaveSnapshot after the log broke = %v", err)
			}
			if err := l.Compact(1); !errors.Is(err, ErrBroken) {
				t.Fatalf("Compact after the log broke = %v", err)
			}
			if err := l.Close(); !errors.Is(err, ErrBroken) {
				t.Fatalf("Close = %v", err)
			}
			if !l.Stats().Broken {
				t.Fatal("Stats().Broken is false")
			}
			if after := mem.String(); after != before {
				t.Fatalf("the broken log wrote:\n%s\nthen\n%s", before, after)
			}
			l2, _ := open(t, mem, 0)
			defer l2.Close()
			got := entries(t, l2)
			if len(got) == 0 || got[0] != "1/1:kept" || len(got) > 2 {
				t.Fatalf("recovered %v", got)
			}
		})
	}
}
