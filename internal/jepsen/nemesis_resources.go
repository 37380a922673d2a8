package jepsen

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The resource nemeses: disk, slow-client, flood. Each checks, at its
// heal, what the design promises under it (docs/design/
// hostile-input-and-resources.md): the node is still up (a crash is
// recorded by the cluster and fails the run with the node's log tail),
// it still serves a new client, and it stops cleanly when asked.

// applyDisk fills the disk of the chosen nodes.
func (nm *nemesis) applyDisk(ctx context.Context, f *Fault) func() {
	var targets []uint64
	if f.Variant == "all" {
		for _, n := range nm.c.Nodes {
			targets = append(targets, n.ID)
		}
	} else if id := nm.pickNode(ctx, f.Variant, f.Pick); id != 0 {
		targets = []uint64{id}
	}
	if len(targets) == 0 {
		f.Applied = "disk fault skipped (no running node)"
		return func() {}
	}
	var filled []string
	var slots []*Node
	var ids []uint64 // ids[i] is slots[i]'s node id when filled
	for _, id := range targets {
		added, err := nm.c.Fill(id)
		if err != nil {
			filled = append(filled, fmt.Sprintf("node %d: filling failed: %v", id, err))
			continue
		}
		free, _ := nm.c.FreeBytes(id)
		filled = append(filled, fmt.Sprintf("node %d: %d MiB filler, %d KiB left", id, added>>20, free>>10))
		slots = append(slots, nm.c.Node(id))
		ids = append(ids, id)
	}
	f.Nodes = targets
	f.Applied = fmt.Sprintf("fill the disk (%s) of %s", f.Mode, strings.Join(filled, "; "))

	stop := make(chan struct{})
	var wg sync.WaitGroup
	exhausted := make([]string, len(slots))
	if f.Mode == "exhaust" {
		for i, n := range slots {
			wg.Add(1)
			go func() {
				defer wg.Done()
				exhausted[i] = exhaust(n, ids[i], stop)
			}()
		}
	}
	return func() {
		close(stop)
		wg.Wait()
		var notes []string
		for i, n := range slots {
			id := ids[i]
			if cur, _ := n.current(); cur != id {
				notes = append(notes, fmt.Sprintf("node %d was replaced during the fault", id))
				_ = unfillSlot(n)
				continue
			}
			note := fmt.Sprintf("node %d: %s", id, nm.diskFullState(ctx, id))
			if exhausted[i] != "" {
				note += "; " + exhausted[i]
			}
			notes = append(notes, note)
			if err := nm.c.Unfill(id); err != nil {
				nm.problem("deleting node %d's filler: %v", id, err)
			}
		}
		if f.Mode == "restart" {
			for i, n := range slots {
				id := ids[i]
				if cur, pid := n.current(); cur != id || pid == 0 {
					continue // replaced, or down (killed, or crashed: recorded)
				}
				if err := nm.c.Stop(id); err != nil {
					nm.problem("after its disk was full, %v; its log ends: %s", err, strings.Join(nm.c.LogTail(id, 6), " | "))
				}
				if err := nm.c.Start(id); err != nil {
					nm.problem("restarting node %d after its disk was full: %v", id, err)
				}
				notes = append(notes, fmt.Sprintf("node %d stopped and started again", id))
			}
		}
		f.Result = strings.Join(notes, "; ")
	}
}

// exhaustWait bounds how long exhaust waits for the node to give its
// reserve back before it fills again anyway: the server checks its free
// space every 500 ms.
const exhaustWait = 2 * time.Second

// exhaust waits until the node in slot n (still node id) has deleted its
// ballast, the reserve it gives back to itself on a full disk, then fills
// the disk again: the node must live with no space at all.
func exhaust(n *Node, id uint64, stop <-chan struct{}) string {
	ballast := filepath.Join(n.Dir, reserveName)
	deadline := time.Now().Add(exhaustWait)
	released := false
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !released && time.Now().Before(deadline) {
		select {
		case <-stop:
			return "the fault ended before the reserve was released"
		case <-t.C:
		}
		if _, err := os.Stat(ballast); os.IsNotExist(err) {
			released = true
		}
	}
	if cur, _ := n.current(); cur != id {
		return "" // replaced meanwhile: its successor is not this fault's target
	}
	added, err := fillFile(filepath.Join(n.disk, fillerName))
	if err != nil {
		return fmt.Sprintf("filling again failed: %v", err)
	}
	if released {
		return fmt.Sprintf("reserve released, then %d KiB more filled", added>>10)
	}
	return fmt.Sprintf("no reserve released within %s; %d KiB more filled", exhaustWait, added>>10)
}

// diskFullState asks node id whether it is in disk-full mode (STATS
// disk_full).
func (nm *nemesis) diskFullState(ctx context.Context, id uint64) string {
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := nm.c.Status(sctx, nm.cl, id)
	if err != nil {
		return "no STATS answer: " + firstLine(err)
	}
	var doc struct {
		DiskFull json.RawMessage `json:"disk_full"`
	}
	if json.Unmarshal(st.Raw, &doc) != nil || len(doc.DiskFull) == 0 {
		return "STATS has no disk_full"
	}
	var why string
	if json.Unmarshal(doc.DiskFull, &why) == nil {
		return "in disk-full mode (" + why + ")"
	}
	return "STATS disk_full: " + string(doc.DiskFull)
}

// applySlowClient starts a slow-reading client on the chosen node.
func (nm *nemesis) applySlowClient(ctx context.Context, f *Fault) func() {
	id := nm.pickNode(ctx, f.Variant, f.Pick)
	if id == 0 {
		f.Applied = "slow client skipped (no running node)"
		return func() {}
	}
	f.Nodes = []uint64{id}
	n := nm.c.Node(id)
	pid := n.pid()
	sc, err := startSlowClient(n.ClientAddr, f.Mode == "trickle")
	if err != nil {
		f.Applied = fmt.Sprintf("slow client to node %d: %v", id, err)
		return func() {}
	}
	reads := "reads no reply"
	if f.Mode == "trickle" {
		reads = "reads one reply byte a second"
	}
	f.Applied = fmt.Sprintf("a client pipelines SCANs and GETs to node %d and %s", id, reads)
	return func() {
		probed := nm.probeNode(id, pid, NemesisSlowClient)
		peak := nm.mem.windowPeak(id)
		f.Result = fmt.Sprintf("%s; node %d's memory peaked at %d MiB during the fault; %s", sc.close(), id, peak>>20, probed)
	}
}

// floodDialBudget bounds the flood's dialing: against a paused node the
// kernel's accept queue fills and every further dial waits for its
// timeout.
const floodDialBudget = 5 * time.Second

// applyFlood opens many connections to the chosen node from another
// loopback address.
func (nm *nemesis) applyFlood(ctx context.Context, f *Fault) func() {
	id := nm.pickNode(ctx, f.Variant, f.Pick)
	if id == 0 {
		f.Applied = "flood skipped (no running node)"
		return func() {}
	}
	f.Nodes = []uint64{id}
	n := nm.c.Node(id)
	pid := n.pid()
	src := floodSource(f.Pick)
	dctx, cancel := context.WithTimeout(ctx, floodDialBudget)
	fl := startFlood(dctx, n.ClientAddr, src, nm.floodConns, f.Mode == "trickle")
	cancel()
	what := "sending nothing"
	if f.Mode == "trickle" {
		what = "each sending one byte a second"
	}
	f.Applied = fmt.Sprintf("%d connections to node %d from %s, %s", nm.floodConns, id, src, what)
	return func() {
		probed := nm.probeNode(id, pid, NemesisFlood)
		r := fl.close()
		// A refused connection must be told why (one ERROR frame), not
		// just closed: with the flood sending nothing, a close without a
		// frame cannot be a reset racing the server's reply.
		if f.Mode == "idle" && r.Silent > 0 && n.pid() == pid {
			nm.problem("node %d closed %d of the flood's idle connections without a reply (a refusal must name the limit)", id, r.Silent)
		}
		f.Result = fmt.Sprintf("from %s: %s; %s", src, r, probed)
	}
}

// probeNode checks that node id (process pid when the fault started)
// serves a new client from the workload's address, and records a problem
// when it does not. It skips a node that another fault stopped, paused or
// replaced meanwhile.
func (nm *nemesis) probeNode(id uint64, pid int, kind string) string {
	n := nm.c.Node(id)
	if n == nil || n.pid() != pid || pid == 0 {
		return "not probed: the node was restarted, replaced or is down"
	}
	if nm.c.Paused(id) {
		return "not probed: the node is paused"
	}
	start := time.Now()
	if err := probe(n.ClientAddr, probeTimeout); err != nil {
		nm.problem("under the %s fault, node %d did not serve a new client from 127.0.0.1 within %s: %v", kind, id, probeTimeout, err)
		return "a new client was NOT served: " + err.Error()
	}
	return fmt.Sprintf("a new client from 127.0.0.1 was served in %s", time.Since(start).Round(time.Millisecond))
}
