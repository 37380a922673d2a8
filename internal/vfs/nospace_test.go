package vfs

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
)

func TestIsNoSpace(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{ErrNoSpace, true},
		{fmt.Errorf("writing x: %w", ErrNoSpace), true},
		{&os.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}, true},
		{&os.PathError{Op: "write", Path: "/x", Err: syscall.EDQUOT}, true},
		{&os.PathError{Op: "fdatasync", Path: "/x", Err: syscall.EIO}, false},
		{errors.New("no space"), false},
		{nil, false},
	} {
		if got := IsNoSpace(tc.err); got != tc.want {
			t.Errorf("IsNoSpace(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
