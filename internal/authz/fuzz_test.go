package authz

import (
	"errors"
	"testing"
)

// The parsers never panic, and either return a policy or a ParseError
// (file, position, reason); a parsed file builds a policy.

func checkParsed(t *testing.T, err error) {
	t.Helper()
	var pe *ParseError
	if err != nil && !errors.As(err, &pe) {
		t.Fatalf("error %v is not a *ParseError", err)
	}
	if pe != nil && (pe.File != "f.json" || pe.Reason == "") {
		t.Fatalf("ParseError %+v lacks the file or the reason", pe)
	}
}

func FuzzParseACL(f *testing.F) {
	for _, s := range []string{`{}`, `{"orders/": "tok-orders-0123456"}`, `{"0x00ff": "t1", "hex:61": "t2", "": "t3"}`, `{"a": ""}`, `[1]`, `{"a": "b"} x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseACL("f.json", data)
		checkParsed(t, err)
		if err == nil {
			if _, err := New(Config{ACL: a}); err != nil {
				t.Fatal(err)
			}
			for _, e := range a.entries {
				a.readable(e.token)
			}
		}
	})
}

func FuzzParseTenants(f *testing.F) {
	for _, s := range []string{`{"tenants": []}`, `{"tenants": [{"id": "t1", "token": "tok-1", "prefix": "t1/"}, {"id": "t2", "token": "tok-2", "prefix": "t2/"}]}`,
		`{"tenants": [{"id": "t1", "token": "a", "prefix": "x"}, {"id": "t2", "token": "b", "prefix": "xy"}]}`, `{"tenants": {}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ts, err := ParseTenants("f.json", data)
		checkParsed(t, err)
		if err == nil {
			if _, err := New(Config{Tenants: ts}); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func FuzzParseIdentities(f *testing.F) {
	for _, s := range []string{`{"identities": []}`,
		`{"identities": [{"name": "a", "token_sha256": "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881", "role": "read-only", "prefixes": ["a/", "0x00"]}]}`,
		`{"identities": [{"name": "b", "certificate": {"subject": "CN=b"}, "role": "admin", "tenant": "t"}]}`,
		`{"identities": [{"name": "c", "token_file": "x", "role": "read-write"}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ids, err := ParseIdentities("f.json", data, func(string) (string, error) { return "token-from-a-file-0", nil })
		checkParsed(t, err)
		if err == nil {
			_, err := New(Config{Identities: ids})
			checkParsed(t, err) // an unknown tenant is a ParseError
		}
	})
}
