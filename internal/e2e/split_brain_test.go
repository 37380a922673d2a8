package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// checkScript runs scripts/check-split-brain.sh with args and the given
// environment and returns its combined output and exit status.
func checkScript(t *testing.T, root string, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(root, "scripts", "check-split-brain.sh"), args...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), code
}

// fakeStatus is one node's STATS document as kayactl --json status prints
// it. voters and learners are ids; every member's client address is
// fakeAddr(id).
func fakeStatus(node int, role string, term, leader, commit, applied int, voters []int, learners ...int) string {
	var members []string
	for _, v := range voters {
		members = append(members, fmt.Sprintf(`{"id":%d,"raft_addr":"10.9.1.%d:7481","client_addr":"%s","role":"voter"}`, v, v, fakeAddr(v)))
	}
	for _, l := range learners {
		members = append(members, fmt.Sprintf(`{"id":%d,"raft_addr":"10.9.1.%d:7481","client_addr":"%s","role":"learner"}`, l, l, fakeAddr(l)))
	}
	return fmt.Sprintf(`{"role":%q,"term":%d,"commit_index":%d,"applied_index":%d,"peer_count":2,"raft_groups":1,`+
		`"engine":{"put_count":1,"last_sequence":9,"memtable_entries":3},"leader_id":%d,"members":[%s],"node_id":%d,`+
		`"snapshot_index":0,"snapshots_installed":0,"snapshots_taken":0}`,
		role, term, commit, applied, leader, strings.Join(members, ","), node)
}

func fakeAddr(id int) string { return fmt.Sprintf("10.9.0.%d:7379", id) }

// TestCheckSplitBrainVerdicts feeds check-split-brain.sh canned STATS
// documents through a stand-in for kayactl and checks its verdict in every
// situation it knows, including the ones a correct cluster never shows.
func TestCheckSplitBrainVerdicts(t *testing.T) {
	root := repoRoot(t)
	dir := t.TempDir()
	fake := filepath.Join(dir, "kayactl")
	// The stand-in answers `--server ADDR ... --json status` from
	// $FAKE_DIR/ADDR.json, and fails like kayactl when there is none.
	if err := os.WriteFile(fake, []byte(`#!/usr/bin/env bash
a=""
while (($#)); do case "$1" in --server) a="$2"; shift 2 ;; *) shift ;; esac; done
f="$FAKE_DIR/$a.json"
if [ -f "$f" ]; then cat "$f"; exit 0; fi
echo "error: kayadb: deadline exceeded; last error: kayadb: connecting to $a: i/o timeout" >&2
exit 1
`), 0o755); err != nil {
		t.Fatal(err)
	}
	v3 := []int{1, 2, 3}
	healthy := []string{
		fakeStatus(1, "follower", 5, 2, 100, 100, v3),
		fakeStatus(2, "leader", 5, 2, 100, 100, v3),
		fakeStatus(3, "follower", 5, 2, 99, 99, v3),
	}
	oldServer := func(role string, term int) string {
		return fmt.Sprintf(`{"role":%q,"term":%d,"commit_index":7,"applied_index":7,"peer_count":2,"raft_groups":1,"engine":{"put_count":1}}`, role, term)
	}
	cases := []struct {
		name  string
		nodes []string // documents of nodes 1..3; "" = no answer
		args  []string // before the addresses; nil: every address
		addrs []int    // nodes given on the command line (default 1..3)
		code  int
		want  []string
	}{
		{name: "healthy", nodes: healthy, code: 0,
			want: []string{"OK: 3 nodes answered; term 5; leader node 2; voters 1,2,3", "verdict: OK"}},
		{name: "one address finds the others", nodes: healthy, addrs: []int{2}, code: 0,
			want: []string{fakeAddr(1), fakeAddr(3), "OK: 3 nodes answered"}},
		{name: "no discovery", nodes: healthy, args: []string{"--no-discover"}, addrs: []int{2}, code: 0,
			want: []string{"OK: 1 nodes answered"}},
		{name: "two leaders in one term", code: 1, nodes: []string{
			fakeStatus(1, "leader", 5, 1, 100, 100, v3),
			fakeStatus(2, "leader", 5, 2, 100, 100, v3),
			fakeStatus(3, "follower", 5, 2, 100, 100, v3),
		}, want: []string{"CONFLICT: node 1 and node 2 both claim leadership in term 5", "verdict: CONFLICT"}},
		{name: "different leaders named in one term", code: 1, nodes: []string{
			fakeStatus(1, "follower", 5, 1, 100, 100, v3),
			fakeStatus(2, "follower", 5, 3, 100, 100, v3),
			fakeStatus(3, "leader", 5, 3, 100, 100, v3),
		}, want: []string{"CONFLICT: in term 5 node 1 names leader 1 but node 2 names leader 3"}},
		{name: "stale leader in an older term", code: 2, nodes: []string{
			fakeStatus(1, "leader", 4, 1, 90, 90, v3),
			fakeStatus(2, "leader", 5, 2, 100, 100, v3),
			fakeStatus(3, "follower", 5, 2, 100, 100, v3),
		}, want: []string{"DEGRADED: node 1 is a stale leader: it claims term 4, but term 5 exists with leader 2", "verdict: DEGRADED"}},
		{name: "cut-off follower", code: 2, nodes: []string{
			fakeStatus(1, "candidate", 4, 0, 90, 90, v3),
			fakeStatus(2, "leader", 5, 2, 100, 100, v3),
			fakeStatus(3, "follower", 5, 2, 100, 100, v3),
		}, want: []string{"DEGRADED: node 1 is in term 4, behind term 5, and names no one as leader"}},
		{name: "a node does not answer", code: 2, nodes: []string{healthy[0], healthy[1], ""},
			want: []string{"UNREACHABLE", "DEGRADED: " + fakeAddr(3) + " did not answer (kayadb: deadline exceeded"}},
		{name: "nothing answers", code: 2, nodes: []string{"", "", ""},
			want: []string{"DEGRADED: no node answered"}},
		{name: "no leader", code: 2, nodes: []string{
			fakeStatus(1, "candidate", 6, 0, 100, 100, v3),
			fakeStatus(2, "follower", 6, 0, 100, 100, v3),
			fakeStatus(3, "follower", 5, 2, 100, 100, v3),
		}, want: []string{"DEGRADED: no node knows a leader in the newest term 6", "node 3 is in term 5, behind term 6, and names 2 as leader"}},
		{name: "a follower without a leader", code: 2, nodes: []string{healthy[0], healthy[1],
			fakeStatus(3, "follower", 5, 0, 3, 3, v3)},
			want: []string{"DEGRADED: node 3 knows no leader in term 5 (others name 2)"}},
		{name: "lag ignored", code: 0, nodes: []string{healthy[0], healthy[1],
			fakeStatus(3, "follower", 5, 2, 100, 10, v3)}},
		{name: "lag", args: []string{"--max-lag", "50"}, code: 2, nodes: []string{healthy[0], healthy[1],
			fakeStatus(3, "follower", 5, 2, 100, 10, v3)},
			want: []string{"DEGRADED: node 3 has applied up to 10, more than 50 entries behind commit index 100"}},
		{name: "voters differ", code: 2, nodes: []string{healthy[0], healthy[1],
			fakeStatus(3, "follower", 5, 2, 100, 100, []int{1, 2}, 3)},
			want: []string{"DEGRADED: the nodes disagree on the voters", "[1,2] (node 3)"}},
		{name: "older servers", code: 0, nodes: []string{oldServer("follower", 3), oldServer("leader", 3), oldServer("follower", 3)},
			want: []string{"OK: 3 nodes answered; term 3; leader node " + fakeAddr(2)}},
		{name: "older servers, two leaders", code: 1, nodes: []string{oldServer("leader", 3), oldServer("leader", 3), oldServer("follower", 3)},
			want: []string{"both claim leadership in term 3"}},
		{name: "bad --max-lag", args: []string{"--max-lag", "x"}, code: 4, nodes: healthy},
		{name: "unknown option", args: []string{"--frobnicate"}, code: 4, nodes: healthy},
		{name: "no addresses", addrs: []int{}, code: 4, nodes: healthy,
			want: []string{"no node addresses"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			fdir := t.TempDir()
			for i, doc := range c.nodes {
				if doc != "" {
					if err := os.WriteFile(filepath.Join(fdir, fakeAddr(i+1)+".json"), []byte(doc), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			addrs := c.addrs
			if addrs == nil {
				addrs = []int{1, 2, 3}
			}
			args := append([]string{"--kayactl", fake}, c.args...)
			var list []string
			for _, a := range addrs {
				list = append(list, fakeAddr(a))
			}
			if len(list) > 0 {
				// Comma- and space-separated forms both work.
				args = append(args, list[0])
				if len(list) > 1 {
					args = append(args, strings.Join(list[1:], ","))
				}
			}
			var env []string
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "KAYA_SERVER=") {
					env = append(env, kv)
				}
			}
			out, code := checkScript(t, root, append(env, "FAKE_DIR="+fdir), args...)
			if code != c.code {
				t.Fatalf("exit %d, want %d:\n%s", code, c.code, out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	// KAYA_SERVER is the default list, and --wait gives up after its time.
	fdir := t.TempDir()
	for i, doc := range []string{healthy[0], healthy[1]} {
		if err := os.WriteFile(filepath.Join(fdir, fakeAddr(i+1)+".json"), []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := append(os.Environ(), "FAKE_DIR="+fdir, "KAYACTL="+fake, "KAYA_SERVER="+fakeAddr(1)+","+fakeAddr(2)+","+fakeAddr(3))
	// One check's time on this machine now (seconds on a loaded one): the
	// wait must leave room for a second check, whatever the load.
	start := time.Now()
	if out, code := checkScript(t, root, env); code != 2 {
		t.Fatalf("a node down, no --wait: exit %d:\n%s", code, out)
	}
	wait := 2 + int(2*time.Since(start).Seconds())
	start = time.Now()
	out, code := checkScript(t, root, env, "--wait", strconv.Itoa(wait))
	if code != 2 || !strings.Contains(out, "checking again") || time.Since(start) < time.Duration(wait)*time.Second {
		t.Fatalf("--wait %d with a node down: exit %d after %v:\n%s", wait, code, time.Since(start), out)
	}
}

// TestRunbookDetectingSplitBrain runs every command of
// docs/runbooks/detecting-split-brain.md against real processes: the
// check on a healthy cluster, with a frozen follower (kill -STOP) and with
// a frozen leader, and after both recover.
func TestRunbookDetectingSplitBrain(t *testing.T) {
	e, raftBase, clientBase := newRunbookEnv(t, 30480, 30378)
	defer func() {
		// A frozen node must not outlive a failed test.
		for n := 1; n <= 3; n++ {
			if b, err := os.ReadFile(filepath.Join(e.dir, fmt.Sprintf("node-%d.pid", n))); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
					_ = syscall.Kill(pid, syscall.SIGCONT)
				}
			}
		}
		_, _ = e.bash(context.Background(), "scripts/stop-cluster.sh")
	}()
	main, cleanup := runbookScripts(t, filepath.Join(e.root, "docs", "runbooks", "detecting-split-brain.md"), raftBase, clientBase, 4)
	out := e.runRunbookScript(main)
	// Block by block: OK; a frozen follower is DEGRADED and unreachable,
	// then OK; a frozen leader is DEGRADED while a new leader leads a
	// newer term, then OK; the write made meanwhile is there.
	parts := strings.Split(out, ">>> block ")
	if len(parts) != 4 {
		t.Fatalf("expected 3 blocks in the output:\n%s", out)
	}
	if !strings.Contains(parts[1], "verdict: OK") || !strings.Contains(parts[1], "OK: every member answers") {
		t.Errorf("healthy cluster not OK:\n%s", parts[1])
	}
	if !strings.Contains(parts[2], "status --cluster: exit status 1") || !strings.Contains(parts[2], "PROBLEM:") {
		t.Errorf("kayactl status --cluster did not report the frozen follower:\n%s", parts[2])
	}
	for _, p := range parts[2:] {
		if !strings.Contains(p, "check-split-brain.sh exited with 2") || !strings.Contains(p, "UNREACHABLE") ||
			!strings.Contains(p, "did not answer") {
			t.Errorf("a frozen node was not reported as unreachable (exit 2):\n%s", p)
		}
		if strings.Contains(p, "exited with 1") || strings.Contains(p, "CONFLICT") {
			t.Errorf("a frozen node was reported as a conflict:\n%s", p)
		}
		if strings.Count(p, "verdict: OK") != 1 {
			t.Errorf("the cluster did not become OK again:\n%s", p)
		}
	}
	// While the leader was frozen the others elected a leader in a newer term.
	terms := regexp.MustCompile(`OK: 3 nodes answered; term (\d+); leader node (\d+)`).FindAllStringSubmatch(out, -1)
	if len(terms) != 3 {
		t.Fatalf("expected 3 OK verdicts, got %v", terms)
	}
	before, _ := strconv.Atoi(terms[1][1])
	after, _ := strconv.Atoi(terms[2][1])
	if after <= before || terms[2][2] == terms[1][2] {
		t.Errorf("no new leader in a newer term after the leader froze: %v", terms)
	}
	if !strings.Contains(parts[3], "yes\n>>> done") {
		t.Errorf("the write made while the leader was frozen is missing:\n%s", parts[3])
	}
	cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
	defer ccancel()
	if out, err := e.bash(cctx, cleanup); err != nil {
		t.Fatalf("clean-up block: %v\n%s", err, out)
	}
}

// linkProxy forwards one direction of raft traffic (node i dialling node
// j) and can cut it: the test's network partition, on loopback, without
// privileges.
type linkProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
}

func newLinkProxy(t *testing.T, addr, target string) *linkProxy {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &linkProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { ln.Close(); p.setCut(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *linkProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *linkProxy) serve(c net.Conn) {
	defer c.Close()
	if !p.track(c) {
		return
	}
	u, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		return
	}
	defer u.Close()
	if !p.track(u) {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(u, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, u); done <- struct{}{} }()
	<-done
}

// setCut cuts the link (closing its connections) or heals it.
func (p *linkProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		p.conns = map[net.Conn]struct{}{}
	}
}

// TestSplitBrainPartitionedLeader cuts the leader of a real 3-node cluster
// off from the two others (every raft connection between them goes through
// a proxy the test controls; clients still reach every node) and checks
// what check-split-brain.sh and clients see: the majority elects a leader
// in a newer term, the old leader is reported DEGRADED in the older term
// and never as a conflict, a write sent to it fails and is never applied,
// and the cluster is OK again once the network heals.
func TestSplitBrainPartitionedLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test; skipped with -short")
	}
	raftBase, clientBase := freeBases(t, 22480, 22378)
	e := newEnv(t, raftBase, clientBase)
	build := exec.Command("go", "build", "-o", filepath.Join(e.dir, "bin")+"/", "./cmd/kayadb-server", "./cmd/kayactl")
	build.Dir = e.root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	raftAddr := func(n int) string { return fmt.Sprintf("127.0.0.1:%d", raftBase+n) }
	clientAddr := func(n int) string { return fmt.Sprintf("127.0.0.1:%d", clientBase+n) }
	// Node i reaches node j at proxy i→j.
	proxyAddr := func(i, j int) string { return fmt.Sprintf("127.0.0.1:%d", raftBase+10+3*(i-1)+j) }
	proxies := map[[2]int]*linkProxy{}
	for i := 1; i <= 3; i++ {
		for j := 1; j <= 3; j++ {
			if i != j {
				proxies[[2]int{i, j}] = newLinkProxy(t, proxyAddr(i, j), raftAddr(j))
			}
		}
	}
	var servers []*exec.Cmd
	defer func() {
		for _, s := range servers {
			_ = s.Process.Signal(syscall.SIGTERM)
		}
		for _, s := range servers {
			_ = s.Wait()
		}
	}()
	for i := 1; i <= 3; i++ {
		args := []string{"--node-id", fmt.Sprint(i), "--data", filepath.Join(e.dir, fmt.Sprintf("node-%d", i)),
			"--raft-addr", raftAddr(i), "--client-addr", clientAddr(i)}
		for j := 1; j <= 3; j++ {
			a := raftAddr(j)
			if j != i {
				a = proxyAddr(i, j)
			}
			args = append(args, "--peer", fmt.Sprintf("%d=%s,%s", j, a, clientAddr(j)))
		}
		log, err := os.Create(filepath.Join(e.dir, fmt.Sprintf("node-%d.log", i)))
		if err != nil {
			t.Fatal(err)
		}
		defer log.Close()
		s := exec.Command(filepath.Join(e.dir, "bin", "kayadb-server"), args...)
		s.Stdout, s.Stderr = log, log
		// No HTTP listener: three nodes on one machine would share its
		// default port. (Binaries without the flag ignore the variable.)
		s.Env = append(os.Environ(), "KAYA_NO_METRICS=true")
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		servers = append(servers, s)
	}
	env := append(os.Environ(), "KAYACTL="+filepath.Join(e.dir, "bin", "kayactl"))
	all := clientAddr(1) + "," + clientAddr(2) + "," + clientAddr(3)
	out, code := checkScript(t, e.root, env, "--wait", "20", all)
	if code != 0 {
		t.Fatalf("healthy cluster: exit %d\n%s\n%s", code, out, e.logs())
	}
	m := regexp.MustCompile(`term (\d+); leader node (\d+)`).FindStringSubmatch(out)
	oldTerm, _ := strconv.Atoi(m[1])
	leader, _ := strconv.Atoi(m[2])
	if _, errs, code := e.kayactl("--server", all, "put", "before-partition", "yes"); code != 0 {
		t.Fatalf("put: %d %s", code, errs)
	}

	// Cut the leader off.
	start := time.Now()
	for k, p := range proxies {
		if k[0] == leader || k[1] == leader {
			p.setCut(true)
		}
	}
	// A write sent to the old leader alone fails: it cannot commit.
	minority := make(chan string, 1)
	go func() {
		_, errs, code := e.kayactl("--server", clientAddr(leader), "--timeout", "3s", "put", "minority-write", "x")
		minority <- fmt.Sprintf("exit %d: %s", code, strings.TrimSpace(errs))
	}()
	// Until the majority has a new leader and the old one knows it is
	// alone, the check may pass through several states (OK at first: for an
	// election timeout nobody has noticed anything), but never CONFLICT.
	var majority []string
	for n := 1; n <= 3; n++ {
		if n != leader {
			majority = append(majority, clientAddr(n))
		}
	}
	var last string
	seen := map[string]bool{}
	for deadline := time.Now().Add(20 * time.Second); ; {
		out, code := checkScript(t, e.root, env, "--timeout", "1s", all)
		if code == 1 {
			t.Fatalf("check during the partition: exit %d\n%s", code, out)
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "DEGRADED") || strings.HasPrefix(l, "OK") {
				seen[regexp.MustCompile(`\d+`).ReplaceAllString(l, "N")] = true
			}
		}
		last = out
		if strings.Contains(out, fmt.Sprintf("DEGRADED: node %d is in term %d, behind term", leader, oldTerm)) &&
			strings.Contains(out, "names no one as leader") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cut-off leader was not reported in its old term without a leader:\n%s\n%s", out, e.logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("partition seen after %v:\n%s", time.Since(start).Round(time.Millisecond), last)
	if r := <-minority; !strings.HasPrefix(r, "exit 1:") {
		t.Fatalf("a write to the cut-off leader: %s; want exit 1", r)
	} else {
		t.Logf("a write to the cut-off leader: %s", r)
	}
	for l := range seen {
		t.Logf("seen during the partition: %s", l)
	}
	// The majority has a leader in a newer term and takes writes.
	out, code = checkScript(t, e.root, env, "--no-discover", "--wait", "10", strings.Join(majority, ","))
	if code != 0 {
		t.Fatalf("the majority side: exit %d\n%s", code, out)
	}
	if _, errs, code := e.kayactl("--server", strings.Join(majority, ","), "--timeout", "10s", "put", "majority-write", "yes"); code != 0 {
		t.Fatalf("put on the majority side: %d %s", code, errs)
	}

	// Heal the network: one leader again, everyone in its term.
	for _, p := range proxies {
		p.setCut(false)
	}
	out, code = checkScript(t, e.root, env, "--wait", "30", "--max-lag", "10", all)
	if code != 0 {
		t.Fatalf("after healing: exit %d\n%s\n%s", code, out, e.logs())
	}
	m = regexp.MustCompile(`term (\d+); leader node (\d+)`).FindStringSubmatch(out)
	if nt, _ := strconv.Atoi(m[1]); nt <= oldTerm || m[2] == fmt.Sprint(leader) {
		t.Errorf("after healing: term %s leader %s; before: term %d leader %d", m[1], m[2], oldTerm, leader)
	}
	if _, _, code := e.kayactl("--server", all, "--timeout", "10s", "get", "minority-write"); code != 2 {
		t.Fatalf("minority-write: exit %d, want 2 (not found)", code)
	}
	if out, _, code := e.kayactl("--server", all, "--timeout", "10s", "get", "majority-write"); code != 0 || out != "yes\n" {
		t.Fatalf("majority-write: exit %d %q", code, out)
	}
	if _, errs, code := e.kayactl("--server", all, "--timeout", "10s", "put", "after-healing", "yes"); code != 0 {
		t.Fatalf("put after healing: %d %s", code, errs)
	}
	// Once every node has applied everything, stop the nodes and look into
	// each one's engine: the write the old leader could not commit was
	// applied nowhere; the others everywhere.
	if out, code := checkScript(t, e.root, env, "--wait", "20", "--max-lag", "0", all); code != 0 {
		t.Fatalf("nodes not caught up: exit %d\n%s", code, out)
	}
	for _, s := range servers {
		_ = s.Process.Signal(syscall.SIGTERM)
	}
	for _, s := range servers {
		if err := s.Wait(); err != nil {
			t.Errorf("a node did not stop cleanly: %v", err)
		}
	}
	servers = nil
	for n := 1; n <= 3; n++ {
		engine := filepath.Join(e.dir, fmt.Sprintf("node-%d", n), "engine")
		if _, _, code := e.kayactl("--data", engine, "get", "minority-write"); code != 2 {
			t.Errorf("node %d: minority-write: exit %d, want 2 (not found)", n, code)
		}
		for _, k := range []string{"before-partition", "majority-write", "after-healing"} {
			if out, errs, code := e.kayactl("--data", engine, "get", k); code != 0 || out != "yes\n" {
				t.Errorf("node %d: %s: exit %d %q %s", n, k, code, out, errs)
			}
		}
	}
	t.Logf("partition test took %v after the cluster was up", time.Since(start).Round(time.Millisecond))
}
