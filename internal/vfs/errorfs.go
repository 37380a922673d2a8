package vfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
)

// OpKind identifies an FS or File operation seen by an Injector.
type OpKind int

// The operations an Injector sees: one per FS method (OpCreate ... OpLock)
// and one per File method (OpFileRead ... OpFileClose).
const (
	OpCreate OpKind = iota
	OpOpen
	OpOpenReadWrite
	OpOpenDir
	OpRemove
	OpRemoveAll
	OpRename
	OpLink
	OpMkdirAll
	OpList
	OpStat
	OpLock
	OpFileRead
	OpFileReadAt
	OpFileWrite
	OpFileSync
	OpFileStat
	OpFilePreallocate
	OpFileTruncate
	OpFileClose
	numOpKinds
)

var opKindNames = [numOpKinds]string{
	OpCreate:          "Create",
	OpOpen:            "Open",
	OpOpenReadWrite:   "OpenReadWrite",
	OpOpenDir:         "OpenDir",
	OpRemove:          "Remove",
	OpRemoveAll:       "RemoveAll",
	OpRename:          "Rename",
	OpLink:            "Link",
	OpMkdirAll:        "MkdirAll",
	OpList:            "List",
	OpStat:            "Stat",
	OpLock:            "Lock",
	OpFileRead:        "File.Read",
	OpFileReadAt:      "File.ReadAt",
	OpFileWrite:       "File.Write",
	OpFileSync:        "File.Sync",
	OpFileStat:        "File.Stat",
	OpFilePreallocate: "File.Preallocate",
	OpFileTruncate:    "File.Truncate",
	OpFileClose:       "File.Close",
}

// String returns the operation's name, such as "Create" or "File.Sync".
func (k OpKind) String() string {
	if k >= 0 && k < numOpKinds {
		return opKindNames[k]
	}
	return fmt.Sprintf("OpKind(%d)", int(k))
}

// IsWrite reports whether the operation mutates file system state that can
// become durable: Create, Remove, RemoveAll, Rename, Link, MkdirAll,
// File.Write, File.Sync, File.Preallocate and File.Truncate.
func (k OpKind) IsWrite() bool {
	switch k {
	case OpCreate, OpRemove, OpRemoveAll, OpRename, OpLink, OpMkdirAll,
		OpFileWrite, OpFileSync, OpFilePreallocate, OpFileTruncate:
		return true
	}
	return false
}

// Op describes an operation about to be performed through an error FS.
type Op struct {
	// Kind is the operation.
	Kind OpKind
	// Path is the name passed to the FS method, or the name the file was
	// opened with for File methods. For Rename and Link it is the old name.
	Path string
	// NewPath is the new name for Rename and Link, and empty otherwise.
	NewPath string
	// Offset is the file offset: the ReadAt argument, the handle's offset
	// for Read and Write (as tracked by the wrapper), the Preallocate
	// offset, or the new size for Truncate. It is zero otherwise.
	Offset int64
	// Len is len(p) for Read, ReadAt and Write and the length for
	// Preallocate. It is zero otherwise.
	Len int
}

// String formats the operation for logs and test failures.
func (op Op) String() string {
	switch op.Kind {
	case OpRename, OpLink:
		return fmt.Sprintf("%s(%q, %q)", op.Kind, op.Path, op.NewPath)
	case OpFileRead, OpFileReadAt, OpFileWrite, OpFilePreallocate:
		return fmt.Sprintf("%s(%q, off=%d, len=%d)", op.Kind, op.Path, op.Offset, op.Len)
	case OpFileTruncate:
		return fmt.Sprintf("%s(%q, size=%d)", op.Kind, op.Path, op.Offset)
	default:
		return fmt.Sprintf("%s(%q)", op.Kind, op.Path)
	}
}

// Injector decides whether an operation fails. MaybeError is called before
// every operation of an error FS, with no lock held, possibly from several
// goroutines at once; a non-nil result is returned to the caller instead of
// performing the operation.
type Injector interface {
	MaybeError(op Op) error
}

// InjectorFunc adapts a function to the Injector interface.
type InjectorFunc func(op Op) error

// MaybeError returns f(op).
func (f InjectorFunc) MaybeError(op Op) error { return f(op) }

// ErrInjected is the error returned by the injectors of this package.
var ErrInjected = errors.New("vfs: injected error")

// PartialWrite returns an error that an Injector may return for a
// File.Write: the error FS then writes the first n bytes (at most all of
// them) and returns that count with err, as a write(2) that runs out of
// space part way does. For any other operation the error FS returns err.
func PartialWrite(n int, err error) error { return &partialWrite{n: n, err: err} }

type partialWrite struct {
	n   int
	err error
}

func (p *partialWrite) Error() string {
	return fmt.Sprintf("partial write of %d bytes: %v", p.n, p.err)
}
func (p *partialWrite) Unwrap() error { return p.err }

// unpartial returns the error an operation other than Write returns for an
// injected error.
func unpartial(err error) error {
	var pw *partialWrite
	if errors.As(err, &pw) {
		return pw.err
	}
	return err
}

// WriteOps is a predicate for OnIndex that matches the operations for which
// Op.Kind.IsWrite is true.
func WriteOps(op Op) bool { return op.Kind.IsWrite() }

// IndexInjector fails the n-th (0-based) operation matching a predicate with
// ErrInjected. It is safe for concurrent use.
type IndexInjector struct {
	// Sticky makes every matching operation after the n-th fail too. Set it
	// before the injector is used.
	Sticky bool
	// Err is the error returned; nil means ErrInjected. Set it before the
	// injector is used (ErrNoSpace simulates a full disk).
	Err error

	n     int64
	pred  func(Op) bool
	count atomic.Int64
}

// OnIndex returns an IndexInjector that fails the n-th (0-based) operation
// for which pred returns true. A nil pred matches every operation. A
// negative n never fails, which turns the injector into a counter of
// matching operations (see Count).
func OnIndex(n int64, pred func(Op) bool) *IndexInjector {
	return &IndexInjector{n: n, pred: pred}
}

// MaybeError counts op if it matches and returns Err (ErrInjected by
// default) if it is the chosen one (or a later one, when Sticky).
func (ii *IndexInjector) MaybeError(op Op) error {
	if ii.pred != nil && !ii.pred(op) {
		return nil
	}
	i := ii.count.Add(1) - 1
	if i == ii.n || (ii.Sticky && i > ii.n) {
		if ii.Err != nil {
			return ii.Err
		}
		return ErrInjected
	}
	return nil
}

// Count returns how many matching operations the injector has seen,
// including failed ones.
func (ii *IndexInjector) Count() int64 { return ii.count.Load() }

// NewErrorFS returns an FS that calls inj.MaybeError before every FS and
// File operation on fs and, if it returns an error, returns that error
// without performing the operation. Files it opens are wrapped the same
// way. Closing the io.Closer returned by Lock is not intercepted, nor are
// File.Seek and DiskUsage, which reports the space of fs (see DiskUsageFS). A nil inj
// never fails. An injected error made with PartialWrite makes a Write
// write part of its bytes before failing.
//
// The wrapper holds no lock while calling the injector, so the injector may
// call into the underlying FS, for example MemFS.CrashClone.
func NewErrorFS(fs FS, inj Injector) FS {
	if inj == nil {
		inj = InjectorFunc(func(Op) error { return nil })
	}
	return &errorFS{fs: fs, inj: inj}
}

// errorFS is the FS returned by NewErrorFS.
type errorFS struct {
	fs  FS
	inj Injector
}

func (e *errorFS) check(kind OpKind, path string) error {
	return unpartial(e.inj.MaybeError(Op{Kind: kind, Path: path}))
}

// DiskUsage reports the space of the wrapped FS (see DiskUsage).
func (e *errorFS) DiskUsage(path string) (Usage, error) { return DiskUsage(e.fs, path) }

func (e *errorFS) wrap(f File, err error, name string) (File, error) {
	if err != nil {
		return nil, err
	}
	return &errorFile{f: f, inj: e.inj, name: name}, nil
}

// Create implements FS.
func (e *errorFS) Create(name string) (File, error) {
	if err := e.check(OpCreate, name); err != nil {
		return nil, err
	}
	f, err := e.fs.Create(name)
	return e.wrap(f, err, name)
}

// Open implements FS.
func (e *errorFS) Open(name string) (File, error) {
	if err := e.check(OpOpen, name); err != nil {
		return nil, err
	}
	f, err := e.fs.Open(name)
	return e.wrap(f, err, name)
}

// OpenReadWrite implements FS.
func (e *errorFS) OpenReadWrite(name string) (File, error) {
	if err := e.check(OpOpenReadWrite, name); err != nil {
		return nil, err
	}
	f, err := e.fs.OpenReadWrite(name)
	return e.wrap(f, err, name)
}

// OpenDir implements FS.
func (e *errorFS) OpenDir(name string) (File, error) {
	if err := e.check(OpOpenDir, name); err != nil {
		return nil, err
	}
	f, err := e.fs.OpenDir(name)
	return e.wrap(f, err, name)
}

// Remove implements FS.
func (e *errorFS) Remove(name string) error {
	if err := e.check(OpRemove, name); err != nil {
		return err
	}
	return e.fs.Remove(name)
}

// RemoveAll implements FS.
func (e *errorFS) RemoveAll(name string) error {
	if err := e.check(OpRemoveAll, name); err != nil {
		return err
	}
	return e.fs.RemoveAll(name)
}

// Rename implements FS.
func (e *errorFS) Rename(oldname, newname string) error {
	if err := unpartial(e.inj.MaybeError(Op{Kind: OpRename, Path: oldname, NewPath: newname})); err != nil {
		return err
	}
	return e.fs.Rename(oldname, newname)
}

// Link implements FS.
func (e *errorFS) Link(oldname, newname string) error {
	if err := unpartial(e.inj.MaybeError(Op{Kind: OpLink, Path: oldname, NewPath: newname})); err != nil {
		return err
	}
	return e.fs.Link(oldname, newname)
}

// MkdirAll implements FS.
func (e *errorFS) MkdirAll(dir string, perm os.FileMode) error {
	if err := e.check(OpMkdirAll, dir); err != nil {
		return err
	}
	return e.fs.MkdirAll(dir, perm)
}

// List implements FS.
func (e *errorFS) List(dir string) ([]string, error) {
	if err := e.check(OpList, dir); err != nil {
		return nil, err
	}
	return e.fs.List(dir)
}

// Stat implements FS.
func (e *errorFS) Stat(name string) (os.FileInfo, error) {
	if err := e.check(OpStat, name); err != nil {
		return nil, err
	}
	return e.fs.Stat(name)
}

// Lock implements FS.
func (e *errorFS) Lock(name string) (io.Closer, error) {
	if err := e.check(OpLock, name); err != nil {
		return nil, err
	}
	return e.fs.Lock(name)
}

// errorFile is a File opened through an errorFS.
type errorFile struct {
	f    File
	inj  Injector
	name string
	// off tracks the handle's offset for Op.Offset of Read and Write. Like
	// the offset itself, it must not be used concurrently.
	off int64
}

// Read implements File.
func (e *errorFile) Read(p []byte) (int, error) {
	if err := unpartial(e.inj.MaybeError(Op{Kind: OpFileRead, Path: e.name, Offset: e.off, Len: len(p)})); err != nil {
		return 0, err
	}
	n, err := e.f.Read(p)
	e.off += int64(n)
	return n, err
}

// ReadAt implements File.
func (e *errorFile) ReadAt(p []byte, off int64) (int, error) {
	if err := unpartial(e.inj.MaybeError(Op{Kind: OpFileReadAt, Path: e.name, Offset: off, Len: len(p)})); err != nil {
		return 0, err
	}
	return e.f.ReadAt(p, off)
}

// Write implements File.
func (e *errorFile) Write(p []byte) (int, error) {
	if err := e.inj.MaybeError(Op{Kind: OpFileWrite, Path: e.name, Offset: e.off, Len: len(p)}); err != nil {
		var pw *partialWrite
		if !errors.As(err, &pw) {
			return 0, err
		}
		n, werr := e.f.Write(p[:max(min(pw.n, len(p)), 0)])
		e.off += int64(n)
		if werr != nil {
			return n, werr
		}
		return n, pw.err
	}
	n, err := e.f.Write(p)
	e.off += int64(n)
	return n, err
}

// Seek implements File. It is not intercepted: it changes no state that
// can become durable.
func (e *errorFile) Seek(offset int64, whence int) (int64, error) {
	off, err := e.f.Seek(offset, whence)
	if err == nil {
		e.off = off
	}
	return off, err
}

// Sync implements File.
func (e *errorFile) Sync() error {
	if err := unpartial(e.inj.MaybeError(Op{Kind: OpFileSync, Path: e.name})); err != nil {
		return err
	}
	return e.f.Sync()
}

// Stat implements File.
func (e *errorFile) Stat() (os.FileInfo, error) {
	if err := unpartial(e.inj.MaybeError(Op{Kind: OpFileStat, Path: e.name})); err != nil {
		return nil, err
	}
	return e.f.Stat()
}

// Preallocate implements File.
func (e *errorFile) Preallocate(offset, length int64) error {
	if err := unpartial(e.inj.MaybeError(Op{Kind: OpFilePreallocate, Path: e.name, Offset: offset, Len: int(length)})); err != nil {
		return err
	}
	return e.f.Preallocate(offset, length)
}

// Truncate implements File.
func (e *errorFile) Truncate(size int64) error {
	if err := unpartial(e.inj.MaybeError(Op{Kind: OpFileTruncate, Path: e.name, Offset: size})); err != nil {
		return err
	}
	return e.f.Truncate(size)
}

// Close implements File. If the injector fails the close, the underlying
// file stays open.
func (e *errorFile) Close() error {
	if err := unpartial(e.inj.MaybeError(Op{Kind: OpFileClose, Path: e.name})); err != nil {
		return err
	}
	return e.f.Close()
}
