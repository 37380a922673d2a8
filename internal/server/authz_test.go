package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	dto "github.com/prometheus/client_model/go"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kayadb/kayadb/client"
	"github.com/kayadb/kayadb/internal/authz"
	"github.com/kayadb/kayadb/internal/security/securitytest"
	"github.com/kayadb/kayadb/internal/wire"
)

// The credentials of the policy tests.
const (
	azOperator = "operator-token-0001"
	azClient   = "client-token-000001"
	azACL      = "acl-token-000000001"
	azTenant1  = "tenant-one-token-01"
	azTenant2  = "tenant-two-token-02"
	azRO       = "read-only-token-001"
	azRW       = "read-write-token-01"
	azAdmin    = "admin-id-token-0001"
)

// writePolicy writes a policy file (0600) and returns its path.
func writePolicy(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// policyConfig is a node with every kind of credential: the operator and
// client tokens; an ACL that gives the client token everything but acl/
// and t1/, the ACL token acl/, tenant one t1/ (and t2/ to tenant two);
// tenants t1/ and t2/; identities read-only, read-write confined to app/,
// and admin, by token, and cert (read-write, cert/) by certificate.
func policyConfig(t *testing.T) Config {
	dir := t.TempDir()
	acl := writePolicy(t, dir, "acl.json", fmt.Sprintf(`{"": %q, "acl/": %q, "t1/": %q, "t2/": %q}`, azClient, azACL, azTenant1, azTenant2))
	tenants := writePolicy(t, dir, "tenants.json", fmt.Sprintf(`{"tenants": [{"id": "t1", "token": %q, "prefix": "t1/"}, {"id": "t2", "token": %q, "prefix": "t2/"}]}`, azTenant1, azTenant2))
	ids := writePolicy(t, dir, "ids.json", fmt.Sprintf(`{"identities": [
  {"name": "ro", "token_sha256": %q, "role": "read-only"},
  {"name": "rw", "token_sha256": %q, "role": "read-write", "prefixes": ["app/"]},
  {"name": "adm", "token_sha256": %q, "role": "admin"},
  {"name": "cert", "certificate": {"dns": "certuser.kaya.local"}, "role": "read-write", "prefixes": ["cert/"]},
  {"name": "certadmin", "certificate": {"subject": "CN=certadmin.kaya.local"}, "role": "admin"}
]}`, authz.TokenSHA256(azRO), authz.TokenSHA256(azRW), authz.TokenSHA256(azAdmin)))
	return Config{OperatorToken: azOperator, ClientToken: azClient, ACLFile: acl, TenantFile: tenants, IdentityFile: ids}
}

// azPrincipal is a way of sending requests: a token (or none) and the
// keys it may and may not use.
type azPrincipal struct {
	name, token string
	pname       string // its name on the server, when not name
	dataDeny    string // the refusal of every data opcode ("" none)
	own, other  string // a key it may use; one it may not ("" none)
	otherDeny   string // the refusal of other
	ro, admin   bool
	adminDeny   string // the refusal of an admin opcode ("" when admin)
}

var azPrincipals = []azPrincipal{
	{name: "anonymous", own: "", other: "c/1", otherDeny: wire.MsgClientCredential, adminDeny: wire.MsgOperatorCredential},
	{name: "client", token: azClient, own: "c/1", other: "acl/1", otherDeny: "acl denied", adminDeny: wire.MsgOperatorCredential},
	{name: "operator", token: azOperator, admin: true, dataDeny: wire.MsgClientCredential}, // the operator token proves admin requests only
	{name: "ro", token: azRO, own: "c/1", ro: true, adminDeny: "permission denied: ro: %s needs the admin role"},
	{name: "rw", token: azRW, own: "app/1", other: "c/1", otherDeny: "acl denied", adminDeny: "permission denied: rw: %s needs the admin role"},
	{name: "adm", token: azAdmin, own: "c/1", admin: true},
	{name: "acl in/out", pname: "acl:" + authz.TokenSHA256(azACL)[:8], token: azACL, own: "acl/1", other: "c/1", otherDeny: "acl denied", adminDeny: wire.MsgOperatorCredential},
	{name: "tenant in/out", pname: "t1", token: azTenant1, own: "t1/1", other: "t2/1", otherDeny: "tenant denied", adminDeny: wire.MsgOperatorCredential},
}

// azCase is one opcode of the matrix: how to build its payload for a
// key, and what it needs.
type azCase struct {
	name    string
	op      wire.Opcode
	payload func(key string) []byte
	// need: "open" (HELLO, HEALTH), "data" (any data credential),
	// "read" or "write" (the key), "admin" (the admin role).
	need string
}

func azCases() []azCase {
	k := func(f func([]byte) []byte) func(string) []byte {
		return func(key string) []byte { return f([]byte(key)) }
	}
	fixed := func(p []byte) func(string) []byte { return func(string) []byte { return p } }
	id := wire.AppendTxnID(nil, 1<<32|999)
	cons := func(a uint8) []byte {
		return wire.AppendCDCConsumer(nil, wire.CDCConsumerRequest{Action: a, Consumer: "mx"})
	}
	return []azCase{
		{"HELLO", wire.OpHello, fixed(wire.AppendHello(nil, 1)), "open"},
		{"HEALTH", wire.OpHealth, fixed(nil), "open"},
		{"STATS", wire.OpStats, fixed(nil), "data"},
		{"PUT", wire.OpPut, k(func(b []byte) []byte { return wire.AppendPut(nil, b, []byte("v")) }), "write"},
		{"GET", wire.OpGet, k(func(b []byte) []byte { return wire.AppendKey(nil, b) }), "read"},
		{"DELETE", wire.OpDelete, k(func(b []byte) []byte { return wire.AppendKey(nil, b) }), "write"},
		{"SCAN (clamped)", wire.OpScan, k(func(b []byte) []byte { return wire.AppendKey(nil, nil) }), "data"},
		{"GET_AT", wire.OpGetAt, k(func(b []byte) []byte { return wire.AppendGetAt(nil, 0, b) }), "read"},
		{"SCAN_AT (clamped)", wire.OpScanAt, fixed(wire.AppendScanAt(nil, wire.ScanAt{})), "data"},
		{"TXN_BEGIN", wire.OpTxnBegin, fixed(nil), "data"},
		{"TXN_OP get", wire.OpTxnOp, k(func(b []byte) []byte {
			return wire.AppendTxnOp(nil, wire.TxnOp{TxnID: 1<<32 | 999, Kind: wire.TxnOpGet, Key: b})
		}), "read"},
		{"TXN_OP put", wire.OpTxnOp, k(func(b []byte) []byte {
			return wire.AppendTxnOp(nil, wire.TxnOp{TxnID: 1<<32 | 999, Kind: wire.TxnOpPut, Key: b, Value: []byte("v")})
		}), "write"},
		{"TXN_COMMIT", wire.OpTxnCommit, fixed(id), "data"},
		{"TXN_ROLLBACK", wire.OpTxnRollback, fixed(id), "data"},
		{"KAYA_TXN compare", wire.OpKayaTxn, k(func(b []byte) []byte {
			return wire.AppendCondTxn(nil, &wire.CondTxn{Compares: []wire.Compare{{Target: wire.CmpExists, Op: wire.CmpEqual, Key: b}}})
		}), "read"},
		{"KAYA_TXN put", wire.OpKayaTxn, k(func(b []byte) []byte {
			return wire.AppendCondTxn(nil, &wire.CondTxn{Then: []wire.CondOp{{Kind: wire.TxnOpPut, Key: b, Value: []byte("v")}}})
		}), "write"},
		{"WATCH_CREATE key", wire.OpWatchCreate, k(func(b []byte) []byte {
			return wire.AppendWatchCreate(nil, wire.WatchCreate{Kind: wire.WatchKey, Key: b})
		}), "read"},
		{"WATCH_CREATE prefix (clamped)", wire.OpWatchCreate, fixed(wire.AppendWatchCreate(nil, wire.WatchCreate{Kind: wire.WatchPrefix})), "data"},
		{"WATCH_CANCEL", wire.OpWatchCancel, fixed(wire.AppendWatchCancel(nil, 5)), "data"},
		{"CDC_POLL (filtered)", wire.OpCDCPoll, fixed(wire.AppendCDCPoll(nil, wire.CDCPoll{Consumer: "mx", Limit: 10})), "data"},
		{"CDC_CHECKPOINT", wire.OpCDCCheckpoint, fixed(wire.AppendCDCCheckpointAt(nil, "mx", 1)), "data"},
		{"CDC_CONSUMER get", wire.OpCDCConsumer, fixed(cons(wire.CDCConsumerGet)), "data"},
		{"CDC_CONSUMER delete", wire.OpCDCConsumer, fixed(cons(wire.CDCConsumerDelete)), "rw"},
		{"LIST_RANGES", wire.OpListRanges, fixed(nil), "data"},
		{"SPLIT_RANGE", wire.OpSplitRange, fixed(wire.AppendKey(nil, []byte("m"))), "admin-data"},
		{"MERGE_RANGE", wire.OpMergeRange, fixed(wire.AppendKey(nil, []byte("m"))), "admin-data"},
		{"ADD_MEMBER", wire.OpAddMember, fixed([]byte{1}), "admin"}, // truncated: refused by its decoder once allowed
		{"REMOVE_MEMBER", wire.OpRemoveMember, fixed(binary.LittleEndian.AppendUint64(nil, 99)), "admin"},
		{"TRANSFER_LEADER", wire.OpTransferLeader, fixed(wire.AppendTransferLeader(nil, 0, 1)), "admin"},
		{"PROMOTE_LEARNER", wire.OpPromoteLearner, fixed(binary.LittleEndian.AppendUint64(nil, 99)), "admin"},
		{"REBALANCE_PLAN", wire.OpRebalancePlan, fixed(nil), "admin"},
		{"MOVE_RANGE", wire.OpMoveRange, fixed(nil), "admin"},
		{"TXN_FORWARD", wire.OpTxnForward, fixed(nil), "admin"},
		{"BACKUP_BEGIN", wire.OpBackupBegin, fixed([]byte{0xff}), "admin"},
		{"BACKUP_READ", wire.OpBackupRead, fixed(wire.AppendBackupRead(nil, wire.BackupRead{ID: "nope"})), "admin"},
		{"BACKUP_END", wire.OpBackupEnd, fixed(wire.AppendBackupID(nil, "nope")), "admin"},
		{"BACKUP_STATUS", wire.OpBackupStatus, fixed(nil), "admin"},
	}
}

// isRefusal reports whether a reply is an authorization refusal.
func isRefusal(st wire.Status, msg string) bool {
	return st == wire.StatusError && (msg == wire.MsgClientCredential || msg == wire.MsgOperatorCredential ||
		msg == "acl denied" || msg == "tenant denied" || strings.HasPrefix(msg, "permission denied"))
}

// want returns the refusal p gets for c on key ("" when allowed).
func (p azPrincipal) want(c azCase, key string, own bool) string {
	switch c.need {
	case "open":
		return ""
	case "admin":
		if p.admin {
			return ""
		}
		if strings.Contains(p.adminDeny, "%s") {
			return fmt.Sprintf(p.adminDeny, c.op)
		}
		return p.adminDeny
	}
	if p.name == "anonymous" {
		return wire.MsgClientCredential
	}
	if p.dataDeny != "" {
		return p.dataDeny
	}
	switch c.need {
	case "admin-data":
		if p.admin {
			return ""
		}
		name := p.name
		if p.pname != "" {
			name = p.pname
		}
		return fmt.Sprintf("permission denied: %s: %s needs the admin role", name, c.op)
	case "rw", "write":
		if p.ro {
			return "permission denied: ro is read-only"
		}
	}
	if (c.need == "read" || c.need == "write") && !own {
		return p.otherDeny
	}
	return ""
}

// TestPolicyMatrix: every opcode × every kind of principal (anonymous, the
// client and operator tokens, read-only, read-write and admin identities,
// an ACL token and a tenant token, in and out of their prefixes) is
// allowed or refused with the exact status and text; certificates are in
// TestPolicyCertificates.
func TestPolicyMatrix(t *testing.T) {
	s, logs := startSecured(t, policyConfig(t))
	for _, p := range azPrincipals {
		for _, c := range azCases() {
			keys := map[string]bool{p.own: true}
			if p.other != "" {
				keys[p.other] = false
			}
			if c.need != "read" && c.need != "write" {
				keys = map[string]bool{p.own: true}
			}
			for key, own := range keys {
				if key == "" && (c.need == "read" || c.need == "write") {
					key = "c/1"
				}
				payload := c.payload(key)
				switch {
				case p.token == "":
				case wire.IsAdmin(c.op):
					payload = wire.AppendAdmin(nil, p.token, c.op, payload)
				case wire.IsData(c.op):
					payload = wire.AppendClient(nil, p.token, payload)
				}
				conn := dial(t, s.ClientAddr())
				st, msg := rawCall(t, conn, c.op, payload)
				_ = conn.c.Close()
				want := p.want(c, key, own)
				switch {
				case want == "" && isRefusal(st, msg):
					t.Errorf("%s %s %q: refused %d %q, want allowed", p.name, c.name, key, st, msg)
				case want != "" && (st != wire.StatusError || msg != want):
					t.Errorf("%s %s %q: %d %q, want 9 %q", p.name, c.name, key, st, msg, want)
				}
			}
		}
	}
	for _, tok := range []string{azOperator, azClient, azACL, azTenant1, azRO, azRW, azAdmin} {
		if strings.Contains(logs.String(), tok) {
			t.Fatalf("token %s appears in the log", tok)
		}
	}
}

// TestPolicyOnlyTokensUnchanged: with only --client-token and
// --operator-token, the operator token is no data credential and the
// client token no admin one, as before identities existed.
func TestPolicyOnlyTokensUnchanged(t *testing.T) {
	s, _ := startSecured(t, Config{OperatorToken: azOperator, ClientToken: azClient})
	c := dial(t, s.ClientAddr())
	if st, msg := rawCall(t, c, wire.OpPut, wire.AppendClient(nil, azOperator, wire.AppendPut(nil, []byte("k"), []byte("v")))); st != wire.StatusError || msg != wire.MsgClientCredential {
		t.Errorf("operator token on PUT: %d %q", st, msg)
	}
	if st, msg := rawCall(t, c, wire.OpRemoveMember, wire.AppendAdmin(nil, azClient, wire.OpRemoveMember, binary.LittleEndian.AppendUint64(nil, 9))); st != wire.StatusError || msg != wire.MsgOperatorCredential {
		t.Errorf("client token on REMOVE_MEMBER: %d %q", st, msg)
	}
	if st, msg := rawCall(t, c, wire.OpPut, wire.AppendClient(nil, azClient, wire.AppendPut(nil, []byte("k"), []byte("v")))); st != wire.StatusOK {
		t.Errorf("client token on PUT: %d %q", st, msg)
	}
	// SPLIT_RANGE and MERGE_RANGE are data opcodes, but the client token
	// has no admin role.
	if st, msg := rawCall(t, c, wire.OpSplitRange, wire.AppendClient(nil, azClient, wire.AppendKey(nil, []byte("m")))); st != wire.StatusError || msg != "permission denied: client: SPLIT_RANGE needs the admin role" {
		t.Errorf("client token on SPLIT_RANGE: %d %q", st, msg)
	}
}

// azClientFor is a Go client sending token on data and admin requests.
func azClientFor(t *testing.T, addr, token string) *client.Client {
	t.Helper()
	cl, err := client.New([]string{addr}, &client.Options{ClientToken: token, OperatorToken: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func azCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestPolicyClampsScans: SCAN and SCAN_AT return only the keys the
// principal may read (the ACL's holes, a tenant's prefix, an identity's
// prefixes), and their limits count the keys returned.
func TestPolicyClampsScans(t *testing.T) {
	s, _ := startSecured(t, policyConfig(t))
	ctx := azCtx(t)
	adm := azClientFor(t, s.ClientAddr(), azAdmin)
	var all []string
	for _, p := range []string{"acl/", "app/", "c/", "t1/", "t2/", "z"} {
		for i := range 5 {
			k := fmt.Sprintf("%s%d", p, i)
			all = append(all, k)
			if err := adm.Put(ctx, []byte(k), []byte("v")); err != nil {
				t.Fatal(err)
			}
		}
	}
	sort.Strings(all)
	keep := func(pred func(string) bool) []string {
		var out []string
		for _, k := range all {
			if pred(k) {
				out = append(out, k)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name, token, prefix string
		want                []string
	}{
		{"client (ACL with holes)", azClient, "", keep(func(k string) bool {
			return !strings.HasPrefix(k, "acl/") && !strings.HasPrefix(k, "t1/") && !strings.HasPrefix(k, "t2/")
		})},
		{"ACL token", azACL, "", keep(func(k string) bool { return strings.HasPrefix(k, "acl/") })},
		{"tenant", azTenant1, "", keep(func(k string) bool { return strings.HasPrefix(k, "t1/") })},
		{"tenant, another tenant's prefix", azTenant1, "t2/", nil},
		{"identity prefixes", azRW, "a", keep(func(k string) bool { return strings.HasPrefix(k, "app/") })},
		{"read-only, unconfined", azRO, "", all},
	} {
		cl := azClientFor(t, s.ClientAddr(), tc.token)
		kvs, err := cl.Scan(ctx, []byte(tc.prefix))
		if err != nil {
			t.Fatalf("%s: scan: %v", tc.name, err)
		}
		var got []string
		for _, kv := range kvs {
			got = append(got, string(kv.Key))
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s: SCAN %q = %v, want %v", tc.name, tc.prefix, got, tc.want)
		}
		// SCAN_AT with a limit of 2 returns 2 readable keys and "more".
		conn := dial(t, s.ClientAddr())
		st, p, err := conn.do(wire.OpScanAt, wire.AppendClient(nil, tc.token, wire.AppendScanAt(nil, wire.ScanAt{Prefix: []byte(tc.prefix), Limit: 2})))
		if err != nil || st != wire.StatusOK {
			t.Fatalf("%s: SCAN_AT: %d %v", tc.name, st, err)
		}
		r, err := wire.DecodeScanAtReply(p)
		if err != nil {
			t.Fatal(err)
		}
		got = nil
		for _, it := range r.Items {
			got = append(got, string(it.Key))
		}
		want := tc.want
		if len(want) > 2 {
			want = want[:2]
		}
		if strings.Join(got, ",") != strings.Join(want, ",") || r.More != (len(tc.want) > 2) {
			t.Errorf("%s: SCAN_AT limit 2 = %v more %v, want %v more %v", tc.name, got, r.More, want, len(tc.want) > 2)
		}
	}
}

// TestPolicyWatchAndFeedFiltered: a prefix watch and a CDC poll carry only
// the changes of keys the principal may read.
func TestPolicyWatchAndFeedFiltered(t *testing.T) {
	s, _ := startSecured(t, policyConfig(t))
	ctx := azCtx(t)
	adm := azClientFor(t, s.ClientAddr(), azAdmin)
	tenant := azClientFor(t, s.ClientAddr(), azTenant1)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	if err := tenant.Put(ctx, []byte("t1/0"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	// From the next revision on, whenever the watch is established (a
	// late one catches up from the history, filtered the same way).
	w := tenant.Watch(wctx, nil, client.WithStartRevision(settledStore(t, s).AppliedTS()+1))
	for _, k := range []string{"t2/a", "c/a", "t1/a", "t1/b", "t2/b"} {
		if err := adm.Put(ctx, []byte(k), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	var seen []string
	for len(seen) == 0 || seen[len(seen)-1] != "t1/b" {
		select {
		case r, ok := <-w:
			if !ok || r.Err != nil {
				t.Fatalf("watch ended: %v", r.Err)
			}
			for _, e := range r.Events {
				seen = append(seen, string(e.Key))
			}
		case <-ctx.Done():
			t.Fatalf("watch: only %v", seen)
		}
	}
	if got := strings.Join(seen, ","); got != "t1/a,t1/b" {
		t.Fatalf("the tenant's prefix watch saw %v, want t1/a,t1/b", seen)
	}
	evs, err := tenant.CDCPoll(ctx, "feed", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var polled []string
	for _, e := range evs {
		polled = append(polled, string(e.Key))
	}
	if strings.Join(polled, ",") != "t1/0,t1/a,t1/b" {
		t.Fatalf("the tenant's CDC poll returned %v, want t1/0,t1/a,t1/b", polled)
	}
	// An unfiltered consumer sees all six.
	all, err := adm.CDCPoll(ctx, "feed", 0, 100)
	if err != nil || len(all) != 6 {
		t.Fatalf("admin poll: %d events, %v", len(all), err)
	}
	// The skipped changes count as sent: a checkpoint without a position
	// stores the newest revision polled, past the last visible change.
	hidden := all[len(all)-1].Seq // t2/b
	if err := tenant.CDCCheckpointLast(ctx, "feed"); err != nil {
		t.Fatal(err)
	}
	pos, err := tenant.CDCPosition(ctx, "feed")
	if err != nil || pos < hidden {
		t.Fatalf("tenant consumer position %d (%v), want at least the revision of the last (hidden) change %d", pos, err, hidden)
	}
}

// TestPolicyTenantConsumers: tenant t1's consumer "orders" and tenant
// t2's "orders" are different consumers, and neither is the untenanted
// "orders".
func TestPolicyTenantConsumers(t *testing.T) {
	s, _ := startSecured(t, policyConfig(t))
	ctx := azCtx(t)
	adm := azClientFor(t, s.ClientAddr(), azAdmin)
	for i := range 3 {
		if err := adm.Put(ctx, []byte(fmt.Sprintf("c/%d", i)), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	t1, t2 := azClientFor(t, s.ClientAddr(), azTenant1), azClientFor(t, s.ClientAddr(), azTenant2)
	if err := t1.CDCCheckpoint(ctx, "orders", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := t2.CDCPosition(ctx, "orders"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("tenant two sees tenant one's consumer: %v", err)
	}
	if _, err := adm.CDCPosition(ctx, "orders"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("an untenanted client sees tenant one's consumer: %v", err)
	}
	if err := t2.CDCCheckpoint(ctx, "orders", 3); err != nil {
		t.Fatal(err)
	}
	if p, err := t1.CDCPosition(ctx, "orders"); err != nil || p != 2 {
		t.Fatalf("tenant one's consumer: %d %v, want 2", p, err)
	}
	if p, err := t2.CDCPosition(ctx, "orders"); err != nil || p != 3 {
		t.Fatalf("tenant two's consumer: %d %v, want 3", p, err)
	}
	if err := t2.CDCDelete(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if p, err := t1.CDCPosition(ctx, "orders"); err != nil || p != 2 {
		t.Fatalf("tenant two's delete touched tenant one's consumer: %d %v", p, err)
	}
}

// TestPolicyTxnOwnership: another principal cannot op, commit or roll back
// someone's transaction: its id answers as unknown.
func TestPolicyTxnOwnership(t *testing.T) {
	s, _ := startSecured(t, policyConfig(t))
	c := dial(t, s.ClientAddr())
	st, p, err := c.do(wire.OpTxnBegin, wire.AppendClient(nil, azAdmin, nil))
	if err != nil || st != wire.StatusOK {
		t.Fatalf("begin: %d %v", st, err)
	}
	id, _, err := wire.DecodeTxnBeginReply(p)
	if err != nil {
		t.Fatal(err)
	}
	unknown := fmt.Sprintf(wire.MsgTxnUnknown, id)
	op := wire.AppendTxnOp(nil, wire.TxnOp{TxnID: id, Kind: wire.TxnOpPut, Key: []byte("c/x"), Value: []byte("v")})
	for _, tok := range []string{azClient, azRO, azACL, azTenant1} {
		for _, r := range []struct {
			op wire.Opcode
			p  []byte
		}{{wire.OpTxnOp, op}, {wire.OpTxnCommit, wire.AppendTxnID(nil, id)}, {wire.OpTxnRollback, wire.AppendTxnID(nil, id)}} {
			if tok == azRO && r.op == wire.OpTxnOp {
				continue // refused as read-only before the transaction is looked up
			}
			st, msg := rawCall(t, c, r.op, wire.AppendClient(nil, tok, r.p))
			if tok == azACL || tok == azTenant1 {
				if r.op == wire.OpTxnOp && st == wire.StatusError { // c/x is not theirs
					continue
				}
			}
			if st != wire.StatusInvalidArgument || msg != unknown {
				t.Errorf("%s %s on another's transaction: %d %q, want 1 %q", tok, r.op, st, msg, unknown)
			}
		}
	}
	// The owner still has it, untouched.
	if st, msg := rawCall(t, c, wire.OpTxnOp, wire.AppendClient(nil, azAdmin, op)); st != wire.StatusOK {
		t.Fatalf("owner's op: %d %q", st, msg)
	}
	if st, msg := rawCall(t, c, wire.OpTxnCommit, wire.AppendClient(nil, azAdmin, wire.AppendTxnID(nil, id))); st != wire.StatusOK {
		t.Fatalf("owner's commit: %d %q", st, msg)
	}
}

// TestPolicyReload: a reload applies good files at once and refuses a bad
// one, keeping the previous policy in force and counting the failure.
func TestPolicyReload(t *testing.T) {
	cfg := policyConfig(t)
	s, logs := startSecured(t, cfg)
	c := dial(t, s.ClientAddr())
	put := func(tok, key string) (wire.Status, string) {
		return rawCall(t, c, wire.OpPut, wire.AppendClient(nil, tok, wire.AppendPut(nil, []byte(key), []byte("v"))))
	}
	if st, msg := put(azACL, "acl/1"); st != wire.StatusOK {
		t.Fatalf("before: %d %q", st, msg)
	}
	// Good: the ACL token moves to new/.
	writePolicy(t, filepath.Dir(cfg.ACLFile), "acl.json", fmt.Sprintf(`{"": %q, "new/": %q, "t1/": %q, "t2/": %q}`, azClient, azACL, azTenant1, azTenant2))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if st, msg := put(azACL, "acl/1"); st != wire.StatusError || msg != "acl denied" {
		t.Fatalf("after the reload, acl/: %d %q", st, msg)
	}
	if st, msg := put(azACL, "new/1"); st != wire.StatusOK {
		t.Fatalf("after the reload, new/: %d %q", st, msg)
	}
	// Bad: refused with file:line:col, the previous policy still enforced.
	writePolicy(t, filepath.Dir(cfg.ACLFile), "acl.json", "{\n  \"acl/\": \"\"\n}")
	err := s.Reload()
	if err == nil || !strings.Contains(err.Error(), cfg.ACLFile+":2:11: prefix \"acl/\": empty token") {
		t.Fatalf("a bad reload: %v", err)
	}
	if st, msg := put(azACL, "new/2"); st != wire.StatusOK {
		t.Fatalf("after a bad reload, new/: %d %q", st, msg)
	}
	if st, msg := put(azACL, "acl/2"); st != wire.StatusError || msg != "acl denied" {
		t.Fatalf("after a bad reload, acl/: %d %q", st, msg)
	}
	var m dto.Metric
	if err := s.reloadFailures.WithLabelValues(reloadFilePolicy).Write(&m); err != nil {
		t.Fatal(err)
	}
	if n := m.GetCounter().GetValue(); n != 1 {
		t.Fatalf("kayadb_config_reload_failures_total = %v, want 1", n)
	}
	if !strings.Contains(logs.String(), "policy reload failed") {
		t.Fatal("the failed reload was not logged")
	}
}

// TestPolicyBadFileStopsStart: a malformed file refuses to start the node
// with the file, line, column and reason, as a configuration error.
func TestPolicyBadFileStopsStart(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		flag, file, body, want string
	}{
		{"acl", "acl.json", `{"a": 5}`, `acl.json:1:7: the token of prefix "a": want a string`},
		{"tenant", "t.json", `{"tenants": [{"id": "x", "token": "tok-00000000000001", "prefix": ""}]}`, `t.json:1:67: tenant "x" has an empty prefix`},
		{"identity", "i.json", `{"identities": [{"name": "a", "role": "root", "certificate": {"dns": "a"}}]}`, `i.json:1:39: identity "a": role "root"`},
	} {
		cfg := Config{NodeID: 1, DataDir: filepath.Join(dir, tc.flag), ClientAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)}
		p := writePolicy(t, dir, tc.file, tc.body)
		switch tc.flag {
		case "acl":
			cfg.ACLFile = p
		case "tenant":
			cfg.TenantFile = p
		default:
			cfg.IdentityFile = p
		}
		_, err := New(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New = %v, want %q", tc.flag, err, tc.want)
			continue
		}
		var ce configError
		if !errors.As(err, &ce) {
			t.Errorf("%s: %v is not a configuration error (exit status 4)", tc.flag, err)
		}
	}
}

// TestPolicyCertificates: with mutual TLS, a client certificate proves an
// identity of the identity file by its DNS SAN or its subject, with the
// identity's role and prefixes; a certificate no identity names is
// refused; a token in the prefix still wins.
func TestPolicyCertificates(t *testing.T) {
	base := policyConfig(t)
	c := newTLSCluster(t, 1, func(_ uint64, cfg *Config) {
		cfg.OperatorToken, cfg.ClientToken, cfg.ACLFile, cfg.TenantFile, cfg.IdentityFile = base.OperatorToken, base.ClientToken, base.ACLFile, base.TenantFile, base.IdentityFile
	})
	addr := c.members()[0].ClientAddr
	user := c.ca.Issue(t, "certuser.kaya.local", &securitytest.CertOptions{NameOnly: true})
	admin := c.ca.Issue(t, "certadmin.kaya.local", &securitytest.CertOptions{NameOnly: true})
	stranger := c.ca.Issue(t, "stranger.kaya.local", &securitytest.CertOptions{NameOnly: true})
	call := func(cert *securitytest.Pair, op wire.Opcode, payload []byte) (wire.Status, string) {
		t.Helper()
		var st wire.Status
		var p []byte
		waitFor(t, "a reply over mutual TLS", func() bool {
			tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, c.clientTLS(cert))
			if err != nil {
				return false
			}
			defer tc.Close()
			_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := tc.Write(wire.AppendRequest(nil, op, payload)); err != nil {
				return false
			}
			st, p, _, err = wire.ReadResponse(bufio.NewReader(tc), nil)
			return err == nil && st != wire.StatusNotLeader
		})
		msg := ""
		if st != wire.StatusOK && st != wire.StatusNotFound {
			msg, _ = wire.DecodeError(p)
		}
		return st, msg
	}
	put := func(k string) []byte { return wire.AppendPut(nil, []byte(k), []byte("v")) }
	for _, tc := range []struct {
		name    string
		cert    *securitytest.Pair
		op      wire.Opcode
		payload []byte
		st      wire.Status
		msg     string
	}{
		{"DNS SAN identity in its prefix", user, wire.OpPut, put("cert/1"), wire.StatusOK, ""},
		{"DNS SAN identity out of its prefix", user, wire.OpPut, put("c/1"), wire.StatusError, "acl denied"},
		{"DNS SAN identity, admin opcode", user, wire.OpRemoveMember, binary.LittleEndian.AppendUint64(nil, 99), wire.StatusError, "permission denied: cert: REMOVE_MEMBER needs the admin role"},
		{"subject identity (admin), data", admin, wire.OpPut, put("c/1"), wire.StatusOK, ""},
		{"subject identity (admin), admin opcode", admin, wire.OpTransferLeader, wire.AppendTransferLeader(nil, 0, 1), wire.StatusOK, ""},
		{"unknown certificate", stranger, wire.OpGet, wire.AppendKey(nil, []byte("c/1")), wire.StatusError, wire.MsgClientCredential},
		{"unknown certificate, admin opcode", stranger, wire.OpTransferLeader, wire.AppendTransferLeader(nil, 0, 1), wire.StatusError, wire.MsgOperatorCredential},
		{"a token wins over the certificate", user, wire.OpPut, wire.AppendClient(nil, azClient, put("c/2")), wire.StatusOK, ""},
		{"a wrong token is refused even with a certificate", user, wire.OpPut, wire.AppendClient(nil, "wrong-token-0000000", put("cert/2")), wire.StatusError, wire.MsgClientCredential},
	} {
		if st, msg := call(tc.cert, tc.op, tc.payload); st != tc.st || msg != tc.msg {
			t.Errorf("%s: %d %q, want %d %q", tc.name, st, msg, tc.st, tc.msg)
		}
	}
}

// TestPolicyGoClientIdentities: the Go client (and so kayactl, which
// passes its --client-token and --operator-token to it) works with an
// identity's token: a read-only one reads and is refused writes; an admin
// one, given as both tokens, runs admin requests.
func TestPolicyGoClientIdentities(t *testing.T) {
	s, _ := startSecured(t, policyConfig(t))
	ctx := azCtx(t)
	ro, err := client.New([]string{s.ClientAddr()}, &client.Options{ClientToken: azRO})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	adm := azClientFor(t, s.ClientAddr(), azAdmin)
	if err := adm.Put(ctx, []byte("c/1"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if v, err := ro.Get(ctx, []byte("c/1")); err != nil || string(v) != "v" {
		t.Fatalf("read-only Get: %q %v", v, err)
	}
	if err := ro.Put(ctx, []byte("c/1"), []byte("w")); err == nil || !strings.Contains(err.Error(), "permission denied: ro is read-only") {
		t.Fatalf("read-only Put: %v", err)
	}
	if _, err := adm.RemoveMember(ctx, 99); err == nil || strings.Contains(err.Error(), "credential") || strings.Contains(err.Error(), "permission") {
		t.Fatalf("admin identity RemoveMember of a stranger: %v (want the membership's refusal, not an authorization one)", err)
	}
}
