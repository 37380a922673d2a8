package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kayadb/kayadb/client"
	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/security"
	"github.com/kayadb/kayadb/internal/security/securitytest"
	"github.com/kayadb/kayadb/internal/transport"
	"github.com/kayadb/kayadb/internal/vfs"
	"github.com/kayadb/kayadb/internal/wire"
)

// syncBuffer is a log sink shared by the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func loopbackListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// Control: bind guard. Wildcard and public listen addresses are refused
// before anything is opened or bound.
func TestBindGuardRefusesPublicAndWildcard(t *testing.T) {
	for _, tc := range []struct{ client, raft, flag string }{
		{"0.0.0.0:17379", "127.0.0.1:17481", "--client-addr"},
		{"[::]:17379", "127.0.0.1:17481", "--client-addr"},
		{"127.0.0.1:17379", "0.0.0.0:17481", "--raft-addr"},
		{"8.8.8.8:7379", "127.0.0.1:17481", "--client-addr"},
		{"127.0.0.1:17379", "203.0.113.9:7481", "--raft-addr"},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		_, err := New(Config{NodeID: 1, DataDir: dir, ClientAddr: tc.client, RaftAddr: tc.raft})
		if err == nil {
			t.Fatalf("client %s raft %s: started", tc.client, tc.raft)
		}
		for _, want := range []string{tc.flag, "--allow-public-bind", "127.0.0.1"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the refused node created its data directory (%v)", err)
		}
	}
	// The command line refuses the same way, with the exit status of a
	// configuration error (4, as for bad flags).
	var out, errb bytes.Buffer
	if code := Main([]string{"--data", filepath.Join(t.TempDir(), "d"), "--client-addr", "0.0.0.0:17379"}, &out, &errb); code != exitUsage ||
		!strings.Contains(errb.String(), "--allow-public-bind") {
		t.Fatalf("Main: exit %d, stderr %q", code, errb.String())
	}
	// Private and loopback addresses pass the guard (checked here without
	// binding: a node needs addresses of this machine to start).
	for _, addr := range []string{"10.0.0.5:7379", "192.168.1.2:7379", "[fd00::5]:7379", "169.254.0.9:7379", "127.0.0.1:7379"} {
		if _, err := (security.BindGuard{}).Check("--client-addr", addr); err != nil {
			t.Errorf("%s refused: %v", addr, err)
		}
	}
}

// Control: --allow-public-bind starts the node with a warning banner. The
// configured address is the wildcard; the test's listener stays on
// loopback.
func TestAllowPublicBindBanner(t *testing.T) {
	cfg := Config{ClientAddr: "0.0.0.0:7379", AllowPublicBind: true}
	_, logs := startSecured(t, cfg)
	out := logs.String()
	for _, want := range []string{"LISTENING ON AN EXPOSED ADDRESS", "--client-addr 0.0.0.0:7379", "WITHOUT mutual TLS", "!!!!!!!!!!"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	cfg.AllowPublicBind = false
	cfg.ClientListener = loopbackListener(t)
	defer cfg.ClientListener.Close()
	cfg.NodeID, cfg.DataDir = 1, "/node"
	cfg.EngineOptions = &engine.Options{FS: vfs.NewMem()}
	if _, err := New(cfg); err == nil {
		t.Fatal("without --allow-public-bind the wildcard address was accepted")
	}
}

// rawCall sends one request frame (op, payload as given: prefixes are the
// caller's) and returns the reply.
func rawCall(t *testing.T, c *conn, op wire.Opcode, payload []byte) (wire.Status, string) {
	t.Helper()
	st, p, err := c.do(op, payload)
	if err != nil {
		t.Fatalf("%v: %v", op, err)
	}
	msg := ""
	if st != wire.StatusOK && st != wire.StatusNotFound && st != wire.StatusNotLeader {
		msg, _ = wire.DecodeError(p)
	}
	return st, msg
}

// Control: operator token. Admin opcodes need the ADMIN prefix with the
// right token; the token never reaches the log.
func TestOperatorTokenOnAdminOpcodes(t *testing.T) {
	const token = "op-secret-4d1f2a9b"
	s, logs := startSecured(t, Config{OperatorToken: token})
	c := dial(t, s.ClientAddr())
	remove4 := binary.LittleEndian.AppendUint64(nil, 4)
	learner := true
	add := wire.AppendAddMember(nil, 7, "127.0.0.1:47481", "127.0.0.1:47379", &learner)
	for _, tc := range []struct {
		name    string
		op      wire.Opcode
		payload []byte
		st      wire.Status
		msg     string
	}{
		{"remove without token", wire.OpRemoveMember, remove4, wire.StatusError, wire.MsgOperatorCredential},
		{"add without token", wire.OpAddMember, add, wire.StatusError, wire.MsgOperatorCredential},
		{"promote without token", wire.OpPromoteLearner, remove4, wire.StatusError, wire.MsgOperatorCredential},
		{"transfer without token", wire.OpTransferLeader, remove4, wire.StatusError, wire.MsgOperatorCredential},
		{"remove with a wrong token", wire.OpRemoveMember, wire.AppendAdmin(nil, "op-secret-4d1f2a9c", wire.OpRemoveMember, remove4), wire.StatusError, wire.MsgOperatorCredential},
		{"remove with an empty token", wire.OpRemoveMember, wire.AppendAdmin(nil, "", wire.OpRemoveMember, remove4), wire.StatusError, wire.MsgOperatorCredential},
		{"client prefix on an admin opcode", wire.OpRemoveMember, wire.AppendClient(nil, token, remove4), wire.StatusError, wire.MsgOperatorCredential},
		{"embedded opcode mismatch", wire.OpRemoveMember, wire.AppendAdmin(nil, token, wire.OpAddMember, remove4), wire.StatusInvalidArgument, wire.MsgAdminMismatch},
		{"truncated prefix", wire.OpRemoveMember, []byte("ADMIN\x00\x09"), wire.StatusInvalidArgument, ""},
	} {
		st, msg := rawCall(t, c, tc.op, tc.payload)
		if st != tc.st || (tc.msg != "" && msg != tc.msg) {
			t.Errorf("%s: status %d %q; want %d %q", tc.name, st, msg, tc.st, tc.msg)
		}
	}
	if n := len(s.ros.list()); n != 1 {
		t.Fatalf("refused requests changed the membership: %d members", n)
	}
	// The right token is accepted: the learner is added.
	st, msg := rawCall(t, c, wire.OpAddMember, wire.AppendAdmin(nil, token, wire.OpAddMember, add))
	if st != wire.StatusOK {
		t.Fatalf("add with the token: %d %q", st, msg)
	}
	waitFor(t, "member 7 added", func() bool { _, ok := s.ros.get(7); return ok })
	// The Go client with the token does the same.
	cl, err := client.New([]string{s.ClientAddr()}, &client.Options{OperatorToken: token})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cl.RemoveMember(ctx, 7); err != nil {
		t.Fatalf("client RemoveMember with the token: %v", err)
	}
	// Data opcodes stay open without a client token.
	if st, msg := rawCall(t, c, wire.OpPut, wire.AppendPut(nil, []byte("k"), []byte("v"))); st != wire.StatusOK {
		t.Fatalf("put without a client token configured: %d %q", st, msg)
	}
	if strings.Contains(logs.String(), token) || strings.Contains(logs.String(), "4d1f2a9c") {
		t.Fatal("a token appears in the log")
	}
	if !strings.Contains(logs.String(), "refused a request") {
		t.Fatal("the refusal was not logged")
	}
}

// Control: client token. Data opcodes need the CLIENT prefix with the
// right token; HELLO and HEALTH stay open.
func TestClientTokenOnDataOpcodes(t *testing.T) {
	const token = "tok"
	s, logs := startSecured(t, Config{ClientToken: token})
	c := dial(t, s.ClientAddr())
	key := wire.AppendKey(nil, []byte("a"))
	put := wire.AppendPut(nil, []byte("a"), []byte("b"))
	for _, tc := range []struct {
		name    string
		op      wire.Opcode
		payload []byte
	}{
		{"put", wire.OpPut, put}, {"get", wire.OpGet, key}, {"delete", wire.OpDelete, key},
		{"scan", wire.OpScan, key}, {"stats", wire.OpStats, nil},
		{"put, wrong token", wire.OpPut, wire.AppendClient(nil, "tok2", put)},
		{"get, empty token", wire.OpGet, wire.AppendClient(nil, "", key)},
		{"put, admin prefix", wire.OpPut, wire.AppendAdmin(nil, token, wire.OpPut, put)},
		// Transactions and versioned reads are data requests too.
		{"txn begin", wire.OpTxnBegin, nil},
		{"txn op", wire.OpTxnOp, wire.AppendTxnOp(nil, wire.TxnOp{TxnID: 1 << 32, Kind: wire.TxnOpPut, Key: []byte("a"), Value: []byte("b")})},
		{"txn commit", wire.OpTxnCommit, wire.AppendTxnID(nil, 1<<32)},
		{"txn rollback", wire.OpTxnRollback, wire.AppendTxnID(nil, 1<<32)},
		{"txn begin, wrong token", wire.OpTxnBegin, wire.AppendClient(nil, "tok2", nil)},
		{"kaya txn", wire.OpKayaTxn, wire.AppendCondTxn(nil, &wire.CondTxn{Then: []wire.CondOp{{Kind: wire.TxnOpPut, Key: []byte("a"), Value: []byte("b")}}})},
		{"get at", wire.OpGetAt, wire.AppendGetAt(nil, 0, []byte("a"))},
		{"scan at", wire.OpScanAt, wire.AppendScanAt(nil, wire.ScanAt{Prefix: []byte("a")})},
	} {
		if st, msg := rawCall(t, c, tc.op, tc.payload); st != wire.StatusError || msg != wire.MsgClientCredential {
			t.Errorf("%s: status %d %q; want 9 %q", tc.name, st, msg, wire.MsgClientCredential)
		}
	}
	if st, _ := rawCall(t, c, wire.OpPut, []byte("CLIENT\x00\x05")); st != wire.StatusInvalidArgument {
		t.Errorf("malformed prefix: status %d; want 1", st)
	}
	if st, _ := rawCall(t, c, wire.OpHello, wire.AppendHello(nil, 1)); st != wire.StatusOK {
		t.Errorf("HELLO refused: %d", st)
	}
	if st, _ := rawCall(t, c, wire.OpHealth, nil); st != wire.StatusOK {
		t.Errorf("HEALTH refused: %d", st)
	}
	// Nothing was written by the refused requests.
	if _, err := s.DB().Get([]byte("a")); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("a refused put reached the engine: %v", err)
	}
	// The protocol's worked bytes for "PUT a=b, client token tok".
	frame := []byte{0x17, 0, 0, 0, 0x01, 0x43, 0x4c, 0x49, 0x45, 0x4e, 0x54, 0x00, 0x03, 0x00, 0x74, 0x6f, 0x6b, 0x01, 0, 0, 0, 0x01, 0, 0, 0, 0x61, 0x62}
	if _, err := c.c.Write(frame); err != nil {
		t.Fatal(err)
	}
	if st, _, _, err := wire.ReadResponse(c.r, nil); err != nil || st != wire.StatusOK {
		t.Fatalf("PUT with the token: %d %v", st, err)
	}
	cl, err := client.New([]string{s.ClientAddr()}, &client.Options{ClientToken: token})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if v, err := cl.Get(ctx, []byte("a")); err != nil || string(v) != "b" {
		t.Fatalf("client Get with the token: %q %v", v, err)
	}
	if _, err := cl.Status(ctx, s.ClientAddr()); err != nil {
		t.Fatalf("client Status with the token: %v", err)
	}
	if strings.Contains(logs.String(), "tok2") {
		t.Fatal("a presented token appears in the log")
	}
}

// tlsCluster is a testCluster on loopback TCP (raft and client) with
// mutual TLS on both ports: every node has a certificate of the cluster's
// CA.
type tlsCluster struct {
	*testCluster
	files map[uint64]securitytest.Files
	ca    *securitytest.CA
	dir   string
}

// newTLSCluster starts n such nodes; mutate (optional) adjusts a node's
// configuration.
func newTLSCluster(t *testing.T, n int, mutate func(id uint64, cfg *Config)) *tlsCluster {
	t.Helper()
	c := &tlsCluster{files: map[uint64]securitytest.Files{}, dir: t.TempDir()}
	c.ca = securitytest.NewCA(t, "kaya test cluster CA")
	for id := uint64(1); id <= uint64(n); id++ {
		c.files[id] = c.ca.Issue(t, fmt.Sprintf("node%d.kaya.local", id), nil).Write(t, c.ca, c.dir, fmt.Sprintf("node%d", id))
	}
	c.testCluster = newCluster(t, n, clusterOpts{tcpRaft: true, logs: true, configure: func(id uint64, cfg *Config) {
		f := c.files[id]
		cfg.RequestTimeout = 3 * time.Second
		cfg.EngineOptions = &engine.Options{FS: cfg.EngineOptions.FS}
		cfg.TLS = security.TLSFiles{Cert: f.Cert, Key: f.Key, CA: f.CA}
		if mutate != nil {
			mutate(id, cfg)
		}
	}})
	return c
}

// clientTLS is a client configuration trusting the cluster CA, presenting
// cert when not nil.
func (c *tlsCluster) clientTLS(cert *securitytest.Pair) *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.ca.CertPEM)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		// Always present it: with Certificates, Go's client would
		// silently withhold a certificate the server's CA list does not
		// name, and the server's own check would go untested.
		kp := cert.TLSCertificate(c.t)
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &kp, nil }
	}
	return cfg
}

// tlsHello dials addr with cfg, sends HELLO and returns the peer's
// certificate serial or the error.
func tlsHello(addr string, cfg *tls.Config) (string, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	tc, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := tc.Write(wire.AppendRequest(nil, wire.OpHello, wire.AppendHello(nil, 1))); err != nil {
		return "", err
	}
	st, _, _, err := wire.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		return "", err
	}
	if st != wire.StatusOK {
		return "", fmt.Errorf("HELLO status %d", st)
	}
	return tc.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

// plainGetsNoReply sends bytes in the clear and reports whether the server
// closed the connection without sending a KayaDB reply.
func plainGetsNoReply(t *testing.T, addr string, payload []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write(payload); err != nil {
		return // closed already
	}
	b, err := io.ReadAll(c)
	if err == nil || errors.Is(err, io.EOF) || !isTimeout(err) {
		if _, _, _, rerr := wire.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil); rerr == nil && len(b) > 0 && b[0] != 0x15 {
			t.Fatalf("%s answered a plain request with a KayaDB reply: % x", addr, b)
		}
		return
	}
	t.Fatalf("%s: the TLS port hung on a plain client: %v", addr, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Controls: native TLS on both ports with a CA (mutual TLS): the cluster
// runs its raft traffic over TLS; clients without a certificate, with a
// certificate of another CA, or in plain TCP are refused on both ports.
func TestMutualTLSBothPorts(t *testing.T) {
	c := newTLSCluster(t, 3, nil)
	admin := c.ca.Issue(t, "admin-client.kaya.local", &securitytest.CertOptions{NameOnly: true})
	var addrs []string
	for _, m := range c.members() {
		addrs = append(addrs, m.ClientAddr)
	}
	cl, err := client.New(addrs, &client.Options{TLS: c.clientTLS(admin)})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	// Writes commit: a leader was elected and replicates over raft TLS.
	for i := 0; i < 20; i++ {
		if err := cl.Put(ctx, []byte(fmt.Sprintf("k%02d", i)), []byte("v")); err != nil {
			t.Fatalf("put over mTLS: %v", err)
		}
	}
	for id, s := range c.Nodes() {
		waitFor(t, fmt.Sprintf("node %d applied", id), func() bool {
			_, err := s.DB().Get([]byte("k19"))
			return err == nil
		})
	}

	other := securitytest.NewCA(t, "another CA")
	foreign := other.Issue(t, "node1.kaya.local", nil)
	for _, m := range c.members() {
		// A client certificate is required on the client port.
		if _, err := tlsHello(m.ClientAddr, c.clientTLS(nil)); err == nil {
			t.Errorf("%s: a client without a certificate was served", m.ClientAddr)
		}
		// A certificate from another CA is refused on both ports.
		if _, err := tlsHello(m.ClientAddr, c.clientTLS(foreign)); err == nil {
			t.Errorf("%s: a client with another CA's certificate was served", m.ClientAddr)
		}
		raftCfg := c.clientTLS(foreign)
		if rc, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", m.RaftAddr, raftCfg); err == nil {
			// TLS 1.3 client handshakes finish before the server has
			// checked the certificate; the refusal shows on the first read.
			_ = rc.SetDeadline(time.Now().Add(3 * time.Second))
			_, _ = rc.Write(make([]byte, 27))
			if _, err := rc.Read(make([]byte, 1)); err == nil {
				t.Errorf("%s: the raft port accepted a foreign certificate", m.RaftAddr)
			}
			rc.Close()
		}
		// Plain TCP gets no KayaDB answer on either port.
		plainGetsNoReply(t, m.ClientAddr, wire.AppendRequest(nil, wire.OpHello, wire.AppendHello(nil, 1)))
		plainGetsNoReply(t, m.RaftAddr, append([]byte("KAYARAFT"), make([]byte, 19)...))
		// The right client certificate works on every node.
		if _, err := tlsHello(m.ClientAddr, c.clientTLS(admin)); err != nil {
			t.Errorf("%s: the cluster's client certificate was refused: %v", m.ClientAddr, err)
		}
	}
	// A refused client may see the alert before the server has counted
	// the refusal: wait for the counters.
	rejected := uint64(0)
	deadline := time.Now().Add(10 * time.Second)
	for {
		rejected = 0
		for _, s := range c.Nodes() {
			rejected += tcpStats(s).RejectedTLS
		}
		if rejected >= 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if rejected < 6 {
		t.Errorf("raft ports counted %d TLS rejections; want at least 6 (foreign + plain on 3 nodes)", rejected)
	}
	joined := ""
	for id := range c.Nodes() {
		joined += c.Log(id)
	}
	for _, want := range []string{"closing client connection: TLS handshake failed", "plain TCP to a TLS port", "closing raft connection"} {
		if !strings.Contains(joined, want) {
			t.Errorf("logs lack %q", want)
		}
	}
	// The cluster is unharmed.
	if err := cl.Put(ctx, []byte("after"), []byte("ok")); err != nil {
		t.Fatalf("put after the refused connections: %v", err)
	}
}

// Control: a peer's certificate must belong to the cluster. A node whose
// certificate another CA signed cannot join the raft conversation: the
// other two still elect a leader and commit, and the outsider never
// learns a leader.
func TestPeerWithForeignCertificateIsShutOut(t *testing.T) {
	other := securitytest.NewCA(t, "rogue CA")
	var rogueFiles securitytest.Files
	c := newTLSCluster(t, 3, func(id uint64, cfg *Config) {
		if id != 3 {
			return
		}
		// Node 3 presents a certificate from another CA but trusts that
		// other CA only.
		dir := t.TempDir()
		rogueFiles = other.Issue(t, "node3.kaya.local", nil).Write(t, other, dir, "rogue")
		cfg.TLS = security.TLSFiles{Cert: rogueFiles.Cert, Key: rogueFiles.Key, CA: rogueFiles.CA}
	})
	admin := c.ca.Issue(t, "admin-client.kaya.local", nil)
	cl, err := client.New([]string{c.addr(1), c.addr(2)}, &client.Options{TLS: c.clientTLS(admin)})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := cl.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatalf("nodes 1 and 2 cannot commit: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := c.node(3).DB().Get([]byte("k")); err == nil {
		t.Fatal("the node with a foreign certificate received data")
	}
	if lead := c.node(3).Node().Leader(); lead == 1 || lead == 2 {
		t.Fatalf("the rogue node learned leader %d", lead)
	}
	if tcpStats(c.node(1)).RejectedTLS+tcpStats(c.node(2)).RejectedTLS == 0 {
		t.Fatal("no raft TLS rejection counted")
	}
}

// Control: a peer's certificate must belong to the cluster member it
// claims to be. An operator's client certificate, signed by the cluster
// CA but not issued for a node's raft address, cannot open a raft stream.
func TestRaftPortRequiresMemberCertificate(t *testing.T) {
	c := newTLSCluster(t, 1, nil)
	s, m := c.node(1), c.member(1)
	// Add member 2 to the roster so that the claim names a real member.
	s.ros.mu.Lock()
	s.ros.members[2] = Member{ID: 2, RaftAddr: "127.0.0.1:47999", ClientAddr: "127.0.0.1:47998"}
	s.ros.mu.Unlock()
	s.trans.SetPeers(s.ros.raftAddrs())
	try := func(cert *securitytest.Pair) error {
		cfg := c.clientTLS(cert)
		cfg.ServerName = "127.0.0.1"
		rc, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", m.RaftAddr, cfg)
		if err != nil {
			return err
		}
		defer rc.Close()
		_ = rc.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := rc.Write(encodeTestHandshake(2, 1)); err != nil {
			return err
		}
		// An accepted stream gets the acceptor's reply, status 0 (go on).
		reply := make([]byte, testReplySize)
		if _, err := io.ReadFull(rc, reply); err != nil {
			return fmt.Errorf("closed: %v", err)
		}
		if reply[0] != 0 {
			return fmt.Errorf("refused with status %d", reply[0])
		}
		return nil
	}
	before := s.trans.(*transport.TCP).Stats().RejectedTLS
	operator := c.ca.Issue(t, "admin-client.kaya.local", &securitytest.CertOptions{NameOnly: true})
	if err := try(operator); err == nil {
		t.Fatal("an operator's certificate opened a raft stream")
	}
	if s.trans.(*transport.TCP).Stats().RejectedTLS == before {
		t.Fatal("the refusal was not counted")
	}
	if !strings.Contains(c.Log(1), "does not belong to the member") {
		t.Fatal("the refusal was not logged")
	}
	// A node certificate valid for the member's address is accepted.
	if err := try(c.ca.Issue(t, "node2.kaya.local", nil)); err != nil {
		t.Fatalf("a member's certificate was refused: %v", err)
	}
}

// encodeTestHandshake is the hello of a raft stream without a peer token
// (see the transport package doc): magic, version 3, kind 0 (messages),
// from, to, auth 0, a 32-byte nonce.
func encodeTestHandshake(from, to uint64) []byte {
	b := append([]byte("KAYARAFT"), 3, 0, 0)
	b = binary.LittleEndian.AppendUint64(b, from)
	b = binary.LittleEndian.AppendUint64(b, to)
	b = append(b, 0)
	return append(b, make([]byte, 32)...)
}

// testReplySize is the size of the acceptor's reply to a hello: status,
// auth, nonce, proof.
const testReplySize = 1 + 1 + 32 + 32

// Control: bad TLS configuration fails startup with a message naming the
// file.
func TestBadTLSConfigFailsStartup(t *testing.T) {
	dir := t.TempDir()
	ca := securitytest.NewCA(t, "ca")
	good := ca.Issue(t, "node1.kaya.local", nil).Write(t, ca, dir, "node1")
	other := ca.Issue(t, "node2.kaya.local", nil).Write(t, nil, dir, "node2")
	expired := ca.Issue(t, "node1.kaya.local", &securitytest.CertOptions{NotBefore: time.Now().Add(-72 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}).Write(t, nil, dir, "expired")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", filepath.Join(dir, "missing.crt"), "--tls-key", good.Key}, "missing.crt"},
		{[]string{"--tls-cert", good.Cert, "--tls-key", other.Key}, "does not match"},
		{[]string{"--tls-cert", expired.Cert, "--tls-key", expired.Key}, "expired"},
		{[]string{"--tls-cert", good.Cert, "--tls-key", good.Key, "--tls-ca", filepath.Join(dir, "nope-ca.crt")}, "nope-ca.crt"},
		{[]string{"--tls-cert", good.Cert}, "--tls-cert needs --tls-key"},
		{[]string{"--tls-ca", good.CA}, "--tls-ca needs --tls-cert"},
	} {
		var out, errb bytes.Buffer
		args := append([]string{"--data", filepath.Join(t.TempDir(), "d"), "--client-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0"}, tc.args...)
		code := Main(args, &out, &errb)
		if code == exitOK || code == -1 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want a failure mentioning %q", tc.args, code, errb.String(), tc.want)
		}
	}
}

// Control: certificates reload without a restart, on request (SIGHUP
// calls ReloadTLS) and when the files change.
func TestTLSCertificateReload(t *testing.T) {
	c := newTLSCluster(t, 1, func(id uint64, cfg *Config) { cfg.TLSReloadInterval = 30 * time.Millisecond })
	s, addr, f := c.node(1), c.addr(1), c.files[1]
	admin := c.ca.Issue(t, "admin", nil)
	first := s.tls.Certificate().SerialNumber.String()
	if got, err := tlsHello(addr, c.clientTLS(admin)); err != nil || got != first {
		t.Fatalf("before: %s %v", got, err)
	}
	// Explicit reload (what SIGHUP does).
	second := c.ca.Issue(t, "node1.kaya.local", nil)
	second.Write(t, nil, c.dir, "node1")
	if err := s.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	if got, err := tlsHello(addr, c.clientTLS(admin)); err != nil || got != second.Cert.SerialNumber.String() {
		t.Fatalf("after ReloadTLS: serial %s (want %s), %v", got, second.Cert.SerialNumber, err)
	}
	// A broken file is refused and the node keeps serving.
	securitytest.WriteFile(t, f.Cert, []byte("broken"))
	if err := s.ReloadTLS(); err == nil {
		t.Fatal("reload of a broken certificate succeeded")
	}
	if got, err := tlsHello(addr, c.clientTLS(admin)); err != nil || got != second.Cert.SerialNumber.String() {
		t.Fatalf("after a failed reload: %s %v", got, err)
	}
	// The watcher notices changed files.
	third := c.ca.Issue(t, "node1.kaya.local", nil)
	third.Write(t, nil, c.dir, "node1")
	waitFor(t, "the watcher reloads", func() bool {
		got, err := tlsHello(addr, c.clientTLS(admin))
		return err == nil && got == third.Cert.SerialNumber.String()
	})
}

// Control: the data directory is private: created 0700 with files 0600,
// and a directory open to others draws a warning.
func TestDataDirectoryPermissions(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "data")
	c := newCluster(t, 1, clusterOpts{manual: true, logs: true, deferred: true, configure: func(_ uint64, cfg *Config) {
		cfg.DataDir, cfg.EngineOptions = dir, nil // real files
	}})
	// run starts the node, writes and stops it, and returns what it logged
	// so far.
	run := func() string {
		c.Start(1)
		c.Elect(1)
		cl := dial(t, c.addr(1))
		if st, _, err := cl.put("k", "v"); err != nil || st != wire.StatusOK {
			t.Fatalf("put: %d %v", st, err)
		}
		c.Stop(1)
		return c.Log(1)
	}
	out := run()
	if strings.Contains(out, "accessible by other users") {
		t.Fatalf("a fresh directory drew a warning:\n%s", out)
	}
	files := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		perm := info.Mode().Perm()
		if d.IsDir() && perm != 0o700 {
			t.Errorf("directory %s has mode %v; want 0700", p, perm)
		}
		if !d.IsDir() {
			files++
			if perm&0o077 != 0 {
				t.Errorf("file %s has mode %v; want no access for others", p, perm)
			}
		}
		return nil
	})
	if err != nil || files < 5 {
		t.Fatalf("walked %d files: %v", files, err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out := run(); !strings.Contains(out, "accessible by other users") || !strings.Contains(out, "chmod 700") {
		t.Fatalf("a 0755 data directory drew no warning:\n%s", out)
	}
}

// Control: running as root draws a prominent warning (and only then).
func TestRootWarning(t *testing.T) {
	_, logs := startSecured(t, Config{})
	got := strings.Contains(logs.String(), "RUNNING AS ROOT")
	if want := os.Geteuid() == 0; got != want {
		t.Fatalf("root warning logged = %v, running as root = %v", got, want)
	}
}

// Control: TLS on the metrics listener (--metrics-tls). The HTTP port
// serves the node's certificate; with a CA, a scraper must present a
// certificate it signed; plain HTTP is not answered with metrics.
func TestMetricsOverTLS(t *testing.T) {
	mln := map[uint64]net.Listener{}
	c := newTLSCluster(t, 1, func(id uint64, cfg *Config) {
		mln[id] = loopbackListener(t)
		cfg.MetricsListener, cfg.MetricsTLS = mln[id], true
	})
	addr := c.node(1).MetricsAddr()
	get := func(cfg *tls.Config, url string) (int, string, error) {
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
		resp, err := hc.Get(url)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	scraper := c.ca.Issue(t, "prometheus.kaya.local", &securitytest.CertOptions{NameOnly: true})
	cfg := c.clientTLS(scraper)
	cfg.ServerName = "node1.kaya.local"
	code, body, err := get(cfg, "https://"+addr+"/metrics")
	if err != nil || code != http.StatusOK || !strings.Contains(body, "kayadb_") {
		t.Fatalf("HTTPS /metrics with a CA-signed certificate: %d %v %.200q", code, err, body)
	}
	waitFor(t, "HTTPS /readyz answering 200", func() bool {
		code, _, err := get(cfg, "https://"+addr+"/readyz")
		return err == nil && code == http.StatusOK
	})
	noCert := c.clientTLS(nil)
	noCert.ServerName = "node1.kaya.local"
	if code, _, err := get(noCert, "https://"+addr+"/metrics"); err == nil {
		t.Errorf("a scraper without a client certificate got status %d", code)
	}
	foreign := securitytest.NewCA(t, "another CA").Issue(t, "prometheus.kaya.local", nil)
	bad := c.clientTLS(foreign)
	bad.ServerName = "node1.kaya.local"
	if code, _, err := get(bad, "https://"+addr+"/metrics"); err == nil {
		t.Errorf("a scraper with another CA's certificate got status %d", code)
	}
	if code, body, err := get(nil, "http://"+addr+"/metrics"); err == nil && (code == http.StatusOK || strings.Contains(body, "kayadb_")) {
		t.Errorf("plain HTTP got the metrics: %d %.200q", code, body)
	}
	// Without a certificate the option is refused, naming the fix.
	_, err = New(Config{NodeID: 1, DataDir: "/x", MetricsListener: loopbackListener(t), MetricsTLS: true,
		EngineOptions: &engine.Options{FS: vfs.NewMem()}, ClientListener: loopbackListener(t),
		NewTransport: func(h transport.Handler) transport.Transport { return transport.NewMemNetwork(1).Transport(1, h) }})
	if err == nil || !strings.Contains(err.Error(), "--tls-cert") {
		t.Errorf("MetricsTLS without a certificate: %v", err)
	}
}
