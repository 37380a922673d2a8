package jepsen

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kayadb/kayadb/client"
	"github.com/kayadb/kayadb/internal/loopport"
)

// Node is one kayadb-server process of the harness's cluster.
type Node struct {
	ID         uint64
	Dir        string // data directory (kept for the report)
	ClientAddr string
	RaftListen string // where the process listens for raft
	RaftProxy  string // what the roster advertises: the harness's proxy

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	paused  bool
	starts  int
	logPath string
	joiner  bool // replaced by the membership nemesis: starts with --join
}

// Cluster runs the processes.
type Cluster struct {
	Bin   string
	Nodes []*Node
	Net   *Network
	Tick  time.Duration
	maxID uint64 // the highest node id ever used (ids are never reused)
}

// NewCluster lays out n nodes under dir with proxies in front of their
// raft ports. Nothing runs until Start.
func NewCluster(bin, dir string, n int, tick time.Duration) (*Cluster, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c := &Cluster{Bin: bin, Net: NewNetwork(), Tick: tick, maxID: uint64(n)}
	for i := 1; i <= n; i++ {
		// The nodes' own ports must stay free while a node is down, so
		// they lie outside the ephemeral range (the proxies' need not).
		cl, err := loopport.Pick()
		if err != nil {
			return nil, err
		}
		rl, err := loopport.Pick()
		if err != nil {
			return nil, err
		}
		px, err := c.Net.AddProxy(rl)
		if err != nil {
			return nil, err
		}
		nd := &Node{ID: uint64(i), Dir: filepath.Join(dir, fmt.Sprintf("n%d", i)), ClientAddr: cl, RaftListen: rl, RaftProxy: px,
			logPath: filepath.Join(dir, fmt.Sprintf("n%d.log", i))}
		c.Nodes = append(c.Nodes, nd)
	}
	return c, nil
}

// Node returns node id, or nil. (A slot's id changes when the membership
// nemesis replaces its node; ids are only changed and read by the
// harness's main goroutine.)
func (c *Cluster) Node(id uint64) *Node {
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// Replace gives node id's slot a new node: a new id, and an empty data
// directory (the old one is kept, renamed, for the report). The process
// must be stopped. The new node starts with --join.
func (c *Cluster) Replace(id uint64) (uint64, error) {
	n := c.Node(id)
	if n == nil {
		return 0, fmt.Errorf("no node %d", id)
	}
	if c.Running(id) {
		return 0, fmt.Errorf("node %d still runs", id)
	}
	c.maxID++
	next := c.maxID
	if err := os.Rename(n.Dir, fmt.Sprintf("%s.node%d-removed", n.Dir, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	n.mu.Lock()
	n.ID, n.joiner = next, true
	n.mu.Unlock()
	return next, nil
}

// ClientAddrs lists every node's client address.
func (c *Cluster) ClientAddrs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.ClientAddr)
	}
	return out
}

// Start starts node id's process (again, after a kill).
func (c *Cluster) Start(id uint64) error {
	n := c.Node(id)
	if n == nil {
		return fmt.Errorf("no node %d (replaced?)", id)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return fmt.Errorf("node %d is already running", id)
	}
	args := []string{"--node-id", strconv.FormatUint(id, 10), "--data", n.Dir,
		"--raft-addr", n.RaftListen, "--client-addr", n.ClientAddr, "--no-metrics",
		"--tick", c.Tick.String(), "--request-timeout", "2s", "--log-format", "text", "--log-level", "info",
		"--snapshot-entries", "2000", "--snapshot-catchup-entries", "500"}
	for _, m := range c.Nodes {
		args = append(args, "--peer", fmt.Sprintf("%d=%s,%s", m.ID, m.RaftProxy, m.ClientAddr))
	}
	if n.joiner {
		args = append(args, "--join")
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== harness: start #%d at %s\n", n.starts+1, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(c.Bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting node %d: %w", id, err)
	}
	n.cmd, n.exited, n.paused = cmd, make(chan struct{}), false
	n.starts++
	go func(done chan struct{}) {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}(n.exited)
	return nil
}

// Kill sends SIGKILL to node id and waits for it to exit.
func (c *Cluster) Kill(id uint64) {
	n := c.Node(id)
	if n == nil {
		return
	}
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.cmd, n.paused = nil, false
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// Stop sends SIGTERM and waits up to 25 s, then kills.
func (c *Cluster) Stop(id uint64) {
	n := c.Node(id)
	if n == nil {
		return
	}
	n.mu.Lock()
	cmd, exited, paused := n.cmd, n.exited, n.paused
	n.cmd, n.paused = nil, false
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	if paused {
		_ = cmd.Process.Signal(syscall.SIGCONT)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(25 * time.Second):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}
}

// Pause stops node id with SIGSTOP; Resume continues it.
func (c *Cluster) Pause(id uint64) {
	n := c.Node(id)
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil && !n.paused {
		_ = n.cmd.Process.Signal(syscall.SIGSTOP)
		n.paused = true
	}
}

// Resume undoes Pause.
func (c *Cluster) Resume(id uint64) {
	n := c.Node(id)
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil && n.paused {
		_ = n.cmd.Process.Signal(syscall.SIGCONT)
		n.paused = false
	}
}

// Running reports whether node id's process runs (paused counts).
func (c *Cluster) Running(id uint64) bool {
	n := c.Node(id)
	if n == nil {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// Crashed lists nodes whose process exited on its own (not killed or
// stopped by the harness): a node that dies by itself is a finding.
func (c *Cluster) Crashed() []uint64 {
	var out []uint64
	for _, n := range c.Nodes {
		n.mu.Lock()
		if n.cmd != nil {
			select {
			case <-n.exited:
				out = append(out, n.ID)
			default:
			}
		}
		n.mu.Unlock()
	}
	return out
}

// LogTail returns the last lines (at most max) of node id's log, for a
// report that must explain a node's death without its files at hand (a CI
// log).
func (c *Cluster) LogTail(id uint64, max int) []string {
	n := c.Node(id)
	if n == nil {
		return nil
	}
	b, err := os.ReadFile(n.logPath)
	if err != nil {
		return []string{fmt.Sprintf("(reading %s: %v)", n.logPath, err)}
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > max {
		lines = lines[len(lines)-max:]
	}
	return lines
}

// Shutdown stops every node and the network.
func (c *Cluster) Shutdown() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(1)
		go func(id uint64) {
			defer wg.Done()
			c.Stop(id)
		}(n.ID)
	}
	wg.Wait()
	c.Net.Close()
}

// Status asks one node for its status (a direct STATS, no redirect).
func (c *Cluster) Status(ctx context.Context, cl *client.Client, id uint64) (*client.Status, error) {
	n := c.Node(id)
	if n == nil {
		return nil, fmt.Errorf("no node %d", id)
	}
	return cl.Status(ctx, n.ClientAddr)
}

// Leader returns the id of a node that says it leads and that the
// majority of running nodes agree on, or 0.
func (c *Cluster) Leader(ctx context.Context, cl *client.Client) uint64 {
	votes := map[uint64]int{}
	for _, n := range c.Nodes {
		if !c.Running(n.ID) {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		st, err := c.Status(sctx, cl, n.ID)
		cancel()
		if err == nil && st.LeaderID != 0 {
			votes[st.LeaderID]++
		}
	}
	for id, v := range votes {
		if v*2 > len(c.Nodes) {
			return id
		}
	}
	return 0
}

var errNoConvergence = errors.New("the nodes did not converge")
