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
	// spareAsked: the pool was asked to prepare the next memtable's arena
	// (DB.Apply, once this one is half full). Committer only.
	spareAsked bool
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

// memPool holds at most one empty memtable arena, the spare, so that a
// rotation does not allocate one on the commit path: allocating tens of
// megabytes makes the runtime zero them first (memory freed by the GC is
// reused), which stalled every write for 10-60 ms at each rotation on a
// 2-vCPU VM. The spare is either the arena of a flushed memtable of the
// standard size, recycled as Pebble does, or one allocated in the
// background (prepare) once the current memtable is half full and no
// spare is there: during the first rotations, whose memtables double in
// size, nothing can be recycled, and under a heavy write load the flush
// of the previous memtable may not have returned its arena in time.
type memPool struct {
	size   int  // the standard memtable size (Options.MemTableSize)
	poison bool // fill recycled arenas with garbage first (tests)
	wg     sync.WaitGroup
	mu     sync.Mutex
	spare  *memtable.Table
	// preparing: a background allocation of a spare is under way.
	preparing bool
}

// debugPoisonArenas makes every DB opened afterwards poison recycled
// arenas. Tests set it so that a use of a recycled memtable shows up as
// garbage.
var debugPoisonArenas atomic.Bool

// put takes back the arena of a flushed memtable that no reader uses any
// more: kept as the spare if it has the standard size and the spare is
// empty or of another size.
func (p *memPool) put(t *memtable.Table) {
	if t.Capacity() != p.size {
		return
	}
	p.mu.Lock()
	if p.spare == nil || p.spare.Capacity() != p.size {
		p.spare = t
	}
	p.mu.Unlock()
}

// get returns an empty memtable of size bytes for WAL logNum: the spare
// when it has that size, else a new one.
func (p *memPool) get(logNum base.FileNum, size int) *memTable {
	p.mu.Lock()
	t := p.spare
	if t != nil && t.Capacity() == size {
		p.spare = nil
	} else {
		t = nil
	}
	p.mu.Unlock()
	if t == nil {
		t = memtable.New(size)
	} else {
		t.Reset(p.poison)
	}
	return &memTable{t: t, logNum: logNum, pool: p}
}

// prepare allocates a spare of size bytes on a goroutine of its own,
// unless there is a spare of that size already or one is being made.
func (p *memPool) prepare(size int) {
	p.mu.Lock()
	if p.preparing || p.spare != nil && p.spare.Capacity() == size {
		p.mu.Unlock()
		return
	}
	p.preparing = true
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		t := memtable.New(size)
		p.mu.Lock()
		if p.spare == nil || p.spare.Capacity() != size {
			p.spare = t
		}
		p.preparing = false
		p.mu.Unlock()
	}()
}

// spareSize returns the capacity of the spare (0: none), for tests.
func (p *memPool) spareSize() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.spare == nil {
		return 0
	}
	return p.spare.Capacity()
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
