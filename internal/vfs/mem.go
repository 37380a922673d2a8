package vfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// crashPageSize is the granularity at which CrashClone keeps or drops
// unsynced file data when CrashCloneOptions.UnsyncedKeepProbability > 0.
const crashPageSize = 4096

// MemFS is an in-memory FS that remembers what has been made durable, so
// that CrashClone can produce the file system as it could look after a power
// cut.
//
// Paths may be absolute or relative; they are cleaned with path/filepath and
// relative paths resolve from the root "/", which always exists.
//
// Durability follows a strict POSIX model:
//   - File data (writes, Truncate) is durable only after File.Sync on any
//     handle of that file. Hard links share one file, so a sync through
//     either name covers both.
//   - Directory entries (Create of a new name, Rename, Link, Remove,
//     RemoveAll, MkdirAll, Lock creating its file) are durable only after
//     the directory holding them is synced (OpenDir(dir).Sync(), SyncDir).
//     A directory made by MkdirAll is itself an unsynced entry of its
//     parent until the parent is synced.
//
// # Capacity
//
// SetCapacity limits the bytes the files may occupy, to simulate a full
// disk. A file occupies max(its size, the end of its preallocated range)
// bytes while it has a name or an open handle (so, as on POSIX, removing an
// open file frees its space only at the last Close); directories and names
// occupy nothing. Past the capacity, Write writes what fits and returns the
// short count with an error matching ErrNoSpace (as write(2) does);
// Preallocate and a growing Truncate fail with it and change nothing.
// Freeing space (Remove, RemoveAll, a shrinking Truncate, Close of an
// unlinked file) makes room again. DiskUsage reports the capacity.
//
// All operations take one mutex, so every method, including File.ReadAt, is
// safe for concurrent use. A MemFS must not be copied after first use.
type MemFS struct {
	mu    sync.Mutex
	root  *memNode
	locks map[string]bool // cleaned path -> held
	// open counts the open handles per node, so that an unlinked file
	// keeps its space until its last handle is closed.
	open map[*memNode]int
	// capacity limits the bytes files occupy; 0 means no limit.
	capacity int64
	// gen numbers the walks of usedLocked (see memNode.gen).
	gen uint64
}

var _ FS = (*MemFS)(nil)

// memNode is a file or a directory. Hard links are several directory
// entries pointing at one memNode.
type memNode struct {
	isDir   bool
	mode    os.FileMode
	modTime time.Time

	// Files only.
	//
	// data is the current content. synced is the content as of the last
	// Sync. The bytes synced[:len(synced)] of a synced slice are never
	// modified once published (Sync either appends beyond len or allocates a
	// new slice), which lets CrashClone share them.
	data   []byte
	synced []byte
	// dirty reports that a byte below len(synced) was written, or the file
	// was truncated below len(synced), since the last Sync. While it is
	// false, data[:len(synced)] equals synced and Sync only appends the tail.
	dirty bool
	// reserved is the end of the range Preallocate reserved; the file
	// occupies max(len(data), reserved) bytes of the capacity.
	reserved int64
	// gen is the last usedLocked walk that counted this node, so hard links
	// and open handles count it once.
	gen uint64

	// Directories only: the current entries and the entries as of the last
	// directory Sync.
	children       map[string]*memNode
	syncedChildren map[string]*memNode
}

func newMemFile() *memNode {
	return &memNode{mode: 0o600, modTime: time.Now()}
}

func newMemDir(perm os.FileMode) *memNode {
	return &memNode{
		isDir:          true,
		mode:           os.ModeDir | perm.Perm(),
		modTime:        time.Now(),
		children:       make(map[string]*memNode),
		syncedChildren: make(map[string]*memNode),
	}
}

// NewMem returns an empty MemFS holding only the root directory "/".
func NewMem() *MemFS {
	return &MemFS{root: newMemDir(0o700), locks: make(map[string]bool), open: make(map[*memNode]int)}
}

// MemUnlimitedBytes is the TotalBytes that DiskUsage reports for a MemFS
// without a capacity.
const MemUnlimitedBytes = 1 << 62

// SetCapacity limits the bytes the files of m may occupy (see the type's
// doc); 0 (or less) removes the limit. A capacity below what is already
// used is allowed: every write that needs more space then fails until
// enough is freed.
func (m *MemFS) SetCapacity(bytes int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.capacity = max(bytes, 0)
}

// DiskUsage reports the capacity as TotalBytes (MemUnlimitedBytes if there
// is none) and what is left of it as AvailBytes. path must exist.
func (m *MemFS) DiskUsage(path string) (Usage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.lookup("statfs", path); err != nil {
		return Usage{}, err
	}
	total := int64(MemUnlimitedBytes)
	if m.capacity > 0 {
		total = m.capacity
	}
	return Usage{TotalBytes: uint64(total), AvailBytes: uint64(max(total-m.usedLocked(), 0))}, nil
}

// usedLocked returns the bytes occupied by the files that have a name or
// an open handle. It walks the whole tree: MemFS is a test file system, and
// the walk runs only while a capacity is set. m.mu must be held.
func (m *MemFS) usedLocked() int64 {
	m.gen++
	used := m.root.usage(m.gen)
	for n := range m.open {
		used += n.usage(m.gen)
	}
	return used
}

// usage returns the bytes occupied by n and, for a directory, everything
// below it, skipping nodes already counted in walk gen.
func (n *memNode) usage(gen uint64) int64 {
	if n.gen == gen {
		return 0
	}
	n.gen = gen
	if !n.isDir {
		return n.charge()
	}
	var used int64
	for _, c := range n.children {
		used += c.usage(gen)
	}
	return used
}

// charge is the space a file occupies.
func (n *memNode) charge() int64 { return max(int64(len(n.data)), n.reserved) }

// room returns how many more bytes the files may occupy, or -1 if there is
// no capacity. m.mu must be held.
func (m *MemFS) room() int64 {
	if m.capacity <= 0 {
		return -1
	}
	return max(m.capacity-m.usedLocked(), 0)
}

// noSpace is the error of an operation that found no room.
func noSpace(op, name string) error { return pathErr(op, name, ErrNoSpace) }

// newHandle returns an open handle on n and counts it. m.mu must be held.
func (m *MemFS) newHandle(n *memNode, name string, writable bool) *memFile {
	m.open[n]++
	return &memFile{fs: m, node: n, name: name, writable: writable}
}

// memSep is the path separator used by MemFS paths.
const memSep = string(filepath.Separator)

// memClean returns name as a cleaned absolute path.
func memClean(name string) string {
	return filepath.Join(memSep, name)
}

// memSplit returns the components of a cleaned absolute path; the root has
// none.
func memSplit(p string) []string {
	if p == memSep {
		return nil
	}
	return strings.Split(p[len(memSep):], memSep)
}

func pathErr(op, name string, err error) error {
	return &os.PathError{Op: op, Path: name, Err: err}
}

// walk returns the node at the given components. m.mu must be held.
func (m *MemFS) walk(comps []string) (*memNode, error) {
	n := m.root
	for _, c := range comps {
		if !n.isDir {
			return nil, syscall.ENOTDIR
		}
		child := n.children[c]
		if child == nil {
			return nil, fs.ErrNotExist
		}
		n = child
	}
	return n, nil
}

// lookup returns the node named name. m.mu must be held.
func (m *MemFS) lookup(op, name string) (*memNode, error) {
	if name == "" {
		return nil, pathErr(op, name, fs.ErrNotExist)
	}
	n, err := m.walk(memSplit(memClean(name)))
	if err != nil {
		return nil, pathErr(op, name, err)
	}
	return n, nil
}

// lookupParent returns the directory holding name and name's last
// component. It fails for the root, which has no parent. m.mu must be held.
func (m *MemFS) lookupParent(op, name string) (*memNode, string, error) {
	if name == "" {
		return nil, "", pathErr(op, name, fs.ErrNotExist)
	}
	comps := memSplit(memClean(name))
	if len(comps) == 0 {
		return nil, "", pathErr(op, name, syscall.EBUSY)
	}
	dir, err := m.walk(comps[:len(comps)-1])
	if err != nil {
		return nil, "", pathErr(op, name, err)
	}
	if !dir.isDir {
		return nil, "", pathErr(op, name, syscall.ENOTDIR)
	}
	return dir, comps[len(comps)-1], nil
}

// Create creates name, or truncates it if it exists, and opens it for
// reading and writing. The new directory entry is durable only after the
// parent directory is synced.
func (m *MemFS) Create(name string) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir, base, err := m.lookupParent("open", name)
	if err != nil {
		return nil, err
	}
	n := dir.children[base]
	switch {
	case n == nil:
		n = newMemFile()
		dir.children[base] = n
		dir.modTime = n.modTime
	case n.isDir:
		return nil, pathErr("open", name, syscall.EISDIR)
	default:
		n.truncate(0)
	}
	return m.newHandle(n, name, true), nil
}

// Open opens the existing file or directory name for reading.
func (m *MemFS) Open(name string) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup("open", name)
	if err != nil {
		return nil, err
	}
	return m.newHandle(n, name, false), nil
}

// OpenReadWrite opens the existing file name for reading and writing, with
// the offset at the start of the file.
func (m *MemFS) OpenReadWrite(name string) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup("open", name)
	if err != nil {
		return nil, err
	}
	if n.isDir {
		return nil, pathErr("open", name, syscall.EISDIR)
	}
	return m.newHandle(n, name, true), nil
}

// OpenDir opens the directory name; Sync on the result makes its current
// entries durable.
func (m *MemFS) OpenDir(name string) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup("open", name)
	if err != nil {
		return nil, err
	}
	if !n.isDir {
		return nil, pathErr("open", name, syscall.ENOTDIR)
	}
	return m.newHandle(n, name, false), nil
}

// Remove removes the file or empty directory name.
func (m *MemFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir, base, err := m.lookupParent("remove", name)
	if err != nil {
		return err
	}
	n := dir.children[base]
	if n == nil {
		return pathErr("remove", name, fs.ErrNotExist)
	}
	if n.isDir && len(n.children) > 0 {
		return pathErr("remove", name, syscall.ENOTEMPTY)
	}
	delete(dir.children, base)
	dir.modTime = time.Now()
	return nil
}

// RemoveAll removes name and everything below it. It returns nil if name
// does not exist. Removing the root is an error.
func (m *MemFS) RemoveAll(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir, base, err := m.lookupParent("removeall", name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	n := dir.children[base]
	if n == nil {
		return nil
	}
	// Unlink everything below, as a real RemoveAll would, so that a later
	// sync of a still-open directory handle records the directory as empty.
	clearChildren(n)
	delete(dir.children, base)
	dir.modTime = time.Now()
	return nil
}

// clearChildren removes every current entry below the directory n.
func clearChildren(n *memNode) {
	if !n.isDir {
		return
	}
	for name, c := range n.children {
		clearChildren(c)
		delete(n.children, name)
	}
}

// isUnder reports whether the cleaned path p is strictly below dir.
func isUnder(p, dir string) bool {
	if dir == memSep {
		return p != memSep
	}
	return strings.HasPrefix(p, dir+memSep)
}

// Rename renames oldname to newname, replacing newname if it exists (a file
// may replace a file, a directory an empty directory). Both directory
// entries change in the current state only; each becomes durable when its
// directory is synced.
func (m *MemFS) Rename(oldname, newname string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	linkErr := func(err error) error {
		if pe, ok := err.(*os.PathError); ok {
			err = pe.Err
		}
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	oldDir, oldBase, err := m.lookupParent("rename", oldname)
	if err != nil {
		return linkErr(err)
	}
	n := oldDir.children[oldBase]
	if n == nil {
		return linkErr(fs.ErrNotExist)
	}
	newDir, newBase, err := m.lookupParent("rename", newname)
	if err != nil {
		return linkErr(err)
	}
	oldPath, newPath := memClean(oldname), memClean(newname)
	if oldPath == newPath {
		return nil
	}
	if n.isDir && isUnder(newPath, oldPath) {
		return linkErr(syscall.EINVAL)
	}
	if target := newDir.children[newBase]; target != nil {
		switch {
		case target == n:
			// Two links to the same file: rename(2) does nothing.
			return nil
		case n.isDir && !target.isDir:
			return linkErr(syscall.ENOTDIR)
		case n.isDir && len(target.children) > 0:
			return linkErr(syscall.ENOTEMPTY)
		case !n.isDir && target.isDir:
			return linkErr(syscall.EISDIR)
		}
	}
	delete(oldDir.children, oldBase)
	newDir.children[newBase] = n
	now := time.Now()
	oldDir.modTime, newDir.modTime = now, now
	return nil
}

// Link creates newname as a hard link to the file oldname. Both names then
// share one file: its data and its synced data.
func (m *MemFS) Link(oldname, newname string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	linkErr := func(err error) error {
		if pe, ok := err.(*os.PathError); ok {
			err = pe.Err
		}
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: err}
	}
	n, err := m.lookup("link", oldname)
	if err != nil {
		return linkErr(err)
	}
	if n.isDir {
		return linkErr(syscall.EPERM)
	}
	dir, base, err := m.lookupParent("link", newname)
	if err != nil {
		return linkErr(err)
	}
	if dir.children[base] != nil {
		return linkErr(fs.ErrExist)
	}
	dir.children[base] = n
	dir.modTime = time.Now()
	return nil
}

// MkdirAll creates dir and any missing parents with permission perm (no
// umask is applied). Each new directory is an unsynced entry of its parent.
func (m *MemFS) MkdirAll(dir string, perm os.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if dir == "" {
		return pathErr("mkdir", dir, fs.ErrNotExist)
	}
	n := m.root
	for _, c := range memSplit(memClean(dir)) {
		child := n.children[c]
		if child == nil {
			child = newMemDir(perm)
			n.children[c] = child
			n.modTime = child.modTime
		} else if !child.isDir {
			return pathErr("mkdir", dir, syscall.ENOTDIR)
		}
		n = child
	}
	return nil
}

// List returns the names of dir's current entries. MemFS returns them
// sorted, but callers must not rely on any order.
func (m *MemFS) List(dir string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup("open", dir)
	if err != nil {
		return nil, err
	}
	if !n.isDir {
		return nil, pathErr("readdirent", dir, syscall.ENOTDIR)
	}
	return slices.Sorted(maps.Keys(n.children)), nil
}

// Stat returns the metadata of name.
func (m *MemFS) Stat(name string) (os.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup("stat", name)
	if err != nil {
		return nil, err
	}
	return n.info(filepath.Base(memClean(name))), nil
}

// Lock takes an in-memory exclusive lock on the cleaned path name, creating
// the file if needed. A second Lock on the same path fails with an error
// wrapping ErrLocked until the first lock is closed.
func (m *MemFS) Lock(name string) (io.Closer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir, base, err := m.lookupParent("open", name)
	if err != nil {
		return nil, err
	}
	n := dir.children[base]
	switch {
	case n == nil:
		n = newMemFile()
		dir.children[base] = n
		dir.modTime = n.modTime
	case n.isDir:
		return nil, pathErr("open", name, syscall.EISDIR)
	}
	key := memClean(name)
	if m.locks[key] {
		return nil, lockedError(name)
	}
	m.locks[key] = true
	return &memLock{fs: m, key: key, name: name}, nil
}

// memLock is a lock held on a MemFS path.
type memLock struct {
	fs       *MemFS
	key      string
	name     string
	released bool
}

// Close releases the lock.
func (l *memLock) Close() error {
	l.fs.mu.Lock()
	defer l.fs.mu.Unlock()
	if l.released {
		return pathErr("close", l.name, os.ErrClosed)
	}
	l.released = true
	delete(l.fs.locks, l.key)
	return nil
}

// truncate sets the file's current size, zero-filling any growth.
func (n *memNode) truncate(size int64) {
	old := int64(len(n.data))
	switch {
	case size < old:
		n.data = n.data[:size]
		if size < int64(len(n.synced)) {
			n.dirty = true
		}
	case size > old:
		n.grow(size)
		clear(n.data[old:size])
	}
	if size <= old {
		// A truncate that does not grow the file frees every block past
		// the new size, preallocated or not (as ext4 does).
		n.reserved = min(n.reserved, size)
	}
	n.modTime = time.Now()
}

// grow extends data to size without initialising the new bytes.
func (n *memNode) grow(size int64) {
	if size > int64(cap(n.data)) {
		n.data = slices.Grow(n.data, int(size)-len(n.data))
	}
	n.data = n.data[:size]
}

// writeAt writes p at off, zero-filling any hole.
func (n *memNode) writeAt(p []byte, off int64) {
	if len(p) == 0 {
		return
	}
	if off < int64(len(n.synced)) {
		n.dirty = true
	}
	old := int64(len(n.data))
	if end := off + int64(len(p)); end > old {
		n.grow(end)
		if off > old {
			clear(n.data[old:off])
		}
	}
	copy(n.data[off:], p)
	n.modTime = time.Now()
}

// sync makes the current data (or, for a directory, the current entries)
// durable.
func (n *memNode) sync() {
	if n.isDir {
		n.syncedChildren = maps.Clone(n.children)
		return
	}
	if n.dirty || len(n.data) < len(n.synced) {
		n.synced = bytes.Clone(n.data)
		if n.synced == nil {
			n.synced = []byte{}
		}
		n.dirty = false
		return
	}
	// Append-only since the last sync: data[:len(synced)] == synced.
	n.synced = append(n.synced, n.data[len(n.synced):]...)
}

func (n *memNode) info(name string) os.FileInfo {
	return &memFileInfo{name: name, size: int64(len(n.data)), mode: n.mode, modTime: n.modTime}
}

// memFileInfo implements os.FileInfo for MemFS.
type memFileInfo struct {
	name    string
	size    int64
	mode    os.FileMode
	modTime time.Time
}

func (fi *memFileInfo) Name() string       { return fi.name }
func (fi *memFileInfo) Size() int64        { return fi.size }
func (fi *memFileInfo) Mode() os.FileMode  { return fi.mode }
func (fi *memFileInfo) ModTime() time.Time { return fi.modTime }
func (fi *memFileInfo) IsDir() bool        { return fi.mode.IsDir() }
func (fi *memFileInfo) Sys() any           { return nil }

// memFile is an open MemFS file or directory. Its fields are guarded by
// fs.mu.
type memFile struct {
	fs       *MemFS
	node     *memNode
	name     string
	writable bool
	off      int64
	closed   bool
}

var _ File = (*memFile)(nil)

// check returns an error if f is closed, or if it is a directory and op
// needs a regular file. f.fs.mu must be held.
func (f *memFile) check(op string, needFile bool) error {
	if f.closed {
		return pathErr(op, f.name, os.ErrClosed)
	}
	if needFile && f.node.isDir {
		return pathErr(op, f.name, syscall.EISDIR)
	}
	return nil
}

// Read reads from the handle's offset and advances it.
func (f *memFile) Read(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("read", true); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if f.off >= int64(len(f.node.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.node.data[f.off:])
	f.off += int64(n)
	return n, nil
}

// ReadAt reads len(p) bytes at off. It returns io.EOF if fewer are
// available. It does not move the handle's offset.
func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("read", true); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, pathErr("readat", f.name, syscall.EINVAL)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= int64(len(f.node.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.node.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Write writes p at the handle's offset and advances it. It fails on
// handles opened with Open or OpenDir.
func (f *memFile) Write(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("write", true); err != nil {
		return 0, err
	}
	if !f.writable {
		return 0, pathErr("write", f.name, syscall.EBADF)
	}
	n := len(p)
	var err error
	if room := f.fs.room(); room >= 0 {
		// Bytes up to limit are already occupied or fit in the room left.
		limit := f.node.charge() + room
		if end := f.off + int64(n); end > limit {
			n = int(max(min(limit-f.off, int64(n)), 0))
			err = noSpace("write", f.name)
		}
	}
	f.node.writeAt(p[:n], f.off)
	f.off += int64(n)
	return n, err
}

// Seek sets the handle's offset for the next Read or Write; an offset past
// the end is allowed (a Write there leaves a zero-filled hole).
func (f *memFile) Seek(offset int64, whence int) (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("seek", true); err != nil {
		return 0, err
	}
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		offset += int64(len(f.node.data))
	default:
		return 0, pathErr("seek", f.name, syscall.EINVAL)
	}
	if offset < 0 {
		return 0, pathErr("seek", f.name, syscall.EINVAL)
	}
	f.off = offset
	return offset, nil
}

// Sync makes the file's current data durable; on a directory it makes the
// directory's current entries durable.
func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("sync", false); err != nil {
		return err
	}
	f.node.sync()
	return nil
}

// Stat returns the file's metadata.
func (f *memFile) Stat() (os.FileInfo, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("stat", false); err != nil {
		return nil, err
	}
	return f.node.info(filepath.Base(memClean(f.name))), nil
}

// Preallocate reserves [offset, offset+length) against the capacity
// without changing the file size; it fails with an error matching
// ErrNoSpace, reserving nothing, if that does not fit.
func (f *memFile) Preallocate(offset, length int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("fallocate", true); err != nil {
		return err
	}
	if !f.writable {
		return pathErr("fallocate", f.name, syscall.EBADF)
	}
	if offset < 0 || length < 0 {
		return pathErr("fallocate", f.name, syscall.EINVAL)
	}
	end := offset + length
	if grow := end - f.node.charge(); grow > 0 {
		if room := f.fs.room(); room >= 0 && grow > room {
			return noSpace("fallocate", f.name)
		}
		f.node.reserved = end
	}
	return nil
}

// Truncate changes the file's current size. It does not move the offset.
func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("truncate", true); err != nil {
		return err
	}
	if !f.writable {
		return pathErr("truncate", f.name, syscall.EBADF)
	}
	if size < 0 {
		return pathErr("truncate", f.name, syscall.EINVAL)
	}
	if grow := size - f.node.charge(); grow > 0 {
		if room := f.fs.room(); room >= 0 && grow > room {
			return noSpace("truncate", f.name)
		}
	}
	f.node.truncate(size)
	return nil
}

// Close closes the handle. It does not sync anything.
func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return pathErr("close", f.name, os.ErrClosed)
	}
	f.closed = true
	if c := f.fs.open[f.node] - 1; c > 0 {
		f.fs.open[f.node] = c
	} else {
		delete(f.fs.open, f.node)
	}
	return nil
}

// CrashCloneOptions configures MemFS.CrashClone.
type CrashCloneOptions struct {
	// UnsyncedKeepProbability is the probability with which each 4 KiB page
	// of unsynced file data independently survives the crash, modelling
	// out-of-order writeback. Zero (the default) keeps exactly the synced
	// state. Values >= 1 keep every unsynced page. Directory entries always
	// revert to their synced set.
	UnsyncedKeepProbability float64
	// Rand is the source of randomness for UnsyncedKeepProbability. If nil,
	// the global math/rand/v2 source is used, and the result is not
	// reproducible. Pages are visited in a deterministic order, so a seeded
	// Rand gives a reproducible clone.
	Rand *rand.Rand
}

// CrashClone returns a deep, independent copy of m as the disk could look
// after a power cut at this instant. Starting from the root it follows only
// synced directory entries, and each file gets its synced data. With
// opts.UnsyncedKeepProbability > 0, each 4 KiB page of a file whose current
// data differs from its synced data (or lies beyond the synced length) is
// independently kept with that probability: a kept page takes the current
// data, a dropped page keeps the synced data (zeros beyond the synced
// length), and the file's length becomes
// max(synced length, min(end of the last kept page, current length)).
//
// In the clone everything is synced, no locks are held and no handles are
// open. It keeps m's capacity (it is the same disk) and the files'
// preallocated ranges. If the synced entries would place one directory at several paths
// (possible after unsynced renames of directories), it appears only at the
// first of them in sorted depth-first order. Files reachable through
// several names remain hard links.
func (m *MemFS) CrashClone(opts CrashCloneOptions) *MemFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := &crashCloner{
		opts: opts,
		memo: make(map[*memNode]*memNode),
	}
	return &MemFS{root: c.clone(m.root), locks: make(map[string]bool), open: make(map[*memNode]int), capacity: m.capacity}
}

// crashCloner holds the state of one CrashClone walk.
type crashCloner struct {
	opts CrashCloneOptions
	memo map[*memNode]*memNode
}

func (c *crashCloner) keep() bool {
	p := c.opts.UnsyncedKeepProbability
	switch {
	case p >= 1:
		return true
	case c.opts.Rand != nil:
		return c.opts.Rand.Float64() < p
	default:
		return rand.Float64() < p
	}
}

// clone returns the post-crash copy of n, or nil if n is a directory that
// was already placed elsewhere.
func (c *crashCloner) clone(n *memNode) *memNode {
	if done, ok := c.memo[n]; ok {
		if n.isDir {
			return nil
		}
		return done
	}
	cn := &memNode{isDir: n.isDir, mode: n.mode, modTime: n.modTime, reserved: n.reserved}
	c.memo[n] = cn
	if n.isDir {
		cn.children = make(map[string]*memNode, len(n.syncedChildren))
		for _, name := range slices.Sorted(maps.Keys(n.syncedChildren)) {
			if child := c.clone(n.syncedChildren[name]); child != nil {
				cn.children[name] = child
			}
		}
		cn.syncedChildren = maps.Clone(cn.children)
		return cn
	}
	data := c.crashData(n)
	// synced may share memory with n.synced (its bytes are immutable);
	// data must be private because writes modify it in place.
	cn.synced = data[:len(data):len(data)]
	cn.data = bytes.Clone(data)
	return cn
}

// crashData returns the content of file n after the crash. The result may
// alias n.synced and must not be modified.
func (c *crashCloner) crashData(n *memNode) []byte {
	s, d := n.synced, n.data
	if s == nil {
		s = []byte{}
	}
	if c.opts.UnsyncedKeepProbability <= 0 || (!n.dirty && len(d) == len(s)) {
		return s
	}
	ls, lc := int64(len(s)), int64(len(d))
	end := max(ls, lc)
	// While not dirty, no page below the synced length has changed.
	start := int64(0)
	if !n.dirty {
		start = ls / crashPageSize * crashPageSize
	}
	type span struct{ a, b int64 }
	var kept []span
	for a := start; a < lc; a += crashPageSize {
		b := min(a+crashPageSize, end)
		cb := min(b, lc)
		changed := cb > ls || !bytes.Equal(d[a:cb], s[a:cb])
		if changed && c.keep() {
			kept = append(kept, span{a, cb})
		}
	}
	if len(kept) == 0 {
		return s
	}
	out := make([]byte, max(ls, kept[len(kept)-1].b))
	copy(out, s)
	for _, k := range kept {
		copy(out[k.a:k.b], d[k.a:k.b])
	}
	return out
}

// String lists every path of the current tree in sorted order, one per
// line, with file sizes, synced sizes and whether the entry itself is
// synced. It is meant for test failure messages.
func (m *MemFS) String() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	b.WriteString(memSep + "\n")
	dumpDir(&b, m.root, "")
	return b.String()
}

func dumpDir(b *strings.Builder, dir *memNode, prefix string) {
	for _, name := range slices.Sorted(maps.Keys(dir.children)) {
		n := dir.children[name]
		p := prefix + memSep + name
		note := ""
		if dir.syncedChildren[name] != n {
			note = " [entry not synced]"
		}
		if n.isDir {
			fmt.Fprintf(b, "%s%s%s\n", p, memSep, note)
			dumpDir(b, n, p)
			continue
		}
		fmt.Fprintf(b, "%s size=%d synced=%d", p, len(n.data), len(n.synced))
		if n.dirty || len(n.data) != len(n.synced) {
			b.WriteString(" [data not synced]")
		}
		b.WriteString(note + "\n")
	}
}
