package cli

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBinary builds cmd/kayactl and runs it as a real process, checking
// outputs and exit statuses end to end.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the kayactl binary; skipped with -short")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "kayactl")
	build := exec.Command(goBin, "build", "-o", bin, "./cmd/kayactl")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	data := filepath.Join(tmp, "data")

	type step struct {
		args   []string
		env    []string
		code   int
		stdout string // exact, unless prefix is set
		stderr string // substring
	}
	steps := []step{
		{args: []string{"--data", data, "put", "greeting", "hello world"}, code: 0, stdout: "OK sequence=1\n"},
		{args: []string{"--data", data, "get", "greeting"}, code: 0, stdout: "hello world\n"},
		{args: []string{"get", "greeting"}, env: []string{"KAYA_DATA=" + data}, code: 0, stdout: "hello world\n"},
		{args: []string{"--data", data, "--json", "put", "k2", "v2"}, code: 0, stdout: `{"ok":true,"sequence":2}` + "\n"},
		{args: []string{"--data", data, "get", "missing"}, code: 2, stderr: `error: key "missing" not found`},
		{args: []string{"--data", data, "--json", "get", "missing"}, code: 2, stdout: `{"found":false,"key":"missing"}` + "\n"},
		{args: []string{"--data", data, "delete", "k2"}, code: 0, stdout: "OK\n"},
		{args: []string{"--data", data, "scan", ""}, code: 0, stdout: "greeting\thello world\n"},
		{args: []string{"--data", filepath.Join(tmp, "nothing"), "get", "x"}, code: 2, stderr: "hint: no database in"},
		{args: []string{"--data", data, "frobnicate"}, code: 4, stderr: "hint: run `kayactl --help`"},
		{args: []string{"--data", data, "put", "only-key"}, code: 4, stderr: "error: "},
		{args: []string{"put", "k", "-"}, env: []string{"KAYA_DATA=", "KAYA_SERVER=" + noServer()}, code: 1,
			stderr: "error: nothing listening on " + noServer() + " — is kayadb-server running?"},
	}
	for _, s := range steps {
		cmd := exec.Command(bin, s.args...)
		cmd.Env = append(os.Environ(), s.env...)
		if s.env == nil {
			cmd.Env = append(cmd.Env, "KAYA_DATA=")
		}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%v: %v", s.args, err)
		}
		if code != s.code {
			t.Fatalf("%v: exit %d, want %d\nstdout: %s\nstderr: %s", s.args, code, s.code, stdout.String(), stderr.String())
		}
		if s.stdout != "" && stdout.String() != s.stdout {
			t.Errorf("%v: stdout %q, want %q", s.args, stdout.String(), s.stdout)
		}
		if s.stderr != "" && !strings.Contains(stderr.String(), s.stderr) {
			t.Errorf("%v: stderr %q lacks %q", s.args, stderr.String(), s.stderr)
		}
	}
	// A built binary reports its build (what go build stamped: with
	// -buildvcs=false, as in CI, "(devel)" and no revision).
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "kayactl ") || !strings.HasSuffix(string(out), ", client protocol 1\n") {
		t.Errorf("--version: %v %q", err, out)
	}
}
