// Package jepsen is KayaDB's Jepsen-style verification harness: it runs a
// cluster of real kayadb-server processes whose raft links pass through a
// fault-injecting proxy, drives concurrent clients over the real client
// protocol while a nemesis kills, pauses, partitions and slows nodes, and
// checks the recorded history: linearizability of registers and scans with
// porcupine, no lost acknowledged set elements, and identical data on
// every node after healing. Resource nemeses fill a node's disk (its own
// tmpfs), hold a connection that asks much and reads little, and flood a
// node with connections; under them every node must stay up, keep its
// memory bounded and keep serving new clients.
package jepsen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kayadb/kayadb/client"
)

// Config describes one run.
type Config struct {
	// Bin is the kayadb-server binary.
	Bin string
	// Nodes is the cluster size (3 or 5). Default 3.
	Nodes int
	// Clients is the number of concurrent clients. Default 10.
	Clients int
	// Duration is how long the workload runs. Default 60 s.
	Duration time.Duration
	// Seed drives the fault schedule and the clients' choices.
	Seed int64
	// Nemeses and Workloads enable faults and workloads (default: all).
	Nemeses, Workloads []string
	// ReportDir receives the report; the cluster's data directories and
	// logs live in ReportDir/cluster.
	ReportDir string
	// Tick is the servers' raft tick. Default 50 ms.
	Tick time.Duration
	// ServerArgs are added to every server's command line (for example
	// --read-mode lease).
	ServerArgs []string
	// Keys is the number of registers. Default 5.
	Keys int
	// CheckTimeout bounds each porcupine check. Default 60 s.
	CheckTimeout time.Duration
	// LeaveOutUnavailable leaves out the nemeses this machine cannot run
	// (disk, without root), saying so in the summary, instead of failing.
	// Nil Nemeses (the default, all) implies it.
	LeaveOutUnavailable bool
	// DiskBytes is the size of each node's tmpfs when the disk nemesis
	// runs. Default DefaultDiskBytes.
	DiskBytes int64
	// DiskReserveBytes is the servers' --disk-reserve on those tmpfs.
	// Default DefaultDiskReserveBytes.
	DiskReserveBytes int64
	// FloodConns is the number of connections the flood nemesis opens.
	// Default 2000: more than the server's default connection limit
	// (1024), so that without a per-source limit one host locks everyone
	// out.
	FloodConns int
	// MaxRSSBytes is the resident memory no node may exceed: a node above
	// it makes the run invalid. Default 1 GiB, several times what a node
	// of this workload uses.
	MaxRSSBytes int64
	// Logf receives progress lines (nil: silent).
	Logf func(format string, args ...any)
	// TxnClientFor gives the transactional workloads their client, made
	// from each worker's Go client (nil: the Go client's own
	// transactions, txnclient.go). Tests set it to run the workloads
	// before the client has transactions.
	TxnClientFor func(*client.Client) (TxnClient, error)
}

// Summary is the outcome of a run, written as summary.json.
type Summary struct {
	Seed      int64       `json:"seed"`
	Nodes     int         `json:"nodes"`
	Clients   int         `json:"clients"`
	Duration  string      `json:"duration"`
	Nemeses   []string    `json:"nemeses"`
	Workloads []string    `json:"workloads"`
	Ops       counts      `json:"ops"`
	Errors    []string    `json:"top_errors,omitempty"`
	Faults    []Fault     `json:"faults"`
	Verdicts  []Verdict   `json:"verdicts"`
	States    []NodeState `json:"node_states,omitempty"`
	Crashed   []uint64    `json:"crashed_nodes,omitempty"`
	CrashLog  []string    `json:"crash_log,omitempty"` // the last lines of each crashed node's log
	// LeftOut names the nemeses left out because this machine cannot run
	// them, and why.
	LeftOut string `json:"left_out,omitempty"`
	// Memory is each node's resident memory before the workload and at
	// its peak.
	Memory []NodeMemory `json:"memory,omitempty"`
	// DiskFullRefusals counts writes refused with "disk full" (failed:
	// the server refuses them before proposing).
	DiskFullRefusals int    `json:"disk_full_refusals,omitempty"`
	Valid            bool   `json:"valid"`
	Problem          string `json:"problem,omitempty"`
	Elapsed          string `json:"elapsed"`
	ReportDir        string `json:"report_dir"`
	start            time.Time
}

func (c *Config) defaults() error {
	if c.Bin == "" {
		return errors.New("jepsen: Config.Bin (the kayadb-server binary) is required")
	}
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.Nodes < 3 || c.Nodes > 9 {
		return fmt.Errorf("jepsen: %d nodes; want 3 to 9", c.Nodes)
	}
	if c.Clients <= 0 {
		c.Clients = 10
	}
	if c.Duration <= 0 {
		c.Duration = 60 * time.Second
	}
	if c.Tick <= 0 {
		c.Tick = 50 * time.Millisecond
	}
	if c.Keys <= 0 {
		c.Keys = 5
	}
	if c.CheckTimeout <= 0 {
		c.CheckTimeout = 60 * time.Second
	}
	if c.Workloads == nil {
		c.Workloads = AllWorkloads
	}
	if c.Nemeses == nil {
		c.Nemeses, c.LeaveOutUnavailable = AllNemeses, true
	}
	if c.DiskBytes <= 0 {
		c.DiskBytes = DefaultDiskBytes
	}
	if c.DiskReserveBytes <= 0 {
		c.DiskReserveBytes = DefaultDiskReserveBytes
	}
	if c.DiskReserveBytes*4 > c.DiskBytes {
		return fmt.Errorf("jepsen: a disk reserve of %d bytes on a %d-byte tmpfs: keep the reserve under a quarter of the disk", c.DiskReserveBytes, c.DiskBytes)
	}
	if c.FloodConns <= 0 {
		c.FloodConns = 2000
	}
	if c.MaxRSSBytes <= 0 {
		c.MaxRSSBytes = 1 << 30
	}
	if c.ReportDir == "" {
		return errors.New("jepsen: Config.ReportDir is required")
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return nil
}

// Run runs one test and returns its summary. An error means the harness
// could not run (it is not a verdict); Summary.Valid is the verdict.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	nemeses, leftOut, err := ResolveNemeses(cfg.Nemeses, cfg.LeaveOutUnavailable)
	if err != nil {
		return nil, err
	}
	txnWorkloads := txnWorkloadsIn(cfg.Workloads)
	txnFor := cfg.TxnClientFor
	if len(txnWorkloads) > 0 && txnFor == nil {
		if err := txnClientSupported(); err != nil {
			return nil, fmt.Errorf("jepsen: workloads %v: %w", txnWorkloads, err)
		}
		txnFor = txnClientFor
	}
	if err := os.MkdirAll(cfg.ReportDir, 0o755); err != nil {
		return nil, err
	}
	sum := &Summary{Seed: cfg.Seed, Nodes: cfg.Nodes, Clients: cfg.Clients, Duration: cfg.Duration.String(),
		Nemeses: nemeses, Workloads: cfg.Workloads, ReportDir: cfg.ReportDir, start: time.Now(), Valid: true, LeftOut: leftOut}
	logf := cfg.Logf
	if leftOut != "" {
		logf("left out: %s", leftOut)
	}
	c, err := NewCluster(cfg.Bin, filepath.Join(cfg.ReportDir, "cluster"), cfg.Nodes, cfg.Tick)
	if err == nil {
		c.ServerArgs = cfg.ServerArgs
	}
	if err != nil {
		return nil, err
	}
	if contains(nemeses, NemesisDisk) {
		if err := c.UseTmpfs(cfg.DiskBytes, cfg.DiskReserveBytes); err != nil {
			c.Net.Close()
			return nil, fmt.Errorf("jepsen: the disk nemesis: %w", err)
		}
	}
	defer func() {
		if err := c.Close(); err != nil {
			logf("closing the cluster: %v", err)
		}
	}()
	for _, n := range c.Nodes {
		if err := c.Start(n.ID); err != nil {
			return nil, err
		}
	}
	admin, err := client.New(c.ClientAddrs(), &client.Options{RequestTimeout: 2 * time.Second, MaxRetries: -1})
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	if err := waitLeader(ctx, c, admin, 30*time.Second); err != nil {
		return nil, fmt.Errorf("jepsen: the cluster did not elect a leader: %w (logs in %s)", err, c.Nodes[0].logPath)
	}
	if contains(nemeses, NemesisSlowClient) {
		preloadSlowValues(ctx, admin, logf)
	}
	var shared *txnShared
	var txnAdmin TxnClient
	if len(txnWorkloads) > 0 {
		if txnAdmin, err = txnFor(admin); err != nil {
			return nil, err
		}
		if err := probeTxns(ctx, txnAdmin, txnWorkloads, 30*time.Second); err != nil {
			return nil, err
		}
		shared = newTxnShared()
		if contains(txnWorkloads, WorkloadBank) {
			if err := setupBank(ctx, txnAdmin, 30*time.Second); err != nil {
				return nil, err
			}
		}
	}
	mem := startMemoryMonitor(c)
	memClosed := false
	defer func() {
		if !memClosed {
			mem.close()
		}
	}()
	logf("seed %d: %d nodes up, running %s with %d clients, nemeses %v", cfg.Seed, cfg.Nodes, cfg.Duration, cfg.Clients, nemeses)

	// The watch workload's watchers and consumer start before any write.
	var watches *watchRun
	if contains(cfg.Workloads, WorkloadWatch) {
		if watches, err = startWatchers(ctx, c.ClientAddrs(), logf); err != nil {
			return nil, err
		}
		defer func() {
			watches.cancel()
			watches.wg.Wait()
		}()
	}

	// Clients.
	h := newHistory(time.Now())
	wctx, stopWorkers := context.WithTimeout(ctx, cfg.Duration)
	defer stopWorkers()
	var wg sync.WaitGroup
	for i := 0; i < cfg.Clients; i++ {
		cl, err := client.New(c.ClientAddrs(), &client.Options{RequestTimeout: 2 * time.Second, DialTimeout: 500 * time.Millisecond})
		if err != nil {
			return nil, err
		}
		defer cl.Close()
		w := &worker{id: i, cl: cl, h: h, rng: rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(i))), regKeys: cfg.Keys,
			workloads: cfg.Workloads, opTimeout: 2 * time.Second}
		if shared != nil {
			if w.txn, err = txnFor(cl); err != nil {
				return nil, err
			}
			w.shared = shared
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(wctx)
		}()
	}

	// The nemesis follows the schedule.
	faults := Schedule(cfg.Seed, nemeses, cfg.Duration)
	nm := &nemesis{c: c, cl: admin, log: logf, floodConns: cfg.FloodConns, mem: mem}
	var heals []func()
	for i := range faults {
		f := &faults[i]
		if !sleepUntil(wctx, h.start.Add(f.At)) {
			break
		}
		if len(heals) == 0 {
			mem.startWindow()
		}
		heal := nm.apply(wctx, f)
		logf("%6.1fs  %s (%s, %s)", time.Since(h.start).Seconds(), f.Applied, f.Kind, f.Duration)
		if f.Kind == NemesisDisk {
			// Space comes back before killed nodes restart: a node
			// killed while its disk was full is then restarted as an
			// operator would, after freeing space.
			heals = append([]func(){heal}, heals...)
		} else {
			heals = append(heals, heal)
		}
		// Faults starting together share the window: heal after the last
		// of them starts.
		if i+1 < len(faults) && faults[i+1].At == f.At {
			continue
		}
		if !sleepUntil(wctx, h.start.Add(f.At+f.Duration)) {
			break
		}
		for _, hf := range heals {
			hf()
		}
		heals = nil
		logf("%6.1fs  healed", time.Since(h.start).Seconds())
		for _, g := range faults[:i+1] {
			if g.Result != "" && g.At == f.At {
				logf("         %s: %s", g.Kind, g.Result)
			}
		}
	}
	<-wctx.Done()
	wg.Wait()
	for _, hf := range heals {
		hf()
	}
	sum.Faults = faults[:appliedCount(faults)]

	// Heal everything: the network, the disks, paused and killed nodes.
	c.Net.Heal()
	for _, n := range c.Nodes {
		if err := c.Unfill(n.ID); err != nil {
			nm.problem("deleting node %d's filler: %v", n.ID, err)
		}
		c.Resume(n.ID)
	}
	for _, n := range c.Nodes {
		if _, pending := nm.joining[n.ID]; pending {
			continue // not a member yet: finish() adds and starts it
		}
		if !c.Running(n.ID) {
			c.Kill(n.ID) // reaps a process that exited on its own
			if err := c.Start(n.ID); err != nil {
				// Start of a node that crashed on its own: note and go on.
				logf("restarting node %d: %v", n.ID, err)
			}
		}
	}
	if err := nm.finish(ctx, 60*time.Second); err != nil {
		sum.Valid = false
		sum.addProblem(fmt.Sprintf("after healing: %v", err))
	}
	// The transactional workloads' final reads join the history: every
	// list-append key and the balances, read once everything healed.
	var finalMissing []string
	if shared != nil {
		if err := waitLeader(ctx, c, admin, 30*time.Second); err != nil {
			logf("no leader for the final reads: %v", err)
		}
		finalMissing = finalTxnReads(ctx, txnAdmin, h, cfg.Workloads, shared, logf)
	}
	ops := h.Ops()
	sum.Ops = countOps(ops)
	sum.Errors = errorSummary(ops, 5)
	for _, op := range ops {
		if op.Status == StatusFail && op.Refused {
			sum.DiskFullRefusals++
		}
	}
	logf("workload done: %d ops (%d ok, %d fail, %d unknown); healing and checking", sum.Ops.Total, sum.Ops.OK, sum.Ops.Fail, sum.Ops.Unknown)

	// Final reads (linearizable, through the leader) once healed.
	final, ferr := finalSet(ctx, c, admin)
	if err := waitConverged(ctx, c, admin, 60*time.Second); err != nil {
		sum.Valid = false
		sum.addProblem(fmt.Sprintf("after healing: %v", err))
	}

	// Checkers.
	visualize := false
	if contains(cfg.Workloads, WorkloadRegister) {
		sum.Verdicts = append(sum.Verdicts, checkLinearizable("register", registerModel, registerOps(ops), cfg.CheckTimeout, cfg.ReportDir, visualize))
	}
	if contains(cfg.Workloads, WorkloadScan) {
		sum.Verdicts = append(sum.Verdicts, checkLinearizable("scan", scanModel, scanOps(ops), cfg.CheckTimeout, cfg.ReportDir, visualize))
	}
	sum.Verdicts = append(sum.Verdicts, checkTxnWorkloads(ops, cfg.Workloads, finalMissing, cfg.CheckTimeout, cfg.ReportDir)...)
	if watches != nil {
		if err := watches.finish(ctx, admin, 60*time.Second); err != nil {
			sum.Verdicts = append(sum.Verdicts, Verdict{Checker: "watch", Result: "violation", Detail: err.Error()})
		} else {
			sum.Verdicts = append(sum.Verdicts, checkWatch(ops, watches))
		}
	}
	if contains(cfg.Workloads, WorkloadSet) {
		if ferr != nil {
			sum.Verdicts = append(sum.Verdicts, Verdict{Checker: "set", Result: "unknown", Detail: "final read failed: " + ferr.Error()})
		} else {
			sum.Verdicts = append(sum.Verdicts, checkSet(ops, final))
		}
	}

	// Every node must be up now and answer a new client.
	for _, n := range c.Nodes {
		if !c.Running(n.ID) {
			nm.problem("node %d is not running at the end of the run", n.ID)
			continue
		}
		if err := probe(n.ClientAddr, probeTimeout); err != nil {
			nm.problem("node %d does not answer HEALTH at the end of the run: %v; its log ends: %s", n.ID, err, strings.Join(c.LogTail(n.ID, 6), " | "))
		}
	}
	sum.Memory = mem.close()
	memClosed = true
	for _, m := range sum.Memory {
		if m.PeakMiB<<20 > cfg.MaxRSSBytes {
			nm.problem("node %d's resident memory reached %d MiB, above the %d MiB bound", m.ID, m.PeakMiB, cfg.MaxRSSBytes>>20)
		}
	}

	// Stop the nodes cleanly and compare what each one holds.
	if err := c.Shutdown(); err != nil {
		for _, e := range strings.Split(err.Error(), "\n") {
			nm.problem("%s", e)
		}
	}
	var states []NodeState
	for _, n := range c.Nodes {
		st, err := readNodeState(n)
		if err != nil {
			sum.Verdicts = append(sum.Verdicts, Verdict{Checker: "convergence", Result: "violation", Detail: err.Error()})
			continue
		}
		states = append(states, st)
	}
	sum.States = states
	if len(states) == len(c.Nodes) {
		sum.Verdicts = append(sum.Verdicts, checkConvergence(states))
	}
	sum.Crashed = c.Crashed()
	for _, cr := range c.Crashes() {
		sum.CrashLog = append(sum.CrashLog, fmt.Sprintf("node %d: exited on its own at %s (%s); its log ends:", cr.ID, cr.At, cr.Status))
		for _, l := range cr.Tail {
			sum.CrashLog = append(sum.CrashLog, fmt.Sprintf("node %d: %s", cr.ID, l))
		}
	}
	if len(sum.Crashed) > 0 {
		sum.Valid = false
		sum.addProblem(fmt.Sprintf("nodes %v exited on their own (the last lines of their logs follow)", sum.Crashed))
	}
	for _, p := range nm.problems {
		sum.Valid = false
		sum.addProblem(p)
	}
	for _, v := range sum.Verdicts {
		if v.Result == "violation" {
			sum.Valid = false
		}
	}
	sum.Elapsed = time.Since(sum.start).Round(time.Millisecond).String()
	if err := sum.write(ops, !sum.Valid); err != nil {
		return sum, err
	}
	return sum, nil
}

// addProblem records a problem, keeping the earlier ones.
func (s *Summary) addProblem(p string) {
	if s.Problem != "" {
		s.Problem += "; "
	}
	s.Problem += p
}

func appliedCount(faults []Fault) int {
	n := 0
	for n < len(faults) && faults[n].Applied != "" {
		n++
	}
	return n
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func waitLeader(ctx context.Context, c *Cluster, cl *client.Client, budget time.Duration) error {
	deadline := time.Now().Add(budget)
	for time.Now().Before(deadline) {
		if c.Leader(ctx, cl) != 0 {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("timed out")
}

// waitConverged waits until every node reports the same applied index,
// equal to its commit index, under one leader.
func waitConverged(ctx context.Context, c *Cluster, cl *client.Client, budget time.Duration) error {
	deadline := time.Now().Add(budget)
	last := ""
	for time.Now().Before(deadline) {
		var applied []uint64
		leaders := map[uint64]bool{}
		ok := true
		for _, n := range c.Nodes {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			st, err := c.Status(sctx, cl, n.ID)
			cancel()
			if err != nil {
				ok, last = false, fmt.Sprintf("node %d: %v", n.ID, err)
				break
			}
			applied = append(applied, st.AppliedIndex)
			leaders[st.LeaderID] = true
			if st.AppliedIndex != st.CommitIndex {
				ok, last = false, fmt.Sprintf("node %d: applied %d of commit %d", n.ID, st.AppliedIndex, st.CommitIndex)
			}
		}
		if ok && len(leaders) == 1 && !leaders[0] {
			same := true
			for _, a := range applied {
				if a != applied[0] {
					same = false
				}
			}
			if same {
				return nil
			}
			last = fmt.Sprintf("applied indexes %v", applied)
		} else if ok {
			last = fmt.Sprintf("leaders %v", leaders)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%w within %s: %s", errNoConvergence, budget, last)
}

// finalSet reads the set workload's elements through the leader, retrying
// while the cluster recovers.
func finalSet(ctx context.Context, c *Cluster, cl *client.Client) (map[string]int64, error) {
	if err := waitLeader(ctx, c, cl, 30*time.Second); err != nil {
		return nil, err
	}
	var lastErr error
	for i := 0; i < 20; i++ {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		items, err := cl.Scan(sctx, []byte("set/"))
		cancel()
		if err == nil {
			out := map[string]int64{}
			for _, it := range items {
				v, derr := decodeVal(it.Value)
				if derr != nil {
					v = -1
				}
				out[string(it.Key)] = v
			}
			return out, nil
		}
		lastErr = err
		time.Sleep(250 * time.Millisecond)
	}
	return nil, lastErr
}

// write stores the report: summary.json always; the history when asked
// (failures) — as JSON lines.
func (s *Summary) write(ops []Op, withHistory bool) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFile(s.ReportDir, "summary.json", append(b, '\n')); err != nil {
		return err
	}
	if !withHistory {
		return nil
	}
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, op := range ops {
		if err := enc.Encode(op); err != nil {
			return err
		}
	}
	return writeFile(s.ReportDir, "history.jsonl", buf.Bytes())
}

// Text is the human summary.
func (s *Summary) Text() string {
	var b bytes.Buffer
	verdict := "VALID"
	if !s.Valid {
		verdict = "INVALID"
	}
	fmt.Fprintf(&b, "seed %d: %s — %d nodes, %d clients, %s, nemeses %v, workloads %v\n", s.Seed, verdict, s.Nodes, s.Clients, s.Duration, s.Nemeses, s.Workloads)
	fmt.Fprintf(&b, "  ops: %d (ok %d, fail %d, unknown %d) %v\n", s.Ops.Total, s.Ops.OK, s.Ops.Fail, s.Ops.Unknown, s.Ops.ByKind)
	kinds := map[string]int{}
	for _, f := range s.Faults {
		kinds[f.Kind]++
	}
	fmt.Fprintf(&b, "  faults: %d %v\n", len(s.Faults), kinds)
	if s.LeftOut != "" {
		fmt.Fprintf(&b, "  left out: %s\n", s.LeftOut)
	}
	for _, f := range s.Faults {
		if f.Result != "" {
			fmt.Fprintf(&b, "  %6.1fs %-11s %s → %s\n", f.At.Seconds(), f.Kind, f.Applied, f.Result)
		}
	}
	if s.DiskFullRefusals > 0 {
		fmt.Fprintf(&b, "  writes refused with \"disk full\": %d\n", s.DiskFullRefusals)
	}
	if len(s.Memory) > 0 {
		var parts []string
		for _, m := range s.Memory {
			parts = append(parts, fmt.Sprintf("node %d %d→%d", m.ID, m.BeforeMiB, m.PeakMiB))
		}
		fmt.Fprintf(&b, "  memory (RSS MiB, before→peak): %s\n", strings.Join(parts, ", "))
	}
	for _, v := range s.Verdicts {
		fmt.Fprintf(&b, "  %-12s %-9s (%d ops) %s\n", v.Checker, v.Result, v.Ops, v.Detail)
		if v.Visualization != "" {
			fmt.Fprintf(&b, "               visualization: %s\n", v.Visualization)
		}
		if v.Report != "" && v.Result != "ok" {
			fmt.Fprintf(&b, "               report: %s\n", v.Report)
		}
	}
	if s.Problem != "" {
		fmt.Fprintf(&b, "  problem: %s\n", s.Problem)
	}
	for _, l := range s.CrashLog {
		fmt.Fprintf(&b, "  crash log: %s\n", l)
	}
	for _, e := range s.Errors {
		fmt.Fprintf(&b, "  error: %s\n", e)
	}
	fmt.Fprintf(&b, "  report: %s (elapsed %s)\n", s.ReportDir, s.Elapsed)
	return b.String()
}

// ResolveNemeses checks that this machine can run the nemeses asked for,
// and returns those to run. The disk nemesis needs to mount tmpfs
// (TmpfsAvailable): without that, it is an error when leaveOut is unset
// (it was asked for by name), and is left out when set, with the reason
// returned in leftOut.
func ResolveNemeses(nemeses []string, leaveOut bool) (out []string, leftOut string, err error) {
	return resolveNemeses(nemeses, leaveOut, TmpfsAvailable)
}

func resolveNemeses(nemeses []string, leaveOut bool, tmpfs func() error) (out []string, leftOut string, err error) {
	if !contains(nemeses, NemesisDisk) {
		return nemeses, "", nil
	}
	diskErr := tmpfs()
	if diskErr == nil {
		return nemeses, "", nil
	}
	if !leaveOut {
		return nil, "", fmt.Errorf("jepsen: the %s nemesis cannot run here: %w", NemesisDisk, diskErr)
	}
	for _, n := range nemeses {
		if n != NemesisDisk {
			out = append(out, n)
		}
	}
	return out, fmt.Sprintf("%s (%v)", NemesisDisk, diskErr), nil
}

// preloadSlowValues writes the large values the slow-client nemesis asks
// for. A failure only makes that nemesis's replies smaller: it is logged.
func preloadSlowValues(ctx context.Context, cl *client.Client, logf func(string, ...any)) {
	v := make([]byte, slowValueBytes)
	for i := range v {
		v[i] = byte('a' + i%26)
	}
	for i := 0; i < slowValues; i++ {
		var err error
		for attempt := 0; attempt < 5; attempt++ {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = cl.Put(pctx, []byte(slowKey(i)), v)
			cancel()
			if err == nil {
				break
			}
		}
		if err != nil {
			logf("preloading the slow client's values: %v (its replies will be smaller)", err)
			return
		}
	}
}
