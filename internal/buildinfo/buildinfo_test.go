package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/internal/wire"
)

func TestFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/kayadb/kayadb", Version: "v0.0.0-20260101120000-3169d71abcde+dirty"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "3169d71abcde0123456789abcdef0123456789ab"},
			{Key: "vcs.time", Value: "2026-01-01T12:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		}}
	got := fromBuildInfo(bi, true)
	want := Info{Version: "v0.0.0-20260101120000-3169d71abcde+dirty", Revision: "3169d71abcde0123456789abcdef0123456789ab", Modified: true,
		CommitTime: "2026-01-01T12:00:00Z", GoVersion: "go1.26.0", Protocol: wire.ProtocolVersion}
	if got != want {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if s := got.Line("kayactl"); s != "kayactl v0.0.0-20260101120000-3169d71abcde+dirty (revision 3169d71abcde, modified), go1.26.0, client protocol 1" {
		t.Fatalf("Line: %q", s)
	}

	// Nothing stamped (a test binary, -buildvcs=false) or no build info
	// at all: still a complete answer.
	for _, got := range []Info{fromBuildInfo(&debug.BuildInfo{GoVersion: "go1.26.0"}, true), fromBuildInfo(nil, false)} {
		if got.Version != "(devel)" || got.Revision != "" || got.GoVersion == "" || got.Protocol != wire.ProtocolVersion {
			t.Fatalf("unstamped: %+v", got)
		}
		if s := got.String(); !strings.Contains(s, "(devel) (revision unknown)") || !strings.Contains(s, "client protocol 1") {
			t.Fatalf("unstamped String: %q", s)
		}
	}
}

func TestRead(t *testing.T) {
	i := Read()
	if i.Version == "" || i.GoVersion == "" || i.Protocol != wire.ProtocolVersion {
		t.Fatalf("Read: %+v", i)
	}
}
