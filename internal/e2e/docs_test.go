package e2e

import (
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestRunbooksStartCleanAndCreateTheirDirectories checks what a reader
// running the pages' commands on a machine that is not fresh depends on
// (no processes: it runs with -short too):
//
//   - every page that starts the local cluster (docs/runbooks/*.md and
//     docs/getting-started.md) says how to start from a clean cluster
//     directory; a runbook does it in the block that starts the cluster,
//     before scripts/start-cluster.sh;
//   - every absolute directory a block writes a file into (`> /etc/kaya/x`)
//     is created earlier on the page (mkdir -p or install -d);
//   - getting-started kills the node that leads, not a fixed node number.
func TestRunbooksStartCleanAndCreateTheirDirectories(t *testing.T) {
	root := repoRoot(t)
	pages, err := filepath.Glob(filepath.Join(root, "docs", "runbooks", "*.md"))
	if err != nil || len(pages) < 5 {
		t.Fatalf("runbooks: %v %v", pages, err)
	}
	const clean = "scripts/stop-cluster.sh && rm -rf cluster/"
	redirect := regexp.MustCompile(`>\s*(/[^\s;|&)]+)`)
	created := regexp.MustCompile(`(?:mkdir -p|install -d(?: -[mog] \S+)*)((?:\s+/[^\s;|&]+)+)`)
	for _, p := range append(pages, filepath.Join(root, "docs", "getting-started.md")) {
		name, _ := filepath.Rel(root, p)
		blocks := runbookBlocks(t, p)
		started := false
		made := map[string]bool{}
		for _, b := range blocks {
			if i := strings.Index(b, "scripts/start-cluster.sh"); i >= 0 && !started {
				started = true
				if strings.HasPrefix(name, "docs/runbooks/") && !strings.Contains(b[:i], clean) {
					t.Errorf("%s: the block that starts the cluster does not clean cluster/ first (%q)", name, clean)
				}
			}
			for _, m := range created.FindAllStringSubmatch(b, -1) {
				for _, d := range strings.Fields(m[1]) {
					made[path.Clean(d)] = true
				}
			}
			for _, m := range redirect.FindAllStringSubmatch(b, -1) {
				if d := path.Dir(m[1]); d != "/dev" && d != "/tmp" && !made[d] {
					t.Errorf("%s: a block writes %s before the page creates %s", name, m[1], d)
				}
			}
		}
		if started && !strings.HasPrefix(name, "docs/runbooks/") {
			text, _ := os.ReadFile(p)
			if !strings.Contains(string(text), clean) {
				t.Errorf("%s: does not say how to start from a clean cluster directory (%q)", name, clean)
			}
		}
	}
	gs := runbookBlocks(t, filepath.Join(root, "docs", "getting-started.md"))
	for _, b := range gs {
		if regexp.MustCompile(`(kill|restart)-node\.sh [0-9]`).MatchString(b) {
			t.Errorf("getting-started kills or restarts a fixed node, which need not be the leader:\n%s", b)
		}
	}
}

// TestOneFigureForTheSuiteTime: README.md, docs/testing.md and .ci/run's
// comment give the same figure for how long `go test ./...` takes.
func TestOneFigureForTheSuiteTime(t *testing.T) {
	root := repoRoot(t)
	figure := regexp.MustCompile(`go test \./\.\.\.[^\n]*?about (\d+) minutes on (?:2|two) cores|the test suite \(about (\d+) minutes on (?:2|two) cores`)
	got := map[string]string{}
	for _, f := range []string{"README.md", "docs/testing.md", ".ci/run"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		m := figure.FindSubmatch(b)
		if m == nil {
			t.Errorf("%s gives no figure for go test ./... (\"about N minutes on 2 cores\")", f)
			continue
		}
		got[f] = string(m[1]) + string(m[2])
	}
	for _, n := range got {
		if n != got["README.md"] {
			t.Fatalf("the figures differ: %v", got)
		}
	}
}
