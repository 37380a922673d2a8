package sstable

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/cache"
)

// benchKey returns the 16-byte user key of index i.
func benchKey(dst []byte, i int) []byte {
	dst = append(dst[:0], "key"...)
	return fmt.Appendf(dst, "%013d", i)
}

type benchTable struct {
	data []byte
	n    int
}

var benchTables sync.Map // "n/compression" -> *benchTable

func getBenchTable(b *testing.B, n int, c Compression) *benchTable {
	k := fmt.Sprintf("%d/%d", n, c)
	if t, ok := benchTables.Load(k); ok {
		return t.(*benchTable)
	}
	var buf bytes.Buffer
	opts := DefaultWriterOptions()
	opts.Compression = c
	w := NewWriter(&buf, opts)
	val := make([]byte, 100)
	var key []byte
	for i := 0; i < n; i++ {
		key = benchKey(key, i)
		binary.LittleEndian.PutUint64(val, uint64(i))
		if err := w.Add(base.MakeInternalKey(key, base.SeqNum(i+1), base.KindSet), val); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	t := &benchTable{data: buf.Bytes(), n: n}
	benchTables.Store(k, t)
	return t
}

// openWarm opens the table with a cache large enough for all of it and
// loads every data block into the cache.
func openWarm(b *testing.B, t *benchTable) *Reader {
	r0 := openTable(b, t.data, nil)
	p := r0.Properties()
	r0.Close()
	// Room for every decompressed block, with the cache's per-entry charge.
	c := cache.New(int64(2*(p.RawKeySize+p.RawValueSize) + p.NumDataBlocks*(cache.EntryOverhead+4096)))
	r := openTable(b, t.data, c)
	it := r.NewIter(IterOptions{FillCache: true})
	for ok := it.First(); ok; ok = it.Next() {
	}
	if err := it.Close(); err != nil {
		b.Fatal(err)
	}
	return r
}

func BenchmarkGet(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		for _, c := range []Compression{NoCompression, SnappyCompression} {
			b.Run(fmt.Sprintf("keys=%d/%s/hit", n, c), func(b *testing.B) {
				r := openWarm(b, getBenchTable(b, n, c))
				defer r.Close()
				rng := rand.New(rand.NewPCG(1, 2))
				keys := make([][]byte, 1<<16)
				for i := range keys {
					keys[i] = benchKey(nil, rng.IntN(n))
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					_, _, found, err := r.Get(keys[i&(len(keys)-1)], base.SeqNumMax)
					if !found || err != nil {
						b.Fatal("not found", err)
					}
				}
			})
		}
		b.Run(fmt.Sprintf("keys=%d/none/miss", n), func(b *testing.B) {
			r := openWarm(b, getBenchTable(b, n, NoCompression))
			defer r.Close()
			keys := make([][]byte, 1<<16)
			for i := range keys {
				keys[i] = append(benchKey(nil, i*7), 'x')
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				_, _, _, _ = r.Get(keys[i&(len(keys)-1)], base.SeqNumMax)
			}
		})
	}
}

func BenchmarkIterNext(b *testing.B) {
	for _, c := range []Compression{NoCompression, SnappyCompression} {
		b.Run(c.String(), func(b *testing.B) {
			r := openWarm(b, getBenchTable(b, 1_000_000, c))
			defer r.Close()
			it := r.NewIter(IterOptions{FillCache: true})
			defer it.Close()
			it.First()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if !it.Next() {
					it.First()
				}
			}
		})
	}
	b.Run("uncached-sequential", func(b *testing.B) {
		t := getBenchTable(b, 1_000_000, NoCompression)
		r := openTable(b, t.data, nil)
		defer r.Close()
		it := r.NewIter(IterOptions{Sequential: true})
		defer it.Close()
		it.First()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if !it.Next() {
				it.First()
			}
		}
	})
}

func BenchmarkIterPrev(b *testing.B) {
	r := openWarm(b, getBenchTable(b, 1_000_000, NoCompression))
	defer r.Close()
	it := r.NewIter(IterOptions{FillCache: true})
	defer it.Close()
	it.Last()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if !it.Prev() {
			it.Last()
		}
	}
}

func BenchmarkSeekGE(b *testing.B) {
	n := 1_000_000
	r := openWarm(b, getBenchTable(b, n, NoCompression))
	defer r.Close()
	it := r.NewIter(IterOptions{FillCache: true})
	defer it.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	keys := make([][]byte, 1<<16)
	for i := range keys {
		keys[i] = benchKey(nil, rng.IntN(n))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if !it.SeekGE(keys[i&(len(keys)-1)]) {
			b.Fatal("seek failed")
		}
	}
}

func BenchmarkWriter(b *testing.B) {
	for _, c := range []Compression{NoCompression, SnappyCompression, ZstdCompression} {
		b.Run(c.String(), func(b *testing.B) {
			const n = 100_000
			keys := make([][]byte, n)
			for i := range keys {
				keys[i] = benchKey(nil, i)
			}
			val := make([]byte, 100)
			opts := DefaultWriterOptions()
			opts.Compression = c
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; {
				w := NewWriter(io.Discard, opts)
				for j := 0; j < n && i < b.N; j, i = j+1, i+1 {
					binary.LittleEndian.PutUint64(val, uint64(j))
					if err := w.Add(base.MakeInternalKey(keys[j], base.SeqNum(j+1), base.KindSet), val); err != nil {
						b.Fatal(err)
					}
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
