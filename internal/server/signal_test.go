package server

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// signalingWriter is the helper process's stderr: when the node logs that
// its engine is open (New is running), it sends the process a SIGTERM and
// holds New for a moment, so the signal arrives while the node opens.
type signalingWriter struct {
	mu   sync.Mutex
	w    io.Writer
	sent bool
}

func (s *signalingWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.w.Write(p)
	if !s.sent && bytes.Contains(p, []byte("opened database")) {
		s.sent = true
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		time.Sleep(200 * time.Millisecond)
	}
	return n, err
}

// TestHelperStopWhileOpening is not a test: TestStopWhileOpening runs the
// test binary with it as a kayadb-server process.
func TestHelperStopWhileOpening(t *testing.T) {
	dir := os.Getenv("KAYA_HELPER_STOP_WHILE_OPENING")
	if dir == "" {
		t.Skip("helper process of TestStopWhileOpening")
	}
	os.Exit(Main([]string{"--data", dir, "--client-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--no-metrics"},
		io.Discard, &signalingWriter{w: os.Stderr}))
}

// TestStopWhileOpening: a SIGTERM that arrives while the node is still
// opening (replaying its logs) stops it cleanly once it is open, with exit
// code 0, instead of killing it halfway.
func TestStopWhileOpening(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run", "^TestHelperStopWhileOpening$")
	cmd.Env = append(os.Environ(), "KAYA_HELPER_STOP_WHILE_OPENING="+filepath.Join(t.TempDir(), "d"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the node did not exit 0 after a SIGTERM while opening: %v\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("the node did not stop within 60 s of a SIGTERM while opening:\n%s", stderr.String())
	}
	for _, want := range []string{"stop requested while the node is opening", "kayadb node started", "shutting down", "stopped cleanly"} {
		if !strings.Contains(stderr.String(), want) {
			t.Fatalf("log lacks %q:\n%s", want, stderr.String())
		}
	}
}
