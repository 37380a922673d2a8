package sstable

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/lsm/base"
)

var updateFuzzSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite the seed corpora under testdata/fuzz")

// seedTables returns small valid tables used as fuzz seeds.
func seedTables(t testing.TB) [][]byte {
	var out [][]byte
	g, _ := buildTable(t, goldenEntries(), goldenOptions())
	out = append(out, g)
	for _, c := range []Compression{SnappyCompression, ZstdCompression} {
		o := goldenOptions()
		o.Compression = c
		o.BlockSize = 200
		d, _ := buildTable(t, compressibleEntries(), o)
		out = append(out, d)
	}
	o := WriterOptions{BlockSize: 128, BlockRestartInterval: 3}
	d, _ := buildTable(t, compressibleEntries(), o)
	out = append(out, d)
	// Encrypted tables (testSealer opens them).
	e, _ := buildTable(t, goldenEntries(), sealed(goldenOptions()))
	o = sealed(goldenOptions())
	o.Compression, o.BlockSize = SnappyCompression, 200
	e2, _ := buildTable(t, compressibleEntries(), o)
	return append(out, e, e2)
}

// seedBlocks returns valid data blocks.
func seedBlocks() [][]byte {
	var out [][]byte
	for _, interval := range []int{1, 2, 16} {
		bw := blockWriter{restartInterval: interval}
		for _, e := range goldenEntries() {
			bw.add(e.key.AppendEncoded(nil), e.val)
		}
		out = append(out, append([]byte(nil), bw.finish()...))
	}
	bw := blockWriter{restartInterval: 1}
	out = append(out, append([]byte(nil), bw.finish()...)) // empty block
	return out
}

func seedIndexBlocks() [][]byte {
	var out [][]byte
	bw := blockWriter{restartInterval: 1}
	for i, e := range goldenEntries() {
		bw.add(e.key.AppendEncoded(nil), appendBlockHandle(nil, blockHandle{uint64(i * 100), 95}))
	}
	out = append(out, append([]byte(nil), bw.finish()...))
	for _, tbl := range seedTables(nil) {
		r, err := Open(&memFile{data: tbl}, int64(len(tbl)), ReaderOptions{Sealer: testSealer})
		if err != nil {
			panic(err)
		}
		raw := tbl[r.footer.index.offset : r.footer.index.offset+r.footer.index.length]
		if _, enc := r.Encryption(); !enc && tbl[r.footer.index.end()-blockTrailerLen] == byte(NoCompression) {
			out = append(out, raw)
		}
	}
	return out
}

func seedFooters() [][]byte {
	var out [][]byte
	for _, tbl := range seedTables(nil) {
		out = append(out, tbl[len(tbl)-footerLenEncrypted:])
	}
	f := footer{metaindex: blockHandle{1 << 62, 1 << 40}, index: blockHandle{1<<64 - 1, 1<<64 - 1}, version: FormatVersion}
	out = append(out, f.encode())
	f.version, f.keyID = FormatVersionEncrypted, 1<<32-1
	return append(out, f.encode())
}

func seedFilters() [][]byte {
	var out [][]byte
	for _, n := range []int{1, 10, 100} {
		w := bloomWriter{bitsPerKey: 10}
		for i := 0; i < n; i++ {
			w.add(fmt.Appendf(nil, "k%d", i))
		}
		out = append(out, w.finish())
	}
	return out
}

// TestWriteFuzzSeeds writes the seed corpora into testdata/fuzz so that
// plain `go test` runs them too (they are committed). Run with
// -update-fuzz-seeds after a format change.
func TestWriteFuzzSeeds(t *testing.T) {
	if !*updateFuzzSeeds {
		t.Skip("use -update-fuzz-seeds to rewrite the seed corpora")
	}
	write := func(target string, i int, lines ...string) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		content := "go test fuzz v1\n"
		for _, l := range lines {
			content += l + "\n"
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bs := func(b []byte) string { return "[]byte(" + strconv.Quote(string(b)) + ")" }
	for i, b := range seedFooters() {
		write("FuzzFooter", i, bs(b))
	}
	for i, b := range seedBlocks() {
		write("FuzzBlockIter", i, bs(b))
	}
	for i, b := range seedIndexBlocks() {
		write("FuzzIndexBlock", i, bs(b))
	}
	for i, b := range seedFilters() {
		write("FuzzBloomFilter", i, bs(b), bs([]byte("k5")))
	}
	for i, b := range seedTables(t) {
		write("FuzzReader", 2*i, bs(b), "bool(false)")
		write("FuzzReader", 2*i+1, bs(b), "bool(true)")
	}
}

func isCorruption(err error) bool { return err == nil || errors.Is(err, base.ErrCorruption) }

// isReadError: corruption, or (in an encrypted table whose footer's key id
// was changed) a key the keyring lacks.
func isReadError(err error) bool { return isCorruption(err) || errors.Is(err, crypt.ErrUnknownKey) }

func FuzzFooter(f *testing.F) {
	for _, b := range seedFooters() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ft, err := decodeFooter(b, "fuzz.sst", 100)
		if err != nil {
			if !errors.Is(err, base.ErrCorruption) {
				t.Fatalf("non-corruption error %v", err)
			}
			return
		}
		enc := ft.encode()
		ft2, err := decodeFooter(enc, "fuzz.sst", 0)
		if err != nil || ft2 != ft {
			t.Fatalf("re-encoded footer %+v decodes to %+v, %v", ft, ft2, err)
		}
	})
}

type fuzzEntry struct{ key, val []byte }

// iterateBlock reads a block forward and backward and checks that the two
// agree when neither failed.
//
// Blocks that pass validate() must read identically in both directions;
// others must only not panic and report nothing but corruption.
func iterateBlock(t *testing.T, data []byte) (fwd []fuzzEntry, clean bool) {
	var it blockIter
	if err := it.init(data, true, "fuzz", 0); err != nil {
		if !errors.Is(err, base.ErrCorruption) {
			t.Fatal(err)
		}
		return nil, false
	}
	_, _, _, verr := it.validate()
	if !isCorruption(verr) {
		t.Fatal(verr)
	}
	it.init(data, true, "fuzz", 0)
	for ok := it.first(); ok; ok = it.next() {
		if len(fwd) > 0 && base.CompareEncoded(fwd[len(fwd)-1].key, it.key) >= 0 {
			t.Fatalf("iterator returned keys out of order")
		}
		fwd = append(fwd, fuzzEntry{append([]byte(nil), it.key...), append([]byte(nil), it.val...)})
	}
	fwdErr := it.err
	var bwd []fuzzEntry
	for ok := it.last(); ok; ok = it.prev() {
		bwd = append(bwd, fuzzEntry{append([]byte(nil), it.key...), append([]byte(nil), it.val...)})
		if len(bwd) > len(data) {
			t.Fatalf("backward iteration does not end")
		}
	}
	if !isCorruption(fwdErr) || !isCorruption(it.err) {
		t.Fatalf("non-corruption errors %v %v", fwdErr, it.err)
	}
	if fwdErr != nil || it.err != nil || verr != nil {
		return fwd, false
	}
	if len(bwd) != len(fwd) {
		t.Fatalf("forward %d entries, backward %d", len(fwd), len(bwd))
	}
	for j := range fwd {
		b := bwd[len(bwd)-1-j]
		if !bytes.Equal(fwd[j].key, b.key) || !bytes.Equal(fwd[j].val, b.val) {
			t.Fatalf("entry %d differs forward and backward", j)
		}
	}
	return fwd, true
}

// seekProbes derives probe user keys from entries and raw bytes.
func seekProbes(fwd []fuzzEntry, extra []byte) [][]byte {
	var probes [][]byte
	for _, e := range fwd {
		uk := e.key[:len(e.key)-8]
		probes = append(probes, uk, append(append([]byte(nil), uk...), 0))
		if len(uk) > 0 {
			probes = append(probes, uk[:len(uk)-1])
		}
	}
	for i := 0; i+4 <= len(extra) && len(probes) < 64; i += 7 {
		probes = append(probes, extra[i:i+4])
	}
	return append(probes, nil)
}

func FuzzBlockIter(f *testing.F) {
	for _, b := range seedBlocks() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fwd, clean := iterateBlock(t, data)
		var it blockIter
		if it.init(data, true, "fuzz", 0) != nil {
			return
		}
		_, _, _, verr := it.validate()
		valid := clean && verr == nil
		for _, p := range seekProbes(fwd, data) {
			// Expected positions from the forward list.
			ge := 0
			for ge < len(fwd) && compareSearch(fwd[ge].key, p, maxTrailer) < 0 {
				ge++
			}
			if it.init(data, true, "fuzz", 0) != nil {
				t.Fatal("init failed the second time")
			}
			ok := it.seekGE(p, maxTrailer)
			if !isCorruption(it.err) {
				t.Fatal(it.err)
			}
			if valid {
				if ok != (ge < len(fwd)) || (ok && !bytes.Equal(it.key, fwd[ge].key)) {
					t.Fatalf("seekGE(%q) = %v, want index %d of %d", p, ok, ge, len(fwd))
				}
				// Step around.
				for j := ge + 1; ok && j < len(fwd) && j < ge+3; j++ {
					if !it.next() || !bytes.Equal(it.key, fwd[j].key) {
						t.Fatalf("next after seekGE")
					}
				}
			}
			ok = it.seekLT(p, maxTrailer)
			if !isCorruption(it.err) {
				t.Fatal(it.err)
			}
			if valid {
				if ok != (ge > 0) || (ok && !bytes.Equal(it.key, fwd[ge-1].key)) {
					t.Fatalf("seekLT(%q) = %v, want index %d", p, ok, ge-1)
				}
				for j := ge - 2; ok && j >= 0 && j > ge-5; j-- {
					if !it.prev() || !bytes.Equal(it.key, fwd[j].key) {
						t.Fatalf("prev after seekLT")
					}
				}
				if ok && ge < len(fwd) {
					// Direction change: forward again from wherever we are.
					for it.valid && it.next() {
					}
					if it.err != nil {
						t.Fatal(it.err)
					}
				}
			} else {
				// Exercise the error paths; only the absence of panics
				// and non-corruption errors matters here.
				for n := 0; ok && n < 20; n++ {
					if n%3 == 2 {
						ok = it.next()
					} else {
						ok = it.prev()
					}
				}
				if !isCorruption(it.err) {
					t.Fatal(it.err)
				}
			}
		}
	})
}

func FuzzIndexBlock(f *testing.F) {
	for _, b := range seedIndexBlocks() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		x, err := decodeIndexBlock(data, "fuzz", 0)
		if err != nil {
			if !errors.Is(err, base.ErrCorruption) {
				t.Fatal(err)
			}
			return
		}
		for i := 0; i < x.len(); i++ {
			if len(x.key(i)) < 8 {
				t.Fatalf("short separator")
			}
			if i > 0 && base.CompareEncoded(x.key(i-1), x.key(i)) >= 0 {
				t.Fatalf("separators out of order")
			}
		}
		for i := 0; i < x.len(); i++ {
			uk := x.userKey(i)
			if j := x.search(uk, maxTrailer); j > i {
				t.Fatalf("search(%q) = %d > %d", uk, j, i)
			}
			_ = x.search(append(append([]byte(nil), uk...), 0), 0)
		}
		_ = x.search(nil, maxTrailer)
		_ = x.search(data, 0)
	})
}

func FuzzBloomFilter(f *testing.F) {
	for _, b := range seedFilters() {
		f.Add(b, []byte("k5"))
	}
	f.Fuzz(func(t *testing.T, data, key []byte) {
		if bf, err := decodeBloomFilter(data); err == nil {
			_ = bf.mayContain(key)
			_ = bf.mayContain(data)
		}
		// No false negatives for keys cut from the input.
		w := bloomWriter{bitsPerKey: 1 + len(key)%20}
		var keys [][]byte
		for i := 0; i < len(data); i += 1 + int(data[i])%9 {
			keys = append(keys, data[i:min(len(data), i+1+int(data[i])%9)])
		}
		keys = append(keys, key)
		for _, k := range keys {
			w.add(k)
		}
		bf, err := decodeBloomFilter(w.finish())
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if !bf.mayContain(k) {
				t.Fatalf("false negative for %q", k)
			}
		}
	})
}

func FuzzReader(f *testing.F) {
	for _, b := range seedTables(f) {
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, ignoreCRC bool) {
		r, err := open(&memFile{data: data}, int64(len(data)), ReaderOptions{FileName: "fuzz.sst", Sealer: testSealer}, ignoreCRC)
		if err != nil {
			if !isReadError(err) {
				t.Fatal(err)
			}
			return
		}
		defer r.Close()
		_, _ = r.Layout()
		verr := r.ValidateChecksums()
		if !isReadError(verr) {
			t.Fatal(verr)
		}
		it := r.NewIter(IterOptions{})
		var fwd []kv
		for ok := it.First(); ok && len(fwd) <= len(data); ok = it.Next() {
			if n := len(fwd); n > 0 && base.CompareInternal(fwd[n-1].key, it.Key()) >= 0 {
				t.Fatalf("keys out of order")
			}
			fwd = append(fwd, kv{key: it.Key().Clone(), val: append([]byte(nil), it.Value()...)})
		}
		fwdErr := it.Error()
		n := 0
		for ok := it.Last(); ok && n <= len(data); ok = it.Prev() {
			n++
		}
		bwdErr := it.Error()
		if err := it.Close(); !isReadError(err) {
			t.Fatal(err)
		}
		if !isReadError(fwdErr) || !isReadError(bwdErr) {
			t.Fatal(fwdErr, bwdErr)
		}
		consistent := !ignoreCRC && verr == nil && fwdErr == nil && bwdErr == nil
		if consistent && n != len(fwd) {
			t.Fatalf("forward %d entries, backward %d", len(fwd), n)
		}
		rng := rand.New(rand.NewPCG(uint64(len(data)), 1))
		probes := [][]byte{nil, data[:min(4, len(data))]}
		for i := 0; i < 8 && len(fwd) > 0; i++ {
			probes = append(probes, fwd[rng.IntN(len(fwd))].key.UserKey)
		}
		for _, p := range probes {
			seq := base.SeqNum(rng.Uint64N(1 << 20))
			v, kind, found, err := r.Get(p, seq)
			if !isReadError(err) {
				t.Fatal(err)
			}
			if consistent && err == nil {
				want, wantFound := modelGet(fwd, p, seq)
				if found != wantFound || (found && (kind != want.key.Kind() || !bytes.Equal(v, want.val))) {
					t.Fatalf("Get(%q, %d) = %v, model %v", p, seq, found, wantFound)
				}
			}
			it := r.NewIter(IterOptions{Lower: p, Upper: binary.BigEndian.AppendUint32(append([]byte(nil), p...), 1)})
			for ok := it.SeekGE(p); ok; ok = it.Next() {
			}
			for ok := it.SeekLT(p); ok; ok = it.Prev() {
			}
			if err := it.Close(); !isReadError(err) {
				t.Fatal(err)
			}
		}
	})
}
