package jepsen

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"time"
)

// raftHandshakeSize is the size of the raft transport's stream handshake:
// "KAYARAFT" · version u16 · kind u8 · from u64 · to u64.
const raftHandshakeSize = 27

// link is a directed raft link: messages from one node to another.
type link struct{ from, to uint64 }

// linkRule is the fault applied to a link.
type linkRule struct {
	drop  bool          // swallow everything (a partition)
	delay time.Duration // added latency
}

// Network is the harness's fault-injecting raft network: one TCP proxy in
// front of each node's raft listener. The roster advertises the proxies'
// addresses, so every raft connection passes through one. A raft stream
// carries one direction (the dialer's messages), and its handshake names
// the sender and the receiver, so the proxy knows the link of every
// connection and applies that link's rule to it.
type Network struct {
	mu      sync.Mutex
	rules   map[link]linkRule
	conns   map[link]map[*proxyConn]struct{}
	proxies []*proxy
	closed  bool
}

// NewNetwork makes an empty network.
func NewNetwork() *Network {
	return &Network{rules: map[link]linkRule{}, conns: map[link]map[*proxyConn]struct{}{}}
}

type proxy struct {
	n       *Network
	ln      net.Listener
	backend string
	wg      sync.WaitGroup
}

type proxyConn struct {
	client, server net.Conn
	once           sync.Once
}

func (pc *proxyConn) close() {
	pc.once.Do(func() {
		_ = pc.client.Close()
		if pc.server != nil {
			_ = pc.server.Close()
		}
	})
}

// AddProxy listens on a loopback port and forwards to backend; it returns
// the address to advertise.
func (n *Network) AddProxy(backend string) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	p := &proxy{n: n, ln: ln, backend: backend}
	n.mu.Lock()
	n.proxies = append(n.proxies, p)
	n.mu.Unlock()
	p.wg.Add(1)
	go p.accept()
	return ln.Addr().String(), nil
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c)
		}()
	}
}

func (p *proxy) serve(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	hs := make([]byte, raftHandshakeSize)
	if _, err := io.ReadFull(c, hs); err != nil {
		_ = c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	l := link{from: binary.LittleEndian.Uint64(hs[11:19]), to: binary.LittleEndian.Uint64(hs[19:27])}
	pc := &proxyConn{client: c}
	if !p.n.register(l, pc) {
		_ = c.Close()
		return
	}
	defer p.n.unregister(l, pc)
	defer pc.close()
	if p.n.rule(l).drop {
		// A partitioned link: the dialer's connection succeeds and its
		// bytes vanish, like packets into a firewall. Healing closes it.
		_, _ = io.Copy(io.Discard, c)
		return
	}
	s, err := net.DialTimeout("tcp", p.backend, 2*time.Second)
	if err != nil {
		return
	}
	pc.server = s
	if _, err := s.Write(hs); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { p.n.pump(l, s, c); done <- struct{}{} }()                  // sender → receiver
	go func() { p.n.pump(link{l.to, l.from}, c, s); done <- struct{}{} }() // acks back
	<-done
}

// pump copies src to dst applying the link's current rule to every chunk.
// Delayed chunks keep their order.
func (n *Network) pump(l link, dst io.Writer, src io.Reader) {
	type chunk struct {
		b   []byte
		due time.Time
	}
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		buf := make([]byte, 32<<10)
		for {
			k, err := src.Read(buf)
			if k > 0 {
				r := n.rule(l)
				if r.drop {
					// Partitioned mid-stream: end the connection; the raft
					// transport redials (into the partition) later.
					return
				}
				q <- chunk{b: append([]byte(nil), buf[:k]...), due: time.Now().Add(r.delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for ch := range q {
		if d := time.Until(ch.due); d > 0 {
			time.Sleep(d)
		}
		if _, err := dst.Write(ch.b); err != nil {
			break
		}
	}
	if c, ok := dst.(net.Conn); ok {
		_ = c.Close()
	}
	for range q {
	}
}

func (n *Network) register(l link, pc *proxyConn) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	m := n.conns[l]
	if m == nil {
		m = map[*proxyConn]struct{}{}
		n.conns[l] = m
	}
	m[pc] = struct{}{}
	return true
}

func (n *Network) unregister(l link, pc *proxyConn) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.conns[l], pc)
}

func (n *Network) rule(l link) linkRule {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rules[l]
}

// set changes a link's rule and closes its connections, so that the new
// rule applies from the next connection on (a partition drops open
// streams; healing ends the swallowed ones so that raft redials).
func (n *Network) set(l link, r linkRule) {
	n.mu.Lock()
	if r == (linkRule{}) {
		delete(n.rules, l)
	} else {
		n.rules[l] = r
	}
	var victims []*proxyConn
	for pc := range n.conns[l] {
		victims = append(victims, pc)
	}
	n.mu.Unlock()
	for _, pc := range victims {
		pc.close()
	}
}

// Drop partitions the directed link from → to.
func (n *Network) Drop(from, to uint64) { n.set(link{from, to}, linkRule{drop: true}) }

// Delay adds latency to the directed link from → to.
func (n *Network) Delay(from, to uint64, d time.Duration) {
	n.set(link{from, to}, linkRule{delay: d})
}

// Heal removes every rule.
func (n *Network) Heal() {
	n.mu.Lock()
	var ls []link
	for l := range n.rules {
		ls = append(ls, l)
	}
	n.mu.Unlock()
	for _, l := range ls {
		n.set(l, linkRule{})
	}
}

// Close stops every proxy.
func (n *Network) Close() {
	n.mu.Lock()
	n.closed = true
	ps := n.proxies
	var all []*proxyConn
	for _, m := range n.conns {
		for pc := range m {
			all = append(all, pc)
		}
	}
	n.mu.Unlock()
	for _, p := range ps {
		_ = p.ln.Close()
	}
	for _, pc := range all {
		pc.close()
	}
	for _, p := range ps {
		p.wg.Wait()
	}
}
