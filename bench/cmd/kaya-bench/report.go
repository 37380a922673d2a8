package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// runResult is the outcome of one engine+workload run.
type runResult struct {
	Workload   string        `json:"workload"`
	Engine     string        `json:"engine"`
	Rep        int           `json:"rep"`
	Ops        int           `json:"ops"`
	Elapsed    time.Duration `json:"elapsed_ns"`
	OpsPerSec  float64       `json:"ops_per_sec"`
	P50        time.Duration `json:"p50_ns"`
	P99        time.Duration `json:"p99_ns"`
	P999       time.Duration `json:"p999_ns"`
	Max        time.Duration `json:"max_ns"`
	SettleTime time.Duration `json:"settle_ns,omitempty"`
	// OtherCPU is the CPU used outside this process during the run, in
	// CPUs (0.25 = a quarter of one CPU on average): other processes and
	// kernel threads. Well above ~0.1 means the run shared the machine.
	// StealCPU is the hypervisor's steal time, in the same unit.
	OtherCPU  float64     `json:"other_cpu"`
	StealCPU  float64     `json:"steal_cpu"`
	DiskBytes int64       `json:"disk_bytes_after_close"`
	Stats     *storeStats `json:"stats,omitempty"`
	Notes     []string    `json:"notes,omitempty"`
	Err       string      `json:"error,omitempty"`
}

// fill computes throughput and latency percentiles from a measurement. It
// sorts m.lat in place.
func (r *runResult) fill(m measurement) {
	r.Ops, r.Elapsed = m.ops, m.elapsed
	if m.elapsed > 0 {
		r.OpsPerSec = float64(m.ops) / m.elapsed.Seconds()
	}
	if len(m.lat) == 0 {
		return
	}
	slices.Sort(m.lat)
	q := func(p float64) time.Duration {
		i := int(p*float64(len(m.lat))+0.5) - 1
		return time.Duration(m.lat[min(max(i, 0), len(m.lat)-1)])
	}
	r.P50, r.P99, r.P999 = q(0.50), q(0.99), q(0.999)
	r.Max = time.Duration(m.lat[len(m.lat)-1])
}

// summaryRow is the median over repetitions of one engine+workload pair.
type summaryRow struct {
	Workload  string        `json:"workload"`
	Engine    string        `json:"engine"`
	Runs      int           `json:"runs_ok"`
	OpsPerSec float64       `json:"ops_per_sec"`
	P50       time.Duration `json:"p50_ns"`
	P99       time.Duration `json:"p99_ns"`
	// Ratios to Pebble's medians: OpsRatio > 1 means faster than Pebble,
	// P99Ratio < 1 means a lower tail latency. Zero when not comparable.
	OpsRatio float64 `json:"ops_ratio_to_pebble,omitempty"`
	P99Ratio float64 `json:"p99_ratio_to_pebble,omitempty"`
	Failed   bool    `json:"failed,omitempty"`
}

// report is everything the benchmark prints and saves.
type report struct {
	Command       string            `json:"command"`
	Machine       machine           `json:"machine"`
	Config        *config           `json:"config"`
	Shared        sharedSettings    `json:"shared_engine_settings"`
	EngineOptions map[string]string `json:"engine_options"`
	Root          string            `json:"root_dir"`
	Runs          []runResult       `json:"runs"`
	Summary       []summaryRow      `json:"summary"`
}

// median returns the median of xs (the mean of the middle two for an even
// count).
func median[T int64 | float64](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// summarize fills r.Summary with per-pair medians and ratios to Pebble.
func (r *report) summarize() {
	r.Summary = nil
	for _, w := range r.Config.Workloads {
		var rows []summaryRow
		for _, e := range r.Config.Engines {
			row := summaryRow{Workload: w, Engine: e}
			var ops []float64
			var p50, p99 []int64
			for _, run := range r.Runs {
				if run.Workload != w || run.Engine != e {
					continue
				}
				if run.Err != "" {
					row.Failed = true
					continue
				}
				ops = append(ops, run.OpsPerSec)
				p50 = append(p50, int64(run.P50))
				p99 = append(p99, int64(run.P99))
			}
			row.Runs = len(ops)
			if len(ops) > 0 {
				row.OpsPerSec = median(ops)
				row.P50 = time.Duration(median(p50))
				row.P99 = time.Duration(median(p99))
			}
			rows = append(rows, row)
		}
		var pb *summaryRow
		for i := range rows {
			if rows[i].Engine == "pebble" && rows[i].Runs > 0 {
				pb = &rows[i]
			}
		}
		for i := range rows {
			if pb != nil && rows[i].Runs > 0 && pb.OpsPerSec > 0 && pb.P99 > 0 {
				rows[i].OpsRatio = rows[i].OpsPerSec / pb.OpsPerSec
				rows[i].P99Ratio = float64(rows[i].P99) / float64(pb.P99)
			}
		}
		r.Summary = append(r.Summary, rows...)
	}
}

// printHeader prints the machine, the command and the shared settings.
func (r *report) printHeader() {
	m := r.Machine
	fmt.Printf("# kaya-bench\n\n")
	fmt.Printf("- command: `%s`\n", r.Command)
	fmt.Printf("- machine: %s; NumCPU=%d GOMAXPROCS=%d; memory %s; kernel %s\n", m.CPUModel, m.NumCPU, m.GOMAXPROCS, m.Memory, m.Kernel)
	fmt.Printf("- go: %s %s/%s\n", m.GoVersion, runtime.GOOS, runtime.GOARCH)
	fmt.Printf("- dir: %s on %s\n", r.Root, m.Filesystem)
	fmt.Printf("- load average at start: %s (per run: see other-cpu)\n", m.LoadAvg)
	c := r.Config
	fmt.Printf("- keys: %d × %d-byte keys, %d-byte values (50%% compressible); read-ops %d; sync-ops %d; reps %d; seed %d",
		c.Num, c.KeySize, c.ValueSize, c.ReadOps, c.SyncOps, c.Reps, c.Seed)
	if c.DurationCap > 0 {
		fmt.Printf("; duration-cap %v", c.DurationCap)
	}
	fmt.Printf("\n- every engine: block cache %d B, memtable %d B, bloom %d bits/key on all levels, block size %d B, compression %s\n\n",
		c.cacheSize, c.memtableSize, c.bloomBits, c.blockSize, c.compression)
}

// printRun prints one run's result as it completes.
func printRun(r runResult) {
	status := ""
	if r.Err != "" {
		status = "  *** FAILED: " + r.Err
	}
	notes := ""
	if len(r.Notes) > 0 {
		notes = "  [" + strings.Join(r.Notes, "; ") + "]"
	}
	fmt.Printf("rep %d %-10s %-9s %12s ops/s  p50 %9s  p99 %9s  p99.9 %9s  max %9s  (%d ops in %v, other-cpu %.2f)%s%s\n",
		r.Rep, r.Workload, r.Engine, fmtOps(r.OpsPerSec), fmtDur(r.P50), fmtDur(r.P99), fmtDur(r.P999), fmtDur(r.Max),
		r.Ops, r.Elapsed.Round(time.Millisecond), r.OtherCPU, notes, status)
}

// printTable prints the markdown summary table.
func (r *report) printTable() {
	fmt.Printf("\n## Results (median of %d rep(s))\n\n", r.Config.Reps)
	fmt.Println("| workload | engine | ops/s | p50 | p99 | ratio to pebble |")
	fmt.Println("|---|---|---:|---:|---:|---|")
	for _, s := range r.Summary {
		ratio := "n/a"
		switch {
		case s.Runs == 0:
			ratio = "FAILED"
		case s.Engine == "pebble":
			ratio = "1.00× (baseline)"
		case s.OpsRatio > 0:
			ratio = fmt.Sprintf("%.2f× ops/s, %.2f× p99", s.OpsRatio, s.P99Ratio)
		}
		if s.Failed && s.Runs > 0 {
			ratio += " (some reps FAILED)"
		}
		if s.Runs == 0 {
			fmt.Printf("| %s | %s | FAILED | - | - | %s |\n", s.Workload, s.Engine, ratio)
			continue
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s |\n", s.Workload, s.Engine, fmtOps(s.OpsPerSec), fmtDur(s.P50), fmtDur(s.P99), ratio)
	}
	fmt.Println("\nops/s ratio > 1 = faster than Pebble; p99 ratio < 1 = lower tail latency than Pebble. scan ops/s = keys/s.")
	var noisy []string
	for _, run := range r.Runs {
		if run.OtherCPU > noisyOtherCPU {
			noisy = append(noisy, fmt.Sprintf("rep %d %s %s (%.2f)", run.Rep, run.Workload, run.Engine, run.OtherCPU))
		}
	}
	if len(noisy) > 0 {
		fmt.Printf("\nWARNING: runs that shared the CPUs with other work (other-cpu > %.2f): %s\n",
			noisyOtherCPU, strings.Join(noisy, ", "))
	}
}

// noisyOtherCPU is the CPU used outside the benchmark (in CPUs) above which
// a run is flagged as noisy.
const noisyOtherCPU = 0.15

// printDiagnostics prints the engines' shape after fillrandom and the WAL
// sync counts of the sync workloads (last repetition).
func (r *report) printDiagnostics() {
	userBytes := uint64(r.Config.Num) * uint64(r.Config.KeySize+r.Config.ValueSize)
	var lines []string
	for _, run := range lastRuns(r.Runs) {
		if run.Stats == nil {
			continue
		}
		st := run.Stats
		switch {
		case run.Workload == "fillrandom":
			line := fmt.Sprintf("- fillrandom %s: table-w-amp %.2f (flush+compaction bytes / user bytes %s)",
				run.Engine, float64(st.TableBytesWritten)/float64(userBytes), mib(userBytes))
			if st.NativeWriteAmp > 0 {
				line += fmt.Sprintf("; own w-amp %.2f = %s", st.NativeWriteAmp, st.NativeWriteAmpDef)
			}
			levels := st.Levels
			if levels == "" {
				levels = "none (all data still in the memtable)"
			}
			line += fmt.Sprintf("; levels %s; on disk %s; settle %v", levels, mib(uint64(run.DiskBytes)), run.SettleTime.Round(time.Millisecond))
			if st.Extra != "" {
				line += "; " + st.Extra
			}
			lines = append(lines, line)
		case strings.HasPrefix(run.Workload, "sync") && st.WALSyncs > 0:
			lines = append(lines, fmt.Sprintf("- %s %s: %d WAL syncs for %d ops (%.1f ops/sync)",
				run.Workload, run.Engine, st.WALSyncs, run.Ops, float64(run.Ops)/float64(st.WALSyncs)))
		}
	}
	if len(lines) > 0 {
		fmt.Printf("\n## Diagnostics (last rep)\n\n%s\n", strings.Join(lines, "\n"))
	}
}

// lastRuns returns, for each engine+workload, its run from the last rep.
func lastRuns(runs []runResult) []runResult {
	last := map[string]int{}
	var order []string
	for i, r := range runs {
		k := r.Workload + "/" + r.Engine
		if _, ok := last[k]; !ok {
			order = append(order, k)
		}
		last[k] = i
	}
	var out []runResult
	for _, k := range order {
		out = append(out, runs[last[k]])
	}
	return out
}

func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// fmtOps formats a rate with thousands separators.
func fmtOps(x float64) string {
	s := strconv.FormatInt(int64(x+0.5), 10)
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	return b.String()
}

// fmtDur formats a latency with a unit suited to its size.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.2fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// machine describes where the benchmark ran.
type machine struct {
	NumCPU     int    `json:"num_cpu"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPUModel   string `json:"cpu_model"`
	Memory     string `json:"memory"`
	Kernel     string `json:"kernel"`
	GoVersion  string `json:"go_version"`
	Filesystem string `json:"filesystem"`
	LoadAvg    string `json:"load_avg_at_start"`
}

// machineInfo gathers the machine description; /proc lookups are best
// effort and fall back to "unknown".
func machineInfo(dir string) machine {
	return machine{
		NumCPU:     runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		CPUModel:   procField("/proc/cpuinfo", "model name", "Hardware", "cpu model"),
		Memory:     procField("/proc/meminfo", "MemTotal"),
		Kernel:     strings.TrimSpace(readFile("/proc/sys/kernel/osrelease")),
		GoVersion:  runtime.Version(),
		Filesystem: mountOf(dir),
		LoadAvg:    loadAvgs(),
	}
}

// loadAvgs returns the 1, 5 and 15-minute load averages as text.
func loadAvgs() string {
	f := strings.Fields(readFile("/proc/loadavg"))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return string(b)
}

// procField returns the value of the first "key: value" line in path whose
// key is one of keys.
func procField(path string, keys ...string) string {
	f, err := os.Open(path)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && contains(keys, strings.TrimSpace(k)) {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// mountOf returns "device mountpoint (fstype, options)" for the mount in
// /proc/mounts with the longest mount point containing dir.
func mountOf(dir string) string {
	abs, err := filepath.Abs(dir)
	if err == nil {
		if p, err := filepath.EvalSymlinks(abs); err == nil {
			abs = p
		}
	}
	best, bestLen := "unknown", -1
	for _, line := range strings.Split(readFile("/proc/mounts"), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		mp := unescapeMount(f[1])
		if (abs == mp || strings.HasPrefix(abs, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > bestLen {
			best, bestLen = fmt.Sprintf("%s %s (%s, %s)", f[0], mp, f[2], f[3]), len(mp)
		}
	}
	return best
}

// unescapeMount decodes the octal escapes (\040 for a space) of /proc/mounts.
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// commandLine returns the exact command line, shell-quoted where needed.
func commandLine() string {
	args := make([]string, len(os.Args))
	for i, a := range os.Args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		args[i] = a
	}
	return strings.Join(args, " ")
}
