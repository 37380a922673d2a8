package audit

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kayadb/kayadb/internal/vfs"
)

// FsyncMode says when the file sink makes its lines durable.
type FsyncMode int

const (
	// FsyncInterval syncs every Options.FsyncInterval while lines were
	// written (the default).
	FsyncInterval FsyncMode = iota
	// FsyncAlways syncs every batch the writer writes before it takes the
	// next (group commit).
	FsyncAlways
	// FsyncNever leaves durability to the operating system (the original
	// KayaDB's behaviour); the file is still synced at rotation and Close.
	FsyncNever
)

// ParseFsyncMode parses --audit-fsync.
func ParseFsyncMode(s string) (FsyncMode, error) {
	switch s {
	case "always":
		return FsyncAlways, nil
	case "interval", "":
		return FsyncInterval, nil
	case "never":
		return FsyncNever, nil
	}
	return 0, fmt.Errorf("%q: want always, interval or never", s)
}

func (m FsyncMode) String() string {
	switch m {
	case FsyncAlways:
		return "always"
	case FsyncNever:
		return "never"
	}
	return "interval"
}

// Defaults of Options.
const (
	// DefaultQueueLines bounds each sink's queue: 64 Ki lines, about 16 MiB
	// of typical lines, which is several seconds of a busy node's requests
	// — long enough to ride out a slow disk or a collector's restart.
	DefaultQueueLines = 64 << 10
	// DefaultQueueBytes bounds the same queue in bytes, for long lines
	// (certificate subjects, refusal reasons).
	DefaultQueueBytes = 32 << 20
	// DefaultMaxFileBytes is the size at which the file is rotated.
	DefaultMaxFileBytes = 100 << 20
	// DefaultMaxFiles is how many rotated files are kept.
	DefaultMaxFiles = 10
	// DefaultFsyncInterval is FsyncInterval's period.
	DefaultFsyncInterval = time.Second
	// DefaultRetryInterval is how long a failing sink waits before it
	// tries again.
	DefaultRetryInterval = time.Second
	// DefaultKeepWait bounds how long Write waits for room for a line it
	// must keep: the request timeout's order, so that a dead sink delays
	// an admin request instead of hanging it.
	DefaultKeepWait = 5 * time.Second
)

// Options configures a Log. At least one sink (File, SyslogUDP, SyslogTLS)
// must be set.
type Options struct {
	// FS is where the file sink writes (default vfs.Default).
	FS vfs.FS
	// File is the audit file's path; "" disables the file sink.
	File string
	// Fsync and FsyncInterval: when the file is synced.
	Fsync         FsyncMode
	FsyncInterval time.Duration
	// MaxFileBytes: the file is rotated before a write would take it past
	// this size. MaxFiles rotated files are kept (audit.jsonl.1 the
	// newest); older ones are removed.
	MaxFileBytes int64
	MaxFiles     int
	// SyslogUDP is a HOST:PORT to send RFC 5424 messages to over UDP.
	SyslogUDP string
	// SyslogTLS is a HOST:PORT to send RFC 5424 messages to over TLS, with
	// RFC 5425 octet counting; SyslogTLSConfig verifies the collector
	// (nil: the system's roots and the host's name).
	SyslogTLS       string
	SyslogTLSConfig *tls.Config
	// Hostname and AppName fill the syslog header (default: os.Hostname,
	// "kayadb").
	Hostname, AppName string
	// QueueLines and QueueBytes bound each sink's queue.
	QueueLines int
	QueueBytes int64
	// RetryInterval is the wait between attempts of a failing sink;
	// KeepWait bounds Write's wait for room for a line it must keep.
	RetryInterval, KeepWait time.Duration
	// Logger gets one line when a sink starts failing and one when it
	// recovers.
	Logger *slog.Logger
}

func (o *Options) ensureDefaults() {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.FsyncInterval <= 0 {
		o.FsyncInterval = DefaultFsyncInterval
	}
	if o.MaxFileBytes <= 0 {
		o.MaxFileBytes = DefaultMaxFileBytes
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = DefaultMaxFiles
	}
	if o.QueueLines <= 0 {
		o.QueueLines = DefaultQueueLines
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = DefaultQueueBytes
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = DefaultRetryInterval
	}
	if o.KeepWait <= 0 {
		o.KeepWait = DefaultKeepWait
	}
	if o.Hostname == "" {
		o.Hostname, _ = os.Hostname()
	}
	if o.AppName == "" {
		o.AppName = "kayadb"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate checks the options (after defaults).
func (o *Options) Validate() error {
	if o.File == "" && o.SyslogUDP == "" && o.SyslogTLS == "" {
		return errors.New("audit: no sink: give a file, a UDP syslog address or a TLS syslog address")
	}
	if o.MaxFileBytes < 4096 {
		return fmt.Errorf("audit: the largest file size %d is under 4096 bytes", o.MaxFileBytes)
	}
	if o.MaxFiles > 1000 {
		return fmt.Errorf("audit: %d rotated files kept: at most 1000", o.MaxFiles)
	}
	return nil
}

// Sink names, the "sink" label of the metrics.
const (
	SinkFile      = "file"
	SinkSyslogUDP = "syslog_udp"
	SinkSyslogTLS = "syslog_tls"
)

// Error reasons, the "reason" label of kayadb_audit_errors_total.
var Reasons = []string{"open", "write", "fsync", "rotate", "dial", "send", "queue_full"}

// Log is an open audit log.
type Log struct {
	opts  Options
	sinks []*sink
	// dropped counts lines lost: a full queue, a line that could not be
	// kept within KeepWait, lines still unwritten when Close gave up.
	dropped atomic.Uint64
	closed  atomic.Bool
	closeCh chan struct{} // closed by Close
	wg      sync.WaitGroup
}

// Open opens the sinks and starts their writers. A file that cannot be
// opened or a syslog address that does not resolve is an error here (the
// node should not start); a TLS collector that is down is not (it is
// dialled by the writer, and the sink is failing until it answers).
func Open(opts Options) (*Log, error) {
	opts.ensureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	l := &Log{opts: opts, closeCh: make(chan struct{})}
	if opts.File != "" {
		fw, err := openFileWriter(&l.opts)
		if err != nil {
			return nil, err
		}
		l.sinks = append(l.sinks, newSink(l, SinkFile, opts.File, fw))
	}
	if opts.SyslogUDP != "" {
		uw, err := newUDPWriter(&l.opts)
		if err != nil {
			l.closeWriters()
			return nil, err
		}
		l.sinks = append(l.sinks, newSink(l, SinkSyslogUDP, opts.SyslogUDP, uw))
	}
	if opts.SyslogTLS != "" {
		l.sinks = append(l.sinks, newSink(l, SinkSyslogTLS, opts.SyslogTLS, newTLSWriter(&l.opts)))
	}
	for _, s := range l.sinks {
		l.wg.Add(1)
		go s.run()
	}
	return l, nil
}

func (l *Log) closeWriters() {
	for _, s := range l.sinks {
		_ = s.w.close()
	}
}

// Write queues rec on every sink. With keep, a full queue is waited on
// (at most KeepWait); otherwise the line is dropped and counted. Write
// never does I/O.
func (l *Log) Write(rec *Record, keep bool) {
	if l.closed.Load() {
		l.dropped.Add(uint64(len(l.sinks)))
		return
	}
	e := entry{line: rec.AppendJSON(make([]byte, 0, 320)), ts: rec.Time}
	for _, s := range l.sinks {
		if !s.enqueue(e, keep) {
			l.dropped.Add(1)
		}
	}
}

// Healthy reports whether every sink writes and has room; otherwise
// reason says which does not and why.
func (l *Log) Healthy() (ok bool, reason string) {
	for _, s := range l.sinks {
		if r := s.problem(); r != "" {
			return false, r
		}
	}
	return true, ""
}

// SinkStatus is one sink's state (STATS, kayactl doctor).
type SinkStatus struct {
	Sink    string `json:"sink"`
	Target  string `json:"target"`
	Healthy bool   `json:"healthy"`
	Problem string `json:"problem,omitempty"`
	// Lines counts the lines written; QueueLines the lines waiting.
	Lines      uint64 `json:"lines"`
	QueueLines int    `json:"queue_lines"`
	// Errors counts the failures by reason (only reasons that occurred).
	Errors map[string]uint64 `json:"errors,omitempty"`
}

// Status reports every sink's state.
func (l *Log) Status() []SinkStatus {
	var out []SinkStatus
	for _, s := range l.sinks {
		p := s.problem()
		st := SinkStatus{Sink: s.name, Target: s.target, Healthy: p == "", Problem: p,
			Lines: s.lines.Load(), QueueLines: s.queued()}
		for i, r := range Reasons {
			if n := s.errs[i].Load(); n > 0 {
				if st.Errors == nil {
					st.Errors = map[string]uint64{}
				}
				st.Errors[r] = n
			}
		}
		out = append(out, st)
	}
	return out
}

// Dropped returns the count of lines lost.
func (l *Log) Dropped() uint64 { return l.dropped.Load() }

// FsyncMode returns the file sink's fsync mode.
func (l *Log) FsyncMode() FsyncMode { return l.opts.Fsync }

// Close writes what is queued (a failing sink gets maxCloseAttempts more
// attempts; what it still cannot write is counted as dropped), syncs and closes the file,
// and waits for the writers. Write after Close drops.
func (l *Log) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	close(l.closeCh)
	for _, s := range l.sinks {
		s.mu.Lock()
		s.mu.closing = true
		s.mu.Unlock()
		s.wake()
	}
	l.wg.Wait()
	var errs []error
	for _, s := range l.sinks {
		errs = append(errs, s.w.close())
	}
	return errors.Join(errs...)
}

// entry is one encoded line and its time (the syslog header's).
type entry struct {
	line []byte
	ts   time.Time
}

// writer is a sink's I/O, used only by its writer goroutine (and close,
// after it stopped). write returns how many entries of the batch it
// wrote; on an error (with its reason label) the rest are retried, and
// the file has cut back whatever it wrote of them part way.
type writer interface {
	write(batch []entry) (n int, reason string, err error)
	// tick runs every FsyncInterval: the file syncs what it wrote since
	// the last sync (FsyncInterval).
	tick() (reason string, err error)
	close() error
}

// sink is one destination with its queue and writer goroutine.
type sink struct {
	l            *Log
	name, target string
	w            writer
	notify       chan struct{} // cap 1: the queue has lines, or closing
	lines        atomic.Uint64
	errs         [7]atomic.Uint64 // by Reasons index
	failing      atomic.Pointer[string]
	// full: a line found the queue full since the writer last took it
	// (atomic: Healthy runs for every request under --audit-required).
	full atomic.Bool
	mu   struct {
		sync.Mutex
		q       []entry
		bytes   int64
		room    chan struct{} // closed (and replaced) when the writer takes the queue
		closing bool
	}
}

func newSink(l *Log, name, target string, w writer) *sink {
	s := &sink{l: l, name: name, target: target, w: w, notify: make(chan struct{}, 1)}
	s.mu.room = make(chan struct{})
	return s
}

func (s *sink) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func (s *sink) countErr(reason string) {
	for i, r := range Reasons {
		if r == reason {
			s.errs[i].Add(1)
		}
	}
}

// enqueue queues e, waiting for room up to KeepWait when keep is set. It
// reports whether e was queued.
func (s *sink) enqueue(e entry, keep bool) bool {
	var deadline *time.Timer
	for {
		s.mu.Lock()
		if s.mu.closing {
			s.mu.Unlock()
			return false
		}
		if len(s.mu.q) < s.l.opts.QueueLines && s.mu.bytes+int64(len(e.line)) <= s.l.opts.QueueBytes {
			s.mu.q = append(s.mu.q, e)
			s.mu.bytes += int64(len(e.line))
			s.mu.Unlock()
			if deadline != nil {
				deadline.Stop()
			}
			s.wake()
			return true
		}
		if !s.full.Swap(true) {
			s.countErr("queue_full")
			s.l.opts.Logger.Error("audit queue full: lines are being dropped (admin operations and authentication failures wait for room)",
				"sink", s.name, "target", s.target, "queue_lines", len(s.mu.q))
		}
		room := s.mu.room
		s.mu.Unlock()
		if !keep {
			return false
		}
		if deadline == nil {
			deadline = time.NewTimer(s.l.opts.KeepWait)
		}
		select {
		case <-room:
		case <-deadline.C:
			return false
		}
	}
}

// take removes and returns everything queued (into spare's space).
func (s *sink) take(spare []entry) (batch []entry, closing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	batch, s.mu.q = s.mu.q, spare[:0]
	s.mu.bytes = 0
	if len(batch) > 0 {
		close(s.mu.room)
		s.mu.room = make(chan struct{})
		s.full.Store(false)
	}
	return batch, s.mu.closing
}

func (s *sink) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.mu.q)
}

// problem is why the sink is unhealthy, or "".
func (s *sink) problem() string {
	if p := s.failing.Load(); p != nil {
		return *p
	}
	if s.full.Load() {
		return fmt.Sprintf("%s sink %s: queue full", s.name, s.target)
	}
	return ""
}

// fail marks the sink failing (logged when the episode starts).
func (s *sink) fail(reason string, err error) {
	s.countErr(reason)
	msg := fmt.Sprintf("%s sink %s: %s: %v", s.name, s.target, reason, err)
	if s.failing.Swap(&msg) == nil {
		s.l.opts.Logger.Error("audit sink failing; its lines are kept and retried", "sink", s.name, "target", s.target, "reason", reason, "err", err)
	}
}

func (s *sink) recovered() {
	if s.failing.Swap(nil) != nil {
		s.l.opts.Logger.Info("audit sink recovered", "sink", s.name, "target", s.target)
	}
}

// maxCloseAttempts bounds the attempts of a failing sink once Close was
// called (RetryInterval apart), so that Close returns.
const maxCloseAttempts = 3

// run is the sink's writer goroutine: it takes what is queued, writes it
// (retrying a failed batch every RetryInterval, keeping it meanwhile), and
// runs the sink's tick every FsyncInterval.
func (s *sink) run() {
	defer s.l.wg.Done()
	o := &s.l.opts
	ticker := time.NewTicker(min(o.FsyncInterval, o.RetryInterval))
	defer ticker.Stop()
	lastTick := time.Now()
	closeAttempts := 0
	var batch, spare []entry
	for {
		var closing bool
		if len(batch) == 0 {
			batch, closing = s.take(spare)
			spare = nil
		} else {
			closing = s.l.closed.Load()
		}
		if len(batch) > 0 {
			n, reason, err := s.w.write(batch)
			s.lines.Add(uint64(n))
			if err == nil {
				s.recovered()
				clear(batch)
				spare, batch = batch[:0], nil
				continue // more may have been queued meanwhile
			}
			clear(batch[:n])
			batch = batch[n:]
			s.fail(reason, err)
			if closing {
				closeAttempts++
			}
			if closeAttempts >= maxCloseAttempts {
				// The last attempt failed: what is left is lost.
				rest, _ := s.take(nil)
				s.l.dropped.Add(uint64(len(batch) + len(rest)))
				s.l.opts.Logger.Error("audit log closed with lines its sink could not take", "sink", s.name, "target", s.target, "lines", len(batch)+len(rest))
				return
			}
			// Keep the batch and try again after RetryInterval (new lines
			// do not hurry the retry: they would spin a failing sink).
			timer := time.NewTimer(o.RetryInterval)
			select {
			case <-timer.C:
			case <-s.l.closeCh:
				if closeAttempts > 0 {
					<-timer.C // closing: the attempts stay RetryInterval apart
				}
				timer.Stop()
			}
			continue
		}
		if closing {
			if reason, err := s.w.tick(); err != nil {
				s.fail(reason, err)
			}
			return
		}
		select {
		case <-s.notify:
		case <-ticker.C:
			if time.Since(lastTick) >= o.FsyncInterval {
				lastTick = time.Now()
				if reason, err := s.w.tick(); err != nil {
					s.fail(reason, err)
				} else {
					s.recovered()
				}
			}
		}
	}
}
