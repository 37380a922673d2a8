package jepsen

// The transactional workloads: list-append (checked by the Elle-style
// checker, elle.go), bank (bank.go) and cas-register (cas.go). They drive
// the cluster through TxnClient, the part of a client they need, so that
// they compile before the Go client has transactions; txnclient*.go adapts
// the real client.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Workload names of the transactional workloads.
const (
	WorkloadListAppend = "list-append"
	WorkloadBank       = "bank"
	WorkloadCAS        = "cas-register"
)

// TxnWorkloads are the workloads that need transactions (issue 13).
var TxnWorkloads = []string{WorkloadListAppend, WorkloadBank, WorkloadCAS}

// txnWorkloadsIn returns the transactional workloads among workloads.
func txnWorkloadsIn(workloads []string) []string {
	var out []string
	for _, w := range workloads {
		if contains(TxnWorkloads, w) {
			out = append(out, w)
		}
	}
	return out
}

// TxnClient is what the transactional workloads need from a KayaDB client:
// interactive transactions, single-key reads and writes, and the one-shot
// compare-and-swap.
type TxnClient interface {
	// Begin starts a transaction.
	Begin(ctx context.Context) (TxnHandle, error)
	// Get is a linearizable read of one key; found is false when the key
	// is absent.
	Get(ctx context.Context, key []byte) (value []byte, found bool, err error)
	// Put writes one key.
	Put(ctx context.Context, key, value []byte) error
	// CompareAndSwap sets key to new if its value is old, atomically, and
	// says whether it did.
	CompareAndSwap(ctx context.Context, key, old, new []byte) (swapped bool, err error)
	// NotApplied reports whether err, returned by Commit, Put or
	// CompareAndSwap, means that the operation certainly took no effect
	// (a conflict, a refusal before anything was proposed). Any other
	// error leaves the outcome unknown.
	NotApplied(err error) bool
}

// TxnHandle is one open transaction.
type TxnHandle interface {
	// Get reads key in the transaction's snapshot (or its own write).
	Get(ctx context.Context, key []byte) (value []byte, found bool, err error)
	Put(ctx context.Context, key, value []byte) error
	Delete(ctx context.Context, key []byte) error
	// Commit commits; an error the client's NotApplied accepts (a
	// conflict) means it aborted.
	Commit(ctx context.Context) error
	Rollback(ctx context.Context) error
}

// List-append parameters (Elle's defaults, about): short transactions on
// a few active keys, each key retired after a bounded number of appends so
// that lists, and reads, stay small.
const (
	laActiveKeys      = 8
	laMaxTxnLen       = 4
	laMaxWritesPerKey = 32
	// laFinalBatch is the keys read per final transaction.
	laFinalBatch = 16
	// finalAttempts bounds the retries of one final read; with
	// finalRetryWait between attempts, about 30 s of recovery.
	finalAttempts  = 30
	finalRetryWait = time.Second
)

func laKey(i int) string { return "la/" + strconv.Itoa(i) }

// txnShared is the state the clients of the transactional workloads
// share: the list-append keys in use.
type txnShared struct {
	mu struct {
		sync.Mutex
		active  []laKeyState
		nextKey int // keys 0..nextKey-1 have been used
	}
}

type laKeyState struct {
	id      int
	appends int64
}

func newTxnShared() *txnShared {
	s := &txnShared{}
	for i := 0; i < laActiveKeys; i++ {
		s.mu.active = append(s.mu.active, laKeyState{id: i})
	}
	s.mu.nextKey = laActiveKeys
	return s
}

// readKey picks an active key to read.
func (s *txnShared) readKey(rng *rand.Rand) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return laKey(s.mu.active[rng.IntN(len(s.mu.active))].id)
}

// nextAppend picks an active key and the next element for it (unique per
// key: 1, 2, …), retiring the key once it has its share of appends.
func (s *txnShared) nextAppend(rng *rand.Rand) (string, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := rng.IntN(len(s.mu.active))
	k := &s.mu.active[i]
	k.appends++
	key, v := laKey(k.id), k.appends
	if k.appends >= laMaxWritesPerKey {
		*k = laKeyState{id: s.mu.nextKey}
		s.mu.nextKey++
	}
	return key, v
}

// usedKeys is the number of list-append keys handed out.
func (s *txnShared) usedKeys() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.nextKey
}

// encodeList and decodeList are a list's value: its elements in decimal,
// separated by spaces.
func encodeList(l []int64) []byte {
	var b []byte
	for i, v := range l {
		if i > 0 {
			b = append(b, ' ')
		}
		b = strconv.AppendInt(b, v, 10)
	}
	return b
}

func decodeList(b []byte) ([]int64, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var out []int64
	for _, f := range strings.Split(string(b), " ") {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("list value %q is not a list the harness wrote", b)
		}
		out = append(out, v)
	}
	return out, nil
}

// txnStatus turns the error of a write, a swap or a commit into a status.
func txnStatus(cl TxnClient, err error) string {
	switch {
	case err == nil:
		return StatusOK
	case cl.NotApplied(err):
		return StatusFail
	}
	return StatusUnknown
}

// txnCtx bounds one whole transaction (several round trips).
func (w *worker) txnCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, 3*w.opTimeout)
}

// listAppend runs one random list-append transaction.
func (w *worker) listAppend(ctx context.Context) {
	mops := make([]Mop, 1+w.rng.IntN(laMaxTxnLen))
	for i := range mops {
		if w.rng.IntN(2) == 0 {
			mops[i] = Mop{F: MopRead, Key: w.shared.readKey(w.rng)}
		} else {
			k, v := w.shared.nextAppend(w.rng)
			mops[i] = Mop{F: MopAppend, Key: k, Value: v}
		}
	}
	w.h.add(runListAppend(ctx, w.txn, w.id, w.h, mops, false, w.txnCtx))
}

// runListAppend runs one list-append transaction and returns it as an op.
// An append reads the key and writes it back with the element added, in
// the transaction.
func runListAppend(ctx context.Context, cl TxnClient, id int, h *History, mops []Mop, final bool, bound func(context.Context) (context.Context, context.CancelFunc)) Op {
	op := Op{Client: id, Kind: KindTxn, Call: h.now(), Final: final}
	c, cancel := bound(ctx)
	defer cancel()
	fail := func(tx TxnHandle, err error) Op {
		if tx != nil {
			_ = tx.Rollback(c)
		}
		op.Status, op.Error, op.Return = StatusFail, err.Error(), h.now()
		op.Txn = mops
		return op
	}
	tx, err := cl.Begin(c)
	if err != nil {
		return fail(nil, err)
	}
	for i := range mops {
		m := &mops[i]
		v, found, err := tx.Get(c, []byte(m.Key))
		if err != nil {
			return fail(tx, err)
		}
		var list []int64
		if found {
			if list, err = decodeList(v); err != nil {
				// A corrupt value: read as an element nobody appended,
				// which the checker flags.
				op.Error, list = err.Error(), []int64{-1}
			}
		}
		if m.F == MopRead {
			m.List = list
			continue
		}
		if err := tx.Put(c, []byte(m.Key), encodeList(append(list, m.Value))); err != nil {
			return fail(tx, err)
		}
	}
	err = tx.Commit(c)
	op.Txn, op.Status, op.Return = mops, txnStatus(cl, err), h.now()
	if err != nil {
		op.Error = err.Error()
	}
	return op
}

// bankOp is a transfer (three times in four) or a read of every balance.
func (w *worker) bankOp(ctx context.Context) {
	if w.rng.IntN(4) == 0 {
		w.h.add(readBalances(ctx, w.txn, w.id, w.h, false, w.txnCtx))
		return
	}
	from := w.rng.IntN(BankAccounts)
	to := (from + 1 + w.rng.IntN(BankAccounts-1)) % BankAccounts
	w.h.add(transfer(ctx, w.txn, w.id, w.h, from, to, 1+w.rng.Int64N(bankMaxTransfer), w.txnCtx))
}

// transfer moves amount from one account to another if the source holds
// enough; otherwise it rolls back (Declined, failed).
func transfer(ctx context.Context, cl TxnClient, id int, h *History, from, to int, amount int64, bound func(context.Context) (context.Context, context.CancelFunc)) Op {
	op := Op{Client: id, Kind: KindTransfer, Key: bankKey(from), To: bankKey(to), Value: amount, Call: h.now()}
	c, cancel := bound(ctx)
	defer cancel()
	fail := func(tx TxnHandle, err error) Op {
		if tx != nil {
			_ = tx.Rollback(c)
		}
		op.Status, op.Return = StatusFail, h.now()
		if err != nil {
			op.Error = err.Error()
		}
		return op
	}
	tx, err := cl.Begin(c)
	if err != nil {
		return fail(nil, err)
	}
	var bal [2]int64
	for i, k := range []string{op.Key, op.To} {
		v, found, err := tx.Get(c, []byte(k))
		if err != nil {
			return fail(tx, err)
		}
		if !found {
			return fail(tx, fmt.Errorf("account %s is absent", k))
		}
		if bal[i], err = strconv.ParseInt(string(v), 10, 64); err != nil {
			return fail(tx, fmt.Errorf("account %s holds %q, not a balance", k, v))
		}
	}
	if bal[0] < amount {
		op.Declined = true
		return fail(tx, nil)
	}
	if err := tx.Put(c, []byte(op.Key), []byte(strconv.FormatInt(bal[0]-amount, 10))); err != nil {
		return fail(tx, err)
	}
	if err := tx.Put(c, []byte(op.To), []byte(strconv.FormatInt(bal[1]+amount, 10))); err != nil {
		return fail(tx, err)
	}
	err = tx.Commit(c)
	op.Status, op.Return = txnStatus(cl, err), h.now()
	if err != nil {
		op.Error = err.Error()
	}
	return op
}

// readBalances reads every account in one read-only transaction. A read
// counts only if the transaction committed.
func readBalances(ctx context.Context, cl TxnClient, id int, h *History, final bool, bound func(context.Context) (context.Context, context.CancelFunc)) Op {
	op := Op{Client: id, Kind: KindBalances, Key: "bank/", Call: h.now(), Final: final}
	c, cancel := bound(ctx)
	defer cancel()
	tx, err := cl.Begin(c)
	if err != nil {
		op.Status, op.Error, op.Return = StatusFail, err.Error(), h.now()
		return op
	}
	var problems []string
	for i := 0; i < BankAccounts; i++ {
		v, found, err := tx.Get(c, []byte(bankKey(i)))
		if err != nil {
			_ = tx.Rollback(c)
			op.Status, op.Error, op.Return = StatusFail, err.Error(), h.now()
			return op
		}
		b := int64(0)
		switch {
		case !found:
			problems = append(problems, bankKey(i)+" is absent")
		default:
			if b, err = strconv.ParseInt(string(v), 10, 64); err != nil {
				problems = append(problems, fmt.Sprintf("%s holds %q, not a balance", bankKey(i), v))
			}
		}
		op.Balances = append(op.Balances, b)
	}
	err = tx.Commit(c)
	op.Status, op.Return = txnStatus(cl, err), h.now()
	switch {
	case err != nil:
		op.Error = err.Error()
	case len(problems) > 0:
		op.Error = strings.Join(problems, "; ") // the checker flags it
	}
	return op
}

// setupBank gives every account its initial balance, in one transaction,
// before the workload. A retry after an unknown outcome finds the
// accounts there (all of them: anything else is a broken transaction).
func setupBank(ctx context.Context, cl TxnClient, budget time.Duration) error {
	deadline := time.Now().Add(budget)
	var last error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		done, err := setupBankOnce(c, cl)
		cancel()
		if done || (err != nil && errors.Is(err, errBankPartial)) {
			return err
		}
		last = err
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("jepsen: setting up the bank's accounts: %w", last)
}

// probeTxns checks, before the workload, that the cluster serves what the
// transactional workloads need: a transaction (BEGIN, then ROLLBACK) and,
// for cas-register, a compare-and-swap (of a key the workload never
// writes, which stays absent: it never swaps). Without it, every operation
// would fail and the checkers would have nothing to check. It retries
// for budget while the cluster settles.
func probeTxns(ctx context.Context, cl TxnClient, workloads []string, budget time.Duration) error {
	deadline := time.Now().Add(budget)
	var last error
	for {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		last = probeTxnsOnce(c, cl, workloads)
		cancel()
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) || !sleepUntil(ctx, time.Now().Add(250*time.Millisecond)) {
			return fmt.Errorf("jepsen: the cluster does not serve the transactional workloads %v: %w", txnWorkloadsIn(workloads), last)
		}
	}
}

func probeTxnsOnce(ctx context.Context, cl TxnClient, workloads []string) error {
	tx, err := cl.Begin(ctx)
	if err != nil {
		return fmt.Errorf("BEGIN: %w", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		return fmt.Errorf("ROLLBACK: %w", err)
	}
	if contains(workloads, WorkloadCAS) {
		if _, err := cl.CompareAndSwap(ctx, []byte("cas/probe"), []byte("1"), []byte("2")); err != nil {
			return fmt.Errorf("compare-and-swap: %w", err)
		}
	}
	return nil
}

var errBankPartial = errors.New("jepsen: only some of the bank's accounts exist after a transaction that created all of them")

func setupBankOnce(ctx context.Context, cl TxnClient) (bool, error) {
	tx, err := cl.Begin(ctx)
	if err != nil {
		return false, err
	}
	present := 0
	for i := 0; i < BankAccounts; i++ {
		_, found, err := tx.Get(ctx, []byte(bankKey(i)))
		if err != nil {
			_ = tx.Rollback(ctx)
			return false, err
		}
		if found {
			present++
		}
	}
	switch present {
	case BankAccounts:
		_ = tx.Rollback(ctx)
		return true, nil // an earlier attempt committed
	case 0:
	default:
		_ = tx.Rollback(ctx)
		return false, fmt.Errorf("%w: %d of %d", errBankPartial, present, BankAccounts)
	}
	for i := 0; i < BankAccounts; i++ {
		if err := tx.Put(ctx, []byte(bankKey(i)), []byte(strconv.Itoa(BankInitial))); err != nil {
			_ = tx.Rollback(ctx)
			return false, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// casOp is a read, a write or a compare-and-swap of a cas-register key.
func (w *worker) casOp(ctx context.Context) {
	op := Op{Client: w.id, Key: casKey(w.rng.IntN(casKeys))}
	c, cancel := w.opCtx(ctx)
	defer cancel()
	switch w.rng.IntN(3) {
	case 0:
		op.Kind, op.Call = KindCASRead, w.h.now()
		v, found, err := w.txn.Get(c, []byte(op.Key))
		op.Return = w.h.now()
		switch {
		case err != nil:
			op.Status, op.Error = StatusFail, err.Error()
		case found:
			op.Status = StatusOK
			if op.Value, err = decodeCAS(v); err != nil {
				op.Error, op.Value = err.Error(), -1 // the checker flags it
			}
		default:
			op.Status = StatusOK
		}
	case 1:
		op.Kind, op.Value, op.Call = KindCASWrite, 1+w.rng.Int64N(casValues), w.h.now()
		err := w.txn.Put(c, []byte(op.Key), encodeVal(op.Value))
		op.Return, op.Status = w.h.now(), txnStatus(w.txn, err)
		if err != nil {
			op.Error = err.Error()
		}
	default:
		op.Kind, op.Old, op.Value = KindCAS, 1+w.rng.Int64N(casValues), 1+w.rng.Int64N(casValues)
		op.Call = w.h.now()
		swapped, err := w.txn.CompareAndSwap(c, []byte(op.Key), encodeVal(op.Old), encodeVal(op.Value))
		op.Return, op.Status, op.Swapped = w.h.now(), txnStatus(w.txn, err), swapped && err == nil
		if err != nil {
			op.Error = err.Error()
		}
	}
	w.h.add(op)
}

func decodeCAS(b []byte) (int64, error) {
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || v < 1 || v > casValues {
		return 0, fmt.Errorf("cas-register value %q is not a value the harness wrote", b)
	}
	return v, nil
}

// finalTxnReads reads, once everything healed and every client stopped,
// every list-append key and every balance, retrying each read until it
// commits. It returns what it could not read.
func finalTxnReads(ctx context.Context, cl TxnClient, h *History, workloads []string, shared *txnShared, logf func(string, ...any)) []string {
	bound := func(ctx context.Context) (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, 10*time.Second)
	}
	var missing []string
	retry := func(what string, do func() Op) {
		var last Op
		for attempt := 0; attempt < finalAttempts && ctx.Err() == nil; attempt++ {
			if last = do(); last.Status == StatusOK {
				h.add(last)
				return
			}
			if !sleepUntil(ctx, time.Now().Add(finalRetryWait)) {
				break
			}
		}
		logf("final read of %s failed: %s", what, last.Error)
		missing = append(missing, fmt.Sprintf("%s (%s)", what, last.Error))
	}
	if contains(workloads, WorkloadListAppend) {
		n := shared.usedKeys()
		for start := 0; start < n; start += laFinalBatch {
			var mops []Mop
			for k := start; k < min(n, start+laFinalBatch); k++ {
				mops = append(mops, Mop{F: MopRead, Key: laKey(k)})
			}
			retry(fmt.Sprintf("%s..%s", laKey(start), laKey(start+len(mops)-1)), func() Op {
				return runListAppend(ctx, cl, -1, h, slices.Clone(mops), true, bound)
			})
		}
	}
	if contains(workloads, WorkloadBank) {
		retry("the balances", func() Op { return readBalances(ctx, cl, -1, h, true, bound) })
	}
	return missing
}

// checkTxnWorkloads runs the transactional workloads' checkers. The
// list-append report (every anomaly, each cycle's transactions written
// out) goes to dir/list-append.txt.
func checkTxnWorkloads(ops []Op, workloads []string, finalMissing []string, timeout time.Duration, dir string) []Verdict {
	var out []Verdict
	if contains(workloads, WorkloadListAppend) {
		out = append(out, listAppendVerdict(ops, finalMissing, dir))
	}
	if contains(workloads, WorkloadBank) {
		v := checkBank(ops, BankAccounts, BankTotal)
		if len(finalMissing) > 0 {
			v.Detail += "; final reads missing: " + strings.Join(finalMissing, ", ")
		}
		out = append(out, v)
	}
	if contains(workloads, WorkloadCAS) {
		out = append(out, checkLinearizable(WorkloadCAS, casModel, casOps(ops), timeout, dir, false))
	}
	return out
}

// listAppendVerdict checks the list-append history.
func listAppendVerdict(ops []Op, finalMissing []string, dir string) Verdict {
	res := CheckListAppend(ops)
	v := Verdict{Checker: WorkloadListAppend, Ops: res.Txns, Result: "ok", Detail: res.Summary()}
	finals := 0
	for _, op := range ops {
		if op.Kind == KindTxn && op.Final && op.Status == StatusOK {
			finals++
		}
	}
	switch {
	case res.Unchecked != "":
		v.Result = "unknown"
	case !res.Valid():
		v.Result = "violation"
	case res.Committed <= finals:
		v.Result = "unknown"
		v.Detail = "no transaction of the workload committed: nothing to check; " + v.Detail
	}
	if len(finalMissing) > 0 {
		v.Detail += "; lost appends not checked for the keys whose final read failed: " + strings.Join(finalMissing, ", ")
	}
	if dir != "" {
		path := filepath.Join(dir, WorkloadListAppend+".txt")
		if err := writeFile(dir, WorkloadListAppend+".txt", []byte(res.Text())); err == nil {
			v.Report = path
		}
	}
	return v
}
