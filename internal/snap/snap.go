// Package snap owns a node's raft snapshots on disk: the engine checkpoints
// they refer to (DIR/raft/snap-<index>/, hard links into the engine's
// files), the metadata file that names the current one
// (DIR/raft/raft-snapshot.bin), and the stream format that carries a
// checkpoint from a leader to a follower.
//
// A snapshot may also have no checkpoint (an empty name): the node's own
// engine, made durable up to the snapshot's index before the metadata was
// written, stands for the raft log up to there. Such a snapshot costs one
// WAL fsync; a checkpoint is made only when one must be sent.
//
// It must never let the metadata point at a checkpoint that is not
// completely durable, never delete a checkpoint that a transfer is reading,
// and never accept streamed bytes that fail their checksum.
//
// # raft-snapshot.bin
//
//	magic "KAYASNAP" (8) | version u32 LE (=1) | length u32 LE | body | CRC32C u32 LE (masked, over body)
//	body: index u64 | term u64 | uvarint len | raftpb.ConfState proto | uvarint len | checkpoint dir name
//
// It is replaced as a whole (temp file, fsync, rename, directory fsync).
//
// # Stream
//
//	header:  magic "KAYASNAPSTREAM\x00\x03" (16) | uvarint len | raftpb.Message proto (a MsgSnap) |
//	         total u64 LE | files u32 LE | CRC32C u32 LE (masked, over the proto, total and files)
//	file:    0x01 | uvarint nameLen | name | uvarint size | data (size bytes) | CRC32C u32 LE (masked, over nameLen..data)
//	end:     0x00 | file count u32 LE | CRC32C u32 LE (masked, over the count)
//
// Every byte but the tags is under a checksum: a damaged name, size or
// header is caught like damaged data. The header announces the stream's
// size: total is the sum of the files' sizes, files their number. A
// receiver decides from them, before it writes anything, whether it can
// take the stream (its free space), and the stream may then carry no more
// files and no more bytes than it announced (version 2 had no such bound:
// a stranger could make a node fill its disk).
package snap

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/kayadb/kayadb/internal/crc"
	"github.com/kayadb/kayadb/internal/errs"
	"github.com/kayadb/kayadb/internal/vfs"
)

const (
	metaMagic    = "KAYASNAP"
	metaVersion  = 1
	metaFile     = "raft-snapshot.bin"
	streamMagic  = "KAYASNAPSTREAM\x00\x03"
	dirPrefix    = "snap-"
	maxFileBytes = 1 << 40
	maxFiles     = 1 << 20
)

// Meta describes the current snapshot.
type Meta struct {
	Index     uint64
	Term      uint64
	ConfState *pb.ConfState
	// Dir is the checkpoint directory's name (inside the snapshots dir);
	// empty when the snapshot has no checkpoint (see CommitMeta).
	Dir string
}

// DirName returns the checkpoint directory name of the snapshot at index.
func DirName(index uint64) string { return fmt.Sprintf("%s%016x", dirPrefix, index) }

func parseDirName(name string) (uint64, bool) {
	if !strings.HasPrefix(name, dirPrefix) {
		return 0, false
	}
	v, err := strconv.ParseUint(strings.TrimPrefix(name, dirPrefix), 16, 64)
	return v, err == nil
}

// Store manages the snapshots directory.
type Store struct {
	fs  vfs.FS
	dir string

	// commitMu serializes Commits, so that the "not older than the current
	// snapshot" check and the rewrite of raft-snapshot.bin are one step.
	commitMu sync.Mutex

	mu   sync.Mutex
	refs map[string]int // checkpoint dir → readers (transfers)
	cur  *Meta
}

// Open opens (creating) the snapshots directory and reads the metadata, if
// any. Unfinished checkpoints (*.tmp) are removed.
func Open(fs vfs.FS, dir string) (*Store, error) {
	if err := vfs.MkdirAllSync(fs, dir, 0o700); err != nil {
		return nil, fmt.Errorf("snap: creating %s: %w", dir, err)
	}
	s := &Store{fs: fs, dir: dir, refs: map[string]int{}}
	names, err := fs.List(dir)
	if err != nil {
		return nil, fmt.Errorf("snap: listing %s: %w", dir, err)
	}
	for _, n := range names {
		if strings.HasSuffix(n, ".tmp") {
			if err := fs.RemoveAll(filepath.Join(dir, n)); err != nil {
				return nil, fmt.Errorf("snap: removing leftover %s: %w", n, err)
			}
		}
	}
	m, err := s.readMeta()
	if err != nil {
		return nil, err
	}
	if m != nil && m.Dir != "" {
		if _, err := fs.Stat(filepath.Join(dir, m.Dir)); err != nil {
			return nil, errs.CorruptionErrorf(filepath.Join(dir, metaFile), -1,
				"names checkpoint %s, which is missing (%v)", m.Dir, err)
		}
	}
	s.cur = m
	if m != nil && m.Dir == "" {
		s.gc() // checkpoints made for transfers before a restart
	}
	return s, nil
}

// Current returns the current snapshot's metadata, or nil.
func (s *Store) Current() *Meta {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// Path returns the full path of a checkpoint directory.
func (s *Store) Path(name string) string { return filepath.Join(s.dir, name) }

// TempDir returns a fresh temporary directory path for building the
// checkpoint of index (it does not exist yet).
func (s *Store) TempDir(index uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%s.%d.tmp", DirName(index), time.Now().UnixNano()))
}

// Commit makes the finished checkpoint at tmp the snapshot m: it renames
// tmp to its final name, makes that durable, then replaces
// raft-snapshot.bin (the commit point). Older checkpoints no transfer is
// reading are deleted.
func (s *Store) Commit(tmp string, m *Meta) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if err := s.notOlder(m); err != nil {
		return err
	}
	m.Dir = DirName(m.Index)
	final := filepath.Join(s.dir, m.Dir)
	if _, err := s.fs.Stat(final); err == nil {
		// The same index again (a retransmission): keep the first copy.
		if err := s.fs.RemoveAll(tmp); err != nil {
			return err
		}
	} else if err := s.fs.Rename(tmp, final); err != nil {
		return fmt.Errorf("snap: renaming %s: %w", tmp, err)
	}
	if err := vfs.SyncDir(s.fs, s.dir); err != nil {
		return fmt.Errorf("snap: syncing %s: %w", s.dir, err)
	}
	return s.publish(m)
}

// CommitMeta makes m, a snapshot without a checkpoint, the current one: it
// replaces raft-snapshot.bin. The caller must have made its engine durable
// up to m.Index first. Checkpoints older than m that no transfer reads are
// deleted.
func (s *Store) CommitMeta(m *Meta) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if err := s.notOlder(m); err != nil {
		return err
	}
	m.Dir = ""
	return s.publish(m)
}

// notOlder refuses a snapshot older than the current one.
func (s *Store) notOlder(m *Meta) error {
	if cur := s.Current(); cur != nil && m.Index < cur.Index {
		return fmt.Errorf("snap: refusing to replace snapshot %d with older snapshot %d", cur.Index, m.Index)
	}
	return nil
}

// publish replaces raft-snapshot.bin with m (the commit point), makes m
// current and deletes the checkpoints it supersedes. Called with commitMu.
func (s *Store) publish(m *Meta) error {
	if err := vfs.WriteFileSync(s.fs, s.dir, filepath.Join(s.dir, metaFile), encodeMeta(m)); err != nil {
		return fmt.Errorf("snap: writing %s: %w", metaFile, err)
	}
	s.mu.Lock()
	s.cur = m
	s.mu.Unlock()
	s.gc()
	return nil
}

// ErrNoCheckpoint is Acquire's error when the current snapshot has no
// checkpoint (or there is no snapshot): the caller makes one and commits
// it, then acquires again.
var ErrNoCheckpoint = errors.New("snap: the current snapshot has no checkpoint")

// Acquire pins the current snapshot's checkpoint for a transfer. The
// returned release function unpins it.
func (s *Store) Acquire() (*Meta, func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil || s.cur.Dir == "" {
		return nil, nil, ErrNoCheckpoint
	}
	m := s.cur
	s.refs[m.Dir]++
	var once sync.Once
	return m, func() {
		once.Do(func() {
			s.mu.Lock()
			s.refs[m.Dir]--
			if s.refs[m.Dir] == 0 {
				delete(s.refs, m.Dir)
			}
			s.mu.Unlock()
			s.gc()
		})
	}, nil
}

// gc removes the checkpoints older than the current one that no transfer
// reads. Newer ones are left alone: a Commit may have installed one and not
// yet made it current (and a crash can leave one behind, which the Commit
// of that index reuses or a later Commit removes).
func (s *Store) gc() {
	names, err := s.fs.List(s.dir)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return
	}
	for _, n := range names {
		idx, ok := parseDirName(n)
		if !ok || idx > s.cur.Index || (idx == s.cur.Index && s.cur.Dir != "") || s.refs[n] > 0 {
			continue
		}
		_ = s.fs.RemoveAll(filepath.Join(s.dir, n))
	}
}

func encodeMeta(m *Meta) []byte {
	body := binary.LittleEndian.AppendUint64(nil, m.Index)
	body = binary.LittleEndian.AppendUint64(body, m.Term)
	cs, _ := proto.Marshal(m.ConfState)
	body = binary.AppendUvarint(body, uint64(len(cs)))
	body = append(body, cs...)
	body = binary.AppendUvarint(body, uint64(len(m.Dir)))
	body = append(body, m.Dir...)
	out := append([]byte(metaMagic), 0, 0, 0, 0, 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(out[8:], metaVersion)
	binary.LittleEndian.PutUint32(out[12:], uint32(len(body)))
	out = append(out, body...)
	return binary.LittleEndian.AppendUint32(out, crc.Masked(body))
}

func (s *Store) readMeta() (*Meta, error) {
	path := filepath.Join(s.dir, metaFile)
	f, err := s.fs.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("snap: opening %s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("snap: reading %s: %w", path, err)
	}
	return decodeMeta(b, path)
}

func decodeMeta(b []byte, path string) (*Meta, error) {
	bad := func(format string, args ...any) (*Meta, error) {
		return nil, errs.CorruptionErrorf(path, 0, format, args...)
	}
	if len(b) < 20 || string(b[:8]) != metaMagic {
		return bad("not a snapshot metadata file (bad magic or too short)")
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != metaVersion {
		return bad("unsupported snapshot metadata version %d (this build reads version %d)", v, metaVersion)
	}
	n := binary.LittleEndian.Uint32(b[12:])
	if uint64(n)+20 != uint64(len(b)) {
		return bad("length %d does not match the file size %d", n, len(b))
	}
	body := b[16 : 16+n]
	if got, want := crc.Masked(body), binary.LittleEndian.Uint32(b[16+n:]); got != want {
		return bad("checksum mismatch: stored %#08x, computed %#08x", want, got)
	}
	if len(body) < 16 {
		return bad("body too short")
	}
	m := &Meta{Index: binary.LittleEndian.Uint64(body), Term: binary.LittleEndian.Uint64(body[8:])}
	p := body[16:]
	cs, p, ok := lenBytes(p)
	if !ok {
		return bad("truncated conf state")
	}
	m.ConfState = &pb.ConfState{}
	if err := proto.Unmarshal(cs, m.ConfState); err != nil {
		return bad("conf state does not decode: %v", err)
	}
	dir, _, ok := lenBytes(p)
	if !ok {
		return bad("truncated checkpoint name")
	}
	m.Dir = string(dir)
	if m.Dir == "" {
		return m, nil // no checkpoint
	}
	if idx, ok := parseDirName(m.Dir); !ok || idx != m.Index {
		return bad("checkpoint name %q does not match index %d", m.Dir, m.Index)
	}
	return m, nil
}

func lenBytes(p []byte) ([]byte, []byte, bool) {
	n, w := binary.Uvarint(p)
	if w <= 0 || n > uint64(len(p)-w) {
		return nil, nil, false
	}
	return p[w : w+int(n)], p[w+int(n):], true
}

// Limiter throttles streams to a byte rate (nil: unlimited). One Limiter
// may be shared by concurrent and successive streams: together they stay
// under the rate, and idle time does not build up credit for a burst.
type Limiter struct {
	BytesPerSecond int64
	mu             sync.Mutex
	// next is when the bytes admitted so far have been paid for.
	next time.Time
}

func (l *Limiter) wait(n int) {
	if l == nil || l.BytesPerSecond <= 0 {
		return
	}
	l.mu.Lock()
	if now := time.Now(); l.next.Before(now) {
		l.next = now
	}
	l.next = l.next.Add(time.Duration(float64(n) / float64(l.BytesPerSecond) * float64(time.Second)))
	due := l.next
	l.mu.Unlock()
	if d := time.Until(due); d > 0 {
		time.Sleep(d)
	}
}

// WriteStream writes a MsgSnap and the files of checkpoint dir to w. The
// files are listed and measured first (a checkpoint's files do not change),
// so that the header can announce the stream's size.
func WriteStream(w io.Writer, fs vfs.FS, dir string, m *pb.Message, lim *Limiter) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	names, err := fs.List(dir)
	if err != nil {
		return fmt.Errorf("snap: listing %s: %w", dir, err)
	}
	sort.Strings(names)
	type file struct {
		name string
		size int64
	}
	var files []file
	var total uint64
	for _, name := range names {
		st, err := fs.Stat(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("snap: %w", err)
		}
		if st.IsDir() {
			continue
		}
		files = append(files, file{name, st.Size()})
		total += uint64(st.Size())
	}
	hdr, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	hdr = binary.LittleEndian.AppendUint64(hdr, total)
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(files)))
	if _, err := bw.WriteString(streamMagic); err != nil {
		return err
	}
	if _, err := bw.Write(binary.AppendUvarint(nil, uint64(len(hdr)-12))); err != nil {
		return err
	}
	if _, err := bw.Write(hdr); err != nil {
		return err
	}
	if _, err := bw.Write(binary.LittleEndian.AppendUint32(nil, crc.Masked(hdr))); err != nil {
		return err
	}
	buf := make([]byte, 128<<10)
	for _, fl := range files {
		name, size := fl.name, fl.size
		f, err := fs.Open(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("snap: opening %s: %w", name, err)
		}
		rec := append([]byte{1}, binary.AppendUvarint(nil, uint64(len(name)))...)
		rec = append(rec, name...)
		rec = binary.AppendUvarint(rec, uint64(size))
		if _, err := bw.Write(rec); err != nil {
			_ = f.Close()
			return err
		}
		crc := crc.CRC(0).Update(rec[1:])
		var done int64
		for done < size {
			n, err := f.Read(buf[:min(int64(len(buf)), size-done)])
			if n > 0 {
				crc = crc.Update(buf[:n])
				lim.wait(n)
				if _, werr := bw.Write(buf[:n]); werr != nil {
					_ = f.Close()
					return werr
				}
				done += int64(n)
			}
			if err != nil {
				if err == io.EOF && done < size {
					err = fmt.Errorf("snap: %s shrank while being sent", name)
				}
				if err != io.EOF {
					_ = f.Close()
					return err
				}
			}
		}
		_ = f.Close()
		if _, err := bw.Write(binary.LittleEndian.AppendUint32(nil, crc.Value())); err != nil {
			return err
		}
	}
	end := []byte{0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(end[1:], uint32(len(files)))
	end = binary.LittleEndian.AppendUint32(end, crc.Masked(end[1:5]))
	if _, err := bw.Write(end); err != nil {
		return err
	}
	return bw.Flush()
}

// Admit decides, from a stream's MsgSnap and the size it announces (the sum
// of its files' sizes and their number), whether the receiver takes it; an
// error refuses the stream before anything is written.
type Admit func(m *pb.Message, totalBytes uint64, files int) error

// ReadStream reads a stream into the new directory dest (which must not
// exist), verifying every file's checksum, syncing every file and the
// directory. admit (nil: take any size) judges the size the header
// announces, and the stream may not go beyond it. It returns the MsgSnap.
// On error, dest may hold part of the stream; the caller removes it.
func ReadStream(r io.Reader, fs vfs.FS, dest string, admit Admit) (*pb.Message, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	magic := make([]byte, len(streamMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != streamMagic {
		return nil, fmt.Errorf("snap: not a snapshot stream (%v)", err)
	}
	n, err := binary.ReadUvarint(br)
	if err != nil || n > 64<<20 {
		return nil, fmt.Errorf("snap: bad stream header length %d (%v)", n, err)
	}
	// The buffer grows as the header arrives: a damaged length does not
	// allocate 64 MiB up front.
	var hdr bytes.Buffer
	if _, err := io.CopyN(&hdr, br, int64(n)); err != nil {
		return nil, fmt.Errorf("snap: truncated stream header: %w", err)
	}
	var sizes [12 + 4]byte // total, files, checksum
	if _, err := io.ReadFull(br, sizes[:]); err != nil {
		return nil, fmt.Errorf("snap: truncated stream header: %w", err)
	}
	hdr.Write(sizes[:12])
	if got, want := crc.Masked(hdr.Bytes()), binary.LittleEndian.Uint32(sizes[12:]); got != want {
		return nil, errs.CorruptionErrorf("snapshot stream", 0, "header checksum mismatch: sent %#08x, received %#08x", want, got)
	}
	total := binary.LittleEndian.Uint64(sizes[:8])
	declared := binary.LittleEndian.Uint32(sizes[8:12])
	if declared > maxFiles {
		return nil, fmt.Errorf("snap: stream announces %d files, more than the %d a checkpoint may have", declared, maxFiles)
	}
	m := &pb.Message{}
	if err := proto.Unmarshal(hdr.Bytes()[:n], m); err != nil {
		return nil, fmt.Errorf("snap: stream header does not decode: %w", err)
	}
	if m.GetType() != pb.MsgSnap {
		return nil, fmt.Errorf("snap: stream header is a %v, not a snapshot message", m.GetType())
	}
	if admit != nil {
		if err := admit(m, total, int(declared)); err != nil {
			return nil, err
		}
	}
	if _, err := fs.Stat(dest); !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("snap: receiving into %s, which already exists (%v)", dest, err)
	}
	if err := fs.MkdirAll(dest, 0o700); err != nil {
		return nil, err
	}
	buf := make([]byte, 128<<10)
	files := 0
	left := total // bytes the header announced that have not arrived yet
	seen := map[string]bool{}
	for {
		tag, err := br.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("snap: stream ended early: %w", err)
		}
		if tag == 0 {
			var cnt [8]byte
			if _, err := io.ReadFull(br, cnt[:]); err != nil {
				return nil, fmt.Errorf("snap: truncated stream trailer: %w", err)
			}
			if got, want := crc.Masked(cnt[:4]), binary.LittleEndian.Uint32(cnt[4:]); got != want {
				return nil, errs.CorruptionErrorf("snapshot stream", -1, "trailer checksum mismatch: sent %#08x, received %#08x", want, got)
			}
			if c := binary.LittleEndian.Uint32(cnt[:]); uint64(c) != uint64(files) || c != declared {
				return nil, fmt.Errorf("snap: stream trailer counts %d files and its header %d, but %d were received", c, declared, files)
			}
			if left != 0 {
				return nil, fmt.Errorf("snap: stream announced %d bytes but carried %d", total, total-left)
			}
			break
		}
		if tag != 1 {
			return nil, fmt.Errorf("snap: bad record tag %d in stream", tag)
		}
		if files >= int(declared) {
			return nil, fmt.Errorf("snap: stream sends more files than the %d its header announced", declared)
		}
		files++
		nameLen, err := binary.ReadUvarint(br)
		if err != nil || nameLen == 0 || nameLen > 255 {
			return nil, fmt.Errorf("snap: bad file name length (%v)", err)
		}
		nameB := make([]byte, nameLen)
		if _, err := io.ReadFull(br, nameB); err != nil {
			return nil, err
		}
		name := string(nameB)
		if name != filepath.Base(name) || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
			return nil, fmt.Errorf("snap: refusing file name %q in stream", name)
		}
		if seen[name] {
			return nil, fmt.Errorf("snap: stream sends %s twice", name)
		}
		seen[name] = true
		size, err := binary.ReadUvarint(br)
		if err != nil || size > maxFileBytes {
			return nil, fmt.Errorf("snap: bad size for %s (%v)", name, err)
		}
		if size > left {
			return nil, fmt.Errorf("snap: %s (%d bytes) goes beyond the %d bytes the stream's header announced", name, size, total)
		}
		left -= size
		f, err := fs.Create(filepath.Join(dest, name))
		if err != nil {
			return nil, err
		}
		recHdr := binary.AppendUvarint(nil, nameLen)
		recHdr = append(recHdr, nameB...)
		recHdr = binary.AppendUvarint(recHdr, size)
		crc := crc.CRC(0).Update(recHdr)
		rest := int64(size)
		for rest > 0 {
			k, err := br.Read(buf[:min(int64(len(buf)), rest)])
			if k > 0 {
				crc = crc.Update(buf[:k])
				if _, werr := f.Write(buf[:k]); werr != nil {
					_ = f.Close()
					return nil, werr
				}
				rest -= int64(k)
			}
			if err != nil && rest > 0 {
				_ = f.Close()
				return nil, fmt.Errorf("snap: stream ended inside %s: %w", name, err)
			}
		}
		var sum [4]byte
		if _, err := io.ReadFull(br, sum[:]); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("snap: missing checksum of %s: %w", name, err)
		}
		if got, want := crc.Value(), binary.LittleEndian.Uint32(sum[:]); got != want {
			_ = f.Close()
			return nil, errs.CorruptionErrorf(name, -1, "snapshot file checksum mismatch: sent %#08x, received %#08x", want, got)
		}
		if err := f.Sync(); err != nil {
			_ = f.Close()
			return nil, err
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
	}
	if err := vfs.SyncDir(fs, dest); err != nil {
		return nil, err
	}
	return m, nil
}
