package cli

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/kayadb/kayadb/internal/lsm/base"
)

// formatBytes renders a key or value for humans. Printable ASCII is shown as
// is; anything else (and text that could be mistaken for the other forms: an
// empty string, a leading double quote or "0x") is shown Go-quoted when it is
// valid UTF-8 and as 0x-prefixed hex otherwise.
func formatBytes(b []byte) string {
	if isPlain(b) {
		return string(b)
	}
	if utf8.Valid(b) {
		return strconv.Quote(string(b))
	}
	return "0x" + hex.EncodeToString(b)
}

func isPlain(b []byte) bool {
	if len(b) == 0 || b[0] == '"' || (len(b) >= 2 && b[0] == '0' && (b[1] == 'x' || b[1] == 'X')) {
		return false
	}
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// formatInternalKey renders an internal key as key#seq,KIND.
func formatInternalKey(k base.InternalKey) string {
	return fmt.Sprintf("%s#%d,%s", formatBytes(k.UserKey), k.Seq(), kindName(k.Kind()))
}

// kindName names a key kind as the CLI's outputs do.
func kindName(k base.Kind) string {
	switch k {
	case base.KindSet:
		return "SET"
	case base.KindDelete:
		return "DEL"
	default:
		return fmt.Sprintf("KIND(%d)", uint8(k))
	}
}

// keyField is embedded in JSON objects that carry a key: "key" holds the key
// when it is valid UTF-8, "key_hex" (lowercase hex, no prefix) otherwise.
// Exactly one of them is present.
type keyField struct {
	Key    *string `json:"key,omitempty"`
	KeyHex *string `json:"key_hex,omitempty"`
}

func makeKeyField(b []byte) keyField {
	s, h := textOrHex(b)
	return keyField{Key: s, KeyHex: h}
}

// valueField is the value counterpart of keyField: "value" or "value_hex".
type valueField struct {
	Value    *string `json:"value,omitempty"`
	ValueHex *string `json:"value_hex,omitempty"`
}

func makeValueField(b []byte) valueField {
	s, h := textOrHex(b)
	return valueField{Value: s, ValueHex: h}
}

func textOrHex(b []byte) (text, hexStr *string) {
	if utf8.Valid(b) {
		s := string(b)
		return &s, nil
	}
	h := hex.EncodeToString(b)
	return nil, &h
}

// writeJSON writes v as one line of JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// humanBytes formats a byte count with binary units.
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// plural returns "1 thing" or "N things".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	if strings.HasSuffix(word, "ch") || strings.HasSuffix(word, "s") {
		return strconv.Itoa(n) + " " + word + "es"
	}
	return strconv.Itoa(n) + " " + word + "s"
}

// joinOrNone lists names, or says "none".
func joinOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
