//go:build !unix

package client

import "syscall"

// peekIdle cannot look at a socket without reading it here: an idle
// connection the server closed is found when a call is written on it (the
// call then fails as maybe sent).
func peekIdle(syscall.RawConn) error { return nil }
