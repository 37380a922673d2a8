package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/server"
)

// TestEncryptionKeyringCommands: init writes a 0600 keyring with key 1
// active and never overwrites one; --from-key-file adopts a key file as
// key 0; rotate adds max+1, makes it active and keeps the old keys; list
// shows ids and fingerprints, never key bytes.
func TestEncryptionKeyringCommands(t *testing.T) {
	dir := t.TempDir()
	ring := filepath.Join(dir, "keyring")
	out, errs, code := runCLI("encryption", "init", "--keyring", ring)
	if code != 0 || !strings.Contains(out, "key 1  fingerprint") || !strings.Contains(out, "active") {
		t.Fatalf("init: %d %q %q", code, out, errs)
	}
	st, err := os.Stat(ring)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("keyring mode: %v %v", st.Mode(), err)
	}
	r1, err := crypt.LoadFile(ring, true)
	if err != nil || r1.Active() != 1 {
		t.Fatalf("the new keyring: %v %v", r1, err)
	}
	before, _ := os.ReadFile(ring)
	if _, errs, code := runCLI("encryption", "init", "--keyring", ring); code != ExitInvalidArgument || !strings.Contains(errs, "never overwrites") {
		t.Fatalf("init over an existing keyring: %d %q", code, errs)
	}
	if after, _ := os.ReadFile(ring); string(after) != string(before) {
		t.Fatal("a refused init changed the keyring")
	}

	out, errs, code = runCLI("--json", "encryption", "rotate", "--keyring", ring)
	var res keyringResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Action != "rotated" || res.ActiveID != 2 || !slices.Equal(res.KeyIDs, []crypt.KeyID{1, 2}) {
		t.Fatalf("rotate: %d %q %q", code, out, errs)
	}
	r2, err := crypt.LoadFile(ring, true)
	if err != nil || r2.Active() != 2 || r2.Fingerprint(1) != r1.Fingerprint(1) {
		t.Fatalf("after rotate: %v, key 1 %s was %s", err, r2.Fingerprint(1), r1.Fingerprint(1))
	}
	if st, _ := os.Stat(ring); st.Mode().Perm() != 0o600 {
		t.Fatalf("rotate left mode %v", st.Mode())
	}
	out, _, code = runCLI("encryption", "rotate", "--keyring", ring)
	if code != 0 || !strings.Contains(out, "key 3") || !strings.Contains(out, "SIGHUP") {
		t.Fatalf("rotate: %d %q", code, out)
	}
	out, _, code = runCLI("encryption", "list", "--keyring", ring)
	want := fmt.Sprintf("key 1  fingerprint %s\nkey 2  fingerprint %s\nkey 3  fingerprint ", r2.Fingerprint(1), r2.Fingerprint(2))
	if code != 0 || !strings.HasPrefix(out, want) || !strings.HasSuffix(out, "  active\n") {
		t.Fatalf("list: %d %q", code, out)
	}
	raw, _ := os.ReadFile(ring)
	for _, l := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(l); len(f) == 3 && strings.Contains(out, f[2]) {
			t.Fatal("list printed key bytes")
		}
	}

	key := filepath.Join(dir, "key")
	_ = os.WriteFile(key, []byte(strings.Repeat("k", 32)), 0o600)
	adopted := filepath.Join(dir, "adopted")
	if out, errs, code := runCLI("--json", "encryption", "init", "--keyring", adopted, "--from-key-file", key); code != 0 || !strings.Contains(out, `"active_id":0`) {
		t.Fatalf("init --from-key-file: %d %q %q", code, out, errs)
	}
	fromFile, _ := crypt.LoadFile(key, false)
	if r, err := crypt.LoadFile(adopted, true); err != nil || !r.Equal(fromFile) {
		t.Fatalf("adopted keyring differs from the key file: %v", err)
	}
	for _, args := range [][]string{{"encryption", "rotate"}, {"encryption", "list", "--keyring", filepath.Join(dir, "absent")}, {"encryption", "verify", "--keyring", ring}} {
		if _, errs, code := runCLI(args...); code != ExitInvalidArgument {
			t.Errorf("%v: exit %d, want %d: %s", args, code, ExitInvalidArgument, errs)
		}
	}
}

// TestEncryptionVerify runs a node with a keyring on a real directory,
// rotates its key (SIGHUP's reload), stops it, and verifies the
// directory: every file with its keys; with a keyring that lacks key 1 or
// a wrong key, the files are named and kayactl exits 3.
func TestEncryptionVerify(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	ring := filepath.Join(dir, "keyring")
	if _, errs, code := runCLI("encryption", "init", "--keyring", ring); code != 0 {
		t.Fatal(errs)
	}
	c := startNode(t, func(_ uint64, cfg *server.Config) {
		cfg.DataDir, cfg.EngineOptions, cfg.EncryptionKeyringFile = data, &engine.Options{MemTableSize: 64 << 10}, ring
	})
	s := "--server=" + c.addr(1)
	for i := range 10 {
		if _, errs, code := runCLI(s, "put", fmt.Sprintf("k%d", i), "secret-value"); code != 0 {
			t.Fatal(errs)
		}
	}
	if _, errs, code := runCLI("encryption", "rotate", "--keyring", ring); code != 0 {
		t.Fatal(errs)
	}
	if err := c.node(1).ReloadEncryption(); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, errs, code := runCLI(s, "put", fmt.Sprintf("j%d", i), strings.Repeat("secret-value", 1000)); code != 0 {
			t.Fatal(errs)
		}
	}
	if _, errs, code := runCLI("--data", data, "encryption", "verify", "--keyring", ring); code != ExitLocked && code != ExitInvalidArgument {
		t.Fatalf("verify of a running node's directory: exit %d %s", code, errs)
	}
	c.Stop(1)

	out, errs, code := runCLI("--data", data, "encryption", "verify", "--keyring", ring)
	if code != 0 || !strings.Contains(out, ".wal") || !strings.Contains(out, "MANIFEST") || !strings.Contains(out, ".sst") || !strings.Contains(out, "keys in use: key 1, key 2") {
		t.Fatalf("verify: %d\n%s\n%s", code, out, errs)
	}
	out, _, code = runCLI("--json", "--data", data, "encryption", "verify", "--keyring", ring)
	var res verifyResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Checked == 0 || res.OK != res.Checked || len(res.Failed) != 0 {
		t.Fatalf("verify --json: %d %s", code, out)
	}

	// A keyring without key 1.
	r, _ := crypt.LoadFile(ring, true)
	var lines []string
	for _, l := range strings.Split(string(r.Format()), "\n") {
		if !strings.HasPrefix(l, "key 1 ") {
			lines = append(lines, l)
		}
	}
	only2 := filepath.Join(dir, "only2")
	_ = os.WriteFile(only2, []byte(strings.Join(lines, "\n")), 0o600)
	out, errs, code = runCLI("--data", data, "encryption", "verify", "--keyring", only2)
	if code != ExitCorruption || !strings.Contains(out, "FAIL") || !strings.Contains(out, "key id 1") || !strings.Contains(errs, ".wal") {
		t.Fatalf("verify without key 1: %d\n%s\n%s", code, out, errs)
	}
	// A wrong key under id 0 (a key file).
	key := filepath.Join(dir, "key")
	_ = os.WriteFile(key, []byte(strings.Repeat("w", 32)), 0o600)
	if out, errs, code := runCLI("--data", data, "encryption", "verify", "--key-file", key); code != ExitCorruption || !strings.Contains(out, "which the keyring lacks") {
		t.Fatalf("verify with another key: %d\n%s\n%s", code, out, errs)
	}
}
