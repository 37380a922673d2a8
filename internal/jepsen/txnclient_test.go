package jepsen

// The adapter (txnclient.go) end to end, before a server has
// transactions: the real Go client over the real protocol against
// internal/wire/wiretest's in-memory model of a leader (branch
// i13-txnapi). Tagged like the adapter; drop the tag with it.

import (
	"bufio"
	"context"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kayadb/kayadb/client"
	"github.com/kayadb/kayadb/internal/wire"
	"github.com/kayadb/kayadb/internal/wire/wiretest"
)

// modelServer serves wiretest's in-memory model of a leader over TCP: the
// real client and the adapter speak the real protocol to it.
func modelServer(t *testing.T, m *wiretest.Model) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[nc] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				br, bw := bufio.NewReader(nc), bufio.NewWriter(nc)
				var buf []byte
				for {
					op, p, b, err := wire.ReadRequest(br, buf)
					if err != nil {
						return
					}
					buf = b
					var st wire.Status
					var reply []byte
					switch op {
					case wire.OpHello:
						reply = wire.AppendHello(nil, 1)
					case wire.OpHealth:
						reply = wire.AppendHealth(nil, wire.HealthLeader)
					default:
						st, reply = m.Handle(op, p)
					}
					bw.Write(wire.AppendResponse(nil, st, reply))
					if br.Buffered() == 0 && bw.Flush() != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// runThroughAdapter runs the workloads with the real client, through the
// adapter, against the model.
func runThroughAdapter(t *testing.T, m *wiretest.Model, workloads []string, clients, opsEach int, seed uint64) []Verdict {
	t.Helper()
	addr := modelServer(t, m)
	dial := func() TxnClient {
		cl, err := client.New([]string{addr}, &client.Options{RequestTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		tc, err := txnClientFor(cl)
		if err != nil {
			t.Fatal(err)
		}
		return tc
	}
	ctx := context.Background()
	admin := dial()
	if contains(workloads, WorkloadBank) {
		if err := setupBank(ctx, admin, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	h := newHistory(time.Now())
	shared := newTxnShared()
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		w := &worker{id: i, h: h, rng: newRand(seed, i), workloads: workloads, opTimeout: 2 * time.Second,
			txn: dial(), shared: shared, limit: opsEach}
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ctx)
		}()
	}
	wg.Wait()
	if missing := finalTxnReads(ctx, admin, h, workloads, shared, t.Logf); len(missing) > 0 {
		t.Fatalf("final reads: %v", missing)
	}
	ops := h.Ops()
	c := countOps(ops)
	t.Logf("%v ok %d fail %d unknown %d; errors %v", c.ByKind, c.OK, c.Fail, c.Unknown, errorSummary(ops, 3))
	return checkTxnWorkloads(ops, workloads, nil, 30*time.Second, t.TempDir())
}

// The adapter over the real client against a serializable leader: every
// checker passes; against one that validates only writes (what the
// skip-read-validation planted bug does), the list-append checker finds
// G2.
func TestAdapterAgainstTheWireModel(t *testing.T) {
	verdicts := runThroughAdapter(t, wiretest.New(), TxnWorkloads, 6, 300, 1)
	for _, name := range TxnWorkloads {
		if v := verdictOf(verdicts, name); v.Result != "ok" {
			t.Errorf("%s: %s: %s", name, v.Result, v.Detail)
		}
	}
	for seed := uint64(1); seed <= 5; seed++ {
		m := wiretest.New()
		m.SetSnapshotIsolation(true)
		v := verdictOf(runThroughAdapter(t, m, []string{WorkloadListAppend}, 8, 300, seed), WorkloadListAppend)
		if v.Result == "violation" && strings.Contains(v.Detail, AnomalyG2) {
			return
		}
		t.Logf("seed %d: %s: %s", seed, v.Result, v.Detail)
	}
	t.Fatal("snapshot isolation passed the list-append checker five times")
}

func newRand(seed uint64, i int) *rand.Rand { return rand.New(rand.NewPCG(seed, uint64(i))) }
