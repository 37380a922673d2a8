package client

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kayadb/kayadb/internal/wire"
)

// hexBytes decodes a spaced hex dump ("09 00 00 00 13 ...").
func hexBytes(t *testing.T, h string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(h, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPromoteLearner(t *testing.T) {
	srv := newFakeServer(t)
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpPromoteLearner {
			if id, _ := wire.DecodePromoteLearner(r.payload); id == 7 {
				return errAction(wire.StatusError, "another membership change is in progress on this leader; wait for it to finish and retry"), true
			}
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)

	msg, err := c.PromoteLearner(ctx, 5)
	if err != nil || msg != "learner promote proposed at index 65" {
		t.Fatalf("PromoteLearner(5): %q %v", msg, err)
	}
	// frame_len 9 · opcode 19 · node_id 5 (u64 LE), no prefix without a token.
	if got, want := srv.requests(wire.OpPromoteLearner)[0].frame, hexBytes(t, "09 00 00 00 13 05 00 00 00 00 00 00 00"); !bytes.Equal(got, want) {
		t.Fatalf("PROMOTE_LEARNER frame:\n got  % x\n want % x", got, want)
	}
	if c.Leader() != srv.addr {
		t.Fatalf("Leader() = %q after an admin request the leader answered", c.Leader())
	}

	// INVALID_ARGUMENT is ErrInvalidArgument with the server's text.
	_, err = c.PromoteLearner(ctx, 1)
	if !errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrServer) ||
		!strings.Contains(err.Error(), "cannot promote node 1 (not a learner in current membership)") {
		t.Fatalf("PromoteLearner(voter): %v", err)
	}
	// ERROR is a *ServerError; it is not retried.
	var se *ServerError
	if _, err := c.PromoteLearner(ctx, 7); !errors.As(err, &se) || se.Status != 9 || !strings.Contains(se.Message, "in progress") {
		t.Fatalf("PromoteLearner(busy): %v", err)
	}
	// Node id 0 is refused before anything is sent.
	if _, err := c.PromoteLearner(ctx, 0); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "node id 0") {
		t.Fatalf("PromoteLearner(0): %v", err)
	}
	if n := srv.count(wire.OpPromoteLearner); n != 3 {
		t.Fatalf("server saw %d PROMOTE_LEARNERs, want 3 (no retries, nothing for id 0)", n)
	}
}

func TestTransferLeader(t *testing.T) {
	srv := newFakeServer(t)
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpTransferLeader {
			if _, target, _ := wire.DecodeTransferLeader(r.payload); target == 3 {
				return errAction(wire.StatusError, "leadership transfer to node 3 did not complete in time (is it caught up and reachable?)"), true
			}
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)

	// Learn the leader first, to see that a transfer makes the client forget it.
	if err := c.Put(ctx, []byte("k"), []byte("v")); err != nil || c.Leader() != srv.addr {
		t.Fatalf("Put: %v, Leader() = %q", err, c.Leader())
	}
	if err := c.TransferLeader(ctx, 2); err != nil {
		t.Fatalf("TransferLeader(2): %v", err)
	}
	// frame_len 17 · opcode 18 · group_id 0 · target_node_id 2.
	want := hexBytes(t, "11 00 00 00 12 00 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00")
	if got := srv.requests(wire.OpTransferLeader)[0].frame; !bytes.Equal(got, want) {
		t.Fatalf("TRANSFER_LEADER frame:\n got  % x\n want % x", got, want)
	}
	if c.Leader() != "" {
		t.Fatalf("Leader() = %q after a transfer, want it forgotten", c.Leader())
	}

	if err := c.TransferLeader(ctx, 9); !errors.Is(err, ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "cannot transfer leadership to node 9: it is not a voter") {
		t.Fatalf("TransferLeader(non-voter): %v", err)
	}
	var se *ServerError
	if err := c.TransferLeader(ctx, 3); !errors.As(err, &se) || se.Status != 9 || !strings.Contains(se.Message, "did not complete in time") {
		t.Fatalf("TransferLeader(slow): %v", err)
	}
	if err := c.TransferLeader(ctx, 0); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("TransferLeader(0): %v", err)
	}
	if n := srv.count(wire.OpTransferLeader); n != 3 {
		t.Fatalf("server saw %d TRANSFER_LEADERs, want 3", n)
	}
}

// TestAdminFollowsLeaderHint: both requests are leader-only and follow
// NOT_LEADER hints like AddMember.
func TestAdminFollowsLeaderHint(t *testing.T) {
	leader := newFakeServer(t)
	follower := newFakeServer(t)
	follower.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if r.op == wire.OpPromoteLearner || r.op == wire.OpTransferLeader {
			return fakeAction{st: wire.StatusNotLeader, payload: wire.AppendNotLeader(nil, leader.addr)}, true
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{follower.addr}, nil)
	ctx := ctxT(t, 5*time.Second)
	if msg, err := c.PromoteLearner(ctx, 4); err != nil || msg != "learner promote proposed at index 64" {
		t.Fatalf("PromoteLearner: %q %v", msg, err)
	}
	if c.Leader() != leader.addr {
		t.Fatalf("Leader() = %q, want %q", c.Leader(), leader.addr)
	}
	c2 := newClient(t, []string{follower.addr}, nil)
	if err := c2.TransferLeader(ctx, 2); err != nil {
		t.Fatalf("TransferLeader: %v", err)
	}
	for _, op := range []wire.Opcode{wire.OpPromoteLearner, wire.OpTransferLeader} {
		if follower.count(op) != 1 || leader.count(op) != 1 {
			t.Fatalf("%v: follower saw %d, leader %d; want 1 each", op, follower.count(op), leader.count(op))
		}
		if !bytes.Equal(follower.requests(op)[0].frame, leader.requests(op)[0].frame) {
			t.Fatalf("%v: the redirected request differs", op)
		}
	}
}

// TestAdminNotResent: once a PROMOTE_LEARNER or TRANSFER_LEADER may have
// reached a server, it is never sent again.
func TestAdminNotResent(t *testing.T) {
	srv := newFakeServer(t)
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		switch r.op {
		case wire.OpPromoteLearner:
			return fakeAction{drop: true}, true
		case wire.OpTransferLeader:
			return fakeAction{hang: true}, true
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, nil)
	if _, err := c.PromoteLearner(ctxT(t, 5*time.Second), 4); !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("PromoteLearner after a dropped connection: %v, want ErrAmbiguous", err)
	}
	// The caller's deadline passes while the reply is awaited.
	err := c.TransferLeader(ctxT(t, 200*time.Millisecond), 2)
	if !errors.Is(err, ErrAmbiguous) || !errors.Is(err, ErrTimeout) {
		t.Fatalf("TransferLeader without a reply: %v, want ErrAmbiguous and ErrTimeout", err)
	}
	time.Sleep(200 * time.Millisecond) // a retry would show up by now
	if p, tl := srv.count(wire.OpPromoteLearner), srv.count(wire.OpTransferLeader); p != 1 || tl != 1 {
		t.Fatalf("server saw %d PROMOTE_LEARNERs and %d TRANSFER_LEADERs, want 1 each", p, tl)
	}
}

func TestAdminTokens(t *testing.T) {
	srv := newFakeServer(t)
	srv.setTokens("", "tok")
	c := newClient(t, []string{srv.addr}, &Options{OperatorToken: "tok"})
	ctx := ctxT(t, 5*time.Second)
	if _, err := c.PromoteLearner(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if err := c.TransferLeader(ctx, 2); err != nil {
		t.Fatal(err)
	}
	// "ADMIN\0" · bytes16 "tok" · opcode · inner, as for REMOVE_MEMBER.
	want := map[wire.Opcode]string{
		wire.OpPromoteLearner: "15 00 00 00 13 41 44 4d 49 4e 00 03 00 74 6f 6b 13 05 00 00 00 00 00 00 00",
		wire.OpTransferLeader: "1d 00 00 00 12 41 44 4d 49 4e 00 03 00 74 6f 6b 12 00 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00",
	}
	for op, h := range want {
		if got := srv.requests(op)[0].frame; !bytes.Equal(got, hexBytes(t, h)) {
			t.Errorf("%v frame:\n got  % x\n want %s", op, got, h)
		}
	}
	// Without the token the server's refusal is a ServerError.
	c2 := newClient(t, []string{srv.addr}, nil)
	var se *ServerError
	if _, err := c2.PromoteLearner(ctx, 5); !errors.As(err, &se) || se.Message != wire.MsgOperatorCredential {
		t.Fatalf("PromoteLearner without token: %v", err)
	}
	if err := c2.TransferLeader(ctx, 2); !errors.As(err, &se) || se.Message != wire.MsgOperatorCredential {
		t.Fatalf("TransferLeader without token: %v", err)
	}
}

func TestStatusMembership(t *testing.T) {
	doc := `{"role":"follower","term":3,"commit_index":20,"applied_index":19,"peer_count":2,"raft_groups":1,` +
		`"engine":{"put_count":1},"node_id":2,"leader_id":1,` +
		`"members":[{"id":3,"raft_addr":"10.0.0.3:7481","client_addr":"10.0.0.3:7379","role":"learner"},` +
		`{"id":1,"raft_addr":"10.0.0.1:7481","client_addr":"10.0.0.1:7379","role":"voter"},` +
		`{"id":2,"raft_addr":"10.0.0.2:7481","client_addr":"10.0.0.2:7379","role":"voter"}],` +
		`"snapshot_index":15,"snapshots_taken":1,"snapshots_installed":0}`
	var reply atomic.Value // string: the STATS document to send, "" for the default
	reply.Store("")
	srv := newFakeServer(t)
	srv.setHandler(func(r *fakeReq) (fakeAction, bool) {
		if doc := reply.Load().(string); r.op == wire.OpStats && doc != "" {
			return fakeAction{payload: []byte(doc)}, true
		}
		return fakeAction{}, false
	})
	c := newClient(t, []string{srv.addr}, nil)
	ctx := ctxT(t, 5*time.Second)

	reply.Store(doc)
	st, err := c.Status(ctx, srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	if st.Role != "follower" || st.Term != 3 || st.NodeID != 2 || st.LeaderID != 1 || st.SnapshotIndex != 15 || string(st.Raw) != doc {
		t.Fatalf("Status: %+v", st)
	}
	want := []Member{
		{ID: 1, RaftAddr: "10.0.0.1:7481", ClientAddr: "10.0.0.1:7379", Role: "voter"},
		{ID: 2, RaftAddr: "10.0.0.2:7481", ClientAddr: "10.0.0.2:7379", Role: "voter"},
		{ID: 3, RaftAddr: "10.0.0.3:7481", ClientAddr: "10.0.0.3:7379", Role: "learner"},
	}
	if len(st.Members) != len(want) {
		t.Fatalf("Members: %+v", st.Members)
	}
	for i := range want {
		if st.Members[i] != want[i] {
			t.Fatalf("Members[%d] = %+v, want %+v", i, st.Members[i], want[i])
		}
	}

	// An older server: no membership members, zero values.
	reply.Store("")
	st, err = c.Status(ctx, srv.addr)
	if err != nil || st.Role != "leader" || st.NodeID != 0 || st.LeaderID != 0 || st.SnapshotIndex != 0 || st.Members != nil {
		t.Fatalf("Status from an older server: %+v %v", st, err)
	}

	// Unexpected types are left at zero, not an error; the rest decodes.
	reply.Store(`{"role":"leader","term":1,"engine":{},"node_id":"two","leader_id":-1,"snapshot_index":7,"members":{"id":1}}`)
	st, err = c.Status(ctx, srv.addr)
	if err != nil || st.Role != "leader" || st.NodeID != 0 || st.LeaderID != 0 || st.SnapshotIndex != 7 || st.Members != nil {
		t.Fatalf("Status with odd member types: %+v %v", st, err)
	}
	reply.Store(`{"role":"leader","node_id":1,"leader_id":0,"members":null}`)
	st, err = c.Status(ctx, srv.addr)
	if err != nil || st.NodeID != 1 || st.LeaderID != 0 || st.Members != nil {
		t.Fatalf("Status with null members: %+v %v", st, err)
	}
}
