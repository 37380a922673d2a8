package server

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/vfs"
	"github.com/kayadb/kayadb/internal/wire"
)

// writeKeyring writes r as a keyring file of mode 0600 and returns its path.
func writeKeyring(t *testing.T, path string, r *crypt.Keyring) string {
	t.Helper()
	if err := os.WriteFile(path, r.Format(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// withoutKey returns r's keyring file content without key id's line.
func withoutKey(r *crypt.Keyring, id crypt.KeyID) []byte {
	var out []string
	for _, l := range strings.Split(string(r.Format()), "\n") {
		if !strings.HasPrefix(l, fmt.Sprintf("key %d ", id)) {
			out = append(out, l)
		}
	}
	return []byte(strings.Join(out, "\n"))
}

// raftKeys returns the keys the node's raft log segments use, and the
// newest segment's.
func raftKeys(s *Server) (all map[crypt.KeyID]bool, newest []crypt.KeyID) {
	all = map[crypt.KeyID]bool{}
	us := s.rlog.KeyUsage()
	for _, u := range us {
		for _, k := range u.Keys {
			all[k] = true
		}
	}
	return all, us[len(us)-1].Keys
}

// TestEncryptionKeyringReload: SIGHUP's reload (ReloadEncryption) swaps a
// rotated keyring in, after which new raft records use the new active key;
// a keyring that drops a key the raft log still uses, holds other bytes
// under a used id, or does not parse is refused, named in the log and
// counted, and the node keeps its keys and keeps serving.
func TestEncryptionKeyringReload(t *testing.T) {
	dir := t.TempDir()
	ring1, err := crypt.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	path := writeKeyring(t, filepath.Join(dir, "keyring"), ring1)
	s, logs := startSecured(t, Config{EncryptionKeyringFile: path, MetricsListener: metricsListener(t)})
	if s.sealer == nil || s.sealer.ActiveKey() != 1 {
		t.Fatalf("no sealer with key 1")
	}
	c := dial(t, s.ClientAddr())
	put := func(k string) {
		t.Helper()
		if st, p, err := c.do(wire.OpPut, wire.AppendPut(nil, []byte(k), []byte("value-"+k))); err != nil || st != wire.StatusOK {
			t.Fatalf("put %s: %v %v %s", k, st, err, p)
		}
	}
	for i := range 5 {
		put(fmt.Sprintf("a%d", i))
	}
	if all, _ := raftKeys(s); !all[1] || len(all) != 1 {
		t.Fatalf("raft log keys %v, want key 1", all)
	}
	// The reload check sees the engine's tables too (a table may keep an
	// old key after the raft log and the WALs have moved on).
	if err := s.DB().Flush(); err != nil {
		t.Fatal(err)
	}
	inUse, err := s.keysInUse()
	if err != nil {
		t.Fatal(err)
	}
	tables := 0
	for _, f := range inUse {
		if strings.HasSuffix(f.File, ".sst") {
			tables++
			if !slices.Equal(f.Keys, []crypt.KeyID{1}) {
				t.Fatalf("table %s uses keys %v, want [1]", f.File, f.Keys)
			}
		}
	}
	if tables == 0 {
		t.Fatalf("the keys in use list no table after a flush: %+v", inUse)
	}
	if m := scrapeMetrics(t, s.MetricsAddr()); m[`kayadb_engine_tables_by_key{key="1"}`] != float64(tables) || m["kayadb_engine_encryption_stale_tables"] != 0 {
		t.Fatalf("kayadb_engine_tables_by_key{key=\"1\"} = %v, stale %v; want %d tables, 0 stale",
			m[`kayadb_engine_tables_by_key{key="1"}`], m["kayadb_engine_encryption_stale_tables"], tables)
	}

	// Rotation: key 2 is added and active.
	ring2, id, err := ring1.WithNewKey(nil)
	if err != nil || id != 2 {
		t.Fatal(id, err)
	}
	writeKeyring(t, path, ring2)
	if err := s.ReloadEncryption(); err != nil {
		t.Fatal(err)
	}
	if s.sealer.ActiveKey() != 2 {
		t.Fatalf("active key %d after the reload, want 2", s.sealer.ActiveKey())
	}
	put("b")
	if _, newest := raftKeys(s); !slices.Contains(newest, 2) {
		t.Fatalf("the newest raft segment uses %v after the rotation, want key 2 among them", newest)
	}

	failures := func() float64 {
		return scrapeMetrics(t, s.MetricsAddr())[`kayadb_config_reload_failures_total{file="encryption"}`]
	}
	refused := func(content []byte, want ...string) {
		t.Helper()
		before := failures()
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		err := s.ReloadEncryption()
		if err == nil {
			t.Fatalf("reload of %q accepted", content)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) || !strings.Contains(logs.String(), w) {
				t.Fatalf("reload error (and log) should name %q: %v\n%s", w, err, logs)
			}
		}
		if got := failures(); got != before+1 {
			t.Fatalf("kayadb_config_reload_failures_total went from %v to %v", before, got)
		}
		if !s.sealer.Keyring().Equal(ring2) {
			t.Fatal("a refused reload changed the keyring")
		}
		put("after-refusal")
	}
	// Dropping key 1, which the raft log's older records use.
	refused(withoutKey(ring2, 1), "lacks key 1", ".wal")
	// Other bytes under key id 2 (the key being written with).
	other, _ := crypt.Generate(nil)
	changed := strings.Replace(string(ring2.Format()), strings.Fields(strings.Split(string(ring2.Format()), "key 2 ")[1])[0],
		strings.Fields(strings.Split(string(other.Format()), "key 1 ")[1])[0], 1)
	refused([]byte(changed), "other bytes under key id 2")
	// A file that does not parse.
	refused([]byte("key one\n"), "line 1")

	// The node still reads everything with its keys.
	if st, p, err := c.do(wire.OpGet, wire.AppendKey(nil, []byte("a3"))); err != nil || st != wire.StatusOK || !bytes.HasSuffix(p, []byte("value-a3")) {
		t.Fatalf("get a3: %v %v %q", st, err, p)
	}
}

// TestEncryptedNodeRaftLogHoldsNoPlaintext: on a node with a key file,
// no raft log segment holds a written value in the clear, and the node
// restarts with the same key and reads everything back.
func TestEncryptedNodeRaftLogHoldsNoPlaintext(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, bytes.Repeat([]byte{0x5a}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := vfs.NewMem()
	c := newCluster(t, 1, clusterOpts{manual: true, configure: func(_ uint64, cfg *Config) {
		cfg.EncryptionKeyFile = key
		cfg.EngineOptions.FS = fs
	}})
	c.Elect(1)
	conn := dial(t, c.addr(1))
	marker := "PLAINTEXT-MARKER-0c1d2e3f"
	for i := range 20 {
		if st, _, err := conn.do(wire.OpPut, wire.AppendPut(nil, fmt.Appendf(nil, "k%02d", i), []byte(marker))); err != nil || st != wire.StatusOK {
			t.Fatalf("put: %v %v", st, err)
		}
	}
	c.Stop(1)
	names, err := fs.List("/node/raft/wal")
	if err != nil || len(names) == 0 {
		t.Fatal(names, err)
	}
	for _, n := range names {
		f, err := fs.Open("/node/raft/wal/" + n)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(f)
		_ = f.Close()
		if bytes.Contains(b, []byte(marker)) {
			t.Fatalf("raft segment %s holds a value in plaintext", n)
		}
	}
	c.Start(1)
	c.Elect(1)
	conn = dial(t, c.addr(1))
	if st, p, err := conn.do(wire.OpGet, wire.AppendKey(nil, []byte("k07"))); err != nil || st != wire.StatusOK || !bytes.HasSuffix(p, []byte(marker)) {
		t.Fatalf("get after restart: %v %v %q", st, err, p)
	}
}

// TestEncryptionFlags: the two flags (or their variables) load the key
// file or keyring; both at once, a key file of the wrong size, a keyring
// that does not parse, or a file others may read is refused with exit
// status 4 and a message naming the flag or the file and the fix.
func TestEncryptionFlags(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	_ = os.WriteFile(key, bytes.Repeat([]byte{1}, 32), 0o600)
	ring, _ := crypt.Generate(nil)
	keyring := writeKeyring(t, filepath.Join(dir, "keyring"), ring)
	hexKey := filepath.Join(dir, "hexkey")
	_ = os.WriteFile(hexKey, []byte(strings.Repeat("ab", 32)+"\n"), 0o600)
	badRing := filepath.Join(dir, "badring")
	_ = os.WriteFile(badRing, []byte("key 1 zz\n"), 0o600)
	open := filepath.Join(dir, "open")
	_ = os.WriteFile(open, ring.Format(), 0o644)
	_ = os.Chmod(open, 0o644)

	var errb bytes.Buffer
	cfg, code := ParseFlags([]string{"--encryption-keyring-file", keyring}, env(nil), &errb)
	if code != -1 || cfg.EncryptionKeyringFile != keyring || cfg.EncryptionKeyFile != "" {
		t.Fatalf("keyring flag: %d %s", code, errb.String())
	}
	cfg, code = ParseFlags(nil, env(map[string]string{"KAYA_ENCRYPTION_KEY_FILE": key}), &errb)
	if code != -1 || cfg.EncryptionKeyFile != key {
		t.Fatalf("key file from the environment: %d %s", code, errb.String())
	}
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--encryption-key-file", key, "--encryption-keyring-file", keyring}, nil, "give one"},
		{[]string{"--encryption-key-file", key}, map[string]string{"KAYA_ENCRYPTION_KEYRING_FILE": keyring}, "both set"},
		{[]string{"--encryption-key-file", hexKey}, nil, "looks like 64 hex digits"},
		{[]string{"--encryption-keyring-file", badRing}, nil, badRing + " line 1"},
		{[]string{"--encryption-keyring-file", open}, nil, "chmod 600 " + open},
		{[]string{"--encryption-key-file", filepath.Join(dir, "absent")}, nil, "--encryption-key-file"},
	} {
		errb.Reset()
		_, code := ParseFlags(c.args, env(c.env), &errb)
		if code != exitUsage || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%v %v: exit %d, want %d naming %q: %s", c.args, c.env, code, exitUsage, c.want, errb.String())
		}
	}
}

// TestSnapshotNeedsTheSendersKeys: a snapshot's checkpoint carries the
// sender's files as they are on disk. A follower whose keyring lacks the
// key the leader seals with refuses the snapshot, logging the key id, and
// keeps running; given the key, it takes the next one and catches up.
func TestSnapshotNeedsTheSendersKeys(t *testing.T) {
	k1, _ := crypt.Generate(nil)
	k12, _, err := k1.WithNewKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	sealers := map[uint64]*crypt.Sealer{1: crypt.NewSealer(k1), 2: crypt.NewSealer(k1), 3: crypt.NewSealer(k1)}
	c := newCluster(t, 3, clusterOpts{logs: true, configure: func(id uint64, cfg *Config) {
		snapCfg(50, 10)(id, cfg)
		cfg.EngineOptions.Encryption = sealers[id]
	}})
	lead := c.WaitLeader()
	f := c.follower(lead)
	c.Stop(f)
	// The others rotate to key 2; the stopped follower never hears of it.
	for id, s := range sealers {
		if id != f {
			s.SetKeyring(k12)
		}
	}
	putMany(t, c.addr(lead), "a", 400, 100)
	c.Start(f)
	fs := c.node(f)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(c.Log(f), "which this node cannot open") {
		if time.Now().After(deadline) {
			t.Fatalf("the follower never refused the snapshot:\n%s", c.Log(f))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(c.Log(f), "key id 2") {
		t.Fatalf("the refusal does not name key id 2:\n%s", c.Log(f))
	}
	if _, installed := fs.Node().SnapshotCounts(); installed != 0 {
		t.Fatal("the follower installed a snapshot it cannot read")
	}
	select {
	case <-fs.Done():
		t.Fatalf("the follower stopped: %v", fs.Err())
	default:
	}
	// With the key, the next attempt succeeds.
	sealers[f].SetKeyring(k12)
	if _, keys := c.waitConverged(1, 2, 3); keys != 400 {
		t.Fatalf("converged on %d keys, want 400", keys)
	}
	if _, installed := c.node(f).Node().SnapshotCounts(); installed == 0 {
		t.Fatal("the follower caught up without a snapshot")
	}
}
