package feed

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/internal/kv"
)

// TestDispatchIndex: dispatch through the watch index hands every commit
// to exactly the watchers a brute-force match over all of them picks, once
// per commit however many of its changes a watcher matches, and to no one
// else (idle watchers on other keys are not offered anything).
func TestDispatchIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	keys := []string{"", "a", "ab", "abc", "abd", "b", "ba", "bab", "c", "zz"}
	h := &Hub{synced: map[*Watcher]struct{}{}}
	var ws []*Watcher
	for i := range 60 {
		w := &Watcher{ID: uint64(i), prefix: rng.IntN(2) == 0, key: []byte(keys[rng.IntN(len(keys))]), wake: make(chan struct{}, 1)}
		if i%7 == 0 { // some watchers see only part of their keys (a principal's clamp)
			w.allow = func(k []byte) bool { return !strings.HasSuffix(string(k), "d") }
		}
		ws = append(ws, w)
		h.synced[w] = struct{}{}
	}
	h.idxDirty = true
	var changes []kv.Change
	want := map[*Watcher][]uint64{}
	for rev := uint64(1); rev <= 200; rev++ {
		n := 1 + rng.IntN(4)
		commit := make([]kv.Change, n)
		for j := range commit {
			commit[j] = kv.Change{Rev: rev, Key: []byte(keys[rng.IntN(len(keys))] + []string{"", "0", "1"}[rng.IntN(3)])}
		}
		changes = append(changes, commit...)
		for _, w := range ws {
			if len(w.filter(commit)) > 0 {
				want[w] = append(want[w], rev)
			}
		}
	}
	// Two batches split between commits (the hub reads whole commits),
	// and a watcher leaving in between (the index rebuilt).
	cut := len(changes) / 2
	for changes[cut].Rev == changes[cut-1].Rev {
		cut++
	}
	h.dispatch(changes[:cut])
	gone := ws[3]
	delete(h.synced, gone)
	h.idxDirty = true
	h.dispatch(changes[cut:])
	split := changes[cut].Rev
	for _, w := range ws {
		var got []uint64
		for _, it := range w.mu.queue {
			got = append(got, it.commit[0].Rev)
		}
		exp := want[w]
		if w == gone {
			var kept []uint64
			for _, r := range exp {
				if r < split {
					kept = append(kept, r)
				}
			}
			exp = kept
		}
		if fmt.Sprint(got) != fmt.Sprint(exp) {
			t.Fatalf("watcher %d (prefix %v, %q): got commits %v, want %v", w.ID, w.prefix, w.key, got, exp)
		}
	}
}
