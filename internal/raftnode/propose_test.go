package raftnode

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
)

// TestTryProposeOrRefuse: the non-blocking proposal queues while the
// queue has room and reports false, queuing nothing, once it is full;
// ProposeOrRefuse then waits, bounded by its context. The node is not
// started, so nothing drains the queue.
func TestTryProposeOrRefuse(t *testing.T) {
	n, err := New(Config{ID: 1, Peers: []uint64{1}, Log: &testStorage{MemoryStorage: raft.NewMemoryStorage()},
		SM: &testSM{applies: map[uint64]int{}}, Ticker: newManualTicker(), Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	room := cap(n.propc)
	for i := 0; i < room; i++ {
		if !n.TryProposeOrRefuse([]byte{byte(i)}, func(error) {}) {
			t.Fatalf("proposal %d of a queue of %d refused", i, room)
		}
	}
	if got := n.ProposalsQueued(); got != room {
		t.Fatalf("%d proposals queued, want %d", got, room)
	}
	if n.TryProposeOrRefuse([]byte("over"), func(error) {}) {
		t.Fatal("a full queue took another proposal without waiting")
	}
	if got := n.ProposalsQueued(); got != room {
		t.Fatalf("%d proposals queued after a refused try, want %d", got, room)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := n.ProposeOrRefuse(ctx, []byte("wait"), func(error) {}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ProposeOrRefuse on a full queue = %v, want the context's deadline", err)
	}
	// The queue keeps order: the first proposal taken is the first tried.
	if p := <-n.propc; len(p.data) != 1 || p.data[0] != 0 {
		t.Fatalf("first queued proposal %q, want the first tried", p.data)
	}
}
