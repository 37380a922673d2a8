package client

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/wire"
)

func newClient(t *testing.T, endpoints []string, opts *Options) *Client {
	t.Helper()
	c, err := New(endpoints, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// deadAddr returns an address nobody listens on.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestBasicOps(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)

	if err := c.Put(ctx, []byte("user:1"), []byte("ada")); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(ctx, []byte("user:2"), []byte("")); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(ctx, []byte("zzz"), []byte("other")); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, []byte("user:1")); err != nil || string(v) != "ada" {
		t.Fatalf("Get: %q %v", v, err)
	}
	if _, err := c.Get(ctx, []byte("missing")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get missing: %v", err)
	}
	kvs, err := c.Scan(ctx, []byte("user:"))
	if err != nil || len(kvs) != 2 || string(kvs[0].Key) != "user:1" || string(kvs[1].Key) != "user:2" ||
		string(kvs[0].Value) != "ada" || len(kvs[1].Value) != 0 {
		t.Fatalf("Scan: %+v %v", kvs, err)
	}
	if err := c.Delete(ctx, []byte("user:1")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, []byte("user:1")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after delete: %v", err)
	}
	if role, err := c.Health(ctx, ""); err != nil || role != "leader" {
		t.Fatalf("Health: %q %v", role, err)
	}
	if role, err := c.Health(ctx, srv.addr); err != nil || role != "leader" {
		t.Fatalf("Health(endpoint): %q %v", role, err)
	}
	st, err := c.Status(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if st.Role != "leader" || st.Term != 2 || st.CommitIndex != 10 || st.PeerCount != 2 || st.RaftGroups != 1 ||
		st.Engine["put_count"] != 7 || st.Engine["future_counter"] != 99 || !bytes.Contains(st.Raw, []byte(`"drain":false`)) {
		t.Fatalf("Status: %+v", st)
	}
	if _, ok := st.Engine["label"]; ok {
		t.Fatal("non-numeric engine member in Engine")
	}
	msg, err := c.AddMember(ctx, 4, "10.0.0.4:7481", "10.0.0.4:7379", true)
	if err != nil || msg != "membership change proposed at index 44" {
		t.Fatalf("AddMember: %q %v", msg, err)
	}
	m, err := wire.DecodeAddMember(srv.requests(wire.OpAddMember)[0].payload)
	if err != nil || m.NodeID != 4 || m.RaftAddr != "10.0.0.4:7481" || m.ClientAddr != "10.0.0.4:7379" || !m.IsLearner() {
		t.Fatalf("ADD_MEMBER payload: %+v %v", m, err)
	}
	if _, err := c.AddMember(ctx, 1, "a:1", "a:2", false); !errors.Is(err, ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "node 1 is already a cluster member") {
		t.Fatalf("AddMember existing: %v", err)
	}
	msg, err = c.RemoveMember(ctx, 4)
	if err != nil || msg != "membership removal proposed at index 54" {
		t.Fatalf("RemoveMember: %q %v", msg, err)
	}
	if c.Leader() != srv.addr {
		t.Fatalf("Leader() = %q", c.Leader())
	}
	// One HELLO per connection, and it is the first request on each.
	if h := srv.count(wire.OpHello); h != srv.accepted() || h == 0 {
		t.Fatalf("%d HELLOs for %d connections", h, srv.accepted())
	}
	if !bytes.Equal(srv.requests(wire.OpHello)[0].frame, []byte{3, 0, 0, 0, 0, 1, 0}) {
		t.Fatalf("HELLO frame % x", srv.requests(wire.OpHello)[0].frame)
	}
}

func TestServerErrors(t *testing.T) {
	srv := newFakeServer(t)
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op != wire.OpGet {
			return fakeAction{}, false
		}
		k, _ := wire.DecodeKey(r.payload)
		switch string(k) {
		case "err":
			return errAction(wire.StatusError, "raft: proposal dropped"), true
		case "inval":
			return errAction(wire.StatusInvalidArgument, "key too long"), true
		case "odd":
			return errAction(42, "strange"), true
		case "conflict":
			return errAction(wire.StatusTxnConflict, wire.MsgTxnConflict), true
		case "badutf8":
			return fakeAction{st: wire.StatusError, payload: []byte{2, 0, 0, 0, 0xff, 0xfe}}, true
		case "shortok":
			return fakeAction{payload: []byte{9, 0, 0, 0, 'x'}}, true
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)
	var se *ServerError
	_, err := c.Get(ctx, []byte("err"))
	if !errors.As(err, &se) || se.Status != 9 || se.Message != "raft: proposal dropped" || !errors.Is(err, ErrServer) {
		t.Fatalf("status 9: %v", err)
	}
	if _, err := c.Get(ctx, []byte("inval")); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "key too long") {
		t.Fatalf("status 1: %v", err)
	}
	if _, err := c.Get(ctx, []byte("odd")); !errors.As(err, &se) || se.Status != 42 {
		t.Fatalf("status 42: %v", err)
	}
	if _, err := c.Get(ctx, []byte("conflict")); !errors.As(err, &se) || se.Status != 3 {
		t.Fatalf("status 3: %v", err)
	}
	if _, err := c.Get(ctx, []byte("badutf8")); !errors.Is(err, ErrProtocol) {
		t.Fatalf("bad UTF-8 error body: %v", err)
	}
	if _, err := c.Get(ctx, []byte("shortok")); !errors.Is(err, ErrProtocol) {
		t.Fatalf("short GET reply: %v", err)
	}
	if srv.count(wire.OpGet) != 6 {
		t.Fatalf("%d GETs: server errors must not be retried", srv.count(wire.OpGet))
	}
}

func TestRedirectToHint(t *testing.T) {
	leader := newFakeServer(t)
	follower := newFakeServer(t)
	follower.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpHello || r.op == wire.OpHealth || r.op == wire.OpStats {
			return fakeAction{}, false
		}
		return fakeAction{st: wire.StatusNotLeader, payload: wire.AppendNotLeader(nil, leader.addr)}, true
	})
	c := newClient(t, []string{follower.addr}, nil)
	ctx := ctxT(t, 5*time.Second)
	if err := c.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if c.Leader() != leader.addr {
		t.Fatalf("Leader() = %q, want %q", c.Leader(), leader.addr)
	}
	if follower.count(wire.OpPut) != 1 || leader.count(wire.OpPut) != 1 {
		t.Fatalf("PUTs: follower %d, leader %d", follower.count(wire.OpPut), leader.count(wire.OpPut))
	}
	// The leader is remembered: the next request goes straight to it.
	if v, err := c.Get(ctx, []byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("Get: %q %v", v, err)
	}
	if follower.count(wire.OpGet) != 0 {
		t.Fatal("GET went to the follower")
	}
}

func TestEmptyHintBacksOff(t *testing.T) {
	srv := newFakeServer(t)
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpPut && r.nth <= 2 {
			return fakeAction{st: wire.StatusNotLeader}, true // election under way
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, nil)
	start := time.Now()
	if err := c.Put(ctxT(t, 5*time.Second), []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 2*60*time.Millisecond || el > 2*time.Second {
		t.Fatalf("took %v, want two ~80 ms pauses", el)
	}
	if srv.count(wire.OpPut) != 3 {
		t.Fatalf("%d PUTs, want 3", srv.count(wire.OpPut))
	}

	// With no leader ever, the call asks until its deadline: the retry
	// budget (for connection failures) does not cut an election short.
	srv2 := newFakeServer(t)
	srv2.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpGet {
			return fakeAction{st: wire.StatusNotLeader}, true
		}
		return fakeAction{}, false
	})
	c2 := newClient(t, []string{srv2.addr}, &Options{MaxRetries: 2})
	_, err := c2.Get(ctxT(t, 700*time.Millisecond), []byte("k"))
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, ErrNotLeader) {
		t.Fatalf("got %v, want ErrTimeout and ErrNotLeader", err)
	}
	if n := srv2.count(wire.OpGet); n <= 3 {
		t.Fatalf("%d GETs: the call stopped at MaxRetries instead of its deadline", n)
	}
}

// TestElectionOutlastsRetryBudget: a leaderless stretch longer than
// DefaultMaxRetries pauses (21 attempts, ~1.6 s: shorter than a slow
// election) does not fail a call whose deadline has not passed.
func TestElectionOutlastsRetryBudget(t *testing.T) {
	srv := newFakeServer(t)
	const leaderless = DefaultMaxRetries + 10
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpPut && r.nth <= leaderless {
			return fakeAction{st: wire.StatusNotLeader}, true
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, &Options{RequestTimeout: 30 * time.Second})
	if err := c.Put(ctxT(t, 30*time.Second), []byte("k"), []byte("v")); err != nil {
		t.Fatalf("Put during a long election: %v", err)
	}
	if n := srv.count(wire.OpPut); n != leaderless+1 {
		t.Fatalf("%d PUTs, want %d", n, leaderless+1)
	}
}

// TestFailFast: with Options.FailFast, a call fails at once when every
// endpoint refuses the connection, naming them; one live endpoint is
// enough to go on.
func TestFailFast(t *testing.T) {
	dead1, dead2 := deadAddr(t), deadAddr(t)
	c := newClient(t, []string{dead1, dead2}, &Options{FailFast: true, RequestTimeout: 30 * time.Second})
	_, err := c.Get(ctxT(t, 30*time.Second), []byte("k"))
	// ErrUnavailable and not ErrTimeout: it gave up before the deadline.
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrTimeout) || !errors.Is(err, syscall.ECONNREFUSED) ||
		!strings.Contains(err.Error(), "nothing listening on "+dead1+", "+dead2) {
		t.Fatalf("got %v, want ErrUnavailable naming both endpoints", err)
	}
	// A fixed endpoint (Health, Status) fails alone.
	if _, err := c.Health(ctxT(t, 30*time.Second), dead2); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrTimeout) ||
		!strings.Contains(err.Error(), "nothing listening on "+dead2+" ") {
		t.Fatalf("Health: got %v", err)
	}
	// A write that was never sent is not ambiguous.
	if err := c.Put(ctxT(t, 30*time.Second), []byte("k"), []byte("v")); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrAmbiguous) {
		t.Fatalf("Put: got %v", err)
	}

	srv := newFakeServer(t)
	c2 := newClient(t, []string{dead1, srv.addr}, &Options{FailFast: true})
	for i := 0; i < 4; i++ { // the rotation starts at each endpoint in turn
		if err := c2.Put(ctxT(t, 5*time.Second), []byte("k"), []byte("v")); err != nil {
			t.Fatalf("Put with one live endpoint: %v", err)
		}
	}

	// Without FailFast, refused connections are retried until the
	// deadline (a server that restarts is back soon).
	c3 := newClient(t, []string{dead1}, nil)
	if _, err := c3.Get(ctxT(t, 300*time.Millisecond), []byte("k")); !errors.Is(err, ErrTimeout) {
		t.Fatalf("without FailFast: %v", err)
	}
}

func TestRedirectLoopIsBounded(t *testing.T) {
	a := newFakeServer(t)
	b := newFakeServer(t)
	pointTo := func(other *fakeServer) func(r *fakeReq) (fakeAction, bool) {
		return func(r *fakeReq) (fakeAction, bool) {
			if r.op == wire.OpPut {
				return fakeAction{st: wire.StatusNotLeader, payload: wire.AppendNotLeader(nil, other.addr)}, true
			}
			return fakeAction{}, false
		}
	}
	a.setHandler(pointTo(b))
	b.setHandler(pointTo(a))
	// Each round follows MaxRedirects hints, then backs off as if no
	// leader were known (an election may be under way); the retry budget
	// bounds the rounds.
	c := newClient(t, []string{a.addr}, &Options{MaxRetries: 2})
	start := time.Now()
	err := c.Put(ctxT(t, 5*time.Second), []byte("k"), []byte("v"))
	var nle *NotLeaderError
	if !errors.Is(err, ErrNotLeader) || !errors.As(err, &nle) || !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrAmbiguous) {
		t.Fatalf("got %v, want ErrUnavailable with a NotLeaderError", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("took %v", el)
	}
	if n := a.count(wire.OpPut) + b.count(wire.OpPut); n != 3*(1+DefaultMaxRedirects) {
		t.Fatalf("%d PUTs, want %d", n, 3*(1+DefaultMaxRedirects))
	}
}

func TestReadRetriedAfterDrop(t *testing.T) {
	srv := newFakeServer(t)
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpGet && r.nth == 1 {
			return fakeAction{drop: true}, true // read the request, then hang up
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)
	if err := c.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, []byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("Get: %q %v", v, err)
	}
	if srv.count(wire.OpGet) != 2 {
		t.Fatalf("%d GETs, want 2", srv.count(wire.OpGet))
	}
}

func TestWriteNotRetriedAfterDrop(t *testing.T) {
	srv := newFakeServer(t)
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpPut || r.op == wire.OpRemoveMember {
			return fakeAction{drop: true}, true
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)
	err := c.Put(ctx, []byte("k"), []byte("v"))
	if !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("got %v, want ErrAmbiguous", err)
	}
	if _, err := c.RemoveMember(ctx, 3); !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("RemoveMember: got %v, want ErrAmbiguous", err)
	}
	time.Sleep(200 * time.Millisecond) // a retry would show up by now
	if srv.count(wire.OpPut) != 1 || srv.count(wire.OpRemoveMember) != 1 {
		t.Fatalf("server saw %d PUTs and %d REMOVE_MEMBERs, want 1 each", srv.count(wire.OpPut), srv.count(wire.OpRemoveMember))
	}
	// The client recovers: a read works on a fresh connection.
	if _, err := c.Get(ctx, []byte("k")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after: %v", err)
	}
}

func TestWriteRetriedWhenNotSent(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, []string{deadAddr(t), srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)
	if err := c.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if srv.count(wire.OpPut) != 1 {
		t.Fatalf("%d PUTs", srv.count(wire.OpPut))
	}

	// Nothing reachable: ErrUnavailable after the retries, well within the
	// deadline.
	c2 := newClient(t, []string{deadAddr(t)}, &Options{MaxRetries: 2})
	start := time.Now()
	err := c2.Put(ctx, []byte("k"), []byte("v"))
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrAmbiguous) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("took %v", el)
	}
}

func TestPipelining(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, []string{srv.addr}, &Options{ConnsPerEndpoint: 1})
	ctx := ctxT(t, 10*time.Second)
	const n = 500
	for i := range n {
		if err := c.Put(ctx, fmt.Appendf(nil, "k%03d", i), fmt.Appendf(nil, "value-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := c.Get(ctx, fmt.Appendf(nil, "k%03d", i))
			if err != nil {
				errs <- err
			} else if want := fmt.Sprintf("value-%d", i); string(v) != want {
				errs <- fmt.Errorf("key %d: got %q, want %q", i, v, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if srv.accepted() != 1 {
		t.Fatalf("%d connections, want 1", srv.accepted())
	}
	if srv.maxBatch() < 2 {
		t.Fatalf("requests never arrived back to back (max batch %d)", srv.maxBatch())
	}
	t.Logf("largest batch of pipelined requests: %d", srv.maxBatch())
}

func TestPipelineBound(t *testing.T) {
	release := make(chan struct{})
	srv := newFakeServer(t)
	var mu sync.Mutex
	inflight, most := 0, 0
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpGet {
			mu.Lock()
			inflight++
			most = max(most, inflight)
			mu.Unlock()
			<-release
			mu.Lock()
			inflight--
			mu.Unlock()
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, &Options{ConnsPerEndpoint: 1, MaxPipeline: 4})
	ctx := ctxT(t, 10*time.Second)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Get(ctx, fmt.Appendf(nil, "k%d", i))
		}()
	}
	time.Sleep(100 * time.Millisecond)
	// The server is stuck on the first GET: exactly MaxPipeline calls are
	// in flight on the connection, the others wait for a slot.
	c.mu.Lock()
	p := c.mu.pools[srv.addr]
	c.mu.Unlock()
	p.mu.Lock()
	cn := p.slots[0].c
	p.mu.Unlock()
	if cn == nil {
		t.Fatal("no connection")
	}
	if n := cn.load(); n != 4 {
		t.Errorf("%d calls in flight, want 4", n)
	}
	close(release)
	wg.Wait()
	if srv.count(wire.OpGet) != 20 {
		t.Fatalf("%d GETs", srv.count(wire.OpGet))
	}
	mu.Lock()
	defer mu.Unlock()
	if most != 1 {
		t.Fatalf("the server handled %d GETs at once", most)
	}
}

func TestDeadline(t *testing.T) {
	srv := newFakeServer(t)
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpGet || r.op == wire.OpPut {
			return fakeAction{hang: true}, true
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, nil)

	const d = 300 * time.Millisecond
	start := time.Now()
	_, err := c.Get(ctxT(t, d), []byte("k"))
	el := time.Since(start)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	if el < d-20*time.Millisecond || el > d+200*time.Millisecond {
		t.Fatalf("returned after %v, deadline %v", el, d)
	}

	// A write that times out after being sent is ambiguous.
	err = c.Put(ctxT(t, d), []byte("k"), []byte("v"))
	if !errors.Is(err, ErrAmbiguous) || !errors.Is(err, ErrTimeout) {
		t.Fatalf("Put: got %v, want ErrAmbiguous and ErrTimeout", err)
	}

	// Options.RequestTimeout bounds a call whose context has no deadline.
	c2 := newClient(t, []string{srv.addr}, &Options{RequestTimeout: d})
	start = time.Now()
	_, err = c2.Get(context.Background(), []byte("k"))
	if el := time.Since(start); !errors.Is(err, ErrTimeout) || el > d+200*time.Millisecond {
		t.Fatalf("RequestTimeout: %v after %v", err, el)
	}

	// A cancelled context is reported as such.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := c.Get(ctx, []byte("k")); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancel: %v", err)
	}
}

// TestStuckConnectionReplaced checks that a connection with no reply for
// RequestTimeout is closed, and that a read queued behind the stuck
// request is retried on a fresh connection.
func TestStuckConnectionReplaced(t *testing.T) {
	srv := newFakeServer(t)
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpGet && r.nth == 1 {
			return fakeAction{hang: true}, true
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, &Options{ConnsPerEndpoint: 1, RequestTimeout: 400 * time.Millisecond})
	if _, err := c.Get(ctxT(t, 100*time.Millisecond), []byte("a")); !errors.Is(err, ErrTimeout) {
		t.Fatalf("first Get: %v", err)
	}
	if _, err := c.Get(context.Background(), []byte("b")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Get: %v", err)
	}
	if srv.accepted() != 2 {
		t.Fatalf("%d connections, want 2", srv.accepted())
	}
}

func TestTokens(t *testing.T) {
	srv := newFakeServer(t)
	srv.setTokens("tok", "tok")
	c := newClient(t, []string{srv.addr}, &Options{ClientToken: "tok", OperatorToken: "tok"})
	ctx := ctxT(t, 5*time.Second)
	if err := c.Put(ctx, []byte("a"), []byte("b")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RemoveMember(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Health(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, []byte("a")); err != nil {
		t.Fatal(err)
	}
	want := func(op wire.Opcode, h string) {
		t.Helper()
		b, _ := hex.DecodeString(strings.ReplaceAll(h, " ", ""))
		if got := srv.requests(op)[0].frame; !bytes.Equal(got, b) {
			t.Errorf("%v frame:\n got  % x\n want % x", op, got, b)
		}
	}
	// The worked examples of the protocol.
	want(wire.OpPut, "17 00 00 00 01 43 4c 49 45 4e 54 00 03 00 74 6f 6b 01 00 00 00 01 00 00 00 61 62")
	want(wire.OpRemoveMember, "15 00 00 00 08 41 44 4d 49 4e 00 03 00 74 6f 6b 08 04 00 00 00 00 00 00 00")
	// HELLO and HEALTH are never prefixed; STATS and GET are data opcodes.
	want(wire.OpHello, "03 00 00 00 00 01 00")
	want(wire.OpHealth, "01 00 00 00 05")
	want(wire.OpStats, "0d 00 00 00 06 43 4c 49 45 4e 54 00 03 00 74 6f 6b")
	want(wire.OpGet, "12 00 00 00 02 43 4c 49 45 4e 54 00 03 00 74 6f 6b 01 00 00 00 61")

	// Without tokens: bare payloads, and the server's credential errors
	// come back as ServerError.
	c2 := newClient(t, []string{srv.addr}, nil)
	var se *ServerError
	if err := c2.Put(ctx, []byte("a"), []byte("b")); !errors.As(err, &se) || se.Message != wire.MsgClientCredential {
		t.Fatalf("no client token: %v", err)
	}
	if _, err := c2.RemoveMember(ctx, 4); !errors.As(err, &se) || se.Message != wire.MsgOperatorCredential {
		t.Fatalf("no operator token: %v", err)
	}
	if got := srv.requests(wire.OpRemoveMember)[1].frame; !bytes.Equal(got, []byte{9, 0, 0, 0, 8, 4, 0, 0, 0, 0, 0, 0, 0}) {
		t.Fatalf("REMOVE_MEMBER without token: % x", got)
	}
}

func TestLocalValidation(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)
	big := make([]byte, wire.MaxKeySize+1)
	for i := range big {
		big[i] = 'k'
	}
	checks := map[string]error{
		"put big key":     c.Put(ctx, big, nil),
		"put big value":   c.Put(ctx, []byte("k"), make([]byte, wire.MaxValueSize+1)),
		"put reserved":    c.Put(ctx, []byte("\x00idx/x"), []byte("v")),
		"delete reserved": c.Delete(ctx, []byte{0}),
		"delete big key":  c.Delete(ctx, big),
		"scan reserved":   func() error { _, err := c.Scan(ctx, []byte("\x00txn/")); return err }(),
		"get big key":     func() error { _, err := c.Get(ctx, big); return err }(),
		"health bad addr": func() error { _, err := c.Health(ctx, "nope"); return err }(),
	}
	for name, err := range checks {
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: got %v, want ErrInvalidArgument", name, err)
		}
	}
	if srv.accepted() != 0 {
		t.Fatalf("%d connections: refusals must be local", srv.accepted())
	}
	// The limits themselves are fine.
	if err := c.Put(ctx, big[:wire.MaxKeySize], make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
}

func TestNewValidation(t *testing.T) {
	bad := [][]string{nil, {}, {"localhost"}, {":7379"}, {"host:0"}, {"host:99999"}, {"host:port"}}
	for _, eps := range bad {
		if _, err := New(eps, nil); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("New(%q): %v", eps, err)
		}
	}
	for _, o := range []Options{{DialTimeout: -1}, {RequestTimeout: -time.Second}, {ConnsPerEndpoint: -1},
		{MaxPipeline: -1}, {ClientToken: strings.Repeat("x", 1<<16)}} {
		if _, err := New([]string{"h:1"}, &o); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("New(%+v): %v", o, err)
		}
	}
	c, err := New([]string{"h:1", "h:1", "[::1]:7379"}, &Options{MaxRetries: -1, MaxRedirects: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.opts.MaxRetries != 0 || c.opts.MaxRedirects != 0 || c.opts.DialTimeout != DefaultDialTimeout ||
		c.opts.MaxPipeline != DefaultMaxPipeline || len(c.mu.rotation) != 2 {
		t.Fatalf("options %+v, rotation %q", c.opts, c.mu.rotation)
	}
}

func TestHelloRefused(t *testing.T) {
	srv := newFakeServer(t)
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpHello {
			return errAction(wire.StatusInvalidArgument, fmt.Sprintf(wire.MsgUnsupportedVersion, 1)), true
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, nil)
	_, err := c.Get(ctxT(t, 5*time.Second), []byte("k"))
	var se *ServerError
	if !errors.As(err, &se) || se.Status != 1 || !strings.Contains(se.Message, "unsupported protocol version") {
		t.Fatalf("got %v, want a ServerError", err)
	}
	if srv.count(wire.OpHello) != 1 || srv.count(wire.OpGet) != 0 {
		t.Fatalf("%d HELLOs, %d GETs: a refusal is final", srv.count(wire.OpHello), srv.count(wire.OpGet))
	}

	srv2 := newFakeServer(t)
	srv2.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpHello {
			return fakeAction{payload: wire.AppendHello(nil, 2)}, true
		}
		return fakeAction{}, false
	})
	c2 := newClient(t, []string{srv2.addr}, nil)
	if _, err := c2.Get(ctxT(t, 5*time.Second), []byte("k")); !errors.Is(err, ErrProtocol) {
		t.Fatalf("version 2: %v", err)
	}
}

func TestClose(t *testing.T) {
	srv := newFakeServer(t)
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpGet && string(r.payload[4:]) == "hang" || r.op == wire.OpPut && string(r.payload[8:]) == "hang" {
			return fakeAction{hang: true}, true
		}
		return fakeAction{}, false
	})
	c, err := New([]string{srv.addr}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 5*time.Second)
	if err := c.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	getErr, putErr := make(chan error, 1), make(chan error, 1)
	// One at a time: the fake server stops reading a connection at a
	// request it hangs, so the second must find the first's connection
	// busy (and open another), not race it to an idle one.
	go func() { _, err := c.Get(ctx, []byte("hang")); getErr <- err }()
	waitUntil(t, "the server to get the hanging Get", func() bool { return srv.count(wire.OpGet) >= 1 })
	go func() { putErr <- c.Put(ctx, []byte("hang"), nil) }()
	waitUntil(t, "the server to get the hanging Put", func() bool { return srv.count(wire.OpPut) >= 2 })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-getErr; !errors.Is(err, ErrClosed) {
		t.Fatalf("in-flight Get: %v", err)
	}
	if err := <-putErr; !errors.Is(err, ErrAmbiguous) || !errors.Is(err, ErrClosed) {
		t.Fatalf("in-flight Put: %v", err)
	}
	if _, err := c.Get(ctx, []byte("k")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCloseStopsGoroutines checks that every goroutine the client starts is
// gone when Close returns (goleak-style, with runtime.NumGoroutine).
func TestCloseStopsGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	srvs := []*fakeServer{newFakeServer(t), newFakeServer(t)}
	c, err := New([]string{srvs[0].addr, srvs[1].addr}, &Options{ConnsPerEndpoint: 3})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 5*time.Second)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Put(ctx, fmt.Appendf(nil, "k%d", i), []byte("v"))
			c.Get(ctx, fmt.Appendf(nil, "k%d", i))
			c.Health(ctx, srvs[i%2].addr)
		}()
	}
	wg.Wait()
	if n := runtime.NumGoroutine(); n <= base {
		t.Fatalf("no connection goroutines running (%d <= %d)?", n, base)
	}
	c.Close()
	for _, s := range srvs {
		s.Close()
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConcurrentMixed(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 10*time.Second)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				k := fmt.Appendf(nil, "w%d/%d", w, i)
				if err := c.Put(ctx, k, k); err != nil {
					t.Error(err)
					return
				}
				if v, err := c.Get(ctx, k); err != nil || !bytes.Equal(v, k) {
					t.Errorf("Get %s: %q %v", k, v, err)
					return
				}
			}
			kvs, err := c.Scan(ctx, fmt.Appendf(nil, "w%d/", w))
			if err != nil || len(kvs) != 100 {
				t.Errorf("Scan: %d %v", len(kvs), err)
			}
		}()
	}
	wg.Wait()
}

func TestTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	srv := newFakeServerTLS(t, &tls.Config{Certificates: []tls.Certificate{cert}})
	c := newClient(t, []string{srv.addr}, &Options{TLS: &tls.Config{RootCAs: pool}})
	ctx := ctxT(t, 5*time.Second)
	if err := c.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, []byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("Get: %q %v", v, err)
	}
	// A client that does not trust the certificate cannot connect; that is
	// a connection failure, so a write is not ambiguous.
	c2 := newClient(t, []string{srv.addr}, &Options{TLS: &tls.Config{}, MaxRetries: -1})
	if err := c2.Put(ctx, []byte("k"), []byte("v")); err == nil || errors.Is(err, ErrAmbiguous) {
		t.Fatalf("untrusted: %v", err)
	}
}

// selfSigned makes a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kayadb test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// TestWriteErrorIsAmbiguous: a PUT or DELETE answered with ERROR (the
// server could not confirm it) may have been applied: it matches
// ErrAmbiguous as well as ErrServer. A refused credential does not.
func TestWriteErrorIsAmbiguous(t *testing.T) {
	srv := newFakeServer(t)
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		switch r.op {
		case wire.OpPut:
			return errAction(wire.StatusError, "kv: leadership changed while the write was pending; it may or may not have been applied"), true
		case wire.OpDelete:
			return errAction(wire.StatusError, wire.MsgClientCredential), true
		}
		return fakeAction{}, false
	})
	c, err := New([]string{srv.addr}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var se *ServerError
	err = c.Put(ctx, []byte("k"), []byte("v"))
	if !errors.Is(err, ErrAmbiguous) || !errors.Is(err, ErrServer) || !errors.As(err, &se) || se.Status != uint16(wire.StatusError) {
		t.Fatalf("put answered ERROR: %v", err)
	}
	err = c.Delete(ctx, []byte("k"))
	if errors.Is(err, ErrAmbiguous) || !errors.As(err, &se) || se.Message != wire.MsgClientCredential {
		t.Fatalf("delete refused for its credential: %v", err)
	}
}

// waitUntil polls cond every 5 ms and fails the test after 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestIdleConnectionClosedByServer: with no reader goroutine, a connection
// the server closed while it was idle is found before a call is written
// on it, so a write goes out on a fresh connection instead of failing as
// maybe sent. Bytes nobody asked for, sent while idle, break it the same
// way.
func TestIdleConnectionClosedByServer(t *testing.T) {
	for _, tc := range []struct {
		name string
		act  fakeAction
	}{
		{"closed", fakeAction{closeAfter: true}},
		{"unasked bytes", fakeAction{extra: wire.AppendResponse(nil, wire.StatusOK, nil)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t)
			srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
				if r.op == wire.OpPut && r.nth == 1 {
					act := tc.act
					act.st = wire.StatusOK
					return act, true
				}
				return fakeAction{}, false
			})
			c := newClient(t, []string{srv.addr}, &Options{ConnsPerEndpoint: 1})
			ctx := ctxT(t, 10*time.Second)
			if err := c.Put(ctx, []byte("a"), []byte("1")); err != nil {
				t.Fatal(err)
			}
			// Let the server's close or its extra bytes arrive.
			for i := 0; ; i++ {
				srv.mu.Lock()
				open := len(srv.mu.conns)
				srv.mu.Unlock()
				if open == 0 || (tc.act.extra != nil && i >= 20) {
					break
				}
				if i > 500 {
					t.Fatal("the server never closed the connection")
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(2 * idlePeekAfter) // only a connection idle this long is looked at
			if err := c.Put(ctx, []byte("b"), []byte("2")); err != nil {
				t.Fatalf("Put after the idle connection broke: %v", err)
			}
			if n := srv.accepted(); n != 2 {
				t.Fatalf("%d connections, want 2", n)
			}
			if n := srv.count(wire.OpPut); n != 2 {
				t.Fatalf("the server got %d PUTs, want 2", n)
			}
		})
	}
}

// TestReaderLeavesInsideAFrame: a caller reading the replies whose context
// ends while half of a frame has arrived leaves without consuming it; the
// next caller on the connection reads that frame whole and then its own.
func TestReaderLeavesInsideAFrame(t *testing.T) {
	srv := newFakeServer(t)
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpGet && r.nth == 1 {
			return fakeAction{st: wire.StatusOK, payload: []byte("slow value"), split: 400 * time.Millisecond}, true
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, &Options{ConnsPerEndpoint: 1})
	ctx := ctxT(t, 10*time.Second)
	if err := c.Put(ctx, []byte("b"), []byte("bee")); err != nil {
		t.Fatal(err)
	}
	errA := make(chan error, 1)
	go func() {
		_, err := c.Get(ctxT(t, 150*time.Millisecond), []byte("a"))
		errA <- err
	}()
	for srv.count(wire.OpGet) < 1 {
		time.Sleep(5 * time.Millisecond)
	}
	// The second GET is pipelined behind the first on the one connection.
	v, err := c.Get(ctx, []byte("b"))
	if err != nil || string(v) != "bee" {
		t.Fatalf("second Get: %q, %v", v, err)
	}
	if err := <-errA; !errors.Is(err, ErrTimeout) {
		t.Fatalf("first Get: %v, want ErrTimeout", err)
	}
	if n := srv.accepted(); n != 1 {
		t.Fatalf("%d connections, want 1 (the interrupted read must not break it)", n)
	}
}

// diskFullRefusal is a disk-full node's refusal of a write, as the server
// words it (internal/server diskfull.go).
const diskFullRefusal = "disk full on node 2: 1.5 MiB free, below the 4.0 MiB low-water mark (1.5 MiB free on /var/lib/kayadb); writes are refused until space is freed — free space or add capacity"

// TestDiskFullRefusalIsNotAmbiguous: a disk-full node refuses a write
// before proposing it, so the client reports ErrDiskFull (the write was
// not applied) and not ErrAmbiguous; any other ERROR reply to a write
// stays ambiguous.
func TestDiskFullRefusalIsNotAmbiguous(t *testing.T) {
	const refusal = diskFullRefusal
	const lost = "kv: leadership changed while the write was pending; it may or may not have been applied"
	srv := newFakeServer(t)
	msg := refusal
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		switch r.op {
		case wire.OpPut, wire.OpDelete, wire.OpKayaTxn:
			return fakeAction{st: wire.StatusError, payload: wire.AppendError(nil, msg)}, true
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)
	check := func(what string, err error) {
		t.Helper()
		var se *ServerError
		if !errors.Is(err, ErrDiskFull) || errors.Is(err, ErrAmbiguous) || !errors.As(err, &se) || se.Message != refusal {
			t.Errorf("%s: got %v, want ErrDiskFull (a *ServerError with the refusal) without ErrAmbiguous", what, err)
		}
	}
	check("Put", c.Put(ctx, []byte("k"), []byte("v")))
	check("Delete", c.Delete(ctx, []byte("k")))
	_, err := c.Txn(ctx).Then(OpPut([]byte("k"), []byte("v"))).Commit()
	check("conditional write", err)
	if n := srv.count(wire.OpPut); n != 1 {
		t.Errorf("the refused PUT was sent %d times, want 1 (no retry of a refusal)", n)
	}

	msg = lost
	if err := c.Put(ctx, []byte("k"), []byte("v")); !errors.Is(err, ErrAmbiguous) || errors.Is(err, ErrDiskFull) {
		t.Errorf("Put answered %q: got %v, want ErrAmbiguous and not ErrDiskFull", lost, err)
	}
}

// TestRequestTimeoutKeepsAShorterDeadline: a call whose context ends within
// RequestTimeout runs under that context as it is (no timer of the
// client's own per call); a longer or missing deadline is cut down to
// RequestTimeout.
func TestRequestTimeoutKeepsAShorterDeadline(t *testing.T) {
	c := &Client{opts: Options{RequestTimeout: time.Second}, clock: newDeadlineClock(clockPeriod(time.Second))}
	short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if got, done := c.withRequestTimeout(short); got != short {
		t.Error("a deadline within RequestTimeout was wrapped")
	} else {
		done()
		if short.Err() != nil {
			t.Error("the returned cancel ended the caller's context")
		}
	}
	if n := testing.AllocsPerRun(100, func() { _, done := c.withRequestTimeout(short); done() }); n != 0 {
		t.Errorf("%v allocations per call with a short deadline", n)
	}
	long, cancel2 := context.WithTimeout(context.Background(), time.Hour)
	defer cancel2()
	for _, parent := range []context.Context{context.Background(), long} {
		got, done := c.withRequestTimeout(parent)
		dl, ok := got.Deadline()
		if !ok || time.Until(dl) > time.Second {
			t.Errorf("deadline %v (set %v), want within RequestTimeout", time.Until(dl), ok)
		}
		done()
	}
}

// TestRequestTimeoutWhileOthersAreAnswered: RequestTimeout bounds each
// call, also when the connection keeps receiving replies for others (which
// keep its watchdog from firing). Five callers share one connection to a
// server that answers one request every 250 ms: the first two get their
// replies, the others must give up at their deadline (600 ms) rather than
// take a reply after it. One of them is reading the connection when its
// deadline passes (its read is cut by the socket's read deadline), the
// others wait for the read token (the client's deadline clock wakes them).
func TestRequestTimeoutWhileOthersAreAnswered(t *testing.T) {
	srv := newFakeServer(t)
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpGet {
			return fakeAction{st: wire.StatusNotFound, delay: 250 * time.Millisecond}, true
		}
		return fakeAction{}, false
	})
	const rt = 600 * time.Millisecond
	c := newClient(t, []string{srv.addr}, &Options{ConnsPerEndpoint: 1, RequestTimeout: rt})
	if _, err := c.Health(ctxT(t, 5*time.Second), ""); err != nil { // dial first
		t.Fatal(err)
	}
	before := timedStarted.Load()
	type outcome struct {
		err error
		el  time.Duration
	}
	out := make(chan outcome, 5)
	for i := range 5 {
		go func() {
			start := time.Now()
			_, err := c.Get(context.Background(), []byte{byte('a' + i)})
			out <- outcome{err, time.Since(start)}
		}()
	}
	answered, timedOut := 0, 0
	for range 5 {
		o := <-out
		switch {
		case errors.Is(o.err, ErrNotFound):
			answered++
			if o.el > rt+clockPeriod(rt) {
				t.Errorf("a call was answered after %v, past its deadline %v", o.el, rt)
			}
		case errors.Is(o.err, ErrTimeout):
			timedOut++
			if o.el < rt-10*time.Millisecond {
				t.Errorf("a call timed out after %v, before its deadline %v", o.el, rt)
			}
		default:
			t.Errorf("Get: %v after %v", o.err, o.el)
		}
	}
	if answered == 0 || timedOut == 0 {
		t.Errorf("%d answered and %d timed out; want some of each", answered, timedOut)
	}
	if n := timedStarted.Load() - before; n != 0 {
		t.Errorf("%d calls started a timer of their own", n)
	}
}

// TestNoTimerPerCall: calls under RequestTimeout (no deadline of the
// caller's) never start a runtime timer of their own (deadline.go), from
// one caller or from many sharing connections. (A dial does: it is bounded
// by DialTimeout as well; so the connections are made first.)
func TestNoTimerPerCall(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, []string{srv.addr}, &Options{ConnsPerEndpoint: 2})
	run := func() {
		for i := range 50 {
			if err := c.Put(context.Background(), []byte{'k', byte(i)}, []byte("v")); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Go(func() {
				for i := range 50 {
					if _, err := c.Get(context.Background(), []byte{'k', byte(g), byte(i)}); err != nil && !errors.Is(err, ErrNotFound) {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	// A call without a deadline of its own runs under a callCtx, whose
	// timer is the one counted below; context.WithTimeout would start one
	// the count cannot see.
	ctx, stop := c.withRequestTimeout(context.Background())
	if _, ok := ctx.(*callCtx); !ok {
		t.Fatalf("a call runs under %T, want *callCtx", ctx)
	}
	stop()
	run() // dials both connections
	if srv.accepted() != 2 {
		t.Fatalf("%d connections, want 2", srv.accepted())
	}
	before := timedStarted.Load()
	run()
	if n := timedStarted.Load() - before; n != 0 {
		t.Errorf("%d of 850 calls started a timer of their own", n)
	}
}

// TestPutAllocations bounds what one Put allocates in the client, so that
// a successful write does not pay for error handling it does not need
// (writeOutcome's errors.As) or for growing its payload.
func TestPutAllocations(t *testing.T) {
	srv := newFakeServer(t)
	c := newClient(t, []string{srv.addr}, nil)
	key, value := []byte("key"), make([]byte, 256)
	if err := c.Put(context.Background(), key, value); err != nil {
		t.Fatal(err)
	}
	n := testing.AllocsPerRun(200, func() {
		if err := c.Put(context.Background(), key, value); err != nil {
			t.Fatal(err)
		}
	})
	// The fake server runs in this process and its allocations count too:
	// 16 in all here, 19 when the payload grew twice and a successful
	// write went through errors.As.
	t.Logf("%v allocations per Put", n)
	if n > 17 {
		t.Errorf("%v allocations per Put, want at most 17", n)
	}
}
