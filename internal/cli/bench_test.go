package cli

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kayadb/kayadb/client"
	"github.com/kayadb/kayadb/internal/wire"
)

// TestBenchReport: the summary etcd's benchmark prints, computed from
// known latencies: 1 ms to 100 ms, one of each, and four failures of two
// kinds.
func TestBenchReport(t *testing.T) {
	var lat []time.Duration
	for i := 100; i >= 1; i-- {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	failures := []error{
		fmt.Errorf("%w (%w)", client.ErrTimeout, errors.New("deadline")),
		fmt.Errorf("%w: x", client.ErrAmbiguous),
		fmt.Errorf("%w (%w)", client.ErrTimeout, errors.New("deadline 2")),
		fmt.Errorf("%w (%w)", client.ErrTimeout, errors.New("deadline 3")),
	}
	res := benchResult{Op: "put", Total: 104}
	benchReport(&res, lat, 2*time.Second, failures)
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	if !near(res.FastestMs, 1) || !near(res.MaxMs, 100) || !near(res.AverageMs, 50.5) ||
		math.Abs(res.StddevMs-math.Sqrt((100*100-1)/12.0)) > 1e-9 || !near(res.PerSecond, 50) || res.Errors != 4 {
		t.Fatalf("summary: %+v", res)
	}
	want := map[float64]float64{10: 10, 25: 25, 50: 50, 75: 75, 90: 90, 95: 95, 99: 99, 99.9: 100}
	if len(res.Percentiles) != len(benchPercentiles) {
		t.Fatalf("percentiles %v", res.Percentiles)
	}
	for _, p := range res.Percentiles {
		if !near(p.Ms, want[p.Percentile]) {
			t.Errorf("p%v = %v ms, want %v", p.Percentile, p.Ms, want[p.Percentile])
		}
	}
	if !near(res.P50Ms, 50) || !near(res.P99Ms, 99) || !near(res.P999Ms, 100) {
		t.Errorf("p50/p99/p99.9: %v %v %v", res.P50Ms, res.P99Ms, res.P999Ms)
	}
	n := 0
	for i, row := range res.Histogram {
		n += row.Count
		if i > 0 && row.UpToMs <= res.Histogram[i-1].UpToMs {
			t.Errorf("histogram bounds do not increase: %+v", res.Histogram)
		}
	}
	if len(res.Histogram) != benchHistBuckets+1 || n != 100 || !near(res.Histogram[0].UpToMs, 1) || !near(res.Histogram[benchHistBuckets].UpToMs, 100) {
		t.Fatalf("histogram %+v (%d requests)", res.Histogram, n)
	}
	if len(res.ErrorsByKind) != 2 || res.ErrorsByKind[0].Kind != "timeout" || res.ErrorsByKind[0].Count != 3 ||
		res.ErrorsByKind[1].Kind != "ambiguous (sent, outcome unknown)" || res.ErrorsByKind[1].Count != 1 {
		t.Fatalf("errors by kind %+v", res.ErrorsByKind)
	}

	var out bytes.Buffer
	writeBenchReport(&out, &res)
	for _, want := range []string{
		"Summary (put, ", "  Total:\t2.0000 secs.\n", "  Slowest:\t0.1000 secs.\n", "  Fastest:\t0.0010 secs.\n",
		"  Average:\t0.0505 secs.\n", "  Stddev:\t0.0289 secs.\n", "  Requests/sec:\t50.0000\n",
		"\nResponse time histogram:\n  0.0010 [1]\t|∎∎∎∎\n  0.0109 [9]\t|", "  0.1000 [10]\t|" + strings.Repeat("∎", 40) + "\n",
		"\nLatency distribution:\n  10% in 0.0100 secs.\n  25% in 0.0250 secs.\n", "  99.9% in 0.1000 secs.\n",
		"\nError distribution:\n  [3]\ttimeout (e.g. ", "  [1]\tambiguous (sent, outcome unknown) (e.g. ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

// TestBenchAgainstServer: a run against a server whose every fourth PUT
// fails: --json has the summary and the errors by kind, and the exit
// status is 1.
func TestBenchAgainstServer(t *testing.T) {
	node := newFakeNode(t)
	var mu sync.Mutex
	puts := 0
	node.setHandle(func(op wire.Opcode, p []byte) (wire.Status, []byte) {
		mu.Lock()
		defer mu.Unlock()
		if puts++; puts%4 == 0 {
			return wire.StatusError, wire.AppendError(nil, "disk full on node 1")
		}
		return wire.StatusOK, nil
	})
	out, errs, code := runCLI("--server", node.addr, "--json", "bench", "put", "--total", "200", "--clients", "4")
	var res benchResult
	decodeStrict(t, out, &res)
	if code != ExitError || !strings.Contains(errs, "50 of 200 requests failed") || res.Total != 200 || res.Errors != 50 ||
		len(res.ErrorsByKind) != 1 || res.ErrorsByKind[0].Count != 50 || !strings.Contains(res.ErrorsByKind[0].Example, "disk full on node 1") ||
		len(res.Percentiles) != 8 || len(res.Histogram) != benchHistBuckets+1 || res.PerSecond <= 0 || res.FastestMs > res.MaxMs {
		t.Fatalf("bench: %d %q\n%+v", code, errs, res)
	}
	out, _, _ = runCLI("--server", node.addr, "bench", "put", "--total", "40")
	for _, want := range []string{"Summary (put, 1 clients", "Requests/sec:", "Response time histogram:", "Latency distribution:", "Error distribution:\n  [10]\tambiguous"} {
		if !strings.Contains(out, want) {
			t.Errorf("human output lacks %q:\n%s", want, out)
		}
	}
}

// TestBenchScanAgainstServer: bench scan loads the key space into a real
// server, then scans prefixes of 100 keys; every scan succeeds, and the
// loaded keys are there. A key size too short for its prefixes is a usage
// error.
func TestBenchScanAgainstServer(t *testing.T) {
	addr := startServer(t)
	out, errs, code := runCLI("--server", addr, "--json", "bench", "scan", "--key-space", "250", "--total", "30", "--clients", "3")
	var res benchResult
	decodeStrict(t, out, &res)
	if code != 0 || res.Op != "scan" || res.Total != 30 || res.Errors != 0 || res.PerSecond <= 0 {
		t.Fatalf("bench scan: %d %q\n%+v", code, errs, res)
	}
	out, errs, code = runCLI("--server", addr, "scan", "--keys-only", "000001")
	if code != 0 || strings.Count(out, "\n") != 100 || !strings.HasPrefix(out, "00000100\n") {
		t.Fatalf("scan of a bench prefix: %d %q %q", code, out, errs)
	}
	_, errs, code = runCLI("--server", addr, "bench", "scan", "--key-size", "2")
	if code != ExitInvalidArgument || !strings.Contains(errs, "--key-size of at least 3") {
		t.Fatalf("bench scan --key-size 2: %d %q", code, errs)
	}
}

// TestPutRefusedByAFullDisk: a write a disk-full node refused is reported
// as refused (not applied), with what to do, and counted as such by bench.
func TestPutRefusedByAFullDisk(t *testing.T) {
	const refusal = "disk full on node 1: 0 B free, below the 4.0 MiB low-water mark (0 B free on /data); writes are refused until space is freed — free space or add capacity"
	node := newFakeNode(t)
	node.setHandle(func(op wire.Opcode, p []byte) (wire.Status, []byte) {
		if op == wire.OpPut {
			return wire.StatusError, wire.AppendError(nil, refusal)
		}
		return wire.StatusOK, nil
	})
	_, errs, code := runCLI("--server", node.addr, "put", "k", "v")
	if code != ExitError || !strings.Contains(errs, refusal) || !strings.Contains(errs, "the write was refused and not applied") ||
		strings.Contains(errs, "may or may not") {
		t.Fatalf("put: exit %d, stderr:\n%s", code, errs)
	}
	out, _, _ := runCLI("--server", node.addr, "bench", "put", "--total", "20")
	if !strings.Contains(out, "Error distribution:\n  [20]\tdisk full (refused, not applied)") {
		t.Errorf("bench output lacks the refusals' kind:\n%s", out)
	}
}
