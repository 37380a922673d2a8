package raftnode

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// levelRecorder records the level and message of every log record.
type levelRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *levelRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *levelRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r)
	h.mu.Unlock()
	return nil
}
func (h *levelRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *levelRecorder) WithGroup(string) slog.Handler      { return h }

// level returns the level of the record whose message contains text.
func (h *levelRecorder) level(t *testing.T, text string) slog.Level {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.recs {
		if strings.Contains(r.Message, text) {
			return r.Level
		}
	}
	var all []string
	for _, r := range h.recs {
		all = append(all, r.Level.String()+" "+r.Message)
	}
	t.Fatalf("raft logged no line with %q; it logged:\n%s", text, strings.Join(all, "\n"))
	return 0
}

// newRawNode builds a raft RawNode logging through raftLogger into h.
func newRawNode(t *testing.T, h *levelRecorder, st *raft.MemoryStorage, maxUncommitted uint64) *raft.RawNode {
	t.Helper()
	rn, err := raft.NewRawNode(&raft.Config{ID: 1, ElectionTick: 10, HeartbeatTick: 1, Storage: st,
		MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 256, MaxUncommittedEntriesSize: maxUncommitted,
		Logger: &raftLogger{log: slog.New(h)}})
	if err != nil {
		t.Fatal(err)
	}
	return rn
}

// TestRoutineRaftWarningsAreNotWarnings makes the raft library itself say
// the routine things it says with Warningf — a learner asked to campaign,
// a campaign before the bootstrap configuration is applied, a proposal
// over the uncommitted-bytes limit — and checks they arrive below WARN,
// while a real warning (routineRaftWarnings leaves the others alone) stays
// one. It fails if a raft upgrade changes those texts.
func TestRoutineRaftWarningsAreNotWarnings(t *testing.T) {
	// A learner asked to campaign.
	h := &levelRecorder{}
	st := raft.NewMemoryStorage()
	if err := st.ApplySnapshot(&pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(uint64(1)), Term: new(uint64(1)),
		ConfState: &pb.ConfState{Voters: []uint64{2}, Learners: []uint64{1}}}}); err != nil {
		t.Fatal(err)
	}
	rn := newRawNode(t, h, st, 0)
	_ = rn.Campaign()
	if l := h.level(t, "is unpromotable and can not campaign"); l != slog.LevelDebug {
		t.Errorf("unpromotable: %s, want DEBUG", l)
	}

	// A node that bootstrapped and has not applied its configuration yet.
	h = &levelRecorder{}
	st = raft.NewMemoryStorage()
	rn = newRawNode(t, h, st, 1024)
	if err := rn.Bootstrap([]raft.Peer{{ID: 1}}); err != nil {
		t.Fatal(err)
	}
	_ = rn.Campaign()
	if l := h.level(t, "since there are still pending configuration changes to apply"); l != slog.LevelInfo {
		t.Errorf("pending configuration changes: %s, want INFO", l)
	}

	// The same node, configuration applied: it leads, and a proposal over
	// the uncommitted-bytes limit is dropped.
	drain := func() {
		for rn.HasReady() {
			rd := rn.Ready()
			if err := st.Append(rd.Entries); err != nil {
				t.Fatal(err)
			}
			for _, e := range rd.CommittedEntries {
				if e.GetType() == pb.EntryType_EntryConfChange {
					var cc pb.ConfChange
					if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
						t.Fatal(err)
					}
					rn.ApplyConfChange(&cc)
				}
			}
			rn.Advance(rd)
		}
	}
	drain()
	if err := rn.Campaign(); err != nil {
		t.Fatal(err)
	}
	drain() // the vote for itself is stepped once it is persisted
	if rn.Status().RaftState != raft.StateLeader {
		t.Fatalf("state %s, want leader", rn.Status().RaftState)
	}
	_ = rn.Propose(make([]byte, 800))
	if err := rn.Propose(make([]byte, 800)); err != raft.ErrProposalDropped {
		t.Fatalf("second proposal over the limit: %v, want ErrProposalDropped", err)
	}
	if l := h.level(t, "would exceed uncommitted entry size limit"); l != slog.LevelInfo {
		t.Errorf("uncommitted size limit: %s, want INFO", l)
	}

	// Anything else raft warns about stays a warning.
	h = &levelRecorder{}
	(&raftLogger{log: slog.New(h)}).Warningf("%x stepped down to follower since quorum is not active", uint64(1))
	if l := h.level(t, "stepped down to follower"); l != slog.LevelWarn {
		t.Errorf("quorum lost: %s, want WARN", l)
	}
}
