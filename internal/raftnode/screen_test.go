package raftnode

import (
	"fmt"
	"testing"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// bareCluster is three RawNodes over MemoryStorage, without this package's
// node loop (and so without screening): what go.etcd.io/raft does with a
// message on its own.
type bareCluster struct {
	rns  map[uint64]*raft.RawNode
	stor map[uint64]*raft.MemoryStorage
}

func newBareCluster(t *testing.T) *bareCluster {
	c := &bareCluster{rns: map[uint64]*raft.RawNode{}, stor: map[uint64]*raft.MemoryStorage{}}
	for id := uint64(1); id <= 3; id++ {
		st := raft.NewMemoryStorage()
		rn, err := raft.NewRawNode(&raft.Config{ID: id, ElectionTick: 10, HeartbeatTick: 1, Storage: st,
			MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 256, CheckQuorum: true, PreVote: true,
			ReadOnlyOption: raft.ReadOnlySafe, Logger: &raftLogger{log: discardLogger()}})
		if err != nil {
			t.Fatal(err)
		}
		if err := rn.Bootstrap([]raft.Peer{{ID: 1}, {ID: 2}, {ID: 3}}); err != nil {
			t.Fatal(err)
		}
		c.rns[id], c.stor[id] = rn, st
	}
	c.stabilize() // apply the bootstrap configuration before campaigning
	if err := c.rns[1].Campaign(); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	if c.rns[1].Status().RaftState != raft.StateLeader {
		t.Fatal("bare node 1 did not become leader")
	}
	return c
}

// stabilize handles every Ready and delivers every message until quiet.
func (c *bareCluster) stabilize() {
	for busy := true; busy; {
		busy = false
		for id := uint64(1); id <= 3; id++ {
			rn := c.rns[id]
			for rn.HasReady() {
				busy = true
				rd := rn.Ready()
				if !raft.IsEmptySnap(rd.Snapshot) {
					_ = c.stor[id].ApplySnapshot(rd.Snapshot)
				}
				if rd.HardState != nil && !raft.IsEmptyHardState(rd.HardState) {
					_ = c.stor[id].SetHardState(rd.HardState)
				}
				_ = c.stor[id].Append(rd.Entries)
				for _, e := range rd.CommittedEntries {
					if e.GetType() == pb.EntryConfChange {
						var cc pb.ConfChange
						_ = proto.Unmarshal(e.GetData(), &cc)
						rn.ApplyConfChange(&cc)
					}
				}
				for _, m := range rd.Messages {
					if dst := c.rns[m.GetTo()]; dst != nil {
						_ = dst.Step(m)
					}
				}
				rn.Advance(rd)
			}
		}
	}
}

// panics steps m into bare node id, then lets the cluster run, and reports
// the panic, if any.
func (c *bareCluster) panics(id uint64, m *pb.Message) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			msg = fmt.Sprint(r)
		}
	}()
	_ = c.rns[id].Step(m)
	c.stabilize()
	return ""
}

// forgedCase is one message that screening must drop. Messages go to node 1
// (the leader) unless to says otherwise.
type forgedCase struct {
	name   string
	reason ScreenReason
	to     uint64
	m      func(term uint64) *pb.Message
	stream bool // delivered as the end of a snapshot stream
	// panics: the bare raft library panics on it (the test shows it).
	panics bool
}

func msgOf(t pb.MessageType, from, to, term uint64) *pb.Message {
	return &pb.Message{Type: t.Enum(), From: new(from), To: new(to), Term: new(term)}
}

func forgedCases() []forgedCase {
	return []forgedCase{
		{name: "append response beyond the log", reason: ScreenAckBeyondLog, panics: true, m: func(term uint64) *pb.Message {
			m := msgOf(pb.MsgAppResp, 2, 1, term)
			m.Index = new(uint64(1000))
			return m
		}},
		// (In StateReplicate the leader ignores it; in StateProbe it moves
		// Next past its log, as above.)
		{name: "rejection hinting beyond the log", reason: ScreenAckBeyondLog, m: func(term uint64) *pb.Message {
			m := msgOf(pb.MsgAppResp, 2, 1, term)
			m.Index, m.Reject, m.RejectHint = new(uint64(1000)), new(true), new(uint64(999))
			return m
		}},
		{name: "heartbeat commit beyond the log", reason: ScreenCommitBeyondLog, to: 2, panics: true, m: func(term uint64) *pb.Message {
			m := msgOf(pb.MsgHeartbeat, 1, 2, term)
			m.Commit = new(uint64(1000))
			return m
		}},
		{name: "heartbeat response with a short context", reason: ScreenBadHeartbeatContext, panics: true, m: func(term uint64) *pb.Message {
			m := msgOf(pb.MsgHeartbeatResp, 2, 1, term)
			m.Context = []byte{1, 2, 3}
			return m
		}},
		{name: "heartbeat with a short context (echoed to the leader)", reason: ScreenBadHeartbeatContext, to: 2, panics: true, m: func(term uint64) *pb.Message {
			m := msgOf(pb.MsgHeartbeat, 1, 2, term)
			m.Context = []byte{1}
			return m
		}},
		{name: "append whose entries skip an index", reason: ScreenBadAppend, to: 2, panics: true, m: func(term uint64) *pb.Message {
			// The entries claim to start at 2 (committed) after Index 4.
			m := msgOf(pb.MsgApp, 1, 2, term)
			m.Index, m.LogTerm = new(uint64(4)), new(term)
			m.Entries = []*pb.Entry{{Index: new(uint64(2)), Term: new(term + 1)}}
			return m
		}},
		{name: "append whose entry term exceeds the message's", reason: ScreenBadAppend, to: 2, m: func(term uint64) *pb.Message {
			m := msgOf(pb.MsgApp, 1, 2, term)
			m.Index, m.LogTerm = new(uint64(4)), new(term)
			m.Entries = []*pb.Entry{{Index: new(uint64(5)), Term: new(term + 5)}}
			return m
		}},
		{name: "empty proposal", reason: ScreenBadProposal, panics: true, m: func(term uint64) *pb.Message {
			return msgOf(pb.MsgProp, 2, 1, 0)
		}},
		{name: "proposal of a conf change that does not decode", reason: ScreenBadProposal, panics: true, m: func(term uint64) *pb.Message {
			m := msgOf(pb.MsgProp, 2, 1, 0)
			m.Entries = []*pb.Entry{{Type: pb.EntryConfChange.Enum(), Data: []byte{0xff, 0xff}}}
			return m
		}},
		{name: "storage apply response from raft's local thread id", reason: ScreenLocalType, panics: true, m: func(term uint64) *pb.Message {
			m := msgOf(pb.MsgStorageApplyResp, raft.LocalApplyThread, 1, term)
			m.Entries = []*pb.Entry{{Index: new(uint64(1000)), Term: new(term)}}
			return m
		}},
		{name: "MsgHup from the network", reason: ScreenLocalType, to: 2, m: func(term uint64) *pb.Message {
			return msgOf(pb.MsgHup, 3, 2, 0)
		}},
		{name: "read index from id 0", reason: ScreenBadSender, panics: true, m: func(term uint64) *pb.Message {
			return msgOf(pb.MsgReadIndex, 0, 1, 0)
		}},
		{name: "append response from the leader itself", reason: ScreenBadSender, m: func(term uint64) *pb.Message {
			m := msgOf(pb.MsgAppResp, 1, 1, term)
			m.Index = new(uint64(3))
			return m
		}},
		{name: "vote request from a non-member", reason: ScreenNotMember, to: 2, m: func(term uint64) *pb.Message {
			m := msgOf(pb.MsgPreVote, 9, 2, term+1)
			m.Index, m.LogTerm = new(uint64(100)), new(term)
			return m
		}},
		{name: "append at term 0", reason: ScreenZeroTerm, to: 2, m: func(term uint64) *pb.Message {
			m := msgOf(pb.MsgApp, 1, 2, 0)
			m.Index, m.LogTerm = new(uint64(4)), new(term)
			m.Entries = []*pb.Entry{{Index: new(uint64(5)), Term: new(term), Data: []byte("forged")}}
			return m
		}},
		{name: "proposal with a term, to a follower", reason: ScreenBadForward, to: 2, panics: true, m: func(term uint64) *pb.Message {
			m := msgOf(pb.MsgProp, 3, 2, term)
			m.Entries = []*pb.Entry{{Data: []byte("x")}}
			return m
		}},
		{name: "read index with a term, to a follower", reason: ScreenBadForward, to: 2, panics: true, m: func(term uint64) *pb.Message {
			m := msgOf(pb.MsgReadIndex, 3, 2, term)
			m.Entries = []*pb.Entry{{Data: []byte("x")}}
			return m
		}},
		{name: "leadership transfer to a follower", reason: ScreenBadForward, to: 2, panics: true, m: func(term uint64) *pb.Message {
			return msgOf(pb.MsgTransferLeader, 3, 2, term)
		}},
		{name: "unknown message type", reason: ScreenUnknownType, m: func(term uint64) *pb.Message {
			return msgOf(pb.MessageType(99), 2, 1, term)
		}},
		{name: "snapshot as a message frame", reason: ScreenSnapshotOutsideStream, to: 2, m: func(term uint64) *pb.Message {
			m := msgOf(pb.MsgSnap, 1, 2, term)
			m.Snapshot = &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(uint64(100)), Term: new(term), ConfState: &pb.ConfState{Voters: []uint64{1, 2, 3}}}}
			return m
		}},
		{name: "snapshot whose configuration cannot be restored", reason: ScreenBadSnapshot, to: 2, stream: true, panics: true, m: func(term uint64) *pb.Message {
			m := msgOf(pb.MsgSnap, 1, 2, term)
			m.Snapshot = &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(uint64(100)), Term: new(term),
				ConfState: &pb.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{2}}}}
			return m
		}},
		{name: "snapshot without metadata", reason: ScreenBadSnapshot, to: 2, stream: true, m: func(term uint64) *pb.Message {
			return msgOf(pb.MsgSnap, 1, 2, term)
		}},
	}
}

// TestScreening: for every forged message, the bare raft library panics on
// it (where it does: shown on a bare RawNode under recover), while the
// node drops it before raft, counts it under its reason, stays up, and
// the cluster still commits and applies a proposal afterwards.
func TestScreening(t *testing.T) {
	for _, tc := range forgedCases() {
		t.Run(tc.name, func(t *testing.T) {
			to := tc.to
			if to == 0 {
				to = 1
			}
			if tc.panics {
				bare := newBareCluster(t)
				term := bare.rns[1].BasicStatus().GetTerm()
				if p := bare.panics(to, tc.m(term)); p == "" {
					t.Fatalf("the bare raft library did not panic on %s", describe(tc.m(term)))
				} else {
					t.Logf("bare raft panics: %s", p)
				}
			}
			e := startLeader1(t)
			term := e.nodes[1].n.Term()
			m := tc.m(term)
			if tc.stream {
				e.nodes[to].n.DeliverSnapshot(m)
			} else {
				e.nodes[to].n.Receive(m)
			}
			e.waitIdle(to)
			e.deliver(0)
			if got := e.nodes[to].n.ScreenStats()[tc.reason]; got != 1 {
				t.Fatalf("%s: counted %d under %s, want 1 (all: %v)", describe(m), got, tc.reason, e.nodes[to].n.ScreenStats())
			}
			e.propose(1, "after")
			e.deliver(0)
			e.tick(1, 1)
			e.deliver(0)
			for id := uint64(1); id <= 3; id++ {
				n := e.nodes[id].n
				select {
				case <-n.Done():
					t.Fatalf("node %d stopped: %v", id, n.Err())
				default:
				}
				_, data := e.nodes[id].sm.state()
				if len(data) != 1 || data[0] != "5:after" {
					t.Fatalf("node %d applied %v after the forged message, want [5:after]\n%s", id, data, e.status())
				}
				if n.Term() != term || n.Leader() != 1 {
					t.Fatalf("node %d: term %d leader %d, want %d and 1", id, n.Term(), n.Leader(), term)
				}
			}
		})
	}
}
