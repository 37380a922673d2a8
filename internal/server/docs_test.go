package server

import (
	"bytes"
	"os"
	"regexp"
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
