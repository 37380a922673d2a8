package crypt

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func testRing(t testing.TB, ids ...KeyID) *Keyring {
	t.Helper()
	keys := map[KeyID][]byte{}
	for _, id := range ids {
		raw := make([]byte, KeySize)
		_, _ = rand.Read(raw)
		keys[id] = raw
	}
	r, err := New(keys, ids[len(ids)-1])
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSealOpenRoundTrip(t *testing.T) {
	s := NewSealer(testRing(t, 1))
	for _, n := range []int{0, 1, 15, 16, 17, 4096, 1 << 20} {
		plain := make([]byte, n)
		_, _ = rand.Read(plain)
		env := s.Seal([]byte("prefix"), plain, []byte("aad"))
		if !bytes.HasPrefix(env, []byte("prefix")) || len(env) != len("prefix")+SealedSize(n) {
			t.Fatalf("n=%d: envelope of %d bytes, want prefix + %d", n, len(env), SealedSize(n))
		}
		env = env[len("prefix"):]
		if n >= 16 && bytes.Contains(env, plain[:16]) {
			t.Fatalf("n=%d: the envelope holds the plaintext", n)
		}
		if id, _ := EnvelopeKey(env); id != 1 {
			t.Fatalf("envelope key %d, want 1", id)
		}
		got, err := s.Open(nil, env, []byte("aad"))
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("n=%d: open: %v, equal %v", n, err, bytes.Equal(got, plain))
		}
	}
}

func TestOpenRefusesWhatItCannotAuthenticate(t *testing.T) {
	s := NewSealer(testRing(t, 3))
	env := s.Seal(nil, []byte("the value"), []byte("file 7 offset 0"))
	t.Run("other aad", func(t *testing.T) {
		_, err := s.Open(nil, env, []byte("file 7 offset 32"))
		if !errors.Is(err, ErrDecrypt) {
			t.Fatalf("got %v, want ErrDecrypt", err)
		}
	})
	t.Run("every flipped bit", func(t *testing.T) {
		for i := KeyIDSize; i < len(env); i++ { // the key id is checked below
			c := bytes.Clone(env)
			c[i] ^= 1 << (i % 8)
			if out, err := s.Open(nil, c, []byte("file 7 offset 0")); !errors.Is(err, ErrDecrypt) || out != nil {
				t.Fatalf("byte %d flipped: %v %q", i, err, out)
			}
		}
	})
	t.Run("unknown key id", func(t *testing.T) {
		c := bytes.Clone(env)
		c[0] = 9
		_, err := s.Open(nil, c, []byte("file 7 offset 0"))
		var ke *KeyError
		if !errors.Is(err, ErrUnknownKey) || !errors.As(err, &ke) || ke.ID != 9 || !strings.Contains(err.Error(), "key id 9") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("wrong key under the same id", func(t *testing.T) {
		other := NewSealer(testRing(t, 3))
		_, err := other.Open(nil, env, []byte("file 7 offset 0"))
		if !errors.Is(err, ErrDecrypt) || !strings.Contains(err.Error(), "wrong key") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("short", func(t *testing.T) {
		for n := 0; n < Overhead; n++ {
			if _, err := s.Open(nil, env[:n], nil); !errors.Is(err, ErrShort) {
				t.Fatalf("%d bytes: %v", n, err)
			}
		}
	})
}

func TestNoncesNeverRepeat(t *testing.T) {
	s := NewSealer(testRing(t, 1))
	seen := map[string]bool{}
	nonceOf := func() string {
		env := s.Seal(nil, nil, nil)
		return string(env[KeyIDSize : KeyIDSize+NonceSize])
	}
	for range 10000 {
		n := nonceOf()
		if seen[n] {
			t.Fatal("a nonce repeated")
		}
		seen[n] = true
	}
	// At the end of a prefix's counter space the next seal draws a new
	// prefix instead of wrapping onto used nonces.
	s.nonces.Load().n.Store(1<<32 - 1)
	last := nonceOf()
	next := nonceOf()
	if last[:8] == next[:8] || seen[next] || seen[last] {
		t.Fatalf("after 2^32 seals the prefix did not change (%x then %x)", last, next)
	}
	// Two sealers over one key (two processes, or a restart) draw
	// different prefixes.
	s2 := NewSealer(s.Keyring())
	env := s2.Seal(nil, nil, nil)
	if string(env[KeyIDSize:KeyIDSize+8]) == next[:8] {
		t.Fatal("two sealers share a nonce prefix")
	}
}

func TestRotationKeepsOldKeys(t *testing.T) {
	r := testRing(t, 1)
	s := NewSealer(r)
	old := s.Seal(nil, []byte("old"), nil)
	r2, id, err := r.WithNewKey(nil)
	if err != nil || id != 2 || r2.Active() != 2 || !r2.Has(1) {
		t.Fatalf("rotate: id %d active %d err %v", id, r2.Active(), err)
	}
	s.SetKeyring(r2)
	nw := s.Seal(nil, []byte("new"), nil)
	if k, _ := EnvelopeKey(nw); k != 2 {
		t.Fatalf("a seal after rotation used key %d", k)
	}
	for _, env := range [][]byte{old, nw} {
		if _, err := s.Open(nil, env, nil); err != nil {
			t.Fatal(err)
		}
	}
	if r.Fingerprint(1) != r2.Fingerprint(1) || r2.Fingerprint(1) == r2.Fingerprint(2) || r.Fingerprint(2) != "" {
		t.Fatal("fingerprints")
	}
}

func TestKeyringFormatRoundTrip(t *testing.T) {
	r, _, err := testRing(t, 0, 5).WithNewKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	text := r.Format()
	back, err := ParseKeyring("k", text)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Equal(r) || back.Active() != 6 {
		t.Fatalf("round trip differs:\n%s", text)
	}
}

func TestParseKeyringErrors(t *testing.T) {
	hexKey := strings.Repeat("ab", KeySize)
	for _, tc := range []struct{ in, want string }{
		{"", "holds no key"},
		{"# only a comment\n", "holds no key"},
		{"key 1 " + hexKey + "\nkey 2 " + hexKey + "\n", "no active line"},
		{"key 1 " + hexKey + "\nactive 2\n", "line 2: the active key 2 is not listed"},
		{"key 1 " + hexKey + "\nkey 1 " + hexKey + "\n", "line 2: key 1 is listed twice"},
		{"key x " + hexKey + "\n", "line 1: key id \"x\""},
		{"key 4294967296 " + hexKey + "\n", "line 1: key id"},
		{"key 1 abcd\n", "line 1: key 1: want 64 hex digits"},
		{"key 1 " + strings.Repeat("zz", KeySize) + "\n", "want 64 hex digits"},
		{"key 1\n", "want: key <id>"},
		{"key 1 " + hexKey + "\nactive 1\nactive 1\n", "line 3: a second active line (the first is on line 2)"},
		{"secret 1 " + hexKey + "\n", "unknown directive \"secret\""},
	} {
		_, err := ParseKeyring("ring.txt", []byte(tc.in))
		if err == nil || !errors.Is(err, ErrKeyring) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "ring.txt") {
			t.Errorf("%q: got %v, want %q", tc.in, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), hexKey) {
			t.Errorf("%q: the error shows the key: %v", tc.in, err)
		}
	}
	// One key and no active line: that key is active. The original's
	// comment and blank-line rules hold.
	r, err := ParseKeyring("k", []byte("\n  # c\nkey 7 "+hexKey+"  \n\n"))
	if err != nil || r.Active() != 7 {
		t.Fatalf("got %v, %v", r, err)
	}
}

func TestKeyFile(t *testing.T) {
	if _, err := ParseKeyFile("k", make([]byte, 31)); err == nil || !strings.Contains(err.Error(), "holds 31 bytes") {
		t.Fatal(err)
	}
	_, err := ParseKeyFile("k", []byte(strings.Repeat("ab", KeySize)+"\n"))
	if err == nil || !strings.Contains(err.Error(), "looks like 64 hex digits") {
		t.Fatal(err)
	}
	r, err := ParseKeyFile("k", make([]byte, KeySize))
	if err != nil || r.Active() != 0 || len(r.IDs()) != 1 {
		t.Fatal(r, err)
	}
}

func TestLoadFilePermissions(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	if err := os.WriteFile(p, make([]byte, KeySize), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFile(p, false); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a key readable by others: %v", err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFile(p, false); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFile(dir, true); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatal(err)
	}
	if _, err := LoadFile(filepath.Join(dir, "missing"), true); err == nil || !strings.Contains(err.Error(), "--encryption-keyring-file") {
		t.Fatal(err)
	}
	rp := filepath.Join(dir, "ring")
	g, _ := Generate(nil)
	if err := os.WriteFile(rp, g.Format(), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := LoadFile(rp, true)
	if err != nil || !r.Equal(g) || r.Active() != 1 {
		t.Fatal(r, err)
	}
}

func FuzzParseKeyring(f *testing.F) {
	g, _ := Generate(nil)
	r2, _, _ := g.WithNewKey(nil)
	f.Add(r2.Format())
	f.Add([]byte("key 0 " + strings.Repeat("00", KeySize) + "\nactive 0\n"))
	f.Add([]byte("active 1\n# x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseKeyring("f", data)
		if err != nil {
			if !errors.Is(err, ErrKeyring) {
				t.Fatalf("an error outside ErrKeyring: %v", err)
			}
			return
		}
		if !r.Has(r.Active()) {
			t.Fatal("active key missing")
		}
		back, err := ParseKeyring("f", r.Format())
		if err != nil || !back.Equal(r) {
			t.Fatalf("format of a parsed keyring does not parse back: %v", err)
		}
	})
}

func FuzzOpen(f *testing.F) {
	raw := bytes.Repeat([]byte{7}, KeySize)
	r, _ := New(map[KeyID][]byte{1: raw}, 1)
	s := NewSealer(r)
	env := s.Seal(nil, []byte("hello"), []byte("a"))
	f.Add(env, []byte("a"))
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, env, aad []byte) {
		out, err := s.Open(nil, env, aad)
		if err == nil && len(out) != len(env)-Overhead {
			t.Fatalf("opened %d bytes from a %d-byte envelope", len(out), len(env))
		}
	})
}

func BenchmarkSeal4K(b *testing.B) {
	s := NewSealer(testRing(b, 1))
	plain := make([]byte, 4096)
	dst := make([]byte, 0, SealedSize(4096))
	b.SetBytes(4096)
	for b.Loop() {
		dst = s.Seal(dst[:0], plain, []byte("aad"))
	}
}

// TestSealWith: SealWith seals under the given keyring's active key even
// after the Sealer was rotated, and the result opens with the Sealer.
func TestSealWith(t *testing.T) {
	r1, err := New(map[KeyID][]byte{1: bytes.Repeat([]byte{1}, KeySize)}, 1)
	if err != nil {
		t.Fatal(err)
	}
	r2, _, err := r1.WithNewKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := NewSealer(r2)
	env := s.SealWith(r1, nil, []byte("plain"), []byte("aad"))
	if id, _ := EnvelopeKey(env); id != 1 {
		t.Fatalf("sealed with key %d, want 1", id)
	}
	got, err := s.Open(nil, env, []byte("aad"))
	if err != nil || string(got) != "plain" {
		t.Fatalf("open: %q, %v", got, err)
	}
}

// TestNoncesUniqueUnderConcurrency: sealers racing on one Sealer, across a
// prefix's exhaustion, never share a nonce.
func TestNoncesUniqueUnderConcurrency(t *testing.T) {
	s := NewSealer(testRing(t, 1))
	s.Seal(nil, nil, nil)
	s.nonces.Load().n.Store(1<<32 - 1000) // the prefix runs out mid-test
	const workers, each = 4, 2000
	out := make([][]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				env := s.Seal(nil, nil, nil)
				out[w] = append(out[w], string(env[KeyIDSize:KeyIDSize+NonceSize]))
			}
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	prefixes := map[string]bool{}
	for _, l := range out {
		for _, n := range l {
			if seen[n] {
				t.Fatal("two seals shared a nonce")
			}
			seen[n] = true
			prefixes[n[:8]] = true
		}
	}
	if len(prefixes) < 2 {
		t.Fatal("the prefix was not replaced when its counter ran out")
	}
}
