package batch

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/kayadb/kayadb/internal/lsm/base"
)

func TestBatchRoundTrip(t *testing.T) {
	var b Batch
	if !b.Empty() || b.Len() != HeaderSize {
		t.Fatal("zero batch must be empty")
	}
	b.Set([]byte("k1"), []byte("v1"))
	b.Delete([]byte("k2"))
	b.Set([]byte(""), []byte(""))
	b.Set([]byte("big"), bytes.Repeat([]byte("x"), 300))
	b.SetSeqNum(42)
	repr := b.Repr()
	seq, count, err := Validate(repr)
	if err != nil || seq != 42 || count != 4 {
		t.Fatalf("Validate = %d %d %v", seq, count, err)
	}
	r, err := NewReader(repr)
	if err != nil {
		t.Fatal(err)
	}
	type rec struct {
		k   base.Kind
		key string
		val string
	}
	want := []rec{{base.KindSet, "k1", "v1"}, {base.KindDelete, "k2", ""}, {base.KindSet, "", ""}, {base.KindSet, "big", string(bytes.Repeat([]byte("x"), 300))}}
	for i, w := range want {
		k, key, val, ok, err := r.Next()
		if err != nil || !ok || k != w.k || string(key) != w.key || string(val) != w.val {
			t.Fatalf("record %d: %v %q %q %v %v", i, k, key, val, ok, err)
		}
	}
	if _, _, _, ok, err := r.Next(); ok || err != nil {
		t.Fatalf("after last: %v %v", ok, err)
	}
	var c Batch
	if err := c.SetRepr(append([]byte(nil), repr...)); err != nil || c.Count() != 4 || c.SeqNum() != 42 {
		t.Fatalf("SetRepr: %v", err)
	}
	b.Reset()
	if !b.Empty() || b.Count() != 0 {
		t.Fatal("Reset")
	}
}

// TestGoldenBytes pins the encoding: it is the WAL payload format.
func TestGoldenBytes(t *testing.T) {
	var b Batch
	b.Set([]byte("a"), []byte("xy"))
	b.Delete([]byte("b"))
	b.SetSeqNum(0x0102)
	want := []byte{
		0x02, 0x01, 0, 0, 0, 0, 0, 0, // seqnum
		2, 0, 0, 0, // count
		1, 1, 'a', 2, 'x', 'y', // SET a=xy
		0, 1, 'b', // DEL b
	}
	if got := b.Repr(); !bytes.Equal(got, want) {
		t.Fatalf("got % x\nwant % x", got, want)
	}
}

func TestMalformed(t *testing.T) {
	var b Batch
	b.Set([]byte("key"), []byte("value"))
	b.Delete([]byte("gone"))
	good := append([]byte(nil), b.Repr()...)
	for n := 0; n < len(good); n++ {
		if _, _, err := Validate(good[:n]); !errors.Is(err, base.ErrCorruption) {
			t.Errorf("truncated to %d: %v", n, err)
		}
	}
	extra := append(append([]byte(nil), good...), 0)
	if _, _, err := Validate(extra); !errors.Is(err, base.ErrCorruption) {
		t.Errorf("trailing byte: %v", err)
	}
	badKind := append([]byte(nil), good...)
	badKind[HeaderSize] = 9
	if _, _, err := Validate(badKind); !errors.Is(err, base.ErrCorruption) {
		t.Errorf("bad kind: %v", err)
	}
	hugeLen := append([]byte(nil), good[:HeaderSize+1]...)
	hugeLen = append(hugeLen, 0xff, 0xff, 0xff, 0xff, 0x0f)
	if _, _, err := Validate(hugeLen); !errors.Is(err, base.ErrCorruption) {
		t.Errorf("huge length: %v", err)
	}
}

func FuzzBatch(f *testing.F) {
	var b Batch
	b.Set([]byte("key"), []byte("value"))
	b.Delete([]byte("gone"))
	f.Add(append([]byte(nil), b.Repr()...))
	f.Add([]byte{})
	f.Add(make([]byte, HeaderSize))
	f.Fuzz(func(t *testing.T, data []byte) {
		seq, count, err := Validate(data)
		if err != nil {
			if !errors.Is(err, base.ErrCorruption) {
				t.Fatalf("error class: %v", err)
			}
			return
		}
		// A valid batch re-encodes to the same bytes.
		var nb Batch
		r, _ := NewReader(data)
		for {
			k, key, val, ok, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			if k == base.KindSet {
				nb.Set(key, val)
			} else {
				nb.Delete(key)
			}
		}
		nb.SetSeqNum(seq)
		if nb.Count() != count {
			t.Fatalf("count %d vs %d", nb.Count(), count)
		}
		// Varints may be non-minimal in the input; compare decoded content
		// by decoding the re-encoding.
		if _, c2, err := Validate(nb.Repr()); err != nil || c2 != count {
			t.Fatalf("re-encoded batch invalid: %v", err)
		}
	})
}

// TestGrow: after Grow(n), records totalling n bytes fit without a new
// allocation, and the batch encodes exactly as without Grow.
func TestGrow(t *testing.T) {
	var plain, grown Batch
	grown.Grow(4096)
	before := &grown.data[:1][0]
	for i := 0; i < 20; i++ {
		k, v := []byte(fmt.Sprintf("key%03d", i)), bytes.Repeat([]byte{byte(i)}, 100)
		plain.Set(k, v)
		grown.Set(k, v)
	}
	if &grown.data[:1][0] != before {
		t.Fatal("the batch reallocated although Grow reserved enough room")
	}
	if !bytes.Equal(plain.data, grown.data) || plain.count != grown.count {
		t.Fatal("Grow changed the batch's encoding")
	}
	grown.Grow(-1) // ignored
	grown.Grow(0)
	if !bytes.Equal(plain.data, grown.data) {
		t.Fatal("Grow(0) or Grow(-1) changed the batch")
	}
}
