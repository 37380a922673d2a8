package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/vfs"
	"github.com/kayadb/kayadb/internal/wire"
)

// Online backups (opcodes 64–67, admin)
//
// BACKUP_BEGIN, on the leader: a read barrier (ReadIndex: every write
// acknowledged before the request arrived is applied here), then an engine
// checkpoint into DIR/backups/<id>.tmp (hard links to the tables plus a
// fresh MANIFEST; the engine's system keys record the raft index and term
// it holds), then a SHA-256 of every file, computed in the background. The
// reply lists the files once the checksums are known (BACKUP_STATUS asks
// again while they are not). BACKUP_READ serves chunks of the files and
// BACKUP_END removes the backup. Any node serves READ, STATUS and END for
// the backups it holds, leader or not.
//
// A backup left alone for backupIdleTimeout is removed; at most maxBackups
// exist at once; all of them are removed when the server stops, and
// DIR/backups is emptied when it starts (a crash leaves them behind).

const (
	// backupsDir is the directory, under the data directory, that holds the
	// backups in progress.
	backupsDir = "backups"
	// maxBackups bounds the backups a node holds at once.
	maxBackups = 4
	// backupStatusWait is how long BEGIN and STATUS wait for the checksums
	// before they answer "not ready" (well below every client timeout).
	backupStatusWait = time.Second
)

// Variables so that tests can shorten them.
var (
	// backupIdleTimeout: a backup without a request for this long is
	// removed.
	backupIdleTimeout = 5 * time.Minute
	// backupReapInterval is how often idle backups are looked for.
	backupReapInterval = 30 * time.Second
)

type backupSet struct {
	s   *Server
	dir string

	mu     sync.Mutex
	closed bool
	m      map[string]*backup

	stop chan struct{}
	wg   sync.WaitGroup // the reaper and the checksum goroutines
}

type backup struct {
	id  string
	dir string

	cancel context.CancelFunc // stops the checksum goroutine
	ready  chan struct{}      // closed when the checksums are known (or failed)

	// Set before the checksum goroutine starts, read-only after.
	head  wire.BackupInfo   // without the files
	sizes map[string]uint64 // file name → size
	// Set before ready is closed, read-only after.
	files []wire.BackupFile
	err   error

	// Guarded by backupSet.mu.
	lastUsed time.Time
	active   int // requests in progress: never idle meanwhile
}

// startBackups empties DIR/backups and starts the reaper. It runs when the
// server starts accepting clients.
func (s *Server) startBackups() {
	set := &backupSet{s: s, dir: filepath.Join(s.cfg.DataDir, backupsDir), m: map[string]*backup{}, stop: make(chan struct{})}
	if _, err := s.fs.Stat(set.dir); err == nil {
		if err := s.fs.RemoveAll(set.dir); err != nil {
			s.log.Warn("could not remove the backups left over from an earlier run", "dir", set.dir, "err", err)
		} else {
			s.log.Info("removed the backups left over from an earlier run", "dir", set.dir)
		}
	}
	s.bset.Store(set)
	set.wg.Add(1)
	go set.reapLoop()
}

// stopBackups removes every backup and waits for the background work.
func (s *Server) stopBackups() {
	set := s.bset.Swap(nil)
	if set == nil {
		return
	}
	set.mu.Lock()
	set.closed = true
	for id, b := range set.m {
		b.cancel()
		delete(set.m, id)
	}
	set.mu.Unlock()
	close(set.stop)
	set.wg.Wait()
	if err := s.fs.RemoveAll(set.dir); err != nil {
		s.log.Warn("could not remove the backups directory", "dir", set.dir, "err", err)
	}
}

func (s *Server) backups() *backupSet { return s.bset.Load() }

// backupRequest handles the backup opcodes.
func (s *Server) backupRequest(ctx context.Context, op wire.Opcode, p []byte) (wire.Status, []byte) {
	set := s.backups()
	if set == nil {
		return wire.StatusError, wire.AppendError(nil, "the server is shutting down")
	}
	switch op {
	case wire.OpBackupBegin:
		return set.begin(ctx)
	case wire.OpBackupStatus:
		id, err := wire.DecodeBackupID(p)
		if err != nil {
			return invalid(err)
		}
		b, st, reply := set.acquire(id)
		if b == nil {
			return st, reply
		}
		defer set.release(b)
		return set.answer(ctx, b)
	case wire.OpBackupRead:
		r, err := wire.DecodeBackupRead(p)
		if err != nil {
			return invalid(err)
		}
		b, st, reply := set.acquire(r.ID)
		if b == nil {
			return st, reply
		}
		defer set.release(b)
		return set.read(b, r)
	case wire.OpBackupEnd:
		id, err := wire.DecodeBackupID(p)
		if err != nil {
			return invalid(err)
		}
		if !wire.ValidBackupID(id) {
			return wire.StatusInvalidArgument, wire.AppendError(nil, fmt.Sprintf("bad backup id %q: want %d hex digits", id, wire.BackupIDLen))
		}
		set.mu.Lock()
		b := set.m[id]
		delete(set.m, id)
		set.mu.Unlock()
		if b == nil {
			return wire.StatusInvalidArgument, wire.AppendError(nil, unknownBackup(id))
		}
		set.remove(b)
		s.log.Info("backup ended", "backup", id)
		return wire.StatusOK, nil
	}
	return wire.StatusError, wire.AppendError(nil, fmt.Sprintf(wire.MsgUnknownOpcode, uint8(op)))
}

func unknownBackup(id string) string {
	return fmt.Sprintf("unknown backup id %q: it was ended, it expired after %v without a request, or the server restarted", id, backupIdleTimeout)
}

// acquire finds a backup and marks it in use.
func (set *backupSet) acquire(id string) (*backup, wire.Status, []byte) {
	if !wire.ValidBackupID(id) {
		return nil, wire.StatusInvalidArgument, wire.AppendError(nil, fmt.Sprintf("bad backup id %q: want %d hex digits", id, wire.BackupIDLen))
	}
	set.mu.Lock()
	defer set.mu.Unlock()
	b := set.m[id]
	if b == nil {
		return nil, wire.StatusInvalidArgument, wire.AppendError(nil, unknownBackup(id))
	}
	b.active++
	b.lastUsed = time.Now()
	return b, 0, nil
}

func (set *backupSet) release(b *backup) {
	set.mu.Lock()
	b.active--
	b.lastUsed = time.Now()
	set.mu.Unlock()
}

// remove stops a backup's background work and deletes its files. b must
// already be out of set.m.
func (set *backupSet) remove(b *backup) {
	b.cancel()
	if err := set.s.fs.RemoveAll(b.dir); err != nil {
		set.s.log.Warn("could not remove a backup", "dir", b.dir, "err", err)
	}
}

// drop removes a backup that failed.
func (set *backupSet) drop(b *backup) {
	set.mu.Lock()
	if set.m[b.id] == b {
		delete(set.m, b.id)
	}
	set.mu.Unlock()
	set.remove(b)
}

func (set *backupSet) begin(ctx context.Context) (wire.Status, []byte) {
	s := set.s
	if !s.node.IsLeader() {
		return s.reply(kv.ErrNotLeader, nil)
	}
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return wire.StatusError, wire.AppendError(nil, err.Error())
	}
	id := hex.EncodeToString(raw[:])
	bctx, cancel := context.WithCancel(context.Background())
	b := &backup{id: id, dir: filepath.Join(set.dir, id+".tmp"), cancel: cancel, ready: make(chan struct{}),
		lastUsed: time.Now(), active: 1}
	set.mu.Lock()
	switch {
	case set.closed:
		set.mu.Unlock()
		cancel()
		return wire.StatusError, wire.AppendError(nil, "the server is shutting down")
	case len(set.m) >= maxBackups:
		set.mu.Unlock()
		cancel()
		return wire.StatusError, wire.AppendError(nil, fmt.Sprintf(
			"too many backups in progress on this node (%d): end one (BACKUP_END) or wait until an abandoned one expires (%v without a request)",
			maxBackups, backupIdleTimeout))
	}
	set.m[id] = b
	set.mu.Unlock()
	defer set.release(b)

	// Everything acknowledged before this request is applied here once the
	// barrier returns; the checkpoint holds at least that.
	if err := s.store.Barrier(ctx); err != nil {
		set.drop(b)
		return s.reply(err, nil)
	}
	if err := vfs.MkdirAllSync(s.fs, set.dir, 0o700); err != nil {
		set.drop(b)
		return wire.StatusError, wire.AppendError(nil, fmt.Sprintf("creating %s: %v", set.dir, err))
	}
	s.takeMu.Lock() // one checkpoint at a time (raft snapshots take one too)
	st, err := s.store.Checkpoint(b.dir)
	s.takeMu.Unlock()
	if err != nil {
		set.drop(b)
		return wire.StatusError, wire.AppendError(nil, fmt.Sprintf("checkpointing the engine: %v", err))
	}
	names, err := s.fs.List(b.dir)
	if err != nil {
		set.drop(b)
		return wire.StatusError, wire.AppendError(nil, fmt.Sprintf("listing the checkpoint: %v", err))
	}
	sort.Strings(names)
	b.head = wire.BackupInfo{ID: id, NodeID: s.cfg.NodeID, AppliedIndex: st.Index, AppliedTerm: st.Term,
		CreatedUnixMs: uint64(time.Now().UnixMilli())}
	b.sizes = map[string]uint64{}
	var files []wire.BackupFile
	for _, n := range names {
		if n == "LOCK" { // created by opening the checkpoint; not data
			continue
		}
		fi, err := s.fs.Stat(filepath.Join(b.dir, n))
		if err != nil {
			set.drop(b)
			return wire.StatusError, wire.AppendError(nil, fmt.Sprintf("checkpoint file %s: %v", n, err))
		}
		if fi.IsDir() {
			continue
		}
		b.sizes[n] = uint64(fi.Size())
		files = append(files, wire.BackupFile{Name: n, Size: uint64(fi.Size())})
	}
	set.mu.Lock()
	if set.closed || set.m[id] != b {
		set.mu.Unlock()
		set.remove(b)
		return wire.StatusError, wire.AppendError(nil, fmt.Sprintf("backup %s was ended while it started (or the server is shutting down)", id))
	}
	set.wg.Add(1) // under mu: stopBackups waits only after closing the set
	set.mu.Unlock()
	s.log.Info("backup started", "backup", id, "applied_index", st.Index, "applied_term", st.Term, "files", len(files))
	go func() {
		defer set.wg.Done()
		defer close(b.ready)
		for i := range files {
			sum, err := hashFile(bctx, s.fs, filepath.Join(b.dir, files[i].Name))
			if err != nil {
				b.err = fmt.Errorf("computing the checksum of %s: %w", files[i].Name, err)
				return
			}
			files[i].SHA256 = sum
		}
		b.files = files
	}()
	return set.answer(ctx, b)
}

// answer replies with the backup's description, waiting a little for the
// checksums.
func (set *backupSet) answer(ctx context.Context, b *backup) (wire.Status, []byte) {
	t := time.NewTimer(backupStatusWait)
	defer t.Stop()
	select {
	case <-b.ready:
	case <-t.C:
	case <-ctx.Done():
	}
	select {
	case <-b.ready:
		if b.err != nil {
			set.drop(b)
			return wire.StatusError, wire.AppendError(nil, fmt.Sprintf("backup %s failed: %v", b.id, b.err))
		}
		info := b.head
		info.Ready, info.Files = true, b.files
		return wire.StatusOK, wire.AppendBackupInfo(nil, &info)
	default:
		return wire.StatusOK, wire.AppendBackupInfo(nil, &b.head) // not ready: no files
	}
}

func (set *backupSet) read(b *backup, r wire.BackupRead) (wire.Status, []byte) {
	bad := func(format string, args ...any) (wire.Status, []byte) {
		return wire.StatusInvalidArgument, wire.AppendError(nil, fmt.Sprintf(format, args...))
	}
	if r.Length == 0 || r.Length > wire.MaxBackupChunk {
		return bad("length %d is out of range: read 1 to %d bytes at a time", r.Length, wire.MaxBackupChunk)
	}
	size, ok := b.sizes[r.File]
	if !ok || !wire.ValidBackupFileName(r.File) {
		return bad("bad file name %q: not a file of backup %s", r.File, b.id)
	}
	if r.Offset > size {
		return bad("offset %d is past the end of %s (%d bytes)", r.Offset, r.File, size)
	}
	n := min(uint64(r.Length), size-r.Offset)
	out := make([]byte, 4, 4+n)
	if n > 0 {
		f, err := set.s.fs.Open(filepath.Join(b.dir, r.File))
		if err != nil {
			return wire.StatusError, wire.AppendError(nil, fmt.Sprintf("opening %s of backup %s: %v", r.File, b.id, err))
		}
		defer f.Close()
		out = out[:4+n]
		if _, err := f.ReadAt(out[4:], int64(r.Offset)); err != nil {
			return wire.StatusError, wire.AppendError(nil, fmt.Sprintf("reading %s of backup %s at %d: %v", r.File, b.id, r.Offset, err))
		}
	}
	binary.LittleEndian.PutUint32(out, uint32(n)) // bytes32 data, built in place
	return wire.StatusOK, out
}

// reapLoop removes backups nobody asked about for backupIdleTimeout.
func (set *backupSet) reapLoop() {
	defer set.wg.Done()
	t := time.NewTicker(backupReapInterval)
	defer t.Stop()
	for {
		select {
		case <-set.stop:
			return
		case <-t.C:
		}
		var idle []*backup
		set.mu.Lock()
		for id, b := range set.m {
			if b.active == 0 && time.Since(b.lastUsed) > backupIdleTimeout {
				delete(set.m, id)
				idle = append(idle, b)
			}
		}
		set.mu.Unlock()
		for _, b := range idle {
			set.s.log.Warn("removed a backup nobody asked about", "backup", b.id, "idle_timeout", backupIdleTimeout)
			set.remove(b)
		}
	}
}

// hashFile returns the SHA-256 of a file, stopping early when ctx ends.
func hashFile(ctx context.Context, fs vfs.FS, path string) ([32]byte, error) {
	var sum [32]byte
	f, err := fs.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return sum, errors.New("backup cancelled")
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return sum, err
		}
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}
