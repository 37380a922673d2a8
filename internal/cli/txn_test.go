package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/internal/wire"
	"github.com/kayadb/kayadb/internal/wire/wiretest"
)

// modelNode is a fake server whose data opcodes are served by the
// in-memory model of wiretest.
func modelNode(t *testing.T) (*fakeNode, *wiretest.Model) {
	t.Helper()
	n, m := newFakeNode(t), wiretest.New()
	n.setHandle(m.Handle)
	return n, m
}

// runCLIStdin runs kayactl with stdin.
func runCLIStdin(stdin string, args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	inv := testInvocation(&out, &errb, func(string) (string, bool) { return "", false })
	inv.stdin = strings.NewReader(stdin)
	code := run(args, inv)
	return out.String(), errb.String(), code
}

func TestParseTxn(t *testing.T) {
	// etcdctl's own example, and KayaDB's additions.
	spec, err := parseTxn(strings.NewReader(`mod("key1") > "0"
value("key 2") = "x y"
exists("k3")
!exists("k4")
create("k5") = "0"
c("k6") > "0"
version("k7") = 0
ver("k8") != "0"
m("k9") <= 12
val("k10") >= 'v'
# a comment
value("\x00\xff") != "\n"

put key1 "overwrote-key1"
del k2
get 'a b'

put key1 "created-key1"
put key2 "some extra key"
delete key3
`))
	if err != nil {
		t.Fatal(err)
	}
	var cmps []string
	for _, c := range spec.cmps {
		cmps = append(cmps, c.String())
	}
	want := []string{`mod("key1") > 0`, `value("key 2") = "x y"`, `exists("k3")`, `!exists("k4")`, `!exists("k5")`,
		`exists("k6")`, `!exists("k7")`, `exists("k8")`, `mod("k9") <= 12`, `value("k10") >= "v"`, `value("\x00\xff") != "\n"`}
	if strings.Join(cmps, "|") != strings.Join(want, "|") {
		t.Fatalf("compares:\n got  %q\n want %q", cmps, want)
	}
	if len(spec.then) != 3 || len(spec.els) != 3 {
		t.Fatalf("%d success ops, %d failure ops", len(spec.then), len(spec.els))
	}
	// No compares, no failure ops; the end of the input ends a section.
	spec, err = parseTxn(strings.NewReader("\nput a b"))
	if err != nil || len(spec.cmps) != 0 || len(spec.then) != 1 || len(spec.els) != 0 {
		t.Fatalf("short form: %+v %v", spec, err)
	}
	for _, c := range []struct{ in, want string }{
		{`mod("k") < "x"`, "not a revision"},
		{`mod("k") < -1`, "not a revision"},
		{`create("k") = "5"`, "KayaDB keeps no create revisions"},
		{`version("k") > "1"`, "KayaDB keeps no version counts"},
		{`lease("k") = "1"`, "no leases"},
		{`size("k") = "1"`, "unknown target"},
		{`value(k) = "v"`, "double-quoted"},
		{`value("k" = "v"`, "missing )"},
		{`value("k") ~ "v"`, "unknown relation"},
		{`value("k") = "v" "w"`, "one value"},
		{`value("k") = "v`, "unterminated"},
		{`value("k")`, "unknown relation"},
		{`exists("k") = "1"`, "takes no relation"},
		{`!value("k") = "v"`, "only exists"},
		{`just words`, "malformed comparison"},
		{"\nput k", "put takes KEY and VALUE"},
		{"\nget a b", "get takes one KEY"},
		{"\ndel", "del takes one KEY"},
		{"\nget --prefix a", "flags"},
		{"\nwatch k", "unknown op"},
		{"\nput k 'v", "unterminated single-quoted"},
		{"\nput k \"v\"x", "followed by a space"},
		{"\n\nget a\n\nget b", "text after the failure ops"},
	} {
		_, err := parseTxn(strings.NewReader(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error mentioning %q", c.in, err, c.want)
		}
	}
	if _, err := parseTxn(strings.NewReader("\n" + strings.Repeat("get k\n", wire.MaxCondOps+1))); err == nil || !strings.Contains(err.Error(), "at most 128") {
		t.Errorf("too many ops: %v", err)
	}
	if _, err := parseTxn(strings.NewReader(strings.Repeat(`exists("k")`+"\n", wire.MaxCondCompares+1))); err == nil || !strings.Contains(err.Error(), "at most 128") {
		t.Errorf("too many compares: %v", err)
	}
}

func TestTxnCommand(t *testing.T) {
	node, m := modelNode(t)
	s := "--server=" + node.addr
	m.Put([]byte("key1"), []byte("v1"))
	input := `mod("key1") > "0"

put key1 "overwrote key1"
get key1
del key2
get key2

put key1 "created key1"
`
	out, errs, code := runCLIStdin(input, s, "txn")
	if code != 0 || out != "SUCCESS\n\nOK\n\nkey1\noverwrote key1\n\n0\n\n" {
		t.Fatalf("txn: %d %q %q", code, out, errs)
	}
	// The same from a file, with --json: the compare now fails (mod > the
	// current revision), so the failure ops run.
	file := filepath.Join(t.TempDir(), "txn")
	os.WriteFile(file, []byte(`mod("key1") > "99"

put x y

get key1
del key1
`), 0o600)
	out, errs, code = runCLI(s, "txn", "--file", file, "--json")
	var res txnResult
	decodeStrict(t, out, &res)
	if code != 0 || res.Succeeded || res.Revision != 3 || len(res.Results) != 2 ||
		res.Results[0].Op != "get" || !*res.Results[0].Found || *res.Results[0].Value != "overwrote key1" || res.Results[0].ModRevision != 2 ||
		res.Results[1].Op != "delete" || !*res.Results[1].Deleted || *res.Results[1].Key != "key1" {
		t.Fatalf("txn --json: %d %s %q", code, out, errs)
	}
	out, _, code = runCLIStdin("\nget key1\n", s, "txn")
	if code != 0 || out != "SUCCESS\n\n" {
		t.Fatalf("get of a missing key: %d %q", code, out)
	}
	out, _, code = runCLIStdin(`!exists("key1")`+"\n\n\nput key1 again\n", s, "txn")
	if code != 0 || out != "SUCCESS\n" {
		t.Fatalf("no success ops: %d %q", code, out)
	}
	if st, _ := m.Handle(wire.OpGet, wire.AppendKey(nil, []byte("key1"))); st != wire.StatusNotFound {
		t.Fatal("the failure op ran")
	}
	// Bad input: exit 4, naming the line; nothing sent.
	before := node.count()
	_, errs, code = runCLIStdin("value(\"k\") = \"v\"\n\nput k\n", s, "txn")
	if code != ExitInvalidArgument || !strings.Contains(errs, "line 3 (success op)") || !strings.Contains(errs, "put takes KEY and VALUE") {
		t.Fatalf("bad input: %d %q", code, errs)
	}
	if _, errs, code = runCLI(s, "txn", "--file", filepath.Join(t.TempDir(), "nope")); code != ExitInvalidArgument || !strings.Contains(errs, "no such file") {
		t.Fatalf("missing file: %d %q", code, errs)
	}
	if node.count() != before {
		t.Fatal("a bad transaction was sent")
	}
	if _, errs, code = runCLI("--data", t.TempDir(), "txn"); code != ExitInvalidArgument || !strings.Contains(errs, "needs --server") {
		t.Fatalf("local mode: %d %q", code, errs)
	}
	// A server without conditional writes.
	node.setHandle(func(op wire.Opcode, p []byte) (wire.Status, []byte) {
		return wire.StatusError, wire.AppendError(nil, "unknown opcode: 68")
	})
	if _, errs, code = runCLIStdin("\nget k\n", s, "txn"); code != ExitError || !strings.Contains(errs, "upgrade kayadb-server") {
		t.Fatalf("old server: %d %q", code, errs)
	}
}

func TestCasCommand(t *testing.T) {
	node, m := modelNode(t)
	s := "--server=" + node.addr
	m.Put([]byte("k"), []byte("old"))
	if out, errs, code := runCLI(s, "cas", "k", "old", "new"); code != 0 || out != "OK revision=2\n" {
		t.Fatalf("cas: %d %q %q", code, out, errs)
	}
	out, errs, code := runCLI(s, "cas", "k", "old", "newer")
	if code != ExitCompareFailed || out != "" || !strings.Contains(errs, `not swapped: the value of "k" is "new", not "old" (mod revision 2)`) {
		t.Fatalf("cas mismatch: %d %q %q", code, out, errs)
	}
	out, errs, code = runCLI(s, "--json", "cas", "k", "old", "newer")
	var res casResult
	decodeStrict(t, out, &res)
	if code != ExitCompareFailed || errs != "" || res.Swapped || res.Revision != 2 || !*res.Exists || *res.Value != "new" {
		t.Fatalf("cas --json mismatch: %d %s %q", code, out, errs)
	}
	if out, _, code = runCLI(s, "--json", "cas", "--hex", "6b", "6e6577", "ff"); code != 0 || strings.TrimSpace(out) != `{"swapped":true,"revision":3}` {
		t.Fatalf("cas --hex --json: %d %s", code, out)
	}
	if st, reply := m.Handle(wire.OpGet, wire.AppendKey(nil, []byte("k"))); st != wire.StatusOK || !bytes.Equal(reply[4:], []byte{0xff}) {
		t.Fatalf("k = % x", reply)
	}
	if _, errs, code = runCLI(s, "cas", "absent", "", "x"); code != ExitCompareFailed || !strings.Contains(errs, `"absent" does not exist`) {
		t.Fatalf("cas of a missing key: %d %q", code, errs)
	}
	if _, _, code = runCLI(s, "cas", "k", "v"); code != ExitInvalidArgument {
		t.Fatalf("two arguments: %d", code)
	}
}

func TestReadAtRevisionCommands(t *testing.T) {
	node, m := modelNode(t)
	s := "--server=" + node.addr
	r1 := m.Put([]byte("user:1"), []byte("ada"))
	m.Put([]byte("user:1"), []byte("grace"))
	for i := range 5 {
		m.Put([]byte("user:"+string(rune('2'+i))), []byte("x"))
	}
	if out, errs, code := runCLI(s, "get", "user:1", "--at-revision", "1"); code != 0 || out != "ada\n" {
		t.Fatalf("get --at-revision: %d %q %q", code, out, errs)
	}
	out, _, code := runCLI(s, "--json", "get", "user:1", "--at-revision", "0")
	if code != 0 || strings.TrimSpace(out) != `{"found":true,"key":"user:1","value":"grace","mod_revision":2}` {
		t.Fatalf("get --at-revision 0 --json: %d %s", code, out)
	}
	if _, _, code := runCLI(s, "get", "user:2", "--at-revision", "2"); code != ExitNotFound {
		t.Fatalf("not yet written: %d", code)
	}
	// Pages of 2 at one revision, whatever is written meanwhile; --limit.
	m.SetScanCap(2)
	out, errs, code := runCLI(s, "scan", "user:", "--at-revision", "3")
	if code != 0 || out != "user:1\tgrace\nuser:2\tx\n" {
		t.Fatalf("scan --at-revision 3: %d %q %q", code, out, errs)
	}
	out, _, code = runCLI(s, "--json", "scan", "user:", "--at-revision", "0", "--limit", "5", "--keys-only")
	var res scanResult
	decodeStrict(t, out, &res)
	if code != 0 || res.Count != 5 || !res.Truncated || *res.Revision != 7 || *res.Items[4].ModRevision != 6 || res.Items[0].Value != nil {
		t.Fatalf("scan --json: %d %s", code, out)
	}
	out, _, _ = runCLI(s, "scan", "user:", "--at-revision", "0")
	if strings.Count(out, "\n") != 6 {
		t.Fatalf("all pages: %q", out)
	}
	// Compacted history: exit 4 with the oldest readable revision.
	m.Compact(5)
	_, errs, code = runCLI(s, "get", "user:1", "--at-revision", fmtUint(r1))
	if code != ExitInvalidArgument || !strings.Contains(errs, "revision 1 is compacted") || !strings.Contains(errs, "hint: read at revision 5 or newer") {
		t.Fatalf("compacted: %d %q", code, errs)
	}
	if _, errs, code = runCLI(s, "get", "user:1", "--at-revision", "99"); code != ExitInvalidArgument || !strings.Contains(errs, "in the future") {
		t.Fatalf("future: %d %q", code, errs)
	}
	// Local mode keeps no history.
	dir := t.TempDir()
	mustOK(t, dir, "put", "k", "v")
	for _, cmd := range [][]string{{"get", "k"}, {"scan", ""}} {
		r := kc(t, dir, append(cmd, "--at-revision", "1")...)
		if r.code != ExitInvalidArgument || !strings.Contains(r.stderr, "--at-revision needs server mode") {
			t.Fatalf("local %v: %s", cmd, r)
		}
	}
}

func fmtUint(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestBenchTxn: bench txn against the model: every transaction commits
// (conflicts are retried), and the figures add up.
func TestBenchTxn(t *testing.T) {
	node, m := modelNode(t)
	s := "--server=" + node.addr
	out, errs, code := runCLI(s, "--json", "bench", "txn", "--total", "60", "--clients", "4", "--hot-keys", "0.5",
		"--hot-set", "3", "--key-space", "50", "--max-attempts", "1000")
	var res benchResult
	decodeStrict(t, out, &res)
	tx := res.Txn
	if code != 0 || tx == nil || tx.Committed != 60 || res.Errors != 0 || tx.Attempts < 60 || tx.Conflicts != tx.Attempts-tx.Committed ||
		tx.ConflictRate != float64(tx.Conflicts)/float64(tx.Attempts) || tx.KeySpace != 50 || tx.HotSet != 3 || tx.HotKeys != 0.5 || res.PerSecond <= 0 {
		t.Fatalf("bench txn: %d %q\n%s", code, errs, out)
	}
	if m.OpenTxns() != 0 {
		t.Fatalf("%d transactions left open", m.OpenTxns())
	}
	// 60 transactions of 2 writes each, one revision per commit.
	if m.Revision() != 60 {
		t.Fatalf("revision %d after 60 commits", m.Revision())
	}
	out, _, code = runCLI(s, "bench", "txn", "--total", "10", "--key-space", "20")
	if code != 0 || !strings.Contains(out, "Summary (txn, 1 clients") || !strings.Contains(out, "Transactions (interactive):\t10 committed, 10 attempts, 0 conflicts (conflict rate 0.00%)") {
		t.Fatalf("human: %d\n%s", code, out)
	}
	// Optimistic transactions: the same counts, no server-side transaction.
	rev := m.Revision()
	out, errs, code = runCLI(s, "--json", "bench", "txn", "--txn-mode", "stm", "--clients", "4", "--total", "40", "--hot-keys", "0.5",
		"--hot-set", "3", "--key-space", "50", "--max-attempts", "1000")
	res = benchResult{}
	decodeStrict(t, out, &res)
	tx = res.Txn
	if code != 0 || tx == nil || tx.Mode != "stm" || tx.Committed != 40 || res.Errors != 0 || tx.Conflicts != tx.Attempts-tx.Committed || m.OpenTxns() != 0 {
		t.Fatalf("bench txn --txn-mode stm: %d %q\n%s", code, errs, out)
	}
	if m.Revision() != rev+40 {
		t.Fatalf("revision %d after 40 more commits from %d", m.Revision(), rev)
	}
	for _, bad := range [][]string{
		{"txn", "--hot-keys", "1.5"}, {"txn", "--hot-keys", "0.1", "--hot-set", "1"}, {"txn", "--key-space", "1"},
		{"txn", "--max-attempts", "0"}, {"put", "--hot-keys", "0.1"}, {"txn", "--txn-mode", "pessimistic"}, {"get", "--txn-mode", "stm"}, {"range"}, {"scan", "--key-size", "2"},
	} {
		if _, errs, code := runCLI(append([]string{s, "bench"}, bad...)...); code != ExitInvalidArgument {
			t.Errorf("bench %v: %d %q", bad, code, errs)
		}
	}
}

// FuzzParseTxn: no input makes the txn parser panic, and every compare it
// accepts renders (Cmp.String) to a line that parses to the same compare.
func FuzzParseTxn(f *testing.F) {
	for _, s := range []string{
		"mod(\"key1\") > \"0\"\n\nput key1 \"overwrote-key1\"\n\nput key1 \"created-key1\"\nput key2 \"some extra key\"\n",
		"value(\"\\x00\") != '\\n'\n!exists(\"a\")\ncreate(\"c\") = \"0\"\n\nget 'a b'\ndel \"x\"\n\n",
		"\n\n\n\n", "#\n", "value(\"k\")==\"v\"", "mod(\"k\") <= 18446744073709551615", "!exists(\"k\") = 1",
		"\nput \"a\\\" b\" 'c'", "val(\"\xff\") >= x\n\nget \xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		spec, err := parseTxn(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, c := range spec.cmps {
			again, err := parseCompare(c.String())
			if err != nil || again.String() != c.String() {
				t.Fatalf("%s re-parsed as %s, %v", c, again, err)
			}
		}
	})
}
