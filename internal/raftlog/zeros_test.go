package raftlog

import (
	"path/filepath"
	"strings"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/internal/vfs"
)

// segSize is the size of the log's current segment file.
func segSize(t *testing.T, fs vfs.FS, l *Log) int64 {
	t.Helper()
	f, err := fs.Open(filepath.Join(l.opts.Dir, l.cur.seg.name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestSavesOverwriteZeros: the newest segment is zero-filled ahead of its
// records, so a Save overwrites bytes inside the file instead of moving
// its size (its fdatasync has no metadata to commit), as long as
// PrepareAhead is called between Saves; the distance grows with the
// segment and stays bounded. It runs on the real file system.
func TestSavesOverwriteZeros(t *testing.T) {
	fs := vfs.Default
	l, _, err := Open(Options{FS: fs, Dir: t.TempDir(), NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	size := segSize(t, fs, l)
	if size < zeroAheadMin {
		t.Fatalf("a new segment is %d bytes: not zero-filled ahead (want >= %d)", size, zeroAheadMin)
	}
	grew := 0
	for i := uint64(1); i <= 3000; i++ {
		if err := l.Save(hs(1, 1, i-1), []*pb.Entry{ent(1, i, strings.Repeat("v", 2000))}, true); err != nil {
			t.Fatal(err)
		}
		now := segSize(t, fs, l)
		if now != size {
			t.Fatalf("Save %d moved the file size from %d to %d (records end at %d)", i, size, now, l.cur.written)
		}
		l.PrepareAhead()
		if now = segSize(t, fs, l); now != size {
			grew++
			size = now
		}
		if ahead := size - l.cur.written; ahead < zeroAheadMin/2 || ahead > zeroAheadMax+zeroAheadMax/2 {
			t.Fatalf("after Save %d the zeros reach %d bytes past the records", i, ahead)
		}
	}
	// About 6 MB of records: a few dozen fills, not one per Save.
	if grew == 0 || grew > 64 {
		t.Fatalf("the zeros were extended %d times", grew)
	}
}

// TestZerosAfterACrash: a node that stops without closing its log leaves
// the records followed by zeros; Open keeps every record, reports the
// tail as zeros (nothing torn) and cuts it off. A clean Close leaves no
// zeros behind, and neither does a rotation, so every sealed segment ends
// with its marker and the log opens again with no tail to report.
func TestZerosAfterACrash(t *testing.T) {
	mem := vfs.NewMem()
	l, _ := open(t, mem, 64<<10)
	for i := uint64(1); i <= 500; i++ {
		if err := l.Save(hs(1, 1, i-1), []*pb.Entry{ent(1, i, strings.Repeat("w", 300))}, true); err != nil {
			t.Fatal(err)
		}
		l.PrepareAhead()
	}
	if l.Stats().Segments < 2 {
		t.Fatal("no rotation")
	}
	crashed := mem.CrashClone(vfs.CrashCloneOptions{})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l2, rep, err := Open(Options{FS: crashed, Dir: "/wal", NodeID: 1, SegmentBytes: 64 << 10})
	if err != nil {
		t.Fatalf("open after a crash: %v", err)
	}
	if rep.LastIndex != 500 || len(entries(t, l2)) != 500 {
		t.Fatalf("after a crash: %d entries, last %d", len(entries(t, l2)), rep.LastIndex)
	}
	if rep.TornTail == nil || !rep.TornTail.Zeroed {
		t.Fatalf("after a crash the tail is %+v, want the zeros reported as such", rep.TornTail)
	}
	if !strings.Contains(rep.TornTail.Error(), "nothing torn") {
		t.Errorf("tail message %q", rep.TornTail.Error())
	}
	_ = l2.Close()

	for _, fs := range []vfs.FS{mem, crashed} {
		l3, rep, err := Open(Options{FS: fs, Dir: "/wal", NodeID: 1, SegmentBytes: 64 << 10})
		if err != nil {
			t.Fatalf("open after a clean close: %v", err)
		}
		if rep.TornTail != nil || rep.LastIndex != 500 {
			t.Fatalf("after a clean close: tail %v, last %d", rep.TornTail, rep.LastIndex)
		}
		_ = l3.Close()
	}
}

// TestZerosOnAFullDisk: zero-filling is a hint. On a disk without room for
// the zeros a failed fill is cut off whole (no zeros of unknown length are
// left past the records, and no space is kept by them), the log appends as
// before, and nothing is lost.
func TestZerosOnAFullDisk(t *testing.T) {
	mem := vfs.NewMem()
	mem.SetCapacity(96 << 10)
	l, _ := open(t, mem, 1<<20)
	if size := segSize(t, mem, l); size != l.cur.written || l.cur.zeroedTo > l.cur.written {
		t.Fatalf("a new segment on a 96 KiB disk is %d bytes, its records end at %d, zeros counted to %d", size, l.cur.written, l.cur.zeroedTo)
	}
	n := uint64(0)
	for i := uint64(1); i <= 200; i++ {
		if err := l.Save(hs(1, 1, i-1), []*pb.Entry{ent(1, i, strings.Repeat("z", 300))}, true); err != nil {
			if !vfs.IsNoSpace(err) {
				t.Fatal(err)
			}
			break
		}
		n = i
		l.PrepareAhead()
		if size, want := segSize(t, mem, l), max(l.cur.written, l.cur.zeroedTo); size != want {
			t.Fatalf("after Save %d the segment is %d bytes, want %d (records to %d, zeros to %d)", i, size, want, l.cur.written, l.cur.zeroedTo)
		}
	}
	if err := l.usable(); err != nil {
		t.Fatalf("a failed zero fill broke the log: %v", err)
	}
	if n < 100 {
		t.Fatalf("only %d Saves fit in 96 KiB", n)
	}
	mem.SetCapacity(0)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, rep, err := Open(Options{FS: mem, Dir: "/wal", NodeID: 1, SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if rep.LastIndex != n {
		t.Fatalf("reopened up to %d, saved %d", rep.LastIndex, n)
	}
}
