package transport

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/internal/crc"
)

type recorder struct {
	mu          sync.Mutex
	msgs        []*pb.Message
	unreachable atomic.Int64
}

func (r *recorder) Receive(m *pb.Message) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
}
func (r *recorder) ReportUnreachable(uint64)                { r.unreachable.Add(1) }
func (r *recorder) ReceiveSnapshot(uint64, io.Reader) error { return nil }

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func waitUntil(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func msg(from, to uint64, typ pb.MessageType) *pb.Message {
	return &pb.Message{Type: new(typ), From: new(from), To: new(to), Term: new(uint64(1)),
		Entries: []*pb.Entry{{Index: new(uint64(1)), Term: new(uint64(1)), Data: []byte("payload")}}}
}

// plainHello is a hello without a peer token: a peer may send its frames
// right after it (the acceptor's reply waits in the socket buffer).
func plainHello(kind byte, from, to uint64) []byte {
	return (&hello{kind: kind, from: from, to: to, auth: authNone}).encode()
}

func TestTCPDelivery(t *testing.T) {
	l1, l2 := listen(t), listen(t)
	r1, r2 := &recorder{}, &recorder{}
	t1 := NewTCP(TCPOptions{ID: 1, Listener: l1, Handler: r1})
	t2 := NewTCP(TCPOptions{ID: 2, Listener: l2, Handler: r2})
	defer t1.Close()
	defer t2.Close()
	peers := map[uint64]string{1: l1.Addr().String(), 2: l2.Addr().String()}
	t1.SetPeers(peers)
	t2.SetPeers(peers)
	for i := 0; i < 100; i++ {
		t1.Send([]*pb.Message{msg(1, 2, pb.MsgApp)})
	}
	t2.Send([]*pb.Message{msg(2, 1, pb.MsgAppResp)})
	waitUntil(t, "delivery", func() bool { return r2.count() == 100 && r1.count() == 1 })
	if got := string(r2.msgs[0].GetEntries()[0].GetData()); got != "payload" {
		t.Fatalf("payload %q", got)
	}
	// A message to an id outside the roster is dropped and counted.
	t1.Send([]*pb.Message{msg(1, 9, pb.MsgApp)})
	if t1.Stats().DroppedUnknown != 1 {
		t.Fatalf("stats %+v", t1.Stats())
	}
}

// TestTCPRejectsStrangers: a connection from an id outside the roster, a
// bad handshake, an oversized or corrupted frame each close that connection
// without delivering anything, and leave other connections working.
func TestTCPRejectsStrangers(t *testing.T) {
	l := listen(t)
	r := &recorder{}
	tr := NewTCP(TCPOptions{ID: 1, Listener: l, Handler: r})
	defer tr.Close()
	tr.SetPeers(map[uint64]string{1: l.Addr().String(), 2: "127.0.0.1:1"})
	hs := func(from, to uint64) []byte { return plainHello(kindMessages, from, to) }
	frame := func(m *pb.Message) []byte {
		f, err := encodeFrame(m)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	send := func(data []byte) {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write(data)
		// The server closes the connection on bad input: reads end.
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		var b [1]byte
		_, _ = c.Read(b[:])
		_ = c.Close()
	}
	good := frame(msg(2, 1, pb.MsgApp))
	send(append(hs(9, 1), good...))               // unknown sender
	send(append(hs(2, 7), good...))               // addressed to another node
	send([]byte("GET / HTTP/1.1\r\n\r\n1234567")) // not a raft peer
	huge := make([]byte, frameHeaderSize)
	binary.LittleEndian.PutUint32(huge, MaxFrameSize+1)
	send(append(hs(2, 1), huge...)) // oversized frame
	bad := append([]byte(nil), good...)
	bad[len(bad)-1] ^= 0xff
	send(append(hs(2, 1), bad...)) // checksum mismatch
	zero := make([]byte, frameHeaderSize)
	send(append(hs(2, 1), zero...)) // zero-length frame
	garbage := make([]byte, 12)
	binary.LittleEndian.PutUint32(garbage, 4)
	binary.LittleEndian.PutUint32(garbage[4:], crc.Masked([]byte{0xff, 0xff, 0xff, 0xff}))
	copy(garbage[8:], []byte{0xff, 0xff, 0xff, 0xff})
	send(append(hs(2, 1), garbage...)) // valid CRC, not a protobuf message
	if n := r.count(); n != 0 {
		t.Fatalf("%d messages delivered from bad connections", n)
	}
	st := tr.Stats()
	if st.RejectedFrom == 0 || st.RejectedTo == 0 || st.BadFrames < 4 {
		t.Fatalf("stats %+v", st)
	}
	// A well-behaved peer still gets through.
	send(append(hs(2, 1), good...))
	waitUntil(t, "good message", func() bool { return r.count() == 1 })
}

// TestTCPQueueFullDrops: Send never blocks; with the peer unreachable,
// messages are dropped and reported.
func TestTCPQueueFullDrops(t *testing.T) {
	r := &recorder{}
	tr := NewTCP(TCPOptions{ID: 1, Handler: r, QueueSize: 4})
	defer tr.Close()
	tr.SetPeers(map[uint64]string{2: "127.0.0.1:1"}) // nothing listens there
	start := time.Now()
	for i := 0; i < 1000; i++ {
		tr.Send([]*pb.Message{msg(1, 2, pb.MsgApp)})
	}
	if time.Since(start) > time.Second {
		t.Fatal("Send blocked")
	}
	waitUntil(t, "unreachable reports", func() bool { return r.unreachable.Load() > 0 })
	if tr.Stats().DroppedFull == 0 {
		t.Fatalf("stats %+v", tr.Stats())
	}
}
