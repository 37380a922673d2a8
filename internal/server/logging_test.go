package server

import (
	"bytes"
	"context"
	"fmt"
	"github.com/kayadb/kayadb/internal/loopport"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// loggedLine is one captured log record: its level, message and the keys
// of its attributes in order, those added with With first.
type loggedLine struct {
	level slog.Level
	msg   string
	keys  []string
	vals  map[string]string
}

// lineCapture records every record of the loggers made from it.
type lineCapture struct {
	mu    *sync.Mutex
	lines *[]loggedLine
	with  []slog.Attr
}

func newLineCapture() *lineCapture {
	return &lineCapture{mu: &sync.Mutex{}, lines: new([]loggedLine)}
}

func (h *lineCapture) Enabled(context.Context, slog.Level) bool { return true }
func (h *lineCapture) Handle(_ context.Context, r slog.Record) error {
	l := loggedLine{level: r.Level, msg: r.Message, vals: map[string]string{}}
	add := func(a slog.Attr) bool {
		l.keys = append(l.keys, a.Key)
		l.vals[a.Key] = a.Value.String()
		return true
	}
	for _, a := range h.with {
		add(a)
	}
	r.Attrs(add)
	h.mu.Lock()
	*h.lines = append(*h.lines, l)
	h.mu.Unlock()
	return nil
}
func (h *lineCapture) WithAttrs(as []slog.Attr) slog.Handler {
	return &lineCapture{mu: h.mu, lines: h.lines, with: append(append([]slog.Attr(nil), h.with...), as...)}
}
func (h *lineCapture) WithGroup(string) slog.Handler { return h }

func (h *lineCapture) all() []loggedLine {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]loggedLine(nil), *h.lines...)
}

// find returns the lines with this message (and these attribute values).
func (h *lineCapture) find(msg string, attrs ...string) []loggedLine {
	var out []loggedLine
next:
	for _, l := range h.all() {
		if l.msg != msg {
			continue
		}
		for i := 0; i+1 < len(attrs); i += 2 {
			if l.vals[attrs[i]] != attrs[i+1] {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// TestClusterLogs runs three nodes over real TCP, node 3 started only once
// the others have found it missing, and checks their logs: no line has an
// attribute twice (node=1 … node=1, term=3 term=2), every line says which
// node wrote it, an unreachable peer is one warning per node with its
// address and its return one line, and nothing else in a healthy cluster's
// life — elections, bootstrap, writes — is a warning.
func TestClusterLogs(t *testing.T) {
	h := newLineCapture()
	raftAddrs := map[uint64]string{1: pickPort(t), 2: pickPort(t), 3: pickPort(t)}
	clientAddrs := map[uint64]string{1: pickPort(t), 2: pickPort(t), 3: pickPort(t)}
	var peers []string
	for id := uint64(1); id <= 3; id++ {
		peers = append(peers, "--peer", fmt.Sprintf("%d=%s,%s", id, raftAddrs[id], clientAddrs[id]))
	}
	servers := map[uint64]*Server{}
	defer func() {
		for _, s := range servers {
			_ = s.Close()
		}
	}()
	start := func(id uint64) {
		t.Helper()
		args := append([]string{"--node-id", fmt.Sprint(id), "--data", filepath.Join(t.TempDir(), "data"),
			"--no-metrics", "--disk-reserve", "0", "--tick", "20ms"}, peers...)
		var errb bytes.Buffer
		cfg, code := ParseFlags(args, env(nil), &errb)
		if code != -1 {
			t.Fatalf("ParseFlags: %d %s", code, errb.String())
		}
		cfg.Logger = slog.New(h)
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		servers[id] = s
	}
	start(1)
	start(2)
	const unreachable = "cannot reach raft peer; retrying (logged once until it is reachable again)"
	waitUntil(t, "nodes 1 and 2 to find node 3 unreachable", func() bool {
		return len(h.find(unreachable, "node", "1", "peer", "3")) == 1 && len(h.find(unreachable, "node", "2", "peer", "3")) == 1
	})
	start(3)
	const back = "raft peer reachable again"
	waitUntil(t, "nodes 1 and 2 to reach node 3", func() bool {
		return len(h.find(back, "node", "1", "peer", "3")) == 1 && len(h.find(back, "node", "2", "peer", "3")) == 1
	})
	for _, id := range []string{"1", "2"} {
		for _, l := range append(h.find(unreachable, "node", id, "peer", "3"), h.find(back, "node", id, "peer", "3")...) {
			if l.vals["addr"] != raftAddrs[3] {
				t.Errorf("node %s: %q does not name node 3's address %s: %v", id, l.msg, raftAddrs[3], l.vals)
			}
		}
	}
	// A leader, and writes through it.
	var lead *Server
	waitUntil(t, "a leader", func() bool {
		for _, s := range servers {
			if s.Node().IsLeader() {
				lead = s
				return true
			}
		}
		return false
	})
	cl := dial(t, lead.ClientAddr())
	for i := 0; i < 20; i++ {
		if st, p, err := cl.put(fmt.Sprintf("k%02d", i), "v"); err != nil || st != 0 {
			t.Fatalf("put: %v %v %s", st, err, p)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, s := range servers {
		for s.Store().AppliedIndex() < lead.Store().AppliedIndex() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}

	lines := h.all()
	if len(lines) < 20 {
		t.Fatalf("only %d log lines", len(lines))
	}
	terms := 0
	for _, l := range lines {
		seen := map[string]bool{}
		for _, k := range l.keys {
			if seen[k] {
				t.Errorf("%q has %s twice: %v", l.msg, k, l.keys)
			}
			seen[k] = true
		}
		if !seen["node"] {
			t.Errorf("%q does not say which node wrote it: %v", l.msg, l.keys)
		}
		if seen["term"] {
			terms++
		}
		// The banner of a node running as root is right where the tests
		// run as root.
		banner := os.Geteuid() == 0 && strings.HasPrefix(l.msg, "!!!")
		if l.level >= slog.LevelWarn && l.msg != unreachable && !banner {
			t.Errorf("a healthy cluster logged %s %q %v", l.level, l.msg, l.vals)
		}
		if l.msg == unreachable && l.vals["peer"] != "3" {
			t.Errorf("node %s found peer %s unreachable", l.vals["node"], l.vals["peer"])
		}
	}
	if terms == 0 {
		t.Error("no line carries the raft term")
	}
	if t.Failed() {
		var b strings.Builder
		for _, l := range lines {
			fmt.Fprintf(&b, "%s %s %v\n", l.level, l.msg, l.keys)
		}
		t.Log(b.String())
	}
}

// pickPort picks a free loopback address outside the kernel's ephemeral
// range (package loopport), for a node this test starts by hand.
func pickPort(t *testing.T) string {
	t.Helper()
	addr, err := loopport.Pick()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}
