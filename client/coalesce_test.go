package client

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/wire"
)

// countingWriter counts the writes that reach the socket.
type countingWriter struct {
	w io.Writer
	n atomic.Int32
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n.Add(1)
	return c.w.Write(p)
}

// TestCallersShareAFlush checks that callers who write on a connection at
// the same moment leave with one flush between them: the first caller that
// finds other calls unfinished yields before it flushes, and the calls
// written into the buffer meanwhile go out with its write(2). With one P
// the order is nearly fixed: the first caller flushes alone (nothing else
// is unfinished yet), the second yields, the six others add their frames,
// and the second flushes all seven. Every caller must still get its own
// reply.
func TestCallersShareAFlush(t *testing.T) {
	srv := newFakeServer(t)
	ctx := ctxT(t, 10*time.Second)
	const k = 8
	c := newClient(t, []string{srv.addr}, nil)
	for i := range k {
		if err := c.Put(ctx, fmt.Appendf(nil, "k%d", i), fmt.Appendf(nil, "v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	cn, err := dial(ctx, srv.addr, nil, 5*time.Second, 64)
	if err != nil {
		t.Fatal(err)
	}
	// Count the writes that reach the socket (before the writer starts).
	cw := &countingWriter{w: cn.nc}
	cn.bw = bufio.NewWriterSize(cw, 32<<10)
	var wg sync.WaitGroup
	cn.start(&wg)
	defer func() {
		cn.fail(errors.New("test over"))
		wg.Wait()
	}()

	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	start := make(chan struct{})
	errs := make(chan error, k)
	var callers sync.WaitGroup
	for i := range k {
		callers.Add(1)
		go func() {
			defer callers.Done()
			<-start
			frame := wire.AppendRequest(nil, wire.OpGet, wire.AppendKey(nil, fmt.Appendf(nil, "k%d", i)))
			cl, err := cn.submit(ctx, frame)
			if err != nil {
				errs <- err
				return
			}
			r := cl.wait(ctx)
			if r.err != nil {
				errs <- r.err
				return
			}
			v, err := wire.DecodeValue(r.payload)
			if err != nil || string(v) != fmt.Sprintf("v%d", i) {
				errs <- fmt.Errorf("caller %d: got %q (%v), want v%d", i, v, err, i)
			}
		}()
	}
	close(start)
	callers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Usually 2; the race detector's scheduling (and the fake server's
	// goroutines, readied by the network poller) sometimes makes it 3.
	// Without the shared flush it is 8.
	if n := cw.n.Load(); n > k/2 {
		t.Fatalf("%d calls written at once took %d writes, want at most %d", k, n, k/2)
	}
}
