package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kayadb/kayadb/client"
)

// memberResult is the --json output of the membership and leadership
// commands: {"ok":true,"op":"add-node","message":"..."}.
type memberResult struct {
	OK      bool   `json:"ok"`
	Op      string `json:"op"`
	Message string `json:"message"`
}

// parseNodeID parses a node id argument: a positive decimal integer.
func parseNodeID(arg string) (uint64, error) {
	n, err := strconv.ParseUint(arg, 10, 64)
	if err != nil {
		return 0, usageErrorf("node ID %q is not a node id: give the node's positive integer id (for example 4; `kayactl --server ADDR status` lists the members)", arg)
	}
	if n == 0 {
		return 0, usageErrorf("node ID 0 is not valid: node ids are positive integers (for example 4)")
	}
	return n, nil
}

// checkMemberAddr validates the address of a new member: host:port with a
// host (the other nodes must reach it there) and a port from 1 to 65535.
func checkMemberAddr(what, addr, example string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return usageErrorf("%s %q is not host:port (for example %s)", what, addr, example)
	}
	if host == "" {
		return usageErrorf("%s %q has no host: give the address the other nodes reach it at (for example %s)", what, addr, example)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return usageErrorf("%s %q: port %q is not a number from 1 to 65535 (for example %s)", what, addr, port, example)
	}
	return nil
}

// needServer refuses a command that only exists in server mode.
func (a *app) needServer(cmd *cobra.Command) error {
	if a.serverMode() {
		return nil
	}
	return usageErrorf("%s needs --server ADDR[,ADDR...] (or $%s): it works on a running cluster, and --data (or $%s) chose local mode",
		cmd.Name(), EnvServer, EnvData)
}

// runAdmin runs one admin request against the cluster and prints
// "OK <message>" or the JSON result.
func (a *app) runAdmin(op string, call func(ctx context.Context, c *client.Client) (string, error)) error {
	c, ctx, cancel, err := a.newClient()
	if err != nil {
		return err
	}
	defer cancel()
	defer c.Close()
	msg, err := call(ctx, c)
	if err != nil {
		return a.adminError(op, err)
	}
	if a.json {
		return writeJSON(a.stdout, memberResult{OK: true, Op: op, Message: msg})
	}
	_, err = fmt.Fprintf(a.stdout, "OK %s\n", msg)
	return err
}

// adminError adds the hints of the membership commands; other failures
// are classified as for every server-mode command.
func (a *app) adminError(op string, err error) error {
	var ce *cliError
	if errors.As(err, &ce) {
		return ce // already explained (remove-node's reasons)
	}
	status := fmt.Sprintf("kayactl --server %s status", strings.Join(a.servers(), ","))
	switch {
	case errors.Is(err, client.ErrAmbiguous):
		hint := fmt.Sprintf("the request reached the cluster but no reply came back: the change may or may not have been made; run `%s` to see the members before retrying", status)
		if op == "transfer-leader" {
			hint = fmt.Sprintf("the request reached the cluster but no reply came back: leadership may or may not have moved; run `%s` to see the leader id before retrying (raise --timeout if the target needs longer to catch up)", status)
		}
		return &cliError{code: ExitError, err: err, hint: hint}
	case errors.Is(err, client.ErrInvalidArgument):
		var hint string
		switch op {
		case "add-node":
			hint = fmt.Sprintf("run `%s` to see the current members", status)
		case "remove-node":
			hint = fmt.Sprintf("run `%s` to see the members and their roles; a removal must leave the remaining voters a reachable quorum, so bring down members back first", status)
		case "promote-node":
			hint = fmt.Sprintf("only a learner (added with `add-node --learner`) that has caught up can be promoted; run `%s` to see each member's role", status)
		case "transfer-leader":
			hint = fmt.Sprintf("leadership can only go to a voter; run `%s` to see each member's role, and promote a learner first with promote-node", status)
		}
		return &cliError{code: ExitInvalidArgument, err: err, hint: hint}
	}
	return err
}

func (a *app) newAddNodeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "add-node ID RAFT_ADDR CLIENT_ADDR [--learner]",
		Short: "Add node ID to the cluster as a voter, or as a learner with --learner (server mode)",
		Long: `Ask the leader to add node ID, reachable by the other nodes at RAFT_ADDR
and by clients at CLIENT_ADDR (both host:port), to the cluster. Start the new
node afterwards with kayadb-server --join. Prints "OK membership change
proposed at index N" once the change is applied.

A new voter counts towards the quorum at once, so the leader refuses it
unless enough voters are reachable; --learner adds a node that replicates
the log without voting. Promote it with promote-node once it has caught up.
Node ids are never reused: a removed node's id cannot be added again.`,
		Args: exactArgs(3, "ID, RAFT_ADDR and CLIENT_ADDR"),
	}
	learner := cmd.Flags().Bool("learner", false, "add the node as a learner (replicates the log, does not vote; see promote-node)")
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		id, err := parseNodeID(args[0])
		if err != nil {
			return err
		}
		if err := checkMemberAddr("RAFT_ADDR", args[1], "10.0.0.4:7481"); err != nil {
			return err
		}
		if err := checkMemberAddr("CLIENT_ADDR", args[2], "10.0.0.4:7379"); err != nil {
			return err
		}
		if args[1] == args[2] {
			return usageErrorf("RAFT_ADDR and CLIENT_ADDR are both %s: a node listens for peers and for clients on different ports (kayadb-server --raft-addr and --client-addr)", args[1])
		}
		if err := a.needServer(cmd); err != nil {
			return err
		}
		return a.runAdmin("add-node", func(ctx context.Context, c *client.Client) (string, error) {
			return c.AddMember(ctx, id, args[1], args[2], *learner)
		})
	})
	return cmd
}

// newNodeIDCmd builds a server-mode command that takes one node id and
// sends one admin request.
func (a *app) newNodeIDCmd(use, short, long string, call func(ctx context.Context, c *client.Client, id uint64) (string, error)) *cobra.Command {
	cmd := &cobra.Command{Use: use + " ID", Short: short, Long: long, Args: exactArgs(1, "ID")}
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		id, err := parseNodeID(args[0])
		if err != nil {
			return err
		}
		if err := a.needServer(cmd); err != nil {
			return err
		}
		return a.runAdmin(use, func(ctx context.Context, c *client.Client) (string, error) { return call(ctx, c, id) })
	})
	return cmd
}

func (a *app) newRemoveNodeCmd() *cobra.Command {
	return a.newNodeIDCmd("remove-node", "Remove node ID from the cluster (server mode)",
		`Ask the leader to remove node ID from the cluster. Prints "OK membership
removal proposed at index N" once the change is applied; stop the removed
node afterwards. The leader refuses to remove a node that is not a member,
the only voter, or a voter without which the remaining voters could not
form a reachable quorum; kayactl says which. The leader may remove itself: it steps down once the change applies
and the others elect a new leader (run transfer-leader first to pick the
successor). A removed node's id can never be added again.`,
		func(ctx context.Context, c *client.Client, id uint64) (string, error) {
			msg, err := c.RemoveMember(ctx, id)
			if errors.Is(err, client.ErrInvalidArgument) {
				return "", a.removeRefusal(c, id, err)
			}
			return msg, err
		})
}

// removeRefusal says which of the leader's three reasons refused removing
// node id. The server's message names all three at once (the original's
// text: "not a member, is self, or would shrink below quorum"); the leader
// refuses (internal/server removeMember) a node that is neither a voter
// nor a learner, the only voter, and a voter without which fewer of the
// remaining voters than their quorum are recently active. kayactl asks a
// member for the membership, and the remaining voters whether they
// answer, to tell which. When it cannot find out, the refusal is reported
// as the server put it.
func (a *app) removeRefusal(c *client.Client, id uint64, refused error) error {
	timeout, err := a.requestTimeout()
	if err != nil {
		return refused
	}
	perCall := min(timeout, 2*time.Second)
	status := fmt.Sprintf("kayactl --server %s status --cluster", strings.Join(a.servers(), ","))
	ctx, cancel := context.WithTimeout(context.Background(), perCall)
	st, err := c.Status(ctx, "")
	cancel()
	if err != nil || len(st.Members) == 0 {
		return refused
	}
	if st.LeaderID != 0 && st.LeaderID != st.NodeID {
		// The leader's view is the one that refused.
		for _, m := range st.Members {
			if m.ID == st.LeaderID {
				ctx, cancel := context.WithTimeout(context.Background(), perCall)
				if lst, err := c.Status(ctx, m.ClientAddr); err == nil && len(lst.Members) > 0 {
					st = lst
				}
				cancel()
			}
		}
	}
	var voters []client.Member
	role := ""
	var ids []string
	for _, m := range st.Members {
		if m.Role == "voter" || m.Role == "learner" {
			ids = append(ids, fmt.Sprintf("%d (%s)", m.ID, m.Role))
		}
		if m.Role == "voter" {
			voters = append(voters, m)
		}
		if m.ID == id {
			role = m.Role
		}
	}
	refusal := func(reason, hint string) error {
		return &cliError{code: ExitInvalidArgument, err: fmt.Errorf("cannot remove node %d: %s", id, reason), hint: hint}
	}
	switch {
	case role != "voter" && role != "learner":
		return refusal(fmt.Sprintf("it is not a member of the cluster (the members: %s)", strings.Join(ids, ", ")),
			fmt.Sprintf("check the id: `kayactl --server %s status` lists the members and their roles", strings.Join(a.servers(), ",")))
	case role == "learner":
		return refused // learners are always removable: a race with another change
	case len(voters) == 1:
		return refusal("it is the cluster's only voter: without it no node could elect a leader or commit anything",
			"add another voter first (add-node --learner, start it, promote-node), then remove this one")
	}
	need := (len(voters)-1)/2 + 1
	var silent []string
	for _, v := range voters {
		if v.ID == id {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), perCall)
		if _, err := c.Status(ctx, v.ClientAddr); err != nil {
			silent = append(silent, fmt.Sprintf("%d (%s)", v.ID, formatBytes([]byte(v.ClientAddr))))
		}
		cancel()
	}
	reason := fmt.Sprintf("without it the remaining %d voters need %d of them in touch with the leader to form a quorum, and the leader hears from fewer", len(voters)-1, need)
	switch len(silent) {
	case 0:
	case 1:
		reason += fmt.Sprintf(" (voter %s does not answer kayactl either)", silent[0])
	default:
		reason += fmt.Sprintf(" (voters %s do not answer kayactl either)", strings.Join(silent, ", "))
	}
	return refusal(reason, fmt.Sprintf("bring the down voters back first, or remove a down voter instead; `%s` shows which members answer", status))
}

func (a *app) newPromoteNodeCmd() *cobra.Command {
	return a.newNodeIDCmd("promote-node", "Make learner ID a voter once it has caught up (server mode)",
		`Ask the leader to make learner ID (added with add-node --learner) a voter.
Prints "OK learner promote proposed at index N" once the change is applied.
The leader refuses while the learner has replicated less than 90% of its
log: wait and run the command again.`,
		func(ctx context.Context, c *client.Client, id uint64) (string, error) {
			return c.PromoteLearner(ctx, id)
		})
}

func (a *app) newTransferLeaderCmd() *cobra.Command {
	return a.newNodeIDCmd("transfer-leader", "Move the cluster's leadership to voter ID (server mode)",
		`Ask the leader to hand leadership to voter ID and wait until ID leads.
Prints "OK leadership transferred to node ID". Naming the current leader
succeeds at once. Use it before maintenance on the leader's machine, or
before removing the leader from the cluster.`,
		func(ctx context.Context, c *client.Client, id uint64) (string, error) {
			if err := c.TransferLeader(ctx, id); err != nil {
				return "", err
			}
			return fmt.Sprintf("leadership transferred to node %d", id), nil
		})
}

// writeStatus prints one server's STATS for humans: the members table
// first (what an operator looks for), then the node, then the engine's
// counters in human units. Servers that predate membership changes report
// no node id and no members; only what they report is printed.
func writeStatus(w io.Writer, ep string, st *client.Status) {
	fmt.Fprintf(w, "=== KayaDB Cluster Node Status (%s) ===\n", ep)
	writeMembers(w, st)
	if st.NodeID != 0 {
		fmt.Fprintf(w, "node id:       %d\n", st.NodeID)
	}
	fmt.Fprintf(w, "role:          %s\n", formatBytes([]byte(st.Role)))
	if st.NodeID != 0 {
		if st.LeaderID == 0 {
			fmt.Fprintf(w, "leader id:     0 (no leader known)\n")
		} else {
			fmt.Fprintf(w, "leader id:     %d\n", st.LeaderID)
		}
	}
	fmt.Fprintf(w, "term:          %d\n", st.Term)
	fmt.Fprintf(w, "commit index:  %d\n", st.CommitIndex)
	fmt.Fprintf(w, "applied index: %d\n", st.AppliedIndex)
	if st.NodeID != 0 {
		fmt.Fprintf(w, "snapshot index: %d\n", st.SnapshotIndex)
	}
	fmt.Fprintf(w, "peers:         %d\n", st.PeerCount)
	fmt.Fprintf(w, "raft groups:   %d\n", st.RaftGroups)
	var doc struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(st.Raw, &doc) == nil && doc.Version != "" {
		fmt.Fprintf(w, "version:       %s\n", formatBytes([]byte(doc.Version)))
	}
	fmt.Fprintf(w, "engine:\n")
	for _, k := range sortedKeys(st.Engine) {
		name, value := humanCounter(k, st.Engine[k])
		fmt.Fprintf(w, "  %-22s %s\n", formatBytes([]byte(name)), value)
	}
}

// writeMembers prints the members line and table of a status.
func writeMembers(w io.Writer, st *client.Status) {
	if len(st.Members) == 0 {
		return
	}
	roles := map[string]int{}
	var order []string
	for _, m := range st.Members {
		if roles[m.Role] == 0 {
			order = append(order, m.Role)
		}
		roles[m.Role]++
	}
	var counts []string
	for _, r := range []string{"voter", "learner"} {
		if n := roles[r]; n > 0 {
			counts = append(counts, plural(n, r))
		}
	}
	for _, r := range order {
		if r != "voter" && r != "learner" {
			counts = append(counts, fmt.Sprintf("%d %s", roles[r], formatBytes([]byte(r))))
		}
	}
	fmt.Fprintf(w, "members:       %d (%s)\n", len(st.Members), strings.Join(counts, ", "))
	rows := [][]string{{"ID", "ROLE", "RAFT ADDR", "CLIENT ADDR", ""}}
	for _, m := range st.Members {
		mark := ""
		if m.ID == st.LeaderID {
			mark = "(leader)"
		}
		// The server's strings are shown like keys: control characters
		// and the like quoted, never sent to the terminal raw.
		rows = append(rows, []string{strconv.FormatUint(m.ID, 10), formatBytes([]byte(m.Role)),
			formatBytes([]byte(m.RaftAddr)), formatBytes([]byte(m.ClientAddr)), mark})
	}
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, cell := range r {
			widths[i] = max(widths[i], len(cell))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		b.WriteString(" ")
		for i, cell := range r {
			fmt.Fprintf(&b, " %-*s", widths[i], cell)
			if i < len(r)-1 {
				b.WriteString(" ")
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// humanCounter renders an engine counter of STATS in human units: a name
// ending in _us is a duration in microseconds (shown without the suffix,
// as 850µs, 12.3ms, 4.56s); one that mentions bytes is a size (1.2MiB);
// anything else a count with thousands separators.
func humanCounter(name string, v uint64) (string, string) {
	switch {
	case strings.HasSuffix(name, "_us"):
		return strings.TrimSuffix(name, "_us"), humanMicros(v)
	case strings.Contains(name, "bytes"):
		return name, humanBytes(v)
	}
	return name, groupThousands(v)
}

// humanMicros formats a duration given in microseconds.
func humanMicros(us uint64) string {
	switch {
	case us < 1000:
		return fmt.Sprintf("%dµs", us)
	case us < 1_000_000:
		return fmt.Sprintf("%.1fms", float64(us)/1e3)
	case us < 60_000_000:
		return fmt.Sprintf("%.2fs", float64(us)/1e6)
	}
	return (time.Duration(us/1_000_000) * time.Second).String()
}

// groupThousands writes n with commas between groups of three digits.
func groupThousands(n uint64) string {
	s := strconv.FormatUint(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
