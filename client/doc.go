// Package client is the Go client of KayaDB, a Raft-replicated key-value
// database. It speaks the KayaDB client wire protocol (version 1) over TCP
// or TLS to the servers' client port (7379 by default).
//
//	c, err := client.New([]string{"10.0.0.1:7379", "10.0.0.2:7379", "10.0.0.3:7379"}, nil)
//	if err != nil { ... }
//	defer c.Close()
//	err = c.Put(ctx, []byte("user:1"), []byte("Ada"))
//	v, err := c.Get(ctx, []byte("user:1")) // errors.Is(err, client.ErrNotFound) when absent
//
// A Client is safe for concurrent use; make one per process. Every call
// takes a context and has a deadline: the context's or
// Options.RequestTimeout, whichever is sooner; retries and redirects happen
// within it.
//
// # Consistency
//
// Put and Delete return once the write is committed by a majority and
// applied; Get and Scan are linearizable (served by the leader after it
// confirms its leadership). The client sends them to the leader it knows,
// follows the servers' NOT_LEADER hints, and keeps writes at most once: a
// write is re-sent only when it provably never reached a server or a server
// answered NOT_LEADER. When a write was sent but no reply came back (the
// connection broke or the deadline passed), the call fails with
// ErrAmbiguous: the write may or may not be applied, and only the caller
// can decide how to find out.
//
// # Connections
//
// The client keeps a small pool of connections per server
// (Options.ConnsPerEndpoint), dialed on first use, each opened with a HELLO
// handshake. Requests are pipelined: many may be in flight on one
// connection (Options.MaxPipeline) and the server answers them in order. A
// connection that fails, or that gets no reply for RequestTimeout, is
// closed and replaced on next use. Close stops every goroutine the client
// started.
//
// # Errors
//
// Errors match the package's sentinels with errors.Is: ErrNotFound,
// ErrInvalidArgument (refused locally, such as a key over 4 KiB or one
// beginning with 0x00, or by the server), ErrNotLeader (*NotLeaderError),
// ErrUnavailable, ErrTimeout (which also matches context.DeadlineExceeded),
// ErrAmbiguous, ErrClosed, ErrProtocol, and ErrServer (*ServerError, which
// includes credential failures).
package client
