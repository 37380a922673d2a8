package jepsen

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// buildServer builds kayadb-server (with tags) for the tests.
func buildServer(t *testing.T, tags ...string) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root, err := ModuleRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := BuildServer(root, t.TempDir(), tags...)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// reportDir is kept when the test fails (its path is logged) and removed
// otherwise.
func reportDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kaya-jepsen-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("KAYA_JEPSEN_KEEP") != "" {
			t.Logf("report kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	return dir
}

func logf(t *testing.T) func(string, ...any) {
	return func(format string, args ...any) {
		if testing.Verbose() {
			t.Logf(format, args...)
		}
	}
}

// TestJepsen runs the harness against the real server: a few short
// randomized runs in CI (about two minutes), or, with KAYA_JEPSEN_LONG=1,
// a campaign of KAYA_JEPSEN_RUNS (default 20) runs of 60 s each from seed
// KAYA_JEPSEN_SEED. Any invalid run fails with its report kept.
func TestJepsen(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes for minutes; skipped in -short mode")
	}
	bin := buildServer(t)
	type plan struct {
		seed     int64
		nemeses  []string
		duration time.Duration
		nodes    int
	}
	plans := []plan{
		{seed: 11, nemeses: AllNemeses, duration: 25 * time.Second, nodes: 3},
		{seed: 12, nemeses: []string{NemesisPartition, NemesisSlow}, duration: 20 * time.Second, nodes: 3},
		{seed: 13, nemeses: []string{NemesisKill, NemesisPause}, duration: 20 * time.Second, nodes: 5},
	}
	if os.Getenv("KAYA_JEPSEN_LONG") != "" {
		runs, seed := 20, time.Now().UnixNano()%1_000_000
		if v, err := strconv.Atoi(os.Getenv("KAYA_JEPSEN_RUNS")); err == nil && v > 0 {
			runs = v
		}
		if v, err := strconv.ParseInt(os.Getenv("KAYA_JEPSEN_SEED"), 10, 64); err == nil {
			seed = v
		}
		plans = nil
		for i := 0; i < runs; i++ {
			plans = append(plans, plan{seed: seed + int64(i), nemeses: AllNemeses, duration: 60 * time.Second, nodes: 3 + 2*int(i%4/3)})
		}
	}
	for _, p := range plans {
		dir := reportDir(t)
		sum, err := Run(context.Background(), Config{Bin: bin, Nodes: p.nodes, Seed: p.seed, Nemeses: p.nemeses,
			Duration: p.duration, ReportDir: dir, Logf: logf(t)})
		if err != nil {
			t.Fatalf("seed %d: the harness failed: %v", p.seed, err)
		}
		t.Log("\n" + sum.Text())
		if !sum.Valid {
			t.Fatalf("seed %d: INVALID run; reproduce with: go run ./cmd/kaya-jepsen -seed %d -runs 1 -nodes %d -duration %s -nemesis %s",
				p.seed, p.seed, p.nodes, p.duration, strings.Join(p.nemeses, ","))
		}
		if sum.Ops.OK < 1000 || len(sum.Faults) == 0 {
			t.Fatalf("seed %d: the run did too little to mean anything: %d ok ops, %d faults", p.seed, sum.Ops.OK, len(sum.Faults))
		}
	}
}

// TestJepsenCatchesPlantedBug is the negative control: a server built to
// acknowledge writes before they commit must be caught by the
// linearizability checker.
func TestJepsenCatchesPlantedBug(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped in -short mode")
	}
	bin := buildServer(t, PlantedBugs["early-ack"])
	for _, seed := range []int64{21, 22, 23} {
		dir := reportDir(t)
		sum, err := Run(context.Background(), Config{Bin: bin, Seed: seed, Nemeses: []string{NemesisKill, NemesisPartition},
			Workloads: []string{WorkloadRegister}, Duration: 10 * time.Second, CheckTimeout: 30 * time.Second, ReportDir: dir, Logf: logf(t)})
		if err != nil {
			t.Fatalf("the harness failed: %v", err)
		}
		t.Log("\n" + sum.Text())
		if !sum.Valid {
			for _, v := range sum.Verdicts {
				if v.Result == "violation" && v.Checker == "register" && v.Visualization != "" {
					return // caught, with a visualization
				}
			}
			t.Fatalf("invalid, but not by the linearizability checker: %+v", sum.Verdicts)
		}
	}
	t.Fatal("three runs of a server serving stale reads passed the checker")
}
