package authz

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strings"
)

// Identities is a parsed identity file (--identity-file, ours):
//
//	{"identities": [
//	  {"name": "billing-app", "token_sha256": "9f86d0…", "role": "read-write", "prefixes": ["billing/"]},
//	  {"name": "reporting",   "token_file": "/etc/kaya/reporting.token", "role": "read-only"},
//	  {"name": "alice",       "certificate": {"subject": "CN=alice,OU=ops,O=Example"}, "role": "admin"},
//	  {"name": "svc",         "certificate": {"dns": "svc.internal"}, "role": "read-write", "tenant": "t1"}
//	]}
//
// Names are unique; role is read-only, read-write or admin; a token is
// given by its SHA-256 (64 hex digits) or a token file, never inline, so
// the identity file holds no secret; a certificate is matched by exactly
// one of subject (RFC 4514, as Go prints it), dns, uri or email. An
// identity has a token, a certificate or both. prefixes (UTF-8, or hex
// after 0x or hex:) confine its keys; tenant names a tenant of the tenant
// file, whose prefix confines them too.
type Identities struct {
	list []*Identity
}

// Identity is one entry of the identity file.
type Identity struct {
	Name     string
	Role     Role
	Prefixes [][]byte // nil: no prefix confinement
	Tenant   string
	// Certificate selector: at most one is set.
	Subject, DNS, URI, Email string

	hasToken  bool
	token     [32]byte
	tenantPos *ParseError // where tenant is written (a template)
}

// Len returns the number of identities.
func (ids *Identities) Len() int { return len(ids.list) }

// reservedNames are the names of the principals that are not identities.
var reservedNames = []string{"operator", "client", "anonymous"}

// ParseIdentities parses an identity file; name is its path, for
// messages. readToken reads a token file (the --client-token-file rules:
// permissions, trimming); a relative token_file is relative to the
// identity file's directory.
func ParseIdentities(name string, data []byte, readToken func(path string) (string, error)) (*Identities, error) {
	f, err := newJSON(name, data)
	if err != nil {
		return nil, err
	}
	const shape = `an identity file is {"identities": [{"name": "app", "token_sha256": "…64 hex…", "role": "read-write"}, …]}`
	if _, err := f.delim('{', shape); err != nil {
		return nil, err
	}
	ids := &Identities{}
	found := false
	names := map[string]bool{}
	tokens := map[[32]byte]string{}
	for f.more() {
		key, off, err := f.str("a field name")
		if err != nil {
			return nil, err
		}
		if key != "identities" {
			return nil, f.errAt(off, "unknown field %s: %s", quote(key), shape)
		}
		if found {
			return nil, f.errAt(off, `"identities" is given twice`)
		}
		found = true
		if _, err := f.delim('[', `"identities"`); err != nil {
			return nil, err
		}
		for f.more() {
			if len(ids.list) >= MaxEntries {
				return nil, f.errAt(f.next(), "more than %d identities", MaxEntries)
			}
			id, err := parseIdentity(f, names, tokens, readToken)
			if err != nil {
				return nil, err
			}
			ids.list = append(ids.list, id)
		}
		if _, err := f.delim(']', `the end of "identities"`); err != nil {
			return nil, err
		}
	}
	end, err := f.delim('}', "the end of the identity file's object")
	if err != nil {
		return nil, err
	}
	if err := f.end(); err != nil {
		return nil, err
	}
	if !found {
		return nil, f.errAt(end, `no "identities" array: %s`, shape)
	}
	return ids, nil
}

func parseIdentity(f *jsonFile, names map[string]bool, tokens map[[32]byte]string, readToken func(string) (string, error)) (*Identity, error) {
	start, err := f.delim('{', "an identity")
	if err != nil {
		return nil, err
	}
	id := &Identity{}
	seen := map[string]int64{}
	var role, tokHex, tokFile string
	var roleOff, tokOff int64
	for f.more() {
		key, off, err := f.str("an identity's field name")
		if err != nil {
			return nil, err
		}
		if _, dup := seen[key]; dup {
			return nil, f.errAt(off, "identity field %s is given twice", quote(key))
		}
		seen[key] = off
		switch key {
		case "name":
			if id.Name, _, err = f.str(`"name"`); err != nil {
				return nil, err
			}
		case "role":
			if role, roleOff, err = f.str(`"role"`); err != nil {
				return nil, err
			}
		case "token_sha256":
			if tokHex, tokOff, err = f.str(`"token_sha256"`); err != nil {
				return nil, err
			}
		case "token_file":
			if tokFile, tokOff, err = f.str(`"token_file"`); err != nil {
				return nil, err
			}
		case "tenant":
			var toff int64
			if id.Tenant, toff, err = f.str(`"tenant"`); err != nil {
				return nil, err
			}
			pe := f.errAt(toff, "").(*ParseError)
			id.tenantPos = pe
		case "prefixes":
			if _, err := f.delim('[', `"prefixes" (a list of key prefixes)`); err != nil {
				return nil, err
			}
			id.Prefixes = [][]byte{}
			for f.more() {
				s, poff, err := f.str("a prefix")
				if err != nil {
					return nil, err
				}
				p, msg := decodePrefix(s)
				if msg != "" {
					return nil, f.errAt(poff, "%s", msg)
				}
				if len(id.Prefixes) >= MaxEntries {
					return nil, f.errAt(poff, "more than %d prefixes", MaxEntries)
				}
				id.Prefixes = append(id.Prefixes, p)
			}
			if _, err := f.delim(']', `the end of "prefixes"`); err != nil {
				return nil, err
			}
		case "certificate":
			if err := parseCertSelector(f, id); err != nil {
				return nil, err
			}
		default:
			return nil, f.errAt(off, "unknown identity field %s: an identity has name, role, token_sha256 or token_file, certificate, prefixes and tenant", quote(key))
		}
	}
	if _, err := f.delim('}', "the end of an identity"); err != nil {
		return nil, err
	}
	if _, ok := seen["name"]; !ok {
		return nil, f.errAt(start, `an identity without a "name"`)
	}
	if msg := checkName("identity name", id.Name); msg != "" {
		return nil, f.errAt(seen["name"], "%s", msg)
	}
	for _, r := range reservedNames {
		if id.Name == r {
			return nil, f.errAt(seen["name"], "identity name %s is reserved (the operator token, the client token and unauthenticated requests use it)", quote(id.Name))
		}
	}
	if strings.HasPrefix(id.Name, "acl:") {
		return nil, f.errAt(seen["name"], "identity name %s: names starting with \"acl:\" are reserved for ACL file tokens", quote(id.Name))
	}
	if names[id.Name] {
		return nil, f.errAt(seen["name"], "identity name %s is given twice", quote(id.Name))
	}
	names[id.Name] = true
	if _, ok := seen["role"]; !ok {
		return nil, f.errAt(start, `identity %s has no "role" (read-only, read-write or admin)`, quote(id.Name))
	}
	if id.Role = ParseRole(role); id.Role == 0 {
		return nil, f.errAt(roleOff, "identity %s: role %s is not read-only, read-write or admin", quote(id.Name), quote(role))
	}
	_, hasHex := seen["token_sha256"]
	_, hasFile := seen["token_file"]
	switch {
	case hasHex && hasFile:
		return nil, f.errAt(seen["token_file"], "identity %s has both token_sha256 and token_file; give one", quote(id.Name))
	case hasHex:
		b, err := hex.DecodeString(tokHex)
		if err != nil || len(b) != sha256.Size {
			return nil, f.errAt(tokOff, "identity %s: token_sha256 must be the 64 hex digits of the token's SHA-256 (for example from: printf %%s \"$TOKEN\" | sha256sum)", quote(id.Name))
		}
		copy(id.token[:], b)
		id.hasToken = true
	case hasFile:
		if readToken == nil {
			return nil, f.errAt(tokOff, "identity %s: token_file cannot be read here", quote(id.Name))
		}
		path := tokFile
		if !filepath.IsAbs(path) && f.name != "" {
			path = filepath.Join(filepath.Dir(f.name), path)
		}
		tok, err := readToken(path)
		if err != nil {
			return nil, f.errAt(tokOff, "identity %s: %v", quote(id.Name), err)
		}
		if msg := checkToken(tok); msg != "" {
			return nil, f.errAt(tokOff, "identity %s: token file %s: %s", quote(id.Name), path, msg)
		}
		id.token = sha256.Sum256([]byte(tok))
		id.hasToken = true
	}
	if id.hasToken {
		if other, dup := tokens[id.token]; dup {
			return nil, f.errAt(tokOff, "identity %s has the same token as identity %s: every identity needs its own", quote(id.Name), quote(other))
		}
		tokens[id.token] = id.Name
	}
	if !id.hasToken && id.certSelector() == "" {
		return nil, f.errAt(start, "identity %s has neither a token (token_sha256, token_file) nor a certificate: nothing could prove it", quote(id.Name))
	}
	if _, ok := seen["tenant"]; ok {
		if msg := checkName("tenant", id.Tenant); msg != "" {
			return nil, f.errAt(seen["tenant"], "identity %s: %s", quote(id.Name), msg)
		}
	}
	return id, nil
}

func parseCertSelector(f *jsonFile, id *Identity) error {
	start, err := f.delim('{', `"certificate" (an object with one of subject, dns, uri, email)`)
	if err != nil {
		return err
	}
	n := 0
	for f.more() {
		key, off, err := f.str("a certificate field name")
		if err != nil {
			return err
		}
		v, voff, err := f.str("certificate field " + quote(key))
		if err != nil {
			return err
		}
		switch key {
		case "subject":
			id.Subject = v
		case "dns":
			id.DNS = v
		case "uri":
			id.URI = v
		case "email":
			id.Email = v
		default:
			return f.errAt(off, "unknown certificate field %s: match a certificate by one of subject, dns, uri or email", quote(key))
		}
		if v == "" {
			return f.errAt(voff, "certificate field %s is empty", quote(key))
		}
		n++
	}
	if _, err := f.delim('}', `the end of "certificate"`); err != nil {
		return err
	}
	if n != 1 {
		return f.errAt(start, "a certificate is matched by exactly one of subject, dns, uri or email, not %d", n)
	}
	return nil
}

// certSelector describes how the identity's certificate is matched, or
// "" when it has none.
func (id *Identity) certSelector() string {
	switch {
	case id.Subject != "":
		return "subject " + id.Subject
	case id.DNS != "":
		return "DNS SAN " + id.DNS
	case id.URI != "":
		return "URI SAN " + id.URI
	case id.Email != "":
		return "e-mail SAN " + id.Email
	}
	return ""
}

// TokenSHA256 is the hex SHA-256 of a token, as token_sha256 wants it.
func TokenSHA256(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}
