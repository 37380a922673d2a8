package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/kayadb/kayadb/client"
)

// benchResult is the JSON form of a benchmark run. Durations are in
// milliseconds; latencies are those of the requests that succeeded (as in
// etcd's benchmark tool).
type benchResult struct {
	Op      string `json:"op"`
	Clients int    `json:"clients"`
	Conns   int    `json:"conns"`
	KeySize int    `json:"key_size"`
	ValSize int    `json:"val_size"`
	Total   int    `json:"total"`
	// Errors is the number of failed requests; ErrorsByKind splits them.
	Errors       int64           `json:"errors"`
	ErrorsByKind []benchErrKind  `json:"errors_by_kind"`
	Seconds      float64         `json:"seconds"`
	PerSecond    float64         `json:"requests_per_second"`
	FastestMs    float64         `json:"fastest_ms"`
	AverageMs    float64         `json:"average_ms"`
	StddevMs     float64         `json:"stddev_ms"`
	P50Ms        float64         `json:"p50_ms"`
	P99Ms        float64         `json:"p99_ms"`
	P999Ms       float64         `json:"p999_ms"`
	MaxMs        float64         `json:"max_ms"`
	Percentiles  []benchPctl     `json:"percentiles"`
	Histogram    []benchHistoRow `json:"histogram"`
	// Txn is set by bench txn.
	Txn *benchTxnStats `json:"txn,omitempty"`
}

// benchTxnStats are bench txn's own figures. Each transaction reads two
// distinct keys and writes both; one that conflicts (or is lost) starts
// again, up to MaxAttempts runs.
type benchTxnStats struct {
	KeySpace int `json:"key_space"`
	// HotKeys is the fraction of key picks that go to the HotSet keys
	// 0 … HotSet-1; the others are uniform over the key space.
	HotKeys     float64 `json:"hot_keys"`
	HotSet      int     `json:"hot_set"`
	MaxAttempts int     `json:"max_attempts"`
	// Mode is "interactive" (Begin/Commit) or "stm" (RunSTM).
	Mode string `json:"mode"`
	// Committed transactions; Attempts counts every run of one (commits,
	// conflicts, losses, failures).
	Committed int64 `json:"committed"`
	Attempts  int64 `json:"attempts"`
	// Conflicts is the number of attempts that ended in a conflict;
	// ConflictRate is Conflicts / Attempts.
	Conflicts    int64   `json:"conflicts"`
	ConflictRate float64 `json:"conflict_rate"`
}

// benchPctl is one percentile of the latency distribution.
type benchPctl struct {
	Percentile float64 `json:"percentile"`
	Ms         float64 `json:"ms"`
}

// benchHistoRow is one bar of the latency histogram: the requests whose
// latency is at most UpToMs and above the previous row's.
type benchHistoRow struct {
	UpToMs float64 `json:"up_to_ms"`
	Count  int     `json:"count"`
}

// benchErrKind counts the failures of one kind, with one message as an
// example.
type benchErrKind struct {
	Kind    string `json:"kind"`
	Count   int    `json:"count"`
	Example string `json:"example"`
}

// benchPercentiles are the percentiles etcd's benchmark reports.
var benchPercentiles = []float64{10, 25, 50, 75, 90, 95, 99, 99.9}

// benchHistBuckets is the number of equal-width bars between the fastest
// and the slowest request (plus one for the slowest).
const benchHistBuckets = 10

// errKind names the kind of a failed request, for the error distribution:
// few kinds, so that messages with changing numbers do not each get a
// line.
func errKind(err error) string {
	var se *client.ServerError
	switch {
	case errors.Is(err, client.ErrTxnConflict):
		return "txn conflict (gave up)"
	case errors.Is(err, client.ErrTxnLost):
		return "txn lost (gave up)"
	case errors.Is(err, client.ErrDiskFull):
		return "disk full (refused, not applied)"
	case errors.Is(err, client.ErrAmbiguous):
		return "ambiguous (sent, outcome unknown)"
	case errors.Is(err, client.ErrTimeout):
		return "timeout"
	case errors.Is(err, client.ErrNotLeader):
		return "no leader"
	case errors.Is(err, client.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, client.ErrInvalidArgument):
		return "invalid argument"
	case errors.Is(err, client.ErrNotFound):
		return "not found"
	case errors.As(err, &se):
		return fmt.Sprintf("server error (status %d)", se.Status)
	case errors.Is(err, client.ErrClosed):
		return "client closed"
	}
	return "other"
}

// benchReport computes the summary of a run from the latencies of the
// successful requests (sorted here) and the failures.
func benchReport(res *benchResult, lat []time.Duration, elapsed time.Duration, failures []error) {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	res.Seconds = elapsed.Seconds()
	res.Errors = int64(len(failures))
	res.ErrorsByKind = []benchErrKind{}
	res.Percentiles = []benchPctl{}
	res.Histogram = []benchHistoRow{}
	byKind := map[string]int{}
	for _, err := range failures {
		k := errKind(err)
		if i, ok := byKind[k]; ok {
			res.ErrorsByKind[i].Count++
			continue
		}
		byKind[k] = len(res.ErrorsByKind)
		res.ErrorsByKind = append(res.ErrorsByKind, benchErrKind{Kind: k, Count: 1, Example: err.Error()})
	}
	sort.SliceStable(res.ErrorsByKind, func(i, j int) bool { return res.ErrorsByKind[i].Count > res.ErrorsByKind[j].Count })
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	if elapsed > 0 {
		res.PerSecond = float64(len(lat)) / elapsed.Seconds()
	}
	var sum float64
	for _, d := range lat {
		sum += ms(d)
	}
	avg := sum / float64(len(lat))
	var sq float64
	for _, d := range lat {
		sq += (ms(d) - avg) * (ms(d) - avg)
	}
	res.FastestMs, res.MaxMs, res.AverageMs = ms(lat[0]), ms(lat[len(lat)-1]), avg
	res.StddevMs = math.Sqrt(sq / float64(len(lat)))
	// Nearest rank: the smallest latency with at least p% of the requests
	// at or below it.
	rank := func(p float64) float64 {
		i := int(math.Ceil(p/100*float64(len(lat)))) - 1
		return ms(lat[min(max(i, 0), len(lat)-1)])
	}
	for _, p := range benchPercentiles {
		res.Percentiles = append(res.Percentiles, benchPctl{Percentile: p, Ms: rank(p)})
	}
	res.P50Ms, res.P99Ms, res.P999Ms = rank(50), rank(99), rank(99.9)
	width := (lat[len(lat)-1] - lat[0]) / benchHistBuckets
	i := 0
	for b := 0; b <= benchHistBuckets; b++ {
		upTo := lat[0] + width*time.Duration(b)
		if b == benchHistBuckets {
			upTo = lat[len(lat)-1]
		}
		n := 0
		for i < len(lat) && lat[i] <= upTo {
			n++
			i++
		}
		res.Histogram = append(res.Histogram, benchHistoRow{UpToMs: ms(upTo), Count: n})
	}
}

// writeBenchReport prints a run the way etcd's benchmark tool does.
func writeBenchReport(w io.Writer, res *benchResult) {
	secs := func(msv float64) string { return fmt.Sprintf("%.4f secs.", msv/1000) }
	fmt.Fprintf(w, "Summary (%s, %d clients, %d conns, %d-byte keys, %d-byte values, %d requests):\n",
		res.Op, res.Clients, res.Conns, res.KeySize, res.ValSize, res.Total)
	fmt.Fprintf(w, "  Total:\t%.4f secs.\n", res.Seconds)
	if t := res.Txn; t != nil {
		fmt.Fprintf(w, "  Transactions (%s):\t%d committed, %d attempts, %d conflicts (conflict rate %.2f%%)\n",
			t.Mode, t.Committed, t.Attempts, t.Conflicts, 100*t.ConflictRate)
		fmt.Fprintf(w, "  Keys:\t%d, %.0f%% of picks among the %d hot ones; 2 reads and 2 writes each, at most %d attempts\n",
			t.KeySpace, 100*t.HotKeys, t.HotSet, t.MaxAttempts)
	}
	if len(res.Histogram) > 0 {
		fmt.Fprintf(w, "  Slowest:\t%s\n  Fastest:\t%s\n  Average:\t%s\n  Stddev:\t%s\n",
			secs(res.MaxMs), secs(res.FastestMs), secs(res.AverageMs), secs(res.StddevMs))
		fmt.Fprintf(w, "  Requests/sec:\t%.4f\n", res.PerSecond)
		fmt.Fprintf(w, "\nResponse time histogram:\n")
		most := 0
		for _, r := range res.Histogram {
			most = max(most, r.Count)
		}
		for _, r := range res.Histogram {
			bar := 0
			if most > 0 {
				bar = r.Count * 40 / most
			}
			fmt.Fprintf(w, "  %.4f [%d]\t|%s\n", r.UpToMs/1000, r.Count, strings.Repeat("∎", bar))
		}
		fmt.Fprintf(w, "\nLatency distribution:\n")
		for _, p := range res.Percentiles {
			fmt.Fprintf(w, "  %v%% in %.4f secs.\n", p.Percentile, p.Ms/1000)
		}
	}
	if len(res.ErrorsByKind) > 0 {
		fmt.Fprintf(w, "\nError distribution:\n")
		for _, e := range res.ErrorsByKind {
			fmt.Fprintf(w, "  [%d]\t%s (e.g. %s)\n", e.Count, e.Kind, e.Example)
		}
	}
}

func (a *app) newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench put|get|scan|txn",
		Short: "Load a cluster with puts, linearizable gets, scans or transactions and report throughput and latency",
		Long: `Load the cluster at --server with requests from --clients concurrent clients
sharing --conns connections per server (the shape of etcd's benchmark tool),
and print what etcd's benchmark prints: total time, slowest, fastest, average
and standard deviation of the latency, requests per second, a latency
histogram, the percentiles 10 to 99.9 and the errors by kind (--json: the
same as one JSON object).

  put  writes --total random keys of --key-size bytes with --val-size values
  get  first writes --key-space keys (untimed), then reads random ones; reads
       are linearizable (ReadIndex on the leader)
  scan first writes --key-space keys (untimed), then scans random prefixes
       of --key-size minus 2 bytes: each covers 100 consecutive keys (fewer
       at the end of the key space); linearizable, like get
  txn  runs --total transactions, each reading two distinct random keys and
       writing both (--val-size values), over --key-space keys (100000 unless
       given), a --hot-keys fraction of the picks going to the first
       --hot-set keys; a transaction that conflicts starts again, at most
       --max-attempts times. Each is six requests in three round trips
       (BEGIN; the two gets pipelined; the two puts pipelined with COMMIT,
       as the Go client sends a transaction's buffered writes). With
       --txn-mode stm each is an optimistic transaction (client.RunSTM): the
       two reads pipelined (GET_AT), then one conditional write (KAYA_TXN)
       that writes both keys if neither changed since it was read — two
       requests per attempt, serializable too. It reports committed
       transactions per second, their latency (retries included) and the
       conflict rate (attempts that conflicted / attempts)`,
		Args: exactArgs(1, "put, get, scan or txn"),
	}
	clients := cmd.Flags().Int("clients", 1, "concurrent clients (goroutines, each one request at a time)")
	conns := cmd.Flags().Int("conns", 1, "connections per server, shared by the clients (requests are pipelined)")
	keySize := cmd.Flags().Int("key-size", 8, "key size in bytes")
	valSize := cmd.Flags().Int("val-size", 256, "value size in bytes")
	total := cmd.Flags().Int("total", 10000, "requests to send")
	keySpace := cmd.Flags().Int("key-space", 10000, "distinct keys (get loads them first; txn: 100000 unless given)")
	hotKeys := cmd.Flags().Float64("hot-keys", 0, "txn: fraction (0 to 1) of key picks that go to the --hot-set hot keys")
	hotSet := cmd.Flags().Int("hot-set", 100, "txn: how many keys are hot (the first of the key space)")
	maxAttempts := cmd.Flags().Int("max-attempts", client.DefaultMaxTxnAttempts, "txn: runs of a transaction that conflicts before it counts as failed")
	txnMode := cmd.Flags().String("txn-mode", "interactive", "txn: interactive (Begin, reads, writes, Commit) or stm (optimistic: reads, then one conditional write)")
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		op := args[0]
		if op != "put" && op != "get" && op != "scan" && op != "txn" {
			return usageErrorf("bench %q: want put, get, scan or txn", op)
		}
		if op == "scan" && *keySize < 3 {
			return usageErrorf("bench scan needs a --key-size of at least 3 (its prefixes are the keys without their last two digits)")
		}
		if err := a.needServer(cmd); err != nil {
			return err
		}
		if op == "txn" && !cmd.Flags().Changed("key-space") {
			*keySpace = 100000
		}
		if *clients < 1 || *conns < 1 || *total < 1 || *keySize < 1 || *valSize < 0 || *keySpace < 1 {
			return usageErrorf("--clients, --conns, --total, --key-size and --key-space must be positive")
		}
		if op != "txn" {
			for _, f := range []string{"hot-keys", "hot-set", "max-attempts", "txn-mode"} {
				if cmd.Flags().Changed(f) {
					return usageErrorf("--%s is for bench txn only", f)
				}
			}
		}
		if op == "txn" {
			switch {
			case *hotKeys < 0 || *hotKeys > 1 || *hotKeys != *hotKeys:
				return usageErrorf("--hot-keys must be a fraction between 0 and 1 (got %v)", *hotKeys)
			case *hotKeys > 0 && (*hotSet < 2 || *hotSet > *keySpace):
				return usageErrorf("--hot-set must be between 2 and --key-space %d (got %d)", *keySpace, *hotSet)
			case *keySpace < 2:
				return usageErrorf("bench txn needs a --key-space of at least 2 (each transaction uses two distinct keys)")
			case *maxAttempts < 1:
				return usageErrorf("--max-attempts must be positive")
			case *txnMode != "interactive" && *txnMode != "stm":
				return usageErrorf("--txn-mode %q: want interactive or stm", *txnMode)
			}
		}
		opts, err := a.clientOptions()
		if err != nil {
			return err
		}
		// A transaction is several calls: each is bounded by the client's
		// RequestTimeout, and the whole by the same again. A put, get or
		// scan is one call, which the client bounds by itself: no context
		// timer of the bench's own per request (0).
		callTimeout := opts.RequestTimeout
		if op != "txn" {
			callTimeout = 0
		}
		opts.ConnsPerEndpoint, opts.MaxPipeline = *conns, max(128, *clients / *conns * 2)
		opts.MaxTxnAttempts = *maxAttempts // RunSTM's bound (--txn-mode stm)
		c, err := client.New(a.servers(), opts)
		if err != nil {
			return usageErrorf("--server: %v", err)
		}
		defer c.Close()
		key := func(i int) []byte {
			return fmt.Appendf(make([]byte, 0, *keySize), "%0*d", *keySize, int64(i)%pow10(*keySize))
		}
		value := make([]byte, *valSize)
		for i := range value {
			value[i] = byte('a' + i%26)
		}
		if op == "get" || op == "scan" {
			fmt.Fprintf(a.stderr, "loading %d keys...\n", *keySpace)
			if err := runLoad(*keySpace, min(*clients, 64), func(ctx context.Context, i int) error {
				return c.Put(ctx, key(i), value)
			}, 0, nil); err != nil {
				return err
			}
		}
		tb := &txnBench{c: c, key: key, value: value, keySpace: *keySpace, hotKeys: *hotKeys, hotSet: *hotSet, maxAttempts: *maxAttempts, stm: *txnMode == "stm"}
		bar := newProgress(a.stderr, *total)
		lat := make([]time.Duration, *total)
		failed := make([]error, *total) // nil: the request succeeded
		var errs atomic.Int64
		start := time.Now()
		err = runLoad(*total, *clients, func(ctx context.Context, i int) error {
			t0 := time.Now()
			var err error
			switch op {
			case "put":
				err = c.Put(ctx, key(rand.IntN(*keySpace)), value)
			case "get":
				_, err = c.Get(ctx, key(rand.IntN(*keySpace)))
			case "scan":
				k := key(rand.IntN(*keySpace))
				_, err = c.Scan(ctx, k[:len(k)-2])
			default:
				err = tb.run(ctx)
			}
			lat[i] = time.Since(t0)
			if err != nil {
				failed[i] = err
				errs.Add(1)
			}
			bar.add()
			return nil
		}, callTimeout, &errs)
		elapsed := time.Since(start)
		bar.done()
		if err != nil {
			return err
		}
		var ok []time.Duration
		var failures []error
		for i, e := range failed {
			if e != nil {
				failures = append(failures, e)
			} else {
				ok = append(ok, lat[i])
			}
		}
		res := benchResult{Op: op, Clients: *clients, Conns: *conns, KeySize: *keySize, ValSize: *valSize, Total: *total}
		benchReport(&res, ok, elapsed, failures)
		if op == "txn" {
			res.Txn = tb.stats()
		}
		if a.json {
			if err := writeJSON(a.stdout, res); err != nil {
				return err
			}
		} else {
			writeBenchReport(a.stdout, &res)
		}
		if res.Errors > 0 {
			return fmt.Errorf("%d of %d requests failed (see the error distribution)", res.Errors, res.Total)
		}
		return nil
	})
	return cmd
}

// txnBench runs bench txn's transactions and counts their attempts.
type txnBench struct {
	c           *client.Client
	key         func(i int) []byte
	value       []byte
	keySpace    int
	hotKeys     float64
	hotSet      int
	maxAttempts int
	stm         bool // client.RunSTM instead of Begin/Commit

	committed, attempts, conflicts atomic.Int64
}

// pick draws a key index: a hot one with probability hotKeys, else any.
func (b *txnBench) pick() int {
	if b.hotKeys > 0 && rand.Float64() < b.hotKeys {
		return rand.IntN(b.hotSet)
	}
	return rand.IntN(b.keySpace)
}

// run runs one transaction until it commits, fails for another reason
// than a conflict or a loss, or used up its attempts. Between attempts it
// pauses at random up to 5 ms·2^attempt, at most 500 ms (as RunTxn).
func (b *txnBench) run(ctx context.Context) error {
	k1 := b.pick()
	k2 := b.pick()
	for k2 == k1 {
		k2 = b.pick()
	}
	keys := [2][]byte{b.key(k1), b.key(k2)}
	if b.stm {
		return b.runSTM(ctx, keys)
	}
	for attempt := 1; ; attempt++ {
		b.attempts.Add(1)
		err := b.once(ctx, keys)
		if err == nil {
			b.committed.Add(1)
			return nil
		}
		conflict := errors.Is(err, client.ErrTxnConflict)
		if conflict {
			b.conflicts.Add(1)
		}
		if !conflict && !errors.Is(err, client.ErrTxnLost) {
			return err
		}
		if attempt >= b.maxAttempts {
			return fmt.Errorf("gave up after %d attempts: %w", attempt, err)
		}
		d := rand.N(min(5*time.Millisecond<<min(attempt-1, 10), 500*time.Millisecond) + 1)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("gave up after %d attempts (deadline): %w", attempt, err)
		}
	}
}

// once is one attempt: begin, read both keys, write both, commit (BEGIN,
// two TXN_OP gets pipelined, two TXN_OP puts pipelined with COMMIT).
func (b *txnBench) once(ctx context.Context, keys [2][]byte) (err error) {
	tx, err := b.c.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(ctx)
		}
	}()
	// Both reads in one round trip; the writes travel with COMMIT (the
	// client pipelines them): three round trips in all.
	if _, err := tx.GetMany(ctx, keys[0], keys[1]); err != nil {
		return err
	}
	for _, k := range keys {
		if err := tx.Put(ctx, k, b.value); err != nil {
			return err
		}
	}
	_, err = tx.Commit(ctx)
	return err
}

// runSTM is one optimistic transaction: RunSTM retries it itself (the
// retry after a conflict needs no reads: the failed commit read the keys
// back), with the client's back-off; every run of fn is an attempt.
func (b *txnBench) runSTM(ctx context.Context, keys [2][]byte) error {
	n := int64(0)
	_, err := b.c.RunSTM(ctx, func(s *client.STM) error {
		n++
		b.attempts.Add(1)
		if _, err := s.GetMany(keys[0], keys[1]); err != nil {
			return err
		}
		for _, k := range keys {
			if err := s.Put(k, b.value); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		b.committed.Add(1)
		b.conflicts.Add(n - 1)
		return nil
	}
	if errors.Is(err, client.ErrTxnConflict) {
		b.conflicts.Add(n)
	} else {
		b.conflicts.Add(n - 1)
	}
	return err
}

func (b *txnBench) stats() *benchTxnStats {
	mode := "interactive"
	if b.stm {
		mode = "stm"
	}
	s := &benchTxnStats{Mode: mode, KeySpace: b.keySpace, HotKeys: b.hotKeys, HotSet: b.hotSet, MaxAttempts: b.maxAttempts,
		Committed: b.committed.Load(), Attempts: b.attempts.Load(), Conflicts: b.conflicts.Load()}
	if s.Attempts > 0 {
		s.ConflictRate = float64(s.Conflicts) / float64(s.Attempts)
	}
	return s
}

func pow10(n int) int64 {
	p := int64(1)
	for i := 0; i < n && i < 18; i++ {
		p *= 10
	}
	return p
}

// runLoad calls fn(i) for i in [0, n) from workers goroutines, each call
// with a context that ends after timeout (none when 0: the client bounds
// each of its calls by its RequestTimeout). It stops at the first error
// unless errs is given (then errors are only counted).
func runLoad(n, workers int, fn func(ctx context.Context, i int) error, timeout time.Duration, errs *atomic.Int64) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var once sync.Once
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				if timeout > 0 {
					ctx, cancel = context.WithTimeout(ctx, timeout)
				}
				err := fn(ctx, i)
				cancel()
				if err != nil && errs == nil {
					once.Do(func() { firstErr = err })
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// progress draws a progress bar on stderr when it is a terminal.
type progress struct {
	w     *os.File
	total int
	n     atomic.Int64
	stop  chan struct{}
	wg    sync.WaitGroup
}

func newProgress(w any, total int) *progress {
	p := &progress{total: total, stop: make(chan struct{})}
	f, ok := w.(*os.File)
	if !ok {
		return p
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return p
	}
	p.w = f
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				p.draw()
				fmt.Fprintln(p.w)
				return
			case <-t.C:
				p.draw()
			}
		}
	}()
	return p
}

func (p *progress) add() { p.n.Add(1) }

func (p *progress) draw() {
	n := int(p.n.Load())
	const width = 40
	filled := width * n / max(p.total, 1)
	bar := make([]byte, width)
	for i := range bar {
		if i < filled {
			bar[i] = '='
		} else {
			bar[i] = ' '
		}
	}
	fmt.Fprintf(p.w, "\r[%s] %d/%d", bar, n, p.total)
}

func (p *progress) done() {
	close(p.stop)
	p.wg.Wait()
}
