package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/txn"
	"github.com/kayadb/kayadb/internal/wire"
)

// Transactions and versioned reads on the client port (issue 13): opcodes
// 9–12 and 68 go to the transaction manager (package txn), 69 GET_AT and
// 70 SCAN_AT are served here from the state machine's history.

// scanAtMaxBytes bounds the keys and values of one SCAN_AT reply: the
// frame, less the reply's header (status, read_rev, more, count) and each
// item's lengths and mod revision.
const scanAtMaxBytes = wire.MaxFrameSize - 2 - 8 - 1 - 4 - 16*wire.MaxScanItems

// newTxnManager builds the transaction manager over the state machine;
// the raft node it asks about leadership is created later (it is only
// consulted once requests arrive).
func (s *Server) newTxnManager() error {
	cfg := &s.cfg
	m, err := txn.New(txn.Options{
		Store: s.store,
		Leadership: func() (uint64, bool) {
			n := s.nodeRef.Load()
			if n == nil {
				return 0, false
			}
			term := n.Term()
			return term, n.IsLeader() && n.Term() == term
		},
		LeaderAddr: s.leaderClientAddr,
		AdmitWrite: func() error { return s.disk.admit() },
		Timeout:    cfg.TxnTimeout, MaxOpen: cfg.MaxOpenTxns, MaxBytes: cfg.MaxTxnBytes, Isolation: cfg.TxnIsolation,
		Logger: s.log.With("component", "txn"),
		ObserveCommit: func(outcome string, d time.Duration) {
			if o := s.obs; o != nil && o.txnCommit != nil {
				o.txnCommit.WithLabelValues(outcome).Observe(d.Seconds())
			}
		},
	})
	if err != nil {
		return configError{err}
	}
	s.txns = m
	return nil
}

// txnCollectors are the transaction metrics: the open transactions and
// the commits by outcome (read from the manager at scrape time), and the
// commit latency histogram by outcome (observed by the manager).
func (s *Server) txnCollectors(o *observability) []prometheus.Collector {
	o.txnCommit = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kayadb_txn_commit_duration_seconds",
		Help:    "Time from a TXN_COMMIT request to its outcome on this leader, by outcome (committed, conflict, lost).",
		Buckets: requestBuckets,
	}, []string{"outcome"})
	cs := []prometheus.Collector{o.txnCommit,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kayadb_txn_open", Help: "Transactions open on this node (begun and neither committed, rolled back, expired nor lost)."},
			func() float64 { return float64(s.txns.Open()) }),
	}
	for _, oc := range []struct {
		name string
		get  func(st txn.Stats) uint64
	}{
		{"committed", func(st txn.Stats) uint64 { return st.Committed }},
		{"conflict", func(st txn.Stats) uint64 { return st.Conflict }},
		{"lost", func(st txn.Stats) uint64 { return st.Lost }},
		{"expired", func(st txn.Stats) uint64 { return st.Expired }},
	} {
		get := oc.get
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "kayadb_txn_commits_total",
			Help:        "Transactions ended on this node by outcome: committed (read-only ones too), conflict (TXN_CONFLICT), lost (leadership moved while open, or the commit never reached the log), expired (no request for --txn-timeout).",
			ConstLabels: prometheus.Labels{"outcome": oc.name},
		}, func() float64 { return float64(get(s.txns.Stats())) }))
	}
	return cs
}

// getAt answers GET_AT: the key's version at read_ts (0: the latest,
// linearizable; a past revision after a ReadIndex round too, so that a
// revision the client saw acknowledged is applied here).
func (s *Server) getAt(ctx context.Context, p []byte) (wire.Status, []byte) {
	ts, key, err := wire.DecodeGetAt(p)
	if err != nil {
		return invalid(err)
	}
	var v kv.Version
	if ts == wire.ReadTSLocal {
		// The latest applied state, without a ReadIndex round (its
		// reader validates it later; wire.ReadTSLocal).
		if err = kv.ValidateKey(key); err == nil {
			v, err = s.store.ReadAt(key, 0)
		}
	} else {
		v, err = s.store.GetAt(ctx, key, ts)
	}
	if err != nil {
		return s.versionedReply(err)
	}
	return wire.StatusOK, wire.AppendGetAtReply(nil, v.Value, v.TS)
}

// scanAt answers SCAN_AT.
func (s *Server) scanAt(ctx context.Context, p []byte) (wire.Status, []byte) {
	req, err := wire.DecodeScanAt(p)
	if err != nil {
		return invalid(err)
	}
	if len(req.Start) > 0 && !bytes.HasPrefix(req.Start, req.Prefix) {
		return wire.StatusInvalidArgument, wire.AppendError(nil, fmt.Sprintf("SCAN_AT start %q does not begin with the prefix %q", req.Start, req.Prefix))
	}
	if len(req.Prefix) > wire.MaxKeySize || len(req.Start) > wire.MaxKeySize+1 {
		return wire.StatusInvalidArgument, wire.AppendError(nil, fmt.Sprintf("SCAN_AT prefix of %d bytes or start of %d bytes exceeds the %d-byte key limit (start: one byte more)", len(req.Prefix), len(req.Start), wire.MaxKeySize))
	}
	if len(req.Prefix) > 0 && req.Prefix[0] == kv.SystemPrefix {
		return wire.StatusInvalidArgument, wire.AppendError(nil, kv.ErrReservedKey.Error())
	}
	if err := s.store.Barrier(ctx); err != nil {
		return s.versionedReply(err)
	}
	ts := req.ReadTS
	if ts == 0 {
		ts = s.store.AppliedTS()
	}
	limit := wire.MaxScanItems
	if req.Limit > 0 && int(req.Limit) < limit {
		limit = int(req.Limit)
	}
	var items []kv.KV
	var more bool
	if rs, confined := readable(ctx, req.Prefix); confined { // authz.go
		items, more, err = s.clampedScan(rs, req.Prefix, req.Start, ts, limit, scanAtMaxBytes)
	} else {
		items, more, err = s.store.ReadScanAtFrom(req.Prefix, req.Start, ts, limit, scanAtMaxBytes)
	}
	if err != nil {
		return s.versionedReply(err)
	}
	r := &wire.ScanAtReply{ReadRev: ts, More: more, Items: make([]wire.VersionedKV, len(items))}
	for i, it := range items {
		r.Items[i] = wire.VersionedKV{Key: it.Key, Value: it.Value, ModRev: it.TS}
	}
	return wire.StatusOK, wire.AppendScanAtReply(nil, r)
}

// versionedReply maps the errors of versioned reads: a compacted revision
// is StatusCompacted naming the oldest readable one, a future revision
// INVALID_ARGUMENT naming the newest.
func (s *Server) versionedReply(err error) (wire.Status, []byte) {
	var ce *kv.CompactedError
	var fe *kv.FutureRevisionError
	switch {
	case errors.As(err, &ce):
		return wire.StatusCompacted, wire.AppendCompacted(nil, ce.Revision, ce.Oldest)
	case errors.As(err, &fe):
		return wire.StatusInvalidArgument, wire.AppendError(nil, fmt.Sprintf(wire.MsgFutureRevision, fe.Revision, fe.Newest))
	}
	return s.reply(err, nil)
}

// isTxnOp: requests that change a transaction's state run in the order
// they arrived on their connection, like writes.
func isTxnOp(op wire.Opcode) bool {
	return (op >= wire.OpTxnBegin && op <= wire.OpTxnRollback) || op == wire.OpKayaTxn
}
