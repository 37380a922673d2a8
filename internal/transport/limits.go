package transport

import (
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"
)

// Defaults of the inbound connection caps (TCPOptions).
const (
	// defaultMaxInboundConns: a correct peer holds one message connection
	// to this node, plus one per snapshot it is sending (rarely more than
	// one) and, briefly, a replacement while the old connection times out.
	// 64 covers clusters of a dozen or more members with room to spare,
	// while a flood of connections costs at most 64 goroutines and their
	// small handshake buffers.
	defaultMaxInboundConns = 64
	// defaultMaxUnauthPerSource: a correct peer completes its handshake in
	// one round trip, so it rarely has more than one or two connections in
	// the handshake at once (a message stream and a snapshot). 4 leaves
	// room for reconnects and for several nodes sharing one address
	// (loopback clusters, NAT), and keeps one source from holding more
	// than 4 of the 64 slots with connections that never authenticate.
	defaultMaxUnauthPerSource = 4

	// logInterval: log lines about one source and one reason are limited
	// to one per minute (the counters count every event).
	logInterval = time.Minute
	// maxLogKeys bounds the limiter's memory: sources × reasons seen in the
	// last minute. When it is full of recent keys, new ones are not logged
	// (they are still counted).
	maxLogKeys = 1024
)

// sourceOf is the address a connection comes from, without its port: the
// unit of the per-source caps and of log limiting.
func sourceOf(a net.Addr) string {
	if a == nil {
		return "unknown"
	}
	s := a.String()
	if host, _, err := net.SplitHostPort(s); err == nil {
		return host
	}
	return s
}

// authKey limits the logs of peer token failures per source and claimed
// member (already checked against the roster, so the keys are bounded):
// on a loopback cluster every peer shares one source.
func authKey(src string, from uint64) string { return src + "|" + strconv.FormatUint(from, 10) }

// logLimiter lets one log line through per key and interval.
type logLimiter struct {
	now func() time.Time
	mu  sync.Mutex
	// seen is guarded by mu: key → when it was last logged, and how many
	// lines were held back since.
	seen map[string]*logState
}

type logState struct {
	last       time.Time
	suppressed int
}

func newLogLimiter(now func() time.Time) *logLimiter {
	return &logLimiter{now: now, seen: map[string]*logState{}}
}

// allow reports whether a line about key may be logged now and, if so, how
// many were held back since the last one.
func (l *logLimiter) allow(key string) (ok bool, suppressed int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if st, found := l.seen[key]; found {
		if now.Sub(st.last) < logInterval {
			st.suppressed++
			return false, 0
		}
		n := st.suppressed
		st.last, st.suppressed = now, 0
		return true, n
	}
	if len(l.seen) >= maxLogKeys {
		for k, st := range l.seen {
			if now.Sub(st.last) >= logInterval {
				delete(l.seen, k)
			}
		}
		if len(l.seen) >= maxLogKeys {
			return false, 0
		}
	}
	l.seen[key] = &logState{last: now}
	return true, 0
}

// logLimited logs a warning about source key (and reason), at most once
// per logInterval.
func (t *TCP) logLimited(log *slog.Logger, key, reason, msg string, args ...any) {
	ok, n := t.logs.allow(key + "|" + reason)
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, "similar_events_not_logged", n)
	}
	log.Warn(msg, args...)
}

// admit decides whether an accepted connection from src may stay: it is
// refused when MaxInboundConns are open, or when src already has
// MaxUnauthenticatedPerSource connections that have not authenticated.
// An admitted connection is registered (in conns and as unauthenticated);
// release undoes it.
func (t *TCP) admit(c net.Conn, src string) (ok bool, reason string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.closed:
		return false, ""
	case len(t.conns) >= t.opts.MaxInboundConns:
		t.c.rejectedConnLimit.Add(1)
		return false, "connection_limit"
	case t.unauth[src] >= t.opts.MaxUnauthenticatedPerSource:
		t.c.rejectedSourceLimit.Add(1)
		return false, "source_limit"
	}
	t.conns[c] = struct{}{}
	t.unauth[src]++
	t.wg.Add(1)
	return true, ""
}

// authenticated moves an admitted connection out of src's unauthenticated
// count.
func (t *TCP) authenticated(src string) {
	t.mu.Lock()
	t.dropUnauth(src)
	t.mu.Unlock()
}

// release forgets an admitted connection.
func (t *TCP) release(c net.Conn, src string, authed bool) {
	t.mu.Lock()
	delete(t.conns, c)
	if !authed {
		t.dropUnauth(src)
	}
	t.mu.Unlock()
}

// dropUnauth decrements src's count; t.mu is held. Keys at zero are
// deleted, so the map holds only sources with connections in the
// handshake (at most MaxInboundConns).
func (t *TCP) dropUnauth(src string) {
	if t.unauth[src] <= 1 {
		delete(t.unauth, src)
		return
	}
	t.unauth[src]--
}
