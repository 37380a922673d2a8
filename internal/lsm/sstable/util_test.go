package sstable

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/cache"
)

// testKeyring holds keys 1 and 2 (fixed bytes), 2 active; testSealer opens
// every encrypted table of these tests, and seals new ones with key 2.
var (
	testKeyring = func() *crypt.Keyring {
		r, err := crypt.New(map[crypt.KeyID][]byte{1: bytes.Repeat([]byte{1}, 32), 2: bytes.Repeat([]byte{2}, 32)}, 2)
		if err != nil {
			panic(err)
		}
		return r
	}()
	testSealer = crypt.NewSealer(testKeyring)
)

// sealed returns o with testSealer.
func sealed(o WriterOptions) WriterOptions {
	o.Sealer = testSealer
	return o
}

// memFile is an in-memory ReadableFile.
type memFile struct {
	data   []byte
	closed bool
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset")
	}
	if off >= int64(len(f.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) Close() error {
	f.closed = true
	return nil
}

// kv is one model entry.
type kv struct {
	key base.InternalKey
	val []byte
}

func (e kv) String() string { return fmt.Sprintf("%s=%dB", e.key, len(e.val)) }

// genEntries returns n-ish random entries in strictly increasing internal
// order: several versions per user key, sets and deletes, values of random
// sizes including empty and (rarely) ~100 KiB.
func genEntries(rng *rand.Rand, nUser int, bigValues bool) []kv {
	seen := map[string]bool{}
	var users [][]byte
	for len(users) < nUser {
		var k []byte
		switch rng.IntN(10) {
		case 0:
			k = []byte{} // the empty user key is legal
		case 1, 2:
			// Keys with long shared prefixes.
			k = fmt.Appendf(nil, "prefix/%06d", rng.IntN(nUser*4))
		case 3:
			k = make([]byte, 1+rng.IntN(4))
			for i := range k {
				k[i] = []byte{0x00, 0xff, 'a', 0xfe}[rng.IntN(4)]
			}
		default:
			k = make([]byte, 1+rng.IntN(20))
			for i := range k {
				k[i] = byte('a' + rng.IntN(26))
			}
		}
		if !seen[string(k)] {
			seen[string(k)] = true
			users = append(users, k)
		}
	}
	sort.Slice(users, func(i, j int) bool { return bytes.Compare(users[i], users[j]) < 0 })
	var out []kv
	for _, u := range users {
		nv := 1 + rng.IntN(4)
		seqs := map[uint64]bool{}
		var list []uint64
		for len(list) < nv {
			s := uint64(rng.IntN(1000))
			if rng.IntN(50) == 0 {
				s = uint64(base.SeqNumMax) - uint64(rng.IntN(2))
			}
			if !seqs[s] {
				seqs[s] = true
				list = append(list, s)
			}
		}
		sort.Slice(list, func(i, j int) bool { return list[i] > list[j] })
		for _, s := range list {
			kind := base.KindSet
			if rng.IntN(4) == 0 {
				kind = base.KindDelete
			}
			var v []byte
			switch r := rng.IntN(100); {
			case r < 15:
				v = nil
			case r == 99 && bigValues:
				v = make([]byte, 100<<10+rng.IntN(1000))
			default:
				v = make([]byte, rng.IntN(200))
			}
			for i := range v {
				// Partly compressible.
				if i%3 == 0 {
					v[i] = byte(rng.IntN(256))
				} else {
					v[i] = byte(i)
				}
			}
			out = append(out, kv{key: base.MakeInternalKey(u, base.SeqNum(s), kind), val: v})
		}
	}
	return out
}

// buildTable writes entries with opts and returns the file bytes.
// A nil t makes failures panic (for seed generation outside tests).
func buildTable(t testing.TB, entries []kv, opts WriterOptions) ([]byte, Metadata) {
	fatalf := func(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
	if t != nil {
		t.Helper()
		fatalf = t.Fatalf
	}
	var buf bytes.Buffer
	w := NewWriter(&buf, opts)
	for _, e := range entries {
		if err := w.Add(e.key, e.val); err != nil {
			fatalf("Add(%s): %v", e.key, err)
		}
	}
	if err := w.Close(); err != nil {
		fatalf("Close: %v", err)
	}
	m := w.Metadata()
	if m.Size != uint64(buf.Len()) {
		fatalf("Metadata.Size %d, file %d", m.Size, buf.Len())
	}
	return buf.Bytes(), m
}

func openTable(t testing.TB, data []byte, c *cache.Cache) *Reader {
	t.Helper()
	opts := ReaderOptions{FileName: "test.sst", FileNum: 7, Sealer: testSealer}
	if c != nil {
		opts.Cache = c
		opts.CacheID = c.NewID()
	}
	r, err := Open(&memFile{data: data}, int64(len(data)), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return r
}

// modelGet returns the newest entry for uk with seq <= readSeq.
func modelGet(entries []kv, uk []byte, readSeq base.SeqNum) (kv, bool) {
	i := sort.Search(len(entries), func(i int) bool {
		return base.CompareInternal(entries[i].key, base.InternalKey{UserKey: uk, Trailer: base.MakeTrailer(readSeq, base.KindMax)}) >= 0
	})
	if i < len(entries) && bytes.Equal(entries[i].key.UserKey, uk) {
		return entries[i], true
	}
	return kv{}, false
}
