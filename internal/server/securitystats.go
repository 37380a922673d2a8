package server

import (
	"fmt"
	"github.com/kayadb/kayadb/engine"
	"time"

	"github.com/kayadb/kayadb/internal/audit"
)

// securityJSON is the "security" member of STATS: what the node's
// security controls are, for kayactl doctor and monitoring. Booleans,
// addresses, dates and modes only — never a secret, never a path to one.
type securityJSON struct {
	ClientTLS       bool     `json:"client_tls"`
	RaftTLS         bool     `json:"raft_tls"`
	MutualTLS       bool     `json:"mutual_tls"`
	MetricsTLS      bool     `json:"metrics_tls"`
	ClientToken     bool     `json:"client_token"`
	OperatorToken   bool     `json:"operator_token"`
	PeerToken       bool     `json:"peer_token"`
	CredentialFiles []string `json:"credential_files"` // which of --acl-file, --tenant-file, --identity-file are set
	ClientAddr      string   `json:"client_addr"`
	RaftAddr        string   `json:"raft_addr"`
	MetricsAddr     string   `json:"metrics_addr"`
	AllowPublicBind bool     `json:"allow_public_bind"`
	// CertNotAfter is the node certificate's expiry (RFC 3339), "" without TLS.
	CertNotAfter string `json:"cert_not_after,omitempty"`
	// DataDirMode is the data directory's permission bits ("0700"), ""
	// when they cannot be read.
	DataDirMode string         `json:"data_dir_mode"`
	Audit       auditJSON      `json:"audit"`
	Encryption  encryptionJSON `json:"encryption"`
}

// auditJSON is the audit log's state in STATS.
type auditJSON struct {
	Enabled  bool               `json:"enabled"`
	Required bool               `json:"required"`
	Fsync    string             `json:"fsync,omitempty"`
	Healthy  bool               `json:"healthy"`
	Problem  string             `json:"problem,omitempty"`
	Dropped  uint64             `json:"dropped"`
	Sinks    []audit.SinkStatus `json:"sinks"`
}

// encryptionJSON is encryption at rest's state in STATS.
type encryptionJSON struct {
	// Available: this build can encrypt data at rest (a doctor talking
	// to an older server sees false: a warning, not a failure).
	Available bool `json:"available"`
	Enabled   bool `json:"enabled"`
	// KeyIDs are the ids of the keyring's keys (never key bytes); Active
	// is the one new data is sealed with, ActiveFingerprint its public
	// digest (kayactl encryption list shows the same).
	KeyIDs            []uint32 `json:"key_ids,omitempty"`
	Active            *uint32  `json:"active_key_id,omitempty"`
	ActiveFingerprint string   `json:"active_fingerprint,omitempty"`
	// TablesByKey counts the engine's live tables per key id ("plain"
	// for unencrypted ones); StaleTables those not under the active key:
	// the background rewrite's work left after a rotation.
	TablesByKey map[string]int `json:"tables_by_key,omitempty"`
	StaleTables int            `json:"stale_tables"`
}

// securityStats builds the "security" member of STATS.
func (s *Server) securityStats() securityJSON {
	cfg := &s.cfg
	sec := securityJSON{
		ClientTLS: s.tls != nil, RaftTLS: s.tls != nil && cfg.NewTransport == nil, MutualTLS: s.tls != nil && s.tls.MutualTLS(),
		MetricsTLS: cfg.MetricsTLS, ClientToken: cfg.ClientToken != "", OperatorToken: cfg.OperatorToken != "", PeerToken: cfg.PeerToken != "",
		CredentialFiles: append([]string{}, cfg.auditCredentialFiles()...),
		ClientAddr:      s.clientLn.Addr().String(), RaftAddr: cfg.RaftAddr, MetricsAddr: s.MetricsAddr(),
		AllowPublicBind: cfg.AllowPublicBind,
		Audit:           s.auditStats(),
		Encryption:      s.encryptionStats(),
	}
	if s.raftLn != nil {
		sec.RaftAddr = s.raftLn.Addr().String()
	}
	if s.tls != nil {
		if c := s.tls.Certificate(); c != nil {
			sec.CertNotAfter = c.NotAfter.UTC().Format(time.RFC3339)
		}
	}
	if fi, err := s.fs.Stat(cfg.DataDir); err == nil {
		sec.DataDirMode = fmt.Sprintf("%04o", fi.Mode().Perm())
	}
	return sec
}

// auditStats is the audit log's part of securityStats.
func (s *Server) auditStats() auditJSON {
	a := auditJSON{Required: s.cfg.Audit.Required, Sinks: []audit.SinkStatus{}}
	if s.audit == nil {
		return a
	}
	a.Enabled = true
	if s.cfg.auditFile() != "" {
		a.Fsync = s.audit.FsyncMode().String()
	}
	a.Healthy, a.Problem = s.audit.Healthy()
	a.Dropped = s.audit.Dropped()
	a.Sinks = s.audit.Status()
	return a
}

// encryptionStats is encryption at rest's part of securityStats.
func (s *Server) encryptionStats() encryptionJSON {
	e := encryptionJSON{Available: true}
	if s.sealer == nil {
		return e
	}
	r := s.sealer.Keyring()
	e.Enabled = true
	for _, id := range r.IDs() {
		e.KeyIDs = append(e.KeyIDs, uint32(id))
	}
	active := uint32(r.Active())
	e.Active, e.ActiveFingerprint = &active, r.Fingerprint(r.Active())
	_ = s.store.DB(func(d *engine.DB) error {
		st := d.EncryptionStatus()
		e.TablesByKey, e.StaleTables = st.TablesByKey, st.StaleTables
		return nil
	})
	return e
}
