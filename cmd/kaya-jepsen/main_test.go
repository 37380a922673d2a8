package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/internal/buildinfo"
)

// TestHelpAndVersion: asking for help is a success (exit 0, usage on
// stderr); --version prints the build; a bad flag is exit 2. None of them
// builds or starts anything.
func TestHelpAndVersion(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help"} {
		var out, errb bytes.Buffer
		if code := run([]string{arg}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "Usage: kaya-jepsen") || !strings.Contains(errb.String(), "-nemesis") {
			t.Errorf("%s: exit %d, stderr %q", arg, code, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"--version"}, &out, &errb); code != 0 || out.String() != buildinfo.Read().Line("kaya-jepsen")+"\n" {
		t.Errorf("--version: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"--no-such-flag"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "no-such-flag") {
		t.Errorf("bad flag: exit %d, stderr %q", code, errb.String())
	}
}
