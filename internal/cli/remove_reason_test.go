package cli

import (
	"strconv"
	"strings"
	"testing"
)

// TestRemoveNodeSaysWhy: the leader refuses a removal for one of three
// reasons and its message lists all three; kayactl names the one that
// applies. (Not a member: TestMembershipCommands.)
func TestRemoveNodeSaysWhy(t *testing.T) {
	// The only voter.
	single := startServer(t)
	_, errs, code := runCLI("--server", single, "remove-node", "1")
	if code != ExitInvalidArgument || !strings.Contains(errs, "error: cannot remove node 1: it is the cluster's only voter") ||
		!strings.Contains(errs, "hint: add another voter first") {
		t.Fatalf("the only voter: %d %q", code, errs)
	}

	// A voter without which the rest has no reachable quorum: node 3 of
	// three never started, so removing the follower of nodes 1 and 2 would
	// leave the leader and a dead node.
	c := newCLICluster(t, 3, nodeOpts{deferred: true})
	dead := c.Peer(3)
	c.Vacate(3) // nothing answers on its addresses
	c.Start(1)
	c.Start(2)
	leader := c.WaitLeader()
	follower := 3 - leader // of 1 and 2
	_, errs, code = runCLI("--server", c.addr(leader), "remove-node", strconv.FormatUint(follower, 10))
	if code != ExitInvalidArgument ||
		!strings.Contains(errs, "error: cannot remove node "+strconv.FormatUint(follower, 10)+": without it the remaining 2 voters need 2 of them in touch with the leader to form a quorum, and the leader hears from fewer") ||
		!strings.Contains(errs, "(voter 3 ("+dead.ClientAddr+") does not answer kayactl either)") ||
		!strings.Contains(errs, "hint: bring the down voters back first") {
		t.Fatalf("below quorum: %d %q", code, errs)
	}
}
