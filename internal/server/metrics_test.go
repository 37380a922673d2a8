package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kayadb/kayadb/internal/wire"
)

// metricsListener is a loopback listener for a test server's HTTP port,
// closed at the end of the test (a failed New leaves it to the caller).
func metricsListener(t *testing.T) net.Listener {
	t.Helper()
	ln := loopbackListener(t)
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// httpClient does not keep connections, so that nothing lingers after a
// server closes (goleak).
var httpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// scrapeMetrics reads /metrics into series → value ("name{labels}" as the
// text format writes it).
func scrapeMetrics(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	code, body := httpGet(t, "http://"+addr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: status %d: %s", code, body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("bad metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// series returns one series' value, failing when it is absent.
func series(t *testing.T, m map[string]float64, name string) float64 {
	t.Helper()
	v, ok := m[name]
	if !ok {
		var near []string
		base, _, _ := strings.Cut(name, "{")
		for k := range m {
			if strings.HasPrefix(k, base) {
				near = append(near, k)
			}
		}
		t.Fatalf("series %s missing (same name: %v)", name, near)
	}
	return v
}

// keySeries must be present on every node from the first scrape.
var keySeries = []string{
	"kayadb_server_ready", "kayadb_raft_term", "kayadb_raft_leader_id", "kayadb_raft_has_leader", "kayadb_raft_is_leader",
	"kayadb_raft_commit_index", "kayadb_raft_applied_index", "kayadb_raft_snapshot_index",
	"kayadb_raft_snapshots_taken_total", "kayadb_raft_snapshots_installed_total", "kayadb_raft_voters", "kayadb_raft_learners",
	"kayadb_raft_proposals_pending", "kayadb_raft_proposals_queued", "kayadb_raft_proposals_dropped_total",
	"kayadb_raft_log_segments", "kayadb_raft_log_bytes_written_total", "kayadb_raft_log_fsyncs_total",
	"kayadb_raft_log_fsync_duration_seconds_count", "kayadb_raft_log_fsync_duration_seconds_sum", `kayadb_raft_log_fsync_duration_seconds_bucket{le="+Inf"}`,
	"kayadb_transport_messages_sent_total", "kayadb_transport_messages_received_total",
	`kayadb_transport_messages_dropped_total{reason="queue_full"}`, `kayadb_transport_messages_dropped_total{reason="unknown_peer"}`,
	`kayadb_transport_messages_rejected_total{reason="unknown_sender"}`, `kayadb_transport_messages_rejected_total{reason="wrong_recipient"}`,
	`kayadb_transport_messages_rejected_total{reason="local_type"}`, `kayadb_transport_messages_rejected_total{reason="snapshot_outside_stream"}`,
	`kayadb_transport_rejected_total{reason="auth"}`, `kayadb_transport_rejected_total{reason="version"}`,
	`kayadb_transport_rejected_total{reason="connection_limit"}`, `kayadb_transport_rejected_total{reason="source_limit"}`,
	"kayadb_transport_inbound_connections",
	"kayadb_transport_bad_frames_total", "kayadb_transport_tls_rejections_total", "kayadb_transport_dials_total",
	"kayadb_transport_dial_failures_total", "kayadb_transport_connected_peers", "kayadb_transport_snapshots_sent_total",
	"kayadb_transport_snapshots_failed_total", "kayadb_transport_snapshots_received_total",
	"kayadb_engine_put_total", "kayadb_engine_get_total", "kayadb_engine_delete_total", "kayadb_engine_scan_total",
	"kayadb_engine_wal_bytes_written_total", "kayadb_engine_wal_fsyncs_total", "kayadb_engine_wal_fsync_duration_seconds_count",
	"kayadb_engine_memtable_entries", "kayadb_engine_memtable_bytes", "kayadb_engine_sstables", "kayadb_engine_table_bytes",
	"kayadb_engine_last_sequence", "kayadb_engine_flushes_total", "kayadb_engine_flush_duration_seconds_count",
	"kayadb_engine_compactions_total", "kayadb_engine_compaction_duration_seconds_count",
	"kayadb_engine_compaction_bytes_read_total", "kayadb_engine_compaction_bytes_written_total", "kayadb_engine_compaction_debt_bytes",
	`kayadb_engine_write_stalls_total{cause="memtable"}`, `kayadb_engine_write_stalls_total{cause="l0"}`, "kayadb_engine_write_stall_seconds_total",
	"kayadb_engine_block_cache_hits_total", "kayadb_engine_block_cache_misses_total", "kayadb_engine_block_cache_hit_ratio",
	"kayadb_engine_block_cache_bytes", "kayadb_engine_block_cache_capacity_bytes", "kayadb_engine_recovery_duration_seconds",
	"go_goroutines", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes", "process_open_fds",
}

// TestMetricsSingleNode scrapes a running node: every key series is there,
// and request counters, latencies, the applied index, the raft log and the
// engine counters move with puts and gets. Refused requests are counted
// under their status. Closing the server stops the HTTP listener without
// leaving a goroutine.
func TestMetricsSingleNode(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const token = "metrics-test-client-token"
	s, logs := startSecured(t, Config{MetricsListener: metricsListener(t), ClientToken: token})
	addr := s.MetricsAddr()
	if addr == "" {
		t.Fatal("no metrics address")
	}
	if !strings.Contains(logs.String(), "metrics_addr="+addr) {
		t.Errorf("the metrics address is not logged:\n%s", logs)
	}
	before := scrapeMetrics(t, addr)
	for _, name := range keySeries {
		series(t, before, name)
	}
	if series(t, before, "kayadb_raft_is_leader") != 1 || series(t, before, "kayadb_raft_leader_id") != 1 ||
		series(t, before, "kayadb_raft_has_leader") != 1 || series(t, before, "kayadb_raft_voters") != 1 {
		t.Errorf("a single node should lead: is_leader %v leader_id %v", before["kayadb_raft_is_leader"], before["kayadb_raft_leader_id"])
	}

	c := dial(t, s.ClientAddr())
	const n = 20
	for i := 0; i < n; i++ {
		if st, _, err := c.do(wire.OpPut, wire.AppendClient(nil, token, wire.AppendPut(nil, fmt.Appendf(nil, "k%02d", i), []byte("v")))); err != nil || st != wire.StatusOK {
			t.Fatalf("put: %v %v", st, err)
		}
		if st, _, err := c.do(wire.OpGet, wire.AppendClient(nil, token, wire.AppendKey(nil, fmt.Appendf(nil, "k%02d", i)))); err != nil || st != wire.StatusOK {
			t.Fatalf("get: %v %v", st, err)
		}
	}
	if st, _, err := c.do(wire.OpGet, wire.AppendClient(nil, token, wire.AppendKey(nil, []byte("absent")))); err != nil || st != wire.StatusNotFound {
		t.Fatalf("get absent: %v %v", st, err)
	}
	// Without the token: refused, and counted under the refusal's status.
	for i := 0; i < 3; i++ {
		if st, _, err := c.do(wire.OpGet, wire.AppendKey(nil, []byte("k00"))); err != nil || st != wire.StatusError {
			t.Fatalf("get without token: %v %v", st, err)
		}
	}
	if st, _, err := c.do(wire.OpHealth, nil); err != nil || st != wire.StatusOK {
		t.Fatalf("health: %v %v", st, err)
	}

	after := scrapeMetrics(t, addr)
	delta := func(name string) float64 { return series(t, after, name) - before[name] }
	for name, want := range map[string]float64{
		`kayadb_client_requests_total{opcode="PUT",status="OK"}`:                n,
		`kayadb_client_requests_total{opcode="GET",status="OK"}`:                n,
		`kayadb_client_requests_total{opcode="GET",status="NOT_FOUND"}`:         1,
		`kayadb_client_requests_total{opcode="GET",status="ERROR"}`:             3,
		`kayadb_client_requests_total{opcode="HEALTH",status="OK"}`:             1,
		`kayadb_client_request_duration_seconds_count{opcode="PUT"}`:            n,
		`kayadb_client_request_duration_seconds_count{opcode="GET"}`:            n + 1 + 3,
		`kayadb_client_request_duration_seconds_bucket{opcode="PUT",le="+Inf"}`: n,
		"kayadb_engine_put_total":                                               n,
		"kayadb_engine_get_total":                                               n + 1,
	} {
		if got := delta(name); got != want {
			t.Errorf("%s moved by %v, want %v", name, got, want)
		}
	}
	if series(t, after, `kayadb_client_request_duration_seconds_sum{opcode="PUT"}`) <= 0 {
		t.Error("PUT latency sum is zero")
	}
	for _, name := range []string{"kayadb_raft_applied_index", "kayadb_raft_commit_index", "kayadb_raft_log_fsyncs_total",
		"kayadb_raft_log_bytes_written_total", "kayadb_raft_log_fsync_duration_seconds_count", "kayadb_engine_last_sequence",
		"kayadb_engine_wal_bytes_written_total"} {
		if delta(name) <= 0 {
			t.Errorf("%s did not move (%v → %v)", name, before[name], after[name])
		}
	}
	if a, c := series(t, after, "kayadb_raft_applied_index"), series(t, after, "kayadb_raft_commit_index"); a != c {
		t.Errorf("applied index %v, commit index %v on an idle single node", a, c)
	}
	// The fsync histogram's buckets are cumulative and end at its count.
	if inf, cnt := series(t, after, `kayadb_raft_log_fsync_duration_seconds_bucket{le="+Inf"}`), series(t, after, "kayadb_raft_log_fsync_duration_seconds_count"); inf != cnt {
		t.Errorf("+Inf bucket %v != count %v", inf, cnt)
	}
	series(t, after, `kayadb_raft_log_fsync_duration_seconds_bucket{le="8e-06"}`)
	series(t, after, `kayadb_raft_log_fsync_duration_seconds_bucket{le="16.777216"}`)

	// Probes on a healthy node.
	if code, body := httpGet(t, "http://"+addr+"/livez"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Errorf("/livez: %d %q", code, body)
	}
	if code, body := httpGet(t, "http://"+addr+"/readyz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Errorf("/readyz: %d %q", code, body)
	}
	if code, body := httpGet(t, "http://"+addr+"/health"); code != 200 || strings.TrimSpace(body) != `{"health":"true","reason":""}` {
		t.Errorf("/health: %d %q", code, body)
	}
	if code, _ := httpGet(t, "http://"+addr+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("pprof is served without --enable-pprof (status %d)", code)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := httpClient.Get("http://" + addr + "/livez"); err == nil {
		t.Error("the HTTP listener still answers after Close")
	}
}

// TestReadinessWaitsForStartCommit: until the node has applied the commit
// index it saw at start, it is not ready.
func TestReadinessWaitsForStartCommit(t *testing.T) {
	s, _ := startSecured(t, Config{MetricsListener: metricsListener(t)})
	addr := s.MetricsAddr()
	// A new leader commits an empty entry and applies it a moment later:
	// ready once applied has caught up.
	waitProbe(t, addr, true, 10*time.Second)
	// Pretend the node saw a commit index far ahead when it started.
	s.obs.readyMu.Lock()
	saved := s.obs.startCommit
	s.obs.startCommit = s.store.AppliedIndex() + 1000
	s.obs.readyMu.Unlock()
	code, body := httpGet(t, "http://"+addr+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "catching up") {
		t.Errorf("/readyz while behind: %d %q", code, body)
	}
	code, body = httpGet(t, "http://"+addr+"/health")
	var h struct{ Health, Reason string }
	if err := json.Unmarshal([]byte(body), &h); err != nil || code != http.StatusServiceUnavailable || h.Health != "false" || !strings.Contains(h.Reason, "catching up") {
		t.Errorf("/health while behind: %d %q (%v)", code, body, err)
	}
	if v := series(t, scrapeMetrics(t, addr), "kayadb_server_ready"); v != 0 {
		t.Errorf("kayadb_server_ready %v while behind", v)
	}
	s.obs.readyMu.Lock()
	s.obs.startCommit = saved
	s.obs.readyMu.Unlock()
	waitProbe(t, addr, true, 10*time.Second)
}

// waitProbe polls a node's /readyz and /health until both report want.
func waitProbe(t *testing.T, addr string, want bool, within time.Duration) string {
	t.Helper()
	wantCode := http.StatusOK
	if !want {
		wantCode = http.StatusServiceUnavailable
	}
	deadline := time.Now().Add(within)
	var rc, hc int
	var rb, hb string
	for time.Now().Before(deadline) {
		rc, rb = httpGet(t, "http://"+addr+"/readyz")
		hc, hb = httpGet(t, "http://"+addr+"/health")
		var h struct{ Health, Reason string }
		_ = json.Unmarshal([]byte(hb), &h)
		if rc == wantCode && hc == wantCode && h.Health == strconv.FormatBool(want) && (h.Reason == "") == want {
			return strings.TrimSpace(rb)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: want ready=%v within %v; /readyz %d %q, /health %d %q", addr, want, within, rc, rb, hc, hb)
	return ""
}

// TestMetricsCluster: a 3-node cluster's nodes export the same applied
// index after writes, followers count received raft messages, and
// readiness follows the leader: an isolated follower and a node whose two
// peers stopped are not ready, and become ready again when the cluster
// heals.
func TestMetricsCluster(t *testing.T) {
	c := newTestCluster(t, 3, func(id uint64, cfg *Config) { cfg.MetricsListener = metricsListener(t) })
	lead := c.WaitLeader()
	addrs := map[uint64]string{}
	for id, s := range c.Nodes() {
		addrs[id] = s.MetricsAddr()
		waitProbe(t, addrs[id], true, 10*time.Second)
	}
	before := scrapeMetrics(t, addrs[lead])
	cl := dial(t, c.addr(lead))
	for i := 0; i < 30; i++ {
		if st, _, err := cl.put(fmt.Sprintf("k%02d", i), "v"); err != nil || st != wire.StatusOK {
			t.Fatalf("put: %v %v", st, err)
		}
	}
	if st, _, err := cl.get("k00"); err != nil || st != wire.StatusOK {
		t.Fatalf("get: %v %v", st, err)
	}
	after := scrapeMetrics(t, addrs[lead])
	if d := series(t, after, `kayadb_client_requests_total{opcode="PUT",status="OK"}`) - before[`kayadb_client_requests_total{opcode="PUT",status="OK"}`]; d != 30 {
		t.Errorf("leader counted %v PUTs, want 30", d)
	}
	if d := series(t, after, "kayadb_engine_put_total") - before["kayadb_engine_put_total"]; d != 30 {
		t.Errorf("leader's engine put count moved by %v, want 30", d)
	}
	if series(t, after, "kayadb_raft_is_leader") != 1 || series(t, after, "kayadb_raft_voters") != 3 {
		t.Errorf("leader: is_leader %v voters %v", after["kayadb_raft_is_leader"], after["kayadb_raft_voters"])
	}
	if series(t, after, "kayadb_transport_messages_sent_total") <= before["kayadb_transport_messages_sent_total"] {
		t.Error("the leader's sent messages did not move")
	}
	target := series(t, after, "kayadb_raft_commit_index")
	for id, addr := range addrs {
		deadline := time.Now().Add(10 * time.Second)
		for {
			m := scrapeMetrics(t, addr)
			if series(t, m, "kayadb_raft_applied_index") >= target {
				if series(t, m, "kayadb_raft_leader_id") != float64(lead) {
					t.Errorf("node %d names leader %v, want %d", id, m["kayadb_raft_leader_id"], lead)
				}
				if id != lead && (series(t, m, "kayadb_raft_is_leader") != 0 || series(t, m, "kayadb_transport_messages_received_total") == 0) {
					t.Errorf("follower %d: is_leader %v, received %v", id, m["kayadb_raft_is_leader"], m["kayadb_transport_messages_received_total"])
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d: applied index %v never reached %v", id, m["kayadb_raft_applied_index"], target)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// An isolated follower loses its leader at its election timeout.
	var follower uint64
	for id := range addrs {
		if id != lead {
			follower = id
			break
		}
	}
	c.Net.Isolate(follower)
	waitProbe(t, addrs[follower], false, 5*time.Second)
	c.Net.Heal()
	waitProbe(t, addrs[follower], true, 10*time.Second)

	// Two nodes stopped: the one left (the leader steps down for lack of a
	// quorum) is not ready, until they come back.
	var others []uint64
	for id := range addrs {
		if id != lead {
			others = append(others, id)
		}
	}
	for _, id := range others {
		c.Stop(id)
	}
	waitProbe(t, addrs[lead], false, 5*time.Second)
	if v := series(t, scrapeMetrics(t, addrs[lead]), "kayadb_server_ready"); v != 0 {
		t.Errorf("kayadb_server_ready %v without a quorum", v)
	}
	for _, id := range others {
		c.Start(id) // new metrics listeners
		addrs[id] = c.node(id).MetricsAddr()
	}
	for id, addr := range addrs {
		waitProbe(t, addr, true, 15*time.Second)
		if v := series(t, scrapeMetrics(t, addr), "kayadb_server_ready"); v != 1 {
			t.Errorf("node %d: kayadb_server_ready %v after healing", id, v)
		}
	}
}

// TestMetricsBindGuard: --metrics-addr is judged like the other listen
// addresses: a wildcard is refused before anything is opened, unless
// --allow-public-bind, and then it is in the banner.
func TestMetricsBindGuard(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:9090", "[::]:9090", ":9090", "203.0.113.9:9090"} {
		dir := filepath.Join(t.TempDir(), "data")
		_, err := New(Config{NodeID: 1, DataDir: dir, ClientAddr: "127.0.0.1:17379", RaftAddr: "127.0.0.1:17481", MetricsAddr: addr})
		if err == nil {
			t.Fatalf("--metrics-addr %s: started", addr)
		}
		for _, want := range []string{"--metrics-addr", "--allow-public-bind"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("--metrics-addr %s: error %q does not mention %q", addr, err, want)
			}
		}
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the refused node created its data directory (%v)", err)
		}
	}
	// A test listener without an address is judged by its own address.
	ln := metricsListener(t)
	if _, err := New(Config{NodeID: 1, DataDir: filepath.Join(t.TempDir(), "d"), ClientAddr: "0.0.0.0:1", MetricsListener: ln}); err == nil ||
		!strings.Contains(err.Error(), "--client-addr") {
		t.Fatalf("want the client address refused first, got %v", err)
	}
	// The command line: the flag's value is checked, exit status 4 (a
	// configuration error).
	var out, errb bytes.Buffer
	if code := Main([]string{"--data", filepath.Join(t.TempDir(), "d"), "--metrics-addr", "0.0.0.0:9090"}, &out, &errb); code != exitUsage ||
		!strings.Contains(errb.String(), "--metrics-addr") || !strings.Contains(errb.String(), "--allow-public-bind") {
		t.Fatalf("Main: exit %d, stderr %q", code, errb.String())
	}
	// With --allow-public-bind the node starts and the banner names it (the
	// test serves on a loopback listener: the configured address is what
	// the guard judges).
	s, logs := startSecured(t, Config{AllowPublicBind: true, MetricsAddr: "0.0.0.0:9090", MetricsListener: metricsListener(t)})
	for _, want := range []string{"LISTENING ON AN EXPOSED ADDRESS", "--metrics-addr 0.0.0.0:9090"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if code, _ := httpGet(t, "http://"+s.MetricsAddr()+"/livez"); code != 200 {
		t.Errorf("/livez: %d", code)
	}
}

// TestPprofOnlyWhenEnabled: /debug/pprof/ answers with --enable-pprof
// only, and never serves the command line (it may hold a token).
func TestPprofOnlyWhenEnabled(t *testing.T) {
	off, _ := startSecured(t, Config{MetricsListener: metricsListener(t)})
	on, _ := startSecured(t, Config{MetricsListener: metricsListener(t), EnablePprof: true})
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/heap", "/debug/pprof/cmdline"} {
		if code, _ := httpGet(t, "http://"+off.MetricsAddr()+path); code != http.StatusNotFound {
			t.Errorf("without --enable-pprof %s: status %d", path, code)
		}
	}
	if code, body := httpGet(t, "http://"+on.MetricsAddr()+"/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/: %d %.200q", code, body)
	}
	if code, body := httpGet(t, "http://"+on.MetricsAddr()+"/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile") {
		t.Errorf("goroutine profile: %d %.200q", code, body)
	}
	if code, _ := httpGet(t, "http://"+on.MetricsAddr()+"/debug/pprof/cmdline"); code == 200 {
		t.Error("/debug/pprof/cmdline is served")
	}
	// Metrics and probes are there either way.
	if code, _ := httpGet(t, "http://"+on.MetricsAddr()+"/metrics"); code != 200 {
		t.Errorf("/metrics with pprof: %d", code)
	}
}

// TestMetricsFlags: the default address, --no-metrics, the environment,
// and --enable-pprof's need for the listener.
func TestMetricsFlags(t *testing.T) {
	noEnv := func(string) (string, bool) { return "", false }
	parse := func(args []string, env map[string]string) (Config, int, string) {
		var errb bytes.Buffer
		lookup := noEnv
		if env != nil {
			lookup = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
		}
		cfg, code := ParseFlags(args, lookup, &errb)
		return cfg, code, errb.String()
	}
	if cfg, code, _ := parse(nil, nil); code != -1 || cfg.MetricsAddr != "127.0.0.1:9090" || cfg.EnablePprof {
		t.Errorf("defaults: code %d addr %q pprof %v", code, cfg.MetricsAddr, cfg.EnablePprof)
	}
	if cfg, code, _ := parse([]string{"--no-metrics"}, nil); code != -1 || cfg.MetricsAddr != "" {
		t.Errorf("--no-metrics: code %d addr %q", code, cfg.MetricsAddr)
	}
	if cfg, code, _ := parse([]string{"--metrics-addr", "127.0.0.1:19090", "--enable-pprof"}, nil); code != -1 || cfg.MetricsAddr != "127.0.0.1:19090" || !cfg.EnablePprof {
		t.Errorf("--metrics-addr --enable-pprof: code %d addr %q pprof %v", code, cfg.MetricsAddr, cfg.EnablePprof)
	}
	if cfg, code, _ := parse(nil, map[string]string{"KAYA_METRICS_ADDR": "127.0.0.2:9191", "KAYA_ENABLE_PPROF": "true"}); code != -1 || cfg.MetricsAddr != "127.0.0.2:9191" || !cfg.EnablePprof {
		t.Errorf("environment: code %d addr %q pprof %v", code, cfg.MetricsAddr, cfg.EnablePprof)
	}
	if cfg, code, _ := parse(nil, map[string]string{"KAYA_NO_METRICS": "true"}); code != -1 || cfg.MetricsAddr != "" {
		t.Errorf("KAYA_NO_METRICS: code %d addr %q", code, cfg.MetricsAddr)
	}
	if _, code, msg := parse([]string{"--no-metrics", "--enable-pprof"}, nil); code != exitUsage || !strings.Contains(msg, "--enable-pprof") {
		t.Errorf("--no-metrics --enable-pprof: code %d %q", code, msg)
	}
	if _, code, msg := parse([]string{"--metrics-tls"}, nil); code != exitUsage || !strings.Contains(msg, "--tls-cert") {
		t.Errorf("--metrics-tls without --tls-cert: code %d %q", code, msg)
	}
	if _, code, msg := parse([]string{"--no-metrics", "--metrics-tls", "--tls-cert", "c.pem", "--tls-key", "k.pem"}, nil); code != exitUsage || !strings.Contains(msg, "--metrics-tls needs the metrics listener") {
		t.Errorf("--no-metrics --metrics-tls: code %d %q", code, msg)
	}
	if cfg, code, _ := parse([]string{"--metrics-tls", "--tls-cert", "c.pem", "--tls-key", "k.pem"}, nil); code != -1 || !cfg.MetricsTLS || cfg.MetricsOptional {
		t.Errorf("--metrics-tls: code %d tls %v optional %v (an asked-for HTTPS listener must not be skipped silently)", code, cfg.MetricsTLS, cfg.MetricsOptional)
	}
	// A Config built in code has no listener unless it asks for one.
	s, _ := startSecured(t, Config{})
	if s.MetricsAddr() != "" {
		t.Errorf("a Config without MetricsAddr started a listener on %s", s.MetricsAddr())
	}
}
