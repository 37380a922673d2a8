package cli

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/batch"
	"github.com/kayadb/kayadb/internal/record"
)

type walOp struct {
	Kind string `json:"kind"`
	keyField
	// ValueLen is set for SET operations only.
	ValueLen *int `json:"value_len,omitempty"`
	// The value itself, with --values (SET only).
	valueField
}

type walRecord struct {
	Offset int64   `json:"offset"`
	Seq    uint64  `json:"seq"`
	Count  int     `json:"count"`
	Ops    []walOp `json:"ops"`
}

// tailInfo describes a torn log tail.
type tailInfo struct {
	Offset       int64  `json:"offset"`
	DroppedBytes int64  `json:"dropped_bytes"`
	Reason       string `json:"reason"`
}

type walResult struct {
	File            string      `json:"file"`
	LogNumber       uint64      `json:"log_number"`
	LogNumberSource string      `json:"log_number_source"`
	SizeBytes       int64       `json:"size_bytes"`
	Records         []walRecord `json:"records"`
	// RecordCount counts every batch decoded; Records may hold fewer
	// (--limit), in which case Truncated is true.
	RecordCount int    `json:"record_count"`
	Truncated   bool   `json:"truncated"`
	OpCount     int    `json:"op_count"`
	FirstSeq    uint64 `json:"first_seq"`
	LastSeq     uint64 `json:"last_seq"`
	SyncMarkers int    `json:"sync_markers"`
	// End is "eof" (clean end), "torn_tail", "corruption" or "error" (I/O).
	End string `json:"end"`
	// EndOffset is the offset just past the last good record.
	EndOffset   int64     `json:"end_offset"`
	TornTail    *tailInfo `json:"torn_tail,omitempty"`
	Error       string    `json:"error,omitempty"`
	ErrorOffset *int64    `json:"error_offset,omitempty"`
	Warnings    []string  `json:"warnings"`
	// EncryptionKeys are the key ids of the sealed records (empty: plain).
	EncryptionKeys keyIDs `json:"encryption_keys"`
}

func (a *app) newInspectWALCmd() *cobra.Command {
	var f inspectFlags
	cmd := &cobra.Command{
		Use:   "wal PATH",
		Short: "List the batches (SET/DEL operations) and sync markers of a WAL file",
		Long: `List the records of a write-ahead log: each batch with its file offset, first
sequence number and operations (SET with the value length, DEL), and the
sync markers written when the WAL was closed cleanly.

The log number (stamped in every chunk) comes from the file name
(NNNNNN.log); for a renamed copy pass --log-num, or kayactl takes it from the
file's first chunk.

A torn tail (an unfinished write at the end, normal for the newest WAL after
a crash) and corruption both exit with status 3; the JSON "end" field tells
them apart.`,
		Args: exactArgs(1, "PATH"),
	}
	f.registerLogNum(cmd)
	f.keys.register(cmd)
	cmd.Flags().IntVar(&f.limit, "limit", 0, "list at most N batches (all are still decoded and checked; 0 = no limit)")
	cmd.Flags().BoolVar(&f.values, "values", false, "also print the values of SET operations")
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		if err := f.check(); err != nil {
			return err
		}
		res, err := inspectWAL(args[0], f)
		err = f.keys.withKeyHint(err)
		if res == nil {
			return err
		}
		if a.json {
			if werr := writeJSON(a.stdout, res); werr != nil {
				return werr
			}
		} else {
			renderWAL(a.stdout, res)
		}
		return err
	})
	return cmd
}

// inspectWAL decodes a WAL file. It returns the result (nil when the file
// could not be read at all) and the error that ended decoding, if any.
func inspectWAL(path string, f inspectFlags) (*walResult, error) {
	size, err := statFile(path)
	if err != nil {
		return nil, err
	}
	logNum, source, warning, err := logNumber(path, f.logNum, base.FileTypeLog)
	if err != nil {
		return nil, err
	}
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	res := &walResult{File: path, LogNumber: uint64(logNum), LogNumberSource: source, SizeBytes: size,
		Records: []walRecord{}, Warnings: []string{}, EncryptionKeys: keyIDs{}}
	if warning != "" {
		res.Warnings = append(res.Warnings, warning)
	}
	sealer, err := f.keys.sealer()
	if err != nil {
		return nil, err
	}
	r := record.NewReader(file, uint64(logNum), path)
	r.SetSealer(sealer)
	var prevEnd base.SeqNum
	var readErr error
	warnedMarker := false
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
		if len(rec) == 0 {
			res.SyncMarkers++
			continue
		}
		if res.SyncMarkers > 0 && !warnedMarker {
			warnedMarker = true
			res.Warnings = append(res.Warnings, fmt.Sprintf("batch at offset %d follows a sync marker (the WAL was written to after it was closed)", off))
		}
		wr, seq, count, err := decodeWALBatch(rec, f.values)
		if err != nil {
			readErr = base.WithFile(err, path, off)
			break
		}
		if seq <= prevEnd {
			readErr = base.CorruptionErrorf(path, off, "batch sequence number %d does not follow the previous batch's last %d", seq, prevEnd)
			break
		}
		wr.Offset = off
		if res.RecordCount == 0 {
			res.FirstSeq = uint64(seq)
		}
		prevEnd = seq + base.SeqNum(count) - 1
		res.LastSeq = uint64(prevEnd)
		res.RecordCount++
		res.OpCount += int(count)
		if f.limit > 0 && len(res.Records) >= f.limit {
			res.Truncated = true
		} else {
			res.Records = append(res.Records, wr)
		}
	}
	res.EndOffset = r.Offset()
	res.End = endOf(readErr)
	if readErr != nil {
		res.Error = readErr.Error()
		res.ErrorOffset = errorOffset(readErr)
		var torn *record.TornTailError
		if errors.As(readErr, &torn) {
			res.TornTail = &tailInfo{Offset: torn.Offset, DroppedBytes: torn.Size - torn.Offset, Reason: torn.Reason}
		}
	} else if res.EndOffset < size {
		// The reader stops quietly at a valid chunk of another log number.
		if ln, ok := foreignChunk(path, res.EndOffset, logNum); ok {
			if res.RecordCount == 0 && res.SyncMarkers == 0 {
				return nil, usageErrorf("%s starts with a chunk of log number %d, not %d (%s); pass --log-num %d to read it",
					path, ln, logNum, source, ln)
			}
			res.Warnings = append(res.Warnings, fmt.Sprintf(
				"decoding stopped at offset %d: the chunk there belongs to log number %d (a leftover of an earlier file); %d bytes not decoded",
				res.EndOffset, ln, size-res.EndOffset))
		} else {
			res.Warnings = append(res.Warnings, fmt.Sprintf("%d bytes after the last record at offset %d were not decoded", size-res.EndOffset, res.EndOffset))
		}
	}
	hint := ""
	switch {
	case res.End == endTornTail && res.RecordCount == 0 && res.SyncMarkers == 0:
		hint = "no record could be decoded: this may not be a KayaDB WAL (or pass the right --log-num)"
	case res.End == endTornTail:
		hint = "a torn tail is normal at the end of the newest WAL after a crash (recovery drops it); in an older WAL it means lost writes"
	case res.End == endCorruption:
		hint = fmt.Sprintf("the WAL is damaged at offset %d; the records before it are listed above", derefOr(res.ErrorOffset, res.EndOffset))
	}
	return res, damageError(res.End, withPath(path, readErr), hint)
}

// decodeWALBatch decodes one WAL record as a batch.
func decodeWALBatch(rec []byte, values bool) (walRecord, base.SeqNum, uint32, error) {
	seq, count, err := batch.Validate(rec)
	if err != nil {
		return walRecord{}, 0, 0, err
	}
	if count == 0 {
		return walRecord{}, 0, 0, base.CorruptionErrorf("", 0, "empty batch in WAL")
	}
	br, err := batch.NewReader(rec)
	if err != nil {
		return walRecord{}, 0, 0, err
	}
	wr := walRecord{Seq: uint64(br.SeqNum()), Count: int(count), Ops: make([]walOp, 0, count)}
	for {
		kind, key, value, ok, err := br.Next()
		if err != nil {
			return walRecord{}, 0, 0, err
		}
		if !ok {
			break
		}
		op := walOp{Kind: kindName(kind), keyField: makeKeyField(key)}
		if kind == base.KindSet {
			n := len(value)
			op.ValueLen = &n
			if values {
				op.valueField = makeValueField(value)
			}
		}
		wr.Ops = append(wr.Ops, op)
	}
	return wr, seq, count, nil
}

// errorOffset returns the offset a decoding error points at.
func errorOffset(err error) *int64 {
	var torn *record.TornTailError
	if errors.As(err, &torn) {
		o := torn.Offset
		return &o
	}
	var ce *base.CorruptionError
	if errors.As(err, &ce) && ce.Offset >= 0 {
		o := ce.Offset
		return &o
	}
	return nil
}

// withPath names the file in a torn-tail error (corruption errors name it
// already).
func withPath(path string, err error) error {
	var torn *record.TornTailError
	if errors.As(err, &torn) {
		return fmt.Errorf("%s: %w", path, err)
	}
	return err
}

func derefOr(p *int64, def int64) int64 {
	if p != nil {
		return *p
	}
	return def
}

// human renders a keyField for humans (as formatBytes does).
func (k keyField) human() string {
	if k.Key != nil {
		return formatBytes([]byte(*k.Key))
	}
	if k.KeyHex != nil {
		return "0x" + *k.KeyHex
	}
	return ""
}

func (v valueField) human() (string, bool) {
	if v.Value != nil {
		return formatBytes([]byte(*v.Value)), true
	}
	if v.ValueHex != nil {
		if b, err := hex.DecodeString(*v.ValueHex); err == nil {
			return formatBytes(b), true
		}
		return "0x" + *v.ValueHex, true
	}
	return "", false
}

func renderWAL(w io.Writer, res *walResult) {
	fmt.Fprintf(w, "WAL %s: log number %d (%s), %d bytes%s\n", res.File, res.LogNumber, res.LogNumberSource, res.SizeBytes, res.EncryptionKeys.human())
	for _, rec := range res.Records {
		fmt.Fprintf(w, "%10d  batch seq=%d count=%d\n", rec.Offset, rec.Seq, rec.Count)
		for i, op := range rec.Ops {
			line := fmt.Sprintf("%10s    #%d %s %s", "", rec.Seq+uint64(i), op.Kind, op.keyField.human())
			if op.ValueLen != nil {
				if v, ok := op.valueField.human(); ok {
					line += " = " + v
				} else {
					line += fmt.Sprintf(" (value %d bytes)", *op.ValueLen)
				}
			}
			fmt.Fprintln(w, line)
		}
	}
	if res.Truncated {
		fmt.Fprintf(w, "... %d more batches not listed (--limit)\n", res.RecordCount-len(res.Records))
	}
	summary := fmt.Sprintf("%s, %s, %s", plural(res.RecordCount, "batch"), plural(res.OpCount, "op"), plural(res.SyncMarkers, "sync marker"))
	if res.RecordCount > 0 {
		summary += fmt.Sprintf(", sequence numbers %d-%d", res.FirstSeq, res.LastSeq)
	}
	switch res.End {
	case endEOF:
		fmt.Fprintf(w, "end: clean end of log at offset %d; %s\n", res.EndOffset, summary)
	case endTornTail:
		t := res.TornTail
		fmt.Fprintf(w, "end: TORN TAIL at offset %d: %d bytes unreadable (%s); %s\n", t.Offset, t.DroppedBytes, t.Reason, summary)
	default:
		fmt.Fprintf(w, "end: %s after offset %d: %s; %s\n", renderEnd(res.End), res.EndOffset, res.Error, summary)
	}
	renderWarnings(w, res.Warnings)
}

func renderEnd(end string) string {
	switch end {
	case endCorruption:
		return "CORRUPTION"
	case endError:
		return "READ ERROR"
	}
	return end
}

func renderWarnings(w io.Writer, warnings []string) {
	for _, wn := range warnings {
		fmt.Fprintf(w, "warning: %s\n", wn)
	}
}
