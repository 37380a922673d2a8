package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/kayadb/kayadb/engine"
	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/filter"
	"github.com/syndtr/goleveldb/leveldb/iterator"
	"github.com/syndtr/goleveldb/leveldb/opt"
)

// store is the small surface every workload drives. Each engine adapter is a
// thin wrapper that adds no buffering, batching or caching of its own, so the
// numbers measure the engine and not the adapter.
type store interface {
	// Set writes one key; sync selects a durable (fdatasync'ed) write.
	Set(key, value []byte, sync bool) error
	// Get looks key up and, when it exists, calls check with its value while
	// the value is still valid (Pebble's value is only valid until its
	// closer runs). found is false when the key does not exist.
	Get(key []byte, check func(value []byte) error) (found bool, err error)
	// NewIter returns an iterator over the whole key space.
	NewIter() (kvIter, error)
	// Settle makes the store quiescent after a load: it flushes memtables
	// where the engine has a public flush (kaya, Pebble) and waits, up to
	// maxWait, until no flush or compaction is running. It never forces a
	// compaction. It reports whether the store became idle in time.
	Settle(maxWait time.Duration) (idle bool, err error)
	// Stats returns engine counters used for the short diagnostics.
	Stats() storeStats
	// Close closes the store and releases everything it holds.
	Close() error
}

// kvIter is a forward iterator; all three engines' iterators have this shape.
type kvIter interface {
	First() bool
	SeekGE(k []byte) bool
	Next() bool
	Key() []byte
	Value() []byte
	Close() error
}

// storeStats are the diagnostics reported after fillrandom (and, for the
// sync workloads, the WAL sync count). Table bytes are the bytes written to
// SSTables by flushes plus compactions, measured the same way for all
// engines so that tableBytes / userBytes is a comparable write amplification.
type storeStats struct {
	TableBytesWritten uint64  `json:"table_bytes_written"`
	NativeWriteAmp    float64 `json:"native_write_amp,omitempty"`
	NativeWriteAmpDef string  `json:"native_write_amp_def,omitempty"`
	Levels            string  `json:"levels"`
	WALSyncs          uint64  `json:"wal_syncs,omitempty"`
	Extra             string  `json:"extra,omitempty"`
}

// engineSpec describes one engine under test.
type engineSpec struct {
	name string
	// describe returns the full option values the engine will run with.
	describe func(c *config) string
	// open opens (creating) a store in the empty directory dir.
	open func(dir string, c *config) (store, error)
}

// allEngines lists the supported engines by name.
var allEngines = map[string]engineSpec{
	"kaya":      {name: "kaya", describe: describeKaya, open: openKaya},
	"kaya-enc":  {name: "kaya-enc", describe: describeKayaEnc, open: openKayaEnc},
	"pebble":    {name: "pebble", describe: describePebble, open: openPebble},
	"goleveldb": {name: "goleveldb", describe: describeLevelDB, open: openLevelDB},
}

// settlePoll is how often Settle samples the engine, and settleIdlePolls how
// many consecutive idle samples count as quiescent.
const (
	settlePoll      = 50 * time.Millisecond
	settleIdlePolls = 4
)

// waitIdle polls idle until it has reported true settleIdlePolls times in a
// row, or maxWait has passed.
func waitIdle(maxWait time.Duration, idle func() (bool, error)) (bool, error) {
	deadline := time.Now().Add(maxWait)
	streak := 0
	for {
		ok, err := idle()
		if err != nil {
			return false, err
		}
		if ok {
			streak++
			if streak >= settleIdlePolls {
				return true, nil
			}
		} else {
			streak = 0
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		time.Sleep(settlePoll)
	}
}

// ---------------------------------------------------------------- kaya

// kayaOptions returns the engine.Options for the benchmark configuration.
// Only the fields the benchmark equalizes across engines are set; every
// compaction knob stays at the engine's default.
func kayaOptions(c *config) *engine.Options {
	o := &engine.Options{
		MemTableSize:    c.memtableSize,
		CacheSize:       c.cacheSize,
		BloomBitsPerKey: c.bloomBits,
		BlockSize:       c.blockSize,
	}
	if c.bloomBits <= 0 {
		o.BloomBitsPerKey = -1 // kaya: negative disables filters
	}
	if c.compression == "none" {
		o.Compression, o.NoCompressionSet = engine.NoCompression, true
	} else {
		o.Compression = engine.SnappyCompression
	}
	return o
}

func describeKaya(c *config) string {
	o := kayaOptions(c).EnsureDefaults()
	comp := map[engine.Compression]string{engine.NoCompression: "none", engine.SnappyCompression: "snappy", engine.ZstdCompression: "zstd"}[o.Compression]
	return fmt.Sprintf(`  MemTableSize=%d
  MemTableStopWritesThreshold=%d
  L0CompactionThreshold=%d
  L0StopWritesThreshold=%d
  LBaseMaxBytes=%d
  LevelMultiplier=%d
  TargetFileSize=%d (doubles per level below the base level)
  BlockSize=%d
  BlockRestartInterval=%d
  BloomBitsPerKey=%d (all levels)
  Compression=%s
  CacheSize=%d
  MaxOpenFiles=%d
  MaxManifestBytes=%d
  WALPreallocateBytes=%d
  DisableAutomaticCompactions=%v
  write options: engine.Sync / engine.NoSync per workload
`, o.MemTableSize, o.MemTableStopWritesThreshold, o.L0CompactionThreshold, o.L0StopWritesThreshold,
		o.LBaseMaxBytes, o.LevelMultiplier, o.TargetFileSize, o.BlockSize, o.BlockRestartInterval,
		o.BloomBitsPerKey, comp, o.CacheSize, o.MaxOpenFiles, o.MaxManifestBytes, o.WALPreallocateBytes,
		o.DisableAutomaticCompactions)
}

type kayaStore struct{ db *engine.DB }

// benchKeyring is the fixed key of kaya-enc (encryption at rest on: every
// WAL record, MANIFEST record and table block sealed with AES-256-GCM).
func benchKeyring() *engine.Keyring {
	path := filepath.Join(os.TempDir(), fmt.Sprintf("kaya-bench-key-%d", os.Getpid()))
	defer os.Remove(path)
	if err := os.WriteFile(path, bytes.Repeat([]byte{0x5a}, 32), 0o600); err != nil {
		panic(err)
	}
	r, err := engine.LoadKeyring(path, false)
	if err != nil {
		panic(err)
	}
	return r
}

func describeKayaEnc(c *config) string {
	return describeKaya(c) + "  Encryption=AES-256-GCM (one key, --encryption-key-file): WAL and MANIFEST records, every table block\n"
}

func openKayaEnc(dir string, c *config) (store, error) {
	o := kayaOptions(c)
	o.Encryption = engine.NewSealer(benchKeyring())
	db, err := engine.Open(dir, o)
	if err != nil {
		return nil, err
	}
	return &kayaStore{db: db}, nil
}

func openKaya(dir string, c *config) (store, error) {
	db, err := engine.Open(dir, kayaOptions(c))
	if err != nil {
		return nil, err
	}
	return &kayaStore{db: db}, nil
}

func (s *kayaStore) Set(k, v []byte, sync bool) error {
	if sync {
		return s.db.Set(k, v, engine.Sync)
	}
	return s.db.Set(k, v, engine.NoSync)
}

func (s *kayaStore) Get(k []byte, check func([]byte) error) (bool, error) {
	v, err := s.db.Get(k)
	if errors.Is(err, engine.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return true, check(v)
}

func (s *kayaStore) NewIter() (kvIter, error) { return s.db.NewIter(nil) }

func (s *kayaStore) Settle(maxWait time.Duration) (bool, error) {
	if err := s.db.Flush(); err != nil {
		return false, err
	}
	return waitIdle(maxWait, func() (bool, error) {
		m := s.db.Metrics()
		if m.Flush.InProgress || m.Compaction.InProgress {
			return false, nil
		}
		for _, l := range m.Levels {
			if l.Score >= 1 {
				return false, nil // due, about to be picked
			}
		}
		return true, nil
	})
}

func (s *kayaStore) Stats() storeStats {
	m := s.db.Metrics()
	var lv []string
	for i, l := range m.Levels {
		if l.NumFiles > 0 {
			lv = append(lv, fmt.Sprintf("L%d:%d/%s", i, l.NumFiles, mib(l.Size)))
		}
	}
	return storeStats{
		TableBytesWritten: m.Flush.BytesWritten + m.Compaction.BytesWritten,
		NativeWriteAmp:    m.WriteAmp,
		NativeWriteAmpDef: "(flush+compaction bytes)/WAL bytes",
		Levels:            strings.Join(lv, " "),
		WALSyncs:          m.WAL.Syncs,
		Extra: fmt.Sprintf("flushes=%d compactions=%d(+%d moves) stalls=%d memtable/%d L0 (%v) wal: %d writes, %d syncs (sync p50 %v p99 %v)",
			m.Flush.Count, m.Compaction.Count, m.Compaction.MoveCount, m.Stalls.MemTable, m.Stalls.L0,
			m.Stalls.Duration.Round(time.Millisecond), m.WAL.Writes, m.WAL.Syncs, m.WAL.SyncLatency.P50, m.WAL.SyncLatency.P99),
	}
}

func (s *kayaStore) Close() error { return s.db.Close() }

// ---------------------------------------------------------------- pebble

// pebbleOptions returns the Pebble options for the benchmark configuration
// and the block cache it references (the caller unrefs it after Close).
// Filter, block size and compression are set on every level, because
// Pebble's L0 default is "no filter" and deeper levels inherit from L0.
func pebbleOptions(c *config) (*pebble.Options, *pebble.Cache) {
	cache := pebble.NewCache(c.cacheSize)
	o := &pebble.Options{
		Cache:        cache,
		MemTableSize: uint64(c.memtableSize),
		Logger:       quietPebbleLogger{},
	}
	profile := sstable.SnappyCompression
	if c.compression == "none" {
		profile = sstable.NoCompression
	}
	for i := range o.Levels {
		l := &o.Levels[i]
		l.BlockSize = c.blockSize
		l.Compression = func() *sstable.CompressionProfile { return profile }
		l.FilterType = pebble.TableFilter
		if c.bloomBits > 0 {
			l.FilterPolicy = bloom.FilterPolicy(c.bloomBits)
		} else {
			l.FilterPolicy = pebble.NoFilterPolicy
		}
	}
	return o, cache
}

func describePebble(c *config) string {
	o, cache := pebbleOptions(c)
	defer cache.Unref()
	o.EnsureDefaults()
	var sb strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(o.String()), "\n") {
		sb.WriteString("  " + line + "\n")
	}
	if c.bloomBits > 0 {
		fmt.Fprintf(&sb, "  filter_policy above = bloom.FilterPolicy(%d) on every level\n", c.bloomBits)
	}
	sb.WriteString("  write options: pebble.Sync / pebble.NoSync per workload (set explicitly)\n")
	return sb.String()
}

// quietPebbleLogger drops Pebble's informational messages (such as "Found 0
// WALs" at every Open) so they do not interleave with the results; errors
// still go to stderr.
type quietPebbleLogger struct{}

func (quietPebbleLogger) Infof(string, ...any) {}
func (quietPebbleLogger) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pebble: "+format+"\n", args...)
}
func (quietPebbleLogger) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pebble: fatal: "+format+"\n", args...)
	os.Exit(1)
}

type pebbleStore struct {
	db    *pebble.DB
	cache *pebble.Cache
}

func openPebble(dir string, c *config) (store, error) {
	o, cache := pebbleOptions(c)
	db, err := pebble.Open(dir, o)
	if err != nil {
		cache.Unref()
		return nil, err
	}
	return &pebbleStore{db: db, cache: cache}, nil
}

func (s *pebbleStore) Set(k, v []byte, sync bool) error {
	if sync {
		return s.db.Set(k, v, pebble.Sync)
	}
	return s.db.Set(k, v, pebble.NoSync)
}

func (s *pebbleStore) Get(k []byte, check func([]byte) error) (bool, error) {
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	err = check(v)
	if cerr := closer.Close(); err == nil {
		err = cerr
	}
	return true, err
}

func (s *pebbleStore) NewIter() (kvIter, error) {
	return s.db.NewIter(nil)
}

func (s *pebbleStore) Settle(maxWait time.Duration) (bool, error) {
	if err := s.db.Flush(); err != nil {
		return false, err
	}
	return waitIdle(maxWait, func() (bool, error) {
		m := s.db.Metrics()
		return m.Compact.NumInProgress == 0 && m.Flush.NumInProgress == 0, nil
	})
}

func (s *pebbleStore) Stats() storeStats {
	m := s.db.Metrics()
	var tb uint64
	var lv []string
	for i := range m.Levels {
		l := &m.Levels[i]
		tb += l.TableBytesFlushed + l.TableBytesCompacted + l.BlobBytesFlushed + l.BlobBytesCompacted
		if l.TablesCount > 0 {
			lv = append(lv, fmt.Sprintf("L%d:%d/%s", i, l.TablesCount, mib(uint64(l.TablesSize))))
		}
	}
	t := m.Total()
	return storeStats{
		TableBytesWritten: tb,
		NativeWriteAmp:    t.WriteAmp(),
		NativeWriteAmpDef: "(WAL+flush+compaction bytes)/WAL bytes",
		Levels:            strings.Join(lv, " "),
		Extra: fmt.Sprintf("flushes=%d compactions=%d read-amp=%d wal=%s",
			m.Flush.Count, m.Compact.Count, m.ReadAmp(), mib(m.WAL.BytesWritten)),
	}
}

func (s *pebbleStore) Close() error {
	err := s.db.Close()
	s.cache.Unref()
	return err
}

// ---------------------------------------------------------------- goleveldb

// levelDBOptions returns the goleveldb options for the configuration.
func levelDBOptions(c *config) *opt.Options {
	o := &opt.Options{
		BlockCacheCapacity: int(c.cacheSize),
		WriteBuffer:        c.memtableSize,
		BlockSize:          c.blockSize,
		Compression:        opt.SnappyCompression,
		ErrorIfExist:       true,
	}
	if c.bloomBits > 0 {
		o.Filter = filter.NewBloomFilter(c.bloomBits)
	}
	if c.compression == "none" {
		o.Compression = opt.NoCompression
	}
	return o
}

func describeLevelDB(c *config) string {
	o := levelDBOptions(c)
	fname := "none"
	if f := o.GetFilter(); f != nil {
		fname = f.Name() + fmt.Sprintf(" (%d bits/key, all levels)", c.bloomBits)
	}
	return fmt.Sprintf(`  WriteBuffer=%d
  BlockCacheCapacity=%d (LRU)
  BlockSize=%d
  BlockRestartInterval=%d
  Compression=%s
  Filter=%s
  CompactionL0Trigger=%d
  WriteL0SlowdownTrigger=%d
  WriteL0PauseTrigger=%d
  CompactionTableSize=%d (multiplier %.1f)
  CompactionTotalSize=%d (multiplier %.1f)
  OpenFilesCacheCapacity=%d
  NoWriteMerge=%v
  write options: &opt.WriteOptions{Sync: true|false} per workload
`, o.GetWriteBuffer(), o.GetBlockCacheCapacity(), o.GetBlockSize(), o.GetBlockRestartInterval(),
		o.GetCompression(), fname, o.GetCompactionL0Trigger(), o.GetWriteL0SlowdownTrigger(),
		o.GetWriteL0PauseTrigger(), o.GetCompactionTableSize(0), o.CompactionTableSizeMultiplier,
		o.GetCompactionTotalSize(1), o.CompactionTotalSizeMultiplier, o.GetOpenFilesCacheCapacity(),
		o.GetNoWriteMerge())
}

type levelDBStore struct{ db *leveldb.DB }

var (
	ldbSync   = &opt.WriteOptions{Sync: true}
	ldbNoSync = &opt.WriteOptions{Sync: false}
)

func openLevelDB(dir string, c *config) (store, error) {
	db, err := leveldb.OpenFile(dir, levelDBOptions(c))
	if err != nil {
		return nil, err
	}
	return &levelDBStore{db: db}, nil
}

func (s *levelDBStore) Set(k, v []byte, sync bool) error {
	if sync {
		return s.db.Put(k, v, ldbSync)
	}
	return s.db.Put(k, v, ldbNoSync)
}

func (s *levelDBStore) Get(k []byte, check func([]byte) error) (bool, error) {
	v, err := s.db.Get(k, nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return true, check(v)
}

func (s *levelDBStore) NewIter() (kvIter, error) {
	return levelDBIter{s.db.NewIterator(nil, nil)}, nil
}

// levelDBIter adapts goleveldb's iterator (Release + Error) to kvIter.
type levelDBIter struct{ iterator.Iterator }

func (it levelDBIter) SeekGE(k []byte) bool { return it.Seek(k) }

func (it levelDBIter) Close() error {
	err := it.Error()
	it.Release()
	return err
}

// Settle waits until goleveldb's set of tables stops changing. goleveldb has
// no public flush, so its last memtable stays in memory (as the benchmark
// rules specify).
func (s *levelDBStore) Settle(maxWait time.Duration) (bool, error) {
	prev := ""
	return waitIdle(maxWait, func() (bool, error) {
		cur, err := s.db.GetProperty("leveldb.sstables")
		if err != nil {
			return false, err
		}
		same := cur == prev
		prev = cur
		return same, nil
	})
}

// Stats parses goleveldb's "leveldb.stats" table:
//
//	Level |   Tables   |    Size(MB)   |    Time(sec)  |    Read(MB)   |   Write(MB)
func (s *levelDBStore) Stats() storeStats {
	var st storeStats
	text, err := s.db.GetProperty("leveldb.stats")
	if err != nil {
		st.Extra = err.Error()
		return st
	}
	var writeMB float64
	var lv []string
	for _, line := range strings.Split(text, "\n") {
		f := strings.Split(line, "|")
		if len(f) != 6 {
			continue
		}
		level, err1 := strconv.Atoi(strings.TrimSpace(f[0]))
		tables, err2 := strconv.Atoi(strings.TrimSpace(f[1]))
		size, err3 := strconv.ParseFloat(strings.TrimSpace(f[2]), 64)
		w, err4 := strconv.ParseFloat(strings.TrimSpace(f[5]), 64)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			continue
		}
		writeMB += w
		if tables > 0 {
			lv = append(lv, fmt.Sprintf("L%d:%d/%.1fMiB", level, tables, size))
		}
	}
	st.TableBytesWritten = uint64(writeMB * (1 << 20))
	st.Levels = strings.Join(lv, " ")
	if wd, err := s.db.GetProperty("leveldb.writedelay"); err == nil {
		st.Extra = "writedelay " + wd
	}
	return st
}

func (s *levelDBStore) Close() error { return s.db.Close() }

// mib formats a byte count in MiB.
func mib(n uint64) string { return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20)) }

// engineNames returns the supported engine names, sorted.
func engineNames() []string {
	var names []string
	for n := range allEngines {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
