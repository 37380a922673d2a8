package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kayadb/kayadb/client"
	"github.com/kayadb/kayadb/engine"
)

// Environment variables of server mode.
const (
	// EnvServer lists server addresses (comma-separated) when --server is
	// not given.
	EnvServer = "KAYA_SERVER"
	// EnvTimeout sets --timeout when it is not given.
	EnvTimeout = "KAYA_TIMEOUT"
)

// servers resolves --server: the flag when given, else $KAYA_SERVER. Empty
// means local mode.
func (a *app) servers() []string {
	var list []string
	if a.root != nil && a.root.PersistentFlags().Changed("server") {
		list = a.serverFlag
	} else if v, ok := a.lookupEnv(EnvServer); ok && !(a.root != nil && a.root.PersistentFlags().Changed("data")) {
		// An explicit --data means local mode even when $KAYA_SERVER is
		// set in the environment.
		list = strings.Split(v, ",")
	}
	var out []string
	for _, s := range list {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (a *app) serverMode() bool { return len(a.servers()) > 0 }

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

func (r *remoteBackend) Close() error { return r.c.Close() }

// classifyRemote maps client errors to exit codes and hints.
func (a *app) classifyRemote(err error) (*cliError, bool) {
	servers := strings.Join(a.servers(), ",")
	switch {
	case errors.Is(err, client.ErrNotFound):
		return &cliError{code: ExitNotFound, err: err}, true
	case errors.Is(err, client.ErrInvalidArgument):
		return &cliError{code: ExitInvalidArgument, err: err}, true
	case errors.Is(err, client.ErrAmbiguous):
		return &cliError{code: ExitError, err: err,
			hint: "the connection failed after the request was sent: the write may or may not have been applied; read the key to find out"}, true
	case errors.Is(err, client.ErrUnavailable), errors.Is(err, client.ErrTimeout), errors.Is(err, client.ErrNotLeader):
		return &cliError{code: ExitError, err: err,
			hint: fmt.Sprintf("no answer from a leader at %s: check that the servers run (kayactl --server ADDR health) and that a majority of the cluster is up; raise --timeout for slow disks", servers)}, true
	}
	return nil, false
}

type healthResult struct {
	OK       bool   `json:"ok"`
	Role     string `json:"role"`
	Endpoint string `json:"endpoint"`
}

func (a *app) newHealthCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Ask each --server whether it is the leader or a follower",
		Args:  exactArgs(0, "no arguments"),
	}
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		if !a.serverMode() {
			return usageErrorf("health needs --server ADDR (or $%s)", EnvServer)
		}
		c, ctx, cancel, err := a.newClient()
		if err != nil {
			return err
		}
		defer cancel()
		defer c.Close()
		var results []healthResult
		var firstErr error
		for _, ep := range a.servers() {
			role, err := c.Health(ctx, ep)
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("%s: %w", ep, err)
				}
				results = append(results, healthResult{OK: false, Endpoint: ep})
				continue
			}
			results = append(results, healthResult{OK: true, Role: role, Endpoint: ep})
		}
		if a.json {
			if len(results) == 1 {
				if err := writeJSON(a.stdout, results[0]); err != nil {
					return err
				}
			} else if err := writeJSON(a.stdout, results); err != nil {
				return err
			}
		} else {
			for _, r := range results {
				if r.OK {
					if len(results) == 1 {
						fmt.Fprintf(a.stdout, "OK role=%s\n", r.Role)
					} else {
						fmt.Fprintf(a.stdout, "%s OK role=%s\n", r.Endpoint, r.Role)
					}
				} else {
					fmt.Fprintf(a.stdout, "%s UNREACHABLE\n", r.Endpoint)
				}
			}
		}
		return firstErr
	})
	return cmd
}

func (a *app) newStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a server's raft role, term, indexes, members and engine counters (STATS)",
		Long: `Show the STATS of the first --server (or of each with --all): raft role,
term, commit and applied index, peer count, and the engine's counters; from
servers that report them, also the node's id, the leader's id, the index of
its latest snapshot and the members (id, role, raft and client address, the
leader marked). With --json the server's STATS document is printed as it
came.`,
		Args: exactArgs(0, "no arguments"),
	}
	all := cmd.Flags().Bool("all", false, "ask every --server, not only the first")
	cluster := cmd.Flags().Bool("cluster", false, "ask every member of the cluster (found through --server) and report disagreements; exit status 1 when there are any")
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		if !a.serverMode() {
			return usageErrorf("status needs --server ADDR (or $%s); for a local database use `kayactl stats`", EnvServer)
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
				return fmt.Errorf("%s: %w", ep, err)
			}
			if a.json {
				raws = append(raws, st.Raw)
				continue
			}
			fmt.Fprintf(a.stdout, "=== KayaDB Cluster Node Status (%s) ===\n", ep)
			fmt.Fprintf(a.stdout, "role:          %s\n", st.Role)
			fmt.Fprintf(a.stdout, "term:          %d\n", st.Term)
			fmt.Fprintf(a.stdout, "commit index:  %d\n", st.CommitIndex)
			fmt.Fprintf(a.stdout, "applied index: %d\n", st.AppliedIndex)
			fmt.Fprintf(a.stdout, "peers:         %d\n", st.PeerCount)
			fmt.Fprintf(a.stdout, "raft groups:   %d\n", st.RaftGroups)
			writeMembership(a.stdout, st)
			fmt.Fprintf(a.stdout, "engine:\n")
			for _, k := range sortedKeys(st.Engine) {
				fmt.Fprintf(a.stdout, "  %-22s %d\n", k, st.Engine[k])
			}
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
