package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// encNode is one kayadb-server process of TestEncryptionAtRestEndToEnd.
type encNode struct {
	id             int
	data, raft, cl string
	log            string
	cmd            *exec.Cmd
	done           chan error
}

// TestEncryptionAtRestEndToEnd runs a real 3-node cluster with a keyring:
// a workload writes random 32-byte markers; a follower that was down
// catches up by snapshot; a backup is taken; the key is rotated with
// kayactl and SIGHUP under load; then every node stops and no file under
// any data directory or the backup holds any marker. Every acknowledged
// write reads back, kayactl encryption verify passes, the backup restores
// only with the keyring, and a node started with a wrong key or none
// stops naming a file and the key id.
func TestEncryptionAtRestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test; skipped with -short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/kayadb-server", "./cmd/kayactl")
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	kayactl := func(args ...string) (string, string, int) {
		cmd := exec.Command(filepath.Join(bin, "kayactl"), args...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return out.String(), errb.String(), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errb.String(), 0
	}
	keyring := filepath.Join(dir, "keyring")
	if out, errs, code := kayactl("encryption", "init", "--keyring", keyring); code != 0 {
		t.Fatalf("init: %s %s", out, errs)
	}

	nodes := make([]*encNode, 3)
	var peers []string
	for i := range nodes {
		n := &encNode{id: i + 1, data: filepath.Join(dir, fmt.Sprintf("node-%d", i+1)), raft: freeAddr(t), cl: freeAddr(t),
			log: filepath.Join(dir, fmt.Sprintf("node-%d.log", i+1))}
		nodes[i] = n
		peers = append(peers, "--peer", fmt.Sprintf("%d=%s,%s", n.id, n.raft, n.cl))
	}
	servers := nodes[0].cl + "," + nodes[1].cl + "," + nodes[2].cl
	start := func(n *encNode, keyFlags ...string) {
		t.Helper()
		args := append([]string{"--node-id", fmt.Sprint(n.id), "--data", n.data, "--raft-addr", n.raft, "--client-addr", n.cl,
			"--no-metrics", "--tick", "50ms", "--snapshot-entries", "100", "--snapshot-catchup-entries", "20"}, peers...)
		args = append(args, keyFlags...)
		lf, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		n.cmd = exec.Command(filepath.Join(bin, "kayadb-server"), args...)
		n.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		n.cmd.Stdout, n.cmd.Stderr = lf, lf
		if err := n.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		n.done = make(chan error, 1)
		go func(c *exec.Cmd, done chan error) { done <- c.Wait(); _ = lf.Close() }(n.cmd, n.done)
	}
	stop := func(n *encNode) {
		t.Helper()
		if n.cmd == nil {
			return
		}
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.done:
		case <-time.After(30 * time.Second):
			_ = n.cmd.Process.Kill()
			<-n.done
			t.Errorf("node %d did not stop within 30 s", n.id)
		}
		n.cmd = nil
	}
	logs := func() string {
		var b strings.Builder
		for _, n := range nodes {
			data, _ := os.ReadFile(n.log)
			if len(data) > 4000 {
				data = data[len(data)-4000:]
			}
			fmt.Fprintf(&b, "--- node %d\n%s\n", n.id, data)
		}
		return b.String()
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			stop(n)
		}
	})
	waitLog := func(n *encNode, want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			data, _ := os.ReadFile(n.log)
			if strings.Contains(string(data), want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d never logged %q\n%s", n.id, want, logs())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, n := range nodes {
		start(n, "--encryption-keyring-file", keyring)
	}
	// kayactl answers at once when nothing listens on any address
	// (FailFast): the first put must not race the nodes' start.
	for _, n := range nodes {
		waitLog(n, "kayadb node started")
	}

	// The workload: every value a fresh random marker.
	var mu sync.Mutex
	acked := map[string]string{}
	var lastErr string // kayactl's output of the last failed put
	put := func(key string) bool {
		raw := make([]byte, 32)
		_, _ = rand.Read(raw)
		marker := hex.EncodeToString(raw)
		out, errOut, code := kayactl("--server", servers, "--timeout", "10s", "put", key, marker)
		if code == 0 {
			mu.Lock()
			acked[key] = marker
			mu.Unlock()
		} else {
			mu.Lock()
			lastErr = fmt.Sprintf("exit %d: %s%s", code, out, errOut)
			mu.Unlock()
		}
		return code == 0
	}
	for i := range 30 {
		if !put(fmt.Sprintf("a%03d", i)) {
			t.Fatalf("put a%03d failed (%s)\n%s", i, lastErr, logs())
		}
	}

	// A follower misses enough entries for the leader to compact past it.
	stop(nodes[2])
	for i := range 250 {
		put(fmt.Sprintf("b%03d", i))
	}
	start(nodes[2], "--encryption-keyring-file", keyring)
	waitLog(nodes[2], "received a snapshot")

	backup := filepath.Join(dir, "backup")
	if out, errs, code := kayactl("--server", servers, "--timeout", "60s", "backup", "--out", backup); code != 0 {
		t.Fatalf("backup: %s %s\n%s", out, errs, logs())
	}

	// Rotation under load.
	stopLoad := make(chan struct{})
	var loadWG sync.WaitGroup
	loadWG.Add(1)
	go func() {
		defer loadWG.Done()
		for i := 0; ; i++ {
			select {
			case <-stopLoad:
				return
			default:
			}
			put(fmt.Sprintf("c%04d", i))
		}
	}()
	if out, errs, code := kayactl("encryption", "rotate", "--keyring", keyring); code != 0 {
		t.Fatalf("rotate: %s %s", out, errs)
	}
	for _, n := range nodes {
		_ = n.cmd.Process.Signal(syscall.SIGHUP)
	}
	for _, n := range nodes {
		waitLog(n, "active_key=2")
	}
	for i := range 20 {
		put(fmt.Sprintf("d%03d", i))
	}
	close(stopLoad)
	loadWG.Wait()

	// Every acknowledged write reads back.
	for k, v := range acked {
		out, errs, code := kayactl("--server", servers, "--timeout", "10s", "get", k)
		if code != 0 || strings.TrimSpace(out) != v {
			t.Fatalf("get %s: exit %d %q %s, want %s", k, code, out, errs, v)
		}
	}
	for _, n := range nodes {
		stop(n)
	}

	// No marker anywhere.
	markers := make([][]byte, 0, len(acked))
	for _, v := range acked {
		markers = append(markers, []byte(v))
	}
	searched := 0
	for _, root := range []string{nodes[0].data, nodes[1].data, nodes[2].data, backup} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			searched++
			for _, m := range markers {
				if bytes.Contains(b, m) {
					return fmt.Errorf("%s holds the marker %s in plaintext", path, m)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d acknowledged writes, %d files searched", len(acked), searched)

	// verify passes on every node.
	for _, n := range nodes {
		if out, errs, code := kayactl("--data", n.data, "encryption", "verify", "--keyring", keyring); code != 0 || !strings.Contains(out, "key 2") {
			t.Fatalf("verify node %d: exit %d\n%s\n%s", n.id, code, out, errs)
		}
	}

	// The backup restores only with the keyring.
	if _, errs, code := kayactl("restore", "--from", backup, "--data", filepath.Join(dir, "restored-nokey")); code == 0 || !strings.Contains(errs, "key id") {
		t.Fatalf("restore without the keyring: exit %d %s", code, errs)
	}
	if out, errs, code := kayactl("restore", "--from", backup, "--data", filepath.Join(dir, "restored"), "--encryption-keyring-file", keyring); code != 0 {
		t.Fatalf("restore with the keyring: %s %s", out, errs)
	}

	// A wrong key, or none, stops the node naming a file and the key id.
	wrong := filepath.Join(dir, "wrong.key")
	_ = os.WriteFile(wrong, bytes.Repeat([]byte{7}, 32), 0o600)
	for _, c := range []struct {
		name  string
		flags []string
	}{{"wrong key", []string{"--encryption-key-file", wrong}}, {"no key", nil}} {
		n := nodes[0]
		_ = os.Truncate(n.log, 0)
		start(n, c.flags...)
		var err error
		select {
		case err = <-n.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: the node is still running\n%s", c.name, logs())
		}
		n.cmd = nil
		var ee *exec.ExitError
		out, _ := os.ReadFile(n.log)
		if !errors.As(err, &ee) || ee.ExitCode() != 4 || !strings.Contains(string(out), "key id") ||
			!strings.Contains(string(out), n.data) {
			t.Fatalf("%s: %v, want exit status 4 naming a file under %s and the key id:\n%s", c.name, err, n.data, out)
		}
	}
}
