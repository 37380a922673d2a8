package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestWatchAndCDCCommands: kayactl watch --prefix --from-revision --json
// prints one JSON line per change with revision, type, key and value;
// watch --key follows one key; cdc poll prints the same changes with the
// same revisions as seqs, cdc checkpoint stores a position that cdc
// position reads back, cdc delete removes it (position then exits 2).
func TestWatchAndCDCCommands(t *testing.T) {
	srv := startServer(t)
	mustRun := func(args ...string) string {
		t.Helper()
		out, errOut, code := runCLI(append([]string{"--server", srv}, args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, errOut)
		}
		return out
	}
	mustRun("put", "w/a", "1")
	mustRun("put", "other", "x")
	mustRun("put", "w/b", "2")
	mustRun("delete", "w/a")

	out := mustRun("--json", "cdc", "poll", "reader", "--limit", "100")
	var polled cdcPollResult
	if err := json.Unmarshal([]byte(out), &polled); err != nil || len(polled.Events) != 4 {
		t.Fatalf("cdc poll --json: %v\n%s", err, out)
	}
	first := polled.Events[0].Revision
	var want []string
	for _, e := range polled.Events {
		if strings.HasPrefix(*e.Key, "w/") {
			b, _ := json.Marshal(e)
			want = append(want, string(b))
		}
	}
	out = mustRun("--json", "watch", "--prefix", "w/", "--from-revision", fmt.Sprint(first), "--count", "3")
	if got := strings.Split(strings.TrimSpace(out), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("watch --json:\n%s\nwant\n%s", out, strings.Join(want, "\n"))
	}
	if !strings.Contains(want[0], `"type":"put","key":"w/a","value":"1"`) || !strings.Contains(want[2], `"type":"delete","key":"w/a"}`) {
		t.Fatalf("the JSON lines: %v", want)
	}
	out = mustRun("watch", "--key", "w/b", "--from-revision", fmt.Sprint(first), "--count", "1")
	if !strings.HasSuffix(out, "\tput\tw/b\t2\n") {
		t.Fatalf("watch --key: %q", out)
	}
	last := polled.Events[3].Revision
	mustRun("cdc", "checkpoint", "reader", "--seq", fmt.Sprint(last))
	if out := mustRun("cdc", "position", "reader"); out != fmt.Sprintf("%d\n", last) {
		t.Fatalf("cdc position: %q, want %d", out, last)
	}
	if out := mustRun("cdc", "poll", "reader", "--from", fmt.Sprint(last)); out != "" {
		t.Fatalf("cdc poll after the last: %q", out)
	}
	mustRun("cdc", "delete", "reader")
	if _, _, code := runCLI("--server", srv, "cdc", "position", "reader"); code != ExitNotFound {
		t.Fatalf("cdc position after delete: exit %d, want %d", code, ExitNotFound)
	}
	if _, _, code := runCLI("--server", srv, "watch", "--prefix", "a", "--key", "b"); code != ExitInvalidArgument {
		t.Fatalf("watch with both --prefix and --key: exit %d", code)
	}
	if _, _, code := runCLI("--server", srv, "cdc", "poll", "bad name"); code != ExitInvalidArgument {
		t.Fatalf("a bad consumer name: exit %d", code)
	}
}
