package security

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// TLSFiles names a node's TLS material, as given by --tls-cert, --tls-key
// and --tls-ca.
type TLSFiles struct {
	// Cert is the PEM certificate chain this node presents, on both ports
	// and as a client to its peers.
	Cert string
	// Key is the PEM private key of Cert.
	Key string
	// CA, when set, is the PEM bundle of the cluster's certificate
	// authorities: clients and peers must present a certificate it signed
	// (mutual TLS), and peers' server certificates are verified against it.
	CA string
}

// Enabled reports whether any TLS file is set.
func (f TLSFiles) Enabled() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

// Validate checks that the set of files makes sense, before any is read.
func (f TLSFiles) Validate() error {
	switch {
	case f.Cert == "" && f.Key == "" && f.CA != "":
		return errors.New("--tls-ca needs --tls-cert and --tls-key: the node must present its own certificate")
	case f.Cert == "" && f.Key != "":
		return errors.New("--tls-key needs --tls-cert")
	case f.Cert != "" && f.Key == "":
		return errors.New("--tls-cert needs --tls-key")
	}
	return nil
}

// material is one loaded, validated generation of the TLS files.
type material struct {
	cert *tls.Certificate
	pool *x509.CertPool // nil without a CA
	leaf *x509.Certificate
}

// loadMaterial reads and validates the files. now is the clock used for
// the validity check.
func loadMaterial(f TLSFiles, now time.Time) (*material, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	read := func(flag, path string) ([]byte, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s %s: cannot read it: %v", flag, path, err)
		}
		return b, nil
	}
	certPEM, err := read("--tls-cert", f.Cert)
	if err != nil {
		return nil, err
	}
	keyPEM, err := read("--tls-key", f.Key)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %v (check that both are PEM and that the key is the one the certificate was issued for)", f.Cert, f.Key, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("--tls-cert %s: %v", f.Cert, err)
		}
	}
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("--tls-cert %s expired on %s; renew it", f.Cert, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("--tls-cert %s is not valid until %s (check this machine's clock)", f.Cert, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	m := &material{cert: &cert, leaf: leaf}
	if f.CA == "" {
		return m, nil
	}
	caPEM, err := read("--tls-ca", f.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("--tls-ca %s: no PEM certificate found in it", f.CA)
	}
	// Peers verify this node's certificate with the same CA: catch a
	// certificate from another authority now rather than as failed
	// handshakes later.
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("--tls-cert %s is not signed by --tls-ca %s: %v", f.Cert, f.CA, err)
	}
	m.pool = pool
	return m, nil
}

// TLS serves a node's TLS configuration and reloads it when asked (SIGHUP)
// or when the files change. A reload that fails validation keeps the
// previous material and logs why.
type TLS struct {
	files TLSFiles
	log   *slog.Logger
	now   func() time.Time
	cur   atomic.Pointer[material]

	mu     sync.Mutex // serializes reloads
	stamps [3]fileStamp
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// NewTLS loads and validates the files: a missing or unreadable file, a key
// that does not match the certificate, an expired certificate or one not
// signed by the CA is an error naming the file.
func NewTLS(files TLSFiles, log *slog.Logger) (*TLS, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &TLS{files: files, log: log, now: time.Now}
	t.stamps = t.stat()
	m, err := loadMaterial(files, t.now())
	if err != nil {
		return nil, err
	}
	t.cur.Store(m)
	return t, nil
}

// MutualTLS reports whether peers and clients must present certificates.
func (t *TLS) MutualTLS() bool { return t.files.CA != "" }

// Certificate returns the certificate currently served (tests, status).
func (t *TLS) Certificate() *x509.Certificate { return t.cur.Load().leaf }

// Reload reads the files again. On error the current material stays.
func (t *TLS) Reload() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stamps = t.stat()
	m, err := loadMaterial(t.files, t.now())
	if err != nil {
		t.log.Error("TLS reload failed; still serving the previous certificate", "err", err)
		return err
	}
	t.cur.Store(m)
	t.log.Info("TLS certificates reloaded", "subject", m.leaf.Subject.String(), "not_after", m.leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func (t *TLS) stat() [3]fileStamp {
	var out [3]fileStamp
	for i, p := range []string{t.files.Cert, t.files.Key, t.files.CA} {
		if p == "" {
			continue
		}
		if st, err := os.Stat(p); err == nil {
			out[i] = fileStamp{mod: st.ModTime(), size: st.Size()}
		}
	}
	return out
}

// Watch reloads whenever a file's modification time or size changes,
// checking every interval, until ctx ends.
func (t *TLS) Watch(ctx context.Context, interval time.Duration) {
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		t.mu.Lock()
		changed := t.stat() != t.stamps
		t.mu.Unlock()
		if changed {
			t.log.Info("TLS files changed; reloading")
			_ = t.Reload()
		}
	}
}

// ServerConfig is the configuration of a listening port. Each handshake
// takes the current material, so a reload applies to new connections at
// once. With a CA, a client certificate signed by it is required.
func (t *TLS) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := t.cur.Load()
			c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*m.cert}}
			if m.pool != nil {
				c.ClientAuth = tls.RequireAndVerifyClientCert
				c.ClientCAs = m.pool
			}
			return c, nil
		},
	}
}

// ClientConfig is the configuration for dialing a peer at addr: the peer's
// certificate must be valid for addr's host and signed by the CA (the
// system roots without a CA), and this node presents its own certificate.
func (t *TLS) ClientConfig(addr string) *tls.Config {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	m := t.cur.Load()
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: host,
		RootCAs:    m.pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return t.cur.Load().cert, nil
		},
	}
}

// HandshakeTimeout bounds a TLS handshake on an accepted connection.
const HandshakeTimeout = 10 * time.Second

// Handshake runs the server side of a TLS handshake with a deadline.
func Handshake(c *tls.Conn) error {
	_ = c.SetDeadline(time.Now().Add(HandshakeTimeout))
	err := c.Handshake()
	_ = c.SetDeadline(time.Time{})
	if err != nil {
		var rh tls.RecordHeaderError
		if errors.As(err, &rh) {
			return fmt.Errorf("the client did not start a TLS handshake (plain TCP to a TLS port?): %w", err)
		}
		return err
	}
	return nil
}
