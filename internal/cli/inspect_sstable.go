package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/sstable"
)

type sstProperties struct {
	NumEntries       uint64 `json:"num_entries"`
	NumDeletions     uint64 `json:"num_deletions"`
	NumDataBlocks    uint64 `json:"num_data_blocks"`
	RawKeySize       uint64 `json:"raw_key_size"`
	RawValueSize     uint64 `json:"raw_value_size"`
	SmallestSeq      uint64 `json:"smallest_seq"`
	LargestSeq       uint64 `json:"largest_seq"`
	IndexSize        uint64 `json:"index_size"`
	FilterSize       uint64 `json:"filter_size"`
	FilterBitsPerKey uint64 `json:"filter_bits_per_key"`
	Compression      string `json:"compression"`
	FormatVersion    uint32 `json:"format_version"`
}

type sstBlock struct {
	Kind        string `json:"kind"`
	Offset      uint64 `json:"offset"`
	Length      uint64 `json:"length"`
	Compression string `json:"compression"`
}

// sstEncryption says whether a table is encrypted, and with which key.
type sstEncryption struct {
	Encrypted bool   `json:"encrypted"`
	KeyID     uint32 `json:"key_id"`
}

type sstLayout struct {
	FileSize uint64     `json:"file_size"`
	Blocks   []sstBlock `json:"blocks"`
}

type sstEntry struct {
	keyField
	Seq      uint64 `json:"seq"`
	Kind     string `json:"kind"`
	ValueLen int    `json:"value_len"`
	valueField
}

type sstResult struct {
	File       string         `json:"file"`
	FileNum    *uint64        `json:"file_num,omitempty"`
	SizeBytes  int64          `json:"size_bytes"`
	Properties *sstProperties `json:"properties,omitempty"`
	// Encryption is read from the footer, with or without the key.
	Encryption *sstEncryption `json:"encryption,omitempty"`
	Layout     *sstLayout     `json:"layout,omitempty"`
	// Entries is present unless --entries=false; it holds at most --limit
	// entries (Truncated tells whether more exist).
	Entries     *[]sstEntry `json:"entries,omitempty"`
	EntriesRead int         `json:"entries_read"`
	Truncated   bool        `json:"truncated"`
	// EntriesError is the error that stopped the listing of entries.
	EntriesError string `json:"entries_error,omitempty"`
	// Checksums is "ok", the error from checking every block, or
	// "not checked" when the table could not be opened.
	Checksums string   `json:"checksums"`
	Error     string   `json:"error,omitempty"`
	Warnings  []string `json:"warnings"`
}

func (a *app) newInspectSSTableCmd() *cobra.Command {
	f := inspectFlags{entries: true}
	cmd := &cobra.Command{
		Use:     "sstable PATH",
		Aliases: []string{"sst"},
		Short:   "Show an SSTable's properties, block layout and entries, and check its checksums",
		Long: `Show an SSTable's properties, its blocks (offsets, lengths, compression) and its
entries (internal keys: user key, sequence number, SET or DEL, value length),
then read every block again to verify its checksum and structure.

Damage exits with status 3 after everything readable has been shown.`,
		Args: exactArgs(1, "PATH"),
	}
	cmd.Flags().BoolVar(&f.entries, "entries", true, "list the table's entries (--entries=false for properties and layout only)")
	cmd.Flags().IntVar(&f.limit, "limit", 0, "list at most N entries (0 = no limit)")
	cmd.Flags().BoolVar(&f.values, "values", false, "also print the values of SET entries")
	f.keys.register(cmd)
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		if err := f.check(); err != nil {
			return err
		}
		res, err := inspectSSTable(args[0], f)
		err = f.keys.withKeyHint(err)
		if res == nil {
			return err
		}
		if a.json {
			if werr := writeJSON(a.stdout, res); werr != nil {
				return werr
			}
		} else {
			renderSSTable(a.stdout, res)
		}
		return err
	})
	return cmd
}

func inspectSSTable(path string, f inspectFlags) (_ *sstResult, retErr error) {
	size, err := statFile(path)
	if err != nil {
		return nil, err
	}
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	res := &sstResult{File: path, SizeBytes: size, Checksums: "not checked", Warnings: []string{}}
	if ft, n, ok := base.ParseFilename(filepath.Base(path)); ok && ft == base.FileTypeTable {
		num := uint64(n)
		res.FileNum = &num
	} else {
		res.Warnings = append(res.Warnings, fmt.Sprintf("the file name %s is not that of an SSTable (NNNNNN.sst)", filepath.Base(path)))
	}
	// firstErr is the first problem found; it decides the exit status.
	var firstErr error
	note := func(err error) {
		if firstErr == nil {
			firstErr = err
			res.Error = err.Error()
		}
	}
	defer func() {
		if retErr == nil && firstErr != nil {
			retErr = sstError(firstErr)
		}
	}()

	if id, enc, err := sstable.TableEncryption(file, size, path); err == nil {
		res.Encryption = &sstEncryption{Encrypted: enc, KeyID: uint32(id)}
	}
	sealer, err := f.keys.sealer()
	if err != nil {
		return nil, err
	}
	r, err := sstable.Open(file, size, sstable.ReaderOptions{FileName: path, Sealer: sealer})
	if err != nil {
		note(err)
		return res, nil
	}
	// The Reader owns the file from here; Close closes it (a second Close
	// of file by the deferred call is harmless).
	defer r.Close()

	p := r.Properties()
	res.Properties = &sstProperties{
		NumEntries: p.NumEntries, NumDeletions: p.NumDeletions, NumDataBlocks: p.NumDataBlocks,
		RawKeySize: p.RawKeySize, RawValueSize: p.RawValueSize,
		SmallestSeq: uint64(p.SmallestSeq), LargestSeq: uint64(p.LargestSeq),
		IndexSize: p.IndexSize, FilterSize: p.FilterSize, FilterBitsPerKey: p.FilterBitsPerKey,
		Compression: p.Compression.String(), FormatVersion: p.FormatVersion,
	}
	if l, err := r.Layout(); err != nil {
		note(err)
	} else {
		lay := &sstLayout{FileSize: l.FileSize, Blocks: make([]sstBlock, 0, len(l.Blocks))}
		for _, b := range l.Blocks {
			lay.Blocks = append(lay.Blocks, sstBlock{Kind: b.Kind, Offset: b.Offset, Length: b.Length, Compression: b.Compression.String()})
		}
		res.Layout = lay
	}

	if f.entries {
		entries := []sstEntry{}
		res.Entries = &entries
		it := r.NewIter(sstable.IterOptions{})
		var dels uint64
		for ok := it.First(); ok; ok = it.Next() {
			k := it.Key()
			res.EntriesRead++
			if k.Kind() == base.KindDelete {
				dels++
			}
			if f.limit > 0 && len(entries) >= f.limit {
				res.Truncated = true
				continue
			}
			e := sstEntry{keyField: makeKeyField(k.UserKey), Seq: uint64(k.Seq()), Kind: kindName(k.Kind()), ValueLen: len(it.Value())}
			if f.values && k.Kind() == base.KindSet {
				e.valueField = makeValueField(it.Value())
			}
			entries = append(entries, e)
		}
		res.Entries = &entries
		if err := it.Close(); err != nil {
			res.EntriesError = err.Error()
			note(err)
		} else {
			if uint64(res.EntriesRead) != p.NumEntries {
				res.Warnings = append(res.Warnings, fmt.Sprintf("read %d entries but the properties say %d", res.EntriesRead, p.NumEntries))
			}
			if dels != p.NumDeletions {
				res.Warnings = append(res.Warnings, fmt.Sprintf("read %d deletions but the properties say %d", dels, p.NumDeletions))
			}
		}
	}

	if err := r.ValidateChecksums(); err != nil {
		res.Checksums = err.Error()
		note(err)
	} else {
		res.Checksums = "ok"
	}
	return res, nil
}

// sstError gives an SSTable problem its exit status: 3 for damage, 1 for
// anything else (an I/O error).
func sstError(err error) error {
	if errors.Is(err, engine.ErrCorruption) {
		return &cliError{code: ExitCorruption, err: err,
			hint: "the table is damaged; everything readable is listed above. Restore the database from a checkpoint, or see `kayactl recover --dry-run`"}
	}
	return &cliError{code: ExitError, err: err}
}

func renderSSTable(w io.Writer, res *sstResult) {
	name := res.File
	if res.FileNum != nil {
		name = fmt.Sprintf("%s (table %d)", res.File, *res.FileNum)
	}
	fmt.Fprintf(w, "SSTable %s: %d bytes\n", name, res.SizeBytes)
	if e := res.Encryption; e != nil && e.Encrypted {
		fmt.Fprintf(w, "encrypted with key id %d\n", e.KeyID)
	}
	if p := res.Properties; p != nil {
		fmt.Fprintln(w, "properties:")
		fmt.Fprintf(w, "  entries:          %d (%d deletions) in %d data blocks\n", p.NumEntries, p.NumDeletions, p.NumDataBlocks)
		fmt.Fprintf(w, "  sequence numbers: %d-%d\n", p.SmallestSeq, p.LargestSeq)
		fmt.Fprintf(w, "  raw key bytes:    %d\n", p.RawKeySize)
		fmt.Fprintf(w, "  raw value bytes:  %d\n", p.RawValueSize)
		fmt.Fprintf(w, "  index size:       %d\n", p.IndexSize)
		if p.FilterSize > 0 {
			fmt.Fprintf(w, "  bloom filter:     %d bytes, %d bits per key\n", p.FilterSize, p.FilterBitsPerKey)
		} else {
			fmt.Fprintln(w, "  bloom filter:     none")
		}
		fmt.Fprintf(w, "  compression:      %s\n", p.Compression)
		fmt.Fprintf(w, "  format version:   %d\n", p.FormatVersion)
	}
	if l := res.Layout; l != nil {
		fmt.Fprintf(w, "layout (%d blocks):\n", len(l.Blocks))
		fmt.Fprintf(w, "  %10s  %-10s  %8s  %s\n", "offset", "kind", "length", "compression")
		for _, b := range l.Blocks {
			fmt.Fprintf(w, "  %10d  %-10s  %8d  %s\n", b.Offset, b.Kind, b.Length, b.Compression)
		}
	}
	if res.Entries != nil {
		fmt.Fprintf(w, "entries (%d read):\n", res.EntriesRead)
		for _, e := range *res.Entries {
			line := fmt.Sprintf("  %s#%d,%s", e.keyField.human(), e.Seq, e.Kind)
			if e.Kind == "SET" {
				if v, ok := e.valueField.human(); ok {
					line += " = " + v
				} else {
					line += fmt.Sprintf(" (value %d bytes)", e.ValueLen)
				}
			}
			fmt.Fprintln(w, line)
		}
		if res.Truncated {
			fmt.Fprintf(w, "  ... %d more entries not listed (--limit)\n", res.EntriesRead-len(*res.Entries))
		}
		if res.EntriesError != "" {
			fmt.Fprintf(w, "  ERROR: listing stopped: %s\n", res.EntriesError)
		}
	}
	fmt.Fprintf(w, "checksums: %s\n", res.Checksums)
	if res.Error != "" && res.Error != res.Checksums && res.Error != res.EntriesError {
		fmt.Fprintf(w, "ERROR: %s\n", res.Error)
	}
	renderWarnings(w, res.Warnings)
}
