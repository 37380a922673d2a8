package engine

import (
	"fmt"
	"github.com/kayadb/kayadb/internal/crypt"
	"log/slog"

	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/cache"
	"github.com/kayadb/kayadb/internal/lsm/manifest"
	"github.com/kayadb/kayadb/internal/lsm/sstable"
	"github.com/kayadb/kayadb/internal/vfs"
)

// Compression selects how SSTable blocks are compressed.
type Compression = sstable.Compression

// Compression algorithms.
const (
	NoCompression     = sstable.NoCompression
	SnappyCompression = sstable.SnappyCompression
	ZstdCompression   = sstable.ZstdCompression
)

// ParseCompression parses "none", "snappy" or "zstd".
func ParseCompression(s string) (Compression, error) { return sstable.ParseCompression(s) }

// Options configures a DB. The zero value of every field means "use the
// default"; Open fills in defaults on a copy and validates it. Sizes are in
// bytes.
type Options struct {
	// MemTableSize is the arena size of one memtable; a full memtable is
	// rotated and flushed to an L0 table in the background. The first
	// memtable after Open is 256 KiB and each rotation doubles the size up
	// to MemTableSize. Default 64 MiB. Each memtable also holds a point
	// index of an eighth of its size (8 MiB for 64 MiB), so that a Get
	// served from it costs a hash lookup instead of a skiplist descent.
	MemTableSize int
	// MemTableStopWritesThreshold is the number of memtables (the mutable
	// one plus those queued for flushing) at which writes stall until a
	// flush finishes. Default 4.
	MemTableStopWritesThreshold int

	// L0CompactionThreshold is the number of L0 tables that makes L0 due for
	// compaction. Default 4.
	L0CompactionThreshold int
	// L0StopWritesThreshold is the number of L0 tables at which writes stall
	// until compaction catches up. Default 12.
	L0StopWritesThreshold int
	// LBaseMaxBytes is the target size of the base level (the level L0
	// compacts into). Default 64 MiB.
	LBaseMaxBytes int64
	// LevelMultiplier is the size ratio between adjacent levels. Default 10.
	LevelMultiplier int
	// TargetFileSize is the target size of tables written to L0 and the base
	// level; each deeper level doubles it. Default 2 MiB.
	TargetFileSize int64

	// BlockSize is the target uncompressed size of a data block. Default 4 KiB.
	BlockSize int
	// BlockRestartInterval is the number of keys between restart points in a
	// data block. Default 16.
	BlockRestartInterval int
	// BloomBitsPerKey sets the bloom filter size; 10 gives about 1% false
	// positives. Default 10; a negative value disables filters.
	BloomBitsPerKey int
	// Compression of SSTable blocks. Default SnappyCompression. Set
	// NoCompressionSet to store blocks raw.
	Compression Compression
	// NoCompressionSet makes a zero Compression mean "no compression"
	// instead of "default".
	NoCompressionSet bool

	// CacheSize is the byte budget of the block cache created for this DB
	// when Cache is nil. Default 64 MiB; a negative value disables caching.
	CacheSize int64
	// Cache shares one block cache between several DBs.
	Cache *cache.Cache
	// MaxOpenFiles bounds the number of open SSTable readers. Default 1000.
	MaxOpenFiles int
	// MaxManifestBytes is the MANIFEST size after which the next edit starts
	// a new MANIFEST. Default 64 MiB.
	MaxManifestBytes int64
	// WALPreallocateBytes is how much space each new WAL reserves up front
	// (fallocate with KEEP_SIZE) to make appends cheaper. Default 110% of
	// MemTableSize.
	WALPreallocateBytes int64

	// ErrorIfNotExists makes Open fail when dir holds no database instead
	// of creating one.
	ErrorIfNotExists bool
	// ErrorIfExists makes Open fail when dir already holds a database.
	ErrorIfExists bool
	// ReadOnly opens an existing database without changing anything on
	// disk: WALs are replayed into memory only, no file is created, written
	// or deleted, and no background work runs. Writes, Flush, Compact and
	// Checkpoint fail with ErrReadOnly. The directory lock is still taken.
	ReadOnly bool

	// FS is the file system; nil means the operating system's.
	FS vfs.FS
	// Logger receives background events (flushes, compactions, recovery,
	// errors). Nil discards them.
	Logger *slog.Logger

	// DisableAutomaticCompactions turns off background compactions (manual
	// Compact still works). For tests and tools.
	DisableAutomaticCompactions bool

	// CompactionFilter, when set, lets the application drop entries it no
	// longer needs while compactions rewrite them (garbage collection of
	// versioned data, expiry). See CompactionFilter. Nil costs nothing.
	CompactionFilter CompactionFilter

	// Encryption, when set, seals everything the engine writes that holds
	// keys or values — WAL records, MANIFEST records, SSTable blocks —
	// with AES-256-GCM under the Sealer's active key, and opens files
	// sealed with any key of its keyring. Files written without it stay
	// readable (a directory can be turned encrypted; compaction rewrites
	// its tables). Swapping a rotated keyring into the Sealer
	// (SetKeyring) makes new writes use the new key at once. Nil: plain.
	// See docs/design/security-controls.md §3.
	Encryption *Sealer
}

// Sealer seals and opens the engine's records and blocks (encryption at
// rest): build one with NewSealer over a keyring from LoadKeyring.
type Sealer = crypt.Sealer

// Keyring is a set of AES-256 keys with one active key.
type Keyring = crypt.Keyring

// NewSealer returns a Sealer over a keyring.
func NewSealer(r *Keyring) *Sealer { return crypt.NewSealer(r) }

// LoadKeyring reads a key file (32 raw bytes; keyring false) or a keyring
// file (the text format of docs/formats.md; keyring true). Either must be
// a regular file no other user may access.
func LoadKeyring(path string, keyring bool) (*Keyring, error) { return crypt.LoadFile(path, keyring) }

// CompactionFilter decides, for an entry a compaction would otherwise
// keep, whether to drop it. It is called only for a Set entry that is the
// newest version of its key in the compaction and that no open Snapshot
// can see (so every reader that could see the entry would see it as the
// current value), never for deletions, never during flushes, and with key
// and value valid only for the call.
//
// Dropping an entry makes the key read as deleted from then on, for new
// readers: an older version of the key never resurfaces. When nothing
// older of the key can exist below the compaction's output and no
// snapshot is open, the entry simply disappears; otherwise it is written
// as a deletion tombstone (same sequence number, no value) that shadows
// whatever is older and is itself dropped by a later compaction at the
// bottom of the tree (see compactionIter).
//
// A snapshot that opens while a compaction runs could see what the filter
// drops; such a compaction's output is discarded (Metrics.Compaction.
// FilterDiscarded) and the next compaction runs without the filter, so an
// open Snapshot never loses an entry it sees, and a steady stream of
// snapshots delays collection but never stalls compactions.
//
// The filter runs on the compaction goroutine, concurrently with reads and
// writes, and must be fast and safe for concurrent use. It must not call
// into the DB. Its decision may change over time (a horizon that moves
// forward), but an application must accept that an entry it would drop
// may survive until a compaction reaches it, and be read meanwhile.
type CompactionFilter func(key, value []byte) (drop bool)

// EnsureDefaults returns a copy of o with every unset field at its default.
func (o *Options) EnsureDefaults() *Options {
	var n Options
	if o != nil {
		n = *o
	}
	if n.MemTableSize <= 0 {
		n.MemTableSize = 64 << 20
	}
	if n.MemTableStopWritesThreshold <= 0 {
		n.MemTableStopWritesThreshold = 4
	}
	if n.L0CompactionThreshold <= 0 {
		n.L0CompactionThreshold = 4
	}
	if n.L0StopWritesThreshold <= 0 {
		n.L0StopWritesThreshold = 12
	}
	if n.LBaseMaxBytes <= 0 {
		n.LBaseMaxBytes = 64 << 20
	}
	if n.LevelMultiplier <= 0 {
		n.LevelMultiplier = 10
	}
	if n.TargetFileSize <= 0 {
		n.TargetFileSize = 2 << 20
	}
	if n.BlockSize <= 0 {
		n.BlockSize = 4 << 10
	}
	if n.BlockRestartInterval <= 0 {
		n.BlockRestartInterval = 16
	}
	if n.BloomBitsPerKey == 0 {
		n.BloomBitsPerKey = 10
	}
	if n.Compression == 0 && !n.NoCompressionSet {
		n.Compression = SnappyCompression
	}
	if n.CacheSize == 0 {
		n.CacheSize = 64 << 20
	}
	if n.MaxOpenFiles <= 0 {
		n.MaxOpenFiles = 1000
	}
	if n.MaxManifestBytes <= 0 {
		n.MaxManifestBytes = 64 << 20
	}
	if n.WALPreallocateBytes == 0 {
		n.WALPreallocateBytes = int64(n.MemTableSize) * 11 / 10
	}
	if n.FS == nil {
		n.FS = vfs.Default
	}
	if n.Logger == nil {
		n.Logger = slog.New(slog.DiscardHandler)
	}
	return &n
}

// Validate reports options that cannot work, naming the field and the fix.
func (o *Options) Validate() error {
	switch {
	case o.MemTableSize < minMemTableSize:
		return base.InvalidArgumentf("MemTableSize %d is below the minimum %d", o.MemTableSize, minMemTableSize)
	case o.MemTableSize > maxMemTableSize:
		return base.InvalidArgumentf("MemTableSize %d exceeds the maximum %d", o.MemTableSize, maxMemTableSize)
	case o.MemTableStopWritesThreshold < 2:
		return base.InvalidArgumentf("MemTableStopWritesThreshold %d must be at least 2 (one memtable being written, one being flushed)", o.MemTableStopWritesThreshold)
	case o.L0StopWritesThreshold <= o.L0CompactionThreshold:
		return base.InvalidArgumentf("L0StopWritesThreshold %d must be above L0CompactionThreshold %d", o.L0StopWritesThreshold, o.L0CompactionThreshold)
	case o.LevelMultiplier < 2:
		return base.InvalidArgumentf("LevelMultiplier %d must be at least 2", o.LevelMultiplier)
	case o.BlockSize > 1<<20:
		return base.InvalidArgumentf("BlockSize %d exceeds 1 MiB", o.BlockSize)
	case o.BloomBitsPerKey > 64:
		return base.InvalidArgumentf("BloomBitsPerKey %d exceeds 64", o.BloomBitsPerKey)
	case o.Compression > ZstdCompression:
		return base.InvalidArgumentf("unknown compression %d", o.Compression)
	case o.MaxOpenFiles < 16:
		return base.InvalidArgumentf("MaxOpenFiles %d is below the minimum 16", o.MaxOpenFiles)
	case o.ErrorIfExists && o.ErrorIfNotExists:
		return base.InvalidArgumentf("ErrorIfExists and ErrorIfNotExists are both set")
	case o.ReadOnly && o.ErrorIfExists:
		return base.InvalidArgumentf("ReadOnly and ErrorIfExists are both set")
	}
	return nil
}

const (
	// initialMemTableSize is the first memtable's size; later ones double
	// up to MemTableSize.
	initialMemTableSize = 256 << 10
	minMemTableSize     = 64 << 10
	maxMemTableSize     = 2 << 30
	// maxBatchSize bounds one batch (its WAL record and memtable share).
	maxBatchSize = 512 << 20
)

func (o *Options) writerOptions(level int) sstable.WriterOptions {
	bits := o.BloomBitsPerKey
	if bits < 0 {
		bits = 0
	}
	return sstable.WriterOptions{
		BlockSize:            o.BlockSize,
		BlockRestartInterval: o.BlockRestartInterval,
		BloomBitsPerKey:      bits,
		Compression:          o.Compression,
		Sealer:               o.Encryption,
	}
}

func (o *Options) targetFileSize(level int) int64 {
	s := o.TargetFileSize
	for l := 1; l < level; l++ {
		s *= 2
	}
	return s
}

// WriteOptions control one write.
type WriteOptions struct {
	// Sync makes the write durable (the WAL is fdatasync'ed) before the call
	// returns. Concurrent sync writes share one fdatasync.
	Sync bool
}

// Sync and NoSync are the two common write options.
var (
	Sync   = &WriteOptions{Sync: true}
	NoSync = &WriteOptions{Sync: false}
)

// IterOptions bound an iterator.
type IterOptions struct {
	// LowerBound is the smallest key the iterator returns (inclusive); nil
	// means no bound.
	LowerBound []byte
	// UpperBound is the key all returned keys are below (exclusive); nil
	// means no bound.
	UpperBound []byte
}

func levelName(l int) string { return fmt.Sprintf("L%d", l) }

var _ = manifest.NumLevels
