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
	return runThroughAdapterWith(t, m, workloads, clients, opsEach, seed, txnClientFor)
}

// runThroughAdapterWith is runThroughAdapter with the adapter adapt.
func runThroughAdapterWith(t *testing.T, m *wiretest.Model, workloads []string, clients, opsEach int, seed uint64,
	adapt func(*client.Client) (TxnClient, error)) []Verdict {
	t.Helper()
	addr := modelServer(t, m)
	dial := func() TxnClient {
		cl, err := client.New([]string{addr}, &client.Options{RequestTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		tc, err := adapt(cl)
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

// The optimistic transactions (client.NewSTM) through the same workloads
// and checkers: every checker passes; an STM whose commit does not compare
// what it read (a planted bug, in this test only) is caught.
func TestSTMAdapterAgainstTheWireModel(t *testing.T) {
	verdicts := runThroughAdapterWith(t, wiretest.New(), TxnWorkloads, 6, 300, 1, STMClientFor)
	for _, name := range TxnWorkloads {
		if v := verdictOf(verdicts, name); v.Result != "ok" {
			t.Errorf("%s: %s: %s", name, v.Result, v.Detail)
		}
	}
	for seed := uint64(1); seed <= 5; seed++ {
		v := verdictOf(runThroughAdapterWith(t, wiretest.New(), []string{WorkloadListAppend}, 8, 300, seed, blindSTMFor), WorkloadListAppend)
		if v.Result == "violation" {
			t.Logf("seed %d: the blind STM is caught: %s", seed, v.Detail)
			return
		}
		t.Logf("seed %d: %s: %s", seed, v.Result, v.Detail)
	}
	t.Fatal("an STM that validates nothing passed the list-append checker five times")
}

// blindSTMFor is a broken STM: reads as RunSTM's do, writes applied by a
// KAYA_TXN without compares (no validation at all).
func blindSTMFor(cl *client.Client) (TxnClient, error) { return blindTxns{clientTxns{cl}}, nil }

type blindTxns struct{ clientTxns }

func (c blindTxns) Begin(ctx context.Context) (TxnHandle, error) {
	return &blindTxn{cl: c.cl, ctx: ctx, writes: map[string][]byte{}}, nil
}

type blindTxn struct {
	cl     *client.Client
	ctx    context.Context
	order  []string
	writes map[string][]byte // nil value: delete
}

func (t *blindTxn) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	if v, ok := t.writes[string(key)]; ok {
		return v, v != nil, nil
	}
	return found(t.cl.Get(ctx, key))
}
func (t *blindTxn) Put(_ context.Context, key, value []byte) error { t.put(key, value); return nil }
func (t *blindTxn) Delete(_ context.Context, key []byte) error     { t.put(key, nil); return nil }
func (t *blindTxn) put(key, value []byte) {
	if _, ok := t.writes[string(key)]; !ok {
		t.order = append(t.order, string(key))
	}
	t.writes[string(key)] = value
}
func (t *blindTxn) Commit(ctx context.Context) error {
	var ops []client.Op
	for _, k := range t.order {
		if v := t.writes[k]; v != nil {
			ops = append(ops, client.OpPut([]byte(k), v))
		} else {
			ops = append(ops, client.OpDelete([]byte(k)))
		}
	}
	if len(ops) == 0 {
		return nil
	}
	_, err := t.cl.Txn(ctx).Then(ops...).Commit()
	return err
}
func (t *blindTxn) Rollback(context.Context) error { return nil }
