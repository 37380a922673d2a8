package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kayadb/kayadb/client"
	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/vfs"
	"github.com/kayadb/kayadb/internal/wire"
)

// Tests of the client port's limits (clientlimits.go): reply memory per
// connection and for the server, connection limits and fairness, idle and
// frame timeouts, credentials checked before the payload is read, and the
// addresses ADD_MEMBER accepts.

// dialFrom connects to addr from a loopback address of choice: 127.0.0.N
// are all this machine, and each is a source address of its own.
func dialFrom(t *testing.T, addr, local string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// deafConn dials a client that will not read for a while, with a small
// receive buffer: the kernel (whose buffers autotune up to tens of MiB on
// loopback) then holds little of what the server writes, and the server's
// writer blocks soon.
func deafConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10) })
		return errors.Join(err, serr)
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// heapInUse is the live heap after a collection.
func heapInUse() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// loadValues writes n keys prefix%03d with values of size bytes (byte i
// repeated) through the protocol.
func loadValues(t *testing.T, addr, prefix string, n, size int) {
	t.Helper()
	c := dial(t, addr)
	for i := range n {
		put := wire.AppendPut(nil, []byte(fmt.Sprintf("%s%03d", prefix, i)), bytes.Repeat([]byte{byte(i)}, size))
		for attempt := 1; ; attempt++ {
			st, p, err := c.do(wire.OpPut, put)
			if err == nil && st == wire.StatusOK {
				break
			}
			// A loaded machine (-race) may time a write out; writing the
			// same value again is harmless.
			if msg, _ := wire.DecodeError(p); err != nil || attempt == 5 || !strings.Contains(msg, "timed out") {
				t.Fatalf("put %d: %v %v %q", i, st, err, p)
			}
		}
	}
	_ = c.c.Close()
}

// checkScan checks a SCAN reply over loadValues' keys.
func checkScan(t *testing.T, st wire.Status, p []byte, prefix string, n, size int) {
	t.Helper()
	if st != wire.StatusOK {
		msg, _ := wire.DecodeError(p)
		t.Fatalf("scan: %v %q", st, msg)
	}
	kvs, err := wire.DecodeScanResult(p)
	if err != nil || len(kvs) != n {
		t.Fatalf("scan: %d items, %v; want %d", len(kvs), err, n)
	}
	for i, kv := range kvs {
		if string(kv.Key) != fmt.Sprintf("%s%03d", prefix, i) || len(kv.Value) != size || kv.Value[0] != byte(i) || kv.Value[size-1] != byte(i) {
			t.Fatalf("scan item %d: key %q, %d bytes", i, kv.Key, len(kv.Value))
		}
	}
}

// metricValue reads a counter or gauge from the server's registry (as
// /metrics would show it); labels are name, value pairs.
func metricValue(t *testing.T, s *Server, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := s.obs.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
				}
				if !found {
					continue metrics
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

// waitUntil polls cond (every few milliseconds) until it holds or 30 s pass.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Control: reply memory per connection. A client pipelines SCANs over
// 16 MiB of data and reads nothing: the server stops reading its requests
// once a reply waits for it, and holds about one reply instead of all of
// them (issue 11: 24 SCANs held 4.9 GB). Then the client reads, and every
// reply arrives, correct and in order.
func TestPipelinedScansNeverReadAreBounded(t *testing.T) {
	// A small block cache: the heap measures replies, not cached blocks.
	s, _ := startSecured(t, Config{EngineOptions: &engine.Options{FS: vfs.NewMem(), CacheSize: 1 << 20}})
	addr := s.ClientAddr()
	const items, size, scans = 32, 512 << 10, 16
	loadValues(t, addr, "big/", items, size)
	reply := int64(items * (size + 16))

	nc := deafConn(t, addr)
	before := heapInUse()
	var reqs []byte
	for range scans {
		reqs = wire.AppendRequest(reqs, wire.OpScan, wire.AppendKey(nil, []byte("big/")))
	}
	if _, err := nc.Write(reqs); err != nil {
		t.Fatal(err)
	}
	// Stalled: the reader waits for room, and the first reply (no longer
	// its estimate) is being written to a client that does not read.
	deadline := time.Now().Add(60 * time.Second)
	for s.clim.readersWaiting() != 1 || s.clim.replyMem.inUse() >= maxScanReply {
		if time.Now().After(deadline) {
			t.Fatalf("the server never stopped reading the connection's requests; heap grew by %d MiB", (heapInUse()-before)>>20)
		}
		time.Sleep(10 * time.Millisecond)
	}
	grown := heapInUse() - before
	bound := defaultConnReplyBytes + reply + 24<<20 // slack: the engine's and the runtime's own
	t.Logf("heap grew by %d MiB holding %d pipelined SCANs of %d MiB each (bound %d MiB)", grown>>20, scans, reply>>20, bound>>20)
	if grown > bound {
		t.Fatalf("the heap grew by %d MiB, more than %d MiB: replies to a client that does not read are not bounded", grown>>20, bound>>20)
	}
	if used := s.clim.replyMem.inUse(); used > reply+smallReplyEstimate {
		t.Fatalf("%d bytes of reply memory in use; want at most one reply (%d)", used, reply)
	}

	// The client reads: every reply, in order.
	_ = nc.(*net.TCPConn).SetReadBuffer(4 << 20)
	_ = nc.SetReadDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReader(nc)
	for i := range scans {
		st, p, _, err := wire.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		checkScan(t, st, p, "big/", items, size)
	}
	waitUntil(t, "the reply memory to be released", func() bool { return s.clim.replyMem.inUse() == 0 })
}

// Control: a GET whose value does not fit in its connection's bound is run
// again once there is room, instead of being held: a client pipelining
// GETs of 1 MiB values and reading nothing holds about one of them.
func TestPipelinedLargeGetsNeverReadAreBounded(t *testing.T) {
	// GETs, and GET_ATs of the applied state: both are served on the
	// reader, which holds small replies for the next one's write and
	// must never wait for room its held replies take.
	t.Run("GET", func(t *testing.T) { pipelinedLargeGets(t, wire.OpGet) })
	t.Run("GET_AT", func(t *testing.T) { pipelinedLargeGets(t, wire.OpGetAt) })
}

func pipelinedLargeGets(t *testing.T, op wire.Opcode) {
	s, _ := startSecured(t, Config{MaxConnReplyBytes: 1 << 20, EngineOptions: &engine.Options{FS: vfs.NewMem(), CacheSize: 1 << 20}})
	addr := s.ClientAddr()
	const keys, size, gets = 10, 1 << 20, 60
	loadValues(t, addr, "v/", keys, size)

	nc := deafConn(t, addr)
	before := heapInUse()
	var reqs []byte
	for i := range gets {
		key := []byte(fmt.Sprintf("v/%03d", i%keys))
		if op == wire.OpGetAt {
			reqs = wire.AppendRequest(reqs, op, wire.AppendGetAt(nil, wire.ReadTSLocal, key))
		} else {
			reqs = wire.AppendRequest(reqs, op, wire.AppendKey(nil, key))
		}
	}
	if _, err := nc.Write(reqs); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the server to stop reading", func() bool { return s.clim.readersWaiting() == 1 })
	if used := s.clim.replyMem.inUse(); used > 2<<20+gets*getReplyEstimate {
		t.Fatalf("%d KiB of reply memory in use; want at most the connection's bound and one value", used>>10)
	}
	// GETs read their value before it is charged, and drop it when it does
	// not fit: once those in flight have dropped theirs, the heap holds
	// about the connection's bound.
	var grown int64
	deadline := time.Now().Add(30 * time.Second)
	for grown = heapInUse() - before; grown > 12<<20; grown = heapInUse() - before {
		if time.Now().After(deadline) {
			t.Fatalf("the heap holds %d MiB more for %d MiB of unread GET replies", grown>>20, gets*size>>20)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("heap grew by %d MiB for %d MiB of unread GET replies", grown>>20, gets*size>>20)
	_ = nc.(*net.TCPConn).SetReadBuffer(4 << 20)
	_ = nc.SetReadDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReader(nc)
	for i := range gets {
		st, p, _, err := wire.ReadResponse(r, nil)
		if err != nil || st != wire.StatusOK {
			t.Fatalf("get %d: %v %v", i, st, err)
		}
		var v []byte
		if op == wire.OpGetAt {
			v, _, err = wire.DecodeGetAtReply(p)
		} else {
			v, err = wire.DecodeValue(p)
		}
		if err != nil || len(v) != size || v[0] != byte(i%keys) {
			t.Fatalf("get %d: %d bytes, %v", i, len(v), err)
		}
	}
}

// Control: the server's reply memory. While a large request holds most of
// --max-reply-memory, a SCAN (which may need 64 MiB) waits for room and is
// refused after its request timeout with an error naming the flag; small
// requests are served meanwhile; the waiting connection, having a request
// in flight, outlives the idle timeout; and once the memory is free the
// SCAN is served.
func TestReplyMemoryBudget(t *testing.T) {
	s, _ := startSecured(t, Config{MaxReplyMemory: 48 << 20, ClientIdleTimeout: 500 * time.Millisecond})
	addr := s.ClientAddr()
	loadValues(t, addr, "k/", 3, 10)

	// A announces a 40 MiB request and sends it slowly: its payload is
	// charged before it is read.
	a := dialFrom(t, addr, "")
	hdr := binary.LittleEndian.AppendUint32(nil, 1+40<<20)
	if _, err := a.Write(append(hdr, byte(wire.OpPut), 1, 2, 3)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the large request to be charged", func() bool { return s.clim.replyMem.inUse() >= 40<<20 })

	b := dial(t, addr)
	if _, err := b.c.Write(wire.AppendRequest(nil, wire.OpScan, wire.AppendKey(nil, []byte("k/")))); err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr)
	if st, _, err := c.put("small", "ok"); err != nil || st != wire.StatusOK {
		t.Fatalf("a small PUT while the budget is full: %v %v", st, err)
	}
	if st, v, err := c.get("k/001"); err != nil || st != wire.StatusOK || len(v) != 10 {
		t.Fatalf("a small GET while the budget is full: %v %v", st, err)
	}
	_ = b.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	st, p, _, err := wire.ReadResponse(b.r, nil)
	if err != nil {
		t.Fatalf("the waiting SCAN got no reply (its connection closed while it waited?): %v", err)
	}
	msg, _ := wire.DecodeError(p)
	if st != wire.StatusError || !strings.Contains(msg, "--max-reply-memory") {
		t.Fatalf("SCAN without room: %v %q", st, msg)
	}
	if n := metricValue(t, s, "kayadb_client_reply_memory_refusals_total"); n != 1 {
		t.Fatalf("reply memory refusals counted: %v", n)
	}

	_ = a.Close()
	waitUntil(t, "the large request's memory to be released", func() bool { return s.clim.replyMem.inUse() == 0 })
	b = dial(t, addr) // the first, idle since its reply, is closed by now
	st, p, err = b.do(wire.OpScan, wire.AppendKey(nil, []byte("k/")))
	if err != nil {
		t.Fatal(err)
	}
	checkScan(t, st, p, "k/", 3, 10)
}

// Controls: --max-client-connections and per-source fairness. A
// connection over a limit gets one ERROR frame naming the limit and the
// flag and is closed; the refusal is counted by reason; a slot freed is
// available again.
func TestClientConnectionLimits(t *testing.T) {
	s, _ := startSecured(t, Config{MaxClientConnections: 8, MaxClientConnectionsPerSource: 4})
	addr := s.ClientAddr()
	hello := func(c net.Conn) (wire.Status, string, error) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(wire.AppendRequest(nil, wire.OpHello, wire.AppendHello(nil, 1))); err != nil {
			return 0, "", err
		}
		r := bufio.NewReader(c)
		st, p, _, err := wire.ReadResponse(r, nil)
		if err != nil {
			return 0, "", err
		}
		msg := ""
		if st != wire.StatusOK {
			msg, _ = wire.DecodeError(p)
		}
		// A refused connection is closed after its one frame.
		if st != wire.StatusOK {
			if _, _, _, err := wire.ReadResponse(r, nil); err == nil {
				return st, msg, errors.New("a second frame on a refused connection")
			}
		}
		return st, msg, nil
	}
	var one []net.Conn
	for range 4 {
		c := dialFrom(t, addr, "127.0.0.1")
		if st, msg, err := hello(c); err != nil || st != wire.StatusOK {
			t.Fatalf("connection within the limits: %v %q %v", st, msg, err)
		}
		one = append(one, c)
	}
	st, msg, err := hello(dialFrom(t, addr, "127.0.0.1"))
	if err != nil || st != wire.StatusError || !strings.Contains(msg, "too many client connections from 127.0.0.1") || !strings.Contains(msg, "--max-client-connections") {
		t.Fatalf("a fifth connection from one source: %v %q %v", st, msg, err)
	}
	for range 4 {
		if st, msg, err := hello(dialFrom(t, addr, "127.0.0.2")); err != nil || st != wire.StatusOK {
			t.Fatalf("connection from another source: %v %q %v", st, msg, err)
		}
	}
	st, msg, err = hello(dialFrom(t, addr, "127.0.0.3"))
	if err != nil || st != wire.StatusError || msg != "too many client connections (8, --max-client-connections); try again later" {
		t.Fatalf("a ninth connection: %v %q %v", st, msg, err)
	}
	// The Go client shows the refusal as the error of its request.
	cl, err := client.New([]string{addr}, &client.Options{RequestTimeout: 5 * time.Second, MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Get(t.Context(), []byte("k")); err == nil || !strings.Contains(err.Error(), "too many client connections from 127.0.0.1") {
		t.Fatalf("the Go client over the limit: %v", err)
	}
	// A refusal is counted once its ERROR frame is written, which may be
	// after the client read it.
	waitUntil(t, "the refusals to be counted", func() bool {
		return metricValue(t, s, "kayadb_client_connections_refused_total", "reason", refusedPerSource) >= 2 &&
			metricValue(t, s, "kayadb_client_connections_refused_total", "reason", refusedMaxConns) >= 1
	})
	if got := metricValue(t, s, "kayadb_client_connections_refused_total", "reason", refusedMaxConns); got != 1 {
		t.Errorf("max-connections refusals counted: %v", got)
	}
	// A slot freed is taken again.
	_ = one[0].Close()
	waitUntil(t, "the closed connection to be forgotten", func() bool {
		s.clim.mu.Lock()
		defer s.clim.mu.Unlock()
		return s.clim.total == 7
	})
	if st, msg, err := hello(dialFrom(t, addr, "127.0.0.3")); err != nil || st != wire.StatusOK {
		t.Fatalf("after a connection closed: %v %q %v", st, msg, err)
	}
}

// Control: a flood of 4,096 connections from one address — idle, or
// sending a frame one byte at a time — takes at most its source's share of
// the default 1,024 slots; a client from another address is served.
// (Before: 4,096 connections filled an undocumented cap and every new
// client was refused in silence.)
func TestConnectionFloodDoesNotLockOutOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 4,096 connections")
	}
	s, _ := startSecured(t, Config{})
	addr := s.ClientAddr()
	const flood = 4096
	conns := make([]net.Conn, 0, flood)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}}
	for i := range flood {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("flood connection %d: %v", i, err)
		}
		if i%2 == 1 {
			_, _ = c.Write([]byte{5}) // the first byte of a frame, and no more
		}
		conns = append(conns, c)
	}
	perSource := max(minPerSource, defaultMaxClientConnections/4)
	waitUntil(t, "the flood to be sorted out", func() bool {
		return metricValue(t, s, "kayadb_client_connections_refused_total", "reason", refusedPerSource) == flood-float64(perSource)
	})
	other := dialFrom(t, addr, "127.0.0.2")
	c := &conn{c: other, r: bufio.NewReader(other)}
	if st, _, err := c.put("during", "flood"); err != nil || st != wire.StatusOK {
		t.Fatalf("a client from another address during the flood: %v %v", st, err)
	}
	if st, v, err := c.get("during"); err != nil || st != wire.StatusOK || string(v) != "flood" {
		t.Fatalf("get during the flood: %v %q %v", st, v, err)
	}
	s.clim.mu.Lock()
	open := s.clim.total
	s.clim.mu.Unlock()
	if open > perSource+1 {
		t.Fatalf("%d client connections open; the flood's share is %d", open, perSource)
	}
}

// Controls: --client-idle-timeout and --client-frame-timeout. An idle
// connection is closed; so is one whose frame arrives a byte at a time;
// so is one whose client reads none of its replies (its memory is given
// back). Each is counted by reason.
func TestClientTimeouts(t *testing.T) {
	s, _ := startSecured(t, Config{ClientIdleTimeout: 300 * time.Millisecond, ClientFrameTimeout: 300 * time.Millisecond})
	addr := s.ClientAddr()
	closedByServer := func(c net.Conn, what string) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		r := bufio.NewReader(c)
		for {
			if _, _, _, err := wire.ReadResponse(r, nil); err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "reset") {
					return
				}
				t.Fatalf("%s: the server did not close the connection: %v", what, err)
			}
		}
	}

	// Idle from the start, and idle after a request.
	closedByServer(dialFrom(t, addr, ""), "a connection that sends nothing")
	c := dial(t, addr)
	if st, _, err := c.do(wire.OpHealth, nil); err != nil || st != wire.StatusOK {
		t.Fatalf("health: %v %v", st, err)
	}
	closedByServer(c.c, "a connection idle after its request")
	if got := metricValue(t, s, "kayadb_client_connections_timed_out_total", "reason", closedIdle); got != 2 {
		t.Errorf("idle closes counted: %v", got)
	}

	// Slowloris: a frame that arrives a byte at a time.
	slow := dialFrom(t, addr, "")
	frame := wire.AppendRequest(nil, wire.OpPut, wire.AppendPut(nil, []byte("k"), make([]byte, 1000)))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, b := range frame {
			if _, err := slow.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	closedByServer(slow, "a frame sent a byte at a time")
	_ = slow.Close()
	<-done
	if got := metricValue(t, s, "kayadb_client_connections_timed_out_total", "reason", closedFrame); got != 1 {
		t.Errorf("frame timeouts counted: %v", got)
	}

	// A client that reads none of its replies. (Small frames: this
	// server's frame timeout is short.)
	loadValues(t, addr, "w/", 64, 64<<10)
	deaf := deafConn(t, addr)
	var reqs []byte
	for range 4 {
		reqs = wire.AppendRequest(reqs, wire.OpScan, wire.AppendKey(nil, []byte("w/")))
	}
	if _, err := deaf.Write(reqs); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the deaf client to be dropped", func() bool {
		return metricValue(t, s, "kayadb_client_connections_timed_out_total", "reason", closedWrite) == 1
	})
	waitUntil(t, "its reply memory to be released", func() bool { return s.clim.replyMem.inUse() == 0 })
}

// Control: with a client token (or an operator token), a request's auth
// prefix is checked before its payload is read: a frame announcing 64 MiB
// with a wrong or missing token is refused having sent only its prefix,
// and the rest of the frame, when it comes, is skipped without being held.
// An opcode without credentials (HELLO) keeps only a few bytes of a large
// payload. With the right token, a large request is read and served.
func TestTokenCheckedBeforePayload(t *testing.T) {
	const clTok, opTok = "client-token-0123456789", "operator-token-0123456789"
	s, _ := startSecured(t, Config{ClientToken: clTok, OperatorToken: opTok})
	addr := s.ClientAddr()
	head := func(op wire.Opcode, n int, start []byte) []byte {
		return append(append(binary.LittleEndian.AppendUint32(nil, uint32(1+n)), byte(op)), start...)
	}
	big := wire.MaxFrameSize - 1
	for _, tc := range []struct {
		name  string
		op    wire.Opcode
		start []byte
		want  string
	}{
		{"a wrong client token", wire.OpPut, wire.AppendClient(nil, "wrong", nil), wire.MsgClientCredential},
		{"no client prefix", wire.OpPut, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0}, wire.MsgClientCredential},
		{"a wrong operator token", wire.OpAddMember, wire.AppendAdmin(nil, "wrong", wire.OpAddMember, nil), wire.MsgOperatorCredential},
		{"a mismatched admin opcode", wire.OpAddMember, wire.AppendAdmin(nil, opTok, wire.OpRemoveMember, nil), wire.MsgAdminMismatch},
	} {
		nc := dialFrom(t, addr, "")
		if _, err := nc.Write(head(tc.op, big, tc.start)); err != nil {
			t.Fatal(err)
		}
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(nc)
		st, p, _, err := wire.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("%s: no reply before the payload was sent: %v", tc.name, err)
		}
		if msg, _ := wire.DecodeError(p); st == wire.StatusOK || msg != tc.want {
			t.Fatalf("%s: %v %q, want %q", tc.name, st, msg, tc.want)
		}
		if tc.name == "a wrong client token" {
			// The rest of the frame is skipped; the connection stays in
			// step and serves the next request.
			before := heapInUse()
			if _, err := nc.Write(make([]byte, big-len(tc.start))); err != nil {
				t.Fatal(err)
			}
			if _, err := nc.Write(wire.AppendRequest(nil, wire.OpHello, wire.AppendHello(nil, 1))); err != nil {
				t.Fatal(err)
			}
			if st, _, _, err := wire.ReadResponse(r, nil); err != nil || st != wire.StatusOK {
				t.Fatalf("HELLO after a skipped frame: %v %v", st, err)
			}
			if grown := heapInUse() - before; grown > 16<<20 {
				t.Fatalf("the heap grew by %d MiB while the server skipped a refused 64 MiB frame", grown>>20)
			}
		}
		_ = nc.Close()
	}

	// HELLO needs no token: its reply comes before the rest of a large
	// payload.
	nc := dialFrom(t, addr, "")
	if _, err := nc.Write(head(wire.OpHello, big, wire.AppendHello(nil, 1))); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if st, _, _, err := wire.ReadResponse(bufio.NewReader(nc), nil); err != nil || st != wire.StatusOK {
		t.Fatalf("HELLO with a large payload: %v %v", st, err)
	}

	// The right token: the prefix first, the payload later, then served.
	c := dial(t, addr)
	value := bytes.Repeat([]byte{'v'}, 1<<20)
	full := wire.AppendRequest(nil, wire.OpPut, wire.AppendClient(nil, clTok, wire.AppendPut(nil, []byte("big"), value)))
	split := 5 + len(wire.AppendClient(nil, clTok, nil))
	if _, err := c.c.Write(full[:split]); err != nil {
		t.Fatal(err)
	}
	if _, err := c.c.Write(full[split:]); err != nil {
		t.Fatal(err)
	}
	_ = c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if st, p, _, err := wire.ReadResponse(c.r, nil); err != nil || st != wire.StatusOK {
		t.Fatalf("a large PUT with the right token: %v %q %v", st, p, err)
	}
	st, p, err := c.do(wire.OpGet, wire.AppendClient(nil, clTok, wire.AppendKey(nil, []byte("big"))))
	if v, _ := wire.DecodeValue(p); err != nil || st != wire.StatusOK || !bytes.Equal(v, value) {
		t.Fatalf("reading it back: %v %v", st, err)
	}
}

// Control: ADD_MEMBER validates the addresses it will put in the roster as
// --peer validates them: a host (an IP address or a DNS name) and a port
// from 1 to 65535, no control characters, no spaces.
func TestAddMemberAddressValidation(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		ok     bool
		listen bool // also valid as a listen address
		want   string
	}{
		{"10.0.0.5:7481", true, true, ""},
		{"node-1.kaya.internal:7481", true, true, ""},
		{"kaya_node1:7481", true, true, ""},
		{"localhost:1", true, true, ""},
		{"[::1]:7379", true, true, ""},
		{"[fd00::5]:65535", true, true, ""},
		{"example.com.:7481", true, true, ""},
		{"127.0/0.1:q", false, false, "the port \"q\""},
		{"127.0/0.1:7481", false, false, "not an IP address or a DNS name"},
		{"127.0.0:7481", false, false, "does not end in a number"},
		{"1.2.3.4.5:7481", false, false, "does not end in a number"},
		{"10.0.0.5:7481\n", false, false, "control character"},
		{"10.0.0.5\x00:7481", false, false, "control character"},
		{"host name:7481", false, false, "space"},
		{"hôte:7481", false, false, "not ASCII"},
		{"nonsense", false, false, "not host:port"},
		{"10.0.0.5:", false, false, "port \"\""},
		{"10.0.0.5:0", false, true, "port 0"},
		{"10.0.0.5:65536", false, false, "1 to 65535"},
		{"10.0.0.5:+80", false, false, "1 to 65535"},
		{":7481", false, true, "no host"},
		{"[fe80::1%eth0]:7481", false, true, "zone"},
		{"-bad.example:7481", false, false, "not an IP address or a DNS name"},
		{"a..b:7481", false, false, "not an IP address or a DNS name"},
		{strings.Repeat("a", 64) + ".example:1", false, false, "not an IP address or a DNS name"},
		{strings.Repeat("a.", 200) + "b:1", false, false, "too long"},
	} {
		err := checkHostPort("raft_addr", tc.addr, false)
		if (err == nil) != tc.ok || (err != nil && (!strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "raft_addr"))) {
			t.Errorf("%q: %v; want ok=%v, %q", tc.addr, err, tc.ok, tc.want)
		}
		if err := checkHostPort("--client-addr", tc.addr, true); (err == nil) != tc.listen {
			t.Errorf("%q as a listen address: %v; want ok=%v", tc.addr, err, tc.listen)
		}
		if strings.TrimSpace(tc.addr) != tc.addr {
			continue // --peer trims white space around its addresses
		}
		if _, err := ParsePeer("2=" + tc.addr + ",10.0.0.6:7379"); (err == nil) != tc.ok {
			t.Errorf("--peer with %q: %v; want ok=%v", tc.addr, err, tc.ok)
		}
	}

	// Over the wire: INVALID_ARGUMENT naming the field, nothing proposed.
	c := newTestCluster(t, 1)
	cl := dial(t, c.addr(c.WaitLeader()))
	for _, tc := range []struct{ raft, client, field string }{
		{"127.0/0.1:q", "127.0.0.1:7379", "raft_addr"},
		{"127.0.0.1:7481", "127.0.0.1:7379\x1b[2J", "client_addr"},
		{"127.0.0.1\r\n:7481", "127.0.0.1:7379", "raft_addr"},
	} {
		st, p, err := cl.do(wire.OpAddMember, wire.AppendAddMember(nil, 9, tc.raft, tc.client, nil))
		msg, _ := wire.DecodeError(p)
		if err != nil || st != wire.StatusInvalidArgument || !strings.HasPrefix(msg, tc.field+" ") {
			t.Errorf("ADD_MEMBER %q %q: %v %v %q; want INVALID_ARGUMENT naming %s", tc.raft, tc.client, st, err, msg, tc.field)
		}
		if strings.ContainsAny(msg, "\x00\r\n\x1b") {
			t.Errorf("the error echoes control characters: %q", msg)
		}
	}
	if n := len(c.node(1).ros.list()); n != 1 {
		t.Fatalf("the roster has %d members after refused additions", n)
	}
}

// The flags of the client port's limits: defaults, the environment, and
// bad values (exit status 4).
func TestClientLimitFlags(t *testing.T) {
	var errb bytes.Buffer
	cfg, code := ParseFlags(nil, env(nil), &errb)
	if code != -1 || cfg.MaxClientConnections != 1024 || cfg.ClientIdleTimeout != 5*time.Minute ||
		cfg.ClientFrameTimeout != 30*time.Second || cfg.MaxReplyMemory != 512<<20 {
		t.Fatalf("defaults: %d %+v %s", code, cfg, errb.String())
	}
	cfg, code = ParseFlags([]string{"--max-client-connections", "10", "--client-idle-timeout", "0", "--client-frame-timeout", "2s"},
		env(map[string]string{"KAYA_MAX_REPLY_MEMORY": "64MiB"}), &errb)
	if code != -1 || cfg.MaxClientConnections != 10 || cfg.ClientIdleTimeout >= 0 || cfg.ClientFrameTimeout != 2*time.Second || cfg.MaxReplyMemory != 64<<20 {
		t.Fatalf("set: %d %+v", code, cfg)
	}
	for _, args := range [][]string{
		{"--max-client-connections", "0"},
		{"--client-idle-timeout", "-1s"},
		{"--client-frame-timeout", "0"},
		{"--max-reply-memory", "1000"},
		{"--max-reply-memory", "lots"},
		{"--client-addr", "127.0/0.1:q"},
		{"--raft-addr", "127.0.0.1:7481\n"},
		{"--peer", "1=127.0.0.1:7481,127.0.0.1:x"},
	} {
		errb.Reset()
		if _, code := ParseFlags(args, env(nil), &errb); code != exitUsage || !strings.Contains(errb.String(), args[0]) {
			t.Errorf("%v: exit %d, stderr %q", args, code, errb.String())
		}
	}
}

// The apply cache's flag: its default, the environment, 0 (off), and bad
// values (exit status 4, naming the flag).
func TestApplyCacheFlag(t *testing.T) {
	var errb bytes.Buffer
	if cfg, code := ParseFlags(nil, env(nil), &errb); code != -1 || cfg.ApplyCacheBytes != 128<<20 {
		t.Fatalf("default: exit %d, %d bytes, %s", code, cfg.ApplyCacheBytes, errb.String())
	}
	if cfg, code := ParseFlags(nil, env(map[string]string{"KAYA_APPLY_CACHE_SIZE": "1GiB"}), &errb); code != -1 || cfg.ApplyCacheBytes != 1<<30 {
		t.Fatalf("from the environment: exit %d, %d bytes", code, cfg.ApplyCacheBytes)
	}
	if cfg, code := ParseFlags([]string{"--apply-cache-size", "0"}, env(nil), &errb); code != -1 || cfg.ApplyCacheBytes >= 0 {
		t.Fatalf("0: exit %d, %d bytes, want the cache off (negative)", code, cfg.ApplyCacheBytes)
	}
	for _, v := range []string{"1KiB", "lots", "-5MiB"} {
		errb.Reset()
		if _, code := ParseFlags([]string{"--apply-cache-size", v}, env(nil), &errb); code != exitUsage || !strings.Contains(errb.String(), "--apply-cache-size") {
			t.Errorf("%q: exit %d, stderr %q", v, code, errb.String())
		}
	}
}

// TestApplyCacheSetting: a server's apply uses its cache of current
// versions by default, and not at all when Config turns it off.
func TestApplyCacheSetting(t *testing.T) {
	for _, tc := range []struct {
		bytes int64
		used  bool
	}{{0, true}, {-1, false}} {
		s, _ := startSecured(t, Config{ApplyCacheBytes: tc.bytes})
		cl, err := client.New([]string{s.ClientAddr()}, &client.Options{RequestTimeout: 5 * time.Second, MaxRetries: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{"one", "two", "three"} {
			if err := cl.Put(context.Background(), []byte("k"), []byte(v)); err != nil {
				t.Fatal(err)
			}
		}
		_ = cl.Close()
		hits, misses := s.store.VersionCacheStats()
		if tc.used && hits < 2 || !tc.used && hits+misses != 0 {
			t.Errorf("ApplyCacheBytes %d: %d hits, %d misses after three writes of one key", tc.bytes, hits, misses)
		}
	}
}

// TestFloodRefusalsAllNameTheLimit: during a flood of idle connections over
// the limit, more than the refusals that can linger at once, every refused
// connection still reads the ERROR frame that names the limit (plain TCP).
func TestFloodRefusalsAllNameTheLimit(t *testing.T) {
	s, _ := startSecured(t, Config{MaxClientConnections: 8, MaxClientConnectionsPerSource: 4})
	addr := s.ClientAddr()
	var held []net.Conn
	for range 4 {
		held = append(held, dialFrom(t, addr, "127.0.0.5"))
	}
	n := 3 * maxRefusing
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = dialFrom(t, addr, "127.0.0.5")
	}
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		st, p, _, err := wire.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("refused connection %d of %d (sending nothing) got no ERROR frame: %v", i, n, err)
		}
		if msg, _ := wire.DecodeError(p); st != wire.StatusError || !strings.Contains(msg, "--max-client-connections") {
			t.Fatalf("refused connection %d: %v %q", i, st, msg)
		}
	}
	_ = held
}
