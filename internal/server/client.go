package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"go.etcd.io/raft/v3"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/buildinfo"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/wire"
)

const (
	// maxPipelined bounds the requests one connection may have in flight;
	// the reader stops reading until replies drain.
	maxPipelined = 128
	// maxConns bounds concurrent client connections.
	maxConns = 4096
	// protocolVersion is the client protocol version this server speaks.
	protocolVersion = 1
)

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	s.startBackups() // backup.go
	defer s.stopBackups()
	for {
		c, err := s.clientLn.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return
			}
			s.log.Warn("client accept failed", "err", err)
			time.Sleep(20 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		if s.closing || len(s.conns) >= maxConns {
			full := !s.closing
			s.mu.Unlock()
			if full {
				s.log.Warn("refusing a client connection: too many connections", "limit", maxConns)
			}
			_ = c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveClient(c)
	}
}

// call is one request's reply slot; replies are written in request order.
type call struct {
	done    chan struct{}
	status  wire.Status
	payload []byte
	op      wire.Opcode
	start   time.Time // when the request was read (metrics)
}

// serveClient reads pipelined requests, handles each on its own goroutine,
// and writes the replies in order. A malformed frame closes the connection
// (with a logged reason); it never affects other connections or data.
func (s *Server) serveClient(raw net.Conn) {
	defer s.wg.Done()
	log := s.log.With("client", raw.RemoteAddr().String())
	defer func() {
		_ = raw.Close()
		s.mu.Lock()
		delete(s.conns, raw)
		s.mu.Unlock()
	}()
	c, err := s.tlsServer(raw)
	if err != nil {
		log.Warn("closing client connection: TLS handshake failed", "err", err)
		return
	}
	refused := false // one log line per connection, however many refusals
	queue := make(chan *call, maxPipelined)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		w := bufio.NewWriterSize(c, 64<<10)
		var buf []byte
		broken := false
		for cl := range queue {
			<-cl.done
			s.observeRequest(cl.op, cl.status, cl.start)
			if !broken {
				buf = wire.AppendResponse(buf[:0], cl.status, cl.payload)
				if _, err := w.Write(buf); err != nil {
					broken = true
					_ = c.Close()
				} else if len(queue) == 0 {
					if err := w.Flush(); err != nil {
						broken = true
						_ = c.Close()
					}
				}
			}
			s.inflight.Add(-1) // answered (or its connection is gone)
		}
		_ = w.Flush()
	}()
	r := bufio.NewReaderSize(c, 64<<10)
	var lastWrite <-chan struct{} // done when this connection's latest write has its reply
	for {
		op, payload, _, err := wire.ReadRequest(r, nil)
		if err != nil {
			switch {
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
			case errors.Is(err, wire.ErrFrameEmpty), errors.Is(err, wire.ErrFrameTooLarge):
				log.Warn("closing client connection: bad frame", "err", err)
			default:
				log.Debug("client connection ended", "err", err)
			}
			break
		}
		cl := &call{done: make(chan struct{}), op: op, start: time.Now()}
		s.inflight.Add(1)
		queue <- cl
		inner, ast, areply, ok := s.authorize(op, payload)
		if !ok {
			if !refused {
				refused = true
				reason, _ := wire.DecodeError(areply)
				log.Warn("refused a request", "opcode", op.String(), "reason", reason)
			}
			cl.status, cl.payload = ast, areply
			close(cl.done)
			continue
		}
		payload = inner
		if op == wire.OpPut || op == wire.OpDelete {
			// Writes enter the raft log in the order they arrived on this
			// connection: they are queued here, on the reader, and only
			// their wait runs concurrently.
			wait, st, p := s.startWrite(op, payload)
			if wait == nil {
				cl.status, cl.payload = st, p
				close(cl.done)
				continue
			}
			go func() {
				defer close(cl.done)
				cl.status, cl.payload = s.finishWrite(wait)
			}()
			lastWrite = cl.done
			continue
		}
		// Other requests see every earlier write of this connection
		// (read-your-writes under pipelining).
		after := lastWrite
		go func() {
			defer close(cl.done)
			if after != nil {
				<-after
			}
			cl.status, cl.payload = s.dispatch(op, payload)
		}()
	}
	close(queue)
	<-writerDone
	_ = c.Close()
}

// dispatch handles one request and returns the reply.
func (s *Server) dispatch(op wire.Opcode, p []byte) (st wire.Status, payload []byte) {
	defer func() {
		// A bug in a handler must not take the node down or leave the
		// client without a reply.
		if r := recover(); r != nil {
			s.log.Error("request handler panicked", "opcode", op.String(), "panic", fmt.Sprint(r))
			st, payload = wire.StatusError, wire.AppendError(nil, "internal error")
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	switch op {
	case wire.OpHello:
		v, err := wire.DecodeHello(p)
		if err != nil {
			return invalid(err)
		}
		if v > protocolVersion {
			return wire.StatusInvalidArgument, wire.AppendError(nil, fmt.Sprintf(wire.MsgUnsupportedVersion, v))
		}
		return wire.StatusOK, wire.AppendHello(nil, protocolVersion)
	case wire.OpHealth:
		role := "follower"
		if s.node.IsLeader() {
			role = "leader"
		}
		return wire.StatusOK, wire.AppendHealth(nil, role)
	case wire.OpPut, wire.OpDelete:
		wait, st, payload := s.startWrite(op, p)
		if wait == nil {
			return st, payload
		}
		return s.finishWrite(wait)
	case wire.OpGet:
		key, err := wire.DecodeKey(p)
		if err != nil {
			return invalid(err)
		}
		v, err := s.store.Get(ctx, key)
		if err != nil {
			return s.reply(err, nil)
		}
		return wire.StatusOK, wire.AppendValue(nil, v)
	case wire.OpScan:
		prefix, err := wire.DecodeKey(p)
		if err != nil {
			return invalid(err)
		}
		items, err := s.store.Scan(ctx, prefix, wire.MaxScanItems, wire.MaxScanBytes)
		if err != nil {
			return s.reply(err, nil)
		}
		kvs := make([]wire.KV, len(items))
		for i, it := range items {
			kvs[i] = wire.KV{Key: it.Key, Value: it.Value}
		}
		return wire.StatusOK, wire.AppendScanResult(nil, kvs)
	case wire.OpAddMember:
		return s.addMember(ctx, p)
	case wire.OpRemoveMember:
		return s.removeMember(ctx, p)
	case wire.OpPromoteLearner:
		return s.promoteLearner(ctx, p)
	case wire.OpTransferLeader:
		return s.transferLeader(ctx, p)
	case wire.OpBackupBegin, wire.OpBackupRead, wire.OpBackupEnd, wire.OpBackupStatus:
		return s.backupRequest(ctx, op, p)
	case wire.OpStats:
		b, err := wire.AppendStats(nil, s.stats())
		if err != nil {
			return wire.StatusError, wire.AppendError(nil, err.Error())
		}
		return wire.StatusOK, b
	}
	return wire.StatusError, wire.AppendError(nil, fmt.Sprintf(wire.MsgUnknownOpcode, uint8(op)))
}

// startWrite decodes a PUT or DELETE and queues its proposal. It returns the
// wait function, or nil and the reply when the write was refused at once.
func (s *Server) startWrite(op wire.Opcode, p []byte) (func(context.Context) error, wire.Status, []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	// A full disk refuses the write before it is proposed (so the client
	// knows it did not happen); a follower sends the client to the leader
	// instead, whose disk may have room.
	if s.node.IsLeader() {
		if err := s.disk.admit(); err != nil {
			return nil, wire.StatusError, wire.AppendError(nil, err.Error())
		}
	}
	var wait func(context.Context) error
	var err error
	if op == wire.OpPut {
		key, value, derr := wire.DecodePut(p)
		if derr != nil {
			st, payload := invalid(derr)
			return nil, st, payload
		}
		wait, err = s.store.StartPut(ctx, key, value)
	} else {
		key, derr := wire.DecodeKey(p)
		if derr != nil {
			st, payload := invalid(derr)
			return nil, st, payload
		}
		wait, err = s.store.StartDelete(ctx, key)
	}
	if err != nil {
		st, payload := s.reply(err, nil)
		return nil, st, payload
	}
	return wait, 0, nil
}

// finishWrite waits for a started write and returns its reply.
func (s *Server) finishWrite(wait func(context.Context) error) (wire.Status, []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	return s.reply(wait(ctx), nil)
}

func invalid(err error) (wire.Status, []byte) {
	return wire.StatusInvalidArgument, wire.AppendError(nil, err.Error())
}

// reply maps a state-machine result to a status.
func (s *Server) reply(err error, ok []byte) (wire.Status, []byte) {
	switch {
	case err == nil:
		return wire.StatusOK, ok
	case errors.Is(err, engine.ErrNotFound):
		return wire.StatusNotFound, nil
	case errors.Is(err, kv.ErrNotLeader):
		return wire.StatusNotLeader, wire.AppendNotLeader(nil, s.leaderClientAddr())
	case errors.Is(err, engine.ErrInvalidArgument):
		return wire.StatusInvalidArgument, wire.AppendError(nil, strings.TrimPrefix(err.Error(), "kayadb: invalid argument: "))
	}
	return wire.StatusError, wire.AppendError(nil, err.Error())
}

// stats builds the STATS document.
func (s *Server) stats() *wire.Stats {
	st := s.node.Status()
	role := "follower"
	switch st.Role {
	case raft.StateLeader:
		role = "leader"
	case raft.StateCandidate, raft.StatePreCandidate:
		role = "candidate"
	}
	peers := 0
	for _, m := range s.ros.list() {
		if m.ID != s.cfg.NodeID {
			peers++
		}
	}
	var m *engine.Metrics
	_ = s.store.DB(func(db *engine.DB) error { m = db.Metrics(); return nil })
	c := s.store.Counters()
	tables := 0
	for _, l := range m.Levels {
		tables += l.NumFiles
	}
	type memberJSON struct {
		ID         uint64 `json:"id"`
		RaftAddr   string `json:"raft_addr"`
		ClientAddr string `json:"client_addr"`
		Role       string `json:"role"`
	}
	voters, learners := s.voterSets()
	members := []memberJSON{}
	for _, mb := range s.ros.list() {
		r := "unknown"
		switch {
		case voters[mb.ID]:
			r = "voter"
		case learners[mb.ID]:
			r = "learner"
		}
		members = append(members, memberJSON{ID: mb.ID, RaftAddr: mb.RaftAddr, ClientAddr: mb.ClientAddr, Role: r})
	}
	extra := map[string]json.RawMessage{}
	put := func(k string, v any) {
		if b, err := json.Marshal(v); err == nil {
			extra[k] = b
		}
	}
	put("node_id", s.cfg.NodeID)
	put("leader_id", st.Leader)
	put("members", members)
	snapIndex := uint64(0)
	if cur := s.snaps.Current(); cur != nil {
		snapIndex = cur.Index
	}
	put("snapshot_index", snapIndex)
	if full, why := s.disk.state(); full {
		put("disk_full", why)
	} else {
		put("disk_full", false)
	}
	taken, installed := s.node.SnapshotCounts()
	put("snapshots_taken", taken)
	put("snapshots_installed", installed)
	put("version", buildinfo.Read().Version)
	return &wire.Stats{
		Extra: extra,
		Role:  role, Term: st.Term, CommitIndex: st.Commit, AppliedIndex: s.store.AppliedIndex(),
		PeerCount: uint64(peers), RaftGroups: 1,
		Engine: wire.EngineStats{
			PutCount: c.Put, GetCount: c.Get, DeleteCount: c.Delete, ScanCount: c.Scan,
			WALBytesWritten: m.WAL.BytesWritten, WALFsyncCount: m.WAL.Syncs,
			WALFsyncTotalUs: uint64(m.WAL.SyncLatency.Mean.Microseconds()) * m.WAL.SyncLatency.Count,
			WALFsyncMaxUs:   uint64(m.WAL.SyncLatency.Max.Microseconds()),
			MemtableEntries: m.MemTable.Entries, SSTableCount: uint64(tables), LastSequence: m.VisibleSeq,
			FlushTotalUs: uint64(m.Flush.Duration.Mean.Microseconds()) * m.Flush.Duration.Count,
			FlushMaxUs:   uint64(m.Flush.Duration.Max.Microseconds()), FlushCount: m.Flush.Count,
			CompactionTotalUs: uint64(m.Compaction.Duration.Mean.Microseconds()) * m.Compaction.Duration.Count,
			CompactionMaxUs:   uint64(m.Compaction.Duration.Max.Microseconds()), CompactionCount: m.Compaction.Count,
			BlockCacheHits: uint64(m.BlockCache.Hits), BlockCacheMisses: uint64(m.BlockCache.Misses),
			RecoveryDurationUs: uint64(s.openDur.Microseconds()),
		},
	}
}
