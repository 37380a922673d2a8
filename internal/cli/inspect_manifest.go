package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/manifest"
	"github.com/kayadb/kayadb/internal/record"
	"github.com/kayadb/kayadb/internal/vfs"
)

// internalKeyJSON is an internal key in JSON: the user key ("key" or
// "key_hex"), its sequence number and kind.
type internalKeyJSON struct {
	keyField
	Seq  uint64 `json:"seq"`
	Kind string `json:"kind"`
}

func makeInternalKeyJSON(k base.InternalKey) internalKeyJSON {
	return internalKeyJSON{keyField: makeKeyField(k.UserKey), Seq: uint64(k.Seq()), Kind: kindName(k.Kind())}
}

func (k internalKeyJSON) human() string {
	return fmt.Sprintf("%s#%d,%s", k.keyField.human(), k.Seq, k.Kind)
}

type manifestTable struct {
	Level       int             `json:"level"`
	FileNum     uint64          `json:"file_num"`
	SizeBytes   uint64          `json:"size_bytes"`
	Smallest    internalKeyJSON `json:"smallest"`
	Largest     internalKeyJSON `json:"largest"`
	SmallestSeq uint64          `json:"smallest_seq"`
	LargestSeq  uint64          `json:"largest_seq"`
}

func makeManifestTable(level int, m *manifest.FileMetadata) manifestTable {
	return manifestTable{Level: level, FileNum: uint64(m.FileNum), SizeBytes: m.Size,
		Smallest: makeInternalKeyJSON(m.Smallest), Largest: makeInternalKeyJSON(m.Largest),
		SmallestSeq: uint64(m.SmallestSeq), LargestSeq: uint64(m.LargestSeq)}
}

type deletedTable struct {
	Level   int    `json:"level"`
	FileNum uint64 `json:"file_num"`
}

// manifestEdit is one version edit. Counter fields are present only when
// the edit sets them.
type manifestEdit struct {
	Offset         int64           `json:"offset"`
	Comparator     string          `json:"comparator,omitempty"`
	LogNumber      *uint64         `json:"log_number,omitempty"`
	NextFileNumber *uint64         `json:"next_file_number,omitempty"`
	LastSeq        *uint64         `json:"last_seq,omitempty"`
	Deleted        []deletedTable  `json:"deleted"`
	Added          []manifestTable `json:"added"`
}

type manifestLevel struct {
	Level     int             `json:"level"`
	SizeBytes uint64          `json:"size_bytes"`
	Tables    []manifestTable `json:"tables"`
}

// manifestState is the state after replaying the edits.
type manifestState struct {
	Comparator     string          `json:"comparator"`
	LogNumber      uint64          `json:"log_number"`
	NextFileNumber uint64          `json:"next_file_number"`
	LastSeq        uint64          `json:"last_seq"`
	TableCount     int             `json:"table_count"`
	Levels         []manifestLevel `json:"levels"`
}

type manifestResult struct {
	File            string         `json:"file"`
	LogNumber       uint64         `json:"log_number"`
	LogNumberSource string         `json:"log_number_source"`
	SizeBytes       int64          `json:"size_bytes"`
	Edits           []manifestEdit `json:"edits"`
	EditCount       int            `json:"edit_count"`
	Truncated       bool           `json:"truncated"`
	// Final is the live table set after every decoded edit.
	Final       manifestState `json:"final"`
	End         string        `json:"end"`
	EndOffset   int64         `json:"end_offset"`
	TornTail    *tailInfo     `json:"torn_tail,omitempty"`
	Error       string        `json:"error,omitempty"`
	ErrorOffset *int64        `json:"error_offset,omitempty"`
	Warnings    []string      `json:"warnings"`
	// EncryptionKeys are the key ids of the sealed records (empty: plain).
	EncryptionKeys keyIDs `json:"encryption_keys"`
}

func (a *app) newInspectManifestCmd() *cobra.Command {
	var f inspectFlags
	cmd := &cobra.Command{
		Use:   "manifest PATH",
		Short: "List a MANIFEST's version edits and the live tables they leave per level",
		Long: `List every version edit of a MANIFEST (log number, next file number, last
sequence, tables added and deleted with level, size and key range) and the
set of live tables per level after the last edit.

PATH may also be a database directory: the MANIFEST named by its CURRENT file
is inspected. The log number comes from the file name (MANIFEST-NNNNNN);
for a renamed copy pass --log-num, or kayactl takes it from the first chunk.`,
		Args: exactArgs(1, "PATH"),
	}
	f.registerLogNum(cmd)
	f.keys.register(cmd)
	cmd.Flags().IntVar(&f.limit, "limit", 0, "list at most N edits (all are still applied; 0 = no limit)")
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		if err := f.check(); err != nil {
			return err
		}
		res, err := inspectManifest(args[0], f)
		err = f.keys.withKeyHint(err)
		if res == nil {
			return err
		}
		if a.json {
			if werr := writeJSON(a.stdout, res); werr != nil {
				return werr
			}
		} else {
			renderManifest(a.stdout, res)
		}
		return err
	})
	return cmd
}

func inspectManifest(path string, f inspectFlags) (*manifestResult, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		name, err := manifest.ReadCurrent(vfs.Default, path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, &errNoDatabase{dir: path}
			}
			return nil, err
		}
		path = filepath.Join(path, name)
	}
	size, err := statFile(path)
	if err != nil {
		return nil, err
	}
	logNum, source, warning, err := logNumber(path, f.logNum, base.FileTypeManifest)
	if err != nil {
		return nil, err
	}
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	res := &manifestResult{File: path, LogNumber: uint64(logNum), LogNumberSource: source, SizeBytes: size,
		Edits: []manifestEdit{}, Warnings: []string{}, EncryptionKeys: keyIDs{}}
	if warning != "" {
		res.Warnings = append(res.Warnings, warning)
	}
	sealer, err := f.keys.sealer()
	if err != nil {
		return nil, err
	}
	r := record.NewReader(file, uint64(logNum), path)
	r.SetSealer(sealer)
	var v *manifest.Version
	var readErr error
	for {
		rec, err := r.Next()
		if err != nil {
			if err != io.EOF {
				readErr = err
			}
			break
		}
		off := r.LastRecordOffset()
		res.EncryptionKeys.add(r)
		var e manifest.VersionEdit
		if err := e.Decode(rec); err != nil {
			readErr = base.WithFile(err, path, off)
			break
		}
		if res.EditCount == 0 && len(e.NewFiles) == 0 && !e.HasNextFileNum && e.Comparator == "" {
			res.Warnings = append(res.Warnings, "the first edit is not a snapshot (no comparator, next file number or tables)")
		}
		if e.Comparator != "" && e.Comparator != manifest.ComparatorName {
			res.Warnings = append(res.Warnings, fmt.Sprintf("edit at offset %d names comparator %q; this engine uses %q",
				off, e.Comparator, manifest.ComparatorName))
		}
		nv, err := manifest.Apply(v, nil, &e)
		if err != nil {
			readErr = base.CorruptionErrorf(path, off, "edit does not apply to the tables before it: %v", err)
			break
		}
		v = nv
		st := &res.Final
		if e.Comparator != "" {
			st.Comparator = e.Comparator
		}
		if e.HasLogNumber {
			st.LogNumber = uint64(e.LogNumber)
		}
		if e.HasNextFileNum {
			st.NextFileNumber = uint64(e.NextFileNum)
		}
		if e.HasLastSeq {
			st.LastSeq = uint64(e.LastSeq)
		}
		res.EditCount++
		if f.limit > 0 && len(res.Edits) >= f.limit {
			res.Truncated = true
			continue
		}
		res.Edits = append(res.Edits, makeManifestEdit(off, &e))
	}
	res.EndOffset = r.Offset()
	res.End = endOf(readErr)
	res.Final.Levels = make([]manifestLevel, manifest.NumLevels)
	for l := range res.Final.Levels {
		ml := manifestLevel{Level: l, Tables: []manifestTable{}}
		if v != nil {
			for _, m := range v.Levels[l] {
				ml.Tables = append(ml.Tables, makeManifestTable(l, m))
				ml.SizeBytes += m.Size
			}
			res.Final.TableCount += len(v.Levels[l])
		}
		res.Final.Levels[l] = ml
	}
	if readErr != nil {
		res.Error = readErr.Error()
		res.ErrorOffset = errorOffset(readErr)
		var torn *record.TornTailError
		if errors.As(readErr, &torn) {
			res.TornTail = &tailInfo{Offset: torn.Offset, DroppedBytes: torn.Size - torn.Offset, Reason: torn.Reason}
		}
	} else if res.EndOffset < size {
		if ln, ok := foreignChunk(path, res.EndOffset, logNum); ok {
			if res.EditCount == 0 {
				return nil, usageErrorf("%s starts with a chunk of log number %d, not %d (%s); pass --log-num %d to read it",
					path, ln, logNum, source, ln)
			}
			res.Warnings = append(res.Warnings, fmt.Sprintf(
				"decoding stopped at offset %d: the chunk there belongs to log number %d; %d bytes not decoded",
				res.EndOffset, ln, size-res.EndOffset))
		} else {
			res.Warnings = append(res.Warnings, fmt.Sprintf("%d bytes after the last record at offset %d were not decoded", size-res.EndOffset, res.EndOffset))
		}
	}
	if res.End == endEOF && res.EditCount == 0 {
		res.Warnings = append(res.Warnings, "the MANIFEST holds no edits")
	}
	hint := ""
	switch res.End {
	case endTornTail:
		hint = "a torn tail is an edit that was being written when the process stopped; it was never acknowledged and the engine ignores it"
	case endCorruption:
		hint = "the MANIFEST is damaged; restore the database from a checkpoint"
	}
	return res, damageError(res.End, withPath(path, readErr), hint)
}

func makeManifestEdit(off int64, e *manifest.VersionEdit) manifestEdit {
	me := manifestEdit{Offset: off, Comparator: e.Comparator, Deleted: []deletedTable{}, Added: []manifestTable{}}
	u := func(x uint64) *uint64 { return &x }
	if e.HasLogNumber {
		me.LogNumber = u(uint64(e.LogNumber))
	}
	if e.HasNextFileNum {
		me.NextFileNumber = u(uint64(e.NextFileNum))
	}
	if e.HasLastSeq {
		me.LastSeq = u(uint64(e.LastSeq))
	}
	for _, d := range e.DeletedFiles {
		me.Deleted = append(me.Deleted, deletedTable{Level: d.Level, FileNum: uint64(d.FileNum)})
	}
	for _, n := range e.NewFiles {
		me.Added = append(me.Added, makeManifestTable(n.Level, n.Meta))
	}
	return me
}

func renderTable(t manifestTable) string {
	return fmt.Sprintf("%s %s [%s .. %s] seqs %d-%d", base.FileNum(t.FileNum), humanBytes(t.SizeBytes),
		t.Smallest.human(), t.Largest.human(), t.SmallestSeq, t.LargestSeq)
}

func renderManifest(w io.Writer, res *manifestResult) {
	fmt.Fprintf(w, "MANIFEST %s: log number %d (%s), %d bytes%s\n", res.File, res.LogNumber, res.LogNumberSource, res.SizeBytes, res.EncryptionKeys.human())
	for i, e := range res.Edits {
		fmt.Fprintf(w, "edit %d at offset %d:\n", i+1, e.Offset)
		if e.Comparator != "" {
			fmt.Fprintf(w, "  comparator:       %s\n", e.Comparator)
		}
		if e.LogNumber != nil {
			fmt.Fprintf(w, "  log number:       %d\n", *e.LogNumber)
		}
		if e.NextFileNumber != nil {
			fmt.Fprintf(w, "  next file number: %d\n", *e.NextFileNumber)
		}
		if e.LastSeq != nil {
			fmt.Fprintf(w, "  last sequence:    %d\n", *e.LastSeq)
		}
		for _, d := range e.Deleted {
			fmt.Fprintf(w, "  deleted: L%d %s\n", d.Level, base.FileNum(d.FileNum))
		}
		for _, t := range e.Added {
			fmt.Fprintf(w, "  added:   L%d %s\n", t.Level, renderTable(t))
		}
	}
	if res.Truncated {
		fmt.Fprintf(w, "... %d more edits not listed (--limit)\n", res.EditCount-len(res.Edits))
	}
	st := res.Final
	fmt.Fprintf(w, "live tables after %s: %d\n", plural(res.EditCount, "edit"), st.TableCount)
	fmt.Fprintf(w, "  log number %d, next file number %d, last sequence %d\n", st.LogNumber, st.NextFileNumber, st.LastSeq)
	for _, l := range st.Levels {
		if len(l.Tables) == 0 {
			continue
		}
		fmt.Fprintf(w, "  L%d: %s, %s\n", l.Level, plural(len(l.Tables), "table"), humanBytes(l.SizeBytes))
		for _, t := range l.Tables {
			fmt.Fprintf(w, "    %s\n", renderTable(t))
		}
	}
	switch res.End {
	case endEOF:
		fmt.Fprintf(w, "end: clean end of log at offset %d\n", res.EndOffset)
	case endTornTail:
		t := res.TornTail
		fmt.Fprintf(w, "end: TORN TAIL at offset %d: %d bytes unreadable (%s)\n", t.Offset, t.DroppedBytes, t.Reason)
	default:
		fmt.Fprintf(w, "end: %s after offset %d: %s\n", renderEnd(res.End), res.EndOffset, res.Error)
	}
	renderWarnings(w, res.Warnings)
}
