package jepsen

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// runInMemory runs the workloads with clients concurrent clients of opsEach
// operations each against store, then the final reads, and returns the
// history and the checkers' verdicts.
func runInMemory(t *testing.T, store *memStore, workloads []string, clients, opsEach int, seed uint64) ([]Op, []Verdict, string) {
	t.Helper()
	ctx := context.Background()
	cl := memClient{store}
	if contains(workloads, WorkloadBank) {
		if err := setupBank(ctx, cl, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	h := newHistory(time.Now())
	shared := newTxnShared()
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		w := &worker{id: i, h: h, rng: rand.New(rand.NewPCG(seed, uint64(i))), workloads: workloads,
			opTimeout: time.Second, txn: cl, shared: shared, limit: opsEach}
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ctx)
		}()
	}
	wg.Wait()
	missing := finalTxnReads(ctx, cl, h, workloads, shared, t.Logf)
	if len(missing) > 0 {
		t.Fatalf("final reads failed: %v", missing)
	}
	dir := t.TempDir()
	ops := h.Ops()
	return ops, checkTxnWorkloads(ops, workloads, nil, 30*time.Second, dir), dir
}

func verdictOf(vs []Verdict, checker string) Verdict {
	for _, v := range vs {
		if v.Checker == checker {
			return v
		}
	}
	return Verdict{Checker: checker, Result: "missing"}
}

// The three workloads against a serializable store whose replies are
// sometimes lost (the operation applied at once, later or never): every
// checker passes, and the history has every kind of operation and
// outcome in it.
func TestTxnWorkloadsPassOnASerializableStore(t *testing.T) {
	store := newMemStore(1, memMode{unknownEvery: 15})
	ops, verdicts, _ := runInMemory(t, store, TxnWorkloads, 6, 400, 1)
	for _, name := range TxnWorkloads {
		if v := verdictOf(verdicts, name); v.Result != "ok" {
			t.Errorf("%s: %s: %s", name, v.Result, v.Detail)
		}
	}
	c := countOps(ops)
	for _, k := range []string{KindTxn, KindTransfer, KindBalances, KindCASRead, KindCASWrite, KindCAS} {
		if c.ByKind[k] == 0 {
			t.Errorf("no %s operations in the history: %v", k, c.ByKind)
		}
	}
	if c.Unknown == 0 || c.Fail == 0 {
		t.Errorf("the history has %d unknown and %d failed operations: the store's faults did not reach the checkers", c.Unknown, c.Fail)
	}
	res := CheckListAppend(ops)
	if res.Promoted == 0 || res.Unseen == 0 || res.Edges["rw"] == 0 || res.Edges["rt"] == 0 {
		t.Errorf("the list-append history is too thin to mean much: %s", res.Summary())
	}
	var swapped, refused int
	for _, op := range ops {
		if op.Kind == KindCAS && op.Status == StatusOK {
			if op.Swapped {
				swapped++
			} else {
				refused++
			}
		}
	}
	if swapped == 0 || refused == 0 {
		t.Errorf("compare-and-swaps: %d swapped, %d not: want both", swapped, refused)
	}
	t.Logf("%v; list-append: %s", c.ByKind, res.Summary())
}

// The planted bug "skip read validation" (snapshot isolation): write skew
// commits, and the list-append checker finds G2 cycles. The race that
// produces it depends on the scheduler: a few seeds are tried.
func TestTxnWorkloadsCatchSkippedReadValidation(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		store := newMemStore(seed, memMode{skipReadValidation: true})
		_, verdicts, dir := runInMemory(t, store, []string{WorkloadListAppend}, 8, 300, seed)
		v := verdictOf(verdicts, WorkloadListAppend)
		if v.Result == "ok" {
			t.Logf("seed %d: no anomaly (%s)", seed, v.Detail)
			continue
		}
		if v.Result != "violation" || !strings.Contains(v.Detail, AnomalyG2) || !strings.Contains(v.Detail, "not serializable") {
			t.Fatalf("seed %d: %s: %s; want G2 cycles", seed, v.Result, v.Detail)
		}
		report, err := os.ReadFile(v.Report)
		if err != nil || v.Report == "" || !strings.HasPrefix(v.Report, dir) {
			t.Fatalf("the report %q: %v", v.Report, err)
		}
		if !strings.Contains(string(report), "G2: T") || !strings.Contains(string(report), "-rw-> T") {
			t.Fatalf("the report does not show a G2 cycle:\n%s", report)
		}
		return
	}
	t.Fatal("five runs with read validation skipped passed the list-append checker")
}

// A store that validates nothing loses updates: the bank's money changes,
// and its checker says so.
func TestTxnWorkloadsCatchLostUpdatesInTheBank(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		store := newMemStore(seed, memMode{skipAllValidation: true})
		_, verdicts, _ := runInMemory(t, store, []string{WorkloadBank}, 8, 300, seed)
		v := verdictOf(verdicts, WorkloadBank)
		if v.Result == "ok" {
			continue
		}
		if v.Result != "violation" || !strings.Contains(v.Detail, "sum to") {
			t.Fatalf("seed %d: %s: %s", seed, v.Result, v.Detail)
		}
		return
	}
	t.Fatal("five runs of a store without validation passed the bank checker")
}

// The bank checker on hand-built reads.
func TestBankChecker(t *testing.T) {
	bal := func(final bool, b ...int64) Op {
		return Op{Kind: KindBalances, Status: StatusOK, Balances: b, Final: final}
	}
	for _, tc := range []struct {
		name string
		ops  []Op
		want string // result
		in   string // in the detail
	}{
		{"good", []Op{bal(false, 3, 7), {Kind: KindTransfer, Status: StatusOK}, bal(true, 5, 5)}, "ok", "2 committed reads"},
		{"a read with the wrong total", []Op{bal(false, 3, 8), bal(true, 5, 5)}, "violation", "sum to 11, not 10"},
		{"a negative balance", []Op{bal(false, -1, 11), bal(true, 5, 5)}, "violation", "negative: bank/0 = -1"},
		{"a final read with the wrong total", []Op{bal(true, 5, 4)}, "violation", "final read"},
		{"a missing account", []Op{bal(false, 10), bal(true, 5, 5)}, "violation", "1 balances, want 2"},
		{"an absent account", []Op{{Kind: KindBalances, Status: StatusOK, Balances: []int64{0, 10}, Error: "bank/0 is absent"}, bal(true, 5, 5)}, "violation", "bank/0 is absent"},
		{"reads that did not commit are not checked", []Op{{Kind: KindBalances, Status: StatusUnknown, Balances: []int64{1, 1}}, bal(true, 5, 5)}, "ok", ""},
		{"no final read", []Op{bal(false, 5, 5)}, "unknown", "no final read"},
	} {
		v := checkBank(tc.ops, 2, 10)
		if v.Result != tc.want || !strings.Contains(v.Detail, tc.in) {
			t.Errorf("%s: %s: %s; want %s with %q", tc.name, v.Result, v.Detail, tc.want, tc.in)
		}
	}
}

// The CAS register model: a swap must agree with the state it found; an
// unknown swap may take effect at any later point or never.
func TestCASModel(t *testing.T) {
	ms := func(x int64) int64 { return x * 1e6 }
	w := func(c int, v int64, call, ret int64) Op {
		return Op{Client: c, Kind: KindCASWrite, Key: "cas/0", Value: v, Call: ms(call), Return: ms(ret), Status: StatusOK}
	}
	r := func(c int, v int64, call, ret int64) Op {
		return Op{Client: c, Kind: KindCASRead, Key: "cas/0", Value: v, Call: ms(call), Return: ms(ret), Status: StatusOK}
	}
	cas := func(c int, old, new int64, swapped bool, status string, call, ret int64) Op {
		return Op{Client: c, Kind: KindCAS, Key: "cas/0", Old: old, Value: new, Swapped: swapped, Call: ms(call), Return: ms(ret), Status: status}
	}
	for _, tc := range []struct {
		name string
		ops  []Op
		ok   bool
	}{
		{"a swap that found its value", []Op{w(0, 1, 0, 1), cas(1, 1, 2, true, StatusOK, 2, 3), r(0, 2, 4, 5)}, true},
		{"a swap that did not find its value", []Op{w(0, 1, 0, 1), cas(1, 3, 2, false, StatusOK, 2, 3), r(0, 1, 4, 5)}, true},
		{"a swap on an absent key", []Op{cas(1, 1, 2, false, StatusOK, 0, 1), r(0, 0, 2, 3)}, true},
		{"concurrent swaps, one wins", []Op{w(0, 1, 0, 1), cas(1, 1, 2, true, StatusOK, 2, 5), cas(2, 1, 3, false, StatusOK, 2, 5), r(0, 2, 6, 7)}, true},
		{"two swaps from the same value both win", []Op{w(0, 1, 0, 1), cas(1, 1, 2, true, StatusOK, 2, 5), cas(2, 1, 3, true, StatusOK, 2, 5)}, false},
		{"a swap that claims a win over another value", []Op{w(0, 1, 0, 1), cas(1, 4, 2, true, StatusOK, 2, 3)}, false},
		{"a swap that claims a loss over its own value", []Op{w(0, 1, 0, 1), cas(1, 1, 2, false, StatusOK, 2, 3)}, false},
		{"a swap whose effect is not read", []Op{w(0, 1, 0, 1), cas(1, 1, 2, true, StatusOK, 2, 3), r(0, 1, 4, 5)}, false},
		{"an unknown swap seen much later", []Op{w(0, 1, 0, 1), cas(1, 1, 2, false, StatusUnknown, 2, 3), r(0, 1, 4, 5), r(0, 2, 6, 7)}, true},
		{"an unknown swap never applied", []Op{w(0, 1, 0, 1), cas(1, 1, 2, false, StatusUnknown, 2, 3), r(0, 1, 4, 5), w(0, 3, 6, 7), r(0, 3, 8, 9)}, true},
		{"a failed swap is never applied", []Op{w(0, 1, 0, 1), cas(1, 1, 2, false, StatusFail, 2, 3), r(0, 2, 4, 5)}, false},
	} {
		if got := porcupine.CheckOperations(casModel, casOps(tc.ops)); got != tc.ok {
			t.Errorf("%s: linearizable = %v, want %v", tc.name, got, tc.ok)
		}
	}
}

// The default set leaves the transactional workloads out until the client
// supports them; they can always be named.
func TestWorkloadSets(t *testing.T) {
	all, err := ParseWorkloads("all")
	if err != nil {
		t.Fatal(err)
	}
	if got := slices.ContainsFunc(all, func(w string) bool { return contains(TxnWorkloads, w) }); got != txnWorkloadsByDefault {
		t.Fatalf("all = %v with txnWorkloadsByDefault %v", all, txnWorkloadsByDefault)
	}
	named, err := ParseWorkloads("register,list-append,bank,cas-register")
	if err != nil || len(named) != 4 {
		t.Fatalf("naming the transactional workloads: %v %v", named, err)
	}
	if _, err := ParseWorkloads("append"); err == nil || !strings.Contains(err.Error(), "list-append") {
		t.Fatalf("an unknown workload: %v", err)
	}
	if PlantedBugs["skip-read-validation"] == "" || !slices.Equal(PlantedBugWorkloads["skip-read-validation"], []string{WorkloadListAppend}) {
		t.Fatal("the skip-read-validation planted bug is not wired")
	}
	if !txnWorkloadsByDefault {
		_, err := Run(context.Background(), Config{Bin: "/nonexistent", Workloads: []string{WorkloadBank}, ReportDir: t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), "issue 13") {
			t.Fatalf("running a transactional workload without a client for it: %v", err)
		}
	}
}

// unsupported answers every request as a server without transactions.
type unsupported struct{ memClient }

var errUnsupported = errors.New("not supported by the server")

func (unsupported) Begin(context.Context) (TxnHandle, error) { return nil, errUnsupported }

// A cluster that does not serve transactions stops the run before the
// workload (not a VALID run with nothing in it); a history in which no
// transaction committed is not called valid either.
func TestTxnWorkloadsNeedTransactions(t *testing.T) {
	err := probeTxns(context.Background(), unsupported{memClient{newMemStore(1, memMode{})}}, TxnWorkloads, 0)
	if err == nil || !strings.Contains(err.Error(), "BEGIN: not supported") || !strings.Contains(err.Error(), "does not serve") {
		t.Fatalf("probe of a server without transactions: %v", err)
	}
	if err := probeTxns(context.Background(), memClient{newMemStore(1, memMode{})}, TxnWorkloads, 0); err != nil {
		t.Fatalf("probe of a store with transactions: %v", err)
	}
	ops := []Op{tx(0, StatusFail, 0, 1, ap("la/0", 1)), final(2, rd("la/0"))}
	if v := listAppendVerdict(ops, nil, ""); v.Result != "unknown" || !strings.Contains(v.Detail, "no transaction of the workload committed") {
		t.Fatalf("a history without a committed transaction: %s: %s", v.Result, v.Detail)
	}
}
