package server

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kayadb/kayadb/client"
)

// TestClientRedirect: a Go client that only knows a follower is redirected
// to the leader (NOT_LEADER with the leader's address) and works.
func TestClientRedirect(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.WaitLeader()
	var follower uint64
	for id := range c.Nodes() {
		if id != lead {
			follower = id
			break
		}
	}
	cl, err := client.New([]string{c.addr(follower)}, &client.Options{RequestTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatalf("put through a follower: %v", err)
	}
	if v, err := cl.Get(ctx, []byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("get: %q %v", v, err)
	}
	if got := cl.Leader(); got != c.addr(lead) {
		t.Fatalf("client learned leader %q, want %q", got, c.addr(lead))
	}
	if _, err := cl.Get(ctx, []byte("missing")); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
	items, err := cl.Scan(ctx, nil)
	if err != nil || len(items) != 1 || string(items[0].Key) != "k" {
		t.Fatalf("scan: %v %v", items, err)
	}
}
