package txn

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/clustertest"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/vfs"
	"github.com/kayadb/kayadb/internal/wire"
)

func TestCommitEncodingRoundTrip(t *testing.T) {
	c := &commitCmd{txnID: 7<<32 | 3, snapshot: 99, isolation: SnapshotIsolation,
		reads:  [][]byte{[]byte("r1"), {}},
		writes: []write{{kind: wire.TxnOpPut, key: []byte("a"), value: []byte("v")}, {kind: wire.TxnOpDelete, key: []byte("b")}, {kind: wire.TxnOpPut, key: []byte("c")}}}
	b := encodeCommit(c)
	got, err := decodeCommit(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.txnID != c.txnID || got.snapshot != 99 || got.isolation != SnapshotIsolation || len(got.reads) != 2 || len(got.writes) != 3 ||
		string(got.writes[0].value) != "v" || got.writes[1].kind != wire.TxnOpDelete || string(got.reads[0]) != "r1" {
		t.Fatalf("round trip: %+v", got)
	}
	// Every truncation and a trailing byte are errors, never a panic.
	for i := 0; i < len(b); i++ {
		if _, err := decodeCommit(b[:i]); err == nil {
			t.Fatalf("a commit cut to %d of %d bytes decoded", i, len(b))
		}
	}
	if _, err := decodeCommit(append(b, 0)); err == nil {
		t.Fatal("a trailing byte was accepted")
	}
}

func FuzzDecodeCommit(f *testing.F) {
	f.Add(encodeCommit(&commitCmd{txnID: 1, snapshot: 2, isolation: Serializable, reads: [][]byte{[]byte("x")},
		writes: []write{{kind: wire.TxnOpPut, key: []byte("k"), value: []byte("v")}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeCommit(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeCommit(c), b) {
			t.Fatalf("decode/encode changed the bytes")
		}
	})
}

// managerOn returns a manager over node id of c.
func managerOn(t *testing.T, c *clustertest.Cluster, id uint64, opts Options) *Manager {
	t.Helper()
	n := c.Node(id)
	opts.Store = n.Store
	opts.Leadership = func() (uint64, bool) { return n.Raft.Term(), n.Raft.IsLeader() }
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(m.Close)
	return m
}

func handle(t *testing.T, m *Manager, op wire.Opcode, p []byte) (wire.Status, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return m.Handle(ctx, op, p)
}

// TestCommitBelowHorizonIsRefused: a transaction whose snapshot fell
// below the GC horizon (where a key's last modification is no longer
// exact) is not validated silently: its commit answers TXN_CONFLICT with
// the reason, and reads at its snapshot answer COMPACTED.
func TestCommitBelowHorizonIsRefused(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{Nodes: 1, StoreOptions: func(id uint64, o *kv.Options) {
		o.Collector = kv.NewCollector()
		o.Evaluators = Evaluators()
		o.Retention, o.GCInterval = time.Millisecond, 5*time.Millisecond
	}})
	c.Elect(1)
	m := managerOn(t, c, 1, Options{})
	c.Put("seen", "1")
	st, p := handle(t, m, wire.OpTxnBegin, nil)
	if st != wire.StatusOK {
		t.Fatalf("begin: %v %q", st, p)
	}
	id, snap, _ := wire.DecodeTxnBeginReply(p)
	if st, p := handle(t, m, wire.OpTxnOp, wire.AppendTxnOp(nil, wire.TxnOp{TxnID: id, Kind: wire.TxnOpPut, Key: []byte("k"), Value: []byte("v")})); st != wire.StatusOK {
		t.Fatalf("put: %v %q", st, p)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Node(1).Store.Horizon() <= snap {
		if time.Now().After(deadline) {
			t.Fatalf("the horizon did not pass the snapshot %d", snap)
		}
		c.Put("tick", "x")
	}
	if st, p := handle(t, m, wire.OpTxnOp, wire.AppendTxnOp(nil, wire.TxnOp{TxnID: id, Kind: wire.TxnOpGet, Key: []byte("seen")})); st != wire.StatusCompacted {
		t.Fatalf("a read at a collected snapshot: %v %q, want COMPACTED", st, p)
	}
	st, p = handle(t, m, wire.OpTxnCommit, wire.AppendTxnID(nil, id))
	if st != wire.StatusTxnConflict || !strings.Contains(string(p), "older than the retained history") {
		t.Fatalf("commit below the horizon: %v %q, want TXN_CONFLICT naming the retained history", st, p)
	}
	if _, err := kv.LocalGet(mustDB(c, 1), []byte("k")); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("the refused transaction wrote k: %v", err)
	}
	if out, ok, err := c.Node(1).Store.LookupOutcome(id); err != nil || !ok || out.Code != OutcomeCompacted {
		t.Fatalf("outcome %+v %v %v", out, ok, err)
	}
}

func mustDB(c *clustertest.Cluster, id uint64) *engine.DB {
	var db *engine.DB
	_ = c.Node(id).Store.DB(func(d *engine.DB) error { db = d; return nil })
	return db
}

// TestTxnLeadershipChangeOnCluster: on a 3-node raft cluster below the
// server, a transaction's commit after its leader lost leadership never
// writes, and a committed one's outcome is found on every node.
func TestTxnLeadershipChangeOnCluster(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{StoreOptions: func(id uint64, o *kv.Options) { o.Evaluators = Evaluators() }})
	c.Elect(1)
	m1 := managerOn(t, c, 1, Options{})
	begin := func(m *Manager) uint64 {
		st, p := handle(t, m, wire.OpTxnBegin, nil)
		if st != wire.StatusOK {
			t.Fatalf("begin: %v %q", st, p)
		}
		id, _, _ := wire.DecodeTxnBeginReply(p)
		return id
	}
	put := func(m *Manager, id uint64, k string) {
		if st, p := handle(t, m, wire.OpTxnOp, wire.AppendTxnOp(nil, wire.TxnOp{TxnID: id, Kind: wire.TxnOpPut, Key: []byte(k), Value: []byte("v")})); st != wire.StatusOK {
			t.Fatalf("put %s: %v %q", k, st, p)
		}
	}
	a := begin(m1)
	put(m1, a, "a")
	if st, p := handle(t, m1, wire.OpTxnCommit, wire.AppendTxnID(nil, a)); st != wire.StatusOK {
		t.Fatalf("commit a: %v %q", st, p)
	}
	b := begin(m1)
	put(m1, b, "b")
	c.Elect(2)
	if st, p := handle(t, m1, wire.OpTxnCommit, wire.AppendTxnID(nil, b)); st != wire.StatusNotLeader {
		t.Fatalf("commit on the old leader: %v %q", st, p)
	}
	m2 := managerOn(t, c, 2, Options{})
	if st, p := handle(t, m2, wire.OpTxnCommit, wire.AppendTxnID(nil, b)); st != wire.StatusInvalidArgument || !bytes.Contains(p, []byte("lost when leadership moved")) {
		t.Fatalf("commit of b on the new leader: %v %q", st, p)
	}
	c.WaitApplied(c.Node(2).Store.AppliedIndex())
	for _, id := range c.IDs() {
		if out, ok, err := c.Node(id).Store.LookupOutcome(a); err != nil || !ok || out.Code != OutcomeCommitted {
			t.Fatalf("node %d: outcome of a: %+v %v %v", id, out, ok, err)
		}
		if _, err := c.Get(id, "b"); !errors.Is(err, engine.ErrNotFound) {
			t.Fatalf("node %d holds the lost transaction's write: %v", id, err)
		}
	}
}

// entry encodes a raft entry of one command in kv's format version 2
// (internal/kv/kv.go: 2 · proposed u64 · uvarint n · op · id u64 ·
// operands).
func entry(index uint64, op byte, id uint64, operands ...[]byte) *pb.Entry {
	d := []byte{2}
	d = binary.LittleEndian.AppendUint64(d, 0)
	d = append(d, 1, op)
	d = binary.LittleEndian.AppendUint64(d, id)
	for _, o := range operands {
		d = binary.AppendUvarint(d, uint64(len(o)))
		d = append(d, o...)
	}
	return &pb.Entry{Index: new(index), Term: new(uint64(1)), Data: d}
}

// crashTxnEntries: setup puts, a transaction commit of many writes (puts
// over existing keys, new keys, deletes), and a put after it.
func crashTxnEntries() (ents []*pb.Entry, txnID uint64, want map[string]string) {
	for i := 0; i < 10; i++ {
		ents = append(ents, entry(uint64(len(ents)+1), 1, uint64(i), []byte(fmt.Sprintf("key%02d", i)), []byte("before")))
	}
	txnID = 1<<32 | 1 // begun in term 1, the entries' term
	c := &commitCmd{txnID: txnID, snapshot: 0, isolation: Serializable}
	want = map[string]string{}
	for i := 0; i < 40; i++ {
		k := fmt.Sprintf("key%02d", i)
		if i%7 == 3 {
			c.writes = append(c.writes, write{kind: wire.TxnOpDelete, key: []byte(k)})
			want[k] = ""
			continue
		}
		v := strings.Repeat(string(rune('a'+i%26)), 2000)
		c.writes = append(c.writes, write{kind: wire.TxnOpPut, key: []byte(k), value: []byte(v)})
		want[k] = v
	}
	c.snapshot = 1 << 62 // after the setup: nothing it writes changed since
	ents = append(ents, entry(uint64(len(ents)+1), OpTxnCommit, 100, encodeCommit(c)))
	ents = append(ents, entry(uint64(len(ents)+1), 1, 101, []byte("after"), []byte("x")))
	return ents, txnID, want
}

// TestCommitAppendedInALaterTermIsLost: a commit entry appended in a later
// raft term than its transaction began in (a deposed leader's queued
// proposal that raft forwarded to the new leader, which meanwhile told a
// retried TXN_COMMIT that the transaction was lost) writes nothing and
// records the outcome "lost", on every replica alike; the same commit in
// its own term commits.
func TestCommitAppendedInALaterTermIsLost(t *testing.T) {
	_, s, err := openStore(vfs.NewMem())
	if err != nil {
		t.Fatal(err)
	}
	lost := &commitCmd{txnID: 3<<32 | 7, snapshot: 1 << 62, isolation: Serializable,
		writes: []write{{kind: wire.TxnOpPut, key: []byte("k"), value: []byte("from a lost transaction")}}}
	late := entry(1, OpTxnCommit, 1, encodeCommit(lost))
	late.Term = new(uint64(4))
	own := &commitCmd{txnID: 4<<32 | 1, snapshot: 1 << 62, isolation: Serializable,
		writes: []write{{kind: wire.TxnOpPut, key: []byte("j"), value: []byte("committed")}}}
	mine := entry(2, OpTxnCommit, 2, encodeCommit(own))
	mine.Term = new(uint64(4))
	if err := s.Apply([]*pb.Entry{late, mine}); err != nil {
		t.Fatal(err)
	}
	if v, err := s.ReadAt([]byte("k"), 0); err == nil {
		t.Fatalf("the late commit wrote k = %q", v.Value)
	}
	if out, found, err := s.LookupOutcome(lost.txnID); err != nil || !found || out.Code != OutcomeLost {
		t.Fatalf("the late commit's outcome: %+v %v %v, want lost", out, found, err)
	}
	if v, err := s.ReadAt([]byte("j"), 0); err != nil || string(v.Value) != "committed" {
		t.Fatalf("the commit in its own term: j = %q, %v", v.Value, err)
	}
	if out, found, err := s.LookupOutcome(own.txnID); err != nil || !found || out.Code != OutcomeCommitted {
		t.Fatalf("the own-term commit's outcome: %+v %v %v", out, found, err)
	}
}

func crashEngineOptions(fs vfs.FS) *engine.Options {
	return &engine.Options{FS: fs, MemTableSize: 64 << 10, WALPreallocateBytes: -1, MaxManifestBytes: 4 << 10}
}

func openStore(fs vfs.FS) (*engine.DB, *kv.Store, error) {
	db, err := engine.Open("/db", crashEngineOptions(fs))
	if err != nil {
		return nil, nil, err
	}
	s, err := kv.Open(kv.Options{NodeID: 1, DB: db, Evaluators: Evaluators()})
	if err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	return db, s, nil
}

// runCrashTxn applies ents in three runs (the setup, the commit, the
// rest) with a flush between them, as a node would.
func runCrashTxn(fs vfs.FS, ents []*pb.Entry) error {
	db, s, err := openStore(fs)
	if err != nil {
		return err
	}
	n := len(ents)
	for _, run := range [][]*pb.Entry{ents[:n-2], ents[n-2 : n-1], ents[n-1:]} {
		if err := s.Apply(run); err != nil {
			_ = db.Close()
			return err
		}
		if err := db.Flush(); err != nil {
			_ = db.Close()
			return err
		}
	}
	return db.Close()
}

// TestCommitCrashAllOrNothing cuts power at every write operation while a
// store applies a transaction commit of 40 writes (about 70 KiB, several
// WAL blocks), then recovers from the simulated disk: the transaction's
// writes and its outcome record are all there or none is, and the
// applied index says which; replaying the entries after it (as raft does)
// then gives the full result. Once keeping only synced data, once keeping
// a random part of the rest (torn writes).
func TestCommitCrashAllOrNothing(t *testing.T) {
	ents, txnID, want := crashTxnEntries()
	commitIndex := uint64(len(ents) - 1)
	var total atomic.Int64
	count := vfs.NewErrorFS(vfs.NewMem(), vfs.InjectorFunc(func(op vfs.Op) error {
		if op.Kind.IsWrite() {
			total.Add(1)
		}
		return nil
	}))
	if err := runCrashTxn(count, ents); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d write operations", total.Load())
	committedSeen, notSeen := 0, 0
	for _, keep := range []float64{0, 0.5} {
		for k := int64(1); k <= total.Load(); k++ {
			mem := vfs.NewMem()
			var ops atomic.Int64
			var clone *vfs.MemFS
			rng := rand.New(rand.NewPCG(uint64(k), 3))
			fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
				if op.Kind.IsWrite() && ops.Add(1) == k {
					clone = mem.CrashClone(vfs.CrashCloneOptions{UnsyncedKeepProbability: keep, Rand: rng})
				}
				return nil
			}))
			if err := runCrashTxn(fs, ents); err != nil {
				t.Fatal(err)
			}
			if clone == nil {
				// Background flushes and compactions make the number of
				// writes vary a little between runs: this one ended
				// before its k-th; cut power after its last.
				clone = mem.CrashClone(vfs.CrashCloneOptions{UnsyncedKeepProbability: keep, Rand: rng})
			}
			what := fmt.Sprintf("crash at write %d (keep %.1f)", k, keep)
			db, s, err := openStore(clone)
			if err != nil {
				t.Fatalf("%s: reopen: %v", what, err)
			}
			check := func(stage string) {
				t.Helper()
				_, found, err := s.LookupOutcome(txnID)
				if err != nil {
					t.Fatalf("%s, %s: outcome: %v", what, stage, err)
				}
				applied := s.AppliedIndex() >= commitIndex
				if found != applied {
					t.Fatalf("%s, %s: applied index %d, outcome recorded %v", what, stage, s.AppliedIndex(), found)
				}
				for k, v := range want {
					got, err := kv.LocalGet(db, []byte(k))
					i := 0
					fmt.Sscanf(k, "key%d", &i)
					switch {
					case applied && v == "":
						if !errors.Is(err, engine.ErrNotFound) {
							t.Fatalf("%s, %s: %s should be deleted: %v", what, stage, k, err)
						}
					case applied:
						if err != nil || string(got) != v {
							t.Fatalf("%s, %s: %s = %.10q %v, want the transaction's value", what, stage, k, got, err)
						}
					case i < 10 && s.AppliedIndex() >= 10:
						if err != nil || string(got) != "before" {
							t.Fatalf("%s, %s: %s = %.10q %v, want the value before the transaction (partly applied?)", what, stage, k, got, err)
						}
					default:
						if !errors.Is(err, engine.ErrNotFound) && string(got) != "before" {
							t.Fatalf("%s, %s: %s = %.10q %v: part of the transaction is there without its outcome", what, stage, k, got, err)
						}
					}
				}
			}
			check("after recovery")
			if s.AppliedIndex() >= commitIndex {
				committedSeen++
			} else {
				notSeen++
			}
			// Raft replays what the engine lost.
			if rest := ents[min(int(s.AppliedIndex()), len(ents)):]; len(rest) > 0 {
				if err := s.Apply(rest); err != nil {
					t.Fatalf("%s: replay: %v", what, err)
				}
			}
			if s.AppliedIndex() != uint64(len(ents)) {
				t.Fatalf("%s: applied %d after the replay", what, s.AppliedIndex())
			}
			check("after the replay")
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if committedSeen == 0 || notSeen == 0 {
		t.Fatalf("the crash points never separated the states: %d with the commit, %d without", committedSeen, notSeen)
	}
}

// TestDiskFullRefusesWritingCommits: with the disk guard refusing writes,
// a commit with writes and a conditional write that writes are refused
// before anything is proposed (the transaction stays open and commits
// once there is room); read-only ones go on.
func TestDiskFullRefusesWritingCommits(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{Nodes: 1, StoreOptions: func(id uint64, o *kv.Options) { o.Evaluators = Evaluators() }})
	c.Elect(1)
	var full atomic.Bool
	full.Store(true)
	m := managerOn(t, c, 1, Options{AdmitWrite: func() error {
		if full.Load() {
			return errors.New("disk full on node 1")
		}
		return nil
	}})
	st, p := handle(t, m, wire.OpTxnBegin, nil)
	id, _, _ := wire.DecodeTxnBeginReply(p)
	if st, p := handle(t, m, wire.OpTxnOp, wire.AppendTxnOp(nil, wire.TxnOp{TxnID: id, Kind: wire.TxnOpPut, Key: []byte("k"), Value: []byte("v")})); st != wire.StatusOK {
		t.Fatalf("put: %v %q", st, p)
	}
	applied := c.Node(1).Store.AppliedIndex()
	if st, p = handle(t, m, wire.OpTxnCommit, wire.AppendTxnID(nil, id)); st != wire.StatusError || !bytes.Contains(p, []byte("disk full")) {
		t.Fatalf("commit on a full disk: %v %q", st, p)
	}
	write := wire.AppendCondTxn(nil, &wire.CondTxn{Then: []wire.CondOp{{Kind: wire.TxnOpPut, Key: []byte("c"), Value: []byte("v")}}})
	if st, p := handle(t, m, wire.OpKayaTxn, write); st != wire.StatusError {
		t.Fatalf("conditional write on a full disk: %v %q", st, p)
	}
	read := wire.AppendCondTxn(nil, &wire.CondTxn{Then: []wire.CondOp{{Kind: wire.TxnOpGet, Key: []byte("c")}}})
	if st, p := handle(t, m, wire.OpKayaTxn, read); st != wire.StatusOK {
		t.Fatalf("read-only conditional write on a full disk: %v %q", st, p)
	}
	if got := c.Node(1).Store.AppliedIndex(); got != applied+1 {
		t.Fatalf("applied %d → %d: only the read-only conditional write should have gone through raft", applied, got)
	}
	full.Store(false)
	if st, p := handle(t, m, wire.OpTxnCommit, wire.AppendTxnID(nil, id)); st != wire.StatusOK {
		t.Fatalf("commit once there is room: %v %q", st, p)
	}
	if v, err := c.Get(1, "k"); err != nil || v != "v" {
		t.Fatalf("k = %q %v", v, err)
	}
}

// TestCommitAfterRefusedWrite: a transaction one of whose writes was
// refused (a conflict with another open transaction's write, the size
// bound) cannot commit the others: a client may pipeline its writes with
// TXN_COMMIT, which must not commit a write set with a hole in it.
func TestCommitAfterRefusedWrite(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{Nodes: 1, StoreOptions: func(id uint64, o *kv.Options) {
		o.Evaluators = Evaluators()
	}})
	c.Elect(1)
	m := managerOn(t, c, 1, Options{MaxBytes: 1 << 10})
	begin := func() uint64 {
		st, p := handle(t, m, wire.OpTxnBegin, nil)
		if st != wire.StatusOK {
			t.Fatalf("begin: %v %q", st, p)
		}
		id, _, _ := wire.DecodeTxnBeginReply(p)
		return id
	}
	put := func(id uint64, k string, v []byte) wire.Status {
		st, _ := handle(t, m, wire.OpTxnOp, wire.AppendTxnOp(nil, wire.TxnOp{TxnID: id, Kind: wire.TxnOpPut, Key: []byte(k), Value: v}))
		return st
	}
	holder := begin()
	if st := put(holder, "held", []byte("h")); st != wire.StatusOK {
		t.Fatalf("put: %v", st)
	}
	// A conflict: the commit answers TXN_CONFLICT and writes nothing.
	a := begin()
	if st := put(a, "held", []byte("a")); st != wire.StatusTxnConflict {
		t.Fatalf("put of a held key: %v, want TXN_CONFLICT", st)
	}
	if st := put(a, "free", []byte("a")); st != wire.StatusOK {
		t.Fatalf("put: %v", st)
	}
	if st, p := handle(t, m, wire.OpTxnCommit, wire.AppendTxnID(nil, a)); st != wire.StatusTxnConflict {
		t.Fatalf("commit after a refused write: %v %q, want TXN_CONFLICT", st, p)
	}
	if _, err := kv.LocalGet(mustDB(c, 1), []byte("free")); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("the transaction with a refused write committed another: %v", err)
	}
	// The size bound: INVALID_ARGUMENT naming the refusal, nothing written.
	b := begin()
	if st := put(b, "small", []byte("b")); st != wire.StatusOK {
		t.Fatalf("put: %v", st)
	}
	if st := put(b, "big", make([]byte, 2<<10)); st != wire.StatusInvalidArgument {
		t.Fatalf("put over --max-txn-bytes: %v", st)
	}
	if st, p := handle(t, m, wire.OpTxnCommit, wire.AppendTxnID(nil, b)); st != wire.StatusInvalidArgument || !strings.Contains(string(p), "writes was refused") {
		t.Fatalf("commit after a refused write: %v %q", st, p)
	}
	if _, err := kv.LocalGet(mustDB(c, 1), []byte("small")); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("the transaction with a refused write committed another: %v", err)
	}
	if m.Open() != 1 {
		t.Fatalf("%d open transactions, want only the holder", m.Open())
	}
	// The holder, whose writes were all taken, commits.
	if st, p := handle(t, m, wire.OpTxnCommit, wire.AppendTxnID(nil, holder)); st != wire.StatusOK {
		t.Fatalf("commit: %v %q", st, p)
	}
}
