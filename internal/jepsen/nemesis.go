package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/kayadb/kayadb/client"
)

// Nemesis names.
const (
	NemesisKill  = "kill"  // kill -9 a node, restart it later
	NemesisPause = "pause" // SIGSTOP a node, SIGCONT later
	// NemesisLeaderPause stops the leader's clock: SIGSTOP the leader and
	// cut its raft links, so that another leader takes over; SIGCONT it
	// halfway through the fault (0.5–2.5 s later: longer than its read
	// lease, --read-mode lease, and than an election timeout) while its
	// raft links stay cut, so that it resumes believing it leads and
	// clients still reach it; heal the links at the end. A leader that
	// trusted a stale lease would answer reads from its old state then.
	NemesisLeaderPause = "leader-pause"
	NemesisPartition   = "partition" // isolate the leader, split, bridge, one-way
	NemesisSlow        = "slow"      // added latency on links
	// NemesisMembership replaces a follower: remove it, wipe it, add a new
	// node (a new id) in its place as a learner, promote it at the heal.
	NemesisMembership = "membership"
	// NemesisTransfer moves the leadership (TRANSFER_LEADER) to another
	// running node every 200–500 ms while the fault lasts: leaders step
	// down with writes in flight, committed and waiting to be applied.
	NemesisTransfer = "transfer"

	// Resource nemeses (docs/design/hostile-input-and-resources.md).

	// NemesisDisk fills the disk of one node or of all (each node has its
	// own tmpfs; needs root) with a filler file, to the last byte, and
	// deletes the filler at the heal. Modes: fill (once), exhaust (fill
	// again once the node has given its reserve back to itself), restart
	// (at the heal, stop the node gracefully and start it again).
	NemesisDisk = "disk"
	// NemesisSlowClient opens a connection to a node that pipelines large
	// SCANs and GETs and reads the replies one byte a second or never;
	// closed at the heal.
	NemesisSlowClient = "slow-client"
	// NemesisFlood opens Config.FloodConns connections to a node from
	// another loopback address (127.0.0.2–251) that send nothing, or one
	// byte a second; closed at the heal.
	NemesisFlood = "flood"
)

// AllNemeses lists every nemesis.
var AllNemeses = []string{NemesisKill, NemesisPause, NemesisPartition, NemesisSlow, NemesisMembership,
	NemesisDisk, NemesisSlowClient, NemesisFlood, NemesisLeaderPause, NemesisTransfer}

// Fault is one scheduled fault. The schedule (kinds, variants, targets'
// roles, times) follows from the seed alone; which node is "the leader"
// is resolved when the fault starts.
type Fault struct {
	At       time.Duration `json:"at"`
	Duration time.Duration `json:"duration"`
	Kind     string        `json:"kind"`
	Variant  string        `json:"variant"` // leader, follower, random, all; isolate-leader, split, bridge, one-way; …
	// Mode is how a resource fault behaves: fill, exhaust, restart (disk);
	// no-read, trickle (slow-client); idle, trickle (flood).
	Mode  string        `json:"mode,omitempty"`
	Pick  uint64        `json:"-"` // random draw used to choose nodes
	Delay time.Duration `json:"delay,omitempty"`

	// Filled in when applied.
	Nodes   []uint64 `json:"nodes,omitempty"`
	Applied string   `json:"applied,omitempty"`
	// Result is what a resource fault saw, filled in at its heal.
	Result string `json:"result,omitempty"`
}

// Schedule draws the fault schedule of a run from its seed: faults of the
// enabled kinds, sometimes two at once, with gaps to recover in between.
func Schedule(seed int64, nemeses []string, duration time.Duration) []Fault {
	if len(nemeses) == 0 {
		return nil
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6b617961))
	var out []Fault
	at := 2*time.Second + time.Duration(rng.IntN(1000))*time.Millisecond
	for at < duration-3*time.Second {
		n := 1
		if len(nemeses) > 1 && rng.IntN(4) == 0 {
			n = 2 // combine two kinds
		}
		kinds := append([]string(nil), nemeses...)
		rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
		d := time.Duration(1000+rng.IntN(4000)) * time.Millisecond
		for _, kind := range kinds[:n] {
			f := Fault{At: at, Duration: d, Kind: kind, Pick: rng.Uint64()}
			switch kind {
			case NemesisKill, NemesisPause:
				f.Variant = []string{"leader", "follower", "random"}[rng.IntN(3)]
			case NemesisLeaderPause:
				f.Variant = "leader"
			case NemesisPartition:
				f.Variant = []string{"isolate-leader", "split", "bridge", "one-way"}[rng.IntN(4)]
			case NemesisSlow:
				f.Variant = []string{"node", "all"}[rng.IntN(2)]
				f.Delay = time.Duration(20+rng.IntN(130)) * time.Millisecond
			case NemesisMembership:
				f.Variant = "replace-follower"
			case NemesisTransfer:
				f.Variant = "leader"
				f.Delay = time.Duration(200+rng.IntN(300)) * time.Millisecond
			case NemesisDisk:
				f.Variant = []string{"leader", "follower", "random", "all"}[rng.IntN(4)]
				f.Mode = []string{"fill", "exhaust", "restart"}[rng.IntN(3)]
			case NemesisSlowClient:
				// Only the leader answers reads with data (a follower
				// redirects), so it is the target twice as often.
				f.Variant = []string{"leader", "leader", "random"}[rng.IntN(3)]
				f.Mode = []string{"no-read", "trickle"}[rng.IntN(2)]
			case NemesisFlood:
				f.Variant = []string{"leader", "follower", "random"}[rng.IntN(3)]
				f.Mode = []string{"idle", "trickle"}[rng.IntN(2)]
			}
			out = append(out, f)
		}
		at += d + time.Duration(1000+rng.IntN(3000))*time.Millisecond
	}
	return out
}

// nemesis applies and heals faults on a cluster.
type nemesis struct {
	c   *Cluster
	cl  *client.Client // status and admin requests
	log func(string, ...any)
	// joining lists replacement nodes not yet added, started or promoted.
	joining map[uint64]*joiner
	// removing lists nodes whose removal timed out or failed without a
	// definite answer: it may still take effect, so the harness retries it
	// until it has (and then replaces the node) rather than keep counting
	// on a node that may have left the cluster.
	removing map[uint64]bool

	// Resource nemeses.
	floodConns int
	mem        *memoryMonitor
	// problems are findings of the nemeses themselves (a node that did
	// not serve a new client under a resource fault, a stop that failed):
	// each makes the run invalid.
	problems []string
}

// problem records a finding that makes the run invalid.
func (nm *nemesis) problem(format string, args ...any) {
	p := fmt.Sprintf(format, args...)
	nm.problems = append(nm.problems, p)
	nm.log("PROBLEM: %s", p)
}

// joiner is the progress of a replacement node.
type joiner struct {
	added, started bool // promoted: removed from nemesis.joining
}

// pickNode resolves a variant to a node id among the running ones.
func (nm *nemesis) pickNode(ctx context.Context, variant string, pick uint64) uint64 {
	var running []uint64
	for _, n := range nm.c.Nodes {
		if nm.c.Running(n.ID) {
			running = append(running, n.ID)
		}
	}
	if len(running) == 0 {
		return 0
	}
	lead := nm.c.Leader(ctx, nm.cl)
	switch variant {
	case "leader":
		if lead != 0 {
			return lead
		}
	case "follower":
		var fs []uint64
		for _, id := range running {
			if id != lead {
				fs = append(fs, id)
			}
		}
		if len(fs) > 0 {
			return fs[pick%uint64(len(fs))]
		}
	}
	return running[pick%uint64(len(running))]
}

// apply starts a fault and returns its healing function.
func (nm *nemesis) apply(ctx context.Context, f *Fault) func() {
	ids := make([]uint64, 0, len(nm.c.Nodes))
	for _, n := range nm.c.Nodes {
		ids = append(ids, n.ID)
	}
	net := nm.c.Net
	switch f.Kind {
	case NemesisKill:
		id := nm.pickNode(ctx, f.Variant, f.Pick)
		if id == 0 {
			return func() {}
		}
		f.Nodes = []uint64{id}
		f.Applied = fmt.Sprintf("kill -9 node %d", id)
		nm.c.Kill(id)
		return func() {
			if err := nm.c.Start(id); err != nil {
				nm.log("restarting node %d: %v", id, err)
			}
		}
	case NemesisLeaderPause:
		id := nm.pickNode(ctx, "leader", f.Pick)
		if id == 0 {
			return func() {}
		}
		f.Nodes = []uint64{id}
		f.Applied = fmt.Sprintf("SIGSTOP leader %d and cut its raft links; SIGCONT after %s, still cut off", id, f.Duration/2)
		nm.c.Pause(id)
		cut(net, []uint64{id}, without(ids, id))
		resume := time.AfterFunc(f.Duration/2, func() { nm.c.Resume(id) })
		return func() {
			resume.Stop()
			nm.c.Resume(id)
			net.Heal()
		}
	case NemesisPause:
		id := nm.pickNode(ctx, f.Variant, f.Pick)
		if id == 0 {
			return func() {}
		}
		f.Nodes = []uint64{id}
		f.Applied = fmt.Sprintf("SIGSTOP node %d", id)
		nm.c.Pause(id)
		return func() { nm.c.Resume(id) }
	case NemesisPartition:
		lead := nm.c.Leader(ctx, nm.cl)
		if lead == 0 {
			lead = ids[f.Pick%uint64(len(ids))]
		}
		others := without(ids, lead)
		switch f.Variant {
		case "isolate-leader":
			cut(net, []uint64{lead}, others)
			f.Nodes, f.Applied = []uint64{lead}, fmt.Sprintf("isolate leader %d", lead)
		case "split":
			// A random minority, which may or may not hold the leader.
			perm := permute(ids, f.Pick)
			minority := perm[:(len(ids)-1)/2]
			cut(net, minority, without(ids, minority...))
			f.Nodes, f.Applied = minority, fmt.Sprintf("split %v | %v", minority, without(ids, minority...))
		case "bridge":
			// Two halves that only one node (the bridge) connects.
			perm := permute(ids, f.Pick)
			bridge := perm[0]
			rest := perm[1:]
			a, b := rest[:len(rest)/2], rest[len(rest)/2:]
			cut(net, a, b)
			f.Nodes, f.Applied = []uint64{bridge}, fmt.Sprintf("bridge %d between %v and %v", bridge, a, b)
		case "one-way":
			// The leader's messages are lost; it still hears the others.
			for _, o := range others {
				net.Drop(lead, o)
			}
			f.Nodes, f.Applied = []uint64{lead}, fmt.Sprintf("drop everything leader %d sends", lead)
		}
		return net.Heal
	case NemesisMembership:
		for old := range nm.removing {
			_, _ = nm.remove(ctx, old)
		}
		lead := nm.c.Leader(ctx, nm.cl)
		id := nm.pickNode(ctx, "follower", f.Pick)
		if id == 0 || id == lead || len(nm.joining) > 0 || len(nm.removing) > 0 {
			f.Applied = "membership change skipped (no follower, or an earlier replacement unfinished)"
			return func() {}
		}
		newID, err := nm.remove(ctx, id)
		if err != nil {
			if nm.removing[id] {
				f.Nodes = []uint64{id}
				f.Applied = fmt.Sprintf("remove node %d: outcome unknown (%v); retried until it is removed", id, firstLine(err))
			} else {
				f.Applied = fmt.Sprintf("replacing node %d failed: %v", id, firstLine(err))
			}
			return func() {}
		}
		f.Nodes = []uint64{id, newID}
		f.Applied = fmt.Sprintf("replace node %d by node %d (remove, wipe, add as learner)", id, newID)
		return func() { nm.advance(ctx, newID, true) }
	case NemesisTransfer:
		return nm.applyTransfer(ctx, f)
	case NemesisSlow:
		if f.Variant == "node" {
			id := nm.pickNode(ctx, "random", f.Pick)
			for _, o := range without(ids, id) {
				net.Delay(id, o, f.Delay)
				net.Delay(o, id, f.Delay)
			}
			f.Nodes, f.Applied = []uint64{id}, fmt.Sprintf("+%s latency to and from node %d", f.Delay, id)
		} else {
			for _, a := range ids {
				for _, b := range without(ids, a) {
					net.Delay(a, b, f.Delay)
				}
			}
			f.Applied = fmt.Sprintf("+%s latency on every link", f.Delay)
		}
		return net.Heal
	case NemesisDisk:
		return nm.applyDisk(ctx, f)
	case NemesisSlowClient:
		return nm.applySlowClient(ctx, f)
	case NemesisFlood:
		return nm.applyFlood(ctx, f)
	}
	return func() {}
}

// applyTransfer moves the leadership to another node every f.Delay until
// the heal, which records the transfers. Node ids belong to the harness's
// main goroutine, so the mover works on the ids and addresses of the
// moment the fault starts (a transfer to a node replaced meanwhile fails,
// and is counted as failed).
func (nm *nemesis) applyTransfer(ctx context.Context, f *Fault) func() {
	type member struct {
		id   uint64
		addr string
	}
	var nodes []member
	for _, n := range nm.c.Nodes {
		nodes = append(nodes, member{n.ID, n.ClientAddr})
	}
	stop, done := make(chan struct{}), make(chan struct{})
	f.Applied = fmt.Sprintf("move the leadership every %s", f.Delay)
	var moved, failed []string
	go func() {
		defer close(done)
		pick := f.Pick
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-time.After(f.Delay):
			}
			var lead uint64
			for _, m := range nodes {
				sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				st, err := nm.cl.Status(sctx, m.addr)
				cancel()
				if err == nil && st.LeaderID == m.id {
					lead = m.id
					break
				}
			}
			if lead == 0 {
				continue // none to move: an election is under way
			}
			pick++
			to := nodes[pick%uint64(len(nodes))].id
			if to == lead {
				to = nodes[(pick+1)%uint64(len(nodes))].id
			}
			tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := nm.cl.TransferLeader(tctx, to)
			cancel()
			if err != nil {
				failed = append(failed, fmt.Sprintf("%d→%d: %s", lead, to, firstLine(err)))
				continue
			}
			moved = append(moved, fmt.Sprintf("%d→%d", lead, to))
		}
	}()
	return func() {
		close(stop)
		<-done
		f.Result = fmt.Sprintf("%d transfers (%s)", len(moved), strings.Join(moved, " "))
		if len(failed) > 0 {
			f.Result += fmt.Sprintf("; %d refused or failed (first: %s)", len(failed), failed[0])
		}
	}
}

func cut(net *Network, a, b []uint64) {
	for _, x := range a {
		for _, y := range b {
			net.Drop(x, y)
			net.Drop(y, x)
		}
	}
}

func without(ids []uint64, drop ...uint64) []uint64 {
	var out []uint64
	for _, id := range ids {
		skip := false
		for _, d := range drop {
			if id == d {
				skip = true
			}
		}
		if !skip {
			out = append(out, id)
		}
	}
	return out
}

func permute(ids []uint64, pick uint64) []uint64 {
	out := append([]uint64(nil), ids...)
	r := rand.New(rand.NewPCG(pick, 1))
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// ParseList splits a comma-separated list and checks every name.
func ParseList(what, s string, valid []string) ([]string, error) {
	if s == "" || s == "none" {
		return nil, nil
	}
	if s == "all" {
		return append([]string(nil), valid...), nil
	}
	var out []string
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		ok := false
		for _, v := range valid {
			if v == name {
				ok = true
			}
		}
		if !ok {
			sorted := append([]string(nil), valid...)
			sort.Strings(sorted)
			return nil, fmt.Errorf("unknown %s %q (want some of %s, or all)", what, name, strings.Join(sorted, ","))
		}
		out = append(out, name)
	}
	return out, nil
}

// remove takes node id out of the cluster and, once it is out, kills it and
// gives its slot a replacement (a new id, added as a learner and started).
// An error without a definite refusal leaves id in nm.removing, to be
// retried by later calls. It returns the replacement's id.
func (nm *nemesis) remove(ctx context.Context, id uint64) (uint64, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := nm.cl.RemoveMember(rctx, id)
	cancel()
	if err != nil && strings.Contains(err.Error(), "cannot remove node") {
		// A definite refusal, or the node is already out (an earlier
		// attempt took effect): the leader's roster tells which.
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, serr := nm.cl.Status(sctx, "")
		cancel()
		if serr != nil || st.Role != "leader" || slices.ContainsFunc(st.Members, func(m client.Member) bool { return m.ID == id }) {
			if !nm.removing[id] {
				return 0, err // refused; the node stays as it is
			}
			return 0, fmt.Errorf("removal of node %d still unsettled: %w", id, err)
		}
		err = nil
	}
	if err != nil && !nm.removing[id] && !errors.Is(err, client.ErrAmbiguous) && !errors.Is(err, client.ErrServer) {
		// Never reached a leader that could propose it (no leader, no
		// connection, a deadline before sending): nothing happened.
		return 0, err
	}
	if err != nil {
		if nm.removing == nil {
			nm.removing = map[uint64]bool{}
		}
		nm.removing[id] = true
		nm.log("removing node %d: %v (outcome unknown; will retry)", id, firstLine(err))
		return 0, err
	}
	delete(nm.removing, id)
	nm.c.Kill(id)
	newID, err := nm.c.Replace(id)
	if err != nil {
		return 0, fmt.Errorf("removed node %d; replacing it failed: %w", id, err)
	}
	if nm.joining == nil {
		nm.joining = map[uint64]*joiner{}
	}
	nm.joining[newID] = &joiner{}
	nm.advance(ctx, newID, false)
	return newID, nil
}

// advance moves a replacement node along: add it as a learner, start it,
// and (when promote is set) promote it once it has caught up. Each step is
// retried on later calls if the cluster refuses it now (during a fault).
func (nm *nemesis) advance(ctx context.Context, id uint64, promote bool) {
	j := nm.joining[id]
	if j == nil {
		return
	}
	n := nm.c.Node(id)
	if n == nil {
		delete(nm.joining, id)
		return
	}
	if !j.added {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := nm.cl.AddMember(actx, id, n.RaftProxy, n.ClientAddr, true)
		cancel()
		// An earlier attempt may have timed out and still taken effect.
		if err != nil && !strings.Contains(err.Error(), "already a cluster member") {
			nm.log("adding node %d: %v (will retry)", id, firstLine(err))
			return
		}
		j.added = true
	}
	if !j.started {
		if err := nm.c.Start(id); err != nil {
			nm.log("starting node %d: %v", id, err)
			return
		}
		j.started = true
	}
	if !promote {
		return
	}
	// The learner must catch up before it can be promoted: retry for a
	// while (the server refuses while it lags).
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := nm.cl.PromoteLearner(pctx, id)
		cancel()
		// "not a learner": an earlier attempt that timed out took effect.
		if err == nil || strings.Contains(err.Error(), "not a learner") {
			delete(nm.joining, id)
			nm.log("node %d promoted to voter", id)
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			nm.log("promoting node %d: %v (will retry)", id, firstLine(err))
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// finish completes every pending replacement (after the workload, with
// the faults healed).
func (nm *nemesis) finish(ctx context.Context, budget time.Duration) error {
	deadline := time.Now().Add(budget)
	for len(nm.joining) > 0 || len(nm.removing) > 0 {
		for id := range nm.removing {
			_, _ = nm.remove(ctx, id)
		}
		for id := range nm.joining {
			nm.advance(ctx, id, true)
		}
		if len(nm.joining) == 0 && len(nm.removing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			var ids, rm []uint64
			for id := range nm.joining {
				ids = append(ids, id)
			}
			for id := range nm.removing {
				rm = append(rm, id)
			}
			return fmt.Errorf("within %s: replacement nodes %v did not join; removals of nodes %v stayed unsettled", budget, ids, rm)
		}
		time.Sleep(500 * time.Millisecond)
	}
	return nil
}

func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
