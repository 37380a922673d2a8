// Package sstable implements KayaDB's immutable sorted table files: the
// on-disk format, a streaming Writer, a Reader with point lookups (Get) and
// bidirectional iterators (Iter, a base.InternalIterator), and the table-wide
// bloom filter.
//
// A table holds encoded internal keys (user key + 8-byte little-endian
// trailer seq<<8|kind, see package base) in strictly increasing internal
// order (base.CompareEncoded), each with a value.
//
// # File layout
//
//	+--------------+-----+--------------+--------------+------------------+-------------+-----------------+--------+
//	| data block 0 | ... | data block n | filter block | properties block | index block | metaindex block | footer |
//	+--------------+-----+--------------+--------------+------------------+-------------+-----------------+--------+
//	                                     (optional)                                              57 bytes (61 encrypted)
//
// The blocks tile the file exactly, in this order, without gaps: data block
// 0 starts at offset 0, each block starts where the previous block's trailer
// ends, and the metaindex block's trailer ends where the footer begins.
// Readers check this.
//
// # Block handles and block trailers
//
// A block handle locates a block:
//
//	+-----------------+-----------------+
//	| offset uvarint  | length uvarint  |   length excludes the 5-byte trailer
//	+-----------------+-----------------+
//
// Every block is stored as its (possibly compressed) bytes followed by a
// 5-byte trailer:
//
//	+-------------------------+-----------------+------------------------+
//	| stored bytes (length B) | compression u8  | masked CRC32C u32 LE   |
//	+-------------------------+-----------------+------------------------+
//
// The compression byte is 0 (none), 1 (snappy) or 2 (zstd). The CRC is
// base.MaskedCRC over the stored bytes followed by the compression byte. The
// stored bytes of a compressed block are:
//
//	snappy: a snappy block (its own uvarint decoded-length header + body)
//	zstd:   uvarint decodedLength | one zstd frame
//
// A compressed form is kept only when it is at least 12.5% smaller than the
// raw block; otherwise the block is stored raw with compression byte 0. The
// filter block and the meta blocks (properties, metaindex) are never
// compressed; data blocks and the index block may be. Readers refuse to
// decode blocks whose declared decoded length exceeds 64 MiB (and, for
// snappy, 64 times the stored length, beyond what snappy can reach).
//
// # Row blocks (data, index, properties, metaindex)
//
//	+---------+---------+-----+---------+----------------------------+------------------+
//	| entry 0 | entry 1 | ... | entry m | restartOffset u32 LE × R   | R u32 LE         |
//	+---------+---------+-----+---------+----------------------------+------------------+
//
//	entry = | shared uvarint | unshared uvarint | valueLen uvarint | key suffix (unshared B) | value (valueLen B) |
//
// An entry's key is the first shared bytes of the previous entry's key
// followed by the suffix. Every restart interval-th entry (data blocks:
// WriterOptions.BlockRestartInterval, default 16; index and meta blocks:
// every entry) is a restart point: it has shared = 0 and its offset is
// listed in the restart array. The first restart offset is always 0; R >= 1
// even for an empty block. Keys strictly increase within a block: data and
// index block keys are encoded internal keys compared with
// base.CompareEncoded, meta block keys are names compared bytewise.
//
// # Index block
//
// One entry per data block, in order: the key is a separator internal key S
// with lastKey(block i) <= S < firstKey(block i+1), the value the block's
// handle. S is built from the user keys as LevelDB's FindShortestSeparator
// does (with Pebble's refinement): if the last user key a and the next first
// user key b differ at position p, and some byte a[j] (j >= p; for j = p also
// a[p]+1 < b[p]) can be incremented without overflow, S's user key is
// a[:j+1] with a[j] incremented and S's trailer is (SeqNumMax, KindMax); this
// is used only when it is shorter than a. Otherwise S is lastKey itself. For
// the last block, S is the block's last key itself.
//
// # Filter block
//
// A full-table, cache-line-blocked bloom filter over user keys (consecutive
// duplicate user keys are added once), as RocksDB's and Pebble's full
// filters:
//
//	+------------------------------------+-----------+-------------------+
//	| bit array: numLines × 64 B lines   | probes u8 | numLines u32 LE   |
//	+------------------------------------+-----------+-------------------+
//
// numLines = ceil(numKeys×bitsPerKey / 512), rounded up to an odd number;
// probes = floor(bitsPerKey×0.69) clamped to [1, 30]. For a key with 32-bit
// hash h: delta = h>>17 | h<<15 (rotate right 17); the line is h % numLines;
// then probes times: set/test bit (h % 512) of that line, h += delta. Bit k
// of a line is bit k%8 of byte k/8.
//
// The hash is LevelDB's murmur-like Hash(key, seed 0xbc9f1d34) with bytes
// treated as unsigned: m = 0xc6a4a793; h = seed ^ (len×m); for each full
// 4-byte little-endian word w: h += w; h *= m; h ^= h>>16; then the 1–3 tail
// bytes are added as tail[0] | tail[1]<<8 | tail[2]<<16, h *= m, h ^= h>>24.
// All arithmetic is mod 2^32.
//
// # Properties block
//
// A meta row block of (name → value) pairs sorted by name. Numbers are
// uvarints; compression is a string ("none", "snappy", "zstd"):
//
//	compression, filter_bits_per_key, filter_size, format_version,
//	index_size, largest_seq, num_data_blocks, num_deletions, num_entries,
//	raw_key_size, raw_value_size, smallest_seq
//
// Unknown names are ignored by readers.
//
// # Metaindex block
//
// A meta row block mapping "kaya.filter" (absent when the table has no
// filter) and "kaya.properties" to block handles.
//
// # Footer (57 bytes)
//
//	 0      1                              41                  45            49                57
//	+------+------------------------------+-------------------+-------------+-----------------+
//	| 0x01 | metaindex handle | index     | formatVersion     | footerCRC   | magic           |
//	|      | handle | zero padding        | u32 LE (= 1)      | u32 LE      | "\x89KAYASST"   |
//	+------+------------------------------+-------------------+-------------+-----------------+
//
// Byte 0 is the checksum type (1 = CRC32C). footerCRC is base.MaskedCRC of
// bytes [0, 45).
//
// # Encrypted tables (format version 2)
//
// A Writer with a Sealer (WriterOptions.Sealer) seals every block — data,
// filter, properties, index, metaindex — after compression, with the
// AES-256-GCM envelope of package crypt (key id, nonce, ciphertext, tag: 32
// bytes of overhead). The sealed bytes are the block's stored bytes: handles
// and the index_size and filter_size properties count them, the trailer's
// compression byte describes the plaintext inside, and the trailer CRC
// covers the sealed bytes. The additional data binds a block to its place:
//
//	"kayadb sstable block v2\x00" | kind u8 | block offset u64 LE
//
// with kind 1 data, 2 filter, 3 properties, 4 index, 5 metaindex. The whole
// table uses the key active when the Writer was created, and the footer is
// 61 bytes, naming it:
//
//	 0      1                              41          45                49            53              61
//	+------+------------------------------+-----------+-----------------+-------------+---------------+
//	| 0x01 | metaindex handle | index     | key id    | formatVersion   | footerCRC   | magic         |
//	|      | handle | zero padding        | u32 LE    | u32 LE (= 2)    | u32 LE      | "\x89KAYASST" |
//	+------+------------------------------+-----------+-----------------+-------------+---------------+
//
// footerCRC covers bytes [0, 49). Both footers end with the same 16 bytes
// (version, CRC, magic), so a reader reads the last 61 bytes and picks the
// footer by the version. The format_version property equals the footer's.
// Readers (ReaderOptions.Sealer) open blocks as they read them; the block
// cache and the in-memory index and filter hold plaintext. A block whose CRC
// holds but which does not authenticate fails with a *BlockKeyError naming
// the file, offset and key id (it matches base.ErrCorruption and
// crypt.ErrDecrypt); a table whose key the keyring lacks, or read without a
// Sealer, fails Open with an error matching crypt.ErrUnknownKey.
//
// # Errors
//
// Every problem found in a file's bytes is reported as a
// *base.CorruptionError (matching base.ErrCorruption) naming
// ReaderOptions.FileName and the offset of the bad block or footer. Readers
// verify every block's CRC before using it, and check varints, handles,
// restart arrays, prefix lengths, key lengths, key kinds and key order, so
// that no input makes them panic, loop forever or return bytes that are not
// in the file.
package sstable
