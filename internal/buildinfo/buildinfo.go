// Package buildinfo tells what a KayaDB binary was built from: the module
// version, the VCS revision, the Go version and the client protocol version
// it speaks. Every binary's --version, kayactl version, the server's STATS
// "version" member and its kayadb_build_info metric read it from here, so
// they agree.
//
// It reads runtime/debug.ReadBuildInfo: no -ldflags are needed. `go build`
// and `go install` in a Git checkout stamp the revision (and, since Go 1.24,
// a pseudo-version such as v0.0.0-20260101120000-3169d71abcde+dirty);
// `go install module@version` stamps the tagged version. Test binaries and
// builds with -buildvcs=false carry neither: Version is then "(devel)" and
// Revision empty. It never fails and never does I/O.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/kayadb/kayadb/internal/wire"
)

// Info describes one build. The JSON names are stable (kayactl version
// --json prints them).
type Info struct {
	// Version is the main module's version: a tag (v1.2.0), a
	// pseudo-version, or "(devel)" when the build carries none.
	Version string `json:"version"`
	// Revision is the VCS commit the binary was built from; "" when
	// unknown.
	Revision string `json:"revision"`
	// Modified is true when the work tree had uncommitted changes.
	Modified bool `json:"modified"`
	// CommitTime is the commit's time (RFC 3339); "" when unknown.
	CommitTime string `json:"commit_time,omitempty"`
	// GoVersion is the Go release that built the binary (go1.26.0).
	GoVersion string `json:"go_version"`
	// Protocol is the client protocol version the binary speaks (HELLO).
	Protocol uint16 `json:"protocol"`
}

// devel is Version when the build carries no module version.
const devel = "(devel)"

// Read returns the running binary's build information.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	return fromBuildInfo(bi, ok)
}

// fromBuildInfo extracts Info from what debug.ReadBuildInfo returned.
func fromBuildInfo(bi *debug.BuildInfo, ok bool) Info {
	info := Info{Version: devel, GoVersion: runtime.Version(), Protocol: wire.ProtocolVersion}
	if !ok || bi == nil {
		return info
	}
	if bi.GoVersion != "" {
		info.GoVersion = bi.GoVersion
	}
	if v := bi.Main.Version; v != "" {
		info.Version = v
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		case "vcs.time":
			info.CommitTime = s.Value
		}
	}
	return info
}

// ShortRevision is the first 12 hex digits of Revision (as Go's
// pseudo-versions abbreviate it), or "unknown".
func (i Info) ShortRevision() string {
	switch {
	case i.Revision == "":
		return "unknown"
	case len(i.Revision) > 12:
		return i.Revision[:12]
	}
	return i.Revision
}

// String is the one-line form every --version prints after the program
// name: "v1.2.0 (revision 3169d71abcde, modified), go1.26.0, client
// protocol 1".
func (i Info) String() string {
	var b strings.Builder
	b.WriteString(i.Version)
	fmt.Fprintf(&b, " (revision %s", i.ShortRevision())
	if i.Modified {
		b.WriteString(", modified")
	}
	fmt.Fprintf(&b, "), %s, client protocol %d", i.GoVersion, i.Protocol)
	return b.String()
}

// Line is what `PROGRAM --version` prints: the program name and String.
func (i Info) Line(program string) string { return program + " " + i.String() }
