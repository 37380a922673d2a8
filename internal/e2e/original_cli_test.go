package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// originalStartCluster holds the command lines with which the original
// KayaDB's scripts/start-cluster.sh starts its three nodes (see the
// inventory of the original): raft 127.0.0.1:7481-7483, clients
// 127.0.0.1:7379-7381, data in $CLUSTER_DIR/nodeN, and each node given
// only the OTHER members with --peer ID=RAFT,CLIENT. No --metrics-addr: every
// node asks for the default 127.0.0.1:9090, which at most one of them gets
// (the others run without the HTTP listener, with a warning). The test
// moves the ports (relocate) and adds nothing else but the log files.
const originalStartCluster = `
"$KAYA_SERVER" --node-id 1 --raft-addr 127.0.0.1:7481 --client-addr 127.0.0.1:7379 \
  --peer 2=127.0.0.1:7482,127.0.0.1:7380 --peer 3=127.0.0.1:7483,127.0.0.1:7381 \
  --data "$CLUSTER_DIR/node1" >"$CLUSTER_DIR/node-1.log" 2>&1 &
echo $! > "$CLUSTER_DIR/node1.pid"
"$KAYA_SERVER" --node-id 2 --raft-addr 127.0.0.1:7482 --client-addr 127.0.0.1:7380 \
  --peer 1=127.0.0.1:7481,127.0.0.1:7379 --peer 3=127.0.0.1:7483,127.0.0.1:7381 \
  --data "$CLUSTER_DIR/node2" >"$CLUSTER_DIR/node-2.log" 2>&1 &
echo $! > "$CLUSTER_DIR/node2.pid"
"$KAYA_SERVER" --node-id 3 --raft-addr 127.0.0.1:7483 --client-addr 127.0.0.1:7381 \
  --peer 1=127.0.0.1:7481,127.0.0.1:7379 --peer 2=127.0.0.1:7482,127.0.0.1:7380 \
  --data "$CLUSTER_DIR/node3" >"$CLUSTER_DIR/node-3.log" 2>&1 &
echo $! > "$CLUSTER_DIR/node3.pid"
`

// TestOriginalStartClusterCommandLines starts three nodes with the
// original KayaDB's start-cluster command lines, writes through one node,
// and checks that the write reached every node's engine: through each
// node's applied index, then, with the nodes stopped, by reading each data
// directory with kayactl --data.
func TestOriginalStartClusterCommandLines(t *testing.T) {
	e, raftBase, clientBase := newRunbookEnv(t, 27680, 27578)
	bin := filepath.Join(e.dir, "bin")
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/kayadb-server", "./cmd/kayactl")
	build.Dir = e.root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	e.vars = append(e.vars, "KAYA_SERVER="+filepath.Join(bin, "kayadb-server"))
	pids := func() []int {
		var out []int
		for n := 1; n <= 3; n++ {
			b, err := os.ReadFile(filepath.Join(e.dir, fmt.Sprintf("node%d.pid", n)))
			if err != nil {
				continue
			}
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				out = append(out, pid)
			}
		}
		return out
	}
	// stop sends SIGTERM to every node and waits (30 s at most) until they
	// are gone.
	stop := func() {
		ps := pids()
		for _, pid := range ps {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
		deadline := time.Now().Add(30 * time.Second)
		for _, pid := range ps {
			for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if syscall.Kill(pid, 0) == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				t.Errorf("node pid %d did not stop within 30 s of SIGTERM", pid)
			}
		}
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := e.bash(ctx, "set -euo pipefail\n"+relocate(originalStartCluster, raftBase, clientBase)); err != nil {
		t.Fatalf("starting the nodes: %v\n%s", err, out)
	}
	addr := func(n int) string { return fmt.Sprintf("127.0.0.1:%d", clientBase+n) }
	leader := e.leader(clientBase)
	if out, errs, code := e.kayactl("--server", addr(1), "--timeout", "10s", "put", "original-cli", "replicated"); code != 0 {
		t.Fatalf("put through node 1: %d %s %s\n%s", code, out, errs, e.logs())
	}
	status := func(n int) (applied uint64, members []map[string]any) {
		out, errs, code := e.kayactl("--server", addr(n), "--timeout", "2s", "status", "--json")
		if code != 0 {
			t.Fatalf("status of node %d: %d %s", n, code, errs)
		}
		var st struct {
			Applied uint64           `json:"applied_index"`
			Members []map[string]any `json:"members"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status --json of node %d: %v\n%s", n, err, out)
		}
		return st.Applied, st.Members
	}
	want, members := status(leader)
	// Every node's roster has the three members, each at the addresses its
	// own command line gave (node N's entry from its --node-id and flags).
	if len(members) != 3 {
		t.Fatalf("members: %v", members)
	}
	for i, m := range members {
		n := i + 1
		if m["raft_addr"] != fmt.Sprintf("127.0.0.1:%d", raftBase+n) || m["client_addr"] != addr(n) || m["role"] != "voter" {
			t.Errorf("member %d: %v", n, m)
		}
	}
	for n := 1; n <= 3; n++ {
		deadline := time.Now().Add(20 * time.Second)
		for {
			got, _ := status(n)
			if got >= want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d applied %d, the leader %d\n%s", n, got, want, e.logs())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	stop()
	for n := 1; n <= 3; n++ {
		out, errs, code := e.kayactl("--data", filepath.Join(e.dir, fmt.Sprintf("node%d", n), "engine"), "get", "original-cli")
		if code != 0 || out != "replicated\n" {
			t.Errorf("node %d's engine: get: %d %q %s", n, code, out, errs)
		}
	}
}
