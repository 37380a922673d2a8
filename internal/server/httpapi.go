package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The HTTP listener (--metrics-addr): /metrics for Prometheus, /livez,
// /readyz and /health for probes and load balancers, and with
// --enable-pprof Go's profiler under /debug/pprof/. It carries no data and
// accepts no changes; it has no TLS and no authentication, so it stays on
// loopback or a private address (the bind guard checks it like the other
// listeners).

// observability is a server's metrics registry and HTTP listener.
type observability struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	// bySeries caches each opcode's request series (observeRequest).
	bySeries [256]atomic.Pointer[reqSeries]
	// txnCommit is the transaction commit latency (txnops.go).
	txnCommit *prometheus.HistogramVec

	readyMu     sync.Mutex
	startCommit uint64 // the commit index seen once a leader was first known
	recorded    bool

	ln     net.Listener // nil when the listener is disabled
	srv    *http.Server
	served chan struct{} // closed when Serve returns
	stop   sync.Once
}

// startObservability creates the registry and, unless disabled, listens on
// the metrics address and serves HTTP.
func (s *Server) startObservability() error {
	o := s.newRegistry()
	s.obs = o
	o.ln = s.cfg.MetricsListener
	if o.ln == nil {
		if s.cfg.MetricsAddr == "" {
			return nil // disabled
		}
		ln, err := net.Listen("tcp", s.cfg.MetricsAddr)
		if err != nil && s.cfg.MetricsOptional {
			s.log.Warn("the default metrics address is not available; running without metrics and health endpoints (set --metrics-addr to choose another, or --no-metrics)",
				"addr", s.cfg.MetricsAddr, "err", err)
			return nil
		}
		if err != nil {
			return fmt.Errorf("listening for HTTP (metrics, health) on %s: %w (choose another --metrics-addr, or --no-metrics)", s.cfg.MetricsAddr, err)
		}
		o.ln = ln
	}
	scheme := "http"
	if s.cfg.MetricsTLS && s.tls != nil {
		// The same material as the client port, reloads included.
		o.ln = tls.NewListener(o.ln, s.tls.ServerConfig())
		scheme = "https"
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(o.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.With("component", "metrics").Handler(), slog.LevelWarn),
		Registry: o.reg,
	}))
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		ok, reason := s.readiness()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: %s\n", reason)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {
		ok, reason := s.readiness()
		w.Header().Set("Content-Type", "application/json")
		body := struct {
			Health string `json:"health"`
			Reason string `json:"reason"`
		}{"true", ""}
		if !ok {
			body.Health, body.Reason = "false", reason
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(body)
	})
	if s.cfg.EnablePprof {
		// /debug/pprof/cmdline is left out on purpose: a command line may
		// carry a token.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	o.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.With("component", "http").Handler(), slog.LevelDebug),
	}
	o.served = make(chan struct{})
	go func() {
		defer close(o.served)
		if err := o.srv.Serve(o.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("the HTTP listener (metrics, health) stopped", "err", err)
		}
	}()
	s.log.Info("serving metrics and health checks over HTTP", "metrics_addr", o.ln.Addr().String(), "scheme", scheme,
		"client_certificates", scheme == "https" && s.tls.MutualTLS(), "pprof", s.cfg.EnablePprof)
	return nil
}

// stopObservability shuts the HTTP listener down: in-flight requests get a
// moment to finish, then every connection is closed.
func (s *Server) stopObservability() {
	o := s.obs
	if o == nil || o.srv == nil {
		return
	}
	o.stop.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := o.srv.Shutdown(ctx); err != nil {
			_ = o.srv.Close()
		}
		<-o.served
	})
}

// MetricsAddr returns the address of the HTTP listener, or "" when it is
// disabled.
func (s *Server) MetricsAddr() string {
	if s.obs == nil || s.obs.ln == nil {
		return ""
	}
	return s.obs.ln.Addr().String()
}

// readiness reports whether the node is ready to serve: it knows a leader
// (raft forgets the leader when it stops hearing from it: a follower at its
// election timeout, a leader without a quorum at its own), and it has applied everything that was committed when it started (the commit
// index it saw once a leader was first known; until then it is not ready).
// The reason says what is missing.
func (s *Server) readiness() (bool, string) {
	select {
	case <-s.node.Done():
		return false, fmt.Sprintf("raft stopped: %v", s.node.Err())
	default:
	}
	if full, why := s.disk.state(); full {
		return false, fmt.Sprintf("disk_full: %s; writes are refused until space is freed", why)
	}
	st := s.node.Status()
	if st.Leader == 0 {
		return false, "no leader known"
	}
	o := s.obs
	o.readyMu.Lock()
	if !o.recorded {
		o.startCommit, o.recorded = st.Commit, true
	}
	target := o.startCommit
	o.readyMu.Unlock()
	if applied := s.store.AppliedIndex(); applied < target {
		return false, fmt.Sprintf("catching up: applied index %d, commit index at start %d", applied, target)
	}
	return true, ""
}
