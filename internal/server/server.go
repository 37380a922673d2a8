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
//
// Start order: lock, engine, state machine, raft log, raft node, transport,
// client listener. Close stops them in reverse and never leaves a goroutine
// behind.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/raftlog"
	"github.com/kayadb/kayadb/internal/raftnode"
	"github.com/kayadb/kayadb/internal/transport"
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
	// RequestTimeout bounds every client request. Default 5 s.
	RequestTimeout time.Duration

	Logger *slog.Logger

	// EngineOptions tunes the storage engine (FS, sizes). Nil: defaults.
	EngineOptions *engine.Options
	// NewTransport replaces the TCP peer transport (tests use an in-memory
	// network). The handler is the raft node.
	NewTransport func(h transport.Handler) transport.Transport
	// ClientListener and RaftListener, when set, are used instead of
	// listening on the addresses (tests pass ":0" listeners).
	ClientListener, RaftListener net.Listener
}

// Server is a running node.
type Server struct {
	cfg   Config
	log   *slog.Logger
	lock  io.Closer
	db    *engine.DB
	store *kv.Store
	rlog  *raftlog.Log
	node  *raftnode.Node
	trans transport.Transport
	ros   *roster

	clientLn net.Listener
	raftLn   net.Listener
	started  time.Time
	openDur  time.Duration

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closing bool
	wg      sync.WaitGroup
	done    chan struct{}
}

// New opens the node's state and starts it.
func New(cfg Config) (_ *Server, retErr error) {
	start := time.Now()
	if cfg.NodeID == 0 {
		return nil, errors.New("--node-id must be a positive integer")
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger.With("node", cfg.NodeID)
	s := &Server{cfg: cfg, log: log, conns: map[net.Conn]struct{}{}, done: make(chan struct{}), started: start}
	defer func() {
		if retErr != nil {
			s.closeParts()
		}
	}()

	var fs vfs.FS = vfs.Default
	if cfg.EngineOptions != nil && cfg.EngineOptions.FS != nil {
		fs = cfg.EngineOptions.FS
	}
	if err := vfs.MkdirAllSync(fs, cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory %s: %w", cfg.DataDir, err)
	}
	lock, err := fs.Lock(filepath.Join(cfg.DataDir, "LOCK"))
	if err != nil {
		if errors.Is(err, vfs.ErrLocked) {
			return nil, fmt.Errorf("%w: data directory %s is in use by another kayadb-server (%v); stop it or choose another --data", base.ErrLocked, cfg.DataDir, err)
		}
		return nil, fmt.Errorf("locking %s: %w", cfg.DataDir, err)
	}
	s.lock = lock

	// The roster: from the data directory when the node has run before,
	// else from the flags.
	ros, found, err := loadRoster(fs, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	s.ros = ros
	if !found {
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
			return nil, fmt.Errorf("the --peer list does not include this node (--node-id %d); list every member, this one too", cfg.NodeID)
		}
		if err := ros.set(members); err != nil {
			return nil, fmt.Errorf("writing the roster: %w", err)
		}
	} else if len(cfg.Peers) > 0 {
		log.Info("using the roster saved in the data directory; --peer flags are ignored after the first start", "roster", ros.path)
	}

	eo := cfg.EngineOptions.EnsureDefaults()
	eo.Logger = log.With("component", "engine")
	s.db, err = engine.Open(filepath.Join(cfg.DataDir, "engine"), eo)
	if err != nil {
		return nil, fmt.Errorf("opening the storage engine: %w", err)
	}
	s.store, err = kv.Open(kv.Options{NodeID: cfg.NodeID, DB: s.db, RequestTimeout: cfg.RequestTimeout,
		Logger: log.With("component", "kv"), OnConfChange: s.onConfChange})
	if err != nil {
		return nil, err
	}
	var rep *raftlog.OpenReport
	s.rlog, rep, err = raftlog.Open(raftlog.Options{FS: fs, Dir: filepath.Join(cfg.DataDir, "raft", "wal"), NodeID: cfg.NodeID})
	if err != nil {
		return nil, fmt.Errorf("opening the raft log: %w", err)
	}
	if rep.TornTail != nil {
		log.Warn("raft log ended in a torn write; the unfinished tail was cut off",
			"file", rep.TornTail.File, "offset", rep.TornTail.Offset, "bytes", rep.TornTail.Size-rep.TornTail.Offset)
	}
	applied := s.store.AppliedIndex()
	snapIndex := uint64(0)
	if rep.Snapshot != nil {
		snapIndex = rep.Snapshot.GetIndex()
	}
	if found && applied > 0 && rep.HardState == nil && rep.Snapshot == nil {
		// Bootstrapping again would let this node forget its votes and
		// acknowledgements: refuse.
		return nil, fmt.Errorf("the raft log in %s is missing or empty, but this node has applied entries up to %d: its raft state was lost; restore the data directory from a backup, or remove the node from the cluster and add it back as a new member",
			filepath.Join(cfg.DataDir, "raft", "wal"), applied)
	}
	var peers []uint64
	for _, m := range ros.list() {
		if !m.Learner {
			peers = append(peers, m.ID)
		}
	}
	s.node, err = raftnode.New(raftnode.Config{
		ID: cfg.NodeID, Peers: peers, Join: cfg.Join, Log: s.rlog, SM: s.store,
		// Raft replays every committed entry after the last snapshot, so that
		// it sees the configuration changes again (its configuration is not
		// stored elsewhere); the state machine skips the data entries it has
		// already applied. This is etcd's arrangement.
		Applied:      snapIndex,
		TickInterval: cfg.TickInterval, ElectionTicks: cfg.ElectionTicks, HeartbeatTicks: cfg.HeartbeatTicks,
		Logger: log.With("component", "raft"),
	})
	if err != nil {
		return nil, err
	}

	if cfg.NewTransport != nil {
		s.trans = cfg.NewTransport(s.node)
	} else {
		s.raftLn = cfg.RaftListener
		if s.raftLn == nil {
			if s.raftLn, err = net.Listen("tcp", cfg.RaftAddr); err != nil {
				return nil, fmt.Errorf("listening for raft peers on %s: %w", cfg.RaftAddr, err)
			}
		}
		s.trans = transport.NewTCP(transport.TCPOptions{ID: cfg.NodeID, Listener: s.raftLn, Handler: s.node,
			Logger: log.With("component", "transport")})
	}
	s.trans.SetPeers(ros.raftAddrs())

	s.clientLn = cfg.ClientListener
	if s.clientLn == nil {
		if s.clientLn, err = net.Listen("tcp", cfg.ClientAddr); err != nil {
			return nil, fmt.Errorf("listening for clients on %s: %w", cfg.ClientAddr, err)
		}
	}
	s.node.Start(s.trans)
	s.store.Start(s.node)
	s.openDur = time.Since(start)
	s.wg.Add(1)
	go s.acceptLoop()
	log.Info("kayadb node started", "client_addr", s.clientLn.Addr().String(), "raft_log_entries", rep.Entries,
		"applied_index", applied, "open_duration", s.openDur)
	return s, nil
}

// ClientAddr returns the address clients connect to.
func (s *Server) ClientAddr() string { return s.clientLn.Addr().String() }

// Node returns the raft node (tests and admin endpoints).
func (s *Server) Node() *raftnode.Node { return s.node }

// Store returns the state machine (tests).
func (s *Server) Store() *kv.Store { return s.store }

// DB returns the storage engine (tests).
func (s *Server) DB() *engine.DB { return s.db }

// Done is closed when the server stops on its own (a fatal raft error).
func (s *Server) Done() <-chan struct{} { return s.node.Done() }

// Err returns the fatal error that stopped the node, if any.
func (s *Server) Err() error { return s.node.Err() }

func (s *Server) onConfChange(e *pb.Entry, cc pb.ConfChangeI, cs *pb.ConfState) error {
	// Static membership (this issue): the roster comes from the flags. The
	// bootstrap configuration changes just confirm it.
	return nil
}

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
	if s.store != nil {
		s.store.Stop()
	}
	if s.node != nil {
		s.node.Stop()
	}
	if s.trans != nil {
		errs = append(errs, s.trans.Close())
	}
	if s.rlog != nil {
		errs = append(errs, s.rlog.Close())
	}
	if s.db != nil {
		errs = append(errs, s.db.Close())
	}
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
