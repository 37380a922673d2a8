package server

import (
	"context"
	"log/slog"
)

// termHandler adds the node's current raft term to every log record, so
// that lines about peers and requests can be placed in the cluster's
// history ("term" is omitted until raft has started).
type termHandler struct {
	slog.Handler
	term func() uint64
}

func (h termHandler) Handle(ctx context.Context, r slog.Record) error {
	if t := h.term(); t > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Uint64("term", t))
	}
	return h.Handler.Handle(ctx, r)
}

func (h termHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return termHandler{h.Handler.WithAttrs(as), h.term}
}

func (h termHandler) WithGroup(name string) slog.Handler {
	return termHandler{h.Handler.WithGroup(name), h.term}
}
