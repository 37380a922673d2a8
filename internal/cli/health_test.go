package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/wire"
)

type jHealth struct {
	OK       bool   `json:"ok"`
	Role     string `json:"role"`
	Endpoint string `json:"endpoint"`
	NodeID   uint64 `json:"node_id"`
	LeaderID uint64 `json:"leader_id"`
	Term     uint64 `json:"term"`
	Error    string `json:"error"`
}

// statsDoc is a STATS document of a newer server.
func statsDoc(role string, node, leader, term uint64) []byte {
	return fmt.Appendf(nil, `{"role":%q,"term":%d,"commit_index":9,"applied_index":9,"peer_count":2,"raft_groups":1,"engine":{},"node_id":%d,"leader_id":%d,"members":[]}`,
		role, term, node, leader)
}

// TestHealthNeedsALeader: a node that knows no leader (a candidate, or a
// follower without one) is not healthy: exit 1, NOT READY, and --json says
// which leader (0: none) the node knows. It used to print "OK
// role=follower" and exit 0 while /readyz said "not ready".
func TestHealthNeedsALeader(t *testing.T) {
	node := newFakeNode(t)
	stats := statsDoc("follower", 2, 0, 7)
	node.setHandle(func(op wire.Opcode, p []byte) (wire.Status, []byte) {
		switch op {
		case wire.OpStats:
			return wire.StatusOK, stats
		case wire.OpHealth:
			return wire.StatusOK, wire.AppendHealth(nil, wire.HealthFollower)
		}
		return wire.StatusError, wire.AppendError(nil, "unexpected")
	})
	srv := "--server=" + node.addr
	out, errs, code := runCLI(srv, "health")
	if code != ExitError || out != "NOT READY role=follower\n" ||
		!strings.Contains(errs, "error: "+node.addr+": no leader known (role follower, term 7): an election is under way, or this node cannot reach a majority of the voters") ||
		!strings.Contains(errs, "status --cluster") {
		t.Fatalf("follower without a leader: %d %q %q", code, out, errs)
	}
	out, _, code = runCLI(srv, "--json", "health")
	var h jHealth
	decodeStrict(t, out, &h)
	if code != ExitError || h.OK || h.Role != "follower" || h.LeaderID != 0 || h.NodeID != 2 || h.Term != 7 || h.Endpoint != node.addr || h.Error == "" {
		t.Fatalf("--json: %d %+v", code, h)
	}

	stats = statsDoc("candidate", 2, 0, 8)
	if out, _, code := runCLI(srv, "health"); code != ExitError || out != "NOT READY role=candidate\n" {
		t.Fatalf("candidate: %d %q", code, out)
	}

	stats = statsDoc("follower", 2, 3, 8)
	out, _, code = runCLI(srv, "--json", "health")
	h = jHealth{}
	decodeStrict(t, out, &h)
	if code != 0 || !h.OK || h.LeaderID != 3 || h.Error != "" {
		t.Fatalf("follower of node 3 --json: %d %+v", code, h)
	}
	if out, _, code := runCLI(srv, "health"); code != 0 || out != "OK role=follower\n" {
		t.Fatalf("follower of node 3: %d %q", code, out)
	}

	// A server that wants a client token for STATS: HEALTH still tells a
	// leader; a follower cannot be judged, and kayactl says why.
	stats = nil
	node.setHandle(func(op wire.Opcode, p []byte) (wire.Status, []byte) {
		if op == wire.OpStats {
			return wire.StatusError, wire.AppendError(nil, wire.MsgClientCredential)
		}
		return wire.StatusOK, wire.AppendHealth(nil, wire.HealthFollower)
	})
	if out, errs, code := runCLI(srv, "health"); code != ExitError || out != "NOT READY role=follower\n" || !strings.Contains(errs, "client token") {
		t.Fatalf("follower, STATS refused: %d %q %q", code, out, errs)
	}
}

// TestHealthOfARealCluster: every node of a healthy cluster is OK and
// names the same leader; a node left alone by its peers is not.
func TestHealthOfARealCluster(t *testing.T) {
	c := startCluster(t, 3)
	leader := c.WaitLeader()
	servers := "--server=" + c.addr(1) + "," + c.addr(2) + "," + c.addr(3)
	// Followers learn the leader from its first heartbeat.
	var hs []jHealth
	for deadline := time.Now().Add(10 * time.Second); ; {
		out, errs, code := runCLI(servers, "--json", "health")
		hs = nil
		if err := json.Unmarshal([]byte(out), &hs); err != nil {
			t.Fatalf("--json health: %v: %q %q", err, out, errs)
		}
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not healthy: %s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, h := range hs {
		if !h.OK || h.LeaderID != leader {
			t.Fatalf("node %d: %+v, want leader %d", h.NodeID, h, leader)
		}
	}

	// Stop two nodes: the third loses its leader (a follower stops hearing
	// from it; a leader steps down without a quorum) and must say so.
	alone := leader%3 + 1
	for _, id := range c.IDs() {
		if id != alone {
			c.Stop(id)
		}
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		out, errs, code := runCLI("--server="+c.addr(alone), "health")
		if code == ExitError && strings.HasPrefix(out, "NOT READY role=") && strings.Contains(errs, "no leader known") {
			break
		}
		if code != 0 || out != "OK role=follower\n" && out != "OK role=leader\n" {
			t.Fatalf("node %d alone: %d %q %q", alone, code, out, errs)
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d alone still says %q", alone, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
