//go:build !linux

package memtable

func adviseHugePages(b []byte) {}
