package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kayadb/kayadb/client"
	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/server"
)

// backupWrite is one put a writer attempted.
type backupWrite struct {
	key, value string
	seq        int       // the writer's sequence number (its writes are sequential)
	acked      time.Time // zero when the put failed or its outcome is unknown
}

// backupWriter writes new keys (w<g>-u<seq>) and overwrites its own keys
// (w<g>-k<nn>), alternately, with values that carry its sequence number,
// one put at a time, until stopped.
type backupWriter struct {
	g      int
	writes []backupWrite
	acked  *atomic.Int64 // shared by the writers
}

func (w *backupWriter) run(c *client.Client, stop <-chan struct{}) {
	r := rand.New(rand.NewPCG(uint64(w.g), 7))
	raw := make([]byte, 450)
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		default:
		}
		k := fmt.Sprintf("w%d-u%06d", w.g, seq) // a new key, or
		if seq%2 == 0 {
			k = fmt.Sprintf("w%d-k%02d", w.g, seq/2%40) // an overwrite
		}
		for i := range raw {
			raw[i] = byte(r.Uint32())
		}
		v := fmt.Sprintf("w%d-s%06d-%x", w.g, seq, raw) // incompressible enough for MiBs of tables
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err := c.Put(ctx, []byte(k), []byte(v))
		cancel()
		wr := backupWrite{key: k, value: v, seq: seq}
		if err == nil {
			wr.acked = time.Now()
			w.acked.Add(1)
		}
		w.writes = append(w.writes, wr)
	}
}

// restoredNodes starts servers on restored data directories (real files,
// real TCP): one per directory, node ids 1..n, all with the same --peer
// list.
func restoredNodes(t *testing.T, dirs []string) (addrs []string, nodes []*server.Server) {
	t.Helper()
	c := newCLICluster(t, len(dirs), nodeOpts{configure: func(id uint64, cfg *server.Config) {
		cfg.DataDir, cfg.EngineOptions = dirs[id-1], nil
	}})
	c.WaitLeader()
	for id := uint64(1); id <= uint64(len(dirs)); id++ {
		nodes = append(nodes, c.node(id))
		addrs = append(addrs, c.addr(id))
	}
	return addrs, nodes
}

// readAll scans every user key of the cluster at addrs.
func readAll(t *testing.T, addrs []string) map[string]string {
	t.Helper()
	c, err := client.New(addrs, &client.Options{RequestTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	items, err := c.Scan(context.Background(), nil)
	if err != nil {
		t.Fatalf("scanning the restored cluster: %v", err)
	}
	out := map[string]string{}
	for _, it := range items {
		out[string(it.Key)] = string(it.Value)
	}
	return out
}

// TestBackupUnderLoadRestores takes `kayactl backup` of a 3-node cluster
// while four writers overwrite their keys, restores it with `kayactl
// restore` into a new directory and starts a server there: it must serve
// every write acknowledged before the backup began (for each key a value at
// least as new as the last one acknowledged before), only values some write
// attempted, and take new writes. Eight writers: new keys and overwrites.
// Then the same backup, restored into
// three directories, starts a 3-node cluster with the same data.
func TestBackupUnderLoadRestores(t *testing.T) {
	c := startCluster(t, 3)
	all := []string{c.addr(1), c.addr(2), c.addr(3)}
	cl, err := client.New(all, &client.Options{RequestTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	stop := make(chan struct{})
	writers := make([]*backupWriter, 8)
	var wg sync.WaitGroup
	var acked atomic.Int64
	for g := range writers {
		writers[g] = &backupWriter{g: g, acked: &acked}
		wg.Add(1)
		go func() {
			defer wg.Done()
			writers[g].run(cl, stop)
		}()
	}
	stopped := false
	stopWriters := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer stopWriters()
	// Some MiB before the backup (a few seconds under the race detector).
	for start := time.Now(); acked.Load() < 4000 && time.Since(start) < 20*time.Second; {
		time.Sleep(10 * time.Millisecond)
	}

	leader := c.WaitLeader()
	before := c.node(leader).Store().AppliedIndex()
	began := time.Now()
	out := filepath.Join(t.TempDir(), "backup")
	stdout, stderr, code := runCLI("--server="+strings.Join(all, ","), "--json", "backup", "--out", out)
	took := time.Since(began)
	time.Sleep(200 * time.Millisecond) // writes continue after the backup
	stopWriters()
	if code != 0 {
		t.Fatalf("backup: exit %d\n%s\n%s", code, stdout, stderr)
	}
	var res backupResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("backup --json: %v: %q", err, stdout)
	}
	if !res.OK || res.Out != out || res.NodeID != leader || res.AppliedIndex < before || res.Files < 3 || res.Bytes < 1<<20 {
		t.Fatalf("backup result %+v (leader %d, applied %d before)", res, leader, before)
	}
	if !strings.Contains(stderr, "backup: 100% (") {
		t.Fatalf("no progress lines on stderr: %q", stderr)
	}
	// The backup directory is gone from the leader.
	if _, err := c.node(leader).DB().Options().FS.Stat("/srv/backups/" + res.BackupID + ".tmp"); err == nil {
		t.Fatal("the server kept the backup after it ended")
	}

	// What the writers did, by key.
	attempted := map[string]map[string]int{} // key → value → seq
	ackedBefore := map[string]int{}          // key → highest seq acknowledged before the backup began
	ackedTotal, after := 0, 0
	for _, w := range writers {
		for _, wr := range w.writes {
			if attempted[wr.key] == nil {
				attempted[wr.key] = map[string]int{}
			}
			attempted[wr.key][wr.value] = wr.seq
			if !wr.acked.IsZero() {
				ackedTotal++
				if wr.acked.Before(began) {
					if s, ok := ackedBefore[wr.key]; !ok || wr.seq > s {
						ackedBefore[wr.key] = wr.seq
					}
				} else {
					after++
				}
			}
		}
	}
	if len(ackedBefore) < 100 || after == 0 {
		t.Fatalf("too little load: %d keys acknowledged before the backup, %d writes after it began", len(ackedBefore), after)
	}
	check := func(what string, got map[string]string) {
		t.Helper()
		for k, s := range ackedBefore {
			v, ok := got[k]
			if !ok {
				t.Fatalf("%s: %s lost (acknowledged with seq %d before the backup began)", what, k, s)
			}
			seq, ok := attempted[k][v]
			if !ok {
				t.Fatalf("%s: %s has a value no write attempted: %.40q", what, k, v)
			}
			if seq < s {
				t.Fatalf("%s: %s holds seq %d, older than seq %d acknowledged before the backup began", what, k, seq, s)
			}
		}
		for k, v := range got {
			if _, ok := attempted[k][v]; !ok {
				t.Fatalf("%s: %s=%.40q was never written", what, k, v)
			}
		}
	}

	// One node.
	data := filepath.Join(t.TempDir(), "node")
	rout, rerr, code := runCLI("--data", data, "restore", "--from", out)
	if code != 0 || !strings.Contains(rout, "OK restored the backup of node") || !strings.Contains(rout, "--peer") {
		t.Fatalf("restore: exit %d\n%s\n%s", code, rout, rerr)
	}
	addrs, _ := restoredNodes(t, []string{data})
	single := readAll(t, addrs)
	check("restored node", single)
	// It is a new cluster: it takes writes, its membership is its own.
	nc, err := client.New(addrs, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	if err := nc.Put(ctx, []byte("after-restore"), []byte("yes")); err != nil {
		t.Fatalf("put on the restored node: %v", err)
	}
	if v, err := nc.Get(ctx, []byte("after-restore")); err != nil || string(v) != "yes" {
		t.Fatalf("get on the restored node: %q %v", v, err)
	}
	st, err := nc.Status(ctx, addrs[0])
	if err != nil || len(st.Members) != 1 || st.Members[0].ClientAddr != addrs[0] || st.AppliedIndex >= res.AppliedIndex {
		t.Fatalf("restored node status: %+v %v (backup at %d)", st, err, res.AppliedIndex)
	}

	// Three nodes, each restored from the same backup, one --peer list.
	var dirs []string
	for i := range 3 {
		d := filepath.Join(t.TempDir(), fmt.Sprintf("node-%d", i+1))
		if _, rerr, code := runCLI("--data", d, "restore", "--from", out); code != 0 {
			t.Fatalf("restore %d: exit %d %s", i+1, code, rerr)
		}
		dirs = append(dirs, d)
	}
	addrs3, nodes3 := restoredNodes(t, dirs)
	three := readAll(t, addrs3)
	delete(single, "after-restore")
	if len(three) != len(single) {
		t.Fatalf("the 3-node restore holds %d keys, the single node %d", len(three), len(single))
	}
	for k, v := range single {
		if three[k] != v {
			t.Fatalf("%s differs between the restores", k)
		}
	}
	c3, err := client.New(addrs3, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if err := c3.Put(ctx, []byte("after-restore"), []byte("three")); err != nil {
		t.Fatalf("put on the restored cluster: %v", err)
	}
	// Every node applies it: the three engines started from the same data
	// and replicate from there.
	deadline := time.Now().Add(10 * time.Second)
	for _, s := range nodes3 {
		for {
			v, err := kv.LocalGet(s.DB(), []byte("after-restore"))
			if err == nil && string(v) == "three" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a restored node did not apply the new write: %q %v", v, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Logf("%d writes acknowledged (%d after the backup began), %d keys acknowledged before it; backup at index %d: %d files, %d bytes in %v",
		ackedTotal, after, len(ackedBefore), res.AppliedIndex, res.Files, res.Bytes, took.Round(time.Millisecond))
}

// copyDir copies the files of a backup directory.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBackupAndRestoreRefusals: backup needs the operator token when the
// server has one, --out and --server; restore refuses damaged backups
// (naming the file, exit 3), a missing manifest (exit 2) and a non-empty
// --data (exit 4), and writes nothing when it refuses.
func TestBackupAndRestoreRefusals(t *testing.T) {
	const tok = "operator-secret-0123456789"
	c := startNode(t, func(_ uint64, cfg *server.Config) { cfg.OperatorToken = tok })
	srv := "--server=" + c.addr(1)
	for i := range 50 {
		if _, errs, code := runCLI(srv, "put", fmt.Sprintf("k%02d", i), "v"); code != 0 {
			t.Fatalf("put: %d %s", code, errs)
		}
	}
	tmp := t.TempDir()
	good := filepath.Join(tmp, "good")

	// Backup refusals.
	if _, errs, code := runCLI(srv, "backup", "--out", good); code != ExitError ||
		!strings.Contains(errs, "operator credential required or invalid") || !strings.Contains(errs, "hint: the servers require an operator token") {
		t.Fatalf("backup without the token: %d %s", code, errs)
	}
	if _, err := os.Stat(good); err == nil {
		t.Fatal("a refused backup left its directory behind")
	}
	if _, errs, code := runCLI(srv, "--operator-token", "wrong-token-0123456789", "backup", "--out", good); code != ExitError || !strings.Contains(errs, "operator credential") {
		t.Fatalf("backup with a wrong token: %d %s", code, errs)
	}
	if _, errs, code := runCLI(srv, "--operator-token", tok, "backup"); code != ExitInvalidArgument || !strings.Contains(errs, "--out") {
		t.Fatalf("backup without --out: %d %s", code, errs)
	}
	if _, errs, code := runCLI("--data", t.TempDir(), "backup", "--out", good); code != ExitInvalidArgument || !strings.Contains(errs, "needs --server") {
		t.Fatalf("backup in local mode: %d %s", code, errs)
	}
	out, errs, code := runCLI(srv, "--operator-token", tok, "backup", "--out", good)
	if code != 0 || !strings.HasPrefix(out, "OK backup of node 1 at raft index ") || !strings.Contains(errs, "backup: 100%") {
		t.Fatalf("backup with the token: %d %q %q", code, out, errs)
	}
	if _, errs, code := runCLI(srv, "--operator-token", tok, "backup", "--out", good); code != ExitInvalidArgument || !strings.Contains(errs, "is not empty") {
		t.Fatalf("backup into a non-empty directory: %d %s", code, errs)
	}

	// The good backup verifies (--dry-run writes nothing).
	data := filepath.Join(tmp, "data")
	if out, errs, code := runCLI("--data", data, "restore", "--from", good, "--dry-run"); code != 0 || !strings.Contains(out, "verified") || !strings.Contains(errs, "verify: 100%") {
		t.Fatalf("restore --dry-run: %d %q %q", code, out, errs)
	}
	if _, err := os.Stat(data); err == nil {
		t.Fatal("restore --dry-run created --data")
	}

	m, err := client.ReadBackupManifest(good)
	if err != nil {
		t.Fatal(err)
	}
	var sst string
	for _, f := range m.Files {
		if strings.HasSuffix(f.Name, ".sst") {
			sst = f.Name
		}
	}
	if sst == "" {
		t.Fatalf("no table in the backup: %+v", m.Files)
	}
	for _, tc := range []struct {
		name   string
		damage func(dir string)
		code   int
		want   string
	}{
		{"corrupt table", func(dir string) {
			p := filepath.Join(dir, sst)
			b, _ := os.ReadFile(p)
			b[len(b)/3] ^= 0x01
			_ = os.WriteFile(p, b, 0o600)
		}, ExitCorruption, sst + " does not match its checksum"},
		{"truncated table", func(dir string) { _ = os.Truncate(filepath.Join(dir, sst), 10) }, ExitCorruption, sst + " is truncated"},
		{"missing table", func(dir string) { _ = os.Remove(filepath.Join(dir, sst)) }, ExitCorruption, sst + " is missing"},
		{"missing manifest", func(dir string) { _ = os.Remove(filepath.Join(dir, "MANIFEST.json")) }, ExitNotFound, "MANIFEST.json is missing"},
		{"wrong checksum", func(dir string) {
			p := filepath.Join(dir, "MANIFEST.json")
			b, _ := os.ReadFile(p)
			var mm map[string]any
			_ = json.Unmarshal(b, &mm)
			files := mm["files"].([]any)
			files[0].(map[string]any)["sha256"] = strings.Repeat("ab", 32)
			b, _ = json.Marshal(mm)
			_ = os.WriteFile(p, b, 0o600)
		}, ExitCorruption, m.Files[0].Name + " does not match its checksum"},
		{"wrong applied index", func(dir string) {
			p := filepath.Join(dir, "MANIFEST.json")
			b, _ := os.ReadFile(p)
			b = bytes.Replace(b, fmt.Appendf(nil, `"applied_index": %d`, m.AppliedIndex), fmt.Appendf(nil, `"applied_index": %d`, m.AppliedIndex+1), 1)
			_ = os.WriteFile(p, b, 0o600)
		}, ExitCorruption, "MANIFEST.json says index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "copy")
			copyDir(t, good, dir)
			tc.damage(dir)
			target := filepath.Join(t.TempDir(), "data")
			_, errs, code := runCLI("--data", target, "restore", "--from", dir)
			if code != tc.code || !strings.Contains(errs, tc.want) {
				t.Fatalf("exit %d, want %d; stderr %q, want it to name %q", code, tc.code, errs, tc.want)
			}
			if _, err := os.Stat(target); err == nil {
				t.Fatal("a refused restore left --data behind")
			}
		})
	}

	// --data must be given, and empty.
	if _, errs, code := runCLI("restore", "--from", good); code != ExitInvalidArgument || !strings.Contains(errs, "needs --data") {
		t.Fatalf("restore without --data: %d %s", code, errs)
	}
	// An empty $KAYA_DATA counts as unset: no fallback directory.
	if _, errs, code := runCLIEnv(map[string]string{"KAYA_DATA": ""}, "restore", "--from", good); code != ExitInvalidArgument || !strings.Contains(errs, "needs --data") {
		t.Fatalf("restore with an empty $KAYA_DATA: %d %s", code, errs)
	}
	if _, errs, code := runCLI("restore", "--data", data); code != ExitInvalidArgument || !strings.Contains(errs, "needs --from") {
		t.Fatalf("restore without --from: %d %s", code, errs)
	}
	if err := os.MkdirAll(filepath.Join(data, "engine"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := runCLI("--data", data, "restore", "--from", good); code != ExitInvalidArgument || !strings.Contains(errs, "is not empty") {
		t.Fatalf("restore over a non-empty directory: %d %s", code, errs)
	}
	// An existing empty directory is fine; the restored engine holds the
	// data and none of the raft state.
	if err := os.Remove(filepath.Join(data, "engine")); err != nil {
		t.Fatal(err)
	}
	out, errs, code = runCLI("--json", "--data", data, "restore", "--from", good)
	var rr restoreResult
	if code != 0 || json.Unmarshal([]byte(out), &rr) != nil || rr.SystemKeysRemoved != 3 || rr.AppliedIndex != m.AppliedIndex || rr.Data != data {
		t.Fatalf("restore into an empty directory: %d %q %q", code, out, errs)
	}
	if out, errs, code := runCLI("--data", filepath.Join(data, "engine"), "get", "k07"); code != 0 || out != "v\n" {
		t.Fatalf("get k07 from the restored engine: %d %q %q", code, out, errs)
	}
	// The raft state is gone; the last revision stays (index 0, term 0).
	db, err := engine.Open(filepath.Join(data, "engine"), &engine.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := kv.ReadState(db)
	if err != nil || st.Index != 0 || st.Term != 0 || st.TS == 0 || st.Roster != nil || len(st.ConfState.GetVoters()) != 0 {
		t.Fatalf("the restored engine's raft state: %+v, %v", st, err)
	}
}
