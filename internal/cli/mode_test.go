package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/internal/server"
	"github.com/kayadb/kayadb/internal/wire"
)

// TestModeResolution: which mode and which addresses each combination of
// flags and environment selects.
func TestModeResolution(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		servers []string // nil: local mode
		data    string
	}{
		{"nothing: the default server", nil, nil, []string{"127.0.0.1:7379"}, ""},
		{"--server", []string{"--server", "a:1,b:2"}, nil, []string{"a:1", "b:2"}, ""},
		{"--server repeated", []string{"--server", "a:1", "--server", "b:2"}, nil, []string{"a:1", "b:2"}, ""},
		{"--data", []string{"--data", "d"}, nil, nil, "d"},
		{"$KAYA_SERVER", nil, map[string]string{"KAYA_SERVER": "a:1, b:2"}, []string{"a:1", "b:2"}, ""},
		{"$KAYA_DATA", nil, map[string]string{"KAYA_DATA": "d"}, nil, "d"},
		{"--data beats $KAYA_SERVER", []string{"--data", "d"}, map[string]string{"KAYA_SERVER": "a:1"}, nil, "d"},
		{"--server beats $KAYA_DATA", []string{"--server", "a:1"}, map[string]string{"KAYA_DATA": "d"}, []string{"a:1"}, "d"},
		{"$KAYA_SERVER beats $KAYA_DATA", nil, map[string]string{"KAYA_SERVER": "a:1", "KAYA_DATA": "d"}, []string{"a:1"}, "d"},
		{"empty variables count as unset", nil, map[string]string{"KAYA_SERVER": " ", "KAYA_DATA": ""}, []string{"127.0.0.1:7379"}, ""},
	}
	for _, c := range cases {
		a := &app{lookupEnv: func(k string) (string, bool) { v, ok := c.env[k]; return v, ok }, defaultServer: DefaultServer}
		root := a.newRootCmd()
		if err := root.PersistentFlags().Parse(c.args); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := a.servers(); strings.Join(got, " ") != strings.Join(c.servers, " ") || (got == nil) != (c.servers == nil) {
			t.Errorf("%s: servers %q, want %q", c.name, got, c.servers)
		}
		if got := a.dataDir(); got != c.data {
			t.Errorf("%s: data %q, want %q", c.name, got, c.data)
		}
	}
}

// TestDefaultServer: with neither --server nor --data, kayactl talks to
// the default server, and creates nothing in the working directory.
func TestDefaultServer(t *testing.T) {
	addr := startServer(t)
	t.Chdir(t.TempDir())
	run1 := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := run(args, invocation{stdin: strings.NewReader(""), stdout: &out, stderr: &errb,
			lookupEnv: func(string) (string, bool) { return "", false }, defaultServer: addr})
		return out.String(), errb.String(), code
	}
	if out, errs, code := run1("put", "greeting", "hello"); code != 0 || out != "OK\n" {
		t.Fatalf("put: %d %q %q", code, out, errs)
	}
	if out, errs, code := run1("get", "greeting"); code != 0 || out != "hello\n" {
		t.Fatalf("get: %d %q %q", code, out, errs)
	}
	if entries, _ := os.ReadDir("."); len(entries) != 0 {
		t.Fatalf("kayactl created %v in the working directory", entries)
	}
	// The commands that only exist in local mode say how to name a
	// directory.
	for _, cmd := range []string{"stats", "flush", "compact", "recover"} {
		if _, errs, code := run1(cmd); code != ExitInvalidArgument || !strings.Contains(errs, "pass --data DIR") {
			t.Errorf("%s without --data: %d %q", cmd, code, errs)
		}
	}
}

// TestNothingListening: connection refused on every address is an error at
// once (not after --timeout) that names the addresses.
func TestNothingListening(t *testing.T) {
	dead := noServer()
	out, errs, code := runCLI("--timeout", "60s", "put", "k", "v")
	if code != ExitError || out != "" ||
		!strings.Contains(errs, "error: nothing listening on "+dead+" — is kayadb-server running?\n") ||
		!strings.Contains(errs, "when no --server is given, and opens a local database directory only with --data DIR") {
		t.Fatalf("default server down: %d %q", code, errs)
	}
	other := listenLocal(t)
	otherAddr := other.Addr().String()
	other.Close()
	_, errs, code = runCLI("--server", dead+","+otherAddr, "--timeout", "60s", "get", "k")
	if code != ExitError || !strings.Contains(errs, "error: nothing listening on "+dead+", "+otherAddr+" — is kayadb-server running?\n") ||
		strings.Contains(errs, "when no --server is given") {
		t.Fatalf("two servers down: %d %q", code, errs)
	}
	// health and status name the server that refused.
	live := startServer(t)
	_, errs, code = runCLI("--server", live+","+dead, "--timeout", "60s", "health")
	if code != ExitError || !strings.Contains(errs, "error: nothing listening on "+dead+" — is kayadb-server running?") {
		t.Fatalf("health, one down: %d %q", code, errs)
	}
}

// startFullServer runs a single-node server on a real data directory with
// all three listeners: client, raft and metrics.
func startFullServer(t *testing.T, dir string) (s *server.Server, client, raft, metrics string) {
	t.Helper()
	ml := listenLocal(t)
	c := startNode(t, func(_ uint64, cfg *server.Config) {
		cfg.DataDir, cfg.EngineOptions, cfg.MetricsListener = dir, nil, ml
	})
	return c.node(1), c.addr(1), c.Peer(1).RaftAddr, ml.Addr().String()
}

// TestWrongPort: a --server that speaks something else is named for what
// it is: the raft port, the metrics (HTTP) port, a silent listener.
func TestWrongPort(t *testing.T) {
	_, _, raftAddr, metricsAddr := startFullServer(t, t.TempDir())
	_, errs, code := runCLI("--server", raftAddr, "--timeout", "1s", "get", "k")
	if code != ExitError || !strings.Contains(errs, "error: "+raftAddr+" closed the connection after kayactl's first bytes without answering: that is what a kayadb-server raft port") ||
		!strings.Contains(errs, "hint: clients connect to a node's client port (kayadb-server --client-addr") {
		t.Fatalf("raft port: %d %q", code, errs)
	}
	_, errs, code = runCLI("--server", metricsAddr, "--timeout", "1s", "put", "k", "v")
	if code != ExitError || !strings.Contains(errs, "error: "+metricsAddr+" answers HTTP (\"HTTP/1.1 400 Bad Request\"), not the KayaDB client protocol: it looks like a kayadb-server metrics port") {
		t.Fatalf("metrics port: %d %q", code, errs)
	}
	silent := listenLocal(t) // the kernel accepts; nobody reads or writes
	_, errs, code = runCLI("--server", silent.Addr().String(), "--timeout", "500ms", "status")
	if code != ExitError || !strings.Contains(errs, "accepted the connection but answered neither the KayaDB greeting (HELLO) nor HTTP") {
		t.Fatalf("silent listener: %d %q", code, errs)
	}
}

// TestProbeClassifiesBytes: the first bytes of an answer name the
// protocol.
func TestProbeClassifiesBytes(t *testing.T) {
	for _, c := range []struct {
		in   string
		want portKind
	}{
		{"HTTP/1.1 400 Bad Request\r\n\r\n", portHTTP},
		{"\x15\x03\x03\x00\x02\x02\x46", portTLS},
		{"\x04\x00\x00\x00\x00\x00\x01\x00", portClient},                             // HELLO OK
		{"\x20\x00\x00\x00\x09\x00\x1a\x00\x00\x00too many connections", portClient}, // an ERROR frame, cut short
		{"SSH-2.0-OpenSSH_9.6\r\n", portOther},
	} {
		if got, _ := classifyBytes([]byte(c.in)); got != c.want {
			t.Errorf("%q: %v, want %v", c.in, got, c.want)
		}
	}
}

// TestElectionOutlastsRetries: while no node knows a leader, kayactl keeps
// asking until --timeout (it used to give up after 21 attempts, about
// 1.6 s, and suggest raising --timeout).
func TestElectionOutlastsRetries(t *testing.T) {
	node := newFakeNode(t)
	const leaderless = 40 // about 3 s of 80 ms pauses
	puts := 0
	node.setHandle(func(op wire.Opcode, p []byte) (wire.Status, []byte) {
		if op != wire.OpPut {
			return wire.StatusError, wire.AppendError(nil, "unexpected")
		}
		if puts++; puts <= leaderless {
			return wire.StatusNotLeader, wire.AppendNotLeader(nil, "")
		}
		return wire.StatusOK, nil
	})
	if out, errs, code := runCLI("--server", node.addr, "--timeout", "60s", "put", "k", "v"); code != 0 || out != "OK\n" {
		t.Fatalf("put during an election: %d %q %q", code, out, errs)
	}
	if n := len(node.requests(wire.OpPut)); n != leaderless+1 {
		t.Fatalf("%d PUTs, want %d", n, leaderless+1)
	}
}

// TestDataDirOfAServer: --data naming a kayadb-server's directory, or the
// engine in it, says whose it is and suggests --server; with the server
// stopped, reads of its engine work and writes are refused (they would
// bypass raft).
func TestDataDirOfAServer(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node1")
	s, clientAddr, _, _ := startFullServer(t, dir)
	if _, errs, code := runCLI("--server", clientAddr, "put", "k", "v1"); code != 0 {
		t.Fatalf("put through the server: %d %q", code, errs)
	}
	for _, d := range []string{dir, filepath.Join(dir, "engine")} {
		for _, args := range [][]string{{"get", "k"}, {"put", "k", "v2"}, {"stats"}} {
			_, errs, code := runCLI(append([]string{"--data", d}, args...)...)
			if code != ExitLocked || !strings.Contains(errs, "error: "+d+" belongs to a running kayadb-server (it holds "+filepath.Join(dir, "LOCK")+")") ||
				!strings.Contains(errs, "hint: talk to the server instead: kayactl --server "+clientAddr+" COMMAND") {
				t.Errorf("--data %s %s while the server runs: %d %q", d, args[0], code, errs)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, errs, code := runCLI("--data", dir, "put", "k", "v2")
	if code != ExitInvalidArgument || !strings.Contains(errs, "is a kayadb-server data directory") ||
		!strings.Contains(errs, "read its engine with --data "+filepath.Join(dir, "engine")) {
		t.Fatalf("put into a stopped server's directory: %d %q", code, errs)
	}
	_, errs, code = runCLI("--data", filepath.Join(dir, "engine"), "put", "k", "v2")
	if code != ExitInvalidArgument || !strings.Contains(errs, "a write here would bypass raft") {
		t.Fatalf("put into a stopped server's engine: %d %q", code, errs)
	}
	if out, errs, code := runCLI("--data", filepath.Join(dir, "engine"), "get", "k"); code != 0 || out != "v1\n" {
		t.Fatalf("get from a stopped server's engine: %d %q %q", code, out, errs)
	}
	if entries, _ := os.ReadDir(dir); len(entries) == 0 {
		t.Fatal("the server's directory is empty")
	}
	if _, err := os.Stat(filepath.Join(dir, "CURRENT")); err == nil {
		t.Fatal("kayactl created a database in the server's top directory")
	}
}
