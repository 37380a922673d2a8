// Package raftlog persists a node's Raft log and hard state in a segmented
// write-ahead log and serves go.etcd.io/raft's Storage interface from an
// in-memory copy (raft.MemoryStorage), as etcd does.
//
// It owns the files under its directory (DIR/raft/wal): nothing else writes
// there. It must never hand raft an entry that is not durable when the
// caller asked for durability, never accept a torn record anywhere but at
// the end of the newest segment, and never panic on file contents.
//
// # Files
//
//	SSSSSSSSSSSSSSSS-IIIIIIIIIIIIIIII.wal   segment: sequence number, first raft index it may hold (hex)
//
// Segments are preallocated (fallocate KEEP_SIZE) and framed by package
// record: 32 KiB blocks, chunks with a masked CRC-32C, the segment's sequence
// number and a sync offset. A segment is sealed (synced, then an empty
// marker record, synced) before the next one is created, so every segment
// but the newest ends cleanly.
//
// # Zeros ahead of the records
//
// The newest segment is zero-filled (written and synced) some way ahead of
// its last record, so that a Save overwrites blocks that are already
// allocated, written and inside the file size. Its fdatasync then has only
// data to flush: appending instead moves the file size and converts
// preallocated extents, a metadata change that costs a journal commit on
// ext4 with every sync, and the journal commits of nodes sharing a disk
// queue behind each other. The zeros are written when the segment is
// created (zeroAheadMin) and, once the records come near their end, by
// PrepareAhead, which the raft node calls after it has handed on a Save's
// results, so that no Save waits for them; the distance grows with the
// segment (up to zeroAheadMax) and stops at SegmentBytes plus an eighth.
// Records past the zeros are appended as before. Sealing cuts the zeros
// off, so a sealed segment ends with its seal marker. After a crash, the
// newest segment's records are followed by zeros, which package record
// reports as a tail with nothing torn (TornTailError.Zeroed) and Open cuts
// off like any tail. Zero-filling is a hint: when it fails (a full disk)
// the segment goes on without it.
//
// # Records
//
// Each record starts with a type byte:
//
//	1 batch     uvarint n | n × (uvarint len | raftpb.Entry proto) | hasState u8 | [uvarint len | raftpb.HardState proto]
//	2 snapshot  index u64 LE | term u64 LE | uvarint len | raftpb.ConfState proto
//	3 node      node id u64 LE  (first record of every segment)
//
// A Save writes one batch record. On replay an entry with index i replaces
// every entry >= i (raft log truncation is represented by rewriting), a
// snapshot record drops the entries it covers, and the last hard state wins.
//
// # What happens on a failed write
//
// The rule: a failed write never leaves bytes on disk that recovery
// misreads, so a full disk never damages the log, and the log goes on once
// space is back.
//
//   - A write that fails (typically ENOSPC, possibly after writing part of
//     its bytes) is cut off before the call returns: the segment is
//     truncated to the end of the last complete record, the write offset
//     and the record encoder go back there, and the buffered bytes are
//     dropped. No later record is ever written behind a partial one, and no
//     chunk ever claims (by its sync offset) that cut bytes were durable.
//     The call returns the error (matching vfs.IsNoSpace when it is one)
//     and changes nothing, on disk or in memory: Save and SaveSnapshot may
//     be called again with the same arguments and succeed once there is
//     space.
//   - A failed fsync is never retried (the kernel may have dropped the
//     pages it could not write: PostgreSQL's "fsyncgate"), and a write
//     that cannot be cut off (the truncate or seek fails) leaves a partial
//     record at the end. Either way the log is broken: every later call
//     returns an error matching ErrBroken, and nothing more is written, not
//     even a seal marker on Close. The segment is the newest, so Open
//     accepts what is there as a torn tail.
//   - Rotation seals the current segment (its marker durable) before it
//     creates the next, so at every instant only the newest segment can end
//     in a torn record. If the next segment cannot be created, its file is
//     removed (durably), the sealed segment stays in use (records may
//     follow a seal marker), and rotation is tried again later; the Save
//     that triggered it still succeeds. Preallocation is a hint and its
//     failure is ignored.
//   - Close on a full disk: the seal marker's failed write is cut off and
//     the segment ends with its last complete record.
//
// # Encryption at rest
//
// With Options.Sealer every record a segment gets — node records, batches
// (entries and hard state), snapshot records, seal markers — is sealed by
// package record (AES-256-GCM under the Sealer's active key at the time
// the record is written; chunk types 0x11-0x14) and opened on replay with
// any key of the Sealer's keyring. Plain segments written before stay
// readable, and the log moves on to sealed segments by itself. A record
// that does not open (a key the keyring lacks, a wrong key) stops Open
// with an error naming the segment file, the offset and the key id; it is
// never taken for a torn tail. Log.KeyUsage and ScanKeys tell which keys
// the live segments use, so that a rotated keyring that drops one of them
// is refused.
package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/errs"
	"github.com/kayadb/kayadb/internal/record"
	"github.com/kayadb/kayadb/internal/vfs"
)

const (
	recBatch    = 1
	recSnapshot = 2
	recNode     = 3
)

// DefaultSegmentBytes is the size at which a segment is sealed and the next
// one started.
const DefaultSegmentBytes = 64 << 20

// The zero-filled space ahead of the newest segment's records (see the
// package doc): at least zeroAheadMin, half the segment's records so far,
// at most zeroAheadMax. PrepareAhead fills again when less than half of
// that distance is left.
const (
	zeroAheadMin = 256 << 10
	zeroAheadMax = 4 << 20
)

// Options configures a Log.
type Options struct {
	FS  vfs.FS
	Dir string
	// NodeID is stamped in every segment; opening a WAL written by another
	// node fails.
	NodeID uint64
	// SegmentBytes is the segment size; default DefaultSegmentBytes.
	SegmentBytes int64
	// Snapshot is the node's current snapshot (from raft-snapshot.bin), if
	// any: the log starts after it, and entries it covers are ignored.
	Snapshot *pb.SnapshotMetadata
	// Sealer, when set, seals every record written and opens sealed
	// records on replay (encryption at rest; see the package doc). Nil:
	// records are written plain, and a sealed segment fails Open naming
	// its key id.
	Sealer *crypt.Sealer
}

// Log is a durable raft log. Its embedded MemoryStorage implements
// raft.Storage. Save, SaveSnapshot, Compact and Close are serialized by
// wmu: with asynchronous storage writes, Save runs on the node's storage
// goroutine while the raft goroutine compacts.
type Log struct {
	*raft.MemoryStorage
	opts Options

	wmu sync.Mutex // serializes the writers

	mu       sync.Mutex // guards the fields below against Stats
	segs     []segment  // sealed segments, oldest first
	cur      *segWriter
	nextSeq  uint64
	bytes    int64 // bytes written
	syncs    int64
	closed   bool
	lastSnap *pb.SnapshotMetadata
	// writeFailures counts failed writes that were cut off;
	// rotateFailures counts failed segment rotations (the current segment
	// stayed in use).
	writeFailures  int64
	rotateFailures int64
	// broken is set, to an error matching ErrBroken, when a failure could
	// not be undone: every later call returns it, and nothing more is
	// written to the current segment. Written only by the raft goroutine.
	broken error

	// rotateRetryAt is the offset at which a failed rotation is tried
	// again (see maybeRotate).
	rotateRetryAt int64

	syncLatency latencyHistogram // fsyncs of Save (lock-free)

	rec []byte // Save's record buffer, reused (Save runs on one goroutine)
}

type segment struct {
	seq   uint64
	first uint64
	name  string
	keys  *keySet // the keys of its records; never nil once the segment is in the log
}

// keySet is the set of keys a segment's records are sealed with, and
// whether any record is plain. The raft goroutine adds to it as it writes;
// KeyUsage reads it from others.
type keySet struct {
	mu    sync.Mutex
	ids   map[crypt.KeyID]bool
	plain bool
}

func newKeySet() *keySet { return &keySet{ids: map[crypt.KeyID]bool{}} }

func (k *keySet) add(id crypt.KeyID, sealed bool) {
	k.mu.Lock()
	if sealed {
		k.ids[id] = true
	} else {
		k.plain = true
	}
	k.mu.Unlock()
}

func (k *keySet) snapshot() (ids []crypt.KeyID, plain bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for id := range k.ids {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, k.plain
}

func segmentName(seq, first uint64) string { return fmt.Sprintf("%016x-%016x.wal", seq, first) }

func parseSegmentName(name string) (seq, first uint64, ok bool) {
	if len(name) != 16+1+16+4 || !strings.HasSuffix(name, ".wal") || name[16] != '-' {
		return 0, 0, false
	}
	if _, err := fmt.Sscanf(name, "%016x-%016x.wal", &seq, &first); err != nil {
		return 0, 0, false
	}
	return seq, first, true
}

// OpenReport says what Open found.
type OpenReport struct {
	Segments   int
	Entries    int
	FirstIndex uint64
	LastIndex  uint64
	HardState  *pb.HardState
	Snapshot   *pb.SnapshotMetadata
	// TornTail describes the unfinished end of the newest segment that was
	// cut off, if any.
	TornTail *record.TornTailError
}

// ErrCorrupt wraps every error about damaged WAL contents; it also matches
// errs.ErrCorruption.
var ErrCorrupt = errs.ErrCorruption

// Open reads every segment in Dir (creating Dir if needed), rebuilds the
// in-memory log, cuts a torn tail off the newest segment, and starts a new
// segment for appends.
func Open(opts Options) (*Log, *OpenReport, error) {
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = DefaultSegmentBytes
	}
	fs := opts.FS
	if err := vfs.MkdirAllSync(fs, opts.Dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("raftlog: creating %s: %w", opts.Dir, err)
	}
	names, err := fs.List(opts.Dir)
	if err != nil {
		return nil, nil, fmt.Errorf("raftlog: listing %s: %w", opts.Dir, err)
	}
	var segs []segment
	for _, n := range names {
		if strings.HasSuffix(n, ".tmp") {
			_ = fs.Remove(filepath.Join(opts.Dir, n))
			continue
		}
		seq, first, ok := parseSegmentName(n)
		if !ok {
			continue
		}
		segs = append(segs, segment{seq: seq, first: first, name: n, keys: newKeySet()})
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].seq < segs[j].seq })

	l := &Log{MemoryStorage: raft.NewMemoryStorage(), opts: opts}
	rep := &OpenReport{Segments: len(segs)}
	st := &replayState{snap: opts.Snapshot}
	for i, s := range segs {
		if i > 0 && s.seq != segs[i-1].seq+1 {
			return nil, nil, errs.CorruptionErrorf(filepath.Join(opts.Dir, s.name), -1,
				"segment sequence jumps from %d to %d: a segment is missing", segs[i-1].seq, s.seq)
		}
		torn, err := l.replaySegment(s, i == len(segs)-1, st)
		if err != nil {
			return nil, nil, err
		}
		rep.TornTail = torn
	}
	if st.snap != nil {
		if err := l.MemoryStorage.ApplySnapshot(&pb.Snapshot{Metadata: st.snap}); err != nil {
			return nil, nil, fmt.Errorf("raftlog: restoring snapshot metadata: %w", err)
		}
		l.lastSnap = st.snap
		rep.Snapshot = st.snap
	}
	if st.hs != nil && st.snap != nil && st.hs.GetCommit() < st.snap.GetIndex() {
		// The snapshot was committed before the hard state that follows
		// its installation reached the log; its contents are committed.
		st.hs.Commit = new(st.snap.GetIndex())
	}
	if st.hs != nil {
		if err := l.MemoryStorage.SetHardState(st.hs); err != nil {
			return nil, nil, err
		}
		rep.HardState = st.hs
	}
	if len(st.ents) > 0 {
		if err := l.MemoryStorage.Append(st.ents); err != nil {
			return nil, nil, err
		}
	}
	rep.Entries = len(st.ents)
	rep.FirstIndex, _ = l.MemoryStorage.FirstIndex()
	rep.LastIndex, _ = l.MemoryStorage.LastIndex()
	if st.hs != nil && st.hs.GetCommit() > rep.LastIndex {
		return nil, nil, errs.CorruptionErrorf(opts.Dir, -1,
			"hard state commit index %d is beyond the last log entry %d", st.hs.GetCommit(), rep.LastIndex)
	}
	l.segs = segs
	if len(segs) > 0 {
		l.nextSeq = segs[len(segs)-1].seq + 1
	} else {
		l.nextSeq = 1
	}
	if err := l.startSegment(rep.LastIndex + 1); err != nil {
		return nil, nil, err
	}
	return l, rep, nil
}

type replayState struct {
	ents []*pb.Entry
	hs   *pb.HardState
	snap *pb.SnapshotMetadata
	// diverged: the log holds the snapshot's index with another term, so
	// the log after it belongs to a discarded history (a received snapshot
	// was committed but a crash came before its record reached the log).
	diverged bool
}

func (st *replayState) appendEntry(e *pb.Entry, path string, off int64) error {
	idx := e.GetIndex()
	if n := len(st.ents); n > 0 {
		first := st.ents[0].GetIndex()
		last := st.ents[n-1].GetIndex()
		switch {
		case idx <= first:
			st.ents = st.ents[:0]
		case idx <= last:
			st.ents = st.ents[:idx-first]
		case idx != last+1:
			return errs.CorruptionErrorf(path, off, "entry %d follows entry %d: the log has a gap", idx, last)
		}
	} else if st.snap != nil && (st.diverged || idx != st.snap.GetIndex()+1) {
		if idx == st.snap.GetIndex() && e.GetTerm() != st.snap.GetTerm() {
			st.diverged = true
		}
		if idx <= st.snap.GetIndex() || st.diverged {
			return nil // covered by the snapshot, or discarded by it
		}
		return errs.CorruptionErrorf(path, off, "entry %d follows snapshot %d: the log has a gap", idx, st.snap.GetIndex())
	} else if st.snap == nil && idx != 1 {
		return errs.CorruptionErrorf(path, off,
			"the log starts at entry %d but there is no snapshot: earlier entries (or raft-snapshot.bin) are missing", idx)
	}
	st.ents = append(st.ents, e)
	return nil
}

// replaySegment reads one segment into st. A torn tail is accepted (and cut
// off the file) only in the newest segment.
func (l *Log) replaySegment(s segment, last bool, st *replayState) (*record.TornTailError, error) {
	fs := l.opts.FS
	path := filepath.Join(l.opts.Dir, s.name)
	f, err := fs.Open(path)
	if err != nil {
		return nil, fmt.Errorf("raftlog: opening %s: %w", path, err)
	}
	defer f.Close()
	r := record.NewReader(f, s.seq, path)
	r.SetSealer(l.opts.Sealer)
	first := true
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return nil, nil
		}
		var torn *record.TornTailError
		if errors.As(err, &torn) {
			if !last {
				return nil, errs.CorruptionErrorf(path, torn.Offset,
					"segment is not the newest but ends in a torn record (%s); refusing to start", torn.Reason)
			}
			if err := l.truncate(path, s.seq, s.keys, torn.Offset); err != nil {
				return nil, err
			}
			return torn, nil
		}
		if ke := (*crypt.KeyError)(nil); errors.As(err, &ke) {
			return nil, fmt.Errorf("raftlog: the raft log does not open: %w (refusing to start: give the node the keyring that holds key id %d, with --encryption-keyring-file)", err, ke.ID)
		}
		if err != nil {
			return nil, fmt.Errorf("%w (the raft log is damaged before its end; refusing to start: restore this node from a snapshot or remove and re-add it)", err)
		}
		s.keys.add(r.LastKey())
		off := r.LastRecordOffset()
		if len(rec) == 0 {
			continue // seal marker
		}
		if first && rec[0] != recNode {
			return nil, errs.CorruptionErrorf(path, off, "segment does not start with a node record")
		}
		first = false
		if err := l.applyRecord(rec, path, off, st); err != nil {
			return nil, err
		}
	}
}

func (l *Log) applyRecord(rec []byte, path string, off int64, st *replayState) error {
	bad := func(format string, args ...any) error {
		return errs.CorruptionErrorf(path, off, format, args...)
	}
	p := rec[1:]
	switch rec[0] {
	case recNode:
		if len(p) < 8 {
			return bad("short node record")
		}
		if id := binary.LittleEndian.Uint64(p); l.opts.NodeID != 0 && id != l.opts.NodeID {
			return fmt.Errorf("raftlog: %s belongs to node %d, but this is node %d: check --node-id and --data", path, id, l.opts.NodeID)
		}
	case recBatch:
		n, w := binary.Uvarint(p)
		if w <= 0 || n > uint64(len(p)) {
			return bad("bad entry count")
		}
		p = p[w:]
		for i := uint64(0); i < n; i++ {
			b, rest, ok := lenPrefixed(p)
			if !ok {
				return bad("entry %d of %d is truncated", i, n)
			}
			p = rest
			e := &pb.Entry{}
			if err := proto.Unmarshal(b, e); err != nil {
				return bad("entry %d does not decode: %v", i, err)
			}
			if err := st.appendEntry(e, path, off); err != nil {
				return err
			}
		}
		if len(p) < 1 {
			return bad("batch record lacks its hard-state flag")
		}
		if p[0] == 1 {
			b, _, ok := lenPrefixed(p[1:])
			if !ok {
				return bad("hard state is truncated")
			}
			hs := &pb.HardState{}
			if err := proto.Unmarshal(b, hs); err != nil {
				return bad("hard state does not decode: %v", err)
			}
			st.hs = hs
		}
	case recSnapshot:
		if len(p) < 16 {
			return bad("short snapshot record")
		}
		meta := &pb.SnapshotMetadata{Index: new(binary.LittleEndian.Uint64(p)), Term: new(binary.LittleEndian.Uint64(p[8:]))}
		b, _, ok := lenPrefixed(p[16:])
		if !ok {
			return bad("snapshot conf state is truncated")
		}
		cs := &pb.ConfState{}
		if err := proto.Unmarshal(b, cs); err != nil {
			return bad("snapshot conf state does not decode: %v", err)
		}
		meta.ConfState = cs
		// A snapshot record is written when a snapshot from the leader is
		// installed, which discards the whole log before it: whatever
		// entries precede the record are gone, later ones start after it.
		st.ents = st.ents[:0]
		st.diverged = false
		if st.snap == nil || st.snap.GetIndex() < meta.GetIndex() {
			st.snap = meta
		}
	default:
		return bad("unknown record type %d", rec[0])
	}
	return nil
}

func lenPrefixed(p []byte) (b, rest []byte, ok bool) {
	n, w := binary.Uvarint(p)
	if w <= 0 || n > uint64(len(p)-w) {
		return nil, nil, false
	}
	return p[w : w+int(n)], p[w+int(n):], true
}

// truncate cuts a segment's torn tail at off and seals what remains (a
// marker record after a sync), so that on later opens the segment, no longer
// the newest, ends cleanly. If the marker cannot be written, it is cut off
// again and Open fails; the segment is still the newest, so the next Open
// does the same.
func (l *Log) truncate(path string, seq uint64, keys *keySet, off int64) error {
	f, err := l.opts.FS.OpenReadWrite(path)
	if err != nil {
		return fmt.Errorf("raftlog: opening %s to cut its torn tail: %w", path, err)
	}
	w := &segWriter{f: f, enc: record.NewEncoder(seq, off), written: off, sealedAt: -1, sealer: l.opts.Sealer, seg: segment{keys: keys}}
	w.enc.SetSealer(l.opts.Sealer)
	err = f.Truncate(off)
	if err == nil {
		_, err = f.Seek(off, io.SeekStart)
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		w.synced = off
		w.add(nil)
		if err, _ = w.write(); err == nil {
			err = f.Sync()
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("raftlog: cutting the torn tail of %s: %w", path, err)
	}
	return nil
}

// segWriter appends records to one segment.
//
// Between calls buf is empty, the file holds exactly the complete records
// [0, written), written == enc.Offset(), and the handle's offset is
// written: a write that fails is cut off before the call returns (see
// write), or else the log is broken and never writes to the file again.
type segWriter struct {
	seg     segment
	f       vfs.File
	enc     *record.Encoder
	buf     []byte
	written int64 // end of the last complete record in the file
	synced  int64 // the file is durable up to here (stamped in every chunk)
	// zeroedTo is the file's size when it holds durable zeros beyond
	// written, up to here (see the package doc); at most written otherwise.
	zeroedTo int64
	// sealedAt equals written when the segment ends in a durable seal
	// marker, so that sealing again writes nothing; -1 before any seal.
	sealedAt int64
	// sealer seals the records (nil: plain); lastKey is the key the
	// previous record was noted under in seg.keys.
	sealer  *crypt.Sealer
	lastKey crypt.KeyID
	noted   bool
}

// add encodes payload as the next record into buf, noting its key in the
// segment's key set. The key is noted before and after encoding: a
// rotation in between seals with one of the two.
func (w *segWriter) add(payload []byte) {
	w.note()
	w.buf = w.enc.Append(w.buf, payload, w.synced)
	w.note()
}

func (w *segWriter) note() {
	if w.sealer == nil {
		if !w.noted {
			w.seg.keys.add(0, false)
			w.noted = true
		}
		return
	}
	if id := w.sealer.ActiveKey(); !w.noted || id != w.lastKey {
		w.seg.keys.add(id, true)
		w.lastKey, w.noted = id, true
	}
}

// write writes buf to the file and empties it. If the write fails, it cuts
// the file back to the end of the last complete record (truncate, seek,
// rewind the encoder), so that no partial record is ever followed by a
// later one, and returns the write's error; cut reports whether cutting
// worked. If it did not, the file may end in a partial record and must
// never be written again.
func (w *segWriter) write() (err error, cut bool) {
	if len(w.buf) == 0 {
		return nil, true
	}
	_, err = w.f.Write(w.buf)
	w.buf = w.buf[:0]
	if err == nil {
		w.written = w.enc.Offset()
		return nil, true
	}
	w.enc.Rewind(w.written)
	if cerr := w.f.Truncate(w.written); cerr != nil {
		return fmt.Errorf("%w; cutting it off at offset %d failed too: %v", err, w.written, cerr), false
	}
	w.zeroedTo = w.written // the cut took the zeros beyond with it
	if _, cerr := w.f.Seek(w.written, io.SeekStart); cerr != nil {
		return fmt.Errorf("%w; seeking back to offset %d after cutting it off failed: %v", err, w.written, cerr), false
	}
	return err, true
}

// ErrBroken matches the errors of a Log that stopped writing after a
// failure it could not undo: a failed fsync (the kernel may have dropped
// the data it could not write, so an fsync is never retried), or a failed
// write that could not be cut off. Every later call returns such an error
// and Close writes nothing. It never matches vfs.IsNoSpace, since freeing
// space does not repair it: the owner must reopen the log (restart the
// node), and Open cuts the unfinished tail off.
var ErrBroken = errors.New("raftlog: the log stopped writing after a failure it could not undo")

// fail breaks the log with the cause and returns the error every later call
// returns.
func (l *Log) fail(format string, args ...any) error {
	err := fmt.Errorf("%w: %s; nothing more is written to it: restart the node (opening the log cuts the unfinished tail off)",
		ErrBroken, fmt.Sprintf(format, args...))
	l.mu.Lock()
	l.broken = err
	l.mu.Unlock()
	return err
}

// usable returns the error of a broken or closed log, or nil.
func (l *Log) usable() error {
	if l.broken != nil {
		return l.broken
	}
	if l.closed {
		return errs.ErrClosed
	}
	return nil
}

// writeCur writes the records buffered in the current segment and, if
// sync, fsyncs it. A failed write that was cut off is returned wrapped (it
// still matches vfs.IsNoSpace if it is one) and the caller may retry; any
// other failure breaks the log.
func (l *Log) writeCur(sync bool) error {
	w := l.cur
	at := w.written
	if err, cut := w.write(); err != nil {
		if !cut {
			return l.fail("writing %s at offset %d: %v", w.seg.name, at, err)
		}
		l.mu.Lock()
		l.writeFailures++
		l.mu.Unlock()
		return fmt.Errorf("raftlog: writing %s at offset %d: %w (the failed write was cut off; retry once space is free)",
			w.seg.name, at, err)
	}
	if sync {
		if err := w.f.Sync(); err != nil {
			return l.fail("syncing %s: %v", w.seg.name, err)
		}
		w.synced = w.written
	}
	return nil
}

// startSegment creates the next segment, whose first entry will be first,
// writes its first records, syncs it and its directory entry, and makes it
// the current segment. If a step fails, the new file is removed (and the
// removal made durable) and the error returned: the previous segment, if
// any, stays current and the log usable. If even the removal fails, the log
// is broken; the previous segment was sealed before, so it ends cleanly,
// and the new one, the newest, may only end in a torn record, which Open
// accepts.
func (l *Log) startSegment(first uint64) error {
	seg := segment{seq: l.nextSeq, first: first, name: segmentName(l.nextSeq, first), keys: newKeySet()}
	path := filepath.Join(l.opts.Dir, seg.name)
	f, err := l.opts.FS.Create(path)
	if err != nil {
		return l.abandonSegment(path, nil, fmt.Errorf("raftlog: creating %s: %w", path, err))
	}
	_ = f.Preallocate(0, l.opts.SegmentBytes+l.opts.SegmentBytes/8) // a hint; fails on a full disk
	w := &segWriter{seg: seg, f: f, enc: record.NewEncoder(seg.seq, 0), sealedAt: -1, sealer: l.opts.Sealer}
	w.enc.SetSealer(l.opts.Sealer)
	// The first zeros go in before the first records, so that the sync
	// below makes both durable. A failure leaves the segment without them.
	if err := w.writeZeros(min(zeroAheadMin, l.zeroCap())); err != nil {
		return l.abandonSegment(path, f, fmt.Errorf("raftlog: preparing %s: %w", path, err))
	}
	var node [9]byte
	node[0] = recNode
	binary.LittleEndian.PutUint64(node[1:], l.opts.NodeID)
	w.add(node[:])
	// Every segment repeats the current hard state, so that releasing older
	// segments never loses the latest one.
	if hs, _, err := l.MemoryStorage.InitialState(); err == nil && !raft.IsEmptyHardState(hs) {
		rec := []byte{recBatch, 0, 1}
		rec, err = appendProto(rec, hs)
		if err != nil {
			return l.abandonSegment(path, f, err)
		}
		w.add(rec)
	}
	if err, _ := w.write(); err != nil {
		return l.abandonSegment(path, f, fmt.Errorf("raftlog: writing %s: %w", path, err))
	}
	if err := f.Sync(); err != nil {
		return l.abandonSegment(path, f, fmt.Errorf("raftlog: syncing %s: %w", path, err))
	}
	w.synced = w.written
	if err := vfs.SyncDir(l.opts.FS, l.opts.Dir); err != nil {
		return l.abandonSegment(path, f, fmt.Errorf("raftlog: syncing %s: %w", l.opts.Dir, err))
	}
	l.nextSeq++
	l.cur = w
	return nil
}

// abandonSegment closes and removes a segment that startSegment could not
// finish, makes the removal durable, and returns err. If that fails, the
// log is broken.
func (l *Log) abandonSegment(path string, f vfs.File, err error) error {
	if f != nil {
		_ = f.Close()
	}
	rerr := l.opts.FS.Remove(path)
	if errors.Is(rerr, iofs.ErrNotExist) {
		rerr = nil
	}
	if rerr == nil {
		rerr = vfs.SyncDir(l.opts.FS, l.opts.Dir)
	}
	if rerr != nil {
		return l.fail("%v; removing the unfinished segment failed too: %v", err, rerr)
	}
	return err
}

// seal makes the current segment end in a durable seal marker: it syncs
// what is written, writes the empty marker record (whose sync offset
// declares everything before it durable) and syncs again. A marker that
// cannot be written is cut off and the error returned (the segment stays
// usable); a failed sync breaks the log.
func (l *Log) seal() error {
	w := l.cur
	if w.sealedAt == w.written && w.synced == w.written {
		return nil
	}
	if w.synced < w.written {
		if err := l.writeCur(true); err != nil {
			return err
		}
	}
	w.add(nil)
	if err := l.writeCur(true); err != nil {
		return err
	}
	if w.zeroedTo > w.written {
		// A sealed segment ends with its marker: the zeros beyond go.
		if err := w.f.Truncate(w.written); err != nil {
			return fmt.Errorf("raftlog: cutting the zeros off %s at offset %d: %w", w.seg.name, w.written, err)
		}
		if err := w.f.Sync(); err != nil {
			return l.fail("syncing %s after cutting its zeros off: %v", w.seg.name, err)
		}
		w.zeroedTo = w.written
	}
	w.sealedAt = w.written
	return nil
}

// zeroCap is how far a segment is zero-filled at most.
func (l *Log) zeroCap() int64 { return l.opts.SegmentBytes + l.opts.SegmentBytes/8 }

// PrepareAhead zero-fills the current segment further ahead of its records
// when less than half of the distance it keeps is left (see the package
// doc). The raft node calls it after a Save's results are handed on, so
// that no Save waits for the zeros. It is a hint: a failure to write them
// (a full disk) is cut off and ignored; only a failed fsync, which is never
// retried, breaks the log, as it would in Save.
func (l *Log) PrepareAhead() {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.usable() != nil || l.cur == nil {
		return
	}
	w := l.cur
	dist := min(max(w.written/2, zeroAheadMin), zeroAheadMax)
	if w.zeroedTo-w.written >= dist/2 {
		return
	}
	to := (w.written + dist + record.BlockSize - 1) / record.BlockSize * record.BlockSize
	to = min(to, l.zeroCap())
	if to <= max(w.zeroedTo, w.written) {
		return
	}
	if err := w.writeZeros(to); err != nil {
		_ = l.fail("%s: %v", w.seg.name, err)
		return
	}
	if err := w.f.Sync(); err != nil {
		_ = l.fail("syncing the zeros ahead of %s's records: %v", w.seg.name, err)
		return
	}
}

// zeroBuf is what writeZeros writes from.
var zeroBuf [64 << 10]byte

// writeZeros writes zeros from the end of the file (written or zeroedTo,
// whichever is further) up to to, and leaves the handle's offset at
// written. The caller syncs. A failed write is cut off (the file keeps the
// size it had) and returned; the segment goes on without the new zeros. An
// error is returned only when the handle cannot be put back at written:
// then the segment must not be used.
func (w *segWriter) writeZeros(to int64) error {
	from := max(w.zeroedTo, w.written)
	if to <= from {
		return nil
	}
	_, err := w.f.Seek(from, io.SeekStart)
	for off := from; err == nil && off < to; {
		var n int
		n, err = w.f.Write(zeroBuf[:min(int64(len(zeroBuf)), to-off)])
		off += int64(n)
	}
	if err == nil {
		w.zeroedTo = to
	} else if terr := w.f.Truncate(from); terr != nil {
		// Zeros of unknown length stay beyond from: harmless after the
		// records, but not counted on.
		w.zeroedTo = min(w.zeroedTo, from)
	}
	if _, serr := w.f.Seek(w.written, io.SeekStart); serr != nil {
		return fmt.Errorf("seeking back to offset %d after writing zeros: %w", w.written, serr)
	}
	return nil
}

// Save persists entries and the hard state (either may be empty) as one
// record, fsyncs when sync is set, and then makes them visible to raft
// through the MemoryStorage.
//
// If the record cannot be written (a full disk), the partial write is cut
// off, nothing changes (on disk or in memory), and the error, matching
// vfs.IsNoSpace if it is one, is returned: Save may be called again with
// the same arguments, and succeeds once there is space. A failed fsync, or
// a write that cannot be cut off, breaks the log (ErrBroken). Rotating to a
// new segment once the current one is full never fails a Save that wrote
// its record: if the new segment cannot be created, the current one stays
// in use and rotation is tried again later.
func (l *Log) Save(hs *pb.HardState, ents []*pb.Entry, sync bool) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	if len(ents) == 0 && (hs == nil || raft.IsEmptyHardState(hs)) {
		return nil
	}
	w := l.cur
	size := 64
	for _, e := range ents {
		size += len(e.GetData()) + 32
	}
	if cap(l.rec) < size {
		l.rec = make([]byte, 0, size)
	}
	rec := l.rec[:0]
	rec = append(rec, recBatch)
	rec = binary.AppendUvarint(rec, uint64(len(ents)))
	var err error
	for _, e := range ents {
		rec, err = appendProto(rec, e)
		if err != nil {
			return err
		}
	}
	if hs != nil && !raft.IsEmptyHardState(hs) {
		rec = append(rec, 1)
		if rec, err = appendProto(rec, hs); err != nil {
			return err
		}
	} else {
		rec = append(rec, 0)
	}
	w.add(rec)
	if cap(rec) <= 8<<20 {
		l.rec = rec[:0] // copied into w.buf: reuse it for the next Save
	}
	n := int64(len(w.buf))
	if err := l.writeCur(false); err != nil {
		return err
	}
	if sync {
		t0 := time.Now()
		err := l.writeCur(true) // the record is written: this is the fsync alone
		l.syncLatency.record(time.Since(t0))
		if err != nil {
			return err
		}
	}
	l.mu.Lock()
	l.bytes += n
	if sync {
		l.syncs++
	}
	l.mu.Unlock()
	if len(ents) > 0 {
		if err := l.MemoryStorage.Append(ents); err != nil {
			return err
		}
	}
	if hs != nil && !raft.IsEmptyHardState(hs) {
		if err := l.MemoryStorage.SetHardState(hs); err != nil {
			return err
		}
	}
	l.maybeRotate()
	return nil
}

// appendProto appends m's encoding, prefixed by its length, to dst.
func appendProto(dst []byte, m proto.Message) ([]byte, error) {
	dst = binary.AppendUvarint(dst, uint64(proto.Size(m)))
	out, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(dst, m)
	if err != nil {
		return dst, fmt.Errorf("raftlog: encoding %T: %w", m, err)
	}
	return out, nil
}

// maybeRotate starts a new segment once the current one has reached
// SegmentBytes. A rotation that fails (on a full disk) leaves the current
// segment in use and is counted; it is tried again after another
// 1/rotateRetryFraction of SegmentBytes was written, so that a disk that
// stays short of space does not cost a seal and a failed create on every
// Save. If the rotation broke the log (a failed fsync), the next call
// returns that.
func (l *Log) maybeRotate() {
	off := l.cur.written
	if off < l.opts.SegmentBytes || off < l.rotateRetryAt {
		return
	}
	last, _ := l.MemoryStorage.LastIndex()
	if err := l.rotate(last + 1); err != nil {
		l.rotateRetryAt = off + max(l.opts.SegmentBytes/rotateRetryFraction, 1)
		l.mu.Lock()
		l.rotateFailures++
		l.mu.Unlock()
	}
}

// rotateRetryFraction: a failed rotation is retried after SegmentBytes/16
// more bytes (4 MiB by default), bounding both the retries and how far a
// segment outgrows SegmentBytes while the disk is full.
const rotateRetryFraction = 16

// rotate seals the current segment and starts the next. The order matters:
// the current segment is sealed (and durable) before the next exists, so
// every segment but the newest ends cleanly at every instant. If the next
// segment cannot be started, it is removed and the sealed segment stays
// current: appending after a seal marker is allowed.
func (l *Log) rotate(first uint64) error {
	old := l.cur
	if err := l.seal(); err != nil {
		return fmt.Errorf("raftlog: sealing %s: %w", old.seg.name, err)
	}
	if err := l.startSegment(first); err != nil {
		return err
	}
	l.mu.Lock()
	l.segs = append(l.segs, old.seg)
	l.mu.Unlock()
	if err := old.f.Close(); err != nil {
		return fmt.Errorf("raftlog: closing %s: %w", old.seg.name, err)
	}
	l.rotateRetryAt = 0
	return nil
}

// SaveSnapshot records an installed snapshot: a durable snapshot record,
// then the in-memory log is replaced by it. Entries it covers are gone. A
// failed write is handled as in Save: cut off, nothing changed, retry.
func (l *Log) SaveSnapshot(snap *pb.Snapshot) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	meta := snap.GetMetadata()
	rec := []byte{recSnapshot}
	rec = binary.LittleEndian.AppendUint64(rec, meta.GetIndex())
	rec = binary.LittleEndian.AppendUint64(rec, meta.GetTerm())
	var err error
	if rec, err = appendProto(rec, meta.GetConfState()); err != nil {
		return err
	}
	l.cur.add(rec)
	if err := l.writeCur(true); err != nil {
		return err
	}
	if err := l.MemoryStorage.ApplySnapshot(snap); err != nil && !errors.Is(err, raft.ErrSnapOutOfDate) {
		return err
	}
	l.mu.Lock()
	l.lastSnap = meta
	l.mu.Unlock()
	return nil
}

// Compact drops the entries up to and including index from memory and
// deletes the sealed segments that hold only such entries. The caller
// guarantees that a snapshot at or above index is durable.
func (l *Log) Compact(index uint64) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	if err := l.MemoryStorage.Compact(index); err != nil && !errors.Is(err, raft.ErrCompacted) {
		return err
	}
	l.mu.Lock()
	var release []segment
	keep := l.segs[:0:0]
	for i, s := range l.segs {
		next := l.cur.seg.first
		if i+1 < len(l.segs) {
			next = l.segs[i+1].first
		}
		if next <= index+1 {
			release = append(release, s)
			continue
		}
		keep = append(keep, s)
	}
	l.segs = keep
	l.mu.Unlock()
	for _, s := range release {
		if err := l.opts.FS.Remove(filepath.Join(l.opts.Dir, s.name)); err != nil {
			return fmt.Errorf("raftlog: releasing %s: %w", s.name, err)
		}
	}
	if len(release) > 0 {
		return vfs.SyncDir(l.opts.FS, l.opts.Dir)
	}
	return nil
}

// Close seals the current segment and closes it. If the seal marker cannot
// be written (a full disk), it is cut off, the segment ends with its last
// complete record, and the error is returned; a broken log writes nothing
// and returns its error. Either way the log is closed and Open recovers
// everything that was saved.
func (l *Log) Close() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.cur == nil {
		return nil
	}
	w := l.cur
	err := l.broken
	if err == nil {
		err = l.seal()
	}
	if cerr := w.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("raftlog: closing %s: %w", w.seg.name, cerr)
	}
	l.cur = nil
	return err
}

// SegmentKeys says which keys one segment's records are sealed with.
type SegmentKeys struct {
	// File is the segment's path.
	File string
	// Keys are the key ids of its sealed records, ascending.
	Keys []crypt.KeyID
	// Plain reports records written without encryption.
	Plain bool
	// Err, from ScanKeys only, is why the segment could not be read to
	// its end (a key the keyring lacks, a wrong key, damage); Keys and
	// Plain cover the records before it.
	Err error
}

// KeyUsage returns the keys each live segment uses, oldest segment first:
// what replay found in the segments that were there at Open, and the keys
// the log sealed with since (the active key noted as each record is
// written). A rotated keyring must keep every key listed here. Safe to
// call from any goroutine.
func (l *Log) KeyUsage() []SegmentKeys {
	l.mu.Lock()
	segs := append([]segment(nil), l.segs...)
	if l.cur != nil {
		segs = append(segs, l.cur.seg)
	}
	l.mu.Unlock()
	out := make([]SegmentKeys, 0, len(segs))
	for _, s := range segs {
		ids, plain := s.keys.snapshot()
		out = append(out, SegmentKeys{File: filepath.Join(l.opts.Dir, s.name), Keys: ids, Plain: plain})
	}
	return out
}

// ScanKeys reads every segment in dir, offline (the node stopped), and
// reports the keys each one's records are sealed with; sealer (nil: no
// keys) opens them, so a segment that uses a key it lacks, or that does
// not decrypt, is reported with Err naming the offset and the key id. A
// torn tail of the newest segment is not an error. It writes nothing. The
// error is for the directory itself (it cannot be listed).
func ScanKeys(fs vfs.FS, dir string, sealer *crypt.Sealer) ([]SegmentKeys, error) {
	names, err := fs.List(dir)
	if err != nil {
		return nil, fmt.Errorf("raftlog: listing %s: %w", dir, err)
	}
	var segs []segment
	for _, n := range names {
		if seq, first, ok := parseSegmentName(n); ok {
			segs = append(segs, segment{seq: seq, first: first, name: n})
		}
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].seq < segs[j].seq })
	out := make([]SegmentKeys, 0, len(segs))
	for i, s := range segs {
		ks := newKeySet()
		path := filepath.Join(dir, s.name)
		err := scanSegment(fs, path, s.seq, sealer, ks, i == len(segs)-1)
		ids, plain := ks.snapshot()
		out = append(out, SegmentKeys{File: path, Keys: ids, Plain: plain, Err: err})
	}
	return out, nil
}

func scanSegment(fs vfs.FS, path string, seq uint64, sealer *crypt.Sealer, ks *keySet, newest bool) error {
	f, err := fs.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := record.NewReader(f, seq, path)
	r.SetSealer(sealer)
	for {
		_, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if errors.Is(err, record.ErrTornTail) {
			if newest {
				return nil
			}
			return fmt.Errorf("%w (a segment that is not the newest)", err)
		}
		if err != nil {
			return err
		}
		ks.add(r.LastKey())
	}
}

// Stats are counters for metrics.
type Stats struct {
	Segments     int
	BytesWritten int64
	Syncs        int64
	// WriteFailures counts writes that failed (a full disk) and were cut
	// off; RotationFailures counts segment rotations that failed, leaving
	// the current segment in use.
	WriteFailures    int64
	RotationFailures int64
	// Broken reports that the log stopped writing (see ErrBroken).
	Broken bool
}

// Stats returns the log's counters.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{
		Segments:         len(l.segs) + 1,
		BytesWritten:     l.bytes,
		Syncs:            l.syncs,
		WriteFailures:    l.writeFailures,
		RotationFailures: l.rotateFailures,
		Broken:           l.broken != nil,
	}
}
