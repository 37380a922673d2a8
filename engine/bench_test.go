package engine

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// These benchmarks use the real file system (b.TempDir()). The side-by-side
// comparison with Pebble and goleveldb lives in the bench/ module.

func benchKey(buf []byte, i int) []byte { return fmt.Appendf(buf[:0], "%016d", i) }

func benchValue() []byte {
	v := make([]byte, 100)
	for i := range v[:50] {
		v[i] = byte(rand.Uint32())
	}
	for i := 50; i < 100; i++ {
		v[i] = 'x'
	}
	return v
}

func benchOpen(b *testing.B) *DB {
	db, err := Open(b.TempDir(), &Options{CacheSize: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	return db
}

func BenchmarkFillSeq(b *testing.B) {
	db := benchOpen(b)
	defer db.Close()
	v := benchValue()
	var k []byte
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k = benchKey(k, i)
		if err := db.Set(k, v, NoSync); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFillRandom(b *testing.B) {
	db := benchOpen(b)
	defer db.Close()
	v := benchValue()
	perm := rand.Perm(b.N)
	var k []byte
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k = benchKey(k, perm[i])
		if err := db.Set(k, v, NoSync); err != nil {
			b.Fatal(err)
		}
	}
}

func benchFilled(b *testing.B, n int) *DB {
	db := benchOpen(b)
	v := benchValue()
	var k []byte
	for _, i := range rand.Perm(n) {
		k = benchKey(k, i)
		if err := db.Set(k, v, NoSync); err != nil {
			b.Fatal(err)
		}
	}
	if err := db.Flush(); err != nil {
		b.Fatal(err)
	}
	return db
}

func BenchmarkReadRandom(b *testing.B) {
	const n = 1000000
	db := benchFilled(b, n)
	defer db.Close()
	var k []byte
	for i := 0; i < n; i++ {
		k = benchKey(k, i)
		if _, err := db.Get(k); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k = benchKey(k, rand.IntN(n))
		if _, err := db.Get(k); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkScan(b *testing.B) {
	const n = 1000000
	db := benchFilled(b, n)
	defer db.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		it, _ := db.NewIter(nil)
		c := 0
		for ok := it.First(); ok; ok = it.Next() {
			c++
		}
		it.Close()
		if c != n {
			b.Fatalf("scanned %d", c)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "keys/s")
}

func benchSync(b *testing.B, writers int) {
	db := benchOpen(b)
	defer db.Close()
	v := benchValue()
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/writers + 1
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var k []byte
			for i := 0; i < per; i++ {
				k = benchKey(k, rand.IntN(1<<30))
				if err := db.Set(k, v, Sync); err != nil {
					b.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
}

func BenchmarkSync1(b *testing.B)  { benchSync(b, 1) }
func BenchmarkSync16(b *testing.B) { benchSync(b, 16) }
func BenchmarkSync64(b *testing.B) { benchSync(b, 64) }
