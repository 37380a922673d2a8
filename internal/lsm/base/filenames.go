package base

import (
	"fmt"
	"strconv"
	"strings"
)

// FileNum numbers the files of one engine directory. WALs, SSTables and
// MANIFESTs share one increasing counter, so a number names one file.
type FileNum uint64

// String formats the number as it appears in file names.
func (n FileNum) String() string { return fmt.Sprintf("%06d", uint64(n)) }

// FileType says what a file in the engine directory is.
type FileType int

// File types.
const (
	FileTypeUnknown  FileType = iota
	FileTypeLog               // NNNNNN.log: write-ahead log
	FileTypeTable             // NNNNNN.sst: SSTable
	FileTypeManifest          // MANIFEST-NNNNNN
	FileTypeCurrent           // CURRENT: names the live MANIFEST
	FileTypeLock              // LOCK
	FileTypeTemp              // *.tmp: an unfinished file, removed at open
)

// Well-known file names.
const (
	CurrentFileName = "CURRENT"
	LockFileName    = "LOCK"
)

// MakeFilename returns the base name of a numbered file.
func MakeFilename(ft FileType, n FileNum) string {
	switch ft {
	case FileTypeLog:
		return n.String() + ".log"
	case FileTypeTable:
		return n.String() + ".sst"
	case FileTypeManifest:
		return "MANIFEST-" + n.String()
	case FileTypeCurrent:
		return CurrentFileName
	case FileTypeLock:
		return LockFileName
	case FileTypeTemp:
		return n.String() + ".tmp"
	}
	panic("base: unknown file type")
}

// ParseFilename classifies a base file name. ok is false for names the engine
// does not own.
func ParseFilename(name string) (ft FileType, n FileNum, ok bool) {
	switch {
	case name == CurrentFileName:
		return FileTypeCurrent, 0, true
	case name == LockFileName:
		return FileTypeLock, 0, true
	case strings.HasSuffix(name, ".tmp"):
		return FileTypeTemp, 0, true
	case strings.HasPrefix(name, "MANIFEST-"):
		u, err := strconv.ParseUint(name[len("MANIFEST-"):], 10, 64)
		if err != nil {
			return FileTypeUnknown, 0, false
		}
		return FileTypeManifest, FileNum(u), true
	}
	dot := strings.IndexByte(name, '.')
	if dot <= 0 {
		return FileTypeUnknown, 0, false
	}
	u, err := strconv.ParseUint(name[:dot], 10, 64)
	if err != nil {
		return FileTypeUnknown, 0, false
	}
	switch name[dot:] {
	case ".log":
		return FileTypeLog, FileNum(u), true
	case ".sst":
		return FileTypeTable, FileNum(u), true
	}
	return FileTypeUnknown, 0, false
}
