package wire

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func TestBackupInfoRoundTripAndBytes(t *testing.T) {
	in := &BackupInfo{ID: "0123456789abcdef", NodeID: 2, AppliedIndex: 300, AppliedTerm: 4, CreatedUnixMs: 5, Ready: true,
		Files: []BackupFile{{Name: "000007.sst", Size: 10, SHA256: [32]byte{1, 2}}, {Name: "CURRENT", Size: 0}}}
	p := AppendBackupInfo(nil, in)
	out, err := DecodeBackupInfo(p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip: %+v, want %+v", out, in)
	}
	// Exact layout of a small one.
	small := AppendBackupInfo(nil, &BackupInfo{ID: "ab", NodeID: 1, AppliedIndex: 2, AppliedTerm: 3, CreatedUnixMs: 4, Ready: true,
		Files: []BackupFile{{Name: "C", Size: 5}}})
	want := unhex(t, "0200 6162 0100000000000000 0200000000000000 0300000000000000 0400000000000000 01 01000000"+
		" 0100 43 0500000000000000"+" 0000000000000000000000000000000000000000000000000000000000000000")
	if !bytes.Equal(small, want) {
		t.Fatalf("bytes:\n got % x\nwant % x", small, want)
	}
	// Not ready: no files.
	nr := AppendBackupInfo(nil, &BackupInfo{ID: "0123456789abcdef", NodeID: 1})
	if b, err := DecodeBackupInfo(nr); err != nil || b.Ready || len(b.Files) != 0 {
		t.Fatalf("not ready: %+v %v", b, err)
	}
	// Every truncation fails; a count larger than the payload can hold is
	// refused before allocating; ready must be 0 or 1; files only when ready.
	for n := 0; n < len(p); n++ {
		if _, err := DecodeBackupInfo(p[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated at %d: %v", n, err)
		}
	}
	huge := append(AppendBackupInfo(nil, &BackupInfo{ID: "x", Ready: true})[:2+1+8*4+1], 0xff, 0xff, 0xff, 0xff)
	if _, err := DecodeBackupInfo(huge); !errors.Is(err, ErrMalformed) {
		t.Fatalf("huge count: %v", err)
	}
	bad := bytes.Clone(small)
	bad[2+2+32] = 2
	if _, err := DecodeBackupInfo(bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("ready=2: %v", err)
	}
	bad[2+2+32] = 0
	if _, err := DecodeBackupInfo(bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("files while not ready: %v", err)
	}
}

func TestBackupRequestsRoundTrip(t *testing.T) {
	r := BackupRead{ID: "0123456789abcdef", File: "000001.sst", Offset: 1 << 40, Length: MaxBackupChunk}
	p := AppendBackupRead(nil, r)
	got, err := DecodeBackupRead(p)
	if err != nil || got != r {
		t.Fatalf("read: %+v %v", got, err)
	}
	if want := unhex(t, "0100 61 0100 62 0300000000000000 04000000"); !bytes.Equal(AppendBackupRead(nil, BackupRead{ID: "a", File: "b", Offset: 3, Length: 4}), want) {
		t.Fatal("BACKUP_READ bytes")
	}
	for n := 0; n < len(p); n++ {
		if _, err := DecodeBackupRead(p[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("read truncated at %d: %v", n, err)
		}
	}
	if id, err := DecodeBackupID(AppendBackupID(nil, "0123456789abcdef")); err != nil || id != "0123456789abcdef" {
		t.Fatalf("id: %q %v", id, err)
	}
	if _, err := DecodeBackupID([]byte{5, 0, 'a'}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short id: %v", err)
	}
	if d, err := DecodeBackupData(AppendBackupData(nil, []byte("xyz"))); err != nil || string(d) != "xyz" {
		t.Fatalf("data: %q %v", d, err)
	}
	if _, err := DecodeBackupData([]byte{9, 0, 0, 0, 1}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short data: %v", err)
	}
}

func TestBackupNamesAndIDs(t *testing.T) {
	for _, id := range []string{"0123456789abcdef", "ffffffffffffffff"} {
		if !ValidBackupID(id) {
			t.Errorf("%q refused", id)
		}
	}
	for _, id := range []string{"", "0123456789abcde", "0123456789abcdef0", "0123456789ABCDEF", "../../../../etc/"} {
		if ValidBackupID(id) {
			t.Errorf("%q accepted", id)
		}
	}
	for _, n := range []string{"000001.sst", "CURRENT", "MANIFEST-000009", "a..b"} {
		if !ValidBackupFileName(n) {
			t.Errorf("%q refused", n)
		}
	}
	for _, n := range []string{"", ".", "..", "../x", "a/b", "/etc/passwd", `a\b`, "a\x00b", string(make([]byte, 256))} {
		if ValidBackupFileName(n) {
			t.Errorf("%q accepted", n)
		}
	}
}

// TestBackupWorkedBytes checks the worked examples of docs/formats.md
// ("KayaDB additions to the client protocol").
func TestBackupWorkedBytes(t *testing.T) {
	end := AppendRequest(nil, OpBackupEnd, AppendBackupID(nil, "0123456789abcdef"))
	if want := unhex(t, "13 00 00 00 42 10 00 30 31 32 33 34 35 36 37 38 39 61 62 63 64 65 66"); !bytes.Equal(end, want) {
		t.Errorf("BACKUP_END frame % x", end)
	}
	read := AppendRequest(nil, OpBackupRead, AppendBackupRead(nil, BackupRead{ID: "a", File: "b", Offset: 3, Length: 4}))
	if want := unhex(t, "13 00 00 00 41 01 00 61 01 00 62 03 00 00 00 00 00 00 00 04 00 00 00"); !bytes.Equal(read, want) {
		t.Errorf("BACKUP_READ frame % x", read)
	}
}
