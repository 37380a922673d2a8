package engine

import "github.com/kayadb/kayadb/internal/lsm/batch"

// Batch is a group of writes applied atomically: after a crash either all of
// them are present or none. Build it with Set and Delete, then Commit it (or
// pass it to DB.Apply). A Batch is not safe for concurrent use.
type Batch struct {
	db  *DB
	b   batch.Batch
	err error
}

// NewBatch returns an empty batch bound to d.
func (d *DB) NewBatch() *Batch { return &Batch{db: d} }

// Set adds a write of value under key. An oversized key or value is refused
// here and also makes Commit fail, so a partly built batch is never applied.
func (b *Batch) Set(key, value []byte) error {
	if err := validateKey(key); err != nil {
		b.setErr(err)
		return err
	}
	if err := validateValue(value); err != nil {
		b.setErr(err)
		return err
	}
	b.b.Set(key, value)
	return nil
}

// Put is Set.
func (b *Batch) Put(key, value []byte) error { return b.Set(key, value) }

// Delete adds a deletion of key.
func (b *Batch) Delete(key []byte) error {
	if err := validateKey(key); err != nil {
		b.setErr(err)
		return err
	}
	b.b.Delete(key)
	return nil
}

func (b *Batch) setErr(err error) {
	if b.err == nil {
		b.err = err
	}
}

// Grow makes room for about n more bytes of writes (keys, values and a few
// bytes of framing each), so that building a batch of known size does not
// reallocate as it grows.
func (b *Batch) Grow(n int) { b.b.Grow(n) }

// Count returns the number of writes in the batch.
func (b *Batch) Count() int { return int(b.b.Count()) }

// Len returns the encoded size of the batch in bytes.
func (b *Batch) Len() int { return b.b.Len() }

// Reset empties the batch so it can be reused.
func (b *Batch) Reset() {
	b.b.Reset()
	b.err = nil
}

// Commit applies the batch to the DB it was created from. A nil opts means
// Sync.
func (b *Batch) Commit(opts *WriteOptions) error {
	if b.db == nil {
		return ErrInvalidArgument
	}
	return b.db.Apply(b, opts)
}
