package server

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPeerListForms checks both forms of the --peer list (this node listed
// or not), the original KayaDB's ID=RAFT form, --join-cluster, and when a
// listed entry that differs from the flags is an advertised address and
// when it is an error.
func TestPeerListForms(t *testing.T) {
	const (
		r1, c1 = "127.0.0.1:7481", "127.0.0.1:7379"
		r2, c2 = "127.0.0.1:7482", "127.0.0.1:7380"
		r3, c3 = "127.0.0.1:7483", "127.0.0.1:7381"
	)
	m := func(id uint64, raft, client string) Member { return Member{ID: id, RaftAddr: raft, ClientAddr: client} }
	type want struct {
		raftListen, clientListen string
		peers                    []Member // in the order of cfg.Peers
		join                     bool
		log                      string // in stderr
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want *want    // nil: an error
		errs []string // the error names these
	}{
		{name: "original start-cluster form: only the other members",
			args: []string{"--node-id", "1", "--raft-addr", r1, "--client-addr", c1, "--peer", "2=" + r2 + "," + c2, "--peer", "3=" + r3 + "," + c3},
			want: &want{raftListen: r1, clientListen: c1, peers: []Member{m(2, r2, c2), m(3, r3, c3), m(1, r1, c1)}}},
		{name: "every member, this node included",
			args: []string{"--node-id", "2", "--raft-addr", r2, "--client-addr", c2, "--peer", "1=" + r1 + "," + c1, "--peer", "2=" + r2 + "," + c2},
			want: &want{raftListen: r2, clientListen: c2, peers: []Member{m(1, r1, c1), m(2, r2, c2)}}},
		{name: "listen addresses from this node's entry",
			args: []string{"--node-id", "2", "--peer", "1=" + r1 + "," + c1, "--peer", "2=" + r2 + "," + c2},
			want: &want{raftListen: r2, clientListen: c2, peers: []Member{m(1, r1, c1), m(2, r2, c2)}}},
		{name: "only the raft address given: the client address from the entry",
			args: []string{"--node-id", "2", "--raft-addr", r2, "--peer", "1=" + r1 + "," + c1, "--peer", "2=" + r2 + "," + c2},
			want: &want{raftListen: r2, clientListen: c2, peers: []Member{m(1, r1, c1), m(2, r2, c2)}}},
		{name: "a wildcard listener is reached at any host with its port",
			args: []string{"--node-id", "1", "--raft-addr", "0.0.0.0:7481", "--client-addr", ":7379", "--allow-public-bind",
				"--peer", "1=kaya1:7481,kaya1:7379", "--peer", "2=kaya2:7481,kaya2:7379"},
			want: &want{raftListen: "0.0.0.0:7481", clientListen: ":7379", peers: []Member{m(1, "kaya1:7481", "kaya1:7379"), m(2, "kaya2:7481", "kaya2:7379")}}},
		{name: "a wildcard listener on another port is a mistake",
			args: []string{"--node-id", "1", "--raft-addr", "0.0.0.0:7482", "--allow-public-bind", "--peer", "1=kaya1:7481,kaya1:7379"},
			errs: []string{"1=kaya1:7481,kaya1:7379", "kaya1:7481", "--raft-addr 0.0.0.0:7482"}},
		{name: "a raft address that differs from the entry is a mistake",
			args: []string{"--node-id", "2", "--raft-addr", r2, "--client-addr", c2, "--peer", "2=" + r3 + "," + c2},
			errs: []string{"2=" + r3 + "," + c2, "raft address " + r3, "--raft-addr " + r2, "--advertise-raft-addr " + r3}},
		{name: "a client address that differs from the entry is a mistake",
			args: []string{"--node-id", "2", "--client-addr", c2, "--peer", "2=" + r2 + "," + c3},
			errs: []string{"client address " + c3, "--client-addr " + c2, "--advertise-client-addr " + c3}},
		{name: "the same mistake from the environment",
			args: []string{"--node-id", "2"}, env: map[string]string{"KAYA_RAFT_ADDR": r2, "KAYA_PEER": "2=" + r3 + "," + c2},
			errs: []string{"raft address " + r3, "--raft-addr " + r2}},
		{name: "behind a proxy: advertised and listen addresses",
			args: []string{"--node-id", "1", "--raft-addr", r1, "--advertise-raft-addr", "127.0.0.1:9481", "--client-addr", c1,
				"--peer", "1=127.0.0.1:9481," + c1, "--peer", "2=" + r2 + "," + c2},
			want: &want{raftListen: r1, clientListen: c1, peers: []Member{m(1, "127.0.0.1:9481", c1), m(2, r2, c2)}}},
		{name: "behind a proxy, not listed: added with the advertised addresses",
			args: []string{"--node-id", "1", "--raft-addr", r1, "--advertise-raft-addr", "10.0.0.5:8481", "--advertise-client-addr", "10.0.0.5:8379",
				"--peer", "2=" + r2 + "," + c2},
			want: &want{raftListen: r1, clientListen: c1, peers: []Member{m(2, r2, c2), m(1, "10.0.0.5:8481", "10.0.0.5:8379")}}},
		{name: "an entry that disagrees with --advertise-raft-addr",
			args: []string{"--node-id", "1", "--advertise-raft-addr", "127.0.0.1:9481", "--peer", "1=127.0.0.1:9482," + c1},
			errs: []string{"raft address 127.0.0.1:9482", "--advertise-raft-addr 127.0.0.1:9481"}},
		{name: "a wildcard cannot be advertised",
			args: []string{"--node-id", "1", "--advertise-raft-addr", "0.0.0.0:7481"},
			errs: []string{"--advertise-raft-addr 0.0.0.0:7481", "every interface"}},
		{name: "not listed, listening on every interface: nothing to advertise",
			args: []string{"--node-id", "1", "--raft-addr", "0.0.0.0:7481", "--allow-public-bind", "--peer", "2=" + r2 + "," + c2},
			errs: []string{"not in the --peer list", "0.0.0.0:7481", "--advertise-raft-addr"}},
		{name: "the original's ID=RAFT form: clients are sent to the raft address",
			args: []string{"--node-id", "1", "--raft-addr", r1, "--client-addr", c1, "--peer", "2=" + r2, "--peer", "3=" + r3},
			want: &want{raftListen: r1, clientListen: c1, peers: []Member{m(2, r2, r2), m(3, r3, r3), m(1, r1, c1)}, log: "no client address"}},
		{name: "this node's entry without a client address takes --client-addr",
			args: []string{"--node-id", "1", "--client-addr", c1, "--peer", "1=" + r1, "--peer", "2=" + r2 + "," + c2},
			want: &want{raftListen: r1, clientListen: c1, peers: []Member{m(1, r1, c1), m(2, r2, c2)}}},
		{name: "a member listed twice",
			args: []string{"--node-id", "1", "--peer", "2=" + r2 + "," + c2, "--peer", "2=" + r3 + "," + c3},
			errs: []string{"2=" + r2 + "," + c2, "2=" + r3 + "," + c3, "node 2"}},
		{name: "--join-cluster is --join",
			args: []string{"--node-id", "4", "--raft-addr", "127.0.0.1:7484", "--client-addr", "127.0.0.1:7382", "--join-cluster", "--peer", "1=" + r1 + "," + c1},
			want: &want{raftListen: "127.0.0.1:7484", clientListen: "127.0.0.1:7382", peers: []Member{m(1, r1, c1)}, join: true}},
		{name: "KAYA_JOIN_CLUSTER",
			args: []string{"--node-id", "4", "--peer", "1=" + r1 + "," + c1}, env: map[string]string{"KAYA_JOIN_CLUSTER": "true"},
			want: &want{raftListen: "127.0.0.1:7481", clientListen: c1, peers: []Member{m(1, r1, c1)}, join: true}},
		{name: "--join-cluster with addresses, as the original's runbooks wrote it",
			args: []string{"--node-id", "4", "--join-cluster", r1},
			errs: []string{"take no value", "--peer ID=RAFT_ADDR,CLIENT_ADDR"}},
		{name: "--join-cluster without members",
			args: []string{"--node-id", "4", "--join-cluster"},
			errs: []string{"--join needs the running cluster's members"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var errb bytes.Buffer
			cfg, code := ParseFlags(tc.args, env(tc.env), &errb)
			if tc.want == nil {
				if code != exitUsage {
					t.Fatalf("exit %d, want %d (a usage error); cfg %+v", code, exitUsage, cfg)
				}
				for _, w := range tc.errs {
					if !strings.Contains(errb.String(), w) {
						t.Errorf("the error does not name %q:\n%s", w, errb.String())
					}
				}
				return
			}
			if code != -1 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			w := tc.want
			if cfg.RaftAddr != w.raftListen || cfg.ClientAddr != w.clientListen || cfg.Join != w.join {
				t.Errorf("listen %s %s join %v, want %s %s %v", cfg.RaftAddr, cfg.ClientAddr, cfg.Join, w.raftListen, w.clientListen, w.join)
			}
			got, _ := json.Marshal(cfg.Peers)
			exp, _ := json.Marshal(w.peers)
			if !bytes.Equal(got, exp) {
				t.Errorf("peers\n got %s\nwant %s", got, exp)
			}
			if w.log != "" && !strings.Contains(errb.String(), w.log) {
				t.Errorf("stderr lacks %q:\n%s", w.log, errb.String())
			}
		})
	}
}

// readRosterFile returns the members in a data directory's roster file,
// nil when there is none.
func readRosterFile(t *testing.T, dir string) []Member {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "cluster-roster.json"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var rf rosterFile
	if err := json.Unmarshal(b, &rf); err != nil {
		t.Fatal(err)
	}
	return rf.Members
}

// TestFailedStartLeavesNothing: a first start that fails because its raft
// port is taken writes no roster and no JOINING marker, so that the start
// with a corrected --raft-addr advertises the new address (it used to keep
// the roster of the failed start, and with it the wrong address).
func TestFailedStartLeavesNothing(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	peers := []string{"--peer", "2=127.0.0.1:1,127.0.0.1:2", "--peer", "3=127.0.0.1:3,127.0.0.1:4"}
	start := func(raftAddr string, extra ...string) (*Server, error) {
		t.Helper()
		args := append([]string{"--node-id", "1", "--data", dir, "--raft-addr", raftAddr, "--client-addr", pickPort(t), "--no-metrics", "--disk-reserve", "0"}, peers...)
		var errb bytes.Buffer
		cfg, code := ParseFlags(append(args, extra...), env(nil), &errb)
		if code != -1 {
			t.Fatalf("ParseFlags: %d %s", code, errb.String())
		}
		return New(cfg)
	}

	// A joining node first: the failed start must not leave DIR/JOINING.
	if _, err := start(busy.Addr().String(), "--join"); err == nil || !strings.Contains(err.Error(), "listening for raft peers") {
		t.Fatalf("start on a busy raft port: %v", err)
	}
	for _, name := range []string{"cluster-roster.json", "JOINING"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("a failed start left %s (%v)", name, err)
		}
	}
	// The same without --join.
	if _, err := start(busy.Addr().String()); err == nil {
		t.Fatal("start on a busy raft port succeeded")
	}
	if ms := readRosterFile(t, dir); ms != nil {
		t.Fatalf("a failed start wrote the roster: %+v", ms)
	}
	// Corrected: the roster has the new raft address, and the node is not
	// a joiner (it bootstraps with nodes 2 and 3).
	good := pickPort(t)
	s, err := start(good)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ms := readRosterFile(t, dir)
	if len(ms) != 3 || ms[0].ID != 1 || ms[0].RaftAddr != good {
		t.Fatalf("roster after the corrected start: %+v, want node 1 at %s", ms, good)
	}
	if s.cfg.Join {
		t.Fatal("the failed --join start made the node a joiner")
	}
	if _, err := os.Stat(filepath.Join(dir, "JOINING")); !os.IsNotExist(err) {
		t.Fatalf("JOINING after a start without --join: %v", err)
	}
}
