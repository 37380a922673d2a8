// Command kaya-bench compares KayaDB's storage engine with Pebble and
// goleveldb on a fixed set of db_bench-style workloads, under identical
// settings (memtable size, block cache, bloom bits on every level, block
// size, compression, sync mode) and on the same filesystem.
//
// Usage (from the bench module):
//
//	cd bench && go run ./cmd/kaya-bench -num 1000000
//
// Workloads: fillseq, fillrandom, readrandom, seekrandom, scan, sync1, sync16, sync64,
// fillsync32.
// Every engine+workload pair runs in a fresh directory; engines are
// interleaved within each repetition and the median over -reps is
// reported. Output is a markdown table of ops/s, p50 and p99 latency and
// the ratio to Pebble, followed by short engine diagnostics; -json writes
// everything, including each run, to a file. See bench/README.md.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

// config is the benchmark configuration, shared by every engine.
type config struct {
	Engines       []string      `json:"engines"`
	Workloads     []string      `json:"workloads"`
	Num           int           `json:"num"`
	KeySize       int           `json:"key_size"`
	ValueSize     int           `json:"value_size"`
	cacheSize     int64         // -cache-size
	memtableSize  int           // -memtable-size
	bloomBits     int           // -bloom-bits
	compression   string        // -compression
	blockSize     int           // -block-size
	Dir           string        `json:"dir"`
	Keep          bool          `json:"keep"`
	Reps          int           `json:"reps"`
	SyncOps       int           `json:"sync_ops"`
	ReadOps       int           `json:"read_ops"`
	DurationCap   time.Duration `json:"duration_cap_ns"`
	Seed          uint64        `json:"seed"`
	JSON          string        `json:"-"`
	CPUProfileDir string        `json:"-"`
}

// sharedSettings is the JSON form of the settings applied to every engine.
type sharedSettings struct {
	CacheSize    int64  `json:"cache_size"`
	MemTableSize int    `json:"memtable_size"`
	BloomBits    int    `json:"bloom_bits_per_key"`
	Compression  string `json:"compression"`
	BlockSize    int    `json:"block_size"`
}

func parseFlags() (*config, error) {
	c := &config{}
	engines := flag.String("engines", "kaya,pebble,goleveldb", "comma-separated engines: "+strings.Join(engineNames(), ","))
	workloads := flag.String("workloads", strings.Join(workloadNames, ","), "comma-separated workloads")
	flag.IntVar(&c.Num, "num", 1000000, "number of keys")
	flag.IntVar(&c.KeySize, "key-size", 16, "key size in bytes (zero-padded decimal)")
	flag.IntVar(&c.ValueSize, "value-size", 100, "value size in bytes (50% compressible)")
	flag.Int64Var(&c.cacheSize, "cache-size", 1<<30, "block cache bytes, every engine")
	flag.IntVar(&c.memtableSize, "memtable-size", 64<<20, "memtable bytes, every engine")
	flag.IntVar(&c.bloomBits, "bloom-bits", 10, "bloom filter bits per key on every level (0 disables)")
	flag.StringVar(&c.compression, "compression", "snappy", "block compression: snappy or none")
	flag.IntVar(&c.blockSize, "block-size", 4096, "target data block size, every engine")
	flag.StringVar(&c.Dir, "dir", "", "parent directory for the databases (default os.TempDir()); a fresh kaya-bench-* directory is made inside it")
	flag.BoolVar(&c.Keep, "keep", false, "keep the database directories")
	flag.IntVar(&c.Reps, "reps", 1, "repetitions; the median is reported")
	flag.IntVar(&c.SyncOps, "sync-ops", 20000, "total Sets per sync workload, split across the writers")
	flag.IntVar(&c.ReadOps, "read-ops", 0, "timed Gets in readrandom (default -num)")
	flag.DurationVar(&c.DurationCap, "duration-cap", 0, "optional cap on each timed phase (0 = none); capped runs are marked")
	flag.Uint64Var(&c.Seed, "seed", 1, "seed for key orders")
	flag.StringVar(&c.JSON, "json", "", "write all results as JSON to this file")
	flag.StringVar(&c.CPUProfileDir, "cpuprofile", "", "write a CPU profile of every run (open to close) into this directory")
	flag.Parse()
	if flag.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", flag.Args())
	}

	for _, e := range splitList(*engines) {
		if _, ok := allEngines[e]; !ok {
			return nil, fmt.Errorf("unknown engine %q (have %s)", e, strings.Join(engineNames(), ","))
		}
		c.Engines = append(c.Engines, e)
	}
	for _, w := range splitList(*workloads) {
		if !contains(workloadNames, w) {
			return nil, fmt.Errorf("unknown workload %q (have %s)", w, strings.Join(workloadNames, ","))
		}
		c.Workloads = append(c.Workloads, w)
	}
	if c.ReadOps == 0 {
		c.ReadOps = c.Num
	}
	switch {
	case len(c.Engines) == 0 || len(c.Workloads) == 0:
		return nil, fmt.Errorf("no engines or workloads selected")
	case c.Num < 1:
		return nil, fmt.Errorf("-num must be positive")
	case len(fmt.Sprint(c.Num-1)) > c.KeySize:
		return nil, fmt.Errorf("-key-size %d is too small for %d keys", c.KeySize, c.Num)
	case c.ValueSize < 1:
		return nil, fmt.Errorf("-value-size must be positive")
	case c.compression != "snappy" && c.compression != "none":
		return nil, fmt.Errorf("-compression must be snappy or none")
	case c.Reps < 1 || c.SyncOps < 1 || c.ReadOps < 1:
		return nil, fmt.Errorf("-reps, -sync-ops and -read-ops must be positive")
	case c.cacheSize < 1 || c.memtableSize < 1 || c.blockSize < 1:
		return nil, fmt.Errorf("-cache-size, -memtable-size and -block-size must be positive")
	}
	return c, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func main() {
	c, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kaya-bench:", err)
		os.Exit(2)
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "kaya-bench:", err)
		os.Exit(1)
	}
}

// run executes the whole benchmark and prints (and optionally saves) the
// report. It returns an error if any run failed, after reporting the rest.
func run(c *config) error {
	parent := c.Dir
	if parent == "" {
		parent = os.TempDir()
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	root, err := os.MkdirTemp(parent, "kaya-bench-")
	if err != nil {
		return err
	}
	if !c.Keep {
		defer os.RemoveAll(root)
	}

	rep := &report{
		Command: commandLine(),
		Machine: machineInfo(root),
		Config:  c,
		Shared: sharedSettings{CacheSize: c.cacheSize, MemTableSize: c.memtableSize,
			BloomBits: c.bloomBits, Compression: c.compression, BlockSize: c.blockSize},
		EngineOptions: map[string]string{},
		Root:          root,
	}
	rep.printHeader()
	for _, e := range c.Engines {
		rep.EngineOptions[e] = allEngines[e].describe(c)
		fmt.Printf("### %s options\n```\n%s```\n", e, rep.EngineOptions[e])
	}

	ks := newKeyspace(c.KeySize, c.ValueSize)
	failed := 0
	for r := 0; r < c.Reps; r++ {
		for _, w := range c.Workloads {
			// Interleave engines, rotating the order each repetition so no
			// engine always runs first (or right after a heavy one).
			for j := range c.Engines {
				e := allEngines[c.Engines[(j+r)%len(c.Engines)]]
				res := runOne(c, ks, e, w, r, root)
				rep.Runs = append(rep.Runs, res)
				printRun(res)
				if res.Err != "" {
					failed++
				}
			}
		}
	}

	rep.summarize()
	rep.printTable()
	rep.printDiagnostics()
	if c.JSON != "" {
		if err := rep.writeJSON(c.JSON); err != nil {
			return err
		}
		fmt.Printf("\nJSON written to %s\n", c.JSON)
	}
	if c.Keep {
		fmt.Printf("databases kept under %s\n", root)
	}
	if failed > 0 {
		return fmt.Errorf("%d run(s) FAILED; see the errors above", failed)
	}
	return nil
}

// runOne runs workload w on a fresh store of engine e in its own directory,
// then closes and (unless -keep) removes it.
func runOne(c *config, ks *keyspace, e engineSpec, w string, rep int, root string) (res runResult) {
	res = runResult{Workload: w, Engine: e.name, Rep: rep + 1}
	dir := filepath.Join(root, fmt.Sprintf("r%d-%s-%s", rep+1, w, e.name))
	// Start every run from a comparable heap and an idle disk.
	runtime.GC()
	debug.FreeOSMemory()
	quiesceDisk()
	cpu0 := sampleCPU()
	defer func() { res.OtherCPU, res.StealCPU = otherCPU(cpu0, sampleCPU()) }()

	if c.CPUProfileDir != "" {
		stop, err := startProfile(filepath.Join(c.CPUProfileDir, fmt.Sprintf("r%d-%s-%s.cpu.prof", rep+1, w, e.name)))
		if err != nil {
			res.Err = err.Error()
			return res
		}
		defer stop()
	}
	s, err := e.open(dir, c)
	if err != nil {
		res.Err = fmt.Sprintf("open: %v", err)
		return res
	}
	r := &runner{cfg: c, ks: ks, s: s}
	var m measurement
	switch w {
	case "fillseq":
		m, err = r.fill(nil)
	case "fillrandom":
		m, err = r.fill(r.permutation())
		if err == nil {
			// Untimed: let background work finish so the diagnostics
			// describe the final shape.
			var d time.Duration
			if d, err = r.settle(); err == nil {
				st := s.Stats()
				res.Stats = &st
				res.SettleTime = d
			}
		}
	case "readrandom":
		m, err = r.readRandom()
	case "seekrandom":
		m, err = r.seekRandom()
	case "scan":
		m, err = r.scan()
	case "fillsync32":
		// The database just filled (untimed, not settled: its flushes
		// and compactions are still running), then 32 writers of Sync
		// Sets of random existing keys.
		if m, err = r.fill(r.permutation()); err == nil {
			m, err = r.syncWrites(syncWriters[w])
		}
		if err == nil {
			st := s.Stats()
			res.Stats = &st
		}
	default:
		m, err = r.syncWrites(syncWriters[w])
		if err == nil {
			st := s.Stats()
			res.Stats = &st
		}
	}
	res.fill(m)
	if m.capped {
		r.notes = append(r.notes, fmt.Sprintf("capped by -duration-cap after %d ops", m.ops))
	}
	res.Notes = r.notes
	if err != nil {
		res.Err = err.Error()
	}
	if cerr := s.Close(); cerr != nil && res.Err == "" {
		res.Err = fmt.Sprintf("close: %v", cerr)
	}
	res.DiskBytes = dirSize(dir)
	if !c.Keep {
		os.RemoveAll(dir)
	}
	return res
}

// quiesceDisk writes back all dirty data (including the previous run's
// deleted directory, which on a filesystem mounted with "discard" issues
// TRIMs) and pauses briefly, so that a run does not pay for the previous
// run's writeback in its fdatasync latencies.
func quiesceDisk() {
	syscall.Sync()
	time.Sleep(quiescePause)
}

// quiescePause is the idle time between runs, after the global sync.
const quiescePause = 500 * time.Millisecond

// dirSize returns the total size of the regular files under dir.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// startProfile starts a CPU profile written to path and returns its stop
// function.
func startProfile(path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
