package cli

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/engine"
)

// runStdin runs kayactl with stdin.
func runStdin(stdin string, args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	inv := testInvocation(&out, &errb, func(string) (string, bool) { return "", false })
	inv.stdin = strings.NewReader(stdin)
	code := run(args, inv)
	return out.String(), errb.String(), code
}

// TestPutValueFromStdinOrFile: put KEY - reads the value from stdin and
// --value-file from a file, byte for byte (binary, trailing newline kept),
// in both modes; bad combinations and oversized values are refused before
// anything is written.
func TestPutValueFromStdinOrFile(t *testing.T) {
	binary := "line 1\nline 2\n\x00\xff\x01"
	file := filepath.Join(t.TempDir(), "value.bin")
	if err := os.WriteFile(file, []byte(binary+"file"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []struct {
		name string
		flag []string
	}{
		{"local", []string{"--data", filepath.Join(t.TempDir(), "db")}},
		{"server", []string{"--server", startServer(t)}},
	} {
		m := mode.flag
		if out, errs, code := runStdin(binary, append(m, "put", "from-stdin", "-")...); code != 0 || !strings.HasPrefix(out, "OK") {
			t.Fatalf("%s: put -: %d %q %q", mode.name, code, out, errs)
		}
		if out, _, code := runStdin("", append(m, "get", "from-stdin")...); code != 0 || out != binary+"\n" {
			t.Fatalf("%s: get after put -: %d %q", mode.name, code, out)
		}
		if _, errs, code := runStdin("", append(m, "put", "from-file", "--value-file", file)...); code != 0 {
			t.Fatalf("%s: put --value-file: %d %q", mode.name, code, errs)
		}
		if out, _, code := runStdin("", append(m, "get", "from-file")...); code != 0 || out != binary+"file\n" {
			t.Fatalf("%s: get after --value-file: %d %q", mode.name, code, out)
		}
		// An empty stdin is an empty value.
		if _, errs, code := runStdin("", append(m, "put", "empty", "-")...); code != 0 {
			t.Fatalf("%s: put - with empty stdin: %d %q", mode.name, code, errs)
		}
		if out, _, code := runStdin("", append(m, "get", "empty")...); code != 0 || out != "\n" {
			t.Fatalf("%s: get empty: %d %q", mode.name, code, out)
		}
	}

	dir := filepath.Join(t.TempDir(), "db")
	big := filepath.Join(t.TempDir(), "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(engine.MaxValueSize + 1); err != nil { // sparse
		t.Fatal(err)
	}
	f.Close()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"put", "k", "v", "--value-file", file}, "takes KEY (the value comes from --value-file)"},
		{[]string{"put", "k"}, "takes KEY and VALUE (or - to read the value from stdin, or --value-file FILE)"},
		{[]string{"put", "k", "--value-file", filepath.Join(dir, "missing")}, "no such file"},
		{[]string{"put", "k", "--value-file", big}, "larger than the 16777216-byte (16 MiB) limit"},
	} {
		_, errs, code := runStdin("", append([]string{"--data", dir}, c.args...)...)
		if code != ExitInvalidArgument || !strings.Contains(errs, c.want) {
			t.Errorf("%v: %d %q, want exit 4 and %q", c.args, code, errs, c.want)
		}
	}
	if _, err := os.Stat(dir); err == nil {
		t.Fatal("a refused put created the database")
	}
}

// TestScanKeysOnlyAndLimit: --keys-only prints keys only (JSON items
// without values) and --limit cuts the listing, in both modes.
func TestScanKeysOnlyAndLimit(t *testing.T) {
	for _, mode := range []struct {
		name string
		flag []string
	}{
		{"local", []string{"--data", filepath.Join(t.TempDir(), "db")}},
		{"server", []string{"--server", startServer(t)}},
	} {
		m := mode.flag
		for _, kv := range [][2]string{{"user:1", "Ada"}, {"user:2", "Grace"}, {"user:3", "tab\there"}, {"other", "x"}} {
			if _, errs, code := runStdin("", append(m, "put", kv[0], kv[1])...); code != 0 {
				t.Fatalf("%s: put: %q", mode.name, errs)
			}
		}
		if out, _, code := runStdin("", append(m, "scan", "user:", "--keys-only")...); code != 0 || out != "user:1\nuser:2\nuser:3\n" {
			t.Fatalf("%s: scan --keys-only: %d %q", mode.name, code, out)
		}
		var js jScan
		out, _, code := runStdin("", append(m, "--json", "scan", "user:", "--keys-only", "--limit", "2")...)
		decodeStrict(t, out, &js)
		if code != 0 || js.Count != 2 || !js.Truncated || len(js.Items) != 2 || str(js.Items[1].Key) != "user:2" ||
			js.Items[0].Value != nil || js.Items[0].ValueHex != nil {
			t.Fatalf("%s: scan --json --keys-only --limit 2: %d %q", mode.name, code, out)
		}
		out, errs, code := runStdin("", append(m, "scan", "", "--limit", "1")...)
		if code != 0 || out != "other\tx\n" || !strings.Contains(errs, "note: stopped after 1 key (--limit); more keys match") {
			t.Fatalf("%s: scan --limit 1: %d %q %q", mode.name, code, out, errs)
		}
	}
}

// TestReadCommandsChangeNothing: get, scan and stats open the database
// read-only (docs/cli.md): replaying a WAL that earlier commands left
// behind, they write, rename and delete nothing.
func TestReadCommandsChangeNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	for _, k := range []string{"a", "b", "c"} {
		mustOK(t, dir, "put", k, "v-"+k)
	}
	snapshot := func() map[string]string {
		out := map[string]string{}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			info, _ := e.Info()
			out[e.Name()] = fmt.Sprintf("%d %s %x", len(b), info.ModTime(), sha256.Sum256(b))
		}
		return out
	}
	before := snapshot()
	for _, args := range [][]string{{"get", "a"}, {"scan", ""}, {"stats"}, {"--json", "stats"}} {
		mustOK(t, dir, args...)
	}
	if after := snapshot(); !maps.Equal(before, after) {
		t.Fatalf("read commands changed the directory:\nbefore %v\nafter  %v", before, after)
	}
}
