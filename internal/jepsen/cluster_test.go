package jepsen

import (
	"os"
	"path/filepath"
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
