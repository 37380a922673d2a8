package errs

import (
	"errors"
	"testing"
)

func TestCorruptionError(t *testing.T) {
	err := CorruptionErrorf("000005.sst", 4096, "checksum mismatch: %x != %x", 1, 2)
	if !errors.Is(err, ErrCorruption) {
		t.Fatal("CorruptionError must match ErrCorruption")
	}
	want := "kayadb: corruption in 000005.sst at offset 4096: checksum mismatch: 1 != 2"
	if err.Error() != want {
		t.Fatalf("got %q", err.Error())
	}
	if got := CorruptionErrorf("raft/wal", -1, "gap").Error(); got != "kayadb: corruption in raft/wal: gap" {
		t.Fatalf("got %q", got)
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
