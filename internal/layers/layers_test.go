package layers

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/kayadb/kayadb"

// rule is one package's row of the table.
type rule struct {
	// holds is what the package is for (the table's second column).
	holds string
	// imports are the module packages its non-test files may import.
	imports []string
	// tests are the module packages its tests may import besides those
	// (and besides the package itself, for an external test package).
	tests []string
}

// Groups of packages that several rows share.
var (
	leaf       = []string{}
	lsmCommon  = []string{"internal/lsm/base", "internal/crc", "internal/errs", "internal/vfs", "internal/crypt"}
	lsmAll     = []string{"internal/lsm/base", "internal/lsm/batch", "internal/lsm/cache", "internal/lsm/manifest", "internal/lsm/memtable", "internal/lsm/sstable"}
	neutral    = []string{"internal/crc", "internal/errs"}
	testHelper = []string{"internal/security/securitytest", "internal/loopport"}
)

func join(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// allowed is the layering of the module, bottom-up: the source of truth
// that docs/architecture.md mirrors. A package may import only the module
// packages in its row (any standard library package and the dependencies
// in go.mod are not listed). Every package of the module has a row.
var allowed = map[string]rule{
	// Neutral leaves: the standard library only.
	"internal/crc":           {"masked CRC-32C of every file format and raft frame", leaf, nil},
	"internal/errs":          {"error classes every layer shares (corruption with file and offset, not found, invalid argument, closed, locked)", leaf, nil},
	"internal/vfs":           {"file system seam: OS (fdatasync, dir sync, preallocation), crash-simulating MemFS, error injection", leaf, nil},
	"internal/durable":       {"crash-safe file replacement on the OS file system, for code outside the storage layers", leaf, nil},
	"internal/wire":          {"client protocol codec: frames, opcodes, statuses, auth prefixes, STATS", leaf, nil},
	"internal/wire/wiretest": {"an in-memory model of a leader's data opcodes, for testing clients (tests only)", []string{"internal/wire"}, nil},
	"internal/security": {"bind guard, token files, TLS configuration and reloads, directory permission checks", leaf,
		[]string{"internal/security/securitytest"}},
	"internal/crypt":                 {"encryption at rest: keyring and key file formats, the AES-256-GCM envelope of a record or block", leaf, nil},
	"internal/authz":                 {"principals, roles, per-prefix ACL, tenants, identities: who a request is for and what it may do", []string{"internal/wire"}, nil},
	"internal/loopport":              {"loopback ports outside the ephemeral range, for processes restarted on the same address", leaf, nil},
	"internal/security/securitytest": {"throw-away CAs and certificates for tests", leaf, nil},

	// Formats shared by the engine and the raft log.
	"internal/record": {"chunked, checksummed log framing: engine WAL and MANIFEST, raft log segments", join(neutral, []string{"internal/crypt"}), nil},

	// The storage engine.
	"internal/lsm/base":     {"LSM vocabulary: internal keys, sequence and file numbers, file names, iterator interface", neutral, nil},
	"internal/lsm/batch":    {"write batch encoding", lsmCommon, nil},
	"internal/lsm/cache":    {"block cache", lsmCommon, nil},
	"internal/lsm/memtable": {"arena skiplist memtable", lsmCommon, nil},
	"internal/lsm/sstable":  {"SSTable format, writer, reader, bloom filter", join(lsmCommon, []string{"internal/lsm/cache"}), nil},
	"internal/lsm/manifest": {"versions, version edits, MANIFEST and CURRENT", join(lsmCommon, []string{"internal/record"}), nil},
	"engine":                {"public embeddable LSM engine", join(lsmAll, neutral, []string{"internal/record", "internal/vfs", "internal/crypt"}), nil},

	// The raft side.
	"internal/raftlog":   {"raft WAL segments and raft.Storage", join(neutral, []string{"internal/record", "internal/vfs", "internal/crypt"}), nil},
	"internal/transport": {"peer transport (TCP, TLS, peer token), in-memory network", neutral, join([]string{"internal/snap", "internal/vfs"}, testHelper)},
	"internal/snap":      {"raft snapshots on disk: engine checkpoints, metadata, stream format", join(neutral, []string{"internal/vfs"}), nil},
	"internal/raftnode":  {"the goroutine that owns the raft node", join(neutral, []string{"internal/raftlog", "internal/transport", "internal/vfs"}), nil},
	"internal/kv":        {"replicated state machine over the engine", join(neutral, []string{"engine", "internal/raftnode"}), []string{"internal/clustertest", "internal/vfs"}},
	"internal/feed":      {"change feed consumers and watches over the state machine's history", []string{"engine", "internal/kv", "internal/wire"}, []string{"internal/vfs"}},
	"internal/txn":       {"transaction manager: open transactions on the leader, commit and conditional-write commands", []string{"engine", "internal/kv", "internal/wire"}, []string{"internal/clustertest", "internal/raftnode", "internal/vfs"}},

	// The node, the client, the tools.
	"internal/audit":     {"audit log: one JSON line per request, file sink with rotation and group-committed fsync, syslog over UDP and TLS", []string{"internal/vfs"}, []string{"internal/security/securitytest"}},
	"internal/buildinfo": {"module version, VCS revision, Go and protocol version of a binary", []string{"internal/wire"}, nil},
	"internal/server": {"wiring and lifecycle of a node", join(neutral, []string{"engine", "internal/audit", "internal/authz", "internal/feed", "internal/kv", "internal/txn", "internal/raftlog", "internal/raftnode", "internal/transport",
		"internal/snap", "internal/security", "internal/vfs", "internal/wire", "internal/buildinfo", "internal/crypt", "internal/record"}), join([]string{"client", "internal/clustertest"}, testHelper)},
	"client": {"public Go client", []string{"internal/wire", "internal/durable"}, []string{"internal/wire/wiretest"}},
	"internal/cli": {"kayactl: server mode over the client, local mode over the engine, inspectors", join(lsmAll, neutral, []string{"client", "engine", "internal/kv",
		"internal/record", "internal/security", "internal/vfs", "internal/wire", "internal/buildinfo", "internal/crypt", "internal/raftlog"}), join([]string{"internal/server", "internal/clustertest", "internal/wire/wiretest"}, testHelper)},
	"internal/clustertest": {"the shared cluster harness (generic over the node) and an in-process raft cluster over the real stack below the server, for tests", []string{"engine", "internal/kv", "internal/raftlog",
		"internal/raftnode", "internal/transport", "internal/vfs", "internal/loopport"}, nil},
	"internal/jepsen": {"Jepsen-style harness: real processes, fault-injecting proxy, nemeses, checkers", []string{"client", "engine", "internal/kv",
		"internal/loopport", "internal/wire"}, []string{"internal/wire/wiretest"}},
	"internal/e2e":    {"process-level tests of the binaries, scripts and runbooks (tests only)", nil, join([]string{"internal/wire"}, testHelper)},
	"internal/layers": {"this table and its test (tests only)", nil, nil},

	// Commands: thin mains.
	"cmd/kayadb-server": {"the server binary", []string{"internal/server"}, nil},
	"cmd/kayactl":       {"the operator CLI binary", []string{"internal/cli"}, nil},
	"cmd/kaya-jepsen":   {"the fault-injection harness binary", []string{"internal/jepsen", "internal/buildinfo"}, nil},
}

// pkg is what go list says about one package.
type pkg struct {
	ImportPath   string
	Name         string
	Doc          string
	Dir          string
	GoFiles      []string
	TestGoFiles  []string
	XTestGoFiles []string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

// repoRoot is the module's root directory.
func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// listPackages runs go list on every package of the module.
func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = repoRoot(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		p.ImportPath = strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 20 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

// local returns the module packages among imports, without the module path.
func local(imports []string) []string {
	var out []string
	for _, imp := range imports {
		if imp == module || strings.HasPrefix(imp, module+"/") {
			out = append(out, strings.TrimPrefix(strings.TrimPrefix(imp, module), "/"))
		}
	}
	return out
}

// TestImportLayering: every package imports only what its row allows, its
// tests only that and their own extra column, and every package has a row.
func TestImportLayering(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range listPackages(t) {
		seen[p.ImportPath] = true
		r, ok := allowed[p.ImportPath]
		if !ok {
			t.Errorf("%s has no row in the layering table (internal/layers/layers_test.go and docs/architecture.md): decide what it may import", p.ImportPath)
			continue
		}
		for _, imp := range local(p.Imports) {
			if !slices.Contains(r.imports, imp) {
				t.Errorf("%s imports %s, which its row does not allow (it may import: %s)", p.ImportPath, imp, strings.Join(r.imports, ", "))
			}
		}
		for _, imp := range local(append(append([]string(nil), p.TestImports...), p.XTestImports...)) {
			if imp != p.ImportPath && !slices.Contains(r.imports, imp) && !slices.Contains(r.tests, imp) {
				t.Errorf("the tests of %s import %s, which its row does not allow", p.ImportPath, imp)
			}
		}
	}
	for path := range allowed {
		if !seen[path] {
			t.Errorf("the layering table has a row for %s, which is not a package of the module", path)
		}
	}
}

// TestPackageDocs: every package says what it owns in a doc comment
// ("Package x ..." or, for a main package, "Command x ...").
func TestPackageDocs(t *testing.T) {
	for _, p := range listPackages(t) {
		want := "Package " + p.Name + " "
		if p.Name == "main" {
			want = "Command " + filepath.Base(p.ImportPath) + " "
		}
		doc := p.Doc
		if doc == "" && len(p.GoFiles) == 0 {
			doc = testOnlyDoc(t, p) // go list reads non-test files only
		}
		if !strings.HasPrefix(doc, want) {
			t.Errorf("%s: its doc comment must start with %q, got %q", p.ImportPath, want, doc)
		}
	}
}

// testOnlyDoc returns the first line of the package comment of a package
// that has only test files.
func testOnlyDoc(t *testing.T, p pkg) string {
	for _, f := range append(append([]string(nil), p.TestGoFiles...), p.XTestGoFiles...) {
		b, err := os.ReadFile(filepath.Join(p.Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if m := regexp.MustCompile(`(?m)^// (Package .*)\n(?://.*\n)*package `).FindSubmatch(b); m != nil {
			return string(m[1])
		}
	}
	return ""
}

// TestBinariesAndClientDeps: no binary links a test helper or the testing
// package, and the public client links nothing of the module but the wire
// codec and internal/durable, and no third-party module (it must stay a
// small dependency for applications).
func TestBinariesAndClientDeps(t *testing.T) {
	deps := func(pkgs ...string) []string {
		cmd := exec.Command("go", append([]string{"list", "-deps"}, pkgs...)...)
		cmd.Dir = repoRoot(t)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list -deps %v: %v", pkgs, err)
		}
		return strings.Fields(string(out))
	}
	for _, d := range deps("./cmd/...") {
		if d == "testing" || strings.HasSuffix(d, "/securitytest") || strings.HasSuffix(d, "/clustertest") || strings.HasSuffix(d, "/e2e") {
			t.Errorf("a binary links %s", d)
		}
	}
	for _, d := range deps("./client") {
		switch {
		case d == module+"/client" || d == module+"/internal/wire" || d == module+"/internal/durable":
		case strings.HasPrefix(d, module+"/"):
			t.Errorf("the public client links %s", d)
		case strings.Contains(strings.SplitN(d, "/", 2)[0], ".") && !strings.HasPrefix(d, "vendor/"):
			t.Errorf("the public client links the third-party package %s", d)
		}
	}
}

// docTable reads the layering table of docs/architecture.md: for each
// package (first column), the packages named in the third and fourth.
func docTable(t *testing.T) map[string][2][]string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := regexp.MustCompile("`([a-z0-9/_-]+)`")
	rows := map[string][2][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cells := strings.Split(sc.Text(), "|")
		if len(cells) != 6 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		m := names.FindStringSubmatch(cells[1])
		if m == nil {
			continue
		}
		var cols [2][]string
		for i, c := range []string{cells[3], cells[4]} {
			for _, n := range names.FindAllStringSubmatch(c, -1) {
				cols[i] = append(cols[i], n[1])
			}
		}
		rows[m[1]] = cols
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestArchitectureDocMirrorsTable: docs/architecture.md's table has exactly
// this table's rows.
func TestArchitectureDocMirrorsTable(t *testing.T) {
	rows := docTable(t)
	sorted := func(l []string) string {
		c := append([]string(nil), l...)
		sort.Strings(c)
		return strings.Join(c, ", ")
	}
	for path, r := range allowed {
		row, ok := rows[path]
		if !ok {
			t.Errorf("docs/architecture.md has no row for %s; add:\n%s", path, docRow(path, r))
			continue
		}
		if sorted(row[0]) != sorted(r.imports) || sorted(row[1]) != sorted(r.tests) {
			t.Errorf("docs/architecture.md's row for %s differs from the table; it should read:\n%s", path, docRow(path, r))
		}
	}
	for path := range rows {
		if _, ok := allowed[path]; !ok {
			t.Errorf("docs/architecture.md has a row for %s, which the table does not", path)
		}
	}
}

// docRow formats a row of docs/architecture.md's table.
func docRow(path string, r rule) string {
	q := func(l []string) string {
		if len(l) == 0 {
			return "—"
		}
		c := append([]string(nil), l...)
		sort.Strings(c)
		for i := range c {
			c[i] = "`" + c[i] + "`"
		}
		return strings.Join(c, ", ")
	}
	return fmt.Sprintf("| `%s` | %s | %s | %s |", path, r.holds, q(r.imports), q(r.tests))
}

// TestPrintDocTable prints the table in docs/architecture.md's form (go
// test -run TestPrintDocTable -v ./internal/layers), in layer order.
func TestPrintDocTable(t *testing.T) {
	if !testing.Verbose() {
		t.Skip("prints the table with -v")
	}
	for _, path := range order {
		t.Log(docRow(path, allowed[path]))
	}
}

// order is the table's order in docs/architecture.md: bottom-up.
var order = []string{
	"internal/crc", "internal/errs", "internal/vfs", "internal/durable", "internal/crypt", "internal/wire", "internal/authz", "internal/wire/wiretest", "internal/security", "internal/loopport",
	"internal/security/securitytest", "internal/record",
	"internal/lsm/base", "internal/lsm/batch", "internal/lsm/cache", "internal/lsm/memtable", "internal/lsm/sstable", "internal/lsm/manifest", "engine",
	"internal/raftlog", "internal/transport", "internal/snap", "internal/raftnode", "internal/kv", "internal/feed", "internal/txn",
	"internal/audit", "internal/buildinfo", "internal/server", "client", "internal/cli", "internal/clustertest", "internal/jepsen", "internal/e2e", "internal/layers",
	"cmd/kayadb-server", "cmd/kayactl", "cmd/kaya-jepsen",
}

func TestOrderListsEveryRow(t *testing.T) {
	if len(order) != len(allowed) {
		t.Fatalf("order has %d packages, the table %d", len(order), len(allowed))
	}
	for _, p := range order {
		if _, ok := allowed[p]; !ok {
			t.Errorf("order names %s, which has no row", p)
		}
	}
}
