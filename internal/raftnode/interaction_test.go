package raftnode

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/kayadb/kayadb/internal/vfs"
)

// TestInteraction runs the scripts in testdata/interaction: deterministic
// interactions with the node loop (see env_test.go), in the style of
// go.etcd.io/raft's interaction tests. Regenerate the expected output with
// -rewrite after checking what changed.
//
// Commands:
//
//	start n=3                  bootstrap nodes 1..n
//	join id=4                  start a node with no configuration (--join)
//	campaign id=1              make id campaign (then deliver)
//	tick id=1 [n=1]            n ticks of id's clock
//	deliver [rounds=N]         deliver messages one at a time until none is left
//	propose id=1 data=x        propose data on id
//	add-learner id=1 node=4    propose adding a learner
//	snapshot id=1 index=N      record a snapshot at N on id and compact its log
//	cut id=2 / heal id=2       lose every message to and from id / stop losing
//	fail-save id=2 [off]       id's log Save fails with ENOSPC (or works again)
//	fail-apply id=1 n=1        id's next n Apply calls fail with ENOSPC
//	inject id=1 type=... ...   a message from the network (see forged)
//	status                     every node's published state
//	screened id=1              id's screening counters (non-zero)
//	applies id=1               how often each index was applied on id
//	stalls id=1                id's OnStall calls
//
// Every script runs with asynchronous storage writes (the default) and with
// Config.SyncStorageWrites; a script whose name ends in .async or .sync
// runs in that mode only (where the modes differ on purpose: with
// asynchronous writes a follower whose disk is full still answers
// heartbeats).
func TestInteraction(t *testing.T) {
	for _, mode := range []string{"async", "sync"} {
		t.Run(mode, func(t *testing.T) {
			datadriven.Walk(t, "testdata/interaction", func(t *testing.T, path string) {
				if (strings.HasSuffix(path, ".sync") && mode != "sync") || (strings.HasSuffix(path, ".async") && mode != "async") {
					t.Skip("for the other mode")
				}
				e := newTestEnv(t)
				e.sync = mode == "sync"
				datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
					return e.run(t, d)
				})
			})
		})
	}
}

func argU(t *testing.T, d *datadriven.TestData, key string, def uint64) uint64 {
	for _, a := range d.CmdArgs {
		if a.Key == key {
			v, err := strconv.ParseUint(a.Vals[0], 10, 64)
			if err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			return v
		}
	}
	return def
}

func argS(d *datadriven.TestData, key, def string) string {
	for _, a := range d.CmdArgs {
		if a.Key == key {
			if len(a.Vals) == 0 {
				return ""
			}
			return a.Vals[0]
		}
	}
	return def
}

func (e *testEnv) run(t *testing.T, d *datadriven.TestData) string {
	id := argU(t, d, "id", 1)
	switch d.Cmd {
	case "start":
		k := argU(t, d, "n", 3)
		var peers []uint64
		for i := uint64(1); i <= k; i++ {
			peers = append(peers, i)
		}
		for _, p := range peers {
			e.addNode(p, peers)
		}
		return e.status()
	case "join":
		e.addNode(id, nil)
		return e.status()
	case "campaign":
		e.nodes[id].n.Campaign()
		e.waitIdle(id)
		return "ok\n"
	case "tick":
		e.tick(id, int(argU(t, d, "n", 1)))
		return "ok\n"
	case "deliver":
		return e.deliver(int(argU(t, d, "rounds", 0)))
	case "propose":
		e.propose(id, argS(d, "data", "x"))
		return "ok\n"
	case "add-learner":
		cc := &pb.ConfChange{Type: pb.ConfChangeAddLearnerNode.Enum(), NodeId: new(argU(t, d, "node", 0))}
		if err := e.nodes[id].n.ProposeConfChange(t.Context(), cc); err != nil {
			return err.Error() + "\n"
		}
		e.waitIdle(id)
		return "ok\n"
	case "snapshot":
		idx := argU(t, d, "index", 0)
		n := e.nodes[id].n
		e.onLoop(id, func() {
			term, _ := n.cfg.Log.Term(idx)
			n.statusMu.Lock()
			cs := &pb.ConfState{Voters: n.voters, Learners: n.learners}
			n.statusMu.Unlock()
			n.snapshotDone(&pb.SnapshotMetadata{Index: new(idx), Term: new(term), ConfState: cs}, nil)
		})
		first, _ := e.nodes[id].st.FirstIndex()
		return fmt.Sprintf("log of %d starts at %d\n", id, first)
	case "cut":
		e.cut[id] = true
		return "ok\n"
	case "heal":
		delete(e.cut, id)
		return "ok\n"
	case "fail-save":
		if d.HasArg("off") {
			e.nodes[id].st.setFail(nil)
		} else {
			e.nodes[id].st.setFail(fmt.Errorf("raftlog: writing segment: %w", vfs.ErrNoSpace))
		}
		return "ok\n"
	case "fail-apply":
		sm := e.nodes[id].sm
		sm.mu.Lock()
		for i := uint64(0); i < argU(t, d, "n", 1); i++ {
			sm.failApply = append(sm.failApply, fmt.Errorf("engine: %w", vfs.ErrNoSpace))
		}
		sm.mu.Unlock()
		return "ok\n"
	case "inject":
		m := forged(t, d, id)
		if d.HasArg("stream") {
			e.nodes[id].n.DeliverSnapshot(m)
		} else {
			e.nodes[id].n.Receive(m)
		}
		e.waitIdle(id)
		return describe(m) + "\n"
	case "status":
		return e.status()
	case "screened":
		var lines []string
		for r, c := range e.nodes[id].n.ScreenStats() {
			if c > 0 {
				lines = append(lines, fmt.Sprintf("%s=%d", r, c))
			}
		}
		sort.Strings(lines)
		if len(lines) == 0 {
			return "none\n"
		}
		return strings.Join(lines, "\n") + "\n"
	case "applies":
		sm := e.nodes[id].sm
		sm.mu.Lock()
		defer sm.mu.Unlock()
		var idx []uint64
		for i := range sm.applies {
			idx = append(idx, i)
		}
		sort.Slice(idx, func(i, j int) bool { return idx[i] < idx[j] })
		var b strings.Builder
		for _, i := range idx {
			fmt.Fprintf(&b, "%d:%d ", i, sm.applies[i])
		}
		return strings.TrimSpace(b.String()) + "\n"
	case "stalls":
		tn := e.nodes[id]
		tn.stallMu.Lock()
		defer tn.stallMu.Unlock()
		episodes, retries := tn.n.StallCounts()
		return fmt.Sprintf("%s\nepisodes=%d failed-retries=%d\n", strings.Join(tn.stalls, "\n"), episodes, retries)
	}
	t.Fatalf("unknown command %q", d.Cmd)
	return ""
}

// forged builds a message from inject's arguments: type, from, to (default
// id), term, logterm, index, commit, reject, hint, ctx (a length),
// entries (term/index,...), snap (index/term/voter+voter/learner+...),
// prop (entry kinds: data, cc, badcc).
func forged(t *testing.T, d *datadriven.TestData, id uint64) *pb.Message {
	typ, ok := pb.MessageType_value[argS(d, "type", "")]
	if !ok {
		if v, err := strconv.Atoi(argS(d, "type", "")); err == nil {
			typ = int32(v)
		} else {
			t.Fatalf("unknown type %q", argS(d, "type", ""))
		}
	}
	m := &pb.Message{Type: pb.MessageType(typ).Enum(), From: new(argU(t, d, "from", 2)), To: new(argU(t, d, "to", id)),
		Term: new(argU(t, d, "term", 0)), LogTerm: new(argU(t, d, "logterm", 0)), Index: new(argU(t, d, "index", 0)),
		Commit: new(argU(t, d, "commit", 0))}
	if d.HasArg("reject") {
		m.Reject = new(true)
		m.RejectHint = new(argU(t, d, "hint", 0))
	}
	if k := argU(t, d, "ctx", 0); k > 0 {
		m.Context = make([]byte, k)
	}
	if s := argS(d, "entries", ""); s != "" {
		for _, ti := range strings.Split(s, ",") {
			a, b, _ := strings.Cut(ti, "/")
			term, _ := strconv.ParseUint(a, 10, 64)
			idx, _ := strconv.ParseUint(b, 10, 64)
			m.Entries = append(m.Entries, &pb.Entry{Term: new(term), Index: new(idx), Type: pb.EntryNormal.Enum()})
		}
	}
	if s := argS(d, "prop", ""); s != "" {
		for _, kind := range strings.Split(s, ",") {
			switch kind {
			case "data":
				m.Entries = append(m.Entries, &pb.Entry{Data: []byte("forged")})
			case "badcc":
				m.Entries = append(m.Entries, &pb.Entry{Type: pb.EntryConfChange.Enum(), Data: []byte{0xff, 0xff}})
			case "cc":
				b, _ := proto.Marshal(&pb.ConfChange{Type: pb.ConfChangeRemoveNode.Enum(), NodeId: new(uint64(3))})
				m.Entries = append(m.Entries, &pb.Entry{Type: pb.EntryConfChange.Enum(), Data: b})
			}
		}
	}
	if s := argS(d, "snap", ""); s != "" {
		parts := strings.Split(s, "/")
		idx, _ := strconv.ParseUint(parts[0], 10, 64)
		term, _ := strconv.ParseUint(parts[1], 10, 64)
		cs := &pb.ConfState{}
		if len(parts) > 2 {
			for _, v := range strings.Split(parts[2], "+") {
				x, _ := strconv.ParseUint(v, 10, 64)
				cs.Voters = append(cs.Voters, x)
			}
		}
		if len(parts) > 3 {
			for _, v := range strings.Split(parts[3], "+") {
				x, _ := strconv.ParseUint(v, 10, 64)
				cs.Learners = append(cs.Learners, x)
			}
		}
		m.Snapshot = &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(idx), Term: new(term), ConfState: cs}}
	}
	_ = raft.None
	return m
}
