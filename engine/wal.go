package engine

import (
	"fmt"
	"sync"
	"time"

	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/record"
	"github.com/kayadb/kayadb/internal/vfs"
)

// walWriter appends batches to one WAL file and implements group commit.
//
// Committers encode their batch into pending (under mu, in commit order) and,
// if they asked for durability, wait until synced covers their record. One
// flusher goroutine repeatedly takes everything pending, writes it with one
// write call and, when any waiter needs it, one fdatasync. While that sync is
// in flight the next group accumulates, so N concurrent sync writers cost
// about one fdatasync per group rather than one each.
//
// Every chunk carries the synced offset known when it was encoded; see
// package record for how recovery uses it to tell torn tails from
// corruption.
type walWriter struct {
	f      vfs.File
	name   string
	logNum base.FileNum
	m      *metrics

	mu struct {
		sync.Mutex
		enc      *record.Encoder
		pending  []byte
		spare    []byte
		written  int64 // bytes handed to the file
		synced   int64 // bytes known durable
		syncReq  int64 // largest offset a waiter wants durable
		err      error // sticky write/sync error
		closing  bool
		idle     bool // flusher is waiting for work
		work     *sync.Cond
		progress *sync.Cond
	}
	done chan struct{}
}

// maxPendingBytes bounds the WAL bytes buffered ahead of the flusher. A
// committer that finds more waits for the flusher, which keeps memory bounded
// when writers outpace the disk.
const maxPendingBytes = 4 << 20

func newWALWriter(f vfs.File, name string, logNum base.FileNum, m *metrics) *walWriter {
	w := &walWriter{f: f, name: name, logNum: logNum, m: m, done: make(chan struct{})}
	w.mu.enc = record.NewEncoder(logNum, 0)
	w.mu.work = sync.NewCond(&w.mu.Mutex)
	w.mu.progress = sync.NewCond(&w.mu.Mutex)
	go w.flushLoop()
	return w
}

// append encodes one batch and returns the log offset just past it. The
// caller serializes appends (commit order equals log order).
func (w *walWriter) append(repr []byte) (int64, error) {
	w.mu.Lock()
	for len(w.mu.pending) >= maxPendingBytes && w.mu.err == nil {
		w.m.walBackpressure.Add(1)
		w.mu.progress.Wait()
	}
	if err := w.mu.err; err != nil {
		w.mu.Unlock()
		return 0, err
	}
	w.mu.pending = w.mu.enc.Append(w.mu.pending, repr, w.mu.synced)
	end := w.mu.enc.Offset()
	if w.mu.idle {
		w.mu.work.Signal()
	}
	w.mu.Unlock()
	return end, nil
}

// waitSynced blocks until the log is durable up to offset end.
func (w *walWriter) waitSynced(end int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if end > w.mu.syncReq {
		w.mu.syncReq = end
		if w.mu.idle {
			w.mu.work.Signal()
		}
	}
	for w.mu.synced < end && w.mu.err == nil {
		w.mu.progress.Wait()
	}
	if w.mu.synced >= end {
		return nil
	}
	return w.mu.err
}

func (w *walWriter) flushLoop() {
	defer close(w.done)
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		for len(w.mu.pending) == 0 && w.mu.syncReq <= w.mu.synced && !w.mu.closing && w.mu.err == nil {
			w.mu.idle = true
			w.mu.work.Wait()
			w.mu.idle = false
		}
		if w.mu.err != nil {
			return
		}
		if len(w.mu.pending) == 0 && w.mu.syncReq <= w.mu.synced {
			// Closing with nothing left to do.
			return
		}
		buf := w.mu.pending
		w.mu.pending = w.mu.spare[:0]
		target := w.mu.written + int64(len(buf))
		needSync := w.mu.syncReq > w.mu.synced
		w.mu.Unlock()

		var err error
		if len(buf) > 0 {
			if _, err = w.f.Write(buf); err != nil {
				err = fmt.Errorf("engine: writing WAL %s: %w", w.name, err)
			}
			w.m.walBytes.Add(uint64(len(buf)))
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

		w.mu.Lock()
		if cap(buf) <= 2*maxPendingBytes {
			w.mu.spare = buf[:0]
		}
		if err != nil {
			w.mu.err = err
			w.mu.progress.Broadcast()
			return
		}
		w.mu.written = target
		if needSync {
			w.mu.synced = target
		}
		w.mu.progress.Broadcast()
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
	w.mu.syncReq = w.mu.enc.Offset()
	w.mu.work.Signal()
	w.mu.Unlock()
	<-w.done
	w.mu.Lock()
	err := w.mu.err
	if err == nil && w.mu.synced > 0 {
		marker := w.mu.enc.Append(nil, nil, w.mu.synced)
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

// size returns the log size including bytes not yet written.
func (w *walWriter) size() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mu.enc.Offset()
}

// syncedOffset returns how much of the log is durable.
func (w *walWriter) syncedOffset() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mu.synced
}
