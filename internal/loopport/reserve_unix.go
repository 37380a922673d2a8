//go:build unix

package loopport

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
)

// held keeps the reservation files open (and so their locks held) for the
// life of the process; the kernel drops the locks when it exits, however
// it exits.
var held struct {
	sync.Mutex
	files []*os.File
}

// reserve takes an exclusive, non-blocking flock on a per-port file under
// the temporary directory. It fails when another Pick, in any process,
// holds it (a flock belongs to the open file, so a second open in the same
// process conflicts too). When the directory cannot be used, it reserves
// nothing and says yes: Pick then only checks that the port is free, as
// before.
func reserve(port int) bool {
	dir := filepath.Join(os.TempDir(), "kayadb-loopport")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return true
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return true
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return err != syscall.EWOULDBLOCK
	}
	held.Lock()
	held.files = append(held.files, f)
	held.Unlock()
	return true
}
