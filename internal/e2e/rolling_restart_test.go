package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunbookRollingRestart runs every command of
// docs/runbooks/rolling-restart.md, as written, against real processes
// while a client writes without pause: every node is restarted (the
// followers first, then the leader after a leadership transfer), with a
// rebuilt binary and a changed flag. No acknowledged write may be lost,
// writes must go on during the roll, and the cluster must end with a
// leader and its three voters.
func TestRunbookRollingRestart(t *testing.T) {
	e, raftBase, clientBase := newRunbookEnv(t, 29480, 29378)
	defer func() { _, _ = e.bash(context.Background(), "scripts/stop-cluster.sh") }()
	// Small snapshot thresholds, so that a restarted node may have to catch
	// up from a snapshot as on a busy cluster.
	e.vars = append(e.vars, "KAYA_SNAPSHOT_ENTRIES=50", "KAYA_SNAPSHOT_CATCHUP_ENTRIES=10")
	main, cleanup := runbookScripts(t, filepath.Join(e.root, "docs", "runbooks", "rolling-restart.md"), raftBase, clientBase, 7)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var servers []string
	for n := 1; n <= 3; n++ {
		servers = append(servers, fmt.Sprintf("127.0.0.1:%d", clientBase+n))
	}
	all := strings.Join(servers, ",")
	stopLoad := e.startLoad("load", servers)
	start := time.Now()
	out, err := e.bash(ctx, main)
	elapsed := time.Since(start)
	load := stopLoad()
	if err != nil {
		t.Fatalf("runbook failed after %v: %v\n%s\n%s", elapsed, err, out, e.logs())
	}
	t.Logf("runbook ran in %v; %d writes acknowledged, %d failed, longest pause between acknowledgements %v",
		elapsed.Round(time.Millisecond), len(load.acked), load.failed, load.maxGap.Round(time.Millisecond))
	if os.Getenv("KAYA_E2E_VERBOSE") != "" {
		t.Log(out)
	}
	for _, want := range []string{"leadership transferred to node", "verdict: OK", ">>> done"} {
		if !strings.Contains(out, want) {
			t.Errorf("runbook output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "stop the roll here") {
		t.Fatalf("a node did not catch up:\n%s\n%s", out, e.logs())
	}

	// Every node was stopped cleanly exactly once and started twice, and
	// now logs JSON (the flag changed by the roll).
	for n := 1; n <= 3; n++ {
		data, err := os.ReadFile(filepath.Join(e.dir, fmt.Sprintf("node-%d.log", n)))
		if err != nil {
			t.Fatal(err)
		}
		log := string(data)
		if c := strings.Count(log, "stopped cleanly"); c != 1 {
			t.Errorf("node %d stopped cleanly %d times, want 1", n, c)
		}
		if c := strings.Count(log, "kayadb node started"); c != 2 {
			t.Errorf("node %d started %d times, want 2", n, c)
		}
		if after := log[strings.LastIndex(log, "stopped cleanly"):]; !strings.Contains(after, "\n{\"time\":") {
			t.Errorf("node %d does not log JSON after its restart:\n%s", n, after)
		}
	}

	// A leader and the three voters, seen alike by every node.
	st, errs, code := e.kayactl("--server", all, "--timeout", "10s", "--json", "status", "--all")
	if code != 0 {
		t.Fatalf("status --all: %d %s", code, errs)
	}
	var docs []struct {
		NodeID   uint64         `json:"node_id"`
		Role     string         `json:"role"`
		Term     uint64         `json:"term"`
		LeaderID uint64         `json:"leader_id"`
		Members  []statusMember `json:"members"`
	}
	if err := json.Unmarshal([]byte(st), &docs); err != nil {
		t.Fatalf("status --all --json: %v\n%s", err, st)
	}
	leaders := 0
	for _, d := range docs {
		if d.Role == "leader" {
			leaders++
		}
		if d.LeaderID == 0 || d.Term != docs[0].Term || d.LeaderID != docs[0].LeaderID {
			t.Errorf("node %d: term %d leader %d; node %d: term %d leader %d", d.NodeID, d.Term, d.LeaderID, docs[0].NodeID, docs[0].Term, docs[0].LeaderID)
		}
		if got := memberRoles(d.Members); got != "1:voter 2:voter 3:voter" {
			t.Errorf("node %d: members %s", d.NodeID, got)
		}
	}
	if len(docs) != 3 || leaders != 1 {
		t.Fatalf("%d nodes answered, %d leaders:\n%s", len(docs), leaders, st)
	}
	for _, k := range []string{"before-restart", "after-restart"} {
		if out, errs, code := e.kayactl("--server", all, "--timeout", "10s", "get", k); code != 0 || out != "yes\n" {
			t.Fatalf("get %s: %d %q %s", k, code, out, errs)
		}
	}
	// No acknowledged write was lost, and writes went on during the roll.
	e.checkAcked(all, "load", load)
	if len(load.acked) < 20 {
		t.Fatalf("only %d writes acknowledged during the roll", len(load.acked))
	}
	if load.maxGap > 8*time.Second {
		t.Fatalf("no write was acknowledged for %v during the roll", load.maxGap)
	}

	if out, err := e.bash(ctx, cleanup); err != nil {
		t.Fatalf("clean-up block: %v\n%s", err, out)
	}
}
