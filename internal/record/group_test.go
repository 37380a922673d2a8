package record

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/errs"
)

// groupLog writes recs into log logNum as groups of the sizes in sizes
// (cycled; size 0 writes a single record). It returns the log and, for every
// record, the offset of the record (group) that holds it.
func groupLog(s *crypt.Sealer, logNum uint64, recs [][]byte, sizes []int) ([]byte, []int64) {
	e := NewEncoder(logNum, 0)
	e.SetSealer(s)
	var out []byte
	var starts []int64
	for i, k := 0, 0; i < len(recs); k++ {
		start := e.Offset()
		if left := BlockSize - int(start%BlockSize); left < HeaderSize {
			start += int64(left)
		}
		n := sizes[k%len(sizes)]
		if n == 0 {
			out = e.Append(out, recs[i], e.Offset())
			starts = append(starts, start)
			i++
			continue
		}
		var g []byte
		for j := 0; j < n && i < len(recs); j++ {
			g = AppendGroupItem(g, recs[i])
			starts = append(starts, start)
			i++
		}
		out = e.AppendGroup(out, g, e.Offset())
	}
	return out, starts
}

func TestGroupRoundTrip(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		var s *crypt.Sealer
		if sealed {
			s = testSealer(t, 3, 7)
		}
		for seed := uint64(0); seed < 10; seed++ {
			rng := rand.New(rand.NewPCG(seed, 5))
			recs := makeRecords(rng, 1+rng.IntN(200))
			sizes := []int{1 + rng.IntN(40), 0, 1 + rng.IntN(5), 1}
			data, starts := groupLog(s, 8, recs, sizes)
			r := NewReader(bytes.NewReader(data), 8, "g.log")
			r.SetSealer(s)
			for i := range recs {
				p, err := r.Next()
				if err != nil {
					t.Fatalf("sealed %v seed %d record %d: %v", sealed, seed, i, err)
				}
				if !bytes.Equal(p, recs[i]) {
					t.Fatalf("sealed %v seed %d: record %d differs", sealed, seed, i)
				}
				if r.LastRecordOffset() != starts[i] {
					t.Fatalf("sealed %v seed %d: record %d at offset %d, want %d", sealed, seed, i, r.LastRecordOffset(), starts[i])
				}
				if _, sl := r.LastKey(); sl != sealed {
					t.Fatalf("record %d: sealed %v", i, sl)
				}
				if sealed && len(recs[i]) >= 16 && bytes.Contains(data, recs[i][:16]) {
					t.Fatalf("seed %d: record %d is in the log in clear", seed, i)
				}
			}
			if _, err := r.Next(); err != io.EOF {
				t.Fatalf("sealed %v seed %d: %v after the last record", sealed, seed, err)
			}
			if r.Offset() != int64(len(data)) {
				t.Fatalf("offset %d, want %d", r.Offset(), len(data))
			}
		}
	}
}

// A torn group is lost as a whole: no record of it is returned, and the log
// ends where the group starts.
func TestGroupTornTail(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		var s *crypt.Sealer
		if sealed {
			s = testSealer(t, 1, 2)
		}
		rng := rand.New(rand.NewPCG(9, 9))
		recs := makeRecords(rng, 30)
		head, _ := groupLog(s, 4, recs[:10], []int{10})
		e := NewEncoder(4, int64(len(head)))
		e.SetSealer(s)
		var g []byte
		for _, r := range recs[10:] {
			g = AppendGroupItem(g, r)
		}
		data := e.AppendGroup(bytes.Clone(head), g, 0)
		for _, cut := range []int{len(data) - 1, len(head) + HeaderSize + 1, (len(head) + len(data)) / 2} {
			got, _, err := readAllWith(data[:cut], 4, s)
			var torn *TornTailError
			if !errors.As(err, &torn) || torn.Offset != int64(len(head)) {
				t.Fatalf("sealed %v cut %d: %v, want a torn tail at %d", sealed, cut, err, len(head))
			}
			if len(got) != 10 {
				t.Fatalf("sealed %v cut %d: %d records, want the 10 of the first group", sealed, cut, len(got))
			}
		}
	}
}

func TestGroupDamage(t *testing.T) {
	s := testSealer(t, 2, 4)
	t.Run("bad framing", func(t *testing.T) {
		e := NewEncoder(1, 0)
		g := AppendGroupItem(nil, []byte("fine"))
		g = append(g, 0x09, 'x') // claims 9 bytes, has 1
		data := e.AppendGroup(nil, g, 0)
		got, _, err := readAllWith(data, 1, nil)
		if len(got) != 0 || !errors.Is(err, errs.ErrCorruption) || !strings.Contains(err.Error(), "record 1 has a bad length") {
			t.Fatalf("got %d records, %v", len(got), err)
		}
	})
	t.Run("empty group", func(t *testing.T) {
		data := NewEncoder(1, 0).AppendGroup(nil, nil, 0)
		if _, _, err := readAllWith(data, 1, nil); !errors.Is(err, errs.ErrCorruption) {
			t.Fatalf("%v", err)
		}
	})
	t.Run("changed ciphertext with a valid CRC", func(t *testing.T) {
		e := NewEncoder(1, 0)
		e.SetSealer(s)
		data := e.AppendGroup(nil, AppendGroupItem(AppendGroupItem(nil, []byte("a")), []byte("b")), 0)
		data[HeaderSize+crypt.KeyIDSize+crypt.NonceSize] ^= 1
		rechecksum(data, 0)
		if got, _, err := readAllWith(data, 1, s); len(got) != 0 || !errors.Is(err, crypt.ErrDecrypt) {
			t.Fatalf("got %d records, %v", len(got), err)
		}
	})
	t.Run("group and single chunks mixed in a record", func(t *testing.T) {
		big := bytes.Repeat([]byte("v"), 2*BlockSize)
		d := NewEncoder(5, 0).AppendGroup(nil, AppendGroupItem(nil, big), 0)
		last := BlockSize * 2
		d[last+6] &^= chunkGroup
		rechecksum(d, last)
		if _, _, err := readAllWith(d, 5, nil); !errors.Is(err, errs.ErrCorruption) || !strings.Contains(err.Error(), "mixes") {
			t.Fatalf("%v", err)
		}
	})
}
