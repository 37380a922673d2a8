package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRunbookBackupRestore runs every command of
// docs/runbooks/backup-restore.md, as written, against real processes: an
// online backup and its checks, a restore drill on a one-node cluster,
// undoing a delete from it, a cold backup of
// a follower (full copy and engine checkpoint), replacing a lost node, and
// a new cluster restored from the backup after every node was lost.
func TestRunbookBackupRestore(t *testing.T) {
	e, raftBase, clientBase := newRunbookEnv(t, 31480, 31378)
	defer func() { _, _ = e.bash(context.Background(), "scripts/stop-cluster.sh") }()
	defer func() {
		// The drill node of section 3, if the runbook stopped before it did.
		if b, err := os.ReadFile(filepath.Join(e.dir, "drill.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}()
	main, cleanup := runbookScripts(t, filepath.Join(e.root, "docs", "runbooks", "backup-restore.md"), raftBase, clientBase, 8)

	out := e.runRunbookScript(main)
	for _, want := range []string{
		"OK backup of node",
		"verified",
		"recovery dry run: nothing was changed",
		"checksums: ok",
		"OK checkpoint written to",
		"learner promote proposed at index",
		"OK restored the backup",
		"after-backup was written after the backup: it is gone",
		"verdict: OK",
		">>> done",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("runbook output lacks %q:\n%s", want, out)
		}
	}
	// The cold checkpoint's applied index and term, from \x00raft/applied.
	m := regexp.MustCompile(`(?m)^\s+(\d+)\s+(\d+)\s*$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no applied index and term in the output:\n%s", out)
	}
	if idx, _ := strconv.Atoi(m[1]); idx < 1500 {
		t.Errorf("the checkpoint's applied index is %d, want at least 1500 (the bench's writes)", idx)
	}
	// The number of keys in the backup (wc -l of its scan).
	counts := regexp.MustCompile(`(?m)^\s*(\d+)\s*$`).FindAllStringSubmatch(out, -1)
	if len(counts) < 1 {
		t.Fatalf("no key count in the output:\n%s", out)
	}
	inBackup, _ := strconv.Atoi(counts[0][1])
	// The one-node drill serves the backup's user keys, exactly those its
	// scan listed (a versioned engine's scan in local mode shows user keys
	// only, as the server does).
	drill := regexp.MustCompile(`"count":(\d+)`).FindStringSubmatch(out)
	if drill == nil {
		t.Fatalf("no key count from the drill node:\n%s", out)
	}
	if n, _ := strconv.Atoi(drill[1]); n != inBackup || n < 1000 {
		t.Fatalf("the drill node serves %d keys, the backup's scan lists %d (want the same, and most of the bench's 1500 random keys)", n, inBackup)
	}

	// The restored cluster: voters 1-3, a leader, the data of the backup,
	// and writes after it.
	all := fmt.Sprintf("127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", clientBase+1, clientBase+2, clientBase+3)
	st, errs, code := e.kayactl("--server", all, "--timeout", "10s", "--json", "status", "--all")
	if code != 0 {
		t.Fatalf("status --all: %d %s", code, errs)
	}
	var docs []struct {
		NodeID   uint64         `json:"node_id"`
		LeaderID uint64         `json:"leader_id"`
		Members  []statusMember `json:"members"`
	}
	if err := json.Unmarshal([]byte(st), &docs); err != nil {
		t.Fatalf("status --all --json: %v\n%s", err, st)
	}
	for _, d := range docs {
		if got := memberRoles(d.Members); got != "1:voter 2:voter 3:voter" || d.LeaderID == 0 {
			t.Errorf("node %d: leader %d, members %s", d.NodeID, d.LeaderID, got)
		}
	}
	if len(docs) != 3 {
		t.Fatalf("%d nodes answered:\n%s", len(docs), st)
	}
	for k, want := range map[string]string{"important": "v1\n", "after-restore": "yes\n"} {
		if out, errs, code := e.kayactl("--server", all, "--timeout", "10s", "get", k); code != 0 || out != want {
			t.Fatalf("get %s: %d %q %s", k, code, out, errs)
		}
	}
	if _, _, code := e.kayactl("--server", all, "--timeout", "10s", "get", "after-backup"); code != 2 {
		t.Fatalf("get after-backup: exit %d, want 2 (written after the backup)", code)
	}
	// The restored cluster holds what the backup's scan listed, plus
	// after-restore.
	scan, errs, code := e.kayactl("--server", all, "--timeout", "10s", "--json", "scan", "")
	if code != 0 {
		t.Fatalf("scan after the restore: %d %s", code, errs)
	}
	var res struct {
		Count int `json:"count"`
	}
	if err := json.Unmarshal([]byte(scan), &res); err != nil {
		t.Fatalf("scan --json: %v", err)
	}
	if res.Count < 1000 || inBackup != res.Count-1 {
		t.Fatalf("keys: %d in the backup, %d in the restored cluster", inBackup, res.Count)
	}
	t.Logf("keys: %d in the backup, %d in the restored cluster", inBackup, res.Count)

	// What the page says of --data, against kayactl: it is local mode even
	// with KAYA_SERVER set (the backup's copy of a key), and a running
	// node's engine is refused with exit status 6 and the message the page
	// quotes.
	page, err := os.ReadFile(filepath.Join(e.root, "docs", "runbooks", "backup-restore.md"))
	if err != nil {
		t.Fatal(err)
	}
	kayactlEnv := func(env []string, args ...string) (string, int) {
		cmd := exec.Command(filepath.Join(e.dir, "bin", "kayactl"), args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	if out, code := kayactlEnv([]string{"KAYA_SERVER=" + all}, "--data", filepath.Join(e.dir, "backups", "b1"), "get", "after-restore"); code != 2 {
		t.Errorf("kayactl --data BACKUP with KAYA_SERVER set: exit %d, want 2 (after-restore is not in the backup; the cluster has it):\n%s", code, out)
	}
	const running = "belongs to a running kayadb-server (it"
	out, code = kayactlEnv(nil, "--data", filepath.Join(e.dir, "node-1", "engine"), "checkpoint", filepath.Join(e.dir, "refused-checkpoint"))
	if code != 6 || !strings.Contains(out, running) {
		t.Errorf("kayactl --data on a running node's engine: exit %d, want 6 and %q:\n%s", code, running, out)
	}
	if !strings.Contains(strings.Join(strings.Fields(string(page)), " "), running) {
		t.Errorf("backup-restore.md does not quote kayactl's refusal %q", running)
	}

	cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
	defer ccancel()
	if out, err := e.bash(cctx, cleanup); err != nil {
		t.Fatalf("clean-up block: %v\n%s", err, out)
	}
}
