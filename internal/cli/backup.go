package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kayadb/kayadb/client"
	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/vfs"
)

// backupResult is the --json output of backup.
type backupResult struct {
	OK           bool   `json:"ok"`
	Out          string `json:"out"`
	BackupID     string `json:"backup_id"`
	Server       string `json:"server"`
	NodeID       uint64 `json:"node_id"`
	AppliedIndex uint64 `json:"applied_index"`
	Term         uint64 `json:"term"`
	Files        int    `json:"files"`
	Bytes        int64  `json:"bytes"`
	DurationNs   int64  `json:"duration_ns"`
}

// restoreResult is the --json output of restore.
type restoreResult struct {
	OK                bool   `json:"ok"`
	DryRun            bool   `json:"dry_run"`
	From              string `json:"from"`
	Data              string `json:"data,omitempty"`
	NodeID            uint64 `json:"node_id"`
	AppliedIndex      uint64 `json:"applied_index"`
	Term              uint64 `json:"term"`
	Files             int    `json:"files"`
	Bytes             int64  `json:"bytes"`
	SystemKeysRemoved int    `json:"system_keys_removed"`
}

// byteProgress reports a transfer on stderr: on a terminal one line
// redrawn in place (at most ten times a second), otherwise a plain line at
// every 10%.
type byteProgress struct {
	w     io.Writer
	verb  string
	tty   bool
	mu    sync.Mutex
	last  time.Time
	step  int64 // last 10% step printed (plain mode)
	drawn bool
}

func newByteProgress(w io.Writer, verb string) *byteProgress {
	return &byteProgress{w: w, verb: verb, tty: isTerminal(w), step: -1}
}

func (p *byteProgress) update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pct := int64(100)
	if total > 0 {
		pct = done * 100 / total
	}
	if p.tty {
		if done < total && time.Since(p.last) < 100*time.Millisecond {
			return
		}
		p.last = time.Now()
		const width = 30
		bar := make([]byte, width)
		for i := range bar {
			bar[i] = ' '
			if int64(i) < pct*width/100 {
				bar[i] = '='
			}
		}
		fmt.Fprintf(p.w, "\r%s [%s] %3d%% %s of %s ", p.verb, bar, pct, humanBytes(uint64(done)), humanBytes(uint64(total)))
		p.drawn = true
		return
	}
	if s := pct / 10; s > p.step {
		p.step = s
		fmt.Fprintf(p.w, "%s: %d%% (%s of %s)\n", p.verb, pct, humanBytes(uint64(done)), humanBytes(uint64(total)))
	}
}

// finish ends the redrawn line.
func (p *byteProgress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

func (a *app) newBackupCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "backup --out DIR",
		Short: "Take an online, consistent backup of the cluster into the new directory DIR (server mode)",
		Long: `Take an online backup of a running cluster: the leader confirms its
leadership (a read barrier), checkpoints its engine and computes a SHA-256 of
every file; kayactl copies the files into DIR, checking each checksum as it
writes, fsyncs them and writes DIR/MANIFEST.json last. The backup holds every
write acknowledged before the command started (and possibly later ones). DIR
must be empty or not exist. It is an admin request: pass the operator token
when the servers have one. Restore it with kayactl restore.

Progress goes to stderr (a bar on a terminal, a line every 10% otherwise);
the summary to stdout.`,
		Args: exactArgs(0, "no arguments"),
	}
	cmd.Flags().StringVar(&out, "out", "", "directory to write the backup into (new or empty)")
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		if err := a.needServer(cmd); err != nil {
			return err
		}
		if out == "" {
			return usageErrorf("backup needs --out DIR: a new or empty directory for the backup")
		}
		opts, err := a.clientOptions()
		if err != nil {
			return err
		}
		c, err := client.New(a.servers(), opts)
		if err != nil {
			return usageErrorf("--server: %v", err)
		}
		defer c.Close()
		// Ctrl-C removes what was written and tells the server.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		prog := newByteProgress(a.stderr, "backup")
		start := time.Now()
		m, err := c.Backup(ctx, out, prog.update)
		prog.finish()
		if err != nil {
			return a.backupError(err, out)
		}
		elapsed := time.Since(start)
		if a.json {
			return writeJSON(a.stdout, backupResult{OK: true, Out: out, BackupID: m.BackupID, Server: m.Server, NodeID: m.NodeID,
				AppliedIndex: m.AppliedIndex, Term: m.Term, Files: len(m.Files), Bytes: m.TotalBytes, DurationNs: elapsed.Nanoseconds()})
		}
		_, err = fmt.Fprintf(a.stdout, "OK backup of node %d at raft index %d (term %d): %s, %s written to %s in %v\n",
			m.NodeID, m.AppliedIndex, m.Term, plural(len(m.Files), "file"), humanBytes(uint64(m.TotalBytes)), out, elapsed.Round(time.Millisecond))
		return err
	})
	return cmd
}

// backupError adds the backup command's hints.
func (a *app) backupError(err error, out string) error {
	switch {
	case errors.Is(err, client.ErrBackupInvalid):
		return &cliError{code: ExitCorruption, err: err, hint: "the data received did not match the server's checksum (a network or disk fault); run the backup again"}
	case errors.Is(err, client.ErrInvalidArgument):
		return &cliError{code: ExitInvalidArgument, err: err, hint: fmt.Sprintf("write each backup into a new directory (for example %s-%s)", filepath.Clean(out), time.Now().Format("20060102-150405"))}
	}
	var se *client.ServerError
	if errors.As(err, &se) && se.Message != "" {
		if ce, ok := a.classifySecurity(err); ok {
			return ce
		}
		return &cliError{code: ExitError, err: err}
	}
	return err
}

func (a *app) newRestoreCmd() *cobra.Command {
	var from string
	var dryRun bool
	var enc encryptionFlags
	cmd := &cobra.Command{
		Use:   "restore --from BACKUP --data DIR [--dry-run] [--encryption-keyring-file FILE | --encryption-key-file FILE]",
		Short: "Turn a backup into the data directory of a new cluster (local: never talks to a server)",
		Long: `Check the backup in BACKUP (its MANIFEST.json and the SHA-256 of every
file), then copy it into DIR/engine, checking every file again as it is copied,
and remove the raft state the backup carries (the applied index, the
membership and the roster: the keys starting with byte 0x00). DIR must be
empty or not exist, and --data (or $KAYA_DATA) must be given explicitly.

A kayadb-server started on DIR bootstraps a NEW cluster that holds the
backup's data: one node, or several nodes each restored from the same backup
and started with the same --peer list. With --dry-run only the backup is
checked and nothing is written.

A backup of an encrypted node holds its files as they are on disk, sealed:
restoring opens the engine, so it needs the keyring (or key file) the node
used, and the new server must be started with it too.`,
		Args: exactArgs(0, "no arguments"),
	}
	cmd.Flags().StringVar(&from, "from", "", "the backup directory (written by kayactl backup)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only check the backup: every file against MANIFEST.json")
	cmd.Flags().StringVar(&enc.keyring, "encryption-keyring-file", "", "the keyring of the encrypted node the backup was taken from (its server flag of the same name)")
	cmd.Flags().StringVar(&enc.keyFile, "encryption-key-file", "", "the key file of the encrypted node the backup was taken from (its server flag of the same name)")
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		if from == "" {
			return usageErrorf("restore needs --from BACKUP: a directory written by kayactl backup")
		}
		var sealer *crypt.Sealer
		if enc.keyring != "" || enc.keyFile != "" {
			ring, _, err := loadKeyringFlag(&enc)
			if err != nil {
				return err
			}
			sealer = crypt.NewSealer(ring)
		}
		data := ""
		if !dryRun {
			if data = a.dataDir(); data == "" {
				return usageErrorf("restore needs --data DIR: the new server's data directory (empty or not existing)")
			}
			if err := checkRestoreTarget(data); err != nil {
				return err
			}
		}
		prog := newByteProgress(a.stderr, "verify")
		m, err := client.VerifyBackup(from, prog.update)
		prog.finish()
		if err != nil {
			return restoreError(err)
		}
		res := restoreResult{OK: true, DryRun: dryRun, From: from, NodeID: m.NodeID, AppliedIndex: m.AppliedIndex, Term: m.Term,
			Files: len(m.Files), Bytes: m.TotalBytes}
		if dryRun {
			if a.json {
				return writeJSON(a.stdout, res)
			}
			_, err := fmt.Fprintf(a.stdout, "OK backup %s verified: node %d at raft index %d (term %d), %s, %s; nothing was written\n",
				from, m.NodeID, m.AppliedIndex, m.Term, plural(len(m.Files), "file"), humanBytes(uint64(m.TotalBytes)))
			return err
		}
		prog = newByteProgress(a.stderr, "restore")
		removed, err := restoreInto(from, data, m, sealer, prog.update)
		prog.finish()
		if err != nil {
			return restoreError(err)
		}
		res.Data, res.SystemKeysRemoved = data, removed
		if a.json {
			return writeJSON(a.stdout, res)
		}
		fmt.Fprintf(a.stdout, "OK restored the backup of node %d at raft index %d (term %d), %s, %s, into %s\n",
			m.NodeID, m.AppliedIndex, m.Term, plural(len(m.Files), "file"), humanBytes(uint64(m.TotalBytes)), data)
		_, err = fmt.Fprintf(a.stdout, `%s holds the data of a NEW cluster (no raft log, no members): a kayadb-server
started on it bootstraps one from its flags. Next:
  one node:   kayadb-server --node-id N --data %s --raft-addr HOST:PORT --client-addr HOST:PORT
  a cluster:  restore the same backup into every node's directory, then start every node
              with its own --node-id, its --data, and the same --peer ID=RAFT_ADDR,CLIENT_ADDR list
Never let a restored node reach the old cluster's nodes (use new addresses, or make sure the
old cluster is gone for good). Writes made after raft index %d are not in the backup.
`, data, data, m.AppliedIndex)
		return err
	})
	return cmd
}

// restoreError classifies a restore failure.
func restoreError(err error) error {
	switch {
	case errors.Is(err, client.ErrBackupInvalid), errors.Is(err, engine.ErrCorruption):
		return &cliError{code: ExitCorruption, err: err, hint: "the backup is damaged or incomplete: use another copy of it, or take a new backup"}
	case errors.Is(err, os.ErrNotExist):
		return &cliError{code: ExitNotFound, err: err, hint: "--from must be a directory written by kayactl backup (it ends with MANIFEST.json)"}
	case errors.As(err, new(*crypt.KeyError)):
		return &cliError{code: ExitInvalidArgument, err: err, hint: "the backup is of an encrypted node: give the keyring it was written with (--encryption-keyring-file or --encryption-key-file)"}
	}
	return err
}

// checkRestoreTarget refuses a --data directory that holds anything.
func checkRestoreTarget(dir string) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("--data %s: %w", dir, err)
	case len(ents) > 0:
		return usageErrorf("--data %s is not empty (it holds %s): restore into a new or empty directory; never over a node's existing data", dir, ents[0].Name())
	}
	return nil
}

// restoreInto copies the verified backup in from into data/engine, checking
// every file again, then removes the system keys. On failure it removes
// what it created.
func restoreInto(from, data string, m *client.BackupManifest, sealer *crypt.Sealer, progress func(done, total int64)) (removed int, retErr error) {
	createdData := false
	if _, err := os.Stat(data); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(data, 0o700); err != nil {
			return 0, err
		}
		createdData = true
		if err := vfs.SyncDir(vfs.Default, filepath.Dir(filepath.Clean(data))); err != nil {
			return 0, err
		}
	}
	engineDir := filepath.Join(data, "engine")
	defer func() {
		if retErr != nil {
			_ = os.RemoveAll(engineDir)
			if createdData {
				_ = os.Remove(data)
			}
		}
	}()
	if err := os.Mkdir(engineDir, 0o700); err != nil {
		return 0, err
	}
	var done int64
	for _, f := range m.Files {
		out, err := os.OpenFile(filepath.Join(engineDir, f.Name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return 0, err
		}
		err = client.CheckBackupFile(from, f, out, func(n int64) {
			done += n
			progress(done, m.TotalBytes)
		})
		if err == nil {
			err = out.Sync()
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return 0, err
		}
	}
	if err := vfs.SyncDir(vfs.Default, engineDir); err != nil {
		return 0, err
	}
	if err := vfs.SyncDir(vfs.Default, data); err != nil {
		return 0, err
	}
	return resetSystemKeys(engineDir, m, sealer)
}

// resetSystemKeys opens the restored engine, checks that it holds the raft
// index and term the manifest names, and removes what ties it to its
// cluster (kv.ResetRaftState: applied index, membership, roster,
// transaction outcomes), keeping the versioned data and its last revision:
// the server then treats the directory as a new node's and bootstraps a
// cluster from its flags, whose revisions continue after the restored
// ones.
func resetSystemKeys(dir string, m *client.BackupManifest, sealer *crypt.Sealer) (int, error) {
	db, err := engine.Open(dir, &engine.Options{ErrorIfNotExists: true, Encryption: sealer})
	if err != nil {
		if errors.As(err, new(*crypt.KeyError)) && sealer == nil {
			return 0, &cliError{code: ExitInvalidArgument, err: fmt.Errorf("opening the restored engine %s: %w", dir, err),
				hint: "the backup is of an encrypted node: give its keyring with --encryption-keyring-file (or --encryption-key-file)"}
		}
		return 0, fmt.Errorf("opening the restored engine %s: %w", dir, err)
	}
	n, err := func() (int, error) {
		st, err := kv.ReadState(db)
		if err != nil {
			return 0, fmt.Errorf("reading the raft state of the restored engine: %w", err)
		}
		if st.Index != m.AppliedIndex || st.Term != m.Term {
			return 0, fmt.Errorf("%w: the checkpoint holds raft index %d term %d, but %s says index %d term %d",
				client.ErrBackupInvalid, st.Index, st.Term, client.BackupManifestName, m.AppliedIndex, m.Term)
		}
		n, err := kv.ResetRaftState(db)
		if err != nil {
			return 0, fmt.Errorf("removing the raft state from the restored engine: %w", err)
		}
		if err := db.Flush(); err != nil {
			return 0, err
		}
		if idx, _, err := kv.ReadApplied(db); err != nil || idx != 0 {
			return 0, fmt.Errorf("the restored engine still records raft index %d (%v)", idx, err)
		}
		return n, nil
	}()
	if cerr := db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("closing the restored engine: %w", cerr)
	}
	return n, err
}
