package jepsen

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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
// randomized runs in CI (about two and a half minutes), or, with
// KAYA_JEPSEN_LONG=1, a campaign of KAYA_JEPSEN_RUNS (default 20) runs of
// 60 s each from seed KAYA_JEPSEN_SEED. Any invalid run fails with its
// report kept. The resource nemeses get a run of their own; the disk
// nemesis needs root (it mounts a tmpfs per node): without it, that part
// is skipped, with the reason.
func TestJepsen(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes for minutes; skipped in -short mode")
	}
	bin := buildServer(t)
	type plan struct {
		name     string
		seed     int64
		nemeses  []string
		duration time.Duration
		nodes    int
	}
	resources := []string{NemesisDisk, NemesisSlowClient, NemesisFlood}
	plans := []plan{
		{name: "all", seed: 11, nemeses: AllNemeses, duration: 25 * time.Second, nodes: 3},
		{name: "partition-slow", seed: 12, nemeses: []string{NemesisPartition, NemesisSlow}, duration: 20 * time.Second, nodes: 3},
		{name: "kill-pause", seed: 13, nemeses: []string{NemesisKill, NemesisPause}, duration: 20 * time.Second, nodes: 5},
		// Leaders stepping down with writes committed and not yet applied.
		{name: "transfer", seed: 14, nemeses: []string{NemesisTransfer}, duration: 15 * time.Second, nodes: 3},
		// Seed 25: the disk of one node and of all (both restarted at
		// the heal), a flood on a follower, a slow client on the leader.
		{name: "resources", seed: 25, nemeses: resources, duration: 20 * time.Second, nodes: 3},
	}
	diskErr := TmpfsAvailable()
	if diskErr != nil {
		// Seed 18: floods on the leader and a follower, a slow client
		// on the leader.
		plans[4] = plan{name: "resources-without-disk", seed: 18, nemeses: []string{NemesisSlowClient, NemesisFlood}, duration: 15 * time.Second, nodes: 3}
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
			plans = append(plans, plan{name: fmt.Sprintf("seed-%d", seed+int64(i)), seed: seed + int64(i), nemeses: AllNemeses, duration: 60 * time.Second, nodes: 3 + 2*int(i%4/3)})
		}
	}
	for _, p := range plans {
		t.Run(p.name, func(t *testing.T) {
			if strings.HasPrefix(p.name, "resources") {
				// The schedule follows from the seed: make sure it
				// still has every resource nemesis the plan is for.
				kinds := map[string]bool{}
				for _, f := range Schedule(p.seed, p.nemeses, p.duration) {
					kinds[f.Kind] = true
				}
				for _, k := range p.nemeses {
					if !kinds[k] {
						t.Fatalf("seed %d's schedule has no %s fault: choose another seed", p.seed, k)
					}
				}
			}
			dir := reportDir(t)
			sum, err := Run(context.Background(), Config{Bin: bin, Nodes: p.nodes, Seed: p.seed, Nemeses: p.nemeses,
				Duration: p.duration, ReportDir: dir, Logf: logf(t), LeaveOutUnavailable: true})
			if err != nil {
				t.Fatalf("seed %d: the harness failed: %v", p.seed, err)
			}
			t.Log("\n" + sum.Text())
			if !sum.Valid {
				t.Fatalf("seed %d: INVALID run; reproduce with: go run ./cmd/kaya-jepsen -seed %d -runs 1 -nodes %d -duration %s -nemesis %s",
					p.seed, p.seed, p.nodes, p.duration, strings.Join(sum.Nemeses, ","))
			}
			if sum.Ops.OK < 1000 || len(sum.Faults) == 0 {
				t.Fatalf("seed %d: the run did too little to mean anything: %d ok ops, %d faults", p.seed, sum.Ops.OK, len(sum.Faults))
			}
			if len(sum.Memory) < p.nodes {
				t.Fatalf("seed %d: memory seen for %d nodes, want %d", p.seed, len(sum.Memory), p.nodes)
			}
		})
	}
	if diskErr != nil {
		t.Run("disk", func(t *testing.T) { t.Skip(diskErr) })
	}
}

// A node that dies during a run makes the run INVALID, and the summary
// names it with the last lines of its log (what a CI log shows). The
// node is killed from outside the harness (SIGABRT, as a crash would),
// once.
func TestJepsenReportsANodeThatDied(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped in -short mode")
	}
	real := buildServer(t)
	dir := t.TempDir()
	mark := filepath.Join(dir, "aborted-once")
	wrapper := filepath.Join(dir, "kayadb-server-dies")
	script := fmt.Sprintf(`#!/bin/sh
case " $* " in
*" --node-id 2 "*)
	if [ ! -e %[1]q ]; then
		: > %[1]q
		(sleep 4; kill -ABRT $$) &
	fi;;
esac
exec %[2]q "$@"
`, mark, real)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	sum, err := Run(context.Background(), Config{Bin: wrapper, Seed: 5, Nemeses: []string{}, Duration: 8 * time.Second,
		ReportDir: reportDir(t), Logf: logf(t)})
	if err != nil {
		t.Fatalf("the harness failed: %v", err)
	}
	t.Log("\n" + sum.Text())
	if sum.Valid {
		t.Fatal("a run in which node 2 died is VALID")
	}
	if len(sum.Crashed) != 1 || sum.Crashed[0] != 2 || !strings.Contains(sum.Problem, "exited on their own") {
		t.Fatalf("crashed %v, problem %q: want node 2 named", sum.Crashed, sum.Problem)
	}
	text := sum.Text()
	if !strings.Contains(text, "crash log: node 2: exited on its own") || !strings.Contains(text, "SIGABRT") {
		t.Fatalf("the summary does not show node 2's end and its log:\n%s", text)
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

// TestJepsenCatchesSkippedReadValidation is the transactions' negative
// control: a server whose commits validate only their writes (snapshot
// isolation where serializability is promised) lets write skew commit,
// and the list-append checker must find the cycles.
func TestJepsenCatchesSkippedReadValidation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped in -short mode")
	}
	if err := txnClientSupported(); err != nil {
		t.Skip(err)
	}
	bin := buildServer(t, PlantedBugs["skip-read-validation"])
	for _, seed := range []int64{31, 32, 33} {
		dir := reportDir(t)
		sum, err := Run(context.Background(), Config{Bin: bin, Seed: seed, Nemeses: []string{},
			Workloads: PlantedBugWorkloads["skip-read-validation"], Duration: 10 * time.Second, ReportDir: dir, Logf: logf(t)})
		if err != nil {
			t.Fatalf("the harness failed: %v", err)
		}
		t.Log("\n" + sum.Text())
		if !sum.Valid {
			for _, v := range sum.Verdicts {
				if v.Result == "violation" && v.Checker == WorkloadListAppend && v.Report != "" {
					return // caught, with the cycles written out
				}
			}
			t.Fatalf("invalid, but not by the list-append checker: %+v", sum.Verdicts)
		}
	}
	t.Fatal("three runs of a server that skips read validation passed the list-append checker")
}
