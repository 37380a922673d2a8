package jepsen

import (
	"fmt"
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"

	"github.com/kayadb/kayadb/client"
	"github.com/kayadb/kayadb/internal/wire"
)

// The checkers themselves: a stale read is caught, an unknown write may or
// may not have happened, lost and phantom set elements are caught, and
// nodes with different data are caught.
func TestCheckers(t *testing.T) {
	ms := func(x int64) int64 { return x * 1_000_000 }
	okHistory := []Op{
		{Client: 0, Kind: KindWrite, Key: "reg/0", Value: 1, Call: ms(0), Return: ms(1), Status: StatusOK},
		{Client: 1, Kind: KindRead, Key: "reg/0", Value: 1, Call: ms(2), Return: ms(3), Status: StatusOK},
		{Client: 0, Kind: KindWrite, Key: "reg/0", Value: 2, Call: ms(4), Return: ms(5), Status: StatusUnknown},
		{Client: 1, Kind: KindRead, Key: "reg/0", Value: 1, Call: ms(6), Return: ms(7), Status: StatusOK},
		{Client: 1, Kind: KindRead, Key: "reg/0", Value: 2, Call: ms(8), Return: ms(9), Status: StatusOK},
	}
	if res := porcupine.CheckOperations(registerModel, registerOps(okHistory)); !res {
		t.Fatal("a linearizable history (with an unknown write seen late) was rejected")
	}
	stale := append(append([]Op{}, okHistory[:2]...),
		Op{Client: 0, Kind: KindWrite, Key: "reg/0", Value: 3, Call: ms(10), Return: ms(11), Status: StatusOK},
		Op{Client: 1, Kind: KindRead, Key: "reg/0", Value: 1, Call: ms(12), Return: ms(13), Status: StatusOK})
	if porcupine.CheckOperations(registerModel, registerOps(stale)) {
		t.Fatal("a stale read after an acknowledged write was accepted")
	}
	scanStale := []Op{
		{Client: 0, Kind: KindPut, Slot: 2, Value: 7, Call: ms(0), Return: ms(1), Status: StatusOK},
		{Client: 1, Kind: KindScan, Scan: []int64{0, 0, 0, 0}, Call: ms(2), Return: ms(3), Status: StatusOK},
	}
	if porcupine.CheckOperations(scanModel, scanOps(scanStale)) {
		t.Fatal("a scan missing an acknowledged put was accepted")
	}
	adds := []Op{
		{Kind: KindAdd, Key: "set/1", Value: 1, Status: StatusOK},
		{Kind: KindAdd, Key: "set/2", Value: 2, Status: StatusUnknown},
	}
	if v := checkSet(adds, map[string]int64{"set/1": 1}); v.Result != "ok" {
		t.Fatalf("set: %+v", v)
	}
	if v := checkSet(adds, map[string]int64{"set/2": 2}); v.Result != "violation" {
		t.Fatal("a lost acknowledged element was accepted")
	}
	if v := checkSet(adds, map[string]int64{"set/1": 1, "set/9": 9}); v.Result != "violation" {
		t.Fatal("a phantom element was accepted")
	}
	same := []NodeState{{ID: 1, Applied: 10, Keys: 3, Hash: "a"}, {ID: 2, Applied: 11, Keys: 3, Hash: "a"}}
	if v := checkConvergence(same); v.Result != "ok" {
		t.Fatalf("equal data with applied indexes one apart: %+v", v)
	}
	diff := []NodeState{{ID: 1, Keys: 3, Hash: "a"}, {ID: 2, Keys: 3, Hash: "b"}}
	if v := checkConvergence(diff); v.Result != "violation" {
		t.Fatal("different data was accepted")
	}
}

// A write refused by a node in disk-full mode was refused before it was
// proposed: it is failed (certainly not applied), so that a later read of
// its value is a violation. Anything less certain stays unknown.
func TestDiskFullRefusalIsAFailedWrite(t *testing.T) {
	refusal := &client.ServerError{Status: uint16(wire.StatusError),
		Message: "disk full on node 2: 0 B free, below the 4.0 MiB low-water mark (8.0 MiB free on /data); writes are refused until space is freed — free space or add capacity"}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"as Put returns it (bare, ErrDiskFull)", refusal, StatusFail},
		{"wrapped in ErrAmbiguous", fmt.Errorf("%w: %w", client.ErrAmbiguous, refusal), StatusUnknown},
		{"a timeout", fmt.Errorf("%w: PUT sent to x: %w", client.ErrAmbiguous, client.ErrTimeout), StatusUnknown},
		{"a refusal inside another error", fmt.Errorf("after retries: %w", refusal), StatusUnknown},
		{"another ERROR", fmt.Errorf("%w: %w", client.ErrAmbiguous, &client.ServerError{Status: uint16(wire.StatusError), Message: "kv: leadership changed while the write was pending"}), StatusUnknown},
		{"an engine error naming a full disk", fmt.Errorf("%w: %w", client.ErrAmbiguous, &client.ServerError{Status: uint16(wire.StatusError), Message: "disk full on node 2: engine: writing WAL: no space left on device"}), StatusUnknown},
		{"client-side refusal", fmt.Errorf("%w: value too large", client.ErrInvalidArgument), StatusFail},
	} {
		if got := writeStatus(tc.err); got != tc.want {
			t.Errorf("%s: writeStatus = %s, want %s", tc.name, got, tc.want)
		}
	}

	ms := func(x int64) int64 { return x * 1_000_000 }
	refusedThenRead := []Op{
		{Client: 0, Kind: KindWrite, Key: "reg/0", Value: 1, Call: ms(0), Return: ms(1), Status: StatusOK},
		{Client: 0, Kind: KindWrite, Key: "reg/0", Value: 2, Call: ms(2), Return: ms(3), Status: StatusFail, Refused: true},
		{Client: 1, Kind: KindRead, Key: "reg/0", Value: 2, Call: ms(4), Return: ms(5), Status: StatusOK},
	}
	if porcupine.CheckOperations(registerModel, registerOps(refusedThenRead)) {
		t.Fatal("a read of a refused write's value was accepted")
	}
	if !porcupine.CheckOperations(registerModel, registerOps(refusedThenRead[:2])) {
		t.Fatal("a history with a refused write that nobody saw was rejected")
	}
	adds := []Op{
		{Kind: KindAdd, Key: "set/1", Value: 1, Status: StatusOK},
		{Kind: KindAdd, Key: "set/2", Value: 2, Status: StatusFail, Refused: true},
	}
	if v := checkSet(adds, map[string]int64{"set/1": 1}); v.Result != "ok" {
		t.Fatalf("set without the refused element: %+v", v)
	}
	if v := checkSet(adds, map[string]int64{"set/1": 1, "set/2": 2}); v.Result != "violation" || !strings.Contains(v.Detail, "whose add failed") {
		t.Fatalf("a refused element in the final set: %+v", v)
	}
}
