package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/loopport"
	"github.com/kayadb/kayadb/internal/security/securitytest"
	"github.com/kayadb/kayadb/internal/wire"
)

// freeAddr picks a free loopback address for a server process, outside
// the ephemeral range (see package loopport).
func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := loopport.Pick()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// TestSIGHUPReloadsCertificates runs a real kayadb-server with mutual TLS
// and the file watcher off: replacing the certificate files changes
// nothing until SIGHUP, after which new connections get the new
// certificate, without a restart.
func TestSIGHUPReloadsCertificates(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test; skipped with -short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "kayadb-server")
	build := exec.Command("go", "build", "-o", bin, "./cmd/kayadb-server")
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ca := securitytest.NewCA(t, "reload test CA")
	first := ca.Issue(t, "node1.kaya.local", nil)
	files := first.Write(t, ca, dir, "node1")
	admin := ca.Issue(t, "admin", &securitytest.CertOptions{NameOnly: true})
	clientAddr := freeAddr(t)
	logPath := filepath.Join(dir, "node.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--data", filepath.Join(dir, "data"), "--client-addr", clientAddr, "--raft-addr", freeAddr(t),
		"--no-metrics", "--tls-cert", files.Cert, "--tls-key", files.Key, "--tls-ca", files.CA, "--tls-reload-interval", "0")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	kp := admin.TLSCertificate(t)
	conf := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &kp, nil }}
	serial := func() string {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", clientAddr, conf)
		if err != nil {
			return "error: " + err.Error()
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write(wire.AppendRequest(nil, wire.OpHello, wire.AppendHello(nil, 1))); err != nil {
			return "error: " + err.Error()
		}
		if st, _, _, err := wire.ReadResponse(bufio.NewReader(c), nil); err != nil || st != wire.StatusOK {
			return "error: no HELLO reply"
		}
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	wait := func(what, want string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		got := ""
		for time.Now().Before(deadline) {
			if got = serial(); got == want {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		log, _ := os.ReadFile(logPath)
		t.Fatalf("%s: serving %s, want %s\n%s", what, got, want, log)
	}
	wait("at start", first.Cert.SerialNumber.String())

	second := ca.Issue(t, "node1.kaya.local", nil)
	second.Write(t, nil, dir, "node1")
	time.Sleep(300 * time.Millisecond)
	if got := serial(); got != first.Cert.SerialNumber.String() {
		t.Fatalf("the certificate changed without SIGHUP (the watcher is off): %s", got)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	wait("after SIGHUP", second.Cert.SerialNumber.String())
	log, _ := os.ReadFile(logPath)
	if !strings.Contains(string(log), "TLS certificates reloaded") {
		t.Fatalf("no reload in the log:\n%s", log)
	}
	select {
	case <-exited:
		t.Fatalf("the server exited on SIGHUP:\n%s", log)
	default:
	}
}
