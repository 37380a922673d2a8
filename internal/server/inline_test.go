package server

import (
	"bufio"
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/vfs"
	"github.com/kayadb/kayadb/internal/wire"
)

// TestInlineReplyWrites: a completion callback writes the settled replies
// itself when the socket takes them at once, and never blocks when it does
// not (a client that reads nothing): what the socket left goes to a
// goroutine, and the client reads every reply, whole and in order, once
// it reads.
func TestInlineReplyWrites(t *testing.T) {
	s, _ := startSecured(t, Config{EngineOptions: &engine.Options{FS: vfs.NewMem()}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client := deafConn(t, ln.Addr().String()) // a 64 KiB receive buffer
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.(*net.TCPConn).SetWriteBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	cc := newClientConn(s.clim.connBytes)
	r := &replies{s: s, cc: cc, aud: newConnAudit(srv), rw: newReplyWriter(srv, time.Minute),
		slots: make(chan struct{}, maxPipelined)}
	if r.rw.raw == nil {
		t.Fatal("a plain TCP connection has no raw socket to write replies on")
	}
	const n, size = 100, 8 << 10 // 800 KiB: far more than the two socket buffers
	payload := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, size) }
	for i := 0; i < n; i++ {
		cl := &call{op: wire.OpPut, start: time.Now()}
		s.inflight.Add(1) // as the reader counts it
		cc.enqueue(cl)
		r.add(cl)
		cl.status, cl.payload = wire.StatusOK, payload(i)
		done := make(chan struct{})
		go func() {
			r.complete(cl)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("reply %d: the completion callback blocked on a client that reads nothing", i)
		}
		if i == 0 {
			// The first reply fits the empty socket: written on the
			// callback's goroutine, no writer left behind.
			r.mu.Lock()
			writing := r.mu.writing
			r.mu.Unlock()
			if writing {
				t.Fatal("the first reply was left to a goroutine; want it written by the callback")
			}
		}
	}
	if err := client.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(client)
	for i := 0; i < n; i++ {
		st, p, _, err := wire.ReadResponse(br, nil)
		if err != nil || st != wire.StatusOK || !bytes.Equal(p, payload(i)) {
			t.Fatalf("reply %d: status %v, %d bytes (first %v), %v; want %d bytes of %d", i, st, len(p), p[:min(len(p), 1)], err, size, byte(i))
		}
	}
	waited := make(chan struct{})
	go func() {
		r.wait()
		close(waited)
	}()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("replies still pending after the client read them all")
	}
	if got := len(r.slots); got != 0 {
		t.Fatalf("%d pipeline slots still taken", got)
	}
}
