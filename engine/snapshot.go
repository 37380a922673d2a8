package engine

import (
	"github.com/kayadb/kayadb/internal/lsm/base"
)

// Snapshot is a consistent read view of the DB at the moment it was taken:
// reads through it never see later writes. A Snapshot pins a sequence
// number, not files: compactions keep every key version some open snapshot
// can see, so an open Snapshot costs disk space and write amplification
// until it is closed. Iterators created from it pin the tables they read, as
// all iterators do.
type Snapshot struct {
	db     *DB
	seq    base.SeqNum
	gen    uint64 // the DB's snapshotGen when it opened
	prev   *Snapshot
	next   *Snapshot
	closed bool
}

// NewSnapshot returns a snapshot of the current state. Close it when done.
func (d *DB) NewSnapshot() *Snapshot {
	if d.opts.CompactionFilter != nil {
		// Not while a filtering compaction installs (see compactionIter).
		d.filterMu.RLock()
		defer d.filterMu.RUnlock()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mu.snapshotGen++
	s := &Snapshot{db: d, seq: base.SeqNum(d.visibleSeq.Load()), gen: d.mu.snapshotGen}
	d.mu.snapshots.push(s)
	return s
}

// Seq returns the snapshot's sequence number: it sees exactly the writes
// with sequence numbers up to Seq.
func (s *Snapshot) Seq() uint64 { return uint64(s.seq) }

// Get reads key as of the snapshot.
func (s *Snapshot) Get(key []byte) ([]byte, error) {
	if s.closed {
		return nil, ErrClosed
	}
	return s.db.getAt(key, s.seq)
}

// NewIter returns an iterator over the snapshot's view.
func (s *Snapshot) NewIter(o *IterOptions) (*Iterator, error) {
	if s.closed {
		return nil, ErrClosed
	}
	return s.db.newIter(o, s.seq)
}

// Close releases the snapshot.
func (s *Snapshot) Close() error {
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	d := s.db
	d.mu.Lock()
	d.mu.snapshots.remove(s)
	d.mu.Unlock()
	return nil
}

// snapshotList is a doubly linked list of open snapshots in creation order
// (so sequence numbers are non-decreasing). Guarded by DB.mu.
type snapshotList struct {
	head, tail *Snapshot
	n          int
}

func (l *snapshotList) push(s *Snapshot) {
	s.prev = l.tail
	if l.tail != nil {
		l.tail.next = s
	} else {
		l.head = s
	}
	l.tail = s
	l.n++
}

func (l *snapshotList) remove(s *Snapshot) {
	if s.prev != nil {
		s.prev.next = s.next
	} else {
		l.head = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	} else {
		l.tail = s.prev
	}
	s.prev, s.next = nil, nil
	l.n--
}

func (l *snapshotList) count() int { return l.n }

// openedSince reports whether a snapshot opened after generation gen is
// still open.
func (l *snapshotList) openedSince(gen uint64) bool {
	for s := l.tail; s != nil; s = s.prev {
		if s.gen > gen {
			return true
		}
	}
	return false
}

func (l *snapshotList) oldest() base.SeqNum {
	if l.head == nil {
		return 0
	}
	return l.head.seq
}

// seqs returns the distinct open snapshot sequence numbers, ascending.
func (l *snapshotList) seqs() []base.SeqNum {
	var out []base.SeqNum
	for s := l.head; s != nil; s = s.next {
		if len(out) == 0 || out[len(out)-1] != s.seq {
			out = append(out, s.seq)
		}
	}
	return out
}
