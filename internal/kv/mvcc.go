package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/kayadb/kayadb/engine"
)

// Versioned data on disk (docs/design/mvcc-and-transactions.md §3)
//
//	K (user key)                     → 0x01 | commit_ts u64 BE | value
//	    the current version: the header costs 9 bytes and a read at
//	    "latest" strips it (one engine Get, as before versions)
//	0x00 'h' | esc(K) | ^start u64 BE → end u64 BE | value
//	    history: the value K held from start until end (exclusive);
//	    ^start (bitwise complement) sorts one key's versions newest first
//	0x00 'l' | ts u64 BE | n u32 BE   → op u8 (1 put, 2 delete) | K
//	    revision log: the n-th change made by the commit at ts
//	0x00 'o' | txn_id u64 BE          → commit_ts u64 BE | code u8
//	    outcome records (RecordOutcome, LookupOutcome)
//	0x00 "mvcc/format"                → u8 (formatVersion)
//	0x00 "mvcc/horizon"               → u64 BE, the applied GC horizon
//	0x00 "mvcc/bytes/" | last u64 BE  → u64 BE, bytes of history, revision
//	    log and outcomes written by commits with ts ≤ last (gc.go)
//	0x00 "mvcc/migrating"             → the last user key rewritten by an
//	    unfinished migration (Open)
//
// esc(K) writes 0x00 as 0x00 0xff and ends with 0x00 0x01, so that history
// keys sort by user key first. Every history entry, revision-log entry and
// outcome record is written once and never modified; garbage collection
// (gc.go) drops them in compactions once the horizon passes their end, ts
// or commit_ts.

// valueHeader marks a current value with its header; headerLen is the
// header's size.
const (
	valueHeader = 0x01
	headerLen   = 9
)

// formatVersion is the on-disk format of a versioned engine.
const formatVersion = 1

var (
	historyPrefix = []byte{SystemPrefix, 'h'}
	revlogPrefix  = []byte{SystemPrefix, 'l'}
	outcomePrefix = []byte{SystemPrefix, 'o'}
	formatKey     = []byte("\x00mvcc/format")
	horizonKey    = []byte("\x00mvcc/horizon")
	bucketPrefix  = []byte("\x00mvcc/bytes/")
	migratingKey  = []byte("\x00mvcc/migrating")
)

// Revision-log operations.
const (
	revPut    = 1
	revDelete = 2
)

// Errors of versioned reads.
var (
	// ErrCompacted: the requested revision is older than the horizon; its
	// history was (or may have been) garbage-collected. The error is a
	// *CompactedError naming the oldest readable revision.
	ErrCompacted = errors.New("mvcc: revision is compacted")
	// ErrFutureRevision: the requested revision is newer than everything
	// applied; the error is a *FutureRevisionError.
	ErrFutureRevision = errors.New("mvcc: required revision is a future revision")
)

// CompactedError is ErrCompacted with the revisions involved.
type CompactedError struct{ Revision, Oldest uint64 }

func (e *CompactedError) Error() string {
	return fmt.Sprintf("mvcc: revision %d is compacted; the oldest readable revision is %d", e.Revision, e.Oldest)
}

// Is makes errors.Is(err, ErrCompacted) true.
func (e *CompactedError) Is(target error) bool { return target == ErrCompacted }

// FutureRevisionError is ErrFutureRevision with the revisions involved.
type FutureRevisionError struct{ Revision, Newest uint64 }

func (e *FutureRevisionError) Error() string {
	return fmt.Sprintf("mvcc: revision %d is a future revision; the newest applied revision is %d", e.Revision, e.Newest)
}

// Is makes errors.Is(err, ErrFutureRevision) true.
func (e *FutureRevisionError) Is(target error) bool { return target == ErrFutureRevision }

// appendHeader appends a current value's header.
func appendHeader(dst []byte, ts uint64) []byte {
	dst = append(dst, valueHeader)
	return binary.BigEndian.AppendUint64(dst, ts)
}

// DecodeValue splits a stored current value (a user key's value in a
// versioned engine) into the user's value and its commit timestamp. The
// value aliases stored.
func DecodeValue(stored []byte) (value []byte, ts uint64, err error) {
	if len(stored) < headerLen || stored[0] != valueHeader {
		return nil, 0, fmt.Errorf("kv: a stored value of %d bytes has no version header: %w", len(stored), engine.ErrCorruption)
	}
	return stored[headerLen:], binary.BigEndian.Uint64(stored[1:headerLen]), nil
}

// appendEscaped appends esc(key) without its terminator.
func appendEscaped(dst, key []byte) []byte {
	for {
		i := bytes.IndexByte(key, 0)
		if i < 0 {
			return append(dst, key...)
		}
		dst = append(dst, key[:i+1]...)
		dst = append(dst, 0xff)
		key = key[i+1:]
	}
}

// appendEsc appends esc(key): escaped and terminated.
func appendEsc(dst, key []byte) []byte {
	return append(appendEscaped(dst, key), 0x00, 0x01)
}

// unescape returns the key whose esc() is e (terminator included).
func unescape(e []byte) ([]byte, bool) {
	if len(e) < 2 || e[len(e)-2] != 0 || e[len(e)-1] != 1 {
		return nil, false
	}
	e = e[:len(e)-2]
	out := make([]byte, 0, len(e))
	for len(e) > 0 {
		i := bytes.IndexByte(e, 0)
		if i < 0 {
			return append(out, e...), true
		}
		if i+1 >= len(e) || e[i+1] != 0xff {
			return nil, false
		}
		out = append(out, e[:i+1]...)
		e = e[i+2:]
	}
	return out, true
}

// historyKeyPrefix returns 0x00 'h' | esc(key): the prefix of key's
// history entries.
func historyKeyPrefix(dst, key []byte) []byte {
	return appendEsc(append(dst, historyPrefix...), key)
}

// historyKey returns key's history key for a version that started at
// start. Seeking to historyKey(key, T) finds the newest version that
// started at or before T.
func historyKey(dst, key []byte, start uint64) []byte {
	return binary.BigEndian.AppendUint64(historyKeyPrefix(dst, key), ^start)
}

// splitHistoryKey returns the escaped user key (terminator included) and
// the start timestamp of a history key.
func splitHistoryKey(k []byte) (esc []byte, start uint64, ok bool) {
	if len(k) < len(historyPrefix)+2+8 || !bytes.HasPrefix(k, historyPrefix) {
		return nil, 0, false
	}
	esc = k[len(historyPrefix) : len(k)-8]
	if esc[len(esc)-2] != 0 || esc[len(esc)-1] != 1 {
		return nil, 0, false
	}
	return esc, ^binary.BigEndian.Uint64(k[len(k)-8:]), true
}

// historyValue encodes a history entry's value.
func appendHistoryValue(dst []byte, end uint64, value []byte) []byte {
	return append(binary.BigEndian.AppendUint64(dst, end), value...)
}

func decodeHistoryValue(v []byte) (end uint64, value []byte, err error) {
	if len(v) < 8 {
		return 0, nil, fmt.Errorf("kv: a history entry of %d bytes is too short: %w", len(v), engine.ErrCorruption)
	}
	return binary.BigEndian.Uint64(v), v[8:], nil
}

// revlogKey returns the key of the n-th change of the commit at ts.
func revlogKey(dst []byte, ts uint64, n uint32) []byte {
	dst = append(dst, revlogPrefix...)
	dst = binary.BigEndian.AppendUint64(dst, ts)
	return binary.BigEndian.AppendUint32(dst, n)
}

func outcomeKey(txnID uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), outcomePrefix...), txnID)
}

// Version is a value and the commit timestamp (revision) that wrote it.
type Version struct {
	Value []byte
	TS    uint64
}

// iterSource opens engine iterators: an *engine.DB or *engine.Snapshot.
type iterSource interface {
	NewIter(o *engine.IterOptions) (*engine.Iterator, error)
}

// getCurrent reads key's current version.
func getCurrent(db Getter, key []byte) (Version, error) {
	v, err := db.Get(key)
	if err != nil {
		return Version{}, err
	}
	val, ts, err := DecodeValue(v)
	if err != nil {
		return Version{}, fmt.Errorf("key %q: %w", key, err)
	}
	return Version{Value: val, TS: ts}, nil
}

// versionAt resolves key at ts on it, an iterator whose bounds include the
// key and its history: the current version if it started at or before ts,
// else the history entry live at ts. It returns engine.ErrNotFound when the
// key did not exist at ts. The returned value is a copy.
func versionAt(it *engine.Iterator, key []byte, ts uint64, buf []byte) (Version, error) {
	if it.SeekGE(key) && bytes.Equal(it.Key(), key) {
		val, cts, err := DecodeValue(it.Value())
		if err != nil {
			return Version{}, fmt.Errorf("key %q: %w", key, err)
		}
		if cts <= ts {
			return Version{Value: bytes.Clone(val), TS: cts}, nil
		}
	} else if err := it.Error(); err != nil {
		return Version{}, err
	}
	seek := historyKey(buf[:0], key, ts)
	prefix := seek[:len(seek)-8]
	if it.SeekGE(seek) && bytes.HasPrefix(it.Key(), prefix) && len(it.Key()) == len(seek) {
		end, val, err := decodeHistoryValue(it.Value())
		if err != nil {
			return Version{}, fmt.Errorf("history of %q: %w", key, err)
		}
		if end > ts {
			_, start, _ := splitHistoryKey(it.Key())
			return Version{Value: bytes.Clone(val), TS: start}, nil
		}
	} else if err := it.Error(); err != nil {
		return Version{}, err
	}
	return Version{}, engine.ErrNotFound
}

// lastModified returns when key last changed: its current version's
// timestamp, else the end of its newest history entry (its deletion),
// else 0 (never written, or collected: at or before the horizon).
func lastModified(db Getter, src iterSource, key []byte) (uint64, error) {
	cur, err := getCurrent(db, key)
	if err == nil {
		return cur.TS, nil
	}
	if !errors.Is(err, engine.ErrNotFound) {
		return 0, err
	}
	return historyEnd(src, key)
}

// historyEnd returns the end of key's newest history entry, 0 if none.
func historyEnd(src iterSource, key []byte) (uint64, error) {
	prefix := historyKeyPrefix(nil, key)
	it, err := src.NewIter(&engine.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return 0, err
	}
	var end uint64
	if it.First() {
		if end, _, err = decodeHistoryValue(it.Value()); err != nil {
			_ = it.Close()
			return 0, fmt.Errorf("history of %q: %w", key, err)
		}
	}
	if err := it.Close(); err != nil {
		return 0, err
	}
	return end, nil
}

// scanAt returns the keys with prefix, from start on (inclusive; nil: the
// prefix itself), as of ts from sn, merging the current keyspace with the
// history keyspace, with the limits of Store.Scan; more says that a key
// under the prefix was left out by the limits.
func scanAt(sn iterSource, prefix, start []byte, ts uint64, maxItems, maxBytes int) (_ []KV, more bool, _ error) {
	lower := prefix
	if bytes.Compare(start, lower) > 0 {
		lower = start
	}
	if len(lower) == 0 {
		lower = []byte{SystemPrefix + 1}
	}
	cur, err := sn.NewIter(&engine.IterOptions{LowerBound: lower, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, false, err
	}
	defer cur.Close()
	hprefix := appendEscaped(append([]byte(nil), historyPrefix...), prefix)
	// Escaping keeps the order of user keys: every history entry of a key
	// at or after lower sorts at or after escaped(lower).
	hlow := appendEscaped(append([]byte(nil), historyPrefix...), lower)
	hist, err := sn.NewIter(&engine.IterOptions{LowerBound: hlow, UpperBound: prefixEnd(hprefix)})
	if err != nil {
		return nil, false, err
	}
	defer hist.Close()

	var out []KV
	size := 0
	emit := func(key []byte, v Version) bool {
		n := len(key) + len(v.Value)
		if len(out) >= maxItems || (len(out) > 0 && size+n > maxBytes) {
			return false
		}
		size += n
		out = append(out, KV{Key: bytes.Clone(key), Value: bytes.Clone(v.Value), TS: v.TS})
		return true
	}
	var escCur, escH, seek []byte
	okC, okH := cur.First(), hist.First()
	for okC || okH {
		// The next user key: the smaller of the two iterators' keys,
		// compared in escaped form.
		escH = escH[:0]
		if okH {
			e, _, ok := splitHistoryKey(hist.Key())
			if !ok {
				return nil, false, fmt.Errorf("kv: malformed history key %q: %w", hist.Key(), engine.ErrCorruption)
			}
			escH = append(escH, e...) // hist moves before escH is used again
		}
		c := 1 // >0: the history key comes first
		if okC {
			escCur = appendEsc(escCur[:0], cur.Key())
			c = -1
			if okH {
				c = bytes.Compare(escCur, escH)
			}
		}
		var key []byte
		var found bool
		var v Version
		if c <= 0 {
			key = cur.Key()
			val, cts, err := DecodeValue(cur.Value())
			if err != nil {
				return nil, false, fmt.Errorf("key %q: %w", key, err)
			}
			if cts <= ts {
				found, v = true, Version{Value: val, TS: cts}
			}
		} else {
			k, ok := unescape(escH)
			if !ok {
				return nil, false, fmt.Errorf("kv: malformed history key %q: %w", hist.Key(), engine.ErrCorruption)
			}
			key = k
		}
		if !found && c >= 0 {
			// Resolve key from its history: the newest version that
			// started at or before ts, if it was live at ts.
			seek = append(append(seek[:0], historyPrefix...), escH...)
			seek = binary.BigEndian.AppendUint64(seek, ^ts)
			if hist.SeekGE(seek) && bytes.HasPrefix(hist.Key(), seek[:len(seek)-8]) && len(hist.Key()) == len(seek) {
				end, val, err := decodeHistoryValue(hist.Value())
				if err != nil {
					return nil, false, fmt.Errorf("history of %q: %w", key, err)
				}
				if end > ts {
					_, start, _ := splitHistoryKey(hist.Key())
					found, v = true, Version{Value: val, TS: start}
				}
			}
		}
		if found && !emit(key, v) {
			more = true
			break
		}
		if c <= 0 {
			okC = cur.Next()
		}
		if c >= 0 {
			// Past every history entry of this key.
			seek = append(append(seek[:0], historyPrefix...), escH...)
			seek[len(seek)-1] = 0x02
			okH = hist.SeekGE(seek)
		}
	}
	if err := cur.Error(); err != nil {
		return nil, false, err
	}
	if err := hist.Error(); err != nil {
		return nil, false, err
	}
	return out, more, nil
}
