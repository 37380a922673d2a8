package sstable

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/lsm/cache"
)

// modelIter mirrors Iter over a bounded slice of the model.
type modelIter struct {
	entries []kv // already restricted to the bounds
	pos     int  // -1 before start, len after end
	state   int  // 0 unpositioned, 1 positioned
}

func (m *modelIter) valid() bool { return m.state == 1 && m.pos >= 0 && m.pos < len(m.entries) }

func (m *modelIter) seekGE(k []byte) {
	m.state = 1
	m.pos = sort.Search(len(m.entries), func(i int) bool { return bytes.Compare(m.entries[i].key.UserKey, k) >= 0 })
}

func (m *modelIter) seekLT(k []byte) {
	m.state = 1
	m.pos = sort.Search(len(m.entries), func(i int) bool { return bytes.Compare(m.entries[i].key.UserKey, k) >= 0 }) - 1
}

func (m *modelIter) first() { m.state, m.pos = 1, 0 }
func (m *modelIter) last()  { m.state, m.pos = 1, len(m.entries)-1 }

func (m *modelIter) next() {
	if m.state == 0 || m.pos < 0 {
		m.first()
		return
	}
	if m.pos < len(m.entries) {
		m.pos++
	}
}

func (m *modelIter) prev() {
	if m.state == 0 || m.pos >= len(m.entries) {
		m.last()
		return
	}
	if m.pos >= 0 {
		m.pos--
	}
}

func restrict(entries []kv, lower, upper []byte) []kv {
	var out []kv
	for _, e := range entries {
		if lower != nil && bytes.Compare(e.key.UserKey, lower) < 0 {
			continue
		}
		if upper != nil && bytes.Compare(e.key.UserKey, upper) >= 0 {
			continue
		}
		out = append(out, e)
	}
	return out
}

func checkPos(t *testing.T, what string, it *Iter, ok bool, m *modelIter) {
	t.Helper()
	if ok != m.valid() {
		want := "invalid"
		if m.valid() {
			want = m.entries[m.pos].String()
		}
		got := "invalid"
		if ok {
			got = fmt.Sprintf("%s=%dB", it.Key(), len(it.Value()))
		}
		t.Fatalf("%s: got %s, want %s (err %v)", what, got, want, it.Error())
	}
	if !ok {
		if err := it.Error(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return
	}
	e := m.entries[m.pos]
	if k := it.Key(); base.CompareInternal(k, e.key) != 0 || k.Trailer != e.key.Trailer {
		t.Fatalf("%s: key %s, want %s", what, k, e.key)
	}
	if !bytes.Equal(it.Value(), e.val) {
		t.Fatalf("%s: value of %s: %d bytes, want %d", what, e.key, len(it.Value()), len(e.val))
	}
}

// randomProbe returns a user key near the model's keys.
func randomProbe(rng *rand.Rand, entries []kv) []byte {
	switch rng.IntN(4) {
	case 0:
		k := make([]byte, rng.IntN(6))
		for i := range k {
			k[i] = byte('a' + rng.IntN(26))
		}
		return k
	case 1:
		u := entries[rng.IntN(len(entries))].key.UserKey
		return append(append([]byte(nil), u...), 0)
	case 2:
		u := entries[rng.IntN(len(entries))].key.UserKey
		if len(u) > 0 {
			return u[:len(u)-1]
		}
		return u
	}
	return entries[rng.IntN(len(entries))].key.UserKey
}

type roundTripConfig struct {
	name string
	opts WriterOptions
	big  bool
}

func roundTripConfigs() []roundTripConfig {
	return []roundTripConfig{
		{"default", DefaultWriterOptions(), true},
		{"tiny-blocks-r1", WriterOptions{BlockSize: 64, BlockRestartInterval: 1, BloomBitsPerKey: 10}, false},
		{"small-blocks-r2-snappy", WriterOptions{BlockSize: 256, BlockRestartInterval: 2, BloomBitsPerKey: 0, Compression: SnappyCompression}, true},
		{"4k-r16-zstd", WriterOptions{BlockSize: 4096, BlockRestartInterval: 16, BloomBitsPerKey: 10, Compression: ZstdCompression}, true},
		{"64k-r32-snappy", WriterOptions{BlockSize: 64 << 10, BlockRestartInterval: 32, BloomBitsPerKey: 5, Compression: SnappyCompression}, false},
		{"1k-r7-nobloom", WriterOptions{BlockSize: 1024, BlockRestartInterval: 7}, true},
		{"64k-r1-zstd", WriterOptions{BlockSize: 64 << 10, BlockRestartInterval: 1, BloomBitsPerKey: 20, Compression: ZstdCompression}, false},
		{"encrypted-default", sealed(DefaultWriterOptions()), true},
		{"encrypted-small-blocks-snappy", sealed(WriterOptions{BlockSize: 256, BlockRestartInterval: 2, BloomBitsPerKey: 10, Compression: SnappyCompression}), true},
		{"encrypted-4k-zstd-nobloom", sealed(WriterOptions{BlockSize: 4096, BlockRestartInterval: 16, Compression: ZstdCompression}), false},
	}
}

func TestRoundTrip(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	for ci, cfg := range roundTripConfigs() {
		t.Run(cfg.name, func(t *testing.T) {
			cs := seed + uint64(ci)
			defer func() {
				if t.Failed() {
					t.Logf("reproduce with seed %d (config seed %d)", seed, cs)
				}
			}()
			rng := rand.New(rand.NewPCG(cs, cs^0x9e3779b97f4a7c15))
			nUser := 50 + rng.IntN(600)
			entries := genEntries(rng, nUser, cfg.big)
			data, meta := buildTable(t, entries, cfg.opts)
			checkMetadata(t, entries, meta)
			for _, withCache := range []bool{false, true} {
				var c *cache.Cache
				if withCache {
					c = cache.New(8 << 20)
				}
				r := openTable(t, data, c)
				checkReader(t, rng, r, entries, cfg.opts)
				if err := r.ValidateChecksums(); err != nil {
					t.Fatalf("ValidateChecksums: %v", err)
				}
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func checkMetadata(t *testing.T, entries []kv, m Metadata) {
	t.Helper()
	var dels uint64
	minSeq, maxSeq := base.SeqNumMax, base.SeqNum(0)
	for _, e := range entries {
		if e.key.Kind() == base.KindDelete {
			dels++
		}
		minSeq = min(minSeq, e.key.Seq())
		maxSeq = max(maxSeq, e.key.Seq())
	}
	if m.NumEntries != uint64(len(entries)) || m.NumDeletions != dels {
		t.Fatalf("metadata counts %d/%d, want %d/%d", m.NumEntries, m.NumDeletions, len(entries), dels)
	}
	if base.CompareInternal(m.Smallest, entries[0].key) != 0 || base.CompareInternal(m.Largest, entries[len(entries)-1].key) != 0 {
		t.Fatalf("metadata bounds %s %s", m.Smallest, m.Largest)
	}
	if m.SmallestSeq != minSeq || m.LargestSeq != maxSeq {
		t.Fatalf("metadata seqs %d %d, want %d %d", m.SmallestSeq, m.LargestSeq, minSeq, maxSeq)
	}
}

func checkReader(t *testing.T, rng *rand.Rand, r *Reader, entries []kv, wopts WriterOptions) {
	t.Helper()
	p := r.Properties()
	wantVersion, wantEnc := uint32(FormatVersion), false
	if wopts.Sealer != nil {
		wantVersion, wantEnc = FormatVersionEncrypted, true
	}
	if p.NumEntries != uint64(len(entries)) || p.FormatVersion != wantVersion || p.Compression != wopts.Compression {
		t.Fatalf("properties %+v", p)
	}
	if id, enc := r.Encryption(); enc != wantEnc || (enc && id != wopts.Sealer.ActiveKey()) {
		t.Fatalf("Encryption() = %d, %v; want encrypted %v", id, enc, wantEnc)
	}
	if p.FilterBitsPerKey != uint64(max(0, wopts.BloomBitsPerKey)) {
		t.Fatalf("filter bits %d", p.FilterBitsPerKey)
	}

	// Full scans in both directions, with every combination of the read
	// options.
	for _, io := range []IterOptions{{}, {FillCache: true}, {Sequential: true}, {FillCache: true, Sequential: true}} {
		it := r.NewIter(io)
		n := 0
		for ok := it.First(); ok; ok = it.Next() {
			if n >= len(entries) {
				t.Fatalf("forward scan: too many entries")
			}
			e := entries[n]
			if k := it.Key(); k.Trailer != e.key.Trailer || !bytes.Equal(k.UserKey, e.key.UserKey) || !bytes.Equal(it.Value(), e.val) {
				t.Fatalf("forward scan entry %d: got %s, want %s", n, it.Key(), e)
			}
			n++
		}
		if err := it.Error(); err != nil || n != len(entries) {
			t.Fatalf("forward scan: %d entries, want %d, err %v", n, len(entries), err)
		}
		n = len(entries)
		for ok := it.Last(); ok; ok = it.Prev() {
			n--
			if n < 0 {
				t.Fatalf("backward scan: too many entries")
			}
			e := entries[n]
			if k := it.Key(); k.Trailer != e.key.Trailer || !bytes.Equal(k.UserKey, e.key.UserKey) || !bytes.Equal(it.Value(), e.val) {
				t.Fatalf("backward scan entry %d: got %s, want %s", n, it.Key(), e)
			}
		}
		if err := it.Error(); err != nil || n != 0 {
			t.Fatalf("backward scan stopped at %d, err %v", n, err)
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
	}

	// Random operations with random bounds against the model.
	for round := 0; round < 12; round++ {
		var lower, upper []byte
		if round%3 != 0 {
			lower = randomProbe(rng, entries)
		}
		if round%4 != 0 {
			upper = randomProbe(rng, entries)
		}
		if rng.IntN(3) == 0 && lower != nil && upper != nil && bytes.Compare(lower, upper) > 0 {
			lower, upper = upper, lower
		}
		io := IterOptions{Lower: lower, Upper: upper, FillCache: rng.IntN(2) == 0, Sequential: rng.IntN(4) == 0}
		it := r.NewIter(io)
		m := &modelIter{entries: restrict(entries, lower, upper)}
		for op := 0; op < 300; op++ {
			var ok bool
			var what string
			switch x := rng.IntN(20); {
			case x == 0:
				ok, what = it.First(), "First"
				m.first()
			case x == 1:
				ok, what = it.Last(), "Last"
				m.last()
			case x < 5:
				k := randomProbe(rng, entries)
				what = fmt.Sprintf("SeekGE(%q)", k)
				ok = it.SeekGE(k)
				if lower != nil && bytes.Compare(k, lower) < 0 {
					k = lower
				}
				m.seekGE(k)
			case x < 8:
				k := randomProbe(rng, entries)
				what = fmt.Sprintf("SeekLT(%q)", k)
				ok = it.SeekLT(k)
				if upper != nil && bytes.Compare(k, upper) > 0 {
					k = upper
				}
				m.seekLT(k)
			case x < 14:
				ok, what = it.Next(), "Next"
				m.next()
			default:
				ok, what = it.Prev(), "Prev"
				m.prev()
			}
			checkPos(t, fmt.Sprintf("bounds [%q,%q) op %d %s", lower, upper, op, what), it, ok, m)
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
	}

	// Point lookups: every user key at random read sequence numbers, and
	// absent keys.
	for i, e := range entries {
		if !r.MayContain(e.key.UserKey) {
			t.Fatalf("MayContain(%q) = false for a present key", e.key.UserKey)
		}
		seqs := []base.SeqNum{e.key.Seq(), base.SeqNumMax, base.SeqNum(rng.IntN(1000))}
		if e.key.Seq() > 0 {
			seqs = append(seqs, e.key.Seq()-1)
		}
		if i%3 != 0 {
			seqs = seqs[:2]
		}
		for _, s := range seqs {
			v, kind, found, err := r.Get(e.key.UserKey, s)
			if err != nil {
				t.Fatalf("Get(%q, %d): %v", e.key.UserKey, s, err)
			}
			want, wantFound := modelGet(entries, e.key.UserKey, s)
			if found != wantFound || (found && (kind != want.key.Kind() || !bytes.Equal(v, want.val))) {
				t.Fatalf("Get(%q, %d) = %d bytes, %s, %v; want %v (%v)", e.key.UserKey, s, len(v), kind, found, want, wantFound)
			}
		}
	}
	for j := 0; j < 300; j++ {
		k := randomProbe(rng, entries)
		s := base.SeqNum(rng.IntN(1200))
		v, kind, found, err := r.Get(k, s)
		if err != nil {
			t.Fatal(err)
		}
		want, wantFound := modelGet(entries, k, s)
		if found != wantFound || (found && (kind != want.key.Kind() || !bytes.Equal(v, want.val))) {
			t.Fatalf("Get(%q, %d) = %v; want %v (%v)", k, s, found, want, wantFound)
		}
	}
}

func TestWriterErrors(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, DefaultWriterOptions())
	if err := w.Close(); !errors.Is(err, base.ErrInvalidArgument) {
		t.Fatalf("closing an empty table: %v", err)
	}

	w = NewWriter(&buf, DefaultWriterOptions())
	if err := w.Add(base.MakeInternalKey([]byte("b"), 5, base.KindSet), nil); err != nil {
		t.Fatal(err)
	}
	for _, k := range []base.InternalKey{
		base.MakeInternalKey([]byte("b"), 5, base.KindSet),        // equal
		base.MakeInternalKey([]byte("b"), 6, base.KindSet),        // newer version after older
		base.MakeInternalKey([]byte("a"), 1, base.KindSet),        // smaller user key
		base.MakeInternalKey([]byte("c"), 1, base.Kind(7)),        // bad kind
		base.MakeInternalKey(make([]byte, 5000), 1, base.KindSet), // too long
	} {
		if err := w.Add(k, nil); !errors.Is(err, base.ErrInvalidArgument) {
			t.Fatalf("Add(%s): %v, want invalid argument", k, err)
		}
	}
	if err := w.Add(base.MakeInternalKey([]byte("b"), 4, base.KindDelete), nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Add(base.MakeInternalKey([]byte("z"), 4, base.KindDelete), nil); err == nil {
		t.Fatal("Add after Close must fail")
	}
	if m := w.Metadata(); m.NumEntries != 2 || m.NumDeletions != 1 {
		t.Fatalf("metadata %+v", m)
	}
}

func TestEstimatedSize(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, DefaultWriterOptions())
	prev := w.EstimatedSize()
	for i := 0; i < 10000; i++ {
		if err := w.Add(base.MakeInternalKey(fmt.Appendf(nil, "key%08d", i), 1, base.KindSet), make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
		s := w.EstimatedSize()
		if s < prev {
			t.Fatalf("EstimatedSize went down: %d -> %d", prev, s)
		}
		prev = s
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := w.Metadata().Size; got < prev {
		t.Fatalf("final size %d < estimate %d", got, prev)
	}
}

func TestSeparator(t *testing.T) {
	ik := func(s string, seq base.SeqNum) []byte {
		return base.MakeInternalKey([]byte(s), seq, base.KindSet).AppendEncoded(nil)
	}
	cases := []struct {
		a, b []byte
		want string // user key of the separator
	}{
		{ik("abcdef", 3), ik("abzz", 9), "abd"},
		{ik("abcdef", 3), ik("abd", 9), "abce"},
		{ik("ab", 3), ik("b", 9), "ab"},
		{ik("a", 3), ik("a", 2), "a"},
		{ik("abc", 3), ik("abcd", 9), "abc"},
		{ik("a\xff\xffx", 3), ik("b", 9), "a\xff\xffx"},
		{ik("a\xff\x01x", 3), ik("b", 9), "a\xff\x02"},
	}
	for _, c := range cases {
		s := appendSeparator(nil, c.a, c.b)
		if base.CompareEncoded(c.a, s) > 0 || base.CompareEncoded(s, c.b) >= 0 {
			t.Errorf("separator(%q, %q) = %q out of range", c.a, c.b, s)
		}
		if got := string(s[:len(s)-8]); got != c.want {
			t.Errorf("separator(%q, %q) = %q, want %q", c.a, c.b, got, c.want)
		}
	}
}

func TestCompressionNames(t *testing.T) {
	for _, c := range []Compression{NoCompression, SnappyCompression, ZstdCompression} {
		got, err := ParseCompression(c.String())
		if err != nil || got != c {
			t.Fatalf("ParseCompression(%q) = %v, %v", c.String(), got, err)
		}
	}
	if _, err := ParseCompression("lz4"); !errors.Is(err, base.ErrInvalidArgument) {
		t.Fatalf("ParseCompression(lz4): %v", err)
	}
}

func TestLayout(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	entries := genEntries(rng, 300, false)
	opts := DefaultWriterOptions()
	opts.Compression = SnappyCompression
	data, _ := buildTable(t, entries, opts)
	r := openTable(t, data, nil)
	defer r.Close()
	l, err := r.Layout()
	if err != nil {
		t.Fatal(err)
	}
	next := uint64(0)
	kinds := map[string]int{}
	for _, b := range l.Blocks {
		if b.Offset != next {
			t.Fatalf("block %+v does not start at %d", b, next)
		}
		next = b.Offset + b.Length
		if b.Kind != "footer" {
			next += blockTrailerLen
		}
		kinds[b.Kind]++
	}
	if next != uint64(len(data)) || l.FileSize != uint64(len(data)) {
		t.Fatalf("layout ends at %d, file %d", next, len(data))
	}
	if kinds["data"] != int(r.Properties().NumDataBlocks) || kinds["filter"] != 1 || kinds["footer"] != 1 || kinds["index"] != 1 {
		t.Fatalf("kinds %v", kinds)
	}
	if l.String() == "" {
		t.Fatal("empty layout string")
	}
}

// TestUnsupportedVersion checks that a table from a future format version
// is refused with a message naming both versions.
func TestUnsupportedVersion(t *testing.T) {
	entries := []kv{{key: base.MakeInternalKey([]byte("a"), 1, base.KindSet), val: []byte("x")}}
	data, _ := buildTable(t, entries, DefaultWriterOptions())
	foot := data[len(data)-footerLen:]
	foot[footerVersionOff] = 3
	copy(foot[footerCRCOff:], le32(base.MaskedCRC(foot[:footerCRCOff])))
	_, err := Open(&memFile{data: data}, int64(len(data)), ReaderOptions{FileName: "v3.sst"})
	if !errors.Is(err, base.ErrCorruption) {
		t.Fatalf("Open: %v", err)
	}
	for _, want := range []string{"version 3", "supports versions 1 and 2", "v3.sst"} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Fatalf("error %q lacks %q", err, want)
		}
	}
}

func le32(v uint32) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)} }

// TestGetNoAlloc checks that a cached Get does not allocate.
func TestGetNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	var entries []kv
	for i := 0; i < 5000; i++ {
		entries = append(entries, kv{key: base.MakeInternalKey(fmt.Appendf(nil, "key%013d", i), base.SeqNum(i+1), base.KindSet), val: make([]byte, 100)})
	}
	data, _ := buildTable(t, entries, DefaultWriterOptions())
	c := cache.New(64 << 20)
	r := openTable(t, data, c)
	defer r.Close()
	key := []byte("key0000000001234")
	if _, _, found, err := r.Get(key, base.SeqNumMax); !found || err != nil {
		t.Fatalf("Get: %v %v", found, err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		_, _, _, _ = r.Get(key, base.SeqNumMax)
	})
	if allocs != 0 {
		t.Fatalf("cached Get allocates %v times", allocs)
	}
	it := r.NewIter(IterOptions{FillCache: true})
	it.First()
	allocs = testing.AllocsPerRun(100, func() {
		if !it.Next() {
			it.First()
		}
		_ = it.Key()
	})
	if allocs != 0 {
		t.Fatalf("Next allocates %v times", allocs)
	}
	allocs = testing.AllocsPerRun(100, func() {
		if !it.Prev() {
			it.Last()
		}
	})
	if allocs != 0 {
		t.Fatalf("Prev allocates %v times", allocs)
	}
	it.Close()
}

func TestConcurrentReaders(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	entries := genEntries(rng, 2000, false)
	opts := DefaultWriterOptions()
	opts.BlockSize = 512
	opts.Compression = ZstdCompression
	data, _ := buildTable(t, entries, opts)
	r := openTable(t, data, cache.New(256<<10))
	defer r.Close()
	done := make(chan error)
	for g := 0; g < 4; g++ {
		go func(g int) {
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for j := 0; j < 500; j++ {
				e := entries[rng.IntN(len(entries))]
				v, _, found, err := r.Get(e.key.UserKey, e.key.Seq())
				if err != nil || !found || !bytes.Equal(v, e.val) {
					done <- fmt.Errorf("Get(%s): %v %v", e.key, found, err)
					return
				}
			}
			it := r.NewIter(IterOptions{FillCache: g%2 == 0})
			n := 0
			for ok := it.First(); ok; ok = it.Next() {
				n++
			}
			if err := it.Close(); err != nil || n != len(entries) {
				done <- fmt.Errorf("scan %d/%d: %v", n, len(entries), err)
				return
			}
			done <- nil
		}(g)
	}
	for g := 0; g < 4; g++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// countingFile records the offsets of ReadAt calls.
type countingFile struct {
	memFile
	reads map[int64]int
}

func (f *countingFile) ReadAt(p []byte, off int64) (int, error) {
	f.reads[off]++
	return f.memFile.ReadAt(p, off)
}

// TestBoundsAvoidBlockLoads checks that bounded iteration does not read data
// blocks that lie wholly outside the bounds.
func TestBoundsAvoidBlockLoads(t *testing.T) {
	var entries []kv
	for i := 0; i < 2000; i++ {
		entries = append(entries, kv{key: base.MakeInternalKey(fmt.Appendf(nil, "k%05d", i), 1, base.KindSet), val: make([]byte, 50)})
	}
	opts := DefaultWriterOptions()
	opts.BlockSize = 256
	data, _ := buildTable(t, entries, opts)
	f := &countingFile{memFile: memFile{data: data}, reads: map[int64]int{}}
	r, err := Open(f, int64(len(data)), ReaderOptions{FileName: "c.sst"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	dataReads := func() int {
		n := 0
		for off := range f.reads {
			if uint64(off) < r.dataEnd {
				n++
			}
		}
		clear(f.reads)
		return n
	}
	dataReads()
	lower, upper := []byte("k01000"), []byte("k01010")
	// The blocks holding the keys in bounds, plus at most one neighbour
	// (whose separator cannot rule it out), may be read.
	holding := map[int]bool{}
	for i := 1000; i < 1010; i++ {
		holding[r.index.search(fmt.Appendf(nil, "k%05d", i), maxTrailer)] = true
	}
	allowed := len(holding) + 1
	it := r.NewIter(IterOptions{Lower: lower, Upper: upper})
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	if n != 10 {
		t.Fatalf("forward: %d entries", n)
	}
	if got := dataReads(); got > allowed {
		t.Fatalf("forward scan of 10 keys read %d data blocks, want <= %d", got, allowed)
	}
	n = 0
	for ok := it.Last(); ok; ok = it.Prev() {
		n++
	}
	if n != 10 {
		t.Fatalf("backward: %d entries", n)
	}
	if got := dataReads(); got > allowed {
		t.Fatalf("backward scan of 10 keys read %d data blocks, want <= %d", got, allowed)
	}
	// Seeks outside the bounds read nothing.
	if it.SeekGE([]byte("k05000")) || it.SeekLT([]byte("k00000")) {
		t.Fatal("seek outside bounds found something")
	}
	if got := dataReads(); got != 0 {
		t.Fatalf("seeks outside the bounds read %d data blocks", got)
	}
	// Bounds on exact block boundaries.
	it.Close()
	x := &r.index
	it = r.NewIter(IterOptions{Upper: x.userKey(3)})
	for ok := it.First(); ok; ok = it.Next() {
	}
	if got := dataReads(); got != 4 {
		t.Fatalf("scan up to the last user key of block 3 read %d data blocks, want 4", got)
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
}

type failingWriter struct{ n, limit int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n+len(p) > w.limit {
		return 0, errors.New("disk full")
	}
	w.n += len(p)
	return len(p), nil
}

func TestWriterPropagatesWriteErrors(t *testing.T) {
	fw := &failingWriter{limit: 300 << 10}
	w := NewWriter(fw, DefaultWriterOptions())
	var err error
	for i := 0; i < 100000 && err == nil; i++ {
		err = w.Add(base.MakeInternalKey(fmt.Appendf(nil, "key%08d", i), 1, base.KindSet), make([]byte, 100))
	}
	if err == nil {
		err = w.Close()
	}
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("disk full")) {
		t.Fatalf("got %v, want the write error", err)
	}
	if err2 := w.Close(); err2 == nil {
		t.Fatal("Close after a write error must fail")
	}
}

func TestReaderDoubleClose(t *testing.T) {
	data, _ := buildTable(t, goldenEntries(), goldenOptions())
	r := openTable(t, data, nil)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); !errors.Is(err, base.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}
