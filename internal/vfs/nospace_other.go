//go:build !unix

package vfs

func isQuota(error) bool { return false }
