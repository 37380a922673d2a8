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
// must never panic or hang, and only well-formed messages from a roster
// member addressed to this node may reach the handler.
func FuzzInboundRaftStream(f *testing.F) {
	good, err := encodeFrame(msg(2, 1, pb.MsgApp))
	if err != nil {
		f.Fatal(err)
	}
	hs := encodeHandshake(kindMessages, 2, 1)
	f.Add(append(append([]byte{}, hs...), good...))
	f.Add(append(append(append([]byte{}, hs...), good...), good...))
	f.Add(append(encodeHandshake(kindSnapshot, 2, 1), []byte("KAYASNAPSTREAM\x00\x02garbage")...))
	f.Add(append(encodeHandshake(kindMessages, 9, 1), good...))
	huge := append([]byte{}, hs...)
	huge = binary.LittleEndian.AppendUint32(huge, MaxFrameSize+1)
	f.Add(append(huge, 0, 0, 0, 0))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		r := &recorder{}
		tr := &TCP{opts: TCPOptions{ID: 1, Handler: r}, peers: map[uint64]*peer{}, conns: map[net.Conn]struct{}{},
			roster: map[uint64]bool{2: true}}
		tr.opts.Logger = slog.New(slog.DiscardHandler)
		server, client := net.Pipe()
		go func() {
			_, _ = client.Write(data)
			_ = client.Close()
		}()
		go func() { _, _ = io.Copy(io.Discard, client) }() // acks of snapshot streams
		tr.wg.Add(1)
		tr.serveConn(server)
		for _, m := range r.msgs {
			if m.GetFrom() != 2 || m.GetTo() != 1 {
				t.Fatalf("delivered a message from %d to %d", m.GetFrom(), m.GetTo())
			}
		}
	})
}
