package kv

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/vfs"
)

func putEntry(index uint64, key, value string) *pb.Entry {
	data := []byte{1, 1, opPut}
	data = binary.LittleEndian.AppendUint64(data, index)
	data = binary.AppendUvarint(data, uint64(len(key)))
	data = append(data, key...)
	data = binary.AppendUvarint(data, uint64(len(value)))
	data = append(data, value...)
	return &pb.Entry{Index: new(index), Term: new(uint64(1)), Type: new(pb.EntryNormal), Data: data}
}

// TestNoReapplyAfterRestart: entries at or below the recorded applied index
// are skipped when raft hands them out again after a restart, so an older
// write can never overwrite a newer one.
func TestNoReapplyAfterRestart(t *testing.T) {
	fs := vfs.NewMem()
	db, err := engine.Open("/db", &engine.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{NodeID: 1, DB: db})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply([]*pb.Entry{putEntry(5, "k", "old"), putEntry(6, "k", "new")}); err != nil {
		t.Fatal(err)
	}
	if s.AppliedIndex() != 6 {
		t.Fatalf("applied %d", s.AppliedIndex())
	}
	_ = db.Close()
	db, err = engine.Open("/db", &engine.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err = Open(Options{NodeID: 1, DB: db})
	if err != nil {
		t.Fatal(err)
	}
	if s.AppliedIndex() != 6 {
		t.Fatalf("applied index after restart: %d", s.AppliedIndex())
	}
	// Raft re-delivers 5 and 6 (and then 7).
	if err := s.Apply([]*pb.Entry{putEntry(5, "k", "old"), putEntry(6, "k", "new"), putEntry(7, "j", "x")}); err != nil {
		t.Fatal(err)
	}
	if v, _ := LocalGet(db, []byte("k")); string(v) != "new" {
		t.Fatalf("re-applied an old entry: k=%q", v)
	}
	if v, _ := LocalGet(db, []byte("j")); string(v) != "x" || s.AppliedIndex() != 7 {
		t.Fatalf("new entry not applied: j=%q applied=%d", v, s.AppliedIndex())
	}
	// Entries wholly at or below the applied index change nothing.
	if err := s.Apply([]*pb.Entry{putEntry(3, "k", "ancient")}); err != nil {
		t.Fatal(err)
	}
	if v, _ := LocalGet(db, []byte("k")); string(v) != "new" {
		t.Fatalf("k=%q", v)
	}
}

func TestValidateKeyAndCorruptEntry(t *testing.T) {
	if err := ValidateKey([]byte{0, 'a'}); err == nil {
		t.Fatal("reserved key accepted")
	}
	if err := ValidateKey(make([]byte, engine.MaxKeySize+1)); err == nil {
		t.Fatal("oversized key accepted")
	}
	db, err := engine.Open("/db", &engine.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, _ := Open(Options{NodeID: 1, DB: db})
	bad := putEntry(1, "k", "v")
	bad.Data = bad.Data[:len(bad.Data)-2]
	// A committed entry that does not decode is applied as a no-op: the
	// applied index moves on, nothing of it is written, it is counted.
	if err := s.Apply([]*pb.Entry{bad}); err != nil {
		t.Fatalf("a truncated command stopped the state machine: %v", err)
	}
	if _, err := LocalGet(db, []byte("k")); err == nil {
		t.Fatal("part of a bad entry was applied")
	}
	if s.AppliedIndex() != 1 || s.RejectedEntries() != 1 {
		t.Fatalf("applied %d rejected %d, want 1 and 1", s.AppliedIndex(), s.RejectedEntries())
	}
}

// entry builds an entry from raw command bytes: version 1, count n.
func entry(index uint64, n uint64, cmds ...[]byte) *pb.Entry {
	data := []byte{1}
	data = binary.AppendUvarint(data, n)
	for _, c := range cmds {
		data = append(data, c...)
	}
	return &pb.Entry{Index: new(index), Term: new(uint64(1)), Type: new(pb.EntryNormal), Data: data}
}

func cmd(op byte, id uint64, key, value string, withValue bool) []byte {
	c := []byte{op}
	c = binary.LittleEndian.AppendUint64(c, id)
	c = binary.AppendUvarint(c, uint64(len(key)))
	c = append(c, key...)
	if withValue {
		c = binary.AppendUvarint(c, uint64(len(value)))
		c = append(c, value...)
	}
	return c
}

// TestInvalidEntriesAreNoOps: every kind of invalid entry is applied as a
// no-op, whole: a valid command before the bad one in the same entry is not
// applied either (replicas must not differ by how far they got), valid
// entries around it in the same run are applied, and a waiting proposer
// whose id the entry carries gets ErrRejectedEntry.
func TestInvalidEntriesAreNoOps(t *testing.T) {
	good := cmd(opPut, 1, "first", "1", true)
	cases := map[string]*pb.Entry{
		"version":        {Data: []byte{2, 1}},
		"count zero":     entry(0, 0),
		"count too big":  entry(0, 1000, good),
		"unknown op":     entry(0, 2, good, cmd(9, 7, "k", "", false)),
		"system key":     entry(0, 2, good, cmd(opPut, 7, "\x00raft/applied", "0123456789abcdef", true)),
		"key too long":   entry(0, 2, good, cmd(opDelete, 7, string(make([]byte, engine.MaxKeySize+1)), "", false)),
		"truncated":      entry(0, 2, good, cmd(opPut, 7, "k", "v", true)[:12]),
		"trailing bytes": entry(0, 1, good, []byte{0xff}),
		"no value":       entry(0, 1, cmd(opPut, 7, "k", "", false)),
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			db, err := engine.Open("/db", &engine.Options{FS: vfs.NewMem()})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			s, _ := Open(Options{NodeID: 1, DB: db})
			ch := make(chan Result, 1)
			s.waiters[7] = waiter{ch: ch}
			bad.Index, bad.Term, bad.Type = new(uint64(2)), new(uint64(1)), new(pb.EntryNormal)
			if err := s.Apply([]*pb.Entry{putEntry(1, "a", "1"), bad, putEntry(3, "b", "2")}); err != nil {
				t.Fatalf("an invalid entry stopped the state machine: %v", err)
			}
			if _, err := LocalGet(db, []byte("first")); err == nil {
				t.Fatal("a command of the invalid entry was applied")
			}
			if v, _ := LocalGet(db, []byte("b")); string(v) != "2" {
				t.Fatal("the entry after the invalid one was not applied")
			}
			if v, _ := LocalGet(db, []byte("a")); string(v) != "1" {
				t.Fatal("the entry before the invalid one was not applied")
			}
			if s.AppliedIndex() != 3 || s.RejectedEntries() != 1 {
				t.Fatalf("applied %d rejected %d, want 3 and 1", s.AppliedIndex(), s.RejectedEntries())
			}
			if idx, _, _ := ReadApplied(db); idx != 3 {
				t.Fatalf("recorded applied index %d", idx)
			}
			switch name {
			case "unknown op", "system key", "key too long", "truncated", "no value":
				select {
				case r := <-ch:
					if !errors.Is(r.err, ErrRejectedEntry) {
						t.Fatalf("proposer got %v", r.err)
					}
				default:
					t.Fatal("the proposer of the rejected command was not told")
				}
			}
		})
	}
}

func TestPrefixEnd(t *testing.T) {
	cases := map[string]string{"": "", "a": "b", "a\xff": "b", "\xff\xff": "", "ab": "ac"}
	for in, want := range cases {
		if got := string(prefixEnd([]byte(in))); got != want {
			t.Errorf("prefixEnd(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCheckpointCarriesRaftState: a checkpoint is a raft snapshot: it holds
// the applied index and term, the configuration and the roster as of that
// index, and replacing the engine with it moves the applied index.
func TestCheckpointCarriesRaftState(t *testing.T) {
	fs := vfs.NewMem()
	db, err := engine.Open("/db", &engine.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	roster := []byte(`{"members":[{"id":1},{"id":2}]}`)
	s, err := Open(Options{NodeID: 1, DB: db, OnConfChange: func(*pb.Entry, pb.ConfChangeI, *pb.ConfState) ([]byte, error) {
		return roster, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply([]*pb.Entry{putEntry(1, "a", "1"), putEntry(2, "b", "2")}); err != nil {
		t.Fatal(err)
	}
	cc := &pb.ConfChange{Type: new(pb.ConfChangeAddNode), NodeId: new(uint64(2))}
	cs := &pb.ConfState{Voters: []uint64{1, 2}}
	if err := s.ApplyConfChange(&pb.Entry{Index: new(uint64(3)), Term: new(uint64(2)), Type: new(pb.EntryConfChange)}, cc, cs); err != nil {
		t.Fatal(err)
	}
	st, err := s.Checkpoint("/ckpt")
	if err != nil {
		t.Fatal(err)
	}
	if st.Index != 3 || st.Term != 2 || len(st.ConfState.GetVoters()) != 2 || string(st.Roster) != string(roster) {
		t.Fatalf("checkpoint state: %+v roster %s", st, st.Roster)
	}
	// Later entries are not in the checkpoint.
	if err := s.Apply([]*pb.Entry{putEntry(4, "c", "3")}); err != nil {
		t.Fatal(err)
	}
	if st2, err := ReadCheckpoint("/ckpt", db.Options()); err != nil || st2.Index != 3 {
		t.Fatalf("re-reading the checkpoint: %+v %v", st2, err)
	}

	// A second store, far behind, takes the checkpoint over.
	other, err := engine.Open("/other", &engine.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := Open(Options{NodeID: 2, DB: other})
	if err != nil {
		t.Fatal(err)
	}
	err = s2.ReplaceDB(func(old *engine.DB) (*engine.DB, error) {
		if err := old.Close(); err != nil {
			return nil, err
		}
		return engine.Open("/ckpt", &engine.Options{FS: fs})
	})
	if err != nil {
		t.Fatal(err)
	}
	if s2.AppliedIndex() != 3 {
		t.Fatalf("applied index after ReplaceDB: %d", s2.AppliedIndex())
	}
	_ = s2.DB(func(d *engine.DB) error {
		if v, err := LocalGet(d, []byte("b")); err != nil || string(v) != "2" {
			t.Fatalf("b=%q %v", v, err)
		}
		if _, err := LocalGet(d, []byte("c")); err == nil {
			t.Fatal("the checkpoint holds an entry applied after it")
		}
		return d.Close()
	})
	_ = db.Close()
}

// TestStepDownFailsOnlyEarlierWrites: a step-down seen in term T fails the
// writes proposed in T or before (their outcome is unknown), not those a
// later term's leadership proposed; the node's stop fails every one.
func TestStepDownFailsOnlyEarlierWrites(t *testing.T) {
	s := openMemStore(t, vfs.NewMem(), "/db", Options{NodeID: 1})
	chs := map[uint64]chan Result{}
	for id, term := range map[uint64]uint64{1: 4, 2: 5, 3: 6} {
		chs[id] = make(chan Result, 1)
		s.waiters[id] = waiter{ch: chs[id], term: term}
	}
	s.LeadershipChanged(2, 5, false)
	for id, want := range map[uint64]bool{1: true, 2: true, 3: false} {
		select {
		case r := <-chs[id]:
			if !want || !errors.Is(r.err, ErrLeadershipLost) {
				t.Fatalf("waiter %d: %v; want failed: %v", id, r.err, want)
			}
		default:
			if want {
				t.Fatalf("waiter %d (proposed in term %d or before) not failed", id, 5)
			}
		}
	}
	s.LeadershipChanged(1, 7, true) // leading: nothing to fail
	if len(s.waiters) != 1 {
		t.Fatalf("%d waiters left, want 1", len(s.waiters))
	}
	s.failWaiters(ErrStopped, math.MaxUint64)
	if r := <-chs[3]; !errors.Is(r.err, ErrStopped) {
		t.Fatalf("waiter 3 at stop: %v", r.err)
	}
}

// TestCallbackWaiters: a write whose result goes to a callback
// (StartPutFunc) learns it exactly once, from whichever settles it first:
// a step-down of its term, its deadline passing (the timeout sweep), or
// the node's stop; the callback count follows.
func TestCallbackWaiters(t *testing.T) {
	db, err := engine.Open("/db", &engine.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := Open(Options{NodeID: 1, DB: db})
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint64][]error{}
	add := func(id, term uint64, deadline int64) {
		s.waiters[id] = waiter{term: term, deadline: deadline, fn: func(r Result) { got[id] = append(got[id], r.err) }}
		s.callbacks++
	}
	const far = math.MaxInt64
	add(1, 4, far) // failed by the step-down of term 5
	add(2, 6, 100) // expires at 100
	add(3, 6, far) // left for the stop
	add(4, 6, 200) // expires at 200: not yet at 150
	s.LeadershipChanged(2, 5, false)
	s.expireCallbacks(150)
	if len(got) != 2 || len(got[1]) != 1 || !errors.Is(got[1][0], ErrLeadershipLost) ||
		len(got[2]) != 1 || !errors.Is(got[2][0], ErrTimeout) {
		t.Fatalf("after the step-down and the sweep at 150: %v", got)
	}
	if s.callbacks != 2 || len(s.waiters) != 2 {
		t.Fatalf("%d callbacks, %d waiters left; want 2, 2", s.callbacks, len(s.waiters))
	}
	s.failWaiters(ErrStopped, math.MaxUint64)
	s.expireCallbacks(far) // nothing left to fire twice
	if len(got[3]) != 1 || !errors.Is(got[3][0], ErrStopped) || len(got[4]) != 1 || !errors.Is(got[4][0], ErrStopped) {
		t.Fatalf("at stop: %v", got)
	}
	if s.callbacks != 0 || len(s.waiters) != 0 {
		t.Fatalf("%d callbacks, %d waiters left after stop", s.callbacks, len(s.waiters))
	}
	// A write that the apply completes: its callback has the result.
	var res []Result
	s.waiters[9] = waiter{fn: func(r Result) { res = append(res, r) }, deadline: far}
	s.callbacks++
	if err := s.Apply([]*pb.Entry{putEntry(9, "k", "v")}); err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].err != nil || res[0].TS == 0 || s.callbacks != 0 {
		t.Fatalf("applied write: %+v, %d callbacks left", res, s.callbacks)
	}
}

// TestEarlyAcks: a put or delete whose proposer asked for it (waiter.early)
// is answered at the start of its run, before the engine has it; a
// waiter that did not ask, an entry holding a command the apply may still
// reject, and an entry of an earlier term than the waiter's (its id handed
// out again after a restart) are not. The last is not completed by the
// apply either.
func TestEarlyAcks(t *testing.T) {
	s := openMemStore(t, vfs.NewMem(), "/db", Options{NodeID: 1})
	db := s.db
	type seen struct {
		err     error
		inDB    bool
		applied uint64
	}
	got := map[uint64][]seen{}
	add := func(id, term uint64, early bool, key string) {
		s.waiters[id] = waiter{term: term, early: early, deadline: math.MaxInt64, fn: func(r Result) {
			_, gerr := LocalGet(db, []byte(key))
			got[id] = append(got[id], seen{r.err, gerr == nil, s.AppliedIndex()})
		}}
		s.callbacks++
	}
	at := func(e *pb.Entry, index, term uint64) *pb.Entry {
		e.Index, e.Term = new(index), new(term)
		return e
	}
	add(1, 1, true, "a")  // a put: answered early
	add(2, 1, false, "b") // did not ask: answered after the apply
	add(3, 1, true, "c")  // its entry holds an unknown operation too: rejected
	add(4, 2, true, "d")  // an earlier term's entry with its id
	add(5, 1, true, "a")  // a delete of a: answered early
	ents := []*pb.Entry{
		at(entry(0, 1, cmd(opPut, 1, "a", "1", true)), 1, 1),
		at(entry(0, 1, cmd(opPut, 2, "b", "1", true)), 2, 1),
		at(entry(0, 2, cmd(opPut, 3, "c", "1", true), cmd(9, 8, "k", "", false)), 3, 1),
		at(entry(0, 1, cmd(opPut, 4, "d", "1", true)), 4, 1),
		at(entry(0, 1, cmd(opDelete, 5, "a", "", false)), 5, 1),
	}
	if err := s.Apply(ents); err != nil {
		t.Fatal(err)
	}
	want := map[uint64]seen{
		1: {nil, false, 0},
		2: {nil, true, 5},
		5: {nil, false, 0},
	}
	for id, w := range want {
		if len(got[id]) != 1 || got[id][0] != w {
			t.Errorf("waiter %d: %+v, want once %+v", id, got[id], w)
		}
	}
	if len(got[3]) != 1 || !errors.Is(got[3][0].err, ErrRejectedEntry) {
		t.Errorf("waiter 3 (rejected entry): %+v", got[3])
	}
	if len(got[4]) != 0 {
		t.Errorf("waiter 4 was completed by an earlier term's entry with its id: %+v", got[4])
	}
	if _, ok := s.waiters[4]; !ok || s.callbacks != 1 || len(s.waiters) != 1 {
		t.Errorf("%d waiters, %d callbacks left; want waiter 4 alone", len(s.waiters), s.callbacks)
	}
	if v, _ := LocalGet(db, []byte("d")); string(v) != "1" || s.AppliedIndex() != 5 {
		t.Errorf("d = %q, applied %d: the run was not applied whole", v, s.AppliedIndex())
	}
}
