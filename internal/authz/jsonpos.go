package authz

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// ParseError is a policy file that cannot be used: the file, the line and
// column (1-based, columns in bytes) of the offending token, and why.
type ParseError struct {
	File      string
	Line, Col int
	Reason    string
}

func (e *ParseError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Reason)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Reason)
}

// MaxFileBytes bounds a policy file: it is read whole and parsed into
// memory at start and on every reload, and a policy of this size already
// holds far more entries than MaxEntries allow.
const MaxFileBytes = 4 << 20

// MaxEntries bounds the entries of one file (ACL prefixes, tenants,
// identities): a scan's clamping and the load's range arithmetic grow
// with them, and no deployment needs more.
const MaxEntries = 10000

// jsonFile walks a JSON document token by token, keeping the positions of
// the tokens for error messages.
type jsonFile struct {
	name string
	data []byte
	dec  *json.Decoder
}

func newJSON(name string, data []byte) (*jsonFile, error) {
	f := &jsonFile{name: name, data: data}
	if len(data) > MaxFileBytes {
		return nil, &ParseError{File: name, Reason: fmt.Sprintf("the file is %d bytes, more than the %d a policy file may hold", len(data), MaxFileBytes)}
	}
	if !utf8.Valid(data) {
		off := 0
		for off < len(data) {
			r, n := utf8.DecodeRune(data[off:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			off += n
		}
		return nil, f.errAt(int64(off), "the file is not valid UTF-8 text")
	}
	f.dec = json.NewDecoder(bytes.NewReader(data))
	f.dec.UseNumber()
	return f, nil
}

// errAt is a ParseError at byte offset off.
func (f *jsonFile) errAt(off int64, format string, args ...any) error {
	line, col := 1, 1
	if off > int64(len(f.data)) {
		off = int64(len(f.data))
	}
	for _, b := range f.data[:off] {
		if b == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return &ParseError{File: f.name, Line: line, Col: col, Reason: fmt.Sprintf(format, args...)}
}

// next returns the offset where the next token starts (after white space
// and the separators the decoder consumes with it).
func (f *jsonFile) next() int64 {
	off := f.dec.InputOffset()
	for off < int64(len(f.data)) {
		switch f.data[off] {
		case ' ', '\t', '\r', '\n', ',', ':':
			off++
			continue
		}
		break
	}
	return off
}

// token reads the next token and where it starts. A syntax error names
// the decoder's offset; the end of the input is an error too.
func (f *jsonFile) token() (json.Token, int64, error) {
	off := f.next()
	t, err := f.dec.Token()
	if err != nil {
		var se *json.SyntaxError
		switch {
		case errors.As(err, &se):
			return nil, off, f.errAt(se.Offset, "JSON syntax error: %s", se.Error())
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return nil, off, f.errAt(int64(len(f.data)), "unexpected end of the file (an unclosed object, array or string)")
		}
		return nil, off, f.errAt(off, "JSON: %v", err)
	}
	return t, off, nil
}

func describe(t json.Token) string {
	switch v := t.(type) {
	case json.Delim:
		return fmt.Sprintf("%q", string(v))
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%v", t)
}

// delim reads the delimiter want.
func (f *jsonFile) delim(want json.Delim, what string) (int64, error) {
	t, off, err := f.token()
	if err != nil {
		return off, err
	}
	if d, ok := t.(json.Delim); !ok || d != want {
		return off, f.errAt(off, "%s: want %q, found %s", what, string(want), describe(t))
	}
	return off, nil
}

// str reads a string.
func (f *jsonFile) str(what string) (string, int64, error) {
	t, off, err := f.token()
	if err != nil {
		return "", off, err
	}
	s, ok := t.(string)
	if !ok {
		return "", off, f.errAt(off, "%s: want a string, found %s", what, describe(t))
	}
	return s, off, nil
}

// more reports whether the current object or array has another element.
func (f *jsonFile) more() bool { return f.dec.More() }

// end checks that nothing but white space follows the document.
func (f *jsonFile) end() error {
	off := f.next()
	if _, err := f.dec.Token(); err != io.EOF {
		return f.errAt(off, "data after the end of the JSON document")
	}
	return nil
}

// skip reads and drops one value (an unknown field's, when it is
// reported after).
func (f *jsonFile) skip() error {
	depth := 0
	for {
		t, _, err := f.token()
		if err != nil {
			return err
		}
		if d, ok := t.(json.Delim); ok {
			switch d {
			case '{', '[':
				depth++
			default:
				depth--
			}
		}
		if depth == 0 {
			return nil
		}
	}
}
