package sstable

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/kayadb/kayadb/internal/lsm/base"
)

// TestBloomHash pins the hash function (it is part of the file format).
func TestBloomHash(t *testing.T) {
	cases := []struct {
		in   string
		want uint32
	}{
		// LevelDB's hash_test.cc vectors use seed 0xbc9f1d34 as well.
		{"", 0xbc9f1d34},
		{"\x62", 0xef1345c4},
		{"\xc3\x97", 0x5b663814},
		{"\xe2\x99\xa5", 0x323c078f},
		{"\xe1\x80\xb9\x32", 0xed21633a},
	}
	for _, c := range cases {
		if got := bloomHash([]byte(c.in)); got != c.want {
			t.Errorf("bloomHash(%x) = %#x, want %#x", c.in, got, c.want)
		}
	}
}

func TestBloomFalsePositives(t *testing.T) {
	const n = 100000
	w := bloomWriter{bitsPerKey: 10}
	key := func(i int) []byte { return fmt.Appendf(nil, "user-key-%09d", i) }
	for i := 0; i < n; i++ {
		w.add(key(i))
	}
	f, err := decodeBloomFilter(w.finish())
	if err != nil {
		t.Fatal(err)
	}
	if f.probes != 6 || f.lines%2 != 1 {
		t.Fatalf("probes %d lines %d", f.probes, f.lines)
	}
	for i := 0; i < n; i++ {
		if !f.mayContain(key(i)) {
			t.Fatalf("false negative for %q", key(i))
		}
	}
	fp := 0
	for i := n; i < 2*n; i++ {
		if f.mayContain(key(i)) {
			fp++
		}
	}
	// Random binary keys too.
	var b [16]byte
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint64(b[:], uint64(i)*0x9e3779b97f4a7c15)
		binary.LittleEndian.PutUint64(b[8:], uint64(i))
		if f.mayContain(b[:]) {
			fp++
		}
	}
	rate := float64(fp) / float64(2*n)
	t.Logf("false positive rate %.3f%%", rate*100)
	if rate < 0.005 || rate > 0.02 {
		t.Fatalf("false positive rate %.3f%% outside [0.5%%, 2%%]", rate*100)
	}
}

func TestBloomInTable(t *testing.T) {
	var entries []kv
	for i := 0; i < 3000; i++ {
		// Three versions of each user key: added to the filter once.
		for s := 3; s >= 1; s-- {
			entries = append(entries, kv{key: base.MakeInternalKey(fmt.Appendf(nil, "k%06d", i*2), base.SeqNum(s), base.KindSet)})
		}
	}
	data, _ := buildTable(t, entries, DefaultWriterOptions())
	r := openTable(t, data, nil)
	defer r.Close()
	if got, want := r.Properties().FilterSize, uint64((3000*10+511)/512*64+5); got < want-64 || got > want+64 {
		t.Fatalf("filter size %d, want about %d (keys added once)", got, want)
	}
	fp := 0
	for i := 0; i < 3000; i++ {
		if !r.MayContain(fmt.Appendf(nil, "k%06d", i*2)) {
			t.Fatal("false negative")
		}
		if r.MayContain(fmt.Appendf(nil, "k%06d", i*2+1)) {
			fp++
		}
		if _, _, found, err := r.Get(fmt.Appendf(nil, "k%06d", i*2+1), base.SeqNumMax); found || err != nil {
			t.Fatalf("Get of an absent key: %v %v", found, err)
		}
	}
	if fp > 100 {
		t.Fatalf("%d false positives of 3000", fp)
	}
	// No filter: MayContain is always true.
	o := DefaultWriterOptions()
	o.BloomBitsPerKey = 0
	data, _ = buildTable(t, entries, o)
	r2 := openTable(t, data, nil)
	defer r2.Close()
	if !r2.MayContain([]byte("nope")) || r2.Properties().FilterSize != 0 {
		t.Fatal("a table without filter must answer MayContain with true")
	}
	if bytes.Contains(data, []byte(metaFilterName)) {
		t.Fatal("metaindex names a filter that was not written")
	}
}

func TestBloomProbes(t *testing.T) {
	for bits, want := range map[int]int{1: 1, 2: 1, 10: 6, 20: 13, 43: 29, 44: 30, 100: 30} {
		if got := bloomProbes(bits); got != want {
			t.Errorf("bloomProbes(%d) = %d, want %d", bits, got, want)
		}
	}
}
