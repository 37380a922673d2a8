package cli

import (
	"bytes"
	"fmt"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/kv"
)

// kvBackend is what the key-value commands (put, get, delete, scan) need.
// Local mode implements it on an open engine.DB; a server mode implements
// it over the network, and a command picks the backend with
// app.openBackend without knowing which one it got.
type kvBackend interface {
	// Put stores value under key and returns the sequence number the
	// write made visible (0 when the backend cannot tell).
	Put(key, value []byte) (seq uint64, err error)
	// Get returns the value of key or an error matching engine.ErrNotFound.
	Get(key []byte) ([]byte, error)
	// Delete removes key; deleting a missing key is not an error.
	Delete(key []byte) error
	// Scan calls fn for the keys starting with prefix in key order, at most
	// limit of them (0 = no limit), and reports whether more keys matched.
	// The slices passed to fn are valid only during the call.
	Scan(prefix []byte, limit int, fn func(key, value []byte) error) (more bool, err error)
	// Close releases the backend (for local mode: closes the database).
	Close() error
}

// openBackend returns the backend for the key-value commands. Only local
// mode exists so far; a --server flag would choose a remote backend here.
func (a *app) openBackend(mode openMode) (kvBackend, error) {
	if a.serverMode() {
		return a.openRemote()
	}
	db, err := a.openDB(mode)
	if err != nil {
		return nil, err
	}
	a.warnRecovery(db)
	wo := engine.Sync
	if !a.sync {
		wo = engine.NoSync
	}
	versioned, err := kv.IsVersioned(db)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return &localBackend{db: db, wo: wo, versioned: versioned}, nil
}

// withBackend opens the backend, runs fn and closes the backend.
func (a *app) withBackend(mode openMode, fn func(b kvBackend) error) (err error) {
	b, err := a.openBackend(mode)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := b.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing the database: %w", cerr)
		}
	}()
	return fn(b)
}

// localBackend runs key-value commands on an engine opened in-process.
// A versioned engine (a kayadb-server's, copied or stopped) is read as the
// server reads it: user keys only, values without their version header;
// writes to it are refused.
type localBackend struct {
	db        *engine.DB
	wo        *engine.WriteOptions
	versioned bool
}

// errVersionedWrite: a write into a server's versioned engine.
var errVersionedWrite = fmt.Errorf("%w: this engine holds a kayadb-server's versioned data (it has the 0x00 \"mvcc/format\" marker); a write here would bypass raft and the version history: write through the cluster (kayactl --server ...)", engine.ErrInvalidArgument)

func (l *localBackend) Put(key, value []byte) (uint64, error) {
	if l.versioned {
		return 0, errVersionedWrite
	}
	if err := l.db.Set(key, value, l.wo); err != nil {
		return 0, err
	}
	return l.db.Metrics().VisibleSeq, nil
}

func (l *localBackend) Get(key []byte) ([]byte, error) {
	if l.versioned && (len(key) == 0 || key[0] != kv.SystemPrefix) {
		return kv.LocalGet(l.db, key)
	}
	return l.db.Get(key) // system keys as they are stored
}

func (l *localBackend) Delete(key []byte) error {
	if l.versioned {
		return errVersionedWrite
	}
	return l.db.Delete(key, l.wo)
}

func (l *localBackend) Scan(prefix []byte, limit int, fn func(key, value []byte) error) (more bool, err error) {
	opts := &engine.IterOptions{UpperBound: prefixUpperBound(prefix)}
	if len(prefix) > 0 {
		opts.LowerBound = prefix
	}
	if l.versioned {
		if len(prefix) > 0 && prefix[0] == kv.SystemPrefix {
			return false, fmt.Errorf("%w: %v", engine.ErrInvalidArgument, kv.ErrReservedKey)
		}
		if len(prefix) == 0 {
			opts.LowerBound = []byte{kv.SystemPrefix + 1} // user keys only
		}
	}
	it, err := l.db.NewIter(opts)
	if err != nil {
		return false, err
	}
	defer func() {
		if cerr := it.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		if !bytes.HasPrefix(it.Key(), prefix) {
			// Cannot happen with correct bounds; stop rather than print
			// keys outside the prefix.
			break
		}
		if limit > 0 && n == limit {
			return true, it.Error()
		}
		v := it.Value()
		if l.versioned {
			if v, _, err = kv.DecodeValue(v); err != nil {
				return false, fmt.Errorf("key %q: %w", it.Key(), err)
			}
		}
		if err := fn(it.Key(), v); err != nil {
			return false, err
		}
		n++
	}
	return false, it.Error()
}

func (l *localBackend) Close() error { return l.db.Close() }

// prefixUpperBound returns the smallest key greater than every key with the
// given prefix: the prefix with trailing 0xff bytes dropped and its last
// byte incremented. An empty or all-0xff prefix has no upper bound (nil).
func prefixUpperBound(prefix []byte) []byte {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] < 0xff {
			end := make([]byte, i+1)
			copy(end, prefix[:i+1])
			end[i]++
			return end
		}
	}
	return nil
}
