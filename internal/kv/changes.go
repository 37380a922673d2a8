package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/kayadb/kayadb/engine"
)

// Reading the history of changes (docs/design/cdc-and-watch.md §1)
//
// The revision log lists every change of every commit at its commit
// timestamp (its revision), on every replica alike; the values are the
// versions that started at that revision (the current value, or a history
// entry). Above the GC horizon both are complete, on every node: change
// feeds and watches read them with ReadChanges.

// Change kinds (the revision log's, and the wire's CDC event ops).
const (
	ChangePut    = revPut
	ChangeDelete = revDelete
)

// Change is one change of a key: at revision Rev, a put of Value or a
// delete.
type Change struct {
	Rev   uint64
	Op    byte // ChangePut or ChangeDelete
	Key   []byte
	Value []byte // ChangePut only
}

// ChangeBounds bounds one ReadChanges call. A page always ends at a commit
// boundary and holds at least one commit whole (when any is in range), so
// that a reader resuming after the last revision it got never skips part
// of a commit.
type ChangeBounds struct {
	// MaxChanges and MaxBytes (keys and values) bound the changes
	// returned; the first commit is returned whole even when larger.
	MaxChanges, MaxBytes int
	// MaxScanned bounds the revision-log entries read, matched or not
	// (the cost of one call on a long stretch of other keys' changes).
	MaxScanned int
}

// ExtPrefix starts the system keys of components above kv (such as the
// change feed's consumer positions), which their Evaluators write with
// ApplyTx.PutSystem. Its second byte ('x') keeps it clear of the keys
// garbage collection reads ('h', 'l', 'o').
var ExtPrefix = []byte("\x00x/")

func checkExtKey(key []byte) error {
	if !bytes.HasPrefix(key, ExtPrefix) || len(key) > len(ExtPrefix)+engine.MaxKeySize {
		return fmt.Errorf("%w: system key %q is not under 0x00 \"x/\" or is too long", engine.ErrInvalidArgument, key)
	}
	return nil
}

// GetSystem reads a system key under ExtPrefix from this node's applied
// state (engine.ErrNotFound when absent). The value is a copy.
func (s *Store) GetSystem(key []byte) ([]byte, error) {
	if err := checkExtKey(key); err != nil {
		return nil, err
	}
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	v, err := s.db.Get(key)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(v), nil
}

// ScanSystem returns up to max system keys under prefix (which must be
// under ExtPrefix) from this node's applied state, in key order.
func (s *Store) ScanSystem(prefix []byte, max int) ([]KV, error) {
	if err := checkExtKey(prefix); err != nil {
		return nil, err
	}
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	it, err := s.db.NewIter(&engine.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	var out []KV
	for ok := it.First(); ok && len(out) < max; ok = it.Next() {
		out = append(out, KV{Key: bytes.Clone(it.Key()), Value: bytes.Clone(it.Value())})
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	return out, nil
}

// AppliedNotify returns a channel that is closed when the applied revision
// next moves (an applied entry, an installed snapshot). Read AppliedTS
// after taking the channel, so that no move is missed.
func (s *Store) AppliedNotify() <-chan struct{} {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	if s.notifyCh == nil {
		s.notifyCh = make(chan struct{})
	}
	return s.notifyCh
}

// signalApplied wakes AppliedNotify's waiters (no allocation when nobody
// waits).
func (s *Store) signalApplied() {
	s.notifyMu.Lock()
	if s.notifyCh != nil {
		close(s.notifyCh)
		s.notifyCh = nil
	}
	s.notifyMu.Unlock()
}

// ReadChanges returns the changes with revisions in (after, upTo] (upTo 0
// or past the last applied revision: up to the last applied) whose key
// match accepts (nil: every user key), in revision order, within b, and
// the revision it read up to: upTo when it got there, else the revision
// of the last commit it read whole (the next call starts after it). Of a
// commit that changed a key twice, only the last change counts (the first
// was never visible).
//
// after below the GC horizon answers a *CompactedError whose Oldest is
// the horizon: the changes after it are complete, the ones before are
// (or may be) collected. It reads this node's applied state, without a
// ReadIndex round.
func (s *Store) ReadChanges(after, upTo uint64, match func(key []byte) bool, b ChangeBounds) ([]Change, uint64, error) {
	if b.MaxChanges <= 0 || b.MaxBytes <= 0 || b.MaxScanned <= 0 {
		return nil, after, fmt.Errorf("%w: ReadChanges needs positive bounds", engine.ErrInvalidArgument)
	}
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if applied := s.appliedTS.Load(); upTo == 0 || upTo > applied {
		upTo = applied
	}
	// As ReadAt: the snapshot pins a state that holds everything up to
	// upTo and that collection cannot touch; the horizon checked after it
	// covers whatever collection did before.
	sn := s.db.NewSnapshot()
	defer sn.Close()
	if h := s.horizon.Load(); after < h {
		return nil, after, &CompactedError{Revision: after, Oldest: h}
	}
	if after >= upTo {
		return nil, after, nil
	}
	it, err := sn.NewIter(&engine.IterOptions{LowerBound: revlogKey(nil, after+1, 0), UpperBound: revlogKey(nil, upTo+1, 0)})
	if err != nil {
		return nil, after, err
	}
	defer it.Close()

	var (
		out     []Change
		size    int
		scanned int
		commit  []Change // the changes of the commit being read
		cur     uint64   // its revision
		next    = after
	)
	// flush ends the commit being read: it resolves the values of its
	// matched changes and adds them, unless the page is full.
	flush := func() (full bool, err error) {
		if len(commit) == 0 {
			next = cur
			return false, nil
		}
		commit = lastPerKey(commit)
		n := 0
		for i := range commit {
			c := &commit[i]
			if c.Op == ChangePut {
				if c.Value, err = versionStartedAt(sn, c.Key, c.Rev); err != nil {
					return false, err
				}
			}
			n += len(c.Key) + len(c.Value)
		}
		if len(out) > 0 && (len(out)+len(commit) > b.MaxChanges || size+n > b.MaxBytes) {
			return true, nil
		}
		out = append(out, commit...)
		size += n
		commit = nil
		next = cur
		return len(out) >= b.MaxChanges || size >= b.MaxBytes, nil
	}
	for ok := it.First(); ok; ok = it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != len(revlogPrefix)+12 || len(v) < 1 || (v[0] != revPut && v[0] != revDelete) {
			return nil, after, corruptf("malformed revision-log entry %q", k)
		}
		ts := binary.BigEndian.Uint64(k[len(revlogPrefix):])
		if ts != cur {
			if cur != 0 {
				full, err := flush()
				if err != nil {
					return nil, after, err
				}
				if full || scanned >= b.MaxScanned {
					return out, next, nil
				}
			}
			cur = ts
		}
		scanned++
		key := v[1:]
		if match == nil || match(key) {
			commit = append(commit, Change{Rev: ts, Op: v[0], Key: bytes.Clone(key)})
		}
	}
	if err := it.Error(); err != nil {
		return nil, after, err
	}
	if cur != 0 {
		if full, err := flush(); err != nil {
			return nil, after, err
		} else if full && len(commit) > 0 {
			return out, next, nil // the last commit did not fit
		}
	}
	return out, upTo, nil
}

// lastPerKey keeps, of changes to one key in one commit, only the last
// (in place, order of the kept ones preserved).
func lastPerKey(cs []Change) []Change {
	if len(cs) < 2 {
		return cs
	}
	seen := make(map[string]struct{}, len(cs))
	keep := cs[:0:0]
	for i := len(cs) - 1; i >= 0; i-- {
		if _, dup := seen[string(cs[i].Key)]; dup {
			continue
		}
		seen[string(cs[i].Key)] = struct{}{}
		keep = append(keep, cs[i])
	}
	for i, j := 0, len(keep)-1; i < j; i, j = i+1, j-1 {
		keep[i], keep[j] = keep[j], keep[i]
	}
	return keep
}

// versionStartedAt returns the value key took at revision ts: its current
// value if that started at ts, else its history entry that started at ts.
// Above the horizon one of them exists for every put in the revision log.
func versionStartedAt(sn Getter, key []byte, ts uint64) ([]byte, error) {
	v, err := sn.Get(key)
	if err == nil {
		val, cts, err := DecodeValue(v)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", key, err)
		}
		if cts == ts {
			return bytes.Clone(val), nil
		}
	} else if !errors.Is(err, engine.ErrNotFound) {
		return nil, err
	}
	h, err := sn.Get(historyKey(nil, key, ts))
	if errors.Is(err, engine.ErrNotFound) {
		return nil, corruptf("the revision log has a put of %q at %d but no such version", key, ts)
	}
	if err != nil {
		return nil, err
	}
	_, val, err := decodeHistoryValue(h)
	if err != nil {
		return nil, fmt.Errorf("history of %q: %w", key, err)
	}
	return bytes.Clone(val), nil
}

// interest lets the reader of applied changes skip the runs that touched
// no key it wants, without reading them back. The reader installs a
// filter (SetInterest); each apply run checks its changes' keys against
// the filter it started with, and publishes its revision as needed (upTo)
// when one matched. Installing a filter counts everything applied so far
// as needed, and a run that started under an older filter counts as
// needed, so that a key the new filter wants is never skipped.
type interest struct {
	mu    sync.Mutex
	gen   uint64
	match func(key []byte) bool // nil: every key
	upTo  uint64                // no revision after it touched a wanted key
}

// current returns the filter an apply run starts with.
func (in *interest) current() (uint64, func(key []byte) bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.gen, in.match
}

// publish makes revision ts applied; hit says a change of the run matched
// the filter of generation gen.
func (in *interest) publish(s *Store, ts uint64, hit bool, gen uint64) {
	in.mu.Lock()
	if hit || gen != in.gen {
		in.upTo = max(in.upTo, ts)
	}
	s.appliedTS.Store(ts)
	in.mu.Unlock()
}

// SetInterest installs the filter of the keys whose changes the caller
// will read (nil: every key); match must be safe for concurrent use and
// cheap (it runs on the apply path, once per change until one matches).
// Interest then tells which applied revisions may hold such a change.
func (s *Store) SetInterest(match func(key []byte) bool) {
	in := &s.interest
	in.mu.Lock()
	defer in.mu.Unlock()
	in.gen++
	in.match = match
	in.upTo = max(in.upTo, s.appliedTS.Load())
}

// Interest returns the applied revision and the last revision that may
// hold a change of a key the installed filter wants: no revision in
// (need, applied] does. With no filter installed, need is applied.
func (s *Store) Interest() (applied, need uint64) {
	in := &s.interest
	in.mu.Lock()
	defer in.mu.Unlock()
	applied = s.appliedTS.Load()
	if in.match == nil {
		return applied, applied
	}
	return applied, min(in.upTo, applied)
}
