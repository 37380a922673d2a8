package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
)

// countingReader serves header and then an endless stream of zero bytes,
// counting what was read from it.
type countingReader struct {
	header []byte
	n      int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	k := 0
	for k < len(p) && int(c.n) < len(c.header) {
		p[k] = c.header[c.n]
		k++
		c.n++
	}
	for ; k < len(p); k++ {
		p[k] = 0
		c.n++
	}
	return k, nil
}

func frameLen(n uint32) []byte { return binary.LittleEndian.AppendUint32(nil, n) }

func TestReadFrameEmpty(t *testing.T) {
	for _, read := range []func(*bufio.Reader) error{
		func(r *bufio.Reader) error { _, _, _, err := ReadRequest(r, nil); return err },
		func(r *bufio.Reader) error { _, _, _, err := ReadResponse(r, nil); return err },
	} {
		if err := read(bufio.NewReader(bytes.NewReader(frameLen(0)))); !errors.Is(err, ErrFrameEmpty) {
			t.Fatalf("got %v, want ErrFrameEmpty", err)
		}
	}
	// A response needs 2 bytes for its status.
	r := bufio.NewReader(bytes.NewReader(append(frameLen(1), 0)))
	if _, _, _, err := ReadResponse(r, nil); !errors.Is(err, ErrFrameTooSmall) {
		t.Fatalf("got %v, want ErrFrameTooSmall", err)
	}
	// A request of frame_len 1 is an opcode without payload: fine.
	r = bufio.NewReader(bytes.NewReader(append(frameLen(1), byte(OpHealth))))
	if op, p, _, err := ReadRequest(r, nil); err != nil || op != OpHealth || len(p) != 0 {
		t.Fatalf("got %v %x %v", op, p, err)
	}
}

// TestReadFrameTooLarge checks that an oversized frame_len is refused
// without reading the body and without allocating it.
func TestReadFrameTooLarge(t *testing.T) {
	for _, n := range []uint32{MaxFrameSize + 1, 1<<32 - 1} {
		for _, kind := range []string{"request", "response"} {
			src := &countingReader{header: frameLen(n)}
			r := bufio.NewReaderSize(src, 16) // the header fits; the rest is body
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			var err error
			if kind == "request" {
				_, _, _, err = ReadRequest(r, nil)
			} else {
				_, _, _, err = ReadResponse(r, nil)
			}
			runtime.ReadMemStats(&ms1)
			if !errors.Is(err, ErrFrameTooLarge) {
				t.Fatalf("%s %d: got %v, want ErrFrameTooLarge", kind, n, err)
			}
			if src.n > 16 {
				t.Fatalf("%s %d: read %d bytes from the source, want only the buffered header", kind, n, src.n)
			}
			if r.Buffered() != 12 { // 16 buffered - 4 header bytes: no body byte consumed
				t.Fatalf("%s %d: %d bytes left buffered, want 12", kind, n, r.Buffered())
			}
			if d := ms1.TotalAlloc - ms0.TotalAlloc; d > 1<<20 {
				t.Fatalf("%s %d: allocated %d bytes", kind, n, d)
			}
		}
	}
	// MaxFrameSize itself is accepted.
	f := append(frameLen(MaxFrameSize), make([]byte, MaxFrameSize)...)
	if _, p, _, err := ReadRequest(bufio.NewReader(bytes.NewReader(f)), nil); err != nil || len(p) != MaxFrameSize-1 {
		t.Fatalf("max frame: %d bytes, %v", len(p), err)
	}
}

// TestReadLargeAnnouncementAllocatesAsBytesArrive checks that a frame that
// announces 64 MiB but delivers little makes the reader allocate little.
func TestReadLargeAnnouncementAllocatesAsBytesArrive(t *testing.T) {
	f := append(frameLen(MaxFrameSize), make([]byte, 1000)...)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	_, _, _, err := ReadRequest(bufio.NewReader(bytes.NewReader(f)), nil)
	runtime.ReadMemStats(&ms1)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
	}
	if d := ms1.TotalAlloc - ms0.TotalAlloc; d > 1<<20 {
		t.Fatalf("allocated %d bytes for a 1000-byte delivery", d)
	}
}

func TestReadFrameTruncated(t *testing.T) {
	full := AppendRequest(nil, OpPut, AppendPut(nil, []byte("hello"), []byte("world")))
	for cut := 1; cut < len(full); cut++ {
		r := bufio.NewReader(bytes.NewReader(full[:cut]))
		_, _, _, err := ReadRequest(r, nil)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("cut at %d: got %v, want io.ErrUnexpectedEOF", cut, err)
		}
	}
	resp := AppendResponse(nil, StatusOK, AppendValue(nil, []byte("world")))
	for cut := 1; cut < len(resp); cut++ {
		r := bufio.NewReader(bytes.NewReader(resp[:cut]))
		_, _, _, err := ReadResponse(r, nil)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("cut at %d: got %v, want io.ErrUnexpectedEOF", cut, err)
		}
	}
	// A large frame cut short is also io.ErrUnexpectedEOF.
	big := AppendRequest(nil, OpPut, AppendPut(nil, []byte("k"), make([]byte, 300<<10)))
	if _, _, _, err := ReadRequest(bufio.NewReader(bytes.NewReader(big[:len(big)-1])), nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("big: got %v", err)
	}
	// Nothing at all is a clean io.EOF.
	if _, _, _, err := ReadRequest(bufio.NewReader(bytes.NewReader(nil)), nil); err != io.EOF {
		t.Fatalf("empty stream: got %v, want io.EOF", err)
	}
	if _, _, _, err := ReadResponse(bufio.NewReader(bytes.NewReader(nil)), nil); err != io.EOF {
		t.Fatalf("empty stream: got %v, want io.EOF", err)
	}
}

// TestPipelinedFrames reads frames written back to back, reusing one
// buffer, and checks each against what was written.
func TestPipelinedFrames(t *testing.T) {
	type req struct {
		op Opcode
		p  []byte
	}
	var reqs []req
	var stream []byte
	largest := 0
	for i := range 200 {
		var r req
		switch i % 4 {
		case 0:
			r = req{OpPut, AppendPut(nil, []byte{byte(i)}, bytes.Repeat([]byte{byte(i)}, i*300))}
		case 1:
			r = req{OpGet, AppendKey(nil, []byte{byte(i), 1})}
		case 2:
			r = req{OpHealth, nil}
		case 3:
			r = req{OpScan, AppendKey(nil, nil)}
		}
		reqs = append(reqs, r)
		largest = max(largest, 1+len(r.p))
		stream = AppendRequest(stream, r.op, r.p)
	}
	rd := bufio.NewReader(bytes.NewReader(stream))
	var buf []byte
	for i, want := range reqs {
		op, p, b, err := ReadRequest(rd, buf)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		buf = b
		if op != want.op || !bytes.Equal(p, want.p) {
			t.Fatalf("frame %d: got %v %d bytes, want %v %d bytes", i, op, len(p), want.op, len(want.p))
		}
	}
	if _, _, _, err := ReadRequest(rd, buf); err != io.EOF {
		t.Fatalf("after last frame: got %v, want io.EOF", err)
	}
	if cap(buf) < largest {
		t.Fatalf("buffer cap %d, want at least the largest frame %d", cap(buf), largest)
	}

	// Responses, too.
	var rs []byte
	for i := range 100 {
		rs = AppendResponse(rs, Status(i%12), AppendValue(nil, bytes.Repeat([]byte{'v'}, i)))
	}
	rd = bufio.NewReader(bytes.NewReader(rs))
	buf = nil
	for i := range 100 {
		st, p, b, err := ReadResponse(rd, buf)
		if err != nil {
			t.Fatal(err)
		}
		buf = b
		v, err := DecodeValue(p)
		if st != Status(i%12) || err != nil || len(v) != i {
			t.Fatalf("response %d: %v %d %v", i, st, len(v), err)
		}
	}
}

// TestReadReusesBuffer checks that a buffer large enough is used as is.
func TestReadReusesBuffer(t *testing.T) {
	f := AppendRequest(nil, OpGet, AppendKey(nil, []byte("abc")))
	buf := make([]byte, 0, 64)
	_, p, b, err := ReadRequest(bufio.NewReader(bytes.NewReader(f)), buf)
	if err != nil {
		t.Fatal(err)
	}
	if &b[:1][0] != &buf[:1][0] || &p[0] != &buf[:2][1] {
		t.Fatal("buffer not reused")
	}
}

// TestAuthPrefixFirst: ReadAuthPrefix reads the prefix of a frame that
// announces 64 MiB and nothing more, so that a server refuses a wrong token
// having read (and allocated) a few bytes; with the right token,
// ReadPayload reads the rest, and the payload is the one ReadRequest reads.
func TestAuthPrefixFirst(t *testing.T) {
	inner := bytes.Repeat([]byte{'x'}, 3000)
	for _, tc := range []struct {
		marker string
		op     Opcode
		p      []byte
		want   int // bytes of the payload ReadAuthPrefix reads
	}{
		{ClientPrefix, OpPut, AppendClient(nil, "secret-token", inner), len(ClientPrefix) + 2 + 12},
		{AdminPrefix, OpAddMember, AppendAdmin(nil, "op-token", OpAddMember, inner), len(AdminPrefix) + 2 + 8 + 1},
		{ClientPrefix, OpGet, inner, len(ClientPrefix) + 2},    // not prefixed: the marker's room only
		{ClientPrefix, OpGet, []byte("CLI"), 3},                // shorter than a marker
		{ClientPrefix, OpGet, []byte("CLIENT\x00\xff\xff"), 9}, // a token longer than the payload
		{AdminPrefix, OpAddMember, []byte("ADMIN\x00\x02\x00a"), 9},
	} {
		frame := AppendRequest(nil, tc.op, tc.p)
		r := bufio.NewReader(bytes.NewReader(frame))
		op, n, err := ReadRequestHeader(r)
		if err != nil || op != tc.op || n != len(tc.p) {
			t.Fatalf("header: %v %d %v", op, n, err)
		}
		head, err := ReadAuthPrefix(r, tc.marker, n, nil)
		if err != nil || len(head) != min(tc.want, n) || !bytes.Equal(head, tc.p[:len(head)]) {
			t.Fatalf("%q: prefix %q, %v; want %d bytes", tc.p[:min(12, len(tc.p))], head, err, tc.want)
		}
		p, err := ReadPayload(r, head, n)
		if err != nil || !bytes.Equal(p, tc.p) {
			t.Fatalf("payload: %d bytes, %v", len(p), err)
		}
	}

	// A frame announcing 64 MiB: the prefix step reads the header and the
	// prefix from the stream, nothing more.
	p := AppendClient(nil, "wrong", nil)
	header := append(frameLen(MaxFrameSize), byte(OpPut))
	src := &countingReader{header: append(header, p...)}
	r := bufio.NewReaderSize(src, 16)
	_, n, err := ReadRequestHeader(r)
	if err != nil || n != MaxFrameSize-1 {
		t.Fatalf("header: %d %v", n, err)
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	head, err := ReadAuthPrefix(r, ClientPrefix, n, nil)
	runtime.ReadMemStats(&ms1)
	if err != nil || !bytes.Equal(head, p) {
		t.Fatalf("prefix %q, %v", head, err)
	}
	if got := src.n - int64(r.Buffered()); got != int64(len(header)+len(p)) {
		t.Fatalf("consumed %d bytes, want the %d of the header and the prefix", got, len(header)+len(p))
	}
	if d := ms1.TotalAlloc - ms0.TotalAlloc; d > 1<<16 {
		t.Fatalf("allocated %d bytes to read a %d-byte prefix", d, len(p))
	}
	// A truncated prefix is io.ErrUnexpectedEOF.
	r = bufio.NewReader(bytes.NewReader([]byte("CLIENT\x00\x05\x00ab")))
	if _, err := ReadAuthPrefix(r, ClientPrefix, 100, nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated prefix: %v", err)
	}
}
