package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kayadb/kayadb/client"
	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/wire"
)

// Environment variables of server mode.
const (
	// EnvServer lists server addresses (comma-separated) when --server is
	// not given.
	EnvServer = "KAYA_SERVER"
	// EnvTimeout sets --timeout when it is not given.
	EnvTimeout = "KAYA_TIMEOUT"
)

// requestTimeout resolves --timeout (flag, else $KAYA_TIMEOUT, else 5s).
func (a *app) requestTimeout() (time.Duration, error) {
	if a.root != nil && a.root.PersistentFlags().Changed("timeout") {
		return a.timeout, nil
	}
	if v, ok := a.lookupEnv(EnvTimeout); ok && v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return 0, usageErrorf("$%s=%q is not a positive duration (for example 5s or 500ms)", EnvTimeout, v)
		}
		return d, nil
	}
	return a.timeout, nil
}

// newClient connects to the servers of --server.
func (a *app) newClient() (*client.Client, context.Context, context.CancelFunc, error) {
	opts, err := a.clientOptions()
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := client.New(a.servers(), opts)
	if err != nil {
		return nil, nil, nil, usageErrorf("--server: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.RequestTimeout)
	return c, ctx, cancel, nil
}

// remoteBackend runs the key-value commands against a cluster.
type remoteBackend struct {
	c       *client.Client
	timeout time.Duration
}

func (a *app) openRemote() (kvBackend, error) {
	opts, err := a.clientOptions()
	if err != nil {
		return nil, err
	}
	c, err := client.New(a.servers(), opts)
	if err != nil {
		return nil, usageErrorf("--server: %v", err)
	}
	return &remoteBackend{c: c, timeout: opts.RequestTimeout}, nil
}

func (r *remoteBackend) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), r.timeout)
}

func (r *remoteBackend) Put(key, value []byte) (uint64, error) {
	ctx, cancel := r.ctx()
	defer cancel()
	return 0, r.c.Put(ctx, key, value)
}

func (r *remoteBackend) Get(key []byte) ([]byte, error) {
	ctx, cancel := r.ctx()
	defer cancel()
	v, err := r.c.Get(ctx, key)
	if errors.Is(err, client.ErrNotFound) {
		// The get command reports missing keys the same way in both modes.
		return nil, engine.ErrNotFound
	}
	return v, err
}

func (r *remoteBackend) Delete(key []byte) error {
	ctx, cancel := r.ctx()
	defer cancel()
	return r.c.Delete(ctx, key)
}

func (r *remoteBackend) Scan(prefix []byte, limit int, fn func(key, value []byte) error) (bool, error) {
	ctx, cancel := r.ctx()
	defer cancel()
	items, err := r.c.Scan(ctx, prefix)
	if err != nil {
		return false, err
	}
	for i, kv := range items {
		if limit > 0 && i == limit {
			return true, nil
		}
		if err := fn(kv.Key, kv.Value); err != nil {
			return false, err
		}
	}
	return false, nil
}

// GetAt returns key's value and mod revision at revision rev (0: the
// latest).
func (r *remoteBackend) GetAt(key []byte, rev uint64) ([]byte, uint64, error) {
	ctx, cancel := r.ctx()
	defer cancel()
	v, mod, err := r.c.GetWithRevision(ctx, key, client.WithReadAt(rev))
	if errors.Is(err, client.ErrNotFound) {
		return nil, 0, engine.ErrNotFound
	}
	return v, mod, err
}

// ScanAt calls fn for the keys under prefix at revision rev (0: the
// latest), in key order, at most limit of them (0 = all), reading page by
// page at one revision (each page within its own deadline). It returns
// whether more keys matched and the revision it read at.
func (r *remoteBackend) ScanAt(prefix []byte, rev uint64, limit int, fn func(key, value []byte, modRev uint64) error) (more bool, readRev uint64, err error) {
	var start []byte
	n := 0
	for {
		ctx, cancel := r.ctx()
		page, err := r.c.ScanPage(ctx, prefix, start, max(limit-n, 0), client.WithReadAt(rev))
		cancel()
		if err != nil {
			return false, 0, err
		}
		for _, kv := range page.KVs {
			if err := fn(kv.Key, kv.Value, kv.ModRevision); err != nil {
				return false, page.Revision, err
			}
			n++
		}
		if !page.More || (limit > 0 && n >= limit) {
			return page.More, page.Revision, nil
		}
		start, rev = page.Next, page.Revision
	}
}

func (r *remoteBackend) Close() error { return r.c.Close() }

// endpointError is the failure of a request to one given server (health,
// status): the classification names that server, not every --server.
type endpointError struct {
	ep  string
	err error
}

func (e *endpointError) Error() string { return e.ep + ": " + e.err.Error() }
func (e *endpointError) Unwrap() error { return e.err }

// failedEndpoints are the servers a failure concerns.
func (a *app) failedEndpoints(err error) []string {
	var ee *endpointError
	if errors.As(err, &ee) {
		return []string{ee.ep}
	}
	return a.servers()
}

// classifyRefused explains a server-mode failure in which nothing listens
// at any of the addresses (the client gave up at once: FailFast).
func (a *app) classifyRefused(err error) (*cliError, bool) {
	if !a.serverMode() || !isRefusedEverywhere(err) {
		return nil, false
	}
	hint := "start kayadb-server (docs/getting-started.md), or name the cluster's client addresses with --server ADDR[,ADDR...] ($" + EnvServer + ")"
	if !a.explicitServers() {
		hint += fmt.Sprintf("; kayactl talks to %s when no --server is given, and opens a local database directory only with --data DIR", a.defaultServer)
	}
	return &cliError{code: ExitError,
		err:  fmt.Errorf("nothing listening on %s — is kayadb-server running?", strings.Join(a.failedEndpoints(err), ", ")),
		hint: hint}, true
}

// classifyWrongPort explains a server-mode failure in which no server
// answered the client protocol by probing what listens at the addresses
// (see probe.go).
func (a *app) classifyWrongPort(err error) (*cliError, bool) {
	if !a.serverMode() || !mayBeWrongPort(err) {
		return nil, false
	}
	servers := a.failedEndpoints(err)
	opts, oerr := a.clientOptions()
	if oerr != nil {
		return nil, false
	}
	var why, fixes []string
	for _, r := range probeAll(servers, opts.TLS, min(opts.RequestTimeout, probeBudget)) {
		if e := r.explain(); e != "" {
			why = append(why, e)
			if f := r.fix(); !slices.Contains(fixes, f) {
				fixes = append(fixes, f)
			}
		}
	}
	if len(why) == 0 {
		return nil, false
	}
	if a.verbose {
		fmt.Fprintf(a.stderr, "detail: %v\n", err)
	}
	return &cliError{code: ExitError, err: errors.New(strings.Join(why, "; ")), hint: strings.Join(fixes, "; ")}, true
}

// classifyRemote maps client errors to exit codes and hints.
func (a *app) classifyRemote(err error) (*cliError, bool) {
	servers := strings.Join(a.servers(), ",")
	switch {
	case errors.Is(err, client.ErrNotFound):
		return &cliError{code: ExitNotFound, err: err}, true
	case errors.Is(err, client.ErrInvalidArgument):
		return &cliError{code: ExitInvalidArgument, err: err}, true
	case errors.Is(err, client.ErrCompacted):
		var ce *client.CompactedError
		hint := "the servers keep --mvcc-retention of history (default 1h); read at a newer revision"
		if errors.As(err, &ce) {
			hint = fmt.Sprintf("read at revision %d or newer: the servers keep --mvcc-retention of history (default 1h)", ce.Oldest)
		}
		return &cliError{code: ExitInvalidArgument, err: err, hint: hint}, true
	case errors.Is(err, client.ErrUnsupported):
		return &cliError{code: ExitError, err: err,
			hint: "the server predates this request (transactions, conditional writes and reads at a revision came with issue 13): upgrade kayadb-server"}, true
	case errors.Is(err, client.ErrDiskFull):
		return &cliError{code: ExitError, err: err,
			hint: "the node's disk is full: the write was refused and not applied; free space on that node (or add capacity) and run it again — see docs/server.md, \"A full disk\""}, true
	case errors.Is(err, client.ErrAmbiguous):
		return &cliError{code: ExitError, err: err,
			hint: "the connection failed after the request was sent: the write may or may not have been applied; read the key to find out"}, true
	case errors.Is(err, client.ErrUnavailable), errors.Is(err, client.ErrTimeout), errors.Is(err, client.ErrNotLeader):
		return &cliError{code: ExitError, err: err,
			hint: fmt.Sprintf("no answer from a leader at %s: check that the servers run (kayactl --server ADDR health) and that a majority of the cluster is up; raise --timeout for slow disks", servers)}, true
	}
	return nil, false
}

// healthResult is one server's health (the JSON field names are stable).
type healthResult struct {
	// OK is true when the server answers and knows a leader (it leads, or
	// follows one): it can serve requests.
	OK       bool   `json:"ok"`
	Role     string `json:"role"` // leader, follower, candidate; "" when unreachable
	Endpoint string `json:"endpoint"`
	NodeID   uint64 `json:"node_id,omitempty"`
	// LeaderID is the leader the server knows; 0 when it knows none (or
	// could not say).
	LeaderID uint64 `json:"leader_id"`
	Term     uint64 `json:"term,omitempty"`
	// Error says why OK is false.
	Error string `json:"error,omitempty"`

	err error // the client's error when the server did not answer
}

// health asks one server: its STATS (role, term, leader), or, from a
// server that wants a client token kayactl does not have, its HEALTH
// (role only).
func (a *app) health(c *client.Client, ep string, timeout time.Duration) healthResult {
	r := healthResult{Endpoint: ep}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	st, err := c.Status(ctx, ep)
	var se *client.ServerError
	if errors.As(err, &se) && se.Message == wire.MsgClientCredential {
		// HEALTH needs no token, but tells only leader or follower.
		role, herr := c.Health(ctx, ep)
		switch {
		case herr != nil:
			r.Error, r.err = herr.Error(), herr
		case role == wire.HealthLeader:
			r.OK, r.Role = true, role
		default:
			r.Role = role
			r.Error = "cannot tell whether it knows a leader: its STATS need the client token (pass --client-token-file FILE or $KAYA_CLIENT_TOKEN_FILE)"
		}
		return r
	}
	if err != nil {
		r.Error, r.err = err.Error(), err
		return r
	}
	r.Role, r.NodeID, r.LeaderID, r.Term = st.Role, st.NodeID, st.LeaderID, st.Term
	switch {
	case st.NodeID == 0:
		// A server older than leader ids in STATS: its role is all it says.
		r.OK = st.Role == wire.HealthLeader || st.Role == wire.HealthFollower
	case st.LeaderID != 0 && st.Role != "candidate":
		r.OK = true
	}
	if !r.OK {
		r.Error = fmt.Sprintf("no leader known (role %s, term %d): an election is under way, or this node cannot reach a majority of the voters", st.Role, st.Term)
	}
	return r
}

func (a *app) newHealthCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Ask each server whether it can serve: its role, and whether it knows a leader",
		Long: `Ask each server (every --server address) for its role and the leader it
knows. A server is healthy when it leads or follows a known leader; a
candidate, or a follower that knows no leader (an election is under way, or
it is cut off from the majority), is not, and neither is one that does not
answer. Exit status 0 when every server is healthy, 1 otherwise (the same
verdict as the server's /readyz, without its catch-up condition).`,
		Args: exactArgs(0, "no arguments"),
	}
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		if err := a.needServer(cmd); err != nil {
			return err
		}
		c, _, cancel, err := a.newClient()
		if err != nil {
			return err
		}
		defer cancel()
		defer c.Close()
		timeout, err := a.requestTimeout()
		if err != nil {
			return err
		}
		eps := a.servers()
		var results []healthResult
		var firstBad *healthResult
		for _, ep := range eps {
			// Each server has its own deadline: a stopped one must not use
			// up the others' time.
			results = append(results, a.health(c, ep, timeout))
			if r := &results[len(results)-1]; !r.OK && firstBad == nil {
				firstBad = r
			}
		}
		if a.json {
			var err error
			if len(results) == 1 {
				err = writeJSON(a.stdout, results[0])
			} else {
				err = writeJSON(a.stdout, results)
			}
			if err != nil {
				return err
			}
		} else {
			for _, r := range results {
				prefix := ""
				if len(results) > 1 || r.Role == "" {
					prefix = r.Endpoint + " "
				}
				switch {
				case r.OK:
					fmt.Fprintf(a.stdout, "%sOK role=%s\n", prefix, r.Role)
				case r.Role != "":
					// Not "no leader" on stdout: scripts grep it for "leader".
					fmt.Fprintf(a.stdout, "%sNOT READY role=%s\n", prefix, r.Role)
				default:
					fmt.Fprintf(a.stdout, "%sUNREACHABLE\n", prefix)
				}
			}
		}
		if firstBad == nil {
			return nil
		}
		if firstBad.err != nil {
			// It did not answer: classified like any client error (nothing
			// listening, a wrong port, TLS, credentials).
			return &endpointError{ep: firstBad.Endpoint, err: firstBad.err}
		}
		return &cliError{code: ExitError, err: fmt.Errorf("%s: %s", firstBad.Endpoint, firstBad.Error),
			hint: fmt.Sprintf("run `kayactl --server %s status --cluster` to see every member's view; a majority of the voters must be up and connected to elect a leader", strings.Join(eps, ","))}
	})
	return cmd
}

func (a *app) newStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a server's raft role, term, indexes, members and engine counters (STATS)",
		Long: `Show the STATS of the first --server (or of each with --all). The human form
leads with the members table (id, role, raft and client address, the leader
marked), then the node: its id, role, the leader it knows, term, commit,
applied and snapshot index, peer count, version; then the engine's counters
in human units (bytes as KiB/MiB, microseconds as ms/s). With --json the
server's STATS document is printed as it came.`,
		Args: exactArgs(0, "no arguments"),
	}
	all := cmd.Flags().Bool("all", false, "ask every --server, not only the first")
	cluster := cmd.Flags().Bool("cluster", false, "ask every member of the cluster (found through --server) and report disagreements; exit status 1 when there are any")
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		if !a.serverMode() {
			return usageErrorf("status needs --server ADDR (or $%s), and --data (or $%s) chose local mode; for a local database use `kayactl stats`", EnvServer, EnvData)
		}
		if *cluster {
			if *all {
				return usageErrorf("--cluster already asks every member; drop --all")
			}
			return a.runClusterStatus()
		}
		c, ctx, cancel, err := a.newClient()
		if err != nil {
			return err
		}
		defer cancel()
		defer c.Close()
		eps := a.servers()
		if !*all {
			eps = eps[:1]
		}
		var raws []json.RawMessage
		for _, ep := range eps {
			st, err := c.Status(ctx, ep)
			if err != nil {
				return &endpointError{ep: ep, err: err}
			}
			if a.json {
				raws = append(raws, st.Raw)
				continue
			}
			writeStatus(a.stdout, ep, st)
		}
		if a.json {
			if len(raws) == 1 {
				_, err := fmt.Fprintf(a.stdout, "%s\n", raws[0])
				return err
			}
			return writeJSON(a.stdout, raws)
		}
		return nil
	})
	return cmd
}

func sortedKeys(m map[string]uint64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}
