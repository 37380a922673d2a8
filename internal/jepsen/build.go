package jepsen

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Planted bugs for the harness's negative control, by name, and the build
// tag that plants each in kayadb-server.
var PlantedBugs = map[string]string{
	// The leader acknowledges a write as soon as it is queued for raft,
	// before commit: later reads can miss acknowledged writes.
	"early-ack": "kaya_planted_early_ack",
	// Every node answers GET and SCAN from its local state without
	// ReadIndex: a deposed or lagging node serves stale data.
	"stale-reads": "kaya_planted_stale_reads",
	// Transaction commits validate only the write set, not the read set
	// (snapshot isolation where serializability is promised): write skew
	// commits, and the list-append checker must find G2 cycles. The
	// server implements it with the issue-13 transactions
	// (internal/kv/planted_readval_{on,off}.go, a constant
	// plantedSkipReadValidation); until then the tag changes nothing.
	"skip-read-validation": "kaya_planted_skip_read_validation",
	// The watch hub delivers a put to its watchers when the leader
	// proposes it, before it commits (internal/feed/planted_on.go): the
	// watch checker must find events of writes that never committed, or
	// committed writes delivered twice.
	"watch-early": "kaya_planted_watch_early",
}

// PlantedBugWorkloads names, for a planted bug that only some workloads
// can expose, the workloads a negative control must run.
var PlantedBugWorkloads = map[string][]string{
	"skip-read-validation": {WorkloadListAppend},
	"watch-early":          {WorkloadWatch},
}

// PlantedBugNames lists the planted bugs, sorted.
func PlantedBugNames() []string {
	var out []string
	for k := range PlantedBugs {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// BuildServer compiles kayadb-server from the module at moduleDir into
// outDir, with the given build tags, and returns the binary's path.
func BuildServer(moduleDir, outDir string, tags ...string) (string, error) {
	name := "kayadb-server"
	if len(tags) > 0 {
		name += "-" + strings.Join(tags, "-")
	}
	bin := filepath.Join(outDir, name)
	args := []string{"build", "-o", bin}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	args = append(args, "./cmd/kayadb-server")
	cmd := exec.Command("go", args...)
	cmd.Dir = moduleDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build kayadb-server: %v\n%s", err, out)
	}
	return bin, nil
}

// ModuleRoot finds the directory of go.mod from dir upward.
func ModuleRoot(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
	}
}
