package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/internal/crc"
	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/errs"
)

func testSealer(t testing.TB, id crypt.KeyID, fill byte) *crypt.Sealer {
	t.Helper()
	r, err := crypt.New(map[crypt.KeyID][]byte{id: bytes.Repeat([]byte{fill}, crypt.KeySize)}, id)
	if err != nil {
		t.Fatal(err)
	}
	return crypt.NewSealer(r)
}

// writeSealedLog writes recs; record i is sealed when seal(i).
func writeSealedLog(t testing.TB, s *crypt.Sealer, logNum uint64, recs [][]byte, seal func(int) bool) []byte {
	var buf bytes.Buffer
	w := NewWriter(&buf, logNum)
	for i, r := range recs {
		if seal(i) {
			w.SetSealer(s)
		} else {
			w.SetSealer(nil)
		}
		if err := w.WriteRecord(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readAllWith(data []byte, logNum uint64, s *crypt.Sealer) ([][]byte, []bool, error) {
	r := NewReader(bytes.NewReader(data), logNum, "test.log")
	r.SetSealer(s)
	var out [][]byte
	var sealed []bool
	for {
		p, err := r.Next()
		if err != nil {
			return out, sealed, err
		}
		out = append(out, bytes.Clone(p))
		_, sl := r.LastKey()
		sealed = append(sealed, sl)
	}
}

func TestSealedRoundTrip(t *testing.T) {
	s := testSealer(t, 4, 1)
	for seed := uint64(0); seed < 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 2))
		recs := makeRecords(rng, 1+rng.IntN(60))
		mixed := seed%2 == 1 // odd seeds mix plain and sealed records
		seal := func(i int) bool { return !mixed || i%3 != 0 }
		data := writeSealedLog(t, s, 7, recs, seal)
		got, sealed, err := readAllWith(data, 7, s)
		if err != io.EOF {
			t.Fatalf("seed %d: %v", seed, err)
		}
		equalPrefix(t, got, recs, len(recs))
		for i := range recs {
			if sealed[i] != seal(i) {
				t.Fatalf("seed %d record %d: sealed %v", seed, i, sealed[i])
			}
			if seal(i) && len(recs[i]) >= 16 && bytes.Contains(data, recs[i][:16]) {
				t.Fatalf("seed %d: record %d is in the log in clear", seed, i)
			}
		}
	}
}

func TestSealedTornTailIsStillATornTail(t *testing.T) {
	s := testSealer(t, 1, 1)
	rng := rand.New(rand.NewPCG(3, 3))
	recs := makeRecords(rng, 40)
	data := writeSealedLog(t, s, 9, recs, func(int) bool { return true })
	for _, cut := range []int{len(data) - 1, len(data) - crypt.TagSize, len(data) / 2, HeaderSize + 3} {
		got, _, err := readAllWith(data[:cut], 9, s)
		if !errors.Is(err, ErrTornTail) {
			t.Fatalf("cut at %d: %v, want a torn tail", cut, err)
		}
		for i, g := range got {
			if !bytes.Equal(g, recs[i]) {
				t.Fatalf("cut at %d: record %d differs", cut, i)
			}
		}
	}
}

// rechecksum recomputes the CRC of the chunk at off, as an attacker (or a
// wrong key) would leave it: the chunk checks out, the envelope does not.
func rechecksum(data []byte, off int) {
	n := int(binary.LittleEndian.Uint16(data[off+4:]))
	binary.LittleEndian.PutUint32(data[off:], crc.New(data[off+6:off+HeaderSize]).Update(data[off+HeaderSize:off+HeaderSize+n]).Value())
}

func TestSealedRecordThatDoesNotOpenIsAnError(t *testing.T) {
	s := testSealer(t, 2, 1)
	recs := [][]byte{[]byte("first value"), []byte("second value"), []byte("third value")}
	data := writeSealedLog(t, s, 5, recs, func(int) bool { return true })
	second := HeaderSize + crypt.SealedSize(len(recs[0])) // offset of record 1's chunk

	t.Run("changed ciphertext with a valid CRC", func(t *testing.T) {
		d := bytes.Clone(data)
		d[second+HeaderSize+crypt.KeyIDSize+crypt.NonceSize] ^= 1
		rechecksum(d, second)
		got, _, err := readAllWith(d, 5, s)
		if len(got) != 1 || !errors.Is(err, crypt.ErrDecrypt) || errors.Is(err, ErrTornTail) ||
			!strings.Contains(err.Error(), "test.log at offset") || !strings.Contains(err.Error(), "key id 2") {
			t.Fatalf("got %d records, %v", len(got), err)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		_, _, err := readAllWith(data, 5, testSealer(t, 2, 9))
		if !errors.Is(err, crypt.ErrDecrypt) || errors.Is(err, ErrTornTail) || errors.Is(err, errs.ErrCorruption) {
			t.Fatalf("%v", err)
		}
	})
	t.Run("key missing from the keyring", func(t *testing.T) {
		_, _, err := readAllWith(data, 5, testSealer(t, 3, 1))
		if !errors.Is(err, crypt.ErrUnknownKey) || !strings.Contains(err.Error(), "key id 2") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("no keys at all", func(t *testing.T) {
		_, _, err := readAllWith(data, 5, nil)
		if !errors.Is(err, crypt.ErrUnknownKey) || !strings.Contains(err.Error(), "--encryption-keyring-file") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("record moved to another log", func(t *testing.T) {
		d := bytes.Clone(data)
		for off := 0; off < len(d); {
			binary.LittleEndian.PutUint32(d[off+7:], 6)
			rechecksum(d, off)
			off += HeaderSize + int(binary.LittleEndian.Uint16(d[off+4:]))
		}
		if _, _, err := readAllWith(d, 6, s); !errors.Is(err, crypt.ErrDecrypt) {
			t.Fatalf("%v", err)
		}
	})
	t.Run("sealed and plain chunks mixed in a record", func(t *testing.T) {
		big := bytes.Repeat([]byte("v"), 2*BlockSize)
		d := writeSealedLog(t, s, 5, [][]byte{big}, func(int) bool { return true })
		last := BlockSize * 2 // the LAST chunk starts the third block
		d[last+6] &^= chunkSealed
		rechecksum(d, last)
		if _, _, err := readAllWith(d, 5, s); !errors.Is(err, errs.ErrCorruption) || !strings.Contains(err.Error(), "mixes") {
			t.Fatalf("%v", err)
		}
	})
}

func TestSealedRecordAfterRotation(t *testing.T) {
	r1, _ := crypt.New(map[crypt.KeyID][]byte{1: bytes.Repeat([]byte{1}, crypt.KeySize)}, 1)
	s := crypt.NewSealer(r1)
	var buf bytes.Buffer
	w := NewWriter(&buf, 3)
	w.SetSealer(s)
	_ = w.WriteRecord([]byte("under key 1"))
	r2, _, _ := r1.WithNewKey(nil)
	s.SetKeyring(r2)
	_ = w.WriteRecord([]byte("under key 2"))
	_ = w.Flush()
	r := NewReader(bytes.NewReader(buf.Bytes()), 3, "x")
	r.SetSealer(s)
	for _, want := range []crypt.KeyID{1, 2} {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
		if id, sealed := r.LastKey(); !sealed || id != want {
			t.Fatalf("key %d sealed %v, want %d", id, sealed, want)
		}
	}
}
