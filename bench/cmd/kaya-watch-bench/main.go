// Command kaya-watch-bench measures KayaDB's watches on a running cluster,
// as etcd's `benchmark watch-latency` measures etcd's (scripts/bench-watch.sh
// runs both in one go):
//
//	-mode latency: -watchers watches on one key (each client.Watch has its
//	  own connection), a writer putting that key -rate times a second,
//	  -total puts; the latency of every event at every watcher, from the
//	  put's acknowledgement to the event's arrival (0 when it arrives
//	  first), as etcd's tool computes it.
//	-mode writes: -watchers idle watches on another prefix, then -clients
//	  writers putting as fast as they can for -duration: throughput and
//	  latency of the puts (compare -watchers 1000 with -watchers 0).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kayadb/kayadb/client"
)

func main() {
	servers := flag.String("server", "127.0.0.1:17379", "the cluster's client addresses, comma-separated")
	mode := flag.String("mode", "latency", "latency or writes")
	watchers := flag.Int("watchers", 1000, "watches to open")
	rate := flag.Int("rate", 1000, "latency: puts per second")
	total := flag.Int("total", 10000, "latency: puts")
	clients := flag.Int("clients", 16, "writes: concurrent writers")
	duration := flag.Duration("duration", 10*time.Second, "writes: how long")
	valSize := flag.Int("val-size", 32, "value size")
	flag.Parse()
	addrs := strings.Split(*servers, ",")
	if err := run(addrs, *mode, *watchers, *rate, *total, *clients, *duration, *valSize); err != nil {
		fmt.Fprintln(os.Stderr, "kaya-watch-bench:", err)
		os.Exit(1)
	}
}

func newClient(addrs []string) (*client.Client, error) {
	return client.New(addrs, &client.Options{RequestTimeout: 10 * time.Second})
}

// openWatches opens n watches on key (exact) or prefix and waits until
// each answered: a progress notification on a quiet key proves it (an
// idle watch then asks for them once an hour only, so that they cost
// nothing during the measurement).
func openWatches(ctx context.Context, cl *client.Client, n int, key string, exact bool) ([]<-chan client.WatchResponse, error) {
	chs := make([]<-chan client.WatchResponse, n)
	var wg sync.WaitGroup
	var failed atomic.Value
	for i := range chs {
		opts := []client.WatchOption{client.WithProgressNotify(100 * time.Millisecond), client.WithWatchBuffer(4096)}
		if exact {
			opts = append(opts, client.WithKey())
		} else {
			opts[0] = client.WithProgressNotify(time.Hour)
		}
		chs[i] = cl.Watch(ctx, []byte(key), opts...)
		wg.Add(1)
		go func(ch <-chan client.WatchResponse) {
			defer wg.Done()
			r := <-ch
			if r.Err != nil {
				failed.Store(r.Err)
			}
		}(chs[i])
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		return nil, err
	}
	return chs, nil
}

func run(addrs []string, mode string, watchers, rate, total, clients int, duration time.Duration, valSize int) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wcl, err := newClient(addrs)
	if err != nil {
		return err
	}
	defer wcl.Close()
	value := strings.Repeat("v", valSize)
	switch mode {
	case "latency":
		chs, err := openWatches(ctx, wcl, watchers, "watch-bench/key", true)
		if err != nil {
			return err
		}
		recv := make([][]time.Time, watchers)
		var wg sync.WaitGroup
		for i, ch := range chs {
			recv[i] = make([]time.Time, total)
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := 0
				for r := range ch {
					if r.Err != nil {
						fmt.Fprintln(os.Stderr, "watch ended:", r.Err)
						return
					}
					now := time.Now()
					for _, e := range r.Events {
						if j, err := strconv.Atoi(strings.TrimRight(string(e.Value), "v")); err == nil && j < total {
							recv[i][j] = now
							n++
						}
					}
					if n >= total {
						return
					}
				}
			}()
		}
		pcl, err := newClient(addrs)
		if err != nil {
			return err
		}
		defer pcl.Close()
		acks := make([]time.Time, total)
		var putLat []time.Duration
		start := time.Now()
		interval := time.Second / time.Duration(rate)
		for j := 0; j < total; j++ {
			if d := time.Until(start.Add(time.Duration(j) * interval)); d > 0 {
				time.Sleep(d)
			}
			t0 := time.Now()
			v := strconv.Itoa(j) + value[min(len(value), len(strconv.Itoa(j))):]
			if err := pcl.Put(ctx, []byte("watch-bench/key"), []byte(v)); err != nil {
				return err
			}
			acks[j] = time.Now()
			putLat = append(putLat, acks[j].Sub(t0))
		}
		putDur := time.Since(start)
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			return fmt.Errorf("the watchers did not receive every event within 60 s")
		}
		var lat []time.Duration
		missing := 0
		for i := range recv {
			for j, t := range recv[i] {
				if t.IsZero() {
					missing++
					continue
				}
				lat = append(lat, max(t.Sub(acks[j]), 0))
			}
		}
		fmt.Printf("kaya watch-latency watchers=%d rate=%d/s total=%d val=%dB: puts %.0f/s (put %s); events %d (missing %d), %.0f events/s; latency %s\n",
			watchers, rate, total, valSize, float64(total)/putDur.Seconds(), describe(putLat), len(lat), missing,
			float64(len(lat))/putDur.Seconds(), describe(lat))
	case "writes":
		if watchers > 0 {
			// Hourly progress: no answer to wait for; give the watches 5 s
			// to open (one connection each).
			for i := 0; i < watchers; i++ {
				_ = wcl.Watch(ctx, []byte("idle/"), client.WithProgressNotify(time.Hour))
			}
			time.Sleep(5 * time.Second)
		}
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		end := time.Now().Add(duration)
		for c := 0; c < clients; c++ {
			cl, err := newClient(addrs)
			if err != nil {
				return err
			}
			defer cl.Close()
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				for j := 0; time.Now().Before(end); j++ {
					t0 := time.Now()
					if err := cl.Put(ctx, []byte(fmt.Sprintf("w/%d/%d", c, j%10000)), []byte(value)); err != nil {
						fmt.Fprintln(os.Stderr, "put:", err)
						return
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		fmt.Printf("kaya writes idle-watchers=%d clients=%d val=%dB: %.0f puts/s; latency %s\n",
			watchers, clients, valSize, float64(len(lat))/duration.Seconds(), describe(lat))
	default:
		return fmt.Errorf("-mode %q: want latency or writes", mode)
	}
	return nil
}

func describe(d []time.Duration) string {
	if len(d) == 0 {
		return "none"
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	q := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	return fmt.Sprintf("avg %s p50 %s p99 %s max %s", (sum / time.Duration(len(d))).Round(time.Microsecond),
		q(0.5).Round(time.Microsecond), q(0.99).Round(time.Microsecond), d[len(d)-1].Round(time.Microsecond))
}
