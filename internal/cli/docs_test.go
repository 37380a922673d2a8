package cli

import (
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestEveryFlagIsDocumented: each kayactl command and each of its flags
// is named in docs/cli.md, where a user looks for them.
func TestEveryFlagIsDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	a := &app{stdout: io.Discard, stderr: io.Discard, lookupEnv: func(string) (string, bool) { return "", false }}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			return
		}
		// A command has its own heading: "## put", "### inspect wal".
		if c.HasParent() && !regexp.MustCompile(`(?m)^#+ .*\b`+regexp.QuoteMeta(strings.TrimPrefix(c.CommandPath(), "kayactl "))+`\b`).MatchString(doc) {
			t.Errorf("docs/cli.md has no heading for %q", c.CommandPath())
		}
		check := func(f *pflag.Flag) {
			if f.Name != "help" && !strings.Contains(doc, "--"+f.Name) {
				t.Errorf("docs/cli.md does not document --%s (%s)", f.Name, c.CommandPath())
			}
		}
		c.LocalNonPersistentFlags().VisitAll(check)
		c.PersistentFlags().VisitAll(check)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(a.newRootCmd())
}

// TestReadmeListsEveryCommand: the kayactl summary of README.md names
// every command kayactl has, completion and help included.
func TestReadmeListsEveryCommand(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## kayactl\n")
	if !ok {
		t.Fatal("README.md has no \"## kayactl\" section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	a := &app{stdout: io.Discard, stderr: io.Discard, lookupEnv: func(string) (string, bool) { return "", false }}
	root := a.newRootCmd()
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Hidden {
			continue
		}
		if !regexp.MustCompile(`\b` + regexp.QuoteMeta(c.Name()) + `\b`).MatchString(section) {
			t.Errorf("README.md's kayactl summary does not list %q", c.Name())
		}
		for _, sub := range c.Commands() {
			if !sub.Hidden && !strings.Contains(section, sub.Name()) {
				t.Errorf("README.md's kayactl summary does not list %q", sub.CommandPath())
			}
		}
	}
}
