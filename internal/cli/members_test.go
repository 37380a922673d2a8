package cli

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/wire"
)

// jMember is the --json output of add-node, remove-node, promote-node and
// transfer-leader, as documented in docs/cli.md.
type jMember struct {
	OK      bool   `json:"ok"`
	Op      string `json:"op"`
	Message string `json:"message"`
}

var proposedRE = regexp.MustCompile(`^OK (membership change|membership removal|learner promote) proposed at index [1-9][0-9]*\n$`)

// memberRows returns the rows of the members table of a human status, by
// node id: the fields after the id.
func memberRows(t *testing.T, out string) map[string][]string {
	t.Helper()
	rows := map[string][]string{}
	in := false
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "  ID  ROLE"):
			in = true
		case in && strings.HasPrefix(line, "  "):
			f := strings.Fields(line)
			rows[f[0]] = f[1:]
		default:
			in = false
		}
	}
	return rows
}

// TestMembershipCommands grows a real 3-node cluster by a learner, promotes
// it, moves leadership to it and removes an original member, checking every
// output and the status table along the way.
func TestMembershipCommands(t *testing.T) {
	c := startCluster(t, 3)
	srv := "--server=" + c.addr(1) + "," + c.addr(2) + "," + c.addr(3)

	// status: the three voters, the leader marked.
	out, errs, code := runCLI(srv, "status")
	if code != 0 {
		t.Fatalf("status: %d %q", code, errs)
	}
	for _, want := range []string{"node id:       1\n", "snapshot index: 0\n", "members:       3 (3 voters)\n",
		"  ID  ROLE   RAFT ADDR"} {
		if !strings.Contains(out, want) {
			t.Fatalf("status lacks %q:\n%s", want, out)
		}
	}
	rows := memberRows(t, out)
	leader := c.WaitLeader()
	for id := uint64(1); id <= 3; id++ {
		r := rows[fmt.Sprint(id)]
		m := c.Peer(id)
		want := []string{"voter", m.RaftAddr, m.ClientAddr}
		if id == leader {
			want = append(want, "(leader)")
		}
		if fmt.Sprint(r) != fmt.Sprint(want) {
			t.Fatalf("status row of node %d: %q, want %q\n%s", id, r, want, out)
		}
	}
	if !strings.Contains(out, fmt.Sprintf("leader id:     %d\n", leader)) {
		t.Fatalf("status does not name leader %d:\n%s", leader, out)
	}

	// add-node --learner, then start the node with --join.
	m4 := c.AddSlot(4, true)
	out, errs, code = runCLI(srv, "add-node", "4", m4.RaftAddr, m4.ClientAddr, "--learner")
	if code != 0 || !proposedRE.MatchString(out) || !strings.HasPrefix(out, "OK membership change") {
		t.Fatalf("add-node: %d %q %q", code, out, errs)
	}
	out, errs, code = runCLI(srv, "add-node", "4", m4.RaftAddr, m4.ClientAddr, "--learner")
	if code != ExitInvalidArgument || out != "" || !strings.Contains(errs, "error: kayadb: invalid argument: node 4 is already a cluster member\n") ||
		!strings.Contains(errs, "hint: run `kayactl --server "+srv[len("--server="):]+" status` to see the current members\n") {
		t.Fatalf("add-node twice: %d %q %q", code, out, errs)
	}
	// status reads the members of the node it asks, which may be a
	// follower that has not applied the change yet: ask until it has
	// (bounded), as an operator would.
	wantLearner := fmt.Sprint([]string{"learner", m4.RaftAddr, m4.ClientAddr})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		out, _, _ = runCLI(srv, "status")
		r := memberRows(t, out)["4"]
		if fmt.Sprint(r) == wantLearner {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status row of the learner: %q\n%s", r, out)
		}
	}
	if !strings.Contains(out, "members:       4 (3 voters, 1 learner)\n") {
		t.Fatalf("status member count:\n%s", out)
	}
	// A learner cannot lead.
	if _, errs, code := runCLI(srv, "transfer-leader", "4"); code != ExitInvalidArgument ||
		!strings.Contains(errs, "cannot transfer leadership to node 4: it is not a voter") || !strings.Contains(errs, "promote-node") {
		t.Fatalf("transfer-leader to a learner: %d %q", code, errs)
	}
	c.Start(4)

	// promote-node: refused with "yet" until the learner has caught up.
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, errs, code = runCLI(srv, "--json", "promote-node", "4")
		if code == 0 {
			break
		}
		if code != ExitInvalidArgument || !strings.Contains(errs, "cannot promote node 4 yet") || time.Now().After(deadline) {
			t.Fatalf("promote-node: %d %q %q", code, out, errs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var jm jMember
	decodeStrict(t, out, &jm)
	if !jm.OK || jm.Op != "promote-node" || !proposedRE.MatchString("OK "+jm.Message+"\n") || !strings.HasPrefix(jm.Message, "learner promote") {
		t.Fatalf("promote-node --json: %q", out)
	}
	if _, errs, code := runCLI(srv, "promote-node", "4"); code != ExitInvalidArgument ||
		!strings.Contains(errs, "cannot promote node 4 (not a learner in current membership)") {
		t.Fatalf("promote-node of a voter: %d %q", code, errs)
	}

	// transfer-leader to the new voter; it then reports itself as leader.
	out, errs, code = runCLI(srv, "--timeout=10s", "transfer-leader", "4")
	if code != 0 || out != "OK leadership transferred to node 4\n" {
		t.Fatalf("transfer-leader: %d %q %q", code, out, errs)
	}
	out, errs, code = runCLI("--server="+m4.ClientAddr, "status")
	if code != 0 || !strings.Contains(out, "role:          leader\n") || !strings.Contains(out, "node id:       4\n") ||
		!strings.Contains(out, "leader id:     4\n") {
		t.Fatalf("status of the new leader: %d %q\n%s", code, errs, out)
	}
	if r := memberRows(t, out)["4"]; fmt.Sprint(r) != fmt.Sprint([]string{"voter", m4.RaftAddr, m4.ClientAddr, "(leader)"}) {
		t.Fatalf("status row of the new leader: %q\n%s", r, out)
	}
	// The JSON document carries the same members.
	out, _, code = runCLI("--server="+m4.ClientAddr, "--json", "status")
	var doc struct {
		Role     string `json:"role"`
		NodeID   uint64 `json:"node_id"`
		LeaderID uint64 `json:"leader_id"`
		Members  []struct {
			ID   uint64 `json:"id"`
			Role string `json:"role"`
		} `json:"members"`
		SnapshotIndex *uint64         `json:"snapshot_index"`
		Engine        json.RawMessage `json:"engine"`
	}
	decode(t, out, &doc)
	if code != 0 || doc.Role != "leader" || doc.NodeID != 4 || doc.LeaderID != 4 || len(doc.Members) != 4 ||
		doc.SnapshotIndex == nil || len(doc.Engine) == 0 {
		t.Fatalf("status --json: %d %s", code, out)
	}

	// A node that is not a member cannot be removed (and kayactl says that
	// this is the reason); an original member can.
	if _, errs, code := runCLI(srv, "remove-node", "9"); code != ExitInvalidArgument ||
		!strings.Contains(errs, "error: cannot remove node 9: it is not a member of the cluster (the members: 1 (voter), 2 (voter), 3 (voter), 4 (voter))\n") ||
		!strings.Contains(errs, "hint: check the id: `kayactl --server "+srv[len("--server="):]+" status` lists the members and their roles") {
		t.Fatalf("remove-node of a stranger: %d %q", code, errs)
	}
	out, errs, code = runCLI(srv, "--json", "remove-node", "1")
	jm = jMember{}
	decodeStrict(t, out, &jm)
	if code != 0 || !jm.OK || jm.Op != "remove-node" || !proposedRE.MatchString("OK "+jm.Message+"\n") ||
		!strings.HasPrefix(jm.Message, "membership removal") {
		t.Fatalf("remove-node --json: %d %q %q", code, out, errs)
	}
	out, _, _ = runCLI("--server="+m4.ClientAddr, "status")
	rows = memberRows(t, out)
	if _, ok := rows["1"]; ok || len(rows) != 3 || !strings.Contains(out, "members:       3 (3 voters)\n") {
		t.Fatalf("status after removing node 1:\n%s", out)
	}
	// A removed id never comes back.
	if _, errs, code := runCLI("--server="+m4.ClientAddr, "add-node", "1", c.Peer(1).RaftAddr, c.Peer(1).ClientAddr); code != ExitInvalidArgument ||
		!strings.Contains(errs, "node 1 was removed from this cluster") {
		t.Fatalf("add-node of a removed id: %d %q", code, errs)
	}
}

// TestMembershipArgs: bad arguments are refused before anything is sent.
func TestMembershipArgs(t *testing.T) {
	fake := newFakeNode(t)
	s := "--server=" + fake.addr
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"add-node", "x", "10.0.0.4:7481", "10.0.0.4:7379"}, `error: node ID "x" is not a node id: give the node's positive integer id`},
		{[]string{"add-node", "1.5", "10.0.0.4:7481", "10.0.0.4:7379"}, `error: node ID "1.5" is not a node id`},
		{[]string{"add-node", "18446744073709551616", "10.0.0.4:7481", "10.0.0.4:7379"}, `is not a node id`},
		{[]string{"add-node", "0", "10.0.0.4:7481", "10.0.0.4:7379"}, "error: node ID 0 is not valid: node ids are positive integers"},
		{[]string{"add-node", "4", "10.0.0.4", "10.0.0.4:7379"}, `error: RAFT_ADDR "10.0.0.4" is not host:port (for example 10.0.0.4:7481)`},
		{[]string{"add-node", "4", "10.0.0.4:7481", "10.0.0.4"}, `error: CLIENT_ADDR "10.0.0.4" is not host:port (for example 10.0.0.4:7379)`},
		{[]string{"add-node", "4", ":7481", "10.0.0.4:7379"}, `error: RAFT_ADDR ":7481" has no host`},
		{[]string{"add-node", "4", "10.0.0.4:http", "10.0.0.4:7379"}, `error: RAFT_ADDR "10.0.0.4:http": port "http" is not a number from 1 to 65535`},
		{[]string{"add-node", "4", "10.0.0.4:70000", "10.0.0.4:7379"}, `port "70000" is not a number from 1 to 65535`},
		{[]string{"add-node", "4", "10.0.0.4:7481", "10.0.0.4:7481"}, "error: RAFT_ADDR and CLIENT_ADDR are both 10.0.0.4:7481"},
		{[]string{"add-node", "4", "10.0.0.4:7481"}, "error: kayactl add-node takes ID, RAFT_ADDR and CLIENT_ADDR (got 2 arguments)"},
		{[]string{"remove-node", "abc"}, `error: node ID "abc" is not a node id`},
		{[]string{"remove-node", "0"}, "error: node ID 0 is not valid"},
		{[]string{"remove-node"}, "error: kayactl remove-node takes ID (got 0 arguments)"},
		{[]string{"promote-node", "4x"}, `error: node ID "4x" is not a node id`},
		{[]string{"promote-node", "1", "2"}, "error: kayactl promote-node takes ID (got 2 arguments)"},
		{[]string{"transfer-leader", "0"}, "error: node ID 0 is not valid"},
		{[]string{"transfer-leader", "leader"}, `error: node ID "leader" is not a node id`},
		{[]string{"add-node", "4", "10.0.0.4:7481", "10.0.0.4:7379", "--voter"}, "error: unknown flag: --voter"},
	}
	for _, tc := range cases {
		out, errs, code := runCLI(append([]string{s}, tc.args...)...)
		if code != ExitInvalidArgument || out != "" || !strings.Contains(errs, tc.want) || !strings.Contains(errs, "\nhint: ") {
			t.Errorf("kayactl %s: exit %d, stdout %q, stderr %q; want exit 4 and %q", strings.Join(tc.args, " "), code, out, errs, tc.want)
		}
	}
	// Local mode (--data) has no cluster to change.
	local := t.TempDir()
	for _, args := range [][]string{
		{"add-node", "4", "10.0.0.4:7481", "10.0.0.4:7379"}, {"remove-node", "4"}, {"promote-node", "4"}, {"transfer-leader", "4"},
	} {
		_, errs, code := runCLI(append([]string{"--data", local}, args...)...)
		if code != ExitInvalidArgument || !strings.Contains(errs, "error: "+args[0]+" needs --server ADDR[,ADDR...] (or $KAYA_SERVER)") {
			t.Errorf("kayactl %s without --server: %d %q", strings.Join(args, " "), code, errs)
		}
	}
	if n := fake.count(); n != 0 {
		t.Fatalf("the server received %d requests for invalid command lines", n)
	}
}

// TestMembershipOutputs pins the request each command sends and its
// outputs, against a fake node; the leader is found through a NOT_LEADER
// hint.
func TestMembershipOutputs(t *testing.T) {
	leader := newFakeNode(t)
	follower := newFakeNode(t)
	follower.setHandle(func(op wire.Opcode, p []byte) (wire.Status, []byte) {
		return wire.StatusNotLeader, wire.AppendNotLeader(nil, leader.addr)
	})
	leader.setHandle(func(op wire.Opcode, p []byte) (wire.Status, []byte) {
		switch op {
		case wire.OpAddMember:
			return wire.StatusOK, []byte("membership change proposed at index 12")
		case wire.OpRemoveMember:
			return wire.StatusOK, []byte("membership removal proposed at index 13")
		case wire.OpPromoteLearner:
			return wire.StatusOK, []byte("learner promote proposed at index 14")
		case wire.OpTransferLeader:
			return wire.StatusOK, nil
		}
		return wire.StatusError, wire.AppendError(nil, "unexpected")
	})
	s := "--server=" + follower.addr
	learner := true
	cases := []struct {
		args    []string
		op      wire.Opcode
		payload []byte
		human   string
	}{
		{[]string{"add-node", "4", "10.0.0.4:7481", "10.0.0.4:7379", "--learner"}, wire.OpAddMember,
			wire.AppendAddMember(nil, 4, "10.0.0.4:7481", "10.0.0.4:7379", &learner), "membership change proposed at index 12"},
		{[]string{"remove-node", "4"}, wire.OpRemoveMember, wire.AppendRemoveMember(nil, 4), "membership removal proposed at index 13"},
		{[]string{"promote-node", "4"}, wire.OpPromoteLearner, wire.AppendPromoteLearner(nil, 4), "learner promote proposed at index 14"},
		{[]string{"transfer-leader", "2"}, wire.OpTransferLeader, wire.AppendTransferLeader(nil, 0, 2), "leadership transferred to node 2"},
	}
	for _, tc := range cases {
		out, errs, code := runCLI(append([]string{s}, tc.args...)...)
		if code != 0 || out != "OK "+tc.human+"\n" || errs != "" {
			t.Fatalf("kayactl %s: %d %q %q", strings.Join(tc.args, " "), code, out, errs)
		}
		out, errs, code = runCLI(append([]string{s, "--json"}, tc.args...)...)
		var jm jMember
		decodeStrict(t, out, &jm)
		if code != 0 || jm != (jMember{OK: true, Op: tc.args[0], Message: tc.human}) || errs != "" {
			t.Fatalf("kayactl --json %s: %d %q %q", strings.Join(tc.args, " "), code, out, errs)
		}
		want := string(wire.AppendRequest(nil, tc.op, tc.payload))
		for _, n := range []*fakeNode{follower, leader} {
			got := n.requests(tc.op)
			if len(got) != 2 || got[0] != want || got[1] != want {
				t.Fatalf("%v requests at %s: % x, want 2 × % x", tc.op, n.addr, got, want)
			}
		}
	}
	// add-node without --learner sends is_learner 0.
	if _, _, code := runCLI(s, "add-node", "5", "10.0.0.5:7481", "10.0.0.5:7379"); code != 0 {
		t.Fatalf("add-node voter: %d", code)
	}
	voter := false
	if got := leader.requests(wire.OpAddMember); got[2] != string(wire.AppendRequest(nil, wire.OpAddMember, wire.AppendAddMember(nil, 5, "10.0.0.5:7481", "10.0.0.5:7379", &voter))) {
		t.Fatalf("ADD_MEMBER voter: % x", got[2])
	}
}

// TestMembershipFailures: server refusals, lost replies and no leader.
func TestMembershipFailures(t *testing.T) {
	node := newFakeNode(t)
	node.setHandle(func(op wire.Opcode, p []byte) (wire.Status, []byte) {
		switch op {
		case wire.OpAddMember:
			return wire.StatusError, wire.AppendError(nil, "another membership change is in progress on this leader; wait for it to finish and retry")
		case wire.OpRemoveMember, wire.OpTransferLeader:
			return 0xffff, nil // drop the connection: the reply is lost
		case wire.OpPromoteLearner:
			return wire.StatusNotLeader, nil // no leader known
		}
		return wire.StatusError, wire.AppendError(nil, "unexpected")
	})
	s := "--server=" + node.addr
	out, errs, code := runCLI(s, "add-node", "4", "10.0.0.4:7481", "10.0.0.4:7379")
	if code != ExitError || out != "" || !strings.Contains(errs, "error: kayadb: server error (status 9 ERROR): another membership change is in progress on this leader; wait for it to finish and retry\n") {
		t.Fatalf("add-node while busy: %d %q %q", code, out, errs)
	}
	out, errs, code = runCLI(s, "--json", "remove-node", "4")
	if code != ExitError || out != "" || !strings.Contains(errs, "write outcome unknown") ||
		!strings.Contains(errs, "hint: the request reached the cluster but no reply came back: the change may or may not have been made; run `kayactl --server "+node.addr+" status` to see the members before retrying\n") {
		t.Fatalf("remove-node, reply lost: %d %q %q", code, out, errs)
	}
	_, errs, code = runCLI(s, "transfer-leader", "2")
	if code != ExitError || !strings.Contains(errs, "leadership may or may not have moved") {
		t.Fatalf("transfer-leader, reply lost: %d %q", code, errs)
	}
	if n := len(node.requests(wire.OpRemoveMember)) + len(node.requests(wire.OpTransferLeader)); n != 2 {
		t.Fatalf("%d REMOVE_MEMBER/TRANSFER_LEADER requests, want 1 each (never re-sent)", n)
	}
	start := time.Now()
	_, errs, code = runCLI(s, "--timeout=500ms", "promote-node", "4")
	if code != ExitError || !strings.Contains(errs, "hint: no answer from a leader") || time.Since(start) > 5*time.Second {
		t.Fatalf("promote-node without a leader: %d %q", code, errs)
	}
}

// TestStatusOlderServer: a STATS document without the membership members
// prints exactly the fields it always did.
func TestStatusOlderServer(t *testing.T) {
	node := newFakeNode(t)
	node.setHandle(func(op wire.Opcode, p []byte) (wire.Status, []byte) {
		return wire.StatusOK, []byte(`{"role":"follower","term":4,"commit_index":9,"applied_index":8,"peer_count":2,"raft_groups":1,"engine":{"put_count":3}}`)
	})
	out, errs, code := runCLI("--server="+node.addr, "status")
	want := "=== KayaDB Cluster Node Status (" + node.addr + ") ===\n" +
		"role:          follower\nterm:          4\ncommit index:  9\napplied index: 8\npeers:         2\nraft groups:   1\n" +
		"engine:\n  put_count              3\n"
	if code != 0 || out != want {
		t.Fatalf("status: %d %q\n got:\n%s\nwant:\n%s", code, errs, out, want)
	}
	// A newer one, no leader known, a member whose role this kayactl does
	// not know and an address that needs quoting.
	node.setHandle(func(op wire.Opcode, p []byte) (wire.Status, []byte) {
		return wire.StatusOK, []byte(`{"role":"candidate","term":5,"commit_index":9,"applied_index":9,"peer_count":2,"raft_groups":1,` +
			`"engine":{"put_count":1234567,"wal_bytes_written":3145728,"wal_fsync_total_us":1500,"flush_max_us":2500000,"compaction_total_us":750},` +
			`"node_id":2,"leader_id":0,"snapshot_index":8,"version":"v1.2.3","members":[` +
			`{"id":2,"raft_addr":"10.0.0.2:7481","client_addr":"10.0.0.2:7379","role":"voter"},` +
			`{"id":1,"raft_addr":"10.0.0.1:7481","client_addr":"10.0.0.1:7379","role":"voter"},` +
			`{"id":3,"raft_addr":"h\u001b[2J:1","client_addr":"","role":"unknown"}]}`)
	})
	out, _, code = runCLI("--server="+node.addr, "status")
	// The members table comes first; engine counters in human units.
	want = "=== KayaDB Cluster Node Status (" + node.addr + ") ===\n" +
		"members:       3 (2 voters, 1 unknown)\n" +
		"  ID  ROLE     RAFT ADDR      CLIENT ADDR\n" +
		"  1   voter    10.0.0.1:7481  10.0.0.1:7379\n" +
		"  2   voter    10.0.0.2:7481  10.0.0.2:7379\n" +
		"  3   unknown  \"h\\x1b[2J:1\"   \"\"\n" +
		"node id:       2\nrole:          candidate\nleader id:     0 (no leader known)\n" +
		"term:          5\ncommit index:  9\napplied index: 9\nsnapshot index: 8\npeers:         2\nraft groups:   1\n" +
		"version:       v1.2.3\n" +
		"engine:\n" +
		"  compaction_total       750µs\n" +
		"  flush_max              2.50s\n" +
		"  put_count              1,234,567\n" +
		"  wal_bytes_written      3.0MiB\n" +
		"  wal_fsync_total        1.5ms\n"
	if code != 0 || out != want {
		t.Fatalf("status:\n got:\n%s\nwant:\n%s", out, want)
	}
}

// fakeNode answers the client protocol with handle (HELLO is built in) and
// records the request frames. A handle status of 0xffff closes the
// connection instead of answering.
type fakeNode struct {
	addr   string
	handle func(op wire.Opcode, payload []byte) (wire.Status, []byte)

	mu   sync.Mutex
	reqs []string // request frames, HELLO excluded
	ops  []wire.Opcode
}

func newFakeNode(t *testing.T) *fakeNode {
	ln := listenLocal(t)
	n := &fakeNode{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var conns sync.Map
	t.Cleanup(func() {
		_ = ln.Close()
		conns.Range(func(k, _ any) bool { _ = k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(nc, true)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				n.serve(nc)
			}()
		}
	}()
	return n
}

func (n *fakeNode) serve(nc net.Conn) {
	br := bufio.NewReader(nc)
	for {
		op, p, _, err := wire.ReadRequest(br, nil)
		if err != nil {
			return
		}
		st, reply := wire.StatusOK, wire.AppendHello(nil, wire.ProtocolVersion)
		if op != wire.OpHello {
			n.mu.Lock()
			n.reqs = append(n.reqs, string(wire.AppendRequest(nil, op, p)))
			n.ops = append(n.ops, op)
			h := n.handle
			n.mu.Unlock()
			st, reply = wire.StatusError, wire.AppendError(nil, "no handler")
			if h != nil {
				st, reply = h(op, p)
			}
		}
		if st == 0xffff {
			return
		}
		if _, err := nc.Write(wire.AppendResponse(nil, st, reply)); err != nil {
			return
		}
	}
}

// setHandle replaces the request handler.
func (n *fakeNode) setHandle(h func(op wire.Opcode, payload []byte) (wire.Status, []byte)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.handle = h
}

// requests returns the frames received with opcode op.
func (n *fakeNode) requests(op wire.Opcode) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for i, o := range n.ops {
		if o == op {
			out = append(out, n.reqs[i])
		}
	}
	return out
}

// count is the number of requests other than HELLO.
func (n *fakeNode) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.reqs)
}
