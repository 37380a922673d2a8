// Package authz decides who is asking and what they may do: the
// principals of the client port (the operator and client tokens, the
// identities of the identity file, the tenants of the tenant file, the
// tokens of the ACL file, verified client certificates), their roles, the
// keys they may read and write, and the parsers of the three policy files
// (docs/design/security-controls.md §1).
//
// A Policy is immutable: the server builds a new one from the files at
// start and on SIGHUP and swaps it in atomically, so a request is decided
// under the policy it started with. Principals are built with the policy,
// one per credential, and shared by every request that presents it: a
// request allocates nothing to be authorized.
//
// This package must never keep a secret (tokens are held as SHA-256
// digests), never log one, and never answer anything but the protocol's
// texts for a refusal: MsgClientCredential, MsgOperatorCredential,
// "acl denied", "tenant denied", and the role refusals.
package authz

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"fmt"

	"github.com/kayadb/kayadb/internal/wire"
)

// Role is what a principal may do.
type Role uint8

// Roles, weakest first.
const (
	ReadOnly Role = iota + 1
	ReadWrite
	Admin
)

func (r Role) String() string {
	switch r {
	case ReadOnly:
		return "read-only"
	case ReadWrite:
		return "read-write"
	case Admin:
		return "admin"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// ParseRole parses "read-only", "read-write" or "admin"; anything else is 0.
func ParseRole(s string) Role {
	switch s {
	case "read-only":
		return ReadOnly
	case "read-write":
		return ReadWrite
	case "admin":
		return Admin
	}
	return 0
}

// Principal is who a request is served for.
type Principal struct {
	// Name: "operator", "client", an identity's name, a tenant id,
	// "acl:<8 hex digits of the token's SHA-256>", or "anonymous".
	Name string
	// Source: how it was proven: "token", "certificate" or "none".
	Source string
	// Tenant is the tenant id, "" when none.
	Tenant string
	// Role is what it may do.
	Role Role

	// owner identifies the principal whatever proved it (a transaction
	// or a consumer belongs to it): a kind and the name.
	owner string
	// confined: the principal may use only the keys of readable; the
	// tenant prefix and the ACL say which refusal text applies.
	confined     bool
	tenantPrefix []byte // nil: no tenant
	readable     RangeSet
	// keyless: the principal may send the keyless data requests (an ACL
	// token that maps to no prefix may not, as in the original).
	keyless bool
}

// Owner is the key that transactions and change-feed consumers are
// owned by: principals with equal owners are the same party.
func (p *Principal) Owner() string { return p.owner }

// Confined reports whether the principal may use only some keys.
func (p *Principal) Confined() bool { return p.confined }

// Readable returns the keys the principal may read (and write, with a
// writing role), or nil and false when it is not confined.
func (p *Principal) Readable() (RangeSet, bool) {
	if !p.confined {
		return nil, false
	}
	return p.readable, true
}

// Refusal texts (status 9, StatusError), besides wire.MsgClientCredential
// and wire.MsgOperatorCredential.
const (
	MsgACLDenied    = "acl denied"
	MsgTenantDenied = "tenant denied"
)

// Config is what a Policy is built from.
type Config struct {
	OperatorToken, ClientToken string
	ACL                        *ACL
	Tenants                    *Tenants
	Identities                 *Identities
}

// Policy answers who a request is for and what it may do.
type Policy struct {
	// dataOpen, adminOpen: no credential of the class is configured, so
	// anonymous requests are served (today's open mode).
	dataOpen, adminOpen bool

	operator, client    *Principal
	operatorD, clientD  [32]byte
	hasOperator, hasCl  bool
	anonData, anonAdmin *Principal
	// byToken maps a token digest to its data principal (identity,
	// tenant, ACL token) and adminByToken to its admin-opcode principal
	// (identities only).
	byToken      map[[32]byte]*Principal
	adminByToken map[[32]byte]*Principal
	// certs are the identities matched by certificate, in file order.
	certs []certIdentity
}

type certIdentity struct {
	id *Identity
	p  *Principal
}

// Open is the policy of a node without credentials: everyone is served.
func Open() *Policy {
	p, _ := New(Config{})
	return p
}

// New builds a policy. Cross-file rules are checked here: an identity's
// tenant must be in the tenant file, and a token may prove one identity
// or tenant only.
func New(c Config) (*Policy, error) {
	p := &Policy{byToken: map[[32]byte]*Principal{}, adminByToken: map[[32]byte]*Principal{}}
	p.anonData = &Principal{Name: "anonymous", Source: "none", Role: ReadWrite, owner: "anonymous", keyless: true}
	p.anonAdmin = &Principal{Name: "anonymous", Source: "none", Role: Admin, owner: "anonymous", keyless: true}
	hasIDs := c.Identities != nil
	p.adminOpen = c.OperatorToken == "" && !hasIDs
	p.dataOpen = c.ClientToken == "" && c.ACL == nil && c.Tenants == nil && !hasIDs
	aclScope := func(pr *Principal, d [32]byte) {
		if c.ACL == nil {
			return
		}
		r := c.ACL.readable(d)
		if pr.confined {
			r = r.Intersect(pr.readable)
		}
		pr.confined, pr.readable = true, r
		pr.keyless = c.ACL.hasToken(d)
	}
	if c.OperatorToken != "" {
		p.operator = &Principal{Name: "operator", Source: "token", Role: Admin, owner: "operator", keyless: true}
		p.operatorD, p.hasOperator = sha256.Sum256([]byte(c.OperatorToken)), true
	}
	if c.ClientToken != "" {
		p.client = &Principal{Name: "client", Source: "token", Role: ReadWrite, owner: "client", keyless: true}
		p.clientD, p.hasCl = sha256.Sum256([]byte(c.ClientToken)), true
		aclScope(p.client, p.clientD)
	}
	if c.Tenants != nil {
		for _, t := range c.Tenants.list {
			pr := &Principal{Name: t.ID, Source: "token", Tenant: t.ID, Role: ReadWrite, owner: "tenant:" + t.ID, keyless: true,
				confined: true, tenantPrefix: t.Prefix, readable: RangeSet{PrefixRange(t.Prefix)}}
			aclScope(pr, t.token)
			if c.ACL == nil {
				pr.keyless = true
			}
			p.byToken[t.token] = pr
		}
	}
	if c.ACL != nil {
		for _, e := range c.ACL.entries {
			if _, ok := p.byToken[e.token]; ok || (p.hasCl && e.token == p.clientD) {
				continue // a tenant's or the client token: scoped above
			}
			pr := &Principal{Name: "acl:" + hex.EncodeToString(e.token[:4]), Source: "token", Role: ReadWrite}
			pr.owner = pr.Name
			aclScope(pr, e.token)
			p.byToken[e.token] = pr
		}
	}
	if hasIDs {
		for _, id := range c.Identities.list {
			base := Principal{Name: id.Name, Tenant: id.Tenant, Role: id.Role, owner: "id:" + id.Name, keyless: true}
			if id.Prefixes != nil {
				var rs []Range
				for _, pre := range id.Prefixes {
					rs = append(rs, PrefixRange(pre))
				}
				base.confined, base.readable = true, normalize(rs)
			}
			if id.Tenant != "" {
				t := c.Tenants.Get(id.Tenant)
				if t == nil {
					pe := *id.tenantPos
					pe.Reason = fmt.Sprintf("identity %s names tenant %s, which the tenant file (--tenant-file) does not have", quote(id.Name), quote(id.Tenant))
					if c.Tenants == nil {
						pe.Reason = fmt.Sprintf("identity %s names tenant %s, but no tenant file (--tenant-file) is configured", quote(id.Name), quote(id.Tenant))
					}
					return nil, &pe
				}
				tr := RangeSet{PrefixRange(t.Prefix)}
				if base.confined {
					tr = tr.Intersect(base.readable)
				}
				base.confined, base.readable, base.tenantPrefix = true, tr, t.Prefix
			}
			if id.hasToken {
				if _, dup := p.byToken[id.token]; dup || (p.hasCl && id.token == p.clientD) || (p.hasOperator && id.token == p.operatorD) {
					return nil, fmt.Errorf("identity %s has the token of another credential (the operator or client token, a tenant or an ACL entry): every identity needs its own", quote(id.Name))
				}
				tp := base
				tp.Source = "token"
				p.byToken[id.token] = &tp
				p.adminByToken[id.token] = &tp
			}
			if id.certSelector() != "" {
				cp := base
				cp.Source = "certificate"
				p.certs = append(p.certs, certIdentity{id: id, p: &cp})
			}
		}
	}
	return p, nil
}

// DataOpen reports whether data requests are served without credentials.
func (p *Policy) DataOpen() bool { return p.dataOpen }

// AdminOpen reports whether admin requests are served without credentials.
func (p *Policy) AdminOpen() bool { return p.adminOpen }

// HasAdmin reports whether any principal may run admin requests.
func (p *Policy) HasAdmin() bool {
	if p.adminOpen || p.hasOperator {
		return true
	}
	for _, pr := range p.adminByToken {
		if pr.Role == Admin {
			return true
		}
	}
	for _, c := range p.certs {
		if c.p.Role == Admin {
			return true
		}
	}
	return false
}

// Resolve returns the principal of a request: admin says whether its
// opcode is an admin opcode, token and prefixed are its auth prefix's
// (CLIENT\0 for data opcodes, ADMIN\0 for admin ones), cert is the
// connection's verified client certificate (nil without mutual TLS). A
// refusal returns nil and the text to answer (status 9).
//
// A token is looked up by its SHA-256 digest (a map: its timing reveals
// at most how a digest the client cannot choose compares with the stored
// ones), then compared in constant time. The operator token proves
// admin requests only and the client token data requests only, as before
// identities existed.
func (p *Policy) Resolve(admin bool, token string, prefixed bool, cert *x509.Certificate) (*Principal, string) {
	if admin {
		if p.adminOpen {
			return p.anonAdmin, ""
		}
		if prefixed {
			d := sha256.Sum256([]byte(token))
			if p.hasOperator && subtle.ConstantTimeCompare(d[:], p.operatorD[:]) == 1 {
				return p.operator, ""
			}
			if pr := p.adminByToken[d]; pr != nil {
				return pr, ""
			}
			return nil, wire.MsgOperatorCredential
		}
		if pr := p.byCert(cert); pr != nil {
			return pr, ""
		}
		return nil, wire.MsgOperatorCredential
	}
	if p.dataOpen {
		return p.anonData, ""
	}
	if prefixed {
		d := sha256.Sum256([]byte(token))
		if p.hasCl && subtle.ConstantTimeCompare(d[:], p.clientD[:]) == 1 {
			return p.client, ""
		}
		if pr := p.byToken[d]; pr != nil {
			return pr, ""
		}
		return nil, wire.MsgClientCredential
	}
	if pr := p.byCert(cert); pr != nil {
		return pr, ""
	}
	return nil, wire.MsgClientCredential
}

// byCert returns the first identity (in file order) whose selector
// matches the certificate.
func (p *Policy) byCert(cert *x509.Certificate) *Principal {
	if cert == nil {
		return nil
	}
	for _, c := range p.certs {
		if matchCert(c.id, cert) {
			return c.p
		}
	}
	return nil
}

func matchCert(id *Identity, cert *x509.Certificate) bool {
	switch {
	case id.Subject != "":
		return cert.Subject.String() == id.Subject
	case id.DNS != "":
		for _, n := range cert.DNSNames {
			if n == id.DNS {
				return true
			}
		}
	case id.URI != "":
		for _, u := range cert.URIs {
			if u.String() == id.URI {
				return true
			}
		}
	case id.Email != "":
		for _, e := range cert.EmailAddresses {
			if e == id.Email {
				return true
			}
		}
	}
	return false
}

// writes: the opcodes that write whatever their payload says.
func writes(op wire.Opcode) bool {
	return op == wire.OpPut || op == wire.OpDelete
}

// keyless: the data opcodes that name no key and act on the principal's
// behalf (transactions by id, consumers).
func keyless(op wire.Opcode) bool {
	switch op {
	case wire.OpTxnBegin, wire.OpTxnCommit, wire.OpTxnRollback, wire.OpCDCPoll, wire.OpCDCCheckpoint, wire.OpCDCConsumer:
		return true
	}
	return false
}

// MayRun returns "" when pr may send op, otherwise the refusal text. The
// keys a request names are checked by MayRead and MayWrite.
func (p *Policy) MayRun(pr *Principal, op wire.Opcode) string {
	switch {
	case op == wire.OpHello || op == wire.OpHealth:
		return ""
	case wire.IsAdmin(op) || op == wire.OpSplitRange || op == wire.OpMergeRange:
		// SPLIT_RANGE and MERGE_RANGE are data opcodes on the wire (the
		// original's) but reshape the keyspace: admin only.
		if pr.Role != Admin {
			return fmt.Sprintf("permission denied: %s: %s needs the admin role", pr.Name, op)
		}
	case writes(op):
		if pr.Role < ReadWrite {
			return DenyReadOnly(pr)
		}
	case keyless(op):
		if !pr.keyless {
			return MsgACLDenied
		}
	}
	return ""
}

// DenyReadOnly is the refusal of a write by a read-only principal.
func DenyReadOnly(pr *Principal) string {
	return fmt.Sprintf("permission denied: %s is read-only", pr.Name)
}

// MayRead returns "" when pr may read key, otherwise the refusal text.
func (p *Policy) MayRead(pr *Principal, key []byte) string { return pr.MayRead(key) }

// MayWrite returns "" when pr may write key, otherwise the refusal text.
func (p *Policy) MayWrite(pr *Principal, key []byte) string { return pr.MayWrite(key) }

// MayRead returns "" when the principal may read key, otherwise the
// refusal text: "tenant denied" outside its tenant's prefix, "acl denied"
// outside the ACL's or its identity's prefixes.
func (pr *Principal) MayRead(key []byte) string {
	if !pr.confined {
		return ""
	}
	if pr.tenantPrefix != nil && !hasPrefix(key, pr.tenantPrefix) {
		return MsgTenantDenied
	}
	if !pr.readable.Contains(key) {
		return MsgACLDenied
	}
	return ""
}

// MayWrite returns "" when the principal may write key, otherwise the
// refusal text (a read-only principal may write nothing).
func (pr *Principal) MayWrite(key []byte) string {
	if pr.Role < ReadWrite {
		return DenyReadOnly(pr)
	}
	return pr.MayRead(key)
}

func hasPrefix(b, prefix []byte) bool {
	return len(b) >= len(prefix) && string(b[:len(prefix)]) == string(prefix)
}

// TenantConsumer is the stored name of tenant's change-feed consumer
// name: "~" (not a consumer name character, so no name a client sends
// collides with it) and 32 hex digits of SHA-256 over the tenant id and
// the name, within the 64 bytes a stored consumer name may have. Tenant
// t1's "orders" and tenant t2's "orders" are different consumers.
func TenantConsumer(tenant, name string) string {
	h := sha256.Sum256([]byte(tenant + "\x00" + name))
	return "~" + hex.EncodeToString(h[:16])
}
