//go:build !linux && !darwin && !dragonfly && !freebsd && !netbsd && !openbsd

package vfs

import (
	"io"
	"os"
	"path/filepath"
	"sync"
)

// processLocks is the fallback lock table for platforms without flock: it
// only excludes other holders in the same process.
var processLocks struct {
	sync.Mutex
	held map[string]bool
}

// lockFile records f's absolute path in a process-wide table. It does not
// exclude other processes.
func lockFile(f *os.File) (io.Closer, error) {
	key, err := filepath.Abs(f.Name())
	if err != nil {
		return nil, err
	}
	processLocks.Lock()
	defer processLocks.Unlock()
	if processLocks.held[key] {
		return nil, lockedError(f.Name())
	}
	if processLocks.held == nil {
		processLocks.held = make(map[string]bool)
	}
	processLocks.held[key] = true
	return &processLock{f: f, key: key}, nil
}

// processLock releases a processLocks entry and closes the file.
type processLock struct {
	f   *os.File
	key string
}

func (l *processLock) Close() error {
	processLocks.Lock()
	f := l.f
	if f != nil {
		l.f = nil
		delete(processLocks.held, l.key)
	}
	processLocks.Unlock()
	if f == nil {
		return &os.PathError{Op: "close", Path: l.key, Err: os.ErrClosed}
	}
	return f.Close()
}
