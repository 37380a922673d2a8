package cli

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"

	"github.com/kayadb/kayadb/client"
	"github.com/kayadb/kayadb/internal/wire"
)

// The input of kayactl txn, in etcdctl's txn syntax: compares, a blank
// line, the ops that run when every compare holds, a blank line, the ops
// that run otherwise.
//
//	mod("key1") > "0"
//	value("key2") = "x"
//
//	put key1 "overwrote key1"
//
//	put key1 "created key1"
//	get key2
//
// Compares: TARGET("KEY") OP VALUE, KEY Go-quoted, VALUE Go-quoted or a
// bare word (a number). Targets: value (val), mod (m); create (c) and
// version (ver) only against 0 (KayaDB keeps neither create revisions nor
// version counts: create("k") = "0" means the key does not exist, > "0"
// or != "0" that it does); lease is not supported. KayaDB adds exists("k")
// and !exists("k"), and the relations <= and >=. Ops: put KEY VALUE,
// get KEY, del KEY (or delete), words Go-quoted ("a b\n") or single-quoted
// ('a b') when they hold spaces. A line starting with # is a comment. The
// end of the input ends the last section (etcdctl wants a blank line).

// txnInputLimit bounds what kayactl txn reads: the largest request the
// protocol carries (a 64 MiB frame), so that a runaway input fails fast
// instead of filling memory.
const txnInputLimit = wire.MaxFrameSize

// txnSpec is a parsed kayactl txn input.
type txnSpec struct {
	cmps      []client.Cmp
	then, els []client.Op
}

// parseTxn reads a txn input.
func parseTxn(r io.Reader) (*txnSpec, error) {
	sc := bufio.NewScanner(io.LimitReader(r, txnInputLimit+1))
	sc.Buffer(make([]byte, 64<<10), txnInputLimit+1)
	spec := &txnSpec{}
	section := 0 // 0 compares, 1 success ops, 2 failure ops, 3 done
	names := [...]string{"compare", "success op", "failure op"}
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(text, "#") {
			continue
		}
		if text == "" {
			if section < 3 {
				section++
			}
			continue
		}
		if section == 3 {
			return nil, fmt.Errorf("line %d: text after the failure ops (the input is compares, a blank line, success ops, a blank line, failure ops): %q", line, text)
		}
		if section == 0 {
			c, err := parseCompare(text)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", line, err)
			}
			spec.cmps = append(spec.cmps, c)
			continue
		}
		op, err := parseTxnOp(text)
		if err != nil {
			return nil, fmt.Errorf("line %d (%s): %w", line, names[section], err)
		}
		if section == 1 {
			spec.then = append(spec.then, op)
		} else {
			spec.els = append(spec.els, op)
		}
	}
	if err := sc.Err(); err != nil {
		if err == bufio.ErrTooLong {
			return nil, fmt.Errorf("line %d is longer than %d bytes", line+1, txnInputLimit)
		}
		return nil, err
	}
	switch {
	case len(spec.cmps) > wire.MaxCondCompares:
		return nil, fmt.Errorf("%d compares: at most %d", len(spec.cmps), wire.MaxCondCompares)
	case len(spec.then) > wire.MaxCondOps || len(spec.els) > wire.MaxCondOps:
		return nil, fmt.Errorf("%d success and %d failure ops: at most %d each", len(spec.then), len(spec.els), wire.MaxCondOps)
	}
	return spec, nil
}

// parseCompare parses one compare line.
func parseCompare(line string) (client.Cmp, error) {
	if rest, ok := strings.CutPrefix(line, "!"); ok {
		rest = strings.TrimSpace(rest)
		if !strings.HasPrefix(rest, "exists") {
			return client.Cmp{}, fmt.Errorf("malformed comparison %q: only exists(...) can be negated with !; negate the relation instead (= and !=, < and >=, > and <=)", line)
		}
		c, err := parseCompare(rest)
		if err != nil {
			return client.Cmp{}, err
		}
		return c.Not(), nil
	}
	target, rest, ok := strings.Cut(line, "(")
	target = strings.TrimSpace(target)
	if !ok || target == "" {
		return client.Cmp{}, fmt.Errorf("malformed comparison %q: want TARGET(\"KEY\") OP VALUE, for example value(\"k\") = \"v\" or mod(\"k\") < \"5\"", line)
	}
	rest = strings.TrimSpace(rest)
	qkey, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return client.Cmp{}, fmt.Errorf("malformed comparison %q: the key must be a double-quoted string, as in %s(\"key\")", line, target)
	}
	key, _ := strconv.Unquote(qkey)
	rest = strings.TrimSpace(rest[len(qkey):])
	rest, ok = strings.CutPrefix(rest, ")")
	if !ok {
		return client.Cmp{}, fmt.Errorf("malformed comparison %q: missing ) after the key", line)
	}
	rest = strings.TrimSpace(rest)
	if target == "exists" {
		if rest != "" {
			return client.Cmp{}, fmt.Errorf("malformed comparison %q: exists(\"key\") takes no relation (write !exists(\"key\") for a missing key)", line)
		}
		return client.KeyExists([]byte(key)), nil
	}
	opText := rest
	if i := strings.IndexFunc(rest, func(r rune) bool { return !strings.ContainsRune("=!<>", r) }); i >= 0 {
		opText = rest[:i]
	}
	op, ok := map[string]client.CmpOp{"=": client.Equal, "==": client.Equal, "!=": client.NotEqual, "<": client.Less,
		">": client.Greater, "<=": client.LessEqual, ">=": client.GreaterEqual}[opText]
	if !ok {
		return client.Cmp{}, fmt.Errorf("malformed comparison %q: unknown relation %q (want =, !=, <, >, <= or >=)", line, opText)
	}
	words, err := splitWords(strings.TrimSpace(rest[len(opText):]))
	if err != nil {
		return client.Cmp{}, fmt.Errorf("malformed comparison %q: %v", line, err)
	}
	if len(words) != 1 {
		return client.Cmp{}, fmt.Errorf("malformed comparison %q: want one value after %s", line, opText)
	}
	val := words[0]
	number := func() (uint64, error) {
		n, err := strconv.ParseUint(val, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("invalid comparison %q: %q is not a revision (a non-negative integer)", line, val)
		}
		return n, nil
	}
	k := []byte(key)
	switch target {
	case "val", "value":
		return client.CompareValue(k, op, []byte(val)), nil
	case "m", "mod":
		n, err := number()
		if err != nil {
			return client.Cmp{}, err
		}
		return client.CompareModRevision(k, op, n), nil
	case "c", "create", "ver", "version":
		n, err := number()
		if err != nil {
			return client.Cmp{}, err
		}
		switch {
		case n == 0 && op == client.Equal, n == 0 && op == client.LessEqual, n == 1 && op == client.Less:
			return client.KeyMissing(k), nil
		case n == 0 && (op == client.NotEqual || op == client.Greater), n == 1 && op == client.GreaterEqual:
			return client.KeyExists(k), nil
		}
		what := "create revisions"
		if target == "ver" || target == "version" {
			what = "version counts"
		}
		return client.Cmp{}, fmt.Errorf("unsupported comparison %q: KayaDB keeps no %s, so %s(...) compares only with 0 (= \"0\": the key does not exist; != \"0\" or > \"0\": it exists); use mod(...) or exists(...)", line, what, target)
	case "lease":
		return client.Cmp{}, fmt.Errorf("unsupported comparison %q: KayaDB has no leases", line)
	}
	return client.Cmp{}, fmt.Errorf("malformed comparison %q: unknown target %q (want value, mod, create, version or exists)", line, target)
}

// parseTxnOp parses one op line: put KEY VALUE, get KEY, del KEY.
func parseTxnOp(line string) (client.Op, error) {
	words, err := splitWords(line)
	if err != nil {
		return client.Op{}, err
	}
	for _, w := range words[1:] {
		if strings.HasPrefix(w, "--") {
			return client.Op{}, fmt.Errorf("%q: flags (%s) are not supported in kayactl txn ops", line, w)
		}
	}
	n := len(words) - 1
	switch strings.ToLower(words[0]) {
	case "put":
		if n != 2 {
			return client.Op{}, fmt.Errorf("%q: put takes KEY and VALUE", line)
		}
		return client.OpPut([]byte(words[1]), []byte(words[2])), nil
	case "get":
		if n != 1 {
			return client.Op{}, fmt.Errorf("%q: get takes one KEY (ranges and prefixes are not supported in a txn)", line)
		}
		return client.OpGet([]byte(words[1])), nil
	case "del", "delete":
		if n != 1 {
			return client.Op{}, fmt.Errorf("%q: del takes one KEY (ranges and prefixes are not supported in a txn)", line)
		}
		return client.OpDelete([]byte(words[1])), nil
	}
	return client.Op{}, fmt.Errorf("%q: unknown op %q (want put, get or del)", line, words[0])
}

// splitWords splits s at spaces; a word may be Go-quoted ("a b\x00") or
// single-quoted ('a b', taken literally).
func splitWords(s string) ([]string, error) {
	var words []string
	for {
		s = strings.TrimLeftFunc(s, unicode.IsSpace)
		if s == "" {
			return words, nil
		}
		switch s[0] {
		case '"':
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return nil, fmt.Errorf("unterminated or invalid double-quoted string: %s", s)
			}
			w, _ := strconv.Unquote(q)
			words = append(words, w)
			s = s[len(q):]
		case '\'':
			end := strings.IndexByte(s[1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("unterminated single-quoted string: %s", s)
			}
			words = append(words, s[1:1+end])
			s = s[2+end:]
		default:
			end := strings.IndexFunc(s, unicode.IsSpace)
			if end < 0 {
				end = len(s)
			}
			words = append(words, s[:end])
			s = s[end:]
			continue
		}
		if s != "" && !unicode.IsSpace(rune(s[0])) {
			return nil, fmt.Errorf("a quoted string must be followed by a space: %s", s)
		}
	}
}
