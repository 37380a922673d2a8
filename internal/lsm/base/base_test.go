package base

import (
	"errors"
	"testing"
)

func TestCompareInternal(t *testing.T) {
	keys := []InternalKey{
		MakeInternalKey([]byte("a"), 9, KindSet),
		MakeInternalKey([]byte("a"), 5, KindSet),
		MakeInternalKey([]byte("a"), 5, KindDelete),
		MakeInternalKey([]byte("a"), 1, KindSet),
		MakeInternalKey([]byte("ab"), 100, KindSet),
		MakeInternalKey([]byte("b"), 1, KindDelete),
	}
	for i := range keys {
		for j := range keys {
			got := CompareInternal(keys[i], keys[j])
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got != want {
				t.Errorf("CompareInternal(%s, %s) = %d, want %d", keys[i], keys[j], got, want)
			}
			ei, ej := keys[i].AppendEncoded(nil), keys[j].AppendEncoded(nil)
			if g := CompareEncoded(ei, ej); g != want {
				t.Errorf("CompareEncoded(%s, %s) = %d, want %d", keys[i], keys[j], g, want)
			}
		}
	}
	if CompareInternal(MakeSearchKey([]byte("a")), keys[0]) >= 0 {
		t.Error("search key must sort before every version of its user key")
	}
}

func TestEncodeDecodeInternalKey(t *testing.T) {
	k := MakeInternalKey([]byte("hello"), 12345, KindDelete)
	enc := k.AppendEncoded(nil)
	if len(enc) != k.Size() {
		t.Fatalf("size %d, want %d", len(enc), k.Size())
	}
	d, ok := DecodeInternalKey(enc)
	if !ok || string(d.UserKey) != "hello" || d.Seq() != 12345 || d.Kind() != KindDelete {
		t.Fatalf("decoded %v ok=%v", d, ok)
	}
	if _, ok := DecodeInternalKey([]byte("short")); ok {
		t.Fatal("a 5-byte key must not decode")
	}
}

func TestCRCKnownValues(t *testing.T) {
	// CRC-32C check value from the RFC 3720 appendix.
	if got := uint32(NewCRC([]byte("123456789"))); got != 0xE3069283 {
		t.Fatalf("crc32c(123456789) = %#x", got)
	}
	c := NewCRC([]byte("1234")).Update([]byte("56789"))
	if uint32(c) != 0xE3069283 {
		t.Fatalf("incremental crc = %#x", uint32(c))
	}
	if MaskedCRC([]byte("123456789")) == 0xE3069283 {
		t.Fatal("masked crc must differ from the raw crc")
	}
}

func TestFilenames(t *testing.T) {
	cases := []struct {
		ft   FileType
		n    FileNum
		name string
	}{
		{FileTypeLog, 7, "000007.log"},
		{FileTypeTable, 1234567, "1234567.sst"},
		{FileTypeManifest, 3, "MANIFEST-000003"},
		{FileTypeCurrent, 0, "CURRENT"},
		{FileTypeLock, 0, "LOCK"},
	}
	for _, c := range cases {
		if got := MakeFilename(c.ft, c.n); got != c.name {
			t.Errorf("MakeFilename(%v,%v) = %q, want %q", c.ft, c.n, got, c.name)
		}
		ft, n, ok := ParseFilename(c.name)
		if !ok || ft != c.ft || n != c.n {
			t.Errorf("ParseFilename(%q) = %v %v %v", c.name, ft, n, ok)
		}
	}
	for _, bad := range []string{"foo", "x.sst", ".log", "MANIFEST-x", "12.txt"} {
		if _, _, ok := ParseFilename(bad); ok {
			t.Errorf("ParseFilename(%q) should fail", bad)
		}
	}
	if ft, _, ok := ParseFilename("000009.sst.tmp"); !ok || ft != FileTypeTemp {
		t.Error("temp files must be recognised")
	}
}

func TestCorruptionError(t *testing.T) {
	err := CorruptionErrorf("000005.sst", 4096, "checksum mismatch: %x != %x", 1, 2)
	if !errors.Is(err, ErrCorruption) {
		t.Fatal("CorruptionError must match ErrCorruption")
	}
	want := "kayadb: corruption in 000005.sst at offset 4096: checksum mismatch: 1 != 2"
	if err.Error() != want {
		t.Fatalf("got %q", err.Error())
	}
	e2 := WithFile(CorruptionErrorf("", 10, "bad"), "x.log", 100)
	var ce *CorruptionError
	if !errors.As(e2, &ce) || ce.File != "x.log" || ce.Offset != 110 {
		t.Fatalf("WithFile: %v", e2)
	}
	if !errors.Is(InvalidArgumentf("key too large"), ErrInvalidArgument) {
		t.Fatal("InvalidArgumentf must match ErrInvalidArgument")
	}
}
