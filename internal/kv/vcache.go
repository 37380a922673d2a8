package kv

import (
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
// reports an error empties it, since the engine's state is then unknown.
// Only existing versions are cached: a deleted key's state involves its
// history (lastModified), which stays with the engine.
//
// Values handed out alias the cache's copies, which are never modified: an
// update stores a new copy, so a value a run read stays valid for as long
// as anyone holds it.
type versionCache struct {
	limit int64 // bytes; <= 0 disables the cache
	bytes int64
	m     map[string]*cachedVersion
	db    *engine.DB // the engine the entries describe

	hits, misses atomic.Uint64
}

type cachedVersion struct {
	ts    uint64
	value []byte
}

// cacheEntryOverhead approximates a map entry's own memory besides its key
// and value (the map slot, the string and slice headers).
const cacheEntryOverhead = 64

// DefaultVersionCacheBytes is the default bound of the apply's cache of
// current versions (Options.VersionCacheBytes).
const DefaultVersionCacheBytes = 64 << 20

func newVersionCache(limit int64) *versionCache {
	return &versionCache{limit: limit, m: map[string]*cachedVersion{}}
}

func entryBytes(key, value []byte) int64 {
	return int64(len(key)+len(value)) + cacheEntryOverhead
}

// cacheable reports whether key may be cached: user keys only.
func cacheable(key []byte) bool {
	return len(key) > 0 && key[0] != SystemPrefix
}

// get returns key's cached current version.
func (c *versionCache) get(key []byte) (cachedVersion, bool) {
	if c.limit <= 0 || !cacheable(key) {
		return cachedVersion{}, false
	}
	v, ok := c.m[string(key)]
	if !ok {
		c.misses.Add(1)
		return cachedVersion{}, false
	}
	c.hits.Add(1)
	return *v, true
}

// set records that key's current version is (ts, value); value is copied
// unless the cache already holds this version.
func (c *versionCache) set(key []byte, ts uint64, value []byte) {
	old, ok := c.m[string(key)]
	if ok && old.ts == ts {
		return // the same version: a read of the run, or a hit
	}
	value = append(make([]byte, 0, len(value)), value...)
	if ok {
		// A new copy, not the old one overwritten: someone may still
		// hold the old value.
		c.bytes += int64(len(value) - len(old.value))
		old.ts, old.value = ts, value
		return
	}
	c.bytes += entryBytes(key, value)
	c.m[string(key)] = &cachedVersion{ts: ts, value: value}
}

// del forgets key.
func (c *versionCache) del(key []byte) {
	if old, ok := c.m[string(key)]; ok {
		c.bytes -= entryBytes(key, old.value)
		delete(c.m, string(key))
	}
}

// clear forgets everything.
func (c *versionCache) clear() {
	clear(c.m)
	c.bytes = 0
}

// absorb takes in what a committed run wrote or read (its overlay), then
// evicts entries, in the map's random order, down to 7/8 of the limit.
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
	if c.bytes <= c.limit {
		return
	}
	target := c.limit - c.limit/8
	for k, v := range c.m {
		if c.bytes <= target {
			break
		}
		c.bytes -= int64(len(k)+len(v.value)) + cacheEntryOverhead
		delete(c.m, k)
	}
}

// VersionCacheStats returns the hits and misses of the apply's cache of
// current versions since the store opened.
func (s *Store) VersionCacheStats() (hits, misses uint64) {
	return s.vc.hits.Load(), s.vc.misses.Load()
}
