package server

import (
	"context"
	"log/slog"
)

// termHandler adds the node's current raft term to every log record, so
// that lines about peers and requests can be placed in the cluster's
// history ("term" is omitted until raft has started). A record that
// carries a "term" of its own (raft's "raft role changed", the term at
// that very moment) keeps it alone: a second, possibly older term beside
// it would only confuse. Attributes about another term (an entry's, a
// snapshot's, a message's) are named for it (entry_term, snapshot_term,
// msg_term), never "term".
type termHandler struct {
	slog.Handler
	term func() uint64
	// hasTerm: a "term" attribute was added with WithAttrs.
	hasTerm bool
}

func (h termHandler) Handle(ctx context.Context, r slog.Record) error {
	if t := h.term(); t > 0 && !h.hasTerm && !recordHas(r, "term") {
		r = r.Clone()
		r.AddAttrs(slog.Uint64("term", t))
	}
	return h.Handler.Handle(ctx, r)
}

// recordHas reports whether r has a top-level attribute named key.
func recordHas(r slog.Record, key string) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		found = a.Key == key
		return !found
	})
	return found
}

func (h termHandler) WithAttrs(as []slog.Attr) slog.Handler {
	has := h.hasTerm
	for _, a := range as {
		has = has || a.Key == "term"
	}
	return termHandler{h.Handler.WithAttrs(as), h.term, has}
}

func (h termHandler) WithGroup(name string) slog.Handler {
	// Like every record attribute, the term then lands in the group.
	return termHandler{h.Handler.WithGroup(name), h.term, h.hasTerm}
}
