package memtable

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kayadb/kayadb/internal/lsm/base"
)

// withTinyIndex replaces t's point index by one of 64 slots, which takes
// 32 keys and is then incomplete.
func withTinyIndex(t *Table) {
	t.ix = newPointIndex(0)
}

// TestPointIndexModel checks Get against a model with versions inserted in
// any order of sequence numbers, with the index complete and with an index
// that filled up (a miss is then no answer and Get searches the skiplist).
func TestPointIndexModel(t *testing.T) {
	for _, tiny := range []bool{false, true} {
		for seed := uint64(0); seed < 6; seed++ {
			t.Run(fmt.Sprintf("tiny=%v/%d", tiny, seed), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, 7))
				tbl := New(1 << 20)
				if tiny {
					withTinyIndex(tbl)
				}
				const n = 2000
				seqs := rng.Perm(n) // versions arrive in any order
				type ver struct {
					seq  base.SeqNum
					kind base.Kind
					val  []byte
				}
				model := map[string][]ver{}
				for _, s := range seqs {
					seq := base.SeqNum(s + 1)
					uk := fmt.Sprintf("k%03d", rng.IntN(200))
					kind := base.KindSet
					val := []byte(fmt.Sprintf("v%d", seq))
					if rng.IntN(6) == 0 {
						kind, val = base.KindDelete, nil
					}
					if err := tbl.Add(base.MakeInternalKey([]byte(uk), seq, kind), val); err != nil {
						t.Fatal(err)
					}
					model[uk] = append(model[uk], ver{seq, kind, val})
				}
				if got := tbl.ix.incomplete.Load(); got != tiny {
					t.Fatalf("index incomplete = %v, want %v", got, tiny)
				}
				for i := 0; i < 4000; i++ {
					uk := fmt.Sprintf("k%03d", rng.IntN(220)) // some absent
					readSeq := base.SeqNum(rng.IntN(n + 2))
					var want *ver
					for j, v := range model[uk] {
						if v.seq <= readSeq && (want == nil || v.seq > want.seq) {
							want = &model[uk][j]
						}
					}
					v, kind, found := tbl.Get([]byte(uk), readSeq)
					if found != (want != nil) {
						t.Fatalf("Get(%s, %d): found %v, want %v", uk, readSeq, found, want != nil)
					}
					if found && (kind != want.kind || !bytes.Equal(v, want.val)) {
						t.Fatalf("Get(%s, %d) = %v %q, want %v %q", uk, readSeq, kind, v, want.kind, want.val)
					}
				}
				// After Reset the index is empty and complete again.
				tbl.Reset(false)
				if _, _, found := tbl.Get([]byte("k001"), base.SeqNumMax); found {
					t.Fatal("Get found a key after Reset")
				}
				if tbl.ix.incomplete.Load() {
					t.Fatal("index still incomplete after Reset")
				}
				if err := tbl.Add(base.MakeInternalKey([]byte("k001"), 1, base.KindSet), []byte("x")); err != nil {
					t.Fatal(err)
				}
				if v, _, found := tbl.Get([]byte("k001"), base.SeqNumMax); !found || string(v) != "x" {
					t.Fatalf("Get after Reset and Add = %q %v", v, found)
				}
			})
		}
	}
}

// TestPointIndexConcurrentGets runs point reads against the writer under
// -race. The writer follows a plan of (key, seq) and publishes each seq as
// visible after its Add returns, as the engine does; a reader at a visible
// seq must find exactly the plan's newest version of its key at or below
// it, whether the index holds the key or not.
func TestPointIndexConcurrentGets(t *testing.T) {
	for _, tiny := range []bool{false, true} {
		t.Run(fmt.Sprintf("tiny=%v", tiny), func(t *testing.T) {
			tbl := New(8 << 20)
			if tiny {
				withTinyIndex(tbl)
			}
			const keys, n = 300, 30000
			rng := rand.New(rand.NewPCG(3, 3))
			plan := make([]int, n) // plan[i]: the key written at seq i+1
			versions := make([][]base.SeqNum, keys)
			for i := range plan {
				plan[i] = rng.IntN(keys)
				versions[plan[i]] = append(versions[plan[i]], base.SeqNum(i+1))
			}
			var visible atomic.Uint64
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for r := 0; r < 3; r++ {
				wg.Add(1)
				go func(r int) {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(r), 9))
					for {
						select {
						case <-stop:
							return
						default:
						}
						seq := base.SeqNum(visible.Load())
						k := rng.IntN(keys)
						vs := versions[k]
						i, _ := slices.BinarySearch(vs, seq+1) // first version above seq
						v, _, found := tbl.Get([]byte(fmt.Sprintf("key%04d", k)), seq)
						if i == 0 {
							if found {
								t.Errorf("key %d at seq %d: found %q, want none", k, seq, v)
								return
							}
							continue
						}
						if want := fmt.Sprintf("v%d", vs[i-1]); !found || string(v) != want {
							t.Errorf("key %d at seq %d: got %q (found %v), want %q", k, seq, v, found, want)
							return
						}
					}
				}(r)
			}
			for i, k := range plan {
				seq := base.SeqNum(i + 1)
				if err := tbl.Add(base.MakeInternalKey([]byte(fmt.Sprintf("key%04d", k)), seq, base.KindSet), []byte(fmt.Sprintf("v%d", seq))); err != nil {
					t.Fatal(err)
				}
				visible.Store(uint64(seq))
			}
			close(stop)
			wg.Wait()
		})
	}
}

// BenchmarkGetRandom64MiB reads random keys of a full 64 MiB table of
// 300-byte entries (the shape of a node's memtable under the put bench).
func BenchmarkGetRandom64MiB(b *testing.B) {
	tbl := New(64 << 20)
	rng := rand.New(rand.NewPCG(1, 1))
	var keys [][]byte
	for i := 0; ; i++ {
		k := []byte(fmt.Sprintf("\x01key%08d", rng.IntN(100000)))
		if tbl.Add(base.MakeInternalKey(k, base.SeqNum(i+1), base.KindSet), make([]byte, 280)) != nil {
			break
		}
		keys = append(keys, k)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, ok := tbl.Get(keys[rng.IntN(len(keys))], base.SeqNumMax); !ok {
			b.Fatal("missing")
		}
	}
}
