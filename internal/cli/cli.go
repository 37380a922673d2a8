// Package cli implements kayactl, KayaDB's operator command line.
//
// Every command writes to the writers given to Execute and reports failure
// through its return value (the process exit code), so the whole CLI runs
// in-process in tests. It has two modes (mode.go): server mode talks to a
// cluster through the public client package, at --server, $KAYA_SERVER, or
// 127.0.0.1:7379 when nothing else is said; local mode opens the engine on
// the directory that --data or $KAYA_DATA names, and only then. The
// key-value commands go through the kvBackend interface and do not know
// which mode they run in. kayactl never writes into a directory that a
// kayadb-server owns: a server's data goes through the server.
package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/buildinfo"
)

// Exit codes. They are part of the CLI's interface (see docs/cli.md).
const (
	ExitOK              = 0 // success
	ExitError           = 1 // any other failure (I/O, internal)
	ExitNotFound        = 2 // key not found, or no database in --data
	ExitCorruption      = 3 // damaged data (engine.ErrCorruption, or a damaged file given to inspect)
	ExitInvalidArgument = 4 // bad command, flag or argument; engine.ErrInvalidArgument
	ExitLocked          = 6 // the data directory is in use (engine.ErrLocked)
	ExitCompareFailed   = 7 // cas: the value was not the expected one, nothing was written
)

// Environment variables.
const (
	// EnvData names the database directory of local mode when --data is
	// not given (the flag wins).
	EnvData = "KAYA_DATA"
)

// Execute runs kayactl with args (without the program name), reading
// values from stdin (put KEY -), writing results to stdout and
// diagnostics to stderr, and returns the process exit code.
func Execute(args []string, stdout, stderr io.Writer) int {
	return run(args, invocation{stdin: os.Stdin, stdout: stdout, stderr: stderr, lookupEnv: os.LookupEnv})
}

// invocation is what one run of kayactl gets from its process.
type invocation struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
	// defaultServer replaces DefaultServer (tests point it at their own
	// listener; "" means DefaultServer).
	defaultServer string
}

// cliError is an error with its exit code and an optional hint line.
type cliError struct {
	code int
	err  error
	hint string
	// quiet suppresses the "error:" line (the result on stdout already says
	// everything, as for get --json on a missing key).
	quiet bool
}

func (e *cliError) Error() string { return e.err.Error() }
func (e *cliError) Unwrap() error { return e.err }

// usageErrorf reports a bad command line (exit 4).
func usageErrorf(format string, args ...any) error {
	return &cliError{code: ExitInvalidArgument, err: fmt.Errorf(format, args...)}
}

// app holds the global flags and the streams of one invocation.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
	defaultServer  string
	sec            secureFlags

	// Persistent flags.
	dataFlag   string
	json       bool
	sync       bool
	verbose    bool
	serverFlag []string
	timeout    time.Duration
	// encryption opens an encrypted data directory (commands with
	// --encryption-key-file or --encryption-keyring-file set it).
	encryption *engine.Sealer

	root *cobra.Command
}

func run(args []string, inv invocation) (code int) {
	stdout, stderr := inv.stdout, inv.stderr
	a := &app{stdin: inv.stdin, stdout: stdout, stderr: stderr, lookupEnv: inv.lookupEnv, defaultServer: inv.defaultServer}
	if a.stdin == nil {
		a.stdin = strings.NewReader("")
	}
	if a.defaultServer == "" {
		a.defaultServer = DefaultServer
	}
	defer func() {
		// Last line of defence: no input may crash the CLI with a raw panic.
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "error: internal error (this is a bug in kayactl): %v\n%s", r, debug.Stack())
			code = ExitError
		}
	}()
	root := a.newRootCmd()
	if args == nil {
		args = []string{}
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err == nil {
		return ExitOK
	}
	var ce *cliError
	if !errors.As(err, &ce) {
		// Errors that did not come from a command's RunE are cobra's:
		// unknown command, unknown flag, bad flag value, wrong arguments.
		path := "kayactl"
		if cmd != nil {
			path = cmd.CommandPath()
		}
		ce = &cliError{code: ExitInvalidArgument, err: err, hint: fmt.Sprintf("run `%s --help` for usage", path)}
	}
	if ce.code == ExitInvalidArgument && ce.hint == "" && cmd != nil && isUsageError(ce) {
		ce.hint = fmt.Sprintf("run `%s --help` for usage", cmd.CommandPath())
	}
	if !ce.quiet {
		fmt.Fprintf(stderr, "error: %v\n", ce.err)
		if ce.hint != "" {
			fmt.Fprintf(stderr, "hint: %s\n", ce.hint)
		}
	}
	return ce.code
}

// isUsageError reports whether a cliError is about the command line rather
// than about data (an engine invalid-argument error gets no --help hint).
func isUsageError(ce *cliError) bool {
	return !errors.Is(ce.err, engine.ErrInvalidArgument)
}

func (a *app) newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "kayactl",
		Short: "KayaDB operator command line",
		Long: `kayactl reads, writes and inspects a KayaDB database.

In server mode put, get, delete and scan go to a running cluster over the
client protocol (get and scan also at a past --at-revision), txn and cas
make conditional writes, health and status report on its nodes, add-node,
remove-node, promote-node and transfer-leader change its membership and
leadership, and backup takes an online backup (restore, local, turns one
into a new cluster's data directory). The cluster is at --server
ADDR[,ADDR...], else $KAYA_SERVER, else 127.0.0.1:7379 (where a
kayadb-server started without flags listens).

Local mode is chosen by --data DIR (or $KAYA_DATA) and only by it: kayactl
opens that database directory itself, so it must not be in use by a running
kayadb-server or another kayactl (stats, flush, compact, checkpoint and
recover exist only in local mode). The inspect commands only read the files
they are given and work on live, copied or damaged files.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.ArbitraryArgs,
		// Used by SuggestionsFor for unknown commands.
		SuggestionsMinimumDistance: 2,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				err := usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath()).(*cliError)
				err.hint = "run `kayactl --help` for the list of commands"
				if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
					err.hint = fmt.Sprintf("did you mean %q? %s", s[0], err.hint)
				}
				return err
			}
			return usageErrorf("no command given")
		},
	}
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		return a.checkModeFlags()
	}
	root.Version = buildinfo.Read().String()
	root.SetVersionTemplate("kayactl {{.Version}}\n")
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &cliError{code: ExitInvalidArgument, err: err, hint: fmt.Sprintf("run `%s --help` for usage", c.CommandPath())}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.dataFlag, "data", "", "local mode: open this database directory instead of talking to a server ($"+EnvData+")")
	pf.BoolVar(&a.json, "json", false, "machine-readable JSON output (stable snake_case field names)")
	pf.BoolVar(&a.sync, "sync", true, "fsync the WAL before put/delete return (--sync=false for bulk loads)")
	pf.BoolVarP(&a.verbose, "verbose", "v", false, "log engine events (recovery, flushes, compactions) to stderr")
	pf.StringSliceVar(&a.serverFlag, "server", nil, "server mode: the cluster's client addresses ADDR[,ADDR...] (host:port; $"+EnvServer+"; default "+DefaultServer+" unless --data is given)")
	pf.DurationVar(&a.timeout, "timeout", 5*time.Second, "server mode: deadline of each request, retries included ($"+EnvTimeout+")")
	a.addSecureFlags(pf)

	root.AddCommand(
		a.newPutCmd(), a.newGetCmd(), a.newDeleteCmd(), a.newScanCmd(),
		a.newStatsCmd(), a.newFlushCmd(), a.newCompactCmd(), a.newCheckpointCmd(), a.newRecoverCmd(),
		a.newInspectCmd(), a.newHealthCmd(), a.newStatusCmd(), a.newBenchCmd(),
		a.newAddNodeCmd(), a.newRemoveNodeCmd(), a.newPromoteNodeCmd(), a.newTransferLeaderCmd(),
		a.newWatchCmd(), a.newBackupCmd(), a.newRestoreCmd(), a.newVersionCmd(),
		a.newTxnCmd(), a.newCasCmd(), a.newCDCCmd(), a.newDoctorCmd(), a.newEncryptionCmd(),
	)
	a.root = root
	return root
}

// runE adapts a command body: every error it returns is classified into a
// cliError with an exit code and a hint.
func (a *app) runE(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := fn(cmd, args); err != nil {
			return a.classify(err)
		}
		return nil
	}
}

// errNoDatabase reports that --data holds no database.
type errNoDatabase struct{ dir string }

func (e *errNoDatabase) Error() string {
	return fmt.Sprintf("no database in %s (CURRENT is missing)", e.dir)
}
func (e *errNoDatabase) Is(target error) bool { return target == engine.ErrNotFound }

// classify maps an error to its exit code and hint.
func (a *app) classify(err error) error {
	var ce *cliError
	if errors.As(err, &ce) {
		return ce
	}
	if ce, ok := a.classifyRefused(err); ok {
		return ce
	}
	if ce, ok := a.classifySecurity(err); ok {
		return ce
	}
	if ce, ok := a.classifyWrongPort(err); ok {
		return ce
	}
	if ce, ok := classifyGreeting(err); ok {
		return ce
	}
	if ce, ok := a.classifyRemote(err); ok {
		return ce
	}
	dir := a.dataDir()
	var nodb *errNoDatabase
	switch {
	case errors.Is(err, engine.ErrLocked):
		if owner, ok := findServerDir(dir); ok {
			// The directory (or its parent) is a kayadb-server's: that
			// server runs and holds the lock.
			return owner.runningError(dir, err)
		}
		return &cliError{code: ExitLocked, err: err,
			hint: fmt.Sprintf("another kayactl or kayadb-server is using %s; stop it or pass --data to a copy", dir)}
	case errors.Is(err, engine.ErrCorruption):
		return &cliError{code: ExitCorruption, err: err,
			hint: fmt.Sprintf("run `kayactl recover --dry-run --data %s` to see what recovery would do; restore from a checkpoint if a table is damaged", dir)}
	case errors.As(err, &nodb):
		hint := fmt.Sprintf("no database in %s; check --data (or $%s)", nodb.dir, EnvData)
		if nodb.dir != dir {
			hint = fmt.Sprintf("no database in %s; check the path", nodb.dir)
		}
		return &cliError{code: ExitNotFound, err: err, hint: hint}
	case errors.Is(err, engine.ErrNotFound):
		return &cliError{code: ExitNotFound, err: err}
	case errors.Is(err, engine.ErrInvalidArgument):
		return &cliError{code: ExitInvalidArgument, err: err}
	case errors.Is(err, engine.ErrClosed):
		return &cliError{code: ExitError, err: err}
	}
	return &cliError{code: ExitError, err: err}
}

// openMode says whether a command may create a database.
type openMode int

const (
	mustExist openMode = iota // maintenance commands
	mayCreate                 // put, delete
	readOnly                  // get, scan, stats: change nothing on disk
)

// openDB opens the engine on --data. Unless the mode may create a database,
// it checks for CURRENT first so that a missing database gets a clear error
// and a hint. Read commands open the engine read-only: recovery replays the
// WAL in memory and nothing on disk changes.
func (a *app) openDB(mode openMode) (*engine.DB, error) {
	dir, err := a.localDir()
	if err != nil {
		return nil, err
	}
	if err := checkNotServerDir(dir, mode); err != nil {
		return nil, err
	}
	opts := &engine.Options{Encryption: a.encryption}
	if mode != mayCreate {
		if err := checkDatabaseExists(dir); err != nil {
			return nil, err
		}
		opts.ErrorIfNotExists = true
	}
	if mode == readOnly {
		opts.ReadOnly, opts.ErrorIfNotExists = true, false
	}
	if a.verbose {
		opts.Logger = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	db, err := engine.Open(dir, opts)
	if err != nil {
		return nil, err
	}
	return db, nil
}

// checkDatabaseExists fails with errNoDatabase when dir has no CURRENT file.
func checkDatabaseExists(dir string) error {
	_, err := os.Stat(filepath.Join(dir, "CURRENT"))
	if err == nil {
		return nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return &errNoDatabase{dir: dir}
	}
	return fmt.Errorf("checking %s: %w", dir, err)
}

// warnRecovery prints what recovery noticed while opening the database for
// a command that does not print the report itself.
func (a *app) warnRecovery(db *engine.DB) {
	for _, w := range db.RecoveryReport().Warnings {
		fmt.Fprintf(a.stderr, "warning: recovery: %s\n", w)
	}
}

// withDB opens the database, runs fn and closes the database. A Close
// failure is reported when fn succeeded.
func (a *app) withDB(mode openMode, fn func(db *engine.DB) error) (err error) {
	db, err := a.openDB(mode)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := db.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing the database: %w", cerr)
		}
	}()
	return fn(db)
}
