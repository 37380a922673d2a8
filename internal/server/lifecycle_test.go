package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kayadb/kayadb/client"
	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/transport"
	"github.com/kayadb/kayadb/internal/vfs"
	"github.com/kayadb/kayadb/internal/wire"
)

// TestGracefulShutdownHandsOffLeadership shuts the leader down (what
// SIGTERM does) under write load: leadership has moved to another node by
// the time Shutdown returns, and no acknowledged write is lost.
func TestGracefulShutdownHandsOffLeadership(t *testing.T) {
	c := newTestCluster(t, 3)
	old := c.WaitLeader()
	var addrs []string
	for _, m := range c.members() {
		addrs = append(addrs, m.ClientAddr)
	}
	ctx, stop := context.WithCancel(context.Background())
	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		cl, err := client.New(addrs, &client.Options{RequestTimeout: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				k := fmt.Sprintf("w%d-%05d", w, i)
				pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				err := cl.Put(pctx, []byte(k), []byte(k))
				cancel()
				if err == nil {
					mu.Lock()
					acked = append(acked, k)
					mu.Unlock()
				}
			}
		}(w)
	}
	time.Sleep(300 * time.Millisecond)

	s := c.Detach(old) // Shutdown stops it
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := s.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	// The old leader learned its successor before it stopped, and the
	// successor leads now: no election timeout was needed.
	next := s.Node().Leader()
	if next == 0 || next == old {
		t.Fatalf("the leader shut down without handing over (it knew leader %d)", next)
	}
	successor := c.node(next)
	if successor == nil || !successor.Node().IsLeader() {
		t.Fatalf("node %d was named successor but does not lead", next)
	}

	time.Sleep(300 * time.Millisecond) // writes go on against the new leader
	stop()
	wg.Wait()
	mu.Lock()
	keys := append([]string(nil), acked...)
	mu.Unlock()
	if len(keys) < 20 {
		t.Fatalf("only %d writes acknowledged: the load did not run", len(keys))
	}
	cl, err := client.New(addrs, &client.Options{RequestTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	for _, k := range keys {
		v, err := cl.Get(rctx, []byte(k))
		if err != nil || string(v) != k {
			t.Fatalf("acknowledged write %s lost after the graceful shutdown: %q %v", k, v, err)
		}
	}
}

// TestLogLinesCarryNodeAndTerm: a log line about a request names the node,
// the raft term and the client.
func TestLogLinesCarryNodeAndTerm(t *testing.T) {
	s, logs := startSecured(t, Config{ClientToken: "a-long-client-token-123"})
	c := dial(t, s.ClientAddr())
	if st, _, err := c.put("k", "v"); err != nil || st == 0 {
		t.Fatalf("a put without the token: %d %v", st, err)
	}
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "refused a request") {
			line = l
		}
	}
	term := s.Node().Term()
	for _, want := range []string{"node=1", fmt.Sprintf("term=%d", term), "client=127.0.0.1:"} {
		if term == 0 || !strings.Contains(line, want) {
			t.Fatalf("log line %q lacks %q", line, want)
		}
	}
}

// TestLostRaftStateRefusesToStart: an engine that has applied entries but
// no raft log beside it (the log deleted, or an engine copied in from
// another node) must not start a new log: with or without the roster file.
func TestLostRaftStateRefusesToStart(t *testing.T) {
	for _, keepRoster := range []bool{true, false} {
		dir := filepath.Join(t.TempDir(), "data")
		c := newCluster(t, 1, clusterOpts{manual: true, configure: func(_ uint64, cfg *Config) {
			cfg.DataDir, cfg.EngineOptions = dir, nil // real files
		}})
		c.Elect(1)
		if st, _, err := dial(t, c.addr(1)).put("k", "v"); err != nil || st != wire.StatusOK {
			t.Fatalf("put: %d %v", st, err)
		}
		c.Stop(1)
		if err := os.RemoveAll(filepath.Join(dir, "raft")); err != nil {
			t.Fatal(err)
		}
		if !keepRoster {
			if err := os.Remove(filepath.Join(dir, "cluster-roster.json")); err != nil {
				t.Fatal(err)
			}
		}
		_, err := c.TryStart(1)
		if err == nil {
			t.Fatalf("roster kept %v: a node whose raft log is gone started", keepRoster)
		}
		if !strings.Contains(err.Error(), "raft state was lost") || !strings.Contains(err.Error(), "remove-node 1") {
			t.Fatalf("roster kept %v: %v", keepRoster, err)
		}
	}
}

// TestDefaultMetricsPortBusy: a node on the default metrics address whose
// port is taken still starts (with a warning); an address the operator
// asked for must be available.
func TestDefaultMetricsPortBusy(t *testing.T) {
	busy := loopbackListener(t)
	defer busy.Close()
	_, logs := startSecured(t, Config{MetricsAddr: busy.Addr().String(), MetricsOptional: true})
	if !strings.Contains(logs.String(), "running without metrics") {
		t.Fatalf("no warning about the busy default port:\n%s", logs.String())
	}
	ln := loopbackListener(t)
	defer ln.Close()
	mem := transport.NewMemNetwork(1)
	_, err := New(Config{NodeID: 1, DataDir: "/node", ClientListener: ln, MetricsAddr: busy.Addr().String(),
		EngineOptions: &engine.Options{FS: vfs.NewMem()},
		NewTransport:  func(h transport.Handler) transport.Transport { return mem.Transport(1, h) }})
	if err == nil || !strings.Contains(err.Error(), "--metrics-addr") {
		t.Fatalf("an explicit busy --metrics-addr: %v", err)
	}
}
