package engine

import (
	"fmt"
	"sync"
	"time"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/record"
	"github.com/kayadb/kayadb/internal/vfs"
)

// walWriter appends batches to one WAL file and implements group commit.
//
// Committers encode their batch into pending (under mu, in commit order).
// Bytes reach the file in "flushes": whoever holds the flushing token takes
// everything pending, writes it with one write call and, when needed, issues
// one fdatasync. A committer that wants durability and finds no flush in
// progress performs the flush itself (no goroutine hand-off, which matters
// for a lone sync writer); otherwise it waits, and the data that arrived
// during the flush in progress goes out in the next one, so N concurrent sync
// writers cost about one fdatasync per group. A background flusher writes
// what NoSync committers leave behind.
//
// Every chunk carries the synced offset known when it was encoded; see
// package record for how recovery uses it to tell torn tails from
// corruption.
//
// With encryption, committers do not encode: they frame their batch into
// pending (a copy), and the flush seals everything it takes as one group
// record (record.Encoder.AppendGroup). One AES-GCM seal per write instead of
// one per batch keeps encryption off the committer's path; the records of a
// group were all unsynced when it was written, so losing a torn group loses
// nothing that was reported durable. Offsets handed to committers (append,
// offset, waitSynced) then count framed bytes, not file bytes.
//
// A failed write or sync is sticky: the writer never touches the file
// again, not even for the sync marker at close, so a partial record can
// only ever be the WAL's last bytes, and no chunk after it claims it was
// durable. The failure is reported to onErr once (with no lock held), and
// returned to every waiter and later append.
type walWriter struct {
	f      vfs.File
	name   string
	logNum base.FileNum
	m      *metrics
	onErr  func(error)
	sealer *crypt.Sealer
	keys   *keyTracker // the keys of the records appended

	// out holds the encoded group of a sealed flush; only the flush owner
	// touches it.
	out []byte

	mu struct {
		sync.Mutex
		// enc lays out records: under mu at append for a plain log; for a
		// sealed log only the flush owner (and close, after the flusher
		// stopped) uses it.
		enc        *record.Encoder
		pending    []byte // encoded chunks (plain) or framed batches (sealed)
		spare      []byte
		end        int64 // offset just past the last appended batch
		written    int64 // offset handed to the file
		synced     int64 // offset known durable
		physSynced int64 // file offset known durable (stamped in chunks)
		syncReq    int64 // largest offset a waiter wants durable
		err        error // sticky write/sync error
		flushing   bool  // a flush is in progress (its owner writes the file)
		closing    bool
		idle       bool // the background flusher waits for work
		work       *sync.Cond
		progress   *sync.Cond
	}
	done chan struct{}
}

// walBytesPerSync: once this many written bytes are not yet synced, a flush
// syncs them even if no writer asked. It bounds the work (and so the write
// stall) of the final sync when the WAL is closed at memtable rotation, and
// the data lost from NoSync writes in a power failure.
const walBytesPerSync = 1 << 20

// maxPendingBytes bounds the WAL bytes buffered ahead of the flusher. A
// committer that finds more waits, which keeps memory bounded when writers
// outpace the disk.
const maxPendingBytes = 4 << 20

// newWALWriter returns a writer for WAL file f; sealer, when not nil, seals
// every record (under its active key at the time of the append, so a
// rotation applies to the next batch).
func newWALWriter(f vfs.File, name string, logNum base.FileNum, m *metrics, onErr func(error), sealer *crypt.Sealer, keys *keyTracker) *walWriter {
	if keys == nil {
		keys = &keyTracker{}
	}
	w := &walWriter{f: f, name: name, logNum: logNum, m: m, onErr: onErr, sealer: sealer, keys: keys, done: make(chan struct{})}
	w.mu.enc = record.NewEncoder(uint64(logNum), 0)
	if sealer != nil {
		w.mu.enc.SetSealer(sealer)
	}
	w.mu.work = sync.NewCond(&w.mu.Mutex)
	w.mu.progress = sync.NewCond(&w.mu.Mutex)
	go w.flushLoop()
	return w
}

// append encodes one batch and returns the log offset just past it. The
// caller serializes appends (commit order equals log order). A caller that
// will wait for durability passes willSync, and then flushes itself in
// waitSynced; otherwise the background flusher is woken.
func (w *walWriter) append(repr []byte, willSync bool) (int64, error) {
	w.mu.Lock()
	for len(w.mu.pending) >= maxPendingBytes && w.mu.err == nil {
		w.m.walBackpressure.Add(1)
		if w.mu.idle {
			w.mu.work.Signal()
		}
		w.mu.progress.Wait()
	}
	if err := w.mu.err; err != nil {
		w.mu.Unlock()
		return 0, err
	}
	if w.sealer != nil {
		n := len(w.mu.pending)
		w.mu.pending = record.AppendGroupItem(w.mu.pending, repr)
		w.mu.end += int64(len(w.mu.pending) - n)
	} else {
		w.mu.pending = w.mu.enc.Append(w.mu.pending, repr, w.mu.physSynced)
		w.keys.note(nil, 0)
		w.mu.end = w.mu.enc.Offset()
	}
	end := w.mu.end
	if !willSync && w.mu.idle {
		w.mu.work.Signal()
	}
	w.mu.Unlock()
	return end, nil
}

// offset returns the log offset just past the last appended record.
func (w *walWriter) offset() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mu.end
}

// waitSynced blocks until the log is durable up to offset end, flushing
// itself when no flush is in progress.
func (w *walWriter) waitSynced(end int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if end > w.mu.syncReq {
		w.mu.syncReq = end
	}
	for w.mu.synced < end && w.mu.err == nil {
		if !w.mu.flushing {
			w.flushLocked()
			continue
		}
		w.mu.progress.Wait()
	}
	if w.mu.synced >= end {
		return nil
	}
	return w.mu.err
}

// flushLocked writes everything pending and syncs when a waiter needs it or
// too much is unsynced. Called with mu held and no flush in progress; it
// releases mu during the I/O.
func (w *walWriter) flushLocked() {
	w.mu.flushing = true
	buf := w.mu.pending
	w.mu.pending = w.mu.spare[:0]
	target := w.mu.written + int64(len(buf))
	needSync := target > w.mu.synced && (w.mu.syncReq > w.mu.synced || target-w.mu.synced >= walBytesPerSync)
	physSynced := w.mu.physSynced
	w.mu.Unlock()

	var err error
	out, physEnd := buf, target
	if w.sealer != nil {
		if len(buf) > 0 {
			key := w.sealer.ActiveKey()
			w.out = w.mu.enc.AppendGroup(w.out[:0], buf, physSynced)
			w.keys.note(w.sealer, key)
			if k := w.sealer.ActiveKey(); k != key {
				// A rotation raced with the seal: the group used one of
				// the two keys.
				w.keys.note(w.sealer, k)
			}
			out = w.out
			if cap(w.out) > 2*maxPendingBytes {
				w.out = nil
			}
		}
		physEnd = w.mu.enc.Offset() // only the flush owner moves it
	}
	if len(out) > 0 {
		if _, err = w.f.Write(out); err != nil {
			err = fmt.Errorf("engine: writing WAL %s: %w", w.name, err)
		}
		w.m.walBytes.Add(uint64(len(out)))
		w.m.walWrites.Add(1)
	}
	if err == nil && needSync {
		start := time.Now()
		if err = w.f.Sync(); err != nil {
			// After a failed fdatasync the kernel may have dropped the
			// dirty pages; retrying could report success for lost data.
			err = fmt.Errorf("engine: syncing WAL %s: %w", w.name, err)
		}
		w.m.walSyncs.Add(1)
		w.m.walSyncLatency.record(time.Since(start))
	}
	if err != nil && w.onErr != nil {
		// Before err is published: a committer that sees it finds the DB
		// already in the state it implies.
		w.onErr(err)
	}

	w.mu.Lock()
	w.mu.flushing = false
	if cap(buf) <= 2*maxPendingBytes {
		w.mu.spare = buf[:0]
	}
	if err != nil {
		w.mu.err = err
	} else {
		w.mu.written = target
		if needSync {
			w.mu.synced = target
			w.mu.physSynced = physEnd
		}
	}
	w.mu.progress.Broadcast()
	if w.mu.idle && (len(w.mu.pending) > 0 || w.mu.closing) {
		w.mu.work.Signal()
	}
}

// flushLoop writes what NoSync committers leave pending, and everything at
// close.
func (w *walWriter) flushLoop() {
	defer close(w.done)
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		for (len(w.mu.pending) == 0 && !w.mu.closing || w.mu.flushing) && w.mu.err == nil {
			w.mu.idle = true
			w.mu.work.Wait()
			w.mu.idle = false
		}
		if w.mu.err != nil {
			return
		}
		if w.mu.closing && len(w.mu.pending) == 0 && w.mu.synced >= w.mu.written {
			return
		}
		if w.mu.closing {
			w.mu.syncReq = w.mu.end
		}
		w.flushLocked()
	}
}

// close flushes and syncs everything appended, stops the flusher, writes a
// sync marker and closes the file. The marker is an empty record stamped
// with the synced offset: it proves that everything before it was durable,
// so that damage there is reported as corruption rather than mistaken for a
// torn tail. The returned error is the first write, sync or close failure.
func (w *walWriter) close() error {
	w.mu.Lock()
	if w.mu.closing {
		w.mu.Unlock()
		return nil
	}
	w.mu.closing = true
	w.mu.work.Signal()
	w.mu.Unlock()
	<-w.done
	w.mu.Lock()
	err := w.mu.err
	if err == nil && w.mu.physSynced > 0 {
		marker := w.mu.enc.Append(nil, nil, w.mu.physSynced)
		if _, err = w.f.Write(marker); err == nil {
			err = w.f.Sync()
		}
		if err != nil {
			err = fmt.Errorf("engine: writing sync marker to WAL %s: %w", w.name, err)
			w.mu.err = err
		}
	}
	w.mu.Unlock()
	if cerr := w.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("engine: closing WAL %s: %w", w.name, cerr)
	}
	return err
}
