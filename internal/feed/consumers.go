// Package feed is the change feed and the watches of a node
// (docs/design/cdc-and-watch.md): CDC consumers, whose positions are
// stored through raft, and the hub that fans the applied history out to
// watchers.
//
// It reads history only through kv.Store.ReadChanges, which serves
// applied (hence committed) changes that are complete above the GC
// horizon on every node. It must never deliver a change that is not
// applied, never deliver a revision twice or skip one on a watch, never
// let a watcher block the hub (a full buffer cancels the watch), and never
// decide anything in the apply that another replica could decide
// differently.
//
// # Consumer positions
//
// A CDC consumer's stored position is the system key
//
//	0x00 "x/cdc/" | consumer → seq u64 BE
//
// written by the custom command OpConsumer in the raft apply:
//
//	body: action u8 (1 set, 2 delete) · len u8 · consumer · [seq u64 LE, set only]
package feed

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/kv"
)

// OpConsumer is the custom command that sets or deletes a consumer's
// position (kv.OpCustomMin+8: the transaction manager uses the first ops).
const OpConsumer = kv.OpCustomMin + 8

const (
	actionSet    = 1
	actionDelete = 2
)

// Bounds of the change feed.
const (
	// MaxConsumers bounds the registered consumers: their positions are
	// scanned once per GC tick to hold history, and each can hold it.
	MaxConsumers = 10000
	// maxTracked bounds the positions the leader remembers from polls
	// (for CDC_CHECKPOINT without a seq): a name is at most 64 bytes.
	maxTracked = 10000
	// MaxPollEvents and MaxPollBytes bound one CDC_POLL reply (about 4 MiB
	// of keys and values, so that a reply stays far below a frame and the
	// per-connection reply memory), beyond the client's limit.
	MaxPollEvents = 10000
	MaxPollBytes  = 4 << 20
	// maxPollScanned bounds the revision-log entries one poll reads.
	maxPollScanned = 100000
	// maxFilteredPollScanned bounds them for a poll filtered to what its
	// principal may read: a stretch of others' changes is skipped in one
	// poll (a reply without events does not tell the client how far it
	// got), within about a request's time (entries are read, not
	// decoded, when they do not match).
	maxFilteredPollScanned = 64 * maxPollScanned
)

var consumerPrefix = append(append([]byte(nil), kv.ExtPrefix...), "cdc/"...)

func consumerKey(name string) []byte {
	return append(append([]byte(nil), consumerPrefix...), name...)
}

// Evaluators returns the feed's custom commands, for kv.Options.Evaluators.
func Evaluators() map[byte]kv.Evaluator {
	return map[byte]kv.Evaluator{OpConsumer: evalConsumer}
}

func encodeConsumerCmd(action byte, name string, seq uint64) []byte {
	b := append([]byte{action, byte(len(name))}, name...)
	if action == actionSet {
		b = binary.LittleEndian.AppendUint64(b, seq)
	}
	return b
}

// evalConsumer applies OpConsumer (deterministic: a function of the body).
func evalConsumer(tx *kv.ApplyTx, body []byte) ([]byte, error) {
	if len(body) < 2 || len(body) < 2+int(body[1]) || body[1] == 0 || body[1] > 64 {
		return nil, fmt.Errorf("feed: malformed consumer command of %d bytes", len(body))
	}
	name := string(body[2 : 2+int(body[1])])
	rest := body[2+int(body[1]):]
	switch body[0] {
	case actionSet:
		if len(rest) != 8 {
			return nil, fmt.Errorf("feed: consumer command: a position of %d bytes, want 8", len(rest))
		}
		return nil, tx.PutSystem(consumerKey(name), binary.BigEndian.AppendUint64(nil, binary.LittleEndian.Uint64(rest)))
	case actionDelete:
		if len(rest) != 0 {
			return nil, fmt.Errorf("feed: consumer command: %d bytes after a delete", len(rest))
		}
		return nil, tx.DeleteSystem(consumerKey(name))
	}
	return nil, fmt.Errorf("feed: consumer command: unknown action %d", body[0])
}

// CompactedError is a position below the retained history.
type CompactedError struct{ Pos, Oldest uint64 }

func (e *CompactedError) Error() string {
	return fmt.Sprintf("cdc: position %d is compacted; the oldest available position is %d", e.Pos, e.Oldest)
}

// Consumers serves CDC_POLL, CDC_CHECKPOINT and CDC_CONSUMER on the
// leader.
type Consumers struct {
	store *kv.Store
	// term returns the node's current raft term: a position remembered
	// from a poll counts only in the term it was sent.
	term func() uint64

	mu       sync.Mutex
	lastSent map[string]sent
}

type sent struct{ seq, term uint64 }

// NewConsumers returns the consumer service over store.
func NewConsumers(store *kv.Store, term func() uint64) *Consumers {
	return &Consumers{store: store, term: term, lastSent: map[string]sent{}}
}

// Poll returns the changes after fromSeq (0: from the oldest retained),
// at most limit (and MaxPollEvents, MaxPollBytes; a commit is never
// split), linearizably: after a ReadIndex round on the leader. With
// match, only the changes of the keys it accepts are returned (what the
// consumer's principal may read); the others are skipped, and the
// consumer's position (for CDC_CHECKPOINT without a seq) still moves past
// them.
func (c *Consumers) Poll(ctx context.Context, consumer string, fromSeq uint64, limit uint32, match func(key []byte) bool) ([]kv.Change, error) {
	if err := c.store.Barrier(ctx); err != nil {
		return nil, err
	}
	if limit == 0 {
		return nil, nil
	}
	b := kv.ChangeBounds{MaxChanges: int(min(limit, MaxPollEvents)), MaxBytes: MaxPollBytes, MaxScanned: maxPollScanned}
	if match != nil {
		b.MaxScanned = maxFilteredPollScanned
	}
	var changes []kv.Change
	var next uint64
	var err error
	for range 3 {
		after := fromSeq
		if after == 0 {
			after = c.store.Horizon()
		}
		changes, next, err = c.store.ReadChanges(after, 0, match, b)
		var ce *kv.CompactedError
		if errors.As(err, &ce) {
			if fromSeq == 0 {
				continue // the horizon moved meanwhile: from the new one
			}
			return nil, &CompactedError{Pos: fromSeq, Oldest: ce.Oldest}
		}
		break
	}
	if err != nil {
		return nil, err
	}
	var pos uint64
	if len(changes) > 0 {
		pos = changes[len(changes)-1].Rev
	}
	if match != nil && next > pos {
		pos = next // the changes skipped as unreadable count as sent
	}
	if len(changes) > 0 || (match != nil && pos > fromSeq) {
		c.mu.Lock()
		if _, ok := c.lastSent[consumer]; ok || len(c.lastSent) < maxTracked {
			c.lastSent[consumer] = sent{pos, c.term()}
		}
		c.mu.Unlock()
	}
	return changes, nil
}

// Checkpoint stores consumer's position through raft: seq when hasSeq,
// else the last seq this leader sent it in its current term.
func (c *Consumers) Checkpoint(ctx context.Context, consumer string, seq uint64, hasSeq bool) (uint64, error) {
	if err := c.store.Barrier(ctx); err != nil {
		return 0, err
	}
	if !hasSeq {
		c.mu.Lock()
		s, ok := c.lastSent[consumer]
		c.mu.Unlock()
		if !ok || s.term != c.term() {
			return 0, fmt.Errorf("%w: cdc consumer %s has not polled on this leader since it was elected; poll first, or send the position to store (CDC_CHECKPOINT consumer · seq u64)",
				engine.ErrInvalidArgument, consumer)
		}
		seq = s.seq
	}
	if h := c.store.Horizon(); seq < h {
		return 0, &CompactedError{Pos: seq, Oldest: h}
	}
	if applied := c.store.AppliedTS(); seq > applied {
		return 0, fmt.Errorf("%w: cdc position %d is beyond the newest revision %d", engine.ErrInvalidArgument, seq, applied)
	}
	if _, err := c.store.GetSystem(consumerKey(consumer)); errors.Is(err, engine.ErrNotFound) {
		all, err := c.store.ScanSystem(consumerPrefix, MaxConsumers)
		if err != nil {
			return 0, err
		}
		if len(all) >= MaxConsumers {
			return 0, fmt.Errorf("%w: %d cdc consumers are registered, the most allowed; delete unused ones (kayactl cdc delete NAME)", engine.ErrInvalidArgument, len(all))
		}
	} else if err != nil {
		return 0, err
	}
	if _, err := c.store.Propose(ctx, OpConsumer, encodeConsumerCmd(actionSet, consumer, seq)); err != nil {
		return 0, err
	}
	return seq, nil
}

// Position returns consumer's stored position, linearizably
// (engine.ErrNotFound when it has none).
func (c *Consumers) Position(ctx context.Context, consumer string) (uint64, error) {
	if err := c.store.Barrier(ctx); err != nil {
		return 0, err
	}
	v, err := c.store.GetSystem(consumerKey(consumer))
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("feed: the position of consumer %s is %d bytes, want 8: %w", consumer, len(v), engine.ErrCorruption)
	}
	return binary.BigEndian.Uint64(v), nil
}

// Delete removes consumer's stored position through raft.
func (c *Consumers) Delete(ctx context.Context, consumer string) error {
	if _, err := c.store.Propose(ctx, OpConsumer, encodeConsumerCmd(actionDelete, consumer, 0)); err != nil {
		return err
	}
	c.mu.Lock()
	delete(c.lastSent, consumer)
	c.mu.Unlock()
	return nil
}

// Count returns the number of registered consumers on this node.
func (c *Consumers) Count() (int, error) {
	all, err := c.store.ScanSystem(consumerPrefix, MaxConsumers)
	return len(all), err
}

// Hold is kv.Options.HoldHistory: the oldest stored position, read from
// this node's engine (the GC loop calls it on the leader).
func Hold(store func() *kv.Store) func() (uint64, bool) {
	return func() (uint64, bool) {
		s := store()
		if s == nil {
			return 0, false
		}
		all, err := s.ScanSystem(consumerPrefix, MaxConsumers)
		if err != nil || len(all) == 0 {
			// On an error, hold everything this tick rather than collect
			// what a consumer may need.
			return 0, err != nil
		}
		low := uint64(1<<64 - 1)
		for _, kv := range all {
			if len(kv.Value) == 8 {
				low = min(low, binary.BigEndian.Uint64(kv.Value))
			}
		}
		return low, true
	}
}
