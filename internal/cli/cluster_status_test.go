package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestStatusClusterAndWatch(t *testing.T) {
	c := startCluster(t, 3)
	srv := "--server=" + c.addr(2)
	out, errs, code := runCLI(srv, "status", "--cluster")
	if code != 0 || !strings.Contains(out, "OK: every member answers") || strings.Count(out, "127.0.0.1:") != 3 {
		t.Fatalf("healthy cluster: exit %d\n%s%s", code, out, errs)
	}
	out, _, code = runCLI(srv, "--json", "status", "--cluster")
	var v clusterView
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || !v.OK || len(v.Nodes) != 3 || len(v.Problems) != 0 {
		t.Fatalf("--json: exit %d %q", code, out)
	}
	leaders := 0
	for _, n := range v.Nodes {
		if !n.Reachable || n.AppliedIndex == 0 || len(n.Members) != 3 {
			t.Fatalf("node view %+v", n)
		}
		if n.Role == "leader" {
			leaders++
		}
	}
	if leaders != 1 {
		t.Fatalf("%d leaders in %+v", leaders, v.Nodes)
	}
	out, _, code = runCLI(srv, "watch", "status", "--count", "2", "--interval", "100ms")
	if code != 0 || strings.Count(out, "CLIENT ADDR") != 2 {
		t.Fatalf("watch: exit %d\n%s", code, out)
	}
	// --json: one JSON document per refresh, nothing else on stdout.
	out, _, code = runCLI(srv, "--json", "watch", "status", "--count", "2", "--interval", "100ms")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || len(lines) != 2 {
		t.Fatalf("watch --json: exit %d\n%s", code, out)
	}
	for _, line := range lines {
		var w struct {
			Time string `json:"time"`
			clusterView
			Error string `json:"error"`
		}
		decodeStrict(t, line, &w)
		if _, err := time.Parse(time.RFC3339Nano, w.Time); err != nil || !w.OK || len(w.Nodes) != 3 || w.Error != "" {
			t.Fatalf("watch --json line %q", line)
		}
	}

	// A member down: reported, exit status 1.
	down := uint64(3)
	if c.addr(2) == c.addr(down) {
		down = 1
	}
	c.Stop(down)
	out, errs, code = runCLI(srv, "status", "--cluster")
	if code != ExitError || !strings.Contains(out, "DOWN") || !strings.Contains(out, "does not answer") || !strings.Contains(errs, "split-brain") {
		t.Fatalf("a node down: exit %d\n%s%s", code, out, errs)
	}
}

func TestCompareViews(t *testing.T) {
	node := func(id uint64, role string, term, lead, applied uint64) nodeView {
		return nodeView{ID: id, Reachable: true, Role: role, Term: term, LeaderID: lead, AppliedIndex: applied, Members: []uint64{1, 2, 3}}
	}
	cases := []struct {
		name  string
		nodes []nodeView
		want  string // "" = no problem
	}{
		{"healthy", []nodeView{node(1, "leader", 5, 1, 100), node(2, "follower", 5, 1, 100), node(3, "follower", 5, 1, 99)}, ""},
		{"two leaders in one term", []nodeView{node(1, "leader", 5, 1, 100), node(2, "leader", 5, 2, 100), node(3, "follower", 5, 1, 100)}, "SPLIT BRAIN"},
		{"stale leader", []nodeView{node(1, "leader", 4, 1, 90), node(2, "leader", 5, 2, 100), node(3, "follower", 5, 2, 100)}, "more than one node says it leads"},
		{"no leader", []nodeView{node(1, "candidate", 6, 0, 90), node(2, "follower", 5, 0, 100), node(3, "follower", 5, 0, 100)}, "no node says it leads"},
		{"disagreement", []nodeView{node(1, "leader", 5, 1, 100), node(2, "follower", 5, 1, 100), node(3, "follower", 5, 0, 100)}, "disagree on the leader"},
		{"lag", []nodeView{node(1, "leader", 5, 1, 5000), node(2, "follower", 5, 1, 5000), node(3, "follower", 5, 1, 10)}, "node 3 lags"},
		{"members differ", []nodeView{node(1, "leader", 5, 1, 100), node(2, "follower", 5, 1, 100), {ID: 3, Reachable: true, Role: "follower", Term: 5, LeaderID: 1, AppliedIndex: 100, Members: []uint64{1, 2, 3, 4}}}, "sees members"},
		{"down", []nodeView{node(1, "leader", 5, 1, 100), node(2, "follower", 5, 1, 100), {ID: 3, Error: "refused"}}, "does not answer"},
	}
	for _, c := range cases {
		got := strings.Join(compareViews(c.nodes), " | ")
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: problems %q; want %q", c.name, got, c.want)
		}
	}
}

// TestStatusClusterFirstSeedFrozen: a --server that accepts connections
// but never answers (a SIGSTOPped node) must not hide the others.
func TestStatusClusterFirstSeedFrozen(t *testing.T) {
	c := startCluster(t, 3)
	frozen := listenLocal(t) // accepts (the kernel does) and never answers
	defer frozen.Close()
	out, errs, code := runCLI("--server="+frozen.Addr().String()+","+c.addr(1), "--timeout", "1s", "status", "--cluster")
	if code != 0 || !strings.Contains(out, "OK: every member answers") {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
}
