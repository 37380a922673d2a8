package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kayadb/kayadb/client"
)

// nodeView is one member as it answers for itself (kayactl status
// --cluster; the JSON field names are stable).
type nodeView struct {
	ID           uint64   `json:"id"`
	ClientAddr   string   `json:"client_addr"`
	Reachable    bool     `json:"reachable"`
	Error        string   `json:"error,omitempty"`
	Role         string   `json:"role,omitempty"`
	Term         uint64   `json:"term,omitempty"`
	LeaderID     uint64   `json:"leader_id,omitempty"`
	CommitIndex  uint64   `json:"commit_index,omitempty"`
	AppliedIndex uint64   `json:"applied_index,omitempty"`
	Members      []uint64 `json:"members,omitempty"`
}

// clusterView is the whole cluster as its members see it.
type clusterView struct {
	Nodes    []nodeView `json:"nodes"`
	Problems []string   `json:"problems"`
	OK       bool       `json:"ok"`
}

// lagWarning is how far (in entries) a node's applied index may trail the
// most advanced node before status --cluster reports it.
const lagWarning = 1000

// discoverMembers asks the seeds in turn for the cluster's members and
// returns the first answer (the seeds themselves when a server too old to
// list members answers), or the first error when no seed answers.
func discoverMembers(ctx context.Context, c *client.Client, seeds []string, perCall time.Duration) ([]client.Member, error) {
	var firstErr error
	for _, ep := range seeds {
		// Each node gets its own deadline: a frozen first seed must not
		// use up the time of the others.
		sctx, cancel := context.WithTimeout(ctx, perCall)
		st, err := c.Status(sctx, ep)
		cancel()
		if err != nil {
			if firstErr == nil {
				firstErr = &endpointError{ep: ep, err: err}
			}
			continue
		}
		if len(st.Members) > 0 {
			return st.Members, nil
		}
		members := make([]client.Member, 0, len(seeds))
		for i, s := range seeds {
			members = append(members, client.Member{ID: uint64(i + 1), ClientAddr: s})
		}
		return members, nil
	}
	return nil, firstErr
}

// clusterStatus asks every member (found through the first --server that
// answers) for its own view and compares the answers.
func clusterStatus(ctx context.Context, c *client.Client, seeds []string, perCall time.Duration) (*clusterView, error) {
	members, err := discoverMembers(ctx, c, seeds, perCall)
	if err != nil {
		return nil, err
	}
	v := &clusterView{}
	for _, m := range members {
		nv := nodeView{ID: m.ID, ClientAddr: m.ClientAddr}
		sctx, cancel := context.WithTimeout(ctx, perCall)
		st, err := c.Status(sctx, m.ClientAddr)
		cancel()
		if err != nil {
			nv.Error = err.Error()
		} else {
			nv.Reachable = true
			nv.Role, nv.Term, nv.LeaderID = st.Role, st.Term, st.LeaderID
			nv.CommitIndex, nv.AppliedIndex = st.CommitIndex, st.AppliedIndex
			for _, mm := range st.Members {
				nv.Members = append(nv.Members, mm.ID)
			}
			sort.Slice(nv.Members, func(i, j int) bool { return nv.Members[i] < nv.Members[j] })
		}
		v.Nodes = append(v.Nodes, nv)
	}
	v.Problems = compareViews(v.Nodes)
	v.OK = len(v.Problems) == 0
	if v.Problems == nil {
		v.Problems = []string{}
	}
	return v, nil
}

// compareViews lists the disagreements between the nodes' answers: the
// symptoms described in docs/runbooks/detecting-split-brain.md.
func compareViews(nodes []nodeView) []string {
	var problems []string
	maxTerm, maxApplied := uint64(0), uint64(0)
	leadersByTerm := map[uint64][]uint64{}
	reachable := 0
	for _, n := range nodes {
		if !n.Reachable {
			problems = append(problems, fmt.Sprintf("node %d (%s) does not answer: %s", n.ID, n.ClientAddr, n.Error))
			continue
		}
		reachable++
		maxTerm = max(maxTerm, n.Term)
		maxApplied = max(maxApplied, n.AppliedIndex)
		if n.Role == "leader" {
			leadersByTerm[n.Term] = append(leadersByTerm[n.Term], n.ID)
		}
	}
	if reachable == 0 {
		return problems
	}
	var terms []uint64
	for t := range leadersByTerm {
		terms = append(terms, t)
	}
	sort.Slice(terms, func(i, j int) bool { return terms[i] < terms[j] })
	for _, t := range terms {
		if ids := leadersByTerm[t]; len(ids) > 1 {
			problems = append(problems, fmt.Sprintf("SPLIT BRAIN: nodes %v all claim leadership in term %d (raft forbids this: report a bug)", ids, t))
		}
	}
	if len(terms) > 1 {
		var claims []string
		for _, t := range terms {
			claims = append(claims, fmt.Sprintf("%v in term %d", leadersByTerm[t], t))
		}
		problems = append(problems, fmt.Sprintf("more than one node says it leads (%s): the older one is cut off from the majority and cannot commit; check the network", strings.Join(claims, ", ")))
	}
	if len(terms) == 0 {
		problems = append(problems, "no node says it leads: the cluster cannot serve writes (is a majority up and connected?)")
	}
	leaderSeen := map[uint64][]uint64{}
	for _, n := range nodes {
		if n.Reachable && n.Term == maxTerm {
			leaderSeen[n.LeaderID] = append(leaderSeen[n.LeaderID], n.ID)
		}
	}
	if len(leaderSeen) > 1 {
		var parts []string
		for lead, ids := range leaderSeen {
			parts = append(parts, fmt.Sprintf("nodes %v say leader %d", ids, lead))
		}
		sort.Strings(parts)
		problems = append(problems, fmt.Sprintf("the nodes in the newest term %d disagree on the leader: %s", maxTerm, strings.Join(parts, "; ")))
	}
	var ref []uint64
	for _, n := range nodes {
		if !n.Reachable {
			continue
		}
		if maxApplied-n.AppliedIndex > lagWarning {
			problems = append(problems, fmt.Sprintf("node %d lags: applied index %d, %d behind the most advanced node", n.ID, n.AppliedIndex, maxApplied-n.AppliedIndex))
		}
		if ref == nil {
			ref = n.Members
		} else if fmt.Sprint(ref) != fmt.Sprint(n.Members) {
			problems = append(problems, fmt.Sprintf("node %d sees members %v, others %v (a membership change is in progress or a node missed it)", n.ID, n.Members, ref))
		}
	}
	return problems
}

// errClusterProblems makes status --cluster exit 1 after printing.
var errClusterProblems = errors.New("the cluster's members disagree or some do not answer (see above)")

func writeClusterView(w io.Writer, v *clusterView) {
	fmt.Fprintf(w, "%-4s %-22s %-10s %6s %7s %12s %12s\n", "ID", "CLIENT ADDR", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED")
	for _, n := range v.Nodes {
		if !n.Reachable {
			fmt.Fprintf(w, "%-4d %-22s %-10s\n", n.ID, n.ClientAddr, "DOWN")
			continue
		}
		fmt.Fprintf(w, "%-4d %-22s %-10s %6d %7d %12d %12d\n", n.ID, n.ClientAddr, n.Role, n.Term, n.LeaderID, n.CommitIndex, n.AppliedIndex)
	}
	if v.OK {
		fmt.Fprintln(w, "OK: every member answers and they agree on the leader")
		return
	}
	for _, p := range v.Problems {
		fmt.Fprintf(w, "PROBLEM: %s\n", p)
	}
}

// askCluster builds the cluster view once.
func (a *app) askCluster() (*clusterView, error) {
	c, _, cancel, err := a.newClient()
	if err != nil {
		return nil, err
	}
	defer cancel()
	defer c.Close()
	timeout, err := a.requestTimeout()
	if err != nil {
		return nil, err
	}
	return clusterStatus(context.Background(), c, a.servers(), min(timeout, 2*time.Second))
}

// runClusterStatus prints the cluster view once.
func (a *app) runClusterStatus() error {
	v, err := a.askCluster()
	if err != nil {
		return err
	}
	if a.json {
		if err := writeJSON(a.stdout, v); err != nil {
			return err
		}
	} else {
		writeClusterView(a.stdout, v)
	}
	if !v.OK {
		return &cliError{code: ExitError, err: errClusterProblems, hint: "see docs/runbooks/detecting-split-brain.md"}
	}
	return nil
}

func (a *app) newWatchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "watch (status | --prefix P | --key K) [--from-revision R]",
		Short: "Print changes as they commit (--prefix, --key), or refresh `status --cluster` (status)",
		Long: `kayactl watch --prefix P (or --key K) prints every committed change of the
keys under P (or of K) as it commits, in revision order, each once, one
"REVISION<TAB>put|delete<TAB>KEY[<TAB>VALUE]" line each, until interrupted
(or --count changes); --from-revision R starts at revision R (default: now)
and replays the retained history from there. With --json every change is
one line {"revision","type","key","value"}. It reconnects by itself, to any
member, resuming after the last revision printed.

kayactl watch status asks every member of the cluster for its status every --interval and prints
the table of status --cluster, clearing the screen between refreshes when
stdout is a terminal. --count N stops after N refreshes. With --json every
refresh is one line of JSON and stdout holds nothing else: the view of
status --cluster --json with a "time" member, or {"time":...,"error":...}
when no member answered.`,
		Args: cobra.MaximumNArgs(1),
	}
	interval := cmd.Flags().Duration("interval", 2*time.Second, "time between refreshes")
	count := cmd.Flags().Int("count", 0, "stop after this many refreshes, or changes (0: until interrupted)")
	prefix := cmd.Flags().String("prefix", "", "print the changes of the keys starting with this prefix")
	key := cmd.Flags().String("key", "", "print the changes of this key")
	from := cmd.Flags().Uint64("from-revision", 0, "start at this revision (0: now)")
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return a.watchKeys(cmd, *prefix, *key, *from, *count) // watch.go
		}
		if args[0] != "status" {
			return usageErrorf("watch %q: want `watch status`, or `watch --prefix P` / `watch --key K` for changes", args[0])
		}
		if err := a.needServer(cmd); err != nil {
			return err
		}
		if *interval < 100*time.Millisecond || *count < 0 {
			return usageErrorf("--interval must be at least 100ms and --count not negative")
		}
		tty := isTerminal(a.stdout) && !a.json
		for i := 0; *count == 0 || i < *count; i++ {
			if i > 0 {
				time.Sleep(*interval)
			}
			now := time.Now()
			v, err := a.askCluster()
			if a.json {
				// One JSON document per line, and nothing else on stdout.
				line := watchLine{Time: now.Format(time.RFC3339Nano), clusterView: v}
				if err != nil {
					line.Error = a.classify(err).Error()
				}
				if werr := writeJSON(a.stdout, line); werr != nil {
					return werr
				}
				continue
			}
			if tty {
				fmt.Fprint(a.stdout, "\033[H\033[2J")
			}
			fmt.Fprintf(a.stdout, "%s\n", now.Format("2006-01-02 15:04:05"))
			if err != nil {
				fmt.Fprintf(a.stdout, "error: %v\n", a.classify(err))
				continue
			}
			writeClusterView(a.stdout, v)
		}
		return nil
	})
	return cmd
}

// watchLine is one refresh of watch status --json: the cluster view, or
// the error when no member answered.
type watchLine struct {
	Time string `json:"time"`
	*clusterView
	Error string `json:"error,omitempty"`
}

// isTerminal reports whether w is a terminal (not a pipe or a file).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
