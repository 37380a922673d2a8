package transport

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"

	"github.com/kayadb/kayadb/internal/loopport"
)

// logLine is one captured log record: level, message and attributes
// (those of With included).
type logLine struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

// captureHandler records every log record (at every level).
type captureHandler struct {
	mu    *sync.Mutex
	lines *[]logLine
	with  []slog.Attr
}

func newCapture() (*slog.Logger, func() []logLine) {
	h := &captureHandler{mu: &sync.Mutex{}, lines: new([]logLine)}
	return slog.New(h), func() []logLine {
		h.mu.Lock()
		defer h.mu.Unlock()
		return append([]logLine(nil), *h.lines...)
	}
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	l := logLine{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	for _, a := range h.with {
		l.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { l.attrs[a.Key] = a.Value.String(); return true })
	h.mu.Lock()
	*h.lines = append(*h.lines, l)
	h.mu.Unlock()
	return nil
}
func (h *captureHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &captureHandler{mu: h.mu, lines: h.lines, with: append(append([]slog.Attr(nil), h.with...), as...)}
}
func (h *captureHandler) WithGroup(string) slog.Handler { return h }

// count returns the lines at level with this message.
func count(lines []logLine, level slog.Level, msg string) []logLine {
	var out []logLine
	for _, l := range lines {
		if l.level == level && l.msg == msg {
			out = append(out, l)
		}
	}
	return out
}

const (
	unreachableMsg = "cannot reach raft peer; retrying (logged once until it is reachable again)"
	reachableMsg   = "raft peer reachable again"
)

// TestUnreachablePeerLoggedOncePerOutage: a peer nobody listens for is a
// warning with its address, once however many dials fail; its return is
// logged once; a second outage is logged again.
func TestUnreachablePeerLoggedOncePerOutage(t *testing.T) {
	addr, err := loopport.Pick()
	if err != nil {
		t.Fatal(err)
	}
	log, lines := newCapture()
	l1 := listen(t)
	t1 := NewTCP(TCPOptions{ID: 1, Listener: l1, Handler: &recorder{}, Logger: log, outageGrace: 1})
	defer t1.Close()
	peers := map[uint64]string{1: l1.Addr().String(), 2: addr}
	t1.SetPeers(peers)

	// Outage 1: several failed dials, one warning.
	waitUntil(t, "the outage warning", func() bool { return len(count(lines(), slog.LevelWarn, unreachableMsg)) == 1 })
	fails := t1.Stats().DialFailures
	waitUntil(t, "three more failed dials", func() bool { return t1.Stats().DialFailures >= fails+3 })
	warns := count(lines(), slog.LevelWarn, unreachableMsg)
	if len(warns) != 1 {
		t.Fatalf("%d warnings for one outage", len(warns))
	}
	if w := warns[0]; w.attrs["addr"] != addr || w.attrs["peer"] != "2" || w.attrs["err"] == "" {
		t.Fatalf("the warning does not name the peer, its address and the error: %v", w.attrs)
	}

	// The peer comes up: reachable again, once.
	l2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the picked port was taken meanwhile: %v", err)
	}
	t2 := NewTCP(TCPOptions{ID: 2, Listener: l2, Handler: &recorder{}})
	t2.SetPeers(peers)
	waitUntil(t, "the peer back", func() bool { return len(count(lines(), slog.LevelInfo, reachableMsg)) == 1 })
	if b := count(lines(), slog.LevelInfo, reachableMsg)[0]; b.attrs["addr"] != addr || b.attrs["unreachable_for"] == "" {
		t.Fatalf("the line about the peer's return: %v", b.attrs)
	}

	// Outage 2: logged again.
	if err := t2.Close(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the second outage warning", func() bool { return len(count(lines(), slog.LevelWarn, unreachableMsg)) == 2 })
	if n := len(count(lines(), slog.LevelInfo, reachableMsg)); n != 1 {
		t.Fatalf("%d lines about the return", n)
	}
}

// TestShortOutageNotLogged: dials that fail for less than the grace period
// (nodes starting together) log nothing above debug.
func TestShortOutageNotLogged(t *testing.T) {
	addr, err := loopport.Pick()
	if err != nil {
		t.Fatal(err)
	}
	log, lines := newCapture()
	t1 := NewTCP(TCPOptions{ID: 1, Handler: &recorder{}, Logger: log, outageGrace: 1 << 62})
	defer t1.Close()
	t1.SetPeers(map[uint64]string{2: addr})
	waitUntil(t, "failed dials", func() bool { return t1.Stats().DialFailures >= 3 })
	for _, l := range lines() {
		if l.level > slog.LevelDebug {
			t.Fatalf("logged above debug within the grace period: %s %v", l.msg, fmt.Sprint(l.attrs))
		}
	}
}
