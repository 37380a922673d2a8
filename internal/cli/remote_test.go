package cli

import (
	"bytes"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"
)

func runCLI(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := run(args, testInvocation(&out, &errb, func(string) (string, bool) { return "", false }))
	return out.String(), errb.String(), code
}

func TestServerMode(t *testing.T) {
	addr := startServer(t)
	s := "--server=" + addr
	if out, errs, code := runCLI(s, "put", "user:1", "Ada"); code != 0 || out != "OK\n" {
		t.Fatalf("put: %d %q %q", code, out, errs)
	}
	if out, _, code := runCLI(s, "--json", "put", "user:2", "Grace"); code != 0 || strings.TrimSpace(out) != `{"ok":true}` {
		t.Fatalf("put --json: %d %q", code, out)
	}
	if out, _, code := runCLI(s, "get", "user:1"); code != 0 || out != "Ada\n" {
		t.Fatalf("get: %d %q", code, out)
	}
	if _, errs, code := runCLI(s, "get", "nope"); code != ExitNotFound || !strings.Contains(errs, `"nope" not found`) {
		t.Fatalf("get missing: %d %q", code, errs)
	}
	out, _, code := runCLI(s, "--json", "scan", "user:")
	var sc struct {
		Items []struct{ Key, Value string }
		Count int
	}
	if code != 0 || json.Unmarshal([]byte(out), &sc) != nil || sc.Count != 2 || sc.Items[1].Value != "Grace" {
		t.Fatalf("scan: %d %q", code, out)
	}
	if _, _, code := runCLI(s, "delete", "user:2"); code != 0 {
		t.Fatalf("delete: %d", code)
	}
	if _, _, code := runCLI(s, "put", "\x00sys", "x"); code != ExitInvalidArgument {
		t.Fatalf("reserved key: %d", code)
	}
	if out, _, code := runCLI(s, "health"); code != 0 || out != "OK role=leader\n" {
		t.Fatalf("health: %d %q", code, out)
	}
	out, _, code = runCLI(s, "--json", "status")
	var st map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st["role"] != "leader" || st["engine"] == nil {
		t.Fatalf("status: %d %q", code, out)
	}
	out, _, code = runCLI(s, "--json", "bench", "put", "--clients", "4", "--total", "200")
	var b benchResult
	if code != 0 || json.Unmarshal([]byte(out), &b) != nil || b.Total != 200 || b.Errors != 0 || b.PerSecond <= 0 {
		t.Fatalf("bench: %d %q", code, out)
	}
	// Nothing listening: a clear failure, not a hang.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	_ = dead.Close()
	start := time.Now()
	_, errs, code := runCLI("--server="+deadAddr, "--timeout=1s", "get", "k")
	if code != ExitError || !strings.Contains(errs, "hint:") || time.Since(start) > 5*time.Second {
		t.Fatalf("unreachable server: %d %q after %v", code, errs, time.Since(start))
	}
	if _, _, code := runCLI("--data", t.TempDir(), "health"); code != ExitInvalidArgument {
		t.Fatalf("health in local mode: %d", code)
	}
}

// TestExplicitDataBeatsServerEnv: with $KAYA_SERVER set, an explicit
// --data still opens the local database.
func TestExplicitDataBeatsServerEnv(t *testing.T) {
	dir := t.TempDir()
	envs := map[string]string{"KAYA_SERVER": "127.0.0.1:1"} // nothing listens there
	if out, errs, code := runCLIEnv(envs, "--data", dir, "put", "k", "v"); code != 0 || !strings.HasPrefix(out, "OK") {
		t.Fatalf("put with --data: %d %q %q", code, out, errs)
	}
	if out, errs, code := runCLIEnv(envs, "--data", dir, "get", "k"); code != 0 || out != "v\n" {
		t.Fatalf("get with --data: %d %q %q", code, out, errs)
	}
	// Without --data the environment selects server mode.
	if _, errs, code := runCLIEnv(envs, "--timeout", "300ms", "get", "k"); code == 0 || !strings.Contains(errs, "127.0.0.1:1") {
		t.Fatalf("get without --data: %d %q", code, errs)
	}
}
