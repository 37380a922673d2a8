package server

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
)

// This file settles the roster of a new cluster from the command line: the
// --peer entries, and this node's own addresses.
//
// Both forms of --peer list are accepted:
//
//   - every member, this node included (the same list on every node);
//   - only the other members, as the original KayaDB's scripts give them:
//     this node's entry is then added from --node-id and its addresses.
//
// Each of this node's two addresses (raft and client) comes in up to two
// flavours: where the node listens (--raft-addr, --client-addr) and what it
// advertises — what the other nodes dial and what clients are redirected
// to. They differ only behind a proxy or a sidecar (an mTLS tunnel, NAT, a
// harness's fault-injecting proxy), and that is said explicitly with
// --advertise-raft-addr / --advertise-client-addr. The rule, per address:
//
//   - with --advertise-X-addr, this node's --peer entry (when listed) must
//     name exactly that address;
//   - else, when --X-addr was not given (command line, environment or
//     config file), the entry names the address and the node listens there;
//   - else the entry must name the address the node listens on: the same
//     HOST:PORT, or, when --X-addr listens on every interface (0.0.0.0:P,
//     [::]:P, :P), any host with the same port P (the node does listen on
//     it). Anything else is a mistake (a copied line, a shifted port) and
//     refused with both addresses named, and the hint to use
//     --advertise-X-addr if a proxy is meant.
//
// A mismatch used to be taken silently as an advertised address; a typo
// then made a node advertise an address nobody listened on.

// sideAddrs is one of this node's addresses (raft or client) as the
// command line gives it.
type sideAddrs struct {
	side      string // "raft" or "client"
	listen    string // --raft-addr (or its default)
	listenSet bool   // --raft-addr was given, not defaulted
	advertise string // --advertise-raft-addr; "" when not given
}

// advertised is the address the other nodes and clients are told.
func (a sideAddrs) advertised() string {
	if a.advertise != "" {
		return a.advertise
	}
	return a.listen
}

// settle checks this node's --peer entry's address against the flags (the
// rule in the comment above) and returns the address to listen on.
func (a sideAddrs) settle(entry, peerArg string, id uint64) (string, error) {
	switch {
	case a.advertise != "":
		if entry != a.advertise {
			return "", fmt.Errorf("--peer %s is this node's entry (--node-id %d), but its %s address %s is not --advertise-%s-addr %s: they must agree (or leave this node out of the --peer list; it is then added with the advertised addresses)",
				peerArg, id, a.side, entry, a.side, a.advertise)
		}
		return a.listen, nil
	case !a.listenSet:
		return entry, nil
	case listensOn(a.listen, entry):
		return a.listen, nil
	}
	return "", fmt.Errorf("--peer %s is this node's entry (--node-id %d), but its %s address %s is not --%s-addr %s: correct one of them, or leave this node out of the --peer list (it is then added from --node-id, --raft-addr and --client-addr). "+
		"If the other nodes and clients reach this node at %s through a proxy or sidecar while it listens on %s, say so with --advertise-%s-addr %s",
		peerArg, id, a.side, entry, a.side, a.listen, entry, a.listen, a.side, entry)
}

// listensOn reports whether a node listening on listen is reached at addr:
// the same address, or the same port when listen is every interface.
func listensOn(listen, addr string) bool {
	if listen == addr {
		return true
	}
	lh, lp, err1 := net.SplitHostPort(listen)
	_, ap, err2 := net.SplitHostPort(addr)
	if err1 != nil || err2 != nil || lp != ap {
		return false
	}
	return isWildcardHost(lh)
}

// isWildcardHost reports whether a listen host means every interface.
func isWildcardHost(h string) bool {
	if h == "" {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.IsUnspecified()
}

// dialable returns an error when addr, advertised for this node, is no
// address another machine can dial (a wildcard host or port 0).
func dialable(flag, addr string) error {
	if err := checkHostPort(flag, addr, false); err != nil {
		return err
	}
	h, _, _ := net.SplitHostPort(addr)
	if isWildcardHost(h) {
		return fmt.Errorf("%s %s listens on every interface; the other nodes and redirected clients need an address to dial", flag, addr)
	}
	return nil
}

// resolvePeers parses the --peer entries into cfg.Peers and settles this
// node's listen addresses (cfg.RaftAddr, cfg.ClientAddr) and its own entry:
// checked against the flags when listed, added when not (except with
// --join: the cluster adds a joining node with kayactl add-node). With no
// --peer and no --advertise flag, cfg.Peers stays empty: a single-node
// cluster of this node (New fills in its entry).
func resolvePeers(cfg *Config, entries []string, raft, client sideAddrs, log *slog.Logger) error {
	for _, a := range []sideAddrs{raft, client} {
		if a.advertise != "" {
			if err := dialable("--advertise-"+a.side+"-addr", a.advertise); err != nil {
				return err
			}
		}
	}
	self := false
	seen := map[uint64]string{}
	for _, e := range entries {
		m, clientGiven, err := parsePeer(e)
		if err != nil {
			return err
		}
		if prev, ok := seen[m.ID]; ok {
			return fmt.Errorf("--peer %s and --peer %s both name node %d; give each member once", prev, e, m.ID)
		}
		seen[m.ID] = e
		if m.ID != cfg.NodeID {
			if !clientGiven {
				log.Warn("a --peer entry has no client address: clients redirected to that node are sent to its raft address, which does not serve them; give ID=RAFT_ADDR,CLIENT_ADDR",
					"peer", e, "member", m.ID)
			}
			cfg.Peers = append(cfg.Peers, m)
			continue
		}
		self = true
		if cfg.RaftAddr, err = raft.settle(m.RaftAddr, e, m.ID); err != nil {
			return err
		}
		if !clientGiven {
			// This node's own client address is known: the flags'.
			m.ClientAddr = client.advertised()
		} else if cfg.ClientAddr, err = client.settle(m.ClientAddr, e, m.ID); err != nil {
			return err
		}
		cfg.Peers = append(cfg.Peers, m)
	}
	if self || cfg.Join || (len(entries) == 0 && raft.advertise == "" && client.advertise == "") {
		return nil
	}
	m := Member{ID: cfg.NodeID, RaftAddr: raft.advertised(), ClientAddr: client.advertised()}
	if len(entries) > 0 {
		for _, a := range []struct{ flag, addr string }{{"--raft-addr", m.RaftAddr}, {"--client-addr", m.ClientAddr}} {
			if err := dialable(a.flag, a.addr); err != nil {
				return fmt.Errorf("this node (--node-id %d) is not in the --peer list, so it is added with its own addresses, but %w: add its entry (--peer %d=HOST:PORT,HOST:PORT) or give --advertise-raft-addr and --advertise-client-addr",
					cfg.NodeID, err, cfg.NodeID)
			}
		}
	}
	cfg.Peers = append(cfg.Peers, m)
	return nil
}
