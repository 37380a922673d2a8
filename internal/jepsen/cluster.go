package jepsen

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kayadb/kayadb/client"
	"github.com/kayadb/kayadb/internal/loopport"
)

// Node is one slot of the harness's cluster: a kayadb-server process (when
// running), its data directory and its addresses. The membership nemesis
// gives a slot a new node id.
type Node struct {
	ID         uint64
	Dir        string // data directory (kept for the report)
	ClientAddr string
	RaftListen string // where the process listens for raft
	RaftProxy  string // what the roster advertises: the harness's proxy

	// disk is the mount point of the slot's own tmpfs ("" without one):
	// Dir lies inside it, and so does the disk nemesis's filler.
	disk string
	// slot is the slot's number (1-based), which names its files.
	slot int

	mu      sync.Mutex
	proc    *proc // the running process, nil when stopped by the harness
	paused  bool
	starts  int
	logPath string
	joiner  bool // replaced by the membership nemesis: starts with --join
}

// proc is one run of a node's process.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed after Wait returned and state is set
	// expected is set before the harness kills or stops the process: an
	// exit without it is a crash.
	expected atomic.Bool
	state    *os.ProcessState
}

// Crash is a node process that exited without the harness asking it to.
type Crash struct {
	ID     uint64        `json:"id"`
	At     time.Duration `json:"at"`     // since the cluster was made
	Status string        `json:"status"` // "exit status 1", "signal: aborted", …
	Tail   []string      `json:"log_tail"`
}

// Cluster runs the processes.
type Cluster struct {
	Bin   string
	Nodes []*Node
	Net   *Network
	Tick  time.Duration
	maxID uint64 // the highest node id ever used (ids are never reused)
	dir   string
	start time.Time
	// diskReserve is the servers' --disk-reserve, in bytes.
	diskReserve int64
	// ServerArgs are added to every server's command line (for example
	// --read-mode lease).
	ServerArgs []string

	cmu     sync.Mutex
	crashes []Crash
}

// crashTailLines is how many of a crashed node's last log lines its
// crash record keeps: enough for a panic's message and the lines that
// led to it, few enough for a CI log.
const crashTailLines = 12

// NewCluster lays out n nodes under dir with proxies in front of their
// raft ports. Nothing runs until Start.
func NewCluster(bin, dir string, n int, tick time.Duration) (*Cluster, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c := &Cluster{Bin: bin, Net: NewNetwork(), Tick: tick, maxID: uint64(n), dir: dir, start: time.Now(), diskReserve: defaultReserveOnDisk}
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
			slot: i, logPath: filepath.Join(dir, fmt.Sprintf("n%d.log", i))}
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
// directory (the old one is kept, renamed, for the report; on a slot with
// its own small file system it is copied out of it and removed, so that
// the new node has the space). The process must be stopped. The new node
// starts with --join.
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
	kept := filepath.Join(c.dir, fmt.Sprintf("n%d.node%d-removed", n.slot, id))
	if n.disk == "" {
		if err := os.Rename(n.Dir, kept); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
	} else {
		if err := copyTree(n.Dir, kept); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("keeping node %d's data: %w", id, err)
		}
		if err := os.RemoveAll(n.Dir); err != nil {
			return 0, err
		}
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
	if n.proc != nil {
		select {
		case <-n.proc.exited:
			// It exited by itself (its crash is recorded): start anew.
		default:
			return fmt.Errorf("node %d is already running", id)
		}
	}
	args := []string{"--node-id", strconv.FormatUint(id, 10), "--data", n.Dir,
		// The other nodes reach this one through the harness's proxy.
		"--raft-addr", n.RaftListen, "--advertise-raft-addr", n.RaftProxy, "--client-addr", n.ClientAddr, "--no-metrics",
		"--tick", c.Tick.String(), "--request-timeout", "2s", "--log-format", "text", "--log-level", "info",
		"--snapshot-entries", "2000", "--snapshot-catchup-entries", "500",
		"--disk-reserve", strconv.FormatInt(c.diskReserve, 10)}
	for _, m := range c.Nodes {
		args = append(args, "--peer", fmt.Sprintf("%d=%s,%s", m.ID, m.RaftProxy, m.ClientAddr))
	}
	if n.joiner {
		args = append(args, "--join")
	}
	args = append(args, c.ServerArgs...)
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
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	n.proc, n.paused = p, false
	n.starts++
	go func() {
		_ = cmd.Wait()
		logf.Close()
		p.state = cmd.ProcessState
		if !p.expected.Load() {
			c.recordCrash(id, n.logPath, p.state)
		}
		close(p.exited)
	}()
	return nil
}

// recordCrash notes that node id's process exited on its own, with the
// last lines of its log (read now: a later start appends to the file).
func (c *Cluster) recordCrash(id uint64, logPath string, st *os.ProcessState) {
	status := "unknown exit"
	if st != nil {
		status = st.String()
	}
	cr := Crash{ID: id, At: time.Since(c.start).Round(time.Millisecond), Status: status, Tail: crashTail(logPath, crashTailLines)}
	c.cmu.Lock()
	c.crashes = append(c.crashes, cr)
	c.cmu.Unlock()
}

// take detaches node id's process from its slot, marking its coming exit
// as the harness's doing; nil when none runs.
func (c *Cluster) take(id uint64) (*proc, bool) {
	n := c.Node(id)
	if n == nil {
		return nil, false
	}
	n.mu.Lock()
	p, paused := n.proc, n.paused
	n.proc, n.paused = nil, false
	n.mu.Unlock()
	if p == nil {
		return nil, false
	}
	p.expected.Store(true)
	return p, paused
}

// Kill sends SIGKILL to node id and waits for it to exit.
func (c *Cluster) Kill(id uint64) {
	p, _ := c.take(id)
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// stopBudget is how long Stop waits after SIGTERM: longer than the
// server's own shutdown budget, so that a server that overruns it exits
// by itself (with an error) before the harness kills it.
const stopBudget = 25 * time.Second

// Stop sends SIGTERM and waits up to stopBudget, then kills. It returns an
// error when the process did not stop cleanly: an exit status other than
// 0 (the server reports a failed shutdown that way), or no exit within
// the budget. A process that had already exited by itself returns nil
// (its crash is recorded).
func (c *Cluster) Stop(id uint64) error {
	p, paused := c.take(id)
	if p == nil {
		return nil
	}
	select {
	case <-p.exited:
		return nil
	default:
	}
	if paused {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopBudget):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
		return fmt.Errorf("node %d did not stop within %s of SIGTERM; killed", id, stopBudget)
	}
	if !p.state.Success() {
		return fmt.Errorf("node %d stopped with %s after SIGTERM (a failed shutdown)", id, p.state)
	}
	return nil
}

// Pause stops node id with SIGSTOP; Resume continues it.
func (c *Cluster) Pause(id uint64) {
	n := c.Node(id)
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc != nil && !n.paused {
		_ = n.proc.cmd.Process.Signal(syscall.SIGSTOP)
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
	if n.proc != nil && n.paused {
		_ = n.proc.cmd.Process.Signal(syscall.SIGCONT)
		n.paused = false
	}
}

// Paused reports whether node id is stopped by Pause.
func (c *Cluster) Paused(id uint64) bool {
	n := c.Node(id)
	if n == nil {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.paused
}

// Running reports whether node id's process runs (paused counts).
func (c *Cluster) Running(id uint64) bool {
	return c.PID(id) != 0
}

// PID returns the process id of node id's running process, or 0.
func (c *Cluster) PID(id uint64) int {
	n := c.Node(id)
	if n == nil {
		return 0
	}
	return n.pid()
}

func (n *Node) pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil {
		return 0
	}
	select {
	case <-n.proc.exited:
		return 0
	default:
		return n.proc.cmd.Process.Pid
	}
}

// current returns the slot's node id and process id (0: not running),
// read together under the slot's lock (for goroutines other than the
// harness's main one, which alone changes ids).
func (n *Node) current() (id uint64, pid int) {
	n.mu.Lock()
	id = n.ID
	n.mu.Unlock()
	return id, n.pid()
}

// Crashed lists the nodes whose process exited on its own (not killed or
// stopped by the harness) at any time since the cluster was made, even if
// the harness restarted them since: a node that dies by itself is a
// finding.
func (c *Cluster) Crashed() []uint64 {
	var out []uint64
	for _, cr := range c.Crashes() {
		if !slices.Contains(out, cr.ID) {
			out = append(out, cr.ID)
		}
	}
	return out
}

// Crashes returns every crash recorded so far, in order.
func (c *Cluster) Crashes() []Crash {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	return append([]Crash(nil), c.crashes...)
}

// LogTail returns the last lines (at most max) of node id's log, for a
// report that must explain a node's death without its files at hand (a CI
// log).
func (c *Cluster) LogTail(id uint64, max int) []string {
	n := c.Node(id)
	if n == nil {
		return nil
	}
	return tailFile(n.logPath, max)
}

// goDumpStarts are the first words of the Go runtime's report of a
// panic, a fatal error or a fatal signal (a goroutine dump follows).
var goDumpStarts = []string{"panic: ", "fatal error: ", "SIGABRT: ", "SIGSEGV: ", "SIGBUS: ", "SIGQUIT: ", "SIGILL: ", "SIGFPE: ", "SIGTRAP: "}

// crashTail returns what explains a crash, in at most max lines: the last
// log lines of the latest start; or, when the process ended in a Go
// runtime dump (hundreds of lines of goroutines and registers), the log
// lines just before the dump and the dump's first lines (the panic's
// message and the crashing goroutine's top frames).
func crashTail(path string, max int) []string {
	lines := tailFile(path, 1<<20)
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "=== harness: start") {
			lines = lines[i+1:]
			break
		}
	}
	dump := -1
	for i, l := range lines {
		if slices.ContainsFunc(goDumpStarts, func(p string) bool { return strings.HasPrefix(l, p) }) {
			dump = i
			break
		}
	}
	if dump < 0 || len(lines) <= max {
		if len(lines) > max {
			lines = lines[len(lines)-max:]
		}
		return lines
	}
	before := min(dump, max/2)
	out := append([]string(nil), lines[dump-before:dump]...)
	end := min(len(lines), dump+max-before)
	out = append(out, lines[dump:end]...)
	if end < len(lines) {
		out = append(out, fmt.Sprintf("… (%d more lines of the runtime's dump in the log)", len(lines)-end))
	}
	return out
}

// tailFile returns the last lines (at most max) of a log file.
func tailFile(path string, max int) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return []string{fmt.Sprintf("(reading %s: %v)", path, err)}
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > max {
		lines = lines[len(lines)-max:]
	}
	return lines
}

// Shutdown stops every node (gracefully, in parallel) and the network. It
// returns the nodes that did not stop cleanly (see Stop). The nodes' file
// systems stay mounted until Close.
func (c *Cluster) Shutdown() error {
	var wg sync.WaitGroup
	errs := make([]error, len(c.Nodes))
	for i, n := range c.Nodes {
		wg.Add(1)
		go func(i int, id uint64) {
			defer wg.Done()
			errs[i] = c.Stop(id)
		}(i, n.ID)
	}
	wg.Wait()
	c.Net.Close()
	return errors.Join(errs...)
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
