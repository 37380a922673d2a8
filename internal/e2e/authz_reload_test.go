package e2e

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/wire"
)

// TestSIGHUPReloadsPolicy runs a real kayadb-server with an ACL file:
// SIGHUP applies a changed file; a malformed one is refused (logged with
// the file, line and column, counted) and the previous ACL stays in
// force; a malformed file at start exits with status 4.
func TestSIGHUPReloadsPolicy(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test; skipped with -short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "kayadb-server")
	build := exec.Command("go", "build", "-o", bin, "./cmd/kayadb-server")
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const tokA, tokB = "acl-token-a-000000001", "acl-token-b-000000002"
	acl := filepath.Join(dir, "acl.json")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(acl+".tmp", []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(acl+".tmp", acl); err != nil {
			t.Fatal(err)
		}
	}

	// A malformed file at start: exit status 4 naming file:line:col.
	write("{\n  \"a/\": 7\n}")
	out, err := exec.Command(bin, "--data", filepath.Join(dir, "bad"), "--client-addr", freeAddr(t), "--raft-addr", freeAddr(t),
		"--no-metrics", "--acl-file", acl).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 4 || !strings.Contains(string(out), acl+":2:9:") {
		t.Fatalf("start with a malformed ACL: %v\n%s", err, out)
	}

	write(`{"a/": "` + tokA + `", "b/": "` + tokB + `"}`)
	clientAddr, metricsAddr := freeAddr(t), freeAddr(t)
	logPath := filepath.Join(dir, "node.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--data", filepath.Join(dir, "data"), "--client-addr", clientAddr, "--raft-addr", freeAddr(t),
		"--metrics-addr", metricsAddr, "--acl-file", acl)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	logs := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	// put returns the reply to PUT key with token: "ok" or the error text.
	put := func(token, key string) string {
		c, err := net.DialTimeout("tcp", clientAddr, time.Second)
		if err != nil {
			return "dial: " + err.Error()
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		req := wire.AppendRequest(nil, wire.OpPut, wire.AppendClient(nil, token, wire.AppendPut(nil, []byte(key), []byte("v"))))
		if _, err := c.Write(req); err != nil {
			return "write: " + err.Error()
		}
		st, p, _, err := wire.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return "read: " + err.Error()
		}
		if st == wire.StatusOK {
			return "ok"
		}
		msg, _ := wire.DecodeError(p)
		return msg
	}
	// until waits for put(token, key) to answer want.
	until := func(what, token, key, want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		got := ""
		for time.Now().Before(deadline) {
			if got = put(token, key); got == want {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("%s: PUT %s answered %q, want %q\n%s", what, key, got, want, logs())
	}
	until("at start", tokA, "a/1", "ok")
	until("at start", tokA, "b/1", "acl denied")

	// A good file: token A gets b/ too, on SIGHUP.
	write(`{"a/": "` + tokA + `", "b/": "` + tokA + `"}`)
	if got := put(tokA, "b/1"); got != "acl denied" {
		t.Fatalf("the ACL changed without SIGHUP: %q", got)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	until("after SIGHUP", tokA, "b/1", "ok")
	until("after SIGHUP", tokB, "b/2", "client credential required or invalid")

	// A bad file: refused, logged with its position, counted; the
	// previous ACL stays in force.
	write(`{"a/": "` + tokA + `", "b/": ""}`)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs(), "policy reload failed") {
		if time.Now().After(deadline) {
			t.Fatalf("no failed reload in the log:\n%s", logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(logs(), acl+`:1:39: prefix \"b/\": empty token`) && !strings.Contains(logs(), acl+`:1:39: prefix "b/": empty token`) {
		t.Fatalf("the failed reload does not name file:line:col:\n%s", logs())
	}
	if got := put(tokA, "b/3"); got != "ok" {
		t.Fatalf("after a bad reload the previous ACL is gone: PUT b/3 %q", got)
	}
	metrics := httpGet(t, "http://"+metricsAddr+"/metrics")
	if !strings.Contains(metrics, "kayadb_config_reload_failures_total{file=\"policy\"} 1") {
		t.Fatalf("kayadb_config_reload_failures_total{file=\"policy\"} is not 1:\n%s", grepLines(metrics, "reload"))
	}
	select {
	case <-exited:
		t.Fatalf("the server exited on SIGHUP:\n%s", logs())
	default:
	}
}

// httpGet returns the body of url (the metrics page).
func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
