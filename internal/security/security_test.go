package security

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/security/securitytest"
)

func fakeResolver(m map[string][]string) Resolver {
	return func(_ context.Context, host string) ([]netip.Addr, error) {
		list, ok := m[host]
		if !ok {
			return nil, errors.New("no such host")
		}
		var out []netip.Addr
		for _, s := range list {
			out = append(out, netip.MustParseAddr(s))
		}
		return out, nil
	}
}

func TestClassifyAddr(t *testing.T) {
	res := fakeResolver(map[string][]string{
		"localhost":   {"127.0.0.1", "::1"},
		"db.internal": {"10.1.2.3"},
		"mixed.test":  {"10.1.2.3", "203.0.113.7"},
	})
	cases := []struct {
		addr string
		want AddrClass
	}{
		{"127.0.0.1:7379", Loopback},
		{"127.9.9.9:7379", Loopback},
		{"[::1]:7379", Loopback},
		{"10.0.0.5:7481", Private},
		{"172.16.0.1:7481", Private},
		{"172.31.255.255:7481", Private},
		{"192.168.1.10:7481", Private},
		{"[fd12:3456::1]:7481", Private},
		{"169.254.10.1:7481", Private},
		{"[fe80::1%eth0]:7481", Private},
		{"0.0.0.0:7379", Wildcard},
		{"[::]:7379", Wildcard},
		{":7379", Wildcard},
		{"8.8.8.8:7379", Public},
		{"172.32.0.1:7379", Public},
		{"[2001:db8::1]:7379", Public},
		{"[::ffff:8.8.8.8]:7379", Public},
		{"localhost:7379", Loopback},
		{"db.internal:7379", Private},
		{"mixed.test:7379", Public},
	}
	for _, c := range cases {
		got, err := ClassifyAddr(c.addr, res)
		if err != nil || got != c.want {
			t.Errorf("ClassifyAddr(%q) = %v, %v; want %v", c.addr, got, err, c.want)
		}
	}
	for _, bad := range []string{"7379", "127.0.0.1", "nosuch.test:7379", "127.0.0.1:"} {
		if _, err := ClassifyAddr(bad, res); err == nil {
			t.Errorf("ClassifyAddr(%q): no error", bad)
		}
	}
}

func TestBindGuardRefusesExposedAddresses(t *testing.T) {
	g := BindGuard{}
	for _, addr := range []string{"0.0.0.0:7379", "[::]:7379", ":7379", "8.8.8.8:7379"} {
		w, err := g.Check("--client-addr", addr)
		if err == nil || w != "" {
			t.Fatalf("%s: accepted (warning %q)", addr, w)
		}
		for _, want := range []string{"--client-addr", addr, "--allow-public-bind", "127.0.0.1"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not mention %q", addr, err, want)
			}
		}
	}
	for _, addr := range []string{"127.0.0.1:7379", "10.0.0.5:7379", "[fe80::1]:7379"} {
		if w, err := g.Check("--raft-addr", addr); err != nil || w != "" {
			t.Errorf("%s: %q, %v; want accepted silently", addr, w, err)
		}
	}
	g.AllowPublic = true
	w, err := g.Check("--raft-addr", "0.0.0.0:7481")
	if err != nil || !strings.Contains(w, "--allow-public-bind") || !strings.Contains(w, "wildcard") {
		t.Fatalf("with AllowPublic: %q, %v", w, err)
	}
}

func TestTokenValidationAndFiles(t *testing.T) {
	for _, bad := range []string{"", "a\nb", string([]byte{0xff, 0xfe}), strings.Repeat("x", MaxTokenSize+1)} {
		if ValidateToken("--client-token", bad) == nil {
			t.Errorf("token %q accepted", bad[:min(len(bad), 10)])
		}
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "tok")
	if err := os.WriteFile(p, []byte("  s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, warn, err := ReadTokenFile("--operator-token-file", p)
	if err != nil || tok != "s3cret-token" || warn != "" {
		t.Fatalf("ReadTokenFile = %q, %q, %v", tok, warn, err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, warn, _ = ReadTokenFile("--operator-token-file", p); !strings.Contains(warn, "chmod 600") {
		t.Fatalf("no warning for a world-readable token file: %q", warn)
	}
	if err := os.WriteFile(p, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ReadTokenFile("--operator-token-file", p); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty token file: %v", err)
	}
	if _, _, err := ReadTokenFile("--operator-token-file", filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing token file: %v", err)
	}
}

// TestTokenFileWorldWritable: a token file every user may write is
// refused, with the file, the problem and the fix; group-writable or
// readable by others is only a warning.
func TestTokenFileWorldWritable(t *testing.T) {
	p := filepath.Join(t.TempDir(), "peer.token")
	if err := os.WriteFile(p, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o602, 0o666, 0o777} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		_, _, err := ReadTokenFile("--peer-token-file", p)
		if err == nil {
			t.Fatalf("mode %v: a world-writable token file was accepted", mode)
		}
		for _, want := range []string{"--peer-token-file " + p, "writable by every user", "chmod 600 " + p} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("mode %v: error %q lacks %q", mode, err, want)
			}
		}
	}
	if err := os.Chmod(p, 0o664); err != nil {
		t.Fatal(err)
	}
	if tok, warn, err := ReadTokenFile("--peer-token-file", p); err != nil || tok != "0123456789abcdef0123" || !strings.Contains(warn, "chmod 600") {
		t.Fatalf("mode 0664: %q, %q, %v", tok, warn, err)
	}
}

// TestTokenLength: CheckTokenLength refuses tokens under 16 bytes with a
// message naming the flag (and file), the length and how to make a good
// one.
func TestTokenLength(t *testing.T) {
	if err := CheckTokenLength("--client-token", "", strings.Repeat("x", MinTokenSize), "with --allow-public-bind"); err != nil {
		t.Fatalf("16 bytes: %v", err)
	}
	err := CheckTokenLength("--client-token-file", "/etc/kaya/client.token", "short", "with --allow-public-bind")
	for _, want := range []string{"--client-token-file /etc/kaya/client.token", "is 5 bytes", "with --allow-public-bind", "at least 16",
		"head -c 32 /dev/urandom | base64 > /etc/kaya/client.token && chmod 600 /etc/kaya/client.token"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("file: error %v lacks %q", err, want)
		}
	}
	err = CheckTokenLength("--operator-token", "", "short", "with --allow-public-bind")
	for _, want := range []string{"--operator-token is 5 bytes", "/dev/urandom", "--operator-token-file"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("flag: error %v lacks %q", err, want)
		}
	}
}

func TestDirWarnings(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if w := DirWarnings(dir); len(w) != 0 {
		t.Fatalf("0700 directory: %v", w)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if w := DirWarnings(dir); len(w) != 1 || !strings.Contains(w[0], "chmod 700") {
		t.Fatalf("0755 directory: %v", w)
	}
}

func TestTLSStartupValidation(t *testing.T) {
	dir := t.TempDir()
	ca := securitytest.NewCA(t, "cluster CA")
	other := securitytest.NewCA(t, "other CA")
	good := ca.Issue(t, "node1.kaya.local", nil).Write(t, ca, dir, "node1")
	otherKey := ca.Issue(t, "node2.kaya.local", nil).Write(t, nil, dir, "node2")
	expired := ca.Issue(t, "old.kaya.local", &securitytest.CertOptions{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}).Write(t, nil, dir, "old")
	future := ca.Issue(t, "new.kaya.local", &securitytest.CertOptions{NotBefore: time.Now().Add(time.Hour)}).Write(t, nil, dir, "new")
	foreign := other.Issue(t, "node9.kaya.local", nil).Write(t, nil, dir, "foreign")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	unreadable := filepath.Join(dir, "unreadable.pem")
	if err := os.WriteFile(unreadable, nil, 0o000); err != nil {
		t.Fatal(err)
	}

	if _, err := NewTLS(TLSFiles{Cert: good.Cert, Key: good.Key, CA: good.CA}, nil); err != nil {
		t.Fatalf("valid files: %v", err)
	}
	if _, err := NewTLS(TLSFiles{Cert: good.Cert, Key: good.Key}, nil); err != nil {
		t.Fatalf("valid files without a CA: %v", err)
	}
	cases := []struct {
		name  string
		files TLSFiles
		want  []string
	}{
		{"missing cert", TLSFiles{Cert: filepath.Join(dir, "nope.crt"), Key: good.Key}, []string{"--tls-cert", "nope.crt", "no such file"}},
		{"missing key", TLSFiles{Cert: good.Cert, Key: filepath.Join(dir, "nope.key")}, []string{"--tls-key", "nope.key"}},
		{"missing CA", TLSFiles{Cert: good.Cert, Key: good.Key, CA: filepath.Join(dir, "nope-ca.crt")}, []string{"--tls-ca", "nope-ca.crt"}},
		{"key of another certificate", TLSFiles{Cert: good.Cert, Key: otherKey.Key}, []string{"--tls-key", "does not match"}},
		{"expired", TLSFiles{Cert: expired.Cert, Key: expired.Key}, []string{"expired", "old.crt", "renew"}},
		{"not yet valid", TLSFiles{Cert: future.Cert, Key: future.Key}, []string{"not valid until", "clock"}},
		{"not PEM", TLSFiles{Cert: garbage, Key: good.Key}, []string{"--tls-cert", "PEM"}},
		{"CA without certificates", TLSFiles{Cert: good.Cert, Key: good.Key, CA: garbage}, []string{"--tls-ca", "no PEM certificate"}},
		{"certificate from another CA", TLSFiles{Cert: foreign.Cert, Key: foreign.Key, CA: good.CA}, []string{"not signed by --tls-ca"}},
		{"CA without a certificate", TLSFiles{CA: good.CA}, []string{"--tls-ca needs --tls-cert"}},
		{"cert without key", TLSFiles{Cert: good.Cert}, []string{"--tls-cert needs --tls-key"}},
	}
	if os.Geteuid() != 0 { // root reads any file
		cases = append(cases, struct {
			name  string
			files TLSFiles
			want  []string
		}{"unreadable", TLSFiles{Cert: unreadable, Key: good.Key}, []string{"permission denied"}})
	}
	for _, c := range cases {
		_, err := NewTLS(c.files, nil)
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", c.name, err, w)
			}
		}
	}
}

// serve accepts TLS connections with cfg and completes their handshakes,
// until the listener closes.
func serve(t *testing.T, cfg *tls.Config) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := tls.Server(c, cfg)
				if Handshake(tc) == nil {
					_, _ = tc.Write([]byte("ok"))
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// peerSerial dials addr with cfg and returns the serial of the server's
// certificate, or the handshake error.
func peerSerial(addr string, cfg *tls.Config) (string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 2)
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(buf); err != nil {
		return "", err
	}
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

func TestTLSReloadAndMutualAuth(t *testing.T) {
	dir := t.TempDir()
	ca := securitytest.NewCA(t, "cluster CA")
	first := ca.Issue(t, "node1.kaya.local", nil)
	files := first.Write(t, ca, dir, "node1")
	tt, err := NewTLS(TLSFiles{Cert: files.Cert, Key: files.Key, CA: files.CA}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, tt.ServerConfig())

	// A peer of the cluster (same TLS) gets in; the peer checks our
	// certificate too.
	got, err := peerSerial(addr, tt.ClientConfig(addr))
	if err != nil || got != first.Cert.SerialNumber.String() {
		t.Fatalf("peer dial: serial %s, %v", got, err)
	}
	// No client certificate: refused.
	if _, err := peerSerial(addr, &tls.Config{RootCAs: tt.cur.Load().pool, ServerName: "127.0.0.1"}); err == nil {
		t.Fatal("a client without a certificate got in")
	}
	// A certificate from another CA: refused.
	other := securitytest.NewCA(t, "other CA")
	oc := other.Issue(t, "intruder", nil)
	if _, err := peerSerial(addr, &tls.Config{RootCAs: tt.cur.Load().pool, ServerName: "127.0.0.1",
		Certificates: []tls.Certificate{oc.TLSCertificate(t)}}); err == nil {
		t.Fatal("a client with a foreign certificate got in")
	}
	// TLS 1.1 is refused.
	if _, err := peerSerial(addr, &tls.Config{MaxVersion: tls.VersionTLS11, InsecureSkipVerify: true}); err == nil {
		t.Fatal("TLS 1.1 accepted")
	}

	// A bad file on reload keeps the old certificate.
	securitytest.WriteFile(t, files.Key, []byte("garbage"))
	if err := tt.Reload(); err == nil {
		t.Fatal("reload of a bad key succeeded")
	}
	if got, err := peerSerial(addr, tt.ClientConfig(addr)); err != nil || got != first.Cert.SerialNumber.String() {
		t.Fatalf("after a failed reload: serial %s, %v", got, err)
	}

	// Watch notices new files and reloads: new connections see the new
	// certificate.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tt.Watch(ctx, 20*time.Millisecond)
	second := ca.Issue(t, "node1.kaya.local", nil)
	second.Write(t, nil, dir, "node1")
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := peerSerial(addr, tt.ClientConfig(addr))
		if err == nil && got == second.Cert.SerialNumber.String() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new certificate was not picked up: serial %s, %v", got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPlainTCPToTLSPortIsRefused(t *testing.T) {
	dir := t.TempDir()
	ca := securitytest.NewCA(t, "cluster CA")
	files := ca.Issue(t, "node1.kaya.local", nil).Write(t, ca, dir, "node1")
	tt, err := NewTLS(TLSFiles{Cert: files.Cert, Key: files.Key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	errc := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		errc <- Handshake(tls.Server(c, tt.ServerConfig()))
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A KayaDB HELLO frame in the clear.
	if _, err := c.Write([]byte{3, 0, 0, 0, 5, 1, 0}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "plain TCP") {
			t.Fatalf("handshake error = %v; want a plain-TCP diagnosis", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the TLS side hung on a plain client")
	}
}
