package server

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/kayadb/kayadb/internal/vfs"
	"github.com/kayadb/kayadb/internal/wire"
)

// TestSingleNodePowerCutAtEveryWrite cuts power at every write operation a
// single-node server performs (raft log, engine, roster) while it
// acknowledges a sequence of writes, restarts it from the simulated disk and
// checks that every acknowledged write is there. A single voter commits an
// entry in the same Ready that appends it: applying (and acknowledging)
// before the append is durable would lose writes here (etcd#14370).
func TestSingleNodePowerCutAtEveryWrite(t *testing.T) {
	const writes = 12
	stride := int64(1)
	if testing.Short() {
		stride = 5
	}
	for k := int64(1); ; k += stride {
		mem := vfs.NewMem()
		var count, acked atomic.Int64
		var clone *vfs.MemFS
		var ackedAtCut int64
		fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
			if op.Kind.IsWrite() && count.Add(1) == k {
				ackedAtCut = acked.Load()
				clone = mem.CrashClone(vfs.CrashCloneOptions{})
			}
			return nil
		}))
		addr, stop := startSingle(t, fs)
		c := dial(t, addr)
		for i := 0; i < writes; i++ {
			st, _, err := c.put(fmt.Sprintf("k%02d", i), fmt.Sprint(i))
			if err != nil || st != wire.StatusOK {
				t.Fatalf("put %d: %v %v", i, st, err)
			}
			acked.Store(int64(i + 1))
		}
		stop()
		if clone == nil {
			t.Logf("tested power cuts at %d write operations", k-1)
			return
		}
		addr, stop = startSingle(t, clone)
		c = dial(t, addr)
		for i := 0; i < int(ackedAtCut); i++ {
			st, v, err := c.get(fmt.Sprintf("k%02d", i))
			if err != nil || st != wire.StatusOK || string(v) != fmt.Sprint(i) {
				stop()
				t.Fatalf("cut at write %d: acknowledged write k%02d lost (%v %v %q)", k, i, st, err, v)
			}
		}
		stop()
	}
}
