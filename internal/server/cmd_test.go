package server

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseFlagsAndEnv(t *testing.T) {
	var errb bytes.Buffer
	cfg, code := ParseFlags([]string{"--node-id", "3", "--data", "d3"}, env(map[string]string{
		"KAYA_NODE_ID": "9", "KAYA_CLIENT_ADDR": "127.0.0.1:9999", "KAYA_TICK": "50ms",
		"KAYA_PEER": "1=127.0.0.1:1,127.0.0.1:2 3=127.0.0.1:7481,127.0.0.1:9999",
	}), &errb)
	if code != -1 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if cfg.NodeID != 3 || cfg.DataDir != "d3" {
		t.Fatalf("flags must win over the environment: %+v", cfg)
	}
	if cfg.ClientAddr != "127.0.0.1:9999" || cfg.TickInterval != 50*time.Millisecond || len(cfg.Peers) != 2 {
		t.Fatalf("environment not applied: %+v", cfg)
	}
	// This node's addresses come from its --peer entry when not given.
	cfg, code = ParseFlags([]string{"--node-id", "2", "--peer", "1=127.0.0.1:7481,127.0.0.1:7379", "--peer", "2=127.0.0.1:7482,127.0.0.1:7380"}, env(nil), &errb)
	if code != -1 || cfg.RaftAddr != "127.0.0.1:7482" || cfg.ClientAddr != "127.0.0.1:7380" {
		t.Fatalf("addresses from --peer: %d %+v", code, cfg)
	}
	bad := [][]string{
		{"--node-id", "0"},
		{"--peer", "nonsense"},
		{"--peer", "x=a,b"},
		{"--log-level", "loud"},
		{"--log-format", "xml"},
		{"--tick", "-1s"},
		{"--no-such-flag"},
		{"extra-arg"},
		{"--snapshot-entries", "-5"},
		{"--snapshot-catchup-entries", "0"},
		{"--snapshot-rate", "fast"},
		{"--snapshot-rate", "-1MiB"},
		{"--join"},
	}
	for _, args := range bad {
		errb.Reset()
		if _, code := ParseFlags(args, env(nil), &errb); code != exitUsage || !strings.Contains(errb.String(), "error:") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errb.String())
		}
	}
	// Listening on other addresses than the --peer entry advertises (a
	// node behind a proxy or sidecar) is allowed and logged.
	errb.Reset()
	cfg, code = ParseFlags([]string{"--node-id", "1", "--raft-addr", "127.0.0.1:1", "--peer", "1=127.0.0.1:2,127.0.0.1:3"}, env(nil), &errb)
	if code != -1 || cfg.RaftAddr != "127.0.0.1:1" || cfg.Peers[0].RaftAddr != "127.0.0.1:2" || !strings.Contains(errb.String(), "advertises") {
		t.Errorf("advertised addresses: exit %d, %+v, %q", code, cfg, errb.String())
	}
	errb.Reset()
	if _, code := ParseFlags([]string{"--node-id", "1"}, env(map[string]string{"KAYA_NODE_ID": "abc"}), &errb); code != -1 {
		t.Errorf("a flag given on the command line ignores a bad env value: %d %s", code, errb.String())
	}
	if _, code := ParseFlags(nil, env(map[string]string{"KAYA_NODE_ID": "abc"}), &errb); code != exitUsage {
		t.Errorf("a bad env value must fail: %d", code)
	}
	if _, code := ParseFlags([]string{"--help"}, env(nil), &errb); code != exitOK {
		t.Errorf("--help: %d", code)
	}
}

func TestSnapshotFlags(t *testing.T) {
	var errb bytes.Buffer
	cfg, code := ParseFlags(nil, env(nil), &errb)
	if code != -1 || cfg.SnapshotEntries != 10000 || cfg.CatchUpEntries != 5000 || cfg.SnapshotBytesPerSecond != 64<<20 {
		t.Fatalf("defaults: %d %+v %s", code, cfg, errb.String())
	}
	cfg, code = ParseFlags([]string{"--snapshot-entries", "0", "--snapshot-rate", "0", "--snapshot-catchup-entries", "7"}, env(nil), &errb)
	if code != -1 || cfg.SnapshotEntries >= 0 || cfg.SnapshotBytesPerSecond >= 0 || cfg.CatchUpEntries != 7 {
		t.Fatalf("0 must disable snapshots and throttling: %+v", cfg)
	}
	cfg, code = ParseFlags(nil, env(map[string]string{"KAYA_SNAPSHOT_RATE": "500KB", "KAYA_SNAPSHOT_ENTRIES": "123"}), &errb)
	if code != -1 || cfg.SnapshotBytesPerSecond != 500000 || cfg.SnapshotEntries != 123 {
		t.Fatalf("from the environment: %+v", cfg)
	}
	for in, want := range map[string]int64{"0": 0, "17": 17, "17B": 17, "2KiB": 2048, "3 MiB": 3 << 20, "1GB": 1e9, "5mb": 5e6} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "1.5MiB", "-3", "99999999999999GiB"} {
		if _, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q) accepted", in)
		}
	}
	cfg, code = ParseFlags([]string{"--node-id", "4", "--join", "--peer", "1=127.0.0.1:7481,127.0.0.1:7379"}, env(nil), &errb)
	if code != -1 || !cfg.Join || len(cfg.Peers) != 1 || cfg.RaftAddr != "127.0.0.1:7481" {
		t.Fatalf("--join with the members' addresses: %d %+v", code, cfg)
	}
}
