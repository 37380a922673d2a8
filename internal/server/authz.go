package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/authz"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/security"
	"github.com/kayadb/kayadb/internal/txn"
	"github.com/kayadb/kayadb/internal/wire"
)

// Who may do what (docs/design/security-controls.md §1): the policy built
// from the tokens and the ACL, tenant and identity files, the principal
// of each request, and the checks of the keys each opcode names. The
// package authz holds the decisions; this file applies them to requests.
//
// Order of a request: clientReader.next reads the auth prefix (only that,
// when credentials are required) and resolves the principal, refusing
// before the payload is read; serveClient then authorizes the whole
// payload (authorize: the role for the opcode and every key the request
// names) and keeps the principal on the call (call.principal), which the
// handlers read from the request's context (principalOf) to clamp scans
// and watches, filter change feeds, own transactions and namespace
// consumers. A request keeps the policy it was read under (request.pol);
// a reload swaps the pointer for the requests read after it.

// authzState is the server's policy and its reloads.
type authzState struct {
	policy atomic.Pointer[authz.Policy]
	// reloadMu serializes reloads (SIGHUP).
	reloadMu sync.Mutex
}

// readPolicyFile reads one policy file (bounded by authz.MaxFileBytes).
// A file every user may write is refused (anyone could grant themselves
// access); one that holds tokens and others may read is a warning.
func (s *Server) readPolicyFile(flag, path string, secret bool) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %v", flag, path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s: not a regular file", flag, path)
	}
	if st.Mode().Perm()&0o002 != 0 {
		return nil, fmt.Errorf("%s %s is writable by every user (mode %v): anyone on this machine could grant themselves access; run: chmod 600 %s", flag, path, st.Mode().Perm(), path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %v", flag, path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, authz.MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %v", flag, path, err)
	}
	if len(data) > authz.MaxFileBytes {
		return nil, fmt.Errorf("%s %s: more than %d bytes, larger than a policy file may be", flag, path, authz.MaxFileBytes)
	}
	if secret && st.Mode().Perm()&0o077 != 0 {
		s.log.Warn(fmt.Sprintf("%s %s holds tokens and is readable by other users (mode %v); run: chmod 600 %s", flag, path, st.Mode().Perm(), path))
	}
	return data, nil
}

// buildPolicy reads the policy files and builds the policy; every file
// is parsed and checked before anything is used, so a bad file refuses
// the whole set.
func (s *Server) buildPolicy() (*authz.Policy, error) {
	cfg := s.cfg
	c := authz.Config{OperatorToken: cfg.OperatorToken, ClientToken: cfg.ClientToken}
	if cfg.ACLFile != "" {
		data, err := s.readPolicyFile("--acl-file", cfg.ACLFile, true)
		if err != nil {
			return nil, err
		}
		if c.ACL, err = authz.ParseACL(cfg.ACLFile, data); err != nil {
			return nil, fmt.Errorf("--acl-file: %w", err)
		}
	}
	if cfg.TenantFile != "" {
		data, err := s.readPolicyFile("--tenant-file", cfg.TenantFile, true)
		if err != nil {
			return nil, err
		}
		if c.Tenants, err = authz.ParseTenants(cfg.TenantFile, data); err != nil {
			return nil, fmt.Errorf("--tenant-file: %w", err)
		}
	}
	if cfg.IdentityFile != "" {
		data, err := s.readPolicyFile("--identity-file", cfg.IdentityFile, false)
		if err != nil {
			return nil, err
		}
		readToken := func(path string) (string, error) {
			tok, warn, err := security.ReadTokenFile("token_file", path)
			if warn != "" {
				s.log.Warn(warn)
			}
			return tok, err
		}
		if c.Identities, err = authz.ParseIdentities(cfg.IdentityFile, data, readToken); err != nil {
			return nil, fmt.Errorf("--identity-file: %w", err)
		}
	}
	p, err := authz.New(c)
	if err != nil {
		return nil, fmt.Errorf("--identity-file: %w", err)
	}
	return p, nil
}

// loadPolicy builds the policy at start (checkSecurity): a bad file stops
// the node.
func (s *Server) loadPolicy() error {
	p, err := s.buildPolicy()
	if err != nil {
		return err
	}
	s.authz.policy.Store(p)
	if (s.cfg.ACLFile != "" || s.cfg.TenantFile != "" || s.cfg.IdentityFile != "") && !p.HasAdmin() {
		s.log.Warn("no principal may run admin requests (membership, backups): give --operator-token or an identity with the admin role")
	}
	return nil
}

// ReloadPolicy reads the ACL, tenant and identity files again (SIGHUP)
// and swaps the new policy in. On error the previous policy stays, the
// error is logged and counted.
func (s *Server) ReloadPolicy() error {
	s.authz.reloadMu.Lock()
	defer s.authz.reloadMu.Unlock()
	p, err := s.buildPolicy()
	if err != nil {
		s.reloadFailures.WithLabelValues(reloadFilePolicy).Inc()
		s.log.Error("policy reload failed; still enforcing the previous ACL, tenant and identity files", "err", err)
		return err
	}
	s.authz.policy.Store(p)
	s.log.Info("policy reloaded", "acl_file", s.cfg.ACLFile, "tenant_file", s.cfg.TenantFile, "identity_file", s.cfg.IdentityFile)
	return nil
}

// Reload is SIGHUP: the policy files and the TLS files. Each failure is
// logged and counted and keeps what was loaded before.
func (s *Server) Reload() error {
	var first error
	if s.cfg.ACLFile != "" || s.cfg.TenantFile != "" || s.cfg.IdentityFile != "" {
		first = s.ReloadPolicy()
	}
	if s.tls != nil {
		if err := s.ReloadTLS(); err != nil {
			s.reloadFailures.WithLabelValues(reloadFileTLS).Inc()
			if first == nil {
				first = err
			}
		}
	}
	return first
}

// policyNow is the current policy.
func (s *Server) policyNow() *authz.Policy {
	if p := s.authz.policy.Load(); p != nil {
		return p
	}
	return authz.Open()
}

// File labels of kayadb_config_reload_failures_total (newReloadFailures,
// encryption.go) for the policy files and the TLS files.
const (
	reloadFilePolicy = "policy"
	reloadFileTLS    = "tls"
)

// connCert returns the connection's verified client certificate, nil
// without mutual TLS.
func connCert(c net.Conn) *x509.Certificate {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil
	}
	cs := tc.ConnectionState()
	if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return nil
	}
	return cs.PeerCertificates[0]
}

// authMarker is the auth prefix op must be read with under pol, or "".
func authMarker(pol *authz.Policy, op wire.Opcode) string {
	switch {
	case wire.IsAdmin(op) && !pol.AdminOpen():
		return wire.AdminPrefix
	case wire.IsData(op) && !pol.DataOpen():
		return wire.ClientPrefix
	}
	return ""
}

// authenticate resolves the principal of a request from its auth prefix
// (p may be only the prefix: clientReader.next) and checks that its role
// may run op. It strips the prefix. With ok false, st and reply are the
// refusal to send.
func (s *Server) authenticate(pol *authz.Policy, cert *x509.Certificate, op wire.Opcode, p []byte) (inner []byte, pr *authz.Principal, st wire.Status, reply []byte, ok bool) {
	var tok string
	var prefixed bool
	var err error
	switch {
	case wire.IsAdmin(op):
		tok, prefixed, inner, err = wire.SplitAdmin(op, p)
		if err != nil {
			if errors.Is(err, wire.ErrAdminMismatch) {
				return nil, nil, wire.StatusInvalidArgument, wire.AppendError(nil, wire.MsgAdminMismatch), false
			}
			st, reply = invalid(err)
			return nil, nil, st, reply, false
		}
	case wire.IsData(op):
		tok, prefixed, inner, err = wire.SplitClient(p)
		if err != nil {
			st, reply = invalid(err)
			return nil, nil, st, reply, false
		}
	default:
		return p, nil, 0, nil, true // HELLO, HEALTH, unknown opcodes: no credentials
	}
	pr, deny := pol.Resolve(wire.IsAdmin(op), tok, prefixed, cert)
	if deny == "" {
		deny = pol.MayRun(pr, op)
	}
	if deny != "" {
		return nil, pr, wire.StatusError, wire.AppendError(nil, deny), false
	}
	return inner, pr, 0, nil, true
}

// authorize is authenticate plus the check of every key the request's
// whole payload names.
func (s *Server) authorize(pol *authz.Policy, cert *x509.Certificate, op wire.Opcode, p []byte) (inner []byte, pr *authz.Principal, st wire.Status, reply []byte, ok bool) {
	inner, pr, st, reply, ok = s.authenticate(pol, cert, op, p)
	if !ok || pr == nil {
		return inner, pr, st, reply, ok
	}
	if deny := checkKeys(pr, op, inner); deny != "" {
		return nil, pr, wire.StatusError, wire.AppendError(nil, deny), false
	}
	return inner, pr, 0, nil, true
}

// checkKeys returns the refusal of a request that names a key its
// principal may not use ("" when it may). A payload that does not decode
// is left to its handler, which answers the decode error. Scans, prefix
// watches and change-feed polls are not refused: their handlers clamp
// them to what the principal may read.
func checkKeys(pr *authz.Principal, op wire.Opcode, p []byte) string {
	if !pr.Confined() && pr.Role >= authz.ReadWrite {
		return ""
	}
	switch op {
	case wire.OpPut:
		if key, _, err := wire.DecodePut(p); err == nil {
			return pr.MayWrite(key)
		}
	case wire.OpDelete:
		if key, err := wire.DecodeKey(p); err == nil {
			return pr.MayWrite(key)
		}
	case wire.OpGet:
		if key, err := wire.DecodeKey(p); err == nil {
			return pr.MayRead(key)
		}
	case wire.OpGetAt:
		if _, key, err := wire.DecodeGetAt(p); err == nil {
			return pr.MayRead(key)
		}
	case wire.OpTxnOp:
		if o, err := wire.DecodeTxnOp(p); err == nil {
			if o.Kind == wire.TxnOpGet {
				return pr.MayRead(o.Key)
			}
			return pr.MayWrite(o.Key)
		}
	case wire.OpKayaTxn:
		if ct, err := wire.DecodeCondTxn(p); err == nil {
			for _, c := range ct.Compares {
				if deny := pr.MayRead(c.Key); deny != "" {
					return deny
				}
			}
			for _, ops := range [][]wire.CondOp{ct.Then, ct.Else} {
				for _, o := range ops {
					deny := pr.MayRead(o.Key)
					if o.Kind != wire.TxnOpGet {
						deny = pr.MayWrite(o.Key)
					}
					if deny != "" {
						return deny
					}
				}
			}
		}
	case wire.OpWatchCreate:
		if w, err := wire.DecodeWatchCreate(p); err == nil && w.Kind == wire.WatchKey {
			return pr.MayRead(w.Key)
		}
	case wire.OpCDCConsumer:
		if r, err := wire.DecodeCDCConsumer(p); err == nil && r.Action == wire.CDCConsumerDelete && pr.Role < authz.ReadWrite {
			return authz.DenyReadOnly(pr)
		}
	}
	return ""
}

// principalKey carries a request's principal in its context.
type principalKey struct{}

// withPrincipal returns ctx carrying pr (nil: unconfined, as for requests
// the server makes itself).
func withPrincipal(ctx context.Context, pr *authz.Principal) context.Context {
	if pr == nil {
		return ctx
	}
	return context.WithValue(ctx, principalKey{}, pr)
}

// principalOf returns the principal a request's context carries, or nil.
func principalOf(ctx context.Context) *authz.Principal {
	pr, _ := ctx.Value(principalKey{}).(*authz.Principal)
	return pr
}

// readable returns the ranges within prefix the context's principal may
// read, and false when it may read everything (no clamping needed).
func readable(ctx context.Context, prefix []byte) (authz.RangeSet, bool) {
	pr := principalOf(ctx)
	if pr == nil {
		return nil, false
	}
	rs, confined := pr.Readable()
	if !confined {
		return nil, false
	}
	return rs.Within(prefix), true
}

// clampedScan reads the latest versions (ts 0) or those at ts of the keys
// with prefix from start on that rs holds, at most limit items and about
// maxBytes, in key order; more reports that the bounds cut it. It reads
// each range in pages from the history (ReadScanAtFrom, which takes a
// start key): a page may read keys past its range (dropped), at most a
// page per range.
func (s *Server) clampedScan(rs authz.RangeSet, prefix, start []byte, ts uint64, limit, maxBytes int) ([]kv.KV, bool, error) {
	var out []kv.KV
	size := 0
	for _, r := range rs {
		from := r.Start
		if bytes.Compare(start, from) > 0 {
			from = start
		}
		for {
			if r.End != nil && bytes.Compare(from, r.End) >= 0 {
				break
			}
			page := min(limit-len(out)+1, clampPage)
			items, more, err := s.store.ReadScanAtFrom(prefix, from, ts, page, maxBytes-size+1)
			if err != nil {
				return nil, false, err
			}
			for _, it := range items {
				if r.End != nil && bytes.Compare(it.Key, r.End) >= 0 {
					more = false
					break
				}
				n := len(it.Key) + len(it.Value)
				if len(out) >= limit || (len(out) > 0 && size+n > maxBytes) {
					return out, true, nil
				}
				out = append(out, it)
				size += n
				from = append(bytes.Clone(it.Key), 0)
			}
			if !more {
				break
			}
		}
	}
	return out, false, nil
}

// clampPage bounds one page of a clamped scan: the keys read past a
// range's end are wasted, at most this many per range.
const clampPage = 1024

// consumerName is the stored name of a change-feed consumer: a tenant's
// consumers are its own, under a name no other tenant, and no client
// without a tenant, can send ("~" is not a consumer name character): "~"
// and 32 hex digits of SHA-256 over the tenant id and the name, within
// the 64 bytes a stored name may have.
func consumerName(ctx context.Context, name string) string {
	pr := principalOf(ctx)
	if pr == nil || pr.Tenant == "" {
		return name
	}
	return authz.TenantConsumer(pr.Tenant, name)
}

// txnOwner returns ctx saying whose transactions its request may use
// (txn.WithOwner): the principal's owner; "" without one, as before.
func txnOwner(ctx context.Context) context.Context {
	if pr := principalOf(ctx); pr != nil {
		return txn.WithOwner(ctx, pr.Owner())
	}
	return ctx
}

// scan answers SCAN's read: the keys with prefix, clamped to what the
// request's principal may read (the limits count the items returned).
func (s *Server) scan(ctx context.Context, prefix []byte) ([]kv.KV, error) {
	rs, confined := readable(ctx, prefix)
	if !confined {
		return s.store.Scan(ctx, prefix, wire.MaxScanItems, scanMaxBytes)
	}
	if len(prefix) > 0 && prefix[0] == kv.SystemPrefix {
		return nil, fmt.Errorf("%w: %v", engine.ErrInvalidArgument, kv.ErrReservedKey)
	}
	if len(prefix) > wire.MaxKeySize {
		return nil, fmt.Errorf("%w: prefix of %d bytes exceeds the %d-byte key limit", engine.ErrInvalidArgument, len(prefix), wire.MaxKeySize)
	}
	if err := s.store.Barrier(ctx); err != nil {
		return nil, err
	}
	items, _, err := s.clampedScan(rs, prefix, nil, s.store.AppliedTS(), wire.MaxScanItems, scanMaxBytes)
	return items, err
}

// readMatch returns a filter of the keys the context's principal may
// read, nil when it may read every key.
func readMatch(ctx context.Context) func(key []byte) bool {
	pr := principalOf(ctx)
	if pr == nil {
		return nil
	}
	rs, confined := pr.Readable()
	if !confined {
		return nil
	}
	return rs.Contains
}
