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
// within it. (RequestTimeout is kept without a runtime timer per call, to
// within a twentieth of it, at most 100 ms; pass a context with a deadline
// where a call must end exactly on time.)
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
// # Transactions
//
// Begin starts an interactive transaction (TXN_BEGIN, opcodes 9–12, the
// original KayaDB's wire format): reads at a snapshot, writes buffered on
// the server and applied atomically by Commit, which returns the commit
// revision. Servers make them serializable by default: Commit fails with
// ErrTxnConflict when something the transaction read or wrote changed
// since its snapshot. A transaction is bound to the leader it began on and
// is never redirected: when leadership moves, it is lost (ErrTxnLost).
// RunTxn runs a function in a transaction and starts it again on a
// conflict or a loss, with a jittered exponential back-off, up to
// Options.MaxTxnAttempts times:
//
//	rev, err := c.RunTxn(ctx, func(tx *client.Txn) error {
//		v, err := tx.Get(ctx, []byte("a"))
//		...
//		return tx.Put(ctx, []byte("b"), v)
//	})
//
// RunSTM runs a function as an optimistic transaction instead (etcd's
// STM): its reads are ordinary linearizable reads that remember each
// key's mod revision, its writes are buffered in the client, and its
// commit is one conditional write that applies them only if no key read
// has changed since: serializable, nothing held on the server, nothing
// lost with a leader change, and two requests for a read-modify-write
// (the reads, pipelined, then the commit) where an interactive
// transaction needs BEGIN, reads, writes and COMMIT. A conflicting attempt
// runs the function again, starting from the values the failed commit
// read back:
//
//	rev, err := c.RunSTM(ctx, func(s *client.STM) error {
//		v, err := s.Get([]byte("a"))
//		...
//		return s.Put([]byte("b"), v)
//	})
//
// For one-shot coordination without holding anything on the server, Txn
// builds a conditional write in etcd's style (opcode 68: compares, then
// ops, else ops, evaluated and applied atomically in one raft entry);
// CompareAndSwap and PutIfAbsent are the common cases.
//
// # Revisions
//
// Every write has a revision (its commit timestamp; all writes of one
// transaction share one). GetWithRevision returns a value with its mod
// revision, WithReadAt reads at a past revision within the servers'
// retained history (older: ErrCompacted), and ScanPage reads a prefix page
// by page at one revision.
//
// # Connections
//
// The client keeps a small pool of connections per server
// (Options.ConnsPerEndpoint), dialed on first use, each opened with a HELLO
// handshake. Requests are pipelined: many may be in flight on one
// connection (Options.MaxPipeline) and the server answers them in order.
// The calling goroutines read the replies themselves (one at a time per
// connection), so a lone caller's request costs no hand-off between
// goroutines; callers that share a connection and write at the same
// moment (their replies came back together) send their requests in one
// system call. A connection that fails, that gets no reply for
// RequestTimeout, or that the server closed while it was idle (checked
// before a request is written on it) is closed and replaced on next use.
// Close stops every goroutine the client started.
//
// # Errors
//
// Errors match the package's sentinels with errors.Is: ErrNotFound,
// ErrInvalidArgument (refused locally, such as a key over 4 KiB or one
// beginning with 0x00, or by the server), ErrNotLeader (*NotLeaderError),
// ErrUnavailable, ErrTimeout (which also matches context.DeadlineExceeded),
// ErrAmbiguous, ErrDiskFull (a write a disk-full node refused before
// proposing it), ErrClosed, ErrProtocol, ErrServer (*ServerError, which
// includes credential failures), ErrTxnConflict, ErrTxnLost
// (*TxnLostError), ErrTxnDone, ErrCompacted (*CompactedError) and
// ErrUnsupported (a server that predates a feature).
package client
