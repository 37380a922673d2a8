package clustertest_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/kayadb/kayadb/internal/clustertest"
	"github.com/kayadb/kayadb/internal/kv"
)

// Input layout of FuzzRaftPort:
//
//	target u8 (node target%3+1) | flags u8 | protobuf raftpb.Message
//
// flags bit 0 sets From to another member (the next id after the target,
// or the one after that when bit 4 is set), bit 1
// sets To to the target, bit 2 sets Term to the target's current term:
// without them most random messages die at the first checks, with them
// they reach the deeper ones.
func fuzzInput(target byte, flags byte, m *pb.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return append([]byte{target, flags}, b...)
}

func msg(t pb.MessageType, from, to, term uint64) *pb.Message {
	return &pb.Message{Type: t.Enum(), From: new(from), To: new(to), Term: new(term)}
}

// seeds are the forged messages of the screening tests (internal/raftnode
// screen_test.go) and an undecodable command proposed by a "member"
// (internal/kv cluster_test.go), aimed at a leader (node 1) or a follower.
func seeds() map[string][]byte {
	const all = 1 | 2 | 4
	garbage := []byte{1, 1, 77}
	garbage = binary.LittleEndian.AppendUint64(garbage, 5)
	s := map[string][]byte{}
	add := func(name string, target, flags byte, m *pb.Message) { s[name] = fuzzInput(target, flags, m) }
	m := msg(pb.MsgAppResp, 2, 1, 0)
	m.Index = new(uint64(1000))
	add("ack-beyond-log", 0, all, m)
	m = msg(pb.MsgHeartbeat, 1, 2, 0)
	m.Commit = new(uint64(1000))
	add("heartbeat-commit-beyond-log", 1, all&^1, m)
	m = msg(pb.MsgHeartbeatResp, 2, 1, 0)
	m.Context = []byte{1, 2, 3}
	add("heartbeat-short-context", 0, all, m)
	m = msg(pb.MsgApp, 1, 2, 0)
	m.Index, m.LogTerm = new(uint64(4)), new(uint64(2))
	m.Entries = []*pb.Entry{{Index: new(uint64(2)), Term: new(uint64(3))}}
	add("append-not-contiguous", 1, all&^1, m)
	add("empty-proposal", 0, 1|2, msg(pb.MsgProp, 2, 1, 0))
	m = msg(pb.MsgProp, 2, 1, 0)
	m.Entries = []*pb.Entry{{Type: pb.EntryConfChange.Enum(), Data: []byte{0xff, 0xff}}}
	add("proposal-bad-confchange", 0, 1|2, m)
	m = msg(pb.MsgProp, 2, 1, 0)
	m.Entries = []*pb.Entry{{Data: garbage}}
	add("proposal-undecodable-command", 0, 1|2, m)
	m = msg(pb.MsgStorageApplyResp, raft.LocalApplyThread, 1, 0)
	m.Entries = []*pb.Entry{{Index: new(uint64(1000))}}
	add("local-type-from-local-thread", 0, 2|4, m)
	add("read-index-from-0", 0, 2, msg(pb.MsgReadIndex, 0, 1, 0))
	m = msg(pb.MsgSnap, 1, 2, 0)
	m.Snapshot = &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(uint64(100)), Term: new(uint64(2)),
		ConfState: &pb.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{2}}}}
	add("snapshot-as-frame", 1, all&^1, m)
	m = msg(pb.MsgTimeoutNow, 1, 3, 0)
	add("timeout-now", 2, all&^1, m)
	s["not-a-message"] = []byte{0, 7, 0xff, 0xff, 0xff}
	return s
}

// TestWriteFuzzSeeds rewrites the committed seed corpus when
// KAYA_WRITE_FUZZ_SEEDS is set.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("KAYA_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set KAYA_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz/FuzzRaftPort")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzRaftPort")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range seeds() {
		if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzRaftPort feeds arbitrary bytes, decoded as a raft message, to a node
// of a live 3-node cluster as the raft port would deliver them (through
// the in-memory transport's receive checks). Every node must stay up, and
// the cluster must still commit a write afterwards.
func FuzzRaftPort(f *testing.F) {
	for _, b := range seeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		m := &pb.Message{}
		if err := proto.Unmarshal(data[2:], m); err != nil {
			return
		}
		c := clustertest.New(t, clustertest.Options{})
		c.Elect(1)
		target := uint64(data[0]%3 + 1)
		flags := data[1]
		if flags&1 != 0 {
			m.From = new((target+uint64(flags>>4&1))%3 + 1)
		}
		if flags&2 != 0 {
			m.To = new(target)
		}
		if flags&4 != 0 {
			m.Term = new(c.Node(target).Raft.Term())
		}
		c.Node(target).Trans.Inject(m)
		c.Quiesce()
		for _, id := range c.IDs() {
			select {
			case <-c.Node(id).Raft.Done():
				t.Fatalf("node %d stopped after %v: %v", id, m, c.Node(id).Raft.Err())
			default:
			}
		}
		// A forged message may cost the leader its leadership (a higher
		// term, a forged MsgTimeoutNow): that is raft's own recovery. The
		// cluster must elect one and commit.
		for i := 0; c.Leader() == 0; i++ {
			if i == 500 {
				t.Fatalf("no leader 500 ticks after %v", m)
			}
			c.Tick(1)
		}
		// The leader found may still lose its term to the forged one (the
		// others learn the higher term from its next message): a write it
		// took then reports that, and is written again through the next
		// leader (the same value: a repeat is harmless).
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		lead := c.Leader()
		for attempt := 1; ; attempt++ {
			err := c.Node(lead).Store.Put(ctx, []byte("after"), []byte("ok"))
			if err == nil {
				break
			}
			if attempt == 5 || !errors.Is(err, kv.ErrLeadershipLost) && !errors.Is(err, kv.ErrNotLeader) {
				t.Fatalf("no write committed after %v (attempt %d): %v", m, attempt, err)
			}
			for i := 0; ; i++ {
				c.Tick(1)
				if lead = c.Leader(); lead != 0 {
					break
				}
				if i == 500 {
					t.Fatalf("no leader 500 ticks after %v", m)
				}
			}
		}
		c.WaitApplied(c.Node(lead).Store.AppliedIndex())
		for _, id := range c.IDs() {
			if v, err := c.Get(id, "after"); v != "ok" || err != nil {
				t.Fatalf("node %d: after = %q, %v", id, v, err)
			}
		}
	})
}
