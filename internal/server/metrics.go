package server

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.etcd.io/raft/v3"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/raftnode"
	"github.com/kayadb/kayadb/internal/transport"
	"github.com/kayadb/kayadb/internal/wire"
)

// Metrics
//
// Every server has its own prometheus.Registry (several servers run in one
// test process). Client requests are counted as they complete; everything
// else is read from the node's parts at scrape time by nodeCollector, so
// that no goroutine polls them in the background. docs/server.md, "Metrics
// and health", lists every series.

// requestBuckets are the client request latency buckets, in seconds: from
// 100 µs to the 10 s beyond the default request timeout.
var requestBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// newRegistry builds the server's registry: the request metrics, the node
// collector, and Go's runtime and process collectors.
func (s *Server) newRegistry() *observability {
	o := &observability{reg: prometheus.NewRegistry()}
	o.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kayadb_client_requests_total",
		Help: "Client protocol requests answered, by opcode and reply status (refused credentials count under their status, ERROR or INVALID_ARGUMENT).",
	}, []string{"opcode", "status"})
	o.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kayadb_client_request_duration_seconds",
		Help:    "Time from reading a client request to its reply being ready to send (replies on one connection go out in request order), by opcode.",
		Buckets: requestBuckets,
	}, []string{"opcode"})
	o.reg.MustRegister(o.requests, o.latency, newNodeCollector(s), buildInfoMetric(), s.reloadFailures,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if s.clim != nil {
		o.reg.MustRegister(s.clim.collectors()...) // clientlimits.go
	}
	if s.txns != nil {
		o.reg.MustRegister(s.txnCollectors(o)...) // txnops.go
	}
	if s.audit != nil {
		o.reg.MustRegister(s.newAuditCollector()) // audit.go
	}
	return o
}

// observeRequest counts one answered client request (serveClient's writer
// calls it for every reply, refusals included).
func (s *Server) observeRequest(op wire.Opcode, st wire.Status, start time.Time) {
	o := s.obs
	if o == nil {
		return
	}
	rs := o.bySeries[op].Load()
	if rs == nil {
		rs = &reqSeries{latency: o.latency.WithLabelValues(opcodeLabel(op))}
		if !o.bySeries[op].CompareAndSwap(nil, rs) {
			rs = o.bySeries[op].Load()
		}
	}
	if int(st) < len(rs.byStatus) {
		c := rs.byStatus[st].Load()
		if c == nil {
			c = &counterRef{o.requests.WithLabelValues(opcodeLabel(op), st.String())}
			rs.byStatus[st].Store(c) // a racing lookup stores the same child
		}
		c.c.Inc()
	} else {
		o.requests.WithLabelValues(opcodeLabel(op), st.String()).Inc()
	}
	rs.latency.Observe(time.Since(start).Seconds())
}

// reqSeries holds one opcode's request series, looked up once:
// WithLabelValues hashes the label values and takes the vector's lock on
// every call, a few percent of the server's CPU per small request.
type reqSeries struct {
	latency  prometheus.Observer
	byStatus [32]atomic.Pointer[counterRef] // by status; larger ones are looked up each time
}

type counterRef struct{ c prometheus.Counter }

// opcodeLabel is op's protocol name; opcodes the protocol does not define
// share one label, so that a client cannot create series at will.
func opcodeLabel(op wire.Opcode) string {
	name := op.String()
	if len(name) > 7 && name[:7] == "OPCODE(" {
		return "UNKNOWN"
	}
	return name
}

// scrape is what one collection reads from the node.
type scrape struct {
	st                 raftnode.Status
	applied, snapIndex uint64
	taken, installed   uint64
	noticesSent        uint64
	noticesReplaced    uint64
	queued, pending    int
	dropped            uint64
	screened           map[raftnode.ScreenReason]uint64
	rejectedEntries    uint64
	vcHits, vcMisses   uint64
	readRounds         uint64
	stalled            bool
	stalls             uint64
	ready              bool
	trans              transport.Stats
	logSegments        int
	logBytes, logSyncs int64
	logSync            [32]uint64
	logSyncSum         time.Duration
	eng                *engine.Metrics
	walSync            engine.LatencyBuckets
	flush, compaction  engine.LatencyBuckets
	kvPut, kvGet       uint64
	kvDelete, kvScan   uint64
	openDur            time.Duration
	diskFull           bool
	diskFree           uint64
	diskTotal          uint64
	diskReserve        uint64
	diskEvents         uint64
	mvcc               mvccStats
}

// metric is one series of the node collector.
type metric struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(sc *scrape) float64
}

// histMetric is a latency histogram of the node collector, built from the
// power-of-two microsecond buckets of the engine and the raft log.
type histMetric struct {
	desc   *prometheus.Desc
	counts func(sc *scrape) ([32]uint64, time.Duration)
}

// nodeCollector reads the node's state at every scrape.
type nodeCollector struct {
	s     *Server
	ms    []metric
	hists []histMetric
	// tablesByKey is kayadb_engine_tables_by_key{key}: one series per key
	// id a live table uses ("plain", "unknown" included).
	tablesByKey *prometheus.Desc
}

func newNodeCollector(s *Server) *nodeCollector {
	c := &nodeCollector{s: s}
	add := func(name, help string, typ prometheus.ValueType, labels prometheus.Labels, v func(*scrape) float64) {
		c.ms = append(c.ms, metric{prometheus.NewDesc(name, help, nil, labels), typ, v})
	}
	gauge := func(name, help string, v func(*scrape) float64) { add(name, help, prometheus.GaugeValue, nil, v) }
	counter := func(name, help string, v func(*scrape) float64) { add(name, help, prometheus.CounterValue, nil, v) }
	u := func(f func(*scrape) uint64) func(*scrape) float64 {
		return func(sc *scrape) float64 { return float64(f(sc)) }
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}

	// Server and raft.
	gauge("kayadb_server_ready", "1 when /readyz answers 200: a leader is known and this node has applied what was committed when it started.",
		func(sc *scrape) float64 { return b2f(sc.ready) })
	gauge("kayadb_raft_term", "The raft term this node is in.", u(func(sc *scrape) uint64 { return sc.st.Term }))
	gauge("kayadb_raft_leader_id", "The id of the leader this node knows, 0 when none.", u(func(sc *scrape) uint64 { return sc.st.Leader }))
	gauge("kayadb_raft_has_leader", "1 when this node knows a leader.", func(sc *scrape) float64 { return b2f(sc.st.Leader != 0) })
	gauge("kayadb_raft_is_leader", "1 when this node is the leader.", func(sc *scrape) float64 { return b2f(sc.st.Role == raft.StateLeader) })
	gauge("kayadb_raft_commit_index", "The highest raft log index this node knows to be committed.", u(func(sc *scrape) uint64 { return sc.st.Commit }))
	gauge("kayadb_raft_applied_index", "The highest raft log index applied to this node's state machine.", u(func(sc *scrape) uint64 { return sc.applied }))
	gauge("kayadb_raft_snapshot_index", "The raft index of this node's current snapshot, 0 when none.", u(func(sc *scrape) uint64 { return sc.snapIndex }))
	counter("kayadb_raft_snapshots_taken_total", "Raft snapshots this node took (and compacted its log behind) since it started.", u(func(sc *scrape) uint64 { return sc.taken }))
	counter("kayadb_raft_snapshots_installed_total", "Raft snapshots received from a leader and installed since this node started.", u(func(sc *scrape) uint64 { return sc.installed }))
	counter("kayadb_raft_commit_notices_sent_total", "Appends without entries (a follower's notice of a new commit index) this node, as leader, held back and then sent because no other append to that follower made them redundant within the hold delay.", u(func(sc *scrape) uint64 { return sc.noticesSent }))
	counter("kayadb_raft_commit_notices_replaced_total", "Appends without entries this node, as leader, held back and never sent because a later append to the same follower carried the commit index.", u(func(sc *scrape) uint64 { return sc.noticesReplaced }))
	gauge("kayadb_raft_voters", "Voting members in this node's raft configuration.", func(sc *scrape) float64 { return float64(len(sc.st.Voters)) })
	gauge("kayadb_raft_learners", "Learners (non-voting members) in this node's raft configuration.", func(sc *scrape) float64 { return float64(len(sc.st.Learners)) })
	gauge("kayadb_raft_proposals_pending", "Client writes proposed by this node that wait for their entry to be applied (or to fail).", func(sc *scrape) float64 { return float64(sc.pending) })
	gauge("kayadb_raft_proposals_queued", "Proposals waiting for the raft loop (not yet handed to raft).", func(sc *scrape) float64 { return float64(sc.queued) })
	counter("kayadb_raft_proposals_dropped_total", "Proposals raft refused since this node started (no leader, leadership transfer, too much uncommitted data); they were not appended.", u(func(sc *scrape) uint64 { return sc.dropped }))
	const screenedHelp = "Raft messages from peers dropped before raft because they would make it panic or no correct peer sends them, by reason (see internal/raftnode/screen.go)."
	for _, r := range raftnode.ScreenReasons() {
		add("kayadb_raft_screened_messages_total", screenedHelp, prometheus.CounterValue, prometheus.Labels{"reason": r.String()},
			u(func(sc *scrape) uint64 { return sc.screened[r] }))
	}
	counter("kayadb_read_index_rounds_total", "ReadIndex rounds run for linearizable reads (concurrent reads share one; a node that is the only voter needs none).",
		u(func(sc *scrape) uint64 { return sc.readRounds }))
	counter("kayadb_apply_version_cache_hits_total", "Lookups of a key's current version by the apply (each write's, and a transaction's read-set validation) answered by its cache of current versions, without an engine lookup.",
		u(func(sc *scrape) uint64 { return sc.vcHits }))
	counter("kayadb_apply_version_cache_misses_total", "Lookups of a key's current version by the apply that went to the engine (the key was not in the cache of current versions).",
		u(func(sc *scrape) uint64 { return sc.vcMisses }))
	counter("kayadb_apply_rejected_entries_total", "Committed raft entries that did not decode or held an invalid command or configuration change, applied as no-ops (on every node alike).",
		u(func(sc *scrape) uint64 { return sc.rejectedEntries }))
	gauge("kayadb_raft_stalled", "1 while the raft loop or its apply goroutine waits to retry a step that failed on a full disk (the node still follows the leader, but applies nothing new, and acknowledges nothing new once its apply queue is full or its log cannot be written).",
		func(sc *scrape) float64 { return b2f(sc.stalled) })
	counter("kayadb_raft_stalls_total", "Times the raft loop or its apply goroutine stalled on a full disk since this node started.", u(func(sc *scrape) uint64 { return sc.stalls }))
	gauge("kayadb_raft_log_segments", "Segment files of the raft log.", func(sc *scrape) float64 { return float64(sc.logSegments) })
	counter("kayadb_raft_log_bytes_written_total", "Bytes appended to the raft log since this node started.", func(sc *scrape) float64 { return float64(sc.logBytes) })
	counter("kayadb_raft_log_fsyncs_total", "Raft log appends that were fsynced since this node started.", func(sc *scrape) float64 { return float64(sc.logSyncs) })
	c.hists = append(c.hists, histMetric{prometheus.NewDesc("kayadb_raft_log_fsync_duration_seconds",
		"Latency of the raft log's fsyncs (every acknowledged write waits for one on a majority of the nodes).", nil, nil),
		func(sc *scrape) ([32]uint64, time.Duration) { return sc.logSync, sc.logSyncSum }})
	const stageHelp = "Time client requests spend in each stage of their path through this node (docs/design/latency.md): read (the request frame off the connection), decode (to the proposal queued or the store called), queue (waiting for the raft loop), raft_ready (the raft loop from waking to writing the log or answering reads), log_fsync (the raft log's write and fsync), replicate (a leader's entries from durable to committed; a read's ReadIndex round), apply (entries applied to the engine; a read waiting for the applied index), wake (from the raft loop's answer to the request's goroutine running), engine (a read's engine lookup), reply (from the reply ready to written). Stages of the raft loop are counted once per Ready, which may serve many requests."
	for st := raftnode.Stage(0); st < raftnode.NumStages; st++ {
		c.hists = append(c.hists, histMetric{prometheus.NewDesc("kayadb_request_stage_seconds", stageHelp, nil, prometheus.Labels{"stage": st.String()}),
			func(*scrape) ([32]uint64, time.Duration) { return s.stages.Histogram(st) }})
	}

	// Peer transport.
	t := func(f func(st *transport.Stats) uint64) func(*scrape) float64 {
		return func(sc *scrape) float64 { return float64(f(&sc.trans)) }
	}
	counter("kayadb_transport_messages_sent_total", "Raft messages written to a peer connection.", t(func(st *transport.Stats) uint64 { return st.Sent }))
	counter("kayadb_transport_messages_received_total", "Raft messages received from peers and handed to raft.", t(func(st *transport.Stats) uint64 { return st.Received }))
	const droppedHelp = "Outgoing raft messages dropped: reason queue_full (the peer's queue was full), unknown_peer (addressed to an id outside the roster)."
	add("kayadb_transport_messages_dropped_total", droppedHelp, prometheus.CounterValue, prometheus.Labels{"reason": "queue_full"}, t(func(st *transport.Stats) uint64 { return st.DroppedFull }))
	add("kayadb_transport_messages_dropped_total", droppedHelp, prometheus.CounterValue, prometheus.Labels{"reason": "unknown_peer"}, t(func(st *transport.Stats) uint64 { return st.DroppedUnknown }))
	const rejectedHelp = "Incoming raft messages refused: reason unknown_sender (from an id outside the roster), wrong_recipient (addressed to another id), local_type (a message type raft uses only inside a node), snapshot_outside_stream (MsgSnap in a message frame)."
	add("kayadb_transport_messages_rejected_total", rejectedHelp, prometheus.CounterValue, prometheus.Labels{"reason": "unknown_sender"}, t(func(st *transport.Stats) uint64 { return st.RejectedFrom }))
	add("kayadb_transport_messages_rejected_total", rejectedHelp, prometheus.CounterValue, prometheus.Labels{"reason": "wrong_recipient"}, t(func(st *transport.Stats) uint64 { return st.RejectedTo }))
	add("kayadb_transport_messages_rejected_total", rejectedHelp, prometheus.CounterValue, prometheus.Labels{"reason": "local_type"}, t(func(st *transport.Stats) uint64 { return st.ScreenedLocal }))
	add("kayadb_transport_messages_rejected_total", rejectedHelp, prometheus.CounterValue, prometheus.Labels{"reason": "snapshot_outside_stream"}, t(func(st *transport.Stats) uint64 { return st.ScreenedSnap }))
	const connRejectedHelp = "Raft connections closed before any frame was read: reason auth (the peer token is missing on one side, or a proof did not check out; either direction), version (another handshake version), connection_limit (too many inbound connections), source_limit (too many unauthenticated connections from one address)."
	add("kayadb_transport_rejected_total", connRejectedHelp, prometheus.CounterValue, prometheus.Labels{"reason": "auth"}, t(func(st *transport.Stats) uint64 { return st.RejectedAuth }))
	add("kayadb_transport_rejected_total", connRejectedHelp, prometheus.CounterValue, prometheus.Labels{"reason": "version"}, t(func(st *transport.Stats) uint64 { return st.RejectedVersion }))
	add("kayadb_transport_rejected_total", connRejectedHelp, prometheus.CounterValue, prometheus.Labels{"reason": "connection_limit"}, t(func(st *transport.Stats) uint64 { return st.RejectedConnLimit }))
	add("kayadb_transport_rejected_total", connRejectedHelp, prometheus.CounterValue, prometheus.Labels{"reason": "source_limit"}, t(func(st *transport.Stats) uint64 { return st.RejectedSourceLimit }))
	gauge("kayadb_transport_inbound_connections", "Raft connections from peers open now (authenticated or in their handshake).", func(sc *scrape) float64 { return float64(sc.trans.InboundConns) })
	counter("kayadb_transport_bad_frames_total", "Peer connections closed for a malformed frame.", t(func(st *transport.Stats) uint64 { return st.BadFrames }))
	counter("kayadb_transport_tls_rejections_total", "Inbound peer connections whose TLS handshake (or peer identity check) failed.", t(func(st *transport.Stats) uint64 { return st.RejectedTLS }))
	counter("kayadb_transport_dials_total", "Connection attempts to peers.", t(func(st *transport.Stats) uint64 { return st.Dials }))
	counter("kayadb_transport_dial_failures_total", "Connection attempts to peers that failed.", t(func(st *transport.Stats) uint64 { return st.DialFailures }))
	gauge("kayadb_transport_connected_peers", "Peers with an open outgoing connection.", func(sc *scrape) float64 { return float64(sc.trans.ConnectedPeers) })
	counter("kayadb_transport_snapshots_sent_total", "Snapshot streams sent and acknowledged by the receiver.", t(func(st *transport.Stats) uint64 { return st.SnapshotsSent }))
	counter("kayadb_transport_snapshots_failed_total", "Snapshot streams that failed, sending or receiving.", t(func(st *transport.Stats) uint64 { return st.SnapshotsFailed }))
	counter("kayadb_transport_snapshots_received_total", "Snapshot streams received and acknowledged.", t(func(st *transport.Stats) uint64 { return st.SnapshotsRecv }))

	// Engine: the STATS engine document, and more of engine.Metrics.
	counter("kayadb_engine_put_total", "Well-formed PUT requests that reached this node's state machine, NOT_LEADER refusals included (STATS put_count).", u(func(sc *scrape) uint64 { return sc.kvPut }))
	counter("kayadb_engine_get_total", "Well-formed GET requests that reached this node's state machine, NOT_LEADER refusals included (STATS get_count).", u(func(sc *scrape) uint64 { return sc.kvGet }))
	counter("kayadb_engine_delete_total", "Well-formed DELETE requests that reached this node's state machine, NOT_LEADER refusals included (STATS delete_count).", u(func(sc *scrape) uint64 { return sc.kvDelete }))
	counter("kayadb_engine_scan_total", "Well-formed SCAN requests that reached this node's state machine, NOT_LEADER refusals included (STATS scan_count).", u(func(sc *scrape) uint64 { return sc.kvScan }))
	e := func(f func(m *engine.Metrics) float64) func(*scrape) float64 {
		return func(sc *scrape) float64 { return f(sc.eng) }
	}
	counter("kayadb_engine_wal_bytes_written_total", "Bytes written to the engine's write-ahead log (STATS wal_bytes_written).", e(func(m *engine.Metrics) float64 { return float64(m.WAL.BytesWritten) }))
	counter("kayadb_engine_wal_fsyncs_total", "Engine write-ahead log fsyncs (STATS wal_fsync_count).", e(func(m *engine.Metrics) float64 { return float64(m.WAL.Syncs) }))
	c.hists = append(c.hists, histMetric{prometheus.NewDesc("kayadb_engine_wal_fsync_duration_seconds",
		"Latency of the engine's write-ahead log fsyncs (STATS wal_fsync_total_us is their sum). The engine syncs its log by volume; client writes are made durable by the raft log's fsyncs.", nil, nil),
		func(sc *scrape) ([32]uint64, time.Duration) { return sc.walSync.Counts, sc.walSync.Sum }})
	gauge("kayadb_engine_memtable_entries", "Entries in the engine's memtables (STATS memtable_entries).", e(func(m *engine.Metrics) float64 { return float64(m.MemTable.Entries) }))
	gauge("kayadb_engine_memtable_bytes", "Size of the engine's memtables.", e(func(m *engine.Metrics) float64 { return float64(m.MemTable.Size) }))
	gauge("kayadb_engine_sstables", "Tables in the LSM tree, all levels (STATS sstable_count).", e(func(m *engine.Metrics) float64 {
		n := 0
		for _, l := range m.Levels {
			n += l.NumFiles
		}
		return float64(n)
	}))
	gauge("kayadb_engine_table_bytes", "Size of the LSM tree's tables.", e(func(m *engine.Metrics) float64 { return float64(m.DiskSize) }))
	gauge("kayadb_engine_last_sequence", "The engine's last visible sequence number (STATS last_sequence).", e(func(m *engine.Metrics) float64 { return float64(m.VisibleSeq) }))
	counter("kayadb_engine_flushes_total", "Memtable flushes (STATS flush_count).", e(func(m *engine.Metrics) float64 { return float64(m.Flush.Count) }))
	c.hists = append(c.hists, histMetric{prometheus.NewDesc("kayadb_engine_flush_duration_seconds",
		"Duration of memtable flushes (STATS flush_total_us is the sum).", nil, nil),
		func(sc *scrape) ([32]uint64, time.Duration) { return sc.flush.Counts, sc.flush.Sum }})
	counter("kayadb_engine_compactions_total", "Compactions (STATS compaction_count).", e(func(m *engine.Metrics) float64 { return float64(m.Compaction.Count) }))
	c.hists = append(c.hists, histMetric{prometheus.NewDesc("kayadb_engine_compaction_duration_seconds",
		"Duration of compactions (STATS compaction_total_us is the sum).", nil, nil),
		func(sc *scrape) ([32]uint64, time.Duration) { return sc.compaction.Counts, sc.compaction.Sum }})
	counter("kayadb_engine_compaction_bytes_read_total", "Bytes read by compactions.", e(func(m *engine.Metrics) float64 { return float64(m.Compaction.BytesRead) }))
	counter("kayadb_engine_compaction_bytes_written_total", "Bytes written by compactions.", e(func(m *engine.Metrics) float64 { return float64(m.Compaction.BytesWritten) }))
	gauge("kayadb_engine_compaction_debt_bytes", "Estimated bytes compactions must rewrite to bring every level within its target.", e(func(m *engine.Metrics) float64 { return float64(m.Compaction.EstimatedDebt) }))
	const stallHelp = "Writes that waited for the engine: cause memtable (every memtable full, flush behind), l0 (too many level-0 tables, compaction behind)."
	add("kayadb_engine_write_stalls_total", stallHelp, prometheus.CounterValue, prometheus.Labels{"cause": "memtable"}, e(func(m *engine.Metrics) float64 { return float64(m.Stalls.MemTable) }))
	add("kayadb_engine_write_stalls_total", stallHelp, prometheus.CounterValue, prometheus.Labels{"cause": "l0"}, e(func(m *engine.Metrics) float64 { return float64(m.Stalls.L0) }))
	counter("kayadb_engine_write_stall_seconds_total", "Time writes spent stalled.", e(func(m *engine.Metrics) float64 { return m.Stalls.Duration.Seconds() }))
	counter("kayadb_engine_block_cache_hits_total", "Block cache hits (STATS block_cache_hits).", e(func(m *engine.Metrics) float64 { return float64(m.BlockCache.Hits) }))
	counter("kayadb_engine_block_cache_misses_total", "Block cache misses (STATS block_cache_misses).", e(func(m *engine.Metrics) float64 { return float64(m.BlockCache.Misses) }))
	gauge("kayadb_engine_block_cache_hit_ratio", "Block cache hits / (hits + misses) since the engine opened; 0 before any lookup.", e(func(m *engine.Metrics) float64 { return m.BlockCache.HitRatio }))
	gauge("kayadb_engine_block_cache_bytes", "Bytes held by the block cache.", e(func(m *engine.Metrics) float64 { return float64(m.BlockCache.Size) }))
	gauge("kayadb_engine_block_cache_capacity_bytes", "The block cache's capacity.", e(func(m *engine.Metrics) float64 { return float64(m.BlockCache.Capacity) }))
	// Disk space (diskfull.go).
	gauge("kayadb_disk_full", "1 while this node is in disk-full mode: it refuses client writes until free space is back above twice the reserve (as etcd's NOSPACE alarm).",
		func(sc *scrape) float64 { return b2f(sc.diskFull) })
	gauge("kayadb_disk_free_bytes", "Free space an unprivileged writer can use on the data directory's file system, at the last check.", u(func(sc *scrape) uint64 { return sc.diskFree }))
	gauge("kayadb_disk_total_bytes", "Size of the data directory's file system.", u(func(sc *scrape) uint64 { return sc.diskTotal }))
	gauge("kayadb_disk_reserve_bytes", "Size of the disk reserve (--disk-reserve): the ballast file kept while the disk has room and given back when it fills.", u(func(sc *scrape) uint64 { return sc.diskReserve }))
	counter("kayadb_disk_full_events_total", "Times this node entered disk-full mode since it started.", u(func(sc *scrape) uint64 { return sc.diskEvents }))
	// Versioned data (kv).
	m := func(f func(st *mvccStats) uint64) func(*scrape) float64 {
		return func(sc *scrape) float64 { return float64(f(&sc.mvcc)) }
	}
	gauge("kayadb_mvcc_applied_revision", "The commit timestamp (revision) of the last entry applied on this node (STATS mvcc.applied_revision).", m(func(st *mvccStats) uint64 { return st.AppliedRevision }))
	gauge("kayadb_mvcc_oldest_readable_revision", "The GC horizon: reads at older revisions answer \"compacted\" (STATS mvcc.oldest_readable_revision).", m(func(st *mvccStats) uint64 { return st.OldestReadable }))
	gauge("kayadb_mvcc_retained_seconds", "How far back in time reads at a past revision reach: the applied revision's time minus the horizon's.", func(sc *scrape) float64 { return sc.mvcc.RetainedSeconds })
	gauge("kayadb_mvcc_history_bytes", "Bytes of history (old versions), revision log and transaction outcomes written since the horizon: what garbage collection may still have to reclaim (STATS mvcc.history_bytes).", m(func(st *mvccStats) uint64 { return st.HistoryBytes }))
	gauge("kayadb_mvcc_retention_bytes", "The bound on history_bytes (--mvcc-retention-bytes; 0 = none).", m(func(st *mvccStats) uint64 { return st.RetentionBytes }))
	counter("kayadb_mvcc_gc_entries_dropped_total", "History, revision-log and outcome entries garbage-collected by compactions since the engine opened.", e(func(m *engine.Metrics) float64 { return float64(m.Compaction.FilterDropped) }))
	counter("kayadb_clock_offset_exceeded_total", "Commit timestamps applied here that were ahead of this node's clock by more than --max-clock-offset (a clock out of sync).", m(func(st *mvccStats) uint64 { return st.ClockOffsetExceeded }))
	gauge("kayadb_engine_encryption_stale_tables", "Live tables not sealed with the active encryption key (plain ones included when encryption is on): the background rewrite's work left after a rotation.",
		e(func(m *engine.Metrics) float64 { return float64(m.Encryption.StaleTables) }))
	counter("kayadb_engine_encryption_rewrites_total", "Compactions that rewrote tables sealed with an older key (or plain) under the active key.",
		e(func(m *engine.Metrics) float64 { return float64(m.Encryption.Rewrites) }))
	c.tablesByKey = prometheus.NewDesc("kayadb_engine_tables_by_key", "Live tables by the encryption key id that sealed them (\"plain\": unencrypted; \"unknown\": a footer unreadable at open).", []string{"key"}, nil)
	gauge("kayadb_engine_recovery_duration_seconds", "How long this node took to open its state at start (STATS recovery_duration_us).",
		func(sc *scrape) float64 { return sc.openDur.Seconds() })
	return c
}

// Describe implements prometheus.Collector.
func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.ms {
		ch <- m.desc
	}
	for _, h := range c.hists {
		ch <- h.desc
	}
	ch <- c.tablesByKey
}

// Collect implements prometheus.Collector: it reads the node once and
// emits every series.
func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	sc := c.s.scrapeNode()
	for _, m := range c.ms {
		ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.value(sc))
	}
	for _, h := range c.hists {
		counts, sum := h.counts(sc)
		count, buckets := powerOfTwoBuckets(counts)
		ch <- prometheus.MustNewConstHistogram(h.desc, count, sum.Seconds(), buckets)
	}
	if sc.eng != nil {
		for key, n := range sc.eng.Encryption.TablesByKey {
			ch <- prometheus.MustNewConstMetric(c.tablesByKey, prometheus.GaugeValue, float64(n), key)
		}
	}
}

// scrapeNode reads everything the collector exports.
func (s *Server) scrapeNode() *scrape {
	sc := &scrape{st: s.node.Status(), applied: s.store.AppliedIndex(), openDur: s.openDur}
	if cur := s.snaps.Current(); cur != nil {
		sc.snapIndex = cur.Index
	}
	sc.taken, sc.installed = s.node.SnapshotCounts()
	sc.noticesSent, sc.noticesReplaced = s.node.CommitNoticeCounts()
	sc.queued, sc.dropped = s.node.ProposalsQueued(), s.node.ProposalsDropped()
	sc.screened = s.node.ScreenStats()
	sc.rejectedEntries = s.store.RejectedEntries() + s.node.RejectedConfChanges()
	sc.vcHits, sc.vcMisses = s.store.VersionCacheStats()
	sc.stalled = s.node.Stalled() != nil
	sc.stalls, _ = s.node.StallCounts()
	sc.pending = s.store.PendingWrites()
	sc.ready, _ = s.readiness()
	sc.trans = s.trans.Stats()
	ls := s.rlog.Stats()
	sc.logSegments, sc.logBytes, sc.logSyncs = ls.Segments, ls.BytesWritten, ls.Syncs
	sc.logSync, sc.logSyncSum = s.rlog.SyncLatency()
	_ = s.store.DB(func(db *engine.DB) error {
		sc.eng = db.Metrics()
		sc.walSync, sc.flush, sc.compaction = db.LatencyHistograms()
		return nil
	})
	if g := s.disk; g != nil {
		sc.diskFull, sc.diskFree, sc.diskTotal = g.full.Load(), g.avail.Load(), g.total.Load()
		sc.diskReserve, sc.diskEvents = uint64(g.reserve), g.events.Load()
	}
	sc.readRounds = s.store.ReadRounds()
	k := s.store.Counters()
	sc.kvPut, sc.kvGet, sc.kvDelete, sc.kvScan = k.Put, k.Get, k.Delete, k.Scan
	sc.mvcc = s.mvccStats()
	return sc
}

// mvccStats is the "mvcc" member of STATS and the kayadb_mvcc_* series.
type mvccStats struct {
	AppliedRevision     uint64  `json:"applied_revision"`
	OldestReadable      uint64  `json:"oldest_readable_revision"`
	RetainedSeconds     float64 `json:"retained_seconds"`
	HistoryBytes        uint64  `json:"history_bytes"`
	RetentionSeconds    float64 `json:"retention_seconds"`
	RetentionBytes      uint64  `json:"retention_bytes"`
	ClockOffsetExceeded uint64  `json:"clock_offset_exceeded"`
}

func (s *Server) mvccStats() mvccStats {
	st := mvccStats{
		AppliedRevision: s.store.AppliedTS(), OldestReadable: s.store.Horizon(),
		HistoryBytes:        uint64(max(s.store.HistoryBytes(), 0)),
		ClockOffsetExceeded: s.store.Clock().OffsetExceeded(),
	}
	ret, bytes := s.store.Retention()
	st.RetentionSeconds, st.RetentionBytes = ret.Seconds(), uint64(bytes)
	if st.OldestReadable > 0 && st.AppliedRevision > st.OldestReadable {
		st.RetainedSeconds = kv.TSTime(st.AppliedRevision).Sub(kv.TSTime(st.OldestReadable)).Seconds()
	}
	return st
}

// Exported histogram buckets: 2^i µs for i in [firstBucket, lastBucket],
// 8 µs to about 16.8 s. The source buckets are power-of-two microseconds
// too, so the cumulative count at each bound is exact.
const firstBucket, lastBucket = 3, 24

// powerOfTwoBuckets turns power-of-two microsecond counts (counts[i]: in
// [2^(i-1), 2^i) µs) into a Prometheus histogram's count and cumulative
// buckets.
func powerOfTwoBuckets(counts [32]uint64) (uint64, map[float64]uint64) {
	buckets := make(map[float64]uint64, lastBucket-firstBucket+1)
	var cum, total uint64
	for i, n := range counts {
		total += n
		if i <= lastBucket {
			cum += n
		}
		if i >= firstBucket && i <= lastBucket {
			buckets[math.Ldexp(1e-6, i)] = cum
		}
	}
	return total, buckets
}
