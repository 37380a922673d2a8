// Package server wires one KayaDB node together: the storage engine, the
// raft log, the raft node, the replicated state machine, the peer
// transport and the client listener, and runs their lifecycle.
//
// It owns the node's data directory:
//
//	DIR/LOCK                  flock held while the server runs
//	DIR/engine/               the LSM engine (user data + applied index)
//	DIR/raft/wal/             the raft log
//	DIR/cluster-roster.json   members: id, raft address, client address
//	DIR/JOINING               present when the node was started with --join
//	DIR/raft/snap-<index>/    the current snapshot's engine checkpoint
//	DIR/raft/raft-snapshot.bin  the current snapshot's metadata
//
// Start order (New, one named function per step): lock, roster, snapshot
// store, engine, state machine, raft log, raft node, transport, client
// listener, then the first start's roster is written and everything runs.
// Close stops them in reverse and never leaves a goroutine behind.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/audit"
	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/errs"
	"github.com/kayadb/kayadb/internal/feed"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/raftlog"
	"github.com/kayadb/kayadb/internal/raftnode"
	"github.com/kayadb/kayadb/internal/security"
	"github.com/kayadb/kayadb/internal/snap"
	"github.com/kayadb/kayadb/internal/transport"
	"github.com/kayadb/kayadb/internal/txn"
	"github.com/kayadb/kayadb/internal/vfs"
)

// Config configures a server.
type Config struct {
	// NodeID is this node's id (positive, never reused).
	NodeID uint64
	// DataDir holds all of the node's state.
	DataDir string
	// RaftAddr and ClientAddr are the listen addresses.
	RaftAddr, ClientAddr string
	// Peers is the static roster of a new cluster (including this node).
	// Empty means a single-node cluster of this node.
	Peers []Member
	// Join starts a new member of a running cluster (no bootstrap).
	Join bool

	// TickInterval, ElectionTicks, HeartbeatTicks tune raft timing.
	TickInterval                  time.Duration
	ElectionTicks, HeartbeatTicks int
	// RaftTicker, when set, is the raft clock instead of a time.Ticker of
	// TickInterval (raftnode.Config.Ticker); the node stops it. A test
	// seam: tests drive elections and heartbeats by hand with it (package
	// clustertest). TickInterval still says how long a tick stands for.
	RaftTicker raftnode.Ticker
	// RequestTimeout bounds every client request. Default 5 s.
	RequestTimeout time.Duration
	// SnapshotEntries: a snapshot is taken (and the raft log compacted)
	// every this many applied entries. Default 10,000; negative disables.
	SnapshotEntries int64
	// CatchUpEntries is how many entries the log keeps behind a snapshot.
	// Default 5,000.
	CatchUpEntries uint64
	// SnapshotBytesPerSecond throttles snapshot transfers to followers.
	// Default 64 MiB/s; negative means unlimited.
	SnapshotBytesPerSecond int64

	// AllowPublicBind accepts wildcard and public listen addresses, with a
	// warning banner, instead of refusing to start.
	AllowPublicBind bool
	// OperatorToken, when set, is required (in the ADMIN prefix) on every
	// admin opcode. Never logged.
	OperatorToken string
	// ClientToken, when set, is required (in the CLIENT prefix) on every
	// data opcode. HELLO and HEALTH stay open. Never logged.
	ClientToken string
	// ACLFile, TenantFile and IdentityFile are the policy files
	// (--acl-file, --tenant-file, --identity-file; package authz),
	// reloaded on SIGHUP (Reload). Empty: none.
	ACLFile, TenantFile, IdentityFile string
	// PeerToken, when set, is the cluster secret raft connections prove in
	// their handshake, both ways, before any message is read (at least 16
	// bytes; the same on every node). Required with AllowPublicBind unless
	// the raft port uses mutual TLS or listens on loopback. Never logged.
	PeerToken string
	// TLS enables native TLS on the client and raft ports; with a CA, both
	// ports require certificates signed by it (mutual TLS).
	TLS security.TLSFiles
	// TLSReloadInterval is how often the TLS files are checked for changes
	// (a change reloads them). Default 5 s; negative disables the check
	// (SIGHUP still reloads).
	TLSReloadInterval time.Duration
	// Resolve replaces DNS for the bind guard (tests).
	Resolve security.Resolver

	Logger *slog.Logger

	// EngineOptions tunes the storage engine (FS, sizes). Nil: defaults.
	EngineOptions *engine.Options
	// NewTransport replaces the TCP peer transport (tests use an in-memory
	// network). The handler is the raft node.
	NewTransport func(h transport.Handler) transport.Transport
	// ClientListener and RaftListener, when set, are used instead of
	// listening on the addresses (tests pass ":0" listeners).
	ClientListener, RaftListener net.Listener

	// MetricsAddr is the HTTP listener's address (/metrics, /livez,
	// /readyz, /health). Empty, with no MetricsListener, disables it;
	// ParseFlags fills in 127.0.0.1:9090 unless --no-metrics.
	MetricsAddr string
	// MetricsListener, when set, is used instead of MetricsAddr (tests).
	MetricsListener net.Listener
	// EnablePprof serves net/http/pprof under /debug/pprof/ on that listener.
	EnablePprof bool
	// MetricsTLS serves that listener over HTTPS with the node's TLS
	// certificate (TLS.Cert must be set); with TLS.CA, clients must
	// present a certificate it signed, as on the client port.
	MetricsTLS bool
	// DiskReserve is the size of the ballast file kept in the data
	// directory and given back when the disk fills (diskfull.go): 0 picks
	// 1% of the file system (32 MiB to 1 GiB), negative disables it.
	DiskReserve int64

	// MetricsOptional: MetricsAddr is the default, not asked for, so a
	// busy port logs a warning and the node runs without the listener
	// instead of refusing to start.
	MetricsOptional bool

	// Client port limits (clientlimits.go). MaxClientConnections bounds
	// open client connections (default 1,024), and
	// MaxClientConnectionsPerSource those from one source address, an IPv4
	// address or an IPv6 /64 (default a quarter of MaxClientConnections,
	// at least 16).
	MaxClientConnections, MaxClientConnectionsPerSource int
	// ClientIdleTimeout closes a connection with no request in flight that
	// sends nothing for this long, or whose client reads none of its
	// replies for this long. Default 5 min; negative disables.
	ClientIdleTimeout time.Duration
	// ClientFrameTimeout: once a request frame's first byte has arrived,
	// the whole frame must arrive within this. Default 30 s; negative
	// disables.
	ClientFrameTimeout time.Duration
	// MaxReplyMemory bounds the bytes of replies not yet written (and of
	// large requests being handled), for all clients together. Default
	// 512 MiB.
	MaxReplyMemory int64
	// MaxConnReplyBytes bounds the bytes of requests and replies in flight
	// on one connection; its reader stops reading past it. Default 8 MiB.
	MaxConnReplyBytes int64

	// ApplyCacheBytes bounds the apply's cache of current versions
	// (docs/design/latency.md §14): 0 means kv's default (128 MiB), a
	// negative value turns it off.
	ApplyCacheBytes int64

	// Versioned data (kv, docs/design/mvcc-and-transactions.md).
	// LeaseReads serves linearizable reads on the leader from a lease
	// instead of a ReadIndex round (--read-mode lease; raftnode.LocalReadIndex
	// states the clock assumption).
	LeaseReads bool
	// SyncLogWrites writes and fsyncs each raft Ready before the next
	// (--raft-log-writes sync) instead of on raftnode's storage goroutine.
	SyncLogWrites bool
	// MaxClockOffset is the clock offset beyond which a commit timestamp
	// ahead of this node's clock is counted and logged. Default 500 ms.
	MaxClockOffset time.Duration
	// MVCCRetention: history older than this may be garbage-collected.
	// Default 1 h; negative: no time bound.
	MVCCRetention time.Duration
	// MVCCRetentionBytes bounds the retained history in bytes. 0 picks
	// 10% of the data directory's file system (256 MiB to 8 GiB);
	// negative: no byte bound.
	MVCCRetentionBytes int64
	// CDCRetention and CDCRetentionBytes bound how much history registered
	// change-feed consumers may hold back beyond the MVCC retention
	// (docs/design/cdc-and-watch.md §3). 0 picks the default (24 h; a
	// quarter of the file system, 1 to 32 GiB); negative: no bound.
	CDCRetention      time.Duration
	CDCRetentionBytes int64
	// Clock replaces the wall clock of the node's hybrid logical clock
	// (tests).
	Clock func() time.Time

	// Transactions (package txn). TxnTimeout expires a transaction that
	// sees no request for this long (default 30 s); MaxOpenTxns bounds
	// the open transactions (default 10,000); MaxTxnBytes one
	// transaction's keys and values (default 16 MiB); TxnIsolation is
	// the isolation level (default serializable).
	TxnTimeout   time.Duration
	MaxOpenTxns  int
	MaxTxnBytes  int64
	TxnIsolation txn.Isolation

	// Audit configures the audit log (audit.go).
	Audit AuditConfig
	// Encryption at rest (encryption.go): EncryptionKeyFile holds one key
	// (32 raw bytes, key id 0), EncryptionKeyringFile a keyring (docs/
	// formats.md); at most one of them. Everything the node writes that
	// holds user data is sealed under the active key; SIGHUP reloads the
	// file (ReloadEncryption). Neither set: EngineOptions.Encryption, if
	// any, is the node's Sealer (tests).
	EncryptionKeyFile, EncryptionKeyringFile string
}

// Server is a running node.
type Server struct {
	cfg   Config
	log   *slog.Logger
	lock  io.Closer
	db    *engine.DB
	coll  *kv.Collector
	store *kv.Store
	txns  *txn.Manager
	cdc   *feed.Consumers // change-feed consumers (feed.go)
	hub   *feed.Hub       // watches (feed.go)
	rlog  *raftlog.Log
	node  *raftnode.Node
	trans transport.Transport
	// stages times the steps of every client request
	// (kayadb_request_stage_seconds; docs/design/latency.md).
	stages *raftnode.Stages
	ros    *roster
	fs     vfs.FS
	snaps  *snap.Store
	eo     *engine.Options
	// bset holds the backups in progress while the server accepts
	// clients (backup.go).
	bset atomic.Pointer[backupSet]
	// sealer seals the engine's and the raft log's records (nil: no
	// encryption at rest); encMu serializes keyring reloads
	// (encryption.go). reloadFailures counts refused reloads.
	sealer         *crypt.Sealer
	encMu          sync.Mutex
	reloadFailures *prometheus.CounterVec

	snapMu      sync.Mutex
	snapPending map[uint64]string // received checkpoints waiting for raft: index → temp dir
	snapLimiter *snap.Limiter
	takeMu      sync.Mutex     // one checkpoint at a time
	bg          sync.WaitGroup // background snapshot senders

	confMu      sync.Mutex
	confWaiters map[uint64]chan uint64 // membership request id → applied index
	confBusy    bool
	confReqID   uint64

	clientLn net.Listener
	raftLn   net.Listener
	tls      *security.TLS // nil without TLS
	authz    authzState    // the policy: who may do what (authz.go)
	tlsConf  *tls.Config   // the client port's server config
	stopBg   context.CancelFunc
	started  time.Time
	openDur  time.Duration

	inflight atomic.Int64  // client requests read and not yet answered
	clim     *clientLimits // client connection and reply memory limits
	nodeRef  atomic.Pointer[raftnode.Node]

	obs *observability // metrics registry and HTTP listener (metrics.go, httpapi.go)

	disk        *diskGuard // free space, the ballast, disk-full mode (diskfull.go)
	diskStarted bool

	audit        *audit.Log   // nil when no audit sink is configured (audit.go)
	auditRefused atomic.Int64 // requests refused by --audit-required

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closing bool
	wg      sync.WaitGroup
	done    chan struct{}
}

// New opens the node's state and starts it, in this order (each step is a
// function below; a failure closes what the earlier ones opened):
//
//	newServer            defaults, the logger
//	checkSecurity        the configuration's security checks (configError)
//	openDataDir          create and lock DIR, the disk guard
//	openAudit            the audit log's sinks (audit.go)
//	loadRoster           the roster (saved, or from the flags), DIR/JOINING
//	openSnapshots        the snapshot store and its limiter
//	openEngine           the storage engine, finishing a snapshot install
//	openStateMachine     the replicated state machine, the engine's roster
//	openRaftLog          the raft log, checked against the engine
//	newRaftNode          the raft node (not running yet)
//	startTransport       the raft listener and the peer transport
//	listenForClients     client limits, metrics listener, client listener, TLS reloads
//	persistFirstStart    the first start's roster and JOINING marker
//	run                  raft, the state machine, the disk guard, the accept loop
//
// Nothing a failed start wrote changes the next start: the roster and the
// JOINING marker of a first start are written only once every listener is
// bound.
func New(cfg Config) (_ *Server, retErr error) {
	s, err := newServer(cfg)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			s.closeParts()
		}
	}()
	if err := s.checkSecurity(); err != nil {
		return nil, configError{err}
	}
	if err := s.setupEncryption(); err != nil {
		return nil, configError{err}
	}
	var b boot
	for _, step := range []func(*boot) error{
		s.openDataDir, s.openAudit, s.loadRoster, s.openSnapshots, s.openEngine, s.openStateMachine,
		s.openRaftLog, s.newRaftNode, s.startTransport, s.listenForClients, s.persistFirstStart,
	} {
		if err := step(&b); err != nil {
			return nil, err
		}
	}
	s.run(&b)
	return s, nil
}

// boot is what one step of New hands to the next.
type boot struct {
	// firstStart holds the writes of a first start (the roster from the
	// flags, the JOINING marker), done by persistFirstStart once every
	// listener is bound.
	firstStart []func() error
	// rep is the raft log's report on opening it.
	rep *raftlog.OpenReport
	// applied is the state machine's applied index at start, snapIndex the
	// index of the raft log's snapshot (0 without one).
	applied, snapIndex uint64
}

// newServer checks the settings New cannot do without, fills in defaults
// and makes the server's logger (every line names the node and, once raft
// runs, its term).
func newServer(cfg Config) (*Server, error) {
	start := time.Now()
	if cfg.NodeID == 0 {
		return nil, configError{errors.New("--node-id must be a positive integer")}
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, conns: map[net.Conn]struct{}{}, done: make(chan struct{}), started: start, stages: new(raftnode.Stages),
		reloadFailures: newReloadFailures()}
	s.log = slog.New(termHandler{Handler: cfg.Logger.Handler(), term: s.currentTerm}).With("node", cfg.NodeID)
	return s, nil
}

// openDataDir creates the data directory (0700, made durable), warns about
// its permissions, takes its lock (a second server on it fails with
// errs.ErrLocked) and starts the disk guard's bookkeeping: a disk that
// filled while the node was down gets its ballast back before anything
// writes, so that the engine and the raft log can open.
func (s *Server) openDataDir(*boot) error {
	cfg := &s.cfg
	var fs vfs.FS = vfs.Default
	if cfg.EngineOptions != nil && cfg.EngineOptions.FS != nil {
		fs = cfg.EngineOptions.FS
	}
	s.fs = fs
	if err := vfs.MkdirAllSync(fs, cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating data directory %s: %w", cfg.DataDir, err)
	}
	if fs == vfs.Default {
		for _, w := range security.DirWarnings(cfg.DataDir) {
			s.log.Warn(w)
		}
	}
	lock, err := fs.Lock(filepath.Join(cfg.DataDir, "LOCK"))
	if err != nil {
		if errors.Is(err, vfs.ErrLocked) {
			return fmt.Errorf("%w: data directory %s is in use by another kayadb-server (%v); stop it or choose another --data", errs.ErrLocked, cfg.DataDir, err)
		}
		return fmt.Errorf("locking %s: %w", cfg.DataDir, err)
	}
	s.lock = lock
	s.disk = newDiskGuard(fs, cfg.DataDir, cfg.NodeID, cfg.DiskReserve, s.log.With("component", "disk"))
	return nil
}

// loadRoster loads the roster: from the data directory when the node has
// run before, else from the flags (Config.Peers, or this node alone). A
// node started with --join remembers it in DIR/JOINING: restarted before
// it heard from the cluster, it must still wait to be contacted rather
// than bootstrap a cluster of its own.
//
// Neither the marker nor a roster from the flags is written here: only
// once every listener is bound (persistFirstStart), so that a start that
// fails (a port in use, a bad TLS file) leaves nothing that changes the
// next one — a restart with corrected flags must advertise them.
func (s *Server) loadRoster(b *boot) error {
	cfg, fs := &s.cfg, s.fs
	ros, found, err := loadRoster(fs, cfg.DataDir)
	if err != nil {
		return err
	}
	s.ros = ros
	joinMarker := filepath.Join(cfg.DataDir, "JOINING")
	if _, err := fs.Stat(joinMarker); err == nil {
		cfg.Join = true
	} else if cfg.Join && !found {
		b.firstStart = append(b.firstStart, func() error {
			if err := vfs.WriteFileSync(fs, cfg.DataDir, joinMarker, []byte("started with --join; this node never bootstraps a cluster\n")); err != nil {
				return fmt.Errorf("writing %s: %w", joinMarker, err)
			}
			return nil
		})
	}
	if found {
		if len(cfg.Peers) > 0 {
			s.log.Info("using the roster saved in the data directory; --peer flags are ignored after the first start", "roster", ros.path)
		}
		return nil
	}
	members := cfg.Peers
	if len(members) == 0 {
		members = []Member{{ID: cfg.NodeID, RaftAddr: cfg.RaftAddr, ClientAddr: cfg.ClientAddr}}
	}
	self := false
	for _, m := range members {
		if m.ID == cfg.NodeID {
			self = true
		}
	}
	if !self && !cfg.Join {
		return fmt.Errorf("the members of the new cluster (--peer) do not include this node (--node-id %d)", cfg.NodeID)
	}
	ros.setUnsaved(members)
	b.firstStart = append(b.firstStart, func() error {
		if err := ros.save(); err != nil {
			return fmt.Errorf("writing the roster: %w", err)
		}
		return nil
	})
	return nil
}

// openSnapshots opens the snapshot store (DIR/raft: the current snapshot's
// metadata and checkpoint) and sets up the bookkeeping of snapshots sent
// and received: the bandwidth limiter, received checkpoints waiting for
// raft, and the waiters of membership changes.
func (s *Server) openSnapshots(*boot) error {
	s.snapPending = map[uint64]string{}
	s.confWaiters = map[uint64]chan uint64{}
	rate := s.cfg.SnapshotBytesPerSecond
	if rate == 0 {
		rate = 64 << 20
	}
	if rate > 0 {
		s.snapLimiter = &snap.Limiter{BytesPerSecond: rate}
	}
	var err error
	s.snaps, err = snap.Open(s.fs, filepath.Join(s.cfg.DataDir, "raft"))
	return err
}

// openEngine opens the storage engine (DIR/engine), after recovering from
// a crash in the middle of swapping one in. When the current snapshot is
// ahead of the engine, it finishes installing the snapshot's checkpoint,
// or refuses to start if the snapshot has no checkpoint (the engine lost
// writes it had made durable).
func (s *Server) openEngine(*boot) error {
	cfg := &s.cfg
	eo := cfg.EngineOptions.EnsureDefaults()
	eo.Logger = s.log.With("component", "engine")
	// Garbage collection of old versions runs in the engine's compactions;
	// the collector outlives engine replacements (snapshot installs).
	s.coll = kv.NewCollector()
	eo.CompactionFilter = s.coll.Filter
	eo.Encryption = s.sealer
	s.eo = eo
	if err := s.recoverEngine(); err != nil {
		return err
	}
	var err error
	s.db, err = engine.Open(s.enginePath(), eo)
	if err != nil {
		return fmt.Errorf("opening the storage engine: %w", err)
	}
	cur := s.snaps.Current()
	if cur == nil {
		return nil
	}
	applied, _, err := kv.ReadApplied(s.db)
	if err != nil {
		return err
	}
	if applied < cur.Index && cur.Dir == "" {
		// A snapshot without a checkpoint is written only after the
		// engine was made durable up to its index.
		return fmt.Errorf("the storage engine in %s has applied entries up to %d, but the raft snapshot (%s) says they were durable up to %d, "+
			"and the raft log before that is gone: the engine lost writes (a disk that ignores fsync, or files restored from elsewhere). "+
			"Replace the node: kayactl remove-node %d, then add a new member with a new id and an empty data directory",
			s.enginePath(), applied, filepath.Join(cfg.DataDir, "raft", "raft-snapshot.bin"), cur.Index, cfg.NodeID)
	}
	if applied < cur.Index {
		// A snapshot was committed but its engine was not swapped in
		// before a crash: finish the installation now.
		s.log.Info("finishing the installation of snapshot after a restart", "index", cur.Index, "engine_applied", applied)
		if err := s.db.Close(); err != nil {
			return err
		}
		s.db = nil
		if s.db, err = s.installEngine(s.snaps.Path(cur.Dir)); err != nil {
			return err
		}
	}
	return nil
}

// openStateMachine opens the replicated state machine over the engine,
// with the transaction manager's commands, and the manager. The
// engine's copy of the roster is the replicated one: it wins over the file
// (which may lag after a crash during a snapshot install).
func (s *Server) openStateMachine(*boot) error {
	var err error
	cfg := &s.cfg
	retention, retentionBytes := mvccRetention(*cfg, s.fs, s.log)
	holdRetention, holdBytes := cdcRetention(*cfg, s.fs, s.log)
	s.store, err = kv.Open(kv.Options{NodeID: cfg.NodeID, DB: s.db, RequestTimeout: cfg.RequestTimeout,
		Logger: s.log.With("component", "kv"), OnConfChange: s.onConfChange,
		Clock:     kv.NewClock(cfg.Clock, cfg.MaxClockOffset, s.log.With("component", "clock")),
		Collector: s.coll, Retention: retention, RetentionBytes: retentionBytes,
		Evaluators:  evaluators(txn.Evaluators(), feed.Evaluators()),
		HoldHistory: feed.Hold(func() *kv.Store { return s.store }), HoldRetention: holdRetention, HoldRetentionBytes: holdBytes,
		Stages: s.stages, VersionCacheBytes: cfg.ApplyCacheBytes})
	if err != nil {
		return err
	}
	if err := s.newTxnManager(); err != nil {
		return err
	}
	s.cdc = feed.NewConsumers(s.store, s.currentTerm)
	s.hub = feed.NewHub(s.store, s.log.With("component", "watch"))
	st, err := kv.ReadState(s.db)
	if err != nil {
		return err
	}
	if st.Roster != nil {
		return s.ros.replace(st.Roster)
	}
	return nil
}

// openRaftLog opens the raft log (DIR/raft/wal) from the current snapshot
// on, cutting a torn tail (logged), and refuses to start when the log is
// gone but the engine has applied entries: bootstrapping again would let
// this node forget its votes and acknowledgements (or, with an engine
// copied in from elsewhere, start a new log beside data that claims
// another history), whether or not the roster file is there.
func (s *Server) openRaftLog(b *boot) error {
	cfg := &s.cfg
	var snapMeta *pb.SnapshotMetadata
	if cur := s.snaps.Current(); cur != nil {
		snapMeta = &pb.SnapshotMetadata{Index: new(cur.Index), Term: new(cur.Term), ConfState: cur.ConfState}
	}
	var err error
	s.rlog, b.rep, err = raftlog.Open(raftlog.Options{FS: s.fs, Dir: filepath.Join(cfg.DataDir, "raft", "wal"), NodeID: cfg.NodeID, Snapshot: snapMeta,
		Sealer: s.sealer})
	if err != nil {
		return fmt.Errorf("opening the raft log: %w", err)
	}
	rep := b.rep
	switch t := rep.TornTail; {
	case t == nil:
	case t.Zeroed:
		s.log.Info("raft log: the newest segment was not closed cleanly; its zero-filled space after the last record was cut off (nothing was torn)",
			"file", t.File, "offset", t.Offset, "bytes", t.Size-t.Offset)
	default:
		s.log.Warn("raft log ended in a torn write; the unfinished tail was cut off",
			"file", t.File, "offset", t.Offset, "bytes", t.Size-t.Offset)
	}
	b.applied = s.store.AppliedIndex()
	if rep.Snapshot != nil {
		b.snapIndex = rep.Snapshot.GetIndex()
	}
	if b.applied > b.snapIndex && rep.HardState == nil {
		return fmt.Errorf("the raft log in %s is missing or empty, but this node's engine has applied entries up to %d: its raft state was lost. "+
			"In a running cluster, replace the node: kayactl remove-node %d, then add a new member with a new id and an empty data directory. "+
			"To build a new cluster from a copy of the data, use kayactl backup and kayactl restore (see docs/runbooks/backup-restore.md)",
			filepath.Join(cfg.DataDir, "raft", "wal"), b.applied, cfg.NodeID)
	}
	return nil
}

// newRaftNode creates the raft node over the raft log and the state
// machine, with the roster's voters as the peers of a new cluster. It
// does not run until run starts it.
// commitNoticeDelay is how long a leader holds a follower's notice of a
// new commit index, waiting for the next append to carry it instead
// (raftnode.Config.CommitNoticeDelay): about two one-client writes on the
// development VM, so that a steady stream of writes sends almost none of
// them, while an idle follower learns a commit a millisecond later.
const commitNoticeDelay = time.Millisecond

func (s *Server) newRaftNode(b *boot) error {
	cfg := &s.cfg
	var peers []uint64
	for _, m := range s.ros.list() {
		if !m.Learner {
			peers = append(peers, m.ID)
		}
	}
	var err error
	s.node, err = raftnode.New(raftnode.Config{
		ID: cfg.NodeID, Peers: peers, Join: cfg.Join, Log: s.rlog, SM: s.store,
		// Raft replays every committed entry after the last snapshot, so that
		// it sees the configuration changes again (its configuration is not
		// stored elsewhere); the state machine skips the data entries it has
		// already applied. This is etcd's arrangement.
		Applied:      b.snapIndex,
		TickInterval: cfg.TickInterval, Ticker: cfg.RaftTicker, ElectionTicks: cfg.ElectionTicks, HeartbeatTicks: cfg.HeartbeatTicks,
		Snapshots: s, SnapshotEntries: snapshotEntries(cfg.SnapshotEntries), CatchUpEntries: cfg.CatchUpEntries,
		// A step that failed for lack of space puts the node in disk-full
		// mode at once (the loop retries the step by itself).
		OnStall: func(err error) { s.disk.noteNoSpace(err) },
		Logger:  s.log.With("component", "raft"),
		Stages:  s.stages, LeaseReads: cfg.LeaseReads, SyncStorageWrites: cfg.SyncLogWrites,
		CommitNoticeDelay: commitNoticeDelay,
	})
	if err != nil {
		return err
	}
	s.nodeRef.Store(s.node)
	return nil
}

// startTransport starts the peer transport: Config.NewTransport's (tests),
// or TCP on the raft listener (bound here unless Config.RaftListener is
// given), with the peer token and TLS when configured, and points it at
// the roster's raft addresses.
func (s *Server) startTransport(*boot) error {
	cfg := &s.cfg
	h := &peerHandler{Node: s.node, s: s}
	if cfg.NewTransport != nil {
		s.trans = cfg.NewTransport(h)
		s.trans.SetPeers(s.ros.raftAddrs())
		return nil
	}
	s.raftLn = cfg.RaftListener
	if s.raftLn == nil {
		var err error
		if s.raftLn, err = net.Listen("tcp", cfg.RaftAddr); err != nil {
			return fmt.Errorf("listening for raft peers on %s: %w", cfg.RaftAddr, err)
		}
	}
	topts := transport.TCPOptions{ID: cfg.NodeID, Listener: s.raftLn, Handler: h,
		Logger: s.log.With("component", "transport")}
	if cfg.PeerToken != "" {
		topts.PeerToken = []byte(cfg.PeerToken)
	}
	if err := topts.Validate(); err != nil {
		_ = s.raftLn.Close()
		return fmt.Errorf("--peer-token-file: %w", err)
	}
	if s.tls != nil {
		topts.Listener = tls.NewListener(s.raftLn, s.tls.ServerConfig())
		nd := &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}
		topts.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
			return (&tls.Dialer{NetDialer: nd, Config: s.tls.ClientConfig(addr)}).DialContext(ctx, "tcp", addr)
		}
		if s.tls.MutualTLS() {
			topts.VerifyPeer = s.verifyPeer
		}
	}
	s.trans = transport.NewTCP(topts)
	s.trans.SetPeers(s.ros.raftAddrs())
	return nil
}

// listenForClients sets up the client connection limits, starts the
// metrics and health listener, binds the client listener (unless
// Config.ClientListener is given) and, with TLS, its server configuration
// and the goroutine that reloads changed certificate files. Clients are
// accepted only once run starts the accept loop.
func (s *Server) listenForClients(*boot) error {
	cfg := &s.cfg
	s.clim = newClientLimits(cfg, s.log.With("component", "clients"))
	if err := s.startObservability(); err != nil {
		return err
	}
	s.clientLn = cfg.ClientListener
	if s.clientLn == nil {
		var err error
		if s.clientLn, err = net.Listen("tcp", cfg.ClientAddr); err != nil {
			return fmt.Errorf("listening for clients on %s: %w", cfg.ClientAddr, err)
		}
	}
	if s.tls != nil {
		s.tlsConf = s.tls.ServerConfig()
		if cfg.TLSReloadInterval >= 0 {
			iv := cfg.TLSReloadInterval
			if iv == 0 {
				iv = 5 * time.Second
			}
			ctx, cancel := context.WithCancel(context.Background())
			s.stopBg = cancel
			s.bg.Add(1)
			go func() {
				defer s.bg.Done()
				s.tls.Watch(ctx, iv)
			}()
		}
	}
	return nil
}

// persistFirstStart writes what loadRoster held back (the roster from the
// flags, the JOINING marker): every listener is bound, so the start will
// not fail for a taken port or an unusable address after this.
func (s *Server) persistFirstStart(b *boot) error {
	for _, persist := range b.firstStart {
		if err := persist(); err != nil {
			return err
		}
	}
	return nil
}

// run starts the node: the raft loop over the transport, the state
// machine's appliers, the disk guard's monitor and the client accept loop,
// and logs that the node started.
func (s *Server) run(b *boot) {
	cfg := &s.cfg
	s.disk.resumeEngine = s.resumeEngine
	s.node.Start(s.trans)
	s.store.Start(s.node)
	s.txns.Start()
	s.hub.Start()
	s.disk.start()
	s.diskStarted = true
	s.openDur = time.Since(s.started)
	s.wg.Add(1)
	go s.acceptLoop()
	s.log.Info("kayadb node started", "client_addr", s.clientLn.Addr().String(), "raft_log_entries", b.rep.Entries,
		"applied_index", b.applied, "open_duration", s.openDur, "tls", s.tls != nil, "mtls", s.tls != nil && s.tls.MutualTLS(),
		"operator_token", cfg.OperatorToken != "", "client_token", cfg.ClientToken != "", "peer_token", cfg.PeerToken != "",
		"acl_file", cfg.ACLFile != "", "tenant_file", cfg.TenantFile != "", "identity_file", cfg.IdentityFile != "",
		"encryption", s.sealer != nil)
}

// currentTerm is the raft term for log lines (0 before raft starts).
func (s *Server) currentTerm() uint64 {
	if n := s.nodeRef.Load(); n != nil {
		return n.Term()
	}
	return 0
}

// ClientAddr returns the address clients connect to.
func (s *Server) ClientAddr() string { return s.clientLn.Addr().String() }

// Node returns the raft node (tests and admin endpoints).
func (s *Server) Node() *raftnode.Node { return s.node }

// Store returns the state machine (tests).
func (s *Server) Store() *kv.Store { return s.store }

// DB returns the current storage engine (tests). A snapshot installation
// replaces it.
func (s *Server) DB() *engine.DB {
	var db *engine.DB
	_ = s.store.DB(func(d *engine.DB) error { db = d; return nil })
	return db
}

// Done is closed when the server stops on its own (a fatal raft error).
func (s *Server) Done() <-chan struct{} { return s.node.Done() }

// Err returns the fatal error that stopped the node, if any.
func (s *Server) Err() error { return s.node.Err() }

// leaderClientAddr returns the known leader's client address, or "".
func (s *Server) leaderClientAddr() string {
	id := s.node.Leader()
	if id == 0 {
		return ""
	}
	m, ok := s.ros.get(id)
	if !ok {
		return ""
	}
	return m.ClientAddr
}

// Close stops the server: no new clients, in-flight requests fail, raft
// stops, state is closed cleanly.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	if s.clim != nil {
		s.clim.shutdown()
	}
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	if s.clientLn != nil {
		_ = s.clientLn.Close()
	}
	s.wg.Wait()
	return s.closeParts()
}

// closeParts closes whatever was opened, in reverse order.
func (s *Server) closeParts() error {
	var errs []error
	s.stopObservability()
	if s.disk != nil {
		s.disk.close(s.diskStarted)
	}
	if s.stopBg != nil {
		s.stopBg()
	}
	if s.hub != nil {
		s.hub.Stop()
	}
	if s.txns != nil {
		s.txns.Close()
	}
	if s.store != nil {
		s.store.Stop()
	}
	if s.node != nil {
		s.node.Stop()
	}
	s.bg.Wait()
	if s.trans != nil {
		errs = append(errs, s.trans.Close())
	}
	if s.rlog != nil {
		errs = append(errs, s.rlog.Close())
	}
	if s.store != nil {
		errs = append(errs, s.store.DB(func(db *engine.DB) error {
			// A snapshot install that failed (a full disk) and was not
			// retried before the shutdown leaves the replaced engine
			// closed; the next start finishes the install.
			if err := db.Close(); !errors.Is(err, engine.ErrClosed) {
				return err
			}
			return nil
		}))
	} else if s.db != nil {
		errs = append(errs, s.db.Close())
	}
	errs = append(errs, s.closeAudit())
	if s.lock != nil {
		errs = append(errs, s.lock.Close())
	}
	return errors.Join(errs...)
}

// WaitLeader blocks until some leader is known (tests, scripts).
func (s *Server) WaitLeader(ctx context.Context) error {
	for s.node.Leader() == 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

func snapshotEntries(n int64) uint64 {
	switch {
	case n < 0:
		return 0
	case n == 0:
		return 10000
	}
	return uint64(n)
}

func (s *Server) enginePath() string { return filepath.Join(s.cfg.DataDir, "engine") }

// resumeEngine asks the storage engine to resume writing when a write of its
// own failed for lack of space (the disk guard calls it).
func (s *Server) resumeEngine() (stopped bool, err error) {
	err = s.store.DB(func(db *engine.DB) error {
		if db.DiskFull() == nil {
			return nil
		}
		stopped = true
		return db.Resume()
	})
	return stopped, err
}

// The automatic byte bound of the retained history: 10% of the data
// directory's file system, within these limits (a small disk still keeps
// some history; a large one does not spend more than a few GiB on it).
const (
	minAutoRetentionBytes = 256 << 20
	maxAutoRetentionBytes = 8 << 30
)

// mvccRetention resolves the history retention from the configuration:
// the time bound (0 when none) and the byte bound (0 when none).
func mvccRetention(cfg Config, fs vfs.FS, log *slog.Logger) (time.Duration, int64) {
	return retentionBounds(retentionSpec{
		dur: cfg.MVCCRetention, defDur: time.Hour, bytes: cfg.MVCCRetentionBytes,
		diskShare: 10, minBytes: minAutoRetentionBytes, maxBytes: maxAutoRetentionBytes,
		what: "history retention", durKey: "mvcc_retention", bytesKey: "mvcc_retention_bytes",
	}, cfg.DataDir, fs, log)
}

// retentionSpec is one pair of retention flags as Config holds them (0:
// the default, negative: no bound) and how "auto" bytes are computed: a
// 1/diskShare of the data directory's file system, within minBytes and
// maxBytes.
type retentionSpec struct {
	dur, defDur            time.Duration
	bytes                  int64
	diskShare              uint64
	minBytes, maxBytes     int64
	what, durKey, bytesKey string
}

// retentionBounds resolves a retentionSpec to a time bound and a byte
// bound (0: none), logging the result when the bytes were auto.
func retentionBounds(r retentionSpec, dir string, fs vfs.FS, log *slog.Logger) (time.Duration, int64) {
	retention := r.dur
	switch {
	case retention == 0:
		retention = r.defDur
	case retention < 0:
		retention = 0
	}
	bytes := r.bytes
	switch {
	case bytes < 0:
		bytes = 0
	case bytes == 0:
		bytes = r.minBytes
		if u, err := vfs.DiskUsage(fs, dir); err == nil {
			bytes = min(max(int64(u.TotalBytes/r.diskShare), r.minBytes), r.maxBytes)
		}
		log.Info(r.what, r.durKey, retention, r.bytesKey, bytes)
	}
	return retention, bytes
}
