package authz

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sort"
	"strings"
)

// ACL is a parsed ACL file (--acl-file): the original KayaDB's JSON
// object {"<key prefix>": "<token>", …}. A prefix is UTF-8 text, or hex
// after "0x" or "hex:"; the longest prefix that covers a key decides
// which token may use it. An empty object denies everything.
type ACL struct {
	// entries sorted by prefix.
	entries []aclEntry
}

type aclEntry struct {
	prefix []byte
	token  [32]byte // SHA-256 of the token: the policy never keeps a secret
}

// Len returns the number of prefixes.
func (a *ACL) Len() int { return len(a.entries) }

// decodePrefix decodes a prefix of the ACL or identity file: "0x…" and
// "hex:…" are hex, anything else is the UTF-8 text itself.
func decodePrefix(s string) ([]byte, string) {
	for _, h := range []string{"0x", "hex:"} {
		if strings.HasPrefix(s, h) {
			b, err := hex.DecodeString(s[len(h):])
			if err != nil {
				return nil, "prefix " + quote(s) + " starts with " + h + " but the rest is not hex digits (an even number of 0-9, a-f)"
			}
			return b, ""
		}
	}
	return []byte(s), ""
}

// checkToken applies the token rules (those of --client-token).
func checkToken(tok string) string {
	switch {
	case tok == "":
		return "empty token: every token must be a secret of at least 16 random characters"
	case len(tok) > maxTokenBytes:
		return "a token of more than 65535 bytes: the protocol carries at most that"
	case strings.ContainsAny(tok, "\r\n"):
		return "a token contains a line break"
	case strings.TrimSpace(tok) != tok:
		return "a token starts or ends with white space (clients would not send it back exactly)"
	}
	return ""
}

// maxTokenBytes is the longest token a bytes16 field carries.
const maxTokenBytes = 1<<16 - 1

// quote quotes s for a message, cut to a readable length.
func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	b, _ := json.Marshal(s)
	return string(b)
}

// ParseACL parses an ACL file; name is its path, for messages.
func ParseACL(name string, data []byte) (*ACL, error) {
	f, err := newJSON(name, data)
	if err != nil {
		return nil, err
	}
	if _, err := f.delim('{', "an ACL file is a JSON object mapping key prefixes to tokens, {\"orders/\": \"TOKEN\"}"); err != nil {
		return nil, err
	}
	a := &ACL{}
	seen := map[string]string{}
	for f.more() {
		key, off, err := f.str("a prefix")
		if err != nil {
			return nil, err
		}
		prefix, msg := decodePrefix(key)
		if msg != "" {
			return nil, f.errAt(off, "%s", msg)
		}
		if prev, dup := seen[string(prefix)]; dup {
			return nil, f.errAt(off, "prefix %s is given twice (also as %s); give each prefix once", quote(key), quote(prev))
		}
		seen[string(prefix)] = key
		tok, toff, err := f.str("the token of prefix " + quote(key))
		if err != nil {
			return nil, err
		}
		if msg := checkToken(tok); msg != "" {
			return nil, f.errAt(toff, "prefix %s: %s", quote(key), msg)
		}
		if len(a.entries) >= MaxEntries {
			return nil, f.errAt(off, "more than %d prefixes", MaxEntries)
		}
		a.entries = append(a.entries, aclEntry{prefix: prefix, token: sha256.Sum256([]byte(tok))})
	}
	if _, err := f.delim('}', "the end of the ACL object"); err != nil {
		return nil, err
	}
	if err := f.end(); err != nil {
		return nil, err
	}
	sort.Slice(a.entries, func(i, j int) bool { return bytes.Compare(a.entries[i].prefix, a.entries[j].prefix) < 0 })
	return a, nil
}

// hasToken reports whether token digest d maps to some prefix.
func (a *ACL) hasToken(d [32]byte) bool {
	for _, e := range a.entries {
		if e.token == d {
			return true
		}
	}
	return false
}

// readable returns the keys whose longest covering prefix maps to the
// token with digest d. The prefixes' ranges nest or are disjoint, so a
// prefix's keys that d may use are its range less the ranges of the
// longer prefixes inside it that map to another token (a prefix inside
// those that maps to d again adds its own range back).
func (a *ACL) readable(d [32]byte) RangeSet {
	var rs []Range
	for i, e := range a.entries {
		if e.token != d {
			continue
		}
		own := RangeSet{PrefixRange(e.prefix)}
		var holes []Range
		// Sorted: the longer prefixes inside e.prefix follow it.
		for _, q := range a.entries[i+1:] {
			if !bytes.HasPrefix(q.prefix, e.prefix) {
				break
			}
			if q.token != d {
				holes = append(holes, PrefixRange(q.prefix))
			}
		}
		rs = append(rs, own.Subtract(normalize(holes))...)
	}
	return normalize(rs)
}
