package server

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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
	checkRaftAuth(t, "Dockerfile CMD", cmd, nil)
	if !regexp.MustCompile(`(?m)^USER [1-9]`).MatchString(df) || !strings.Contains(df, `VOLUME ["/data"]`) {
		t.Error("the image must run as a non-root user with a /data volume")
	}

	// docker-compose: every service's command parses, and they form one
	// cluster.
	var compose struct {
		Services map[string]struct {
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal([]byte(readDeploy(t, "docker", "docker-compose.yml")), &compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	// The nodes' raft ports are reachable on the compose network: each
	// node reads the peer token that the peer-token service writes.
	tokenSvc, ok := compose.Services["peer-token"]
	if !ok || !strings.Contains(strings.Join(tokenSvc.Command, " "), "/run/kaya/peer.token") {
		t.Fatal("docker-compose.yml has no peer-token service writing /run/kaya/peer.token")
	}
	nodes := 0
	for name, svc := range compose.Services {
		if name == "peer-token" {
			continue
		}
		nodes++
		if len(svc.Command) == 0 {
			t.Fatalf("service %s has no command", name)
		}
		checkArgs(t, "docker-compose.yml service "+name, svc.Command)
		if strings.Count(strings.Join(svc.Command, " "), "--peer") != 3 {
			t.Errorf("service %s does not list the three members", name)
		}
		if svc.Environment["KAYA_PEER_TOKEN_FILE"] != "/run/kaya/peer.token" || !slices.Contains(svc.Volumes, "peer-token:/run/kaya:ro") {
			t.Errorf("service %s does not read the peer token (environment %v, volumes %v)", name, svc.Environment, svc.Volumes)
		}
		checkRaftAuth(t, "docker-compose.yml service "+name, svc.Command, env(map[string]string{"KAYA_PEER_TOKEN_FILE": tokenFile(t)}))
	}
	if nodes != 3 {
		t.Fatalf("docker-compose.yml has %d nodes; want 3", nodes)
	}
}

// tokenFile is a good peer token file, as the compose file's peer-token
// service writes it.
func tokenFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "peer.token")
	if err := os.WriteFile(p, []byte("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkRaftAuth: a deploy command line (with the environment given)
// passes the startup rule on the raft port's authentication.
func checkRaftAuth(t *testing.T, where string, args []string, lookupEnv func(string) (string, bool)) {
	t.Helper()
	if lookupEnv == nil {
		lookupEnv = env(nil)
	}
	var errb bytes.Buffer
	cfg, code := ParseFlags(args, lookupEnv, &errb)
	if code != -1 {
		t.Errorf("%s: exit %d: %s", where, code, errb.String())
		return
	}
	if err := (&Server{cfg: cfg}).checkRaftPortAuth(cfg.RaftAddr); err != nil {
		t.Errorf("%s would not start: %v", where, err)
	}
}
