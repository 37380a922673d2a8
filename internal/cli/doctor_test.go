package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/security"
	"github.com/kayadb/kayadb/internal/security/securitytest"
	"github.com/kayadb/kayadb/internal/server"
)

// doctorResults runs kayactl doctor --json and returns each check's
// result (one node), and the exit code.
func doctorResults(t *testing.T, args ...string) (map[string]doctorCheck, int) {
	t.Helper()
	out, errs, code := runCLI(append(args, "--json", "doctor")...)
	var rep doctorReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("doctor --json: exit %d, %v: %q %q", code, err, out, errs)
	}
	got := map[string]doctorCheck{}
	for _, c := range rep.Checks {
		got[c.Check] = c
	}
	if (code == 1) != (rep.Fail > 0) || rep.OK != (rep.Fail == 0) {
		t.Fatalf("exit %d with %d failures (ok %v)", code, rep.Fail, rep.OK)
	}
	return got, code
}

// TestDoctorWeakConfiguration: a node with none of the controls fails
// every check that concerns them, each with a fix, and doctor exits 1.
func TestDoctorWeakConfiguration(t *testing.T) {
	c := startNode(t, func(_ uint64, cfg *server.Config) {
		_ = cfg.EngineOptions.FS.MkdirAll("/weak", 0o755)
		cfg.DataDir = "/weak"
	})
	got, code := doctorResults(t, "--server", c.addr(1))
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, check := range []string{"client_tls", "raft_tls", "mutual_tls", "credentials", "cert_expiry", "data_dir", "audit_log"} {
		if got[check].Result != doctorFail || got[check].Fix == "" {
			t.Errorf("%s: %+v; want fail with a fix", check, got[check])
		}
	}
	if got["public_bind"].Result != doctorPass {
		t.Errorf("public_bind on loopback: %+v", got["public_bind"])
	}
	if got["encryption"].Result == doctorPass {
		t.Errorf("encryption: %+v", got["encryption"])
	}
	// The table: a header, the rows, a summary.
	out, _, code := runCLI("--server", c.addr(1), "doctor")
	if code != 1 || !strings.HasPrefix(out, "CHECK") || !strings.Contains(strings.SplitN(out, "\n", 2)[0], "FIX") ||
		!strings.Contains(out, "FAIL") || !strings.Contains(out, "failed\n") {
		t.Fatalf("table: exit %d\n%s", code, out)
	}
}

// TestDoctorHardenedConfiguration: mutual TLS, both tokens, encryption at
// rest and a required audit log pass; a certificate that expires in 10
// days is a warning, not a failure.
func TestDoctorHardenedConfiguration(t *testing.T) {
	for _, tc := range []struct {
		name     string
		notAfter time.Duration
		expiry   string
	}{{"valid a year", 365 * 24 * time.Hour, doctorPass}, {"expiring in 10 days", 10 * 24 * time.Hour, doctorWarn}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ca := securitytest.NewCA(t, "doctor test CA")
			node := ca.Issue(t, "node1.kaya.local", &securitytest.CertOptions{NotAfter: time.Now().Add(tc.notAfter)}).Write(t, ca, dir, "node1")
			admin := ca.Issue(t, "admin.kaya.local", nil).Write(t, nil, dir, "admin")
			const opTok, clTok = "doctor-operator-secret", "doctor-client-secret"
			ring, err := crypt.Generate(nil)
			if err != nil {
				t.Fatal(err)
			}
			keyring := filepath.Join(dir, "keyring")
			if err := os.WriteFile(keyring, ring.Format(), 0o600); err != nil {
				t.Fatal(err)
			}
			c := startNode(t, func(_ uint64, cfg *server.Config) {
				cfg.OperatorToken, cfg.ClientToken = opTok, clTok
				cfg.EncryptionKeyringFile = keyring
				cfg.TLS = security.TLSFiles{Cert: node.Cert, Key: node.Key, CA: node.CA}
				cfg.Audit = server.AuditConfig{Required: true}
			})
			args := []string{"--server", c.addr(1), "--tls-ca-cert", node.CA, "--tls-cert", admin.Cert, "--tls-key", admin.Key, "--client-token", clTok}
			got, code := doctorResults(t, args...)
			if code != 0 {
				t.Fatalf("exit %d: %+v", code, got)
			}
			for _, check := range []string{"client_tls", "raft_tls", "mutual_tls", "credentials", "public_bind", "data_dir", "encryption", "audit_log"} {
				if got[check].Result != doctorPass {
					t.Errorf("%s: %+v; want pass", check, got[check])
				}
			}
			if got["cert_expiry"].Result != tc.expiry {
				t.Errorf("cert_expiry: %+v; want %s", got["cert_expiry"], tc.expiry)
			}
		})
	}
}

// TestDoctorCannotConnect: nothing answers: exit 2.
func TestDoctorCannotConnect(t *testing.T) {
	_, errs, code := runCLI("--server", "127.0.0.1:1", "--timeout", "1s", "doctor")
	if code != 2 || !strings.Contains(errs, "127.0.0.1:1") {
		t.Fatalf("exit %d, stderr %q; want 2 naming the address", code, errs)
	}
}

// TestDoctorChecks covers the rules of checkNode that a live node does not
// reach in the tests above.
func TestDoctorChecks(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sec := &securityDoc{ClientTLS: true, RaftTLS: false, PeerToken: true, MutualTLS: true, OperatorToken: true,
		ClientAddr: "0.0.0.0:7379", RaftAddr: "10.0.0.5:7481", DataDirMode: "0750", CertNotAfter: "2025-12-01T00:00:00Z"}
	sec.Audit.Enabled, sec.Audit.Healthy, sec.Audit.Problem = true, false, "file sink /d/audit.jsonl: write: disk full"
	sec.Encryption.Available = true
	got := map[string]string{}
	for _, c := range checkNode(sec, portProbe{tls: true, certRequired: true}, now) {
		got[c.Check] = c.Result
	}
	want := map[string]string{"client_tls": doctorPass, "raft_tls": doctorWarn, "mutual_tls": doctorPass, "credentials": doctorWarn,
		"public_bind": doctorWarn, "cert_expiry": doctorFail, "data_dir": doctorFail, "encryption": doctorFail, "audit_log": doctorFail}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s, want %s", k, got[k], v)
		}
	}
}
