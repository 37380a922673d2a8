package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/kayadb/kayadb/internal/security"
)

// checkSecurity runs before the node opens anything: the bind guard on
// every listen address, the token shapes and the TLS files. It logs the
// warnings that do not stop the node.
func (s *Server) checkSecurity() error {
	cfg := s.cfg
	guard := security.BindGuard{AllowPublic: cfg.AllowPublicBind, Resolve: cfg.Resolve}
	type listen struct{ flag, addr string }
	var addrs []listen
	// The configured address is checked; a test that hands in its own
	// listener without an address gets the listener's checked.
	if cfg.ClientAddr == "" && cfg.ClientListener != nil {
		addrs = append(addrs, listen{"--client-addr", cfg.ClientListener.Addr().String()})
	} else {
		addrs = append(addrs, listen{"--client-addr", cfg.ClientAddr})
	}
	switch {
	case cfg.NewTransport != nil: // an in-memory network (tests)
	case cfg.RaftAddr == "" && cfg.RaftListener != nil:
		addrs = append(addrs, listen{"--raft-addr", cfg.RaftListener.Addr().String()})
	default:
		addrs = append(addrs, listen{"--raft-addr", cfg.RaftAddr})
	}
	switch {
	case cfg.MetricsAddr == "" && cfg.MetricsListener != nil:
		addrs = append(addrs, listen{"--metrics-addr", cfg.MetricsListener.Addr().String()})
	case cfg.MetricsAddr != "":
		addrs = append(addrs, listen{"--metrics-addr", cfg.MetricsAddr})
	}
	raftAddr := "" // the raft listen address, when the raft port is TCP
	for _, a := range addrs {
		if a.flag == "--raft-addr" {
			raftAddr = a.addr
		}
	}
	var exposed []string
	for _, a := range addrs {
		w, err := guard.Check(a.flag, a.addr)
		if err != nil {
			return err
		}
		if w != "" {
			exposed = append(exposed, w)
		}
	}
	for _, t := range []struct{ name, tok string }{{"--operator-token", cfg.OperatorToken}, {"--client-token", cfg.ClientToken}, {"--peer-token-file", cfg.PeerToken}} {
		if t.tok != "" {
			if err := security.ValidateToken(t.name, t.tok); err != nil {
				return err
			}
			// ParseFlags has checked the lengths already, naming the
			// file; this is for callers that fill in a Config.
			if cfg.AllowPublicBind {
				if err := security.CheckTokenLength(t.name, "", t.tok, "with --allow-public-bind"); err != nil {
					return err
				}
			}
		}
	}
	if cfg.PeerToken != "" {
		if err := security.CheckTokenLength("--peer-token-file", "", cfg.PeerToken, "for the raft handshake"); err != nil {
			return err
		}
	}
	if cfg.MetricsTLS && cfg.TLS.Cert == "" && (cfg.MetricsAddr != "" || cfg.MetricsListener != nil) {
		return fmt.Errorf("--metrics-tls serves the node's certificate: give --tls-cert and --tls-key as well")
	}
	if cfg.TLS.Enabled() {
		t, err := security.NewTLS(cfg.TLS, s.log.With("component", "tls"))
		if err != nil {
			return err
		}
		s.tls = t
	}
	if err := s.checkRaftPortAuth(raftAddr); err != nil {
		return err
	}
	if err := s.loadPolicy(); err != nil { // authz.go
		return err
	}

	if len(exposed) > 0 {
		lines := append(exposed,
			"Access control is only what you configure: mutual TLS (--tls-ca), tokens (--client-token, --operator-token) and the policy files (--identity-file, --acl-file, --tenant-file).",
			"Never expose the raft, client or metrics port to the Internet; see docs/security.md and run kayactl doctor.")
		if s.tls == nil || !s.tls.MutualTLS() {
			lines = append(lines, "This node runs WITHOUT mutual TLS: traffic is readable and anyone who reaches the port can connect.")
		}
		if (cfg.ClientToken == "" || cfg.OperatorToken == "") && cfg.IdentityFile == "" && cfg.ACLFile == "" && cfg.TenantFile == "" {
			lines = append(lines, "This node runs WITHOUT a client token and/or an operator token, and without a policy file.")
		}
		if cfg.EncryptionKeyFile == "" && cfg.EncryptionKeyringFile == "" {
			lines = append(lines, "This node stores its data WITHOUT encryption at rest (--encryption-keyring-file).")
		}
		if raftAddr != "" && cfg.PeerToken == "" && (s.tls == nil || !s.tls.MutualTLS()) {
			lines = append(lines, "The raft port listens on loopback WITHOUT a peer token: fine for a single node; a cluster across machines needs --peer-token-file or mutual TLS.")
		}
		for _, l := range security.Banner("LISTENING ON AN EXPOSED ADDRESS (--allow-public-bind)", lines) {
			s.log.Warn(l)
		}
	}
	if security.RunningAsRoot() {
		for _, l := range security.Banner("RUNNING AS ROOT", []string{
			"kayadb-server does not need root. Run it as a dedicated unprivileged user that owns only the data directory.",
		}) {
			s.log.Warn(l)
		}
	}
	for _, t := range []struct{ name, tok string }{{"--operator-token", cfg.OperatorToken}, {"--client-token", cfg.ClientToken}} {
		if t.tok != "" && len(t.tok) < 16 {
			s.log.Warn("a short token is easy to guess: use at least 16 random characters (for example from: openssl rand -hex 32)", "token", t.name, "length", len(t.tok))
		}
	}
	if cfg.ClientToken != "" && cfg.OperatorToken == "" && cfg.IdentityFile == "" {
		s.log.Warn("--client-token is set but --operator-token is not: membership and other admin requests are open to anyone who can connect; set --operator-token")
	}
	return nil
}

// checkRaftPortAuth refuses to start a node in production mode
// (--allow-public-bind) whose raft port anyone who reaches it could speak
// to: without mutual TLS (a certificate check on every peer) and without a
// peer token, a stranger who knows a member's id can forge raft messages.
// TLS without --tls-ca does not count: it checks nobody who dials in. A
// raft port on loopback is exempt (only this machine reaches it: a single
// node in a container, say), as is an in-memory network (tests).
func (s *Server) checkRaftPortAuth(raftAddr string) error {
	cfg := s.cfg
	if !cfg.AllowPublicBind || raftAddr == "" || cfg.PeerToken != "" || (s.tls != nil && s.tls.MutualTLS()) {
		return nil
	}
	if class, err := security.ClassifyAddr(raftAddr, cfg.Resolve); err == nil && class == security.Loopback {
		return nil
	}
	return fmt.Errorf("--allow-public-bind needs the raft port authenticated, and --raft-addr %s has neither a peer token nor mutual TLS: "+
		"anyone who reaches it could forge raft messages. Create a secret once (%s), copy the same file to every node, "+
		"and start each node with --peer-token-file FILE; or turn on mutual TLS with --tls-cert, --tls-key and --tls-ca (see docs/security.md)",
		raftAddr, security.GenerateHint("FILE"))
}

// ReloadTLS reloads the TLS files (SIGHUP). Without TLS it does nothing.
func (s *Server) ReloadTLS() error {
	if s.tls == nil {
		return nil
	}
	return s.tls.Reload()
}

// tlsServer wraps an accepted client connection in TLS and completes the
// handshake; without TLS it returns c.
func (s *Server) tlsServer(c net.Conn) (net.Conn, error) {
	if s.tlsConf == nil {
		return c, nil
	}
	tc := tls.Server(c, s.tlsConf)
	if err := security.Handshake(tc); err != nil {
		return nil, err
	}
	return tc, nil
}

// verifyPeer checks that an inbound raft connection's client certificate
// belongs to the member its handshake names: the certificate must be valid
// for the host of that member's raft address in the roster, as this node's
// own dials require of the peers' server certificates. A client
// certificate signed by the same CA (an operator's) cannot speak raft.
func (s *Server) verifyPeer(id uint64, cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no certificate")
	}
	m, ok := s.ros.get(id)
	if !ok {
		return fmt.Errorf("node %d is not in the roster", id)
	}
	host, _, err := net.SplitHostPort(m.RaftAddr)
	if err != nil {
		return fmt.Errorf("roster address %q of node %d: %v", m.RaftAddr, id, err)
	}
	if err := cs.PeerCertificates[0].VerifyHostname(host); err != nil {
		return fmt.Errorf("certificate %q is not valid for node %d's raft address %s: %v", cs.PeerCertificates[0].Subject.CommonName, id, m.RaftAddr, err)
	}
	return nil
}
