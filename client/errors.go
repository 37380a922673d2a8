package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/kayadb/kayadb/internal/wire"
)

// Errors returned by the client. Test for them with errors.Is; an error may
// match several (a write that timed out after it was sent matches both
// ErrAmbiguous and ErrTimeout).
var (
	// ErrNotFound: the key does not exist (Get).
	ErrNotFound = errors.New("kayadb: key not found")
	// ErrInvalidArgument: the request was refused as invalid, by the client
	// before sending (sizes, reserved keys) or by the server (status 1, its
	// message is in the error text).
	ErrInvalidArgument = errors.New("kayadb: invalid argument")
	// ErrNotLeader: the request was redirected more than MaxRedirects times,
	// or no leader could be found. The error is a *NotLeaderError.
	ErrNotLeader = errors.New("kayadb: not the leader")
	// ErrUnavailable: no endpoint could serve the request within the retry
	// budget (connection failures, no leader).
	ErrUnavailable = errors.New("kayadb: cluster unavailable")
	// ErrTimeout: the deadline (the context's or Options.RequestTimeout,
	// whichever is sooner) passed. It also matches
	// context.DeadlineExceeded.
	ErrTimeout = errors.New("kayadb: deadline exceeded")
	// ErrAmbiguous: a write (PUT, DELETE, ADD_MEMBER, REMOVE_MEMBER,
	// PROMOTE_LEARNER, TRANSFER_LEADER) was sent but its connection failed
	// or its deadline passed before the reply: it may or may not have been
	// applied. The client never re-sends such a write, because a blind
	// re-send can break linearizability; read the key (for membership
	// changes: Status) to find out, or make the write idempotent and retry
	// yourself.
	ErrAmbiguous = errors.New("kayadb: write outcome unknown")
	// ErrDiskFull: a node in disk-full mode refused a write (PUT, DELETE,
	// or a conditional write) before proposing it: it was not applied, and
	// may be sent again once the node has room (docs/server.md, "A full
	// disk"). It matches a *ServerError (ErrServer) and never comes with
	// ErrAmbiguous.
	ErrDiskFull = errors.New("kayadb: write refused: disk full")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("kayadb: client closed")
	// ErrServer matches every *ServerError.
	ErrServer = errors.New("kayadb: server error")
	// ErrProtocol: the server's reply could not be decoded, or it speaks
	// another protocol version.
	ErrProtocol = errors.New("kayadb: protocol error")
	// ErrTxnConflict: a transaction (Txn, RunTxn) conflicted with another
	// one or with a plain write (status 3 TXN_CONFLICT) and was not
	// committed; start it again (RunTxn does). Such errors are
	// *ServerError with Status 3.
	ErrTxnConflict = errors.New("kayadb: transaction conflict")
	// ErrTxnLost: a transaction can no longer go on and was not committed:
	// leadership moved (open transactions live in the leader's memory), the
	// server forgot it (it stayed open longer than the server's
	// --txn-timeout), the connection to its server failed before COMMIT
	// was sent, or its snapshot fell out of the retained history. Start it
	// again (RunTxn does). The error is a *TxnLostError.
	ErrTxnLost = errors.New("kayadb: transaction lost")
	// ErrTxnDone: the transaction was already committed or rolled back.
	ErrTxnDone = errors.New("kayadb: transaction already committed or rolled back")
	// ErrCompacted: a read at a revision older than the server retains
	// (WithReadAt). The error is a *CompactedError naming the oldest
	// readable revision.
	ErrCompacted = errors.New("kayadb: revision compacted")
	// ErrUnsupported: the server does not know the request (it answered
	// "unknown opcode"): it predates the feature (transactions, conditional
	// writes, reads at a revision). Nothing was done.
	ErrUnsupported = errors.New("kayadb: not supported by the server")
)

// TxnLostError reports that a transaction was lost (see ErrTxnLost). It
// matches ErrTxnLost.
type TxnLostError struct {
	// TxnID is the transaction's id.
	TxnID uint64
	// Term is the raft term the transaction began in, when the server
	// said (0 otherwise).
	Term uint64
	// Leader is the leader's client address when a NOT_LEADER hint named
	// it ("" otherwise).
	Leader string
	// Reason says what happened.
	Reason string
	// Err is the underlying failure, if any.
	Err error
}

// Error implements error.
func (e *TxnLostError) Error() string {
	s := fmt.Sprintf("kayadb: transaction %d lost: %s; start it again", e.TxnID, e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is makes a *TxnLostError match ErrTxnLost.
func (e *TxnLostError) Is(target error) bool { return target == ErrTxnLost }

// Unwrap returns the underlying failure.
func (e *TxnLostError) Unwrap() error { return e.Err }

// CompactedError reports a read below the retained history. It matches
// ErrCompacted.
type CompactedError struct {
	// Revision is the revision asked for.
	Revision uint64
	// Oldest is the oldest revision the server can still read.
	Oldest uint64
}

// Error implements error.
func (e *CompactedError) Error() string {
	return fmt.Sprintf("kayadb: revision %d is compacted; the oldest readable revision is %d", e.Revision, e.Oldest)
}

// Is makes a *CompactedError match ErrCompacted.
func (e *CompactedError) Is(target error) bool { return target == ErrCompacted }

// NotLeaderError reports that the cluster kept redirecting the request
// (more than Options.MaxRedirects times) or that no leader was known. It
// matches ErrNotLeader.
type NotLeaderError struct {
	// Leader is the last leader hint, a client address "host:port", or ""
	// when no node knew the leader.
	Leader string
}

// Error implements error.
func (e *NotLeaderError) Error() string {
	if e.Leader == "" {
		return "kayadb: not the leader (no leader known)"
	}
	return "kayadb: not the leader (leader hint " + e.Leader + ")"
}

// Is makes a *NotLeaderError match ErrNotLeader.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// ServerError is a failure reported by the server: status 9 (ERROR, which
// includes credential failures such as "client credential required or
// invalid"), 3 (TXN_CONFLICT) and any status the client does not know. It
// matches ErrServer. For a write, status 9 means the server could not
// confirm the write (for example leadership lost after proposing): the
// write may still be applied later, so Put and Delete return such errors
// wrapped in ErrAmbiguous too (except refused credentials).
type ServerError struct {
	// Status is the response status code.
	Status uint16
	// Message is the server's error text.
	Message string
}

// Error implements error.
func (e *ServerError) Error() string {
	return fmt.Sprintf("kayadb: server error (status %d %s): %s", e.Status, wire.Status(e.Status), e.Message)
}

// Is makes a *ServerError match ErrServer, ErrTxnConflict when its status
// is 3 (TXN_CONFLICT), and ErrDiskFull when it is a disk-full node's
// refusal of a write.
func (e *ServerError) Is(target error) bool {
	switch target {
	case ErrServer:
		return true
	case ErrTxnConflict:
		return e.Status == uint16(wire.StatusTxnConflict)
	case ErrDiskFull:
		return e.Status == uint16(wire.StatusError) && wire.IsDiskFullRefusal(e.Message)
	}
	return false
}

// statusError maps a non-OK response to the client's errors.
func statusError(st wire.Status, p []byte) error {
	switch st {
	case wire.StatusOK:
		return nil
	case wire.StatusNotFound:
		return ErrNotFound
	case wire.StatusNotLeader:
		hint, _ := wire.DecodeNotLeader(p)
		return &NotLeaderError{Leader: hint}
	}
	msg, err := wire.DecodeError(p)
	if err != nil {
		return fmt.Errorf("%w: status %s with an undecodable error body: %w", ErrProtocol, st, err)
	}
	if st == wire.StatusInvalidArgument {
		return fmt.Errorf("%w: %s", ErrInvalidArgument, msg)
	}
	if st == wire.StatusCompacted {
		if rev, oldest, ok := wire.ParseCompacted(msg); ok {
			return &CompactedError{Revision: rev, Oldest: oldest}
		}
	}
	return &ServerError{Status: uint16(st), Message: msg}
}

// unsupported turns the server's "unknown opcode" answer to op into
// ErrUnsupported; other errors pass unchanged.
func unsupported(op wire.Opcode, err error) error {
	var se *ServerError
	if errors.As(err, &se) && se.Status == uint16(wire.StatusError) && se.Message == fmt.Sprintf(wire.MsgUnknownOpcode, op) {
		return fmt.Errorf("%w: the server does not know %s (opcode %d); upgrade it: %w", ErrUnsupported, op, op, err)
	}
	return err
}

// timeoutError is ErrTimeout (also matching context.DeadlineExceeded),
// with the last failure seen, if any.
func timeoutError(last error) error {
	if last != nil && !errors.Is(last, context.DeadlineExceeded) {
		return fmt.Errorf("%w (%w); last error: %w", ErrTimeout, context.DeadlineExceeded, last)
	}
	return fmt.Errorf("%w (%w)", ErrTimeout, context.DeadlineExceeded)
}
