package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/audit"
	"github.com/kayadb/kayadb/internal/vfs"
	"github.com/kayadb/kayadb/internal/wire"
)

// auditLine is a decoded audit line; absent members are nil.
type auditLine map[string]any

func (l auditLine) num(k string) float64 {
	v, _ := l[k].(float64)
	return v
}

func (l auditLine) str(k string) string {
	v, _ := l[k].(string)
	return v
}

// readAudit returns the lines of the node's audit file once it holds at
// least n (the writer is asynchronous).
func readAudit(t *testing.T, s *Server, n int) []auditLine {
	t.Helper()
	var lines []auditLine
	waitFor(t, "audit lines", func() bool {
		lines = nil
		f, err := s.fs.Open(s.cfg.auditFile())
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(f)
		_ = f.Close()
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			var l auditLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("audit line %q: %v", sc.Bytes(), err)
			}
			lines = append(lines, l)
		}
		return len(lines) >= n
	})
	return lines
}

// auditFileBytes is the audit file's content.
func auditFileBytes(t *testing.T, s *Server) string {
	t.Helper()
	f, err := s.fs.Open(s.cfg.auditFile())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	return string(b)
}

const (
	auditClientToken   = "audit-client-secret-1"
	auditOperatorToken = "audit-operator-secret-2"
)

// TestAuditLineForEveryOpcode sends every opcode of the protocol (and one
// it does not define) with the right credentials and finds one line per
// request with the documented fields: the reply's status, the principal,
// the key length of keyed requests, the peer, the node, never a token.
func TestAuditLineForEveryOpcode(t *testing.T) {
	// Tokens configured: the audit log is on by default.
	s, _ := startSecured(t, Config{ClientToken: auditClientToken, OperatorToken: auditOperatorToken})
	if s.audit == nil {
		t.Fatal("the audit log is off with tokens configured")
	}
	c := dial(t, s.ClientAddr())
	peer := c.c.LocalAddr().String()
	key := []byte("audit/key-12") // 12 bytes
	keyed := map[wire.Opcode][]byte{
		wire.OpPut:         wire.AppendPut(nil, key, []byte("secret-value")),
		wire.OpGet:         wire.AppendKey(nil, key),
		wire.OpDelete:      wire.AppendKey(nil, key),
		wire.OpScan:        wire.AppendKey(nil, key),
		wire.OpGetAt:       wire.AppendGetAt(nil, 0, key),
		wire.OpScanAt:      wire.AppendScanAt(nil, wire.ScanAt{Prefix: key}),
		wire.OpTxnOp:       wire.AppendTxnOp(nil, wire.TxnOp{TxnID: 1 << 40, Kind: wire.TxnOpGet, Key: key}),
		wire.OpWatchCreate: wire.AppendWatchCreate(nil, wire.WatchCreate{Kind: wire.WatchKey, Key: key}),
	}
	type sent struct {
		op     wire.Opcode
		status wire.Status
	}
	var reqs []sent
	ops := []wire.Opcode{200} // one the protocol does not define
	for op := range 256 {
		if !strings.HasPrefix(wire.Opcode(op).String(), "OPCODE(") {
			ops = append(ops, wire.Opcode(op))
		}
	}
	for _, op := range ops {
		p := keyed[op]
		if op == wire.OpHello {
			p = wire.AppendHello(nil, 1)
		}
		switch {
		case wire.IsAdmin(op):
			p = wire.AppendAdmin(nil, auditOperatorToken, op, p)
		case wire.IsData(op):
			p = wire.AppendClient(nil, auditClientToken, p)
		}
		cc := c
		if op == wire.OpWatchCreate {
			cc = dial(t, s.ClientAddr()) // its pushes stay off the main connection
		}
		st, _, err := cc.do(op, p)
		if err != nil {
			t.Fatalf("%v: %v", op, err)
		}
		if cc == c {
			reqs = append(reqs, sent{op, st})
		}
	}
	lines := readAudit(t, s, len(ops))
	var mine []auditLine
	for _, l := range lines {
		if l.str("peer") == peer {
			mine = append(mine, l)
		}
	}
	if len(mine) != len(reqs) {
		t.Fatalf("%d lines for the connection's %d requests", len(mine), len(reqs))
	}
	for i, r := range reqs {
		l := mine[i]
		if l.num("opcode") != float64(r.op) || l.str("op") != r.op.String() || l.num("status") != float64(r.status) {
			t.Errorf("request %d (%v, status %d): line %v", i, r.op, r.status, l)
		}
		if _, err := time.Parse("2006-01-02T15:04:05.000Z", l.str("ts")); err != nil {
			t.Errorf("%v: ts %q: %v", r.op, l.str("ts"), err)
		}
		if l.num("node_id") != 1 || l["latency_us"] == nil {
			t.Errorf("%v: node_id or latency missing: %v", r.op, l)
		}
		wantAuth, wantID, wantSrc := "none", "anonymous", "none"
		switch {
		case wire.IsAdmin(r.op):
			wantAuth, wantID, wantSrc = "operator", "operator", "token"
		case wire.IsData(r.op):
			wantAuth, wantID, wantSrc = "client", "client", "token"
		}
		if l.str("auth") != wantAuth || l.str("identity") != wantID || l.str("source") != wantSrc {
			t.Errorf("%v: auth/identity/source %q/%q/%q, want %q/%q/%q", r.op, l.str("auth"), l.str("identity"), l.str("source"), wantAuth, wantID, wantSrc)
		}
		if _, ok := keyed[r.op]; ok {
			if l.num("key_len") != 12 {
				t.Errorf("%v: key_len %v, want 12", r.op, l["key_len"])
			}
		} else if l["key_len"] != nil {
			t.Errorf("%v: key_len %v on a request without a key", r.op, l["key_len"])
		}
		switch r.op {
		case wire.OpSplitRange, wire.OpMergeRange:
			// Range changes need the admin role (authz.go): the client
			// token's principal is refused, and the line says why.
			if !strings.HasPrefix(l.str("reason"), "permission denied") {
				t.Errorf("%v: reason %q, want the role refusal", r.op, l.str("reason"))
			}
		default:
			if l["reason"] != nil {
				t.Errorf("%v: a reason on a request that was not refused: %v", r.op, l)
			}
		}
	}
	body := auditFileBytes(t, s)
	for _, secret := range []string{auditClientToken, auditOperatorToken, "secret-value", string(key)} {
		if strings.Contains(body, secret) {
			t.Fatalf("the audit file holds %q", secret)
		}
	}
}

// TestAuditWatchCreateCancel: a watch's create and cancel each have a line
// (the pushed events do not).
func TestAuditWatchCreateCancel(t *testing.T) {
	s, _ := startSecured(t, Config{Audit: AuditConfig{Mode: "on"}})
	c := dial(t, s.ClientAddr())
	st, p, err := c.do(wire.OpWatchCreate, wire.AppendWatchCreate(nil, wire.WatchCreate{Kind: wire.WatchPrefix, Key: []byte("w/")}))
	if err != nil || st != wire.StatusOK {
		t.Fatalf("WATCH_CREATE: %d %v", st, err)
	}
	created, err := wire.DecodeWatchCreated(p)
	if err != nil {
		t.Fatal(err)
	}
	if st, _, err := c.do(wire.OpWatchCancel, wire.AppendWatchCancel(nil, created.ID)); err != nil || st != wire.StatusOK {
		t.Fatalf("WATCH_CANCEL: %d %v", st, err)
	}
	lines := readAudit(t, s, 2)
	if lines[0].str("op") != "WATCH_CREATE" || lines[0].num("key_len") != 2 || lines[0].num("status") != 0 ||
		lines[1].str("op") != "WATCH_CANCEL" || lines[1].num("status") != 0 {
		t.Fatalf("lines %v", lines)
	}
	if lines[0].str("auth") != "none" || lines[0].str("identity") != "anonymous" {
		t.Fatalf("open mode principal: %v", lines[0])
	}
}

// TestAuditRefusals: every kind of refusal has its line, with the reason
// sent to the client and the principal it was refused for.
func TestAuditRefusals(t *testing.T) {
	s, _ := startSecured(t, Config{ClientToken: auditClientToken, OperatorToken: auditOperatorToken, MaxClientConnections: 2})
	c := dial(t, s.ClientAddr())
	peer := c.c.LocalAddr().String()
	put := wire.AppendPut(nil, []byte("k"), []byte("v"))
	remove := wire.AppendAdmin(nil, "wrong-operator-token", wire.OpRemoveMember, wire.AppendTxnID(nil, 4))
	for _, r := range []struct {
		op wire.Opcode
		p  []byte
	}{
		{wire.OpPut, put}, // no prefix
		{wire.OpPut, wire.AppendClient(nil, "wrong-client-token", put)},
		{wire.OpRemoveMember, remove},
	} {
		if st, _, err := c.do(r.op, r.p); err != nil || st != wire.StatusError {
			t.Fatalf("%v: %d %v", r.op, st, err)
		}
	}
	// Over the connection limit: refused before a request is read.
	_ = dial(t, s.ClientAddr())
	over, err := net.DialTimeout("tcp", s.ClientAddr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	_ = over.SetReadDeadline(time.Now().Add(10 * time.Second))
	if st, _, _, err := wire.ReadResponse(bufio.NewReader(over), nil); err != nil || st != wire.StatusError {
		t.Fatalf("over the limit: %d %v", st, err)
	}
	lines := readAudit(t, s, 4)
	var mine []auditLine
	var conn auditLine
	for _, l := range lines {
		switch {
		case l.str("peer") == peer:
			mine = append(mine, l)
		case l.str("op") == "CONNECTION":
			conn = l
		}
	}
	if len(mine) != 3 {
		t.Fatalf("lines %v", lines)
	}
	for i, want := range []struct{ op, reason string }{
		{"PUT", wire.MsgClientCredential}, {"PUT", wire.MsgClientCredential}, {"REMOVE_MEMBER", wire.MsgOperatorCredential},
	} {
		l := mine[i]
		if l.str("op") != want.op || l.num("status") != 9 || l.str("reason") != want.reason || l.str("auth") != "none" || l.str("identity") != "anonymous" || l["key_len"] != nil {
			t.Errorf("refusal %d: %v; want %s refused with %q by an anonymous principal", i, l, want.op, want.reason)
		}
	}
	if conn == nil || conn.num("status") != 9 || !strings.Contains(conn.str("reason"), "connection") || conn["opcode"] != nil {
		t.Fatalf("connection refusal line %v", conn)
	}
	body := auditFileBytes(t, s)
	for _, tok := range []string{"wrong-client-token", "wrong-operator-token"} {
		if strings.Contains(body, tok) {
			t.Fatalf("a presented token is in the audit file: %s", tok)
		}
	}
}

// failSwitch fails writes and syncs of the audit file while on.
type failSwitch struct{ on atomic.Bool }

func (f *failSwitch) MaybeError(op vfs.Op) error {
	if f.on.Load() && strings.HasSuffix(op.Path, "audit.jsonl") && (op.Kind == vfs.OpFileWrite || op.Kind == vfs.OpFileSync) {
		return vfs.ErrInjected
	}
	return nil
}

// TestAuditRequiredFailsClosed: with --audit-required, a failing audit
// file makes the node refuse every request but HELLO and HEALTH, with
// "audit log unavailable"; once the disk works again it serves, and the
// lines of the failure (the refusals too) are in the file. Without
// --audit-required the same failure is counted but requests are served.
func TestAuditRequiredFailsClosed(t *testing.T) {
	for _, required := range []bool{true, false} {
		t.Run(map[bool]string{true: "required", false: "not required"}[required], func(t *testing.T) {
			sw := &failSwitch{}
			fs := vfs.NewErrorFS(vfs.NewMem(), sw)
			s, _ := startSecured(t, Config{EngineOptions: &engine.Options{FS: fs},
				Audit: AuditConfig{Mode: "on", Required: required, Fsync: audit.FsyncAlways}})
			c := dial(t, s.ClientAddr())
			put := wire.AppendPut(nil, []byte("k"), []byte("v"))
			if st, _, err := c.do(wire.OpPut, put); err != nil || st != wire.StatusOK {
				t.Fatalf("put: %d %v", st, err)
			}
			sw.on.Store(true)
			if st, _, err := c.do(wire.OpPut, put); err != nil || st != wire.StatusOK {
				t.Fatalf("put whose line fails: %d %v", st, err)
			}
			waitFor(t, "the audit log to fail", func() bool { ok, _ := s.audit.Healthy(); return !ok })
			st, p, err := c.do(wire.OpPut, put)
			if err != nil {
				t.Fatal(err)
			}
			msg, _ := wire.DecodeError(p)
			if required {
				if st != wire.StatusError || !strings.HasPrefix(msg, "audit log unavailable: ") || !strings.Contains(msg, "audit.jsonl") {
					t.Fatalf("put with the audit log failing: %d %q; want 9 \"audit log unavailable: …\"", st, msg)
				}
				for _, op := range []wire.Opcode{wire.OpGet, wire.OpStats} {
					p := wire.AppendKey(nil, []byte("k"))
					if op == wire.OpStats {
						p = nil
					}
					if st, _, _ := c.do(op, p); st != wire.StatusError {
						t.Fatalf("%v served with the audit log failing: %d", op, st)
					}
				}
			} else if st != wire.StatusOK {
				t.Fatalf("put without --audit-required: %d %q", st, msg)
			}
			for _, op := range []wire.Opcode{wire.OpHello, wire.OpHealth} {
				p := wire.AppendHello(nil, 1)
				if op == wire.OpHealth {
					p = nil
				}
				if st, _, err := c.do(op, p); err != nil || st != wire.StatusOK {
					t.Fatalf("%v refused with the audit log failing: %d %v", op, st, err)
				}
			}
			var errCount float64
			mfs, _ := s.obs.reg.Gather()
			for _, mf := range mfs {
				if mf.GetName() == "kayadb_audit_errors_total" {
					for _, m := range mf.GetMetric() {
						errCount += m.GetCounter().GetValue()
					}
				}
			}
			if errCount == 0 {
				t.Fatal("kayadb_audit_errors_total did not count the failure")
			}
			sw.on.Store(false)
			waitFor(t, "the audit log to recover", func() bool { ok, _ := s.audit.Healthy(); return ok })
			if st, _, err := c.do(wire.OpPut, put); err != nil || st != wire.StatusOK {
				t.Fatalf("put after recovery: %d %v", st, err)
			}
			n := 8
			if !required {
				n = 6
			}
			lines := readAudit(t, s, n)
			var ops []string
			for _, l := range lines {
				ops = append(ops, l.str("op")+":"+l.str("reason"))
			}
			got := strings.Join(ops, " ")
			if required && (len(lines) != 8 || !strings.Contains(got, "PUT:audit log unavailable") || !strings.Contains(got, "GET:audit log unavailable")) {
				t.Fatalf("lines after recovery: %s", got)
			}
			if !required && len(lines) != 6 {
				t.Fatalf("lines after recovery: %s", got)
			}
			if required && s.auditRefused.Load() != 3 {
				t.Fatalf("%d refusals counted, want 3", s.auditRefused.Load())
			}
		})
	}
}

// TestAuditDefaultOn: on by default with a credential, off without; the
// flags turn it on or off and their conflicts are errors.
func TestAuditDefaultOn(t *testing.T) {
	for _, tc := range []struct {
		args []string
		file string // "" off; "DATA" the default path
		err  string
	}{
		{args: nil, file: ""},
		{args: []string{"--client-token", "0123456789abcdef"}, file: "DATA"},
		{args: []string{"--operator-token", "0123456789abcdef"}, file: "DATA"},
		{args: []string{"--client-token", "0123456789abcdef", "--no-audit-log"}, file: ""},
		{args: []string{"--audit-log"}, file: "DATA"},
		{args: []string{"--audit-log-file", "/var/log/kaya/audit.jsonl"}, file: "/var/log/kaya/audit.jsonl"},
		{args: []string{"--audit-log", "--no-audit-log"}, err: "--no-audit-log with --audit-log"},
		{args: []string{"--no-audit-log", "--audit-required"}, err: "nothing could be audited"},
		{args: []string{"--audit-fsync", "sometimes"}, err: "--audit-fsync"},
		{args: []string{"--audit-max-size", "1KiB"}, err: "--audit-max-size"},
		{args: []string{"--audit-max-files", "0"}, err: "--audit-max-files"},
		{args: []string{"--audit-syslog", "collector"}, err: "--audit-syslog"},
		{args: []string{"--audit-syslog-ca", "/ca.pem"}, err: "--audit-syslog-tls"},
	} {
		var stderr bytes.Buffer
		cfg, code := ParseFlags(append([]string{"--data", "/d"}, tc.args...), func(string) (string, bool) { return "", false }, &stderr)
		if tc.err != "" {
			if code != exitUsage || !strings.Contains(stderr.String(), tc.err) {
				t.Errorf("%v: code %d, stderr %q; want an error naming %s", tc.args, code, stderr.String(), tc.err)
			}
			continue
		}
		if code != -1 {
			t.Fatalf("%v: code %d: %s", tc.args, code, stderr.String())
		}
		want := tc.file
		if want == "DATA" {
			want = "/d/audit.jsonl"
		}
		if got := cfg.auditFile(); got != want {
			t.Errorf("%v: audit file %q, want %q", tc.args, got, want)
		}
	}
	var stderr bytes.Buffer
	cfg, code := ParseFlags([]string{"--audit-log", "--audit-fsync", "always", "--audit-fsync-interval", "250ms", "--audit-max-size", "1MiB", "--audit-max-files", "3", "--audit-required",
		"--audit-syslog", "127.0.0.1:514", "--audit-syslog-tls", "logs.example:6514", "--audit-syslog-ca", "/ca.pem"}, func(string) (string, bool) { return "", false }, &stderr)
	a := cfg.Audit
	if code != -1 || a.Fsync != audit.FsyncAlways || a.FsyncInterval != 250*time.Millisecond || a.MaxFileBytes != 1<<20 || a.MaxFiles != 3 || !a.Required ||
		a.SyslogUDP != "127.0.0.1:514" || a.SyslogTLS != "logs.example:6514" || a.SyslogCA != "/ca.pem" {
		t.Fatalf("code %d %s: %+v", code, stderr.String(), a)
	}
}

// TestAuditSyslogUDPFromServer: the node sends its lines to --audit-syslog.
func TestAuditSyslogUDPFromServer(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	s, _ := startSecured(t, Config{Audit: AuditConfig{Mode: "off", SyslogUDP: pc.LocalAddr().String()}})
	c := dial(t, s.ClientAddr())
	if st, _, err := c.do(wire.OpHealth, nil); err != nil || st != wire.StatusOK {
		t.Fatal(st, err)
	}
	buf := make([]byte, 64<<10)
	_ = pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	msg := string(buf[:n])
	if !strings.HasPrefix(msg, "<110>1 ") || !strings.Contains(msg, ` kayadb `) || !strings.Contains(msg, ` audit - {"ts":`) || !strings.Contains(msg, `"op":"HEALTH"`) {
		t.Fatalf("syslog message %q", msg)
	}
}

// TestAuditPrincipal: who a line names — the token checked, else the
// verified certificate's subject, else anonymous; a refused request is
// never credited with the token it failed to prove.
func TestAuditPrincipal(t *testing.T) {
	s := &Server{cfg: Config{ClientToken: "c", OperatorToken: "o"}}
	cert := &connAudit{peer: "p", subject: "CN=alice,O=Example"}
	for _, tc := range []struct {
		op         wire.Opcode
		authorized bool
		conn       *connAudit
		want       principal
	}{
		{wire.OpPut, true, nil, principal{Auth: "client", Name: "client", Source: "token"}},
		{wire.OpAddMember, true, cert, principal{Auth: "operator", Name: "operator", Source: "token"}},
		{wire.OpPut, false, nil, principal{Auth: "none", Name: "anonymous", Source: "none"}},
		{wire.OpPut, false, cert, principal{Auth: "none", Name: "CN=alice,O=Example", Source: "certificate"}},
		{wire.OpHealth, true, cert, principal{Auth: "none", Name: "CN=alice,O=Example", Source: "certificate"}},
		{wire.OpHello, true, &connAudit{}, principal{Auth: "none", Name: "anonymous", Source: "none"}},
	} {
		if got := s.requestPrincipal(tc.op, tc.authorized, tc.conn); got != tc.want {
			t.Errorf("%v authorized=%v: %+v, want %+v", tc.op, tc.authorized, got, tc.want)
		}
	}
}

// TestAuditNamesThePolicyPrincipal: with the policy files (and no
// --audit-log flag) the audit log is on, and each line names the principal
// the policy resolved: a tenant's id and tenant, an identity's name, an
// admin identity's token counted as an operator token; never the token.
func TestAuditNamesThePolicyPrincipal(t *testing.T) {
	cfg := policyConfig(t)
	cfg.ClientToken, cfg.OperatorToken = "", "" // the files alone turn the log on
	s, _ := startSecured(t, cfg)
	if s.audit == nil {
		t.Fatal("the audit log is off with an ACL, tenant and identity file configured")
	}
	type req struct {
		who, token string
		op         wire.Opcode
		inner      []byte
		// the line's auth, identity, source, tenant and status
		auth, identity, source, tenant string
		status                         wire.Status
	}
	reqs := []req{
		{"tenant", azTenant1, wire.OpPut, wire.AppendPut(nil, []byte("t1/k"), []byte("v")), "client", "t1", "token", "t1", wire.StatusOK},
		{"tenant outside", azTenant1, wire.OpGet, wire.AppendKey(nil, []byte("t2/k")), "client", "t1", "token", "t1", wire.StatusError},
		{"read-only", azRO, wire.OpPut, wire.AppendPut(nil, []byte("x"), []byte("v")), "client", "ro", "token", "", wire.StatusError},
		// Past the role check; the empty payload is then invalid.
		{"admin identity", azAdmin, wire.OpBackupStatus, nil, "operator", "adm", "token", "", wire.StatusInvalidArgument},
	}
	c := dial(t, s.ClientAddr())
	peer := c.c.LocalAddr().String()
	for _, r := range reqs {
		p := wire.AppendClient(nil, r.token, r.inner)
		if wire.IsAdmin(r.op) {
			p = wire.AppendAdmin(nil, r.token, r.op, r.inner)
		}
		st, _, err := c.do(r.op, p)
		if err != nil || st != r.status {
			t.Fatalf("%s: status %d, err %v; want status %d", r.who, st, err, r.status)
		}
	}
	var mine []auditLine
	for _, l := range readAudit(t, s, len(reqs)) {
		if l.str("peer") == peer {
			mine = append(mine, l)
		}
	}
	if len(mine) != len(reqs) {
		t.Fatalf("%d lines for %d requests", len(mine), len(reqs))
	}
	for i, r := range reqs {
		l := mine[i]
		if l.str("auth") != r.auth || l.str("identity") != r.identity || l.str("source") != r.source || l.str("tenant") != r.tenant {
			t.Errorf("%s: auth/identity/source/tenant %q/%q/%q/%q, want %q/%q/%q/%q", r.who,
				l.str("auth"), l.str("identity"), l.str("source"), l.str("tenant"), r.auth, r.identity, r.source, r.tenant)
		}
		if r.status != wire.StatusInvalidArgument && (r.status != wire.StatusOK) != (l["reason"] != nil) {
			t.Errorf("%s: reason %v for status %d", r.who, l["reason"], r.status)
		}
	}
	body := auditFileBytes(t, s)
	for _, secret := range []string{azTenant1, azRO, azAdmin} {
		if strings.Contains(body, secret) {
			t.Fatalf("the audit file holds a token")
		}
	}
}
