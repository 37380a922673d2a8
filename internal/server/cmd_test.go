package server

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/vfs"
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
	// node behind a proxy or sidecar) is said with --advertise-raft-addr
	// (TestPeerListForms has the cases).
	errb.Reset()
	cfg, code = ParseFlags([]string{"--node-id", "1", "--raft-addr", "127.0.0.1:1", "--advertise-raft-addr", "127.0.0.1:2", "--peer", "1=127.0.0.1:2,127.0.0.1:3"}, env(nil), &errb)
	if code != -1 || cfg.RaftAddr != "127.0.0.1:1" || cfg.Peers[0].RaftAddr != "127.0.0.1:2" {
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

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("kaya.yaml", `# a node's settings
node-id: 3
data: /from/file
tick: 50ms
snapshot-entries: 500
peer:
  - 1=127.0.0.1:7481,127.0.0.1:7379
  - 3=127.0.0.1:7483,127.0.0.1:7381
log-format: json
`)
	var errb bytes.Buffer
	cfg, code := ParseFlags([]string{"--config", good, "--tick", "20ms"}, env(map[string]string{"KAYA_SNAPSHOT_ENTRIES": "700"}), &errb)
	if code != -1 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	switch {
	case cfg.NodeID != 3 || cfg.DataDir != "/from/file" || len(cfg.Peers) != 2:
		t.Fatalf("file values not applied: %+v", cfg)
	case cfg.TickInterval != 20*time.Millisecond:
		t.Fatalf("the command line must win over the file: tick %v", cfg.TickInterval)
	case cfg.SnapshotEntries != 700:
		t.Fatalf("the environment must win over the file: snapshot entries %d", cfg.SnapshotEntries)
	case cfg.RaftAddr != "127.0.0.1:7483":
		t.Fatalf("this node's addresses from the file's peer list: %+v", cfg)
	}
	// KAYA_CONFIG names the file too.
	if cfg, code = ParseFlags(nil, env(map[string]string{"KAYA_CONFIG": good}), &errb); code != -1 || cfg.NodeID != 3 {
		t.Fatalf("KAYA_CONFIG: exit %d %+v", code, cfg)
	}
	for _, tc := range []struct{ text, want string }{
		{"node-id: 1\nnode-idd: 2\n", "line 2: node-idd: no such setting"},
		{"data: [a, b]\n", "takes one value"},
		{"tick: soon\n", "line 1: tick"},
		{"- a\n- b\n", "want a mapping"},
		{"node-id: 1\nnode-id: 2\n", "given twice"},
		{"config: other.yaml\n", "no such setting"},
		{"data: {a: b}\n", "want a value or a list"},
		{"tick: [\n", "not valid YAML"},
	} {
		errb.Reset()
		p := write("bad.yaml", tc.text)
		if _, code := ParseFlags([]string{"--config", p}, env(nil), &errb); code != exitUsage || !strings.Contains(errb.String(), tc.want) || !strings.Contains(errb.String(), p) {
			t.Errorf("%q: exit %d, stderr %q; want %q", tc.text, code, errb.String(), tc.want)
		}
	}
	errb.Reset()
	if _, code := ParseFlags([]string{"--config", filepath.Join(dir, "missing.yaml")}, env(nil), &errb); code != exitUsage || !strings.Contains(errb.String(), "missing.yaml") {
		t.Errorf("missing file: exit %d %q", code, errb.String())
	}
}

// TestMVCCFlags: --max-clock-offset, --mvcc-retention and
// --mvcc-retention-bytes: defaults, explicit values, the environment, 0,
// and refusals; mvccRetention resolves Config's zeros.
func TestMVCCFlags(t *testing.T) {
	var errb bytes.Buffer
	cfg, code := ParseFlags(nil, env(nil), &errb)
	if code != -1 || cfg.MaxClockOffset != 500*time.Millisecond || cfg.MVCCRetention != time.Hour || cfg.MVCCRetentionBytes != 0 {
		t.Fatalf("defaults: %d %v %v %d %s", code, cfg.MaxClockOffset, cfg.MVCCRetention, cfg.MVCCRetentionBytes, errb.String())
	}
	cfg, code = ParseFlags([]string{"--max-clock-offset", "250ms", "--mvcc-retention", "10m", "--mvcc-retention-bytes", "2GiB"}, env(nil), &errb)
	if code != -1 || cfg.MaxClockOffset != 250*time.Millisecond || cfg.MVCCRetention != 10*time.Minute || cfg.MVCCRetentionBytes != 2<<30 {
		t.Fatalf("explicit: %v %v %d", cfg.MaxClockOffset, cfg.MVCCRetention, cfg.MVCCRetentionBytes)
	}
	cfg, code = ParseFlags(nil, env(map[string]string{"KAYA_MVCC_RETENTION": "0", "KAYA_MVCC_RETENTION_BYTES": "0"}), &errb)
	if code != -1 || cfg.MVCCRetention >= 0 || cfg.MVCCRetentionBytes >= 0 {
		t.Fatalf("0 must turn the bounds off: %v %d", cfg.MVCCRetention, cfg.MVCCRetentionBytes)
	}
	for _, args := range [][]string{{"--max-clock-offset", "0s"}, {"--mvcc-retention", "-1s"}, {"--mvcc-retention-bytes", "lots"}} {
		errb.Reset()
		if _, code := ParseFlags(args, env(nil), &errb); code != exitUsage || !strings.Contains(errb.String(), args[0]) {
			t.Errorf("%v: code %d, %s", args, code, errb.String())
		}
	}
	log := slog.New(slog.DiscardHandler)
	fs := vfs.NewMem()
	if r, b := mvccRetention(Config{DataDir: "/"}, fs, log); r != time.Hour || b < minAutoRetentionBytes || b > maxAutoRetentionBytes {
		t.Fatalf("Config zeros: %v %d", r, b)
	}
	if r, b := mvccRetention(Config{MVCCRetention: -1, MVCCRetentionBytes: -1}, fs, log); r != 0 || b != 0 {
		t.Fatalf("negative means none: %v %d", r, b)
	}
	if r, b := mvccRetention(Config{MVCCRetention: time.Minute, MVCCRetentionBytes: 5 << 20}, fs, log); r != time.Minute || b != 5<<20 {
		t.Fatalf("explicit: %v %d", r, b)
	}
	// The change feed's pair resolves the same way, with its own defaults.
	if r, b := cdcRetention(Config{DataDir: "/"}, fs, log); r != 24*time.Hour || b < minAutoCDCRetentionBytes || b > maxAutoCDCRetentionBytes {
		t.Fatalf("cdc, Config zeros: %v %d", r, b)
	}
	if r, b := cdcRetention(Config{CDCRetention: -1, CDCRetentionBytes: -1}, fs, log); r != 0 || b != 0 {
		t.Fatalf("cdc, negative means none: %v %d", r, b)
	}
	if r, b := cdcRetention(Config{CDCRetention: time.Minute, CDCRetentionBytes: 5 << 20}, fs, log); r != time.Minute || b != 5<<20 {
		t.Fatalf("cdc, explicit: %v %d", r, b)
	}
}

// TestRaftLogWritesFlag: --raft-log-writes defaults to async, takes sync
// from the command line or the environment, and refuses anything else.
func TestRaftLogWritesFlag(t *testing.T) {
	var errb bytes.Buffer
	cfg, code := ParseFlags(nil, env(nil), &errb)
	if code != -1 || cfg.SyncLogWrites {
		t.Fatalf("default: %d sync=%v %s", code, cfg.SyncLogWrites, errb.String())
	}
	cfg, code = ParseFlags([]string{"--raft-log-writes", "sync"}, env(nil), &errb)
	if code != -1 || !cfg.SyncLogWrites {
		t.Fatalf("--raft-log-writes sync: %d sync=%v %s", code, cfg.SyncLogWrites, errb.String())
	}
	cfg, code = ParseFlags(nil, env(map[string]string{"KAYA_RAFT_LOG_WRITES": "sync"}), &errb)
	if code != -1 || !cfg.SyncLogWrites {
		t.Fatalf("KAYA_RAFT_LOG_WRITES=sync: %d sync=%v %s", code, cfg.SyncLogWrites, errb.String())
	}
	errb.Reset()
	if _, code := ParseFlags([]string{"--raft-log-writes", "fast"}, env(nil), &errb); code != exitUsage || !strings.Contains(errb.String(), `--raft-log-writes "fast": want async`) {
		t.Fatalf("a bad value: code %d, %s", code, errb.String())
	}
}
