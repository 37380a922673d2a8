package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/kayadb/kayadb/internal/vfs"
)

// Modes
//
// kayactl talks to a server unless told to open a directory:
//
//	--server ADDR[,ADDR...]      server mode, those addresses
//	--data DIR                   local mode, DIR (even when $KAYA_SERVER is set)
//	$KAYA_SERVER                 server mode
//	$KAYA_DATA                   local mode
//	nothing                      server mode, DefaultServer
//
// (first match wins). A local database is never opened by default: a put
// that "succeeds" into ./data while the user meant the cluster is worse
// than an error saying that nothing listens at 127.0.0.1:7379.

// DefaultServer is where kayactl talks when neither --server nor --data
// (nor $KAYA_SERVER or $KAYA_DATA) is given: the client address of a
// kayadb-server started without flags.
const DefaultServer = "127.0.0.1:7379"

func (a *app) flagChanged(name string) bool {
	return a.root != nil && a.root.PersistentFlags().Changed(name)
}

// splitList splits comma-separated addresses, dropping empty ones.
func splitList(list []string) []string {
	var out []string
	for _, item := range list {
		for _, s := range strings.Split(item, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// servers resolves the server addresses of server mode; nil means local
// mode (see Modes).
func (a *app) servers() []string {
	switch {
	case a.flagChanged("server"):
		return splitList(a.serverFlag)
	case a.flagChanged("data"):
		return nil
	}
	if v, ok := a.lookupEnv(EnvServer); ok && strings.TrimSpace(v) != "" {
		return splitList([]string{v})
	}
	if a.dataDir() != "" {
		return nil
	}
	return []string{a.defaultServer}
}

func (a *app) serverMode() bool { return len(a.servers()) > 0 }

// explicitServers reports whether the servers were named (--server or
// $KAYA_SERVER) rather than defaulted.
func (a *app) explicitServers() bool {
	if a.flagChanged("server") {
		return true
	}
	v, ok := a.lookupEnv(EnvServer)
	return ok && strings.TrimSpace(v) != "" && !a.flagChanged("data")
}

// dataDir resolves the local database directory: --data, else $KAYA_DATA
// (an empty value counts as unset), else "" (no local database).
func (a *app) dataDir() string {
	if a.flagChanged("data") {
		return a.dataFlag
	}
	if v, ok := a.lookupEnv(EnvData); ok && v != "" {
		return v
	}
	return ""
}

// localDir is the directory of a command that opens the database itself,
// or a usage error saying how to name one.
func (a *app) localDir() (string, error) {
	if dir := a.dataDir(); dir != "" {
		return dir, nil
	}
	return "", &cliError{code: ExitInvalidArgument,
		err:  errors.New("this command opens a database directory itself (local mode), and none was given"),
		hint: fmt.Sprintf("pass --data DIR (or set $%s); to ask a running server, use `kayactl status` (--server ADDR, default %s)", EnvData, a.defaultServer)}
}

// checkModeFlags refuses empty --data and --server values.
func (a *app) checkModeFlags() error {
	if a.flagChanged("data") && a.dataFlag == "" {
		return usageErrorf("--data must not be empty")
	}
	if a.flagChanged("server") && len(splitList(a.serverFlag)) == 0 {
		return usageErrorf("--server must name at least one address (host:port)")
	}
	return nil
}

// serverDir is a kayadb-server's data directory found at or above a --data
// path.
type serverDir struct {
	root string // the server's --data
	// engine is true when the path was root/engine, the server's engine.
	engine bool
}

// maxRosterBytes bounds the roster file kayactl reads for addresses: a
// roster lists a handful of members (an oversized file is not a roster).
const maxRosterBytes = 1 << 20

// findServerDir reports whether dir is a kayadb-server's data directory
// (it holds cluster-roster.json, or both raft/ and engine/) or the engine/
// directory inside one.
func findServerDir(dir string) (serverDir, bool) {
	isRoot := func(d string) bool {
		if st, err := os.Stat(filepath.Join(d, "cluster-roster.json")); err == nil && st.Mode().IsRegular() {
			return true
		}
		r, err1 := os.Stat(filepath.Join(d, "raft"))
		e, err2 := os.Stat(filepath.Join(d, "engine"))
		return err1 == nil && err2 == nil && r.IsDir() && e.IsDir()
	}
	clean := filepath.Clean(dir)
	if isRoot(clean) {
		return serverDir{root: clean}, true
	}
	if filepath.Base(clean) == "engine" && isRoot(filepath.Dir(clean)) {
		return serverDir{root: filepath.Dir(clean), engine: true}, true
	}
	return serverDir{}, false
}

// clientAddrs lists the client addresses of the members in the server's
// roster, for a --server suggestion; nil when the roster cannot be read.
func (sd serverDir) clientAddrs() []string {
	f, err := os.Open(filepath.Join(sd.root, "cluster-roster.json"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var doc struct {
		Members []struct {
			ClientAddr string `json:"client_addr"`
		} `json:"members"`
	}
	if json.NewDecoder(io.LimitReader(f, maxRosterBytes)).Decode(&doc) != nil {
		return nil
	}
	var out []string
	for _, m := range doc.Members {
		// Shown to the user: only printable addresses.
		if m.ClientAddr != "" && isPlain([]byte(m.ClientAddr)) {
			out = append(out, m.ClientAddr)
		}
	}
	return out
}

// serverHint suggests talking to the server instead.
func (sd serverDir) serverHint() string {
	if addrs := sd.clientAddrs(); len(addrs) > 0 {
		return fmt.Sprintf("talk to the server instead: kayactl --server %s COMMAND (the client addresses in %s)",
			strings.Join(addrs, ","), filepath.Join(sd.root, "cluster-roster.json"))
	}
	return "talk to the server instead: kayactl --server ADDR COMMAND, ADDR being its --client-addr (default " + DefaultServer + ")"
}

// runningError is the error for a server directory whose lock is held.
func (sd serverDir) runningError(dir string, err error) *cliError {
	return &cliError{code: ExitLocked,
		err:  fmt.Errorf("%s belongs to a running kayadb-server (it holds %s): %w", dir, filepath.Join(sd.root, "LOCK"), err),
		hint: sd.serverHint()}
}

// checkNotServerDir refuses to open a kayadb-server's data directory as a
// database. The server's top directory is not a database at all; its
// engine/ is one, but a write there would bypass raft and make this node's
// data differ from the other members' for good, so only commands that do
// not change the data (reads, flush, compact, checkpoint, recover) may
// open it, and only while the server is stopped (the engine's lock
// enforces that).
func checkNotServerDir(dir string, mode openMode) error {
	sd, ok := findServerDir(dir)
	if !ok {
		return nil
	}
	if running, err := lockHeld(filepath.Join(sd.root, "LOCK")); err == nil && running {
		return sd.runningError(dir, errors.New("kayactl cannot open it"))
	}
	if !sd.engine {
		return &cliError{code: ExitInvalidArgument,
			err: fmt.Errorf("%s is a kayadb-server data directory (engine/, raft/, cluster-roster.json), not a database kayactl can open", dir),
			hint: sd.serverHint() + fmt.Sprintf("; with the server stopped, read its engine with --data %s",
				filepath.Join(sd.root, "engine"))}
	}
	if mode == mayCreate {
		return &cliError{code: ExitInvalidArgument,
			err:  fmt.Errorf("%s is the engine of the kayadb-server data directory %s: a write here would bypass raft and make this node's data differ from the other members'", dir, sd.root),
			hint: "write through the cluster instead: " + strings.TrimPrefix(sd.serverHint(), "talk to the server instead: ")}
	}
	return nil
}

// lockHeld reports whether another process holds the flock on path (a
// running kayadb-server holds DIR/LOCK). It takes the lock for an instant
// when it is free; a missing file is not held.
func lockHeld(path string) (bool, error) {
	if _, err := os.Stat(path); err != nil {
		return false, err
	}
	l, err := vfs.Default.Lock(path)
	if errors.Is(err, vfs.ErrLocked) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return false, l.Close()
}
