package server

import (
	"bufio"
	"fmt"
	"net"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/wire"
)

// admin sends an admin request to the leader among ids, following leader
// changes and retrying while another change is in progress. It returns the
// final status and the reply text.
func (c *testCluster) admin(ids []uint64, op wire.Opcode, payload []byte) (wire.Status, string) {
	c.t.Helper()
	for attempt := 0; ; attempt++ {
		lead := c.WaitLeader(ids...)
		cl := dial(c.t, c.addr(lead))
		st, p, err := cl.do(op, payload)
		_ = cl.c.Close()
		text := string(p)
		if st != wire.StatusOK && err == nil {
			if msg, derr := wire.DecodeError(p); derr == nil {
				text = msg
			}
		}
		retry := err != nil || st == wire.StatusNotLeader ||
			(st == wire.StatusError && (strings.Contains(text, "in progress") || strings.Contains(text, "earlier terms") || strings.Contains(text, "not applied within")))
		if !retry || attempt == 20 {
			return st, text
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func addMemberPayload(m Member, learner bool) []byte {
	return wire.AppendAddMember(nil, m.ID, m.RaftAddr, m.ClientAddr, &learner)
}

var proposedAt = regexp.MustCompile(`^(membership change|membership removal|learner promote) proposed at index [0-9]+$`)

// writeLoad keeps writing unique keys to whichever node leads, recording
// every acknowledged write, until stop is called.
type writeLoad struct {
	acked sync.Map
	n     atomic.Int64
	stop  atomic.Bool
	wg    sync.WaitGroup
}

func (c *testCluster) startLoad(writers int) *writeLoad {
	l := &writeLoad{}
	for w := 0; w < writers; w++ {
		l.wg.Add(1)
		go func(w int) {
			defer l.wg.Done()
			conns := map[uint64]*conn{}
			defer func() {
				for _, cl := range conns {
					_ = cl.c.Close()
				}
			}()
			for i := 0; !l.stop.Load(); i++ {
				k := fmt.Sprintf("load-%d-%06d", w, i)
				for attempt := 0; attempt < 100 && !l.stop.Load(); attempt++ {
					target := c.leaderGuess()
					if target == 0 {
						time.Sleep(10 * time.Millisecond)
						continue
					}
					cl := conns[target]
					if cl == nil {
						nc, err := net.DialTimeout("tcp", c.addr(target), 200*time.Millisecond)
						if err != nil {
							time.Sleep(10 * time.Millisecond)
							continue
						}
						cl = &conn{c: nc, r: bufio.NewReader(nc)}
						conns[target] = cl
					}
					st, _, err := cl.put(k, k)
					if err != nil {
						_ = cl.c.Close()
						delete(conns, target)
						break // outcome unknown: the key is not counted
					}
					if st == wire.StatusOK {
						l.acked.Store(k, true)
						l.n.Add(1)
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
		}(w)
	}
	return l
}

func (l *writeLoad) finish() {
	l.stop.Store(true)
	l.wg.Wait()
}

// verify reads every acknowledged write back through the leader of ids.
// A read that the leader cannot answer (leadership moved meanwhile: the
// nodes just went through a crash and a restart) is asked again of the new
// leader; only an answer that misses or changes the value counts as a lost
// write.
func (c *testCluster) verifyAcked(l *writeLoad, ids ...uint64) {
	c.t.Helper()
	lead := c.WaitLeader(ids...)
	cl := dial(c.t, c.addr(lead))
	l.acked.Range(func(k, _ any) bool {
		for attempt := 0; ; attempt++ {
			st, v, err := cl.get(k.(string))
			if err == nil && st == wire.StatusOK && string(v) == k.(string) {
				return true
			}
			if attempt < 10 && (err != nil || st == wire.StatusNotLeader || st == wire.StatusError) {
				_ = cl.c.Close()
				lead = c.WaitLeader(ids...)
				cl = dial(c.t, c.addr(lead))
				continue
			}
			c.t.Errorf("acknowledged write %s lost: %v %v %q", k, err, st, v)
			return false
		}
	})
}

func sortedIDs(ids []uint64) []uint64 {
	out := append([]uint64(nil), ids...)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func (c *testCluster) waitVoters(ids []uint64, want ...uint64) {
	c.t.Helper()
	for _, id := range ids {
		s := c.node(id)
		c.Eventually(fmt.Sprintf("node %d to have voters %v", id, want), func() bool {
			return fmt.Sprint(sortedIDs(s.Node().Status().Voters)) == fmt.Sprint(want)
		})
	}
}

// TestMembershipGrowAndShrinkUnderLoad: 3 → 4 → 5 → 3 while clients write;
// no acknowledged write is lost, the new members catch up by snapshot, and
// the survivors end with identical data.
func TestMembershipGrowAndShrinkUnderLoad(t *testing.T) {
	c := newTestCluster(t, 3, snapCfg(50, 10))
	c.WaitLeader()
	load := c.startLoad(3)
	// New members must catch up by snapshot: wait until every log was
	// compacted.
	waitFor(t, "some writes and compacted logs", func() bool {
		for _, s := range c.Nodes() {
			if first, _ := s.rlog.FirstIndex(); first <= 1 {
				return false
			}
		}
		return load.n.Load() > 50
	})

	// 3 → 4: node 4 joins directly as a voter.
	m4 := c.newNodeSlot(4)
	if st, msg := c.admin([]uint64{1, 2, 3}, wire.OpAddMember, wire.AppendAddMember(nil, 4, m4.RaftAddr, m4.ClientAddr, nil)); st != wire.StatusOK || !proposedAt.MatchString(msg) {
		t.Fatalf("add node 4: %v %q", st, msg)
	}
	c.Start(4)
	c.waitVoters([]uint64{1, 2, 3, 4}, 1, 2, 3, 4)

	// 4 → 5: node 5 joins as a learner and is promoted once caught up.
	m5 := c.newNodeSlot(5)
	if st, msg := c.admin([]uint64{1, 2, 3, 4}, wire.OpAddMember, addMemberPayload(m5, true)); st != wire.StatusOK || !proposedAt.MatchString(msg) {
		t.Fatalf("add node 5 as a learner: %v %q", st, msg)
	}
	c.Start(5)
	waitFor(t, "node 5 to catch up and be promoted", func() bool {
		st, msg := c.admin([]uint64{1, 2, 3, 4, 5}, wire.OpPromoteLearner, appendU64(nil, 5))
		if st == wire.StatusInvalidArgument && strings.Contains(msg, "yet") {
			return false // still catching up
		}
		if st != wire.StatusOK || !proposedAt.MatchString(msg) {
			t.Fatalf("promote node 5: %v %q", st, msg)
		}
		return true
	})
	all := []uint64{1, 2, 3, 4, 5}
	c.waitVoters(all, 1, 2, 3, 4, 5)
	waitFor(t, "more writes", func() bool { return load.n.Load() > 300 })

	// 5 → 3: remove 1 and 2, whoever leads.
	for _, id := range []uint64{1, 2} {
		if st, msg := c.admin(all, wire.OpRemoveMember, appendU64(nil, id)); st != wire.StatusOK || !proposedAt.MatchString(msg) {
			t.Fatalf("remove node %d: %v %q", id, st, msg)
		}
		c.Stop(id)
		all = all[1:]
	}
	c.waitVoters(all, 3, 4, 5)
	before := load.n.Load()
	waitFor(t, "writes on the shrunk cluster", func() bool { return load.n.Load() > before+50 })
	load.finish()
	c.verifyAcked(load, all...)
	_, keys := c.waitConverged(all...)
	if int64(keys) < load.n.Load() {
		t.Fatalf("%d keys on the survivors, %d writes acknowledged", keys, load.n.Load())
	}
	for _, id := range []uint64{4, 5} {
		if _, installed := c.node(id).Node().SnapshotCounts(); installed == 0 {
			t.Errorf("node %d caught up without a snapshot", id)
		}
	}
	t.Logf("%d writes acknowledged across 3 → 4 → 5 → 3", load.n.Load())
}

// TestRemoveLeader: the leader removes itself; it steps down, the others
// elect a leader, and the cluster keeps serving.
func TestRemoveLeader(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.WaitLeader()
	putMany(t, c.addr(lead), "a", 20, 10)
	cl := dial(t, c.addr(lead))
	st, p, err := cl.do(wire.OpRemoveMember, appendU64(nil, lead))
	if err != nil || st != wire.StatusOK || !proposedAt.MatchString(string(p)) {
		t.Fatalf("removing the leader: %v %v %q", err, st, p)
	}
	var rest []uint64
	for id := uint64(1); id <= 3; id++ {
		if id != lead {
			rest = append(rest, id)
		}
	}
	// The reply comes when the removal is proposed; the leader steps down
	// once it applies it.
	waitFor(t, "the removed leader to step down", func() bool { return !c.node(lead).Node().IsLeader() })
	newLead := c.WaitLeader(rest...)
	if newLead == lead {
		t.Fatal("the removed leader still leads")
	}
	c.waitVoters(rest, rest...)
	putMany(t, c.addr(newLead), "b", 20, 10)
	if !c.node(newLead).ros.isRemoved(lead) {
		t.Fatal("the roster does not record the removed leader")
	}
	c.Stop(lead)
	if _, keys := c.waitConverged(rest...); keys != 40 {
		t.Fatalf("%d keys after removing the leader, want 40", keys)
	}
}

// TestRemovedNodeCannotDisrupt: a node removed while it was down restarts
// with its old data (it still believes it is a member and campaigns); the
// others drop its messages, the leader and term do not change, and its id
// can never be added again.
func TestRemovedNodeCannotDisrupt(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{manual: true})
	lead := c.WaitLeader()
	f := c.follower(lead)
	c.Stop(f)
	if st, msg := c.admin([]uint64{1, 2, 3}, wire.OpRemoveMember, appendU64(nil, f)); st != wire.StatusOK {
		t.Fatalf("remove node %d: %v %q", f, st, msg)
	}
	var rest []uint64
	for _, id := range []uint64{1, 2, 3} {
		if id != f {
			rest = append(rest, id)
		}
	}
	c.waitVoters(rest, rest...) // removed while it was down
	term := c.node(lead).Node().Status().Term
	rejectedBefore := c.node(lead).trans.Stats().RejectedFrom
	c.Start(f) // old data: it still counts itself a voter
	// Give it many election timeouts (10 to 19 ticks each) to try.
	for i := 0; i < 100; i++ {
		c.Tick(1)
		if !c.node(lead).Node().IsLeader() {
			t.Fatalf("the removed node disrupted the leader at tick %d", i+1)
		}
	}
	if got := c.node(lead).Node().Status().Term; got != term {
		t.Fatalf("the leader's term moved from %d to %d", term, got)
	}
	if c.node(lead).trans.Stats().RejectedFrom == rejectedBefore {
		t.Fatal("the leader never saw (and dropped) a message from the removed node")
	}
	putMany(t, c.addr(lead), "a", 10, 10)
	m := Member{ID: f, RaftAddr: "127.0.0.1:1", ClientAddr: "127.0.0.1:2"}
	st, msg := c.admin([]uint64{lead}, wire.OpAddMember, addMemberPayload(m, false))
	if st != wire.StatusInvalidArgument || !strings.Contains(msg, "never be reused") {
		t.Fatalf("re-adding removed node %d: %v %q", f, st, msg)
	}
}

// TestMembershipRefusals checks every refusal and its message.
func TestMembershipRefusals(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.WaitLeader()
	cl := dial(t, c.addr(lead))
	f := c.follower(lead)
	ask := func(op wire.Opcode, payload []byte) (wire.Status, string) {
		t.Helper()
		st, p, err := cl.do(op, payload)
		if err != nil {
			t.Fatal(err)
		}
		if st == wire.StatusOK || st == wire.StatusNotLeader {
			return st, string(p)
		}
		msg, err := wire.DecodeError(p)
		if err != nil {
			t.Fatalf("reply %v is not an error body: %q", st, p)
		}
		return st, msg
	}
	expect := func(what string, gotSt wire.Status, got string, wantSt wire.Status, want string) {
		t.Helper()
		if gotSt != wantSt || !strings.Contains(got, want) {
			t.Errorf("%s: got %v %q, want %v containing %q", what, gotSt, got, wantSt, want)
		}
	}
	existing := c.members()[f-1]
	st, msg := ask(wire.OpAddMember, addMemberPayload(existing, false))
	expect("adding a member", st, msg, wire.StatusInvalidArgument, fmt.Sprintf("node %d is already a cluster member", f))
	st, msg = ask(wire.OpRemoveMember, appendU64(nil, 9))
	expect("removing a non-member", st, msg, wire.StatusInvalidArgument, "cannot remove node 9 (not a member, is self, or would shrink below quorum)")
	st, msg = ask(wire.OpPromoteLearner, appendU64(nil, f))
	expect("promoting a voter", st, msg, wire.StatusInvalidArgument, fmt.Sprintf("cannot promote node %d (not a learner in current membership)", f))
	st, msg = ask(wire.OpAddMember, wire.AppendAddMember(nil, 7, "nonsense", "127.0.0.1:1", nil))
	expect("a bad address", st, msg, wire.StatusInvalidArgument, "not host:port")
	st, msg = ask(wire.OpAddMember, wire.AppendAddMember(nil, 0, "127.0.0.1:1", "127.0.0.1:2", nil))
	expect("node id 0", st, msg, wire.StatusInvalidArgument, "positive")
	st, msg = ask(wire.OpAddMember, []byte{1, 2, 3})
	expect("a short ADD_MEMBER", st, msg, wire.StatusInvalidArgument, "")
	st, msg = ask(wire.OpRemoveMember, []byte{1})
	expect("a short REMOVE_MEMBER", st, msg, wire.StatusInvalidArgument, "")
	st, msg = ask(wire.OpTransferLeader, append(appendU64(nil, 0), appendU64(nil, 9)...))
	expect("transfer to a non-voter", st, msg, wire.StatusInvalidArgument, "not a voter")
	st, msg = ask(wire.OpTransferLeader, append(appendU64(nil, 3), appendU64(nil, f)...))
	expect("transfer in an unknown group", st, msg, wire.StatusInvalidArgument, "unknown raft group 3")

	// A follower points at the leader.
	fc := dial(t, c.addr(f))
	st2, p, err := fc.do(wire.OpAddMember, wire.AppendAddMember(nil, 7, "127.0.0.1:1", "127.0.0.1:2", nil))
	if err != nil || st2 != wire.StatusNotLeader || string(p) != c.addr(lead) {
		t.Errorf("ADD_MEMBER on a follower: %v %v %q", err, st2, p)
	}

	// With one follower down, removing the other would leave one live
	// voter of two: refused. Adding a voter would need three live voters
	// of four: refused; a learner is fine.
	var other uint64
	for id := uint64(1); id <= 3; id++ {
		if id != lead && id != f {
			other = id
		}
	}
	c.Stop(other)
	waitFor(t, "the leader to notice the stopped follower", func() bool {
		prog, _, err := c.node(lead).Node().Progress(t.Context())
		return err == nil && !prog[other].RecentActive
	})
	st, msg = ask(wire.OpRemoveMember, appendU64(nil, f))
	expect("removing below quorum", st, msg, wire.StatusInvalidArgument, fmt.Sprintf("cannot remove node %d", f))
	st, msg = ask(wire.OpAddMember, wire.AppendAddMember(nil, 7, "127.0.0.1:1", "127.0.0.1:2", nil))
	expect("adding a voter without enough live voters", st, msg, wire.StatusInvalidArgument, "add it with --learner")
	learner := true
	st, msg = ask(wire.OpAddMember, wire.AppendAddMember(nil, 7, "127.0.0.1:1", "127.0.0.1:2", &learner))
	expect("adding a learner", st, msg, wire.StatusOK, "membership change proposed at index")
	// The down node can still be removed (it is the one not needed).
	st, msg = ask(wire.OpRemoveMember, appendU64(nil, other))
	expect("removing the down node", st, msg, wire.StatusOK, "membership removal proposed at index")

	// Leadership moves on request.
	st, msg = ask(wire.OpTransferLeader, append(appendU64(nil, 0), appendU64(nil, f)...))
	expect("transfer to a voter", st, msg, wire.StatusOK, "")
	if got := c.WaitLeader(lead, f); got != f {
		t.Fatalf("leader is %d after the transfer, want %d", got, f)
	}
}

// TestStatsShowMembers: STATS lists the members with their roles.
func TestStatsShowMembers(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.WaitLeader()
	cl := dial(t, c.addr(lead))
	learner := true
	m4 := Member{ID: 4, RaftAddr: "127.0.0.1:40004", ClientAddr: "127.0.0.1:1"}
	if st, p, err := cl.do(wire.OpAddMember, addMemberPayload(m4, learner)); err != nil || st != wire.StatusOK {
		t.Fatalf("add learner: %v %v %q", err, st, p)
	}
	st, p, err := cl.do(wire.OpStats, nil)
	if err != nil || st != wire.StatusOK {
		t.Fatal(err, st)
	}
	doc := string(p)
	for _, want := range []string{`"leader_id":` + fmt.Sprint(lead), `"role":"learner"`, `"raft_addr":"127.0.0.1:40004"`, `"node_id":` + fmt.Sprint(lead), `"snapshot_index":`} {
		if !strings.Contains(doc, want) {
			t.Errorf("STATS lacks %s: %s", want, doc)
		}
	}
	stats, err := wire.DecodeStats(p)
	if err != nil || stats.PeerCount != 3 {
		t.Fatalf("peer_count %v %v (want 3: two voters and the learner)", stats, err)
	}
}

// TestJoinerRestartedBeforeContact: a node started with --join that is
// restarted (without --join) before the cluster reached it still waits to
// be contacted instead of bootstrapping a cluster of its own.
func TestJoinerRestartedBeforeContact(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{manual: true})
	lead := c.WaitLeader()
	m4 := c.newNodeSlot(4)
	c.Net.Isolate(4)
	c.Start(4)
	c.Stop(4)
	c.SetJoin(4, false) // the operator forgot --join on the restart
	c.Start(4)
	c.Tick(30) // longer than any election timeout
	if st := c.node(4).Node().Status(); st.Role != 0 || len(st.Voters) != 0 {
		t.Fatalf("the joiner bootstrapped on its own: %+v", st)
	}
	c.Net.Heal()
	if st, msg := c.admin([]uint64{1, 2, 3}, wire.OpAddMember, addMemberPayload(m4, false)); st != wire.StatusOK {
		t.Fatalf("add node 4: %v %q", st, msg)
	}
	putMany(t, c.addr(lead), "a", 10, 10)
	c.waitConverged(1, 2, 3, 4)
}
