// Package loopport picks loopback ports for processes that tests and the
// verification harness stop and start again on the same address.
//
// A port from the kernel (":0") lies in the ephemeral range, which Linux
// also hands out as the local port of every outgoing connection: while a
// node is down, a connection made by any process on the machine can take
// its port, and the restarted node then fails with "address already in
// use". Pick avoids that range. It also stays below 22000, because the
// end-to-end tests use fixed port blocks between 22000 and 31999.
package loopport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

const (
	// Low and High bound the ports Pick returns (Low inclusive, High
	// exclusive).
	Low  = 10000
	High = 22000
)

// ephemeralStart reads the first port of the kernel's ephemeral range
// (32768 if it cannot be read).
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	v, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return v
}

// Pick returns a free address 127.0.0.1:port with port in [Low, High),
// chosen at random so that processes picking at the same time rarely
// collide, and outside the ephemeral range. The port is free when Pick
// returns; nothing holds it afterwards.
func Pick() (string, error) {
	high := min(High, ephemeralStart())
	if high <= Low {
		return "", fmt.Errorf("loopport: the kernel's ephemeral port range starts at %d, leaving no ports in [%d, %d); raise net.ipv4.ip_local_port_range", high, Low, High)
	}
	var last error
	for range 500 {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", Low+rand.IntN(high-Low)))
		if err != nil {
			last = err
			continue
		}
		addr := ln.Addr().String()
		if err := ln.Close(); err != nil {
			return "", err
		}
		return addr, nil
	}
	return "", fmt.Errorf("loopport: no free loopback port in [%d, %d) after 500 tries: %w", Low, high, last)
}
