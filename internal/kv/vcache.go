package kv

import (
	"bytes"
	"hash/maphash"
	"sync/atomic"

	"github.com/kayadb/kayadb/engine"
)

// The apply's cache of current versions
//
// Every versioned write reads its key's current version first (to move it
// to history), and a transaction's commit reads the versions of its read
// set to validate them; each is an engine lookup, a descent of the
// memtable's skiplist and, for a key not written lately, of an SSTable's
// index and block. Under transactions from many clients those lookups
// were a fifth of a node's CPU (docs/design/latency.md §14).
//
// versionCache remembers, for the user keys the apply wrote or read
// lately, the current version as the engine holds it: its commit
// timestamp and value. It belongs to the apply goroutine (Store.Apply, one
// run at a time), so it needs no lock; ReplaceDB, which swaps the engine
// while the apply goroutine is idle, empties it.
//
// Why it stays exact: user keys change only through Store.Apply (the GC's
// compaction filter drops history, revision-log and outcome records, never
// a user key; system keys are not cached), and a run's changes enter the
// cache only after the run's batch has committed, from the run's overlay,
// which holds exactly what the batch wrote for each key. A run that fails
// leaves the cache as it was, since its batch is discarded; a commit that
// reports an error empties it, since the engine's state is then unknown;
// so does the first run on another engine than the one the cache
// describes (ReplaceDB installed a snapshot's).
// Only existing versions are cached: a deleted key's state involves its
// history (lastModified), which stays with the engine.
//
// Memory: two generations, each a map from a key's 64-bit hash to its
// entry and an append-only arena holding the key and value bytes (up to
// half of the bound, in chunks of 1 MiB allocated as it fills). Entries
// go into the newer generation; when its arena is full it becomes the
// older one and the older one is dropped. A lookup that finds its key
// only in the older generation copies it into the newer, so keys in use
// survive. The maps hold no pointers, so the garbage collector does not
// scan them, and the cache allocates nothing but its chunks. A hash that
// two keys share is told apart by the key bytes kept in the arena (the
// second key simply replaces the first, in both generations).
//
// Values handed out alias an arena, and arenas are never written over (an
// update appends a new copy; a dropped generation's chunks are left to the
// garbage collector), so a value a run read stays valid for as long as
// anyone holds it.
type versionCache struct {
	limit int64       // bytes; <= 0 disables the cache
	gens  [2]cacheGen // gens[0] the newer
	seed  maphash.Seed
	db    *engine.DB // the engine the entries describe

	hits, misses atomic.Uint64
}

type cacheGen struct {
	m      map[uint64]cacheEnt
	chunks [][]byte // append-only, each of cap chunkSize
}

type cacheEnt struct {
	ts         uint64
	chunk, off uint32
	klen, vlen uint32
}

// DefaultVersionCacheBytes is the default bound of the apply's cache of
// current versions (Options.VersionCacheBytes): two generations of 64 MiB,
// which hold the current versions of about 200,000 keys with 256-byte
// values between the rewrites of a key (each rewrite appends a copy).
const DefaultVersionCacheBytes = 128 << 20

// maxChunk is the size of the chunks of a generation's arena: allocated
// one at a time as it fills, so that no write pays for zeroing a large
// arena at once.
const maxChunk = 1 << 20

func newVersionCache(limit int64) *versionCache {
	return &versionCache{limit: limit, seed: maphash.MakeSeed()}
}

// cacheable reports whether key may be cached: user keys only.
func cacheable(key []byte) bool {
	return len(key) > 0 && key[0] != SystemPrefix
}

func (g *cacheGen) key(e cacheEnt) []byte {
	return g.chunks[e.chunk][e.off : e.off+e.klen : e.off+e.klen]
}

func (g *cacheGen) value(e cacheEnt) []byte {
	v := e.off + e.klen
	return g.chunks[e.chunk][v : v+e.vlen : v+e.vlen]
}

// chunkSize and genChunks size a generation of a cache bounded by limit:
// half the bound each, in chunks of up to maxChunk.
func chunkSize(limit int64) int { return int(min(limit/2, maxChunk)) }

func genChunks(limit int64) int { return int(limit/2) / chunkSize(limit) }

// find returns key's entry in g.
func (g *cacheGen) find(h uint64, key []byte) (cacheEnt, bool) {
	e, ok := g.m[h]
	if !ok || !bytes.Equal(g.key(e), key) {
		return cacheEnt{}, false
	}
	return e, true
}

// get returns key's cached current version; the key and value it returns
// alias an arena, which is never written over.
func (c *versionCache) get(key []byte) (k []byte, ts uint64, value []byte, ok bool) {
	if c.limit <= 0 || !cacheable(key) {
		return nil, 0, nil, false
	}
	h := maphash.Bytes(c.seed, key)
	if e, ok := c.gens[0].find(h, key); ok {
		c.hits.Add(1)
		return c.gens[0].key(e), e.ts, c.gens[0].value(e), true
	}
	if e, ok := c.gens[1].find(h, key); ok {
		c.hits.Add(1)
		k, ts, value := c.gens[1].key(e), e.ts, c.gens[1].value(e)
		c.put(h, key, ts, value) // still in use: into the newer generation
		return k, ts, value, true
	}
	c.misses.Add(1)
	return nil, 0, nil, false
}

// set records that key's current version is (ts, value).
func (c *versionCache) set(key []byte, ts uint64, value []byte) {
	h := maphash.Bytes(c.seed, key)
	if e, ok := c.gens[0].find(h, key); ok && e.ts == ts {
		return // the same version: a read of the run, or a hit
	}
	c.put(h, key, ts, value)
}

// put appends (key, value) to the newer generation, starting a new one
// when its chunks are full. An entry larger than a quarter of a chunk is
// not cached (and any older version of it is forgotten).
func (c *versionCache) put(h uint64, key []byte, ts uint64, value []byte) {
	size := len(key) + len(value)
	cs := chunkSize(c.limit)
	if size > cs/4 {
		c.del(key)
		return
	}
	g := &c.gens[0]
	if g.m == nil {
		g.m = map[uint64]cacheEnt{}
	}
	if n := len(g.chunks); n == 0 || len(g.chunks[n-1])+size > cs {
		if n == genChunks(c.limit) {
			c.gens[1] = c.gens[0]
			c.gens[0] = cacheGen{m: map[uint64]cacheEnt{}}
			g = &c.gens[0]
		}
		g.chunks = append(g.chunks, make([]byte, 0, cs))
	}
	if e, ok := g.m[h]; ok && !bytes.Equal(g.key(e), key) {
		// Another key with the same hash loses its place in the newer
		// generation: an older version of it in the older generation
		// must not answer for it then.
		if old := &c.gens[1]; old != g {
			if _, ok := old.find(h, g.key(e)); ok {
				delete(old.m, h)
			}
		}
	}
	last := len(g.chunks) - 1
	off := len(g.chunks[last])
	g.chunks[last] = append(append(g.chunks[last], key...), value...)
	g.m[h] = cacheEnt{ts: ts, chunk: uint32(last), off: uint32(off), klen: uint32(len(key)), vlen: uint32(len(value))}
}

// del forgets key.
func (c *versionCache) del(key []byte) {
	h := maphash.Bytes(c.seed, key)
	for i := range c.gens {
		if _, ok := c.gens[i].find(h, key); ok {
			delete(c.gens[i].m, h)
		}
	}
}

// clear forgets everything.
func (c *versionCache) clear() {
	c.gens = [2]cacheGen{}
}

// bytes returns the arena bytes the cache holds.
func (c *versionCache) bytes() int64 {
	n := 0
	for i := range c.gens {
		for _, ch := range c.gens[i].chunks {
			n += cap(ch)
		}
	}
	return int64(n)
}

// absorb takes in what a committed run wrote or read (its overlay).
func (c *versionCache) absorb(o *overlay) {
	if c.limit <= 0 {
		return
	}
	for i := range o.keys {
		kv := &o.keys[i]
		if !cacheable(kv.key) {
			continue
		}
		if kv.v.exists {
			c.set(kv.key, kv.v.ts, kv.v.value)
		} else {
			c.del(kv.key)
		}
	}
}

// VersionCacheStats returns the hits and misses of the apply's cache of
// current versions since the store opened.
func (s *Store) VersionCacheStats() (hits, misses uint64) {
	return s.vc.hits.Load(), s.vc.misses.Load()
}
