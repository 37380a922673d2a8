package jepsen

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
)

// memStore is an in-memory multi-version store with transactions, built
// the way the server's are designed (docs/design/mvcc-and-transactions.md
// §5): a snapshot at BEGIN, reads at the snapshot, writes buffered, and
// validation at COMMIT, atomically with the writes. Its modes plant the
// bugs the checkers must catch.
type memStore struct {
	mu sync.Mutex
	ts uint64
	// versions of each key, oldest first.
	versions map[string][]memVersion
	mode     memMode
	rng      *rand.Rand
	// late are commits whose reply was "lost": applied at the next commit
	// of anyone (after their client gave up), if still valid then.
	late []*memTxn
}

type memVersion struct {
	ts      uint64
	val     []byte
	deleted bool
}

type memMode struct {
	// skipReadValidation validates only the write set (snapshot
	// isolation): write skew commits.
	skipReadValidation bool
	// skipAllValidation validates nothing: lost updates.
	skipAllValidation bool
	// unknownEvery: about one commit, swap or put in this many answers an
	// unknown outcome, having applied it now, never, or later.
	unknownEvery int
}

var (
	errMemConflict = errors.New("memstore: txn conflict")
	errMemTimeout  = errors.New("memstore: timed out (outcome unknown)")
)

func newMemStore(seed uint64, mode memMode) *memStore {
	return &memStore{versions: map[string][]memVersion{}, mode: mode, rng: rand.New(rand.NewPCG(seed, 7))}
}

// latest is key's newest version at or before ts (mu held).
func (s *memStore) at(key string, ts uint64) ([]byte, bool) {
	vs := s.versions[key]
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].ts <= ts {
			return vs[i].val, !vs[i].deleted
		}
	}
	return nil, false
}

func (s *memStore) lastMod(key string) uint64 {
	if vs := s.versions[key]; len(vs) > 0 {
		return vs[len(vs)-1].ts
	}
	return 0
}

// outcome draws whether an operation's reply is lost, and what then
// happened to it (mu held): 0 answered, 1 applied now, 2 never, 3 later.
func (s *memStore) outcome() int {
	if s.mode.unknownEvery <= 0 || s.rng.IntN(s.mode.unknownEvery) != 0 {
		return 0
	}
	return 1 + s.rng.IntN(3)
}

// memClient is a TxnClient over a memStore.
type memClient struct{ s *memStore }

func (c memClient) NotApplied(err error) bool { return errors.Is(err, errMemConflict) }

func (c memClient) Begin(ctx context.Context) (TxnHandle, error) {
	runtime.Gosched() // let the clients interleave
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return &memTxn{s: c.s, snap: c.s.ts, reads: map[string]bool{}, writes: map[string]*[]byte{}}, nil
}

func (c memClient) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	runtime.Gosched()
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	v, ok := c.s.at(string(key), c.s.ts)
	return v, ok, nil
}

func (c memClient) Put(ctx context.Context, key, value []byte) error {
	runtime.Gosched()
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	switch c.s.outcome() {
	case 0:
		c.s.write(string(key), value)
		return nil
	case 2:
		return errMemTimeout
	}
	c.s.write(string(key), value) // applied now or later: same for a blind write
	return errMemTimeout
}

func (s *memStore) write(key string, value []byte) {
	s.ts++
	s.versions[key] = append(s.versions[key], memVersion{ts: s.ts, val: bytes.Clone(value), deleted: value == nil})
}

func (c memClient) CompareAndSwap(ctx context.Context, key, old, new []byte) (bool, error) {
	runtime.Gosched()
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	o := c.s.outcome()
	if o == 2 {
		return false, errMemTimeout
	}
	v, ok := c.s.at(string(key), c.s.ts)
	swapped := ok && bytes.Equal(v, old)
	if swapped {
		c.s.write(string(key), new)
	}
	if o != 0 {
		return false, errMemTimeout
	}
	return swapped, nil
}

// memTxn is one transaction.
type memTxn struct {
	s      *memStore
	snap   uint64
	reads  map[string]bool
	writes map[string]*[]byte // nil: delete
	done   bool
}

func (t *memTxn) Get(ctx context.Context, key []byte) ([]byte, bool, error) {
	runtime.Gosched()
	if w, ok := t.writes[string(key)]; ok {
		if w == nil {
			return nil, false, nil
		}
		return *w, true, nil
	}
	t.reads[string(key)] = true
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	v, ok := t.s.at(string(key), t.snap)
	return v, ok, nil
}

func (t *memTxn) Put(ctx context.Context, key, value []byte) error {
	v := bytes.Clone(value)
	t.writes[string(key)] = &v
	return nil
}

func (t *memTxn) Delete(ctx context.Context, key []byte) error {
	t.writes[string(key)] = nil
	return nil
}

func (t *memTxn) Rollback(ctx context.Context) error {
	t.done = true
	return nil
}

func (t *memTxn) Commit(ctx context.Context) error {
	runtime.Gosched()
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	t.done = true
	// Commits whose replies were lost earlier land now.
	late := s.late
	s.late = nil
	for _, l := range late {
		if l.valid() {
			l.apply()
		}
	}
	if len(t.writes) == 0 {
		return nil // read-only: serialized at its snapshot
	}
	if !t.valid() {
		return errMemConflict
	}
	switch s.outcome() {
	case 0:
		t.apply()
		return nil
	case 1:
		t.apply()
	case 3:
		s.late = append(s.late, t)
	}
	return errMemTimeout
}

// valid is the commit-time validation (mu held): nothing the transaction
// wrote (and, serializable, read) changed after its snapshot.
func (t *memTxn) valid() bool {
	if t.s.mode.skipAllValidation {
		return true
	}
	for k := range t.writes {
		if t.s.lastMod(k) > t.snap {
			return false
		}
	}
	if !t.s.mode.skipReadValidation {
		for k := range t.reads {
			if t.s.lastMod(k) > t.snap {
				return false
			}
		}
	}
	return true
}

// apply installs the writes at one new timestamp (mu held).
func (t *memTxn) apply() {
	s := t.s
	s.ts++
	for k, v := range t.writes {
		mv := memVersion{ts: s.ts, deleted: v == nil}
		if v != nil {
			mv.val = *v
		}
		s.versions[k] = append(s.versions[k], mv)
	}
}
