package cli

import (
	"net"
	"testing"
	"time"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/clustertest"
	"github.com/kayadb/kayadb/internal/server"
)

// cliCluster runs real servers in this process for kayactl to talk to, on
// the shared cluster harness (package clustertest): each node on its own
// in-memory disk with a loopback client port that survives restarts, and
// raft on loopback TCP (or on the in-memory network, nodeOpts.memRaft).
// This adapter only builds a server.Config.
type cliCluster struct {
	*clustertest.Harness[*server.Server]
	t *testing.T
}

// nodeOpts selects the harness's modes and adjusts the nodes.
type nodeOpts struct {
	// memRaft carries raft over the in-memory network instead of loopback
	// TCP; with manual, the raft clock moves only when ticked (a single
	// node is elected at once and leads for good). TCP raft needs the
	// free-running clock.
	memRaft, manual bool
	// deferred leaves the bootstrap members stopped until the test starts
	// them.
	deferred bool
	// configure adjusts a node's configuration before every start.
	configure func(id uint64, cfg *server.Config)
}

func newCLICluster(t *testing.T, n int, o nodeOpts) *cliCluster {
	t.Helper()
	c := &cliCluster{t: t}
	c.Harness = clustertest.NewHarness(t, clustertest.Config[*server.Server]{
		Nodes: n, ClientListeners: true, TCPRaft: !o.memRaft, FreeClock: !o.manual, Deferred: o.deferred,
		Start: func(env *clustertest.Env) (*server.Server, error) {
			var peers []server.Member
			for _, p := range env.Peers {
				peers = append(peers, server.Member{ID: p.ID, RaftAddr: p.RaftAddr, ClientAddr: p.ClientAddr})
			}
			cfg := server.Config{NodeID: env.ID, DataDir: "/srv", RaftAddr: env.Self.RaftAddr, ClientAddr: env.Self.ClientAddr,
				Peers: peers, Join: env.Join, TickInterval: env.TickInterval, RaftTicker: env.Ticker, RequestTimeout: 3 * time.Second,
				EngineOptions: &engine.Options{FS: env.Disk}, ClientListener: env.ClientListener, RaftListener: env.RaftListener,
				NewTransport: env.NewTransport, Logger: env.Logger}
			if o.configure != nil {
				o.configure(env.ID, &cfg)
			}
			return server.New(cfg)
		},
	})
	return c
}

// startCluster starts an n-node cluster and waits for a leader.
func startCluster(t *testing.T, n int) *cliCluster {
	t.Helper()
	c := newCLICluster(t, n, nodeOpts{})
	c.WaitLeader()
	return c
}

// startNode starts a one-node cluster configured by configure (raft on
// loopback TCP) and waits until it leads.
func startNode(t *testing.T, configure func(id uint64, cfg *server.Config)) *cliCluster {
	t.Helper()
	c := newCLICluster(t, 1, nodeOpts{configure: configure})
	c.WaitLeader()
	return c
}

// startServer runs a single-node server in this process (raft in memory,
// a manual clock: it is elected at once) and returns its client address.
func startServer(t *testing.T) string {
	t.Helper()
	c := newCLICluster(t, 1, nodeOpts{memRaft: true, manual: true})
	c.Elect(1)
	return c.addr(1)
}

// addr returns node id's client address.
func (c *cliCluster) addr(id uint64) string { return c.ClientAddr(id) }

// node returns running node id (nil if stopped).
func (c *cliCluster) node(id uint64) *server.Server { return c.Node(id) }

func listenLocal(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}
