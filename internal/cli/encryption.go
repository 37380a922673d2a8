package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/raftlog"
	"github.com/kayadb/kayadb/internal/record"
	"github.com/kayadb/kayadb/internal/vfs"
)

// kayactl encryption init|rotate|list|verify: the original KayaDB's
// commands over its keyring file format (docs/formats.md, "Encryption at
// rest"). They work on files only: init, rotate and list on a keyring,
// verify on a stopped node's data directory. No command ever prints a
// key's bytes, only its id and fingerprint.

// encryptionFlags are the flags of the encryption commands.
type encryptionFlags struct {
	keyring, keyFile, fromKeyFile string
}

func (a *app) newEncryptionCmd() *cobra.Command {
	var f encryptionFlags
	cmd := &cobra.Command{
		Use:   "encryption init|rotate|list|verify",
		Short: "Manage encryption-at-rest keyrings and check which key each data file uses",
		Long: `Manage the keyring file of --encryption-keyring-file (docs/formats.md) and
check a stopped node's data directory against it.

  init --keyring FILE [--from-key-file KEY]   write a new keyring: one new key
                                             (id 1), or the key of an existing
                                             --encryption-key-file (id 0); 0600,
                                             fsynced, never overwriting a file
  rotate --keyring FILE                      add key max+1 from the OS random
                                             source and make it active (the old
                                             keys stay: data sealed with them must
                                             still open); atomic replace
  list --keyring FILE                        ids, fingerprints, the active key
                                             (never key bytes)
  verify --data DIR (--keyring FILE | --key-file FILE)
                                             list every data file of a stopped
                                             node (engine, raft log, snapshots)
                                             with the keys it uses; exit 3 naming
                                             the files that use a key the keyring
                                             lacks or do not open

See docs/runbooks/key-rotation.md.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("encryption needs a subcommand: init, rotate, list or verify")
			}
			return usageErrorf("unknown encryption subcommand %q; want init, rotate, list or verify", args[0])
		},
	}
	keyringFlag := func(c *cobra.Command) {
		c.Flags().StringVar(&f.keyring, "keyring", "", "the keyring file (the server's --encryption-keyring-file)")
	}
	initCmd := &cobra.Command{Use: "init --keyring FILE [--from-key-file KEY]", Short: "Write a new keyring file", Args: exactArgs(0, "no arguments")}
	keyringFlag(initCmd)
	initCmd.Flags().StringVar(&f.fromKeyFile, "from-key-file", "", "adopt the key of this --encryption-key-file (32 raw bytes) as key 0, active, instead of drawing a new key")
	initCmd.RunE = a.runE(func(*cobra.Command, []string) error { return a.encryptionInit(&f) })

	rotateCmd := &cobra.Command{Use: "rotate --keyring FILE", Short: "Add a new key to a keyring and make it active", Args: exactArgs(0, "no arguments")}
	keyringFlag(rotateCmd)
	rotateCmd.RunE = a.runE(func(*cobra.Command, []string) error { return a.encryptionRotate(&f) })

	listCmd := &cobra.Command{Use: "list --keyring FILE", Short: "List a keyring's key ids and fingerprints", Args: exactArgs(0, "no arguments")}
	keyringFlag(listCmd)
	listCmd.RunE = a.runE(func(*cobra.Command, []string) error { return a.encryptionList(&f) })

	verifyCmd := &cobra.Command{Use: "verify --data DIR (--keyring FILE | --key-file FILE)", Short: "Report the keys every file of a stopped node uses", Args: exactArgs(0, "no arguments")}
	keyringFlag(verifyCmd)
	verifyCmd.Flags().StringVar(&f.keyFile, "key-file", "", "the server's --encryption-key-file (instead of --keyring)")
	verifyCmd.RunE = a.runE(func(*cobra.Command, []string) error { return a.encryptionVerify(&f) })

	cmd.AddCommand(initCmd, rotateCmd, listCmd, verifyCmd)
	return cmd
}

// keyringResult is the JSON of init, rotate and list (the original's
// fields, plus the keys with their fingerprints).
type keyringResult struct {
	Action   string        `json:"action"`
	Keyring  string        `json:"keyring"`
	ActiveID crypt.KeyID   `json:"active_id"`
	KeyIDs   []crypt.KeyID `json:"key_ids"`
	Keys     []keyInfo     `json:"keys"`
}

type keyInfo struct {
	ID          crypt.KeyID `json:"id"`
	Fingerprint string      `json:"fingerprint"`
	Active      bool        `json:"active"`
}

func describeKeyring(action, path string, r *crypt.Keyring) keyringResult {
	res := keyringResult{Action: action, Keyring: path, ActiveID: r.Active(), KeyIDs: r.IDs()}
	for _, id := range r.IDs() {
		res.Keys = append(res.Keys, keyInfo{ID: id, Fingerprint: r.Fingerprint(id), Active: id == r.Active()})
	}
	return res
}

func (a *app) printKeyring(res keyringResult) error {
	if a.json {
		return writeJSON(a.stdout, res)
	}
	for _, k := range res.Keys {
		mark := ""
		if k.Active {
			mark = "  active"
		}
		fmt.Fprintf(a.stdout, "key %d  fingerprint %s%s\n", k.ID, k.Fingerprint, mark)
	}
	return nil
}

func needKeyring(f *encryptionFlags) error {
	if f.keyring == "" {
		return usageErrorf("--keyring FILE is required")
	}
	return nil
}

// loadKeyringFlag loads --keyring, or --key-file when allowed and given.
func loadKeyringFlag(f *encryptionFlags) (*crypt.Keyring, string, error) {
	if f.keyring != "" && f.keyFile != "" {
		return nil, "", usageErrorf("--keyring and --key-file are both set; give one")
	}
	if f.keyFile != "" {
		r, err := crypt.LoadFile(f.keyFile, false)
		return r, f.keyFile, keyringError(err)
	}
	if err := needKeyring(f); err != nil {
		return nil, "", err
	}
	r, err := crypt.LoadFile(f.keyring, true)
	return r, f.keyring, keyringError(err)
}

// keyringError makes a bad key file or keyring a usage error (exit 4).
func keyringError(err error) error {
	if err == nil {
		return nil
	}
	return &cliError{code: ExitInvalidArgument, err: err}
}

func (a *app) encryptionInit(f *encryptionFlags) error {
	if err := needKeyring(f); err != nil {
		return err
	}
	var r *crypt.Keyring
	var err error
	if f.fromKeyFile != "" {
		r, err = crypt.LoadFile(f.fromKeyFile, false)
		if err != nil {
			return keyringError(err)
		}
	} else if r, err = crypt.Generate(nil); err != nil {
		return err
	}
	if err := createKeyringFile(f.keyring, r.Format()); err != nil {
		return err
	}
	if !a.json {
		fmt.Fprintf(a.stdout, "initialized keyring %s (mode 0600): back it up somewhere safe; data sealed with its keys cannot be read without it\n", f.keyring)
	}
	return a.printKeyring(describeKeyring("initialized", f.keyring, r))
}

// createKeyringFile writes a new keyring file: mode 0600, fsynced with its
// directory, failing if path exists (a keyring is never overwritten: its
// keys may be the only way to read some data).
func createKeyringFile(path string, data []byte) error {
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return &cliError{code: ExitInvalidArgument, err: fmt.Errorf("%s exists; init never overwrites a keyring (its keys may be the only way to read some data)", path),
			hint: fmt.Sprintf("to add a key to it: kayactl encryption rotate --keyring %s", path)}
	}
	if err != nil {
		return err
	}
	_, err = out.Write(data)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return vfs.SyncDir(vfs.Default, filepath.Dir(path))
}

// replaceKeyringFile atomically replaces path with data: a new 0600 file
// in the same directory, fsynced, renamed over path, the directory
// fsynced. A crash leaves the old keyring or the new one.
func replaceKeyringFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	name := tmp.Name()
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(name, path)
	}
	if err != nil {
		_ = os.Remove(name)
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	return vfs.SyncDir(vfs.Default, dir)
}

func (a *app) encryptionRotate(f *encryptionFlags) error {
	if err := needKeyring(f); err != nil {
		return err
	}
	r, err := crypt.LoadFile(f.keyring, true)
	if err != nil {
		return keyringError(err)
	}
	next, id, err := r.WithNewKey(nil)
	if err != nil {
		return err
	}
	if err := replaceKeyringFile(f.keyring, next.Format()); err != nil {
		return err
	}
	if a.json {
		return writeJSON(a.stdout, describeKeyring("rotated", f.keyring, next))
	}
	fmt.Fprintf(a.stdout, "rotated %s: key %d (fingerprint %s) is active; keys %v stay for the data sealed with them\n",
		f.keyring, id, next.Fingerprint(id), r.IDs())
	fmt.Fprintf(a.stdout, "next: copy %s to every node (mode 0600, same path as its --encryption-keyring-file), then send each node SIGHUP\n", f.keyring)
	fmt.Fprintf(a.stdout, "      (kill -HUP <pid>); its log says \"keyring reloaded\" with active_key=%d. Old keys stay until\n", id)
	fmt.Fprintf(a.stdout, "      kayactl encryption verify shows no file uses them (docs/runbooks/key-rotation.md).\n")
	return nil
}

func (a *app) encryptionList(f *encryptionFlags) error {
	if err := needKeyring(f); err != nil {
		return err
	}
	r, err := crypt.LoadFile(f.keyring, true)
	if err != nil {
		return keyringError(err)
	}
	return a.printKeyring(describeKeyring("keyring", f.keyring, r))
}

// verifiedFile is one data file in verify's report.
type verifiedFile struct {
	Path  string        `json:"path"`
	Keys  []crypt.KeyID `json:"keys"`
	Plain bool          `json:"plain"`
	Error string        `json:"error,omitempty"`
}

// verifyResult is verify's JSON: the original's fields (checked, ok,
// failed) and every file with its keys.
type verifyResult struct {
	Checked int            `json:"checked"`
	OK      int            `json:"ok"`
	Failed  []verifyFailed `json:"failed"`
	Files   []verifiedFile `json:"files"`
	// KeysUsed are the key ids some file uses; keys of the keyring not
	// listed here can be retired.
	KeysUsed []crypt.KeyID `json:"keys_used"`
}

type verifyFailed struct {
	Path  string `json:"path"`
	Error string `json:"error"`
}

func (a *app) encryptionVerify(f *encryptionFlags) error {
	if a.dataFlag == "" {
		return usageErrorf("verify needs --data DIR: a stopped node's data directory (or an engine directory)")
	}
	ring, _, err := loadKeyringFlag(f)
	if err != nil {
		return err
	}
	dir := a.dataFlag
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return &cliError{code: ExitNotFound, err: fmt.Errorf("--data %s is not a directory", dir)}
	}
	if sd, ok := findServerDir(dir); ok {
		if running, err := lockHeld(filepath.Join(sd.root, "LOCK")); err == nil && running {
			return sd.runningError(dir, errors.New("verify reads a stopped node's files"))
		}
	}
	files, err := verifyDataDir(dir, crypt.NewSealer(ring))
	if err != nil {
		return err
	}
	res := verifyResult{Files: files, Failed: []verifyFailed{}}
	used := map[crypt.KeyID]bool{}
	for _, vf := range files {
		res.Checked++
		for _, k := range vf.Keys {
			used[k] = true
		}
		if vf.Error != "" {
			res.Failed = append(res.Failed, verifyFailed{Path: vf.Path, Error: vf.Error})
		} else {
			res.OK++
		}
	}
	for k := range used {
		res.KeysUsed = append(res.KeysUsed, k)
	}
	sort.Slice(res.KeysUsed, func(i, j int) bool { return res.KeysUsed[i] < res.KeysUsed[j] })
	if a.json {
		if err := writeJSON(a.stdout, res); err != nil {
			return err
		}
	} else {
		a.printVerify(dir, res, ring)
	}
	if len(res.Failed) > 0 {
		names := make([]string, 0, len(res.Failed))
		for _, fl := range res.Failed[:min(len(res.Failed), 5)] {
			names = append(names, fl.Path)
		}
		return &cliError{code: ExitCorruption, err: fmt.Errorf("%d of %d files do not open with this keyring: %s", len(res.Failed), res.Checked, strings.Join(names, ", ")),
			hint: "a file sealed with a key the keyring lacks needs that key back (an older copy of the keyring); \"cannot decrypt\" means a wrong key under that id, or damage"}
	}
	return nil
}

func (a *app) printVerify(dir string, res verifyResult, ring *crypt.Keyring) {
	w := a.stdout
	for _, vf := range res.Files {
		rel, err := filepath.Rel(dir, vf.Path)
		if err != nil {
			rel = vf.Path
		}
		status := "ok  "
		if vf.Error != "" {
			status = "FAIL"
		}
		fmt.Fprintf(w, "%s  %-52s  %s", status, rel, describeKeys(vf.Keys, vf.Plain))
		if vf.Error != "" {
			fmt.Fprintf(w, "  %s", vf.Error)
		}
		fmt.Fprintln(w)
	}
	var unused []string
	for _, id := range ring.IDs() {
		if !slicesContains(res.KeysUsed, id) {
			unused = append(unused, fmt.Sprint(id))
		}
	}
	fmt.Fprintf(w, "checked %d files: %d ok, %d failed; keys in use: %s", res.Checked, res.OK, len(res.Failed), describeKeys(res.KeysUsed, false))
	if len(unused) > 0 && len(res.Failed) == 0 {
		fmt.Fprintf(w, "; no file uses key %s", strings.Join(unused, ", "))
	}
	fmt.Fprintln(w)
}

func slicesContains(ids []crypt.KeyID, id crypt.KeyID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func describeKeys(ids []crypt.KeyID, plain bool) string {
	var parts []string
	for _, id := range ids {
		parts = append(parts, fmt.Sprintf("key %d", id))
	}
	if plain {
		parts = append(parts, "plain")
	}
	if len(parts) == 0 {
		return "(empty)"
	}
	return strings.Join(parts, ", ")
}

// verifyDataDir reports every data file under dir with its keys: a server
// data directory (engine/, raft/wal/, raft/snap-*/) or an engine
// directory.
func verifyDataDir(dir string, sealer *crypt.Sealer) ([]verifiedFile, error) {
	var out []verifiedFile
	engineDirs := []string{dir}
	if _, ok := findServerDir(dir); ok {
		engineDirs = []string{filepath.Join(dir, "engine")}
		snaps, _ := filepath.Glob(filepath.Join(dir, "raft", "snap-*"))
		for _, s := range snaps {
			if st, err := os.Stat(s); err == nil && st.IsDir() && !strings.HasSuffix(s, ".tmp") {
				engineDirs = append(engineDirs, s)
			}
		}
		wal := filepath.Join(dir, "raft", "wal")
		if _, err := os.Stat(wal); err == nil {
			segs, err := raftlog.ScanKeys(vfs.Default, wal, sealer)
			if err != nil {
				return nil, err
			}
			for _, s := range segs {
				vf := verifiedFile{Path: s.File, Keys: s.Keys, Plain: s.Plain}
				if s.Err != nil {
					vf.Error = s.Err.Error()
				}
				out = append(out, vf)
			}
		}
	}
	for _, d := range engineDirs {
		files, err := verifyEngineDir(d, sealer)
		if err != nil {
			return nil, err
		}
		out = append(out, files...)
	}
	return out, nil
}

// verifyEngineDir reports the engine files of dir: its WALs and MANIFESTs
// (record logs, read to their end with the keyring) and its tables.
func verifyEngineDir(dir string, sealer *crypt.Sealer) ([]verifiedFile, error) {
	names, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	var out []verifiedFile
	for _, de := range names {
		ft, num, ok := base.ParseFilename(de.Name())
		if !ok {
			continue
		}
		path := filepath.Join(dir, de.Name())
		switch ft {
		case base.FileTypeLog, base.FileTypeManifest:
			out = append(out, scanRecordLog(path, uint64(num), sealer))
		case base.FileTypeTable:
			out = append(out, scanTable(path, sealer))
		}
	}
	return out, nil
}

// scanRecordLog reads a WAL or MANIFEST to its end, noting each record's
// key. A torn tail is not an error (the newest log after a crash).
func scanRecordLog(path string, num uint64, sealer *crypt.Sealer) verifiedFile {
	vf := verifiedFile{Path: path, Keys: []crypt.KeyID{}}
	f, err := os.Open(path)
	if err != nil {
		vf.Error = err.Error()
		return vf
	}
	defer f.Close()
	r := record.NewReader(f, num, path)
	r.SetSealer(sealer)
	seen := map[crypt.KeyID]bool{}
	for {
		_, err := r.Next()
		if err == io.EOF || errors.Is(err, record.ErrTornTail) {
			break
		}
		if err != nil {
			vf.Error = err.Error()
			var ke *crypt.KeyError
			if errors.As(err, &ke) {
				seen[ke.ID] = true
			}
			break
		}
		if id, sealed := r.LastKey(); sealed {
			seen[id] = true
		} else {
			vf.Plain = true
		}
	}
	for id := range seen {
		vf.Keys = append(vf.Keys, id)
	}
	sort.Slice(vf.Keys, func(i, j int) bool { return vf.Keys[i] < vf.Keys[j] })
	return vf
}
