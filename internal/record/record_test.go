package record

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/kayadb/kayadb/internal/crc"
	"github.com/kayadb/kayadb/internal/errs"
)

// makeRecords returns payloads of varied sizes, some spanning several blocks.
func makeRecords(rng *rand.Rand, n int) [][]byte {
	recs := make([][]byte, n)
	for i := range recs {
		var size int
		switch rng.IntN(10) {
		case 0:
			size = 0
		case 1:
			size = BlockSize + rng.IntN(3*BlockSize)
		case 2:
			size = BlockSize - HeaderSize - rng.IntN(40)
		default:
			size = rng.IntN(300)
		}
		p := make([]byte, size)
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		recs[i] = p
	}
	return recs
}

// writeLog writes records with the manifest-style Writer and returns the
// bytes and each record's end offset.
func writeLog(t testing.TB, logNum uint64, recs [][]byte) ([]byte, []int64) {
	var buf bytes.Buffer
	w := NewWriter(&buf, logNum)
	ends := make([]int64, len(recs))
	for i, r := range recs {
		if err := w.WriteRecord(r); err != nil {
			t.Fatal(err)
		}
		ends[i] = w.Size()
		if i%3 == 0 {
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), ends
}

// readAll reads every record and the terminating error.
func readAll(data []byte, logNum uint64) ([][]byte, error) {
	r := NewReader(bytes.NewReader(data), logNum, "test.log")
	var out [][]byte
	for {
		p, err := r.Next()
		if err != nil {
			return out, err
		}
		out = append(out, append([]byte(nil), p...))
	}
}

func equalPrefix(t *testing.T, got, want [][]byte, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("got %d records, want %d", len(got), n)
	}
	for i := 0; i < n; i++ {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("record %d differs (len %d vs %d)", i, len(got[i]), len(want[i]))
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for seed := uint64(0); seed < 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 1))
		recs := makeRecords(rng, 1+rng.IntN(60))
		data, ends := writeLog(t, 7, recs)
		if int64(len(data)) != ends[len(ends)-1] {
			t.Fatalf("seed %d: size %d, last end %d", seed, len(data), ends[len(ends)-1])
		}
		got, err := readAll(data, 7)
		if err != io.EOF {
			t.Fatalf("seed %d: err %v", seed, err)
		}
		equalPrefix(t, got, recs, len(recs))
	}
}

func TestChunkLayout(t *testing.T) {
	// One 10-byte record: a single FULL chunk with a known header.
	var buf bytes.Buffer
	w := NewWriter(&buf, 0x01020304)
	if err := w.WriteRecord([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	if len(b) != HeaderSize+10 {
		t.Fatalf("len %d", len(b))
	}
	wantHdr := []byte{10, 0, chunkFull, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0}
	if !bytes.Equal(b[4:HeaderSize], wantHdr) {
		t.Fatalf("header bytes 4..19 = % x, want % x", b[4:HeaderSize], wantHdr)
	}
	crc := crc.New(b[6:]).Value()
	if got := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24; got != crc {
		t.Fatalf("crc %#x want %#x", got, crc)
	}
}

func TestBlockPadding(t *testing.T) {
	// A record that leaves fewer than HeaderSize bytes in the block forces
	// zero padding before the next chunk.
	first := make([]byte, BlockSize-HeaderSize-5)
	recs := [][]byte{first, []byte("next")}
	data, ends := writeLog(t, 1, recs)
	if ends[0] != BlockSize-5 {
		t.Fatalf("first record ends at %d", ends[0])
	}
	if !bytes.Equal(data[BlockSize-5:BlockSize], make([]byte, 5)) {
		t.Fatal("block tail must be zero padding")
	}
	got, err := readAll(data, 1)
	if err != io.EOF {
		t.Fatal(err)
	}
	equalPrefix(t, got, recs, 2)
}

// TestTruncation cuts the log at every length: the reader returns exactly the
// records that are complete in the prefix, then EOF or a torn tail, never
// corruption.
func TestTruncation(t *testing.T) {
	// Records of assorted sizes that cross block boundaries and leave block
	// tails of every interesting length.
	var recs [][]byte
	for _, n := range []int{0, 10, BlockSize - 3*HeaderSize - 10 - 7, 1, BlockSize + 100, 5, 40, BlockSize/2 + 3} {
		recs = append(recs, bytes.Repeat([]byte{byte(n)}, n))
	}
	data, ends := writeLog(t, 9, recs)
	for l := 0; l <= len(data); l++ {
		got, err := readAll(data[:l], 9)
		n := 0
		for n < len(ends) && ends[n] <= int64(l) {
			n++
		}
		equalPrefix(t, got, recs, n)
		atBoundary := l == 0 || (n > 0 && ends[n-1] == int64(l))
		// Padding at a block end is also a clean boundary.
		if !atBoundary && n > 0 && l > int(ends[n-1]) && l%BlockSize == 0 && int(ends[n-1])/BlockSize == l/BlockSize-1 &&
			BlockSize-int(ends[n-1])%BlockSize < HeaderSize {
			atBoundary = true
		}
		switch {
		case err == io.EOF:
		case errors.Is(err, ErrTornTail):
			var tt *TornTailError
			errors.As(err, &tt)
			want := int64(0)
			if n > 0 {
				want = ends[n-1]
			}
			if tt.Offset != want || tt.Size != int64(l) {
				t.Fatalf("len %d: torn tail %+v, want offset %d", l, tt, want)
			}
		default:
			t.Fatalf("len %d: unexpected error %v", l, err)
		}
		if atBoundary && err != io.EOF && l%BlockSize != 0 {
			// A cut at a record boundary inside a block is a clean end.
			t.Fatalf("len %d: cut at record boundary gave %v", l, err)
		}
	}
}

// TestByteFlips damages every byte of a small log. Damage inside any record
// but the last must be reported as corruption naming the record's offset;
// damage inside the last record is a torn tail. Either way the records before
// the damage are returned intact and nothing damaged is ever returned.
func TestByteFlips(t *testing.T) {
	var recs [][]byte
	for _, n := range []int{0, 10, BlockSize - 2*HeaderSize - 10 - 3, 200, BlockSize + 100, 5, 40} {
		recs = append(recs, bytes.Repeat([]byte{byte(n + 1)}, n))
	}
	recs = append(recs, []byte("the last record"))
	data, ends := writeLog(t, 5, recs)
	starts := make([]int64, len(ends))
	for i := 1; i < len(ends); i++ {
		starts[i] = ends[i-1]
	}
	near := func(p int) bool {
		if p%BlockSize < 40 || p%BlockSize > BlockSize-40 || p%61 == 0 {
			return true
		}
		for _, e := range ends {
			if d := int64(p) - e; d > -40 && d < 40 {
				return true
			}
		}
		return false
	}
	for p := 0; p < len(data); p++ {
		if !near(p) {
			continue
		}
		bad := append([]byte(nil), data...)
		bad[p] ^= 0xff
		got, err := readAll(bad, 5)
		// Which record holds byte p?
		i := 0
		for i < len(ends) && ends[i] <= int64(p) {
			i++
		}
		// The damaged byte may sit in block padding before record i's first
		// chunk; the reader skips padding, so every record may still be read.
		if err == io.EOF {
			equalPrefix(t, got, recs, len(recs))
			continue
		}
		equalPrefix(t, got, recs, i)
		if i == len(recs)-1 {
			if !errors.Is(err, ErrTornTail) {
				t.Fatalf("flip at %d (last record): got %v, want torn tail", p, err)
			}
			continue
		}
		var ce *errs.CorruptionError
		if !errors.As(err, &ce) {
			t.Fatalf("flip at %d (record %d of %d): got %v, want corruption", p, i, len(recs), err)
		}
		if ce.File != "test.log" || ce.Offset < starts[i] || ce.Offset >= ends[i] {
			t.Fatalf("flip at %d: corruption %v not within record %d [%d,%d)", p, ce, i, starts[i], ends[i])
		}
	}
}

// TestOutOfOrderPersistence models a crash where a later page of an unsynced
// write reached the disk but an earlier one did not: zeros in the middle of
// the unsynced tail, valid chunks after them. Because those chunks carry a
// SyncOffset no larger than the hole, this is a torn tail, not corruption.
func TestOutOfOrderPersistence(t *testing.T) {
	var buf bytes.Buffer
	enc := NewEncoder(2, 0)
	var b []byte
	var ends []int64
	for i := 0; i < 200; i++ {
		b = enc.Append(b, []byte(fmt.Sprintf("record-%03d-%s", i, bytes.Repeat([]byte("x"), 200))), 0)
		ends = append(ends, enc.Offset())
	}
	buf.Write(b)
	data := buf.Bytes()
	// Zero a 4 KiB page in the middle.
	hole := 8192
	for i := hole; i < hole+4096; i++ {
		data[i] = 0
	}
	got, err := readAll(data, 2)
	if !errors.Is(err, ErrTornTail) {
		t.Fatalf("got %v, want torn tail", err)
	}
	n := 0
	for ends[n] <= int64(hole) {
		n++
	}
	if len(got) != n {
		t.Fatalf("got %d records, want %d", len(got), n)
	}
	// The same hole after the data had been synced (SyncOffset past it) is
	// corruption.
	buf.Reset()
	enc = NewEncoder(2, 0)
	b = b[:0]
	for i := 0; i < 200; i++ {
		b = enc.Append(b, []byte(fmt.Sprintf("record-%03d-%s", i, bytes.Repeat([]byte("x"), 200))), enc.Offset())
	}
	for i := hole; i < hole+4096; i++ {
		b[i] = 0
	}
	if _, err := readAll(b, 2); !errors.Is(err, errs.ErrCorruption) {
		t.Fatalf("got %v, want corruption", err)
	}
}

func TestForeignLogNum(t *testing.T) {
	// A reused file: the new log's records followed by an old log's.
	// When the new data ends on an old chunk boundary, the old chunk's
	// LogNum marks a clean end.
	old, _ := writeLog(t, 1, [][]byte{[]byte("abc"), bytes.Repeat([]byte("p"), 100), bytes.Repeat([]byte("q"), 100)})
	cur, _ := writeLog(t, 2, [][]byte{[]byte("new")})
	data := append(append([]byte(nil), cur...), old[len(cur):]...)
	got, err := readAll(data, 2)
	if err != io.EOF || len(got) != 1 || string(got[0]) != "new" {
		t.Fatalf("got %q, %v", got, err)
	}
	// Otherwise the old bytes look like a torn tail, never corruption.
	cur, _ = writeLog(t, 2, [][]byte{[]byte("newer")})
	data = append(append([]byte(nil), cur...), old[len(cur):]...)
	got, err = readAll(data, 2)
	if !errors.Is(err, ErrTornTail) || len(got) != 1 || string(got[0]) != "newer" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestMaxRecordSize(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, 1)
	if err := w.WriteRecord(bytes.Repeat([]byte("a"), 3*BlockSize)); err != nil {
		t.Fatal(err)
	}
	_ = w.Flush()
	r := NewReader(bytes.NewReader(buf.Bytes()), 1, "x")
	r.maxRecord = BlockSize
	if _, err := r.Next(); !errors.Is(err, errs.ErrCorruption) {
		t.Fatalf("got %v", err)
	}
}

func FuzzReader(f *testing.F) {
	rng := rand.New(rand.NewPCG(1, 2))
	data, _ := writeLog(f, 1, makeRecords(rng, 5))
	f.Add(data)
	f.Add(data[:len(data)/2])
	f.Add([]byte{})
	f.Add(make([]byte, 40))
	group, _ := groupLog(nil, 1, makeRecords(rng, 9), []int{4, 0})
	f.Add(group)
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b), 1, "fuzz.log")
		for i := 0; i < 1000; i++ {
			p, err := r.Next()
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrTornTail) && !errors.Is(err, errs.ErrCorruption) {
					t.Fatalf("unexpected error class: %v", err)
				}
				return
			}
			if len(p) > len(b) {
				t.Fatalf("record of %d bytes from %d input bytes", len(p), len(b))
			}
		}
	})
}

// TestEncoderRewind: after cutting the log back to a record boundary and
// rewinding the encoder there, the next records continue the log as if the
// dropped ones had never been encoded (block padding included).
func TestEncoderRewind(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	recs := makeRecords(rng, 40)
	for cut := range recs {
		enc := NewEncoder(9, 0)
		var log []byte
		for _, r := range recs[:cut] {
			log = enc.Append(log, r, 0)
		}
		end := enc.Offset()
		// Encode a record that "fails to reach the file", then rewind.
		_ = enc.Append(nil, recs[cut], 0)
		enc.Rewind(end)
		for _, r := range recs[cut+1:] {
			log = enc.Append(log, r, 0)
		}
		if enc.Offset() != int64(len(log)) {
			t.Fatalf("cut %d: offset %d, log %d bytes", cut, enc.Offset(), len(log))
		}
		got, err := readAll(log, 9)
		if err != io.EOF {
			t.Fatalf("cut %d: %v", cut, err)
		}
		want := append(append([][]byte(nil), recs[:cut]...), recs[cut+1:]...)
		equalPrefix(t, got, want, len(want))
		if len(got) != len(want) {
			t.Fatalf("cut %d: %d records, want %d", cut, len(got), len(want))
		}
	}
}

// TestZeroedTail: records followed by zeros (space a writer zero-filled
// ahead of them) end the log with a tail marked Zeroed, at the end of the
// last record; a record cut short before the zeros, or bytes that are not
// zero after them, are a torn tail that is not.
func TestZeroedTail(t *testing.T) {
	recs := [][]byte{bytes.Repeat([]byte{1}, 100), bytes.Repeat([]byte{2}, BlockSize+50), {3}}
	data, ends := writeLog(t, 5, recs)
	last := ends[len(ends)-1]
	zeros := make([]byte, 3*BlockSize+17)
	tail := func(data []byte) (*TornTailError, int) {
		t.Helper()
		got, err := readAll(data, 5)
		var tt *TornTailError
		if !errors.As(err, &tt) {
			t.Fatalf("read ended with %v, want a torn tail", err)
		}
		return tt, len(got)
	}

	tt, n := tail(append(append([]byte(nil), data...), zeros...))
	if n != len(recs) || !tt.Zeroed || tt.Offset != last || tt.Size != last+int64(len(zeros)) {
		t.Fatalf("records then zeros: %d records, tail %+v", n, tt)
	}
	if want := "nothing torn"; !bytes.Contains([]byte(tt.Error()), []byte(want)) {
		t.Errorf("message %q lacks %q", tt.Error(), want)
	}

	// The last record cut in the middle, then zeros: torn.
	cut := append(append([]byte(nil), data[:ends[1]-10]...), zeros...)
	if tt, n := tail(cut); tt.Zeroed || n != 1 {
		t.Fatalf("a record cut short then zeros: %d records, tail %+v", n, tt)
	}
	// Zeros, then a stray non-zero byte far behind: torn, not zeroed.
	stray := append(append([]byte(nil), data...), zeros...)
	stray[len(stray)-5] = 0x42
	if tt, n := tail(stray); tt.Zeroed || n != len(recs) {
		t.Fatalf("zeros with a stray byte: %d records, tail %+v", n, tt)
	}
}
