package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kayadb/kayadb/client"
)

// Workload names.
const (
	WorkloadRegister = "register"
	WorkloadSet      = "set"
	WorkloadScan     = "scan"
)

// baseWorkloads need only GET, PUT and SCAN.
var baseWorkloads = []string{WorkloadRegister, WorkloadSet, WorkloadScan}

// AllWorkloads are the workloads a run mixes by default: the base ones,
// and the transactional ones (TxnWorkloads) once txnWorkloadsByDefault
// says the client and the server support them (txnclient*.go).
var AllWorkloads = defaultWorkloads()

// KnownWorkloads are all the workloads a run may name. The watch workload
// (workload_watch.go) runs when named; it is not in the default set.
var KnownWorkloads = append(append(slices.Clone(baseWorkloads), TxnWorkloads...), WorkloadWatch)

func defaultWorkloads() []string {
	if txnWorkloadsByDefault {
		return append(slices.Clone(baseWorkloads), TxnWorkloads...)
	}
	return slices.Clone(baseWorkloads)
}

// ParseWorkloads parses a comma-separated list of workload names: "all"
// is AllWorkloads, and any of KnownWorkloads may be named.
func ParseWorkloads(s string) ([]string, error) {
	if s == "all" {
		return slices.Clone(AllWorkloads), nil
	}
	return ParseList("workload", s, KnownWorkloads)
}

// Op kinds in the history.
const (
	KindRead  = "read"  // register read
	KindWrite = "write" // register write
	KindAdd   = "add"   // set element
	KindPut   = "put"   // scan workload write
	KindScan  = "scan"  // scan workload read
	// The transactional workloads (workload_txn.go).
	KindTxn      = "txn"       // list-append transaction (Op.Txn)
	KindTransfer = "transfer"  // bank transfer from Key to To of Value
	KindBalances = "balances"  // bank read of every account (Op.Balances)
	KindCASRead  = "cas-read"  // CAS register read
	KindCASWrite = "cas-write" // CAS register write
	KindCAS      = "cas"       // compare-and-swap of Key from Old to Value
)

// Statuses of a completed op.
const (
	StatusOK      = "ok"
	StatusFail    = "fail"    // definitely not applied: a read that failed, a write refused before it was proposed
	StatusUnknown = "unknown" // a write whose outcome is unknown
)

// scanKeys is the scan workload's key space (one prefix, a few keys, so
// that the checker's state stays small).
const scanKeys = 4

// Op is one operation of the history.
type Op struct {
	Client int    `json:"client"`
	Kind   string `json:"kind"`
	Key    string `json:"key,omitempty"`
	// Value is the value written, or the value a register read returned (0:
	// no value).
	Value int64 `json:"value,omitempty"`
	// Slot is the scan workload's key index of a put.
	Slot int `json:"slot,omitempty"`
	// Scan is what a scan returned: one value per scan key (0: absent).
	Scan   []int64 `json:"scan,omitempty"`
	Call   int64   `json:"call_ns"`
	Return int64   `json:"return_ns"`
	Status string  `json:"status"`
	Error  string  `json:"error,omitempty"`
	// Refused marks a write the server refused before proposing it (disk
	// full): failed, certainly not applied.
	Refused bool `json:"refused,omitempty"`
	// Txn is a list-append transaction's micro-ops.
	Txn []Mop `json:"txn,omitempty"`
	// Final marks the reads made after the workload, once everything
	// healed and every other operation ended.
	Final bool `json:"final,omitempty"`
	// To is a bank transfer's destination account.
	To string `json:"to,omitempty"`
	// Balances is what a bank read returned, one per account.
	Balances []int64 `json:"balances,omitempty"`
	// Declined marks a transfer rolled back because the source account
	// held less than the amount (failed: nothing written).
	Declined bool `json:"declined,omitempty"`
	// Old is a compare-and-swap's expected value; Swapped its answer.
	Old     int64 `json:"old,omitempty"`
	Swapped bool  `json:"swapped,omitempty"`
}

// History is the record of a run, safe for concurrent appends.
type History struct {
	start time.Time
	mu    sync.Mutex
	ops   []Op
}

func newHistory(start time.Time) *History { return &History{start: start} }

func (h *History) now() int64 { return int64(time.Since(h.start)) }

func (h *History) add(op Op) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// Ops returns a copy of the operations.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.ops...)
}

// worker runs one client's operations until ctx ends.
type worker struct {
	id        int
	cl        *client.Client
	h         *History
	rng       *rand.Rand
	regKeys   int
	workloads []string
	seq       int64
	opTimeout time.Duration
	// txn and shared serve the transactional workloads (nil without
	// them).
	txn    TxnClient
	shared *txnShared
	// limit, when positive, stops the worker after that many operations
	// (tests); otherwise it runs until ctx ends.
	limit int
	// watchOwned are the watch workload's keys this worker put and has
	// not deleted (workload_watch.go).
	watchOwned []string
}

func regKey(i int) string      { return "reg/" + strconv.Itoa(i) }
func scanKey(i int) string     { return fmt.Sprintf("scan/%d", i) }
func encodeVal(v int64) []byte { return []byte(strconv.FormatInt(v, 10)) }

func decodeVal(b []byte) (int64, error) {
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("value %q is not a value the harness wrote", b)
	}
	return v, nil
}

// nextValue is unique across the run: client id and a sequence number.
func (w *worker) nextValue() int64 {
	w.seq++
	return int64(w.id+1)<<32 | w.seq
}

func (w *worker) run(ctx context.Context) {
	for n := 0; ctx.Err() == nil && (w.limit <= 0 || n < w.limit); n++ {
		switch w.workloads[w.rng.IntN(len(w.workloads))] {
		case WorkloadRegister:
			if w.rng.IntN(2) == 0 {
				w.read(ctx, w.rng.IntN(w.regKeys))
			} else {
				w.write(ctx, w.rng.IntN(w.regKeys))
			}
		case WorkloadSet:
			w.addElement(ctx)
		case WorkloadScan:
			if w.rng.IntN(3) == 0 {
				w.scan(ctx)
			} else {
				w.put(ctx, w.rng.IntN(scanKeys))
			}
		case WorkloadListAppend:
			w.listAppend(ctx)
		case WorkloadBank:
			w.bankOp(ctx)
		case WorkloadCAS:
			w.casOp(ctx)
		case WorkloadWatch:
			w.watchOp(ctx)
		}
	}
}

func (w *worker) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, w.opTimeout)
}

// writeStatus turns a write's error into a status: a write is "fail" only
// when it certainly was not applied — refused by the client before it was
// sent, or refused by the server before it was proposed; anything else
// may have been applied.
func writeStatus(err error) string {
	switch {
	case err == nil:
		return StatusOK
	case errors.Is(err, client.ErrInvalidArgument):
		return StatusFail
	case refusedBeforeProposal(err):
		return StatusFail
	}
	return StatusUnknown
}

// refusedBeforeProposal reports whether err is a write's refusal that the
// server makes before it proposes the write, so that the write was
// certainly not applied: a node in disk-full mode checks its disk before
// anything else (internal/server client.go, startWriteFunc: disk.admit
// comes before the proposal, and is the only source of that message,
// wire.IsDiskFullRefusal, on the client port). The client returns it as
// ErrDiskFull, never with ErrAmbiguous; and it never re-sends a write once
// it may have reached a server, so the reply is the answer to the only
// send that did (earlier attempts failed before sending, or were answered
// NOT_LEADER, which the server gives only for writes it did not append).
//
// The test is strict on purpose: only the reply itself (a
// *client.ServerError with status ERROR, bare, as client.Put returns it)
// and only the disk guard's message. Anything else — a timeout whose last
// error was a refusal, an error that only mentions a full disk — stays
// unknown.
func refusedBeforeProposal(err error) bool {
	var se *client.ServerError
	return errors.As(err, &se) && errors.Is(se, client.ErrDiskFull) && err.Error() == se.Error()
}

func (w *worker) read(ctx context.Context, k int) {
	op := Op{Client: w.id, Kind: KindRead, Key: regKey(k), Call: w.h.now()}
	c, cancel := w.opCtx(ctx)
	v, err := w.cl.Get(c, []byte(op.Key))
	cancel()
	op.Return = w.h.now()
	switch {
	case err == nil:
		op.Value, err = decodeVal(v)
		if err != nil {
			op.Status, op.Error = StatusOK, err.Error() // a corrupt value: the checker flags it
			op.Value = -1
		} else {
			op.Status = StatusOK
		}
	case errors.Is(err, client.ErrNotFound):
		op.Status = StatusOK
	default:
		op.Status, op.Error = StatusFail, err.Error()
	}
	w.h.add(op)
}

func (w *worker) write(ctx context.Context, k int) {
	w.doPut(ctx, Op{Kind: KindWrite, Key: regKey(k), Value: w.nextValue()})
}

func (w *worker) addElement(ctx context.Context) {
	v := w.nextValue()
	w.doPut(ctx, Op{Kind: KindAdd, Key: fmt.Sprintf("set/%d", v), Value: v})
}

func (w *worker) put(ctx context.Context, slot int) {
	w.doPut(ctx, Op{Kind: KindPut, Key: scanKey(slot), Slot: slot, Value: w.nextValue()})
}

// doPut writes op.Value to op.Key and records the outcome.
func (w *worker) doPut(ctx context.Context, op Op) {
	op.Client, op.Call = w.id, w.h.now()
	c, cancel := w.opCtx(ctx)
	err := w.cl.Put(c, []byte(op.Key), encodeVal(op.Value))
	cancel()
	op.Return, op.Status = w.h.now(), writeStatus(err)
	if err != nil {
		op.Error = err.Error()
		op.Refused = refusedBeforeProposal(err)
	}
	w.h.add(op)
}

func (w *worker) scan(ctx context.Context) {
	op := Op{Client: w.id, Kind: KindScan, Key: "scan/", Call: w.h.now()}
	c, cancel := w.opCtx(ctx)
	items, err := w.cl.Scan(c, []byte("scan/"))
	cancel()
	op.Return = w.h.now()
	if err != nil {
		op.Status, op.Error = StatusFail, err.Error()
		w.h.add(op)
		return
	}
	op.Status = StatusOK
	op.Scan = make([]int64, scanKeys)
	for _, it := range items {
		var slot int
		if _, err := fmt.Sscanf(string(it.Key), "scan/%d", &slot); err != nil || slot < 0 || slot >= scanKeys || scanKey(slot) != string(it.Key) {
			op.Error = fmt.Sprintf("scan returned a key the harness never wrote: %q", it.Key)
			op.Scan[0] = -1
			continue
		}
		v, err := decodeVal(it.Value)
		if err != nil {
			op.Error = err.Error()
			v = -1
		}
		op.Scan[slot] = v
	}
	w.h.add(op)
}

// counts summarizes a history.
type counts struct {
	Total   int            `json:"total"`
	OK      int            `json:"ok"`
	Fail    int            `json:"fail"`
	Unknown int            `json:"unknown"`
	ByKind  map[string]int `json:"by_kind"`
}

func countOps(ops []Op) counts {
	c := counts{ByKind: map[string]int{}}
	for _, op := range ops {
		c.Total++
		c.ByKind[op.Kind]++
		switch op.Status {
		case StatusOK:
			c.OK++
		case StatusFail:
			c.Fail++
		default:
			c.Unknown++
		}
	}
	return c
}

// errorSummary returns the most frequent error texts (for the report).
func errorSummary(ops []Op, n int) []string {
	m := map[string]int{}
	for _, op := range ops {
		if op.Error != "" {
			e := op.Error
			if i := strings.Index(e, "; last error"); i > 0 {
				e = e[:i]
			}
			m[e]++
		}
	}
	type kv struct {
		k string
		v int
	}
	var list []kv
	for k, v := range m {
		list = append(list, kv{k, v})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].v > list[j].v })
	var out []string
	for i := 0; i < len(list) && i < n; i++ {
		out = append(out, fmt.Sprintf("%d× %s", list[i].v, list[i].k))
	}
	return out
}
