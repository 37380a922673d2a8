package kv_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/clustertest"
)

// forgedEntry is a committed command a correct node never proposes: one
// valid put followed by an unknown operation, in one entry.
func forgedEntry() []byte {
	data := []byte{1, 2, 1}
	data = binary.LittleEndian.AppendUint64(data, 1<<62)
	data = binary.AppendUvarint(data, 6)
	data = append(data, "forged"...)
	data = binary.AppendUvarint(data, 1)
	data = append(data, 'x')
	data = append(data, 77) // unknown operation
	data = binary.LittleEndian.AppendUint64(data, 1<<62+1)
	data = binary.AppendUvarint(data, 1)
	return append(data, 'k')
}

// TestUndecodableEntryOnACluster: an entry whose command does not decode is
// committed through raft on a 3-node cluster. Every node applies it as a
// no-op (none of its commands, not even the valid first one), stays up,
// applies the entries after it, restarts cleanly, and agrees on the data.
// Before, every node stopped on it, at every restart.
func TestUndecodableEntryOnACluster(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{})
	c.Elect(1)
	c.Put("before", "1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, data := range [][]byte{forgedEntry(), {9, 9, 9}, {1}} {
		if err := c.Node(1).Raft.Propose(ctx, data); err != nil {
			t.Fatal(err)
		}
	}
	c.Put("after", "2")
	c.WaitApplied(c.Node(1).Store.AppliedIndex())
	check := func(when string) {
		t.Helper()
		for _, id := range c.IDs() {
			n := c.Node(id)
			select {
			case <-n.Raft.Done():
				t.Fatalf("%s: node %d stopped: %v", when, id, n.Raft.Err())
			default:
			}
			for k, want := range map[string]string{"before": "1", "after": "2"} {
				if v, err := c.Get(id, k); err != nil || v != want {
					t.Fatalf("%s: node %d: %s = %q, %v; want %q", when, id, k, v, err, want)
				}
			}
			if _, err := c.Get(id, "forged"); !errors.Is(err, engine.ErrNotFound) {
				t.Fatalf("%s: node %d applied part of the invalid entry: %v", when, id, err)
			}
		}
	}
	check("after the invalid entries")
	for _, id := range c.IDs() {
		if got := c.Node(id).Store.RejectedEntries(); got != 3 {
			t.Fatalf("node %d counted %d rejected entries, want 3", id, got)
		}
	}
	applied := c.Node(1).Store.AppliedIndex()
	for _, id := range c.IDs() {
		c.Restart(id)
	}
	c.Elect(2)
	c.WaitApplied(applied)
	check("after a restart of every node")
	c.Put("later", "3")
	c.WaitApplied(c.Node(2).Store.AppliedIndex())
	for _, id := range c.IDs() {
		if v, err := c.Get(id, "later"); v != "3" || err != nil {
			t.Fatalf("node %d: later = %q, %v", id, v, err)
		}
	}
	_ = fmt.Sprint()
}
