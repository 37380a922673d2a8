package server

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/raftnode"
	"github.com/kayadb/kayadb/internal/snap"
	"github.com/kayadb/kayadb/internal/vfs"
)

// Snapshots
//
// A raft snapshot is either a checkpoint of the engine (hard links to its
// immutable tables plus a fresh MANIFEST) under DIR/raft/snap-<index>/, or
// no files at all: DIR/raft/raft-snapshot.bin names the current one. The
// engine itself records the raft index, term, configuration and roster it
// holds (kv's system keys), so a checkpoint is self-describing.
//
// Taking one (leader or follower, every SnapshotEntries applied entries):
// fsync the engine's WAL, so that the engine alone holds everything up to
// its applied index, and rewrite raft-snapshot.bin with that index and no
// checkpoint; raft then compacts its log behind it. No memtable flush, no
// new files: this is what etcd's snapshot costs too (its backend is
// durable already).
//
// Sending one: a checkpoint is taken at the current applied index (later
// than the index raft named; the message is rewritten to say so), made the
// current snapshot, pinned (so a newer snapshot cannot delete it
// mid-transfer), streamed with per-file checksums on its own connection,
// and raft hears Finish or Failure. Concurrent transfers share it.
//
// Receiving one: the stream lands in a temp dir, every file fsynced and
// checked; the checkpoint is opened and must hold exactly the index and term
// the leader claims; only then is the MsgSnap handed to raft and the stream
// acknowledged. When raft decides to install it (Install, on the raft
// loop): commit the checkpoint (raft-snapshot.bin now names it: the commit
// point), build DIR/engine.new from hard links to it, close the old engine,
// swap directories, open the new engine, then raft records the snapshot in
// its log. A crash anywhere is finished at the next start (recoverEngine and
// the applied-index check in New).

// peerHandler is the transport's handler: raft messages go to the raft
// node, snapshot streams to the server.
type peerHandler struct {
	*raftnode.Node
	s *Server
}

// ReceiveSnapshot implements transport.Handler.
func (h *peerHandler) ReceiveSnapshot(from uint64, r io.Reader) error {
	s := h.s
	tmp := s.snaps.TempDir(0)
	m, err := snap.ReadStream(r, s.fs, tmp, s.admitSnapshot)
	if err == nil {
		err = s.checkReceived(from, m, tmp)
	}
	if err != nil {
		_ = s.fs.RemoveAll(tmp)
		s.log.Warn("rejected a snapshot stream", "from", from, "err", err)
		return err
	}
	idx := m.GetSnapshot().GetMetadata().GetIndex()
	s.snapMu.Lock()
	if old, ok := s.snapPending[idx]; ok {
		_ = s.fs.RemoveAll(old)
	}
	s.snapPending[idx] = tmp
	// Streams raft never installed (it had moved past them) are dropped.
	for i, dir := range s.snapPending {
		if i < idx && i <= s.store.AppliedIndex() {
			_ = s.fs.RemoveAll(dir)
			delete(s.snapPending, i)
		}
	}
	s.snapMu.Unlock()
	s.log.Info("received a snapshot", "from", from, "index", idx, "snapshot_term", m.GetSnapshot().GetMetadata().GetTerm())
	h.Node.DeliverSnapshot(m)
	return nil
}

// admitSnapshot judges a snapshot stream from its header, before anything
// is written (docs/design/hostile-input-and-resources.md §1): only what the
// sender's state can justify — a snapshot from the leader this node
// follows, of its term or a later one, beyond what this node has applied —
// and only what fits on the disk with half the reserve kept.
func (s *Server) admitSnapshot(m *pb.Message, total uint64, files int) error {
	meta := m.GetSnapshot().GetMetadata()
	if m.GetTo() != s.cfg.NodeID {
		return fmt.Errorf("snapshot stream addressed to node %d, not this node (%d)", m.GetTo(), s.cfg.NodeID)
	}
	if term := s.node.Term(); m.GetTerm() < term {
		return fmt.Errorf("stale snapshot from node %d: term %d, this node is in term %d", m.GetFrom(), m.GetTerm(), term)
	}
	if lead := s.node.Leader(); lead != 0 && lead != m.GetFrom() && m.GetTerm() == s.node.Term() {
		return fmt.Errorf("snapshot from node %d, which does not lead term %d (node %d does)", m.GetFrom(), m.GetTerm(), lead)
	}
	if applied := s.store.AppliedIndex(); meta.GetIndex() <= applied {
		return fmt.Errorf("snapshot at index %d from node %d is not needed: this node has applied up to %d", meta.GetIndex(), m.GetFrom(), applied)
	}
	if full, why := s.disk.state(); full {
		return fmt.Errorf("%w on node %d: %s; refusing a snapshot of %s until space is freed", errDiskFull, s.cfg.NodeID, why, humanBytes(total))
	}
	if u, err := vfs.DiskUsage(s.fs, s.cfg.DataDir); err == nil {
		keep := uint64(s.disk.reserve / 2)
		if u.AvailBytes < keep || total > u.AvailBytes-keep {
			return fmt.Errorf("%w on node %d: a snapshot of %s in %d files does not fit in the %s free on %s with %s kept in reserve; free space or add capacity",
				errDiskFull, s.cfg.NodeID, humanBytes(total), files, humanBytes(u.AvailBytes), s.cfg.DataDir, humanBytes(keep))
		}
	}
	return nil
}

// checkReceived verifies that a received checkpoint is what its message
// says it is.
func (s *Server) checkReceived(from uint64, m *pb.Message, dir string) error {
	if m.GetFrom() != from || m.GetTo() != s.cfg.NodeID {
		return fmt.Errorf("snapshot message is from %d to %d, but the stream came from %d to %d", m.GetFrom(), m.GetTo(), from, s.cfg.NodeID)
	}
	meta := m.GetSnapshot().GetMetadata()
	if meta.GetIndex() == 0 {
		return errors.New("snapshot message carries no index")
	}
	if err := s.checkCheckpointKeys(from, dir); err != nil {
		return err
	}
	st, err := kv.ReadCheckpoint(dir, s.eo)
	if err != nil {
		return err
	}
	if st.Index != meta.GetIndex() || st.Term != meta.GetTerm() {
		return fmt.Errorf("the received checkpoint holds index %d term %d, but the message says index %d term %d",
			st.Index, st.Term, meta.GetIndex(), meta.GetTerm())
	}
	return nil
}

// Take implements raftnode.Snapshotter. The snapshot it records has no
// checkpoint: the engine is made durable up to its applied index (one WAL
// fsync), which lets raft drop its log up to there. A checkpoint is made
// only when a snapshot must be sent (Send), as etcd sends its backend as
// it is at that moment.
func (s *Server) Take() (*pb.SnapshotMetadata, error) {
	s.takeMu.Lock()
	defer s.takeMu.Unlock()
	st, err := s.store.SyncState()
	if err != nil {
		return nil, err
	}
	cur := s.snaps.Current()
	if cur != nil && cur.Index >= st.Index {
		return &pb.SnapshotMetadata{Index: new(cur.Index), Term: new(cur.Term), ConfState: cur.ConfState}, nil
	}
	m := &snap.Meta{Index: st.Index, Term: st.Term, ConfState: st.ConfState}
	if err := s.snaps.CommitMeta(m); err != nil {
		return nil, err
	}
	return &pb.SnapshotMetadata{Index: new(m.Index), Term: new(m.Term), ConfState: m.ConfState}, nil
}

// takeCheckpoint checkpoints the engine, commits the checkpoint as the
// current snapshot (unless a checkpoint at least as new is current) and
// pins it for a transfer (before Take can supersede it).
func (s *Server) takeCheckpoint() (*snap.Meta, func(), error) {
	s.takeMu.Lock()
	defer s.takeMu.Unlock()
	tmp := s.snaps.TempDir(s.store.AppliedIndex())
	st, err := s.store.Checkpoint(tmp)
	if err != nil {
		_ = s.fs.RemoveAll(tmp)
		return nil, nil, fmt.Errorf("checkpointing the engine: %w", err)
	}
	if cur := s.snaps.Current(); cur != nil && cur.Index >= st.Index && cur.Dir != "" {
		_ = s.fs.RemoveAll(tmp)
	} else {
		m := &snap.Meta{Index: st.Index, Term: st.Term, ConfState: st.ConfState}
		if err := s.snaps.Commit(tmp, m); err != nil {
			_ = s.fs.RemoveAll(tmp)
			return nil, nil, err
		}
	}
	return s.snaps.Acquire()
}

// inConf reports whether id is a voter or learner of cs.
func inConf(cs *pb.ConfState, id uint64) bool {
	for _, set := range [][]uint64{cs.GetVoters(), cs.GetLearners(), cs.GetVotersOutgoing(), cs.GetLearnersNext()} {
		for _, v := range set {
			if v == id {
				return true
			}
		}
	}
	return false
}

// Send implements raftnode.Snapshotter. The work runs in the background:
// when the current snapshot has no checkpoint, or its checkpoint predates
// the follower's membership (a node just added, where raft would refuse
// it), a fresh checkpoint is taken first, as etcd does.
func (s *Server) Send(m *pb.Message) {
	to := m.GetTo()
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		meta, release, err := s.snaps.Acquire()
		if err == nil && !inConf(meta.ConfState, to) {
			release()
			err = snap.ErrNoCheckpoint
		}
		if errors.Is(err, snap.ErrNoCheckpoint) {
			meta, release, err = s.takeCheckpoint()
		}
		if err != nil {
			s.log.Warn("cannot send a snapshot", "to", to, "err", err)
			s.node.ReportSnapshot(to, raft.SnapshotFailure)
			return
		}
		// The snapshot sent is the newest checkpoint, at least as new as
		// the one raft named; the follower installs what it receives.
		m.Snapshot = &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(meta.Index), Term: new(meta.Term), ConfState: meta.ConfState}}
		dir := s.snaps.Path(meta.Dir)
		s.log.Info("sending a snapshot", "to", to, "index", meta.Index)
		s.trans.SendSnapshot(to, func(w io.Writer) error {
			return snap.WriteStream(w, s.fs, dir, m, s.snapLimiter)
		}, func(err error) {
			release()
			status := raft.SnapshotFinish
			if err != nil {
				status = raft.SnapshotFailure
				s.log.Warn("sending a snapshot failed; raft will retry", "to", to, "index", meta.Index, "err", err)
			} else {
				s.log.Info("snapshot delivered", "to", to, "index", meta.Index)
			}
			s.node.ReportSnapshot(to, status)
		})
	}()
}

// Install implements raftnode.Snapshotter.
func (s *Server) Install(sn *pb.Snapshot) error {
	meta := sn.GetMetadata()
	idx := meta.GetIndex()
	s.snapMu.Lock()
	tmp, ok := s.snapPending[idx]
	for i, dir := range s.snapPending {
		if i < idx {
			_ = s.fs.RemoveAll(dir)
			delete(s.snapPending, i)
		}
	}
	s.snapMu.Unlock()
	// Install is retried after a failure on a full disk (raftnode keeps
	// the Ready): each step must be one it can take again. The received
	// checkpoint stays pending until it is committed; a retry after the
	// commit installs the committed snapshot.
	m := &snap.Meta{Index: idx, Term: meta.GetTerm(), ConfState: meta.GetConfState()}
	switch cur := s.snaps.Current(); {
	case ok:
		if err := s.snaps.Commit(tmp, m); err != nil {
			return err
		}
		s.snapMu.Lock()
		delete(s.snapPending, idx)
		s.snapMu.Unlock()
	case cur != nil && cur.Index == idx && cur.Dir != "":
		m = cur
	default:
		return fmt.Errorf("raft installs snapshot %d, but no such checkpoint was received", idx)
	}
	err := s.store.ReplaceDB(func(old *engine.DB) (*engine.DB, error) {
		// An earlier attempt may have closed it already.
		if err := old.Close(); err != nil && !errors.Is(err, engine.ErrClosed) {
			return nil, fmt.Errorf("closing the engine being replaced: %w", err)
		}
		return s.installEngine(s.snaps.Path(m.Dir))
	})
	if err != nil {
		return err
	}
	return s.loadRosterFromEngine()
}

// loadRosterFromEngine makes the engine's copy of the roster (replicated
// with the data) this node's roster and tells the transport.
func (s *Server) loadRosterFromEngine() error {
	var st *kv.State
	err := s.store.DB(func(db *engine.DB) (err error) {
		st, err = kv.ReadState(db)
		return err
	})
	if err != nil {
		return err
	}
	if st.Roster == nil {
		return nil
	}
	if err := s.ros.replace(st.Roster); err != nil {
		return err
	}
	if s.trans != nil {
		s.trans.SetPeers(s.ros.raftAddrs())
	}
	return nil
}

// installEngine replaces DIR/engine with a copy of the checkpoint at src
// (hard links for tables, copies for the small mutable files) and opens it.
// The old engine must be closed. Crash-safe: DIR/engine.new is complete and
// durable before any rename, and recoverEngine finishes an interrupted swap.
func (s *Server) installEngine(src string) (*engine.DB, error) {
	fs := s.fs
	cur := s.enginePath()
	next, old := cur+".new", cur+".old"
	if err := fs.RemoveAll(next); err != nil {
		return nil, err
	}
	if err := fs.MkdirAll(next, 0o700); err != nil {
		return nil, err
	}
	names, err := fs.List(src)
	if err != nil {
		return nil, fmt.Errorf("listing checkpoint %s: %w", src, err)
	}
	for _, n := range names {
		from, to := filepath.Join(src, n), filepath.Join(next, n)
		if strings.HasSuffix(n, ".sst") {
			if err := fs.Link(from, to); err == nil {
				continue
			}
		}
		if err := copyFileSync(fs, from, to); err != nil {
			return nil, err
		}
	}
	if err := vfs.SyncDir(fs, next); err != nil {
		return nil, err
	}
	if err := vfs.SyncDir(fs, s.cfg.DataDir); err != nil {
		return nil, err
	}
	// engine.new is complete: from here recoverEngine rolls forward.
	if err := fs.RemoveAll(old); err != nil {
		return nil, err
	}
	if _, err := fs.Stat(cur); err == nil {
		if err := fs.Rename(cur, old); err != nil {
			return nil, err
		}
	}
	if err := fs.Rename(next, cur); err != nil {
		return nil, err
	}
	if err := vfs.SyncDir(fs, s.cfg.DataDir); err != nil {
		return nil, err
	}
	if err := fs.RemoveAll(old); err != nil {
		s.log.Warn("could not remove the replaced engine", "dir", old, "err", err)
	}
	db, err := engine.Open(cur, s.eo)
	if err != nil {
		return nil, fmt.Errorf("opening the engine installed from snapshot: %w", err)
	}
	return db, nil
}

// recoverEngine finishes or discards an engine swap a crash interrupted:
//   - engine.new without engine: the old one was moved aside and the new one
//     is complete; finish the rename.
//   - engine.new with engine: the new one may be incomplete; remove it (the
//     install is redone from the committed snapshot if needed).
//   - engine.old: leftover of a finished swap; remove it.
func (s *Server) recoverEngine() error {
	fs := s.fs
	cur := s.enginePath()
	next, old := cur+".new", cur+".old"
	_, curErr := fs.Stat(cur)
	_, nextErr := fs.Stat(next)
	switch {
	case nextErr == nil && errors.Is(curErr, os.ErrNotExist):
		s.log.Info("finishing an engine swap interrupted by a crash", "dir", next)
		if err := fs.Rename(next, cur); err != nil {
			return err
		}
		if err := vfs.SyncDir(fs, s.cfg.DataDir); err != nil {
			return err
		}
	case nextErr == nil:
		if err := fs.RemoveAll(next); err != nil {
			return err
		}
	}
	if _, err := fs.Stat(old); err == nil {
		if err := fs.RemoveAll(old); err != nil {
			return err
		}
	}
	return nil
}

// copyFileSync copies src to dst and fsyncs dst.
func copyFileSync(fs vfs.FS, src, dst string) error {
	in, err := fs.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := fs.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return fmt.Errorf("copying %s: %w", src, err)
	}
	if err := out.Sync(); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}
