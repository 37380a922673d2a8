package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kayadb/kayadb/engine"
)

type statsResult struct {
	Metrics  *engine.Metrics        `json:"metrics"`
	Recovery *engine.RecoveryReport `json:"recovery"`
}

func (a *app) newStatsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Print engine metrics and what recovery did when opening the database",
		Args:  exactArgs(0, "no arguments"),
	}
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		return a.withDB(readOnly, func(db *engine.DB) error {
			m := db.Metrics()
			rep := db.RecoveryReport()
			if a.json {
				return writeJSON(a.stdout, statsResult{Metrics: m, Recovery: normalizeReport(&rep)})
			}
			fmt.Fprintf(a.stdout, "database: %s\n", a.dataDir())
			fmt.Fprintf(a.stdout, "visible sequence: %d\n", m.VisibleSeq)
			io.WriteString(a.stdout, m.String())
			fmt.Fprintln(a.stdout, "\nrecovery at open:")
			writeReport(a.stdout, &rep, "  ")
			return nil
		})
	})
	return cmd
}

// levelSummary is one level of the LSM tree in flush and compact outputs.
type levelSummary struct {
	Level     int    `json:"level"`
	Tables    int    `json:"tables"`
	SizeBytes uint64 `json:"size_bytes"`
}

func levelSummaries(m *engine.Metrics) []levelSummary {
	out := make([]levelSummary, len(m.Levels))
	for l, lm := range m.Levels {
		out[l] = levelSummary{Level: l, Tables: lm.NumFiles, SizeBytes: lm.Size}
	}
	return out
}

func writeLevels(w io.Writer, levels []levelSummary) {
	for _, l := range levels {
		fmt.Fprintf(w, "  L%d  %4d tables  %10s\n", l.Level, l.Tables, humanBytes(l.SizeBytes))
	}
}

type flushResult struct {
	OK       bool           `json:"ok"`
	L0Tables int            `json:"l0_tables"`
	Levels   []levelSummary `json:"levels"`
}

func (a *app) newFlushCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "flush",
		Short: "Write the memtable (and the writes replayed from the WAL) to an L0 table",
		Args:  exactArgs(0, "no arguments"),
	}
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		return a.withDB(mustExist, func(db *engine.DB) error {
			a.warnRecovery(db)
			if err := db.Flush(); err != nil {
				return err
			}
			m := db.Metrics()
			res := flushResult{OK: true, L0Tables: m.Levels[0].NumFiles, Levels: levelSummaries(m)}
			if a.json {
				return writeJSON(a.stdout, res)
			}
			_, err := fmt.Fprintf(a.stdout, "OK flushed; L0 tables: %d\n", res.L0Tables)
			return err
		})
	})
	return cmd
}

type compactResult struct {
	OK     bool           `json:"ok"`
	Levels []levelSummary `json:"levels"`
}

func (a *app) newCompactCmd() *cobra.Command {
	var h hexArgs
	var start, end string
	cmd := &cobra.Command{
		Use:   "compact [--start KEY] [--end KEY]",
		Short: "Compact the tables holding keys in [start, end] down to the bottom level",
		Long: `Flush the memtable, then compact every table holding keys in [--start, --end]
(both inclusive; a missing bound is open) down to the bottom level, dropping
overwritten versions and deleted keys. Prints the tables per level afterwards.`,
		Args: exactArgs(0, "no arguments (use --start and --end)"),
	}
	h.register(cmd)
	cmd.Flags().StringVar(&start, "start", "", "first key of the range (default: unbounded)")
	cmd.Flags().StringVar(&end, "end", "", "last key of the range, inclusive (default: unbounded)")
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		var lo, hi []byte
		var err error
		if cmd.Flags().Changed("start") {
			if lo, err = h.decode("--start", start); err != nil {
				return err
			}
		}
		if cmd.Flags().Changed("end") {
			if hi, err = h.decode("--end", end); err != nil {
				return err
			}
		}
		return a.withDB(mustExist, func(db *engine.DB) error {
			a.warnRecovery(db)
			if err := db.Compact(lo, hi); err != nil {
				return err
			}
			res := compactResult{OK: true, Levels: levelSummaries(db.Metrics())}
			if a.json {
				return writeJSON(a.stdout, res)
			}
			fmt.Fprintln(a.stdout, "OK")
			writeLevels(a.stdout, res.Levels)
			return nil
		})
	})
	return cmd
}

type checkpointResult struct {
	OK   bool   `json:"ok"`
	Path string `json:"path"`
}

func (a *app) newCheckpointCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "checkpoint OUT",
		Short: "Write a consistent, openable copy of the database to the new directory OUT",
		Long: `Write a consistent copy of the database to OUT, which must not exist yet.
Tables are hard-linked when OUT is on the same file system (copied
otherwise), so a checkpoint is cheap. The copy can be opened with
--data OUT, or used to restore the database.`,
		Args: exactArgs(1, "OUT"),
	}
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		out := args[0]
		if out == "" {
			return usageErrorf("OUT must not be empty")
		}
		return a.withDB(mustExist, func(db *engine.DB) error {
			a.warnRecovery(db)
			if err := db.Checkpoint(out); err != nil {
				return err
			}
			if a.json {
				return writeJSON(a.stdout, checkpointResult{OK: true, Path: out})
			}
			_, err := fmt.Fprintf(a.stdout, "OK checkpoint written to %s\n", out)
			return err
		})
	})
	return cmd
}

func (a *app) newRecoverCmd() *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "recover [--dry-run]",
		Short: "Run crash recovery on --data (or, with --dry-run, report what it would do)",
		Long: `Recovery runs whenever the database is opened: it replays the WALs, drops a
torn tail of the newest WAL and removes unfinished (*.tmp) and obsolete files.

With --dry-run, kayactl reads CURRENT, the MANIFEST and every WAL and reports
what recovery would do without changing anything (it still takes the
directory lock while reading). Without --dry-run it opens the database, which
performs recovery, prints the report and closes it.`,
		Args: exactArgs(0, "no arguments"),
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "report what recovery would do without changing anything")
	var keys keyFlags
	keys.register(cmd)
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		sealer, err := keys.sealer()
		if err != nil {
			return err
		}
		a.encryption = sealer
		return keys.withKeyHint(runRecover(a, dryRun))
	})
	return cmd
}

// runRecover is recover's body; a.encryption opens encrypted files.
func runRecover(a *app, dryRun bool) error {
	if dryRun {
		dir, err := a.localDir()
		if err != nil {
			return err
		}
		if err := checkNotServerDir(dir, readOnly); err != nil {
			return err
		}
		if err := checkDatabaseExists(dir); err != nil {
			return err
		}
		rep, err := engine.CheckRecovery(dir, &engine.Options{Encryption: a.encryption})
		if err != nil {
			return err
		}
		return a.printReport(rep)
	}
	return a.withDB(mustExist, func(db *engine.DB) error {
		rep := db.RecoveryReport()
		return a.printReport(&rep)
	})
}

func (a *app) printReport(rep *engine.RecoveryReport) error {
	if a.json {
		return writeJSON(a.stdout, normalizeReport(rep))
	}
	writeReport(a.stdout, rep, "")
	return nil
}

// normalizeReport returns a copy of rep whose list fields are empty rather
// than nil, so JSON consumers always see arrays.
func normalizeReport(rep *engine.RecoveryReport) *engine.RecoveryReport {
	r := *rep
	if r.WALs == nil {
		r.WALs = []engine.WALReport{}
	}
	if r.TempFilesRemoved == nil {
		r.TempFilesRemoved = []string{}
	}
	if r.ObsoleteFilesRemoved == nil {
		r.ObsoleteFilesRemoved = []string{}
	}
	if r.Warnings == nil {
		r.Warnings = []string{}
	}
	return &r
}

// writeReport renders a recovery report for humans.
func writeReport(w io.Writer, rep *engine.RecoveryReport, indent string) {
	p := func(format string, args ...any) { fmt.Fprintf(w, indent+format+"\n", args...) }
	would := func(did, wouldDo string) string {
		if rep.DryRun {
			return wouldDo
		}
		return did
	}
	if rep.DryRun {
		p("recovery dry run: nothing was changed")
	}
	switch {
	case rep.Created:
		p("database: created (new, empty)")
	case rep.Manifest != "":
		p("manifest: %s (%s replayed)", rep.Manifest, plural(rep.ManifestRecords, "edit"))
	}
	if t := rep.ManifestTornTail; t != nil {
		p("manifest torn tail: at offset %d, %d bytes %s (%s)", t.Offset, t.DroppedBytes, would("ignored", "would be ignored"), t.Reason)
	}
	p("live tables: %d", rep.LiveTables)
	if len(rep.WALs) == 0 {
		p("WAL files: none to replay")
	} else {
		p("WAL files %s:", would("replayed", "to replay"))
		for _, wr := range rep.WALs {
			line := fmt.Sprintf("  %s: %s, %d bytes", wr.File, plural(wr.Records, "record"), wr.Bytes)
			if t := wr.Torn; t != nil {
				line += fmt.Sprintf(", torn tail at offset %d: %d bytes %s (%s)", t.Offset, t.DroppedBytes,
					would("dropped", "would be dropped"), t.Reason)
			}
			p("%s", line)
		}
	}
	p("WAL records %s: %d", would("replayed", "to replay"), rep.RecordsReplayed)
	if rep.WALTruncatedBytes > 0 {
		p("WAL bytes %s: %d", would("truncated", "to truncate"), rep.WALTruncatedBytes)
	}
	p("last sequence: %d", rep.LastSeq)
	if !rep.DryRun {
		p("tables flushed from replayed WALs: %d", rep.TablesFlushed)
	}
	p("tmp files %s: %s", would("removed", "to remove"), joinOrNone(rep.TempFilesRemoved))
	p("obsolete files %s: %s", would("removed", "to remove"), joinOrNone(rep.ObsoleteFilesRemoved))
	if len(rep.Warnings) == 0 {
		p("warnings: none")
	} else {
		p("warnings:")
		for _, wn := range rep.Warnings {
			p("  - %s", strings.TrimSpace(wn))
		}
	}
}
