package jepsen

// The list-append checker, in the style of Elle (Kingsbury & Alvaro,
// "Elle: Inferring Isolation Anomalies from Experimental Observations",
// VLDB 2020).
//
// Each transaction is a list of micro-ops: append(k, v), which adds v to
// the end of the list under key k, and read(k), which returns the whole
// list. Every appended value is unique per key, so a read names, element
// by element, the transactions whose appends it saw, in the order the
// database applied them. That makes the version order of every key
// observable: it is the longest list any committed read returned, and every
// other read of the key must be a prefix of it (otherwise no total order of
// appends explains the reads: an "incompatible-order" anomaly).
//
// From the version orders the checker derives Adya's dependencies between
// committed transactions:
//
//   - ww: Tj appended the element right after Ti's in k's order;
//   - wr: Tj read k and the last element it saw (not counting its own
//     appends) is Ti's;
//   - rw: Ti read a state of k and Tj appended the next element (Ti did not
//     see Tj's append);
//   - rt: Ti completed before Tj was invoked (real time; what strict
//     serializability adds to serializability).
//
// A cycle in this graph is an anomaly, classified by its edges as Adya
// does: G0 (ww only: a write cycle), G1c (ww and wr: a circular
// information flow), G-single (exactly one rw: read skew, the anomaly
// snapshot isolation forbids), G2 (two or more rw: write skew, the one
// only serializability forbids); a cycle that needs an rt edge carries the
// suffix "-realtime": serializable, but not strictly. Beside cycles, the
// checker looks at single transactions and single reads: G1a (a read saw
// an append of a transaction that failed, so certainly aborted), G1b (a
// read saw a transaction's intermediate state of a key), internal (a read
// that disagrees with the transaction's own earlier reads and appends),
// duplicate elements, elements nobody appended, and lost appends (an
// acknowledged append missing from the final read of its key, made after
// everything healed).
//
// Transactions whose outcome is unknown (a commit that timed out) may or
// may not have committed. One is taken as committed as soon as a committed
// read observes one of its appends (then its own reads count too), and is
// left out otherwise: it then has no edges, so it cannot be in a cycle, and
// its appends may be missing anywhere. Nothing an unknown transaction did
// completes in real time: it has no outgoing rt edge, since it may have
// committed at any later moment.
//
// Cycles are found with Tarjan's strongly connected components, one pass
// per class over the edges that class allows; in each component the
// checker reports a short cycle: the shortest through the class's
// defining edge (a wr edge for G1c, an rw edge for G-single and G2, an rt
// edge for the realtime classes), over at most cycleSearchTries such
// edges per component — in a small component, the shortest cycle of that
// class.

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Micro-op kinds of a list-append transaction.
const (
	MopAppend = "append"
	MopRead   = "r"
)

// Mop is one micro-operation of a list-append transaction.
type Mop struct {
	F   string `json:"f"`
	Key string `json:"k"`
	// Value is the element an append adds.
	Value int64 `json:"v,omitempty"`
	// List is what a read returned (empty: the key was absent or empty).
	List []int64 `json:"list,omitempty"`
}

// Anomaly kinds the list-append checker reports.
const (
	AnomalyG0                = "G0"
	AnomalyG1a               = "G1a"
	AnomalyG1b               = "G1b"
	AnomalyG1c               = "G1c"
	AnomalyGSingle           = "G-single"
	AnomalyG2                = "G2"
	AnomalyIncompatibleOrder = "incompatible-order"
	AnomalyDuplicate         = "duplicate-elements"
	AnomalyGarbage           = "garbage-read"
	AnomalyInternal          = "internal"
	AnomalyLostAppend        = "lost-append"
	realtimeSuffix           = "-realtime"
)

// Bounds of the checker's work and report.
const (
	// cycleSearchTries bounds the edges tried per component when looking
	// for a cycle of one class: a component of thousands of transactions
	// (a broken run) costs at most this many breadth-first searches per
	// class.
	cycleSearchTries = 64
	// anomalyExamples is how many anomalies of one kind the result keeps
	// (all are counted): enough to read the pattern, few enough to read.
	anomalyExamples = 8
	// listShown is how many trailing elements a long read shows in the
	// report.
	listShown = 6
)

// Edge kinds of the dependency graph (bit flags: two transactions may be
// related in several ways). The order is the preference when one step of a
// cycle has several: the weakest dependency names the cycle's class.
const (
	edgeWW uint8 = 1 << iota
	edgeWR
	edgeRW
	edgeRT
	edgeData = edgeWW | edgeWR | edgeRW
	edgeAll  = edgeData | edgeRT
)

func edgeName(k uint8) string {
	switch k {
	case edgeWW:
		return "ww"
	case edgeWR:
		return "wr"
	case edgeRW:
		return "rw"
	case edgeRT:
		return "rt"
	}
	return "?"
}

// ElleAnomaly is one anomaly found in a list-append history.
type ElleAnomaly struct {
	Type string `json:"type"`
	// Txns are the transactions involved (numbers into the list-append
	// transactions of the history, in history order), a cycle in order.
	Txns []int `json:"txns"`
	// Text explains it, one line per step, with the transactions written
	// out.
	Text string `json:"text"`
}

// ElleResult is what the list-append checker found.
type ElleResult struct {
	Txns      int `json:"txns"`
	Committed int `json:"committed"` // acknowledged, plus unknown ones seen by a committed read
	Promoted  int `json:"unknown_seen"`
	Unseen    int `json:"unknown_unseen"` // unknown and never seen: left out
	Failed    int `json:"failed"`
	// Edges counts the dependency edges by kind.
	Edges map[string]int `json:"edges"`
	// Counts counts the anomalies by type; Anomalies keeps examples.
	Counts    map[string]int `json:"counts,omitempty"`
	Anomalies []ElleAnomaly  `json:"anomalies,omitempty"`
	// Unchecked is set when the history cannot be checked (a harness
	// bug: an element appended twice).
	Unchecked string `json:"unchecked,omitempty"`
}

// Valid reports whether the history shows no anomaly.
func (r *ElleResult) Valid() bool { return len(r.Counts) == 0 && r.Unchecked == "" }

// Types returns the anomaly types found, sorted.
func (r *ElleResult) Types() []string {
	var out []string
	for t := range r.Counts {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Summary is one line: the anomaly counts and what they violate.
func (r *ElleResult) Summary() string {
	if r.Unchecked != "" {
		return "not checked: " + r.Unchecked
	}
	base := fmt.Sprintf("%d txns (%d committed, of which %d unknown but seen; %d unknown unseen; %d failed); edges %s",
		r.Txns, r.Committed, r.Promoted, r.Unseen, r.Failed, fmtCounts(r.Edges))
	if r.Valid() {
		return base + ": strict serializable"
	}
	var parts []string
	for _, t := range r.Types() {
		parts = append(parts, fmt.Sprintf("%s ×%d", t, r.Counts[t]))
	}
	return strings.Join(parts, ", ") + " (" + r.violates() + "); " + base
}

// violates names the strongest model the anomalies rule out.
func (r *ElleResult) violates() string {
	for t := range r.Counts {
		if !strings.HasSuffix(t, realtimeSuffix) {
			return "not serializable"
		}
	}
	return "serializable at most, not strict serializable"
}

// Text is the full report: the summary, then every example anomaly.
func (r *ElleResult) Text() string {
	var b strings.Builder
	b.WriteString(r.Summary())
	b.WriteString("\n")
	for _, a := range r.Anomalies {
		fmt.Fprintf(&b, "\n%s\n", a.Text)
	}
	return b.String()
}

func fmtCounts(m map[string]int) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// elle holds one check's indexes.
type elle struct {
	txns      []Op
	committed []bool
	failed    []bool
	// writer maps key → element → the transaction that appended it.
	writer map[string]map[int64]int
	g      *graph // the dependency graph, for explaining cycles
	res    *ElleResult
}

// CheckListAppend checks the list-append transactions (Kind KindTxn) of a
// history.
func CheckListAppend(ops []Op) *ElleResult {
	e := &elle{writer: map[string]map[int64]int{}, res: &ElleResult{Edges: map[string]int{}, Counts: map[string]int{}}}
	for _, op := range ops {
		if op.Kind == KindTxn {
			e.txns = append(e.txns, op)
		}
	}
	e.res.Txns = len(e.txns)
	for i, t := range e.txns {
		for _, m := range t.Txn {
			if m.F != MopAppend {
				continue
			}
			w := e.writer[m.Key]
			if w == nil {
				w = map[int64]int{}
				e.writer[m.Key] = w
			}
			if j, dup := w[m.Value]; dup {
				e.res.Unchecked = fmt.Sprintf("element %d appended to %s twice (T%d and T%d): a harness bug, the elements must be unique", m.Value, m.Key, j, i)
				return e.res
			}
			w[m.Value] = i
		}
	}
	e.decideCommitted()
	e.checkReads()
	order, bad := e.versionOrders()
	e.checkLost()
	g := e.buildGraph(order, bad)
	e.findCycles(g)
	if len(e.res.Counts) == 0 {
		e.res.Counts = nil
	}
	return e.res
}

// decideCommitted marks acknowledged transactions committed, then every
// unknown one whose append a committed read observed, until nothing
// changes.
func (e *elle) decideCommitted() {
	n := len(e.txns)
	e.committed, e.failed = make([]bool, n), make([]bool, n)
	var queue []int
	for i, t := range e.txns {
		switch t.Status {
		case StatusOK:
			e.committed[i] = true
			queue = append(queue, i)
		case StatusFail:
			e.failed[i] = true
			e.res.Failed++
		}
	}
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		for _, m := range e.txns[i].Txn {
			if m.F != MopRead {
				continue
			}
			for _, v := range m.List {
				w, ok := e.writer[m.Key][v]
				if ok && !e.committed[w] && !e.failed[w] {
					e.committed[w] = true
					e.res.Promoted++
					queue = append(queue, w)
				}
			}
		}
	}
	for i := range e.txns {
		if e.committed[i] {
			e.res.Committed++
		} else if !e.failed[i] {
			e.res.Unseen++
		}
	}
}

// add records an anomaly (counted always, kept as an example while there
// is room).
func (e *elle) add(typ string, txns []int, text string) {
	e.res.Counts[typ]++
	if e.res.Counts[typ] <= anomalyExamples {
		e.res.Anomalies = append(e.res.Anomalies, ElleAnomaly{Type: typ, Txns: txns, Text: text})
	}
}

// external is what a read in txn i saw of other transactions: the list
// without i's own appends at its end.
func (e *elle) external(i int, m Mop) []int64 {
	l := m.List
	for len(l) > 0 {
		w, ok := e.writer[m.Key][l[len(l)-1]]
		if !ok || w != i {
			break
		}
		l = l[:len(l)-1]
	}
	return l
}

// checkReads looks at every committed read on its own: duplicates,
// elements nobody appended, aborted and intermediate reads, and the
// transaction's internal consistency.
func (e *elle) checkReads() {
	seen := map[int64]bool{} // reused: one map per read costs more than the check
	for i, t := range e.txns {
		if !e.committed[i] {
			continue
		}
		e.checkInternal(i)
		for _, m := range t.Txn {
			if m.F != MopRead {
				continue
			}
			clear(seen)
			var dups []int64
			for _, v := range m.List {
				if seen[v] {
					dups = append(dups, v)
				}
				seen[v] = true
				w, ok := e.writer[m.Key][v]
				switch {
				case !ok:
					e.add(AnomalyGarbage, []int{i}, fmt.Sprintf("%s: %s read %s = %s: element %d was never appended to %s\n  %s",
						AnomalyGarbage, e.name(i), m.Key, fmtList(m.List), v, m.Key, e.describe(i)))
				case e.failed[w]:
					e.add(AnomalyG1a, []int{w, i}, fmt.Sprintf("%s (aborted read): %s read %s = %s, which has element %d appended by %s, which failed (aborted)\n  %s\n  %s",
						AnomalyG1a, e.name(i), m.Key, fmtList(m.List), v, e.name(w), e.describe(w), e.describe(i)))
				}
			}
			if len(dups) > 0 {
				e.add(AnomalyDuplicate, []int{i}, fmt.Sprintf("%s: %s read %s = %s: elements %v appear more than once\n  %s",
					AnomalyDuplicate, e.name(i), m.Key, fmtList(m.List), dups, e.describe(i)))
			}
			ext := e.external(i, m)
			if len(ext) == 0 {
				continue
			}
			last := ext[len(ext)-1]
			w, ok := e.writer[m.Key][last]
			if !ok || w == i || e.failed[w] {
				continue
			}
			if final := e.lastAppend(w, m.Key); final != last {
				e.add(AnomalyG1b, []int{w, i}, fmt.Sprintf("%s (intermediate read): %s read %s = %s, ending in %d, an intermediate state of %s, whose last append to %s is %d\n  %s\n  %s",
					AnomalyG1b, e.name(i), m.Key, fmtList(m.List), last, e.name(w), m.Key, final, e.describe(w), e.describe(i)))
			}
		}
	}
}

// lastAppend is txn i's last element appended to key.
func (e *elle) lastAppend(i int, key string) int64 {
	var last int64
	for _, m := range e.txns[i].Txn {
		if m.F == MopAppend && m.Key == key {
			last = m.Value
		}
	}
	return last
}

// checkInternal checks that each read of txn i agrees with its own
// earlier reads and appends of the key, and does not contain an element
// the transaction appends only later (a future read).
func (e *elle) checkInternal(i int) {
	type state struct {
		full bool // the whole list is known (else only its suffix)
		list []int64
	}
	st := map[string]state{}
	appendedAt := map[string]map[int64]int{}
	for j, m := range e.txns[i].Txn {
		if m.F == MopAppend {
			if appendedAt[m.Key] == nil {
				appendedAt[m.Key] = map[int64]int{}
			}
			appendedAt[m.Key][m.Value] = j
		}
	}
	for j, m := range e.txns[i].Txn {
		switch m.F {
		case MopAppend:
			s := st[m.Key]
			s.list = append(slices.Clone(s.list), m.Value)
			st[m.Key] = s
		case MopRead:
			for _, v := range m.List {
				if at, ok := appendedAt[m.Key][v]; ok && at > j {
					e.add(AnomalyInternal, []int{i}, fmt.Sprintf("%s: %s read %s = %s, with element %d that it appends only later (micro-op %d)\n  %s",
						AnomalyInternal, e.name(i), m.Key, fmtList(m.List), v, at+1, e.describe(i)))
				}
			}
			if s, ok := st[m.Key]; ok {
				good := slices.Equal(s.list, m.List)
				if !s.full {
					good = len(m.List) >= len(s.list) && slices.Equal(s.list, m.List[len(m.List)-len(s.list):])
				}
				if !good {
					want := fmtList(s.list)
					if !s.full {
						want = "[… " + strings.TrimPrefix(want, "[")
					}
					e.add(AnomalyInternal, []int{i}, fmt.Sprintf("%s: %s read %s = %s, but its own earlier reads and appends make it %s\n  %s",
						AnomalyInternal, e.name(i), m.Key, fmtList(m.List), want, e.describe(i)))
				}
			}
			st[m.Key] = state{full: true, list: m.List}
		}
	}
}

// versionOrders returns every key's version order (the longest committed
// read) and the keys whose reads are not all prefixes of it.
func (e *elle) versionOrders() (map[string][]int64, map[string]bool) {
	order := map[string][]int64{}
	longestBy := map[string]int{}
	for i, t := range e.txns {
		if !e.committed[i] {
			continue
		}
		for _, m := range t.Txn {
			if m.F == MopRead && (len(m.List) > len(order[m.Key]) || order[m.Key] == nil) {
				order[m.Key], longestBy[m.Key] = m.List, i
			}
		}
	}
	bad := map[string]bool{}
	for i, t := range e.txns {
		if !e.committed[i] {
			continue
		}
		for _, m := range t.Txn {
			if m.F != MopRead || bad[m.Key] {
				continue
			}
			l := order[m.Key]
			if len(m.List) > len(l) || !slices.Equal(m.List, l[:len(m.List)]) {
				bad[m.Key] = true
				j := longestBy[m.Key]
				e.add(AnomalyIncompatibleOrder, []int{j, i}, fmt.Sprintf("%s: no order of appends to %s explains both %s's read %s and %s's read %s (each read must be a prefix of the longest)\n  %s\n  %s",
					AnomalyIncompatibleOrder, m.Key, e.name(j), fmtList(l), e.name(i), fmtList(m.List), e.describe(j), e.describe(i)))
			}
		}
	}
	return order, bad
}

// checkLost: every committed append to a key must be in each final read
// of that key (final reads run after everything healed and every other
// operation ended).
func (e *elle) checkLost() {
	for i, t := range e.txns {
		if !t.Final || !e.committed[i] {
			continue
		}
		for _, m := range t.Txn {
			if m.F != MopRead {
				continue
			}
			in := map[int64]bool{}
			for _, v := range m.List {
				in[v] = true
			}
			var lost []int64
			for v, w := range e.writer[m.Key] {
				if e.committed[w] && w != i && !in[v] {
					lost = append(lost, v)
				}
			}
			slices.Sort(lost)
			for _, v := range lost {
				w := e.writer[m.Key][v]
				how := "acknowledged"
				if e.txns[w].Status != StatusOK {
					how = "unknown, but seen by a committed read"
				}
				e.add(AnomalyLostAppend, []int{w, i}, fmt.Sprintf("%s: %s's append of %d to %s (%s) is missing from the final read %s = %s\n  %s\n  %s",
					AnomalyLostAppend, e.name(w), v, m.Key, how, e.name(i), fmtList(m.List), e.describe(w), e.describe(i)))
			}
		}
	}
}

// reason explains one edge: the key and the elements involved.
type reason struct {
	key    string
	v1, v2 int64
	init   bool // rw: the reader saw the initial (empty) state
}

// graph is the dependency graph between transactions (as built: a map of
// edges; then frozen into adjacency arrays for the searches).
type graph struct {
	n     int
	edges map[uint64]uint8  // a<<32|b → kinds
	why   map[edgeID]reason // the first reason seen for each edge and kind
	// Frozen adjacency (CSR): the out-edges of a are to[off[a]:off[a+1]].
	off   []int32
	to    []int32
	kinds []uint8
}

// edgeID names one kind of edge between two transactions.
type edgeID struct {
	pair uint64
	kind uint8
}

func pairKey(a, b int) uint64 { return uint64(a)<<32 | uint64(b) }

func (g *graph) link(a, b int, kind uint8, r reason) {
	if a == b {
		return
	}
	p := pairKey(a, b)
	if g.edges[p]&kind == 0 {
		g.edges[p] |= kind
		g.why[edgeID{p, kind}] = r
	}
}

func (g *graph) freeze() {
	count := make([]int32, g.n+1)
	for p := range g.edges {
		count[p>>32+1]++
	}
	for i := 1; i <= g.n; i++ {
		count[i] += count[i-1]
	}
	g.off = slices.Clone(count)
	g.to = make([]int32, len(g.edges))
	g.kinds = make([]uint8, len(g.edges))
	pos := count
	keys := make([]uint64, 0, len(g.edges))
	for p := range g.edges {
		keys = append(keys, p)
	}
	slices.Sort(keys) // deterministic searches and reports
	for _, p := range keys {
		a := p >> 32
		g.to[pos[a]] = int32(p & 0xffffffff)
		g.kinds[pos[a]] = g.edges[p]
		pos[a]++
	}
}

// buildGraph derives the ww, wr, rw and rt edges between committed
// transactions.
func (e *elle) buildGraph(order map[string][]int64, bad map[string]bool) *graph {
	g := &graph{n: len(e.txns), edges: map[uint64]uint8{}, why: map[edgeID]reason{}}
	var keys []string
	for k := range e.writer {
		keys = append(keys, k)
	}
	for k := range order {
		if _, ok := e.writer[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	// Committed appends nobody saw, by key: they came after the whole
	// version order (a read of a later state would contain them).
	unseen := map[string][]int{}
	for _, k := range keys {
		if bad[k] {
			continue
		}
		l := order[k]
		idx := make(map[int64]int, len(l))
		for p, v := range l {
			if _, ok := idx[v]; !ok {
				idx[v] = p
			}
		}
		seenTxn := map[int]bool{}
		for v, w := range e.writer[k] {
			if _, ok := idx[v]; !ok && e.committed[w] && !seenTxn[w] {
				seenTxn[w] = true
				unseen[k] = append(unseen[k], w)
			}
		}
		slices.Sort(unseen[k])
		// ww along the order, and from the last observed append to each
		// unseen one.
		for p := 1; p < len(l); p++ {
			a, okA := e.writer[k][l[p-1]]
			b, okB := e.writer[k][l[p]]
			if okA && okB && e.committed[a] && e.committed[b] {
				g.link(a, b, edgeWW, reason{key: k, v1: l[p-1], v2: l[p]})
			}
		}
		if len(l) > 0 {
			if a, ok := e.writer[k][l[len(l)-1]]; ok && e.committed[a] {
				for _, b := range unseen[k] {
					g.link(a, b, edgeWW, reason{key: k, v1: l[len(l)-1], v2: e.lastAppend(b, k)})
				}
			}
		}
	}
	// wr and rw from every committed read.
	for i, t := range e.txns {
		if !e.committed[i] {
			continue
		}
		for _, m := range t.Txn {
			if m.F != MopRead || bad[m.Key] {
				continue
			}
			l := order[m.Key]
			ext := e.external(i, m)
			next := 0
			r := reason{key: m.Key, init: len(ext) == 0}
			if len(ext) > 0 {
				last := ext[len(ext)-1]
				r.v1 = last
				if w, ok := e.writer[m.Key][last]; ok && e.committed[w] {
					g.link(w, i, edgeWR, reason{key: m.Key, v1: last})
				}
				next = len(ext) // ext is a prefix of l (the key is not bad)
			}
			if next < len(l) {
				if w, ok := e.writer[m.Key][l[next]]; ok && e.committed[w] {
					r.v2 = l[next]
					g.link(i, w, edgeRW, r)
				}
			} else {
				for _, w := range unseen[m.Key] {
					r.v2 = e.lastAppend(w, m.Key)
					g.link(i, w, edgeRW, r)
				}
			}
		}
	}
	e.realtimeEdges(g)
	for _, k := range g.edges {
		for _, kind := range []uint8{edgeWW, edgeWR, edgeRW, edgeRT} {
			if k&kind != 0 {
				e.res.Edges[edgeName(kind)]++
			}
		}
	}
	g.freeze()
	return g
}

// realtimeEdges links Ti → Tj when Ti completed (acknowledged) before Tj
// was invoked, keeping only enough edges for reachability: a sweep over
// invocations and completions keeps the frontier of completed
// transactions not yet followed by another completed one (Elle's
// realtime graph), so the edges per transaction stay about the number of
// concurrent clients.
func (e *elle) realtimeEdges(g *graph) {
	type event struct {
		t      int64
		invoke bool
		txn    int
	}
	var evs []event
	for i, t := range e.txns {
		if !e.committed[i] {
			continue
		}
		evs = append(evs, event{t.Call, true, i})
		if t.Status == StatusOK { // unknown ones never completed
			evs = append(evs, event{t.Return, false, i})
		}
	}
	// At equal times, invocations first: a tie is not "before".
	slices.SortFunc(evs, func(a, b event) int {
		if c := cmp.Compare(a.t, b.t); c != 0 {
			return c
		}
		if a.invoke != b.invoke {
			if a.invoke {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.txn, b.txn)
	})
	frontier := map[int]bool{}
	preds := map[int][]int{}
	for _, ev := range evs {
		if ev.invoke {
			var ps []int
			for p := range frontier {
				ps = append(ps, p)
			}
			slices.Sort(ps)
			for _, p := range ps {
				g.link(p, ev.txn, edgeRT, reason{})
			}
			if e.txns[ev.txn].Status == StatusOK {
				preds[ev.txn] = ps
			}
			continue
		}
		for _, p := range preds[ev.txn] {
			delete(frontier, p)
		}
		delete(preds, ev.txn)
		frontier[ev.txn] = true
	}
}

// sccs returns the strongly connected components (of two or more
// transactions) of the edges with a kind in mask, and each node's
// component (-1: none), by Tarjan's algorithm, iteratively.
func (g *graph) sccs(mask uint8) ([][]int32, []int32) {
	n := g.n
	index := make([]int32, n)
	low := make([]int32, n)
	onStack := make([]bool, n)
	for i := range index {
		index[i] = -1
	}
	comp := make([]int32, n)
	for i := range comp {
		comp[i] = -1
	}
	var stack []int32
	var out [][]int32
	type frame struct {
		v    int32
		edge int32
	}
	next := int32(0)
	for s := 0; s < n; s++ {
		if index[s] >= 0 {
			continue
		}
		call := []frame{{v: int32(s), edge: g.off[s]}}
		index[s], low[s] = next, next
		next++
		stack = append(stack, int32(s))
		onStack[s] = true
		for len(call) > 0 {
			f := &call[len(call)-1]
			v := f.v
			if f.edge < g.off[v+1] {
				e := f.edge
				f.edge++
				if g.kinds[e]&mask == 0 {
					continue
				}
				w := g.to[e]
				if index[w] < 0 {
					index[w], low[w] = next, next
					next++
					stack = append(stack, w)
					onStack[w] = true
					call = append(call, frame{v: w, edge: g.off[w]})
				} else if onStack[w] {
					low[v] = min(low[v], index[w])
				}
				continue
			}
			call = call[:len(call)-1]
			if len(call) > 0 {
				p := call[len(call)-1].v
				low[p] = min(low[p], low[v])
			}
			if low[v] == index[v] {
				var c []int32
				for {
					w := stack[len(stack)-1]
					stack = stack[:len(stack)-1]
					onStack[w] = false
					c = append(c, w)
					if w == v {
						break
					}
				}
				if len(c) > 1 {
					for _, w := range c {
						comp[w] = int32(len(out))
					}
					slices.Sort(c)
					out = append(out, c)
				}
			}
		}
	}
	return out, comp
}

// step is one edge of a cycle.
type step struct {
	from, to int32
	kind     uint8
}

// searcher runs breadth-first searches on one graph, reusing its arrays.
type searcher struct {
	g        *graph
	stamp    []int32
	gen      int32
	prev     []int32
	prevKind []uint8
}

func newSearcher(g *graph) *searcher {
	return &searcher{g: g, stamp: make([]int32, g.n), prev: make([]int32, g.n), prevKind: make([]uint8, g.n)}
}

// path finds a shortest path from → to over edges with a kind in mask,
// within component c; nil if none. Each step takes its edge's weakest
// kind in mask.
func (s *searcher) path(from, to int32, mask uint8, comp []int32, c int32) []step {
	s.gen++
	g := s.g
	s.stamp[from] = s.gen
	queue := []int32{from}
	for len(queue) > 0 {
		v := queue[0]
		queue = queue[1:]
		if v == to {
			var out []step
			for w := to; w != from; w = s.prev[w] {
				out = append(out, step{s.prev[w], w, s.prevKind[w]})
			}
			slices.Reverse(out)
			return out
		}
		for e := g.off[v]; e < g.off[v+1]; e++ {
			k := g.kinds[e] & mask
			w := g.to[e]
			if k == 0 || comp[w] != c || s.stamp[w] == s.gen {
				continue
			}
			s.stamp[w] = s.gen
			s.prev[w] = v
			s.prevKind[w] = k & -k // the lowest bit: the weakest kind
			queue = append(queue, w)
		}
	}
	return nil
}

// classify names a cycle by its edges.
func classify(cycle []step) string {
	var rw, wr, rt int
	for _, st := range cycle {
		switch st.kind {
		case edgeRW:
			rw++
		case edgeWR:
			wr++
		case edgeRT:
			rt++
		}
	}
	t := AnomalyG0
	switch {
	case rw == 1:
		t = AnomalyGSingle
	case rw > 1:
		t = AnomalyG2
	case wr > 0:
		t = AnomalyG1c
	}
	if rt > 0 {
		t += realtimeSuffix
	}
	return t
}

// shortestThrough returns the shortest cycle, over at most
// cycleSearchTries edges of component c whose kinds include want, that
// starts with such an edge (taken as want) and returns over edges in
// mask.
func (s *searcher) shortestThrough(members []int32, comp []int32, c int32, want, mask uint8) []step {
	g := s.g
	var best []step
	tries := 0
	for _, a := range members {
		for e := g.off[a]; e < g.off[a+1] && tries < cycleSearchTries; e++ {
			b := g.to[e]
			if g.kinds[e]&want == 0 || comp[b] != c {
				continue
			}
			tries++
			p := s.path(b, a, mask, comp, c)
			if p == nil {
				continue
			}
			cyc := append([]step{{a, b, want}}, p...)
			if best == nil || len(cyc) < len(best) {
				best = cyc
			}
			if len(best) == 2 {
				return best // nothing shorter exists
			}
		}
	}
	return best
}

// findCycles runs one pass per class: G0 over ww, G1c over ww+wr,
// G-single and G2 over ww+wr+rw, then the realtime classes over all edges
// in components that none of the earlier passes explained.
func (e *elle) findCycles(g *graph) {
	e.g = g
	s := newSearcher(g)
	// G0.
	comps, comp := g.sccs(edgeWW)
	for c, members := range comps {
		e.addCycle(s.shortestThrough(members, comp, int32(c), edgeWW, edgeWW))
	}
	// G1c: a cycle through a wr edge, of ww and wr edges.
	comps, comp = g.sccs(edgeWW | edgeWR)
	for c, members := range comps {
		e.addCycle(s.shortestThrough(members, comp, int32(c), edgeWR, edgeWW|edgeWR))
	}
	// G-single: one rw edge, back over ww and wr; else G2.
	comps, comp = g.sccs(edgeData)
	explained := make([]bool, g.n)
	for c, members := range comps {
		for _, v := range members {
			explained[v] = true
		}
		cyc := s.shortestThrough(members, comp, int32(c), edgeRW, edgeWW|edgeWR)
		if cyc == nil {
			cyc = s.shortestThrough(members, comp, int32(c), edgeRW, edgeData)
		}
		e.addCycle(cyc)
	}
	// Realtime: components of the whole graph that the data edges alone
	// do not close.
	comps, comp = g.sccs(edgeAll)
	for c, members := range comps {
		if slices.ContainsFunc(members, func(v int32) bool { return explained[v] }) {
			continue
		}
		e.addCycle(s.shortestThrough(members, comp, int32(c), edgeRT, edgeAll))
	}
}

// addCycle reports a cycle, with each transaction and each step
// explained.
func (e *elle) addCycle(cyc []step) {
	if len(cyc) == 0 {
		return
	}
	typ := classify(cyc)
	var txns []int
	var b strings.Builder
	names := make([]string, 0, len(cyc)+1)
	for _, st := range cyc {
		txns = append(txns, int(st.from))
		names = append(names, e.name(int(st.from)))
	}
	names = append(names, e.name(int(cyc[0].from)))
	fmt.Fprintf(&b, "%s: %s", typ, strings.Join(names, " → "))
	for _, t := range txns {
		fmt.Fprintf(&b, "\n  %s", e.describe(t))
	}
	for _, st := range cyc {
		fmt.Fprintf(&b, "\n  %s -%s-> %s: %s", e.name(int(st.from)), edgeName(st.kind), e.name(int(st.to)), e.explain(st))
	}
	e.add(typ, txns, b.String())
}

// explain says why an edge exists.
func (e *elle) explain(st step) string {
	a, b := int(st.from), int(st.to)
	r := e.g.why[edgeID{pairKey(a, b), st.kind}]
	switch st.kind {
	case edgeWW:
		return fmt.Sprintf("%s appended %d to %s right after %s's %d", e.name(b), r.v2, r.key, e.name(a), r.v1)
	case edgeWR:
		return fmt.Sprintf("%s read %s ending in %d, %s's append", e.name(b), r.key, r.v1, e.name(a))
	case edgeRW:
		if r.init {
			return fmt.Sprintf("%s read %s empty, and %s appended %d to it", e.name(a), r.key, e.name(b), r.v2)
		}
		return fmt.Sprintf("%s read %s ending in %d, and did not see %s's append of %d", e.name(a), r.key, r.v1, e.name(b), r.v2)
	case edgeRT:
		return fmt.Sprintf("%s completed at %s, before %s began at %s", e.name(a), fmtNanos(e.txns[a].Return), e.name(b), fmtNanos(e.txns[b].Call))
	}
	return ""
}

// name is a transaction's short name.
func (e *elle) name(i int) string { return "T" + strconv.Itoa(i) }

// describe writes a transaction out: who ran it, when, its outcome and its
// micro-ops.
func (e *elle) describe(i int) string {
	t := e.txns[i]
	status := t.Status
	if t.Status == StatusUnknown && e.committed[i] {
		status = "unknown, seen committed"
	}
	when := fmtNanos(t.Call) + "–" + fmtNanos(t.Return)
	if t.Status == StatusUnknown {
		when = fmtNanos(t.Call) + "–?"
	}
	final := ""
	if t.Final {
		final = ", final read"
	}
	var mops []string
	for _, m := range t.Txn {
		if m.F == MopAppend {
			mops = append(mops, fmt.Sprintf("append %s %d", m.Key, m.Value))
		} else {
			mops = append(mops, fmt.Sprintf("r %s %s", m.Key, fmtList(m.List)))
		}
	}
	return fmt.Sprintf("%s = client %d, %s, %s%s: [%s]", e.name(i), t.Client, status, when, final, strings.Join(mops, "; "))
}

func fmtNanos(ns int64) string { return strconv.FormatFloat(float64(ns)/1e9, 'f', 3, 64) + "s" }

// fmtList shows a read, its first elements elided when long.
func fmtList(l []int64) string {
	var parts []string
	start := 0
	if len(l) > listShown {
		start = len(l) - listShown
		parts = append(parts, fmt.Sprintf("…%d more…", start))
	}
	for _, v := range l[start:] {
		parts = append(parts, strconv.FormatInt(v, 10))
	}
	return "[" + strings.Join(parts, " ") + "]"
}
