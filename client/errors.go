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
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("kayadb: client closed")
	// ErrServer matches every *ServerError.
	ErrServer = errors.New("kayadb: server error")
	// ErrProtocol: the server's reply could not be decoded, or it speaks
	// another protocol version.
	ErrProtocol = errors.New("kayadb: protocol error")
)

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

// Is makes a *ServerError match ErrServer.
func (e *ServerError) Is(target error) bool { return target == ErrServer }

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
	return &ServerError{Status: uint16(st), Message: msg}
}

// timeoutError is ErrTimeout (also matching context.DeadlineExceeded),
// with the last failure seen, if any.
func timeoutError(last error) error {
	if last != nil && !errors.Is(last, context.DeadlineExceeded) {
		return fmt.Errorf("%w (%w); last error: %w", ErrTimeout, context.DeadlineExceeded, last)
	}
	return fmt.Errorf("%w (%w)", ErrTimeout, context.DeadlineExceeded)
}
