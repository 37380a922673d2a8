package engine

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/batch"
	"github.com/kayadb/kayadb/internal/lsm/manifest"
	"github.com/kayadb/kayadb/internal/lsm/memtable"
)

// memTable is a memtable plus the WAL that holds its data.
type memTable struct {
	t *memtable.Table
	// refs counts the read states that list this memtable. When it drops to
	// zero no reader can reach the arena any more and it may be recycled.
	refs atomic.Int32
	// pool, when set, takes the arena back once refs drops to zero.
	pool *memPool
	// logNum is the WAL whose records fill this memtable. The WAL can be
	// deleted once this memtable is flushed.
	logNum base.FileNum
	// largestSeq is the largest sequence number applied (for metrics and
	// flush ordering checks). Written by the committer, read after rotation.
	largestSeq atomic.Uint64
}

func newMemTable(size int, logNum base.FileNum) *memTable {
	return &memTable{t: memtable.New(size), logNum: logNum}
}

func (m *memTable) ref() { m.refs.Add(1) }

func (m *memTable) unref() {
	switch n := m.refs.Add(-1); {
	case n == 0 && m.pool != nil:
		m.pool.put(m.t)
	case n < 0:
		panic("engine: memtable released more often than referenced")
	}
}

// memPool recycles the arena of one flushed memtable of the standard size,
// as Pebble does: reusing it avoids allocating (and the runtime zeroing)
// tens of megabytes at every rotation, and the page faults of fresh memory.
type memPool struct {
	size   int
	poison bool // fill recycled arenas with garbage first (tests)
	mu     sync.Mutex
	spare  *memtable.Table
}

// debugPoisonArenas makes every DB opened afterwards poison recycled
// arenas. Tests set it so that a use of a recycled memtable shows up as
// garbage.
var debugPoisonArenas atomic.Bool

func (p *memPool) put(t *memtable.Table) {
	if t.Capacity() != p.size {
		return
	}
	p.mu.Lock()
	if p.spare == nil {
		p.spare = t
	}
	p.mu.Unlock()
}

// get returns an empty memtable for WAL logNum, recycled when possible.
func (p *memPool) get(logNum base.FileNum) *memTable {
	p.mu.Lock()
	t := p.spare
	p.spare = nil
	p.mu.Unlock()
	if t == nil {
		t = memtable.New(p.size)
	} else {
		t.Reset(p.poison)
	}
	return &memTable{t: t, logNum: logNum, pool: p}
}

// batchArenaBytes is an upper bound on the arena bytes a batch needs.
func batchArenaBytes(repr []byte, count uint32) int {
	return int(count)*memtable.MaxEntrySize(0, 0) + len(repr)
}

// apply inserts a batch whose first record has sequence number seq. The
// caller has checked that the arena has room (batchArenaBytes).
func (m *memTable) apply(repr []byte, seq base.SeqNum) error {
	r, err := batch.MakeReader(repr)
	if err != nil {
		return err
	}
	for {
		kind, key, value, ok, err := r.Next()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if err := m.t.Add(base.MakeInternalKey(key, seq, kind), value); err != nil {
			return fmt.Errorf("engine: memtable insert of %s at seq %d: %w", abbrev(key), seq, err)
		}
		seq++
	}
	m.largestSeq.Store(uint64(seq - 1))
	return nil
}

// readState is a consistent view for readers: the memtables (newest first)
// and the Version that, together, hold every committed write. It is swapped
// as a whole whenever a memtable rotates or a Version is installed, so a
// reader never sees a flushed memtable's data twice or not at all.
type readState struct {
	refs    atomic.Int32
	version *manifest.Version
	mems    []*memTable
}

func (rs *readState) ref() { rs.refs.Add(1) }

func (rs *readState) unref() {
	if n := rs.refs.Add(-1); n == 0 {
		rs.version.Unref()
		for _, m := range rs.mems {
			m.unref()
		}
	} else if n < 0 {
		panic("engine: readState released more often than referenced")
	}
}

// abbrev formats a key for error messages, shortening long keys.
func abbrev(key []byte) string {
	if len(key) > 64 {
		return fmt.Sprintf("%q... (%d bytes)", key[:64], len(key))
	}
	return fmt.Sprintf("%q", key)
}
