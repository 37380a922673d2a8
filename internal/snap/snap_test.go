package snap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/kayadb/kayadb/internal/crc"
	"github.com/kayadb/kayadb/internal/errs"
	"github.com/kayadb/kayadb/internal/vfs"
)

const testDir = "/data/raft"

// ---------------------------------------------------------------------------
// Helpers

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func confA() *pb.ConfState { return &pb.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}} }

func confB() *pb.ConfState {
	return &pb.ConfState{Voters: []uint64{1, 2, 5}, Learners: []uint64{6, 7}, VotersOutgoing: []uint64{1, 2, 3}, LearnersNext: []uint64{3}}
}

// checkpointFiles returns the files of a fake engine checkpoint, different
// for every index.
func checkpointFiles(index uint64) map[string][]byte {
	r := rand.New(rand.NewPCG(index, 7))
	sst := make([]byte, 9000+int(index))
	for i := range sst {
		sst[i] = byte(r.Uint32())
	}
	return map[string][]byte{
		"MANIFEST-000001": fmt.Appendf(nil, "manifest of snapshot %d", index),
		"000007.sst":      sst,
		"OPTIONS":         {},
	}
}

// writeFile creates name with data and syncs it (not its directory).
func writeFile(t testing.TB, fs vfs.FS, name string, data []byte) {
	t.Helper()
	f, err := fs.Create(name)
	must(t, err)
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	must(t, f.Sync())
	must(t, f.Close())
}

func readFile(t testing.TB, fs vfs.FS, name string) []byte {
	t.Helper()
	f, err := fs.Open(name)
	must(t, err)
	defer f.Close()
	b, err := io.ReadAll(f)
	must(t, err)
	return b
}

// writeCheckpoint builds a complete, durable checkpoint directory at dir, as
// the engine's checkpoint (or ReadStream) leaves it before Commit.
func writeCheckpoint(t testing.TB, fs vfs.FS, dir string, files map[string][]byte) {
	t.Helper()
	must(t, fs.MkdirAll(dir, 0o700))
	for name, data := range files {
		writeFile(t, fs, filepath.Join(dir, name), data)
	}
	must(t, vfs.SyncDir(fs, dir))
	must(t, vfs.SyncDir(fs, filepath.Dir(dir)))
}

// dirFiles returns the regular files of dir and their contents.
func dirFiles(t testing.TB, fs vfs.FS, dir string) map[string][]byte {
	t.Helper()
	names, err := fs.List(dir)
	must(t, err)
	out := map[string][]byte{}
	for _, n := range names {
		st, err := fs.Stat(filepath.Join(dir, n))
		must(t, err)
		if st.IsDir() {
			continue
		}
		out[n] = readFile(t, fs, filepath.Join(dir, n))
	}
	return out
}

func sameFiles(got, want map[string][]byte) error {
	for n, w := range want {
		g, ok := got[n]
		if !ok {
			return fmt.Errorf("file %s is missing", n)
		}
		if !bytes.Equal(g, w) {
			return fmt.Errorf("file %s has %d bytes that differ from the %d expected", n, len(g), len(w))
		}
	}
	for n := range got {
		if _, ok := want[n]; !ok {
			return fmt.Errorf("unexpected file %s", n)
		}
	}
	return nil
}

func sameMeta(a, b *Meta) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Index == b.Index && a.Term == b.Term && a.Dir == b.Dir && proto.Equal(a.ConfState, b.ConfState)
}

func fmtMeta(m *Meta) string {
	if m == nil {
		return "<nil>"
	}
	return fmt.Sprintf("{index %d term %d dir %s conf %v}", m.Index, m.Term, m.Dir, m.ConfState)
}

// commitNew builds the checkpoint of index in a temp dir of s and commits it.
func commitNew(t testing.TB, s *Store, fs vfs.FS, index, term uint64, cs *pb.ConfState) *Meta {
	t.Helper()
	tmp := s.TempDir(index)
	writeCheckpoint(t, fs, tmp, checkpointFiles(index))
	m := &Meta{Index: index, Term: term, ConfState: cs}
	must(t, s.Commit(tmp, m))
	return m
}

func exists(fs vfs.FS, name string) bool {
	_, err := fs.Stat(name)
	return err == nil
}

// snapDirs lists the checkpoint directories (snap-*) of the store dir.
func snapDirs(t testing.TB, fs vfs.FS) []string {
	t.Helper()
	names, err := fs.List(testDir)
	must(t, err)
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, dirPrefix) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// ---------------------------------------------------------------------------
// Store

func TestStoreRoundTrip(t *testing.T) {
	mem := vfs.NewMem()
	s, err := Open(mem, testDir)
	must(t, err)
	if s.Current() != nil {
		t.Fatalf("fresh store has snapshot %s", fmtMeta(s.Current()))
	}
	if _, _, err := s.Acquire(); err == nil {
		t.Fatal("Acquire without a snapshot succeeded")
	}
	m := commitNew(t, s, mem, 0x1234, 7, confA())
	want := &Meta{Index: 0x1234, Term: 7, ConfState: confA(), Dir: "snap-0000000000001234"}
	if !sameMeta(m, want) || !sameMeta(s.Current(), want) {
		t.Fatalf("after Commit: meta %s, Current %s, want %s", fmtMeta(m), fmtMeta(s.Current()), fmtMeta(want))
	}
	if got := s.Path(m.Dir); got != filepath.Join(testDir, "snap-0000000000001234") {
		t.Fatalf("Path = %s", got)
	}

	// Reopen, on the live file system and on the durable state alone.
	for name, fs := range map[string]*vfs.MemFS{"reopen": mem, "power cut": mem.CrashClone(vfs.CrashCloneOptions{})} {
		s2, err := Open(fs, testDir)
		if err != nil {
			t.Fatalf("%s: Open: %v", name, err)
		}
		if !sameMeta(s2.Current(), want) {
			t.Fatalf("%s: Current %s, want %s", name, fmtMeta(s2.Current()), fmtMeta(want))
		}
		if err := sameFiles(dirFiles(t, fs, s2.Path(want.Dir)), checkpointFiles(want.Index)); err != nil {
			t.Fatalf("%s: checkpoint: %v", name, err)
		}
		names, err := fs.List(testDir)
		must(t, err)
		slices.Sort(names)
		if want := []string{metaFile, want.Dir}; !slices.Equal(names, want) {
			t.Fatalf("%s: the dir holds %v, want %v", name, names, want)
		}
	}

	// Committing a newer snapshot replaces it, and the reopened store
	// agrees.
	m2 := commitNew(t, s, mem, 0x2000, 8, confB())
	s3, err := Open(mem, testDir)
	must(t, err)
	if !sameMeta(s3.Current(), m2) {
		t.Fatalf("Current %s, want %s", fmtMeta(s3.Current()), fmtMeta(m2))
	}
	if got := snapDirs(t, mem); !slices.Equal(got, []string{m2.Dir}) {
		t.Fatalf("checkpoints on disk %v, want only %s", got, m2.Dir)
	}
}

func TestOpenRemovesTempLeftovers(t *testing.T) {
	mem := vfs.NewMem()
	s, err := Open(mem, testDir)
	must(t, err)
	m := commitNew(t, s, mem, 5, 1, confA())
	tmp := s.TempDir(9)
	writeCheckpoint(t, mem, tmp, checkpointFiles(9))
	writeFile(t, mem, filepath.Join(testDir, metaFile+".tmp"), []byte("half written"))
	s2, err := Open(mem, testDir)
	must(t, err)
	if !sameMeta(s2.Current(), m) {
		t.Fatalf("Current %s, want %s", fmtMeta(s2.Current()), fmtMeta(m))
	}
	names, err := mem.List(testDir)
	must(t, err)
	slices.Sort(names)
	if want := []string{metaFile, m.Dir}; !slices.Equal(names, want) {
		t.Fatalf("after Open the dir holds %v, want %v", names, want)
	}
}

// checkReopened opens the store on fs and checks that its current snapshot
// is one of candidates, with exactly that checkpoint's files.
func checkReopened(fs *vfs.MemFS, candidates ...*Meta) (*Meta, error) {
	s, err := Open(fs, testDir)
	if err != nil {
		return nil, fmt.Errorf("Open: %w", err)
	}
	cur := s.Current()
	for _, c := range candidates {
		if sameMeta(cur, c) {
			names, err := fs.List(s.Path(cur.Dir))
			if err != nil {
				return nil, fmt.Errorf("checkpoint %s: %w", cur.Dir, err)
			}
			got := map[string][]byte{}
			for _, n := range names {
				f, err := fs.Open(filepath.Join(s.Path(cur.Dir), n))
				if err != nil {
					return nil, err
				}
				got[n], err = io.ReadAll(f)
				_ = f.Close()
				if err != nil {
					return nil, err
				}
			}
			if err := sameFiles(got, checkpointFiles(cur.Index)); err != nil {
				return nil, fmt.Errorf("checkpoint %s: %w", cur.Dir, err)
			}
			return cur, nil
		}
	}
	var want []string
	for _, c := range candidates {
		want = append(want, fmtMeta(c))
	}
	return nil, fmt.Errorf("Current is %s, want one of %v", fmtMeta(cur), want)
}

// TestCommitPowerCut cuts power before every write operation of a Commit
// that replaces snapshot A by snapshot B (and after the last one): the disk
// must always name exactly A or B, with that checkpoint complete, and once
// B is durable it stays so.
func TestCommitPowerCut(t *testing.T) {
	metaA := &Meta{Index: 100, Term: 2, ConfState: confA(), Dir: DirName(100)}
	metaB := &Meta{Index: 250, Term: 3, ConfState: confB(), Dir: DirName(250)}
	for _, mode := range []struct {
		name string
		opts func(k int) vfs.CrashCloneOptions
	}{
		{"synced-only", func(int) vfs.CrashCloneOptions { return vfs.CrashCloneOptions{} }},
		{"unsynced-kept", func(int) vfs.CrashCloneOptions { return vfs.CrashCloneOptions{UnsyncedKeepProbability: 1} }},
		{"unsynced-random", func(k int) vfs.CrashCloneOptions {
			return vfs.CrashCloneOptions{UnsyncedKeepProbability: 0.5, Rand: rand.New(rand.NewPCG(uint64(k), 3))}
		}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			sawB := false
			for k := 1; ; k++ {
				mem := vfs.NewMem()
				var armed atomic.Bool
				var count int
				var clone *vfs.MemFS
				var cutAt vfs.Op
				fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
					if armed.Load() && op.Kind.IsWrite() {
						count++
						if count == k {
							clone, cutAt = mem.CrashClone(mode.opts(k)), op
						}
					}
					return nil
				}))
				s, err := Open(fs, testDir)
				must(t, err)
				commitNew(t, s, fs, metaA.Index, metaA.Term, confA())
				tmp := s.TempDir(metaB.Index)
				writeCheckpoint(t, fs, tmp, checkpointFiles(metaB.Index))
				armed.Store(true)
				err = s.Commit(tmp, &Meta{Index: metaB.Index, Term: metaB.Term, ConfState: confB()})
				armed.Store(false)
				must(t, err)
				if !sameMeta(s.Current(), metaB) {
					t.Fatalf("after Commit: Current %s", fmtMeta(s.Current()))
				}
				if clone == nil {
					// Every cut point has been tried; Commit returned, so B
					// must be durable.
					if _, err := checkReopened(mem.CrashClone(mode.opts(k)), metaB); err != nil {
						t.Fatalf("power cut after Commit returned: %v", err)
					}
					if !sawB {
						t.Fatal("no cut point ever showed B")
					}
					t.Logf("cut power at each of %d write operations", k-1)
					return
				}
				got, err := checkReopened(clone, metaA, metaB)
				if err != nil {
					t.Fatalf("power cut before write %d (%s): %v", k, cutAt, err)
				}
				if got.Index == metaB.Index {
					sawB = true
				} else if sawB {
					t.Fatalf("power cut before write %d (%s) shows A although an earlier cut showed B", k, cutAt)
				}
			}
		})
	}
}

// TestCommitErrorAtEveryWrite fails each write operation of a Commit in
// turn: the disk must still name A or B, complete, and committing B again
// must then succeed and leave only B.
func TestCommitErrorAtEveryWrite(t *testing.T) {
	metaA := &Meta{Index: 100, Term: 2, ConfState: confA(), Dir: DirName(100)}
	metaB := &Meta{Index: 250, Term: 3, ConfState: confB(), Dir: DirName(250)}
	for k := 1; ; k++ {
		mem := vfs.NewMem()
		var armed atomic.Bool
		var count int
		injected := false
		fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
			if armed.Load() && op.Kind.IsWrite() {
				count++
				if count == k {
					injected = true
					return vfs.ErrInjected
				}
			}
			return nil
		}))
		s, err := Open(fs, testDir)
		must(t, err)
		commitNew(t, s, fs, metaA.Index, metaA.Term, confA())
		tmp := s.TempDir(metaB.Index)
		writeCheckpoint(t, fs, tmp, checkpointFiles(metaB.Index))
		armed.Store(true)
		err = s.Commit(tmp, &Meta{Index: metaB.Index, Term: metaB.Term, ConfState: confB()})
		armed.Store(false)
		if !injected {
			must(t, err)
			t.Logf("failed each of %d write operations", k-1)
			return
		}
		if err != nil && !errors.Is(err, vfs.ErrInjected) {
			t.Fatalf("write %d: error %v does not wrap the injected one", k, err)
		}
		if err == nil && !sameMeta(s.Current(), metaB) {
			t.Fatalf("write %d: Commit succeeded but Current is %s", k, fmtMeta(s.Current()))
		}
		if cur := s.Current(); !sameMeta(cur, metaA) && !sameMeta(cur, metaB) {
			t.Fatalf("write %d: Current %s", k, fmtMeta(cur))
		}
		if _, err := checkReopened(mem, metaA, metaB); err != nil {
			t.Fatalf("write %d failed: %v", k, err)
		}
		// What the server does after a failed Commit: drop the temp dir,
		// and later commit the same snapshot again.
		_ = fs.RemoveAll(tmp)
		tmp = s.TempDir(metaB.Index)
		writeCheckpoint(t, fs, tmp, checkpointFiles(metaB.Index))
		must(t, s.Commit(tmp, &Meta{Index: metaB.Index, Term: metaB.Term, ConfState: confB()}))
		if _, err := checkReopened(mem, metaB); err != nil {
			t.Fatalf("write %d failed, then the retry: %v", k, err)
		}
		if got := snapDirs(t, mem); !slices.Equal(got, []string{metaB.Dir}) {
			t.Fatalf("write %d failed, then the retry: checkpoints on disk %v", k, got)
		}
	}
}

func TestCommitRefusesOlderIndex(t *testing.T) {
	mem := vfs.NewMem()
	s, err := Open(mem, testDir)
	must(t, err)
	m := commitNew(t, s, mem, 50, 2, confA())
	tmp := s.TempDir(49)
	writeCheckpoint(t, mem, tmp, checkpointFiles(49))
	if err := s.Commit(tmp, &Meta{Index: 49, Term: 2, ConfState: confA()}); err == nil {
		t.Fatal("Commit of an older snapshot succeeded")
	}
	if !sameMeta(s.Current(), m) {
		t.Fatalf("Current %s, want %s", fmtMeta(s.Current()), fmtMeta(m))
	}
	if exists(mem, filepath.Join(testDir, DirName(49))) {
		t.Fatal("the refused checkpoint was installed")
	}
	if _, err := checkReopened(mem, m); err != nil {
		t.Fatal(err)
	}
}

// TestCommitSameIndexKeepsFirst: a retransmitted snapshot of the current
// index does not replace the checkpoint (which a transfer may be reading).
func TestCommitSameIndexKeepsFirst(t *testing.T) {
	mem := vfs.NewMem()
	s, err := Open(mem, testDir)
	must(t, err)
	m := commitNew(t, s, mem, 50, 2, confA())
	tmp := s.TempDir(50)
	writeCheckpoint(t, mem, tmp, map[string][]byte{"OTHER": []byte("second copy")})
	m2 := &Meta{Index: 50, Term: 2, ConfState: confA()}
	must(t, s.Commit(tmp, m2))
	if m2.Dir != m.Dir || !sameMeta(s.Current(), m) {
		t.Fatalf("Current %s, want %s", fmtMeta(s.Current()), fmtMeta(m))
	}
	if exists(mem, tmp) {
		t.Fatal("the second copy's temp dir was left behind")
	}
	if _, err := checkReopened(mem, m); err != nil {
		t.Fatal(err)
	}
}

// TestAcquirePinsCheckpoint: a pinned checkpoint survives newer commits
// until released; the current one is never removed.
func TestAcquirePinsCheckpoint(t *testing.T) {
	mem := vfs.NewMem()
	s, err := Open(mem, testDir)
	must(t, err)
	a := commitNew(t, s, mem, 10, 1, confA())
	gotA, releaseA, err := s.Acquire()
	must(t, err)
	if !sameMeta(gotA, a) {
		t.Fatalf("Acquire = %s, want %s", fmtMeta(gotA), fmtMeta(a))
	}
	_, releaseA2, err := s.Acquire() // a second transfer of A
	must(t, err)
	b := commitNew(t, s, mem, 20, 1, confA())
	pathA := s.Path(a.Dir)
	if !exists(mem, pathA) {
		t.Fatal("pinned checkpoint A removed by a newer commit")
	}
	if err := sameFiles(dirFiles(t, mem, pathA), checkpointFiles(a.Index)); err != nil {
		t.Fatalf("pinned checkpoint A: %v", err)
	}
	gotB, releaseB, err := s.Acquire()
	must(t, err)
	if !sameMeta(gotB, b) {
		t.Fatalf("Acquire = %s, want %s", fmtMeta(gotB), fmtMeta(b))
	}
	c := commitNew(t, s, mem, 30, 1, confA())

	releaseA()
	releaseA() // a second call is a no-op: it must not unpin the other transfer
	if !exists(mem, pathA) {
		t.Fatal("checkpoint A removed while a second transfer still pins it")
	}
	releaseA2()
	if exists(mem, pathA) {
		t.Fatal("checkpoint A not removed after its last release")
	}
	if !exists(mem, s.Path(b.Dir)) {
		t.Fatal("pinned checkpoint B removed")
	}
	releaseB()
	if got := snapDirs(t, mem); !slices.Equal(got, []string{c.Dir}) {
		t.Fatalf("checkpoints on disk %v, want only %s", got, c.Dir)
	}
	// Releasing the current snapshot's pin never removes it.
	_, releaseC, err := s.Acquire()
	must(t, err)
	releaseC()
	if _, err := checkReopened(mem, c); err != nil {
		t.Fatal(err)
	}
}

// TestReleaseDuringCommit: a transfer that ends (release → gc) while a
// Commit has installed its checkpoint directory but not yet rewritten
// raft-snapshot.bin must not remove that directory.
func TestReleaseDuringCommit(t *testing.T) {
	mem := vfs.NewMem()
	var hook atomic.Pointer[func()]
	fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
		if op.Kind == vfs.OpCreate && filepath.Base(op.Path) == metaFile+".tmp" {
			if f := hook.Swap(nil); f != nil {
				(*f)()
			}
		}
		return nil
	}))
	s, err := Open(fs, testDir)
	must(t, err)
	commitNew(t, s, fs, 10, 1, confA())
	_, release, err := s.Acquire()
	must(t, err)
	hook.Store(&release)
	b := commitNew(t, s, fs, 20, 1, confB())
	if hook.Load() != nil {
		t.Fatal("the hook did not run")
	}
	if _, err := checkReopened(mem, b); err != nil {
		t.Fatalf("after a release during Commit: %v", err)
	}
}

// TestConcurrentCommits: a Commit of an older snapshot that overlaps a
// Commit of a newer one must neither regress raft-snapshot.bin nor leave it
// naming a removed checkpoint.
func TestConcurrentCommits(t *testing.T) {
	mem := vfs.NewMem()
	paused := make(chan struct{})
	resume := make(chan struct{})
	var pauseNext atomic.Bool
	fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
		if op.Kind == vfs.OpCreate && filepath.Base(op.Path) == metaFile+".tmp" && pauseNext.CompareAndSwap(true, false) {
			close(paused)
			<-resume
		}
		return nil
	}))
	s, err := Open(fs, testDir)
	must(t, err)
	commitNew(t, s, fs, 1, 1, confA())
	tmp5, tmp10 := s.TempDir(5), s.TempDir(10)
	writeCheckpoint(t, fs, tmp5, checkpointFiles(5))
	writeCheckpoint(t, fs, tmp10, checkpointFiles(10))

	pauseNext.Store(true)
	err5 := make(chan error, 1)
	go func() { err5 <- s.Commit(tmp5, &Meta{Index: 5, Term: 1, ConfState: confA()}) }()
	<-paused // Commit(5) is about to write raft-snapshot.bin
	err10 := make(chan error, 1)
	go func() { err10 <- s.Commit(tmp10, &Meta{Index: 10, Term: 1, ConfState: confB()}) }()
	// Let Commit(10) run to completion if it can (it may also wait for
	// Commit(5), which is fine): this is not a timing assertion.
	select {
	case err := <-err10:
		err10 <- err
	case <-time.After(200 * time.Millisecond):
	}
	close(resume)
	e5, e10 := <-err5, <-err10
	must(t, e10)
	if e5 != nil && !strings.Contains(e5.Error(), "older") {
		t.Fatalf("Commit(5): %v", e5)
	}
	if cur := s.Current(); cur.Index != 10 {
		t.Fatalf("Current %s, want index 10", fmtMeta(cur))
	}
	if _, err := checkReopened(mem, &Meta{Index: 10, Term: 1, ConfState: confB(), Dir: DirName(10)}); err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------------------
// raft-snapshot.bin

// expectCorrupt opens the store on a copy of mem whose raft-snapshot.bin
// holds b and checks that Open fails, naming the file.
func expectCorrupt(t *testing.T, mem *vfs.MemFS, what string, b []byte, mention string) {
	t.Helper()
	fs := mem.CrashClone(vfs.CrashCloneOptions{})
	writeFile(t, fs, filepath.Join(testDir, metaFile), b)
	s, err := Open(fs, testDir)
	if err == nil {
		t.Fatalf("%s: Open succeeded with snapshot %s", what, fmtMeta(s.Current()))
	}
	if !strings.Contains(err.Error(), metaFile) {
		t.Fatalf("%s: error %q does not name %s", what, err, metaFile)
	}
	if !errors.Is(err, errs.ErrCorruption) {
		t.Fatalf("%s: error %q is not a corruption error", what, err)
	}
	if mention != "" && !strings.Contains(err.Error(), mention) {
		t.Fatalf("%s: error %q does not mention %q", what, err, mention)
	}
}

func TestOpenCorruptMeta(t *testing.T) {
	mem := vfs.NewMem()
	s, err := Open(mem, testDir)
	must(t, err)
	m := commitNew(t, s, mem, 77, 5, confB())
	good := readFile(t, mem, filepath.Join(testDir, metaFile))
	if !bytes.Equal(good, encodeMeta(m)) {
		t.Fatal("raft-snapshot.bin is not encodeMeta of the current snapshot")
	}

	for i := range good {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			b := bytes.Clone(good)
			b[i] ^= x
			expectCorrupt(t, mem, fmt.Sprintf("byte %d ^ %#x", i, x), b, "")
		}
	}
	for n := 0; n < len(good); n++ {
		expectCorrupt(t, mem, fmt.Sprintf("truncated to %d bytes", n), good[:n], "")
	}
	expectCorrupt(t, mem, "trailing garbage", append(bytes.Clone(good), 0), "")
	expectCorrupt(t, mem, "larger than 1 MiB", append(bytes.Clone(good), make([]byte, 1<<20)...), "")

	// A future version, with a valid checksum (the checksum covers the
	// body only).
	v2 := bytes.Clone(good)
	binary.LittleEndian.PutUint32(v2[8:], 2)
	expectCorrupt(t, mem, "version 2", v2, "version 2")

	// Valid checksums, but the checkpoint name is wrong.
	for _, dir := range []string{DirName(78), "snap-", "../../etc", "snap-4d/x"} {
		bad := encodeMeta(&Meta{Index: 77, Term: 5, ConfState: confB(), Dir: dir})
		expectCorrupt(t, mem, fmt.Sprintf("checkpoint name %q", dir), bad, "")
	}
	// Valid checksum, but the body is cut short or the conf state is junk.
	body := binary.LittleEndian.AppendUint64(nil, 77)
	expectCorrupt(t, mem, "short body", frameMeta(body), "")
	body = binary.LittleEndian.AppendUint64(body, 5)
	expectCorrupt(t, mem, "no conf state", frameMeta(body), "")
	expectCorrupt(t, mem, "conf state too long", frameMeta(append(bytes.Clone(body), 10, 1)), "")
	expectCorrupt(t, mem, "junk conf state", frameMeta(append(bytes.Clone(body), 2, 0xff, 0xff)), "")
	expectCorrupt(t, mem, "no checkpoint name", frameMeta(append(bytes.Clone(body), 0)), "")

	// The good file still opens.
	fs := mem.CrashClone(vfs.CrashCloneOptions{})
	if _, err := checkReopened(fs, m); err != nil {
		t.Fatal(err)
	}
}

// frameMeta wraps a metadata body in a valid header and checksum.
func frameMeta(body []byte) []byte {
	out := append([]byte(metaMagic), 0, 0, 0, 0, 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(out[8:], metaVersion)
	binary.LittleEndian.PutUint32(out[12:], uint32(len(body)))
	out = append(out, body...)
	return binary.LittleEndian.AppendUint32(out, crc.Masked(body))
}

func TestOpenMissingCheckpoint(t *testing.T) {
	mem := vfs.NewMem()
	s, err := Open(mem, testDir)
	must(t, err)
	m := commitNew(t, s, mem, 77, 5, confA())
	must(t, mem.RemoveAll(s.Path(m.Dir)))
	_, err = Open(mem, testDir)
	if err == nil {
		t.Fatal("Open succeeded although the checkpoint is missing")
	}
	for _, want := range []string{metaFile, m.Dir} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not mention %s", err, want)
		}
	}
}

func TestMetaEncodingRoundTrip(t *testing.T) {
	for _, m := range []*Meta{
		{Index: 0, Term: 0, ConfState: &pb.ConfState{}},
		{Index: 1, Term: 1, ConfState: confA()},
		{Index: 1<<64 - 1, Term: 1<<64 - 1, ConfState: confB()},
	} {
		m.Dir = DirName(m.Index)
		got, err := decodeMeta(encodeMeta(m), "x")
		if err != nil {
			t.Fatalf("%s: %v", fmtMeta(m), err)
		}
		if !sameMeta(got, m) {
			t.Fatalf("decoded %s, want %s", fmtMeta(got), fmtMeta(m))
		}
	}
}

// ---------------------------------------------------------------------------
// Streams

func snapMsg(index, term uint64) *pb.Message {
	return &pb.Message{Type: new(pb.MsgSnap), From: new(uint64(1)), To: new(uint64(2)), Term: new(term),
		Snapshot: &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(index), Term: new(term), ConfState: confB()}}}
}

type streamFile struct {
	name string
	data []byte
}

// region is a byte range of a stream.
type region struct{ start, end int }

// streamBuilder encodes streams by the documented format, independently of
// WriteStream, and remembers where the checksummed bytes are. The header,
// which announces the stream's size, is written by end, once the files are
// known: total is the sum of the files' sizes, its file count the trailer's.
type streamBuilder struct {
	m       *pb.Message
	body    []byte   // the file records
	bodyCov []region // checksummed regions of body
	total   uint64
	b       []byte
	covered []region // bytes under a checksum, with the checksums
}

func newStream(m *pb.Message) *streamBuilder { return &streamBuilder{m: m} }

func (sb *streamBuilder) file(name string, data []byte) *streamBuilder {
	sb.body = append(sb.body, 1)
	start := len(sb.body)
	sb.body = binary.AppendUvarint(sb.body, uint64(len(name)))
	sb.body = append(sb.body, name...)
	sb.body = binary.AppendUvarint(sb.body, uint64(len(data)))
	sb.body = append(sb.body, data...)
	sb.body = binary.LittleEndian.AppendUint32(sb.body, crc.Masked(sb.body[start:]))
	// The name's length and the size steer the parse; a flip there may
	// surface as another error than a checksum mismatch.
	sb.bodyCov = append(sb.bodyCov, region{start + 1 + len(name) + uvarintLen(uint64(len(data))), len(sb.body)})
	sb.total += uint64(len(data))
	return sb
}

func (sb *streamBuilder) end(count uint32) []byte {
	return sb.endAnnouncing(sb.total, count, count)
}

// endAnnouncing writes a header that announces total bytes and files
// files, and a trailer that counts count files.
func (sb *streamBuilder) endAnnouncing(total uint64, files, count uint32) []byte {
	hdr, err := proto.Marshal(sb.m)
	if err != nil {
		panic(err)
	}
	sb.b = []byte(streamMagic)
	sb.b = binary.AppendUvarint(sb.b, uint64(len(hdr)))
	start := len(sb.b)
	sb.b = append(sb.b, hdr...)
	sb.b = binary.LittleEndian.AppendUint64(sb.b, total)
	sb.b = binary.LittleEndian.AppendUint32(sb.b, files)
	sb.b = binary.LittleEndian.AppendUint32(sb.b, crc.Masked(sb.b[start:]))
	sb.covered = append(sb.covered[:0], region{start, len(sb.b)})
	off := len(sb.b)
	sb.b = append(sb.b, sb.body...)
	for _, r := range sb.bodyCov {
		sb.covered = append(sb.covered, region{off + r.start, off + r.end})
	}
	sb.b = append(sb.b, 0)
	start = len(sb.b)
	sb.b = binary.LittleEndian.AppendUint32(sb.b, count)
	sb.b = binary.LittleEndian.AppendUint32(sb.b, crc.Masked(sb.b[start:]))
	sb.covered = append(sb.covered, region{start, len(sb.b)})
	return sb.b
}

func uvarintLen(v uint64) int { return len(binary.AppendUvarint(nil, v)) }

func buildStream(m *pb.Message, files []streamFile) []byte {
	sb := newStream(m)
	for _, f := range files {
		sb.file(f.name, f.data)
	}
	return sb.end(uint32(len(files)))
}

// sourceFiles is a checkpoint exercising the edges of the format: an empty
// file, one larger than WriteStream's and ReadStream's buffers, and a
// subdirectory (which is not sent).
func sourceFiles() []streamFile {
	r := rand.New(rand.NewPCG(1, 2))
	big := make([]byte, 700<<10+13)
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	return []streamFile{ // sorted by name, as WriteStream sends them
		{"000004.sst", big},
		{"EMPTY", nil},
		{"MANIFEST-000009", []byte("manifest")},
	}
}

func makeSource(t testing.TB, fs vfs.FS, dir string, files []streamFile, subdir bool) {
	t.Helper()
	m := map[string][]byte{}
	for _, f := range files {
		m[f.name] = f.data
	}
	writeCheckpoint(t, fs, dir, m)
	if subdir {
		must(t, fs.MkdirAll(filepath.Join(dir, "sub"), 0o700))
		writeFile(t, fs, filepath.Join(dir, "sub", "x"), []byte("not sent"))
	}
}

func wantFiles(files []streamFile) map[string][]byte {
	m := map[string][]byte{}
	for _, f := range files {
		m[f.name] = f.data
	}
	return m
}

func TestStreamRoundTrip(t *testing.T) {
	src := vfs.NewMem()
	files := sourceFiles()
	makeSource(t, src, "/src/snap", files, true)
	msg := snapMsg(42, 3)
	var buf bytes.Buffer
	must(t, WriteStream(&buf, src, "/src/snap", msg, nil))
	if !bytes.Equal(buf.Bytes(), buildStream(msg, files)) {
		t.Fatal("WriteStream's output differs from the documented format")
	}
	readers := map[string]func(io.Reader) io.Reader{
		"plain":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
		"data+EOF": iotest.DataErrReader,
	}
	for name, wrap := range readers {
		dst := vfs.NewMem()
		got, err := ReadStream(wrap(bytes.NewReader(buf.Bytes())), dst, "/dst/recv.tmp", nil)
		if err != nil {
			t.Fatalf("%s: ReadStream: %v", name, err)
		}
		if !proto.Equal(got, msg) {
			t.Fatalf("%s: message %v, want %v", name, got, msg)
		}
		if err := sameFiles(dirFiles(t, dst, "/dst/recv.tmp"), wantFiles(files)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// TestStreamIntoStore: the received checkpoint, committed, survives a
// power cut with every file intact (ReadStream synced them).
func TestStreamIntoStore(t *testing.T) {
	src := vfs.NewMem()
	files := sourceFiles()
	makeSource(t, src, "/src/snap", files, false)
	var buf bytes.Buffer
	must(t, WriteStream(&buf, src, "/src/snap", snapMsg(42, 3), nil))

	mem := vfs.NewMem()
	s, err := Open(mem, testDir)
	must(t, err)
	tmp := s.TempDir(0)
	m, err := ReadStream(&buf, mem, tmp, nil)
	must(t, err)
	meta := &Meta{Index: m.GetSnapshot().GetMetadata().GetIndex(), Term: m.GetSnapshot().GetMetadata().GetTerm(),
		ConfState: m.GetSnapshot().GetMetadata().GetConfState()}
	must(t, s.Commit(tmp, meta))
	crashed := mem.CrashClone(vfs.CrashCloneOptions{})
	s2, err := Open(crashed, testDir)
	must(t, err)
	if !sameMeta(s2.Current(), meta) {
		t.Fatalf("after a power cut: Current %s, want %s", fmtMeta(s2.Current()), fmtMeta(meta))
	}
	if err := sameFiles(dirFiles(t, crashed, s2.Path(meta.Dir)), wantFiles(files)); err != nil {
		t.Fatalf("after a power cut: %v", err)
	}
}

func TestStreamEmptyCheckpoint(t *testing.T) {
	src := vfs.NewMem()
	must(t, src.MkdirAll("/src", 0o700))
	var buf bytes.Buffer
	must(t, WriteStream(&buf, src, "/src", snapMsg(1, 1), nil))
	dst := vfs.NewMem()
	_, err := ReadStream(&buf, dst, "/d", nil)
	must(t, err)
	if got := dirFiles(t, dst, "/d"); len(got) != 0 {
		t.Fatalf("files %v", got)
	}
}

// smallStream is a stream small enough to damage at every byte.
func smallStream() (*pb.Message, []streamFile, *streamBuilder) {
	msg := snapMsg(9, 2)
	files := []streamFile{{"A", []byte("first file's data")}, {"B", nil}, {"C.sst", bytes.Repeat([]byte("xyz"), 40)}}
	sb := newStream(msg)
	for _, f := range files {
		sb.file(f.name, f.data)
	}
	sb.end(uint32(len(files)))
	return msg, files, sb
}

// TestStreamDamage flips bits at every byte of a stream: every flip is
// refused, and one in checksummed bytes (header, file names, sizes, data,
// trailer) as corruption; no flip panics.
func TestStreamDamage(t *testing.T) {
	_, _, sb := smallStream()
	good := sb.b
	inCovered := func(i int) bool {
		for _, r := range sb.covered {
			if i >= r.start && i < r.end {
				return true
			}
		}
		return false
	}
	for i := range good {
		for _, x := range []byte{0x01, 0x40, 0xff} {
			b := bytes.Clone(good)
			b[i] ^= x
			dst := vfs.NewMem()
			_, err := ReadStream(bytes.NewReader(b), dst, "/d", nil)
			if inCovered(i) {
				if err == nil {
					t.Fatalf("byte %d ^ %#x (file data or checksum) went undetected", i, x)
				}
				if !errors.Is(err, errs.ErrCorruption) {
					t.Fatalf("byte %d ^ %#x: error %v is not a corruption error", i, x, err)
				}
				continue
			}
			// Outside the checksummed bytes: the magic, the tags and the
			// lengths that steer the parse. Damage there is still refused.
			if err == nil {
				t.Fatalf("byte %d ^ %#x went undetected", i, x)
			}
		}
	}
}

func TestStreamTruncated(t *testing.T) {
	_, _, sb := smallStream()
	good := sb.b
	for n := 0; n < len(good); n++ {
		dst := vfs.NewMem()
		if _, err := ReadStream(bytes.NewReader(good[:n]), dst, "/d", nil); err == nil {
			t.Fatalf("stream cut at %d of %d bytes accepted", n, len(good))
		}
		if _, err := ReadStream(iotest.OneByteReader(bytes.NewReader(good[:n])), vfs.NewMem(), "/d", nil); err == nil {
			t.Fatalf("stream cut at %d of %d bytes accepted (one byte reads)", n, len(good))
		}
	}
	// A read error (not EOF) inside the stream is returned.
	boom := errors.New("connection reset")
	r := io.MultiReader(bytes.NewReader(good[:len(good)/2]), iotest.ErrReader(boom))
	if _, err := ReadStream(r, vfs.NewMem(), "/d", nil); !errors.Is(err, boom) {
		t.Fatalf("read error: got %v, want %v", err, boom)
	}
}

func TestStreamRefusesUnsafeNames(t *testing.T) {
	for _, name := range []string{"../x", "a/b", "", ".", "..", "/abs", `a\b`, "x\x00y", "../../../../etc/passwd", strings.Repeat("n", 256)} {
		dst := vfs.NewMem()
		must(t, dst.MkdirAll("/recv", 0o700))
		b := buildStream(snapMsg(1, 1), []streamFile{{"ok", []byte("1")}, {name, []byte("evil")}})
		if _, err := ReadStream(bytes.NewReader(b), dst, "/recv/d", nil); err == nil {
			t.Fatalf("file name %q accepted", name)
		}
		// Nothing was written outside the destination.
		names, err := dst.List("/recv")
		must(t, err)
		if !slices.Equal(names, []string{"d"}) {
			t.Fatalf("name %q: /recv holds %v", name, names)
		}
		if exists(dst, "/x") || exists(dst, "/recv/x") || exists(dst, "/etc/passwd") {
			t.Fatalf("name %q escaped the destination", name)
		}
	}
	// The longest allowed name works.
	long := strings.Repeat("n", 255)
	b := buildStream(snapMsg(1, 1), []streamFile{{long, []byte("1")}})
	dst := vfs.NewMem()
	if _, err := ReadStream(bytes.NewReader(b), dst, "/d", nil); err != nil {
		t.Fatalf("255-byte name: %v", err)
	}
}

func TestStreamRefusesBadHeaders(t *testing.T) {
	app := &pb.Message{Type: new(pb.MsgApp), From: new(uint64(1)), To: new(uint64(2))}
	valid := buildStream(snapMsg(1, 1), nil)
	hugeLen := binary.AppendUvarint([]byte(streamMagic), 64<<20+1)
	cases := map[string][]byte{
		"empty":          nil,
		"bad magic":      append([]byte("KAYASNAPSTREAM\x00\x01"), valid[len(streamMagic):]...),
		"not a MsgSnap":  buildStream(app, nil),
		"empty header":   append(binary.AppendUvarint([]byte(streamMagic), 0), 0, 0, 0, 0, 0),
		"junk header":    append(binary.AppendUvarint([]byte(streamMagic), 3), 0xff, 0xff, 0xff, 0, 0, 0, 0, 0),
		"huge header":    hugeLen,
		"bad varint":     append([]byte(streamMagic), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
		"short header":   append(binary.AppendUvarint([]byte(streamMagic), 100), 1, 2, 3),
		"meta file":      encodeMeta(&Meta{Index: 1, Dir: DirName(1), ConfState: confA()}),
		"bad record tag": append(bytes.Clone(valid[:len(valid)-9]), 2, 0, 0, 0, 0, 0, 0, 0, 0),
	}
	for name, b := range cases {
		dst := vfs.NewMem()
		if _, err := ReadStream(bytes.NewReader(b), dst, "/d", nil); err == nil {
			t.Fatalf("%s: accepted", name)
		}
		if name != "bad record tag" && exists(dst, "/d") {
			t.Fatalf("%s: the destination was created for a stream with a bad header", name)
		}
	}
}

func TestStreamStructureChecks(t *testing.T) {
	msg := snapMsg(1, 1)
	one := func(name string) streamFile { return streamFile{name, []byte("data of " + name)} }
	cases := map[string][]byte{
		// A trailer that counts more files than were sent: records are
		// missing.
		"missing file": newStream(msg).file("a", []byte("1")).end(2),
		"extra file":   newStream(msg).file("a", []byte("1")).file("b", nil).end(1),
		"duplicate":    buildStream(msg, []streamFile{one("a"), one("a")}),
		// The header announces the stream's size; it may not go beyond
		// it, nor carry less.
		"more bytes than announced":  newStream(msg).file("a", []byte("12345")).endAnnouncing(4, 1, 1),
		"fewer bytes than announced": newStream(msg).file("a", []byte("12345")).endAnnouncing(6, 1, 1),
		"more files than announced":  newStream(msg).file("a", nil).file("b", nil).endAnnouncing(0, 1, 2),
		"fewer files than announced": newStream(msg).file("a", nil).endAnnouncing(0, 2, 1),
		"absurd file count":          newStream(msg).endAnnouncing(0, maxFiles+1, 0),
	}
	for name, b := range cases {
		if _, err := ReadStream(bytes.NewReader(b), vfs.NewMem(), "/d", nil); err == nil {
			t.Fatalf("%s: accepted", name)
		}
	}
}

func TestReadStreamRefusesExistingDest(t *testing.T) {
	dst := vfs.NewMem()
	writeCheckpoint(t, dst, "/d", map[string][]byte{"stale": []byte("old")})
	b := buildStream(snapMsg(1, 1), []streamFile{{"a", []byte("1")}})
	if _, err := ReadStream(bytes.NewReader(b), dst, "/d", nil); err == nil {
		t.Fatal("ReadStream into an existing directory succeeded")
	}
}

func TestWriteStreamErrors(t *testing.T) {
	src := vfs.NewMem()
	files := sourceFiles()
	makeSource(t, src, "/src", files, false)
	var full bytes.Buffer
	must(t, WriteStream(&full, src, "/src", snapMsg(1, 1), nil))

	// The writer fails midway.
	for _, n := range []int{0, 10, 1000, full.Len() / 2, full.Len() - 1} {
		w := &failingWriter{left: n}
		if err := WriteStream(w, src, "/src", snapMsg(1, 1), nil); !errors.Is(err, errWrite) {
			t.Fatalf("writer failing after %d bytes: got %v", n, err)
		}
	}
	// The source fails to read.
	efs := vfs.NewErrorFS(src, vfs.InjectorFunc(func(op vfs.Op) error {
		if op.Kind == vfs.OpFileRead && op.Offset > 0 {
			return vfs.ErrInjected
		}
		return nil
	}))
	if err := WriteStream(io.Discard, efs, "/src", snapMsg(1, 1), nil); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("read error: got %v", err)
	}
	// The checkpoint directory is missing.
	if err := WriteStream(io.Discard, src, "/nope", snapMsg(1, 1), nil); err == nil {
		t.Fatal("missing directory: no error")
	}
}

var errWrite = errors.New("write failed")

type failingWriter struct{ left int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) <= w.left {
		w.left -= len(p)
		return len(p), nil
	}
	n := w.left
	w.left = 0
	return n, errWrite
}

// ---------------------------------------------------------------------------
// Limiter

func streamTime(t *testing.T, lim *Limiter, size int) time.Duration {
	t.Helper()
	src := vfs.NewMem()
	makeSource(t, src, "/src", []streamFile{{"f", make([]byte, size)}}, false)
	start := time.Now()
	must(t, WriteStream(io.Discard, src, "/src", snapMsg(1, 1), lim))
	return time.Since(start)
}

func TestLimiter(t *testing.T) {
	// 1 MiB/s: 256 KiB take about 250 ms.
	lim := &Limiter{BytesPerSecond: 1 << 20}
	if d := streamTime(t, lim, 256<<10); d < 200*time.Millisecond {
		t.Fatalf("256 KiB at 1 MiB/s took %v", d)
	}
	// Unlimited: nil and zero. (No upper bound is asserted.)
	streamTime(t, nil, 256<<10)
	streamTime(t, &Limiter{}, 256<<10)
}

// TestLimiterShared: concurrent streams sharing a limiter share its rate.
func TestLimiterShared(t *testing.T) {
	lim := &Limiter{BytesPerSecond: 1 << 20}
	src := vfs.NewMem()
	makeSource(t, src, "/src", []streamFile{{"f", make([]byte, 128<<10)}}, false)
	start := time.Now()
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if err := WriteStream(io.Discard, src, "/src", snapMsg(1, 1), lim); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("2 × 128 KiB at 1 MiB/s took %v", d)
	}
}

// TestLimiterIdleCredit: a limiter shared by successive transfers (the
// server keeps one) must not let idle time accumulate into an unthrottled
// burst.
func TestLimiterIdleCredit(t *testing.T) {
	lim := &Limiter{BytesPerSecond: 1 << 20}
	streamTime(t, lim, 32<<10)
	time.Sleep(300 * time.Millisecond) // idle between two transfers
	if d := streamTime(t, lim, 256<<10); d < 200*time.Millisecond {
		t.Fatalf("after an idle period, 256 KiB at 1 MiB/s took %v", d)
	}
}

// ---------------------------------------------------------------------------
// Fuzzing

// parseStreamRef decodes a stream by the documented format; it is the
// reference a stream ReadStream accepts is checked against.
func parseStreamRef(b []byte) (*pb.Message, []streamFile, error) {
	if !bytes.HasPrefix(b, []byte(streamMagic)) {
		return nil, nil, errors.New("magic")
	}
	b = b[len(streamMagic):]
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) || len(b)-w-int(n) < 16 {
		return nil, nil, errors.New("header")
	}
	b = b[w:]
	hdr, sizes := b[:n], b[n:n+12]
	if crc.Masked(b[:n+12]) != binary.LittleEndian.Uint32(b[n+12:]) {
		return nil, nil, errors.New("header crc")
	}
	b = b[n+16:]
	m := &pb.Message{}
	if err := proto.Unmarshal(hdr, m); err != nil {
		return nil, nil, err
	}
	total, declared := binary.LittleEndian.Uint64(sizes), int(binary.LittleEndian.Uint32(sizes[8:]))
	var sum uint64
	var files []streamFile
	for {
		if len(b) == 0 {
			return nil, nil, errors.New("no trailer")
		}
		tag := b[0]
		b = b[1:]
		if tag == 0 {
			if len(b) < 8 {
				return nil, nil, errors.New("short trailer")
			}
			if crc.Masked(b[:4]) != binary.LittleEndian.Uint32(b[4:]) {
				return nil, nil, errors.New("trailer crc")
			}
			if int(binary.LittleEndian.Uint32(b)) != len(files) || declared != len(files) {
				return nil, nil, errors.New("count")
			}
			if sum != total {
				return nil, nil, errors.New("size")
			}
			return m, files, nil
		}
		rec := b
		name, rest, ok := lenBytes(b)
		if !ok {
			return nil, nil, errors.New("name")
		}
		data, rest, ok := lenBytes(rest)
		if !ok || len(rest) < 4 {
			return nil, nil, errors.New("data")
		}
		covered := rec[:len(rec)-len(rest)]
		if crc.Masked(covered) != binary.LittleEndian.Uint32(rest) {
			return nil, nil, errors.New("crc")
		}
		files = append(files, streamFile{string(name), data})
		sum += uint64(len(data))
		b = rest[4:]
	}
}

// checkAccepted checks that a stream ReadStream accepted decodes by the
// reference parser and that dir holds exactly its files.
func checkAccepted(t testing.TB, stream []byte, fs vfs.FS, dir string) {
	t.Helper()
	_, files, err := parseStreamRef(stream)
	if err != nil {
		t.Fatalf("ReadStream accepted a stream the reference parser rejects (%v)", err)
	}
	want := map[string][]byte{}
	for _, f := range files {
		if _, dup := want[f.name]; dup {
			t.Fatalf("ReadStream accepted a stream sending %q twice", f.name)
		}
		want[f.name] = f.data
	}
	if err := sameFiles(dirFiles(t, fs, dir), want); err != nil {
		t.Fatalf("accepted stream: %v", err)
	}
}

func FuzzReadStream(f *testing.F) {
	_, _, sb := smallStream()
	good := sb.b
	f.Add(good)
	f.Add(buildStream(snapMsg(1, 1), nil))
	f.Add(buildStream(snapMsg(3, 1), []streamFile{{"x", bytes.Repeat([]byte{7}, 300)}}))
	f.Add(good[:len(good)/2])
	flipped := bytes.Clone(good)
	flipped[len(flipped)-12] ^= 1
	f.Add(flipped)
	f.Add(buildStream(snapMsg(1, 1), []streamFile{{"../x", []byte("1")}}))
	f.Add(buildStream(snapMsg(1, 1), []streamFile{{"a", []byte("1")}, {"a", []byte("2")}}))
	f.Add(newStream(snapMsg(1, 1)).file("a", nil).end(3))
	f.Add(buildStream(&pb.Message{Type: new(pb.MsgApp)}, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		fs := vfs.NewMem()
		m, err := ReadStream(bytes.NewReader(b), fs, "/d", nil)
		if err != nil {
			return
		}
		if m.GetType() != pb.MsgSnap {
			t.Fatalf("accepted a %v header", m.GetType())
		}
		wantMsg, _, _ := parseStreamRef(b)
		if wantMsg != nil && !proto.Equal(m, wantMsg) {
			t.Fatalf("message %v, stream says %v", m, wantMsg)
		}
		checkAccepted(t, b, fs, "/d")
		// Nothing outside the destination.
		names, err := fs.List("/")
		if err != nil || !slices.Equal(names, []string{"d"}) {
			t.Fatalf("root holds %v (%v)", names, err)
		}
	})
}

func FuzzDecodeMeta(f *testing.F) {
	for _, m := range []*Meta{
		{Index: 1, Term: 1, ConfState: confA()},
		{Index: 1<<64 - 1, Term: 9, ConfState: confB()},
		{Index: 0, ConfState: &pb.ConfState{}},
	} {
		m.Dir = DirName(m.Index)
		f.Add(encodeMeta(m))
	}
	f.Add([]byte(metaMagic))
	f.Add(frameMeta([]byte{1, 2, 3}))
	f.Add(frameMeta(make([]byte, 40)))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b, "raft-snapshot.bin")
		if err != nil {
			if !errors.Is(err, errs.ErrCorruption) || !strings.Contains(err.Error(), "raft-snapshot.bin") {
				t.Fatalf("error %v is not a corruption error naming the file", err)
			}
			return
		}
		if m.Dir != DirName(m.Index) && m.Dir != "" {
			if idx, ok := parseDirName(m.Dir); !ok || idx != m.Index {
				t.Fatalf("accepted checkpoint name %q for index %d", m.Dir, m.Index)
			}
		}
		if strings.ContainsAny(m.Dir, `/\`) || m.Dir == "." || m.Dir == ".." {
			t.Fatalf("accepted unsafe checkpoint name %q", m.Dir)
		}
		m2, err := decodeMeta(encodeMeta(m), "again")
		if err != nil {
			t.Fatalf("re-encoding %s: %v", fmtMeta(m), err)
		}
		if !sameMeta(m, m2) {
			t.Fatalf("re-encoding %s gave %s", fmtMeta(m), fmtMeta(m2))
		}
	})
}

// TestCommitMeta: a snapshot without a checkpoint becomes current, survives
// a reopen, lets older checkpoints go, cannot be acquired for a transfer,
// and a checkpoint committed afterwards (at its index or later) can.
func TestCommitMeta(t *testing.T) {
	mem := vfs.NewMem()
	s, err := Open(mem, testDir)
	must(t, err)
	if _, _, err := s.Acquire(); !errors.Is(err, ErrNoCheckpoint) {
		t.Fatalf("Acquire without a snapshot: %v, want ErrNoCheckpoint", err)
	}
	commitNew(t, s, mem, 40, 2, confA())
	m := &Meta{Index: 60, Term: 3, ConfState: confB(), Dir: "ignored"}
	must(t, s.CommitMeta(m))
	if cur := s.Current(); cur.Index != 60 || cur.Term != 3 || cur.Dir != "" {
		t.Fatalf("Current after CommitMeta: %s", fmtMeta(cur))
	}
	if d := snapDirs(t, mem); len(d) != 0 {
		t.Fatalf("checkpoints older than the current snapshot are kept: %v", d)
	}
	if _, _, err := s.Acquire(); !errors.Is(err, ErrNoCheckpoint) {
		t.Fatalf("Acquire of a snapshot without a checkpoint: %v, want ErrNoCheckpoint", err)
	}
	if err := s.CommitMeta(&Meta{Index: 59, Term: 3, ConfState: confB()}); err == nil {
		t.Fatal("CommitMeta of an older snapshot succeeded")
	}
	s2, err := Open(mem, testDir)
	must(t, err)
	if cur := s2.Current(); cur == nil || cur.Index != 60 || cur.Term != 3 || cur.Dir != "" || !proto.Equal(cur.ConfState, confB()) {
		t.Fatalf("after reopening: %s", fmtMeta(cur))
	}
	// A checkpoint of the same index (made for a transfer) becomes current
	// and can be acquired.
	c := commitNew(t, s2, mem, 60, 3, confB())
	got, release, err := s2.Acquire()
	if err != nil || got.Dir != DirName(60) {
		t.Fatalf("Acquire after a checkpoint at the same index: %v %v", got, err)
	}
	// A later metadata-only snapshot keeps the pinned checkpoint until the
	// transfer releases it.
	must(t, s2.CommitMeta(&Meta{Index: 70, Term: 3, ConfState: confB()}))
	if !exists(mem, s2.Path(c.Dir)) {
		t.Fatal("a checkpoint being sent was deleted")
	}
	release()
	if exists(mem, s2.Path(c.Dir)) {
		t.Fatal("the released, superseded checkpoint was kept")
	}
}

// TestReadStreamAdmission: the receiver judges the announced size before it
// writes anything (a full disk, or a stream larger than the sender's state
// can justify, is refused up front).
func TestReadStreamAdmission(t *testing.T) {
	files := sourceFiles()
	b := buildStream(snapMsg(5, 2), files)
	var total uint64
	for _, f := range files {
		total += uint64(len(f.data))
	}
	var gotTotal uint64
	var gotFiles int
	full := errors.New("no room")
	dst := vfs.NewMem()
	_, err := ReadStream(bytes.NewReader(b), dst, "/d", func(_ *pb.Message, t uint64, n int) error {
		gotTotal, gotFiles = t, n
		return full
	})
	if !errors.Is(err, full) {
		t.Fatalf("refused admission: got %v", err)
	}
	if gotTotal != total || gotFiles != len(files) {
		t.Fatalf("admit saw %d bytes in %d files, the stream holds %d in %d", gotTotal, gotFiles, total, len(files))
	}
	if exists(dst, "/d") {
		t.Fatal("a refused stream created its destination")
	}
	if _, err := ReadStream(bytes.NewReader(b), dst, "/d", func(*pb.Message, uint64, int) error { return nil }); err != nil {
		t.Fatalf("admitted stream: %v", err)
	}
}
