package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// smallFrame is the body size up to which a reader allocates a frame's
// buffer in one step. Above it the buffer grows (doubling) only as bytes
// actually arrive, so a peer that announces 64 MiB and sends nothing makes
// the reader allocate 64 KiB, not 64 MiB: memory follows received bytes
// (at most about twice them), never announcements.
const smallFrame = 64 << 10

// AppendRequest appends a request frame carrying op and payload to dst and
// returns the extended slice. The caller keeps 1+len(payload) within
// MaxFrameSize; a reader refuses a larger frame.
func AppendRequest(dst []byte, op Opcode, payload []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(1+len(payload)))
	dst = append(dst, byte(op))
	return append(dst, payload...)
}

// AppendResponse appends a response frame carrying st and payload to dst
// and returns the extended slice. The caller keeps 2+len(payload) within
// MaxFrameSize; a reader refuses a larger frame.
func AppendResponse(dst []byte, st Status, payload []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(2+len(payload)))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(st))
	return append(dst, payload...)
}

// ReadRequest reads one request frame from r. It returns the opcode, the
// payload and the buffer that holds them; pass that buffer to the next call
// to reuse it (the payload is valid only until then). buf may be nil.
//
// At a clean end of stream, before any byte of a frame, the error is
// io.EOF. Otherwise every error means the connection must be closed:
// ErrFrameEmpty, ErrFrameTooLarge (no body byte was read and nothing was
// allocated), io.ErrUnexpectedEOF (wrapped) for a truncated frame, or the
// reader's own error.
func ReadRequest(r *bufio.Reader, buf []byte) (Opcode, []byte, []byte, error) {
	n, err := readFrameLen(r, 1)
	if err != nil {
		return 0, nil, buf, err
	}
	buf, err = readBody(r, buf, n)
	if err != nil {
		return 0, nil, buf, fmt.Errorf("wire: reading request frame of %d bytes: %w", n, err)
	}
	return Opcode(buf[0]), buf[1:n], buf, nil
}

// ReadResponse reads one response frame from r. It returns the status, the
// payload and the buffer that holds them; pass that buffer to the next call
// to reuse it (the payload is valid only until then), or nil to have every
// payload in its own memory.
//
// Errors are those of ReadRequest, plus ErrFrameTooSmall for a frame_len
// of 1, which cannot hold the status.
func ReadResponse(r *bufio.Reader, buf []byte) (Status, []byte, []byte, error) {
	n, err := readFrameLen(r, 2)
	if err != nil {
		return 0, nil, buf, err
	}
	buf, err = readBody(r, buf, n)
	if err != nil {
		return 0, nil, buf, fmt.Errorf("wire: reading response frame of %d bytes: %w", n, err)
	}
	return Status(binary.LittleEndian.Uint16(buf)), buf[2:n], buf, nil
}

// readFrameLen reads and checks frame_len; min is the smallest body the
// frame kind allows (1 for requests, 2 for responses).
func readFrameLen(r *bufio.Reader, min uint32) (int, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, fmt.Errorf("wire: reading frame length: %w", err)
		}
		return 0, err // io.EOF at a frame boundary, or the reader's error
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	switch {
	case n == 0:
		return 0, ErrFrameEmpty
	case n > MaxFrameSize:
		return 0, fmt.Errorf("%w: frame_len %d", ErrFrameTooLarge, n)
	case n < min:
		return 0, fmt.Errorf("%w: frame_len %d", ErrFrameTooSmall, n)
	}
	return int(n), nil
}

// readBody reads exactly n (≤ MaxFrameSize) bytes into buf, reusing its
// capacity, and returns buf[:n]. A truncated body is io.ErrUnexpectedEOF.
func readBody(r io.Reader, buf []byte, n int) ([]byte, error) {
	if cap(buf) >= n || n <= smallFrame {
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return buf[:0], unexpected(err)
		}
		return buf, nil
	}
	// Large frame, small buffer: grow as the bytes arrive.
	return fill(r, buf[:0], n)
}

// fill reads from r until buf holds n bytes, growing it (doubling, from at
// least smallFrame, never beyond n) only as bytes arrive.
func fill(r io.Reader, buf []byte, n int) ([]byte, error) {
	for len(buf) < n {
		if len(buf) == cap(buf) {
			c := max(2*cap(buf), smallFrame)
			nb := make([]byte, len(buf), min(c, n))
			copy(nb, buf)
			buf = nb
		}
		m, err := io.ReadFull(r, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil {
			return buf[:0], unexpected(err)
		}
	}
	return buf, nil
}

// Reading a request in steps
//
// A server that checks credentials reads a request frame in up to three
// steps, so that a frame from a client without the right token costs it
// the prefix's bytes, not the frame's: ReadRequestHeader (frame_len and
// opcode), ReadAuthPrefix (the authentication prefix and nothing after
// it), then ReadPayload for the rest, or bufio.Reader.Discard to skip it.
// The bytes on the wire are those of ReadRequest; only the reading differs.

// MaxAuthPrefixSize is the longest authentication prefix ReadAuthPrefix
// reads: "CLIENT\0" (the longer marker), a token of MaxTokenSize bytes with
// its length, and ADMIN's embedded opcode.
const MaxAuthPrefixSize = len(ClientPrefix) + 2 + MaxTokenSize + 1

// ReadRequestHeader reads a request frame's frame_len and opcode and
// returns the opcode and the length of the payload that follows, which it
// leaves unread. Its errors are those of ReadRequest.
func ReadRequestHeader(r *bufio.Reader) (Opcode, int, error) {
	n, err := readFrameLen(r, 1)
	if err != nil {
		return 0, 0, err
	}
	op, err := r.ReadByte()
	if err != nil {
		return 0, 0, fmt.Errorf("wire: reading request frame of %d bytes: %w", n, unexpected(err))
	}
	return Opcode(op), n - 1, nil
}

// ReadAuthPrefix reads the first bytes of an n-byte payload, as far as the
// authentication prefix marker (AdminPrefix or ClientPrefix) reaches: when
// the payload starts with the marker, the marker, the token's length and
// the token, and for AdminPrefix the embedded opcode; otherwise the bytes
// that show it does not (at most len(marker)+2). It never reads beyond the
// payload, nor more than MaxAuthPrefixSize bytes. It returns those bytes,
// appended to buf[:0]: SplitClient and SplitAdmin decide on them exactly
// as they would on the whole payload, and ReadPayload reads the rest.
func ReadAuthPrefix(r *bufio.Reader, marker string, n int, buf []byte) ([]byte, error) {
	want := min(n, len(marker)+2)
	buf = append(buf[:0], make([]byte, want)...)
	if _, err := io.ReadFull(r, buf); err != nil {
		return buf[:0], fmt.Errorf("wire: reading an authentication prefix: %w", unexpected(err))
	}
	if want < len(marker)+2 || string(buf[:len(marker)]) != marker {
		return buf, nil
	}
	more := int(binary.LittleEndian.Uint16(buf[len(marker):]))
	if marker == AdminPrefix {
		more++ // the embedded opcode
	}
	more = min(more, n-want)
	buf = append(buf, make([]byte, more)...)
	if _, err := io.ReadFull(r, buf[want:]); err != nil {
		return buf[:0], fmt.Errorf("wire: reading an authentication prefix: %w", unexpected(err))
	}
	return buf, nil
}

// ReadPayload reads the rest of an n-byte payload whose first bytes, start,
// were read already (by ReadAuthPrefix, or none), and returns the whole
// payload in a new buffer. Like ReadRequest, it allocates as the bytes
// arrive, not as announced. A truncated payload is io.ErrUnexpectedEOF.
func ReadPayload(r *bufio.Reader, start []byte, n int) ([]byte, error) {
	if len(start) > n {
		return nil, fmt.Errorf("wire: ReadPayload: %d bytes already read of a %d-byte payload", len(start), n)
	}
	buf := make([]byte, len(start), max(len(start), min(n, smallFrame)))
	copy(buf, start)
	buf, err := fill(r, buf, n)
	if err != nil {
		return nil, fmt.Errorf("wire: reading a request payload of %d bytes: %w", n, err)
	}
	return buf, nil
}

// unexpected turns an end of stream inside a frame into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
