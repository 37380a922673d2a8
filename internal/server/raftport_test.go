package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/kayadb/kayadb/client"
	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/clustertest"
	"github.com/kayadb/kayadb/internal/crc"
	"github.com/kayadb/kayadb/internal/security"
	"github.com/kayadb/kayadb/internal/security/securitytest"
	"github.com/kayadb/kayadb/internal/transport"
	"github.com/kayadb/kayadb/internal/vfs"
)

// writeTokenFile writes a fresh 32-byte random secret, base64, mode 0600.
func writeTokenFile(t *testing.T, dir, name string) string {
	t.Helper()
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(base64.StdEncoding.EncodeToString(raw)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// newTokenCluster starts three nodes on loopback TCP (raft and client),
// each configured through ParseFlags with --peer-token-file, as
// kayadb-server would be.
func newTokenCluster(t *testing.T, tokenFile string) *testCluster {
	t.Helper()
	return newCluster(t, 3, clusterOpts{tcpRaft: true, logs: true, base: func(e *clustertest.Env) (Config, error) {
		var peerArgs []string
		for _, m := range e.Peers {
			peerArgs = append(peerArgs, "--peer", fmt.Sprintf("%d=%s,%s", m.ID, m.RaftAddr, m.ClientAddr))
		}
		var errb bytes.Buffer
		args := append([]string{"--node-id", fmt.Sprint(e.ID), "--peer-token-file", tokenFile, "--no-metrics",
			"--tick", "10ms", "--request-timeout", "3s"}, peerArgs...)
		cfg, code := ParseFlags(args, env(nil), &errb)
		if code != -1 {
			return cfg, fmt.Errorf("ParseFlags exit %d: %s", code, errb.String())
		}
		if cfg.PeerToken == "" {
			return cfg, errors.New("--peer-token-file did not reach the configuration")
		}
		cfg.Logger, cfg.RaftTicker = e.Logger, e.Ticker
		cfg.DataDir, cfg.EngineOptions = "/node", &engine.Options{FS: e.Disk}
		cfg.RaftListener, cfg.ClientListener = e.RaftListener, e.ClientListener
		return cfg, nil
	}})
}

// putCommand is a kv command as the state machine decodes it (see the kv
// package doc): op 1 (put) | id u64 | uvarint len | key | uvarint len | value.
func putCommand(key, value string) []byte {
	b := []byte{1}
	b = binary.LittleEndian.AppendUint64(b, 0xfeed)
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = binary.AppendUvarint(b, uint64(len(value)))
	return append(b, value...)
}

func rawFrame(t *testing.T, m *pb.Message) []byte {
	t.Helper()
	payload, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	f := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)))
	f = binary.LittleEndian.AppendUint32(f, crc.Masked(payload))
	return append(f, payload...)
}

// strangerSession connects to addr, writes data and reads what comes back
// until the node closes the connection.
func strangerSession(t *testing.T, addr string, data []byte) []byte {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	_, _ = c.Write(data)
	b, err := io.ReadAll(c)
	if isTimeout(err) {
		t.Fatalf("%s kept a stranger's connection open", addr)
	}
	return b
}

// The issue's attack: with TLS off, a stranger who knows a member's id (as
// /metrics shows it) forges one append from the leader, with an entry that
// puts a key and a commit index covering it, and sends it to every
// follower — which used to commit the key on every node. With
// --peer-token-file, no way of sending it reaches raft: no proof, a
// made-up proof, the previous handshake version, or a real transport with
// another secret. No key is committed, the rejections are counted, and
// the cluster goes on working.
func TestForgedRaftFramesNeedThePeerToken(t *testing.T) {
	dir := t.TempDir()
	c := newTokenCluster(t, writeTokenFile(t, dir, "peer.token"))
	var addrs []string
	for _, m := range c.members() {
		addrs = append(addrs, m.ClientAddr)
	}
	cl, err := client.New(addrs, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.Put(ctx, []byte("before"), []byte("1")); err != nil {
		t.Fatalf("the cluster with a peer token cannot commit: %v", err)
	}
	var lead uint64
	for lead == 0 {
		if lead = c.leaderGuess(); lead != 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("no leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	st := c.node(lead).Node().Status()
	for id, s := range c.Nodes() {
		for s.Node().Status().Applied < st.Commit {
			if ctx.Err() != nil {
				t.Fatalf("node %d did not apply %d", id, st.Commit)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	forged := func(to uint64) *pb.Message {
		next := st.Commit + 1
		return &pb.Message{Type: new(pb.MsgApp), From: new(lead), To: new(to), Term: new(st.Term),
			LogTerm: new(st.Term), Index: new(st.Commit), Commit: new(next),
			Entries: []*pb.Entry{{Type: new(pb.EntryNormal), Term: new(st.Term), Index: new(next), Data: putCommand("forged", "by a stranger")}}}
	}
	hello := func(version uint16, from, to uint64, auth byte) []byte {
		b := append([]byte("KAYARAFT"), 0, 0, 0)
		binary.LittleEndian.PutUint16(b[8:10], version)
		b = binary.LittleEndian.AppendUint64(b, from)
		b = binary.LittleEndian.AppendUint64(b, to)
		if version >= 3 {
			b = append(b, auth)
			b = append(b, make([]byte, 32)...)
		}
		return b
	}
	var followers []uint64
	for id := range c.Nodes() {
		if id != lead {
			followers = append(followers, id)
		}
	}
	before := map[uint64]transport.Stats{}
	for _, f := range followers {
		before[f] = tcpStats(c.node(f))
		addr := c.member(f).RaftAddr
		frame := rawFrame(t, forged(f))
		// No proof.
		if got := strangerSession(t, addr, append(hello(3, lead, f, 0), frame...)); len(got) == 0 || got[0] != 1 {
			t.Fatalf("node %d answered a hello without proof with % x", f, got)
		}
		// A made-up proof, sent right after the hello.
		strangerSession(t, addr, append(append(hello(3, lead, f, 1), make([]byte, 32)...), frame...))
		// The handshake of the previous release, which carried no proof.
		strangerSession(t, addr, append(hello(2, lead, f, 0), frame...))
	}
	// A real transport that claims the leader's id with another secret.
	impostor := transport.NewTCP(transport.TCPOptions{ID: lead, Handler: nopHandler{}, PeerToken: []byte("not-the-cluster-secret-0123456789")})
	defer impostor.Close()
	roster := map[uint64]string{}
	for _, f := range followers {
		roster[f] = c.member(f).RaftAddr
	}
	impostor.SetPeers(roster)
	for _, f := range followers {
		impostor.Send([]*pb.Message{forged(f)})
	}
	for _, f := range followers {
		for {
			s := tcpStats(c.node(f))
			if s.RejectedAuth >= before[f].RejectedAuth+3 && s.RejectedVersion >= before[f].RejectedVersion+1 {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("node %d: rejections not counted: %+v", f, s)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if impostor.Stats().RejectedAuth == 0 {
		t.Fatalf("the impostor transport was not refused: %+v", impostor.Stats())
	}
	// One more write through the real cluster: the forged entry, had it
	// been appended at that index, would now show on some node.
	if err := cl.Put(ctx, []byte("after"), []byte("2")); err != nil {
		t.Fatalf("the cluster stopped working: %v", err)
	}
	for id, s := range c.Nodes() {
		for {
			if _, err := s.DB().Get([]byte("after")); err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("node %d never applied the later write", id)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if _, err := s.DB().Get([]byte("forged")); !errors.Is(err, engine.ErrNotFound) {
			t.Fatalf("node %d has the forged key (err %v)", id, err)
		}
		if s.Node().Status().Role == raft.StateLeader && id != lead {
			t.Logf("leadership moved to %d", id)
		}
	}
	for _, f := range followers {
		if !strings.Contains(c.Log(f), "configure the same --peer-token-file on every node") {
			t.Errorf("node %d's log does not name the fix:\n%s", f, c.Log(f))
		}
	}
}

// TestPublicBindNeedsRaftPortAuth: with --allow-public-bind and no mutual
// TLS, a node whose raft port is reachable from other machines refuses to
// start without a peer token, with a message naming the fix; with a peer
// token it starts, and a raft port on loopback is exempt (with a banner
// line). TLS without a CA does not count.
func TestPublicBindNeedsRaftPortAuth(t *testing.T) {
	start := func(cfg Config) (*Server, *syncBuffer, error) {
		logs := &syncBuffer{}
		cfg.NodeID, cfg.DataDir = 1, "/node"
		cfg.EngineOptions = &engine.Options{FS: vfs.NewMem()}
		cfg.TickInterval, cfg.RequestTimeout = 10*time.Millisecond, 2*time.Second
		cfg.ClientAddr, cfg.ClientListener = "0.0.0.0:7379", loopbackListener(t)
		cfg.RaftListener = loopbackListener(t)
		cfg.AllowPublicBind = true
		cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
		s, err := New(cfg)
		if err != nil {
			_ = cfg.ClientListener.Close()
			_ = cfg.RaftListener.Close()
			return nil, logs, err
		}
		t.Cleanup(func() { _ = s.Close() })
		return s, logs, nil
	}
	for _, raftAddr := range []string{"0.0.0.0:7481", "10.0.0.5:7481"} {
		_, _, err := start(Config{RaftAddr: raftAddr})
		if err == nil {
			t.Fatalf("raft on %s without a peer token or mutual TLS: started", raftAddr)
		}
		for _, want := range []string{"--allow-public-bind", "--raft-addr " + raftAddr, "--peer-token-file", "head -c 32 /dev/urandom | base64 > FILE", "--tls-ca"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
	}
	// TLS without a CA checks nobody who dials in: still refused.
	ca := securitytestCA(t)
	if _, _, err := start(Config{RaftAddr: "0.0.0.0:7481", TLS: ca.noCA}); err == nil || !strings.Contains(err.Error(), "--peer-token-file") {
		t.Fatalf("TLS without a CA: %v", err)
	}
	if _, _, err := start(Config{RaftAddr: "0.0.0.0:7481", PeerToken: "0123456789abcdef0123"}); err != nil {
		t.Fatalf("with a peer token: %v", err)
	}
	if _, _, err := start(Config{RaftAddr: "0.0.0.0:7481", TLS: ca.mutual}); err != nil {
		t.Fatalf("with mutual TLS: %v", err)
	}
	_, logs, err := start(Config{RaftAddr: "127.0.0.1:7481"})
	if err != nil {
		t.Fatalf("raft on loopback: %v", err)
	}
	if !strings.Contains(logs.String(), "raft port listens on loopback WITHOUT a peer token") {
		t.Errorf("no banner line:\n%s", logs)
	}
	// Short tokens are refused in production mode; the peer token always.
	if _, _, err := start(Config{RaftAddr: "0.0.0.0:7481", PeerToken: "0123456789abcdef0123", ClientToken: "short"}); err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Fatalf("short client token: %v", err)
	}
	cln, rln := loopbackListener(t), loopbackListener(t)
	defer cln.Close()
	defer rln.Close()
	if _, err := New(Config{NodeID: 1, DataDir: "/node", EngineOptions: &engine.Options{FS: vfs.NewMem()}, PeerToken: "short",
		ClientListener: cln, RaftListener: rln}); err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Fatalf("short peer token: %v", err)
	}
}

// tlsVariants are a node's TLS files without and with the CA (mutual TLS).
type tlsVariants struct{ noCA, mutual security.TLSFiles }

func securitytestCA(t *testing.T) tlsVariants {
	t.Helper()
	ca := securitytest.NewCA(t, "raft port test CA")
	f := ca.Issue(t, "node1.kaya.local", nil).Write(t, ca, t.TempDir(), "node1")
	return tlsVariants{noCA: security.TLSFiles{Cert: f.Cert, Key: f.Key}, mutual: security.TLSFiles{Cert: f.Cert, Key: f.Key, CA: f.CA}}
}

// TestPeerTokenFlag: --peer-token-file (and KAYA_PEER_TOKEN_FILE, and the
// config file key) reads the token; a short token, a world-writable file,
// and short client or operator tokens with --allow-public-bind are refused
// with messages naming the file and the fix.
func TestPeerTokenFlag(t *testing.T) {
	dir := t.TempDir()
	good := writeTokenFile(t, dir, "peer.token")
	want, _ := os.ReadFile(good)
	parse := func(args []string, e map[string]string) (Config, int, string) {
		var errb bytes.Buffer
		cfg, code := ParseFlags(args, env(e), &errb)
		return cfg, code, errb.String()
	}
	for name, run := range map[string]func() (Config, int, string){
		"flag": func() (Config, int, string) { return parse([]string{"--peer-token-file", good}, nil) },
		"env":  func() (Config, int, string) { return parse(nil, map[string]string{"KAYA_PEER_TOKEN_FILE": good}) },
		"config": func() (Config, int, string) {
			conf := filepath.Join(dir, "kayadb.yaml")
			if err := os.WriteFile(conf, []byte("peer-token-file: "+good+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return parse([]string{"--config", conf}, nil)
		},
	} {
		cfg, code, errs := run()
		if code != -1 || cfg.PeerToken != strings.TrimSpace(string(want)) {
			t.Errorf("%s: exit %d, token %q: %s", name, code, cfg.PeerToken, errs)
		}
	}
	short := filepath.Join(dir, "short.token")
	if err := os.WriteFile(short, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, code, errs := parse([]string{"--peer-token-file", short}, nil)
	for _, w := range []string{"--peer-token-file " + short, "3 bytes", "at least 16", "head -c 32 /dev/urandom | base64 > " + short} {
		if code != exitUsage || !strings.Contains(errs, w) {
			t.Errorf("short peer token: exit %d, %q lacks %q", code, errs, w)
		}
	}
	if err := os.Chmod(good, 0o666); err != nil {
		t.Fatal(err)
	}
	_, code, errs = parse([]string{"--peer-token-file", good}, nil)
	if code != exitUsage || !strings.Contains(errs, "writable by every user") || !strings.Contains(errs, "chmod 600 "+good) {
		t.Errorf("world-writable peer token file: exit %d: %s", code, errs)
	}
	// Client and operator tokens: short ones pass on a private node (with
	// a warning at startup) and are refused with --allow-public-bind.
	if _, code, errs = parse([]string{"--client-token", "shortie"}, nil); code != -1 {
		t.Errorf("short client token without --allow-public-bind: exit %d: %s", code, errs)
	}
	if _, code, errs = parse([]string{"--allow-public-bind", "--client-token", "shortie"}, nil); code != exitUsage || !strings.Contains(errs, "--client-token is 7 bytes") {
		t.Errorf("short client token with --allow-public-bind: exit %d: %s", code, errs)
	}
	if _, code, errs = parse([]string{"--allow-public-bind", "--operator-token-file", short}, nil); code != exitUsage ||
		!strings.Contains(errs, "--operator-token-file "+short) || !strings.Contains(errs, "chmod 600 "+short) {
		t.Errorf("short operator token file with --allow-public-bind: exit %d: %s", code, errs)
	}
}
