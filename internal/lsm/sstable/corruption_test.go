package sstable

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/cache"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/golden.sst")

// goldenEntries is the fixed content of the golden table.
func goldenEntries() []kv {
	mk := func(k string, seq base.SeqNum, kind base.Kind, v string) kv {
		return kv{key: base.MakeInternalKey([]byte(k), seq, kind), val: []byte(v)}
	}
	return []kv{
		mk("apple", 3, base.KindSet, "red"),
		mk("apple", 2, base.KindDelete, ""),
		mk("apricot", 9, base.KindSet, "orange"),
		mk("banana", 5, base.KindSet, "yellow"),
		mk("blueberry", 7, base.KindSet, "blue"),
		mk("cherry", 1, base.KindSet, ""),
		mk("cherry-tomato", 4, base.KindDelete, ""),
	}
}

func goldenOptions() WriterOptions {
	return WriterOptions{BlockSize: 48, BlockRestartInterval: 2, BloomBitsPerKey: 10, Compression: NoCompression}
}

// TestGolden pins the file format: the table written for fixed content must
// match testdata/golden.sst byte for byte, and its footer is spelled out.
func TestGolden(t *testing.T) {
	data, _ := buildTable(t, goldenEntries(), goldenOptions())
	path := filepath.Join("testdata", "golden.sst")
	if *updateGolden {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, want) {
		t.Fatalf("table bytes differ from %s (format change?)\ngot  %x\nwant %x", path, data, want)
	}
	const wantSize = 704
	const wantFooter = "01" + // checksum type crc32c
		"cf0433" + // metaindex handle: offset 591, length 51
		"810449" + // index handle: offset 513, length 73
		"00000000000000000000000000000000000000000000000000000000000000000000" + // 34 bytes of zero padding up to byte 41
		"01000000" + // format version 1
		"563f7716" + // masked CRC32C of bytes [0, 45)
		"894b415941535354" // magic "\x89KAYASST"
	if len(data) != wantSize {
		t.Fatalf("golden table is %d bytes, want %d", len(data), wantSize)
	}
	if got := hex.EncodeToString(data[len(data)-footerLen:]); got != wantFooter {
		t.Fatalf("footer\n got %s\nwant %s", got, wantFooter)
	}
	// And it reads back.
	r := openTable(t, want, nil)
	defer r.Close()
	it := r.NewIter(IterOptions{})
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		e := goldenEntries()[n]
		if it.Key().Trailer != e.key.Trailer || !bytes.Equal(it.Key().UserKey, e.key.UserKey) || !bytes.Equal(it.Value(), e.val) {
			t.Fatalf("entry %d: %s", n, it.Key())
		}
		n++
	}
	if err := it.Close(); err != nil || n != len(goldenEntries()) {
		t.Fatalf("read %d entries: %v", n, err)
	}
}

// checkTable opens data and reads everything. It returns the first error;
// if there is none, everything read must equal entries exactly.
func checkTable(data []byte, size int64, entries []kv, c *cache.Cache, ignoreCRC bool) error {
	opts := ReaderOptions{FileName: "flip.sst", FileNum: 1, Cache: c, Sealer: testSealer}
	if c != nil {
		opts.CacheID = c.NewID()
	}
	r, err := open(&memFile{data: data}, size, opts, ignoreCRC)
	if err != nil {
		return err
	}
	defer r.Close()
	it := r.NewIter(IterOptions{FillCache: true})
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		if ignoreCRC {
			continue
		}
		if n >= len(entries) {
			return fmt.Errorf("WRONG DATA: extra entry %s", it.Key())
		}
		e := entries[n]
		if k := it.Key(); k.Trailer != e.key.Trailer || !bytes.Equal(k.UserKey, e.key.UserKey) || !bytes.Equal(it.Value(), e.val) {
			return fmt.Errorf("WRONG DATA: entry %d is %s, want %s", n, k, e.key)
		}
		n++
	}
	if err := it.Error(); err != nil {
		it.Close()
		return err
	}
	if !ignoreCRC && n != len(entries) {
		return fmt.Errorf("WRONG DATA: %d entries, want %d", n, len(entries))
	}
	n = len(entries)
	for ok := it.Last(); ok; ok = it.Prev() {
		n--
		if ignoreCRC {
			continue
		}
		if n < 0 || base.CompareInternal(it.Key(), entries[n].key) != 0 || !bytes.Equal(it.Value(), entries[n].val) {
			return fmt.Errorf("WRONG DATA: backward entry %d is %s", n, it.Key())
		}
	}
	if err := it.Close(); err != nil {
		return err
	}
	if !ignoreCRC && n != 0 {
		return fmt.Errorf("WRONG DATA: backward scan stopped at %d", n)
	}
	for _, e := range entries {
		v, kind, found, err := r.Get(e.key.UserKey, e.key.Seq())
		if err != nil {
			return err
		}
		if !ignoreCRC && (!found || kind != e.key.Kind() || !bytes.Equal(v, e.val)) {
			return fmt.Errorf("WRONG DATA: Get(%s) = %v", e.key, found)
		}
		it := r.NewIter(IterOptions{Lower: e.key.UserKey, Upper: append(append([]byte(nil), e.key.UserKey...), 0)})
		ok := it.SeekGE(e.key.UserKey)
		ok = ok && it.SeekLT(e.key.UserKey)
		if err := it.Close(); err != nil {
			return err
		}
		_ = ok
	}
	return r.ValidateChecksums()
}

func smallTables(t *testing.T) map[string][]byte {
	tables := map[string][]byte{}
	entries := goldenEntries()
	tables["golden"], _ = buildTable(t, entries, goldenOptions())
	o := goldenOptions()
	o.Compression = SnappyCompression
	o.BlockSize = 200
	tables["snappy"], _ = buildTable(t, compressibleEntries(), o)
	o.Compression = ZstdCompression
	tables["zstd"], _ = buildTable(t, compressibleEntries(), o)
	tables["encrypted-golden"], _ = buildTable(t, entries, sealed(goldenOptions()))
	o.Compression = SnappyCompression
	tables["encrypted-snappy"], _ = buildTable(t, compressibleEntries(), sealed(o))
	return tables
}

func compressibleEntries() []kv {
	var out []kv
	for i := 0; i < 12; i++ {
		out = append(out, kv{
			key: base.MakeInternalKey(fmt.Appendf(nil, "key-%03d", i*7), base.SeqNum(100-i), base.Kind(i%2)),
			val: bytes.Repeat([]byte{byte('a' + i)}, 30+i),
		})
	}
	return out
}

func entriesOf(t *testing.T, data []byte) []kv {
	r := openTable(t, data, nil)
	defer r.Close()
	it := r.NewIter(IterOptions{})
	var out []kv
	for ok := it.First(); ok; ok = it.Next() {
		out = append(out, kv{key: it.Key().Clone(), val: append([]byte(nil), it.Value()...)})
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBitFlips flips every byte of small tables, one at a time (and every
// bit of the footer), and checks that reading either fails with a
// corruption error or returns exactly the original data. With checksums
// disabled (a testing-only mode) it checks that nothing panics and that
// every error is a corruption error.
func TestBitFlips(t *testing.T) {
	for name, data := range smallTables(t) {
		t.Run(name, func(t *testing.T) {
			entries := entriesOf(t, data)
			if err := checkTable(data, int64(len(data)), entries, nil, false); err != nil {
				t.Fatalf("intact table: %v", err)
			}
			layout := func() map[string]int {
				r := openTable(t, data, nil)
				defer r.Close()
				l, err := r.Layout()
				if err != nil {
					t.Fatal(err)
				}
				m := map[string]int{}
				for _, b := range l.Blocks {
					m[b.Kind]++
					if b.Compression != NoCompression {
						m["compressed"]++
					}
				}
				return m
			}()
			if !strings.HasSuffix(name, "golden") && layout["compressed"] == 0 {
				t.Fatalf("table %s should have compressed blocks: %v", name, layout)
			}
			if layout["filter"] != 1 || layout["data"] < 2 {
				t.Fatalf("table should have a filter and several data blocks: %v", layout)
			}
			try := func(mut []byte, pos int, what string) {
				c := cache.New(1 << 20)
				err := checkTable(mut, int64(len(mut)), entries, c, false)
				if err == nil {
					return // harmless
				}
				if !errors.Is(err, base.ErrCorruption) {
					t.Fatalf("%s at byte %d: %v", what, pos, err)
				}
				var ce *base.CorruptionError
				if !errors.As(err, &ce) || ce.File != "flip.sst" || ce.Offset < 0 || ce.Offset >= int64(len(mut)) {
					t.Fatalf("%s at byte %d: error does not name the file and an offset in it: %v", what, pos, err)
				}
				// Without checksums the decoders see the damage; they must
				// not panic and must report only corruption.
				if err := checkTable(mut, int64(len(mut)), entries, nil, true); !isReadError(err) {
					t.Fatalf("%s at byte %d without checksums: %v", what, pos, err)
				}
			}
			harmless := 0
			for pos := range data {
				mut := append([]byte(nil), data...)
				mut[pos] ^= 0xff
				if checkTable(mut, int64(len(mut)), entries, nil, false) == nil {
					harmless++
				}
				try(mut, pos, "byte flip")
			}
			for pos := len(data) - footerLenEncrypted; pos < len(data); pos++ {
				for bit := 0; bit < 8; bit++ {
					mut := append([]byte(nil), data...)
					mut[pos] ^= 1 << bit
					try(mut, pos, fmt.Sprintf("bit %d flip", bit))
				}
			}
			if harmless != 0 {
				t.Logf("%d of %d byte flips were harmless", harmless, len(data))
			}
		})
	}
}

// TestCRCErrorMessage checks that checksum errors say what was expected and
// what was found, and where.
func TestCRCErrorMessage(t *testing.T) {
	data, _ := buildTable(t, goldenEntries(), goldenOptions())
	data[3] ^= 1 // inside data block 0
	r := openTable(t, data, nil)
	defer r.Close()
	_, _, _, err := r.Get([]byte("apple"), base.SeqNumMax)
	var ce *base.CorruptionError
	if !errors.As(err, &ce) || ce.Offset != 0 || ce.File != "test.sst" {
		t.Fatalf("Get: %v", err)
	}
	for _, want := range []string{"checksum mismatch", "expected", "computed"} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Fatalf("error %q lacks %q", err, want)
		}
	}
	if err := r.ValidateChecksums(); !errors.Is(err, base.ErrCorruption) {
		t.Fatalf("ValidateChecksums: %v", err)
	}
}

// TestTruncation checks every truncated length: with the true (short) size
// and with the original size claimed over a short file.
func TestTruncation(t *testing.T) {
	for name, data := range smallTables(t) {
		entries := entriesOf(t, data)
		for n := 0; n < len(data); n++ {
			short := data[:n:n]
			for _, size := range []int64{int64(n), int64(len(data))} {
				err := checkTable(short, size, entries, nil, false)
				if err == nil || !errors.Is(err, base.ErrCorruption) {
					t.Fatalf("%s truncated to %d (size %d): %v", name, n, size, err)
				}
			}
		}
	}
}

func TestEmptyAndTinyFiles(t *testing.T) {
	for _, data := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte{0}, footerLen), []byte(tableMagic)} {
		_, err := Open(&memFile{data: data}, int64(len(data)), ReaderOptions{FileName: "tiny.sst"})
		if !errors.Is(err, base.ErrCorruption) {
			t.Fatalf("Open(%q): %v", data, err)
		}
	}
}

// TestOutOfOrderKeysWithValidCRC damages a data block's key order and then
// fixes the block checksum (as a buggy writer would produce): iteration
// and validation must report corruption instead of returning the keys.
func TestOutOfOrderKeysWithValidCRC(t *testing.T) {
	entries := []kv{
		{key: base.MakeInternalKey([]byte("aaaa"), 1, base.KindSet), val: []byte("1")},
		{key: base.MakeInternalKey([]byte("bbbb"), 1, base.KindSet), val: []byte("2")},
		{key: base.MakeInternalKey([]byte("cccc"), 1, base.KindSet), val: []byte("3")},
	}
	opts := WriterOptions{BlockSize: 4096, BlockRestartInterval: 1}
	data, _ := buildTable(t, entries, opts)
	i := bytes.Index(data, []byte("bbbb"))
	copy(data[i:], "0000") // now "0000" sorts before "aaaa"
	r := openTable(t, data, nil)
	h := r.index.handles[0]
	r.Close()
	crc := base.NewCRC(data[h.offset : h.offset+h.length+1]).Value()
	copy(data[h.offset+h.length+1:], le32(crc))

	r = openTable(t, data, nil)
	defer r.Close()
	it := r.NewIter(IterOptions{})
	for ok := it.First(); ok; ok = it.Next() {
	}
	if err := it.Close(); !errors.Is(err, base.ErrCorruption) || !bytes.Contains([]byte(err.Error()), []byte("out of order")) {
		t.Fatalf("forward iteration: %v", err)
	}
	it = r.NewIter(IterOptions{})
	for ok := it.Last(); ok; ok = it.Prev() {
	}
	if err := it.Close(); !errors.Is(err, base.ErrCorruption) {
		t.Fatalf("backward iteration: %v", err)
	}
	if err := r.ValidateChecksums(); !errors.Is(err, base.ErrCorruption) {
		t.Fatalf("ValidateChecksums: %v", err)
	}
}
