package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// runbookBlocks returns the `sh` code blocks of a Markdown page, in order,
// with the indentation of list items removed.
func runbookBlocks(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []string
	var cur []string
	indent, in := "", false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimLeft(line, " ")
		switch {
		case !in && trimmed == "```sh":
			in, cur = true, nil
			indent = line[:len(line)-len(trimmed)]
		case in && trimmed == "```":
			in = false
			blocks = append(blocks, strings.Join(cur, "\n"))
		case in:
			cur = append(cur, strings.TrimPrefix(line, indent))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if in {
		t.Fatalf("%s: unterminated code block", path)
	}
	return blocks
}

var (
	loopbackPort = regexp.MustCompile(`127\.0\.0\.1:(7[34][0-9][0-9])`)
	clusterPath  = regexp.MustCompile(`(^|[\s=])cluster/`)
)

// relocate moves the runbook's commands to other ports and the test's
// cluster directory; nothing else in them changes.
func relocate(block string, raftBase, clientBase int) string {
	block = loopbackPort.ReplaceAllStringFunc(block, func(m string) string {
		p, _ := strconv.Atoi(m[len("127.0.0.1:"):])
		switch {
		case p >= 7379 && p < 7400:
			return fmt.Sprintf("127.0.0.1:%d", clientBase+p-7378)
		case p >= 7481 && p < 7500:
			return fmt.Sprintf("127.0.0.1:%d", raftBase+p-7480)
		}
		return m
	})
	return clusterPath.ReplaceAllString(block, `$1$$CLUSTER_DIR/`)
}

// TestRunbookAddRemoveNode runs every command of
// docs/runbooks/add-remove-node.md, as written, against real processes:
// grow 3 → 4 → 5, shrink to 3, replace a failed node. Then it checks the
// final membership and the data.
func TestRunbookAddRemoveNode(t *testing.T) {
	const raftBase, clientBase = 28480, 28378
	e := newEnv(t, raftBase, clientBase)
	defer func() {
		cmd := exec.Command(filepath.Join(e.root, "scripts", "stop-cluster.sh"))
		cmd.Env = e.vars
		_ = cmd.Run()
	}()
	// Small snapshot thresholds, through the servers' environment, so that
	// the new nodes catch up by snapshot as they would on a large cluster.
	e.vars = append(e.vars, "KAYA_SNAPSHOT_ENTRIES=50", "KAYA_SNAPSHOT_CATCHUP_ENTRIES=10", "KAYA_TICK=50ms")
	blocks := runbookBlocks(t, filepath.Join(e.root, "docs", "runbooks", "add-remove-node.md"))
	if len(blocks) < 8 {
		t.Fatalf("found only %d sh blocks in the runbook", len(blocks))
	}
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	for i, b := range blocks {
		fmt.Fprintf(&script, "echo '>>> block %d'\n%s\n", i+1, relocate(b, raftBase, clientBase))
	}
	script.WriteString("echo '>>> done'\n")
	// The last block stops the cluster; run everything before it, check,
	// then run it.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	body := script.String()
	stopAt := strings.LastIndex(body, fmt.Sprintf("echo '>>> block %d'", len(blocks)))
	cmd := exec.CommandContext(ctx, "bash", "-c", body[:stopAt])
	cmd.Dir = e.root
	cmd.Env = e.vars
	// Writes continue through the whole procedure, to whichever nodes are
	// up (a client given every address that ever serves).
	var all []string
	for _, n := range []int{1, 2, 3, 4, 5, 6} {
		all = append(all, fmt.Sprintf("127.0.0.1:%d", clientBase+n))
	}
	stopLoad := make(chan struct{})
	loadDone := make(chan []string)
	go func() {
		var acked []string
		defer func() { loadDone <- acked }()
		for i := 0; ; i++ {
			select {
			case <-stopLoad:
				return
			default:
			}
			if _, err := os.Stat(filepath.Join(e.dir, "bin", "kayactl")); err != nil {
				time.Sleep(100 * time.Millisecond) // not built yet
				continue
			}
			k := fmt.Sprintf("load-%06d", i)
			c := exec.Command(filepath.Join(e.dir, "bin", "kayactl"), "--server", strings.Join(all, ","), "--timeout", "5s", "put", k, k)
			if c.Run() == nil {
				acked = append(acked, k)
			} else {
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()
	out, err := cmd.CombinedOutput()
	close(stopLoad)
	acked := <-loadDone
	if err != nil {
		t.Fatalf("runbook failed: %v\n%s\n%s", err, out, e.logs())
	}
	text := string(out)
	for _, want := range []string{
		"membership change proposed at index", "learner promote proposed at index", "membership removal proposed at index",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("runbook output lacks %q:\n%s", want, text)
		}
	}

	// The cluster ends with voters 1, 2 and 6, and every write of the page.
	servers := fmt.Sprintf("127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", clientBase+1, clientBase+2, clientBase+6)
	st, errs, code := e.kayactl("--server", servers, "--timeout", "10s", "status", "--json")
	if code != 0 {
		t.Fatalf("status: %d %s", code, errs)
	}
	var doc struct {
		Members []struct {
			ID   uint64 `json:"id"`
			Role string `json:"role"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(st), &doc); err != nil {
		t.Fatalf("status --json: %v\n%s", err, st)
	}
	var members []string
	for _, m := range doc.Members {
		members = append(members, fmt.Sprintf("%d:%s", m.ID, m.Role))
	}
	sort.Strings(members)
	if got := strings.Join(members, " "); got != "1:voter 2:voter 6:voter" {
		t.Fatalf("members after the runbook: %s\n%s", got, st)
	}
	for _, k := range []string{"before-growth", "after-growth", "after-shrink", "after-replacement"} {
		if out, errs, code := e.kayactl("--server", servers, "--timeout", "10s", "get", k); code != 0 || out != "yes\n" {
			t.Fatalf("get %s: %d %q %s", k, code, out, errs)
		}
	}
	// No acknowledged write was lost.
	scan, errs, code := e.kayactl("--server", servers, "--timeout", "10s", "--json", "scan", "load-")
	if code != 0 {
		t.Fatalf("scan: %d %s", code, errs)
	}
	for _, k := range acked {
		if !strings.Contains(scan, `"`+k+`"`) {
			t.Fatalf("acknowledged write %s lost", k)
		}
	}
	if len(acked) < 20 {
		t.Fatalf("only %d writes acknowledged during the runbook", len(acked))
	}
	t.Logf("%d writes acknowledged during the runbook", len(acked))
	// Node 6 (the replacement) holds the data too: it caught up by snapshot.
	out2, _, code := e.kayactl("--server", fmt.Sprintf("127.0.0.1:%d", clientBase+6), "status", "--json")
	if code != 0 || !strings.Contains(out2, `"snapshots_installed":`) || strings.Contains(out2, `"snapshots_installed":0`) {
		t.Fatalf("node 6 did not install a snapshot: %s", out2)
	}

	cmd = exec.CommandContext(ctx, "bash", "-c", "set -euo pipefail\n"+body[stopAt:])
	cmd.Dir = e.root
	cmd.Env = e.vars
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("clean-up block: %v\n%s", err, out)
	}
}
