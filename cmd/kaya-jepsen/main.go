// Command kaya-jepsen runs KayaDB's Jepsen-style fault-injection tests:
// a cluster of real kayadb-server processes, concurrent clients, a nemesis,
// and a linearizability checker. See docs/testing.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/kayadb/kayadb/internal/buildinfo"
	"github.com/kayadb/kayadb/internal/jepsen"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kaya-jepsen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		bin        = fs.String("server-bin", "", "kayadb-server binary (default: build it from this module)")
		nodes      = fs.Int("nodes", 3, "cluster size (3 or 5)")
		clients    = fs.Int("clients", 10, "concurrent clients")
		duration   = fs.Duration("duration", 60*time.Second, "how long each run's workload lasts")
		seed       = fs.Int64("seed", 0, "seed of the first run (0: from the clock); run i uses seed+i")
		runs       = fs.Int("runs", 1, "number of runs (stops at the first invalid one unless -keep-going)")
		keepGoing  = fs.Bool("keep-going", false, "continue after an invalid run")
		nemeses    = fs.String("nemesis", "all", "faults: kill,pause,partition,slow,membership,disk,slow-client,flood,leader-pause,transfer, all or none (disk needs root: all leaves it out without)")
		workloads  = fs.String("workload", "all", "workloads: register,set,scan,list-append,bank,cas-register,watch or all (all: the default set; the transactional ones join it once the client and server support transactions)")
		report     = fs.String("report", "", "report directory (default: ./jepsen-report/<time>)")
		tick       = fs.Duration("tick", 50*time.Millisecond, "the servers' raft tick")
		readMode   = fs.String("read-mode", "safe", "the servers' --read-mode: safe (ReadIndex rounds) or lease (lease reads; pair with -nemesis leader-pause)")
		diskMiB    = fs.Int64("disk-mib", jepsen.DefaultDiskBytes>>20, "disk nemesis: each node's tmpfs, in MiB")
		reserveMiB = fs.Int64("disk-reserve-mib", jepsen.DefaultDiskReserveBytes>>20, "disk nemesis: the servers' --disk-reserve on their tmpfs, in MiB")
		floodN     = fs.Int("flood-conns", 2000, "flood nemesis: connections opened from one other loopback address")
		maxRSS     = fs.Int64("max-rss-mib", 1024, "a node whose resident memory exceeds this many MiB makes the run invalid")
		planted    = fs.String("planted-bug", "", "negative control: run a server with a deliberate bug, early-ack (writes acknowledged before commit), stale-reads (reads without ReadIndex on any node), skip-read-validation (transactions validate only their writes: needs -workload list-append) or watch-early (watchers get writes before they commit: needs -workload watch); the run must be INVALID")
		txnKind    = fs.String("txn", "interactive", "how the transactional workloads run their transactions: interactive (BEGIN … COMMIT) or stm (the Go client's optimistic RunSTM: reads, then one conditional write)")
		version    = fs.Bool("version", false, "print the version (module, VCS revision, Go, client protocol) and exit")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kaya-jepsen [flags]\n\nRuns fault-injection tests against real kayadb-server processes on loopback.\nExit status: 0 every run valid, 1 a run was invalid, 2 the harness could not run.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0 // asked for help, and got it
		}
		return 2
	}
	if *version {
		fmt.Fprintln(stdout, buildinfo.Read().Line("kaya-jepsen"))
		return 0
	}
	fail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "kaya-jepsen: "+format+"\n", args...)
		return 2
	}
	nem, err := jepsen.ParseList("nemesis", *nemeses, jepsen.AllNemeses)
	if err != nil {
		return fail("-nemesis: %v", err)
	}
	if *readMode != "safe" && *readMode != "lease" {
		return fail("-read-mode %q: want safe or lease", *readMode)
	}
	if *txnKind != "interactive" && *txnKind != "stm" {
		return fail("-txn %q: want interactive or stm", *txnKind)
	}
	wl, err := jepsen.ParseWorkloads(*workloads)
	if err != nil || len(wl) == 0 {
		return fail("-workload: %v (at least one)", err)
	}
	if *nodes < 3 || *nodes > 9 || *clients < 1 || *runs < 1 || *duration < 5*time.Second {
		return fail("want -nodes 3..9, -clients ≥ 1, -runs ≥ 1, -duration ≥ 5s")
	}
	if *diskMiB < 64 || *reserveMiB < 1 || *reserveMiB*4 > *diskMiB || *floodN < 1 || *maxRSS < 64 {
		return fail("want -disk-mib ≥ 64, -disk-reserve-mib from 1 to a quarter of -disk-mib, -flood-conns ≥ 1, -max-rss-mib ≥ 64")
	}
	// "all" runs what this machine can; a nemesis named explicitly that
	// cannot run here is an error (exit 2).
	leaveOut := *nemeses == "all"
	if _, leftOut, err := jepsen.ResolveNemeses(nem, leaveOut); err != nil {
		return fail("-nemesis: %v", err)
	} else if leftOut != "" {
		fmt.Fprintf(os.Stderr, "kaya-jepsen: left out: %s\n", leftOut)
	}
	if *seed == 0 {
		*seed = time.Now().UnixNano() % 1_000_000
	}
	if *report == "" {
		*report = filepath.Join("jepsen-report", time.Now().Format("20060102-150405"))
	}
	if err := os.MkdirAll(*report, 0o755); err != nil {
		return fail("%v", err)
	}
	tag, ok := jepsen.PlantedBugs[*planted]
	if *planted != "" && !ok {
		return fail("-planted-bug %q: want one of %s", *planted, strings.Join(jepsen.PlantedBugNames(), ", "))
	}
	if need := jepsen.PlantedBugWorkloads[*planted]; len(need) > 0 && !slices.ContainsFunc(wl, func(w string) bool { return slices.Contains(need, w) }) {
		return fail("-planted-bug %s is seen only by the workloads %s: add one to -workload", *planted, strings.Join(need, ","))
	}
	if *bin == "" || *planted != "" {
		wd, _ := os.Getwd()
		root, err := jepsen.ModuleRoot(wd)
		if err != nil {
			return fail("%v (run from the repository, or pass -server-bin)", err)
		}
		var tags []string
		if tag != "" {
			tags = append(tags, tag)
		}
		fmt.Fprintf(stderr, "building kayadb-server %v…\n", tags)
		if *bin, err = jepsen.BuildServer(root, *report, tags...); err != nil {
			return fail("%v", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	invalid := 0
	for i := 0; i < *runs && ctx.Err() == nil; i++ {
		s := *seed + int64(i)
		cfg := jepsen.Config{Bin: *bin, Nodes: *nodes, Clients: *clients, Duration: *duration, Seed: s,
			Nemeses: nem, Workloads: wl, Tick: *tick, ServerArgs: []string{"--read-mode", *readMode}, ReportDir: filepath.Join(*report, fmt.Sprintf("seed-%d", s)),
			LeaveOutUnavailable: leaveOut, DiskBytes: *diskMiB << 20, DiskReserveBytes: *reserveMiB << 20,
			FloodConns: *floodN, MaxRSSBytes: *maxRSS << 20,
			Logf: func(format string, args ...any) {
				fmt.Fprintf(stderr, "[seed %d] "+format+"\n", append([]any{s}, args...)...)
			}}
		if *txnKind == "stm" {
			cfg.TxnClientFor = jepsen.STMClientFor
		}
		sum, err := jepsen.Run(ctx, cfg)
		if err != nil {
			return fail("run %d (seed %d): %v", i+1, s, err)
		}
		fmt.Fprint(stdout, sum.Text())
		if !sum.Valid {
			invalid++
			if !*keepGoing {
				break
			}
		}
	}
	if invalid > 0 {
		fmt.Fprintf(stdout, "%d invalid run(s); reports under %s\n", invalid, *report)
		return 1
	}
	fmt.Fprintf(stdout, "all runs valid; reports under %s\n", *report)
	return 0
}
