package base

// InternalIterator iterates over internal keys in internal-key order. It is
// the interface shared by memtable, SSTable, level and merging iterators.
//
// Positioning methods return whether the iterator is now at a valid entry.
// Key and Value are valid only while the iterator stays at that entry; the
// bytes they return must not be modified. When a positioning method returns
// false, Error tells whether iteration ended or failed.
type InternalIterator interface {
	// SeekGE moves to the first entry whose user key is >= key.
	SeekGE(key []byte) bool
	// SeekLT moves to the last entry whose user key is < key.
	SeekLT(key []byte) bool
	// First moves to the first entry.
	First() bool
	// Last moves to the last entry.
	Last() bool
	// Next moves forward one entry.
	Next() bool
	// Prev moves back one entry.
	Prev() bool
	// Key returns the current key.
	Key() InternalKey
	// Value returns the current value.
	Value() []byte
	// Error returns the first error met, if any.
	Error() error
	// Close releases resources; it returns the iterator's error, if any.
	Close() error
}
