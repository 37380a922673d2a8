package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/lsm/base"
)

type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// runEnv runs kayactl in-process with the given environment.
func runEnv(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, testInvocation(&out, &errb, func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}))
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// noServer is an address where nothing listens: the tests' stand-in for
// DefaultServer, so that a command without --server or --data never
// reaches a real server that happens to run on this machine.
var noServer = sync.OnceValue(func() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
})

// testInvocation is an invocation with an empty stdin and noServer as the
// default server.
func testInvocation(stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) invocation {
	return invocation{stdin: strings.NewReader(""), stdout: stdout, stderr: stderr, lookupEnv: lookupEnv, defaultServer: noServer()}
}

// kc runs kayactl with --data dir prepended.
func kc(t *testing.T, dir string, args ...string) result {
	t.Helper()
	return runEnv(t, nil, append([]string{"--data", dir}, args...)...)
}

// mustOK runs a command that must succeed.
func mustOK(t *testing.T, dir string, args ...string) result {
	t.Helper()
	r := kc(t, dir, args...)
	if r.code != ExitOK {
		t.Fatalf("kayactl %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// decodeStrict decodes one JSON document, refusing unknown fields, so that
// the field names of the output are pinned by the test's struct.
func decodeStrict(t *testing.T, s string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decoding %q: %v", s, err)
	}
	if dec.More() {
		t.Fatalf("more than one JSON document in %q", s)
	}
}

func decode(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decoding %q: %v", s, err)
	}
}

// Output shapes as documented in docs/cli.md.
type jPut struct {
	OK       bool   `json:"ok"`
	Sequence uint64 `json:"sequence"`
}

type jOK struct {
	OK bool `json:"ok"`
}

type jGet struct {
	Found    bool    `json:"found"`
	Key      *string `json:"key"`
	KeyHex   *string `json:"key_hex"`
	Value    *string `json:"value"`
	ValueHex *string `json:"value_hex"`
}

type jItem struct {
	Key      *string `json:"key"`
	KeyHex   *string `json:"key_hex"`
	Value    *string `json:"value"`
	ValueHex *string `json:"value_hex"`
}

type jScan struct {
	Items     []jItem `json:"items"`
	Count     int     `json:"count"`
	Truncated bool    `json:"truncated"`
}

func str(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

func TestKVRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")

	// put creates the database.
	r := mustOK(t, dir, "put", "user:1", "Ada")
	if r.stdout != "OK sequence=1\n" {
		t.Fatalf("put output %q", r.stdout)
	}
	var p jPut
	decodeStrict(t, mustOK(t, dir, "--json", "put", "user:2", "Grace").stdout, &p)
	if !p.OK || p.Sequence != 2 {
		t.Fatalf("put json %+v", p)
	}
	mustOK(t, dir, "--sync=false", "put", "user:3", "Barbara")
	mustOK(t, dir, "put", "other", "x")
	mustOK(t, dir, "put", "--hex", "ff01", "00ff")
	mustOK(t, dir, "put", "empty", "")

	gets := []struct {
		key, want string
	}{
		{"user:1", "Ada"},
		{"user:2", "Grace"},
		{"user:3", "Barbara"},
		{"empty", ""},
	}
	for _, g := range gets {
		r := mustOK(t, dir, "get", g.key)
		if r.stdout != g.want+"\n" {
			t.Errorf("get %s = %q, want %q", g.key, r.stdout, g.want+"\n")
		}
		var j jGet
		decodeStrict(t, mustOK(t, dir, "--json", "get", g.key).stdout, &j)
		if !j.Found || str(j.Key) != g.key || str(j.Value) != g.want || j.KeyHex != nil || j.ValueHex != nil {
			t.Errorf("get --json %s = %+v", g.key, j)
		}
	}
	// Raw bytes on stdout for a binary value; hex in JSON.
	r = mustOK(t, dir, "get", "--hex", "ff01")
	if r.stdout != "\x00\xff\n" {
		t.Fatalf("binary get %q", r.stdout)
	}
	var jb jGet
	decodeStrict(t, mustOK(t, dir, "--json", "get", "--hex", "0xff01").stdout, &jb)
	if !jb.Found || jb.Key != nil || str(jb.KeyHex) != "ff01" || jb.Value != nil || str(jb.ValueHex) != "00ff" {
		t.Fatalf("binary get json %+v", jb)
	}

	scans := []struct {
		name   string
		args   []string
		lines  []string
		more   bool
		hexKey bool
	}{
		{"prefix", []string{"scan", "user:"}, []string{"user:1\tAda", "user:2\tGrace", "user:3\tBarbara"}, false, false},
		{"all", []string{"scan", ""}, []string{"empty\t\"\"", "other\tx", "user:1\tAda", "user:2\tGrace", "user:3\tBarbara", "0xff01\t0x00ff"}, false, false},
		{"limit", []string{"scan", "user:", "--limit", "2"}, []string{"user:1\tAda", "user:2\tGrace"}, true, false},
		{"limit exact", []string{"scan", "user:", "--limit", "3"}, []string{"user:1\tAda", "user:2\tGrace", "user:3\tBarbara"}, false, false},
		{"no match", []string{"scan", "zzz"}, nil, false, false},
		{"hex prefix ff", []string{"scan", "--hex", "ff"}, []string{"0xff01\t0x00ff"}, false, true},
	}
	for _, s := range scans {
		t.Run("scan "+s.name, func(t *testing.T) {
			r := mustOK(t, dir, s.args...)
			got := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
			if r.stdout == "" {
				got = nil
			}
			if strings.Join(got, "|") != strings.Join(s.lines, "|") {
				t.Fatalf("scan lines %q, want %q", got, s.lines)
			}
			var j jScan
			decodeStrict(t, mustOK(t, dir, append([]string{"--json"}, s.args...)...).stdout, &j)
			if j.Count != len(s.lines) || len(j.Items) != len(s.lines) || j.Truncated != s.more {
				t.Fatalf("scan json %+v", j)
			}
			if j.Items == nil {
				t.Fatal("items must be an array, not null")
			}
			for i, it := range j.Items {
				k, v, _ := strings.Cut(s.lines[i], "\t")
				if s.hexKey || strings.HasPrefix(k, "0x") {
					if str(it.KeyHex) != strings.TrimPrefix(k, "0x") || str(it.ValueHex) != strings.TrimPrefix(v, "0x") {
						t.Fatalf("item %d: %+v", i, it)
					}
					continue
				}
				if str(it.Key) != k {
					t.Fatalf("item %d key %q, want %q", i, str(it.Key), k)
				}
			}
		})
	}

	// delete, then get is not found.
	r = mustOK(t, dir, "delete", "user:2")
	if r.stdout != "OK\n" {
		t.Fatalf("delete output %q", r.stdout)
	}
	var d jOK
	decodeStrict(t, mustOK(t, dir, "--json", "delete", "user:3").stdout, &d)
	if !d.OK {
		t.Fatal("delete json not ok")
	}
	if r := kc(t, dir, "get", "user:2"); r.code != ExitNotFound {
		t.Fatalf("get deleted: %s", r)
	}
	// Deleting a missing key is fine.
	mustOK(t, dir, "delete", "never-there")
	r = mustOK(t, dir, "scan", "user:")
	if r.stdout != "user:1\tAda\n" {
		t.Fatalf("scan after delete %q", r.stdout)
	}
}

func TestGetMissing(t *testing.T) {
	dir := t.TempDir()
	mustOK(t, dir, "put", "a", "1")

	r := kc(t, dir, "get", "nope")
	if r.code != ExitNotFound || r.stdout != "" || !strings.Contains(r.stderr, `error: key "nope" not found`) {
		t.Fatalf("get missing: %s", r)
	}
	r = kc(t, dir, "--json", "get", "nope")
	if r.code != ExitNotFound {
		t.Fatalf("get --json missing: %s", r)
	}
	var j jGet
	decodeStrict(t, r.stdout, &j)
	if j.Found || str(j.Key) != "nope" || j.Value != nil {
		t.Fatalf("get --json missing: %+v", j)
	}
}

func TestInvalidArguments(t *testing.T) {
	dir := t.TempDir()
	mustOK(t, dir, "put", "a", "1")
	big := strings.Repeat("k", engine.MaxKeySize+1)
	cases := []struct {
		name string
		args []string
		hint string
	}{
		{"oversized key put", []string{"put", big, "v"}, ""},
		{"oversized key get", []string{"get", big}, ""},
		{"oversized key delete", []string{"delete", big}, ""},
		{"unknown command", []string{"frobnicate"}, "kayactl --help"},
		{"misspelt command", []string{"gte", "a"}, `did you mean "get"`},
		{"no command", []string{}, "kayactl --help"},
		{"unknown flag", []string{"get", "--bogus", "a"}, "kayactl get --help"},
		{"unknown global flag", []string{"--bogus", "get", "a"}, "--help"},
		{"too few args", []string{"put", "a"}, "kayactl put --help"},
		{"too many args", []string{"get", "a", "b"}, "kayactl get --help"},
		{"bad limit", []string{"scan", "", "--limit", "x"}, "kayactl scan --help"},
		{"negative limit", []string{"scan", "", "--limit", "-1"}, "kayactl scan --help"},
		{"bad hex", []string{"get", "--hex", "zz"}, "kayactl get --help"},
		{"bad bool", []string{"--sync=maybe", "put", "a", "b"}, "--help"},
		{"empty data dir", []string{"--data", "", "get", "a"}, "--help"},
		{"compact start after end", []string{"compact", "--start", "z", "--end", "a"}, ""},
		{"inspect without type", []string{"inspect"}, "kayactl inspect --help"},
		{"inspect unknown type", []string{"inspect", "blob", "x"}, "kayactl inspect --help"},
		{"inspect wal without path", []string{"inspect", "wal"}, "kayactl inspect wal --help"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := kc(t, dir, c.args...)
			if r.code != ExitInvalidArgument {
				t.Fatalf("want exit 4: %s", r)
			}
			if !strings.HasPrefix(r.stderr, "error: ") {
				t.Fatalf("stderr must start with error: %s", r)
			}
			if c.hint != "" && (!strings.Contains(r.stderr, "\nhint: ") || !strings.Contains(r.stderr, c.hint)) {
				t.Fatalf("want hint %q: %s", c.hint, r)
			}
		})
	}
	// Nothing above changed the data.
	if r := mustOK(t, dir, "scan", ""); r.stdout != "a\t1\n" {
		t.Fatalf("scan %q", r.stdout)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"put", "--help"}, {"inspect", "wal", "--help"}} {
		r := runEnv(t, nil, args...)
		if r.code != ExitOK || !strings.Contains(r.stdout, "Usage:") {
			t.Fatalf("%v: %s", args, r)
		}
	}
}

func TestLockedDirectory(t *testing.T) {
	dir := t.TempDir()
	mustOK(t, dir, "put", "a", "1")
	db, err := engine.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, args := range [][]string{
		{"get", "a"}, {"put", "b", "2"}, {"delete", "a"}, {"scan", ""}, {"stats"}, {"flush"},
		{"compact"}, {"checkpoint", filepath.Join(t.TempDir(), "cp")}, {"recover"}, {"recover", "--dry-run"},
	} {
		r := kc(t, dir, args...)
		if r.code != ExitLocked {
			t.Fatalf("%v: want exit 6: %s", args, r)
		}
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "error: ") ||
			lines[1] != fmt.Sprintf("hint: another kayactl or kayadb-server is using %s; stop it or pass --data to a copy", dir) {
			t.Fatalf("%v: stderr %q", args, r.stderr)
		}
	}
	// inspect does not take the lock.
	r := kc(t, dir, "inspect", "manifest", dir)
	if r.code != ExitOK {
		t.Fatalf("inspect on a locked directory: %s", r)
	}
}

// listDir returns name -> content of every file under dir ("<dir>" for
// directories).
func listDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			out[rel] = "<dir>"
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[rel] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameDir(t *testing.T, before, after map[string]string) {
	t.Helper()
	var diffs []string
	for k, v := range before {
		if w, ok := after[k]; !ok {
			diffs = append(diffs, "removed "+k)
		} else if w != v {
			diffs = append(diffs, "changed "+k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			diffs = append(diffs, "added "+k)
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		t.Fatalf("directory changed: %v", diffs)
	}
}

func TestReadCommandsOnEmptyDir(t *testing.T) {
	parent := t.TempDir()
	empty := filepath.Join(parent, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(parent, "missing")
	for _, dir := range []string{empty, missing} {
		for _, args := range [][]string{
			{"get", "a"}, {"--json", "get", "a"}, {"scan", ""}, {"stats"}, {"flush"}, {"compact"},
			{"checkpoint", filepath.Join(parent, "cp")}, {"recover"}, {"recover", "--dry-run"},
		} {
			r := kc(t, dir, args...)
			if r.code != ExitNotFound {
				t.Fatalf("%s %v: want exit 2: %s", dir, args, r)
			}
			if !strings.Contains(r.stderr, "hint: no database in "+dir) {
				t.Fatalf("%s %v: no hint: %s", dir, args, r)
			}
		}
	}
	if got := listDir(t, parent); len(got) != 2 || got["empty"] != "<dir>" {
		t.Fatalf("read commands created files: %v", got)
	}
}

func TestVerbose(t *testing.T) {
	dir := t.TempDir()
	r := mustOK(t, dir, "-v", "put", "a", "1")
	if r.stdout != "OK sequence=1\n" || !strings.Contains(r.stderr, "opened database") {
		t.Fatalf("verbose: %s", r)
	}
	if r := mustOK(t, dir, "get", "a"); r.stderr != "" {
		t.Fatalf("quiet by default: %s", r)
	}
}

func TestDataDirFromEnv(t *testing.T) {
	envDir := t.TempDir()
	flagDir := t.TempDir()
	env := map[string]string{EnvData: envDir}
	if r := runEnv(t, env, "put", "k", "env"); r.code != 0 {
		t.Fatal(r)
	}
	if r := runEnv(t, env, "--data", flagDir, "put", "k", "flag"); r.code != 0 {
		t.Fatal(r)
	}
	if r := runEnv(t, env, "get", "k"); r.stdout != "env\n" {
		t.Fatalf("env dir: %s", r)
	}
	if r := runEnv(t, env, "get", "k", "--data", flagDir); r.stdout != "flag\n" {
		t.Fatalf("flag must win over env: %s", r)
	}
	if r := kc(t, envDir, "get", "k"); r.stdout != "env\n" {
		t.Fatal(r)
	}
}

type jLevel struct {
	Level     int    `json:"level"`
	Tables    int    `json:"tables"`
	SizeBytes uint64 `json:"size_bytes"`
}

func TestStatsJSON(t *testing.T) {
	dir := t.TempDir()
	mustOK(t, dir, "put", "a", "1")
	mustOK(t, dir, "put", "b", "2")
	r := mustOK(t, dir, "--json", "stats")
	var s struct {
		Metrics  *engine.Metrics        `json:"metrics"`
		Recovery *engine.RecoveryReport `json:"recovery"`
	}
	decodeStrict(t, r.stdout, &s)
	if s.Metrics == nil || s.Recovery == nil {
		t.Fatalf("stats json lacks metrics or recovery: %s", r.stdout)
	}
	if s.Metrics.VisibleSeq != 2 || s.Recovery.LastSeq != 2 || s.Recovery.Manifest == "" {
		t.Fatalf("stats: visible %d, recovery %+v", s.Metrics.VisibleSeq, s.Recovery)
	}
	// Field names are snake_case and stable.
	var raw map[string]map[string]json.RawMessage
	decode(t, r.stdout, &raw)
	for _, k := range []string{"levels", "memtable", "wal", "visible_seq"} {
		if _, ok := raw["metrics"][k]; !ok {
			t.Errorf("metrics lack %q", k)
		}
	}
	for _, k := range []string{"manifest", "wals", "wal_records_replayed", "last_sequence", "warnings", "tmp_files_removed"} {
		if _, ok := raw["recovery"][k]; !ok {
			t.Errorf("recovery lacks %q", k)
		}
	}
	h := mustOK(t, dir, "stats")
	for _, want := range []string{"level  files", "visible sequence: 2", "recovery at open:", "manifest: MANIFEST-"} {
		if !strings.Contains(h.stdout, want) {
			t.Errorf("stats output lacks %q:\n%s", want, h.stdout)
		}
	}
}

func TestFlushCompactCheckpoint(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 20; i++ {
		mustOK(t, dir, "--sync=false", "put", fmt.Sprintf("k%02d", i), fmt.Sprintf("v%d", i))
	}
	mustOK(t, dir, "delete", "k05")

	r := mustOK(t, dir, "flush")
	if !strings.HasPrefix(r.stdout, "OK flushed; L0 tables: ") {
		t.Fatalf("flush: %q", r.stdout)
	}
	var f struct {
		OK       bool     `json:"ok"`
		L0Tables int      `json:"l0_tables"`
		Levels   []jLevel `json:"levels"`
	}
	decodeStrict(t, mustOK(t, dir, "--json", "flush").stdout, &f)
	if !f.OK || len(f.Levels) != 7 {
		t.Fatalf("flush json %+v", f)
	}

	r = mustOK(t, dir, "compact", "--start", "k00", "--end", "k10")
	if !strings.HasPrefix(r.stdout, "OK\n") || !strings.Contains(r.stdout, "L6") {
		t.Fatalf("compact: %q", r.stdout)
	}
	var c struct {
		OK     bool     `json:"ok"`
		Levels []jLevel `json:"levels"`
	}
	decodeStrict(t, mustOK(t, dir, "--json", "compact").stdout, &c)
	total := 0
	for _, l := range c.Levels {
		total += l.Tables
		if l.Level < 6 && l.Tables != 0 {
			t.Errorf("after a full compaction L%d has %d tables", l.Level, l.Tables)
		}
	}
	if !c.OK || len(c.Levels) != 7 || total == 0 {
		t.Fatalf("compact json %+v", c)
	}

	cp := filepath.Join(t.TempDir(), "cp")
	r = mustOK(t, dir, "checkpoint", cp)
	if r.stdout != "OK checkpoint written to "+cp+"\n" {
		t.Fatalf("checkpoint: %q", r.stdout)
	}
	cp2 := filepath.Join(t.TempDir(), "cp2")
	var j struct {
		OK   bool   `json:"ok"`
		Path string `json:"path"`
	}
	decodeStrict(t, mustOK(t, dir, "--json", "checkpoint", cp2).stdout, &j)
	if !j.OK || j.Path != cp2 {
		t.Fatalf("checkpoint json %+v", j)
	}
	// An existing destination is refused.
	if r := kc(t, dir, "checkpoint", cp); r.code != ExitInvalidArgument {
		t.Fatalf("checkpoint to an existing dir: %s", r)
	}

	// Writes after the checkpoint do not reach it.
	mustOK(t, dir, "put", "after", "x")
	for _, p := range []string{cp, cp2} {
		db, err := engine.Open(p, &engine.Options{ErrorIfNotExists: true})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 20; i++ {
			v, err := db.Get([]byte(fmt.Sprintf("k%02d", i)))
			if i == 5 {
				if err == nil {
					t.Errorf("deleted key in checkpoint: %q", v)
				}
				continue
			}
			if err != nil || string(v) != fmt.Sprintf("v%d", i) {
				t.Errorf("checkpoint k%02d = %q, %v", i, v, err)
			}
		}
		if _, err := db.Get([]byte("after")); err == nil {
			t.Error("checkpoint has a later write")
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// The checkpoint is usable with kayactl too.
	if r := kc(t, cp, "get", "k07"); r.stdout != "v7\n" {
		t.Fatal(r)
	}
}

// newestFile returns the path of the file of type ft with the largest
// number in dir.
func newestFile(t testing.TB, dir string, ft base.FileType) string {
	t.Helper()
	names, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	best, bestNum := "", base.FileNum(0)
	for _, e := range names {
		typ, n, ok := base.ParseFilename(e.Name())
		if ok && typ == ft && (best == "" || n > bestNum) {
			best, bestNum = e.Name(), n
		}
	}
	if best == "" {
		t.Fatalf("no file of type %d in %s", ft, dir)
	}
	return filepath.Join(dir, best)
}

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestRecoverDryRunTornTail(t *testing.T) {
	dir := t.TempDir()
	db, err := engine.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if err := db.Set([]byte(fmt.Sprintf("k%d", i)), []byte("v"), engine.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	wal := newestFile(t, dir, base.FileTypeLog)
	garbage := bytes.Repeat([]byte{0xab, 0xcd, 0x01}, 40)
	appendBytes(t, wal, garbage)

	before := listDir(t, dir)
	r := mustOK(t, dir, "--json", "recover", "--dry-run")
	var rep engine.RecoveryReport
	decodeStrict(t, r.stdout, &rep)
	h := mustOK(t, dir, "recover", "--dry-run")
	sameDir(t, before, listDir(t, dir))

	if !rep.DryRun || rep.RecordsReplayed != 10 || rep.LastSeq != 10 || rep.WALTruncatedBytes != int64(len(garbage)) {
		t.Fatalf("report %+v", rep)
	}
	var torn *engine.TailReport
	for _, w := range rep.WALs {
		if w.File == filepath.Base(wal) {
			torn = w.Torn
		}
	}
	if torn == nil || torn.DroppedBytes != int64(len(garbage)) || len(rep.Warnings) == 0 {
		t.Fatalf("torn tail not reported: %+v", rep)
	}
	for _, want := range []string{"dry run", filepath.Base(wal), "torn tail at offset", "would be dropped", "warnings:"} {
		if !strings.Contains(h.stdout, want) {
			t.Errorf("human report lacks %q:\n%s", want, h.stdout)
		}
	}

	// inspect shows the torn tail too (exit 3, end torn_tail).
	r = kc(t, dir, "--json", "inspect", "wal", wal)
	if r.code != ExitCorruption {
		t.Fatalf("inspect torn wal: %s", r)
	}
	var w jWAL
	decodeStrict(t, r.stdout, &w)
	if w.End != "torn_tail" || w.RecordCount != 10 || w.TornTail == nil || w.TornTail.DroppedBytes != int64(len(garbage)) {
		t.Fatalf("inspect torn wal: %+v", w)
	}

	// A real recovery drops the tail and keeps the data.
	r = mustOK(t, dir, "--json", "recover")
	var rep2 engine.RecoveryReport
	decodeStrict(t, r.stdout, &rep2)
	if rep2.DryRun || rep2.WALTruncatedBytes != int64(len(garbage)) || rep2.RecordsReplayed != 10 {
		t.Fatalf("recover report %+v", rep2)
	}
	if r := mustOK(t, dir, "scan", ""); strings.Count(r.stdout, "\n") != 10 {
		t.Fatalf("scan after recovery: %s", r)
	}
	// Now the directory is clean.
	r = mustOK(t, dir, "--json", "recover", "--dry-run")
	var rep3 engine.RecoveryReport
	decodeStrict(t, r.stdout, &rep3)
	if rep3.WALTruncatedBytes != 0 || len(rep3.Warnings) != 0 {
		t.Fatalf("second dry run %+v", rep3)
	}
}

func TestRecoveryWarningsOnOtherCommands(t *testing.T) {
	dir := t.TempDir()
	mustOK(t, dir, "put", "a", "1")
	appendBytes(t, newestFile(t, dir, base.FileTypeLog), bytes.Repeat([]byte{0x5a}, 50))
	r := mustOK(t, dir, "get", "a")
	if r.stdout != "1\n" || !strings.Contains(r.stderr, "warning: recovery: WAL") {
		t.Fatalf("get after a torn tail: %s", r)
	}
}

func TestCorruptDatabase(t *testing.T) {
	dir := t.TempDir()
	mustOK(t, dir, "put", "a", "1")
	mustOK(t, dir, "flush")
	// Damage the only table in place (same size, so the MANIFEST check
	// passes and the damage is found when reading).
	sst := newestFile(t, dir, base.FileTypeTable)
	b, err := os.ReadFile(sst)
	if err != nil {
		t.Fatal(err)
	}
	b[2] ^= 0xff
	if err := os.WriteFile(sst, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r := kc(t, dir, "get", "a")
	if r.code != ExitCorruption || !strings.Contains(r.stderr, "hint: run `kayactl recover --dry-run --data "+dir+"`") {
		t.Fatalf("get on a damaged table: %s", r)
	}
	// A missing table fails at open.
	if err := os.Remove(sst); err != nil {
		t.Fatal(err)
	}
	r = kc(t, dir, "recover", "--dry-run")
	if r.code != ExitCorruption {
		t.Fatalf("dry run with a missing table: %s", r)
	}
}

func TestPrefixUpperBound(t *testing.T) {
	cases := []struct{ in, want []byte }{
		{nil, nil},
		{[]byte{}, nil},
		{[]byte("a"), []byte("b")},
		{[]byte("abc"), []byte("abd")},
		{[]byte{0x00}, []byte{0x01}},
		{[]byte{'a', 0xff}, []byte("b")},
		{[]byte{'a', 0xfe, 0xff, 0xff}, []byte{'a', 0xff}},
		{[]byte{0xff}, nil},
		{[]byte{0xff, 0xff, 0xff}, nil},
	}
	for _, c := range cases {
		in := append([]byte(nil), c.in...)
		got := prefixUpperBound(in)
		if !bytes.Equal(got, c.want) || (got == nil) != (c.want == nil) {
			t.Errorf("prefixUpperBound(%x) = %x, want %x", c.in, got, c.want)
		}
		if !bytes.Equal(in, c.in) {
			t.Errorf("prefixUpperBound modified its input %x", c.in)
		}
	}
}

func TestScanPrefixEdges(t *testing.T) {
	dir := t.TempDir()
	keys := []string{"61", "61ff", "61ff00", "61ffff", "62", "ff", "ff00", "ffff", "ffffff"}
	for _, k := range keys {
		mustOK(t, dir, "--sync=false", "put", "--hex", k, "00")
	}
	cases := []struct {
		prefix string
		want   []string
	}{
		{"61ff", []string{"61ff", "61ff00", "61ffff"}},
		{"61", []string{"61", "61ff", "61ff00", "61ffff"}},
		{"ff", []string{"ff", "ff00", "ffff", "ffffff"}},
		{"ffff", []string{"ffff", "ffffff"}},
		{"", keys},
	}
	for _, c := range cases {
		var j jScan
		decodeStrict(t, mustOK(t, dir, "--json", "scan", "--hex", c.prefix).stdout, &j)
		var got []string
		for _, it := range j.Items {
			if it.KeyHex != nil {
				got = append(got, *it.KeyHex)
			} else {
				got = append(got, fmt.Sprintf("%x", *it.Key))
			}
		}
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("scan %q = %v, want %v", c.prefix, got, c.want)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	cases := []struct{ in, want string }{
		{"abc", "abc"},
		{"with space", "with space"},
		{"", `""`},
		{"tab\there", `"tab\there"`},
		{"héllo", `"héllo"`},
		{"\x00\x01", `"\x00\x01"`},
		{"\xff\x00", "0xff00"},
		{`"quoted"`, `"\"quoted\""`},
		{"0x41", `"0x41"`},
	}
	for _, c := range cases {
		if got := formatBytes([]byte(c.in)); got != c.want {
			t.Errorf("formatBytes(%q) = %s, want %s", c.in, got, c.want)
		}
	}
}
