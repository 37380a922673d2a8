package loopport

import (
	"net"
	"strconv"
	"testing"
)

func TestPickIsFreeAndInRange(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		addr, err := Pick()
		if err != nil {
			t.Fatal(err)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.Atoi(port)
		if host != "127.0.0.1" || p < Low || p >= High || p >= ephemeralStart() {
			t.Fatalf("Pick returned %s, want 127.0.0.1 with a port in [%d, %d) below the ephemeral range", addr, Low, High)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("the picked address %s is not free: %v", addr, err)
		}
		ln.Close()
		seen[addr] = true
	}
	if len(seen) < 40 {
		t.Fatalf("50 picks gave only %d distinct ports; picks should be spread out", len(seen))
	}
}

// TestPickReservesAcrossCalls: a port Pick returned is not returned again
// while this process lives, even though nothing listens on it.
func TestPickReservesAcrossCalls(t *testing.T) {
	addr, err := Pick()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	if reserve(p) {
		t.Fatalf("port %d was reserved again after Pick returned it", p)
	}
}
