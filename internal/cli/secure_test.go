package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/internal/security"
	"github.com/kayadb/kayadb/internal/security/securitytest"
	"github.com/kayadb/kayadb/internal/server"
)

func runCLIEnv(env map[string]string, args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := run(args, testInvocation(&out, &errb, func(k string) (string, bool) { v, ok := env[k]; return v, ok }))
	return out.String(), errb.String(), code
}

// TestKayactlTLSAndTokens runs kayactl against a one-node cluster with
// mutual TLS and both tokens: every credential is needed, from flags or
// from the environment, and a missing one gets a hint naming the flag.
func TestKayactlTLSAndTokens(t *testing.T) {
	dir := t.TempDir()
	ca := securitytest.NewCA(t, "kayactl test CA")
	node := ca.Issue(t, "node1.kaya.local", nil).Write(t, ca, dir, "node1")
	admin := ca.Issue(t, "admin-client.kaya.local", nil).Write(t, nil, dir, "admin")
	const opTok, clTok = "operator-secret-123", "client-secret-456"
	tokFile := filepath.Join(dir, "client.token")
	if err := os.WriteFile(tokFile, []byte(clTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	c := startNode(t, func(_ uint64, cfg *server.Config) {
		cfg.OperatorToken, cfg.ClientToken = opTok, clTok
		cfg.TLS = security.TLSFiles{Cert: node.Cert, Key: node.Key, CA: node.CA}
	})
	srv := "--server=" + c.addr(1)
	tlsArgs := []string{srv, "--tls-ca-cert", node.CA, "--tls-cert", admin.Cert, "--tls-key", admin.Key, "--timeout", "2s"}
	with := func(extra ...string) []string { return append(append([]string{}, tlsArgs...), extra...) }

	// Full credentials: data and admin commands work.
	if out, errs, code := runCLI(with("--client-token", clTok, "put", "k", "v")...); code != 0 || out != "OK\n" {
		t.Fatalf("put: %d %q %q", code, out, errs)
	}
	if out, errs, code := runCLI(with("--client-token-file", tokFile, "get", "k")...); code != 0 || out != "v\n" {
		t.Fatalf("get with a token file: %d %q %q", code, out, errs)
	}
	if out, errs, code := runCLI(with("--operator-token", opTok, "add-node", "--learner", "5", "127.0.0.1:47485", "127.0.0.1:47385")...); code != 0 || !strings.HasPrefix(out, "OK ") {
		t.Fatalf("add-node with the token: %d %q %q", code, out, errs)
	}
	// The same from the environment.
	env := map[string]string{"KAYA_SERVER": c.addr(1), "KAYA_TLS_CA_CERT": node.CA, "KAYA_TLS_CERT": admin.Cert,
		"KAYA_TLS_KEY": admin.Key, "KAYA_CLIENT_TOKEN": clTok, "KAYA_OPERATOR_TOKEN": opTok}
	if out, errs, code := runCLIEnv(env, "get", "k"); code != 0 || out != "v\n" {
		t.Fatalf("get from the environment: %d %q %q", code, out, errs)
	}
	if out, errs, code := runCLIEnv(env, "remove-node", "5"); code != 0 || !strings.HasPrefix(out, "OK ") {
		t.Fatalf("remove-node from the environment: %d %q %q", code, out, errs)
	}

	// Missing pieces are refused with a hint.
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no client token", with("get", "k"), "--client-token"},
		{"wrong client token", with("--client-token", "nope", "get", "k"), "--client-token"},
		{"no operator token", with("--client-token", clTok, "remove-node", "9"), "--operator-token"},
		{"no client certificate", []string{srv, "--tls-ca-cert", node.CA, "--client-token", clTok, "--timeout", "2s", "get", "k"}, "--tls-cert"},
		{"no CA", []string{srv, "--tls-cert", admin.Cert, "--tls-key", admin.Key, "--client-token", clTok, "--timeout", "2s", "get", "k"}, "--tls-ca-cert"},
		{"plain TCP", []string{srv, "--client-token", clTok, "--timeout", "2s", "get", "k"}, "requires TLS"},
		{"cert without key", []string{srv, "--tls-cert", admin.Cert, "get", "k"}, "--tls-key"},
		{"both token sources", with("--client-token", clTok, "--client-token-file", tokFile, "get", "k"), "use one"},
	} {
		out, errs, code := runCLI(tc.args...)
		if code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("%s: exit %d, out %q, stderr %q; want a failure mentioning %q", tc.name, code, out, errs, tc.want)
		}
	}
}
