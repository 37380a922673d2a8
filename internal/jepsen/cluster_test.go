package jepsen

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCrashedNodeReportsItsLog: a node process that exits by itself is
// listed by Crashed, and LogTail gives the last lines it printed (what a
// CI log shows of a failed run).
func TestCrashedNodeReportsItsLog(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "fake-server")
	script := "#!/bin/sh\nfor i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; done\necho 'fatal: listen tcp: address already in use' >&2\nexit 1\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := NewCluster(bin, filepath.Join(dir, "c"), 2, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Running(1) {
		if time.Now().After(deadline) {
			t.Fatal("the fake node did not exit")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := c.Crashed(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("Crashed() = %v, want [1]", got)
	}
	tail := c.LogTail(1, 3)
	want := []string{"line 9", "line 10", "fatal: listen tcp: address already in use"}
	if strings.Join(tail, "|") != strings.Join(want, "|") {
		t.Fatalf("LogTail(1, 3) = %q, want %q", tail, want)
	}
}

// fakeNode writes an executable shell script standing in for the server.
func fakeNode(t *testing.T, dir, script string) string {
	t.Helper()
	bin := filepath.Join(dir, "fake-server")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func waitExited(t *testing.T, c *Cluster, id uint64) {
	t.Helper()
	waitFor(t, "the fake node to exit", func() bool { return !c.Running(id) })
}

// A crash stays on record after the harness restarts the node (a node
// that died under a fault and was restarted at the heal still fails the
// run), with its exit status and its log's last lines; a node the harness
// kills is not a crash.
func TestCrashIsRememberedAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	bin := fakeNode(t, dir, "echo \"started $*\" | cut -c1-20\necho 'panic: raft log damaged' >&2\nexit 3\n")
	c, err := NewCluster(bin, filepath.Join(dir, "c"), 2, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	for i := 0; i < 2; i++ {
		if err := c.Start(1); err != nil {
			t.Fatalf("start #%d of a node that exited by itself: %v", i+1, err)
		}
		waitExited(t, c, 1)
	}
	crashes := c.Crashes()
	if len(crashes) != 2 || crashes[0].ID != 1 || crashes[0].Status != "exit status 3" {
		t.Fatalf("Crashes() = %+v, want two crashes of node 1 with exit status 3", crashes)
	}
	if tail := crashes[1].Tail; len(tail) == 0 || tail[len(tail)-1] != "panic: raft log damaged" {
		t.Fatalf("the crash's log tail %q does not end with the node's last line", tail)
	}
	if got := c.Crashed(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("Crashed() = %v, want [1]", got)
	}

	sleeper := fakeNode(t, t.TempDir(), "while :; do sleep 0.05; done\n")
	c2, err := NewCluster(sleeper, filepath.Join(dir, "c2"), 1, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Shutdown()
	if err := c2.Start(1); err != nil {
		t.Fatal(err)
	}
	c2.Kill(1)
	if got := c2.Crashes(); len(got) != 0 {
		t.Fatalf("a node killed by the harness was recorded as a crash: %+v", got)
	}
}

// Stop reports a node whose graceful stop fails (an exit status other
// than 0 after SIGTERM: the server's way of saying its shutdown failed);
// a clean stop is nil.
func TestStopReportsAFailedShutdown(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		code string
		want string
	}{{"0", ""}, {"1", "exit status 1 after SIGTERM"}} {
		bin := fakeNode(t, t.TempDir(), "trap 'echo stopping; exit "+tc.code+"' TERM\necho ready\nwhile :; do sleep 0.05; done\n")
		c, err := NewCluster(bin, filepath.Join(dir, "c"+tc.code), 1, 10*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(1); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the fake node to set its trap", func() bool { return slices.Contains(c.LogTail(1, 5), "ready") })
		err = c.Shutdown()
		switch {
		case tc.want == "" && err != nil:
			t.Fatalf("a clean stop: %v", err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Fatalf("a stop with exit status %s: %v, want an error with %q", tc.code, err, tc.want)
		}
		if got := c.Crashes(); len(got) != 0 {
			t.Fatalf("a stop was recorded as a crash: %+v", got)
		}
	}
}
