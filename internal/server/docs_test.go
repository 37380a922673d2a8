package server

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestEveryFlagIsDocumented: each kayadb-server flag (as --help lists
// them) has its row in docs/server.md.
func TestEveryFlagIsDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/server.md")
	if err != nil {
		t.Fatal(err)
	}
	var help bytes.Buffer
	ParseFlags([]string{"--help"}, func(string) (string, bool) { return "", false }, &help)
	flags := regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z][a-z-]*)`).FindAllStringSubmatch(help.String(), -1)
	if len(flags) < 20 {
		t.Fatalf("found only %d flags in --help:\n%s", len(flags), help.String())
	}
	for _, f := range flags {
		if f[1] == "help" {
			continue
		}
		if !bytes.Contains(b, []byte("`--"+f[1])) {
			t.Errorf("docs/server.md has no entry for --%s", f[1])
		}
	}
}

// TestSecurityDocNamesRealTests: every test and fuzz target that
// docs/security.md cites as proof of a control exists in the repository.
func TestSecurityDocNamesRealTests(t *testing.T) {
	doc, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	def := regexp.MustCompile(`(?m)^func ((?:Test|Fuzz)\w+)\(`)
	err = filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range def.FindAllSubmatch(b, -1) {
			defined[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cited := regexp.MustCompile("`((?:Test|Fuzz)[A-Z]\\w*)`").FindAllSubmatch(doc, -1)
	if len(cited) < 20 {
		t.Fatalf("found only %d test names in docs/security.md", len(cited))
	}
	for _, m := range cited {
		if !defined[string(m[1])] {
			t.Errorf("docs/security.md cites %s, which no test file defines", m[1])
		}
	}
}
