package engine

import (
	"container/list"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/cache"
	"github.com/kayadb/kayadb/internal/lsm/sstable"
	"github.com/kayadb/kayadb/internal/vfs"
)

// tableCache keeps open SSTable readers, at most capacity of them, evicting
// the least recently used. A reader in use is reference counted: eviction
// drops the cache's own reference and the last user closes the file.
type tableCache struct {
	fs      vfs.FS
	dir     string
	bcache  *cache.Cache
	cacheID uint64
	m       *metrics
	sealer  *crypt.Sealer // opens encrypted tables

	mu       sync.Mutex
	capacity int
	entries  map[base.FileNum]*tableHandle
	lru      *list.List // of *tableHandle, front = most recent
}

// tableHandle is a reference to an open table.
type tableHandle struct {
	tc      *tableCache
	fileNum base.FileNum
	r       *sstable.Reader
	err     error
	loaded  chan struct{}
	refs    atomic.Int32
	elem    *list.Element // guarded by tc.mu; nil once evicted
}

func newTableCache(fs vfs.FS, dir string, bcache *cache.Cache, cacheID uint64, capacity int, m *metrics, sealer *crypt.Sealer) *tableCache {
	return &tableCache{
		fs: fs, dir: dir, bcache: bcache, cacheID: cacheID, m: m, sealer: sealer,
		capacity: capacity,
		entries:  make(map[base.FileNum]*tableHandle),
		lru:      list.New(),
	}
}

// get returns a referenced handle for table fileNum of the given size,
// opening it if needed. The caller must call release.
func (tc *tableCache) get(fileNum base.FileNum, size uint64) (*tableHandle, error) {
	tc.mu.Lock()
	h, ok := tc.entries[fileNum]
	if ok {
		h.refs.Add(1)
		tc.lru.MoveToFront(h.elem)
		tc.mu.Unlock()
		<-h.loaded
		if h.err != nil {
			h.release()
			return nil, h.err
		}
		return h, nil
	}
	h = &tableHandle{tc: tc, fileNum: fileNum, loaded: make(chan struct{})}
	h.refs.Store(2) // the cache's reference and the caller's
	h.elem = tc.lru.PushFront(h)
	tc.entries[fileNum] = h
	var victims []*tableHandle
	for tc.lru.Len() > tc.capacity {
		back := tc.lru.Back()
		v := back.Value.(*tableHandle)
		if v == h {
			break
		}
		tc.removeLocked(v)
		victims = append(victims, v)
	}
	tc.mu.Unlock()
	for _, v := range victims {
		v.release()
	}

	h.r, h.err = tc.open(fileNum, size)
	tc.m.tableOpens.Add(1)
	close(h.loaded)
	if h.err != nil {
		// Do not cache the failure: a later attempt opens the file again.
		tc.mu.Lock()
		if h.elem != nil {
			tc.removeLocked(h)
			tc.mu.Unlock()
			h.release()
		} else {
			tc.mu.Unlock()
		}
		err := h.err
		h.release()
		return nil, err
	}
	return h, nil
}

func (tc *tableCache) open(fileNum base.FileNum, size uint64) (*sstable.Reader, error) {
	name := filepath.Join(tc.dir, base.MakeFilename(base.FileTypeTable, fileNum))
	f, err := tc.fs.Open(name)
	if err != nil {
		return nil, fmt.Errorf("engine: opening table %s: %w", name, err)
	}
	r, err := sstable.Open(f, int64(size), sstable.ReaderOptions{
		Cache: tc.bcache, CacheID: tc.cacheID, FileNum: fileNum, FileName: name, Sealer: tc.sealer,
	})
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return r, nil
}

func (tc *tableCache) removeLocked(h *tableHandle) {
	tc.lru.Remove(h.elem)
	h.elem = nil
	delete(tc.entries, h.fileNum)
}

// release drops a reference; the last one closes the reader.
func (h *tableHandle) release() {
	switch n := h.refs.Add(-1); {
	case n == 0:
		if h.r != nil {
			_ = h.r.Close()
		}
	case n < 0:
		panic("engine: table handle released more often than referenced")
	}
}

// evict forgets a table (it was deleted) and drops its cached blocks.
func (tc *tableCache) evict(fileNum base.FileNum) {
	tc.mu.Lock()
	h, ok := tc.entries[fileNum]
	if ok {
		tc.removeLocked(h)
	}
	tc.mu.Unlock()
	if ok {
		h.release()
	}
	tc.bcache.EvictFile(tc.cacheID, fileNum)
}

// close drops every cached reader.
func (tc *tableCache) close() {
	tc.mu.Lock()
	var hs []*tableHandle
	for _, h := range tc.entries {
		hs = append(hs, h)
	}
	for _, h := range hs {
		tc.removeLocked(h)
	}
	tc.mu.Unlock()
	for _, h := range hs {
		<-h.loaded
		h.release()
	}
}

// openCount returns the number of cached readers.
func (tc *tableCache) openCount() int {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return len(tc.entries)
}
