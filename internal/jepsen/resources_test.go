package jepsen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/wire"
)

// waitFor polls cond until it holds, failing the test after a generous
// deadline (a condition, not a timing assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fakeServer accepts connections on 127.0.0.1 and hands each to serve.
type fakeServer struct {
	ln      net.Listener
	mu      sync.Mutex
	remotes []net.Addr
	conns   []net.Conn
	wg      sync.WaitGroup
}

func startFakeServer(t *testing.T, serve func(i int, c net.Conn)) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.remotes = append(s.remotes, c.RemoteAddr())
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				serve(i, c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *fakeServer) accepted() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]net.Addr(nil), s.remotes...)
}

// The flood's connections come from the other loopback address it was
// given, never from the workload's 127.0.0.1, and it counts how the server
// treated them: held, refused with an ERROR frame (and its text), or
// closed without a word.
func TestFloodComesFromAnotherSourceAndCountsRefusals(t *testing.T) {
	const n, held, silent = 40, 10, 10
	const refusal = "too many connections from 127.0.0.9 (limit 10 per source); try again later"
	srv := startFakeServer(t, func(i int, c net.Conn) {
		switch {
		case i < held:
			_, _ = c.Read(make([]byte, 1)) // holds it until the flood closes it
		case i < held+silent:
			_ = c.Close()
		default:
			_, _ = c.Write(wire.AppendResponse(nil, wire.StatusError, wire.AppendError(nil, refusal)))
			_ = c.Close()
		}
	})
	src := floodSource(7 << 8)
	if src.Equal(net.IPv4(127, 0, 0, 1)) || !src.IsLoopback() {
		t.Fatalf("floodSource gave %v: want a loopback address other than 127.0.0.1", src)
	}
	f := startFlood(context.Background(), srv.ln.Addr().String(), src, n, false)
	waitFor(t, "the server to see every flood connection", func() bool { return len(srv.accepted()) == n })
	waitFor(t, "the flood to count every refusal and close", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.mu.refused == n-held-silent && f.mu.silent == silent
	})
	for _, a := range srv.accepted() {
		ip := a.(*net.TCPAddr).IP
		if !ip.Equal(src) {
			t.Fatalf("a flood connection came from %v, want %v", ip, src)
		}
	}
	r := f.close()
	if r.Dialed != n || r.Held != held || r.Refused != n-held-silent || r.Silent != silent || r.DialFailed != 0 || r.RefusedMsg != refusal {
		t.Fatalf("flood report %+v: want %d dialed, %d held, %d refused with %q, %d silent", r, n, held, n-held-silent, refusal, silent)
	}
	if s := r.String(); !strings.Contains(s, "10 held to the end, 20 refused with an error") || !strings.Contains(s, "10 closed without a reply") {
		t.Fatalf("report text %q", s)
	}
}

// A trickling flood sends its frame a byte at a time: the server gets the
// first byte of an incomplete frame, and nothing more for a while.
func TestFloodTrickles(t *testing.T) {
	got := make(chan []byte, 4)
	srv := startFakeServer(t, func(i int, c net.Conn) {
		b := make([]byte, 64)
		n, _ := c.Read(b)
		got <- b[:n]
		_, _ = c.Read(b) // until closed
	})
	f := startFlood(context.Background(), srv.ln.Addr().String(), floodSource(3<<8), 2, true)
	defer f.close()
	for i := 0; i < 2; i++ {
		select {
		case b := <-got:
			if len(b) != 1 || b[0] != floodFrame[0] {
				t.Fatalf("first read of a trickling connection: %x, want the single byte %x", b, floodFrame[0])
			}
		case <-time.After(20 * time.Second):
			t.Fatal("no trickled byte arrived")
		}
	}
}

// The slow client pipelines requests (SCANs and GETs of large values)
// without waiting for replies, and does not read them: a server writing
// replies to it blocks.
func TestSlowClientPipelinesAndDoesNotRead(t *testing.T) {
	for _, trickle := range []bool{false, true} {
		type result struct {
			ops      []wire.Opcode
			writeErr error
		}
		done := make(chan result, 1)
		srv := startFakeServer(t, func(i int, c net.Conn) {
			var res result
			r := bufio.NewReader(c)
			// Eight requests before any reply: it pipelines.
			for len(res.ops) < 8 {
				op, _, _, err := wire.ReadRequest(r, nil)
				if err != nil {
					res.writeErr = err
					done <- res
					return
				}
				res.ops = append(res.ops, op)
			}
			// 32 MiB of replies cannot all be taken by a client that
			// reads at most a byte a second.
			_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
			big := wire.AppendResponse(nil, wire.StatusOK, make([]byte, 1<<20))
			for i := 0; i < 32 && res.writeErr == nil; i++ {
				_, res.writeErr = c.Write(big)
			}
			done <- res
		})
		sc, err := startSlowClient(srv.ln.Addr().String(), trickle)
		if err != nil {
			t.Fatal(err)
		}
		res := <-done
		report := sc.close()
		for _, op := range res.ops {
			if op != wire.OpScan && op != wire.OpGet {
				t.Fatalf("the slow client sent %v; want SCANs and GETs", op)
			}
		}
		if !errors.Is(res.writeErr, os.ErrDeadlineExceeded) {
			t.Fatalf("trickle=%v: writing 32 MiB of replies to the slow client ended with %v, want a write timeout (it reads little or nothing)", trickle, res.writeErr)
		}
		if !strings.Contains(report, "requests sent") {
			t.Fatalf("report %q", report)
		}
	}
}

// probe answers nil for a node that answers HEALTH, and an error for one
// that accepts and says nothing.
func TestProbe(t *testing.T) {
	ok := startFakeServer(t, func(i int, c net.Conn) {
		op, _, _, err := wire.ReadRequest(bufio.NewReader(c), nil)
		if err == nil && op == wire.OpHealth {
			_, _ = c.Write(wire.AppendResponse(nil, wire.StatusOK, wire.AppendHealth(nil, "leader")))
		}
	})
	if err := probe(ok.ln.Addr().String(), 5*time.Second); err != nil {
		t.Fatalf("probe of a server that answers HEALTH: %v", err)
	}
	mute := startFakeServer(t, func(i int, c net.Conn) { _, _ = c.Read(make([]byte, 64)) })
	if err := probe(mute.ln.Addr().String(), 200*time.Millisecond); err == nil {
		t.Fatal("probe of a server that never answers returned nil")
	}
}

// TestProbeWaitsForANodeStarting: a node the harness has just started may
// not listen yet; the probe gives it its timeout to come up (seed 931
// flagged a node restarted 100 ms earlier), and still fails when nothing
// ever listens.
func TestProbeWaitsForANodeStarting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now

	if err := probe(addr, 300*time.Millisecond); err == nil {
		t.Fatal("the probe of an address nobody listens on succeeded")
	}

	started := make(chan net.Listener, 1)
	go func() {
		time.Sleep(400 * time.Millisecond)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			started <- nil
			return
		}
		started <- ln
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, _, _, err := wire.ReadRequest(bufio.NewReader(c), nil); err == nil {
					_, _ = c.Write(wire.AppendResponse(nil, wire.StatusOK, nil))
				}
			}()
		}
	}()
	err = probe(addr, 5*time.Second)
	if ln := <-started; ln != nil {
		defer ln.Close()
	} else {
		t.Skip("the port was taken meanwhile")
	}
	if err != nil {
		t.Fatalf("a node that listens 400 ms after the probe started was not served: %v", err)
	}
}

func TestReadRSS(t *testing.T) {
	rss, hwm, err := readRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss <= 0 || hwm < rss {
		t.Fatalf("VmRSS %d, VmHWM %d: want 0 < VmRSS ≤ VmHWM", rss, hwm)
	}
}

// Without tmpfs the disk nemesis fails a run that names it, and is left
// out, with the reason, of one that asks for all.
func TestResolveNemeses(t *testing.T) {
	noTmpfs := func() error { return errors.New("operation not permitted") }
	called := false
	if out, left, err := resolveNemeses([]string{NemesisKill, NemesisFlood}, false, func() error { called = true; return nil }); err != nil || left != "" || len(out) != 2 || called {
		t.Fatalf("without disk: %v %q %v (probe called: %v)", out, left, err, called)
	}
	if _, _, err := resolveNemeses([]string{NemesisKill, NemesisDisk}, false, noTmpfs); err == nil || !strings.Contains(err.Error(), "operation not permitted") {
		t.Fatalf("disk asked for by name without tmpfs: err %v, want the reason", err)
	}
	out, left, err := resolveNemeses(AllNemeses, true, noTmpfs)
	if err != nil || contains(out, NemesisDisk) || len(out) != len(AllNemeses)-1 || !strings.Contains(left, "disk (operation not permitted)") {
		t.Fatalf("all without tmpfs: %v %q %v", out, left, err)
	}
	if out, left, err := resolveNemeses(AllNemeses, true, func() error { return nil }); err != nil || left != "" || len(out) != len(AllNemeses) {
		t.Fatalf("all with tmpfs: %v %q %v", out, left, err)
	}
}

// The disk nemesis's mechanics on a real tmpfs: the filler takes every
// byte (the node's next write fails with ENOSPC), the heal gives it all
// back, and Close copies the data directory out (holes stay holes) and
// unmounts.
func TestFillAndUnfillTmpfs(t *testing.T) {
	if err := TmpfsAvailable(); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	c, err := NewCluster("/bin/true", filepath.Join(dir, "c"), 3, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	const size = 16 << 20
	if err := c.UseTmpfs(size, 1<<20); err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			_ = c.Close()
		}
	}()
	n := c.Node(1)
	if err := os.MkdirAll(n.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.Dir, "hello"), []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A preallocated log: 4 MiB of zeros and a few bytes at its start.
	wal, err := os.Create(filepath.Join(n.Dir, "wal"))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Fallocate(int(wal.Fd()), 0, 0, 4<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := wal.WriteAt([]byte("record"), 0); err != nil {
		t.Fatal(err)
	}
	wal.Close()

	added, err := c.Fill(1)
	if err != nil {
		t.Fatal(err)
	}
	if free, err := c.FreeBytes(1); err != nil || free != 0 || added < 8<<20 {
		t.Fatalf("after Fill: %d bytes added, %d free (%v): want the disk full", added, free, err)
	}
	if err := os.WriteFile(filepath.Join(n.Dir, "more"), make([]byte, 4096), 0o600); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing on the filled disk: %v, want ENOSPC", err)
	}
	if free, _ := c.FreeBytes(2); free < size/2 {
		t.Fatalf("node 2's disk has %d bytes free: filling node 1 must not touch it", free)
	}
	if err := c.Unfill(1); err != nil {
		t.Fatal(err)
	}
	if free, _ := c.FreeBytes(1); free < size-(5<<20) {
		t.Fatalf("after Unfill: %d bytes free, want the filler's space back", free)
	}
	mnt := n.disk
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if bytes.Contains(mounts, []byte(mnt)) {
		t.Fatalf("%s is still mounted after Close", mnt)
	}
	if n.Dir != filepath.Join(dir, "c", "n1") {
		t.Fatalf("after Close, node 1's directory is %s", n.Dir)
	}
	if b, err := os.ReadFile(filepath.Join(n.Dir, "hello")); err != nil || string(b) != "hello" {
		t.Fatalf("the copied-out data: %q %v", b, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(n.Dir, "wal"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 4<<20 || st.Blocks*512 > 1<<20 {
		t.Fatalf("the copied log: %d bytes in %d blocks; want 4 MiB, mostly holes", st.Size, st.Blocks)
	}
}
