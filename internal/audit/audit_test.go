package audit

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/kayadb/kayadb/internal/security/securitytest"
	"github.com/kayadb/kayadb/internal/vfs"
)

func rec(i int) *Record {
	return &Record{Time: time.Date(2026, 12, 6, 4, 40, 0, 123_000_000, time.UTC), NodeID: 1, Peer: "127.0.0.1:53412",
		Opcode: 1, Op: "PUT", Status: 0, Auth: "client", Identity: "id-" + strconv.Itoa(i), Source: "token",
		KeyLen: 12, Latency: 840 * time.Microsecond}
}

func TestRecordGolden(t *testing.T) {
	r := rec(7)
	r.Tenant = "t1"
	got := string(r.AppendJSON(nil))
	want := `{"ts":"2026-12-06T04:40:00.123Z","node_id":1,"peer":"127.0.0.1:53412","opcode":1,"op":"PUT","status":0,"auth":"client","identity":"id-7","source":"token","tenant":"t1","key_len":12,"latency_us":840}` + "\n"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// No key, no tenant, a refusal, an event without an opcode.
	r = &Record{Time: r.Time, NodeID: 2, Peer: "p", Opcode: -1, Op: "CONNECT", Status: 9, Auth: "none", Identity: "anonymous", Source: "none", KeyLen: -1, Reason: "too many"}
	got = string(r.AppendJSON(nil))
	want = `{"ts":"2026-12-06T04:40:00.123Z","node_id":2,"peer":"p","op":"CONNECT","status":9,"auth":"none","identity":"anonymous","source":"none","latency_us":0,"reason":"too many"}` + "\n"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// TestRecordEscapes checks that any identity (a certificate subject may
// hold anything) gives one valid JSON line of bounded length.
func TestRecordEscapes(t *testing.T) {
	for _, id := range []string{`CN=a "b",O=c\d`, "line\nbreak\r\t\x00\x7f", "bad \xff\xfe utf8", "sep\u2028\u2029", "ünï©ødé", strings.Repeat("é", 1000), strings.Repeat("\x01", 5000)} {
		r := rec(0)
		r.Identity, r.Reason = id, id
		line := r.AppendJSON(nil)
		if bytes.Count(line, []byte("\n")) != 1 || line[len(line)-1] != '\n' {
			t.Fatalf("%q: not one line: %q", id, line)
		}
		if len(line) > MaxLineBytes {
			t.Fatalf("%q: line of %d bytes exceeds MaxLineBytes %d", id, len(line), MaxLineBytes)
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("%q: invalid JSON %q: %v", id, line, err)
		}
		if got := m["identity"].(string); len(id) <= maxIdentityBytes && utf8.ValidString(id) && id != got {
			t.Fatalf("identity %q came back as %q", id, got)
		}
	}
}

func FuzzRecordJSON(f *testing.F) {
	f.Add("CN=x", "127.0.0.1:1", "reason")
	f.Add("\xff\"\\\n", "", "\u2028")
	f.Fuzz(func(t *testing.T, id, peer, reason string) {
		r := rec(0)
		r.Identity, r.Peer, r.Reason = id, peer, reason
		line := r.AppendJSON(nil)
		if !json.Valid(line) || bytes.IndexByte(line, '\n') != len(line)-1 || len(line) > MaxLineBytes {
			t.Fatalf("bad line %q", line)
		}
	})
}

// counting wraps an FS and counts syncs of the audit file; fail, when
// set, fails the matching operations.
type counting struct {
	syncs atomic.Int64
	fail  atomic.Pointer[func(vfs.Op) error]
}

func (c *counting) MaybeError(op vfs.Op) error {
	if op.Kind == vfs.OpFileSync && strings.HasSuffix(op.Path, "audit.jsonl") {
		c.syncs.Add(1)
	}
	if f := c.fail.Load(); f != nil {
		return (*f)(op)
	}
	return nil
}

func (c *counting) set(f func(vfs.Op) error) { c.fail.Store(&f) }

func newTestLog(t *testing.T, o Options) (*Log, *vfs.MemFS, *counting) {
	t.Helper()
	mem := vfs.NewMem()
	c := &counting{}
	if o.FS == nil {
		o.FS = vfs.NewErrorFS(mem, c)
	}
	if o.File == "" && o.SyslogUDP == "" && o.SyslogTLS == "" {
		o.File = "/data/audit.jsonl"
	}
	if o.RetryInterval == 0 {
		o.RetryInterval = 5 * time.Millisecond
	}
	l, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l, mem, c
}

// waitFor polls cond (the writer runs on its own goroutine) for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func written(l *Log) uint64 {
	var n uint64
	for _, s := range l.Status() {
		n += s.Lines
	}
	return n
}

// readLines returns the ids of the lines of the files (oldest first).
func readIDs(t *testing.T, fs vfs.FS, paths ...string) []int {
	t.Helper()
	var ids []int
	for _, p := range paths {
		f, err := fs.Open(p)
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(f)
		_ = f.Close()
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("%s: bad line %q: %v", p, sc.Bytes(), err)
			}
			id, _ := strconv.Atoi(strings.TrimPrefix(m["identity"].(string), "id-"))
			ids = append(ids, id)
		}
	}
	return ids
}

func TestFileFsyncModes(t *testing.T) {
	for _, mode := range []FsyncMode{FsyncAlways, FsyncInterval, FsyncNever} {
		t.Run(mode.String(), func(t *testing.T) {
			l, mem, c := newTestLog(t, Options{Fsync: mode, FsyncInterval: 20 * time.Millisecond})
			for i := range 100 {
				l.Write(rec(i), false)
			}
			waitFor(t, "the lines written", func() bool { return written(l) == 100 })
			switch mode {
			case FsyncAlways:
				// Every write was synced before it counted as written, and
				// the batches shared syncs.
				if n := c.syncs.Load(); n < 1 || n > 100 {
					t.Fatalf("%d syncs for 100 lines", n)
				}
				// Synced: a power cut now keeps every line.
				if ids := readIDs(t, mem.CrashClone(vfs.CrashCloneOptions{}), "/data/audit.jsonl"); len(ids) != 100 {
					t.Fatalf("after a crash %d lines survive, want 100", len(ids))
				}
			case FsyncInterval:
				waitFor(t, "an interval sync", func() bool { return c.syncs.Load() > 0 })
				if ids := readIDs(t, mem.CrashClone(vfs.CrashCloneOptions{}), "/data/audit.jsonl"); len(ids) != 100 {
					t.Fatalf("after the interval sync and a crash %d lines survive, want 100", len(ids))
				}
			case FsyncNever:
				time.Sleep(60 * time.Millisecond) // three intervals, in which nothing may sync
				if n := c.syncs.Load(); n != 0 {
					t.Fatalf("--audit-fsync never synced %d times", n)
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if c.syncs.Load() == 0 {
				t.Fatal("Close did not sync")
			}
			ids := readIDs(t, mem, "/data/audit.jsonl")
			for i, id := range ids {
				if id != i {
					t.Fatalf("line %d has id %d", i, id)
				}
			}
			if len(ids) != 100 {
				t.Fatalf("%d lines, want 100", len(ids))
			}
		})
	}
}

func rotatedPaths(n int) []string {
	var ps []string
	for i := n; i >= 1; i-- {
		ps = append(ps, "/data/audit.jsonl."+strconv.Itoa(i))
	}
	return append(ps, "/data/audit.jsonl")
}

// TestRotationKeepsEveryLine rotates many times, with a rotation step
// failing now and then, and finds every line exactly once, in order, with
// at most MaxFiles rotated files.
func TestRotationKeepsEveryLine(t *testing.T) {
	const lines = 3000
	l, mem, c := newTestLog(t, Options{MaxFileBytes: 16 << 10, MaxFiles: 100, Fsync: FsyncAlways})
	var renames atomic.Int64
	c.set(func(op vfs.Op) error {
		if op.Kind == vfs.OpRename && renames.Add(1)%50 == 0 {
			return vfs.ErrInjected
		}
		return nil
	})
	for i := range lines {
		l.Write(rec(i), false)
	}
	waitFor(t, "every line written", func() bool { return written(l) == lines })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	ids := readIDs(t, mem, rotatedPaths(100)...)
	if len(ids) != lines {
		t.Fatalf("%d lines across the files, want %d", len(ids), lines)
	}
	for i, id := range ids {
		if id != i {
			t.Fatalf("line %d has id %d: lost or doubled across a rotation", i, id)
		}
	}
	if st := l.Status()[0]; st.Errors["rotate"] == 0 {
		t.Fatalf("no rotate error counted: %+v", st)
	}
}

func TestRotationRetention(t *testing.T) {
	l, mem, _ := newTestLog(t, Options{MaxFileBytes: 8 << 10, MaxFiles: 3})
	for i := range 2000 {
		l.Write(rec(i), false)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	names, _ := mem.List("/data")
	var audit []string
	for _, n := range names {
		if strings.HasPrefix(n, "audit.jsonl") {
			audit = append(audit, n)
		}
		if fi, err := mem.Stat(filepath.Join("/data", n)); err == nil && fi.Size() > 8<<10 {
			t.Fatalf("%s has %d bytes, more than the 8 KiB bound", n, fi.Size())
		}
	}
	if len(audit) != 4 {
		t.Fatalf("files %v: want the live file and 3 rotated ones", audit)
	}
	// The newest lines, contiguous up to the last.
	ids := readIDs(t, mem, rotatedPaths(3)...)
	if len(ids) == 0 || ids[len(ids)-1] != 1999 {
		t.Fatalf("last id %v", ids[len(ids)-1:])
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] != ids[i-1]+1 {
			t.Fatalf("gap between %d and %d", ids[i-1], ids[i])
		}
	}
}

// TestFailingSinkRecovers fails every write to the file: the log is
// unhealthy, counts the errors, keeps the lines; once the disk works
// again it writes them all, once each, and is healthy.
func TestFailingSinkRecovers(t *testing.T) {
	for _, kind := range []vfs.OpKind{vfs.OpFileWrite, vfs.OpFileSync} {
		t.Run(kind.String(), func(t *testing.T) {
			l, mem, c := newTestLog(t, Options{Fsync: FsyncAlways})
			l.Write(rec(0), false)
			waitFor(t, "the first line", func() bool { return written(l) == 1 })
			var failed atomic.Int64
			c.set(func(op vfs.Op) error {
				if op.Kind == kind && strings.HasSuffix(op.Path, "audit.jsonl") {
					failed.Add(1)
					if kind == vfs.OpFileWrite {
						return vfs.PartialWrite(10, vfs.ErrInjected) // a torn write
					}
					return vfs.ErrInjected
				}
				return nil
			})
			for i := 1; i < 50; i++ {
				l.Write(rec(i), false)
			}
			waitFor(t, "the sink to fail", func() bool { ok, _ := l.Healthy(); return !ok })
			_, reason := l.Healthy()
			if !strings.Contains(reason, "audit.jsonl") {
				t.Fatalf("reason %q does not name the file", reason)
			}
			waitFor(t, "retries", func() bool { return failed.Load() >= 3 })
			c.set(func(vfs.Op) error { return nil })
			waitFor(t, "recovery", func() bool { ok, _ := l.Healthy(); return ok && written(l) == 50 })
			st := l.Status()[0]
			want := "write"
			if kind == vfs.OpFileSync {
				want = "fsync"
			}
			if st.Errors[want] == 0 {
				t.Fatalf("errors %v: no %s error counted", st.Errors, want)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			ids := readIDs(t, mem, "/data/audit.jsonl")
			if len(ids) != 50 {
				t.Fatalf("%d lines, want 50", len(ids))
			}
			for i, id := range ids {
				if id != i {
					t.Fatalf("line %d has id %d", i, id)
				}
			}
		})
	}
}

// TestQueueBound fills the queue of a failing sink: lines beyond the
// bound are dropped and counted, a line to keep waits for room (at most
// KeepWait), and the queue never holds more than its bound.
func TestQueueBound(t *testing.T) {
	l, _, c := newTestLog(t, Options{QueueLines: 10, KeepWait: 50 * time.Millisecond})
	c.set(func(op vfs.Op) error {
		if op.Kind == vfs.OpFileWrite {
			return vfs.ErrInjected
		}
		return nil
	})
	l.Write(rec(0), false)
	waitFor(t, "the sink to fail", func() bool { ok, _ := l.Healthy(); return !ok })
	for i := 1; i <= 30; i++ {
		l.Write(rec(i), false)
	}
	if st := l.Status()[0]; st.QueueLines > 10 || st.Errors["queue_full"] == 0 {
		t.Fatalf("status %+v: want at most 10 queued and a queue_full error", st)
	}
	if d := l.Dropped(); d != 20 {
		t.Fatalf("dropped %d, want 20", d)
	}
	start := time.Now()
	l.Write(rec(99), true)
	if time.Since(start) < 50*time.Millisecond {
		t.Fatal("a line to keep did not wait for room")
	}
	if d := l.Dropped(); d != 21 {
		t.Fatalf("dropped %d, want 21 once the wait ran out", d)
	}
	// Room comes free while a kept line waits: it is queued.
	c.set(nil)
	c.set(func(vfs.Op) error { return nil })
	l.Write(rec(100), true)
	waitFor(t, "recovery", func() bool { ok, _ := l.Healthy(); return ok })
}

func TestTornTailCutAtOpen(t *testing.T) {
	mem := vfs.NewMem()
	if err := mem.MkdirAll("/data", 0o700); err != nil {
		t.Fatal(err)
	}
	f, _ := mem.Create("/data/audit.jsonl")
	_, _ = f.Write(append(rec(0).AppendJSON(nil), `{"ts":"2026-`...))
	_ = f.Close()
	l, err := Open(Options{FS: mem, File: "/data/audit.jsonl"})
	if err != nil {
		t.Fatal(err)
	}
	l.Write(rec(1), false)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if ids := readIDs(t, mem, "/data/audit.jsonl"); fmt.Sprint(ids) != "[0 1]" {
		t.Fatalf("ids %v, want [0 1]", ids)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(Options{}); err == nil {
		t.Fatal("no sink: no error")
	}
	mem := vfs.NewMem()
	fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
		if op.Kind == vfs.OpCreate {
			return vfs.ErrInjected
		}
		return nil
	}))
	_, err := Open(Options{FS: fs, File: "/d/audit.jsonl"})
	if err == nil || !strings.Contains(err.Error(), "/d/audit.jsonl") {
		t.Fatalf("unwritable file: %v", err)
	}
	if _, err := Open(Options{SyslogUDP: "no-port"}); err == nil || !strings.Contains(err.Error(), "--audit-syslog") {
		t.Fatalf("bad syslog address: %v", err)
	}
}

// rfc5424 matches a message of this package: PRI 110, version 1, the
// timestamp, host, app, pid, msgid "audit", no structured data, the JSON.
var rfc5424 = regexp.MustCompile(`^<110>1 2026-12-06T04:40:00\.123Z testhost kayadb [0-9]+ audit - (\{.*\})$`)

func checkSyslog(t *testing.T, msg string, id int) {
	t.Helper()
	m := rfc5424.FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("not an RFC 5424 message of ours: %q", msg)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(m[1]), &r); err != nil {
		t.Fatalf("message body %q: %v", m[1], err)
	}
	if r["identity"] != "id-"+strconv.Itoa(id) {
		t.Fatalf("message %q: want id %d", msg, id)
	}
}

func TestSyslogUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	l, _, _ := newTestLog(t, Options{SyslogUDP: pc.LocalAddr().String(), Hostname: "testhost"})
	for i := range 3 {
		l.Write(rec(i), false)
	}
	buf := make([]byte, 64<<10)
	for i := range 3 {
		_ = pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		checkSyslog(t, string(buf[:n]), i)
	}
}

// tlsCollector is a syslog-over-TLS test listener that parses RFC 5425
// octet-counted frames.
type tlsCollector struct {
	ln   net.Listener
	mu   sync.Mutex
	msgs []string
	wg   sync.WaitGroup
}

func newTLSCollector(t *testing.T) (*tlsCollector, *x509.CertPool) {
	ca := securitytest.NewCA(t, "collector-ca")
	pair := ca.Issue(t, "localhost", nil)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair.TLSCertificate(t)}})
	if err != nil {
		t.Fatal(err)
	}
	c := &tlsCollector{ln: ln}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				defer conn.Close()
				r := bufio.NewReader(conn)
				for {
					n, err := r.ReadString(' ')
					if err != nil {
						return
					}
					size, err := strconv.Atoi(strings.TrimSuffix(n, " "))
					if err != nil || size <= 0 || size > MaxLineBytes+1024 {
						c.add(fmt.Sprintf("BAD FRAME LENGTH %q", n))
						return
					}
					msg := make([]byte, size)
					if _, err := io.ReadFull(r, msg); err != nil {
						return
					}
					c.add(string(msg))
				}
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); c.wg.Wait() })
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return c, pool
}

func (c *tlsCollector) add(m string) {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
}

func (c *tlsCollector) got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.msgs...)
}

func TestSyslogTLS(t *testing.T) {
	col, pool := newTLSCollector(t)
	_, port, _ := net.SplitHostPort(col.ln.Addr().String())
	l, _, _ := newTestLog(t, Options{SyslogTLS: "localhost:" + port, SyslogTLSConfig: &tls.Config{RootCAs: pool}, Hostname: "testhost"})
	for i := range 20 {
		l.Write(rec(i), false)
	}
	waitFor(t, "20 messages", func() bool { return len(col.got()) >= 20 })
	for i, m := range col.got() {
		checkSyslog(t, m, i)
	}
	if ok, r := l.Healthy(); !ok {
		t.Fatalf("unhealthy: %s", r)
	}
}

// TestSyslogTLSUntrusted: a collector whose certificate the CA does not
// sign gets nothing; the sink is failing with a dial error.
func TestSyslogTLSUntrusted(t *testing.T) {
	col, _ := newTLSCollector(t)
	other := securitytest.NewCA(t, "other")
	pool := x509.NewCertPool()
	pool.AddCert(other.Cert)
	_, port, _ := net.SplitHostPort(col.ln.Addr().String())
	l, _, _ := newTestLog(t, Options{SyslogTLS: "localhost:" + port, SyslogTLSConfig: &tls.Config{RootCAs: pool}})
	l.Write(rec(0), false)
	waitFor(t, "the sink to fail", func() bool { ok, _ := l.Healthy(); return !ok })
	if st := l.Status()[0]; st.Errors["dial"] == 0 {
		t.Fatalf("status %+v: want a dial error", st)
	}
	if len(col.got()) != 0 {
		t.Fatalf("an untrusted collector received %v", col.got())
	}
	if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Fatal(err)
	}
	if l.Dropped() != 1 {
		t.Fatalf("dropped %d at close, want 1", l.Dropped())
	}
}
