package server

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/raftnode"
	"github.com/kayadb/kayadb/internal/wire"
)

// Membership changes
//
// ADD_MEMBER, REMOVE_MEMBER and PROMOTE_LEARNER become single-step raft
// configuration changes (ConfChangeV2 with one change, so no joint phase).
// Their Context carries a request id and, for additions, the new member's
// addresses, so that every node updates its roster from the log itself and
// the roster is replicated state (also stored in the engine, so snapshots
// carry it). Only one change runs at a time per leader, and a change is
// proposed only after everything from earlier terms is applied: raft would
// otherwise silently turn it into an empty entry. The request waits until
// the change is applied and answers with its index.

// confContext is the Context of the configuration changes this server
// proposes.
type confContext struct {
	Req    uint64  `json:"req"`
	Member *Member `json:"member,omitempty"`
}

// errConfBusy refuses a second concurrent membership change.
var errConfBusy = errors.New("another membership change is in progress on this leader; wait for it to finish and retry")

// onConfChange is kv's hook for every applied configuration change (on the
// raft loop): it updates the roster and the transport's peers, wakes the
// request that proposed the change, and returns the roster to store with
// the change.
func (s *Server) onConfChange(e *pb.Entry, cc pb.ConfChangeI, cs *pb.ConfState) ([]byte, error) {
	v2 := cc.AsV2()
	var cctx confContext
	if len(v2.GetContext()) > 0 {
		if err := json.Unmarshal(v2.GetContext(), &cctx); err != nil {
			s.log.Warn("configuration change with an unreadable context; roster addresses unchanged", "index", e.GetIndex(), "err", err)
			cctx = confContext{}
		}
	}
	for _, ch := range v2.GetChanges() {
		id := ch.GetNodeId()
		var add *Member
		if cctx.Member != nil && cctx.Member.ID == id {
			add = cctx.Member
		}
		var err error
		switch ch.GetType() {
		case pb.ConfChangeAddNode, pb.ConfChangeAddLearnerNode:
			learner := ch.GetType() == pb.ConfChangeAddLearnerNode
			err = s.ros.applyChange(id, add, false, learner)
			s.log.Info("membership change applied", "index", e.GetIndex(), "member", id, "learner", learner)
		case pb.ConfChangeRemoveNode:
			err = s.ros.applyChange(id, nil, true, false)
			s.log.Info("membership change applied: node removed", "index", e.GetIndex(), "member", id)
			if id == s.cfg.NodeID {
				s.log.Error("this node has been removed from the cluster; stop it and remove its data directory (its id can never rejoin)")
			}
		}
		if err != nil {
			return nil, fmt.Errorf("saving the roster: %w", err)
		}
	}
	if s.trans != nil {
		s.trans.SetPeers(s.ros.raftAddrs())
	}
	s.confMu.Lock()
	if ch, ok := s.confWaiters[cctx.Req]; ok && cctx.Req != 0 {
		ch <- e.GetIndex()
		delete(s.confWaiters, cctx.Req)
	}
	s.confMu.Unlock()
	_ = cs
	return s.ros.encode(), nil
}

// proposeConfChange proposes one change and waits until it is applied. It
// returns the index of the change.
func (s *Server) proposeConfChange(ctx context.Context, change *pb.ConfChangeSingle, m *Member) (uint64, error) {
	s.confMu.Lock()
	if s.confBusy {
		s.confMu.Unlock()
		return 0, errConfBusy
	}
	s.confBusy = true
	var rb [8]byte
	_, _ = rand.Read(rb[:])
	req := binary.LittleEndian.Uint64(rb[:]) | 1
	done := make(chan uint64, 1)
	s.confWaiters[req] = done
	s.confMu.Unlock()
	defer func() {
		s.confMu.Lock()
		delete(s.confWaiters, req)
		s.confBusy = false
		s.confMu.Unlock()
	}()

	// Raft refuses (silently) a change while one from before this term may
	// be unapplied.
	for s.node.IsLeader() && s.node.Applied() < s.node.LeaderStart() {
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("this leader is still applying entries from earlier terms; retry the membership change: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	if !s.node.IsLeader() {
		return 0, kv.ErrNotLeader
	}
	cctx, err := json.Marshal(confContext{Req: req, Member: m})
	if err != nil {
		return 0, err
	}
	cc := &pb.ConfChangeV2{Changes: []*pb.ConfChangeSingle{change}, Context: cctx}
	if err := s.node.ProposeConfChange(ctx, cc); err != nil {
		if errors.Is(err, raftnode.ErrDropped) {
			return 0, kv.ErrNotLeader
		}
		return 0, fmt.Errorf("proposing the membership change: %w", err)
	}
	select {
	case idx := <-done:
		return idx, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("the membership change was proposed but not applied within %s (leadership may have changed, or a quorum is unreachable); check `kayactl status` before retrying", s.cfg.RequestTimeout)
	case <-s.node.Done():
		return 0, raftnode.ErrStopped
	}
}

// voterSets returns the current voters and learners as sets.
func (s *Server) voterSets() (voters, learners map[uint64]bool) {
	st := s.node.Status()
	voters, learners = map[uint64]bool{}, map[uint64]bool{}
	for _, id := range st.Voters {
		voters[id] = true
	}
	for _, id := range st.Learners {
		learners[id] = true
	}
	return voters, learners
}

// activeVoters counts the voters in set the leader has heard from recently.
func activeVoters(prog map[uint64]raftnode.PeerProgress, set map[uint64]bool) int {
	n := 0
	for id := range set {
		if p, ok := prog[id]; ok && p.RecentActive {
			n++
		}
	}
	return n
}

func invalidf(format string, args ...any) (wire.Status, []byte) {
	return wire.StatusInvalidArgument, wire.AppendError(nil, fmt.Sprintf(format, args...))
}

// maxHostPort bounds an address: a 253-byte DNS name, brackets, a colon
// and a 5-digit port.
const maxHostPort = 253 + 2 + 1 + 5

// checkHostPort validates an address: one a node listens on (listen: the
// host may be empty, a wildcard, and the port 0, any free port) or one it
// advertises to the others — a member's raft or client address in --peer
// or ADD_MEMBER (a host and a port from 1 to 65535). The host is an IP
// address or a DNS name (letters, digits, '-' and '_' in dot-separated
// labels of at most 63 bytes; a name is not all digits and dots, which
// resolvers read as an IPv4 address in another form). The error names
// field and the problem, quoting the address with its control characters
// escaped.
func checkHostPort(field, addr string, listen bool) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s %q: %s (want HOST:PORT, for example 10.0.0.5:7481)", field, addr, fmt.Sprintf(format, args...))
	}
	if len(addr) > maxHostPort {
		return fmt.Errorf("%s of %d bytes is too long for HOST:PORT (at most %d)", field, len(addr), maxHostPort)
	}
	for i := 0; i < len(addr); i++ {
		if c := addr[i]; c <= ' ' || c >= 0x7f {
			return bad("byte %d is a space, a control character or not ASCII", i)
		}
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			err = errors.New(ae.Err)
		}
		return bad("not host:port: %v", err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	switch {
	case err != nil || port[0] == '+':
		return bad("the port %q is not a number from 1 to 65535", port)
	case p == 0 && !listen:
		return bad("port 0 cannot be dialled")
	}
	if host == "" {
		if listen {
			return nil // every interface (the bind guard judges it)
		}
		return bad("no host")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" && !listen {
			return bad("an IPv6 zone (%%%s) names an interface of one machine only", ip.Zone())
		}
		return nil
	}
	name := strings.TrimSuffix(host, ".")
	if len(name) > 253 || name == "" {
		return bad("the host is not an IP address or a DNS name")
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return bad("the host %q is not an IP address or a DNS name", host)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return bad("the host %q is not an IP address or a DNS name (%q is not allowed in a name)", host, c)
			}
		}
	}
	if last := labels[len(labels)-1]; strings.Trim(last, "0123456789") == "" {
		return bad("the host %q is neither an IP address nor a DNS name (a name does not end in a number)", host)
	}
	return nil
}

// addMember handles ADD_MEMBER.
func (s *Server) addMember(ctx context.Context, p []byte) (wire.Status, []byte) {
	req, err := wire.DecodeAddMember(p)
	if err != nil {
		return invalid(err)
	}
	id := req.NodeID
	if id == 0 {
		return invalidf("node id must be a positive integer")
	}
	if err := checkHostPort("raft_addr", req.RaftAddr, false); err != nil {
		return invalid(err)
	}
	if err := checkHostPort("client_addr", req.ClientAddr, false); err != nil {
		return invalid(err)
	}
	if !s.node.IsLeader() {
		return s.reply(kv.ErrNotLeader, nil)
	}
	voters, learners := s.voterSets()
	if _, ok := s.ros.get(id); ok || voters[id] || learners[id] {
		return invalidf(wire.MsgAlreadyMember, id)
	}
	if s.ros.isRemoved(id) {
		return invalidf("node %d was removed from this cluster and its id can never be reused; start the new node with a fresh --node-id", id)
	}
	learner := req.IsLearner()
	if !learner {
		// The new voter counts towards the quorum from the moment the
		// change applies, before it has started: enough of the others must
		// be up to carry the larger quorum (etcd's strict check).
		prog, _, err := s.node.Progress(ctx)
		if err != nil {
			return s.reply(err, nil)
		}
		active := activeVoters(prog, voters)
		if need := (len(voters)+1)/2 + 1; active < need {
			return invalidf("cannot add node %d as a voter: %d of %d voters are reachable and the new configuration needs %d; add it with --learner, or bring members back first", id, active, len(voters), need)
		}
	}
	typ := pb.ConfChangeAddNode
	if learner {
		typ = pb.ConfChangeAddLearnerNode
	}
	m := &Member{ID: id, RaftAddr: req.RaftAddr, ClientAddr: req.ClientAddr, Learner: learner}
	idx, err := s.proposeConfChange(ctx, &pb.ConfChangeSingle{Type: &typ, NodeId: &id}, m)
	if err != nil {
		return s.confReply(err)
	}
	return wire.StatusOK, wire.AppendText(nil, fmt.Sprintf(wire.MsgMembershipProposed, idx))
}

// removeMember handles REMOVE_MEMBER.
func (s *Server) removeMember(ctx context.Context, p []byte) (wire.Status, []byte) {
	id, err := wire.DecodeRemoveMember(p)
	if err != nil {
		return invalid(err)
	}
	if !s.node.IsLeader() {
		return s.reply(kv.ErrNotLeader, nil)
	}
	voters, learners := s.voterSets()
	if !voters[id] && !learners[id] {
		return invalidf(wire.MsgCannotRemove, id)
	}
	if voters[id] {
		// The voters left must still be able to elect a leader and commit:
		// at least one, and enough of them reachable for their quorum.
		prog, _, err := s.node.Progress(ctx)
		if err != nil {
			return s.reply(err, nil)
		}
		rest := map[uint64]bool{}
		for v := range voters {
			if v != id {
				rest[v] = true
			}
		}
		if len(rest) == 0 || activeVoters(prog, rest) < len(rest)/2+1 {
			return invalidf(wire.MsgCannotRemove, id)
		}
	}
	typ := pb.ConfChangeRemoveNode
	idx, err := s.proposeConfChange(ctx, &pb.ConfChangeSingle{Type: &typ, NodeId: &id}, nil)
	if err != nil {
		return s.confReply(err)
	}
	return wire.StatusOK, wire.AppendText(nil, fmt.Sprintf(wire.MsgMembershipRemovalProposed, idx))
}

// promoteFraction is how far a learner must have caught up (its match
// index against the leader's last index) to be promoted: etcd's 90%.
const promoteFraction = 0.9

// promoteLearner handles PROMOTE_LEARNER: payload node_id u64.
func (s *Server) promoteLearner(ctx context.Context, p []byte) (wire.Status, []byte) {
	id, err := wire.DecodePromoteLearner(p)
	if err != nil {
		return invalid(err)
	}
	if !s.node.IsLeader() {
		return s.reply(kv.ErrNotLeader, nil)
	}
	_, learners := s.voterSets()
	if !learners[id] {
		return invalidf("cannot promote node %d (not a learner in current membership)", id)
	}
	prog, last, err := s.node.Progress(ctx)
	if err != nil {
		return s.reply(err, nil)
	}
	if match := prog[id].Match; float64(match) < promoteFraction*float64(last) {
		return invalidf("cannot promote node %d yet: it has replicated up to index %d of %d (it needs %.0f%%); wait for it to catch up and retry", id, match, last, promoteFraction*100)
	}
	typ := pb.ConfChangeAddNode
	idx, err := s.proposeConfChange(ctx, &pb.ConfChangeSingle{Type: &typ, NodeId: &id}, nil)
	if err != nil {
		return s.confReply(err)
	}
	return wire.StatusOK, wire.AppendText(nil, fmt.Sprintf(wire.MsgLearnerPromoteProposed, idx))
}

// transferLeader handles TRANSFER_LEADER: group_id u64 · target u64. It
// answers once the target leads (or fails after an election timeout).
func (s *Server) transferLeader(ctx context.Context, p []byte) (wire.Status, []byte) {
	group, target, err := wire.DecodeTransferLeader(p)
	if err != nil {
		return invalid(err)
	}
	if group != 0 {
		return invalidf("unknown raft group %d (this server hosts group 0 only)", group)
	}
	if !s.node.IsLeader() {
		return s.reply(kv.ErrNotLeader, nil)
	}
	if target == s.cfg.NodeID {
		return wire.StatusOK, nil
	}
	voters, _ := s.voterSets()
	if !voters[target] {
		return invalidf("cannot transfer leadership to node %d: it is not a voter", target)
	}
	// Raft abandons a transfer the target has not completed within an
	// election timeout (it was still catching up, or its election was
	// slow): while this node still leads, ask again, until the request's
	// deadline.
	retry := 2 * s.node.ElectionTimeout()
	next := time.Now().Add(retry)
	s.node.TransferLeadership(target)
	for {
		if s.node.Leader() == target {
			return wire.StatusOK, nil
		}
		if time.Now().After(next) && s.node.IsLeader() {
			s.node.TransferLeadership(target)
			next = time.Now().Add(retry)
		}
		select {
		case <-ctx.Done():
			return wire.StatusError, wire.AppendError(nil, fmt.Sprintf("leadership transfer to node %d did not complete in time (is it caught up and reachable?)", target))
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// confReply maps a membership-change error to a reply.
func (s *Server) confReply(err error) (wire.Status, []byte) {
	if errors.Is(err, errConfBusy) {
		return wire.StatusError, wire.AppendError(nil, err.Error())
	}
	return s.reply(err, nil)
}
