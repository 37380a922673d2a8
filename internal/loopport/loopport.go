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
// chosen at random and outside the ephemeral range. The port is free when
// Pick returns, and reserved for the calling process until it exits: a
// lock file per port (see reserve) keeps every other Pick, in this process
// or in another (go test runs packages in parallel), from returning it
// again, so a node that binds it a moment later, or after a restart, does
// not find it taken by another test's node.
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
		if !reserve(ln.Addr().(*net.TCPAddr).Port) {
			last = fmt.Errorf("port of %s reserved by another Pick", addr)
			continue
		}
		return addr, nil
	}
	return "", fmt.Errorf("loopport: no free loopback port in [%d, %d) after 500 tries: %w", Low, high, last)
}
