//go:build linux

package memtable

import (
	"syscall"
	"unsafe"
)

// adviseHugePages asks the kernel to back the arena with transparent huge
// pages. A memtable is accessed at random across tens of megabytes; with 4
// KiB pages nearly every skiplist step is a TLB miss, which under
// virtualization (nested page tables) costs more than the cache miss itself.
// The advice is best effort: errors are ignored.
func adviseHugePages(b []byte) {
	const huge = 2 << 20
	if len(b) < 2*huge {
		return
	}
	start := uintptr(unsafe.Pointer(&b[0]))
	end := start + uintptr(len(b))
	alignedStart := (start + huge - 1) &^ (huge - 1)
	alignedEnd := end &^ (huge - 1)
	if alignedEnd <= alignedStart {
		return
	}
	_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, alignedStart, alignedEnd-alignedStart, 14 /* MADV_HUGEPAGE */)
}
