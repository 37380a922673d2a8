package client

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/wire"
)

// TestRunSTMCounter: concurrent read-modify-write transactions on one key
// lose no increment (every commit validated the value it read).
func TestRunSTMCounter(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, []string{srv.addr}, &Options{MaxTxnAttempts: 1000})
	ctx := ctxT(t, 30*time.Second)
	const workers, each = 8, 10
	var attempts atomic.Int64
	inParallel(t, workers, each, func(int, int) error {
		_, err := c.RunSTM(ctx, func(s *STM) error {
			attempts.Add(1)
			next, err := incremented(s.Get([]byte("counter")))
			if err != nil {
				return err
			}
			return s.Put([]byte("counter"), next)
		})
		return err
	})
	v, err := c.Get(ctx, []byte("counter"))
	if err != nil || string(v) != fmt.Sprint(workers*each) {
		t.Fatalf("counter = %q (%v), want %d", v, err, workers*each)
	}
	if srv.count(wire.OpTxnBegin) != 0 {
		t.Fatal("RunSTM began a server-side transaction")
	}
	t.Logf("%d attempts for %d transactions", attempts.Load(), workers*each)
}

// TestRunSTMConflictRetriesWithoutRereading: a key changed between the
// read and the commit fails the commit; fn runs again with the current
// value, which the failed commit read back (no GET_AT for it).
func TestRunSTMConflictRetriesWithoutRereading(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 10*time.Second)
	if err := c.Put(ctx, []byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	var seen []string
	rev, err := c.RunSTM(ctx, func(s *STM) error {
		vals, err := s.GetMany([]byte("a"), []byte("missing"))
		if err != nil {
			return err
		}
		if vals[1] != nil {
			return fmt.Errorf("missing key read as %q", vals[1])
		}
		seen = append(seen, string(vals[0]))
		if len(seen) == 1 { // another writer, between the read and the commit
			if err := c.Put(ctx, []byte("a"), []byte("2")); err != nil {
				return err
			}
		}
		return s.Put([]byte("b"), append([]byte("from "), vals[0]...))
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || seen[0] != "1" || seen[1] != "2" {
		t.Fatalf("fn saw %q, want [1 2]", seen)
	}
	if n := srv.count(wire.OpGetAt); n != 2 {
		t.Fatalf("%d GET_AT requests, want 2 (the first attempt's reads only)", n)
	}
	if n := srv.count(wire.OpKayaTxn); n != 2 {
		t.Fatalf("%d KAYA_TXN requests, want 2", n)
	}
	v, modRev, err := c.GetWithRevision(ctx, []byte("b"))
	if err != nil || string(v) != "from 2" || modRev != rev {
		t.Fatalf("b = %q at %d (%v), want \"from 2\" at %d", v, modRev, err, rev)
	}
}

// TestRunSTMOwnWritesAndAbort: reads see the transaction's own writes and
// deletes; an error from fn writes nothing; the attempts are bounded.
func TestRunSTMOwnWritesAndAbort(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, []string{srv.addr}, &Options{MaxTxnAttempts: 3})
	ctx := ctxT(t, 10*time.Second)
	if err := c.Put(ctx, []byte("x"), []byte("old")); err != nil {
		t.Fatal(err)
	}
	_, err := c.RunSTM(ctx, func(s *STM) error {
		if err := s.Put([]byte("x"), []byte("new")); err != nil {
			return err
		}
		if v, err := s.Get([]byte("x")); err != nil || string(v) != "new" {
			return fmt.Errorf("own write read as %q (%v)", v, err)
		}
		if err := s.Delete([]byte("x")); err != nil {
			return err
		}
		if _, err := s.Get([]byte("x")); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("own delete read as %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, []byte("x")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("x after the committed delete: %v", err)
	}

	boom := errors.New("boom")
	before := srv.count(wire.OpKayaTxn)
	if _, err := c.RunSTM(ctx, func(s *STM) error {
		_ = s.Put([]byte("y"), []byte("never"))
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("fn's error came back as %v", err)
	}
	if srv.count(wire.OpKayaTxn) != before {
		t.Fatal("an aborted STM sent its commit")
	}

	// Always conflicting: given up after MaxTxnAttempts.
	n := 0
	_, err = c.RunSTM(ctx, func(s *STM) error {
		n++
		if _, err := s.Get([]byte("z")); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if err := c.Put(ctx, []byte("z"), fmt.Append(nil, n)); err != nil {
			return err
		}
		return s.Put([]byte("w"), []byte("v"))
	})
	if !errors.Is(err, ErrTxnConflict) || n != 3 {
		t.Fatalf("after %d attempts: %v", n, err)
	}
}

// TestReadLane: with a pool of 8 connections, an STM's reads of the
// applied state travel on the read lane and nothing else does, so a read
// never waits behind a write on a shared connection; a pool of 2 is not
// split.
func TestReadLane(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, []string{srv.addr}, &Options{ConnsPerEndpoint: 8, MaxTxnAttempts: 1000})
	ctx := ctxT(t, 30*time.Second)
	inParallel(t, 16, 20, func(w, i int) error {
		if i%4 == 0 {
			return c.Put(ctx, []byte(fmt.Sprint("p", w)), []byte("x"))
		}
		_, err := c.RunSTM(ctx, func(s *STM) error {
			vs, err := s.GetMany([]byte(fmt.Sprint("a", w)), []byte(fmt.Sprint("b", w)))
			if err != nil {
				return err
			}
			return s.Put([]byte(fmt.Sprint("a", w)), append(vs[0], 'x'))
		})
		return err
	})
	reads, others := map[int]bool{}, map[int]bool{}
	for _, op := range []wire.Opcode{wire.OpGetAt, wire.OpPut, wire.OpKayaTxn} {
		for _, r := range srv.requests(op) {
			if op == wire.OpGetAt {
				reads[r.conn] = true
			} else {
				others[r.conn] = true
			}
		}
	}
	if len(reads) == 0 || len(reads) > readLanes(8) {
		t.Fatalf("GET_ATs came on %d connections, want 1 to %d (the read lane)", len(reads), readLanes(8))
	}
	for id := range reads {
		if others[id] {
			t.Fatalf("connection %d carried reads of the lane and writes", id)
		}
	}

	// A pool of 2 has no lane: reads and writes share it.
	if readLanes(2) != 0 || readLanes(4) != 1 || readLanes(16) != 2 {
		t.Fatalf("readLanes: 2→%d 4→%d 16→%d, want 0, 1, 2", readLanes(2), readLanes(4), readLanes(16))
	}
}

// TestPipelinedGroupsShareASmallPipeline: many callers sending groups of
// pipelined requests through one connection with room for fewer calls
// than they want at once all finish: none waits for a slot while holding
// slots of requests it has not sent.
func TestPipelinedGroupsShareASmallPipeline(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, []string{srv.addr}, &Options{ConnsPerEndpoint: 1, MaxPipeline: 4, RequestTimeout: 10 * time.Second})
	ctx := ctxT(t, 30*time.Second)
	inParallel(t, 32, 30, func(w, i int) error {
		_, err := c.NewSTM(ctx).GetMany([]byte(fmt.Sprint("a", w)), []byte(fmt.Sprint("b", i)), []byte("c"))
		return err
	})
}

// inParallel runs step(w, i) for i in [0, each) on each of workers
// goroutines and fails the test with the first error (a worker stops at
// its first).
func inParallel(t *testing.T, workers, each int, step func(w, i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := step(w, i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
