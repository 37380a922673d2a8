package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

// Exit codes of kayadb-server.
const (
	exitOK         = 0
	exitError      = 1
	exitUsage      = 4
	exitLocked     = 6
	shutdownBudget = 20 * time.Second
)

// flagEnv returns the environment variable that can set a flag:
// --client-addr → KAYA_CLIENT_ADDR.
func flagEnv(name string) string {
	return "KAYA_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Main runs kayadb-server with the given arguments (without the program
// name) and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("kayadb-server", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		nodeID     = fs.Uint64("node-id", 1, "this node's id: a positive integer, unique in the cluster and never reused")
		dataDir    = fs.String("data", "./kayadb-data", "data directory (engine, raft log, roster); created 0700")
		raftAddr   = fs.String("raft-addr", "127.0.0.1:7481", "address for raft traffic from the other nodes")
		clientAddr = fs.String("client-addr", "127.0.0.1:7379", "address for clients (kayactl, the Go client)")
		peers      = fs.StringArray("peer", nil, "a member of a new cluster, ID=RAFT_ADDR,CLIENT_ADDR; repeat for each member, this node included (env KAYA_PEER: several separated by spaces)")
		join       = fs.Bool("join", false, "start as a new member of a running cluster (add it with kayactl add-node first)")
		tick       = fs.Duration("tick", 100*time.Millisecond, "raft clock tick; elections take about 10 ticks")
		timeout    = fs.Duration("request-timeout", 5*time.Second, "longest a client request may wait for raft")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat  = fs.String("log-format", "text", "text or json")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kayadb-server [flags]\n\nRuns one KayaDB node. With no flags it runs a single-node cluster in ./kayadb-data,\nclients on 127.0.0.1:7379. Every flag can also be set with KAYA_<FLAG> (e.g. KAYA_DATA);\nthe flag wins.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "error: %v\nhint: run kayadb-server --help\n", err)
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "error: unexpected arguments %q\nhint: every setting is a --flag; run kayadb-server --help\n", fs.Args())
		return exitUsage
	}
	// Environment variables fill flags that were not given.
	var envErr error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || envErr != nil {
			return
		}
		v, ok := os.LookupEnv(flagEnv(f.Name))
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
	})
	if envErr != nil {
		fmt.Fprintf(stderr, "error: %v\n", envErr)
		return exitUsage
	}

	level := slog.LevelInfo
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "error: --log-level %q: want debug, info, warn or error\n", *logLevel)
		return exitUsage
	}
	var handler slog.Handler
	switch *logFormat {
	case "text":
		handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	case "json":
		handler = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})
	default:
		fmt.Fprintf(stderr, "error: --log-format %q: want text or json\n", *logFormat)
		return exitUsage
	}
	log := slog.New(handler)

	if *nodeID == 0 {
		fmt.Fprintf(stderr, "error: --node-id must be a positive integer\n")
		return exitUsage
	}
	cfg := Config{
		NodeID: *nodeID, DataDir: *dataDir, RaftAddr: *raftAddr, ClientAddr: *clientAddr,
		Join: *join, TickInterval: *tick, RequestTimeout: *timeout, Logger: log,
	}
	for _, p := range *peers {
		m, err := ParsePeer(p)
		if err != nil {
			fmt.Fprintf(stderr, "error: %v\n", err)
			return exitUsage
		}
		cfg.Peers = append(cfg.Peers, m)
	}
	if len(cfg.Peers) > 0 && !cfg.Join {
		for _, m := range cfg.Peers {
			if m.ID == cfg.NodeID && (m.RaftAddr != cfg.RaftAddr || m.ClientAddr != cfg.ClientAddr) {
				if !fs.Changed("raft-addr") && !fs.Changed("client-addr") && os.Getenv("KAYA_RAFT_ADDR") == "" && os.Getenv("KAYA_CLIENT_ADDR") == "" {
					// Take this node's addresses from its --peer entry.
					cfg.RaftAddr, cfg.ClientAddr = m.RaftAddr, m.ClientAddr
					continue
				}
				fmt.Fprintf(stderr, "error: --peer %d=%s,%s disagrees with --raft-addr %s / --client-addr %s\n", m.ID, m.RaftAddr, m.ClientAddr, cfg.RaftAddr, cfg.ClientAddr)
				return exitUsage
			}
		}
	}

	srv, err := New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		if strings.Contains(err.Error(), "locked") || strings.Contains(err.Error(), "in use") {
			return exitLocked
		}
		return exitError
	}
	fmt.Fprintf(stdout, "kayadb-server node %d: clients on %s, raft on %s, data in %s\n", cfg.NodeID, srv.ClientAddr(), cfg.RaftAddr, cfg.DataDir)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	select {
	case sig := <-sigs:
		log.Info("shutting down", "signal", sig.String())
	case <-srv.Done():
		log.Error("node stopped after a fatal error", "err", srv.Err())
		_ = srv.Close()
		return exitError
	}
	closed := make(chan error, 1)
	go func() { closed <- srv.Close() }()
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
