package cli

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kayadb/kayadb/client"
	"github.com/kayadb/kayadb/internal/security"
	"github.com/kayadb/kayadb/internal/wire"
)

// kayactl doctor (docs/design/security-controls.md §4): every member's
// security controls checked against the controls table of
// docs/security.md, from its STATS "security" member and from a probe of
// its client port.

// Results of a check.
const (
	doctorPass = "pass"
	doctorWarn = "warn"
	doctorFail = "fail"
)

// certWarnWithin is how close to its expiry a certificate gets a warning.
const certWarnWithin = 30 * 24 * time.Hour

// doctorCheck is one row of the report (the JSON names are stable).
type doctorCheck struct {
	Check  string `json:"check"`
	Node   string `json:"node"`
	Result string `json:"result"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// doctorReport is the whole report.
type doctorReport struct {
	Checks []doctorCheck `json:"checks"`
	Pass   int           `json:"pass"`
	Warn   int           `json:"warn"`
	Fail   int           `json:"fail"`
	OK     bool          `json:"ok"`
}

// securityDoc is the "security" member of STATS (server/securitystats.go).
type securityDoc struct {
	ClientTLS       bool     `json:"client_tls"`
	RaftTLS         bool     `json:"raft_tls"`
	MutualTLS       bool     `json:"mutual_tls"`
	ClientToken     bool     `json:"client_token"`
	OperatorToken   bool     `json:"operator_token"`
	PeerToken       bool     `json:"peer_token"`
	CredentialFiles []string `json:"credential_files"`
	ClientAddr      string   `json:"client_addr"`
	RaftAddr        string   `json:"raft_addr"`
	MetricsAddr     string   `json:"metrics_addr"`
	AllowPublicBind bool     `json:"allow_public_bind"`
	CertNotAfter    string   `json:"cert_not_after"`
	DataDirMode     string   `json:"data_dir_mode"`
	Audit           struct {
		Enabled  bool   `json:"enabled"`
		Required bool   `json:"required"`
		Fsync    string `json:"fsync"`
		Healthy  bool   `json:"healthy"`
		Problem  string `json:"problem"`
		Sinks    []struct {
			Sink   string `json:"sink"`
			Target string `json:"target"`
		} `json:"sinks"`
	} `json:"audit"`
	Encryption struct {
		Available bool     `json:"available"`
		Enabled   bool     `json:"enabled"`
		KeyIDs    []uint32 `json:"key_ids"`
	} `json:"encryption"`
}

// portProbe is what the client port shows a client without credentials.
type portProbe struct {
	tls bool
	// certRequired: the TLS handshake demanded a client certificate.
	certRequired bool
	notAfter     time.Time
	err          error
}

func (a *app) newDoctorCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check a live cluster's security controls (TLS, mutual TLS, credentials, binds, certificates, data directory, encryption, audit log)",
		Long: `kayactl doctor connects to every member of the cluster (the members in the
STATS of the first --server that answers), reads its STATS "security"
member, probes its client port itself (TLS or plain, whether a client
certificate is required, the certificate's expiry), and prints one row per
check and node:

  CHECK  NODE  RESULT  DETAIL  FIX

with pass, warn or fail and what to change for each warn or fail. The
checks follow the controls table of docs/security.md: client_tls, raft_tls,
mutual_tls, credentials, public_bind, cert_expiry (warn within 30 days),
data_dir, encryption, audit_log. With --json the report is one JSON object
{"checks":[{"check","node","result","detail","fix"}],"pass","warn","fail","ok"}.

Exit status: 0 when nothing fails (warnings allowed), 1 when any check
fails, 2 when no member could be reached.`,
		Args: exactArgs(0, "no arguments"),
	}
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		if !a.serverMode() {
			return usageErrorf("doctor checks a running cluster: give --server ADDR (or $%s), not --data", EnvServer)
		}
		c, ctx, cancel, err := a.newClient()
		if err != nil {
			return err
		}
		defer cancel()
		defer c.Close()
		timeout, err := a.requestTimeout()
		if err != nil {
			return err
		}
		rep, err := a.doctor(ctx, c, a.servers(), timeout)
		if err != nil {
			return &cliError{code: 2, err: err, hint: "is the cluster up, and are --server, the TLS flags and --client-token right?"}
		}
		if a.json {
			err = writeJSON(a.stdout, rep)
		} else {
			writeDoctor(a.stdout, rep)
		}
		if err != nil {
			return err
		}
		if !rep.OK {
			return &cliError{code: ExitError, quiet: true, err: fmt.Errorf("%d checks failed", rep.Fail)}
		}
		return nil
	})
	return cmd
}

// doctor runs every check on every member.
func (a *app) doctor(ctx context.Context, c *client.Client, seeds []string, perCall time.Duration) (*doctorReport, error) {
	members, err := discoverMembers(ctx, c, seeds, perCall)
	if err != nil {
		return nil, err
	}
	rep := &doctorReport{Checks: []doctorCheck{}}
	reached := 0
	for _, m := range members {
		node := m.ClientAddr
		if m.ID != 0 {
			node = fmt.Sprintf("%d %s", m.ID, m.ClientAddr)
		}
		sctx, cancel := context.WithTimeout(ctx, perCall)
		st, err := c.Status(sctx, m.ClientAddr)
		cancel()
		if err != nil {
			rep.add(doctorCheck{"reachable", node, doctorFail, err.Error(), "start the node, or check the address, TLS flags and --client-token given to kayactl"})
			continue
		}
		reached++
		var doc struct {
			Security *securityDoc `json:"security"`
		}
		if json.Unmarshal(st.Raw, &doc) != nil || doc.Security == nil {
			rep.add(doctorCheck{"security_stats", node, doctorFail, "the node's STATS has no security member (a server older than this kayactl)", "upgrade the node"})
			continue
		}
		probe := probeClientPort(ctx, m.ClientAddr, perCall)
		for _, ck := range checkNode(doc.Security, probe, time.Now()) {
			ck.Node = node
			rep.add(ck)
		}
	}
	if reached == 0 {
		return nil, fmt.Errorf("no member of the cluster answered STATS (members: %d)", len(members))
	}
	rep.OK = rep.Fail == 0
	return rep, nil
}

func (r *doctorReport) add(c doctorCheck) {
	r.Checks = append(r.Checks, c)
	switch c.Result {
	case doctorPass:
		r.Pass++
	case doctorWarn:
		r.Warn++
	default:
		r.Fail++
	}
}

// probeClientPort connects to addr as a client without credentials: a TLS
// handshake that verifies nothing (it only looks), then a HELLO, which a
// port that requires client certificates refuses.
func probeClientPort(ctx context.Context, addr string, timeout time.Duration) portProbe {
	var p portProbe
	d := &net.Dialer{Timeout: timeout}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		p.err = err
		return p
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(timeout))
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // a probe: it only reads the certificate
	if err := tc.Handshake(); err != nil {
		// Not TLS (a plain port answers the ClientHello with nothing it
		// understands, or closes), or a TLS 1.2 server that demanded a
		// certificate during the handshake.
		if strings.Contains(err.Error(), "certificate") {
			p.tls, p.certRequired = true, true
		}
		return p
	}
	p.tls = true
	if cs := tc.ConnectionState(); len(cs.PeerCertificates) > 0 {
		p.notAfter = cs.PeerCertificates[0].NotAfter
	}
	// TLS 1.3: a required certificate is enforced after the handshake, as
	// an alert in place of the first reply.
	if _, err := tc.Write(wire.AppendRequest(nil, wire.OpHello, wire.AppendHello(nil, 1))); err != nil {
		p.certRequired = true
		return p
	}
	if _, _, _, err := wire.ReadResponse(bufio.NewReader(tc), nil); err != nil {
		p.certRequired = true
	}
	return p
}

// checkNode runs the checks on one node's security member and probe.
func checkNode(sec *securityDoc, probe portProbe, now time.Time) []doctorCheck {
	var out []doctorCheck
	add := func(check, result, detail, fix string) {
		if result == doctorPass {
			fix = ""
		}
		out = append(out, doctorCheck{Check: check, Result: result, Detail: detail, Fix: fix})
	}
	// TLS on the client port: what the probe saw, not only what STATS says.
	switch {
	case probe.tls:
		add("client_tls", doctorPass, "the client port speaks TLS", "")
	case sec.ClientTLS:
		add("client_tls", doctorWarn, "STATS says TLS is on, but the probe could not complete a TLS handshake: "+errText(probe.err), "check the node's certificate and the address")
	default:
		add("client_tls", doctorFail, "the client port is plain TCP: requests, tokens and values cross the network readable", "start the node with --tls-cert and --tls-key")
	}
	switch {
	case sec.RaftTLS:
		add("raft_tls", doctorPass, "raft traffic is encrypted", "")
	case sec.PeerToken:
		add("raft_tls", doctorWarn, "the raft port authenticates peers with a peer token but is plain TCP: replicated values cross the network readable", "give every node --tls-cert, --tls-key and --tls-ca")
	default:
		add("raft_tls", doctorFail, "the raft port is plain TCP and authenticates nobody", "give every node --tls-cert, --tls-key and --tls-ca (or at least --peer-token-file)")
	}
	switch {
	case sec.MutualTLS && (probe.certRequired || !probe.tls):
		add("mutual_tls", doctorPass, "clients and peers must present a certificate signed by the cluster's CA", "")
	case sec.MutualTLS:
		add("mutual_tls", doctorWarn, "STATS says mutual TLS is on, but the probe was served without a certificate", "check --tls-ca on the node")
	default:
		add("mutual_tls", doctorFail, "anyone who reaches the ports can connect: no client certificate is required", "start the node with --tls-ca (the CA that signs clients' and peers' certificates)")
	}
	var creds []string
	if sec.ClientToken {
		creds = append(creds, "client token")
	}
	if sec.OperatorToken {
		creds = append(creds, "operator token")
	}
	creds = append(creds, sec.CredentialFiles...)
	switch {
	case len(sec.CredentialFiles) > 0 || (sec.ClientToken && sec.OperatorToken):
		add("credentials", doctorPass, "configured: "+strings.Join(creds, ", "), "")
	case sec.OperatorToken:
		add("credentials", doctorWarn, "an operator token but no client credential: data requests are open to anyone who connects", "set --client-token-file (or an identity file)")
	case sec.ClientToken:
		add("credentials", doctorFail, "a client token but no operator token: membership changes and backups are open to anyone who connects", "set --operator-token-file")
	default:
		add("credentials", doctorFail, "no token or identity is configured: every request is served to anyone who connects", "set --client-token-file and --operator-token-file (or an identity file)")
	}
	var exposed []string
	for _, ad := range []struct{ name, addr string }{{"client", sec.ClientAddr}, {"raft", sec.RaftAddr}, {"metrics", sec.MetricsAddr}} {
		if ad.addr == "" {
			continue
		}
		if class, err := security.ClassifyAddr(ad.addr, nil); err == nil && class.Exposed() {
			exposed = append(exposed, fmt.Sprintf("%s %s (%s)", ad.name, ad.addr, class))
		}
	}
	switch {
	case len(exposed) == 0:
		add("public_bind", doctorPass, "every port listens on loopback or a private address", "")
	case sec.MutualTLS && len(creds) > 0:
		add("public_bind", doctorWarn, "exposed: "+strings.Join(exposed, ", ")+" (behind mutual TLS and credentials)", "keep a firewall in front; listen on a private address where you can")
	default:
		add("public_bind", doctorFail, "exposed without mutual TLS and credentials: "+strings.Join(exposed, ", "), "listen on a private address, or turn on mutual TLS and tokens before --allow-public-bind")
	}
	notAfter := probe.notAfter
	if notAfter.IsZero() && sec.CertNotAfter != "" {
		notAfter, _ = time.Parse(time.RFC3339, sec.CertNotAfter)
	}
	switch left := notAfter.Sub(now); {
	case notAfter.IsZero():
		add("cert_expiry", doctorFail, "the node has no TLS certificate", "start the node with --tls-cert and --tls-key")
	case left <= 0:
		add("cert_expiry", doctorFail, "the node's certificate expired on "+notAfter.UTC().Format(time.RFC3339), "issue a new certificate and replace the files (reloaded without a restart)")
	case left < certWarnWithin:
		add("cert_expiry", doctorWarn, fmt.Sprintf("the node's certificate expires in %d days (%s)", int(left.Hours()/24), notAfter.UTC().Format(time.RFC3339)), "renew it now: replace the files, the node reloads them")
	default:
		add("cert_expiry", doctorPass, fmt.Sprintf("the certificate is valid until %s", notAfter.UTC().Format(time.RFC3339)), "")
	}
	mode, err := strconv.ParseUint(sec.DataDirMode, 8, 32)
	switch {
	case sec.DataDirMode == "" || err != nil:
		add("data_dir", doctorWarn, "the node did not report its data directory's permissions", "check that only the server's user can read it (chmod 700)")
	case mode&0o077 != 0:
		add("data_dir", doctorFail, "the data directory's mode is "+sec.DataDirMode+": other users can read or enter it", "chmod 700 the data directory")
	default:
		add("data_dir", doctorPass, "the data directory's mode is "+sec.DataDirMode, "")
	}
	switch {
	case sec.Encryption.Enabled:
		add("encryption", doctorPass, fmt.Sprintf("data at rest is encrypted (key ids %v)", sec.Encryption.KeyIDs), "")
	case !sec.Encryption.Available:
		add("encryption", doctorWarn, "this server build cannot encrypt data at rest: anyone who reads the disk or a backup reads the values", "encrypt the volume (LUKS, cloud disk encryption) until the server is upgraded")
	default:
		add("encryption", doctorFail, "data at rest is not encrypted: anyone who reads the disk or a backup reads the values", "start the node with --encryption-keyring-file (or --encryption-key-file)")
	}
	au := &sec.Audit
	var sinks []string
	for _, s := range au.Sinks {
		sinks = append(sinks, s.Sink+" "+s.Target)
	}
	switch {
	case !au.Enabled:
		add("audit_log", doctorFail, "no audit log: requests leave no trail", "start the node with --audit-log (and --audit-syslog-tls to ship it)")
	case !au.Healthy:
		add("audit_log", doctorFail, "the audit log is failing: "+au.Problem, "fix the sink (disk space, permissions, the collector); see kayadb_audit_errors_total")
	case !au.Required:
		add("audit_log", doctorWarn, "audit log on ("+strings.Join(sinks, ", ")+"), but requests are served when it fails", "add --audit-required to fail closed")
	default:
		add("audit_log", doctorPass, "audit log on and required ("+strings.Join(sinks, ", ")+", fsync "+au.Fsync+")", "")
	}
	return out
}

func errText(err error) string {
	if err == nil {
		return "no handshake"
	}
	return err.Error()
}

// writeDoctor prints the report as a table and a summary line.
func writeDoctor(w io.Writer, r *doctorReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tNODE\tRESULT\tDETAIL\tFIX")
	for _, c := range r.Checks {
		fix := c.Fix
		if fix == "" {
			fix = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Check, c.Node, strings.ToUpper(c.Result), c.Detail, fix)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "%d passed, %d warnings, %d failed\n", r.Pass, r.Warn, r.Fail)
}
