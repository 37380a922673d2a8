package client

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/wire"
	"github.com/kayadb/kayadb/internal/wire/wiretest"
)

// fakeServer speaks the client protocol through internal/wire, serving an
// in-memory map. Tests replace parts of its behaviour with a handler and
// inspect the request frames it received.
type fakeServer struct {
	t    testing.TB
	ln   net.Listener
	addr string

	closing chan struct{}
	wg      sync.WaitGroup

	// model serves the data opcodes: plain reads and writes, transactions,
	// conditional writes and reads at a revision.
	model *wiretest.Model

	mu struct {
		sync.Mutex
		// handler, when set, is asked first; returning ok=false falls back
		// to the default behaviour.
		handler       func(r *fakeReq) (act fakeAction, ok bool)
		clientToken   string // when set, data opcodes must carry it
		operatorToken string // when set, admin opcodes must carry it
		reqs          []*fakeReq
		conns         map[net.Conn]bool
		accepted      int
		maxBatch      int // most requests read back to back without the server writing
	}
}

// fakeReq is one request frame as received.
type fakeReq struct {
	conn    int // 1-based index of the connection it came on
	op      wire.Opcode
	payload []byte
	frame   []byte
	nth     int // 1-based count of requests with this opcode, this one included
}

// fakeAction is how to answer a request.
type fakeAction struct {
	st      wire.Status
	payload []byte
	drop    bool // close the connection without answering
	hang    bool // never answer (until the server closes)
	// closeAfter closes the connection after the answer; extra is written
	// right after it (bytes no request asked for).
	closeAfter bool
	extra      []byte
	// split writes the answer's first 3 bytes, waits split, then the rest.
	split time.Duration
	// delay waits before answering; the answer is then flushed at once.
	delay time.Duration
}

func newFakeServer(t testing.TB) *fakeServer {
	return newFakeServerTLS(t, nil)
}

func newFakeServerTLS(t testing.TB, cfg *tls.Config) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	s := &fakeServer{t: t, ln: ln, addr: ln.Addr().String(), closing: make(chan struct{}), model: wiretest.New()}
	s.mu.conns = map[net.Conn]bool{}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.Close)
	return s
}

func (s *fakeServer) Close() {
	select {
	case <-s.closing:
		return
	default:
	}
	close(s.closing)
	s.ln.Close()
	s.mu.Lock()
	for c := range s.mu.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *fakeServer) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.mu.accepted++
		id := s.mu.accepted
		s.mu.conns[nc] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(nc, id)
	}
}

func (s *fakeServer) serve(nc net.Conn, id int) {
	defer s.wg.Done()
	defer func() {
		nc.Close()
		s.mu.Lock()
		delete(s.mu.conns, nc)
		s.mu.Unlock()
	}()
	br := bufio.NewReader(nc)
	bw := bufio.NewWriter(nc)
	var buf []byte
	batch := 0
	for {
		op, p, b, err := wire.ReadRequest(br, buf)
		if err != nil {
			return
		}
		buf = b
		batch++
		r := &fakeReq{conn: id, op: op, payload: slices.Clone(p), frame: wire.AppendRequest(nil, op, p)}
		s.mu.Lock()
		s.mu.reqs = append(s.mu.reqs, r)
		for _, q := range s.mu.reqs {
			if q.op == op {
				r.nth++
			}
		}
		s.mu.maxBatch = max(s.mu.maxBatch, batch)
		handler := s.mu.handler
		s.mu.Unlock()

		act, ok := fakeAction{}, false
		if handler != nil {
			act, ok = handler(r)
		}
		if !ok {
			act = s.serveDefault(r)
		}
		switch {
		case act.drop:
			return
		case act.hang:
			bw.Flush()
			<-s.closing
			return
		}
		resp := wire.AppendResponse(nil, act.st, act.payload)
		if act.delay > 0 {
			time.Sleep(act.delay)
			bw.Write(resp)
			if bw.Flush() != nil {
				return
			}
			continue
		}
		if act.split > 0 {
			bw.Write(resp[:3])
			bw.Flush()
			time.Sleep(act.split)
			resp = resp[3:]
		}
		bw.Write(resp)
		if act.closeAfter || act.extra != nil {
			bw.Write(act.extra)
			bw.Flush()
			if act.closeAfter {
				return
			}
		}
		if br.Buffered() == 0 { // flush when no request is waiting
			batch = 0
			if bw.Flush() != nil {
				return
			}
		}
	}
}

func errAction(st wire.Status, msg string) fakeAction {
	return fakeAction{st: st, payload: wire.AppendError(nil, msg)}
}

// serveDefault answers like a single-node leader.
func (s *fakeServer) serveDefault(r *fakeReq) fakeAction {
	p := r.payload
	s.mu.Lock()
	clientToken, operatorToken := s.mu.clientToken, s.mu.operatorToken
	s.mu.Unlock()
	switch {
	case wire.IsData(r.op) && clientToken != "":
		tok, prefixed, inner, err := wire.SplitClient(p)
		if err != nil {
			return errAction(wire.StatusInvalidArgument, err.Error())
		}
		if !prefixed || !wire.TokenEqual(tok, clientToken) {
			return errAction(wire.StatusError, wire.MsgClientCredential)
		}
		p = inner
	case wire.IsAdmin(r.op) && operatorToken != "":
		tok, prefixed, inner, err := wire.SplitAdmin(r.op, p)
		if err != nil {
			return errAction(wire.StatusInvalidArgument, wire.MsgAdminMismatch)
		}
		if !prefixed || !wire.TokenEqual(tok, operatorToken) {
			return errAction(wire.StatusError, wire.MsgOperatorCredential)
		}
		p = inner
	}
	switch r.op {
	case wire.OpPut, wire.OpGet, wire.OpDelete, wire.OpScan, wire.OpTxnBegin, wire.OpTxnOp, wire.OpTxnCommit,
		wire.OpTxnRollback, wire.OpKayaTxn, wire.OpGetAt, wire.OpScanAt:
		st, reply := s.model.Handle(r.op, p)
		return fakeAction{st: st, payload: reply}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.op {
	case wire.OpHello:
		v, err := wire.DecodeHello(p)
		if err != nil {
			return errAction(wire.StatusInvalidArgument, err.Error())
		}
		if v > 1 {
			return errAction(wire.StatusInvalidArgument, fmt.Sprintf(wire.MsgUnsupportedVersion, v))
		}
		return fakeAction{payload: wire.AppendHello(nil, 1)}
	case wire.OpHealth:
		return fakeAction{payload: wire.AppendHealth(nil, wire.HealthLeader)}
	case wire.OpStats:
		st := wire.Stats{Role: "leader", Term: 2, CommitIndex: 10, AppliedIndex: 10, PeerCount: 2, RaftGroups: 1}
		st.Engine.PutCount = 7
		st.Engine.Extra = map[string]json.RawMessage{"future_counter": json.RawMessage("99"), "label": json.RawMessage(`"x"`)}
		st.Extra = map[string]json.RawMessage{"drain": json.RawMessage("false")}
		b, err := wire.AppendStats(nil, &st)
		if err != nil {
			return errAction(wire.StatusError, err.Error())
		}
		return fakeAction{payload: b}
	case wire.OpAddMember:
		m, err := wire.DecodeAddMember(p)
		if err != nil {
			return errAction(wire.StatusInvalidArgument, err.Error())
		}
		if m.NodeID == 1 {
			return errAction(wire.StatusInvalidArgument, fmt.Sprintf(wire.MsgAlreadyMember, m.NodeID))
		}
		return fakeAction{payload: wire.AppendText(nil, fmt.Sprintf(wire.MsgMembershipProposed, 40+m.NodeID))}
	case wire.OpRemoveMember:
		id, err := wire.DecodeRemoveMember(p)
		if err != nil {
			return errAction(wire.StatusInvalidArgument, err.Error())
		}
		return fakeAction{payload: wire.AppendText(nil, fmt.Sprintf(wire.MsgMembershipRemovalProposed, 50+id))}
	case wire.OpPromoteLearner:
		id, err := wire.DecodePromoteLearner(p)
		if err != nil {
			return errAction(wire.StatusInvalidArgument, err.Error())
		}
		if id == 1 { // the fake leader itself, a voter
			return errAction(wire.StatusInvalidArgument, fmt.Sprintf("cannot promote node %d (not a learner in current membership)", id))
		}
		return fakeAction{payload: wire.AppendText(nil, fmt.Sprintf(wire.MsgLearnerPromoteProposed, 60+id))}
	case wire.OpTransferLeader:
		group, target, err := wire.DecodeTransferLeader(p)
		if err != nil {
			return errAction(wire.StatusInvalidArgument, err.Error())
		}
		if group != 0 {
			return errAction(wire.StatusInvalidArgument, fmt.Sprintf("unknown raft group %d (this server hosts group 0 only)", group))
		}
		if target > 3 { // voters are 1, 2 and 3
			return errAction(wire.StatusInvalidArgument, fmt.Sprintf("cannot transfer leadership to node %d: it is not a voter", target))
		}
		return fakeAction{} // OK, empty payload: the target leads
	}
	return errAction(wire.StatusError, fmt.Sprintf(wire.MsgUnknownOpcode, r.op))
}

// setHandler installs h (see fakeServer.mu.handler).
func (s *fakeServer) setHandler(h func(r *fakeReq) (fakeAction, bool)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.handler = h
}

// setTokens makes the server require the given tokens ("" = none).
func (s *fakeServer) setTokens(client, operator string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.clientToken, s.mu.operatorToken = client, operator
}

// requests returns the requests received with opcode op.
func (s *fakeServer) requests(op wire.Opcode) []*fakeReq {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*fakeReq
	for _, r := range s.mu.reqs {
		if r.op == op {
			out = append(out, r)
		}
	}
	return out
}

func (s *fakeServer) count(op wire.Opcode) int { return len(s.requests(op)) }

func (s *fakeServer) accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.accepted
}

func (s *fakeServer) maxBatch() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.maxBatch
}
