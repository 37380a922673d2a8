package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/kayadb/kayadb/internal/audit"
	"github.com/kayadb/kayadb/internal/wire"
)

// The audit log (docs/design/security-controls.md §2, package audit):
// one line per client request, written by the goroutine that writes the
// request's reply (replies.write), after the reply was decided; refusals
// included (credentials, reply memory, --audit-required itself) and the
// connections refused over a limit. With --audit-required the node fails
// closed: while the log is unhealthy every request but HELLO and HEALTH
// is refused (auditGate).

// AuditConfig configures the audit log.
type AuditConfig struct {
	// Mode is "" (on when a credential is configured: auditDefaultOn),
	// "on" or "off". It governs the file sink; the syslog sinks run when
	// their addresses are given.
	Mode string
	// File is the audit file (default DataDir/audit.jsonl).
	File string
	// Fsync, FsyncInterval, MaxFileBytes, MaxFiles: the file sink's
	// durability and rotation (audit.Options; zero values: defaults).
	Fsync         audit.FsyncMode
	FsyncInterval time.Duration
	MaxFileBytes  int64
	MaxFiles      int
	// Required refuses requests (but HELLO and HEALTH) while the log
	// cannot take their lines.
	Required bool
	// SyslogUDP and SyslogTLS are syslog collectors (HOST:PORT); SyslogCA
	// is a PEM bundle that verifies the TLS collector (default: the
	// system's roots).
	SyslogUDP, SyslogTLS, SyslogCA string
}

// auditDefaultOn: the audit file is on by default when any credential is
// configured, as in the original KayaDB.
func (c *Config) auditDefaultOn() bool {
	return c.OperatorToken != "" || c.ClientToken != "" || len(c.auditCredentialFiles()) > 0
}

// auditCredentialFiles lists the configured credential files (ACL,
// tenant, identity) that turn the audit log on by default.
func (c *Config) auditCredentialFiles() []string {
	var out []string
	for _, f := range []string{c.ACLFile, c.TenantFile, c.IdentityFile} {
		if f != "" {
			out = append(out, f)
		}
	}
	return out
}

// auditFile is the audit file's path, or "" when the file sink is off.
func (c *Config) auditFile() string {
	a := c.Audit
	if a.Mode == "off" || (a.Mode == "" && !c.auditDefaultOn()) {
		return ""
	}
	if a.File != "" {
		return a.File
	}
	return filepath.Join(c.DataDir, "audit.jsonl")
}

// openAudit opens the audit log's sinks (a step of New, after the data
// directory). A file it cannot open stops the start.
func (s *Server) openAudit(*boot) error {
	cfg := &s.cfg
	a := cfg.Audit
	file := cfg.auditFile()
	if file == "" && a.SyslogUDP == "" && a.SyslogTLS == "" {
		if a.Required {
			return configError{errors.New("--audit-required needs an audit sink: drop --no-audit-log, or give --audit-log, --audit-syslog or --audit-syslog-tls")}
		}
		return nil
	}
	opts := audit.Options{FS: s.fs, File: file, Fsync: a.Fsync, FsyncInterval: a.FsyncInterval,
		MaxFileBytes: a.MaxFileBytes, MaxFiles: a.MaxFiles, SyslogUDP: a.SyslogUDP, SyslogTLS: a.SyslogTLS,
		KeepWait: cfg.RequestTimeout, Logger: s.log.With("component", "audit")}
	if a.SyslogTLS != "" && a.SyslogCA != "" {
		pem, err := os.ReadFile(a.SyslogCA)
		if err != nil {
			return configError{fmt.Errorf("--audit-syslog-ca: %w", err)}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return configError{fmt.Errorf("--audit-syslog-ca %s: no PEM certificate in it", a.SyslogCA)}
		}
		opts.SyslogTLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	l, err := audit.Open(opts)
	if err != nil {
		return err
	}
	s.audit = l
	s.log.Info("audit log on", "file", file, "fsync", a.Fsync.String(), "syslog_udp", a.SyslogUDP, "syslog_tls", a.SyslogTLS, "required", a.Required)
	return nil
}

// closeAudit writes what is queued and closes the sinks (closeParts, once
// no connection is left).
func (s *Server) closeAudit() error {
	if s.audit == nil {
		return nil
	}
	return s.audit.Close()
}

// connAudit is what every record of one connection shares.
type connAudit struct {
	peer string
	// subject is the client certificate's subject when mutual TLS
	// verified one, else "".
	subject string
}

// newConnAudit describes a connection once its TLS handshake is done.
func newConnAudit(c net.Conn) *connAudit {
	ca := &connAudit{peer: c.RemoteAddr().String()}
	if tc, ok := c.(*tls.Conn); ok {
		if st := tc.ConnectionState(); len(st.VerifiedChains) > 0 && len(st.PeerCertificates) > 0 {
			ca.subject = st.PeerCertificates[0].Subject.String()
		}
	}
	return ca
}

// callAudit is what a call's record needs beyond its reply.
type callAudit struct {
	// authorized: the request passed the credential check (authFailed
	// otherwise: its line is never dropped).
	authorized bool
	// refused: the reply is a refusal (its text goes in "reason").
	refused bool
	keyLen  int
}

// principal is who a request was served for, as the audit line names it.
type principal struct {
	Auth, Name, Source, Tenant string
}

// requestPrincipal says who a request was served for, from what authorize
// knows today: the token it checked ("operator", "client"), else the
// connection's verified certificate subject, else "anonymous". The
// per-request principals of the authorization work (authz.Principal)
// replace this one function.
func (s *Server) requestPrincipal(op wire.Opcode, authorized bool, conn *connAudit) principal {
	switch {
	case authorized && wire.IsAdmin(op) && s.cfg.OperatorToken != "":
		return principal{Auth: "operator", Name: "operator", Source: "token"}
	case authorized && wire.IsData(op) && s.cfg.ClientToken != "":
		return principal{Auth: "client", Name: "client", Source: "token"}
	case conn != nil && conn.subject != "":
		return principal{Auth: "none", Name: conn.subject, Source: "certificate"}
	}
	return principal{Auth: "none", Name: "anonymous", Source: "none"}
}

// callPrincipal names who a call was served for: the principal authorize
// resolved (authz.go), or, for a request refused before it had one, what
// requestPrincipal can tell. auth keeps the original's meaning: the kind
// of token the request carried (operator on admin opcodes, client on
// data opcodes), or none.
func (s *Server) callPrincipal(cl *call, conn *connAudit) principal {
	pr := cl.principal
	if pr == nil {
		return s.requestPrincipal(cl.op, cl.aud.authorized, conn)
	}
	auth := "none"
	if pr.Source == "token" {
		auth = "client"
		if wire.IsAdmin(cl.op) {
			auth = "operator"
		}
	}
	return principal{Auth: auth, Name: pr.Name, Source: pr.Source, Tenant: pr.Tenant}
}

// auditKeyLen is the length of the key (or prefix) a request names, or
// -1: read from its length field without decoding the request.
func auditKeyLen(op wire.Opcode, p []byte) int {
	off := -1
	switch op {
	case wire.OpPut, wire.OpGet, wire.OpDelete, wire.OpScan:
		off = 0
	case wire.OpGetAt, wire.OpScanAt:
		off = 8 // read_ts u64
	case wire.OpTxnOp:
		off = 9 // txn_id u64, op u8
	case wire.OpWatchCreate:
		off = 13 // kind u8, start_revision u64, progress_ms u32
	}
	if off < 0 || len(p) < off+4 {
		return -1
	}
	n := binary.LittleEndian.Uint32(p[off:])
	if n > wire.MaxKeySize {
		return -1
	}
	return int(n)
}

// auditGate refuses a request while the audit log cannot take its line
// and --audit-required is set. HELLO and HEALTH always pass (a load
// balancer's probe, the protocol handshake).
func (s *Server) auditGate(op wire.Opcode) (wire.Status, []byte, bool) {
	if s.audit == nil || !s.cfg.Audit.Required || op == wire.OpHello || op == wire.OpHealth {
		return 0, nil, false
	}
	ok, reason := s.audit.Healthy()
	if ok {
		return 0, nil, false
	}
	s.auditRefused.Add(1)
	return wire.StatusError, wire.AppendError(nil, "audit log unavailable: "+reason), true
}

// auditCall writes a request's line (replies.write, once the reply is
// settled). Admin operations and authentication failures are kept: they
// wait for room in a full queue.
func (s *Server) auditCall(conn *connAudit, cl *call) {
	if s.audit == nil {
		return
	}
	now := time.Now()
	who := s.callPrincipal(cl, conn)
	rec := audit.Record{Time: now, NodeID: s.cfg.NodeID, Opcode: int(cl.op), Op: cl.op.String(), Status: int(cl.status),
		Auth: who.Auth, Identity: who.Name, Source: who.Source, Tenant: who.Tenant, KeyLen: -1, Latency: now.Sub(cl.start)}
	if conn != nil {
		rec.Peer = conn.peer
	}
	if cl.aud.authorized {
		rec.KeyLen = cl.aud.keyLen
	}
	if cl.aud.refused {
		rec.Reason, _ = wire.DecodeError(cl.payload)
	}
	s.audit.Write(&rec, wire.IsAdmin(cl.op) || !cl.aud.authorized)
}

// auditConnRefused writes the line of a connection refused over a limit
// before any request was read.
func (s *Server) auditConnRefused(peer net.Addr, msg string) {
	if s.audit == nil {
		return
	}
	s.audit.Write(&audit.Record{Time: time.Now(), NodeID: s.cfg.NodeID, Peer: peer.String(), Opcode: -1, Op: "CONNECTION",
		Status: int(wire.StatusError), Auth: "none", Identity: "anonymous", Source: "none", KeyLen: -1, Reason: msg}, false)
}

// auditCollector exports the audit log's counters at scrape time.
type auditCollector struct {
	s                                    *Server
	lines, errs, dropped, queue, healthy *prometheus.Desc
	refused                              *prometheus.Desc
}

func (s *Server) newAuditCollector() *auditCollector {
	return &auditCollector{s: s,
		lines:   prometheus.NewDesc("kayadb_audit_lines_total", "Audit lines written, by sink (file, syslog_udp, syslog_tls).", []string{"sink"}, nil),
		errs:    prometheus.NewDesc("kayadb_audit_errors_total", "Audit sink failures, by sink and reason (open, write, fsync, rotate, dial, send, queue_full).", []string{"sink", "reason"}, nil),
		dropped: prometheus.NewDesc("kayadb_audit_dropped_total", "Audit lines lost: a full queue, a line to keep that found no room within the request timeout, lines left unwritten at shutdown.", nil, nil),
		queue:   prometheus.NewDesc("kayadb_audit_queue_lines", "Audit lines waiting for their sink.", []string{"sink"}, nil),
		healthy: prometheus.NewDesc("kayadb_audit_sink_healthy", "1 when the audit sink writes and has room.", []string{"sink"}, nil),
		refused: prometheus.NewDesc("kayadb_audit_refused_total", "Requests refused because the audit log was unavailable (--audit-required).", nil, nil),
	}
}

func (c *auditCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lines, c.errs, c.dropped, c.queue, c.healthy, c.refused} {
		ch <- d
	}
}

func (c *auditCollector) Collect(ch chan<- prometheus.Metric) {
	l := c.s.audit
	for _, st := range l.Status() {
		ch <- prometheus.MustNewConstMetric(c.lines, prometheus.CounterValue, float64(st.Lines), st.Sink)
		ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, float64(st.QueueLines), st.Sink)
		h := 0.0
		if st.Healthy {
			h = 1
		}
		ch <- prometheus.MustNewConstMetric(c.healthy, prometheus.GaugeValue, h, st.Sink)
		for _, r := range audit.Reasons {
			ch <- prometheus.MustNewConstMetric(c.errs, prometheus.CounterValue, float64(st.Errors[r]), st.Sink, r)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(l.Dropped()))
	ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(c.s.auditRefused.Load()))
}

// auditFlags are the audit log's flags (docs/server.md).
type auditFlags struct {
	on, off, required              *bool
	file, fsync, maxSize           *string
	interval                       *time.Duration
	maxFiles                       *int
	syslogUDP, syslogTLS, syslogCA *string
}

func defineAuditFlags(fs *pflag.FlagSet) *auditFlags {
	f := &auditFlags{}
	f.on = fs.Bool("audit-log", false, "write the audit log, one JSON line per client request, to DATA/audit.jsonl (on by default when a client or operator token is configured)")
	f.file = fs.String("audit-log-file", "", "write the audit log to this file instead of DATA/audit.jsonl (turns it on)")
	f.off = fs.Bool("no-audit-log", false, "do not write the audit file, even with tokens configured (the syslog sinks still run when given)")
	f.fsync = fs.String("audit-fsync", "interval", "when the audit file is made durable: always (every batch of lines is fdatasynced before the next; requests share the syncs and never wait for them), interval (every --audit-fsync-interval) or never (left to the OS)")
	f.interval = fs.Duration("audit-fsync-interval", audit.DefaultFsyncInterval, "how often --audit-fsync interval syncs the audit file")
	f.maxSize = fs.String("audit-max-size", "100MiB", "rotate the audit file before it grows past this size (e.g. 100MiB, 1GiB)")
	f.maxFiles = fs.Int("audit-max-files", audit.DefaultMaxFiles, "rotated audit files kept (audit.jsonl.1 the newest); older ones are removed")
	f.required = fs.Bool("audit-required", false, "fail closed: while an audit sink fails or its queue is full, refuse every request but HELLO and HEALTH with \"audit log unavailable\"")
	f.syslogUDP = fs.String("audit-syslog", "", "also send every audit line to this syslog collector, HOST:PORT, as RFC 5424 over UDP")
	f.syslogTLS = fs.String("audit-syslog-tls", "", "also send every audit line to this syslog collector, HOST:PORT, as RFC 5424 over TLS (RFC 5425)")
	f.syslogCA = fs.String("audit-syslog-ca", "", "PEM CA bundle that verifies the --audit-syslog-tls collector (default: the system's roots)")
	return f
}

// config checks the audit flags and fills cfg.Audit.
func (f *auditFlags) config(cfg *Config) error {
	a := &cfg.Audit
	switch {
	case *f.off && (*f.on || *f.file != ""):
		return errors.New("--no-audit-log with --audit-log or --audit-log-file: give one or the other")
	case *f.off:
		a.Mode = "off"
	case *f.on || *f.file != "":
		a.Mode = "on"
	}
	a.File = *f.file
	var err error
	if a.Fsync, err = audit.ParseFsyncMode(*f.fsync); err != nil {
		return fmt.Errorf("--audit-fsync %v", err)
	}
	if *f.interval <= 0 {
		return fmt.Errorf("--audit-fsync-interval must be a positive duration (default %s)", audit.DefaultFsyncInterval)
	}
	a.FsyncInterval = *f.interval
	if a.MaxFileBytes, err = parseBytes(*f.maxSize); err != nil || a.MaxFileBytes < 64<<10 {
		return fmt.Errorf("--audit-max-size %q: want a byte count of at least 64KiB (for example 100MiB)", *f.maxSize)
	}
	if *f.maxFiles < 1 || *f.maxFiles > 1000 {
		return fmt.Errorf("--audit-max-files %d: want 1 to 1000 (default %d)", *f.maxFiles, audit.DefaultMaxFiles)
	}
	a.MaxFiles = *f.maxFiles
	a.Required = *f.required
	for _, s := range []struct{ flag, addr string }{{"--audit-syslog", *f.syslogUDP}, {"--audit-syslog-tls", *f.syslogTLS}} {
		if s.addr != "" {
			if _, _, err := net.SplitHostPort(s.addr); err != nil {
				return fmt.Errorf("%s %q: want HOST:PORT of a syslog collector", s.flag, s.addr)
			}
		}
	}
	a.SyslogUDP, a.SyslogTLS, a.SyslogCA = *f.syslogUDP, *f.syslogTLS, *f.syslogCA
	if a.SyslogCA != "" && a.SyslogTLS == "" {
		return errors.New("--audit-syslog-ca verifies the --audit-syslog-tls collector: give --audit-syslog-tls as well")
	}
	if a.Required && a.Mode == "off" && a.SyslogUDP == "" && a.SyslogTLS == "" {
		return errors.New("--audit-required with --no-audit-log and no syslog sink: nothing could be audited")
	}
	return nil
}
