package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/internal/buildinfo"
	"github.com/kayadb/kayadb/internal/wire"
)

// TestVersionEverywhere: the STATS document carries "version", /metrics
// has kayadb_build_info with the version, revision and Go version labels,
// and --version prints the same build on stdout and exits 0.
func TestVersionEverywhere(t *testing.T) {
	bi := buildinfo.Read()
	s, _ := startSecured(t, Config{MetricsListener: metricsListener(t)})

	st, p, err := dial(t, s.ClientAddr()).do(wire.OpStats, nil)
	if err != nil || st != wire.StatusOK {
		t.Fatalf("STATS: %v %v", st, err)
	}
	var doc struct {
		Version *string `json:"version"`
	}
	if err := json.Unmarshal(p, &doc); err != nil || doc.Version == nil || *doc.Version != bi.Version {
		t.Fatalf("STATS version: %s (want %q)", p, bi.Version)
	}

	m := scrapeMetrics(t, s.MetricsAddr())
	name := fmt.Sprintf(`kayadb_build_info{goversion=%q,revision=%q,version=%q}`, bi.GoVersion, bi.ShortRevision(), bi.Version)
	if v := series(t, m, name); v != 1 {
		t.Fatalf("%s = %v, want 1", name, v)
	}

	var out, errb bytes.Buffer
	if code := Main([]string{"--version"}, &out, &errb); code != exitOK || out.String() != bi.Line("kayadb-server")+"\n" || errb.Len() != 0 {
		t.Fatalf("--version: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	// KAYA_VERSION (a common name for an image tag) is not read as
	// --version.
	if _, code := ParseFlags(nil, env(map[string]string{"KAYA_VERSION": "1.2"}), &errb); code != -1 {
		t.Fatalf("KAYA_VERSION=1.2: code %d: %s", code, errb.String())
	}
	var help bytes.Buffer
	ParseFlags([]string{"--help"}, env(nil), &help)
	if !strings.Contains(help.String(), "--version") {
		t.Fatalf("--help does not list --version:\n%s", help.String())
	}
}
