package kv

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"

	"github.com/kayadb/kayadb/engine"
)

// Migration from the format before versions
//
// An engine written before versions holds user values without a header
// and no format marker. The first Open by this version rewrites every user
// value in place as a version with timestamp 0 (every replica alike: the
// same bytes in, the same bytes out) and then writes the marker
// (0x00 "mvcc/format"). It works in batches of migrateBatchBytes, each
// recording the last key it rewrote (0x00 "mvcc/migrating") in the same
// batch, so that a crash resumes where the durable prefix ended and never
// rewrites a value twice. An engine with no user data and no applied entry
// just gets the marker.
//
// The raft log of such a cluster still holds version-1 entries; they are
// applied as before, with timestamps following the last applied one.

// migrateBatchBytes bounds one migration batch (the memory it holds); a
// variable for tests.
var migrateBatchBytes = 4 << 20

// IsVersioned reports whether db holds versioned data (the format
// marker), and checks that this version can read it.
func IsVersioned(db Getter) (bool, error) {
	v, err := db.Get(formatKey)
	if errors.Is(err, engine.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if len(v) != 1 || v[0] != formatVersion {
		return false, fmt.Errorf("kv: the engine's data format is %x, this version reads format %d: upgrade kayadb to read it: %w", v, formatVersion, engine.ErrInvalidArgument)
	}
	return true, nil
}

// Migrate converts db to the versioned format if it is not already (see
// above) and reports how many values it rewrote.
func Migrate(db *engine.DB, log *slog.Logger) (int, error) {
	ok, err := IsVersioned(db)
	if err != nil || ok {
		return 0, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var from []byte
	if v, err := db.Get(migratingKey); err == nil {
		from = append(v, 0) // the key after the last one rewritten
	} else if !errors.Is(err, engine.ErrNotFound) {
		return 0, err
	}
	if from == nil {
		from = []byte{SystemPrefix + 1}
	}
	it, err := db.NewIter(&engine.IterOptions{LowerBound: from})
	if err != nil {
		return 0, err
	}
	n, batchBytes := 0, 0
	b := db.NewBatch()
	var last, buf []byte
	commit := func() error {
		if err := b.Set(migratingKey, last); err != nil {
			return err
		}
		if err := b.Commit(engine.NoSync); err != nil {
			return fmt.Errorf("kv: migrating the engine to the versioned format: %w", err)
		}
		b = db.NewBatch()
		batchBytes = 0
		return nil
	}
	for ok := it.First(); ok; ok = it.Next() {
		if n == 0 {
			log.Info("converting the engine to the versioned format (every value becomes version 0); this happens once")
		}
		buf = appendHeader(buf[:0], 0)
		buf = append(buf, it.Value()...)
		if len(buf)-headerLen > engine.MaxValueSize {
			// Cannot happen: the value was written under the same limit.
			_ = it.Close()
			return n, corruptf("key %q has a value of %d bytes, over the limit", it.Key(), len(buf)-headerLen)
		}
		if err := b.Set(it.Key(), buf); err != nil {
			_ = it.Close()
			return n, err
		}
		last = append(last[:0], it.Key()...)
		n++
		batchBytes += len(it.Key()) + len(buf)
		if batchBytes >= migrateBatchBytes {
			if err := commit(); err != nil {
				_ = it.Close()
				return n, err
			}
		}
	}
	if err := it.Close(); err != nil {
		return n, err
	}
	if err := b.Delete(migratingKey); err != nil {
		return n, err
	}
	if err := b.Set(formatKey, []byte{formatVersion}); err != nil {
		return n, err
	}
	if err := b.Commit(engine.Sync); err != nil {
		return n, fmt.Errorf("kv: migrating the engine to the versioned format: %w", err)
	}
	if n > 0 {
		log.Info("converted the engine to the versioned format", "values", n)
	}
	return n, nil
}

// ResetRaftState removes from db what ties it to its raft group (applied
// index and term, configuration, roster) and the transaction outcomes
// (keyed by ids a new cluster hands out again), and keeps the versioned
// data and the last commit timestamp (so that the new cluster's revisions
// follow the restored ones): a restored backup becomes the engine of a new
// cluster. It reports how many keys it removed.
func ResetRaftState(db *engine.DB) (int, error) {
	_, _, ts, err := ReadAppliedTS(db)
	if err != nil {
		return 0, err
	}
	var keys [][]byte
	for _, r := range [][2][]byte{
		{[]byte("\x00raft/"), []byte("\x00raft0")},
		{[]byte("\x00cluster/"), []byte("\x00cluster0")},
		{outcomePrefix, prefixEnd(outcomePrefix)},
	} {
		it, err := db.NewIter(&engine.IterOptions{LowerBound: r[0], UpperBound: r[1]})
		if err != nil {
			return 0, err
		}
		for ok := it.First(); ok; ok = it.Next() {
			keys = append(keys, bytes.Clone(it.Key()))
		}
		if err := it.Close(); err != nil {
			return 0, err
		}
	}
	b := db.NewBatch()
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return 0, err
		}
	}
	if ts > 0 {
		// Index 0: the server sees a new node; the timestamp stays.
		if err := b.Set(appliedKey, appliedRecord(0, 0, ts)); err != nil {
			return 0, err
		}
	}
	if err := b.Commit(engine.Sync); err != nil {
		return 0, fmt.Errorf("kv: removing the raft state: %w", err)
	}
	return len(keys), nil
}

// LocalGet reads key's latest value straight from an engine (a stopped
// node's, a checkpoint), stripping the version header when the engine is
// versioned.
func LocalGet(db Getter, key []byte) ([]byte, error) {
	versioned, err := IsVersioned(db)
	if err != nil {
		return nil, err
	}
	v, err := db.Get(key)
	if err != nil || !versioned {
		return v, err
	}
	val, _, err := DecodeValue(v)
	return val, err
}
