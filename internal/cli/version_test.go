package cli

import (
	"strings"
	"testing"

	"github.com/kayadb/kayadb/internal/buildinfo"
)

// TestVersion: kayactl --version and kayactl version print the build
// (module version, revision, Go, client protocol) without touching a
// server; with --server, version also shows each server's.
func TestVersion(t *testing.T) {
	bi := buildinfo.Read()
	line := bi.Line("kayactl") + "\n"
	if out, errs, code := runCLI("--version"); code != 0 || out != line {
		t.Fatalf("--version: %d %q %q", code, out, errs)
	}
	// The default server (nothing listens there in tests) is not asked.
	if out, errs, code := runCLI("version"); code != 0 || out != line {
		t.Fatalf("version: %d %q %q", code, out, errs)
	}
	var v struct {
		buildinfo.Info
		Servers []struct {
			Endpoint string `json:"endpoint"`
			NodeID   uint64 `json:"node_id"`
			Version  string `json:"version"`
			Error    string `json:"error"`
		} `json:"servers"`
	}
	out, _, code := runCLI("--json", "version")
	decodeStrict(t, out, &v)
	if code != 0 || v.Info != bi || v.Servers != nil {
		t.Fatalf("version --json: %d %q", code, out)
	}
	addr := startServer(t)
	out, errs, code := runCLI("--server", addr, "version")
	if code != 0 || out != line+"server "+addr+" (node 1): "+bi.Version+"\n" {
		t.Fatalf("version --server: %d %q %q", code, out, errs)
	}
	dead := noServer()
	out, errs, code = runCLI("--server", addr+","+dead, "--json", "version")
	v.Servers = nil
	decodeStrict(t, out, &v)
	if code != ExitError || len(v.Servers) != 2 || v.Servers[0].Version != bi.Version || v.Servers[0].NodeID != 1 ||
		v.Servers[1].Endpoint != dead || v.Servers[1].Error == "" || !strings.Contains(errs, "nothing listening on "+dead) {
		t.Fatalf("version with a server down: %d %q %q", code, out, errs)
	}
}
