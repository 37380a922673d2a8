package raftnode

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/internal/transport"
)

// This file is the deterministic test environment of the node loop: every
// node runs its real loop goroutine, but its clock is a manualTicker, its
// log a testStorage, its network an outbox the test delivers from one
// message at a time, and after every input the test waits until the loop
// is idle (waitIdle). What the loop does is then a function of the inputs.

// manualTicker is a Ticker driven by the test: Tick blocks until the loop
// has taken the tick.
type manualTicker struct{ c chan time.Time }

func newManualTicker() *manualTicker        { return &manualTicker{c: make(chan time.Time)} }
func (t *manualTicker) C() <-chan time.Time { return t.c }
func (t *manualTicker) Stop()               {}

// testStorage is a Storage over raft.MemoryStorage whose Save can be made
// to fail (a full disk). A failed Save changes nothing, which is the
// contract raftlog keeps.
type testStorage struct {
	*raft.MemoryStorage
	mu       sync.Mutex
	failSave error
	// failEntries: only Saves that carry entries fail.
	failEntries bool
	saves       int
	syncs       int // Saves with sync set
	// prepared counts PrepareAhead calls; preparedAt is the number of
	// Saves at the last one.
	prepared, preparedAt int
	// gate, when set, holds every Save until it is closed (a slow disk);
	// the test's waits for an idle node then ignore the storage goroutine.
	// atGate counts the Saves that reached it.
	gate   chan struct{}
	atGate int
}

func (s *testStorage) setGate(g chan struct{}) {
	s.mu.Lock()
	s.gate = g
	s.mu.Unlock()
}

// waitAtGate waits until n Saves have reached the gate.
func (s *testStorage) waitAtGate(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		at := s.atGate
		s.mu.Unlock()
		if at >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d Saves reached the gate, want %d", at, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func (s *testStorage) gated() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gate != nil
}

// PrepareAhead stands for raftlog.Log's: the node calls it after Saves.
func (s *testStorage) PrepareAhead() {
	s.mu.Lock()
	s.prepared++
	s.preparedAt = s.saves
	s.mu.Unlock()
}

func (s *testStorage) prepareCounts() (prepared, preparedAt, saves int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.prepared, s.preparedAt, s.saves
}

func (s *testStorage) counts() (saves, syncs int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saves, s.syncs
}

func (s *testStorage) Save(hs *pb.HardState, ents []*pb.Entry, sync bool) error {
	s.mu.Lock()
	if g := s.gate; g != nil {
		s.atGate++
		s.mu.Unlock()
		<-g
		s.mu.Lock()
	}
	if sync {
		s.syncs++
	}
	err := s.failSave
	if s.failEntries && len(ents) == 0 {
		err = nil
	}
	s.saves++
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if hs != nil && !raft.IsEmptyHardState(hs) {
		if err := s.SetHardState(hs); err != nil {
			return err
		}
	}
	return s.Append(ents)
}

func (s *testStorage) SaveSnapshot(snap *pb.Snapshot) error { return s.ApplySnapshot(snap) }

func (s *testStorage) setFail(err error) {
	s.mu.Lock()
	s.failSave = err
	s.mu.Unlock()
}

// testSM is a state machine that records what it applies. Apply can be
// made to fail (a full disk) a number of times.
type testSM struct {
	mu        sync.Mutex
	applied   []string // "index:data" of normal entries with data, in order
	confs     []string
	index     uint64
	failApply []error // errors for the next Apply calls, in order
	applies   map[uint64]int
	leader    uint64
	// events is the order of applied data entries ("apply 5:a") and
	// leadership changes ("leader 2 term 3 false").
	events []string
	// gate, when set, holds every Apply until it is closed (an engine
	// that stalls); the test's waits for an idle node then ignore the
	// apply goroutine.
	gate chan struct{}
}

func (sm *testSM) setGate(g chan struct{}) {
	sm.mu.Lock()
	sm.gate = g
	sm.mu.Unlock()
}

func (sm *testSM) gated() bool {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.gate != nil
}

func (sm *testSM) Apply(ents []*pb.Entry) error {
	sm.mu.Lock()
	if g := sm.gate; g != nil {
		sm.mu.Unlock()
		<-g
		sm.mu.Lock()
	}
	defer sm.mu.Unlock()
	if len(sm.failApply) > 0 {
		err := sm.failApply[0]
		sm.failApply = sm.failApply[1:]
		if err != nil {
			return err
		}
	}
	for _, e := range ents {
		if e.GetIndex() <= sm.index {
			continue
		}
		sm.applies[e.GetIndex()]++
		if len(e.GetData()) > 0 {
			sm.applied = append(sm.applied, fmt.Sprintf("%d:%s", e.GetIndex(), e.GetData()))
			sm.events = append(sm.events, fmt.Sprintf("apply %d:%s", e.GetIndex(), e.GetData()))
		}
		sm.index = e.GetIndex()
	}
	return nil
}

func (sm *testSM) ApplyConfChange(e *pb.Entry, cc pb.ConfChangeI, cs *pb.ConfState) error {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if e.GetIndex() > sm.index {
		sm.confs = append(sm.confs, fmt.Sprintf("%d:%s", e.GetIndex(), raft.DescribeConfChange(cc)))
		sm.index = e.GetIndex()
		sm.applies[e.GetIndex()]++
	}
	return nil
}

func (sm *testSM) LeadershipChanged(leader, term uint64, isLeader bool) {
	sm.mu.Lock()
	sm.leader = leader
	sm.events = append(sm.events, fmt.Sprintf("leader %d term %d %v", leader, term, isLeader))
	sm.mu.Unlock()
}

func (sm *testSM) state() (uint64, []string) {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.index, append([]string(nil), sm.applied...)
}

// testSnaps is the Snapshotter: a snapshot carries the sender's applied
// data in Snapshot.Data; Send hands the MsgSnap to the environment, which
// delivers it as a received stream would.
type testSnaps struct {
	env *testEnv
	id  uint64
}

func (s *testSnaps) Take() (*pb.SnapshotMetadata, error) {
	return nil, fmt.Errorf("not used by these tests")
}

func (s *testSnaps) Install(snap *pb.Snapshot) error {
	tn := s.env.nodes[s.id]
	tn.sm.mu.Lock()
	defer tn.sm.mu.Unlock()
	tn.sm.index = snap.GetMetadata().GetIndex()
	tn.sm.applied = nil
	if len(snap.GetData()) > 0 {
		tn.sm.applied = strings.Split(string(snap.GetData()), ",")
	}
	return nil
}

// Send rewrites the message to the sender's applied state, as the server
// does (it checkpoints the engine as it is when the snapshot is sent).
func (s *testSnaps) Send(m *pb.Message) {
	tn := s.env.nodes[s.id]
	idx, data := tn.sm.state()
	term, _ := tn.st.Term(idx)
	tn.n.statusMu.Lock()
	cs := &pb.ConfState{Voters: tn.n.voters, Learners: tn.n.learners}
	tn.n.statusMu.Unlock()
	m.Snapshot = &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(idx), Term: new(term), ConfState: cs}}
	m.Snapshot.Data = []byte(strings.Join(data, ","))
	s.env.outbox(s.id, m, true)
}

// testTransport records what a node sends.
type testTransport struct {
	env *testEnv
	id  uint64
}

func (t *testTransport) Send(msgs []*pb.Message) {
	for _, m := range msgs {
		t.env.outbox(t.id, m, false)
	}
}
func (t *testTransport) SetPeers(map[uint64]string) {}
func (t *testTransport) SendSnapshot(uint64, func(io.Writer) error, func(error)) {
}
func (t *testTransport) Stats() (s transport.Stats) { return s }
func (t *testTransport) Close() error               { return nil }

type testNode struct {
	n       *Node
	st      *testStorage
	sm      *testSM
	tick    *manualTicker
	stalls  []string // OnStall calls
	stallMu sync.Mutex
}

type sent struct {
	m    *pb.Message
	snap bool // a snapshot stream
}

type testEnv struct {
	t     testing.TB
	nodes map[uint64]*testNode
	mu    sync.Mutex
	out   []sent
	cut   map[uint64]bool // nodes whose messages (both ways) are lost
	sync  bool            // Config.SyncStorageWrites
	// noticeDelay is Config.CommitNoticeDelay (0: notices go out at once).
	noticeDelay time.Duration
}

func newTestEnv(t testing.TB) *testEnv {
	e := &testEnv{t: t, nodes: map[uint64]*testNode{}, cut: map[uint64]bool{}}
	t.Cleanup(e.stopAll)
	return e
}

func (e *testEnv) outbox(from uint64, m *pb.Message, snap bool) {
	e.mu.Lock()
	e.out = append(e.out, sent{m: m, snap: snap})
	e.mu.Unlock()
}

// addNode starts node id: a member of a new cluster of peers, or a joiner
// when peers is empty.
func (e *testEnv) addNode(id uint64, peers []uint64) *testNode {
	tn := &testNode{st: &testStorage{MemoryStorage: raft.NewMemoryStorage()},
		sm: &testSM{applies: map[uint64]int{}}, tick: newManualTicker()}
	n, err := New(Config{ID: id, Peers: peers, Join: len(peers) == 0, Log: tn.st, SM: tn.sm,
		Snapshots: &testSnaps{env: e, id: id}, Ticker: tn.tick, CatchUpEntries: 1,
		StallRetryMaxTicks: 4, SyncStorageWrites: e.sync, CommitNoticeDelay: e.noticeDelay,
		OnStall: func(err error) {
			tn.stallMu.Lock()
			defer tn.stallMu.Unlock()
			if err == nil {
				tn.stalls = append(tn.stalls, "resumed")
			} else {
				tn.stalls = append(tn.stalls, "stalled: "+err.Error())
			}
		}})
	if err != nil {
		e.t.Fatal(err)
	}
	tn.n = n
	e.nodes[id] = tn
	n.Start(&testTransport{env: e, id: id})
	e.waitIdle(id)
	return tn
}

// startLeader1 starts nodes 1..3 of a new cluster and makes 1 their
// leader.
func startLeader1(t *testing.T) *testEnv {
	t.Helper()
	return newTestEnv(t).startLeader1()
}

// startLeader1 starts nodes 1..3 in e (with e's settings) and makes 1
// their leader.
func (e *testEnv) startLeader1() *testEnv {
	e.t.Helper()
	for id := uint64(1); id <= 3; id++ {
		e.addNode(id, []uint64{1, 2, 3})
	}
	e.nodes[1].n.Campaign()
	e.waitIdle(1)
	e.deliver(0)
	if !e.nodes[1].n.IsLeader() {
		e.t.Fatalf("node 1 did not become leader:\n%s", e.status())
	}
	return e
}

func (e *testEnv) stopAll() {
	for _, tn := range e.nodes {
		tn.n.Stop()
	}
}

func (e *testEnv) ids() []uint64 {
	var ids []uint64
	for id := range e.nodes {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// onLoop runs f on node id's loop and waits for it.
func (e *testEnv) onLoop(id uint64, f func()) {
	n := e.nodes[id].n
	done := make(chan struct{})
	select {
	case n.ctrlc <- func(*raft.RawNode) { f(); close(done) }:
	case <-n.Done():
		e.t.Fatalf("node %d stopped: %v", id, n.Err())
	}
	select {
	case <-done:
	case <-n.Done():
		e.t.Fatalf("node %d stopped: %v", id, n.Err())
	}
}

// waitIdle waits until node id's loop has nothing queued and raft nothing
// to hand out (or a stalled Ready waits for ticks).
func (e *testEnv) waitIdle(id uint64) {
	n := e.nodes[id].n
	for i := 0; ; i++ {
		idle := false
		e.onLoop(id, func() {
			if i == 10000 {
				e.t.Fatalf("node %d never became idle: recv %d prop %d ctrl %d pend %+v ready %v", id, len(n.recvc), len(n.propc), len(n.ctrlc), n.pend, n.rn.HasReady())
			}
			// The apply goroutine first: see Node.busy.
			busy := (!e.nodes[id].st.gated() && n.storageBusy()) || (!e.nodes[id].sm.gated() && n.applyBusy()) || n.loopBusy()
			idle = !busy
		})
		if idle {
			return
		}
	}
}

func (e *testEnv) tick(id uint64, k int) {
	tn := e.nodes[id]
	for i := 0; i < k; i++ {
		select {
		case tn.tick.c <- time.Time{}:
		case <-tn.n.Done():
			e.t.Fatalf("node %d stopped: %v", id, tn.n.Err())
		}
		e.waitIdle(id)
	}
}

// deliver delivers the messages sent so far, one at a time (each to an
// idle loop), and the ones they cause, until none is left or rounds is
// reached (0: no limit). It returns one line per message.
func (e *testEnv) deliver(rounds int) string {
	var b strings.Builder
	total := 0
	for r := 0; rounds == 0 || r < rounds; r++ {
		e.mu.Lock()
		batch := e.out
		e.out = nil
		e.mu.Unlock()
		if len(batch) == 0 {
			break
		}
		for _, s := range batch {
			if total++; total > 1000 {
				e.t.Fatalf("more than 1000 messages; the cluster does not settle:\n%s", b.String()[max(0, b.Len()-3000):])
			}
			m := s.m
			to := m.GetTo()
			tn := e.nodes[to]
			lost := tn == nil || e.cut[to] || e.cut[m.GetFrom()]
			fmt.Fprintf(&b, "%s", describe(m))
			if lost {
				b.WriteString(" (lost)\n")
				if s.snap {
					e.nodes[m.GetFrom()].n.ReportSnapshot(to, raft.SnapshotFailure)
				}
				continue
			}
			b.WriteString("\n")
			if s.snap {
				tn.n.DeliverSnapshot(m)
				e.waitIdle(to)
				e.nodes[m.GetFrom()].n.ReportSnapshot(to, raft.SnapshotFinish)
				e.waitIdle(m.GetFrom())
				continue
			}
			tn.n.Receive(m)
			e.waitIdle(to)
		}
	}
	if b.Len() == 0 {
		return "no messages\n"
	}
	return b.String()
}

// describe prints a message in one line.
func describe(m *pb.Message) string {
	s := fmt.Sprintf("%d->%d %s term=%d", m.GetFrom(), m.GetTo(), m.GetType(), m.GetTerm())
	switch m.GetType() {
	case pb.MsgApp:
		s += fmt.Sprintf(" logterm=%d index=%d commit=%d", m.GetLogTerm(), m.GetIndex(), m.GetCommit())
		if k := len(m.GetEntries()); k > 0 {
			var es []string
			for _, e := range m.GetEntries() {
				es = append(es, fmt.Sprintf("%d/%d", e.GetTerm(), e.GetIndex()))
			}
			s += " entries=" + strings.Join(es, ",")
		}
	case pb.MsgAppResp:
		s += fmt.Sprintf(" index=%d", m.GetIndex())
		if m.GetReject() {
			s += fmt.Sprintf(" reject hint=%d", m.GetRejectHint())
		}
	case pb.MsgHeartbeat:
		s += fmt.Sprintf(" commit=%d", m.GetCommit())
	case pb.MsgVote, pb.MsgPreVote:
		s += fmt.Sprintf(" logterm=%d index=%d", m.GetLogTerm(), m.GetIndex())
	case pb.MsgVoteResp, pb.MsgPreVoteResp:
		if m.GetReject() {
			s += " reject"
		}
	case pb.MsgSnap:
		meta := m.GetSnapshot().GetMetadata()
		s += fmt.Sprintf(" snapshot index=%d term=%d voters=%v", meta.GetIndex(), meta.GetTerm(), meta.GetConfState().GetVoters())
	}
	return s
}

// status prints every node's published state.
func (e *testEnv) status() string {
	var b strings.Builder
	for _, id := range e.ids() {
		tn := e.nodes[id]
		st := tn.n.Status()
		idx, data := tn.sm.state()
		fmt.Fprintf(&b, "%d: %s term=%d lead=%d commit=%d applied=%d sm=%d voters=%v", id, st.Role, st.Term, st.Leader, st.Commit, st.Applied, idx, st.Voters)
		if len(st.Learners) > 0 {
			fmt.Fprintf(&b, " learners=%v", st.Learners)
		}
		if len(data) > 0 {
			fmt.Fprintf(&b, " data=%v", data)
		}
		if err := tn.n.Stalled(); err != nil {
			fmt.Fprintf(&b, " STALLED")
		}
		select {
		case <-tn.n.Done():
			fmt.Fprintf(&b, " DEAD(%v)", tn.n.Err())
		default:
		}
		b.WriteString("\n")
	}
	return b.String()
}

func (e *testEnv) propose(id uint64, data string) {
	tn := e.nodes[id]
	if err := tn.n.Propose(context.Background(), []byte(data)); err != nil {
		e.t.Fatalf("propose on %d: %v", id, err)
	}
	e.waitIdle(id)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
