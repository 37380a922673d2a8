package kv

import (
	"fmt"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/vfs"
)

// BenchmarkApplyPuts: the state machine's apply of runs of 64 one-put
// entries (8-byte keys, 256-byte values, as kayactl bench put), over a
// key space of 100,000 keys: first writes and overwrites mixed. The cost
// per entry is what the raft loop spends applying a client's put.
func BenchmarkApplyPuts(b *testing.B) {
	db, err := engine.Open("/db", &engine.Options{FS: vfs.NewMem()})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	s, err := Open(Options{NodeID: 1, DB: db})
	if err != nil {
		b.Fatal(err)
	}
	value := make([]byte, 256)
	ents := make([]*pb.Entry, 0, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		idx := uint64(i + 1)
		key := []byte(fmt.Sprintf("%08d", (i*7919)%100000))
		ents = append(ents, &pb.Entry{Index: &idx, Term: new(uint64(1)), Type: new(pb.EntryNormal), Data: encodeEntry(s.clock.Now(), opPut, idx, key, value)})
		if len(ents) == cap(ents) || i == b.N-1 {
			if err := s.Apply(ents); err != nil {
				b.Fatal(err)
			}
			ents = ents[:0]
		}
	}
}
