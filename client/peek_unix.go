//go:build unix

package client

import (
	"errors"
	"io"
	"syscall"
)

// peekIdle looks at an idle socket without waiting or consuming: nil when
// nothing is there (the connection is open and quiet), io.EOF when the
// server closed it, errUnasked when bytes arrived that no call asked for,
// or the socket's error.
func peekIdle(raw syscall.RawConn) error {
	var b [1]byte
	var n int
	var rerr error
	err := raw.Read(func(fd uintptr) bool {
		for {
			n, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			if rerr != syscall.EINTR {
				return true // never wait: this is a look, not a read
			}
		}
	})
	switch {
	case err != nil:
		return err
	case rerr == syscall.EAGAIN || errors.Is(rerr, syscall.EWOULDBLOCK):
		return nil
	case rerr != nil:
		return rerr
	case n == 0:
		return io.EOF
	default:
		return errUnasked
	}
}
