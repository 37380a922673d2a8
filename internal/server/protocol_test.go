package server

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/wire"
)

// TestPipelining: many requests written back to back on one connection are
// all answered, in order.
func TestPipelining(t *testing.T) {
	c := newTestCluster(t, 1)
	addr := c.addr(c.WaitLeader())
	raw := dial(t, addr)
	nc := raw.c
	const n = 300
	var buf []byte
	for i := 0; i < n; i++ {
		buf = wire.AppendRequest(buf, wire.OpPut, wire.AppendPut(nil, []byte(fmt.Sprintf("p%03d", i)), []byte(fmt.Sprint(i))))
		buf = wire.AppendRequest(buf, wire.OpGet, wire.AppendKey(nil, []byte(fmt.Sprintf("p%03d", i))))
	}
	go func() { _, _ = nc.Write(buf) }()
	_ = nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	r := raw.r
	for i := 0; i < n; i++ {
		st, _, _, err := wire.ReadResponse(r, nil)
		if err != nil || st != wire.StatusOK {
			t.Fatalf("put %d: %v %v", i, st, err)
		}
		st, p, _, err := wire.ReadResponse(r, nil)
		if err != nil || st != wire.StatusOK {
			t.Fatalf("get %d: %v %v", i, st, err)
		}
		if v, _ := wire.DecodeValue(p); string(v) != fmt.Sprint(i) {
			t.Fatalf("reply %d out of order: %q", i, v)
		}
	}
}

// TestPipelinedCondTxns: conditional writes written back to back on one
// connection, each compare depending on the write before it, all succeed
// in order (each is proposed after the earlier ones, so its compare sees
// them), and a read after them sees the last.
func TestPipelinedCondTxns(t *testing.T) {
	c := newTestCluster(t, 1)
	addr := c.addr(c.WaitLeader())
	raw := dial(t, addr)
	nc := raw.c
	const n = 50
	buf := wire.AppendRequest(nil, wire.OpPut, wire.AppendPut(nil, []byte("chain"), []byte("0")))
	for i := 1; i <= n; i++ {
		ct := &wire.CondTxn{
			Compares: []wire.Compare{{Target: wire.CmpValue, Op: wire.CmpEqual, Key: []byte("chain"), Value: []byte(fmt.Sprint(i - 1))}},
			Then:     []wire.CondOp{{Kind: wire.TxnOpPut, Key: []byte("chain"), Value: []byte(fmt.Sprint(i))}},
		}
		buf = wire.AppendRequest(buf, wire.OpKayaTxn, wire.AppendCondTxn(nil, ct))
	}
	buf = wire.AppendRequest(buf, wire.OpGet, wire.AppendKey(nil, []byte("chain")))
	go func() { _, _ = nc.Write(buf) }()
	_ = nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	r := raw.r
	if st, _, _, err := wire.ReadResponse(r, nil); err != nil || st != wire.StatusOK {
		t.Fatalf("put: %v %v", st, err)
	}
	for i := 1; i <= n; i++ {
		st, p, _, err := wire.ReadResponse(r, nil)
		if err != nil || st != wire.StatusOK {
			t.Fatalf("KAYA_TXN %d: %v %v", i, st, err)
		}
		res, err := wire.DecodeCondTxnReply(p)
		if err != nil || !res.Succeeded {
			t.Fatalf("KAYA_TXN %d: compare failed (%v): it did not see the write before it", i, err)
		}
	}
	st, p, _, err := wire.ReadResponse(r, nil)
	if err != nil || st != wire.StatusOK {
		t.Fatalf("get: %v %v", st, err)
	}
	if v, _ := wire.DecodeValue(p); string(v) != fmt.Sprint(n) {
		t.Fatalf("get after the chain: %q, want %d", v, n)
	}
}

// TestMalformedFrames sends a corpus of bad input on separate connections:
// the server answers or closes each connection, stays up, and stored data
// is unchanged.
func TestMalformedFrames(t *testing.T) {
	c := newTestCluster(t, 1)
	addr := c.addr(c.WaitLeader())
	good := dial(t, addr)
	if st, _, err := good.put("stable", "value"); err != nil || st != wire.StatusOK {
		t.Fatalf("put: %v %v", st, err)
	}
	le32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	corpus := map[string][]byte{
		"zero length":          le32(0),
		"oversized length":     le32(wire.MaxFrameSize + 1),
		"huge length":          le32(0xffffffff),
		"truncated header":     []byte{5, 0},
		"truncated body":       cat(le32(100), []byte{1, 2, 3}),
		"put short":            cat(le32(3), []byte{byte(wire.OpPut), 1, 0}),
		"put lengths too big":  cat(le32(9), []byte{byte(wire.OpPut)}, le32(1<<30), le32(1<<30)),
		"get trailing garbage": cat(le32(1+4+1+3), []byte{byte(wire.OpGet)}, le32(1), []byte("x"), []byte("!!!")),
		"scan bad length":      cat(le32(5), []byte{byte(wire.OpScan)}, le32(99)),
		"unknown opcode":       cat(le32(1), []byte{200}),
		"hello empty":          cat(le32(1), []byte{byte(wire.OpHello)}),
		"add member garbage":   cat(le32(4), []byte{byte(wire.OpAddMember), 0xff, 0xfe, 0xfd}),
		"put into system key":  cat(le32(1+8+2+1), []byte{byte(wire.OpPut)}, le32(2), le32(1), []byte{0, 'k'}, []byte("v")),
		"http":                 []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 20; i++ {
		b := make([]byte, 1+rng.IntN(200))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		corpus[fmt.Sprintf("random %d", i)] = b
	}
	for name, b := range corpus {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("%s: server down: %v", name, err)
		}
		_, _ = nc.Write(b)
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(nc)
		for {
			st, p, _, err := wire.ReadResponse(r, nil)
			if err != nil {
				break
			}
			if st == wire.StatusOK && name != "hello empty" {
				t.Errorf("%s: got OK (%q)", name, p)
			}
		}
		_ = nc.Close()
	}
	st, v, err := good.get("stable")
	if err != nil || st != wire.StatusOK || string(v) != "value" {
		t.Fatalf("after the corpus: %v %v %q", err, st, v)
	}
	it, _ := c.node(c.WaitLeader()).DB().NewIter(nil)
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		if k := it.Key(); len(k) > 0 && k[0] != 0 {
			n++
		}
	}
	_ = it.Close()
	if n != 1 {
		t.Fatalf("stored data changed: %d user keys", n)
	}
}

// TestPipelinedLocalReadsHeld: GET_ATs of the applied state and GETs of a
// sole voter written back to back are served on the reader, which holds a
// reply to write it with the next one's; every reply still arrives, in order and right, whatever
// follows the reads: a write, a read that waits, a half-closed connection.
func TestPipelinedLocalReadsHeld(t *testing.T) {
	c := newTestCluster(t, 1)
	lead := c.WaitLeader()
	addr := c.addr(lead)
	setup := dial(t, addr)
	for i := range 5 {
		if st, _, err := setup.put(fmt.Sprint("k", i), fmt.Sprint("v", i)); err != nil || st != wire.StatusOK {
			t.Fatalf("put: %v %v", st, err)
		}
	}
	// Reads of the applied state (wire.ReadTSLocal) need not see a put
	// answered at its commit before it is applied.
	c.settled(lead)
	local := func(buf []byte, key string) []byte {
		return wire.AppendRequest(buf, wire.OpGetAt, wire.AppendGetAt(nil, wire.ReadTSLocal, []byte(key)))
	}
	type want struct {
		op    wire.Opcode
		value string // for GET_AT and GET; "" for a missing key
		// racy: a GET_AT of the applied state after a write of the
		// connection may see the state before it (wire.ReadTSLocal).
		racy bool
	}
	for _, tc := range []struct {
		name      string
		halfClose bool
	}{{"open", false}, {"half-closed", true}} {
		t.Run(tc.name, func(t *testing.T) {
			raw := dial(t, addr)
			nc := raw.c
			missing := "missing-" + tc.name
			var buf []byte
			var wants []want
			for i := range 40 { // more than maxHeldReplies in a row
				k := i % 6 // the sixth key is missing
				key, v := fmt.Sprint("k", k), fmt.Sprint("v", k)
				if k == 5 {
					key, v = missing, ""
				}
				if i%3 == 2 {
					// Plain GETs among them: held and written together too.
					buf = wire.AppendRequest(buf, wire.OpGet, wire.AppendKey(nil, []byte(key)))
					wants = append(wants, want{op: wire.OpGet, value: v})
					continue
				}
				buf = local(buf, key)
				wants = append(wants, want{op: wire.OpGetAt, value: v})
			}
			buf = wire.AppendRequest(buf, wire.OpPut, wire.AppendPut(nil, []byte(missing), []byte("new")))
			wants = append(wants, want{op: wire.OpPut})
			buf = local(buf, "k0")
			wants = append(wants, want{op: wire.OpGetAt, value: "v0"})
			buf = wire.AppendRequest(buf, wire.OpGet, wire.AppendKey(nil, []byte(missing)))
			wants = append(wants, want{op: wire.OpGet, value: "new"})
			for range 3 {
				buf = local(buf, missing)
				wants = append(wants, want{wire.OpGetAt, "new", true})
			}
			if _, err := nc.Write(buf); err != nil {
				t.Fatal(err)
			}
			if tc.halfClose {
				_ = nc.(*net.TCPConn).CloseWrite()
			}
			_ = nc.SetReadDeadline(time.Now().Add(20 * time.Second))
			r := raw.r
			for i, w := range wants {
				st, p, _, err := wire.ReadResponse(r, nil)
				if err != nil {
					t.Fatalf("reply %d (%v): %v", i, w.op, err)
				}
				var got string
				switch {
				case w.op == wire.OpPut:
					if st != wire.StatusOK {
						t.Fatalf("reply %d: put status %v", i, st)
					}
					continue
				case st == wire.StatusNotFound:
				case st != wire.StatusOK:
					t.Fatalf("reply %d (%v): status %v %q", i, w.op, st, p)
				case w.op == wire.OpGet:
					v, err := wire.DecodeValue(p)
					if err != nil {
						t.Fatal(err)
					}
					got = string(v)
				default:
					v, _, err := wire.DecodeGetAtReply(p)
					if err != nil {
						t.Fatal(err)
					}
					got = string(v)
				}
				if got != w.value && !(w.racy && got == "") {
					t.Fatalf("reply %d (%v): %q, want %q", i, w.op, got, w.value)
				}
			}
		})
	}
}

// TestRoomToHold: the reader holds a reply only with room to spare in its
// connection's bound and in the server's reply budget, so it never waits
// for room its own held replies take.
func TestRoomToHold(t *testing.T) {
	c := newTestCluster(t, 1)
	s := c.node(c.WaitLeader())
	small, large := newClientConn(1<<20), newClientConn(defaultConnReplyBytes)
	if !s.roomToHold(small, 0) || s.roomToHold(small, maxHeldReplies-1) {
		t.Fatalf("a 1 MiB connection: hold one %v (want true), the sixteenth %v (want false)", s.roomToHold(small, 0), s.roomToHold(small, maxHeldReplies-1))
	}
	if !s.roomToHold(large, maxHeldReplies-1) {
		t.Fatal("a connection with the default bound may not hold its sixteenth reply")
	}
	s.clim.replyMem.force(s.clim.replyMem.limit / 2)
	defer s.clim.replyMem.release(s.clim.replyMem.limit / 2)
	if s.roomToHold(large, 0) {
		t.Fatal("the reader holds a reply while half the server's reply budget is in use")
	}
}
