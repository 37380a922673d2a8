package authz

import (
	"bytes"
	"crypto/sha256"
	"sort"
	"unicode"
)

// Tenants is a parsed tenant file (--tenant-file): the original KayaDB's
// {"tenants":[{"id":"…","token":"…","prefix":"…"}]}. Ids and tokens are
// unique and non-empty; prefixes are non-empty UTF-8 text and none is a
// prefix of another (a tenant's keys are its own).
type Tenants struct {
	list []*Tenant
	byID map[string]*Tenant
}

// Tenant is one tenant.
type Tenant struct {
	ID     string
	Prefix []byte
	token  [32]byte
	// prefixOff is where the prefix is in the file (messages).
	prefixOff int64
}

// Len returns the number of tenants.
func (t *Tenants) Len() int { return len(t.list) }

// Get returns the tenant with id, or nil.
func (t *Tenants) Get(id string) *Tenant {
	if t == nil {
		return nil
	}
	return t.byID[id]
}

// checkName refuses names that cannot be shown or logged plainly: empty,
// control characters, more than 256 bytes.
func checkName(what, s string) string {
	if s == "" {
		return what + " is empty"
	}
	if len(s) > 256 {
		return what + " " + quote(s) + " is longer than 256 bytes"
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return what + " " + quote(s) + " contains a control character"
		}
	}
	return ""
}

// ParseTenants parses a tenant file; name is its path, for messages.
func ParseTenants(name string, data []byte) (*Tenants, error) {
	f, err := newJSON(name, data)
	if err != nil {
		return nil, err
	}
	const shape = `a tenant file is {"tenants": [{"id": "t1", "token": "TOKEN", "prefix": "t1/"}, …]}`
	if _, err := f.delim('{', shape); err != nil {
		return nil, err
	}
	ts := &Tenants{byID: map[string]*Tenant{}}
	found := false
	tokens := map[[32]byte]string{}
	for f.more() {
		key, off, err := f.str("a field name")
		if err != nil {
			return nil, err
		}
		if key != "tenants" {
			return nil, f.errAt(off, "unknown field %s: %s", quote(key), shape)
		}
		if found {
			return nil, f.errAt(off, `"tenants" is given twice`)
		}
		found = true
		if _, err := f.delim('[', `"tenants"`); err != nil {
			return nil, err
		}
		for f.more() {
			t, err := parseTenant(f, tokens, ts)
			if err != nil {
				return nil, err
			}
			ts.list = append(ts.list, t)
			ts.byID[t.ID] = t
		}
		if _, err := f.delim(']', `the end of "tenants"`); err != nil {
			return nil, err
		}
	}
	end, err := f.delim('}', "the end of the tenant file's object")
	if err != nil {
		return nil, err
	}
	if err := f.end(); err != nil {
		return nil, err
	}
	if !found {
		return nil, f.errAt(end, `no "tenants" array: %s`, shape)
	}
	// Sorted, a prefix of another is followed by the prefixes it covers:
	// comparing neighbours finds every overlap.
	sorted := append([]*Tenant(nil), ts.list...)
	sort.SliceStable(sorted, func(i, j int) bool { return bytes.Compare(sorted[i].Prefix, sorted[j].Prefix) < 0 })
	for i := 1; i < len(sorted); i++ {
		a, b := sorted[i-1], sorted[i]
		if bytes.HasPrefix(b.Prefix, a.Prefix) {
			if b.prefixOff < a.prefixOff {
				a, b = b, a
			}
			return nil, f.errAt(b.prefixOff, "the prefix %s of tenant %s overlaps the prefix %s of tenant %s: tenants' prefixes must not be prefixes of one another",
				quote(string(b.Prefix)), quote(b.ID), quote(string(a.Prefix)), quote(a.ID))
		}
	}
	return ts, nil
}

func parseTenant(f *jsonFile, tokens map[[32]byte]string, ts *Tenants) (*Tenant, error) {
	start, err := f.delim('{', "a tenant")
	if err != nil {
		return nil, err
	}
	if len(ts.list) >= MaxEntries {
		return nil, f.errAt(start, "more than %d tenants", MaxEntries)
	}
	t := &Tenant{}
	var id, tok, prefix *string
	var tokOff, prefixOff int64
	for f.more() {
		key, off, err := f.str("a tenant's field name")
		if err != nil {
			return nil, err
		}
		v, voff, err := f.str("tenant field " + quote(key))
		if err != nil {
			return nil, err
		}
		var dst **string
		switch key {
		case "id":
			dst = &id
		case "token":
			dst, tokOff = &tok, voff
		case "prefix":
			dst, prefixOff = &prefix, voff
		default:
			return nil, f.errAt(off, "unknown tenant field %s: a tenant has \"id\", \"token\" and \"prefix\"", quote(key))
		}
		if *dst != nil {
			return nil, f.errAt(off, "tenant field %s is given twice", quote(key))
		}
		*dst = &v
	}
	if _, err := f.delim('}', "the end of a tenant"); err != nil {
		return nil, err
	}
	switch {
	case id == nil:
		return nil, f.errAt(start, `a tenant without an "id"`)
	case tok == nil:
		return nil, f.errAt(start, `tenant %s has no "token"`, quote(*id))
	case prefix == nil:
		return nil, f.errAt(start, `tenant %s has no "prefix"`, quote(*id))
	}
	if msg := checkName("tenant id", *id); msg != "" {
		return nil, f.errAt(start, "%s", msg)
	}
	if ts.byID[*id] != nil {
		return nil, f.errAt(start, "tenant id %s is given twice", quote(*id))
	}
	t.ID = *id
	if msg := checkToken(*tok); msg != "" {
		return nil, f.errAt(tokOff, "tenant %s: %s", quote(t.ID), msg)
	}
	t.token = sha256.Sum256([]byte(*tok))
	if other, dup := tokens[t.token]; dup {
		return nil, f.errAt(tokOff, "tenant %s has the same token as tenant %s: every tenant needs its own", quote(t.ID), quote(other))
	}
	tokens[t.token] = t.ID
	if *prefix == "" {
		return nil, f.errAt(prefixOff, "tenant %s has an empty prefix: a tenant's keys must start with a prefix of its own", quote(t.ID))
	}
	t.Prefix = []byte(*prefix)
	t.prefixOff = prefixOff
	return t, nil
}
