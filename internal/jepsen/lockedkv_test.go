package jepsen

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kayadb/kayadb/client"
)

// lockedKV stands in for the client's transactions in the wiring test:
// every transaction and every single-key operation of every worker holds
// one lock, so that plain GETs and PUTs through the real client behave as
// strictly serializable transactions. A commit applies its writes one PUT
// at a time; so that it is all or nothing, each PUT made under the lock
// has its own deadline (not the caller's, which the wait for the lock
// may have used up) and is repeated until it succeeds — the same value
// again, while nobody else writes (the test runs no nemesis).
type lockedKV struct {
	mu *sync.Mutex
	cl *client.Client
}

func foundKV(v []byte, err error) ([]byte, bool, error) {
	if errors.Is(err, client.ErrNotFound) {
		return nil, false, nil
	}
	return v, err == nil, err
}

func (l lockedKV) NotApplied(err error) bool { return writeStatus(err) == StatusFail }

func (l lockedKV) Begin(ctx context.Context) (TxnHandle, error) {
	l.mu.Lock()
	return &lockedTxn{l: l, writes: map[string]*[]byte{}}, nil
}

func (l lockedKV) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return foundKV(l.cl.Get(ctx, key))
}

func (l lockedKV) Put(ctx context.Context, key, value []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.put(key, value, false)
}

// put writes under the lock until the write succeeds: about a minute at
// most, far beyond what a cluster without faults needs.
func (l lockedKV) put(key, value []byte, del bool) error {
	var err error
	for attempt := 0; attempt < 12; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if del {
			err = l.cl.Delete(ctx, key)
			if errors.Is(err, client.ErrNotFound) {
				err = nil
			}
		} else {
			err = l.cl.Put(ctx, key, value)
		}
		cancel()
		if err == nil {
			return nil
		}
	}
	return err
}

func (l lockedKV) CompareAndSwap(ctx context.Context, key, old, new []byte) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, found, err := foundKV(l.cl.Get(ctx, key))
	if err != nil || !found || string(v) != string(old) {
		return false, err
	}
	if err := l.put(key, new, false); err != nil {
		return false, err
	}
	return true, nil
}

type lockedTxn struct {
	l      lockedKV
	writes map[string]*[]byte
	done   bool
}

func (t *lockedTxn) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	if w, ok := t.writes[string(key)]; ok {
		if w == nil {
			return nil, false, nil
		}
		return *w, true, nil
	}
	return foundKV(t.l.cl.Get(ctx, key))
}

func (t *lockedTxn) Put(ctx context.Context, key, value []byte) error {
	v := append([]byte(nil), value...)
	t.writes[string(key)] = &v
	return nil
}

func (t *lockedTxn) Delete(ctx context.Context, key []byte) error {
	t.writes[string(key)] = nil
	return nil
}

func (t *lockedTxn) end() {
	if !t.done {
		t.done = true
		t.l.mu.Unlock()
	}
}

func (t *lockedTxn) Rollback(ctx context.Context) error {
	t.end()
	return nil
}

func (t *lockedTxn) Commit(ctx context.Context) error {
	defer t.end()
	keys := make([]string, 0, len(t.writes))
	for k := range t.writes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		var v []byte
		w := t.writes[k]
		if w != nil {
			v = *w
		}
		if err := t.l.put([]byte(k), v, w == nil); err != nil {
			return err
		}
	}
	return nil
}

// The transactional workloads run through Run against a real cluster —
// bank setup, the workers' clients, the final reads after the workload,
// the checkers and the report — with lockedKV standing in for the
// client's transactions until they exist.
func TestJepsenTxnWorkloadsWiring(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped in -short mode")
	}
	bin := buildServer(t)
	var mu sync.Mutex
	sum, err := Run(context.Background(), Config{Bin: bin, Seed: 41, Nemeses: []string{}, Workloads: TxnWorkloads,
		Clients: 4, Duration: 6 * time.Second, ReportDir: reportDir(t), Logf: logf(t),
		TxnClientFor: func(cl *client.Client) (TxnClient, error) { return lockedKV{&mu, cl}, nil }})
	if err != nil {
		t.Fatalf("the harness failed: %v", err)
	}
	text := sum.Text()
	t.Log("\n" + text)
	if !sum.Valid {
		t.Fatal("INVALID")
	}
	for _, name := range TxnWorkloads {
		v := verdictOf(sum.Verdicts, name)
		if v.Result != "ok" || v.Ops < 20 {
			t.Errorf("%s: %s with %d ops: %s", name, v.Result, v.Ops, v.Detail)
		}
	}
	if v := verdictOf(sum.Verdicts, WorkloadBank); !strings.Contains(v.Detail, "(1 final)") {
		t.Errorf("bank: no final read: %s", v.Detail)
	}
	if sum.Ops.ByKind[KindTxn] == 0 || sum.Ops.ByKind[KindCAS] == 0 || sum.Ops.ByKind[KindTransfer] == 0 {
		t.Errorf("ops by kind: %v", sum.Ops.ByKind)
	}
}
