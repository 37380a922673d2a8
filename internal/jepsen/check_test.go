package jepsen

import (
	"testing"

	"github.com/anishathalye/porcupine"
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
