package cli

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/kayadb/kayadb/client"
)

// benchResult is the JSON form of a benchmark run.
type benchResult struct {
	Op        string  `json:"op"`
	Clients   int     `json:"clients"`
	Conns     int     `json:"conns"`
	KeySize   int     `json:"key_size"`
	ValSize   int     `json:"val_size"`
	Total     int     `json:"total"`
	Errors    int64   `json:"errors"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"requests_per_second"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	P999Ms    float64 `json:"p999_ms"`
	MaxMs     float64 `json:"max_ms"`
}

func (a *app) newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench put|get",
		Short: "Load a cluster with puts or linearizable gets and report throughput and latency",
		Long: `Load the cluster at --server with requests from --clients concurrent clients
sharing --conns connections per server (the shape of etcd's benchmark tool),
and print requests per second and p50/p99/p99.9 latency.

  put  writes --total random keys of --key-size bytes with --val-size values
  get  first writes --key-space keys (untimed), then reads random ones; reads
       are linearizable (ReadIndex on the leader)`,
		Args: exactArgs(1, "put or get"),
	}
	clients := cmd.Flags().Int("clients", 1, "concurrent clients (goroutines, each one request at a time)")
	conns := cmd.Flags().Int("conns", 1, "connections per server, shared by the clients (requests are pipelined)")
	keySize := cmd.Flags().Int("key-size", 8, "key size in bytes")
	valSize := cmd.Flags().Int("val-size", 256, "value size in bytes")
	total := cmd.Flags().Int("total", 10000, "requests to send")
	keySpace := cmd.Flags().Int("key-space", 10000, "distinct keys (get loads them first)")
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		op := args[0]
		if op != "put" && op != "get" {
			return usageErrorf("bench %q: want put or get", op)
		}
		if !a.serverMode() {
			return usageErrorf("bench needs --server ADDR[,ADDR...] (or $%s)", EnvServer)
		}
		if *clients < 1 || *conns < 1 || *total < 1 || *keySize < 1 || *valSize < 0 || *keySpace < 1 {
			return usageErrorf("--clients, --conns, --total, --key-size and --key-space must be positive")
		}
		opts, err := a.clientOptions()
		if err != nil {
			return err
		}
		timeout := opts.RequestTimeout
		opts.ConnsPerEndpoint, opts.MaxPipeline = *conns, max(128, *clients / *conns * 2)
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
		if op == "get" {
			fmt.Fprintf(a.stderr, "loading %d keys...\n", *keySpace)
			if err := runLoad(*keySpace, min(*clients, 64), func(ctx context.Context, i int) error {
				return c.Put(ctx, key(i), value)
			}, timeout, nil); err != nil {
				return err
			}
		}
		bar := newProgress(a.stderr, *total)
		lat := make([]time.Duration, *total)
		var errs atomic.Int64
		start := time.Now()
		err = runLoad(*total, *clients, func(ctx context.Context, i int) error {
			t0 := time.Now()
			var err error
			if op == "put" {
				err = c.Put(ctx, key(rand.IntN(*keySpace)), value)
			} else {
				_, err = c.Get(ctx, key(rand.IntN(*keySpace)))
			}
			lat[i] = time.Since(t0)
			if err != nil {
				errs.Add(1)
			}
			bar.add()
			return nil
		}, timeout, &errs)
		elapsed := time.Since(start)
		bar.done()
		if err != nil {
			return err
		}
		slices.Sort(lat)
		q := func(p float64) float64 {
			return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / float64(time.Millisecond)
		}
		res := benchResult{Op: op, Clients: *clients, Conns: *conns, KeySize: *keySize, ValSize: *valSize, Total: *total,
			Errors: errs.Load(), Seconds: elapsed.Seconds(), PerSecond: float64(*total) / elapsed.Seconds(),
			P50Ms: q(0.50), P99Ms: q(0.99), P999Ms: q(0.999), MaxMs: float64(lat[len(lat)-1]) / float64(time.Millisecond)}
		if a.json {
			return writeJSON(a.stdout, res)
		}
		fmt.Fprintf(a.stdout, "Summary (%s, %d clients, %d conns, %d-byte keys, %d-byte values):\n", op, res.Clients, res.Conns, res.KeySize, res.ValSize)
		fmt.Fprintf(a.stdout, "  Total:        %.4f s\n", res.Seconds)
		fmt.Fprintf(a.stdout, "  Requests/sec: %.1f\n", res.PerSecond)
		fmt.Fprintf(a.stdout, "  Latency p50:  %.3f ms\n  Latency p99:  %.3f ms\n  Latency p99.9: %.3f ms\n  Slowest:      %.3f ms\n",
			res.P50Ms, res.P99Ms, res.P999Ms, res.MaxMs)
		if res.Errors > 0 {
			fmt.Fprintf(a.stdout, "  Errors:       %d\n", res.Errors)
			return fmt.Errorf("%d of %d requests failed", res.Errors, res.Total)
		}
		return nil
	})
	return cmd
}

func pow10(n int) int64 {
	p := int64(1)
	for i := 0; i < n && i < 18; i++ {
		p *= 10
	}
	return p
}

// runLoad calls fn(i) for i in [0, n) from workers goroutines. It stops at
// the first error unless errs is given (then errors are only counted).
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
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
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
