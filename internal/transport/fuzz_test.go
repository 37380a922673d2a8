package transport

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
)

// FuzzInboundRaftStream feeds arbitrary bytes to the inbound side of the
// raft transport, as a peer connection would deliver them. The decoder
// must never panic or hang, only well-formed messages from a roster
// member addressed to this node may reach the handler, and none at all
// when the node has a peer token.
func FuzzInboundRaftStream(f *testing.F) {
	good, err := encodeFrame(msg(2, 1, pb.MsgApp))
	if err != nil {
		f.Fatal(err)
	}
	hs := plainHello(kindMessages, 2, 1)
	f.Add(append(append([]byte{}, hs...), good...))
	f.Add(append(append(append([]byte{}, hs...), good...), good...))
	f.Add(append(plainHello(kindSnapshot, 2, 1), []byte("KAYASNAPSTREAM\x00\x02garbage")...))
	f.Add(append(plainHello(kindMessages, 9, 1), good...))
	huge := append([]byte{}, hs...)
	huge = binary.LittleEndian.AppendUint32(huge, MaxFrameSize+1)
	f.Add(append(huge, 0, 0, 0, 0))
	proved := (&hello{kind: kindMessages, from: 2, to: 1, auth: authHMAC}).encode()
	f.Add(append(append(proved, make([]byte, proofSize)...), good...)) // a made-up proof
	v2 := binary.LittleEndian.AppendUint64(append([]byte(handshakeMagic), 2, 0, kindMessages), 2)
	f.Add(append(binary.LittleEndian.AppendUint64(v2, 1), good...)) // the previous version
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		// Without a peer token the frames are decoded; with one, nothing
		// may be delivered at all: the fuzzer cannot answer a fresh
		// challenge.
		for _, token := range [][]byte{nil, []byte("fuzz-peer-token-0123456789")} {
			r := &recorder{}
			tr := newTCP(TCPOptions{ID: 1, Handler: r, PeerToken: token, Logger: slog.New(slog.DiscardHandler)})
			tr.roster = map[uint64]bool{2: true}
			server, client := net.Pipe()
			go func() {
				_, _ = client.Write(data)
				_ = client.Close()
			}()
			go func() { _, _ = io.Copy(io.Discard, client) }() // handshake replies, acks of snapshot streams
			if ok, _ := tr.admit(server, "pipe"); !ok {
				t.Fatal("the connection was not admitted")
			}
			tr.serveConn(server, "pipe")
			if token != nil && len(r.msgs) > 0 {
				t.Fatalf("%d messages delivered without a proof of the peer token", len(r.msgs))
			}
			for _, m := range r.msgs {
				if m.GetFrom() != 2 || m.GetTo() != 1 {
					t.Fatalf("delivered a message from %d to %d", m.GetFrom(), m.GetTo())
				}
			}
		}
	})
}
