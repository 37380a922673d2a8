package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
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

// freeBases returns port bases for a test: raftBase and clientBase moved by
// the first offset (0, 200 or 400) whose 60 ports above each base are free
// and not claimed by another test process on this machine (a lock file
// held until the test ends), so that two runs of the suite at the same
// time do not collide. The runbook tests' bases are 1000 apart (raft
// 22480, 28480, 29480, 30480 and 31480; clients 102 lower): clear of the
// other e2e tests (27xxx — 27480 for the scripts' cluster, 27680 for the
// original's command lines — and 23000-26999 for the sidecar test) and of
// Linux's ephemeral ports (32768 and up).
func freeBases(t *testing.T, raftBase, clientBase int) (int, int) {
	t.Helper()
	free := func(base int) bool {
		for p := base + 1; p <= base+60; p++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				return false
			}
			l.Close()
		}
		return true
	}
	for off := 0; off <= 400; off += 200 {
		f, err := os.OpenFile(filepath.Join(os.TempDir(), fmt.Sprintf("kayadb-e2e-ports-%d.lock", raftBase+off)), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close()
			continue
		}
		if !free(raftBase+off) || !free(clientBase+off) {
			f.Close()
			continue
		}
		t.Cleanup(func() { f.Close() })
		return raftBase + off, clientBase + off
	}
	t.Fatalf("no free ports near %d and %d", raftBase, clientBase)
	return 0, 0
}

// newRunbookEnv is newEnv on free ports (freeBases, near raftBase and
// clientBase), with the nodes' metrics listeners on raftBase+41.. (the
// scripts' default, CLIENT_PORT_BASE+1711, would leave the window).
func newRunbookEnv(t *testing.T, raftBase, clientBase int) (*env, int, int) {
	if testing.Short() {
		t.Skip("process-level test; skipped with -short")
	}
	raftBase, clientBase = freeBases(t, raftBase, clientBase)
	e := newEnv(t, raftBase, clientBase)
	e.vars = append(e.vars, fmt.Sprintf("METRICS_PORT_BASE=%d", raftBase+40))
	return e, raftBase, clientBase
}

// runbookScripts turns the `sh` blocks of a runbook page into two bash
// scripts: every block but the last, and the last one (the clean-up, which
// stops the cluster). Each block is relocated and announced with an echo
// line (">>> block N"). The page must have at least minBlocks blocks.
func runbookScripts(t *testing.T, page string, raftBase, clientBase, minBlocks int) (main, cleanup string) {
	t.Helper()
	blocks := runbookBlocks(t, page)
	if len(blocks) < minBlocks {
		t.Fatalf("found only %d sh blocks in %s", len(blocks), page)
	}
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	for i, b := range blocks[:len(blocks)-1] {
		fmt.Fprintf(&script, "echo '>>> block %d'\n%s\n", i+1, relocate(b, raftBase, clientBase))
	}
	script.WriteString("echo '>>> done'\n")
	return script.String(), "set -euo pipefail\n" + relocate(blocks[len(blocks)-1], raftBase, clientBase) + "\n"
}

// bash runs a script in the repository root with the environment's
// variables and returns its combined output.
func (e *env) bash(ctx context.Context, script string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = e.root
	cmd.Env = e.vars
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// loadResult is what a background writer saw.
type loadResult struct {
	acked  []string      // keys whose put was acknowledged, in order
	failed int           // puts that failed (some may still have applied)
	maxGap time.Duration // longest time without an acknowledgement, after the first one
}

// startLoad writes keys prefix-000000, prefix-000001, ... one at a time
// through kayactl with every address in servers, from the moment the
// binaries exist until the returned function is called.
func (e *env) startLoad(prefix string, servers []string) func() loadResult {
	stop := make(chan struct{})
	done := make(chan loadResult)
	go func() {
		var r loadResult
		var last time.Time
		defer func() { done <- r }()
		for i := 0; ; i++ {
			select {
			case <-stop:
				if !last.IsZero() {
					r.maxGap = max(r.maxGap, time.Since(last))
				}
				return
			default:
			}
			if _, err := os.Stat(filepath.Join(e.dir, "bin", "kayactl")); err != nil {
				time.Sleep(100 * time.Millisecond) // not built yet
				i--
				continue
			}
			k := fmt.Sprintf("%s-%06d", prefix, i)
			c := exec.Command(filepath.Join(e.dir, "bin", "kayactl"), "--server", strings.Join(servers, ","), "--timeout", "5s", "put", k, k)
			if c.Run() == nil {
				now := time.Now()
				if !last.IsZero() {
					r.maxGap = max(r.maxGap, now.Sub(last))
				}
				last = now
				r.acked = append(r.acked, k)
			} else {
				r.failed++
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()
	return func() loadResult {
		close(stop)
		return <-done
	}
}

// checkAcked fails the test unless every acknowledged key of the load is
// in the cluster.
func (e *env) checkAcked(servers, prefix string, r loadResult) {
	e.t.Helper()
	scan, errs, code := e.kayactl("--server", servers, "--timeout", "10s", "--json", "scan", prefix+"-")
	if code != 0 {
		e.t.Fatalf("scan: %d %s", code, errs)
	}
	for _, k := range r.acked {
		if !strings.Contains(scan, `"`+k+`"`) {
			e.t.Fatalf("acknowledged write %s lost", k)
		}
	}
}

// TestRunbookAddRemoveNode runs every command of
// docs/runbooks/add-remove-node.md, as written, against real processes:
// grow 3 → 4 → 5, shrink to 3, replace a failed node. Then it checks the
// final membership and the data.
func TestRunbookAddRemoveNode(t *testing.T) {
	e, raftBase, clientBase := newRunbookEnv(t, 28480, 28378)
	defer func() { _, _ = e.bash(context.Background(), "scripts/stop-cluster.sh") }()
	// Small snapshot thresholds, through the servers' environment, so that
	// the new nodes catch up by snapshot as they would on a large cluster.
	e.vars = append(e.vars, "KAYA_SNAPSHOT_ENTRIES=50", "KAYA_SNAPSHOT_CATCHUP_ENTRIES=10", "KAYA_TICK=50ms")
	// The last block stops the cluster; run everything before it, check,
	// then run it.
	main, cleanup := runbookScripts(t, filepath.Join(e.root, "docs", "runbooks", "add-remove-node.md"), raftBase, clientBase, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// Writes continue through the whole procedure, to whichever nodes are
	// up (a client given every address that ever serves).
	var all []string
	for _, n := range []int{1, 2, 3, 4, 5, 6} {
		all = append(all, fmt.Sprintf("127.0.0.1:%d", clientBase+n))
	}
	stopLoad := e.startLoad("load", all)
	text, err := e.bash(ctx, main)
	load := stopLoad()
	acked := load.acked
	if err != nil {
		t.Fatalf("runbook failed: %v\n%s\n%s", err, text, e.logs())
	}
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
		Members []statusMember `json:"members"`
	}
	if err := json.Unmarshal([]byte(st), &doc); err != nil {
		t.Fatalf("status --json: %v\n%s", err, st)
	}
	if got := memberRoles(doc.Members); got != "1:voter 2:voter 6:voter" {
		t.Fatalf("members after the runbook: %s\n%s", got, st)
	}
	for _, k := range []string{"before-growth", "after-growth", "after-shrink", "after-replacement"} {
		if out, errs, code := e.kayactl("--server", servers, "--timeout", "10s", "get", k); code != 0 || out != "yes\n" {
			t.Fatalf("get %s: %d %q %s", k, code, out, errs)
		}
	}
	// No acknowledged write was lost.
	e.checkAcked(servers, "load", load)
	if len(acked) < 20 {
		t.Fatalf("only %d writes acknowledged during the runbook", len(acked))
	}
	t.Logf("%d writes acknowledged during the runbook", len(acked))
	// Node 6 (the replacement) holds the data too: it caught up by snapshot.
	out2, _, code := e.kayactl("--server", fmt.Sprintf("127.0.0.1:%d", clientBase+6), "status", "--json")
	if code != 0 || !strings.Contains(out2, `"snapshots_installed":`) || strings.Contains(out2, `"snapshots_installed":0`) {
		t.Fatalf("node 6 did not install a snapshot: %s", out2)
	}

	if out, err := e.bash(ctx, cleanup); err != nil {
		t.Fatalf("clean-up block: %v\n%s", err, out)
	}
}

// statusMember is one member in kayactl status --json.
type statusMember struct {
	ID   uint64 `json:"id"`
	Role string `json:"role"`
}

// memberRoles formats members as sorted "ID:role" words: "1:voter 2:voter".
func memberRoles(ms []statusMember) string {
	list := make([]string, 0, len(ms))
	for _, m := range ms {
		list = append(list, fmt.Sprintf("%d:%s", m.ID, m.Role))
	}
	sort.Strings(list)
	return strings.Join(list, " ")
}

// runRunbookScript runs a runbook's main script (three minutes at most),
// fails the test with the nodes' logs if it fails, and returns its output.
func (e *env) runRunbookScript(main string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := e.bash(ctx, main)
	elapsed := time.Since(start)
	if os.Getenv("KAYA_E2E_VERBOSE") != "" {
		e.t.Log(out)
	}
	if err != nil {
		e.t.Fatalf("runbook failed after %v: %v\n%s\n%s", elapsed, err, out, e.logs())
	}
	e.t.Logf("runbook ran in %v", elapsed.Round(time.Millisecond))
	return out
}
