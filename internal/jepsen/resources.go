package jepsen

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kayadb/kayadb/internal/wire"
)

// Resource nemeses other than the disk: a client that asks for much and
// reads little (slowClient), and many connections from one other host
// (flood). Both speak the wire protocol on raw connections, because the
// project's client reads every reply and pools its connections; and both
// end with a probe: a new connection from the workload's address must
// still be served.

// slowPrefix holds the values the slow client asks for: preloaded at the
// start of a run that has the nemesis (slowValues of slowValueBytes), so
// that every SCAN of the prefix answers slowValues × slowValueBytes bytes.
// 8 MiB a SCAN: a server that holds the replies of all 128 requests it
// lets one connection pipeline needs a gigabyte for them.
const (
	slowPrefix     = "slow-client/"
	slowValues     = 32
	slowValueBytes = 256 << 10
	// slowMaxRequests bounds what the slow client sends in one fault: a
	// server that keeps reading requests it cannot answer would otherwise
	// be sent them for as long as the fault lasts.
	slowMaxRequests = 100_000
	// slowReadBuffer is the slow client's socket receive buffer: small,
	// so that the server's writes stall soon, as against a slow network.
	slowReadBuffer = 16 << 10
)

func slowKey(i int) string { return fmt.Sprintf("%s%02d", slowPrefix, i) }

// slowRequests are the requests the slow client cycles through: SCANs
// (of its large values, of the set workload's keys, of everything) and a
// GET of one large value.
func slowRequests() [][]byte {
	var out [][]byte
	for _, p := range []string{slowPrefix, "set/", ""} {
		out = append(out, wire.AppendRequest(nil, wire.OpScan, wire.AppendKey(nil, []byte(p))))
	}
	out = append(out, wire.AppendRequest(nil, wire.OpGet, wire.AppendKey(nil, []byte(slowKey(0)))))
	return out
}

// slowClient pipelines large requests on one connection and reads the
// replies at one byte a second (trickle) or not at all.
type slowClient struct {
	conn     net.Conn
	sent     atomic.Int64 // requests written whole
	received atomic.Int64 // reply bytes read
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startSlowClient(addr string, trickle bool) (*slowClient, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(slowReadBuffer)
	}
	s := &slowClient{conn: conn, stop: make(chan struct{})}
	reqs := slowRequests()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// Blocks once the server stops reading (or its replies fill
		// the buffers); ends when the connection is closed.
		for i := 0; i < slowMaxRequests; i++ {
			if _, err := conn.Write(reqs[i%len(reqs)]); err != nil {
				return
			}
			s.sent.Add(1)
		}
	}()
	if trickle {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			t := time.NewTicker(time.Second)
			defer t.Stop()
			var b [1]byte
			for {
				select {
				case <-s.stop:
					return
				case <-t.C:
				}
				_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				if n, err := conn.Read(b[:]); n > 0 {
					s.received.Add(int64(n))
				} else if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
					return
				}
			}
		}()
	}
	return s, nil
}

// close ends the slow client and returns what it did.
func (s *slowClient) close() string {
	close(s.stop)
	_ = s.conn.Close()
	s.wg.Wait()
	return fmt.Sprintf("%d requests sent, %d reply bytes read", s.sent.Load(), s.received.Load())
}

// flood holds many connections to one node from one source address.
type flood struct {
	src     net.IP
	closing atomic.Bool
	stop    chan struct{}
	wg      sync.WaitGroup

	mu struct {
		sync.Mutex
		conns      []net.Conn
		dialFailed int
		dialErr    string
		refused    int    // answered with an ERROR frame, then closed
		refusedMsg string // the first refusal's text
		answered   int    // answered with another status (not expected)
		silent     int    // closed (EOF, reset) without a frame
		silentErr  string
	}
}

// floodDialers bounds the flood's concurrent dials: enough to open
// thousands of loopback connections in well under a second, without a
// thundering herd on the server's accept queue.
const floodDialers = 32

// floodFrame is what a trickling flood connection sends, one byte a
// second: a GET whose frame announces 21 bytes, so that it stays
// incomplete for longer than any fault.
var floodFrame = wire.AppendRequest(nil, wire.OpGet, wire.AppendKey(nil, []byte("flood/0123456789")))

// startFlood opens n connections to addr from src and keeps them open,
// sending nothing or (trickle) one byte a second on each. Each connection
// has a reader that records how the server treats it: a refusal (an ERROR
// frame), a silent close, or nothing (held).
func startFlood(ctx context.Context, addr string, src net.IP, n int, trickle bool) *flood {
	f := &flood{src: src, stop: make(chan struct{})}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 2 * time.Second}
	var next atomic.Int64
	var dialers sync.WaitGroup
	for w := 0; w < floodDialers; w++ {
		dialers.Add(1)
		go func() {
			defer dialers.Done()
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				conn, err := d.DialContext(ctx, "tcp", addr)
				f.mu.Lock()
				if err != nil {
					f.mu.dialFailed++
					if f.mu.dialErr == "" {
						f.mu.dialErr = err.Error()
					}
					f.mu.Unlock()
					continue
				}
				f.mu.conns = append(f.mu.conns, conn)
				f.mu.Unlock()
				f.wg.Add(1)
				go f.watch(conn)
			}
		}()
	}
	dialers.Wait()
	if trickle {
		f.wg.Add(1)
		go f.trickle()
	}
	return f
}

// watch reads what the server sends on one flood connection.
func (f *flood) watch(conn net.Conn) {
	defer f.wg.Done()
	st, p, _, err := wire.ReadResponse(bufio.NewReaderSize(conn, 512), nil)
	if err != nil && f.closing.Load() {
		return // closed by the heal
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case err != nil:
		f.mu.silent++
		if f.mu.silentErr == "" {
			f.mu.silentErr = err.Error()
		}
	case st == wire.StatusError:
		f.mu.refused++
		if f.mu.refusedMsg == "" {
			msg, derr := wire.DecodeError(p)
			if derr != nil {
				msg = fmt.Sprintf("(undecodable: %v)", derr)
			}
			f.mu.refusedMsg = msg
		}
	default:
		f.mu.answered++
	}
}

// trickle sends the next byte of floodFrame on every connection once a
// second.
func (f *flood) trickle() {
	defer f.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for i := 0; i < len(floodFrame); i++ {
		select {
		case <-f.stop:
			return
		case <-t.C:
		}
		f.mu.Lock()
		conns := append([]net.Conn(nil), f.mu.conns...)
		f.mu.Unlock()
		for _, c := range conns {
			_ = c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
			_, _ = c.Write(floodFrame[i : i+1])
		}
	}
}

// floodReport is what a flood saw, counted when it ended.
type floodReport struct {
	Dialed, DialFailed, Held, Refused, Answered, Silent int
	DialErr, RefusedMsg, SilentErr                      string
}

// close ends the flood and returns its counts.
func (f *flood) close() floodReport {
	f.closing.Store(true)
	close(f.stop)
	f.mu.Lock()
	conns := f.mu.conns
	f.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	r := floodReport{Dialed: len(conns), DialFailed: f.mu.dialFailed, Refused: f.mu.refused, Answered: f.mu.answered,
		Silent: f.mu.silent, DialErr: f.mu.dialErr, RefusedMsg: f.mu.refusedMsg, SilentErr: f.mu.silentErr}
	r.Held = r.Dialed - r.Refused - r.Answered - r.Silent
	return r
}

func (r floodReport) String() string {
	s := fmt.Sprintf("%d connections opened, %d held to the end, %d refused with an error", r.Dialed, r.Held, r.Refused)
	if r.RefusedMsg != "" {
		s += fmt.Sprintf(" (%q)", firstLine(errors.New(r.RefusedMsg)))
	}
	s += fmt.Sprintf(", %d closed without a reply", r.Silent)
	if r.SilentErr != "" {
		s += fmt.Sprintf(" (%s)", r.SilentErr)
	}
	if r.Answered > 0 {
		s += fmt.Sprintf(", %d answered otherwise", r.Answered)
	}
	if r.DialFailed > 0 {
		s += fmt.Sprintf(", %d dials failed (%s)", r.DialFailed, r.DialErr)
	}
	return s
}

// floodSource is the loopback address a flood comes from: 127.0.0.2 to
// 127.0.0.251, never the workload's 127.0.0.1.
func floodSource(pick uint64) net.IP {
	return net.IPv4(127, 0, 0, byte(2+(pick>>8)%250))
}

// probeTimeout bounds the probe: generous next to the milliseconds a
// HEALTH takes, because the point is whether the node serves a new client
// at all while under the fault.
const probeTimeout = 5 * time.Second

// probe opens a new connection to addr (from the workload's address) and
// asks HEALTH: nil when the node answers it within timeout.
func probe(addr string, timeout time.Duration) error {
	// A node the harness has just started (a kill healed a moment before)
	// may not listen yet: a refused dial is tried again until the timeout,
	// which is the time the node has to serve a new client.
	deadline := time.Now().Add(timeout)
	var conn net.Conn
	var err error
	for {
		conn, err = net.DialTimeout("tcp", addr, time.Until(deadline))
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || time.Until(deadline) < 50*time.Millisecond {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(wire.AppendRequest(nil, wire.OpHealth, nil)); err != nil {
		return err
	}
	st, p, _, err := wire.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return fmt.Errorf("no HEALTH reply: %w", err)
	}
	if st != wire.StatusOK {
		msg, _ := wire.DecodeError(p)
		return fmt.Errorf("HEALTH answered %s: %s", st, msg)
	}
	return nil
}

// readRSS returns the resident set size and its high-water mark (VmRSS,
// VmHWM of /proc/PID/status), in bytes.
func readRSS(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		var dst *int64
		switch {
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			dst = &rss
		case bytes.HasPrefix(line, []byte("VmHWM:")):
			dst = &hwm
		default:
			continue
		}
		f := strings.Fields(string(line))
		if len(f) != 3 || f[2] != "kB" {
			return 0, 0, fmt.Errorf("/proc/%d/status: unexpected line %q", pid, line)
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status: %q: %w", pid, line, err)
		}
		*dst = kb << 10
	}
	return rss, hwm, nil
}

// NodeMemory is what the memory monitor saw of one node.
type NodeMemory struct {
	ID uint64 `json:"id"`
	// BeforeMiB is the resident set size when the workload started.
	BeforeMiB int64 `json:"rss_before_mib"`
	// PeakMiB is the highest resident set size of any of its processes.
	PeakMiB int64 `json:"rss_peak_mib"`
}

// memoryInterval is how often the monitor reads the nodes' memory. The
// kernel's high-water mark (VmHWM) catches peaks between two reads; only
// a process killed between them takes its last peak with it.
const memoryInterval = 250 * time.Millisecond

// memoryMonitor follows the nodes' resident memory during a run.
type memoryMonitor struct {
	c    *Cluster
	stop chan struct{}
	done chan struct{}

	mu struct {
		sync.Mutex
		before map[uint64]int64
		peak   map[uint64]int64
		window map[uint64]int64 // peaks since the last startWindow
	}
}

func startMemoryMonitor(c *Cluster) *memoryMonitor {
	m := &memoryMonitor{c: c, stop: make(chan struct{}), done: make(chan struct{})}
	m.mu.before, m.mu.peak, m.mu.window = map[uint64]int64{}, map[uint64]int64{}, map[uint64]int64{}
	m.sample()
	go func() {
		defer close(m.done)
		t := time.NewTicker(memoryInterval)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
				m.sample()
			}
		}
	}()
	return m
}

func (m *memoryMonitor) sample() {
	for _, n := range m.c.Nodes {
		id, pid := n.current()
		if pid == 0 {
			continue
		}
		rss, hwm, err := readRSS(pid)
		if err != nil {
			continue // exited between the two reads
		}
		top := max(rss, hwm)
		m.mu.Lock()
		if _, ok := m.mu.before[id]; !ok {
			m.mu.before[id] = rss
		}
		m.mu.peak[id] = max(m.mu.peak[id], top)
		m.mu.window[id] = max(m.mu.window[id], top)
		m.mu.Unlock()
	}
}

// startWindow starts a new fault window's peaks.
func (m *memoryMonitor) startWindow() {
	m.mu.Lock()
	m.mu.window = map[uint64]int64{}
	m.mu.Unlock()
}

// windowPeak is node id's peak since startWindow, read now.
func (m *memoryMonitor) windowPeak(id uint64) int64 {
	m.sample()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mu.window[id]
}

// close stops the monitor and returns what it saw, by node id.
func (m *memoryMonitor) close() []NodeMemory {
	close(m.stop)
	<-m.done
	m.sample()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []NodeMemory
	for id, p := range m.mu.peak {
		out = append(out, NodeMemory{ID: id, BeforeMiB: m.mu.before[id] >> 20, PeakMiB: p >> 20})
	}
	sortMemory(out)
	return out
}

func sortMemory(ms []NodeMemory) {
	slices.SortFunc(ms, func(a, b NodeMemory) int { return cmp.Compare(a.ID, b.ID) })
}
