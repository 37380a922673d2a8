package server

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The deploy/ files cannot run here (no Docker engine, no systemd), so
// this test checks what it can: every kayadb-server command line in them
// parses with the flags the binary actually has.

func serverFlagNames(t *testing.T) map[string]bool {
	t.Helper()
	var errb bytes.Buffer
	if _, code := ParseFlags([]string{"--help"}, env(nil), &errb); code != exitOK {
		t.Fatalf("--help: %d", code)
	}
	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`--([a-z][a-z0-9-]*)`).FindAllStringSubmatch(errb.String(), -1) {
		names[m[1]] = true
	}
	if !names["data"] || !names["peer"] {
		t.Fatalf("could not read the flag list from --help:\n%s", errb.String())
	}
	return names
}

func readDeploy(t *testing.T, parts ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(append([]string{"..", "..", "deploy"}, parts...)...))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func checkArgs(t *testing.T, where string, args []string) {
	t.Helper()
	var errb bytes.Buffer
	if _, code := ParseFlags(args, env(nil), &errb); code != -1 {
		t.Errorf("%s: kayadb-server %s\nexits %d: %s", where, strings.Join(args, " "), code, errb.String())
	}
}

func TestDeployFilesUseRealFlags(t *testing.T) {
	names := serverFlagNames(t)

	// systemd: the flags of ExecStart exist (the config file it names is
	// on the target machine, so the line is not parsed whole).
	unit := readDeploy(t, "systemd", "kayadb.service")
	var exec string
	for _, line := range strings.Split(unit, "\n") {
		if strings.HasPrefix(line, "ExecStart=") {
			exec = strings.TrimPrefix(line, "ExecStart=")
		}
	}
	if !strings.Contains(exec, "kayadb-server") {
		t.Fatalf("no ExecStart running kayadb-server in the unit")
	}
	for _, f := range strings.Fields(exec) {
		if strings.HasPrefix(f, "--") && !names[strings.TrimPrefix(f, "--")] {
			t.Errorf("kayadb.service uses %s, which kayadb-server does not have", f)
		}
	}
	for _, want := range []string{"User=kaya", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/kayadb", "KillSignal=SIGTERM", "ExecReload=/bin/kill -HUP"} {
		if !strings.Contains(unit, want) {
			t.Errorf("kayadb.service lacks %q", want)
		}
	}

	// Dockerfile: the CMD parses; the image runs as a non-root user.
	df := readDeploy(t, "docker", "Dockerfile")
	var cmd []string
	for _, line := range strings.Split(df, "\n") {
		if strings.HasPrefix(line, "CMD ") {
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "CMD ")), &cmd); err != nil {
				t.Fatalf("Dockerfile CMD is not a JSON array: %v", err)
			}
		}
	}
	if len(cmd) == 0 {
		t.Fatal("Dockerfile has no CMD")
	}
	checkArgs(t, "Dockerfile CMD", cmd)
	if !regexp.MustCompile(`(?m)^USER [1-9]`).MatchString(df) || !strings.Contains(df, `VOLUME ["/data"]`) {
		t.Error("the image must run as a non-root user with a /data volume")
	}

	// docker-compose: every service's command parses, and they form one
	// cluster.
	var compose struct {
		Services map[string]struct {
			Command []string `yaml:"command"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal([]byte(readDeploy(t, "docker", "docker-compose.yml")), &compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	if len(compose.Services) != 3 {
		t.Fatalf("docker-compose.yml has %d services; want 3", len(compose.Services))
	}
	for name, svc := range compose.Services {
		if len(svc.Command) == 0 {
			t.Fatalf("service %s has no command", name)
		}
		checkArgs(t, "docker-compose.yml service "+name, svc.Command)
		if strings.Count(strings.Join(svc.Command, " "), "--peer") != 3 {
			t.Errorf("service %s does not list the three members", name)
		}
	}
}
