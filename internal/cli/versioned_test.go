package cli

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/kv"
)

// TestLocalModeReadsVersionedEngine: local mode on a kayadb-server's
// versioned engine (copied out, or its server stopped) reads what the
// server would answer: values without their version header, user keys
// only in scans; writes are refused (they would bypass raft and the
// history). An unversioned engine is read and written as before.
func TestLocalModeReadsVersionedEngine(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "copy")
	db, err := engine.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b", "c"} {
		if err := db.Set([]byte(k), []byte("value-"+k), engine.Sync); err != nil {
			t.Fatal(err)
		}
	}
	// The server's conversion: every value gets a version header, and
	// the engine its format marker.
	if n, err := kv.Migrate(db, nil); err != nil || n != 3 {
		t.Fatalf("migrate: %d %v", n, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if out, errs, code := runCLI("--data", dir, "get", "b"); code != 0 || out != "value-b\n" {
		t.Fatalf("get: %d %q %q", code, out, errs)
	}
	out, errs, code := runCLI("--data", dir, "scan", "")
	if code != 0 || strings.Count(out, "\n") != 3 || !strings.Contains(out, "value-c") || strings.Contains(out, "mvcc") {
		t.Fatalf("scan: %d %q %q", code, out, errs)
	}
	for _, args := range [][]string{{"put", "d", "x"}, {"delete", "a"}} {
		_, errs, code := runCLI(append([]string{"--data", dir}, args...)...)
		if code != ExitInvalidArgument || !strings.Contains(errs, "versioned") {
			t.Fatalf("%v on a versioned engine: %d %q", args, code, errs)
		}
	}
	// Unchanged by the refused writes.
	if out, _, code := runCLI("--data", dir, "get", "a"); code != 0 || out != "value-a\n" {
		t.Fatalf("get a after the refusals: %d %q", code, out)
	}
}
