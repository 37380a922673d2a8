package authz

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/internal/wire"
)

func TestParseACL(t *testing.T) {
	a, err := ParseACL("acl.json", []byte(`{"orders/": "tok-orders-0123456", "0x00ff": "tok-bin-0123456789", "hex:61": "tok-a-01234567890", "": "tok-root-012345678"}`))
	if err != nil {
		t.Fatal(err)
	}
	if a.Len() != 4 {
		t.Fatalf("%d entries, want 4", a.Len())
	}
	for _, tc := range []struct{ in, want string }{
		{`[]`, `acl.json:1:1: an ACL file is a JSON object`},
		{`{"a": ""}`, `acl.json:1:7: prefix "a": empty token`},
		{"{\n  \"a\": \"tok-aaaaaaaaaaaaaaa\",\n  \"0x61\": \"tok-bbbbbbbbbbbbbbbbb\"}", `acl.json:3:3: prefix "0x61" is given twice (also as "a")`},
		{`{"0xzz": "tok"}`, `acl.json:1:2: prefix "0xzz" starts with 0x but the rest is not hex`},
		{`{"a": 1}`, `acl.json:1:7: the token of prefix "a": want a string, found a number`},
		{`{"a": "tok-aaaaaaaaaaaa"`, `acl.json:1:25: unexpected end of the file`},
		{`{"a" "tok"}`, `acl.json:1:6: JSON syntax error`},
		{`{} {}`, `acl.json:1:4: data after the end of the JSON document`},
		{"{\"a\": \"x\xffy\"}", `acl.json:1:9: the file is not valid UTF-8`},
		{`{"a": "tok\nen"}`, `acl.json:1:7: prefix "a": a token contains a line break`},
	} {
		_, err := ParseACL("acl.json", []byte(tc.in))
		var pe *ParseError
		if !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("ParseACL(%q) = %v, want a ParseError starting %q", tc.in, err, tc.want)
		}
	}
}

func TestParseTenants(t *testing.T) {
	ts, err := ParseTenants("t.json", []byte(`{"tenants": [{"id": "t1", "token": "tok-t1-0123456789", "prefix": "t1/"}, {"id": "t2", "token": "tok-t2-0123456789", "prefix": "t2/"}]}`))
	if err != nil || ts.Len() != 2 || string(ts.Get("t2").Prefix) != "t2/" {
		t.Fatalf("ParseTenants = %v, %v", ts, err)
	}
	for _, tc := range []struct{ in, want string }{
		{`{"tenants": [{"id": "t1", "token": "tok-1111111111111", "prefix": "t1/"}, {"id": "t2", "token": "tok-2222222222222", "prefix": "t1/x"}]}`,
			`t.json:1:128: the prefix "t1/x" of tenant "t2" overlaps the prefix "t1/" of tenant "t1"`},
		{`{"tenants": [{"id": "t1", "token": "tok-1111111111111", "prefix": "t1/"}, {"id": "t1", "token": "tok-2222222222222", "prefix": "t2/"}]}`,
			`t.json:1:75: tenant id "t1" is given twice`},
		{`{"tenants": [{"id": "t1", "token": "tok-1111111111111", "prefix": "t1/"}, {"id": "t2", "token": "tok-1111111111111", "prefix": "t2/"}]}`,
			`t.json:1:97: tenant "t2" has the same token as tenant "t1"`},
		{`{"tenants": [{"id": "t1", "token": "tok-1111111111111", "prefix": ""}]}`, `t.json:1:67: tenant "t1" has an empty prefix`},
		{`{"tenants": [{"id": "t1", "token": "tok-1111111111111"}]}`, `t.json:1:14: tenant "t1" has no "prefix"`},
		{`{"tenants": [{"id": "t1", "tok": "x", "prefix": "a"}]}`, `t.json:1:27: unknown tenant field "tok"`},
		{`{"tenant": []}`, `t.json:1:2: unknown field "tenant"`},
		{`{}`, `t.json:1:2: no "tenants" array`},
	} {
		_, err := ParseTenants("t.json", []byte(tc.in))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("ParseTenants(%s) = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestParseIdentities(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rep.token"), []byte("reporting-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	read := func(path string) (string, error) {
		b, err := os.ReadFile(path)
		return strings.TrimSpace(string(b)), err
	}
	doc := `{"identities": [
  {"name": "billing-app", "token_sha256": "` + TokenSHA256("billing-token-0123456789") + `", "role": "read-write", "prefixes": ["billing/", "0x00ff"]},
  {"name": "reporting", "token_file": "rep.token", "role": "read-only"},
  {"name": "alice", "certificate": {"subject": "CN=alice,OU=ops,O=Example"}, "role": "admin"},
  {"name": "svc", "certificate": {"dns": "svc.internal"}, "role": "read-write", "tenant": "t1"}
]}`
	ids, err := ParseIdentities(filepath.Join(dir, "ids.json"), []byte(doc), read)
	if err != nil {
		t.Fatal(err)
	}
	if ids.Len() != 4 || ids.list[0].Role != ReadWrite || !bytes.Equal(ids.list[0].Prefixes[1], []byte{0, 0xff}) || !ids.list[1].hasToken || ids.list[2].Subject == "" {
		t.Fatalf("parsed %+v", ids.list)
	}
	for _, tc := range []struct{ in, want string }{
		{`{"identities": [{"name": "a", "role": "writer", "token_sha256": "` + TokenSHA256("x") + `"}]}`, `i.json:1:39: identity "a": role "writer" is not read-only, read-write or admin`},
		{`{"identities": [{"name": "a", "role": "admin"}]}`, `i.json:1:17: identity "a" has neither a token`},
		{`{"identities": [{"name": "a", "role": "admin", "token_sha256": "abc"}]}`, `i.json:1:64: identity "a": token_sha256 must be the 64 hex digits`},
		{`{"identities": [{"name": "operator", "role": "admin", "certificate": {"dns": "x"}}]}`, `i.json:1:18: identity name "operator" is reserved`},
		{`{"identities": [{"name": "a", "role": "admin", "certificate": {"dns": "x", "uri": "y"}}]}`, `i.json:1:63: a certificate is matched by exactly one`},
		{`{"identities": [{"name": "a", "role": "admin", "certificate": {"dns": "x"}}, {"name": "a", "role": "admin", "certificate": {"dns": "y"}}]}`, `i.json:1:79: identity name "a" is given twice`},
		{`{"identities": [{"name": "a", "role": "admin", "token_file": "missing.token"}]}`, `i.json:1:62: identity "a": open`},
		{`{"identities": [{"name": "a", "role": "admin", "token": "inline"}]}`, `i.json:1:48: unknown identity field "token"`},
	} {
		_, err := ParseIdentities("i.json", []byte(tc.in), read)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("ParseIdentities(%s) = %v, want %q", tc.in, err, tc.want)
		}
	}
}

// TestACLReadable: the readable ranges of a token hold exactly the keys
// whose longest covering prefix maps to it (against a brute force over
// random ACLs and keys; the seed is printed on failure).
func TestACLReadable(t *testing.T) {
	seed := rand.Uint64()
	r := rand.New(rand.NewPCG(seed, 1))
	alpha := []byte{'a', 'b', 0xff, 0}
	randKey := func(n int) []byte {
		k := make([]byte, r.IntN(n+1))
		for i := range k {
			k[i] = alpha[r.IntN(len(alpha))]
		}
		return k
	}
	for round := range 300 {
		type ent struct {
			prefix []byte
			tok    string
		}
		var ents []ent
		a := &ACL{}
		seen := map[string]bool{}
		for range r.IntN(8) {
			p := randKey(3)
			if seen[string(p)] {
				continue
			}
			seen[string(p)] = true
			tok := []string{"x", "y", "z"}[r.IntN(3)]
			ents = append(ents, ent{p, tok})
			a.entries = append(a.entries, aclEntry{prefix: p, token: digest(tok)})
		}
		sortEntries(a)
		for _, tok := range []string{"x", "y", "z"} {
			rs := a.readable(digest(tok))
			for range 50 {
				k := randKey(5)
				best, want := -1, false
				for _, e := range ents {
					if bytes.HasPrefix(k, e.prefix) && len(e.prefix) > best {
						best, want = len(e.prefix), e.tok == tok
					}
				}
				if got := rs.Contains(k); got != want {
					t.Fatalf("seed %d round %d: ACL %v token %s key %q: readable %v, want %v (ranges %q)", seed, round, ents, tok, k, got, want, rs)
				}
			}
		}
	}
}

func digest(s string) [32]byte {
	var d [32]byte
	copy(d[:], mustHex(TokenSHA256(s)))
	return d
}

func mustHex(s string) []byte {
	b := make([]byte, len(s)/2)
	for i := range b {
		b[i] = unhex(s[2*i])<<4 | unhex(s[2*i+1])
	}
	return b
}

func unhex(c byte) byte {
	if c >= 'a' {
		return c - 'a' + 10
	}
	return c - '0'
}

func sortEntries(a *ACL) {
	for i := 1; i < len(a.entries); i++ {
		for j := i; j > 0 && bytes.Compare(a.entries[j].prefix, a.entries[j-1].prefix) < 0; j-- {
			a.entries[j], a.entries[j-1] = a.entries[j-1], a.entries[j]
		}
	}
}

func TestRangeSet(t *testing.T) {
	s := Union(RangeSet{PrefixRange([]byte("b"))}, RangeSet{PrefixRange([]byte("a"))}, RangeSet{PrefixRange([]byte("d"))})
	if len(s) != 2 || !s.Contains([]byte("azz")) || !s.Contains([]byte("b")) || s.Contains([]byte("c")) {
		t.Fatalf("union %q", s)
	}
	w := s.Within([]byte("a"))
	if len(w) != 1 || string(w[0].Start) != "a" || string(w[0].End) != "b" {
		t.Fatalf("within %q", w)
	}
	if d := all.Subtract(RangeSet{PrefixRange([]byte("m"))}); d.Contains([]byte("m1")) || !d.Contains([]byte("n")) || !d.Contains([]byte("")) {
		t.Fatalf("subtract %q", d)
	}
	if e := (RangeSet{PrefixRange([]byte{0xff, 0xff})}); e[0].End != nil || !e.Contains([]byte{0xff, 0xff, 1}) {
		t.Fatalf("0xffff %q", e)
	}
}

func TestPolicyResolve(t *testing.T) {
	acl, err := ParseACL("acl", []byte(`{"orders/": "acl-orders-token-000", "orders/secret/": "acl-secret-token-000"}`))
	if err != nil {
		t.Fatal(err)
	}
	tenants, err := ParseTenants("ten", []byte(`{"tenants": [{"id": "t1", "token": "tenant-one-token-000", "prefix": "t1/"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	ids, err := ParseIdentities("ids", []byte(`{"identities": [
		{"name": "ro", "token_sha256": "`+TokenSHA256("read-only-token-0000")+`", "role": "read-only"},
		{"name": "adm", "token_sha256": "`+TokenSHA256("admin-token-00000000")+`", "role": "admin"},
		{"name": "cert", "certificate": {"dns": "svc.internal"}, "role": "read-write", "tenant": "t1", "prefixes": ["t1/a"]}]}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{OperatorToken: "operator-token-00000", ClientToken: "client-token-0000000", ACL: acl, Tenants: tenants, Identities: ids})
	if err != nil {
		t.Fatal(err)
	}
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: "svc"}, DNSNames: []string{"svc.internal"}}
	for _, tc := range []struct {
		admin    bool
		tok      string
		prefixed bool
		cert     *x509.Certificate
		name     string
		deny     string
	}{
		{false, "client-token-0000000", true, nil, "client", ""},
		{false, "operator-token-00000", true, nil, "", wire.MsgClientCredential},
		{true, "operator-token-00000", true, nil, "operator", ""},
		{true, "client-token-0000000", true, nil, "", wire.MsgOperatorCredential},
		{false, "read-only-token-0000", true, nil, "ro", ""},
		{true, "admin-token-00000000", true, nil, "adm", ""},
		{false, "tenant-one-token-000", true, nil, "t1", ""},
		{false, "acl-orders-token-000", true, nil, "acl:" + TokenSHA256("acl-orders-token-000")[:8], ""},
		{false, "", false, cert, "cert", ""},
		{false, "wrong", true, cert, "", wire.MsgClientCredential},
		{false, "", false, nil, "", wire.MsgClientCredential},
		{true, "", false, nil, "", wire.MsgOperatorCredential},
	} {
		pr, deny := p.Resolve(tc.admin, tc.tok, tc.prefixed, tc.cert)
		if deny != tc.deny || (pr == nil) != (tc.name == "") || (pr != nil && pr.Name != tc.name) {
			t.Errorf("Resolve(%v, %q, %v) = %+v, %q; want %q, %q", tc.admin, tc.tok, tc.prefixed, pr, deny, tc.name, tc.deny)
		}
	}
	get := func(tok string) *Principal { pr, _ := p.Resolve(false, tok, true, nil); return pr }
	client, aclOrders, t1, ro := get("client-token-0000000"), get("acl-orders-token-000"), get("tenant-one-token-000"), get("read-only-token-0000")
	certP, _ := p.Resolve(false, "", false, cert)
	for _, tc := range []struct {
		pr          *Principal
		key         string
		read, write string
	}{
		{client, "orders/1", MsgACLDenied, MsgACLDenied}, // the ACL confines the client token too (not in it)
		{aclOrders, "orders/1", "", ""},
		{aclOrders, "orders/secret/1", MsgACLDenied, MsgACLDenied},
		{aclOrders, "other", MsgACLDenied, MsgACLDenied},
		{t1, "t1/x", MsgACLDenied, MsgACLDenied}, // the tenant token is not in the ACL: AND-combined
		{t1, "t2/x", MsgTenantDenied, MsgTenantDenied},
		{ro, "anything", "", "permission denied: ro is read-only"},
		{certP, "t1/a1", "", ""},
		{certP, "t1/b", MsgACLDenied, MsgACLDenied},
		{certP, "t2/a", MsgTenantDenied, MsgTenantDenied},
	} {
		if got := p.MayRead(tc.pr, []byte(tc.key)); got != tc.read {
			t.Errorf("MayRead(%s, %q) = %q, want %q", tc.pr.Name, tc.key, got, tc.read)
		}
		if got := p.MayWrite(tc.pr, []byte(tc.key)); got != tc.write {
			t.Errorf("MayWrite(%s, %q) = %q, want %q", tc.pr.Name, tc.key, got, tc.write)
		}
	}
	if got := p.MayRun(client, wire.OpTxnBegin); got != MsgACLDenied {
		t.Errorf("client (not in the ACL) TXN_BEGIN: %q, want acl denied", got)
	}
	if got := p.MayRun(aclOrders, wire.OpTxnBegin); got != "" {
		t.Errorf("ACL token TXN_BEGIN: %q", got)
	}
	if got := p.MayRun(ro, wire.OpPut); got != "permission denied: ro is read-only" {
		t.Errorf("read-only PUT: %q", got)
	}
	if got := p.MayRun(ro, wire.OpAddMember); got != "permission denied: ro: ADD_MEMBER needs the admin role" {
		t.Errorf("read-only ADD_MEMBER: %q", got)
	}
	// Open mode: anonymous, read-write on data, admin on admin opcodes.
	o := Open()
	if pr, deny := o.Resolve(false, "", false, nil); deny != "" || pr.Name != "anonymous" || pr.Role != ReadWrite {
		t.Errorf("open data: %+v %q", pr, deny)
	}
	if pr, deny := o.Resolve(true, "whatever", true, nil); deny != "" || pr.Role != Admin {
		t.Errorf("open admin: %+v %q", pr, deny)
	}
}

func TestPolicyCrossFile(t *testing.T) {
	ids, err := ParseIdentities("ids.json", []byte(`{"identities": [{"name": "svc", "certificate": {"dns": "x"}, "role": "read-write",
  "tenant": "t9"}]}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{Identities: ids})
	if err == nil || !strings.HasPrefix(err.Error(), `ids.json:2:13: identity "svc" names tenant "t9", but no tenant file`) {
		t.Fatalf("New = %v", err)
	}
}
