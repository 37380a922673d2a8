package cli

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/spf13/cobra"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/record"
)

// inspectFlags are the flags shared by the inspect subcommands.
type inspectFlags struct {
	logNum  int64 // --log-num; -1 = from the file name
	limit   int
	values  bool
	entries bool
	keys    keyFlags // --encryption-key-file, --encryption-keyring-file
}

func (a *app) newInspectCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inspect wal|sstable|manifest PATH",
		Short: "Decode a WAL, SSTable or MANIFEST file for humans (never opens the database)",
		Long: `Decode one engine file and list its contents. inspect reads only the file it
is given: it does not open the database or take its lock, so it works on a
live directory, on copies and on damaged files. Everything decodable up to
the first damage is listed; the damage is then reported with its offset and
kayactl exits with status 3.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("inspect needs a file type: wal, sstable or manifest")
			}
			return usageErrorf("unknown file type %q for inspect; want wal, sstable or manifest", args[0])
		},
	}
	cmd.AddCommand(a.newInspectWALCmd(), a.newInspectSSTableCmd(), a.newInspectManifestCmd())
	return cmd
}

// keyIDs collects the key ids of sealed records, for the encryption_keys
// field of a log's result.
type keyIDs []uint32

func (k *keyIDs) add(r *record.Reader) {
	if id, sealed := r.LastKey(); sealed && !slices.Contains(*k, uint32(id)) {
		*k = append(*k, uint32(id))
		slices.Sort(*k)
	}
}

// human says which keys sealed the records ("" for a plain log).
func (k keyIDs) human() string {
	if len(k) == 0 {
		return ""
	}
	return fmt.Sprintf(", encrypted (key ids %v)", []uint32(k))
}

func (f *inspectFlags) registerLogNum(cmd *cobra.Command) {
	cmd.Flags().Int64Var(&f.logNum, "log-num", -1,
		"log number to read the file as (default: from the file name, else from its first chunk)")
}

func (f *inspectFlags) check() error {
	if f.limit < 0 {
		return usageErrorf("--limit must be >= 0 (got %d)", f.limit)
	}
	return nil
}

// logNumber decides which log number to read a WAL or MANIFEST file as:
// --log-num when given, else the number in the file name, else the number
// stamped in the file's first chunk (when that chunk's checksum is valid).
// It also returns where the number came from, and a warning when the file
// name says the file is of another type than want.
func logNumber(path string, flag int64, want base.FileType) (num base.FileNum, source, warning string, err error) {
	ft, n, ok := base.ParseFilename(filepath.Base(path))
	if ok && ft != want && ft != base.FileTypeTemp {
		warning = fmt.Sprintf("the file name %s is not that of a %s", filepath.Base(path), typeName(want))
	}
	if flag >= 0 {
		return base.FileNum(flag), "from --log-num", warning, nil
	}
	if ok && (ft == base.FileTypeLog || ft == base.FileTypeManifest) {
		return n, "from the file name", warning, nil
	}
	if n, ok := firstChunkLogNum(path); ok {
		return n, "from the first chunk (the file name has no log number)", warning, nil
	}
	// The first chunk is damaged too: the reader reports that damage at
	// offset 0 whatever number it is given.
	return 0, "unknown (the file name has no log number and the first chunk is unreadable)", warning, nil
}

func typeName(ft base.FileType) string {
	switch ft {
	case base.FileTypeLog:
		return "WAL (NNNNNN.log)"
	case base.FileTypeManifest:
		return "MANIFEST (MANIFEST-NNNNNN)"
	case base.FileTypeTable:
		return "SSTable (NNNNNN.sst)"
	}
	return "known engine file"
}

// firstChunkLogNum returns the log number (low 32 bits) stamped in the first
// chunk of a log file when that chunk's checksum is valid.
func firstChunkLogNum(path string) (base.FileNum, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	var h [record.HeaderSize]byte
	if _, err := io.ReadFull(f, h[:]); err != nil {
		return 0, false
	}
	n := int(binary.LittleEndian.Uint16(h[4:6]))
	if n > record.BlockSize-record.HeaderSize {
		return 0, false
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(f, payload); err != nil {
		return 0, false
	}
	if base.NewCRC(h[6:]).Update(payload).Value() != binary.LittleEndian.Uint32(h[0:4]) {
		return 0, false
	}
	return base.FileNum(binary.LittleEndian.Uint32(h[7:11])), true
}

// foreignChunk looks at the bytes at off in path: when they start a chunk
// with a valid checksum that belongs to another log number, it returns that
// number.
func foreignChunk(path string, off int64, logNum base.FileNum) (uint32, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	var h [record.HeaderSize]byte
	if _, err := f.ReadAt(h[:], off); err != nil {
		return 0, false
	}
	n := int(binary.LittleEndian.Uint16(h[4:6]))
	if n > record.BlockSize-record.HeaderSize {
		return 0, false
	}
	payload := make([]byte, n)
	if _, err := f.ReadAt(payload, off+record.HeaderSize); err != nil {
		return 0, false
	}
	if base.NewCRC(h[6:]).Update(payload).Value() != binary.LittleEndian.Uint32(h[0:4]) {
		return 0, false
	}
	ln := binary.LittleEndian.Uint32(h[7:11])
	if ln == uint32(logNum) {
		return 0, false
	}
	return ln, true
}

// End states of a decoded log or table.
const (
	endEOF        = "eof"
	endTornTail   = "torn_tail"
	endCorruption = "corruption"
	endError      = "error"
)

// endOf classifies the error that ended a log read.
func endOf(err error) string {
	var torn *record.TornTailError
	switch {
	case err == nil || err == io.EOF:
		return endEOF
	case errors.As(err, &torn):
		return endTornTail
	case errors.Is(err, engine.ErrCorruption):
		return endCorruption
	default:
		return endError
	}
}

// damageError turns the end of a decoded file into the command's error: a
// torn tail or corruption exits with 3, an I/O error with 1.
func damageError(end string, err error, hint string) error {
	switch end {
	case endEOF:
		return nil
	case endTornTail, endCorruption:
		return &cliError{code: ExitCorruption, err: err, hint: hint}
	default:
		return &cliError{code: ExitError, err: err}
	}
}

// statFile checks that path is a regular file and returns its size.
func statFile(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, &cliError{code: ExitNotFound, err: fmt.Errorf("%s does not exist", path)}
		}
		return 0, err
	}
	if st.IsDir() {
		return 0, usageErrorf("%s is a directory; give the path of a file", path)
	}
	return st.Size(), nil
}
