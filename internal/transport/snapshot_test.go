package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/kayadb/kayadb/internal/snap"
	"github.com/kayadb/kayadb/internal/vfs"
)

// snapHandler is a Handler whose ReceiveSnapshot runs f.
type snapHandler struct {
	recorder
	calls atomic.Int64
	f     func(from uint64, r io.Reader) error
}

func (h *snapHandler) ReceiveSnapshot(from uint64, r io.Reader) error {
	h.calls.Add(1)
	return h.f(from, r)
}

// payloadReceiver returns a snapHandler that reads one length-prefixed
// payload (see writePayload), then returns ret; every payload read in full
// and every read error go to the channels.
func payloadReceiver(ret error) (*snapHandler, chan []byte, chan error) {
	got, errs := make(chan []byte, 16), make(chan error, 16)
	h := &snapHandler{f: func(from uint64, r io.Reader) error {
		p, err := readPayload(r)
		if err != nil {
			errs <- err
			return err
		}
		got <- p
		return ret
	}}
	return h, got, errs
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 9))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// writePayload writes a length prefix and p, in chunks of uneven sizes.
func writePayload(w io.Writer, p []byte) error {
	if _, err := w.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(p)))); err != nil {
		return err
	}
	for chunk := 1; len(p) > 0; chunk = (chunk*3 + 1) % (100 << 10) {
		n := min(chunk+1, len(p))
		if _, err := w.Write(p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

func readPayload(r io.Reader) ([]byte, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	p := make([]byte, binary.LittleEndian.Uint64(hdr[:]))
	if _, err := io.ReadFull(r, p); err != nil {
		return nil, err
	}
	return p, nil
}

// doneChan returns a done func for SendSnapshot and the channel it reports
// on; calling done twice fails the test.
func doneChan(t *testing.T) (func(error), chan error) {
	ch := make(chan error, 1)
	var calls atomic.Int64
	return func(err error) {
		if calls.Add(1) > 1 {
			t.Errorf("done called twice (second time with %v)", err)
			return
		}
		ch <- err
	}, ch
}

// waitErr waits for done's report. The 10 s limit only turns a hang into a
// failure.
func waitErr(t *testing.T, ch chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("done was never called")
		return nil
	}
}

func waitBytes(t *testing.T, ch chan []byte) []byte {
	t.Helper()
	select {
	case p := <-ch:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never received the payload")
		return nil
	}
}

// closeWithin closes tr, failing the test if that hangs.
func closeWithin(t *testing.T, tr Transport) {
	t.Helper()
	closed := make(chan struct{})
	go func() { _ = tr.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs")
	}
}

// tcpPair starts transports 1 and 2, each with the other in its roster.
func tcpPair(t *testing.T, h1, h2 Handler) (*TCP, *TCP) {
	return tcpPairToken(t, h1, h2, nil)
}

// tcpPairToken is tcpPair with a peer token on both ends.
func tcpPairToken(t *testing.T, h1, h2 Handler, token []byte) (*TCP, *TCP) {
	t.Helper()
	l1, l2 := listen(t), listen(t)
	t1 := NewTCP(TCPOptions{ID: 1, Listener: l1, Handler: h1, PeerToken: token})
	t2 := NewTCP(TCPOptions{ID: 2, Listener: l2, Handler: h2, PeerToken: token})
	peers := map[uint64]string{1: l1.Addr().String(), 2: l2.Addr().String()}
	t1.SetPeers(peers)
	t2.SetPeers(peers)
	return t1, t2
}

// memPair is tcpPair on a MemNetwork.
func memPair(t *testing.T, h1, h2 Handler) (*MemNetwork, *MemTransport, *MemTransport) {
	t.Helper()
	n := NewMemNetwork(1)
	t1, t2 := n.Transport(1, h1), n.Transport(2, h2)
	peers := map[uint64]string{1: "", 2: ""}
	t1.SetPeers(peers)
	t2.SetPeers(peers)
	return n, t1, t2
}

// transports runs a test against both implementations (TCP with and
// without a peer token), each as a subtest that checks for leaked
// goroutines. pair starts two connected endpoints,
// nodes 1 and 2.
func transports(t *testing.T, run func(t *testing.T, pair func(h1, h2 Handler) (Transport, Transport))) {
	t.Run("tcp", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		run(t, func(h1, h2 Handler) (Transport, Transport) { return tcpPair(t, h1, h2) })
	})
	t.Run("tcp-token", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		run(t, func(h1, h2 Handler) (Transport, Transport) { return tcpPairToken(t, h1, h2, testToken) })
	})
	t.Run("mem", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		run(t, func(h1, h2 Handler) (Transport, Transport) {
			_, t1, t2 := memPair(t, h1, h2)
			return t1, t2
		})
	})
}

// TestSnapshotDelivery: a few MiB arrive byte for byte, done(nil) is
// called, and the counters on both sides move.
func TestSnapshotDelivery(t *testing.T) {
	transports(t, func(t *testing.T, pair func(h1, h2 Handler) (Transport, Transport)) {
		h2, got, _ := payloadReceiver(nil)
		var from atomic.Uint64
		inner := h2.f
		h2.f = func(f uint64, r io.Reader) error { from.Store(f); return inner(f, r) }
		t1, t2 := pair(&recorder{}, h2)
		defer t1.Close()
		defer t2.Close()
		payload := randomBytes(5<<20+17, 1)
		done, errc := doneChan(t)
		t1.SendSnapshot(2, func(w io.Writer) error { return writePayload(w, payload) }, done)
		if err := waitErr(t, errc); err != nil {
			t.Fatalf("done(%v)", err)
		}
		if p := waitBytes(t, got); !bytes.Equal(p, payload) {
			t.Fatalf("received %d bytes that differ from the %d sent", len(p), len(payload))
		}
		if from.Load() != 1 {
			t.Fatalf("handler saw the stream as coming from %d", from.Load())
		}
		if s := t1.Stats(); s.SnapshotsSent != 1 || s.SnapshotsFailed != 0 {
			t.Fatalf("sender stats %+v", s)
		}
		// done(nil) means acknowledged: the receiver has counted it.
		if s := t2.Stats(); s.SnapshotsRecv != 1 || s.SnapshotsFailed != 0 {
			t.Fatalf("receiver stats %+v", s)
		}
		// A second transfer on the same transports.
		done, errc = doneChan(t)
		t1.SendSnapshot(2, func(w io.Writer) error { return writePayload(w, payload[:100]) }, done)
		if err := waitErr(t, errc); err != nil {
			t.Fatalf("second transfer: done(%v)", err)
		}
		if p := waitBytes(t, got); !bytes.Equal(p, payload[:100]) {
			t.Fatal("second transfer: bytes differ")
		}
		if s := t1.Stats(); s.SnapshotsSent != 2 {
			t.Fatalf("sender stats %+v", s)
		}
	})
}

// TestSnapshotCheckpointEndToEnd sends a checkpoint with the snap stream
// format over the transport.
func TestSnapshotCheckpointEndToEnd(t *testing.T) {
	transports(t, func(t *testing.T, pair func(h1, h2 Handler) (Transport, Transport)) {
		src := vfs.NewMem()
		files := map[string][]byte{"MANIFEST-000003": []byte("manifest"), "000001.sst": randomBytes(3<<20, 2), "000002.sst": randomBytes(700<<10, 3), "EMPTY": nil}
		must(t, src.MkdirAll("/snap", 0o700))
		for name, data := range files {
			f, err := src.Create(filepath.Join("/snap", name))
			must(t, err)
			_, err = f.Write(data)
			must(t, err)
			must(t, f.Close())
		}
		dst := vfs.NewMem()
		msgs := make(chan *pb.Message, 1)
		h2 := &snapHandler{f: func(from uint64, r io.Reader) error {
			m, err := snap.ReadStream(r, dst, "/recv", nil)
			if err == nil {
				msgs <- m
			}
			return err
		}}
		t1, t2 := pair(&recorder{}, h2)
		defer t1.Close()
		defer t2.Close()
		m := &pb.Message{Type: new(pb.MsgSnap), From: new(uint64(1)), To: new(uint64(2)), Term: new(uint64(4)),
			Snapshot: &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(uint64(99)), Term: new(uint64(4))}}}
		done, errc := doneChan(t)
		t1.SendSnapshot(2, func(w io.Writer) error { return snap.WriteStream(w, src, "/snap", m, nil) }, done)
		if err := waitErr(t, errc); err != nil {
			t.Fatalf("done(%v)", err)
		}
		if got := <-msgs; !proto.Equal(got, m) {
			t.Fatalf("message %v, want %v", got, m)
		}
		for name, data := range files {
			f, err := dst.Open(filepath.Join("/recv", name))
			must(t, err)
			b, err := io.ReadAll(f)
			must(t, err)
			_ = f.Close()
			if !bytes.Equal(b, data) {
				t.Fatalf("%s differs", name)
			}
		}
	})
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotReceiverRefuses: the handler reads everything, then fails:
// the sender hears about it.
func TestSnapshotReceiverRefuses(t *testing.T) {
	transports(t, func(t *testing.T, pair func(h1, h2 Handler) (Transport, Transport)) {
		h2, got, _ := payloadReceiver(errors.New("checkpoint does not open"))
		t1, t2 := pair(&recorder{}, h2)
		defer t1.Close()
		defer t2.Close()
		payload := randomBytes(300<<10, 4)
		done, errc := doneChan(t)
		t1.SendSnapshot(2, func(w io.Writer) error { return writePayload(w, payload) }, done)
		if err := waitErr(t, errc); err == nil {
			t.Fatal("done(nil) although the receiver refused the snapshot")
		}
		if p := waitBytes(t, got); !bytes.Equal(p, payload) {
			t.Fatal("bytes differ")
		}
		if s := t1.Stats(); s.SnapshotsSent != 0 || s.SnapshotsFailed != 1 {
			t.Fatalf("sender stats %+v", s)
		}
		waitUntil(t, "the receiver to count the failure", func() bool { return t2.Stats().SnapshotsFailed == 1 })
		if s := t2.Stats(); s.SnapshotsRecv != 0 {
			t.Fatalf("receiver stats %+v", s)
		}
	})
}

// TestSnapshotReceiverFailsEarly: the handler refuses the stream without
// reading it all (a bad header).
func TestSnapshotReceiverFailsEarly(t *testing.T) {
	transports(t, func(t *testing.T, pair func(h1, h2 Handler) (Transport, Transport)) {
		h2 := &snapHandler{f: func(uint64, io.Reader) error { return errors.New("not a snapshot stream") }}
		t1, t2 := pair(&recorder{}, h2)
		defer t1.Close()
		defer t2.Close()
		payload := randomBytes(4<<20, 5)
		done, errc := doneChan(t)
		t1.SendSnapshot(2, func(w io.Writer) error { return writePayload(w, payload) }, done)
		if err := waitErr(t, errc); err == nil {
			t.Fatal("done(nil) although the receiver refused the snapshot")
		}
		if s := t1.Stats(); s.SnapshotsFailed != 1 || s.SnapshotsSent != 0 {
			t.Fatalf("sender stats %+v", s)
		}
	})
}

// TestSnapshotWriterFails: the sender's write func fails midway: the
// receiver's handler sees the stream end early, done gets the error.
func TestSnapshotWriterFails(t *testing.T) {
	transports(t, func(t *testing.T, pair func(h1, h2 Handler) (Transport, Transport)) {
		h2, got, readErrs := payloadReceiver(nil)
		t1, t2 := pair(&recorder{}, h2)
		defer t1.Close()
		defer t2.Close()
		errDisk := errors.New("reading the checkpoint failed")
		payload := randomBytes(2<<20, 6)
		done, errc := doneChan(t)
		t1.SendSnapshot(2, func(w io.Writer) error {
			// Claim the whole payload, send half of it.
			if _, err := w.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(payload)))); err != nil {
				return err
			}
			if _, err := w.Write(payload[:len(payload)/2]); err != nil {
				return err
			}
			return errDisk
		}, done)
		err := waitErr(t, errc)
		if err == nil {
			t.Fatal("done(nil) although the stream was cut")
		}
		select {
		case rerr := <-readErrs:
			if rerr == nil {
				t.Fatal("the handler read no error")
			}
		case p := <-got:
			t.Fatalf("the handler received %d bytes in full from a cut stream", len(p))
		case <-time.After(10 * time.Second):
			t.Fatal("the handler never saw the stream end")
		}
		if s := t1.Stats(); s.SnapshotsFailed != 1 || s.SnapshotsSent != 0 {
			t.Fatalf("sender stats %+v", s)
		}
		waitUntil(t, "the receiver to count the failure", func() bool { return t2.Stats().SnapshotsFailed == 1 })
		if s := t2.Stats(); s.SnapshotsRecv != 0 {
			t.Fatalf("receiver stats %+v", s)
		}
	})
}

// TestSnapshotWriterFailsAfterStream: a write func that returns an error
// after producing a complete stream still fails the transfer (done reports
// the sender's outcome too), and done comes only after write returned.
func TestSnapshotWriterFailsAfterStream(t *testing.T) {
	transports(t, func(t *testing.T, pair func(h1, h2 Handler) (Transport, Transport)) {
		h2, got, _ := payloadReceiver(nil)
		t1, t2 := pair(&recorder{}, h2)
		defer t1.Close()
		defer t2.Close()
		errLate := errors.New("late failure")
		var writeReturned atomic.Bool
		done, errc := doneChan(t)
		t1.SendSnapshot(2, func(w io.Writer) error {
			defer writeReturned.Store(true)
			if err := writePayload(w, []byte("complete")); err != nil {
				return err
			}
			// Let the receiver finish first, so the transfer fails only
			// because of this return value.
			select {
			case <-got:
			case <-time.After(10 * time.Second):
				return errors.New("the receiver never got the payload")
			}
			return errLate
		}, func(err error) {
			if !writeReturned.Load() {
				t.Error("done called while write was still running")
			}
			done(err)
		})
		if err := waitErr(t, errc); !errors.Is(err, errLate) {
			t.Fatalf("done(%v), want the write func's error", err)
		}
	})
}

// TestSnapshotSenderClose: closing the sending transport mid-stream aborts
// the transfer: done gets an error before Close returns, the receiver's
// handler sees the stream fail, and no goroutine is left (transports checks
// with goleak).
func TestSnapshotSenderClose(t *testing.T) {
	transports(t, func(t *testing.T, pair func(h1, h2 Handler) (Transport, Transport)) {
		endless(t, pair, func(t1, t2 Transport) Transport { return t1 }, true)
	})
}

// TestSnapshotReceiverClose: closing the receiving transport mid-stream
// aborts the transfer too. The in-memory transport's Close also waits for
// done (the transfer's goroutines are shared by both ends).
func TestSnapshotReceiverClose(t *testing.T) {
	transports(t, func(t *testing.T, pair func(h1, h2 Handler) (Transport, Transport)) {
		endless(t, pair, func(t1, t2 Transport) Transport { return t2 }, false)
	})
	t.Run("mem-waits", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		endless(t, func(h1, h2 Handler) (Transport, Transport) {
			_, t1, t2 := memPair(t, h1, h2)
			return t1, t2
		}, func(t1, t2 Transport) Transport { return t2 }, true)
	})
}

// endless starts a transfer that never ends by itself, closes the endpoint
// pick chooses once 1 MiB has arrived, and checks that the transfer failed
// on both sides (and, with doneBeforeClose, that done had run when Close
// returned).
func endless(t *testing.T, pair func(h1, h2 Handler) (Transport, Transport), pick func(t1, t2 Transport) Transport, doneBeforeClose bool) {
	t.Helper()
	flowing := make(chan struct{})
	handlerErr := make(chan error, 1)
	h2 := &snapHandler{f: func(from uint64, r io.Reader) error {
		buf := make([]byte, 64<<10)
		total := 0
		for {
			n, err := r.Read(buf)
			total += n
			if total >= 1<<20 && total-n < 1<<20 {
				close(flowing)
			}
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF // the stream never ends
				}
				handlerErr <- err
				return err
			}
		}
	}}
	t1, t2 := pair(&recorder{}, h2)
	defer t1.Close()
	defer t2.Close()
	var doneCalled atomic.Bool
	done, errc := doneChan(t)
	t1.SendSnapshot(2, func(w io.Writer) error {
		chunk := make([]byte, 32<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				return err
			}
		}
	}, func(err error) {
		doneCalled.Store(true)
		done(err)
	})
	select {
	case <-flowing:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream never started")
	}
	closeWithin(t, pick(t1, t2))
	if doneBeforeClose && !doneCalled.Load() {
		t.Fatal("Close returned before done was called")
	}
	if err := waitErr(t, errc); err == nil {
		t.Fatal("done(nil) for an aborted transfer")
	}
	select {
	case err := <-handlerErr:
		if err == nil {
			t.Fatal("the handler saw no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never returned")
	}
	closeWithin(t, t1)
	closeWithin(t, t2)
	if s := t1.Stats(); s.SnapshotsFailed != 1 || s.SnapshotsSent != 0 {
		t.Fatalf("sender stats %+v", s)
	}
	if s := t2.Stats(); s.SnapshotsFailed != 1 || s.SnapshotsRecv != 0 {
		t.Fatalf("receiver stats %+v", s)
	}
}

// TestTCPSnapshotCloseCancelsDial: Close does not wait for a snapshot
// connection that is still being dialled; it cancels the dial.
func TestTCPSnapshotCloseCancelsDial(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dialing := make(chan struct{}, 2)
	tr := NewTCP(TCPOptions{ID: 1, Handler: &recorder{}, Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		select {
		case dialing <- struct{}{}:
		default:
		}
		<-ctx.Done() // a peer that never answers
		return nil, ctx.Err()
	}})
	tr.SetPeers(map[uint64]string{2: "192.0.2.1:7000"})
	done, errc := doneChan(t)
	tr.SendSnapshot(2, func(w io.Writer) error { return nil }, done)
	<-dialing
	closeWithin(t, tr)
	err := waitErr(t, errc)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("done(%v), want the dial cancelled by Close", err)
	}
}

// TestSnapshotFromStranger: a receiver refuses a snapshot from an id outside
// its roster without running its handler.
func TestSnapshotFromStranger(t *testing.T) {
	transports(t, func(t *testing.T, pair func(h1, h2 Handler) (Transport, Transport)) {
		h2, _, _ := payloadReceiver(nil)
		t1, t2 := pair(&recorder{}, h2)
		defer t1.Close()
		defer t2.Close()
		// Node 2 no longer lists node 1 (node 1 still lists node 2).
		switch tr := t2.(type) {
		case *TCP:
			tr.SetPeers(map[uint64]string{2: "", 3: "127.0.0.1:1"})
		case *MemTransport:
			tr.SetPeers(map[uint64]string{2: "", 3: ""})
		}
		for _, size := range []int{10, 3 << 20} {
			done, errc := doneChan(t)
			payload := randomBytes(size, 7)
			t1.SendSnapshot(2, func(w io.Writer) error { return writePayload(w, payload) }, done)
			if err := waitErr(t, errc); err == nil {
				t.Fatalf("%d bytes: a stranger's snapshot was acknowledged", size)
			}
		}
		if n := h2.calls.Load(); n != 0 {
			t.Fatalf("the handler ran %d times for a stranger's snapshot", n)
		}
		if s := t1.Stats(); s.SnapshotsFailed != 2 || s.SnapshotsSent != 0 {
			t.Fatalf("sender stats %+v", s)
		}
		if s := t2.Stats(); s.SnapshotsRecv != 0 {
			t.Fatalf("receiver stats %+v", s)
		}
		if s := t2.Stats(); s.RejectedFrom == 0 {
			t.Fatalf("receiver stats %+v", s)
		}
	})
}

// TestSnapshotUnknownPeerAndClosed: a snapshot to an id outside the
// sender's roster, or from a closed transport, fails at once.
func TestSnapshotUnknownPeerAndClosed(t *testing.T) {
	transports(t, func(t *testing.T, pair func(h1, h2 Handler) (Transport, Transport)) {
		h2, _, _ := payloadReceiver(nil)
		t1, t2 := pair(&recorder{}, h2)
		defer t2.Close()
		var writes atomic.Int64
		write := func(w io.Writer) error { writes.Add(1); return writePayload(w, []byte("x")) }
		done, errc := doneChan(t)
		t1.SendSnapshot(9, write, done)
		if err := waitErr(t, errc); err == nil {
			t.Fatal("snapshot to an unknown peer: done(nil)")
		}
		closeWithin(t, t1)
		done, errc = doneChan(t)
		t1.SendSnapshot(2, write, done)
		if err := waitErr(t, errc); err == nil {
			t.Fatal("snapshot from a closed transport: done(nil)")
		}
		if writes.Load() != 0 {
			t.Fatal("write ran for a transfer that could not start")
		}
		if s := t1.Stats(); s.SnapshotsFailed != 2 {
			t.Fatalf("sender stats %+v", s)
		}
		if h2.calls.Load() != 0 {
			t.Fatal("the handler ran")
		}
	})
}

// TestSnapshotCounters runs a success, a refusal and a cut stream and
// checks the exact counters on both sides.
func TestSnapshotCounters(t *testing.T) {
	transports(t, func(t *testing.T, pair func(h1, h2 Handler) (Transport, Transport)) {
		var refuse atomic.Bool
		h2 := &snapHandler{f: func(from uint64, r io.Reader) error {
			if _, err := readPayload(r); err != nil {
				return err
			}
			if refuse.Load() {
				return errors.New("refused")
			}
			return nil
		}}
		t1, t2 := pair(&recorder{}, h2)
		defer t1.Close()
		defer t2.Close()
		send := func(write func(io.Writer) error) error {
			done, errc := doneChan(t)
			t1.SendSnapshot(2, write, done)
			return waitErr(t, errc)
		}
		ok := func(w io.Writer) error { return writePayload(w, []byte("snapshot")) }
		for i := 0; i < 3; i++ {
			if err := send(ok); err != nil {
				t.Fatalf("transfer %d: %v", i, err)
			}
		}
		refuse.Store(true)
		if err := send(ok); err == nil {
			t.Fatal("refused transfer: done(nil)")
		}
		refuse.Store(false)
		if err := send(func(w io.Writer) error {
			_, _ = w.Write(binary.LittleEndian.AppendUint64(nil, 100))
			return errors.New("cut")
		}); err == nil {
			t.Fatal("cut transfer: done(nil)")
		}
		waitUntil(t, "receiver counters", func() bool {
			s := t2.Stats()
			return s.SnapshotsRecv == 3 && s.SnapshotsFailed == 2
		})
		if s := t1.Stats(); s.SnapshotsSent != 3 || s.SnapshotsFailed != 2 || s.SnapshotsRecv != 0 {
			t.Fatalf("sender stats %+v", s)
		}
		if s := t2.Stats(); s.SnapshotsSent != 0 {
			t.Fatalf("receiver stats %+v", s)
		}
	})
}

// TestTCPSnapshotHandshake checks the connection a snapshot travels on: a
// kind-1 hello from 1 to 2 (without a peer token), the acceptor's reply,
// the stream, one ack byte back.
func TestTCPSnapshotHandshake(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	l := listen(t)
	r := &recorder{}
	tr := NewTCP(TCPOptions{ID: 1, Handler: r})
	defer tr.Close()
	tr.SetPeers(map[uint64]string{2: l.Addr().String()})
	// Accept every connection; message connections (kind 0, opened by the
	// peer loop) are held open until the end, snapshot ones answered.
	type snapConn struct {
		hs     []byte
		stream []byte
		c      net.Conn
	}
	snaps := make(chan snapConn)
	var conns sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	defer func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range open {
			_ = c.Close()
		}
		mu.Unlock()
		conns.Wait()
	}()
	conns.Add(1)
	go func() {
		defer conns.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			conns.Add(1)
			go func() {
				defer conns.Done()
				hs := make([]byte, helloSize)
				if _, err := io.ReadFull(c, hs); err != nil || hs[10] != kindSnapshot {
					return
				}
				if _, err := c.Write((&reply{status: replyOK}).encode()); err != nil {
					return
				}
				stream, err := readPayload(c)
				if err != nil {
					t.Errorf("reading the snapshot stream: %v", err)
					return
				}
				snaps <- snapConn{hs, stream, c}
			}()
		}
	}()
	for _, ack := range []byte{0, 1} {
		done, errc := doneChan(t)
		tr.SendSnapshot(2, func(w io.Writer) error { return writePayload(w, []byte("abc")) }, done)
		var sc snapConn
		select {
		case sc = <-snaps:
		case <-time.After(10 * time.Second):
			t.Fatal("no snapshot connection")
		}
		if want := (&hello{kind: kindSnapshot, from: 1, to: 2}).encode(); !bytes.Equal(sc.hs[:28], want[:28]) {
			t.Fatalf("handshake %x", sc.hs)
		}
		if string(sc.stream) != "abc" {
			t.Fatalf("stream %q", sc.stream)
		}
		_, err := sc.c.Write([]byte{ack})
		must(t, err)
		err = waitErr(t, errc)
		if (err == nil) != (ack == 0) {
			t.Fatalf("ack %d: done(%v)", ack, err)
		}
	}
}

// TestMemSnapshotFilter: the network's snapshot filter sees every stream
// (with its endpoints), can cut it, and can be removed.
func TestMemSnapshotFilter(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h2, got, readErrs := payloadReceiver(nil)
	n, t1, t2 := memPair(t, &recorder{}, h2)
	defer t1.Close()
	defer t2.Close()
	payload := randomBytes(1<<20, 8)

	// A filter that only watches.
	var seen bytes.Buffer
	var ends [2]uint64
	n.SetSnapshotFilter(func(from, to uint64, w io.Writer) io.Writer {
		ends = [2]uint64{from, to}
		return io.MultiWriter(w, &seen)
	})
	done, errc := doneChan(t)
	t1.SendSnapshot(2, func(w io.Writer) error { return writePayload(w, payload) }, done)
	if err := waitErr(t, errc); err != nil {
		t.Fatalf("done(%v)", err)
	}
	if p := waitBytes(t, got); !bytes.Equal(p, payload) {
		t.Fatal("bytes differ")
	}
	if ends != [2]uint64{1, 2} || !bytes.Equal(seen.Bytes()[8:], payload) {
		t.Fatalf("filter saw %v and %d bytes", ends, seen.Len())
	}

	// A filter that cuts the stream after 100 KiB.
	errCut := errors.New("link cut")
	n.SetSnapshotFilter(func(from, to uint64, w io.Writer) io.Writer {
		return &cutWriter{w: w, left: 100 << 10, err: errCut}
	})
	done, errc = doneChan(t)
	t1.SendSnapshot(2, func(w io.Writer) error { return writePayload(w, payload) }, done)
	if err := waitErr(t, errc); !errors.Is(err, errCut) {
		t.Fatalf("cut stream: done(%v), want %v", err, errCut)
	}
	if err := <-readErrs; !errors.Is(err, errCut) {
		t.Fatalf("the handler read %v, want %v", err, errCut)
	}

	// Removed: streams flow again.
	n.SetSnapshotFilter(nil)
	done, errc = doneChan(t)
	t1.SendSnapshot(2, func(w io.Writer) error { return writePayload(w, payload) }, done)
	if err := waitErr(t, errc); err != nil {
		t.Fatalf("after removing the filter: done(%v)", err)
	}
	if p := waitBytes(t, got); !bytes.Equal(p, payload) {
		t.Fatal("bytes differ")
	}
	if s1, s2 := t1.Stats(), t2.Stats(); s1.SnapshotsSent != 2 || s1.SnapshotsFailed != 1 || s2.SnapshotsRecv != 2 || s2.SnapshotsFailed != 1 {
		t.Fatalf("stats: sender %+v, receiver %+v", s1, s2)
	}
}

type cutWriter struct {
	w    io.Writer
	left int
	err  error
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if len(p) <= c.left {
		c.left -= len(p)
		return c.w.Write(p)
	}
	n, err := c.w.Write(p[:c.left])
	c.left = 0
	if err != nil {
		return n, err
	}
	return n, c.err
}

// TestMemSnapshotBlockedLink: a blocked link (either direction) fails the
// transfer at once.
func TestMemSnapshotBlockedLink(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h2, _, _ := payloadReceiver(nil)
	n, t1, t2 := memPair(t, &recorder{}, h2)
	defer t1.Close()
	defer t2.Close()
	for i, block := range []func(){func() { n.BlockLink(1, 2) }, func() { n.BlockLink(2, 1) }, func() { n.Isolate(2) }} {
		n.Heal()
		block()
		done, errc := doneChan(t)
		t1.SendSnapshot(2, func(w io.Writer) error { return writePayload(w, []byte("x")) }, done)
		if err := waitErr(t, errc); err == nil {
			t.Fatalf("block %d: done(nil)", i)
		}
	}
	n.Heal()
	done, errc := doneChan(t)
	t1.SendSnapshot(2, func(w io.Writer) error { return writePayload(w, []byte("x")) }, done)
	if err := waitErr(t, errc); err != nil {
		t.Fatalf("healed: done(%v)", err)
	}
	if h2.calls.Load() != 1 {
		t.Fatalf("handler ran %d times", h2.calls.Load())
	}
}

// TestMemSnapshotManyConcurrent: concurrent transfers in both directions
// all arrive, and Close of both ends leaves nothing running.
func TestMemSnapshotManyConcurrent(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var mu sync.Mutex
	got := map[string]bool{}
	h := func() *snapHandler {
		return &snapHandler{f: func(from uint64, r io.Reader) error {
			p, err := readPayload(r)
			if err != nil {
				return err
			}
			mu.Lock()
			got[string(p)] = true
			mu.Unlock()
			return nil
		}}
	}
	_, t1, t2 := memPair(t, h(), h())
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		from, to := Transport(t1), uint64(2)
		if i%2 == 1 {
			from, to = t2, 1
		}
		wg.Add(1)
		p := fmt.Sprintf("payload %d", i)
		from.SendSnapshot(to, func(w io.Writer) error { return writePayload(w, []byte(p)) }, func(err error) {
			defer wg.Done()
			if err != nil {
				t.Errorf("%s: %v", p, err)
			}
		})
	}
	wg.Wait()
	closeWithin(t, t1)
	closeWithin(t, t2)
	if len(got) != 20 {
		t.Fatalf("%d of 20 payloads arrived", len(got))
	}
}
