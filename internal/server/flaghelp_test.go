package server

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestOperatorTokenHelpNamesEveryAdminRequest: --operator-token's help and
// its docs/server.md row name every kind of request it guards, backup
// included (it reads the whole database; TestBackupNeedsOperatorToken
// shows the server asks for the token).
func TestOperatorTokenHelpNamesEveryAdminRequest(t *testing.T) {
	var help bytes.Buffer
	ParseFlags([]string{"--help"}, env(nil), &help)
	line := regexp.MustCompile(`(?m)^\s+--operator-token string.*$`).FindString(help.String())
	doc, err := os.ReadFile("../../docs/server.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `--operator-token SECRET`.*$").FindString(string(doc))
	for _, where := range []struct{ name, text string }{{"--help", line}, {"docs/server.md", row}} {
		if where.text == "" {
			t.Fatalf("%s: no --operator-token entry", where.name)
		}
		for _, want := range []string{"add/remove/promote node", "transfer leader", "backup"} {
			if !strings.Contains(where.text, want) {
				t.Errorf("%s: --operator-token does not mention %q: %s", where.name, want, where.text)
			}
		}
	}
}
