package e2e

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/wire"
)

// sidecarPorts are the ports of one run of TestMTLSSidecarStunnel, above a
// base of 23000, 24000, 25000 or 26000 (no other test uses them): node N's
// raft port base+480+N and plain client port base+378+N (the runbook's
// ports, less the base), the stunnel mTLS sidecar in front of it
// base+578+N, and the local plain proxy (stunnel in client mode) base+599.
type sidecarPorts int

func (b sidecarPorts) raft(n int) string   { return fmt.Sprintf("127.0.0.1:%d", int(b)+480+n) }
func (b sidecarPorts) client(n int) string { return fmt.Sprintf("127.0.0.1:%d", int(b)+378+n) }
func (b sidecarPorts) tls(n int) string    { return fmt.Sprintf("127.0.0.1:%d", int(b)+578+n) }
func (b sidecarPorts) proxy() string       { return fmt.Sprintf("127.0.0.1:%d", int(b)+599) }

// claimSidecarPorts picks the first base whose ports are free and that no
// other test process on this machine holds (a lock file kept until the
// test ends), so that two runs of the suite at once do not collide.
func claimSidecarPorts(t *testing.T) sidecarPorts {
	t.Helper()
	for _, base := range []int{25000, 26000, 24000, 23000} {
		b := sidecarPorts(base)
		f, err := os.OpenFile(filepath.Join(os.TempDir(), fmt.Sprintf("kayadb-e2e-sidecar-ports-%d.lock", base)), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close()
			continue
		}
		free := true
		for _, addr := range []string{b.raft(1), b.raft(2), b.raft(3), b.raft(4), b.client(1), b.client(2), b.client(3), b.client(4),
			b.tls(1), b.tls(2), b.tls(3), b.proxy()} {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if !free {
			f.Close()
			continue
		}
		t.Cleanup(func() { f.Close() })
		return b
	}
	t.Fatal("no free ports for the sidecar test near 23000-26999")
	return 0
}

// TestMTLSSidecarStunnel runs the sidecar deployment of
// docs/runbooks/mtls-sidecar.md with stunnel, against real processes:
// certificates from scripts/mtls-sidecar/setup-certs.sh, three kayadb-server
// processes with an operator token and a client token, a stunnel in server
// mode (verify = 2, CAfile, checkHost) in front of each node's client port,
// and a stunnel in client mode that gives kayactl a plain local port to the
// leader's sidecar. It checks that the tokens are enforced through the
// sidecar, that the sidecar refuses TLS without a client certificate, with
// a certificate of the wrong name, and plain TCP, and that kayactl's native
// TLS client can talk to a sidecar directly.
//
// It needs stunnel and openssl: without them it is skipped, except under
// CI=true, where it fails (.ci/run installs them).
func TestMTLSSidecarStunnel(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test; skipped with -short")
	}
	for _, tool := range []string{"stunnel", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			msg := fmt.Sprintf("the mTLS sidecar test needs %s (apt-get install stunnel4 openssl): %v", tool, err)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	ports := claimSidecarPorts(t)
	e := newEnv(t, int(ports)+480, int(ports)+378)
	start := time.Now()
	const (
		clientToken   = "sidecar-client-token-3f9a"
		operatorToken = "sidecar-operator-token-81c2"
	)

	// Certificates, as the runbook makes them.
	certs := filepath.Join(e.dir, "certs")
	setup := filepath.Join(e.root, "scripts", "mtls-sidecar", "setup-certs.sh")
	runSetup := func() (string, error) {
		cmd := exec.Command(setup)
		cmd.Env = append(sidecarCleanEnv(), "CERTS_DIR="+certs)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := runSetup(); err != nil {
		t.Fatalf("setup-certs.sh: %v\n%s", err, out)
	}
	for _, f := range []string{"ca.crt", "ca.key", "node1.crt", "node1.key", "node1.p12", "node2.p12", "node3.p12",
		"client.crt", "client.key", "client.p12"} {
		fi, err := os.Stat(filepath.Join(certs, f))
		if err != nil {
			t.Fatalf("setup-certs.sh did not create %s: %v", f, err)
		}
		if (strings.HasSuffix(f, ".key") || strings.HasSuffix(f, ".p12")) && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	// A second run refuses to replace the CA.
	if out, err := runSetup(); err == nil || !strings.Contains(out, "refusing to overwrite") {
		t.Fatalf("setup-certs.sh over an existing CA: err=%v\n%s", err, out)
	}
	cert := func(name string) string { return filepath.Join(certs, name) }

	// The binaries.
	bin := filepath.Join(e.dir, "bin")
	build := exec.Command("go", "build", "-o", bin+string(filepath.Separator), "./cmd/kayadb-server", "./cmd/kayactl")
	build.Dir = e.root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// Three nodes with both tokens, plain on loopback.
	raftAddr, clientAddr, tlsAddr, proxyAddr := ports.raft, ports.client, ports.tls, ports.proxy()
	var peers []string
	for n := 1; n <= 3; n++ {
		peers = append(peers, "--peer", fmt.Sprintf("%d=%s,%s", n, raftAddr(n), clientAddr(n)))
	}
	for n := 1; n <= 3; n++ {
		args := append([]string{"--node-id", fmt.Sprint(n), "--data", filepath.Join(e.dir, fmt.Sprintf("node-%d", n)),
			"--raft-addr", raftAddr(n), "--client-addr", clientAddr(n), "--no-metrics",
			"--operator-token", operatorToken, "--client-token", clientToken}, peers...)
		sidecarStart(t, filepath.Join(e.dir, fmt.Sprintf("node-%d.log", n)), filepath.Join(bin, "kayadb-server"), args...)
	}
	dump := func() string { return e.logs() + sidecarLogs(e.dir) }
	kayactl := func(args ...string) (string, string, int) {
		cmd := exec.Command(filepath.Join(bin, "kayactl"), args...)
		cmd.Env = sidecarCleanEnv()
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errb.String(), code
	}
	leader := 0
	for deadline := time.Now().Add(20 * time.Second); leader == 0 && time.Now().Before(deadline); {
		for n := 1; n <= 3 && leader == 0; n++ {
			out, _, _ := kayactl("--server", clientAddr(n), "--client-token", clientToken, "--timeout", "300ms", "health")
			if strings.Contains(out, "role=leader") {
				leader = n
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if leader == 0 {
		t.Fatalf("no leader\n%s", dump())
	}

	// A stunnel in server mode in front of each node's client port: mTLS,
	// only certificates of our CA named admin-client.kaya.local.
	for n := 1; n <= 3; n++ {
		conf := fmt.Sprintf(`foreground = yes
pid =
syslog = no
debug = info

[kaya-client-%d]
accept = %s
connect = %s
cert = %s
key = %s
CAfile = %s
verify = 2
checkHost = admin-client.kaya.local
`, n, tlsAddr(n), clientAddr(n), cert(fmt.Sprintf("node%d.crt", n)), cert(fmt.Sprintf("node%d.key", n)), cert("ca.crt"))
		sidecarStunnel(t, e.dir, fmt.Sprintf("sidecar-%d", n), conf, tlsAddr(n))
	}
	// A stunnel in client mode: a plain local port -> the leader's
	// sidecar, presenting the client certificate and checking the node's.
	sidecarStunnel(t, e.dir, "local-proxy", fmt.Sprintf(`foreground = yes
pid =
syslog = no
debug = info

[kaya-local]
client = yes
accept = %s
connect = %s
cert = %s
key = %s
CAfile = %s
verifyChain = yes
checkHost = node%d.kaya.local
`, proxyAddr, tlsAddr(leader), cert("client.crt"), cert("client.key"), cert("ca.crt"), leader), proxyAddr)

	// Through the local proxy: the client token is required for data.
	if out, errs, code := kayactl("--server", proxyAddr, "--client-token", clientToken, "put", "via-sidecar", "yes"); code != 0 {
		t.Fatalf("put through the sidecar: exit %d %s %s\n%s", code, out, errs, dump())
	}
	if out, errs, code := kayactl("--server", proxyAddr, "--client-token", clientToken, "get", "via-sidecar"); code != 0 || out != "yes\n" {
		t.Fatalf("get through the sidecar: exit %d %q %s", code, out, errs)
	}
	if out, errs, code := kayactl("--server", proxyAddr, "--timeout", "2s", "put", "no-token", "x"); code == 0 ||
		!strings.Contains(errs, "client credential required or invalid") {
		t.Fatalf("put without the client token: exit %d %q %q", code, out, errs)
	}
	if out, errs, code := kayactl("--server", proxyAddr, "--timeout", "2s", "--client-token", "wrong", "get", "via-sidecar"); code == 0 ||
		!strings.Contains(errs, "client credential required or invalid") {
		t.Fatalf("get with a wrong client token: exit %d %q %q", code, out, errs)
	}
	if _, errs, code := kayactl("--server", proxyAddr, "--client-token", clientToken, "get", "no-token"); code != 2 {
		t.Fatalf("the refused put was applied: get exit %d %s", code, errs)
	}

	// Membership needs the operator token: add a learner that never starts.
	addLearner := []string{"add-node", "--learner", "4", raftAddr(4), clientAddr(4)}
	for _, extra := range [][]string{nil, {"--operator-token", "wrong"}} {
		args := append(append([]string{"--server", proxyAddr, "--timeout", "2s", "--client-token", clientToken}, extra...), addLearner...)
		if out, errs, code := kayactl(args...); code == 0 || !strings.Contains(errs, "operator credential required or invalid") {
			t.Fatalf("add-node with operator token flags %q: exit %d %q %q", extra, code, out, errs)
		}
	}
	args := append([]string{"--server", proxyAddr, "--client-token", clientToken, "--operator-token", operatorToken}, addLearner...)
	if out, errs, code := kayactl(args...); code != 0 || !strings.Contains(out, "membership change proposed") {
		t.Fatalf("add-node with the operator token: exit %d %q %q\n%s", code, out, errs, dump())
	}
	// The node that answers status has applied the change (the leader has;
	// a follower soon will).
	var members, st string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var errs string
		var code int
		st, errs, code = kayactl("--server", proxyAddr, "--client-token", clientToken, "--json", "status")
		if code != 0 {
			t.Fatalf("status through the sidecar: exit %d %s", code, errs)
		}
		var doc struct {
			Members []statusMember `json:"members"`
		}
		if err := json.Unmarshal([]byte(st), &doc); err != nil {
			t.Fatalf("status --json: %v\n%s", err, st)
		}
		members = memberRoles(doc.Members)
		if members == "1:voter 2:voter 3:voter 4:learner" || time.Now().After(deadline) {
			break
		}
	}
	if members != "1:voter 2:voter 3:voter 4:learner" {
		t.Fatalf("members after add-node: %s\n%s", members, st)
	}

	// kayactl's own TLS client talks to a sidecar directly.
	if out, errs, code := kayactl("--server", tlsAddr(leader), "--tls", "--tls-ca-cert", cert("ca.crt"),
		"--tls-cert", cert("client.crt"), "--tls-key", cert("client.key"), "--client-token", clientToken,
		"get", "via-sidecar"); code != 0 || out != "yes\n" {
		t.Fatalf("kayactl --tls to the sidecar: exit %d %q %s", code, out, errs)
	}

	// What the sidecar lets through, probed with a HELLO.
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(cert("ca.crt"))
	if err != nil || !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("reading ca.crt: %v", err)
	}
	pair := func(name string) []tls.Certificate {
		c, err := tls.LoadX509KeyPair(cert(name+".crt"), cert(name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{c}
	}
	sidecar := tlsAddr(leader)
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
		want  bool
	}{
		{"the client certificate", pair("client"), true},
		{"no client certificate", nil, false},
		{"a node certificate (not admin-client)", pair("node2"), false},
	} {
		err := sidecarHelloTLS(sidecar, &tls.Config{RootCAs: pool, ServerName: fmt.Sprintf("node%d.kaya.local", leader), Certificates: tc.certs})
		if got := err == nil; got != tc.want {
			t.Errorf("TLS with %s: HELLO answered=%v (%v), want %v", tc.name, got, err, tc.want)
		}
	}
	nc, err := net.DialTimeout("tcp", sidecar, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := sidecarHello(nc); err == nil {
		t.Errorf("plain TCP to the sidecar got a KayaDB HELLO reply")
	}
	nc.Close()
	if t.Failed() {
		t.Log(dump())
	}
	t.Logf("sidecar test took %v (leader node %d, ports above %d)", time.Since(start).Round(time.Millisecond), leader, int(ports))
}

// sidecarCleanEnv is the test's environment without KAYA_* variables, so
// that only the flags a command is given count.
func sidecarCleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KAYA_") {
			env = append(env, kv)
		}
	}
	return env
}

// sidecarStart starts name with args, its output in logPath, and kills it
// when the test ends. The channel is closed when the process has exited.
func sidecarStart(t *testing.T, logPath, name string, args ...string) <-chan struct{} {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Env = sidecarCleanEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	return done
}

// sidecarStunnel writes conf to DIR/NAME.conf, starts stunnel with it (its
// log in DIR/stunnel-NAME.log) and waits until addr accepts connections.
func sidecarStunnel(t *testing.T, dir, name, conf, addr string) {
	t.Helper()
	path := filepath.Join(dir, name+".conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "stunnel-"+name+".log")
	exited := sidecarStart(t, logPath, "stunnel", path)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			deadline = time.Time{}
		default:
		}
	}
	data, _ := os.ReadFile(logPath)
	t.Fatalf("stunnel %s does not listen on %s:\n%s", name, addr, data)
}

func sidecarLogs(dir string) string {
	var b strings.Builder
	matches, _ := filepath.Glob(filepath.Join(dir, "stunnel-*.log"))
	for _, m := range matches {
		data, _ := os.ReadFile(m)
		if len(data) > 3000 {
			data = data[len(data)-3000:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", m, data)
	}
	return b.String()
}

// sidecarHelloTLS connects to addr with conf and returns nil only if a
// KayaDB HELLO got its answer.
func sidecarHelloTLS(addr string, conf *tls.Config) error {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 2 * time.Second}, Config: conf}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	defer c.Close()
	return sidecarHello(c)
}

// sidecarHello sends a HELLO on c and checks that a KayaDB server answered
// it.
func sidecarHello(c net.Conn) error {
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write(wire.AppendRequest(nil, wire.OpHello, wire.AppendHello(nil, wire.ProtocolVersion))); err != nil {
		return fmt.Errorf("sending HELLO: %w", err)
	}
	st, p, _, err := wire.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return fmt.Errorf("reading the HELLO reply: %w", err)
	}
	if st != wire.StatusOK {
		return fmt.Errorf("HELLO answered with status %d", st)
	}
	if v, err := wire.DecodeHello(p); err != nil || v != wire.ProtocolVersion {
		return fmt.Errorf("HELLO reply: version %d, %v", v, err)
	}
	return nil
}
