package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/kayadb/kayadb/internal/buildinfo"
	"github.com/kayadb/kayadb/internal/errs"
	"github.com/kayadb/kayadb/internal/security"
)

// Exit codes of kayadb-server (docs/server.md, "Signals and exit status").
const (
	exitOK         = 0
	exitError      = 1
	exitUsage      = 4 // bad flags, or a configuration New refuses (configError)
	exitLocked     = 6
	shutdownBudget = 20 * time.Second
)

// configError is an error of New that a configuration causes before the
// node opens anything (checkSecurity: a listen address the bind guard
// refuses, a bad token, unusable TLS files, the production checks). Main
// exits with exitUsage for it, as for bad flags.
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }
func (e configError) Unwrap() error { return e.err }

// flagEnv returns the environment variable that can set a flag:
// --client-addr → KAYA_CLIENT_ADDR.
func flagEnv(name string) string {
	return "KAYA_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// ParseFlags turns the command line and the KAYA_* environment into a
// Config. On a bad or help invocation it has written to stderr and returns
// the exit code; for --version it writes nothing and returns exitVersion
// (-2: the caller prints the version); otherwise the code is -1.
func ParseFlags(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (Config, int) {
	fs := pflag.NewFlagSet("kayadb-server", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		nodeID     = fs.Uint64("node-id", 1, "this node's id: a positive integer, unique in the cluster and never reused")
		dataDir    = fs.String("data", "./kayadb-data", "data directory (engine, raft log, roster); created 0700")
		raftAddr   = fs.String("raft-addr", "127.0.0.1:7481", "address for raft traffic from the other nodes")
		clientAddr = fs.String("client-addr", "127.0.0.1:7379", "address for clients (kayactl, the Go client)")
		advRaft    = fs.String("advertise-raft-addr", "", "the raft address the other nodes dial, when it is not --raft-addr: a proxy or sidecar in front of this node (default: --raft-addr)")
		advClient  = fs.String("advertise-client-addr", "", "the client address clients are redirected to, when it is not --client-addr: a proxy or sidecar in front of this node (default: --client-addr)")
		peers      = fs.StringArray("peer", nil, "a member of a new cluster, ID=RAFT_ADDR,CLIENT_ADDR (or ID=RAFT_ADDR: clients are then sent to RAFT_ADDR); repeat for each member; this node's own entry may be left out (env KAYA_PEER: several separated by spaces)")
		join       = fs.Bool("join", false, "start as a new member of a running cluster (add it with kayactl add-node first)")
		tick       = fs.Duration("tick", 100*time.Millisecond, "raft clock tick; elections take about 10 ticks")
		timeout    = fs.Duration("request-timeout", 5*time.Second, "longest a client request may wait for raft")
		snapEvery  = fs.Int64("snapshot-entries", 10000, "take a raft snapshot and compact the raft log every this many applied entries (0 disables)")
		snapKeep   = fs.Uint64("snapshot-catchup-entries", 5000, "raft log entries kept behind each snapshot, so that a follower slightly behind catches up from the log")
		snapRate   = fs.String("snapshot-rate", "64MiB", "bandwidth limit for the snapshots this node sends to followers, all together, in bytes per second (e.g. 64MiB, 500KB; 0 = unlimited)")
		reserve    = fs.String("disk-reserve", "auto", "space kept in reserve on the data directory's file system (a ballast file, DIR/RESERVE) and given back when the disk fills, so the node can still restart, compact and delete (e.g. 256MiB; auto = 1% of the file system, 32MiB to 1GiB; 0 disables)")
		metrics    = fs.String("metrics-addr", "127.0.0.1:9090", "address of the HTTP listener for Prometheus metrics (/metrics) and health checks (/livez, /readyz, /health)")
		noMetrics  = fs.Bool("no-metrics", false, "do not start the HTTP listener (no metrics, health checks or pprof)")
		pprofOn    = fs.Bool("enable-pprof", false, "serve Go's profiler (net/http/pprof) under /debug/pprof/ on the metrics listener")
		metricsTLS = fs.Bool("metrics-tls", false, "serve the metrics listener over HTTPS with --tls-cert; with --tls-ca, scrapers and health checkers must present a certificate it signed")
		allowPub   = fs.Bool("allow-public-bind", false, "allow listening on wildcard (0.0.0.0, ::) and public addresses; only behind a firewall with TLS and tokens (see docs/security.md)")
		opToken    = fs.String("operator-token", "", "require this secret on admin requests (add/remove/promote node, transfer leader, backup: it reads the whole database); prefer --operator-token-file or KAYA_OPERATOR_TOKEN, command lines are visible to other users")
		opFile     = fs.String("operator-token-file", "", "read the operator token from this file (keep it chmod 600)")
		clToken    = fs.String("client-token", "", "require this secret on data requests (put, get, delete, scan, stats); prefer --client-token-file or KAYA_CLIENT_TOKEN")
		clFile     = fs.String("client-token-file", "", "read the client token from this file (keep it chmod 600)")
		peerFile   = fs.String("peer-token-file", "", "read the cluster's peer token from this file (the same secret on every node, at least 16 bytes; keep it chmod 600): raft connections prove it both ways before any message is read; required with --allow-public-bind unless mutual TLS is on")
		tlsCert    = fs.String("tls-cert", "", "PEM certificate (chain) for TLS on the client and raft ports; needs --tls-key")
		tlsKey     = fs.String("tls-key", "", "PEM private key of --tls-cert")
		tlsCA      = fs.String("tls-ca", "", "PEM CA bundle: clients and peers must present a certificate it signed (mutual TLS), and peers' certificates are checked against it")
		tlsReload  = fs.Duration("tls-reload-interval", 5*time.Second, "how often to check the TLS files for changes and reload them (0 disables; SIGHUP always reloads)")
		maxConns   = fs.Int("max-client-connections", defaultMaxClientConnections, "most client connections open at once; one source address may hold a quarter of them (at least 16); more get an ERROR reply and are closed")
		clIdle     = fs.Duration("client-idle-timeout", defaultClientIdleTimeout, "close a client connection that sends no request (none in flight) or reads none of its replies for this long (0 disables)")
		clFrame    = fs.Duration("client-frame-timeout", defaultClientFrameTimeout, "a client's request frame must arrive whole within this long of its first byte")
		replyMem   = fs.String("max-reply-memory", "512MiB", "memory for replies not yet sent to their clients, all connections together (e.g. 512MiB, 2GiB); a request that finds no room within its request timeout is refused")
		_          = fs.String("config", "", "YAML file of settings keyed by flag name (node-id: 1, peer: [...]); the environment and the command line win over it")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat  = fs.String("log-format", "text", "text or json")
		showVer    = fs.Bool("version", false, "print the version (module, VCS revision, Go, client protocol) and exit")
	)
	// The original KayaDB's spelling of --join; like it, a switch that takes
	// no value (the members come from --peer).
	fs.BoolVar(join, "join-cluster", false, "the same as --join (the original KayaDB's spelling)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kayadb-server [flags]\n\nRuns one KayaDB node. With no flags it runs a single-node cluster in ./kayadb-data,\nclients on 127.0.0.1:7379. Every flag can also be set with KAYA_<FLAG> (e.g. KAYA_DATA);\nthe flag wins. See docs/server.md.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fail := func(format string, args ...any) (Config, int) {
		fmt.Fprintf(stderr, "error: "+format+"\n", args...)
		return Config{}, exitUsage
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return Config{}, exitOK
		}
		return fail("%v\nhint: run kayadb-server --help", err)
	}
	if *showVer {
		return Config{}, exitVersion
	}
	if fs.NArg() > 0 {
		if fs.Changed("join-cluster") || fs.Changed("join") {
			return fail("unexpected arguments %q\nhint: --join and --join-cluster take no value; give the running cluster's members with --peer ID=RAFT_ADDR,CLIENT_ADDR (one --peer each)", fs.Args())
		}
		return fail("unexpected arguments %q\nhint: every setting is a --flag; run kayadb-server --help", fs.Args())
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *pflag.Flag) { onCommandLine[f.Name] = true })
	// Environment variables fill flags that were not given.
	var envErr error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || envErr != nil || f.Name == "version" {
			return // KAYA_VERSION is too common a name (image tags) to obey
		}
		v, ok := lookupEnv(flagEnv(f.Name))
		if !ok {
			return
		}
		if f.Name == "peer" {
			for _, p := range strings.Fields(v) {
				if err := f.Value.Set(p); err != nil {
					envErr = fmt.Errorf("%s: %w", flagEnv(f.Name), err)
				}
			}
			return
		}
		if err := f.Value.Set(v); err != nil {
			envErr = fmt.Errorf("%s=%q: %w", flagEnv(f.Name), v, err)
		}
		f.Changed = true
	})
	if envErr != nil {
		return fail("%v", envErr)
	}
	if path := configPath(fs, lookupEnv); path != "" {
		if err := applyConfigFile(fs, path); err != nil {
			return fail("%v", err)
		}
	}
	level := slog.LevelInfo
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fail("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	var handler slog.Handler
	switch *logFormat {
	case "text":
		handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	case "json":
		handler = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})
	default:
		return fail("--log-format %q: want text or json", *logFormat)
	}
	if *nodeID == 0 {
		return fail("--node-id must be a positive integer")
	}
	if *tick <= 0 || *timeout <= 0 {
		return fail("--tick and --request-timeout must be positive durations")
	}
	if *snapEvery < 0 {
		return fail("--snapshot-entries %d: want a positive number of entries, or 0 to disable snapshots", *snapEvery)
	}
	if *snapKeep == 0 {
		return fail("--snapshot-catchup-entries must be positive (default 5000)")
	}
	rate, err := parseBytes(*snapRate)
	if err != nil {
		return fail("--snapshot-rate %q: %v (for example 64MiB, 500KB, or 0 for unlimited)", *snapRate, err)
	}
	diskReserve := int64(0) // auto
	if *reserve != "auto" {
		n, err := parseBytes(*reserve)
		if err != nil {
			return fail("--disk-reserve %q: %v (for example 256MiB, 1GiB, auto, or 0 to disable)", *reserve, err)
		}
		diskReserve = n
		if n == 0 {
			diskReserve = -1
		}
	}
	if *maxConns < 1 {
		return fail("--max-client-connections %d: want at least 1 (default %d)", *maxConns, defaultMaxClientConnections)
	}
	if *clIdle < 0 {
		return fail("--client-idle-timeout must not be negative (0 disables it)")
	}
	if *clFrame <= 0 {
		return fail("--client-frame-timeout must be a positive duration (default %s)", defaultClientFrameTimeout)
	}
	replyBytes, err := parseBytes(*replyMem)
	if err != nil || replyBytes < 1<<20 {
		return fail("--max-reply-memory %q: want a byte count of at least 1MiB (for example 512MiB, 2GiB)", *replyMem)
	}
	logger := slog.New(handler)
	// A token comes from its flag or its file flag, each possibly from the
	// environment; a command-line flag beats the environment, and two
	// sources given the same way are a mistake.
	production := *allowPub
	token := func(name, value, fileName, file string) (string, error) {
		if value != "" && file != "" {
			switch {
			case onCommandLine[name] && !onCommandLine[fileName]:
				file = ""
			case onCommandLine[fileName] && !onCommandLine[name]:
				value = ""
			default:
				return "", fmt.Errorf("--%s and --%s are both set (or %s and %s); give only one", name, fileName, flagEnv(name), flagEnv(fileName))
			}
		}
		if file != "" {
			tok, warn, err := security.ReadTokenFile("--"+fileName, file)
			if err != nil {
				return "", err
			}
			if production {
				if err := security.CheckTokenLength("--"+fileName, file, tok, "with --allow-public-bind"); err != nil {
					return "", err
				}
			}
			if warn != "" {
				logger.Warn(warn)
			}
			return tok, nil
		}
		if value != "" {
			if err := security.ValidateToken("--"+name, value); err != nil {
				return "", err
			}
			if production {
				if err := security.CheckTokenLength("--"+name, "", value, "with --allow-public-bind"); err != nil {
					return "", err
				}
			}
		}
		return value, nil
	}
	opTok, err := token("operator-token", *opToken, "operator-token-file", *opFile)
	if err != nil {
		return fail("%v", err)
	}
	clTok, err := token("client-token", *clToken, "client-token-file", *clFile)
	if err != nil {
		return fail("%v", err)
	}
	var peerTok string
	if *peerFile != "" {
		tok, warn, err := security.ReadTokenFile("--peer-token-file", *peerFile)
		if err == nil {
			err = security.CheckTokenLength("--peer-token-file", *peerFile, tok, "for the raft handshake")
		}
		if err != nil {
			return fail("%v", err)
		}
		if warn != "" {
			logger.Warn(warn)
		}
		peerTok = tok
	}
	tlsFiles := security.TLSFiles{Cert: *tlsCert, Key: *tlsKey, CA: *tlsCA}
	if err := tlsFiles.Validate(); err != nil {
		return fail("%v", err)
	}
	if *tlsReload < 0 {
		return fail("--tls-reload-interval must not be negative (0 disables the check)")
	}
	if *noMetrics {
		*metrics = ""
	}
	for _, a := range []struct{ flag, addr string }{{"--raft-addr", *raftAddr}, {"--client-addr", *clientAddr}, {"--metrics-addr", *metrics}} {
		if a.addr == "" && a.flag == "--metrics-addr" {
			continue // --no-metrics
		}
		if err := checkHostPort(a.flag, a.addr, true); err != nil {
			return fail("%v", err)
		}
	}
	if *pprofOn && *metrics == "" {
		return fail("--enable-pprof needs the metrics listener: drop --no-metrics (or give a --metrics-addr)")
	}
	if *metricsTLS && *metrics == "" {
		return fail("--metrics-tls needs the metrics listener: drop --no-metrics (or give a --metrics-addr)")
	}
	if *metricsTLS && tlsFiles.Cert == "" {
		return fail("--metrics-tls serves the node's certificate: give --tls-cert and --tls-key as well")
	}
	cfg := Config{
		NodeID: *nodeID, DataDir: *dataDir, RaftAddr: *raftAddr, ClientAddr: *clientAddr,
		Join: *join, TickInterval: *tick, RequestTimeout: *timeout, Logger: logger,
		SnapshotEntries: *snapEvery, CatchUpEntries: *snapKeep, SnapshotBytesPerSecond: rate, DiskReserve: diskReserve,
		AllowPublicBind: *allowPub, OperatorToken: opTok, ClientToken: clTok, TLS: tlsFiles,
		TLSReloadInterval: *tlsReload, MetricsAddr: *metrics, EnablePprof: *pprofOn, MetricsTLS: *metricsTLS,
		MetricsOptional: !fs.Changed("metrics-addr") && !*pprofOn && !*metricsTLS,
	}
	cfg.PeerToken = peerTok
	cfg.MaxClientConnections, cfg.ClientFrameTimeout, cfg.MaxReplyMemory = *maxConns, *clFrame, replyBytes
	cfg.ClientIdleTimeout = *clIdle
	if cfg.ClientIdleTimeout == 0 {
		cfg.ClientIdleTimeout = -1 // Config's zero is the default
	}
	if cfg.TLSReloadInterval == 0 {
		cfg.TLSReloadInterval = -1
	}
	if cfg.SnapshotEntries == 0 {
		cfg.SnapshotEntries = -1
	}
	if cfg.SnapshotBytesPerSecond == 0 {
		cfg.SnapshotBytesPerSecond = -1
	}
	if cfg.Join && len(*peers) == 0 {
		return fail("--join needs the running cluster's members: add --peer ID=RAFT_ADDR,CLIENT_ADDR for each (at least one)")
	}
	raft := sideAddrs{side: "raft", listen: *raftAddr, listenSet: fs.Changed("raft-addr"), advertise: *advRaft}
	client := sideAddrs{side: "client", listen: *clientAddr, listenSet: fs.Changed("client-addr"), advertise: *advClient}
	if err := resolvePeers(&cfg, *peers, raft, client, logger); err != nil {
		return fail("%v", err)
	}
	return cfg, -1
}

// Main runs kayadb-server with the given arguments (without the program
// name) and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	cfg, code := ParseFlags(args, os.LookupEnv, stderr)
	if code == exitVersion {
		fmt.Fprintln(stdout, buildinfo.Read().Line("kayadb-server"))
		return exitOK
	}
	if code >= 0 {
		return code
	}
	log := cfg.Logger
	srv, err := New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		if errors.Is(err, errs.ErrLocked) {
			return exitLocked
		}
		if errors.As(err, new(configError)) {
			return exitUsage
		}
		return exitError
	}
	metrics := "off"
	if a := srv.MetricsAddr(); a != "" {
		metrics = "http://" + a + "/metrics"
		if cfg.MetricsTLS {
			metrics = "https://" + a + "/metrics"
		}
	}
	fmt.Fprintf(stdout, "kayadb-server node %d: clients on %s, raft on %s, metrics %s, data in %s\n", cfg.NodeID, srv.ClientAddr(), cfg.RaftAddr, metrics, cfg.DataDir)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
wait:
	for {
		select {
		case <-hup:
			if cfg.TLS.Enabled() {
				log.Info("SIGHUP: reloading TLS certificates")
				_ = srv.ReloadTLS() // a failure is logged and keeps the old certificates
			} else {
				log.Info("SIGHUP: nothing to reload (no TLS configured)")
			}
		case sig := <-sigs:
			log.Info("shutting down", "signal", sig.String())
			break wait
		case <-srv.Done():
			log.Error("node stopped after a fatal error", "err", srv.Err())
			_ = srv.Close()
			return exitError
		}
	}
	closed := make(chan error, 1)
	go func() {
		// The graceful part (hand-over, draining) gets half the budget.
		gctx, gcancel := context.WithTimeout(context.Background(), shutdownBudget/2)
		defer gcancel()
		closed <- srv.Shutdown(gctx)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), shutdownBudget)
	defer cancel()
	select {
	case err := <-closed:
		if err != nil {
			log.Error("shutdown finished with an error", "err", err)
			return exitError
		}
		log.Info("stopped cleanly")
		return exitOK
	case sig := <-sigs:
		log.Warn("second signal: exiting now", "signal", sig.String())
		return exitError
	case <-ctx.Done():
		log.Error("shutdown took too long; exiting", "budget", shutdownBudget)
		return exitError
	}
}

// parseBytes parses a byte count with an optional unit: 500, 500KB,
// 64MiB, 1GB (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024).
func parseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(strings.ToLower(t), strings.ToLower(u.suffix)) {
			t, mult = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, errors.New("not a byte count")
	}
	if n > 0 && mult > (1<<62)/n {
		return 0, errors.New("too large")
	}
	return n * mult, nil
}
