package raftlog

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/errs"
	"github.com/kayadb/kayadb/internal/vfs"
)

func ent(term, index uint64, data string) *pb.Entry {
	return &pb.Entry{Term: new(term), Index: new(index), Type: new(pb.EntryNormal), Data: []byte(data)}
}

func hs(term, vote, commit uint64) *pb.HardState {
	return &pb.HardState{Term: new(term), Vote: new(vote), Commit: new(commit)}
}

func open(t *testing.T, fs vfs.FS, seg int64) (*Log, *OpenReport) {
	t.Helper()
	l, rep, err := Open(Options{FS: fs, Dir: "/wal", NodeID: 1, SegmentBytes: seg})
	if err != nil {
		t.Fatal(err)
	}
	return l, rep
}

func entries(t *testing.T, l *Log) []string {
	t.Helper()
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	if last < first {
		return nil
	}
	es, err := l.Entries(first, last+1, 1<<62)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, fmt.Sprintf("%d/%d:%s", e.GetIndex(), e.GetTerm(), e.GetData()))
	}
	return out
}

func TestSaveReopenAndTruncation(t *testing.T) {
	fs := vfs.NewMem()
	l, _ := open(t, fs, 0)
	if err := l.Save(hs(1, 1, 0), []*pb.Entry{ent(1, 1, "a"), ent(1, 2, "b"), ent(1, 3, "c")}, true); err != nil {
		t.Fatal(err)
	}
	// A new leader overwrites entries 2..3 (log truncation).
	if err := l.Save(hs(2, 2, 1), []*pb.Entry{ent(2, 2, "B"), ent(2, 3, "C"), ent(2, 4, "D")}, true); err != nil {
		t.Fatal(err)
	}
	want := "1/1:a 2/2:B 3/2:C 4/2:D"
	if got := strings.Join(entries(t, l), " "); got != want {
		t.Fatalf("in memory: %s", got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, rep := open(t, fs, 0)
	defer l.Close()
	if got := strings.Join(entries(t, l), " "); got != want {
		t.Fatalf("after reopen: %s", got)
	}
	st, _, _ := l.InitialState()
	if st.GetTerm() != 2 || st.GetVote() != 2 || st.GetCommit() != 1 {
		t.Fatalf("hard state %v", st)
	}
	if rep.TornTail != nil || rep.LastIndex != 4 {
		t.Fatalf("report %+v", rep)
	}
}

func TestSegmentsRotate(t *testing.T) {
	fs := vfs.NewMem()
	l, _ := open(t, fs, 4096)
	for i := uint64(1); i <= 300; i++ {
		if err := l.Save(hs(1, 1, i-1), []*pb.Entry{ent(1, i, strings.Repeat("x", 100))}, i%7 == 0); err != nil {
			t.Fatal(err)
		}
	}
	if n := l.Stats().Segments; n < 5 {
		t.Fatalf("only %d segments", n)
	}
	_ = l.Close()
	l, rep := open(t, fs, 4096)
	defer l.Close()
	if rep.LastIndex != 300 || len(entries(t, l)) != 300 {
		t.Fatalf("reopened %d entries, last %d", len(entries(t, l)), rep.LastIndex)
	}
}

func TestWrongNode(t *testing.T) {
	fs := vfs.NewMem()
	l, _ := open(t, fs, 0)
	_ = l.Save(hs(1, 1, 0), []*pb.Entry{ent(1, 1, "a")}, true)
	_ = l.Close()
	_, _, err := Open(Options{FS: fs, Dir: "/wal", NodeID: 2})
	if err == nil || !strings.Contains(err.Error(), "node 1") {
		t.Fatalf("opening node 1's WAL as node 2: %v", err)
	}
}

// TestCrashAtEveryWrite: after a power cut at any write operation, Open
// succeeds and holds every entry of every Save(sync=true) that returned.
// It runs on plain and on sealed (encrypted) logs.
func TestCrashAtEveryWrite(t *testing.T) {
	for _, sealer := range []*crypt.Sealer{nil, testSealer(t, 7)} {
		crashAtEveryWrite(t, sealer)
	}
}

func crashAtEveryWrite(t *testing.T, sealer *crypt.Sealer) {
	for _, keep := range []float64{0, 0.5} {
		for k := int64(1); ; k++ {
			mem := vfs.NewMem()
			var count int64
			var clone *vfs.MemFS
			acked, ackedAtCut := uint64(0), uint64(0)
			fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
				if op.Kind.IsWrite() {
					if count++; count == k {
						ackedAtCut = acked
						clone = mem.CrashClone(vfs.CrashCloneOptions{UnsyncedKeepProbability: keep})
					}
				}
				return nil
			}))
			_ = fs.MkdirAll("/wal", 0o700)
			_ = vfs.SyncDir(fs, "/")
			l, _, err := Open(Options{FS: fs, Dir: "/wal", NodeID: 1, SegmentBytes: 2048, Sealer: sealer})
			if err != nil {
				t.Fatal(err)
			}
			for i := uint64(1); i <= 60; i++ {
				sync := i%3 == 0
				if err := l.Save(hs(1, 1, i-1), []*pb.Entry{ent(1, i, strings.Repeat("y", 50))}, sync); err != nil {
					t.Fatal(err)
				}
				if sync {
					acked = i
				}
				l.PrepareAhead() // as the raft node calls it: crashes while zero-filling too
			}
			_ = l.Close()
			if clone == nil {
				break
			}
			l2, rep, err := Open(Options{FS: clone, Dir: "/wal", NodeID: 1, SegmentBytes: 2048, Sealer: sealer})
			if err != nil {
				t.Fatalf("keep %.1f cut %d: open: %v\n%s", keep, k, err, clone)
			}
			if rep.LastIndex < ackedAtCut {
				t.Fatalf("keep %.1f cut %d: %d entries survived, %d were synced", keep, k, rep.LastIndex, ackedAtCut)
			}
			// The recovered log must accept appends and reopen again.
			if err := l2.Save(hs(1, 1, 0), []*pb.Entry{ent(1, rep.LastIndex+1, "z")}, true); err != nil {
				t.Fatal(err)
			}
			_ = l2.Close()
			l3, rep3, err := Open(Options{FS: clone, Dir: "/wal", NodeID: 1, SegmentBytes: 2048, Sealer: sealer})
			if err != nil || rep3.LastIndex != rep.LastIndex+1 {
				t.Fatalf("keep %.1f cut %d: second open: %v (last %d)", keep, k, err, rep3.LastIndex)
			}
			_ = l3.Close()
		}
	}
}

// TestMidLogCorruption: damage in a sealed segment refuses to start with a
// message naming the file.
func TestMidLogCorruption(t *testing.T) {
	fs := vfs.NewMem()
	l, _ := open(t, fs, 2048)
	for i := uint64(1); i <= 100; i++ {
		_ = l.Save(hs(1, 1, i-1), []*pb.Entry{ent(1, i, strings.Repeat("q", 60))}, true)
	}
	_ = l.Close()
	names, _ := fs.List("/wal")
	var first string
	for _, n := range names {
		if first == "" || n < first {
			first = n
		}
	}
	path := "/wal/" + first
	f, _ := fs.Open(path)
	data, _ := io.ReadAll(f)
	_ = f.Close()
	data[100] ^= 0xff
	w, _ := fs.Create(path)
	_, _ = w.Write(data)
	_ = w.Sync()
	_ = w.Close()
	_, _, err := Open(Options{FS: fs, Dir: "/wal", NodeID: 1})
	if !errors.Is(err, errs.ErrCorruption) || !strings.Contains(err.Error(), first) || !strings.Contains(err.Error(), "refusing to start") {
		t.Fatalf("got %v", err)
	}
}

func snapMeta(index, term uint64) *pb.SnapshotMetadata {
	return &pb.SnapshotMetadata{Index: new(index), Term: new(term), ConfState: &pb.ConfState{Voters: []uint64{1}}}
}

func openSnap(t *testing.T, fs vfs.FS, seg int64, snap *pb.SnapshotMetadata) (*Log, *OpenReport) {
	t.Helper()
	l, rep, err := Open(Options{FS: fs, Dir: "/wal", NodeID: 1, SegmentBytes: seg, Snapshot: snap})
	if err != nil {
		t.Fatal(err)
	}
	return l, rep
}

// TestInstalledSnapshotDiscardsTheLog: a snapshot received from the leader
// replaces the whole log; after a restart the entries written before its
// record (here a stale tail from an old term) stay gone, and the entries
// appended after it are kept.
func TestInstalledSnapshotDiscardsTheLog(t *testing.T) {
	fs := vfs.NewMem()
	l, _ := open(t, fs, 0)
	var stale []*pb.Entry
	for i := uint64(1); i <= 8; i++ {
		stale = append(stale, ent(1, i, "old"))
	}
	if err := l.Save(hs(1, 0, 3), stale, true); err != nil {
		t.Fatal(err)
	}
	if err := l.SaveSnapshot(&pb.Snapshot{Metadata: snapMeta(5, 2)}); err != nil {
		t.Fatal(err)
	}
	if err := l.Save(hs(2, 0, 6), []*pb.Entry{ent(2, 6, "new")}, true); err != nil {
		t.Fatal(err)
	}
	want := "6/2:new"
	if got := strings.Join(entries(t, l), " "); got != want {
		t.Fatalf("in memory: %s", got)
	}
	_ = l.Close()
	for _, snap := range []*pb.SnapshotMetadata{nil, snapMeta(5, 2)} {
		l, rep := openSnap(t, fs, 0, snap)
		if got := strings.Join(entries(t, l), " "); got != want {
			t.Fatalf("reopened (raft-snapshot.bin %v): %s", snap, got)
		}
		if rep.Snapshot.GetIndex() != 5 {
			t.Fatalf("snapshot %v", rep.Snapshot)
		}
		_ = l.Close()
	}
}

// TestSnapshotCommittedBeforeItsRecord: a crash after raft-snapshot.bin named
// a received snapshot but before the log recorded it. The log still holds
// the old history: entries that disagree with the snapshot's term at its
// index are discarded, and a commit index below the snapshot is raised to
// it (raft would refuse to start otherwise).
func TestSnapshotCommittedBeforeItsRecord(t *testing.T) {
	fs := vfs.NewMem()
	l, _ := open(t, fs, 0)
	var ents []*pb.Entry
	for i := uint64(1); i <= 8; i++ {
		ents = append(ents, ent(1, i, "old"))
	}
	if err := l.Save(hs(1, 0, 2), ents, true); err != nil {
		t.Fatal(err)
	}
	_ = l.Close()
	l, _ = openSnap(t, fs, 0, snapMeta(5, 3))
	if got := entries(t, l); len(got) != 0 {
		t.Fatalf("entries from the discarded history survived: %v", got)
	}
	st, _, _ := l.InitialState()
	if st.GetCommit() != 5 {
		t.Fatalf("commit %d, want the snapshot's 5", st.GetCommit())
	}
	_ = l.Close()

	// A snapshot the node took itself agrees with its log: the entries
	// after it stay.
	l, _ = openSnap(t, fs, 0, snapMeta(5, 1))
	defer l.Close()
	if got := strings.Join(entries(t, l), " "); got != "6/1:old 7/1:old 8/1:old" {
		t.Fatalf("entries after a local snapshot: %s", got)
	}
}

// TestCompactReleasesSegments: compaction drops entries from memory and
// deletes the sealed segments that hold only compacted entries; the log
// reopens from the snapshot and the remaining segments.
func TestCompactReleasesSegments(t *testing.T) {
	fs := vfs.NewMem()
	l, _ := open(t, fs, 4096)
	for i := uint64(1); i <= 300; i++ {
		if err := l.Save(hs(1, 1, i), []*pb.Entry{ent(1, i, strings.Repeat("x", 100))}, true); err != nil {
			t.Fatal(err)
		}
	}
	before := l.Stats().Segments
	if _, err := l.CreateSnapshot(250, &pb.ConfState{Voters: []uint64{1}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := l.Compact(240); err != nil {
		t.Fatal(err)
	}
	after := l.Stats().Segments
	if after >= before {
		t.Fatalf("segments %d → %d: none released", before, after)
	}
	_ = l.Close()
	l, rep := openSnap(t, fs, 4096, snapMeta(250, 1))
	defer l.Close()
	if first, _ := l.FirstIndex(); first != 251 || rep.LastIndex != 300 {
		t.Fatalf("reopened: first %d last %d", first, rep.LastIndex)
	}
	st, _, _ := l.InitialState()
	if st.GetCommit() != 300 {
		t.Fatalf("hard state lost with the released segments: %v", st)
	}
	// Without raft-snapshot.bin the log does not start at 1: refused.
	if _, _, err := Open(Options{FS: fs, Dir: "/wal", NodeID: 1}); err == nil || !strings.Contains(err.Error(), "no snapshot") {
		t.Fatalf("opening a compacted log without its snapshot: %v", err)
	}
}
