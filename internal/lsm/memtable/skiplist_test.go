package memtable

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"

	"github.com/kayadb/kayadb/internal/lsm/base"
)

type entry struct {
	key   base.InternalKey
	value []byte
}

func sortEntries(es []entry) {
	sort.Slice(es, func(i, j int) bool { return base.CompareInternal(es[i].key, es[j].key) < 0 })
}

func TestModel(t *testing.T) {
	for seed := uint64(0); seed < 10; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			tbl := New(1 << 20)
			var model []entry
			seq := base.SeqNum(1)
			for i := 0; i < 3000; i++ {
				uk := []byte(fmt.Sprintf("key%04d", rng.IntN(500)))
				kind := base.KindSet
				if rng.IntN(5) == 0 {
					kind = base.KindDelete
				}
				v := []byte(fmt.Sprintf("v%d", seq))
				if kind == base.KindDelete {
					v = nil
				}
				k := base.MakeInternalKey(uk, seq, kind)
				seq++
				if err := tbl.Add(k, v); err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				model = append(model, entry{k.Clone(), v})
			}
			sortEntries(model)
			if tbl.Count() != uint64(len(model)) {
				t.Fatalf("count %d", tbl.Count())
			}
			// Forward.
			it := tbl.NewIter()
			i := 0
			for ok := it.First(); ok; ok = it.Next() {
				if base.CompareInternal(it.Key(), model[i].key) != 0 || !bytes.Equal(it.Value(), model[i].value) {
					t.Fatalf("seed %d: forward %d: %s vs %s", seed, i, it.Key(), model[i].key)
				}
				i++
			}
			if i != len(model) {
				t.Fatalf("forward saw %d of %d", i, len(model))
			}
			// Backward.
			i = len(model) - 1
			for ok := it.Last(); ok; ok = it.Prev() {
				if base.CompareInternal(it.Key(), model[i].key) != 0 {
					t.Fatalf("seed %d: backward %d", seed, i)
				}
				i--
			}
			if i != -1 {
				t.Fatalf("backward stopped at %d", i)
			}
			// Seeks and Gets.
			for j := 0; j < 500; j++ {
				uk := []byte(fmt.Sprintf("key%04d", rng.IntN(520)))
				idx := sort.Search(len(model), func(i int) bool { return bytes.Compare(model[i].key.UserKey, uk) >= 0 })
				ok := it.SeekGE(uk)
				if ok != (idx < len(model)) || ok && base.CompareInternal(it.Key(), model[idx].key) != 0 {
					t.Fatalf("SeekGE(%s) mismatch", uk)
				}
				ok = it.SeekLT(uk)
				if ok != (idx > 0) || ok && base.CompareInternal(it.Key(), model[idx-1].key) != 0 {
					t.Fatalf("SeekLT(%s) mismatch", uk)
				}
				readSeq := base.SeqNum(rng.IntN(int(seq) + 1))
				var want *entry
				for k := idx; k < len(model) && bytes.Equal(model[k].key.UserKey, uk); k++ {
					if model[k].key.Seq() <= readSeq {
						want = &model[k]
						break
					}
				}
				v, kind, found := tbl.Get(uk, readSeq)
				if found != (want != nil) {
					t.Fatalf("Get(%s,%d) found=%v", uk, readSeq, found)
				}
				if found && (kind != want.key.Kind() || !bytes.Equal(v, want.value)) {
					t.Fatalf("Get(%s,%d) = %v %q", uk, readSeq, kind, v)
				}
			}
		})
	}
}

func TestFullAndExists(t *testing.T) {
	tbl := New(MinCapacity)
	k := base.MakeInternalKey([]byte("a"), 1, base.KindSet)
	if err := tbl.Add(k, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := tbl.Add(k, []byte("y")); err != ErrExists {
		t.Fatalf("duplicate: %v", err)
	}
	var err error
	for i := 2; err == nil; i++ {
		err = tbl.Add(base.MakeInternalKey([]byte(fmt.Sprint(i)), base.SeqNum(i), base.KindSet), make([]byte, 100))
	}
	if err != ErrFull {
		t.Fatalf("got %v", err)
	}
	if tbl.Size() > tbl.Capacity() {
		t.Fatalf("size %d > capacity %d", tbl.Size(), tbl.Capacity())
	}
	// Entries that fit MaxEntrySize always fit when Available says so.
	if tbl.Available() >= MaxEntrySize(1, 0) {
		if err := tbl.Add(base.MakeInternalKey([]byte("z"), 100000, base.KindSet), nil); err != nil {
			t.Fatal(err)
		}
	}
}

func TestEmptyIter(t *testing.T) {
	tbl := New(MinCapacity)
	it := tbl.NewIter()
	if it.First() || it.Last() || it.SeekGE([]byte("a")) || it.SeekLT([]byte("z")) || it.Next() || it.Prev() {
		t.Fatal("empty table iterator returned an entry")
	}
	if !tbl.Empty() {
		t.Fatal("Empty")
	}
}

// TestConcurrentReaders runs readers against a writer under -race: readers
// must only ever see fully written entries, in order.
func TestConcurrentReaders(t *testing.T) {
	tbl := New(8 << 20)
	const n = 20000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			it := tbl.NewIter()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var prev []byte
				for ok := it.First(); ok; ok = it.Next() {
					k := it.Key()
					if prev != nil && bytes.Compare(prev, k.UserKey) >= 0 {
						t.Errorf("out of order: %q then %q", prev, k.UserKey)
						return
					}
					if want := "v" + string(k.UserKey); string(it.Value()) != want {
						t.Errorf("value %q for key %q", it.Value(), k.UserKey)
						return
					}
					prev = append(prev[:0], k.UserKey...)
				}
			}
		}()
	}
	rng := rand.New(rand.NewPCG(1, 1))
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("%08d", rng.IntN(1<<30))
		if err := tbl.Add(base.MakeInternalKey([]byte(k), base.SeqNum(i+1), base.KindSet), []byte("v"+k)); err != nil && err != ErrExists {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

func BenchmarkAdd(b *testing.B) {
	tbl := New(512 << 20)
	rng := rand.New(rand.NewPCG(1, 1))
	key := make([]byte, 16)
	val := make([]byte, 100)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		copy(key, fmt.Appendf(key[:0], "%016d", rng.Uint64()%1e15))
		if err := tbl.Add(base.MakeInternalKey(key, base.SeqNum(i+1), base.KindSet), val); err != nil {
			if err == ErrFull {
				tbl = New(512 << 20)
				continue
			}
			b.Fatal(err)
		}
	}
}

func BenchmarkGet(b *testing.B) {
	tbl := New(256 << 20)
	const n = 500000
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("%016d", i*7919%n))
		_ = tbl.Add(base.MakeInternalKey(keys[i], base.SeqNum(i+1), base.KindSet), make([]byte, 100))
	}
	b.ResetTimer()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, _, ok := tbl.Get(keys[i%n], base.SeqNumMax); !ok {
			b.Fatal("missing")
		}
	}
}

// BenchmarkAddRandom64MiB inserts random 16-byte keys with 100-byte values
// into a 64 MiB table, the shape of the fillrandom benchmark.
func BenchmarkAddRandom64MiB(b *testing.B) {
	const n = 400000
	perm := rand.New(rand.NewPCG(1, 1)).Perm(n)
	keys := make([][]byte, n)
	for i, p := range perm {
		keys[i] = []byte(fmt.Sprintf("%016d", p))
	}
	val := make([]byte, 100)
	b.ResetTimer()
	for done := 0; done < b.N; {
		b.StopTimer()
		tbl := New(64 << 20)
		b.StartTimer()
		for i := 0; i < n && done < b.N; i++ {
			if err := tbl.Add(base.MakeInternalKey(keys[i], base.SeqNum(i+1), base.KindSet), val); err != nil {
				b.Fatal(err)
			}
			done++
		}
	}
}
