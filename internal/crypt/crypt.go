// Package crypt owns KayaDB's encryption at rest primitives: the keyring
// (the original KayaDB's key file and keyring file formats) and the
// envelope that seals one record or one block with AES-256-GCM.
//
// It is a leaf: it imports the standard library and internal/durable only,
// never the storage layers. The formats that hold user data (the record
// framing of the WALs and MANIFEST, SSTable blocks) call Sealer.Seal and
// Sealer.Open per record or block; this package never opens data files.
// It must never log or format key bytes (only fingerprints), never reuse a
// nonce under a key, and never return bytes that failed authentication.
//
// # Key file (--encryption-key-file)
//
// Exactly 32 raw bytes: one AES-256 key, key id 0, active.
//
// # Keyring file (--encryption-keyring-file)
//
// Text, one directive per line; blank lines and lines starting with '#'
// are ignored:
//
//	key <id> <64 hex digits>     a key; id is a decimal u32, unique
//	active <id>                  the key new data is sealed with (exactly one;
//	                             may be omitted when the file holds one key)
//
// # Envelope
//
//	+-------------+------------+------------+-------------+
//	| key id u32  | nonce (12) | ciphertext | GCM tag (16)|
//	+-------------+------------+------------+-------------+
//
// The key id is little-endian and in the clear (it says which key opens the
// envelope; `kayactl encryption verify` reports it without any key). The
// nonce is an 8-byte prefix drawn from crypto/rand when a Sealer first
// seals and again after every 2^32 seals, followed by a 4-byte little-endian
// counter: nonces never repeat within a prefix, and two prefixes collide
// with probability 2^-64, so a key may seal far more than the 2^32 messages
// NIST allows for purely random 96-bit nonces. The caller's additional data
// (a file kind and a position) binds the envelope to its place.
package crypt

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
)

// KeySize is the size of an AES-256 key.
const KeySize = 32

// Sizes of the envelope's parts.
const (
	KeyIDSize = 4
	NonceSize = 12
	TagSize   = 16
	// Overhead is what sealing adds to a plaintext.
	Overhead = KeyIDSize + NonceSize + TagSize
)

// MaxKeyringSize bounds the keyring file a node reads: a keyring holds a
// line per key (about 80 bytes), and 1 MiB is over ten thousand rotations.
const MaxKeyringSize = 1 << 20

// KeyID names a key of a keyring.
type KeyID uint32

// Errors. Test with errors.Is.
var (
	// ErrUnknownKey: an envelope names a key id the keyring lacks.
	ErrUnknownKey = errors.New("crypt: key id not in the keyring")
	// ErrDecrypt: authentication failed: a wrong key under the right id,
	// or bytes changed after sealing.
	ErrDecrypt = errors.New("crypt: authentication failed (wrong key, or the data was changed)")
	// ErrShort: fewer bytes than an envelope's fixed parts.
	ErrShort = errors.New("crypt: envelope shorter than its header and tag")
	// ErrKeyring: a malformed key file or keyring file.
	ErrKeyring = errors.New("crypt: bad keyring")
)

// key is one key with its cipher ready.
type key struct {
	id   KeyID
	raw  [KeySize]byte
	aead cipher.AEAD
	fp   string
}

// Keyring is an immutable set of keys with one active key. A rotation makes
// a new Keyring (WithNewKey); a running node swaps it into its Sealer.
type Keyring struct {
	active KeyID
	keys   map[KeyID]*key
	act    *key // keys[active], looked up once
}

func newKey(id KeyID, raw []byte) (*key, error) {
	if len(raw) != KeySize {
		return nil, fmt.Errorf("%w: key %d has %d bytes, want %d (AES-256)", ErrKeyring, id, len(raw), KeySize)
	}
	k := &key{id: id}
	copy(k.raw[:], raw)
	block, err := aes.NewCipher(k.raw[:])
	if err != nil {
		return nil, err
	}
	if k.aead, err = cipher.NewGCM(block); err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write([]byte("kayadb key fingerprint v1\x00"))
	h.Write(k.raw[:])
	k.fp = hex.EncodeToString(h.Sum(nil)[:8])
	return k, nil
}

// New builds a keyring from raw 32-byte keys; active must be one of them.
func New(keys map[KeyID][]byte, active KeyID) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no keys", ErrKeyring)
	}
	r := &Keyring{active: active, keys: make(map[KeyID]*key, len(keys))}
	for id, raw := range keys {
		k, err := newKey(id, raw)
		if err != nil {
			return nil, err
		}
		r.keys[id] = k
	}
	if r.act = r.keys[active]; r.act == nil {
		return nil, fmt.Errorf("%w: the active key %d is not in the keyring", ErrKeyring, active)
	}
	return r, nil
}

// Active returns the id of the key new data is sealed with.
func (r *Keyring) Active() KeyID { return r.active }

// IDs returns the key ids, ascending.
func (r *Keyring) IDs() []KeyID { return slices.Sorted(maps.Keys(r.keys)) }

// Has reports whether the keyring holds key id.
func (r *Keyring) Has(id KeyID) bool { return r.keys[id] != nil }

// Fingerprint returns a short public digest of key id ("" when absent):
// 16 hex digits of SHA-256 over a domain string and the key. It tells keys
// apart in listings and logs without revealing them.
func (r *Keyring) Fingerprint(id KeyID) string {
	if k := r.keys[id]; k != nil {
		return k.fp
	}
	return ""
}

// Equal reports whether two keyrings hold the same keys with the same
// active key.
func (r *Keyring) Equal(o *Keyring) bool {
	if r == nil || o == nil {
		return r == o
	}
	if r.active != o.active || len(r.keys) != len(o.keys) {
		return false
	}
	for id, k := range r.keys {
		if ok := o.keys[id]; ok == nil || ok.raw != k.raw {
			return false
		}
	}
	return true
}

// WithNewKey returns a keyring with one more key, id max+1, drawn from rnd
// (crypto/rand.Reader when nil), made active. The old keys stay: data
// sealed with them must still open.
func (r *Keyring) WithNewKey(rnd io.Reader) (*Keyring, KeyID, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	ids := r.IDs()
	last := ids[len(ids)-1]
	if last == ^KeyID(0) {
		return nil, 0, fmt.Errorf("%w: key id %d is the last one", ErrKeyring, last)
	}
	raw := make([]byte, KeySize)
	if _, err := io.ReadFull(rnd, raw); err != nil {
		return nil, 0, fmt.Errorf("crypt: drawing a new key: %w", err)
	}
	keys := make(map[KeyID][]byte, len(r.keys)+1)
	for id, k := range r.keys {
		keys[id] = k.raw[:]
	}
	keys[last+1] = raw
	n, err := New(keys, last+1)
	return n, last + 1, err
}

// Generate returns a keyring with one fresh key, id 1, active.
func Generate(rnd io.Reader) (*Keyring, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	raw := make([]byte, KeySize)
	if _, err := io.ReadFull(rnd, raw); err != nil {
		return nil, fmt.Errorf("crypt: drawing a key: %w", err)
	}
	return New(map[KeyID][]byte{1: raw}, 1)
}

// Format returns the keyring in the keyring file format. The result holds
// the keys: write it only to a file of mode 0600.
func (r *Keyring) Format() []byte {
	var b bytes.Buffer
	b.WriteString("# KayaDB encryption keyring: keep it secret (mode 0600) and back it up;\n")
	b.WriteString("# data sealed with a key cannot be read without it.\n")
	for _, id := range r.IDs() {
		fmt.Fprintf(&b, "key %d %s\n", id, hex.EncodeToString(r.keys[id].raw[:]))
	}
	fmt.Fprintf(&b, "active %d\n", r.active)
	return b.Bytes()
}

// ParseKeyFile parses the content of a key file: exactly 32 raw bytes, key
// id 0. name is the file's path, for errors.
func ParseKeyFile(name string, data []byte) (*Keyring, error) {
	if len(data) != KeySize {
		hint := ""
		if len(bytes.TrimSpace(data)) == 2*KeySize {
			hint = " (it looks like 64 hex digits: a key file holds the 32 raw bytes, e.g. from: head -c 32 /dev/urandom > FILE; or use --encryption-keyring-file with a line: key 0 <hex>)"
		}
		return nil, fmt.Errorf("%w: %s holds %d bytes; an encryption key file holds exactly %d raw bytes (AES-256)%s",
			ErrKeyring, name, len(data), KeySize, hint)
	}
	return New(map[KeyID][]byte{0: data}, 0)
}

// ParseKeyring parses a keyring file's content. name is the file's path,
// for errors, which name the line.
func ParseKeyring(name string, data []byte) (*Keyring, error) {
	if len(data) > MaxKeyringSize {
		return nil, fmt.Errorf("%w: %s is %d bytes, larger than a keyring can be (%d)", ErrKeyring, name, len(data), MaxKeyringSize)
	}
	keys := map[KeyID][]byte{}
	active, haveActive, activeLine := KeyID(0), false, 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxKeyringSize)
	line := 0
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s line %d: %s", ErrKeyring, name, line, fmt.Sprintf(format, args...))
	}
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Fields(text)
		switch f[0] {
		case "key":
			if len(f) != 3 {
				return nil, bad("want: key <id> <64 hex digits>")
			}
			id, err := parseID(f[1])
			if err != nil {
				return nil, bad("key id %q: %v", f[1], err)
			}
			if _, dup := keys[id]; dup {
				return nil, bad("key %d is listed twice", id)
			}
			raw, err := hex.DecodeString(f[2])
			if err != nil || len(raw) != KeySize {
				return nil, bad("key %d: want %d hex digits (a 32-byte AES-256 key)", id, 2*KeySize)
			}
			keys[id] = raw
		case "active":
			if len(f) != 2 {
				return nil, bad("want: active <id>")
			}
			if haveActive {
				return nil, bad("a second active line (the first is on line %d)", activeLine)
			}
			id, err := parseID(f[1])
			if err != nil {
				return nil, bad("active id %q: %v", f[1], err)
			}
			active, haveActive, activeLine = id, true, line
		default:
			return nil, bad("unknown directive %q (want key or active)", f[0])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s line %d: %v", ErrKeyring, name, line+1, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: %s holds no key (create one with: kayactl encryption init --keyring %s)", ErrKeyring, name, name)
	}
	if !haveActive {
		if len(keys) != 1 {
			return nil, fmt.Errorf("%w: %s holds %d keys and no active line: add one, e.g. active %d", ErrKeyring, name, len(keys), slices.Max(slices.Collect(maps.Keys(keys))))
		}
		for id := range keys {
			active = id
		}
	} else if keys[active] == nil {
		return nil, fmt.Errorf("%w: %s line %d: the active key %d is not listed", ErrKeyring, name, activeLine, active)
	}
	return New(keys, active)
}

func parseID(s string) (KeyID, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, errors.New("want a decimal number from 0 to 4294967295")
	}
	return KeyID(n), nil
}

// LoadFile reads a key file (keyring false) or a keyring file (keyring
// true). The file must be a regular file that no other user may read or
// write: a key readable by others is as good as published.
func LoadFile(path string, keyring bool) (*Keyring, error) {
	flag := "--encryption-key-file"
	if keyring {
		flag = "--encryption-keyring-file"
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s is not a regular file", flag, path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s %s is accessible by other users (mode %v): a key others can read protects nothing; run: chmod 600 %s",
			flag, path, st.Mode().Perm(), path)
	}
	if st.Size() > MaxKeyringSize {
		return nil, fmt.Errorf("%w: %s is %d bytes, larger than a keyring can be (%d)", ErrKeyring, path, st.Size(), MaxKeyringSize)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if keyring {
		return ParseKeyring(path, data)
	}
	return ParseKeyFile(path, data)
}

// Sealer seals and opens envelopes under a keyring that can be swapped
// while it is in use (a rotation): seals started after SetKeyring use the
// new active key; opens find any key of the current keyring. Safe for
// concurrent use.
type Sealer struct {
	ring atomic.Pointer[Keyring]
	// nonces is the current nonce prefix and its counter; replaced (by
	// compare-and-swap, so without a lock on the sealing path) by a fresh
	// prefix once its 2^32 counter values are used.
	nonces atomic.Pointer[nonceBlock]
}

// nonceBlock is a nonce prefix and the count of seals drawn from it. The
// count is 64-bit so that draws past 2^32 are seen (and refused) rather
// than wrapped onto used nonces.
type nonceBlock struct {
	prefix [8]byte
	n      atomic.Uint64
}

// NewSealer returns a Sealer over r.
func NewSealer(r *Keyring) *Sealer {
	s := &Sealer{}
	s.ring.Store(r)
	return s
}

// Keyring returns the current keyring.
func (s *Sealer) Keyring() *Keyring { return s.ring.Load() }

// SetKeyring swaps the keyring (a rotation).
func (s *Sealer) SetKeyring(r *Keyring) { s.ring.Store(r) }

// ActiveKey returns the id new seals use.
func (s *Sealer) ActiveKey() KeyID { return s.ring.Load().active }

// nonce writes a fresh nonce to dst: the current prefix and the next
// value of its counter, or, when the prefix's 2^32 values are used up (or
// none was drawn yet), a new random prefix first.
func (s *Sealer) nonce(dst []byte) {
	for {
		nb := s.nonces.Load()
		if nb != nil {
			if n := nb.n.Add(1) - 1; n < 1<<32 {
				copy(dst, nb.prefix[:])
				binary.LittleEndian.PutUint32(dst[8:], uint32(n))
				return
			}
		}
		fresh := &nonceBlock{}
		// crypto/rand.Read never fails (since Go 1.24 it crashes the
		// program rather than return an error).
		_, _ = rand.Read(fresh.prefix[:])
		s.nonces.CompareAndSwap(nb, fresh) // a concurrent seal may have won: use its block
	}
}

// SealedSize returns the size of the envelope of an n-byte plaintext.
func SealedSize(n int) int { return n + Overhead }

// Seal appends to dst the envelope of plain under the active key, bound to
// aad. dst and plain must not overlap.
func (s *Sealer) Seal(dst, plain, aad []byte) []byte {
	key := s.ring.Load().act
	start := len(dst)
	dst = slices.Grow(dst, SealedSize(len(plain)))
	dst = dst[:start+KeyIDSize+NonceSize]
	binary.LittleEndian.PutUint32(dst[start:], uint32(key.id))
	s.nonce(dst[start+KeyIDSize:])
	nonce := dst[start+KeyIDSize : start+KeyIDSize+NonceSize]
	return key.aead.Seal(dst, nonce, plain, aad)
}

// SealWith is Seal under the active key of r instead of the current
// keyring's, drawing the nonce from s's sequence. A writer that must use one
// key for a whole file (an SSTable names its key in its footer) takes the
// keyring once and seals every block with SealWith, so that a rotation in
// the middle of the file does not split it between keys.
func (s *Sealer) SealWith(r *Keyring, dst, plain, aad []byte) []byte {
	key := r.act
	start := len(dst)
	dst = slices.Grow(dst, SealedSize(len(plain)))
	dst = dst[:start+KeyIDSize+NonceSize]
	binary.LittleEndian.PutUint32(dst[start:], uint32(key.id))
	s.nonce(dst[start+KeyIDSize:])
	nonce := dst[start+KeyIDSize : start+KeyIDSize+NonceSize]
	return key.aead.Seal(dst, nonce, plain, aad)
}

// EnvelopeKey returns the key id an envelope names, without opening it.
func EnvelopeKey(env []byte) (KeyID, error) {
	if len(env) < Overhead {
		return 0, ErrShort
	}
	return KeyID(binary.LittleEndian.Uint32(env)), nil
}

// KeyError is an envelope that cannot be opened: the key it names and
// why (ErrUnknownKey or ErrDecrypt, matched by errors.Is).
type KeyError struct {
	ID  KeyID
	Err error
}

func (e *KeyError) Error() string {
	if errors.Is(e.Err, ErrUnknownKey) {
		return fmt.Sprintf("sealed with key id %d, which the keyring lacks (add it to --encryption-keyring-file)", e.ID)
	}
	return fmt.Sprintf("cannot decrypt with key id %d: wrong key, or the data was changed", e.ID)
}

func (e *KeyError) Unwrap() error { return e.Err }

// Open appends the plaintext of env to dst, checking it against aad. It
// fails with a *KeyError (ErrUnknownKey, ErrDecrypt) or ErrShort, and
// never returns unauthenticated bytes.
func (s *Sealer) Open(dst, env, aad []byte) ([]byte, error) {
	id, err := EnvelopeKey(env)
	if err != nil {
		return dst, err
	}
	key := s.ring.Load().keys[id]
	if key == nil {
		return dst, &KeyError{ID: id, Err: ErrUnknownKey}
	}
	out, err := key.aead.Open(dst, env[KeyIDSize:KeyIDSize+NonceSize], env[KeyIDSize+NonceSize:], aad)
	if err != nil {
		return dst, &KeyError{ID: id, Err: ErrDecrypt}
	}
	return out, nil
}
