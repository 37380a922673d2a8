package server

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/internal/raftnode"
	"github.com/kayadb/kayadb/internal/wire"
)

// stageCounts reads how many durations every stage recorded on s.
func stageCounts(s *Server) [raftnode.NumStages]uint64 {
	var c [raftnode.NumStages]uint64
	for st := raftnode.Stage(0); st < raftnode.NumStages; st++ {
		c[st] = s.stages.Count(st)
	}
	return c
}

// waitStages waits until every stage of want recorded more than before on
// s: the reply stage is recorded once the reply is written, which may be
// just after the client read it.
func waitStages(c *testCluster, s *Server, what string, before [raftnode.NumStages]uint64, want []raftnode.Stage) {
	c.t.Helper()
	missing := func() []string {
		now := stageCounts(s)
		var out []string
		for _, st := range want {
			if now[st] <= before[st] {
				out = append(out, st.String())
			}
		}
		return out
	}
	c.Eventually(fmt.Sprintf("%s records every stage it passes through", what), func() bool { return len(missing()) == 0 })
	if m := missing(); len(m) > 0 {
		c.t.Fatalf("%s: stages %s recorded nothing", what, strings.Join(m, ", "))
	}
}

// TestRequestStagesRecorded: a put and a get each record every stage of
// their path (kayadb_request_stage_seconds), on one node and on the leader
// of three, and the stages show up in /metrics.
func TestRequestStagesRecorded(t *testing.T) {
	put := []raftnode.Stage{raftnode.StageRead, raftnode.StageDecode, raftnode.StageQueue, raftnode.StageRaftReady,
		raftnode.StageLogFsync, raftnode.StageReplicate, raftnode.StageApply, raftnode.StageWake, raftnode.StageReply}
	// A lone get runs its ReadIndex round itself (kv.Barrier): no hand-off
	// back from a round run by another goroutine, so no wake stage.
	get := []raftnode.Stage{raftnode.StageRead, raftnode.StageDecode, raftnode.StageQueue, raftnode.StageRaftReady,
		raftnode.StageReplicate, raftnode.StageApply, raftnode.StageEngine, raftnode.StageReply}
	// A node that is the only voter serves a get without a ReadIndex round
	// (raftnode.LocalReadIndex), on the connection's reader.
	localGet := []raftnode.Stage{raftnode.StageRead, raftnode.StageDecode, raftnode.StageEngine, raftnode.StageReply}
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("nodes=%d", n), func(t *testing.T) {
			c := newCluster(t, n, clusterOpts{})
			lead := c.WaitLeader()
			s := c.node(lead)
			cl := dial(t, c.addr(lead))
			// The cluster's own first writes (its term's entry) are done
			// once a put went through.
			if st, p, err := cl.put("warm", "up"); err != nil || st != wire.StatusOK {
				t.Fatalf("put: %v %v %q", err, st, p)
			}
			before := stageCounts(s)
			if st, p, err := cl.put("k", "v"); err != nil || st != wire.StatusOK {
				t.Fatalf("put: %v %v %q", err, st, p)
			}
			waitStages(c, s, "a put", before, put)
			before = stageCounts(s)
			rounds := s.store.ReadRounds()
			if st, v, err := cl.get("k"); err != nil || st != wire.StatusOK || string(v) != "v" {
				t.Fatalf("get: %v %v %q", err, st, v)
			}
			if n == 1 {
				waitStages(c, s, "a get", before, localGet)
				if got := s.store.ReadRounds(); got != rounds {
					t.Fatalf("a get on the only voter ran %d ReadIndex rounds", got-rounds)
				}
			} else {
				waitStages(c, s, "a get", before, get)
				if got := s.store.ReadRounds(); got == rounds {
					t.Fatal("a get on the leader of three ran no ReadIndex round")
				}
			}
			mfs, err := s.obs.reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]uint64{}
			for _, mf := range mfs {
				if mf.GetName() != "kayadb_request_stage_seconds" {
					continue
				}
				for _, m := range mf.GetMetric() {
					for _, l := range m.GetLabel() {
						if l.GetName() == "stage" {
							seen[l.GetValue()] = m.GetHistogram().GetSampleCount()
						}
					}
				}
			}
			for _, st := range put {
				if seen[st.String()] == 0 {
					t.Errorf("the registry's kayadb_request_stage_seconds{stage=%q} counted nothing", st)
				}
			}
		})
	}
}

// TestRepliesNeedNoWriterGoroutine: a client connection costs the server
// one goroutine (its reader) while it has nothing in flight: replies are
// written by the goroutine that finishes them, not handed to a writer
// goroutine of the connection (one scheduling hop per reply;
// docs/design/latency.md). Replies still go out in request order
// (TestPipelining).
func TestRepliesNeedNoWriterGoroutine(t *testing.T) {
	c := newTestCluster(t, 1)
	addr := c.addr(c.WaitLeader())
	c.Eventually("the node settles", func() bool { return c.node(1).inflight.Load() == 0 })
	before := runtime.NumGoroutine()
	const conns = 40
	for i := 0; i < conns; i++ {
		cl := dial(t, addr)
		// A reply on each, so that the connection is fully set up.
		if st, _, err := cl.do(wire.OpHealth, nil); err != nil || st != wire.StatusOK {
			t.Fatalf("HEALTH: %v %v", st, err)
		}
	}
	// Each connection adds its reader (and the test's side is a plain
	// net.Conn, no goroutine); a writer goroutine each would double it.
	// Goroutines of the node's own that come and go get a slack of half
	// the connections.
	grown := runtime.NumGoroutine() - before
	if grown > conns+conns/2 {
		t.Fatalf("%d idle client connections added %d goroutines; want about one each", conns, grown)
	}
}

// TestLeaseReadsNeedNoRound: with --read-mode lease, the leader of three
// serves a get without a ReadIndex round while its lease is fresh, and the
// get sees the write acknowledged before it.
func TestLeaseReadsNeedNoRound(t *testing.T) {
	c := newTestCluster(t, 3, func(_ uint64, cfg *Config) { cfg.LeaseReads = true })
	lead := c.WaitLeader()
	s := c.node(lead)
	cl := dial(t, c.addr(lead))
	if st, p, err := cl.put("k", "v1"); err != nil || st != wire.StatusOK {
		t.Fatalf("put: %v %v %q", err, st, p)
	}
	c.Eventually("the leader to hold a lease", func() bool { return s.store.ReadsLocally() })
	rounds := s.store.ReadRounds()
	if st, v, err := cl.get("k"); err != nil || st != wire.StatusOK || string(v) != "v1" {
		t.Fatalf("get: %v %v %q", err, st, v)
	}
	if got := s.store.ReadRounds(); got != rounds {
		// The lease may lapse on a starved machine (heartbeats are
		// 100 ms apart, the lease 450 ms): then the get took a round,
		// which is correct; only a get with a fresh lease must not.
		if s.store.ReadsLocally() {
			t.Fatalf("a get with a fresh lease ran %d ReadIndex rounds", got-rounds)
		}
		t.Log("the lease lapsed around the get; it took a round")
	}
	for id := range c.Nodes() {
		if id != lead && c.node(id).store.ReadsLocally() {
			t.Fatalf("follower %d claims to read locally", id)
		}
	}
}
