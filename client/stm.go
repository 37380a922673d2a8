package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/kayadb/kayadb/internal/wire"
)

// Optimistic transactions (RunSTM)
//
// An STM transaction holds nothing on the server. Its reads are reads of
// the leader's latest applied state (GET_AT with wire.ReadTSLocal: no
// ReadIndex round, since the commit validates them), each remembered with
// the key's mod revision; its writes are buffered in the client; and its commit is
// one conditional write (KAYA_TXN) whose compares require every key read to
// still have the mod revision it was read with, and whose ops are the
// writes. Raft applies the compares and the writes atomically, in one
// entry: the transaction takes effect at its commit revision, where
// everything it read was still current, so it is serializable — the
// validation of optimistic concurrency control, at the commit point. This
// is etcd's STM (clientv3/concurrency) with its serializable isolation.
//
// Against Begin/Commit (an interactive transaction) it saves round trips
// and server state: two requests for a read-modify-write of a few keys
// (the reads, pipelined, then the commit) instead of BEGIN, reads, writes
// and COMMIT, and no transaction for a failed leader to lose. What it gives
// up: reads do not come from one snapshot while fn runs (a later read may
// see a newer state than an earlier one; the commit then fails and fn runs
// again, so a committed transaction never acted on such a mix), and every
// key read counts, including keys read and not used.
//
// When validation fails, the commit's Else branch reads the keys again (in
// the same raft entry), so the next attempt starts with their current
// values and revisions and needs no read round trip for them.

// STM is one attempt of an optimistic transaction: RunSTM makes one per
// attempt, or NewSTM for a caller that runs its own loop. Its methods are
// not safe for concurrent use.
type STM struct {
	c   *Client
	ctx context.Context
	// reads are the keys read, with what they held (value nil: missing)
	// and their mod revision (0: missing).
	reads     map[string]stmRead
	readOrder []string
	// writes are the buffered writes, last one per key, in first-write
	// order.
	writes     map[string]stmWrite
	writeOrder []string
	// primed holds what the previous attempt's failed commit read back:
	// reads served from it cost no round trip.
	primed map[string]stmRead
}

type stmRead struct {
	value []byte
	rev   uint64
}

type stmWrite struct {
	value []byte
	del   bool
}

// maxSTMKeys bounds the keys an STM transaction may read or write:
// each read is a compare and each write an op of one KAYA_TXN.
const maxSTMKeys = wire.MaxCondCompares

// Get returns the value of key, or ErrNotFound when it is missing (or
// deleted by this transaction). The key joins the read set.
func (s *STM) Get(key []byte) ([]byte, error) {
	vals, err := s.GetMany(key)
	if err != nil {
		return nil, err
	}
	if vals[0] == nil {
		return nil, ErrNotFound
	}
	return vals[0], nil
}

// GetMany returns the values of keys (nil for a missing key, a non-nil
// empty slice for a present empty value), reading the ones it has not
// read yet in one round trip (pipelined). A key this transaction wrote
// reads its own write.
func (s *STM) GetMany(keys ...[]byte) ([][]byte, error) {
	out := make([][]byte, len(keys))
	var need []int
	for i, k := range keys {
		if err := checkKey("key", k); err != nil {
			return nil, err
		}
		if w, ok := s.writes[string(k)]; ok {
			if !w.del {
				out[i] = w.value
			}
			continue
		}
		if r, ok := s.reads[string(k)]; ok {
			out[i] = r.value
			continue
		}
		if r, ok := s.primed[string(k)]; ok {
			s.noteRead(k, r)
			out[i] = r.value
			continue
		}
		need = append(need, i)
	}
	if len(need) == 0 {
		return out, nil
	}
	if len(s.reads)+len(need) > maxSTMKeys {
		return nil, fmt.Errorf("%w: an STM transaction reads at most %d keys", ErrInvalidArgument, maxSTMKeys)
	}
	got, err := s.read(keys, need)
	if err != nil {
		return nil, err
	}
	for j, i := range need {
		if _, ok := s.reads[string(keys[i])]; !ok { // a key asked twice
			s.noteRead(keys[i], got[j])
		}
		out[i] = s.reads[string(keys[i])].value
	}
	return out, nil
}

func (s *STM) noteRead(key []byte, r stmRead) {
	if s.reads == nil {
		s.reads = map[string]stmRead{}
	}
	s.reads[string(key)] = r
	s.readOrder = append(s.readOrder, string(key))
}

// read reads keys[need...] from the leader's applied state without a
// ReadIndex round (wire.ReadTSLocal: the commit validates what it read, so
// a stale value only costs a retry), pipelined on one connection. When
// that fails (a redirect, a lost connection, a server that predates local
// reads) it reads them one by one, linearizably, with the client's
// retries.
func (s *STM) read(keys [][]byte, need []int) ([]stmRead, error) {
	out, ok, err := s.readLocal(keys, need)
	if ok || err != nil {
		return out, err
	}
	for j, i := range need {
		v, rev, err := s.c.GetWithRevision(s.ctx, keys[i])
		if errors.Is(err, ErrNotFound) {
			out[j] = stmRead{}
			continue
		}
		if err != nil {
			return nil, err
		}
		out[j] = present(v, rev)
	}
	return out, nil
}

// readLocal is read's pipelined attempt at wire.ReadTSLocal; ok is false
// when it must be read again the slow way (a redirect, a failed
// connection, a server without local reads).
func (s *STM) readLocal(keys [][]byte, need []int) (out []stmRead, ok bool, err error) {
	reqs := make([]request, len(need))
	for j, i := range need {
		reqs[j] = request{op: wire.OpGetAt, inner: wire.AppendGetAt(nil, wire.ReadTSLocal, keys[i]), leaderOnly: true, immediate: true}
	}
	addr := s.c.route()
	out = make([]stmRead, len(need))
	for j, r := range s.c.pipeline(s.ctx, addr, reqs) {
		if r.err != nil || r.a.st == wire.StatusNotLeader || r.a.st == wire.StatusInvalidArgument {
			return out, false, nil
		}
		if err := statusError(r.a.st, r.a.payload); err != nil {
			if errors.Is(err, ErrNotFound) {
				continue // stmRead{}: missing
			}
			return nil, false, unsupported(wire.OpGetAt, err)
		}
		v, rev, err := wire.DecodeGetAtReply(r.a.payload)
		if err != nil {
			return nil, false, fmt.Errorf("%w: GET_AT reply from %s: %w", ErrProtocol, addr, err)
		}
		out[j] = present(v, rev)
	}
	return out, true, nil
}

// present is the read of an existing key (a nil value is an empty one).
func present(v []byte, rev uint64) stmRead {
	if v == nil {
		v = []byte{}
	}
	return stmRead{value: v, rev: rev}
}

// Put buffers a write of value under key (copied), applied at the commit.
func (s *STM) Put(key, value []byte) error {
	if err := checkOp(key, value); err != nil {
		return err
	}
	return s.buffer(key, stmWrite{value: append([]byte{}, value...)})
}

// Delete buffers a delete of key, applied at the commit.
func (s *STM) Delete(key []byte) error {
	if err := checkOp(key, nil); err != nil {
		return err
	}
	return s.buffer(key, stmWrite{del: true})
}

func (s *STM) buffer(key []byte, w stmWrite) error {
	if s.writes == nil {
		s.writes = map[string]stmWrite{}
	}
	if _, ok := s.writes[string(key)]; !ok {
		if len(s.writes) >= wire.MaxCondOps {
			return fmt.Errorf("%w: an STM transaction writes at most %d keys", ErrInvalidArgument, wire.MaxCondOps)
		}
		s.writeOrder = append(s.writeOrder, string(key))
	}
	s.writes[string(key)] = w
	return nil
}

// errSTMConflict is what one attempt returns when validation failed.
var errSTMConflict = fmt.Errorf("%w: a key the transaction read changed before it committed", ErrTxnConflict)

// NewSTM starts one attempt of an optimistic transaction whose requests use
// ctx (RunSTM runs the retry loop; this is for callers with their own).
func (c *Client) NewSTM(ctx context.Context) *STM { return &STM{c: c, ctx: ctx} }

// Commit sends the transaction's one conditional write and returns its
// commit revision: the writes are applied if every key read still has the
// mod revision it was read with. ErrTxnConflict: one changed, nothing was
// written (RunSTM's next attempt then starts from the values this commit
// read back). ErrAmbiguous: the outcome is unknown. A transaction that
// neither read nor wrote commits nothing and returns 0. Call it once.
func (s *STM) Commit() (uint64, error) {
	if len(s.readOrder) == 0 && len(s.writeOrder) == 0 {
		return 0, nil
	}
	return s.commit()
}

// commit sends the conditional write: the writes if every read key is
// unchanged, else reads of the read keys (to prime the next attempt). It
// returns the commit revision.
func (s *STM) commit() (uint64, error) {
	t := s.c.Txn(s.ctx)
	cmps := make([]Cmp, 0, len(s.readOrder))
	reread := make([]Op, 0, len(s.readOrder))
	for _, k := range s.readOrder {
		cmps = append(cmps, CompareModRevision([]byte(k), Equal, s.reads[k].rev))
		reread = append(reread, OpGet([]byte(k)))
	}
	ops := make([]Op, 0, len(s.writeOrder))
	for _, k := range s.writeOrder {
		if w := s.writes[k]; w.del {
			ops = append(ops, OpDelete([]byte(k)))
		} else {
			ops = append(ops, OpPut([]byte(k), w.value))
		}
	}
	resp, err := t.If(cmps...).Then(ops...).Else(reread...).Commit()
	if err != nil {
		return 0, err
	}
	if resp.Succeeded {
		return resp.Revision, nil
	}
	primed := make(map[string]stmRead, len(resp.Results))
	for _, r := range resp.Results {
		if r.Found {
			primed[string(r.Key)] = present(r.Value, r.ModRevision)
		} else {
			primed[string(r.Key)] = stmRead{}
		}
	}
	s.primed = primed
	return 0, errSTMConflict
}

// RunSTM runs fn as an optimistic, serializable transaction (see STM) and
// returns its commit revision. fn reads with Get and GetMany and writes
// with Put and Delete; when a key it read changed before the commit, fn
// runs again (up to Options.MaxTxnAttempts times, with RunTxn's back-off,
// the first retry at once: it needs no read round trip), so fn must have
// no effects outside the STM. An error from fn aborts the transaction
// (nothing is written) and is returned. The commit is a write: on
// ErrAmbiguous it may or may not have been applied.
func (c *Client) RunSTM(ctx context.Context, fn func(*STM) error) (uint64, error) {
	var primed map[string]stmRead
	for attempt := 1; ; attempt++ {
		s := &STM{c: c, ctx: ctx, primed: primed}
		if err := fn(s); err != nil {
			return 0, err
		}
		rev, err := s.Commit()
		if err == nil {
			return rev, nil
		}
		if !errors.Is(err, errSTMConflict) {
			return 0, err
		}
		if attempt >= c.opts.MaxTxnAttempts {
			return 0, fmt.Errorf("kayadb: transaction given up after %d attempts: %w", attempt, err)
		}
		primed = s.primed
		if attempt > 1 {
			if err := c.sleep(ctx, txnBackoff(attempt-1)); err != nil {
				return 0, sleepError(err, errSTMConflict)
			}
		}
	}
}
