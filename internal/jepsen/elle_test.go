package jepsen

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// A small language for hand-built list-append histories.

func ap(k string, v int64) Mop { return Mop{F: MopAppend, Key: k, Value: v} }

func rd(k string, l ...int64) Mop { return Mop{F: MopRead, Key: k, List: l} }

// tx is a transaction of client c, invoked at call and completed at ret
// (milliseconds).
func tx(c int, status string, call, ret int64, mops ...Mop) Op {
	return Op{Client: c, Kind: KindTxn, Status: status, Call: call * 1e6, Return: ret * 1e6, Txn: mops}
}

func final(call int64, mops ...Mop) Op {
	op := tx(99, StatusOK, call, call+1, mops...)
	op.Final = true
	return op
}

// expectAnomalies checks that the history has exactly the anomaly types
// want (none: valid), and that every example's text names its
// transactions.
func expectAnomalies(t *testing.T, name string, ops []Op, want ...string) *ElleResult {
	t.Helper()
	res := CheckListAppend(ops)
	got := res.Types()
	slices.Sort(want)
	if !slices.Equal(got, want) || res.Unchecked != "" {
		t.Errorf("%s: anomalies %v, want %v\n%s", name, got, want, res.Text())
		return res
	}
	if res.Valid() != (len(want) == 0) {
		t.Errorf("%s: Valid() = %v with anomalies %v", name, res.Valid(), got)
	}
	for _, a := range res.Anomalies {
		if !strings.HasPrefix(a.Text, a.Type) {
			t.Errorf("%s: the text of a %s does not start with its type: %q", name, a.Type, a.Text)
		}
		for _, i := range a.Txns {
			if !strings.Contains(a.Text, fmt.Sprintf("T%d = client", i)) {
				t.Errorf("%s: the %s text does not write out T%d:\n%s", name, a.Type, i, a.Text)
			}
		}
	}
	return res
}

// Planted anomalies, one per class: each must be found, and nothing else.
func TestElleCatchesPlantedAnomalies(t *testing.T) {
	for _, tc := range []struct {
		name string
		ops  []Op
		want []string
	}{
		{"G0: write cycle", []Op{
			// x's order says T0 then T1; y's says T1 then T0.
			tx(0, StatusOK, 0, 10, ap("x", 1), ap("y", 2)),
			tx(1, StatusOK, 0, 10, ap("x", 2), ap("y", 1)),
			final(20, rd("x", 1, 2), rd("y", 1, 2)),
		}, []string{AnomalyG0}},
		{"G1a: aborted read", []Op{
			tx(0, StatusFail, 0, 10, ap("x", 1)),
			tx(1, StatusOK, 20, 30, rd("x", 1)),
		}, []string{AnomalyG1a}},
		{"G1b: intermediate read", []Op{
			// T1 also saw part of T0 and missed the rest: a G-single too.
			tx(0, StatusOK, 0, 10, ap("x", 1), ap("x", 2)),
			tx(1, StatusOK, 20, 30, rd("x", 1)),
		}, []string{AnomalyG1b, AnomalyGSingle}},
		{"G1c: circular information flow", []Op{
			tx(0, StatusOK, 0, 10, ap("x", 1), rd("y", 1)),
			tx(1, StatusOK, 0, 10, ap("y", 1), rd("x", 1)),
		}, []string{AnomalyG1c}},
		{"G-single: read skew", []Op{
			tx(0, StatusOK, 0, 10, ap("x", 1), ap("y", 1)),
			tx(1, StatusOK, 0, 10, rd("x"), rd("y", 1)),
		}, []string{AnomalyGSingle}},
		{"G2: write skew", []Op{
			tx(0, StatusOK, 0, 10, rd("x"), ap("y", 1)),
			tx(1, StatusOK, 0, 10, rd("y"), ap("x", 1)),
			final(20, rd("x", 1), rd("y", 1)),
		}, []string{AnomalyG2}},
		{"G-single-realtime: a stale read", []Op{
			tx(0, StatusOK, 0, 10, ap("x", 1)),
			tx(1, StatusOK, 20, 30, rd("x")),
			tx(2, StatusOK, 40, 50, rd("x", 1)),
		}, []string{AnomalyGSingle + realtimeSuffix}},
		{"G0-realtime: appends in the reverse of real-time order", []Op{
			tx(0, StatusOK, 0, 10, ap("x", 1)),
			tx(1, StatusOK, 20, 30, ap("x", 2)),
			final(40, rd("x", 2, 1)),
		}, []string{AnomalyG0 + realtimeSuffix}},
		{"incompatible orders", []Op{
			tx(0, StatusOK, 0, 10, ap("x", 1)),
			tx(1, StatusOK, 0, 10, ap("x", 2)),
			tx(2, StatusOK, 20, 30, rd("x", 1, 2)),
			tx(3, StatusOK, 20, 30, rd("x", 2, 1)),
		}, []string{AnomalyIncompatibleOrder}},
		{"duplicate elements", []Op{
			tx(0, StatusOK, 0, 10, ap("x", 1)),
			tx(1, StatusOK, 20, 30, rd("x", 1, 1)),
		}, []string{AnomalyDuplicate}},
		{"an element nobody appended", []Op{
			tx(1, StatusOK, 20, 30, rd("x", 7)),
		}, []string{AnomalyGarbage}},
		{"internal: a read that misses the transaction's own append", []Op{
			tx(0, StatusOK, 0, 10, ap("x", 1), rd("x")),
		}, []string{AnomalyInternal}},
		{"internal: a future read", []Op{
			tx(0, StatusOK, 0, 10, rd("x", 1), ap("x", 1)),
		}, []string{AnomalyInternal}},
		{"lost append", []Op{
			tx(0, StatusOK, 0, 10, ap("x", 1)),
			tx(1, StatusOK, 0, 10, ap("x", 2)),
			tx(2, StatusOK, 20, 30, rd("x", 1, 2)),
			final(40, rd("x", 1)),
		}, []string{AnomalyLostAppend, AnomalyGSingle + realtimeSuffix}}, // the final read is also stale
		{"lost append of an unknown transaction seen committed", []Op{
			tx(0, StatusUnknown, 0, 10, ap("x", 1)),
			tx(1, StatusOK, 0, 10, rd("x", 1)),
			final(40, rd("x")),
		}, []string{AnomalyLostAppend, AnomalyGSingle + realtimeSuffix}},
		{"an unknown transaction seen committed: its stale read counts", []Op{
			tx(0, StatusOK, 0, 10, ap("x", 1)),
			// T1 began after T0 completed but did not see its append;
			// its commit timed out, and T2 saw its append to y.
			tx(1, StatusUnknown, 20, 30, rd("x"), ap("y", 5)),
			tx(2, StatusOK, 40, 50, rd("y", 5)),
		}, []string{AnomalyGSingle + realtimeSuffix}},
	} {
		t.Run(tc.name, func(t *testing.T) { expectAnomalies(t, tc.name, tc.ops, tc.want...) })
	}
}

// Histories that are strict serializable must pass, whatever the overlap
// and however many outcomes are unknown.
func TestElleAcceptsValidHistories(t *testing.T) {
	for _, tc := range []struct {
		name string
		ops  []Op
	}{
		{"serial", []Op{
			tx(0, StatusOK, 0, 10, ap("x", 1), rd("x", 1)),
			tx(1, StatusOK, 20, 30, rd("x", 1), ap("y", 1), ap("x", 2)),
			tx(0, StatusOK, 40, 50, rd("x", 1, 2), rd("y", 1)),
			final(60, rd("x", 1, 2), rd("y", 1)),
		}},
		{"concurrent, serializable in an order real time allows", []Op{
			tx(0, StatusOK, 0, 100, ap("x", 1)),
			tx(1, StatusOK, 10, 50, rd("x")),          // before T0
			tx(2, StatusOK, 60, 120, rd("x", 1)),      // after T0
			tx(3, StatusOK, 5, 115, rd("x"), rd("y")), // before T0
			final(130, rd("x", 1)),
		}},
		{"an unknown transaction seen", []Op{
			tx(0, StatusUnknown, 0, 10, ap("x", 1)),
			tx(1, StatusOK, 20, 30, rd("x", 1)),
			final(40, rd("x", 1)),
		}},
		{"an unknown transaction never seen, missing from the final read", []Op{
			tx(0, StatusUnknown, 0, 10, ap("x", 1)),
			tx(1, StatusOK, 20, 30, rd("x")),
			final(40, rd("x")),
		}},
		{"an unknown transaction committed later than its timeout", []Op{
			// T0 timed out at 10; T1 (20–30) did not see it; T2 did. T0
			// may have committed after T1: no real-time edge out of it.
			tx(0, StatusUnknown, 0, 10, ap("x", 1)),
			tx(1, StatusOK, 20, 30, rd("x")),
			tx(2, StatusOK, 100, 110, rd("x", 1)),
		}},
		{"an unknown transaction never seen, with reads no serial order allows", []Op{
			tx(0, StatusOK, 0, 10, ap("x", 1)),
			tx(1, StatusUnknown, 20, 30, rd("x"), ap("y", 1)), // never committed
			final(40, rd("x", 1), rd("y")),
		}},
		{"a failed transaction's reads do not count", []Op{
			tx(0, StatusOK, 0, 10, ap("x", 1)),
			tx(1, StatusFail, 20, 30, rd("x", 5, 5, 1), ap("x", 9)),
			final(40, rd("x", 1)),
		}},
		{"reads of the transaction's own appends", []Op{
			tx(0, StatusOK, 0, 10, ap("x", 1)),
			tx(1, StatusOK, 20, 30, rd("x", 1), ap("x", 2), rd("x", 1, 2), ap("x", 3), rd("x", 1, 2, 3)),
			tx(2, StatusOK, 20, 30, ap("y", 1), rd("y", 1)),
			final(40, rd("x", 1, 2, 3), rd("y", 1)),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { expectAnomalies(t, tc.name, tc.ops) })
	}
}

// A harness bug (an element appended twice) is not a verdict on the
// database.
func TestElleRefusesDuplicateAppends(t *testing.T) {
	res := CheckListAppend([]Op{tx(0, StatusOK, 0, 1, ap("x", 1)), tx(1, StatusOK, 0, 1, ap("x", 1))})
	if res.Unchecked == "" || res.Valid() {
		t.Fatalf("duplicate appends: %+v", res)
	}
}

// The report of a cycle names its steps: which key, which elements.
func TestElleExplainsCycles(t *testing.T) {
	res := CheckListAppend([]Op{
		tx(0, StatusOK, 0, 10, rd("x"), ap("y", 1)),
		tx(1, StatusOK, 0, 10, rd("y"), ap("x", 1)),
	})
	text := res.Text()
	for _, want := range []string{
		"G2: T0 → T1 → T0",
		"T0 -rw-> T1: T0 read x empty, and T1 appended 1 to it",
		"T1 -rw-> T0: T1 read y empty, and T0 appended 1 to it",
		"T0 = client 0, ok, 0.000s–0.010s: [r x []; append y 1]",
		"not serializable",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the report lacks %q:\n%s", want, text)
		}
	}
}

// genSerialHistory runs n random transactions one after another against a
// model (a map of lists) and records them as a history whose real-time
// intervals overlap but contain each transaction's serialization point:
// strict serializable by construction. Some outcomes are unknown (applied
// or not) and some failed (not applied), and a final read of every key
// ends it.
func genSerialHistory(rng *rand.Rand, n, keys int) []Op {
	lists := map[string][]int64{}
	next := map[string]int64{}
	var ops []Op
	key := func() string { return fmt.Sprintf("k%d", rng.IntN(keys)) }
	for i := 0; i < n; i++ {
		applied := true
		status := StatusOK
		switch r := rng.IntN(20); {
		case r == 0:
			status, applied = StatusFail, false
		case r == 1:
			status, applied = StatusUnknown, false
		case r <= 3:
			status = StatusUnknown
		}
		// Execute on a copy; keep it only if applied.
		work := map[string][]int64{}
		get := func(k string) []int64 {
			if l, ok := work[k]; ok {
				return l
			}
			return lists[k]
		}
		var mops []Mop
		for m := 1 + rng.IntN(4); m > 0; m-- {
			k := key()
			if rng.IntN(2) == 0 {
				mops = append(mops, rd(k, slices.Clone(get(k))...))
			} else {
				next[k]++
				work[k] = append(slices.Clone(get(k)), next[k])
				mops = append(mops, ap(k, next[k]))
			}
		}
		if applied {
			for k, l := range work {
				lists[k] = l
			}
		}
		at := int64(i) * 100
		ops = append(ops, tx(rng.IntN(5), status, at-rng.Int64N(150), at+rng.Int64N(150), mops...))
	}
	var reads []Mop
	for k := 0; k < keys; k++ {
		reads = append(reads, rd(fmt.Sprintf("k%d", k), lists[fmt.Sprintf("k%d", k)]...))
	}
	ops = append(ops, final(int64(n)*100+200, reads...))
	return ops
}

// cloneOps deep-copies a history so that a mutation leaves the original
// alone.
func cloneOps(ops []Op) []Op {
	out := slices.Clone(ops)
	for i := range out {
		out[i].Txn = slices.Clone(out[i].Txn)
		for j := range out[i].Txn {
			out[i].Txn[j].List = slices.Clone(out[i].Txn[j].List)
		}
	}
	return out
}

// readRef names one read micro-op of a history.
type readRef struct{ op, mop int }

// mutation plants one anomaly in a valid history: it returns the mutated
// history and the anomaly types of which at least one must be found, or
// false when the history offers no place for it.
type mutation struct {
	name  string
	apply func(rng *rand.Rand, ops []Op) ([]Op, []string, bool)
}

// writerOf maps key → element → op index.
func writerOf(ops []Op) map[string]map[int64]int {
	w := map[string]map[int64]int{}
	for i, op := range ops {
		for _, m := range op.Txn {
			if m.F == MopAppend {
				if w[m.Key] == nil {
					w[m.Key] = map[int64]int{}
				}
				w[m.Key][m.Value] = i
			}
		}
	}
	return w
}

// touches reports whether op has any micro-op on key other than mop j.
func touchesElsewhere(op Op, key string, j int) bool {
	for i, m := range op.Txn {
		if i != j && m.Key == key {
			return true
		}
	}
	return false
}

// pick returns a random element of the candidates.
func pick[T any](rng *rand.Rand, c []T) (T, bool) {
	var zero T
	if len(c) == 0 {
		return zero, false
	}
	return c[rng.IntN(len(c))], true
}

var cycleTypes = []string{AnomalyGSingle, AnomalyG2, AnomalyGSingle + realtimeSuffix, AnomalyG2 + realtimeSuffix}

var mutations = []mutation{
	{"drop an acknowledged element from the final read", func(rng *rand.Rand, ops []Op) ([]Op, []string, bool) {
		w := writerOf(ops)
		fi := len(ops) - 1
		var c []readRef
		for j, m := range ops[fi].Txn {
			for p, v := range m.List {
				if ops[w[m.Key][v]].Status == StatusOK {
					c = append(c, readRef{j, p})
				}
			}
		}
		r, ok := pick(rng, c)
		if !ok {
			return nil, nil, false
		}
		ops = cloneOps(ops)
		l := &ops[fi].Txn[r.op].List
		*l = slices.Delete(*l, r.mop, r.mop+1)
		return ops, []string{AnomalyLostAppend}, true
	}},
	{"swap the last two elements of a read", func(rng *rand.Rand, ops []Op) ([]Op, []string, bool) {
		var c []readRef
		for i, op := range ops[:len(ops)-1] {
			for j, m := range op.Txn {
				if op.Status == StatusOK && m.F == MopRead && len(m.List) >= 2 && !touchesElsewhere(op, m.Key, j) {
					c = append(c, readRef{i, j})
				}
			}
		}
		r, ok := pick(rng, c)
		if !ok {
			return nil, nil, false
		}
		ops = cloneOps(ops)
		l := ops[r.op].Txn[r.mop].List
		l[len(l)-1], l[len(l)-2] = l[len(l)-2], l[len(l)-1]
		return ops, []string{AnomalyIncompatibleOrder}, true
	}},
	{"fail a transaction whose append was read", func(rng *rand.Rand, ops []Op) ([]Op, []string, bool) {
		w := writerOf(ops)
		var c []int
		for i, op := range ops {
			for _, m := range op.Txn {
				for _, v := range m.List {
					if wi := w[m.Key][v]; m.F == MopRead && op.Status == StatusOK && wi != i {
						c = append(c, wi)
					}
				}
			}
		}
		wi, ok := pick(rng, c)
		if !ok {
			return nil, nil, false
		}
		ops = cloneOps(ops)
		ops[wi].Status = StatusFail
		return ops, []string{AnomalyG1a}, true
	}},
	{"duplicate an element of a read", func(rng *rand.Rand, ops []Op) ([]Op, []string, bool) {
		var c []readRef
		for i, op := range ops {
			for j, m := range op.Txn {
				if op.Status == StatusOK && m.F == MopRead && len(m.List) > 0 {
					c = append(c, readRef{i, j})
				}
			}
		}
		r, ok := pick(rng, c)
		if !ok {
			return nil, nil, false
		}
		ops = cloneOps(ops)
		l := &ops[r.op].Txn[r.mop].List
		p := rng.IntN(len(*l))
		*l = slices.Insert(*l, p, (*l)[p])
		return ops, []string{AnomalyDuplicate}, true
	}},
	{"cut a read after a transaction's first of two appends", func(rng *rand.Rand, ops []Op) ([]Op, []string, bool) {
		w := writerOf(ops)
		var c []readRef
		for i, op := range ops {
			for j, m := range op.Txn {
				if op.Status != StatusOK || m.F != MopRead || touchesElsewhere(op, m.Key, j) {
					continue
				}
				for p := 1; p < len(m.List); p++ {
					a, b := w[m.Key][m.List[p-1]], w[m.Key][m.List[p]]
					if a == b && a != i {
						c = append(c, readRef{i, j*1000 + p})
					}
				}
			}
		}
		r, ok := pick(rng, c)
		if !ok {
			return nil, nil, false
		}
		ops = cloneOps(ops)
		m := &ops[r.op].Txn[r.mop/1000]
		m.List = m.List[:r.mop%1000]
		return ops, []string{AnomalyG1b}, true
	}},
	{"make a read miss the last append it saw (stale read)", func(rng *rand.Rand, ops []Op) ([]Op, []string, bool) {
		w := writerOf(ops)
		var c []readRef
		for i, op := range ops {
			for j, m := range op.Txn {
				if op.Status != StatusOK || m.F != MopRead || len(m.List) == 0 || touchesElsewhere(op, m.Key, j) {
					continue
				}
				wi := w[m.Key][m.List[len(m.List)-1]]
				if ops[wi].Status == StatusOK && ops[wi].Return < op.Call {
					c = append(c, readRef{i, j})
				}
			}
		}
		r, ok := pick(rng, c)
		if !ok {
			return nil, nil, false
		}
		ops = cloneOps(ops)
		m := &ops[r.op].Txn[r.mop]
		m.List = m.List[:len(m.List)-1]
		return ops, cycleTypes, true
	}},
	{"make a read of one key miss an append whose other key the transaction saw (read skew)", func(rng *rand.Rand, ops []Op) ([]Op, []string, bool) {
		w := writerOf(ops)
		var c []readRef
		for i, op := range ops {
			for j, m := range op.Txn {
				if op.Status != StatusOK || m.F != MopRead || len(m.List) == 0 || touchesElsewhere(op, m.Key, j) {
					continue
				}
				wi := w[m.Key][m.List[len(m.List)-1]]
				if wi == i {
					continue
				}
				// Does op read another key with an element of wi's?
				for j2, m2 := range op.Txn {
					if j2 != j && m2.F == MopRead && m2.Key != m.Key && slices.ContainsFunc(m2.List, func(v int64) bool { return w[m2.Key][v] == wi }) {
						c = append(c, readRef{i, j})
						break
					}
				}
			}
		}
		r, ok := pick(rng, c)
		if !ok {
			return nil, nil, false
		}
		ops = cloneOps(ops)
		m := &ops[r.op].Txn[r.mop]
		m.List = m.List[:len(m.List)-1]
		return ops, []string{AnomalyGSingle}, true
	}},
}

// Randomized: histories executed serially against a model must pass;
// each mutation that plants an anomaly must be caught; turning
// acknowledged outcomes into unknown ones, or garbling what failed and
// unknown-unseen transactions read, must still pass.
func TestElleRandomized(t *testing.T) {
	seeds := 300
	if testing.Short() {
		seeds = 60
	}
	applied := map[string]int{}
	for seed := 0; seed < seeds; seed++ {
		rng := rand.New(rand.NewPCG(uint64(seed), 13))
		ops := genSerialHistory(rng, 20+rng.IntN(60), 2+rng.IntN(4))
		if res := CheckListAppend(ops); !res.Valid() {
			t.Fatalf("seed %d: a serially executed history was rejected:\n%s\n%s", seed, res.Text(), dumpOps(ops))
		}
		// Sound with unknown outcomes.
		weak := cloneOps(ops)
		for i := range weak[:len(weak)-1] {
			if weak[i].Status == StatusOK && rng.IntN(3) == 0 {
				weak[i].Status = StatusUnknown
			}
		}
		if res := CheckListAppend(weak); !res.Valid() {
			t.Fatalf("seed %d: acknowledged outcomes made unknown were rejected:\n%s\n%s", seed, res.Text(), dumpOps(weak))
		}
		for _, m := range mutations {
			bad, want, ok := m.apply(rng, ops)
			if !ok {
				continue
			}
			applied[m.name]++
			res := CheckListAppend(bad)
			if !slices.ContainsFunc(res.Types(), func(t string) bool { return slices.Contains(want, t) }) {
				t.Fatalf("seed %d, %s: found %v, want one of %v:\n%s\n%s", seed, m.name, res.Types(), want, res.Text(), dumpOps(bad))
			}
		}
	}
	for _, m := range mutations {
		if applied[m.name] < seeds/10 {
			t.Errorf("mutation %q applied in only %d of %d histories: the generator does not exercise it", m.name, applied[m.name], seeds)
		}
	}
	t.Logf("mutations applied: %v", applied)
}

func dumpOps(ops []Op) string {
	var b strings.Builder
	for i, op := range ops {
		fmt.Fprintf(&b, "%d: c%d %s %d–%d final=%v %v\n", i, op.Client, op.Status, op.Call/1e6, op.Return/1e6, op.Final, op.Txn)
	}
	return b.String()
}

// BenchmarkCheckListAppend: the checker on a history the size of a long
// run (20,000 transactions over 200 keys).
func BenchmarkCheckListAppend(b *testing.B) {
	ops := genSerialHistory(rand.New(rand.NewPCG(1, 2)), 20000, 200)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if res := CheckListAppend(ops); !res.Valid() {
			b.Fatal(res.Summary())
		}
	}
}
