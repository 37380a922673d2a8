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
	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/errs"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/security"
	"github.com/kayadb/kayadb/internal/txn"
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
//
// The steps, each a function below: define the flags
// (newServerFlags), parse the command line (parseCommandLine), fill the
// flags it did not give from the environment (applyEnvironment) and the
// --config file (applyConfigFile), make the logger (newLogger), check the
// numbers and sizes (limits), read the tokens (tokens), check TLS and the
// listen addresses (listeners), assemble the Config (config), and settle
// the roster of a new cluster and this node's addresses (resolvePeers).
func ParseFlags(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (Config, int) {
	f := newServerFlags(stderr)
	fail := func(err error) (Config, int) {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return Config{}, exitUsage
	}
	if code, err := f.parseCommandLine(args); err != nil {
		return fail(err)
	} else if code != -1 {
		return Config{}, code
	}
	if err := f.applyEnvironment(lookupEnv); err != nil {
		return fail(err)
	}
	if path := configPath(f.fs, lookupEnv); path != "" {
		if err := applyConfigFile(f.fs, path); err != nil {
			return fail(err)
		}
	}
	logger, err := f.newLogger(stderr)
	if err != nil {
		return fail(err)
	}
	lim, err := f.limits()
	if err != nil {
		return fail(err)
	}
	toks, err := f.tokens(logger)
	if err != nil {
		return fail(err)
	}
	tlsFiles, err := f.listeners()
	if err != nil {
		return fail(err)
	}
	cfg := f.config(logger, lim, toks, tlsFiles)
	if err := f.audit.config(&cfg); err != nil {
		return fail(err)
	}
	if _, err := cfg.loadKeyring(); err != nil {
		return fail(err)
	}
	if cfg.Join && len(*f.peers) == 0 {
		return fail(errors.New("--join needs the running cluster's members: add --peer ID=RAFT_ADDR,CLIENT_ADDR for each (at least one)"))
	}
	raft := sideAddrs{side: "raft", listen: *f.raftAddr, listenSet: f.fs.Changed("raft-addr"), advertise: *f.advRaft}
	client := sideAddrs{side: "client", listen: *f.clientAddr, listenSet: f.fs.Changed("client-addr"), advertise: *f.advClient}
	if err := resolvePeers(&cfg, *f.peers, raft, client, logger); err != nil {
		return fail(err)
	}
	return cfg, -1
}

// serverFlags is kayadb-server's flag set and where each flag's value
// lands.
type serverFlags struct {
	fs *pflag.FlagSet
	// onCommandLine names the flags given on the command line itself (not
	// from the environment or the config file): a token's flag given there
	// beats its file flag from the environment.
	onCommandLine map[string]bool

	nodeID                                            *uint64
	dataDir, raftAddr, clientAddr, advRaft, advClient *string
	peers                                             *[]string
	join                                              *bool
	tick, timeout                                     *time.Duration
	snapEvery                                         *int64
	snapKeep                                          *uint64
	snapRate, reserve, metrics                        *string
	noMetrics, pprofOn, metricsTLS, allowPub          *bool
	opToken, opFile, clToken, clFile, peerFile        *string
	aclFile, tenantFile, identityFile                 *string
	tlsCert, tlsKey, tlsCA                            *string
	tlsReload                                         *time.Duration
	maxConns                                          *int
	clIdle, clFrame                                   *time.Duration
	replyMem, logLevel, logFormat                     *string
	applyCache                                        *string
	showVer                                           *bool
	clockOff, retention                               *time.Duration
	readMode                                          *string
	raftLogWrites                                     *string
	retBytes                                          *string
	txnTimeout                                        *time.Duration
	maxOpenTxns                                       *int
	maxTxnBytes, txnIsolation                         *string
	cdcRetention                                      *time.Duration
	cdcBytes                                          *string
	audit                                             *auditFlags // audit.go
	encKeyFile, encKeyring                            *string
}

// newServerFlags defines every flag of kayadb-server, with its default and
// its help text (--help, written to stderr).
func newServerFlags(stderr io.Writer) *serverFlags {
	fs := pflag.NewFlagSet("kayadb-server", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &serverFlags{fs: fs}
	f.nodeID = fs.Uint64("node-id", 1, "this node's id: a positive integer, unique in the cluster and never reused")
	f.dataDir = fs.String("data", "./kayadb-data", "data directory (engine, raft log, roster); created 0700")
	f.raftAddr = fs.String("raft-addr", "127.0.0.1:7481", "address for raft traffic from the other nodes")
	f.clientAddr = fs.String("client-addr", "127.0.0.1:7379", "address for clients (kayactl, the Go client)")
	f.advRaft = fs.String("advertise-raft-addr", "", "the raft address the other nodes dial, when it is not --raft-addr: a proxy or sidecar in front of this node (default: --raft-addr)")
	f.advClient = fs.String("advertise-client-addr", "", "the client address clients are redirected to, when it is not --client-addr: a proxy or sidecar in front of this node (default: --client-addr)")
	f.peers = fs.StringArray("peer", nil, "a member of a new cluster, ID=RAFT_ADDR,CLIENT_ADDR (or ID=RAFT_ADDR: clients are then sent to RAFT_ADDR); repeat for each member; this node's own entry may be left out (env KAYA_PEER: several separated by spaces)")
	f.join = fs.Bool("join", false, "start as a new member of a running cluster (add it with kayactl add-node first)")
	f.tick = fs.Duration("tick", 100*time.Millisecond, "raft clock tick; elections take about 10 ticks")
	f.timeout = fs.Duration("request-timeout", 5*time.Second, "longest a client request may wait for raft")
	f.snapEvery = fs.Int64("snapshot-entries", 10000, "take a raft snapshot and compact the raft log every this many applied entries (0 disables)")
	f.snapKeep = fs.Uint64("snapshot-catchup-entries", 5000, "raft log entries kept behind each snapshot, so that a follower slightly behind catches up from the log")
	f.snapRate = fs.String("snapshot-rate", "64MiB", "bandwidth limit for the snapshots this node sends to followers, all together, in bytes per second (e.g. 64MiB, 500KB; 0 = unlimited)")
	f.reserve = fs.String("disk-reserve", "auto", "space kept in reserve on the data directory's file system (a ballast file, DIR/RESERVE) and given back when the disk fills, so the node can still restart, compact and delete (e.g. 256MiB; auto = 1% of the file system, 32MiB to 1GiB; 0 disables)")
	f.metrics = fs.String("metrics-addr", "127.0.0.1:9090", "address of the HTTP listener for Prometheus metrics (/metrics) and health checks (/livez, /readyz, /health)")
	f.noMetrics = fs.Bool("no-metrics", false, "do not start the HTTP listener (no metrics, health checks or pprof)")
	f.pprofOn = fs.Bool("enable-pprof", false, "serve Go's profiler (net/http/pprof) under /debug/pprof/ on the metrics listener")
	f.metricsTLS = fs.Bool("metrics-tls", false, "serve the metrics listener over HTTPS with --tls-cert; with --tls-ca, scrapers and health checkers must present a certificate it signed")
	f.allowPub = fs.Bool("allow-public-bind", false, "allow listening on wildcard (0.0.0.0, ::) and public addresses; only behind a firewall with TLS and tokens (see docs/security.md)")
	f.opToken = fs.String("operator-token", "", "require this secret on admin requests (add/remove/promote node, transfer leader, backup: it reads the whole database); prefer --operator-token-file or KAYA_OPERATOR_TOKEN, command lines are visible to other users")
	f.opFile = fs.String("operator-token-file", "", "read the operator token from this file (keep it chmod 600)")
	f.clToken = fs.String("client-token", "", "require this secret on data requests (put, get, delete, scan, stats); prefer --client-token-file or KAYA_CLIENT_TOKEN")
	f.clFile = fs.String("client-token-file", "", "read the client token from this file (keep it chmod 600)")
	f.peerFile = fs.String("peer-token-file", "", "read the cluster's peer token from this file (the same secret on every node, at least 16 bytes; keep it chmod 600): raft connections prove it both ways before any message is read; required with --allow-public-bind unless mutual TLS is on")
	f.aclFile = fs.String("acl-file", "", "per-prefix ACL: a JSON object {\"KEY_PREFIX\": \"TOKEN\"} (prefixes as text, or hex after 0x or hex:); the longest prefix covering a key names the token that may use it (the original KayaDB's format; reloaded on SIGHUP; keep it chmod 600)")
	f.tenantFile = fs.String("tenant-file", "", "tenants: {\"tenants\": [{\"id\": \"t1\", \"token\": \"TOKEN\", \"prefix\": \"t1/\"}]}; a tenant's token reaches only keys under its prefix (the original KayaDB's format; reloaded on SIGHUP; keep it chmod 600)")
	f.identityFile = fs.String("identity-file", "", "identities with roles (read-only, read-write, admin), proven by a token (its SHA-256 or a token file) or a client certificate (subject or SAN), optionally confined to key prefixes or a tenant; see docs/security.md (reloaded on SIGHUP)")
	f.tlsCert = fs.String("tls-cert", "", "PEM certificate (chain) for TLS on the client and raft ports; needs --tls-key")
	f.tlsKey = fs.String("tls-key", "", "PEM private key of --tls-cert")
	f.tlsCA = fs.String("tls-ca", "", "PEM CA bundle: clients and peers must present a certificate it signed (mutual TLS), and peers' certificates are checked against it")
	f.tlsReload = fs.Duration("tls-reload-interval", 5*time.Second, "how often to check the TLS files for changes and reload them (0 disables; SIGHUP always reloads)")
	f.maxConns = fs.Int("max-client-connections", defaultMaxClientConnections, "most client connections open at once; one source address may hold a quarter of them (at least 16); more get an ERROR reply and are closed")
	f.clIdle = fs.Duration("client-idle-timeout", defaultClientIdleTimeout, "close a client connection that sends no request (none in flight) or reads none of its replies for this long (0 disables)")
	f.clFrame = fs.Duration("client-frame-timeout", defaultClientFrameTimeout, "a client's request frame must arrive whole within this long of its first byte")
	f.applyCache = fs.String("apply-cache-size", "128MiB", "memory for the apply's cache of the current versions of keys written or read lately, which spares the apply an engine lookup per write and per transaction read (e.g. 128MiB, 1GiB; 0 turns it off)")
	f.replyMem = fs.String("max-reply-memory", "512MiB", "memory for replies not yet sent to their clients, all connections together (e.g. 512MiB, 2GiB); a request that finds no room within its request timeout is refused")
	f.clockOff = fs.Duration("max-clock-offset", kv.DefaultMaxClockOffset, "the clock offset between nodes beyond which a commit timestamp ahead of this node's clock is counted and logged (keep the nodes' clocks in sync with NTP)")
	f.raftLogWrites = fs.String("raft-log-writes", "async", "how a node writes its raft log: async (a storage goroutine fsyncs while raft goes on sending and stepping; nothing is acknowledged, counted towards a quorum or applied before it is durable) or sync (each Ready written and fsynced on the raft loop before the next is taken)")
	f.readMode = fs.String("read-mode", "safe", "how the leader confirms a linearizable read: safe (a ReadIndex round: a quorum of heartbeat replies) or lease (no round while a quorum replied within half an election timeout; assumes the nodes' clocks run at nearly the same rate, see docs/server.md)")
	f.retention = fs.Duration("mvcc-retention", time.Hour, "keep the history of every key (reads at past revisions) for at least this long, unless --mvcc-retention-bytes needs the space; older versions are garbage-collected (0 = no time bound)")
	f.cdcRetention = fs.Duration("cdc-retention", 24*time.Hour, "a registered change-feed consumer (CDC_CHECKPOINT) keeps the history after its position for at most this long beyond --mvcc-retention; past it the history is collected and its next poll answers compacted (0 = no time bound)")
	f.cdcBytes = fs.String("cdc-retention-bytes", "auto", "bound on the history registered change-feed consumers may keep beyond --mvcc-retention-bytes (e.g. 8GiB; auto = 25% of the file system, 1GiB to 32GiB; 0 = no byte bound)")
	f.retBytes = fs.String("mvcc-retention-bytes", "auto", "bound on the retained history (old versions, the revision log) in bytes: beyond it the oldest history is collected even within --mvcc-retention (e.g. 2GiB; auto = 10% of the file system, 256MiB to 8GiB; 0 = no byte bound)")
	f.txnTimeout = fs.Duration("txn-timeout", txn.DefaultTimeout, "a transaction that sends no request for this long is rolled back and forgotten (an abandoned client's)")
	f.maxOpenTxns = fs.Int("max-open-txns", txn.DefaultMaxOpen, "most transactions open at once on the leader; TXN_BEGIN beyond it gets an error naming this flag")
	f.maxTxnBytes = fs.String("max-txn-bytes", "16MiB", "most bytes of keys and values one transaction (or conditional write) may read and write: its commit is one raft entry (e.g. 16MiB, at most 31MiB)")
	f.txnIsolation = fs.String("txn-isolation", "serializable", "isolation of transactions: serializable (the read set is validated at commit: no write skew) or snapshot (the original KayaDB's snapshot isolation: only the write set is)")
	f.audit = defineAuditFlags(fs)
	f.encKeyFile = fs.String("encryption-key-file", "", "encrypt the data at rest (engine, raft log, snapshots, backups) with AES-256-GCM under the key in this file: exactly 32 raw bytes, key id 0 (chmod 600); see docs/security.md")
	f.encKeyring = fs.String("encryption-keyring-file", "", "encrypt the data at rest under the active key of this keyring file (kayactl encryption init; chmod 600), opening data sealed with any of its keys; SIGHUP reloads it (key rotation); not with --encryption-key-file")
	_ = fs.String("config", "", "YAML file of settings keyed by flag name (node-id: 1, peer: [...]); the environment and the command line win over it")
	f.logLevel = fs.String("log-level", "info", "debug, info, warn or error")
	f.logFormat = fs.String("log-format", "text", "text or json")
	f.showVer = fs.Bool("version", false, "print the version (module, VCS revision, Go, client protocol) and exit")
	// The original KayaDB's spelling of --join; like it, a switch that takes
	// no value (the members come from --peer).
	fs.BoolVar(f.join, "join-cluster", false, "the same as --join (the original KayaDB's spelling)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kayadb-server [flags]\n\nRuns one KayaDB node. With no flags it runs a single-node cluster in ./kayadb-data,\nclients on 127.0.0.1:7379. Every flag can also be set with KAYA_<FLAG> (e.g. KAYA_DATA);\nthe flag wins. See docs/server.md.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	return f
}

// parseCommandLine parses args. It returns exitOK for --help (pflag has
// printed the usage), exitVersion for --version, -1 to go on, or an error
// for a bad flag or a stray argument.
func (f *serverFlags) parseCommandLine(args []string) (int, error) {
	fs := f.fs
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK, nil
		}
		return 0, fmt.Errorf("%v\nhint: run kayadb-server --help", err)
	}
	if *f.showVer {
		return exitVersion, nil
	}
	if fs.NArg() > 0 {
		if fs.Changed("join-cluster") || fs.Changed("join") {
			return 0, fmt.Errorf("unexpected arguments %q\nhint: --join and --join-cluster take no value; give the running cluster's members with --peer ID=RAFT_ADDR,CLIENT_ADDR (one --peer each)", fs.Args())
		}
		return 0, fmt.Errorf("unexpected arguments %q\nhint: every setting is a --flag; run kayadb-server --help", fs.Args())
	}
	f.onCommandLine = map[string]bool{}
	fs.Visit(func(fl *pflag.Flag) { f.onCommandLine[fl.Name] = true })
	return -1, nil
}

// applyEnvironment fills the flags the command line did not give from
// their KAYA_* variables (KAYA_PEER: several entries separated by spaces).
// KAYA_VERSION is not read: it is too common a name (image tags) to obey.
func (f *serverFlags) applyEnvironment(lookupEnv func(string) (string, bool)) error {
	var envErr error
	f.fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Changed || envErr != nil || fl.Name == "version" {
			return
		}
		v, ok := lookupEnv(flagEnv(fl.Name))
		if !ok {
			return
		}
		if fl.Name == "peer" {
			for _, p := range strings.Fields(v) {
				if err := fl.Value.Set(p); err != nil {
					envErr = fmt.Errorf("%s: %w", flagEnv(fl.Name), err)
				}
			}
			return
		}
		if err := fl.Value.Set(v); err != nil {
			envErr = fmt.Errorf("%s=%q: %w", flagEnv(fl.Name), v, err)
		}
		fl.Changed = true
	})
	return envErr
}

// newLogger makes the node's logger on stderr from --log-level and
// --log-format.
func (f *serverFlags) newLogger(stderr io.Writer) (*slog.Logger, error) {
	level := slog.LevelInfo
	if err := level.UnmarshalText([]byte(*f.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", *f.logLevel)
	}
	switch *f.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})), nil
	case "json":
		return slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", *f.logFormat)
}

// parsedLimits are the flags' numbers and sizes, checked and converted.
type parsedLimits struct {
	snapshotRate, diskReserve, replyBytes, applyCache int64
	retentionBytes, cdcBytes                          int64
	txnBytes                                          int64
	isolation                                         txn.Isolation
}

// limits checks the node id, the durations, the snapshot settings, the
// disk reserve and the client limits, and converts the byte counts.
func (f *serverFlags) limits() (parsedLimits, error) {
	var l parsedLimits
	if *f.nodeID == 0 {
		return l, errors.New("--node-id must be a positive integer")
	}
	if *f.tick <= 0 || *f.timeout <= 0 {
		return l, errors.New("--tick and --request-timeout must be positive durations")
	}
	if *f.snapEvery < 0 {
		return l, fmt.Errorf("--snapshot-entries %d: want a positive number of entries, or 0 to disable snapshots", *f.snapEvery)
	}
	if *f.snapKeep == 0 {
		return l, errors.New("--snapshot-catchup-entries must be positive (default 5000)")
	}
	var err error
	if l.snapshotRate, err = parseBytes(*f.snapRate); err != nil {
		return l, fmt.Errorf("--snapshot-rate %q: %v (for example 64MiB, 500KB, or 0 for unlimited)", *f.snapRate, err)
	}
	// Config's 0 is auto, negative disables.
	if *f.reserve != "auto" {
		n, err := parseBytes(*f.reserve)
		if err != nil {
			return l, fmt.Errorf("--disk-reserve %q: %v (for example 256MiB, 1GiB, auto, or 0 to disable)", *f.reserve, err)
		}
		l.diskReserve = n
		if n == 0 {
			l.diskReserve = -1
		}
	}
	if *f.maxConns < 1 {
		return l, fmt.Errorf("--max-client-connections %d: want at least 1 (default %d)", *f.maxConns, defaultMaxClientConnections)
	}
	if *f.clIdle < 0 {
		return l, errors.New("--client-idle-timeout must not be negative (0 disables it)")
	}
	if *f.clFrame <= 0 {
		return l, fmt.Errorf("--client-frame-timeout must be a positive duration (default %s)", defaultClientFrameTimeout)
	}
	l.replyBytes, err = parseBytes(*f.replyMem)
	if err != nil || l.replyBytes < 1<<20 {
		return l, fmt.Errorf("--max-reply-memory %q: want a byte count of at least 1MiB (for example 512MiB, 2GiB)", *f.replyMem)
	}
	l.applyCache, err = parseBytes(*f.applyCache)
	if err != nil || (l.applyCache > 0 && l.applyCache < 4<<20) {
		return l, fmt.Errorf("--apply-cache-size %q: want 0 (off) or a byte count of at least 4MiB (for example 128MiB, 1GiB)", *f.applyCache)
	}
	if l.applyCache == 0 {
		l.applyCache = -1 // off
	}
	if *f.raftLogWrites != "async" && *f.raftLogWrites != "sync" {
		return l, fmt.Errorf("--raft-log-writes %q: want async (the default) or sync", *f.raftLogWrites)
	}
	if *f.readMode != "safe" && *f.readMode != "lease" {
		return l, fmt.Errorf("--read-mode %q: want safe (a ReadIndex round per read, the default) or lease", *f.readMode)
	}
	if *f.clockOff <= 0 {
		return l, fmt.Errorf("--max-clock-offset must be a positive duration (default %s)", kv.DefaultMaxClockOffset)
	}
	if *f.retention < 0 {
		return l, errors.New("--mvcc-retention must not be negative (0 means no time bound)")
	}
	// Config's 0 is auto, negative is no byte bound.
	if *f.retBytes != "auto" {
		n, err := parseBytes(*f.retBytes)
		if err != nil {
			return l, fmt.Errorf("--mvcc-retention-bytes %q: %v (for example 2GiB, auto, or 0 for no byte bound)", *f.retBytes, err)
		}
		l.retentionBytes = n
		if n == 0 {
			l.retentionBytes = -1
		}
	}
	if *f.cdcRetention < 0 {
		return l, errors.New("--cdc-retention must not be negative (0 means no time bound)")
	}
	if *f.cdcBytes != "auto" {
		n, err := parseBytes(*f.cdcBytes)
		if err != nil {
			return l, fmt.Errorf("--cdc-retention-bytes %q: %v (for example 8GiB, auto, or 0 for no byte bound)", *f.cdcBytes, err)
		}
		l.cdcBytes = n
		if n == 0 {
			l.cdcBytes = -1
		}
	}
	if *f.txnTimeout <= 0 {
		return l, fmt.Errorf("--txn-timeout must be a positive duration (default %s)", txn.DefaultTimeout)
	}
	if *f.maxOpenTxns < 1 {
		return l, fmt.Errorf("--max-open-txns %d: want at least 1 (default %d)", *f.maxOpenTxns, txn.DefaultMaxOpen)
	}
	l.txnBytes, err = parseBytes(*f.maxTxnBytes)
	if err != nil || l.txnBytes < 1<<10 || l.txnBytes > txn.MaxBytesLimit {
		return l, fmt.Errorf("--max-txn-bytes %q: want a byte count from 1KiB to %d bytes (one raft entry carries a commit), for example 16MiB", *f.maxTxnBytes, txn.MaxBytesLimit)
	}
	if l.isolation, err = txn.ParseIsolation(*f.txnIsolation); err != nil {
		return l, fmt.Errorf("--txn-isolation: %v", err)
	}
	return l, nil
}

// parsedTokens are the node's secrets, read and checked.
type parsedTokens struct {
	operator, client, peer string
}

// tokens reads the operator, client and peer tokens. A token comes from
// its flag or its file flag, each possibly from the environment; a
// command-line flag beats the environment, and two sources given the same
// way are a mistake. With --allow-public-bind every token must be long
// enough. A file readable by others is a warning on logger.
func (f *serverFlags) tokens(logger *slog.Logger) (parsedTokens, error) {
	var t parsedTokens
	production := *f.allowPub
	token := func(name, value, fileName, file string) (string, error) {
		if value != "" && file != "" {
			switch {
			case f.onCommandLine[name] && !f.onCommandLine[fileName]:
				file = ""
			case f.onCommandLine[fileName] && !f.onCommandLine[name]:
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
	var err error
	if t.operator, err = token("operator-token", *f.opToken, "operator-token-file", *f.opFile); err != nil {
		return t, err
	}
	if t.client, err = token("client-token", *f.clToken, "client-token-file", *f.clFile); err != nil {
		return t, err
	}
	if *f.peerFile != "" {
		tok, warn, err := security.ReadTokenFile("--peer-token-file", *f.peerFile)
		if err == nil {
			err = security.CheckTokenLength("--peer-token-file", *f.peerFile, tok, "for the raft handshake")
		}
		if err != nil {
			return t, err
		}
		if warn != "" {
			logger.Warn(warn)
		}
		t.peer = tok
	}
	return t, nil
}

// listeners checks the TLS files and their reload interval, and the listen
// addresses (--raft-addr, --client-addr, --metrics-addr, which --no-metrics
// empties) with the settings that need the metrics listener or TLS.
func (f *serverFlags) listeners() (security.TLSFiles, error) {
	tlsFiles := security.TLSFiles{Cert: *f.tlsCert, Key: *f.tlsKey, CA: *f.tlsCA}
	if err := tlsFiles.Validate(); err != nil {
		return tlsFiles, err
	}
	if *f.tlsReload < 0 {
		return tlsFiles, errors.New("--tls-reload-interval must not be negative (0 disables the check)")
	}
	if *f.noMetrics {
		*f.metrics = ""
	}
	for _, a := range []struct{ flag, addr string }{{"--raft-addr", *f.raftAddr}, {"--client-addr", *f.clientAddr}, {"--metrics-addr", *f.metrics}} {
		if a.addr == "" && a.flag == "--metrics-addr" {
			continue // --no-metrics
		}
		if err := checkHostPort(a.flag, a.addr, true); err != nil {
			return tlsFiles, err
		}
	}
	if *f.pprofOn && *f.metrics == "" {
		return tlsFiles, errors.New("--enable-pprof needs the metrics listener: drop --no-metrics (or give a --metrics-addr)")
	}
	if *f.metricsTLS && *f.metrics == "" {
		return tlsFiles, errors.New("--metrics-tls needs the metrics listener: drop --no-metrics (or give a --metrics-addr)")
	}
	if *f.metricsTLS && tlsFiles.Cert == "" {
		return tlsFiles, errors.New("--metrics-tls serves the node's certificate: give --tls-cert and --tls-key as well")
	}
	return tlsFiles, nil
}

// config assembles the Config from the checked flags. A flag's 0 that
// means "off" becomes Config's negative (Config's zero is the default).
func (f *serverFlags) config(logger *slog.Logger, l parsedLimits, t parsedTokens, tlsFiles security.TLSFiles) Config {
	cfg := Config{
		NodeID: *f.nodeID, DataDir: *f.dataDir, RaftAddr: *f.raftAddr, ClientAddr: *f.clientAddr,
		Join: *f.join, TickInterval: *f.tick, RequestTimeout: *f.timeout, Logger: logger,
		SnapshotEntries: *f.snapEvery, CatchUpEntries: *f.snapKeep, SnapshotBytesPerSecond: l.snapshotRate, DiskReserve: l.diskReserve,
		AllowPublicBind: *f.allowPub, OperatorToken: t.operator, ClientToken: t.client, TLS: tlsFiles,
		TLSReloadInterval: *f.tlsReload, MetricsAddr: *f.metrics, EnablePprof: *f.pprofOn, MetricsTLS: *f.metricsTLS,
		MetricsOptional: !f.fs.Changed("metrics-addr") && !*f.pprofOn && !*f.metricsTLS,
	}
	cfg.PeerToken = t.peer
	cfg.ACLFile, cfg.TenantFile, cfg.IdentityFile = *f.aclFile, *f.tenantFile, *f.identityFile
	cfg.MaxClientConnections, cfg.ClientFrameTimeout, cfg.MaxReplyMemory = *f.maxConns, *f.clFrame, l.replyBytes
	cfg.ApplyCacheBytes = l.applyCache
	cfg.ClientIdleTimeout = *f.clIdle
	cfg.MaxClockOffset, cfg.MVCCRetention, cfg.MVCCRetentionBytes = *f.clockOff, *f.retention, l.retentionBytes
	cfg.TxnTimeout, cfg.MaxOpenTxns, cfg.MaxTxnBytes, cfg.TxnIsolation = *f.txnTimeout, *f.maxOpenTxns, l.txnBytes, l.isolation
	cfg.LeaseReads = *f.readMode == "lease"
	cfg.SyncLogWrites = *f.raftLogWrites == "sync"
	cfg.EncryptionKeyFile, cfg.EncryptionKeyringFile = *f.encKeyFile, *f.encKeyring
	if cfg.MVCCRetention == 0 {
		cfg.MVCCRetention = -1 // Config's zero is the default
		if l.retentionBytes < 0 {
			logger.Warn("--mvcc-retention 0 and --mvcc-retention-bytes 0: the history of every key is kept forever and the data directory grows with every overwrite")
		}
	}
	cfg.CDCRetention, cfg.CDCRetentionBytes = *f.cdcRetention, l.cdcBytes
	if cfg.CDCRetention == 0 {
		cfg.CDCRetention = -1 // Config's zero is the default
	}
	if cfg.ClientIdleTimeout == 0 {
		cfg.ClientIdleTimeout = -1
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
	return cfg
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
	// Signals are taken from before the node opens: a SIGTERM or SIGINT
	// while it replays its logs (which can take a while) stops it cleanly
	// once it is open, instead of killing it halfway. A second one exits
	// at once.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	early := make(chan os.Signal, 1)
	opened := make(chan struct{})
	go func() {
		select {
		case sig := <-sigs:
			log.Info("stop requested while the node is opening; it stops cleanly once open (send the signal again to exit at once)", "signal", sig.String())
			early <- sig
		case <-opened:
			return
		}
		select {
		case sig := <-sigs:
			log.Error("second stop request while the node is opening: exiting at once", "signal", sig.String())
			os.Exit(exitError)
		case <-opened:
		}
	}()
	srv, err := New(cfg)
	close(opened)
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		if errors.Is(err, errs.ErrLocked) {
			return exitLocked
		}
		if errors.As(err, new(configError)) || errors.As(err, new(*crypt.KeyError)) {
			return exitUsage // a refused configuration, or keys that do not open the data
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

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
wait:
	for {
		select {
		case <-hup:
			reloadable := cfg.TLS.Enabled() || cfg.ACLFile != "" || cfg.TenantFile != "" || cfg.IdentityFile != ""
			if reloadable {
				log.Info("SIGHUP: reloading the TLS certificates and the ACL, tenant and identity files")
				_ = srv.Reload() // a failure is logged, counted, and keeps what was loaded before (authz.go)
			}
			if path, _ := cfg.encryptionFile(); path != "" {
				reloadable = true
				log.Info("SIGHUP: reloading the encryption keyring", "file", path)
				_ = srv.ReloadEncryption() // a failure is logged, counted, and keeps the old keyring
			}
			if !reloadable {
				log.Info("SIGHUP: nothing to reload (no TLS, ACL, tenant, identity or encryption keyring file configured)")
			}
		case sig := <-sigs:
			log.Info("shutting down", "signal", sig.String())
			break wait
		case sig := <-early:
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
