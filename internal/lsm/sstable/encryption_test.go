package sstable

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/lsm/base"
)

// TestGoldenEncryptedFooter pins the encrypted format's footer: the golden
// content sealed with key 2 has a 61-byte footer naming the key, and every
// block is 32 bytes (the envelope) longer than in the plain golden table.
func TestGoldenEncryptedFooter(t *testing.T) {
	data, _ := buildTable(t, goldenEntries(), sealed(goldenOptions()))
	wantFooter := "01" + // checksum type crc32c
		"8f06" + "53" + // metaindex handle: offset 783, length 83 (51+32)
		"a105" + "69" + // index handle: offset 673, length 105 (73+32)
		strings.Repeat("00", 34) + // zero padding up to byte 41
		"02000000" + // key id 2
		"02000000" + // format version 2 (encrypted)
		"%s" + // masked CRC32C of bytes [0, 49)
		"894b415941535354" // magic "\x89KAYASST"
	foot := data[len(data)-footerLenEncrypted:]
	crc := hex.EncodeToString(binary.LittleEndian.AppendUint32(nil, base.MaskedCRC(foot[:49])))
	if got, want := hex.EncodeToString(foot), fmt.Sprintf(wantFooter, crc); got != want {
		t.Fatalf("footer\n got %s\nwant %s", got, want)
	}
	plain, _ := buildTable(t, goldenEntries(), goldenOptions())
	rp, re := openTable(t, plain, nil), openTable(t, data, nil)
	defer rp.Close()
	defer re.Close()
	lp, err := rp.Layout()
	if err != nil {
		t.Fatal(err)
	}
	le, err := re.Layout()
	if err != nil {
		t.Fatal(err)
	}
	if len(lp.Blocks) != len(le.Blocks) {
		t.Fatalf("%d blocks encrypted, %d plain", len(le.Blocks), len(lp.Blocks))
	}
	for i, b := range le.Blocks {
		if b.Kind == "footer" {
			if b.Length != footerLenEncrypted || !b.Encrypted || b.KeyID != 2 {
				t.Fatalf("footer %+v", b)
			}
			continue
		}
		if b.Length != lp.Blocks[i].Length+crypt.Overhead || !b.Encrypted || b.KeyID != 2 {
			t.Fatalf("block %d: %+v, plain %+v", i, b, lp.Blocks[i])
		}
	}
	if !strings.Contains(le.String(), "encrypted key 2") {
		t.Fatalf("layout does not say the key:\n%s", le)
	}
	if id, enc, err := TableEncryption(bytes.NewReader(data), int64(len(data)), "x.sst"); err != nil || !enc || id != 2 {
		t.Fatalf("TableEncryption: %d %v %v", id, enc, err)
	}
	if _, enc, err := TableEncryption(bytes.NewReader(plain), int64(len(plain)), "x.sst"); err != nil || enc {
		t.Fatalf("TableEncryption of a plain table: %v %v", enc, err)
	}
}

// TestEncryptedTableHoldsNoPlaintext: no key or value of the golden content
// appears in its encrypted table, in any block kind.
func TestEncryptedTableHoldsNoPlaintext(t *testing.T) {
	data, _ := buildTable(t, goldenEntries(), sealed(goldenOptions()))
	for _, e := range goldenEntries() {
		for _, s := range [][]byte{e.key.UserKey, e.val, []byte("kaya.properties"), []byte("num_entries")} {
			if len(s) >= 3 && bytes.Contains(data, s) {
				t.Fatalf("the encrypted table holds %q in the clear", s)
			}
		}
	}
}

// blockCRC recomputes the trailer CRC of the block [off, off+n) of data.
func blockCRC(data []byte, off, n uint64) {
	binary.LittleEndian.PutUint32(data[off+n+1:], base.NewCRC(data[off:off+n+1]).Value())
}

// TestEncryptedFlipWithRecomputedCRC changes each byte of each sealed
// block and recomputes the block's CRC (what a CRC cannot catch): reading
// the table fails with an error naming the file, the block's offset and the
// key id, never returns other data.
func TestEncryptedFlipWithRecomputedCRC(t *testing.T) {
	data, _ := buildTable(t, goldenEntries(), sealed(goldenOptions()))
	entries := goldenEntries()
	r := openTable(t, data, nil)
	l, err := r.Layout()
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range l.Blocks {
		if b.Kind == "footer" {
			continue
		}
		for p := b.Offset; p < b.Offset+b.Length; p++ {
			mut := append([]byte(nil), data...)
			mut[p] ^= 0x20
			blockCRC(mut, b.Offset, b.Length)
			err := checkTable(mut, int64(len(mut)), entries, nil, false)
			if err == nil {
				t.Fatalf("%s block at %d: byte %d changed, table still reads", b.Kind, b.Offset, p)
			}
			msg := err.Error()
			for _, want := range []string{"flip.sst", fmt.Sprintf("offset %d", b.Offset), "key id 2"} {
				if !strings.Contains(msg, want) {
					t.Fatalf("%s block, byte %d: error %q lacks %q", b.Kind, p, msg, want)
				}
			}
			if !errors.Is(err, base.ErrCorruption) {
				t.Fatalf("%s block, byte %d: %v is not corruption", b.Kind, p, err)
			}
		}
	}
}

// TestEncryptedWrongOrMissingKey: an encrypted table does not open without
// its key, or under a different key with its id; the errors name the file
// and the key id.
func TestEncryptedWrongOrMissingKey(t *testing.T) {
	data, _ := buildTable(t, goldenEntries(), sealed(goldenOptions()))
	other, err := crypt.New(map[crypt.KeyID][]byte{2: bytes.Repeat([]byte{9}, 32)}, 2)
	if err != nil {
		t.Fatal(err)
	}
	only1, err := crypt.New(map[crypt.KeyID][]byte{1: bytes.Repeat([]byte{1}, 32)}, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		sealer *crypt.Sealer
		want   error
	}{
		{"no key", nil, crypt.ErrUnknownKey},
		{"keyring lacks the key", crypt.NewSealer(only1), crypt.ErrUnknownKey},
		{"wrong key under the id", crypt.NewSealer(other), crypt.ErrDecrypt},
	} {
		_, err := Open(&memFile{data: data}, int64(len(data)), ReaderOptions{FileName: "k.sst", Sealer: c.sealer})
		if !errors.Is(err, c.want) {
			t.Fatalf("%s: %v, want %v", c.name, err, c.want)
		}
		if !strings.Contains(err.Error(), "k.sst") || !strings.Contains(err.Error(), "key id 2") {
			t.Fatalf("%s: error %q does not name the file and key id 2", c.name, err)
		}
	}
	// A plain table needs no key.
	plain, _ := buildTable(t, goldenEntries(), goldenOptions())
	r, err := Open(&memFile{data: plain}, int64(len(plain)), ReaderOptions{FileName: "p.sst"})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
}

// TestEncryptedBlockBoundToPlace: a sealed block opens only at its offset
// and in its role (the additional data binds both).
func TestEncryptedBlockBoundToPlace(t *testing.T) {
	data, _ := buildTable(t, goldenEntries(), sealed(goldenOptions()))
	r := openTable(t, data, nil)
	defer r.Close()
	h := r.index.handles[1]
	stored := data[h.offset : h.offset+h.length]
	if _, err := r.unseal(stored, h, kindData, nil); err != nil {
		t.Fatalf("in place: %v", err)
	}
	if _, err := r.unseal(stored, blockHandle{offset: h.offset + 1, length: h.length}, kindData, nil); !errors.Is(err, crypt.ErrDecrypt) {
		t.Fatalf("moved: %v", err)
	}
	if _, err := r.unseal(stored, h, kindIndex, nil); !errors.Is(err, crypt.ErrDecrypt) {
		t.Fatalf("other role: %v", err)
	}
}

// TestEncryptedTableKeepsKeyAcrossRotation: a table takes the key active
// when its Writer was created; a rotation while it is written does not
// split it between keys, and the next table uses the new key.
func TestEncryptedTableKeepsKeyAcrossRotation(t *testing.T) {
	r1, err := crypt.New(map[crypt.KeyID][]byte{1: bytes.Repeat([]byte{1}, 32)}, 1)
	if err != nil {
		t.Fatal(err)
	}
	s := crypt.NewSealer(r1)
	var buf bytes.Buffer
	w := NewWriter(&buf, WriterOptions{BlockSize: 48, Sealer: s})
	entries := goldenEntries()
	for i, e := range entries {
		if i == 3 {
			s.SetKeyring(testKeyring)
		}
		if err := w.Add(e.key, e.val); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r := openTable(t, buf.Bytes(), nil)
	if id, enc := r.Encryption(); !enc || id != 1 {
		t.Fatalf("table under key %d (encrypted %v), want 1", id, enc)
	}
	if err := r.ValidateChecksums(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	next, _ := buildTable(t, entries, WriterOptions{Sealer: s})
	if id, _, _ := TableEncryption(bytes.NewReader(next), int64(len(next)), "n.sst"); id != 2 {
		t.Fatalf("next table under key %d, want 2", id)
	}
}
