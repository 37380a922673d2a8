// Package security holds the checks and the configuration that protect a
// KayaDB node: the bind guard that keeps listeners off public addresses,
// credential (token) loading, native TLS with certificate reloading, and
// data directory permission checks.
package security

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// AddrClass is what kind of address a listener would bind to.
type AddrClass int

const (
	// Loopback: 127.0.0.0/8, ::1. Reachable only from this machine.
	Loopback AddrClass = iota
	// Private: RFC 1918 (10/8, 172.16/12, 192.168/16), RFC 4193 (fc00::/7)
	// and link-local (169.254/16, fe80::/10).
	Private
	// Wildcard: 0.0.0.0 or :: (or an empty host): every interface,
	// including public ones.
	Wildcard
	// Public: anything else.
	Public
)

func (c AddrClass) String() string {
	switch c {
	case Loopback:
		return "loopback"
	case Private:
		return "private"
	case Wildcard:
		return "wildcard"
	}
	return "public"
}

// Exposed reports whether the class can be reached from outside a private
// network.
func (c AddrClass) Exposed() bool { return c == Wildcard || c == Public }

// ClassifyIP classifies one IP address.
func ClassifyIP(ip netip.Addr) AddrClass {
	ip = ip.Unmap()
	switch {
	case ip.IsUnspecified():
		return Wildcard
	case ip.IsLoopback():
		return Loopback
	case ip.IsPrivate(), ip.IsLinkLocalUnicast():
		return Private
	}
	return Public
}

// Resolver looks up a host name's addresses (net.DefaultResolver in
// production; tests substitute their own).
type Resolver func(ctx context.Context, host string) ([]netip.Addr, error)

func defaultResolver(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// ClassifyAddr classifies a listen address HOST:PORT. An empty host is a
// wildcard. A host name is resolved and classified by its most exposed
// address. The error names the problem and the expected form.
func ClassifyAddr(addr string, resolve Resolver) (AddrClass, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("%q is not HOST:PORT (for example 127.0.0.1:7379): %v", addr, err)
	}
	if port == "" {
		return 0, fmt.Errorf("%q has no port (for example 127.0.0.1:7379)", addr)
	}
	if host == "" {
		return Wildcard, nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return ClassifyIP(ip.WithZone("")), nil
	}
	if resolve == nil {
		resolve = defaultResolver
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ips, err := resolve(ctx, host)
	if err != nil {
		return 0, fmt.Errorf("cannot resolve the host of %q to check that it is not public: %v (use an IP address)", addr, err)
	}
	if len(ips) == 0 {
		return 0, fmt.Errorf("host of %q resolves to no address", addr)
	}
	worst := Loopback
	for _, ip := range ips {
		worst = max(worst, ClassifyIP(ip))
	}
	return worst, nil
}

// BindGuard checks every listen address of a node before it binds.
type BindGuard struct {
	// AllowPublic is --allow-public-bind: exposed addresses are accepted
	// with a warning instead of refused.
	AllowPublic bool
	// Resolve looks up host names; nil uses the system resolver.
	Resolve Resolver
}

// Check validates the listen address of flag (for example "--client-addr").
// It returns an error for an exposed address unless AllowPublic is set;
// then it returns a warning describing the exposure.
func (g BindGuard) Check(flag, addr string) (warning string, err error) {
	class, err := ClassifyAddr(addr, g.Resolve)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	if !class.Exposed() {
		return "", nil
	}
	what := "a public address"
	if class == Wildcard {
		what = "a wildcard address (every interface of this machine, public ones included)"
	}
	if !g.AllowPublic {
		return "", fmt.Errorf("%s %s is %s: anyone who can reach it could read and change every key and disrupt the cluster. "+
			"Listen on 127.0.0.1 or a private address (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7, link-local) instead; "+
			"if a firewall and TLS (--tls-cert, --tls-key, --tls-ca) or an mTLS sidecar protect this port, pass --allow-public-bind to acknowledge the risk",
			flag, addr, what)
	}
	return fmt.Sprintf("%s %s is %s and --allow-public-bind is set: make sure a firewall, TLS with client certificates and tokens protect it", flag, addr, what), nil
}

// Banner formats warnings as a block that stands out in a log.
func Banner(title string, lines []string) []string {
	bar := strings.Repeat("!", 78)
	out := []string{bar, "!!! " + title}
	for _, l := range lines {
		out = append(out, "!!! "+l)
	}
	return append(out, bar)
}
