package e2e

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServerExitStatus runs the real kayadb-server binary on refused
// configurations and checks the exit status docs/server.md documents
// ("Signals and exit status"): 4 for bad flags and for a configuration the
// node refuses before it opens anything — a public or wildcard listen
// address without --allow-public-bind among them — and 6 for a data
// directory in use. A refused node creates no data directory.
func TestServerExitStatus(t *testing.T) {
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
	run := func(args ...string) (int, string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // no KAYA_* from the caller
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("%v: still running after 30 s (it should have refused to start)\n%s", args, out.String())
		}
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0, out.String()
		case errors.As(err, &ee):
			return ee.ExitCode(), out.String()
		}
		t.Fatalf("%v: %v", args, err)
		return 0, ""
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"a wildcard client address", []string{"--client-addr", "0.0.0.0:17379"}, 4, "--allow-public-bind"},
		{"a public raft address", []string{"--raft-addr", "203.0.113.9:7481"}, 4, "--allow-public-bind"},
		{"a wildcard metrics address", []string{"--metrics-addr", "[::]:9090"}, 4, "--allow-public-bind"},
		{"an unknown flag", []string{"--no-such-flag"}, 4, "--no-such-flag"},
		{"a malformed address", []string{"--client-addr", "127.0/0.1:q"}, 4, "--client-addr"},
	} {
		data := filepath.Join(t.TempDir(), "data")
		args := append([]string{"--data", data, "--no-metrics", "--client-addr", freeAddr(t), "--raft-addr", freeAddr(t)}, tc.args...)
		if tc.name == "a wildcard metrics address" {
			args = append([]string{"--data", data, "--client-addr", freeAddr(t), "--raft-addr", freeAddr(t)}, tc.args...)
		}
		code, out := run(args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit status %d, want %d; output:\n%s", tc.name, code, tc.code, out)
		}
		if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: the refused node created its data directory (%v)", tc.name, err)
		}
	}
}
