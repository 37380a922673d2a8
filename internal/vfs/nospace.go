package vfs

import (
	"errors"
	"fmt"
	"syscall"
)

// ErrNoSpace is the error a test file system returns to simulate a full
// disk. It wraps syscall.ENOSPC, so code that checks for the operating
// system's error also recognises it.
var ErrNoSpace = fmt.Errorf("vfs: simulated full disk: %w", syscall.ENOSPC)

// IsNoSpace reports whether err means the file system ran out of space (or
// of quota): ENOSPC or EDQUOT from the operating system, or ErrNoSpace.
// Such a failure is transient from the database's point of view: it ends
// when space is freed, unlike a failed fsync or a damaged file.
func IsNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || isQuota(err)
}
